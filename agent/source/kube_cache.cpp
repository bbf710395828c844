#include "agent/source/kube_cache.h"

namespace smik::kube {

std::vector<Resource> smikResources() {
  return {
      {"v1", "Namespace", "namespaces", ""},
      {"v1", "ServiceAccount", "serviceaccounts", ""},
      {"v1", "Pod", "pods", ""},
      {"v1", "Service", "services", ""},
      {"discovery.k8s.io/v1", "EndpointSlice", "endpointslices", ""},
      {"apps/v1", "Deployment", "deployments", ""},
      {"apps/v1", "ReplicaSet", "replicasets", ""},
      {"apps/v1", "DaemonSet", "daemonsets", ""},
      {"apps/v1", "StatefulSet", "statefulsets", ""},
      {"access.smi-spec.io/v1alpha3", "TrafficTarget", "traffictargets", ""},
      {"specs.smi-spec.io/v1alpha4", "HTTPRouteGroup", "httproutegroups", ""},
      {"specs.smi-spec.io/v1alpha4", "TCPRoute", "tcproutes", ""},
      {"specs.smi-spec.io/v1alpha4", "UDPRoute", "udproutes", ""},
      {"split.smi-spec.io/v1alpha4", "TrafficSplit", "trafficsplits", ""},
  };
}

void KubeCache::apply(Reflector::Event event, const std::string& key,
                      const nlohmann::json& object) {
  // Kind and version in the key: two kinds may share a namespace/name.
  const std::string id =
      object.value("apiVersion", "") + " " + object.value("kind", "") + " " + key;
  if (event == Reflector::Event::kDelete) {
    std::lock_guard lock(mu_);
    if (entries_.erase(id)) ++generation_;
    return;
  }
  // JSON is YAML: the manifest parser reads it as is, errors and all.
  model::ParseResult parsed = model::parseManifests(object.dump(), "kubernetes");
  Entry entry;
  if (!parsed.objects.empty()) entry.object = std::move(parsed.objects.front());
  if (!parsed.errors.empty()) entry.error = std::move(parsed.errors.front());
  std::lock_guard lock(mu_);
  if (entry.error) ++rejected_total_;
  entries_[id] = std::move(entry);
  ++generation_;
}

model::ClusterState KubeCache::state() const {
  std::lock_guard lock(mu_);
  model::ClusterState s;
  for (const auto& [id, e] : entries_)
    if (e.object) s.add(*e.object);
  return s;
}

std::vector<model::ParseError> KubeCache::errors() const {
  std::lock_guard lock(mu_);
  std::vector<model::ParseError> out;
  for (const auto& [id, e] : entries_)
    if (e.error) out.push_back(*e.error);
  return out;
}

uint64_t KubeCache::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

uint64_t KubeCache::rejectedTotal() const {
  std::lock_guard lock(mu_);
  return rejected_total_;
}

}  // namespace smik::kube
