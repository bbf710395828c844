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
#include "agent/base/flat_map.h"
#include "agent/base/shared_flat_map.h"
#include "agent/base/names.h"
#include "agent/compile/http_regex.h"
#include "agent/model/objects.h"

namespace smik::compile {

enum class AccessMode { kStrict, kPermissive, kPerDestination };
const char* accessModeName(AccessMode m);
bool parseAccessMode(const std::string& s, AccessMode* out);

// What an HTTPRouteGroup rule grants (--http-rules, README: SMI semantics).
// kGrantNothing and kGrantAllTcp project it to L4, where paths and methods
// are invisible; kEnforce grants its requests to the kernel's HTTP judge and
// the TCP ports that carry them at L4. The compiler's default is the L4
// projection it always was; the agent's flag defaults to enforce.
enum class HttpRulesAtL4 { kGrantNothing, kGrantAllTcp, kEnforce };
const char* httpRulesName(HttpRulesAtL4 h);  // deny | allow-tcp | enforce
bool parseHttpRules(const std::string& s, HttpRulesAtL4* out);

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

// Why a source may send a request to an HTTP-judged port: one match of one
// rule (or a whole-port grant), for explain and `smik policy`.
struct HttpGrantOrigin {
  uint32_t src_id = 0;
  uint32_t rule_id = 0;    // plan.rules index + 1
  std::string match;       // the HTTPRouteGroup match's name; empty: every request
  uint16_t methods = 0;    // bit per smik_http_method
  size_t pattern = 0;      // index in HttpPortPlan::patterns
};

// One (destination identity, TCP port) whose requests the kernel judges.
struct HttpPortPlan {
  // bit i of a grant's mask is patterns[i] (path regexes, anchored at the
  // start) together with the header conditions needs[i]; sorted, at most
  // http::kMaxPatterns.
  // A regex appears once per set of header conditions it is granted with.
  std::vector<http::Pattern> patterns;
  std::vector<uint32_t> needs;  // per pattern: bits of `headers` a request must hold too
  std::vector<http::HeaderCondition> headers;  // sorted, at most 32; none: no header is read
  http::Dfa dfa;              // of `patterns`; empty (no states) when they did not compile
  http::Dfa header_dfa;       // of `headers` (http::compileHeaderDfa); empty when there are none
  std::string error;          // why the DFA is empty: every request is denied
  std::map<uint32_t, smik_http_grant> grants;  // by source identity
  std::vector<HttpGrantOrigin> origins;        // in rule order

  // What bit i means, as one string: the kernel keeps a bit for a meaning
  // while sockets run a DFA that gave it one (datapath/http_apply.h).
  std::string meaning(size_t i) const;
  // The request's verdict as the kernel reaches it at the end of its head:
  // some granted bit whose path matched (`accepts`) has all its header
  // conditions among `held`.
  bool allows(const http::PatternSet& granted, const http::PatternSet& accepts, uint32_t held) const;
};

struct Plan {
  std::map<std::string, uint32_t> identities;  // "ns/sa" -> id
  // Every pod IP of the cluster + host addrs. Sorted vector: 28 bytes an
  // address, where a std::map node took 80; shared (copy on write) with the
  // desired kernel state made from this plan, and so with the agent's view
  // of the kernel once it is applied.
  SharedFlatMap<Addr, smik_ip_info> ip_identity;
  std::map<std::string, LocalEndpoint> endpoints;  // by pod ns/name
  std::map<smik_policy_key, smik_policy_value> policy;
  std::vector<RuleOrigin> rules;  // index = rule_id - 1
  std::map<smik_svc_key, ServiceTable> services;  // every ClusterIP service port
  std::vector<Diagnostic> diagnostics;
  // Objects rejected for capacity (each also has a diagnostic). A local pod
  // in it (map smik_endpoints) is not enforced: the agent reports it.
  std::vector<CapacityRejection> over_capacity;
  // --http-rules=enforce: the ports of local destinations the HTTP judge
  // governs, keyed (destination identity, port). Each also has its TCP
  // grants in `policy`: the flow passes L4 and each request is judged.
  std::map<std::pair<uint32_t, uint16_t>, HttpPortPlan> http;

  // Name of an identity id, "ns/sa" or a reserved name ("host", "world").
  std::string identityName(uint32_t id) const;
};

Plan compile(const model::ClusterState& state, const NodeConfig& node);

// SMI method name ("GET", "*") -> bits of smik_http_method; 0 if unknown.
uint16_t httpMethodBits(const std::string& method);
// smik_http_method -> its name ("OTHER" for the rest).
const char* httpMethodName(unsigned m);

// Stable numeric identity for ServiceAccount "ns/name" (a hash, so ids keep
// their meaning across restarts and nodes; collisions are probed in name order).
std::map<std::string, uint32_t> assignIdentities(const std::set<std::string>& accounts);

bool isMeshed(const model::ClusterState& state, const model::Pod& pod, const NodeConfig& node);

}  // namespace smik::compile
