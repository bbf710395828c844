#include "agent/model/objects.h"

#include <type_traits>

namespace smik::model {

std::string ObjectRef::str() const {
  std::string id = ns.empty() ? name : ns + "/" + name;
  if (kind.empty()) return id;
  if (id.empty()) return kind;
  return kind + " " + id;
}

std::string kindOf(const Object& o) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Namespace>)
          return "Namespace";
        else if constexpr (std::is_same_v<T, ServiceAccount>)
          return "ServiceAccount";
        else if constexpr (std::is_same_v<T, Pod>)
          return "Pod";
        else if constexpr (std::is_same_v<T, TrafficTarget>)
          return "TrafficTarget";
        else if constexpr (std::is_same_v<T, L4Route>)
          return v.proto == Proto::kUdp ? "UDPRoute" : "TCPRoute";
        else if constexpr (std::is_same_v<T, Service>)
          return "Service";
        else if constexpr (std::is_same_v<T, EndpointSlice>)
          return "EndpointSlice";
        else if constexpr (std::is_same_v<T, TrafficSplit>)
          return "TrafficSplit";
        else if constexpr (std::is_same_v<T, Workload>)
          return v.kind;
        else {
          static_assert(std::is_same_v<T, HttpRouteGroup>);
          return "HTTPRouteGroup";
        }
      },
      o);
}

ObjectRef refOf(const Object& o) {
  const ObjectMeta& m = std::visit([](const auto& v) -> const ObjectMeta& { return v.meta; }, o);
  return ObjectRef{kindOf(o), m.ns, m.name};
}

void ClusterState::addPod(std::shared_ptr<const Pod> pod) {
  const std::string key = namespacedName(pod->meta.ns, pod->meta.name);
  pods[key] = std::move(pod);
}

void ClusterState::setPods(std::vector<std::shared_ptr<const Pod>> list) {
  PodMap::container_type entries;
  entries.reserve(pods.size() + list.size());
  for (auto& e : pods) entries.push_back(std::move(e));  // those add() put there come first
  for (auto& p : list) {
    std::string key = namespacedName(p->meta.ns, p->meta.name);
    entries.emplace_back(std::move(key), std::move(p));
  }
  list = {};
  pods = PodMap::fromUnsorted(std::move(entries), PodMap::Keep::kLast);
}

void ClusterState::add(const Object& o) {
  std::visit(
      [this](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        const std::string key = namespacedName(v.meta.ns, v.meta.name);
        if constexpr (std::is_same_v<T, Namespace>)
          namespaces[v.meta.name] = v;
        else if constexpr (std::is_same_v<T, ServiceAccount>)
          service_accounts[key] = v;
        else if constexpr (std::is_same_v<T, Pod>)
          pods[key] = std::make_shared<const Pod>(v);
        else if constexpr (std::is_same_v<T, TrafficTarget>)
          traffic_targets[key] = v;
        else if constexpr (std::is_same_v<T, L4Route>)
          (v.proto == Proto::kUdp ? udp_routes : tcp_routes)[key] = v;
        else if constexpr (std::is_same_v<T, Service>)
          services[key] = v;
        else if constexpr (std::is_same_v<T, EndpointSlice>)
          endpoint_slices[key] = v;
        else if constexpr (std::is_same_v<T, TrafficSplit>)
          traffic_splits[key] = v;
        else if constexpr (std::is_same_v<T, Workload>)
          workloads[v.kind + "/" + key] = v;
        else {
          static_assert(std::is_same_v<T, HttpRouteGroup>);
          http_route_groups[key] = v;
        }
      },
      o);
}

}  // namespace smik::model
