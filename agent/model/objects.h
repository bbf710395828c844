// Typed, validated view of the Kubernetes and SMI objects smik reads.
// Every SMI version is normalised on parse: TrafficTarget to access v1alpha3,
// routes to specs v1alpha4. The compiler never sees a version string.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace smik::model {

struct ObjectMeta {
  std::string name;
  std::string ns;  // empty only for cluster-scoped kinds (Namespace)
  std::map<std::string, std::string> labels;
  std::string creation_timestamp;  // RFC3339 as written; compared as a string
};

// Names an object in errors and diagnostics: "TrafficTarget default/foo".
struct ObjectRef {
  std::string kind;
  std::string ns;
  std::string name;
  std::string str() const;
  auto operator<=>(const ObjectRef&) const = default;
};

enum class Proto : uint8_t { kTcp = 6, kUdp = 17 };
const char* protoName(Proto p);

struct Namespace {
  ObjectMeta meta;
};

struct ServiceAccount {
  ObjectMeta meta;
};

struct Pod {
  ObjectMeta meta;
  std::string service_account;  // "default" when the manifest leaves it out
  std::string node_name;
  std::vector<std::string> ips;  // status.podIPs, else status.podIP; textual
  std::string phase;
  bool host_network = false;
};

// A TrafficTarget destination or source (only kind ServiceAccount is defined).
struct Subject {
  std::string kind;
  std::string name;
  std::string ns;  // defaulted on parse: destination and sources to the TT's namespace
};

struct TrafficRule {
  std::string kind;  // HTTPRouteGroup | TCPRoute | UDPRoute
  std::string name;
  std::vector<std::string> matches;  // HTTPRouteGroup match names; empty = all
};

struct TrafficTarget {
  ObjectMeta meta;
  std::string original_version;  // "v1alpha1".."v1alpha3": for diagnostics only
  Subject destination;
  std::vector<TrafficRule> rules;
  std::vector<Subject> sources;
  // v1alpha1/v1alpha2 `destination.port`: narrows every rule to this one port.
  // Absent = every port the rules grant.
  std::optional<uint16_t> legacy_port;
};

// TCPRoute / UDPRoute, normalised to specs v1alpha4. Routes older than
// v1alpha4 carry no ports, which means "all ports".
struct L4Route {
  ObjectMeta meta;
  Proto proto = Proto::kTcp;
  std::vector<uint16_t> ports;  // empty = all ports of `proto`
};

struct HttpMatch {
  std::string name;
  std::string path_regex;
  std::vector<std::string> methods;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpRouteGroup {
  ObjectMeta meta;
  std::vector<HttpMatch> matches;
};

using Object =
    std::variant<Namespace, ServiceAccount, Pod, TrafficTarget, L4Route, HttpRouteGroup>;

// Kind name as smik reports it ("TCPRoute", "Pod", ...).
std::string kindOf(const Object& o);
ObjectRef refOf(const Object& o);

// Everything the compiler needs, keyed "ns/name" (or "name" for Namespaces)
// in ordered maps so compilation is deterministic.
struct ClusterState {
  std::map<std::string, Namespace> namespaces;
  std::map<std::string, ServiceAccount> service_accounts;
  std::map<std::string, Pod> pods;
  std::map<std::string, TrafficTarget> traffic_targets;
  std::map<std::string, L4Route> tcp_routes;
  std::map<std::string, L4Route> udp_routes;
  std::map<std::string, HttpRouteGroup> http_route_groups;

  void add(const Object& o);  // upsert
};

}  // namespace smik::model
