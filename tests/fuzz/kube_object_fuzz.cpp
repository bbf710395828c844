// What the Kubernetes source decodes from an API server: a list page or a
// watch stream, each object through KubeCache into the model, as the
// reflector feeds it. An API server (or what poses as one) may send any
// bytes; the agent names what it rejects and keeps going.
//
// Two references as well, whose disagreement is a finding (a trap):
//  - the streaming decoder, which builds only what smik reads of each
//    object, against the text parsed whole: the same keys, the same model
//    objects and the same rejections;
//  - the parser reading JSON directly against the same JSON converted to
//    the tree a YAML reader makes of it (how the source used to feed the
//    manifest parser): the same objects and errors, so a cluster and a
//    directory of manifests keep meaning the same.
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/model/parse.h"
#include "agent/source/kube_cache.h"
#include "agent/source/kube_reflector.h"

using json = nlohmann::json;
using smik::kube::KubeCache;
using smik::kube::Reflector;

namespace {

// JSON to the node a YAML reader would make of its text: strings are
// quoted scalars ("!"), numbers, booleans and null plain ones ("?").
YAML::Node toYaml(const json& j) {
  switch (j.type()) {
    case json::value_t::object: {
      YAML::Node n(YAML::NodeType::Map);
      for (const auto& [k, v] : j.items()) n[k] = toYaml(v);
      return n;
    }
    case json::value_t::array: {
      YAML::Node n(YAML::NodeType::Sequence);
      for (const auto& v : j) n.push_back(toYaml(v));
      return n;
    }
    case json::value_t::string: {
      YAML::Node n(j.get_ref<const std::string&>());
      n.SetTag("!");
      return n;
    }
    case json::value_t::null:
      return YAML::Node(YAML::NodeType::Null);
    default: {
      YAML::Node n(j.dump());
      n.SetTag("?");
      return n;
    }
  }
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

std::vector<std::string> strs(const std::vector<smik::model::ParseError>& errors) {
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.str());
  return out;
}

// The JSON reader of the parser against its YAML reader, on one object.
void sameAsYaml(const json& object) {
  // rejected before parsing
  if (smik::kube::nestedDeeperThan(object, smik::model::kMaxNestingDepth)) return;
  const auto direct = smik::model::parseJson(object, "kubernetes");
  const auto via_yaml = smik::model::parseNode(toYaml(object), "kubernetes");
  check(direct.objects == via_yaml.objects);
  check(strs(direct.errors) == strs(via_yaml.errors));
  check(direct.ignored == via_yaml.ignored);
}

bool sameState(const smik::model::ClusterState& a, const smik::model::ClusterState& b) {
  if (a.pods.size() != b.pods.size()) return false;
  for (auto i = a.pods.begin(), j = b.pods.begin(); i != a.pods.end(); ++i, ++j)
    if (i->first != j->first || *i->second != *j->second) return false;
  return a.namespaces == b.namespaces && a.service_accounts == b.service_accounts &&
         a.traffic_targets == b.traffic_targets && a.tcp_routes == b.tcp_routes &&
         a.udp_routes == b.udp_routes && a.http_route_groups == b.http_route_groups &&
         a.services == b.services && a.endpoint_slices == b.endpoint_slices &&
         a.traffic_splits == b.traffic_splits && a.workloads == b.workloads;
}

void sameCaches(const KubeCache& a, const KubeCache& b) {
  check(sameState(a.state(), b.state()));
  check(strs(a.errors()) == strs(b.errors()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const auto resources = smik::kube::smikResources();
  const bool watch = data[0] & 1;
  const smik::kube::Resource& resource = resources[data[1] % resources.size()];
  const std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);
  KubeCache cache, whole_cache;
  std::string err, whole_err;
  if (!watch) {
    auto page = smik::kube::decodeListPage(body, resource, &err);
    auto whole = smik::kube::decodeListPageWhole(body, resource, &whole_err);
    check(page.has_value() == whole.has_value() && err == whole_err);
    // The same page read as it arrives, in pieces of 1 to 13 bytes (the
    // sizes from the input): the same result and errors. The continue-token
    // hint is only a hint (a duplicated metadata may name another); it must
    // merely not break the read.
    size_t at = 0, step = 0;
    std::string streamed_err, hint = "<none>";
    auto streamed = smik::kube::decodeListPageStream(
        [&](std::string* piece) {
          if (at >= body.size()) return false;
          const size_t n =
              std::min(body.size() - at, size_t{1} + (body[step++ % body.size()] & 0xff) % 13);
          piece->assign(body.substr(at, n));
          at += n;
          return true;
        },
        resource, &streamed_err, [&](const std::string& next) { hint = next; });
    (void)hint;
    check(streamed.has_value() == page.has_value() && streamed_err == err);
    if (streamed) {
      check(streamed->resource_version == page->resource_version && streamed->next == page->next);
      check(streamed->items.size() == page->items.size());
      for (size_t i = 0; i < page->items.size(); ++i)
        check(streamed->items[i].first == page->items[i].first &&
              streamed->items[i].second == page->items[i].second);
    }
    if (page) {
      check(page->resource_version == whole->resource_version && page->next == whole->next);
      check(page->items.size() == whole->items.size());
      for (size_t i = 0; i < page->items.size(); ++i) {
        auto& [key, item] = page->items[i];
        check(key == whole->items[i].first);
        (void)Reflector::fingerprint(item);
        cache.apply(Reflector::Event::kUpsert, key, item);
        whole_cache.apply(Reflector::Event::kUpsert, key, whole->items[i].second);
        sameAsYaml(whole->items[i].second);
      }
    }
  } else {
    smik::kube::LineFramer framer;
    framer.feed(body, [&](std::string_view line) {
      auto ev = smik::kube::decodeWatchEvent(line, resource, &err);
      auto whole = smik::kube::decodeWatchEventWhole(line, resource, &whole_err);
      check(ev.has_value() == whole.has_value() && err == whole_err);
      if (!ev) return false;
      check(ev->type == whole->type && ev->key == whole->key);
      if (ev->type == "ERROR") check(ev->object == whole->object);  // a Status: kept whole
      if (ev->type == "ADDED" || ev->type == "MODIFIED") {
        cache.apply(Reflector::Event::kUpsert, ev->key, ev->object);
        whole_cache.apply(Reflector::Event::kUpsert, whole->key, whole->object);
        sameAsYaml(whole->object);
      } else if (ev->type == "DELETED") {
        cache.apply(Reflector::Event::kDelete, ev->key, ev->object);
        whole_cache.apply(Reflector::Event::kDelete, whole->key, whole->object);
      }
      return true;
    });
  }
  sameCaches(cache, whole_cache);
  for (const auto& [involved, error] : cache.rejected())
    if (error.reason.empty()) __builtin_trap();  // every rejection says why
  return 0;
}
