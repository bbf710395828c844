// "Why is this connection allowed or denied?" answered from the same compiler
// the agent runs, for the CLI and (later) the gRPC API.
#pragma once

#include <string>
#include <vector>

#include "agent/compile/compile.h"

namespace smik::compile {

struct Explanation {
  bool allowed = false;
  std::string summary;                // one line: verdict and what decided it
  std::string traffic_target;         // deciding TrafficTarget (ns/name), if any
  std::string rule;                   // deciding rule ("TCPRoute tcp-ports"), if any
  std::vector<std::string> details;   // why each candidate TrafficTarget did not match
};

// from/to are "ns/pod". Errors (unknown pod...) come back in *err.
// applied: the plan compiled from state for node, when the caller has it
// (the agent's, in force); it answers for destinations on node.node_name,
// any other destination is judged by compiling for its own node.
bool explain(const model::ClusterState& state, NodeConfig node, const std::string& from,
             const std::string& to, uint16_t port, model::Proto proto, Explanation* out,
             std::string* err, const Plan* applied = nullptr);

// Where a connection to a Service port goes: for each of its ClusterIPs, the
// TrafficSplit applied (if any), each group's share and each endpoint's
// probability. service is "ns/name".
struct ServiceChoice {
  std::string pod;  // ns/name, when known
  std::string address;  // ip:port
  double probability = 0;
};
struct ServiceGroupExplained {
  std::string service;
  uint32_t weight = 0;
  double share = 0;
  std::vector<ServiceChoice> endpoints;
};
struct ServiceExplanation {
  std::string vip;  // ip:port/proto
  std::string split;
  std::vector<ServiceGroupExplained> groups;
};
bool explainService(const model::ClusterState& state, const NodeConfig& node,
                    const std::string& service, uint16_t port, model::Proto proto,
                    std::vector<ServiceExplanation>* out, std::vector<std::string>* notes,
                    std::string* err, const Plan* applied = nullptr);

}  // namespace smik::compile
