// The capacity check of the compiler: every map it fills is checked before
// anything is written, and objects that would overflow one are rejected
// whole (with a diagnostic naming the map and its limit), largest first,
// then newest first, until the rest fits. Rejections fail closed: a
// TrafficTarget left out grants nothing, a pod left out of the ipcache is
// judged as the world, a Service left out is not translated. Only a local
// pod the endpoints map cannot hold is not enforced, and the agent says so.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "agent/compile/compile.h"

namespace smik::compile {

// The policy entries one TrafficTarget grants, in the order compiled.
struct TargetGrants {
  model::ObjectRef target;
  std::string created;  // creationTimestamp
  std::vector<std::pair<smik_policy_key, smik_policy_value>> entries;
};

// Adds every grant to plan->policy (which holds the meta entries already;
// the first rule granting a key keeps it), rejecting TrafficTargets while
// the policy would not fit.
void fillPolicy(std::vector<TargetGrants> grants, const Capacity& cap, Plan* plan);
// Local meshed pods beyond the endpoints map, newest first.
void fitEndpoints(const model::ClusterState& state, const Capacity& cap, Plan* plan);
// Pods' addresses beyond the ipcache, pods with the most addresses first;
// a local endpoint's addresses stay (the pod is hooked with them).
void fitAddresses(const model::ClusterState& state, const NodeConfig& node, Plan* plan);
// Services whose tables or endpoints overflow the services or backends map.
void fitServices(const model::ClusterState& state, const Capacity& cap, Plan* plan);

}  // namespace smik::compile
