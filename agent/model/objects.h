// Typed, validated view of the Kubernetes and SMI objects smik reads.
// Every SMI version is normalised on parse: TrafficTarget to access v1alpha3,
// routes to specs v1alpha4, TrafficSplit weights to whole numbers (v1alpha1
// Quantities as milli-units). The compiler never sees a version string.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "agent/base/flat_map.h"
#include "agent/base/names.h"
#include "agent/model/interned.h"

namespace smik::model {

// metadata.labels: a sorted vector (24 bytes empty, where a std::map took
// 48 in every pod, and one allocation for all of them).
using Labels = FlatMap<std::string, std::string>;

// Fields whose values repeat across objects are Interned (a pod's name is
// its own; its namespace, owner and creation second are shared by many).
struct ObjectMeta {
  std::string name;
  Interned ns;  // empty only for cluster-scoped kinds (Namespace)
  Labels labels;
  Interned creation_timestamp;  // RFC3339 as written; compared as a string
  // The controlling owner (ownerReferences: the one with controller: true,
  // else the first), e.g. ReplicaSet foo-7b9c for a Deployment's pod.
  Interned owner_kind;
  Interned owner_name;
  bool operator==(const ObjectMeta&) const = default;
};

// Names an object in errors and diagnostics: "TrafficTarget default/foo".
struct ObjectRef {
  std::string kind;
  std::string ns;
  std::string name;
  std::string str() const;
  auto operator<=>(const ObjectRef&) const = default;
};

using ::smik::Proto;
using ::smik::protoName;

struct Namespace {
  ObjectMeta meta;
  bool operator==(const Namespace&) const = default;
};

struct ServiceAccount {
  ObjectMeta meta;
  bool operator==(const ServiceAccount&) const = default;
};

// spec.containers[].ports[]. SCTP ports are dropped on parse.
struct ContainerPort {
  std::string name;  // may be empty
  uint16_t port = 0;
  Proto proto = Proto::kTcp;
  bool operator==(const ContainerPort&) const = default;
};

struct Pod {
  ObjectMeta meta;
  Interned service_account;  // "default" when the manifest leaves it out
  Interned node_name;
  std::vector<std::string> ips;  // status.podIPs, else status.podIP; textual
  Interned phase;
  bool host_network = false;
  std::vector<ContainerPort> container_ports;  // every container, in manifest order
  bool operator==(const Pod&) const = default;
};

// spec.ports[]. SCTP ports are dropped on parse.
struct ServicePort {
  std::string name;  // may be empty
  uint16_t port = 0;
  Proto proto = Proto::kTcp;
  // targetPort: a number (target_port_name empty) or a container port name
  // (target_port_number 0). Absent, null, 0 and "" mean `port`, as in
  // Kubernetes defaulting; an all-digits string is a number.
  uint16_t target_port_number = 0;
  std::string target_port_name;
  bool operator==(const ServicePort&) const = default;
};

struct Service {
  ObjectMeta meta;
  // spec.clusterIPs, else spec.clusterIP; textual, validated. "None" and ""
  // (headless, or not yet allocated) leave it empty.
  std::vector<std::string> cluster_ips;
  std::vector<ServicePort> ports;
  std::map<std::string, std::string> selector;
  // spec.selector present and non-empty. Kubernetes derives endpoints only
  // for such Services; an empty selector selects nothing, not everything.
  bool has_selector = false;
  std::string type;  // spec.type; "ClusterIP" when absent
  bool operator==(const Service&) const = default;
};

// discovery.k8s.io/v1 (and v1beta1, same shape for these fields).
struct EndpointSlice {
  ObjectMeta meta;
  std::string service_name;  // label kubernetes.io/service-name (required)
  // IPv4 | IPv6 | FQDN. FQDN slices parse but carry no endpoints: nothing in
  // them is an IP address smik could use.
  std::string address_type;
  struct Endpoint {
    std::vector<std::string> addresses;  // textual; of the slice's address family
    // conditions.ready; absent/null = ready, per the Kubernetes API.
    bool ready = true;
    std::string target_pod;  // targetRef.name when targetRef.kind is Pod
    bool operator==(const Endpoint&) const = default;
  };
  std::vector<Endpoint> endpoints;
  struct Port {
    std::string name;   // may be empty
    uint16_t port = 0;  // 0: absent, i.e. not restricted (Kubernetes: "all ports")
    Proto proto = Proto::kTcp;
    bool operator==(const Port&) const = default;
  };
  std::vector<Port> ports;  // SCTP ports are dropped on parse
  bool operator==(const EndpointSlice&) const = default;
};

struct TrafficSplitBackend {
  // A Service in the split's namespace, by its name alone: NAME.NS,
  // NAME.NS.svc and NAME.NS.svc.DOMAIN are resolved on parse, and a name in
  // another namespace rejects the split.
  std::string service;
  // Relative weight, >= 0. v1alpha2+: as written. v1alpha1 (resource.Quantity):
  // the value in milli-units ("500m" -> 500, "1" -> 1000), so mixed suffixes
  // keep their ratio.
  int64_t weight = 0;
  bool operator==(const TrafficSplitBackend&) const = default;
};

struct TrafficSplit {
  ObjectMeta meta;
  std::string original_version;  // "v1alpha1".."v1alpha4": for diagnostics only
  std::string service;           // the root (apex) Service, same namespace, name alone
  // Possibly empty.
  std::vector<TrafficSplitBackend> backends;
  // v1alpha3+ `matches` (HTTPRouteGroup names), present and non-empty. Older
  // versions have no such field: the API server prunes it.
  bool has_matches = false;
  std::vector<std::string> match_names;
  // Names written with a cluster domain (NAME.NS.svc.DOMAIN): only the
  // compiler knows this cluster's (--cluster-domain), so it checks them.
  struct QualifiedName {
    std::string field;    // "spec.backends[1].service"
    std::string written;  // as the manifest has it
    std::string domain;
    bool operator==(const QualifiedName&) const = default;
  };
  std::vector<QualifiedName> qualified;
  bool operator==(const TrafficSplit&) const = default;
};

// A TrafficTarget destination or source. SMI defines kind ServiceAccount
// only; smik adds one source kind, Host with name "local": the node the
// destination pod runs on (kubelet probes, host-network pods, traffic
// source-NATed to the node), which SMI cannot name. It matters only with
// --host-traffic=policy (host traffic passes unjudged otherwise).
inline constexpr const char* kHostSubjectKind = "Host";
inline constexpr const char* kHostSubjectName = "local";

struct Subject {
  std::string kind;
  std::string name;
  std::string ns;  // defaulted on parse: destination and sources to the TT's namespace; empty for Host
  bool isHost() const { return kind == kHostSubjectKind; }
  bool operator==(const Subject&) const = default;
};

struct TrafficRule {
  std::string kind;  // HTTPRouteGroup | TCPRoute | UDPRoute
  std::string name;
  std::vector<std::string> matches;  // HTTPRouteGroup match names; empty = all
  bool operator==(const TrafficRule&) const = default;
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
  bool operator==(const TrafficTarget&) const = default;
};

// TCPRoute / UDPRoute, normalised to specs v1alpha4. Routes older than
// v1alpha4 carry no ports, which means "all ports".
struct L4Route {
  ObjectMeta meta;
  Proto proto = Proto::kTcp;
  std::vector<uint16_t> ports;  // empty = all ports of `proto`
  bool operator==(const L4Route&) const = default;
};

struct HttpMatch {
  std::string name;
  std::string path_regex;
  std::vector<std::string> methods;
  std::vector<std::pair<std::string, std::string>> headers;
  bool operator==(const HttpMatch&) const = default;
};

struct HttpRouteGroup {
  ObjectMeta meta;
  std::vector<HttpMatch> matches;
  bool operator==(const HttpRouteGroup&) const = default;
};

// A workload controller (Deployment, ReplicaSet, DaemonSet, StatefulSet):
// only who owns whom, to name pods' owners in metrics.
struct Workload {
  ObjectMeta meta;
  std::string kind;
  bool operator==(const Workload&) const = default;
};

using Object = std::variant<Namespace, ServiceAccount, Pod, TrafficTarget, L4Route, HttpRouteGroup,
                            Service, EndpointSlice, TrafficSplit, Workload>;

// Kind name as smik reports it ("TCPRoute", "Pod", ...).
std::string kindOf(const Object& o);
ObjectRef refOf(const Object& o);

// Everything the compiler needs, keyed "ns/name" (or "name" for Namespaces)
// in ordered maps so compilation is deterministic.
struct ClusterState {
  std::map<std::string, Namespace> namespaces;
  std::map<std::string, ServiceAccount> service_accounts;
  // Shared and immutable: a snapshot for the compiler copies pointers, not
  // pods (at 50k pods each copy of the pods themselves costs tens of MiB).
  // A sorted vector (48 bytes a pod, where a std::map node took 96): a
  // source builds it with setPods(), or addPod() in key order.
  using PodMap = FlatMap<std::string, std::shared_ptr<const Pod>>;
  PodMap pods;
  std::map<std::string, TrafficTarget> traffic_targets;
  std::map<std::string, L4Route> tcp_routes;
  std::map<std::string, L4Route> udp_routes;
  std::map<std::string, HttpRouteGroup> http_route_groups;
  std::map<std::string, Service> services;
  std::map<std::string, EndpointSlice> endpoint_slices;
  std::map<std::string, TrafficSplit> traffic_splits;
  std::map<std::string, Workload> workloads;  // keyed "Kind/ns/name"

  void add(const Object& o);  // upsert
  void addPod(std::shared_ptr<const Pod> pod);  // upsert, sharing the pod
  // Adds pods in any order, sorting once; of one key the last is kept (as
  // addPod() one after another would).
  void setPods(std::vector<std::shared_ptr<const Pod>> pods);
};

}  // namespace smik::model
