// compile(state, node) -> Plan: the SMI semantics of smik, as a pure function
// (no I/O, no clocks). Everything the kernel enforces is decided here; the
// maps layer only copies the Plan into pinned maps.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/base/abi.h"
#include "agent/base/addr.h"
#include "agent/base/names.h"
#include "agent/model/objects.h"

namespace smik::compile {

enum class AccessMode { kStrict, kPermissive, kPerDestination };
const char* accessModeName(AccessMode m);
bool parseAccessMode(const std::string& s, AccessMode* out);

// What an HTTPRouteGroup rule grants at L4, where paths and methods are
// invisible (README: SMI semantics). Default: nothing.
enum class HttpRulesAtL4 { kGrantNothing, kGrantAllTcp };

// Traffic from this node's own addresses (kubelet probes, host-network
// pods, and whatever is source-NATed to the node's address on its way to a
// local pod). kAllow: it passes before any policy (SMI is silent; Cilium's
// allow-localhost). kPolicy: judged like any source; a TrafficTarget grants
// it with the source {kind: Host, name: local}.
enum class HostTraffic { kAllow, kPolicy };
const char* hostTrafficName(HostTraffic h);
bool parseHostTraffic(const std::string& s, HostTraffic* out);
// How many entries each map the compiler fills holds (smik_abi.h). An object
// that would not fit is rejected whole, with a diagnostic, largest first
// until the rest fits: a map write never fails for want of room.
struct Capacity {
  size_t ips = SMIK_MAX_IPS;
  size_t endpoints = SMIK_MAX_ENDPOINTS;
  size_t policy = SMIK_MAX_POLICY;
  size_t services = SMIK_MAX_SERVICES;
  // While a table is replaced both generations of its endpoints are in the
  // map (and the agent may replace every table at once): half of it.
  size_t backends = SMIK_MAX_BACKENDS / 2;
};

struct NodeConfig {
  std::string node_name;
  AccessMode access_mode = AccessMode::kStrict;
  bool mesh_all = false;  // every pod is meshed, whatever its namespace says
  // Namespaces meshed by the installer's choice, besides labelled ones.
  std::vector<std::string> mesh_namespaces;
  HttpRulesAtL4 http_rules = HttpRulesAtL4::kGrantNothing;
  std::vector<std::string> host_addrs;  // this node's own addresses: identity HOST
  HostTraffic host_traffic = HostTraffic::kAllow;
  // The cluster's DNS domain (kubelet's --cluster-domain): a TrafficSplit
  // naming its Services NAME.NS.svc.<another domain> is not applied.
  std::string cluster_domain = kDefaultClusterDomain;
  Capacity capacity;
};

// Namespace label that puts a namespace's pods into the mesh.
inline constexpr const char* kMeshLabel = "smik.io/mesh";
inline constexpr const char* kMeshLabelValue = "enabled";

struct Diagnostic {
  enum class Level { kInfo, kWarning };
  Level level = Level::kWarning;
  model::ObjectRef object;
  std::string message;
  std::string str() const;
};

// An object left out of the plan because a map could not hold it.
struct CapacityRejection {
  model::ObjectRef object;
  std::string map;     // "smik_policy", as the kernel names the map
  size_t entries = 0;  // what the object needs in it
  size_t limit = 0;    // what the map holds
  std::string message;  // its diagnostic's
};

// Which TrafficTarget rule produced a policy entry (policy value rule_id - 1).
struct RuleOrigin {
  std::string traffic_target;  // ns/name
  std::string rule;            // "TCPRoute tcp-ports" ...
};

// One endpoint of a service port: where a connection really goes.
struct ServiceBackend {
  Addr addr;
  uint16_t port = 0;
  std::string pod;  // ns/name when known, for explain
  auto operator<=>(const ServiceBackend&) const = default;
};

// A weighted group: one TrafficSplit backend Service (or the Service itself).
struct ServiceGroup {
  std::string service;  // ns/name of the Service whose endpoints these are
  uint32_t weight = 0;
  std::vector<ServiceBackend> endpoints;  // non-empty
  bool operator==(const ServiceGroup&) const = default;
};

// What connect() to one ClusterIP:port/proto is translated to.
struct ServiceTable {
  std::string service;  // ns/name
  Addr vip;
  uint16_t port = 0;
  model::Proto proto = model::Proto::kTcp;
  uint32_t svc_id = 0;
  std::string split;  // ns/name of the TrafficSplit applied; empty = even over own endpoints
  std::vector<ServiceGroup> groups;  // empty = no ready endpoint: not translated
  bool operator==(const ServiceTable&) const = default;
};

// A local meshed pod: gets tc programs on its host-side veth.
struct LocalEndpoint {
  std::string pod;  // ns/name
  uint32_t identity = 0;
  std::vector<Addr> addrs;
};

struct Plan {
  std::map<std::string, uint32_t> identities;  // "ns/sa" -> id
  std::map<Addr, smik_ip_info> ip_identity;    // every pod IP of the cluster + host addrs
  std::map<std::string, LocalEndpoint> endpoints;  // by pod ns/name
  std::map<smik_policy_key, smik_policy_value> policy;
  std::vector<RuleOrigin> rules;  // index = rule_id - 1
  std::map<smik_svc_key, ServiceTable> services;  // every ClusterIP service port
  std::vector<Diagnostic> diagnostics;
  // Objects rejected for capacity (each also has a diagnostic). A local pod
  // in it (map smik_endpoints) is not enforced: the agent reports it.
  std::vector<CapacityRejection> over_capacity;

  // Name of an identity id, "ns/sa" or a reserved name ("host", "world").
  std::string identityName(uint32_t id) const;
};

Plan compile(const model::ClusterState& state, const NodeConfig& node);

// Stable numeric identity for ServiceAccount "ns/name" (a hash, so ids keep
// their meaning across restarts and nodes; collisions are probed in name order).
std::map<std::string, uint32_t> assignIdentities(const std::set<std::string>& accounts);

bool isMeshed(const model::ClusterState& state, const model::Pod& pod, const NodeConfig& node);

}  // namespace smik::compile
