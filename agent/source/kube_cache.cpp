#include "agent/source/kube_cache.h"

#include <spdlog/spdlog.h>

namespace smik::kube {
namespace {
bool isSmiGroup(const std::string& api_version) {
  return api_version.find(".smi-spec.io/") != std::string::npos;
}

using json = nlohmann::json;

// j[key] when j is an object and that member a string, else "": what an API
// server sends is not trusted to have the types it should.
std::string stringField(const json& j, const char* key) {
  if (!j.is_object()) return "";
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

const json& objectField(const json& j, const char* key) {
  static const json kEmpty = json::object();
  if (!j.is_object()) return kEmpty;
  const auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : kEmpty;
}

}  // namespace

// More than `limit` objects and arrays deep. A loop, not a recursion: the
// point is not to recurse on what arrived (the API server accepts 10000
// levels; copying, printing or converting that many recurses as deep).
bool nestedDeeperThan(const json& j, size_t limit) {
  std::vector<std::pair<const json*, size_t>> todo = {{&j, 1}};
  while (!todo.empty()) {
    const auto [v, depth] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    if (depth > limit) return true;
    for (const json& child : *v) todo.emplace_back(&child, depth + 1);
  }
  return false;
}

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
  const std::string api_version = stringField(object, "apiVersion");
  const std::string kind = stringField(object, "kind");
  const json& meta = objectField(object, "metadata");
  const std::string collection = api_version + " " + kind;
  if (event == Reflector::Event::kDelete) {
    std::lock_guard lock(mu_);
    auto c = entries_.find(collection);
    if (c == entries_.end()) return;
    if (const Entry* e = c->second.find(key)) {
      unindex(*e);
      c->second.erase(key);
      if (c->second.empty()) entries_.erase(c);
      ++generation_;
    }
    return;
  }
  // The manifest parser reads it, errors and all: the same meaning as a file.
  model::ParseResult parsed;
  if (nestedDeeperThan(object, model::kMaxNestingDepth)) {
    parsed.errors.push_back(
        {"kubernetes",
         {kind, stringField(meta, "namespace"), stringField(meta, "name")},
         "nested deeper than " + std::to_string(model::kMaxNestingDepth) + " levels"});
  } else {
    // Read as it is: the parser reads only its fields, and the decoder
    // already left out most of the rest.
    parsed = model::parseJson(object, "kubernetes");
  }
  Entry entry;
  std::unique_ptr<model::Object> model_object;
  if (!parsed.objects.empty()) {
    if (auto* pod = std::get_if<model::Pod>(&parsed.objects.front()))
      entry.pod = std::make_shared<const model::Pod>(std::move(*pod));
    else
      model_object = std::make_unique<model::Object>(std::move(parsed.objects.front()));
  }
  // Services too: the compiler may reject one for capacity, and says so in
  // an Event. There are few of them, unlike pods.
  std::unique_ptr<Extra> extra;
  if (!parsed.errors.empty() || isSmiGroup(api_version) || kind == "Service") {
    extra = std::make_unique<Extra>();
    if (!parsed.errors.empty()) extra->error = std::move(parsed.errors.front());
    extra->involved = {api_version,
                       kind,
                       stringField(meta, "namespace"),
                       stringField(meta, "name"),
                       stringField(meta, "uid"),
                       stringField(meta, "resourceVersion")};
  }
  if (model_object || extra)
    entry.rest = std::make_unique<Rest>(Rest{std::move(model_object), std::move(extra)});
  std::lock_guard lock(mu_);
  if (const Extra* x = entry.extra()) {
    if (x->error) {
      ++rejected_total_;
      // Once per rejected version, as the count; the Event says it in the cluster.
      spdlog::warn("kubernetes: rejected: {}", x->error->str());
    }
    const InvolvedObject& in = x->involved;
    smi_index_[{in.kind, in.ns, in.name}] = in;
  }
  entries_[collection].put(key, std::move(entry));
  ++generation_;
}

model::ClusterState KubeCache::state() const {
  std::lock_guard lock(mu_);
  model::ClusterState s;
  std::vector<std::shared_ptr<const model::Pod>> pods;
  forEachEntry([&](const Entry& e) {
    if (e.pod)
      pods.push_back(e.pod);
    else if (const model::Object* o = e.object())
      s.add(*o);
  });
  s.setPods(std::move(pods));
  return s;
}

std::vector<model::ParseError> KubeCache::errors() const {
  std::lock_guard lock(mu_);
  std::vector<model::ParseError> out;
  forEachEntry([&](const Entry& e) {
    if (e.extra() && e.extra()->error) out.push_back(*e.extra()->error);
  });
  return out;
}

void KubeCache::unindex(const Entry& e) {
  if (!e.extra()) return;
  const InvolvedObject& in = e.extra()->involved;
  smi_index_.erase({in.kind, in.ns, in.name});
}

std::vector<std::pair<InvolvedObject, model::ParseError>> KubeCache::rejected() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<InvolvedObject, model::ParseError>> out;
  forEachEntry([&](const Entry& e) {
    if (e.extra() && e.extra()->error) out.emplace_back(e.extra()->involved, *e.extra()->error);
  });
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
  auto c = entries_.find(resource.api_version + " " + resource.kind);
  if (c == entries_.end()) return;
  c->second.forEach([&](const std::string&, const Entry& e) { unindex(e); });
  entries_.erase(c);
  ++generation_;
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
