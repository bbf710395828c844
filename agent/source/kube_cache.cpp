#include "agent/source/kube_cache.h"

namespace smik::kube {
namespace {
bool isSmiGroup(const std::string& api_version) {
  return api_version.find(".smi-spec.io/") != std::string::npos;
}
}  // namespace

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
    auto it = entries_.find(id);
    if (it != entries_.end()) {
      unindex(it->second);
      entries_.erase(it);
      ++generation_;
    }
    return;
  }
  // JSON is YAML: the manifest parser reads it as is, errors and all.
  model::ParseResult parsed = model::parseManifests(object.dump(), "kubernetes");
  Entry entry;
  if (!parsed.objects.empty()) entry.object = std::move(parsed.objects.front());
  if (!parsed.errors.empty()) entry.error = std::move(parsed.errors.front());
  const std::string api_version = object.value("apiVersion", "");
  if (entry.error || isSmiGroup(api_version)) {
    const auto& meta = object.value("metadata", nlohmann::json::object());
    entry.involved = {api_version,
                      object.value("kind", ""),
                      meta.value("namespace", ""),
                      meta.value("name", ""),
                      meta.value("uid", ""),
                      meta.value("resourceVersion", "")};
  }
  std::lock_guard lock(mu_);
  if (entry.error) ++rejected_total_;
  if (!entry.involved.kind.empty())
    smi_index_[{entry.involved.kind, entry.involved.ns, entry.involved.name}] = entry.involved;
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

void KubeCache::unindex(const Entry& e) {
  if (!e.involved.kind.empty()) smi_index_.erase({e.involved.kind, e.involved.ns, e.involved.name});
}

std::vector<std::pair<InvolvedObject, model::ParseError>> KubeCache::rejected() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<InvolvedObject, model::ParseError>> out;
  for (const auto& [id, e] : entries_)
    if (e.error) out.emplace_back(e.involved, *e.error);
  return out;
}

std::optional<InvolvedObject> KubeCache::find(const model::ObjectRef& ref) const {
  std::lock_guard lock(mu_);
  auto it = smi_index_.find(ref);
  if (it == smi_index_.end()) return std::nullopt;
  return it->second;
}

void KubeCache::dropResource(const Resource& resource) {
  std::lock_guard lock(mu_);
  const std::string prefix = resource.api_version + " " + resource.kind + " ";
  auto it = entries_.lower_bound(prefix);
  bool any = false;
  while (it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    unindex(it->second);
    it = entries_.erase(it);
    any = true;
  }
  if (any) ++generation_;
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
