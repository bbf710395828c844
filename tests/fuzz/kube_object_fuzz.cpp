// What the Kubernetes source decodes from an API server: a list page or a
// watch stream, each object through KubeCache into the model, as the
// reflector feeds it. An API server (or what poses as one) may send any
// bytes; the agent names what it rejects and keeps going.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/source/kube_cache.h"
#include "agent/source/kube_reflector.h"

using smik::kube::KubeCache;
using smik::kube::Reflector;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const auto resources = smik::kube::smikResources();
  const bool watch = data[0] & 1;
  const smik::kube::Resource& resource = resources[data[1] % resources.size()];
  const std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);
  KubeCache cache;
  std::string err;
  if (!watch) {
    if (auto page = smik::kube::decodeListPage(body, resource, &err)) {
      for (auto& [key, item] : page->items) {
        (void)Reflector::fingerprint(item);
        cache.apply(Reflector::Event::kUpsert, key, item);
      }
    }
  } else {
    smik::kube::LineFramer framer;
    framer.feed(body, [&](std::string_view line) {
      auto ev = smik::kube::decodeWatchEvent(line, resource, &err);
      if (!ev) return false;
      if (ev->type == "ADDED" || ev->type == "MODIFIED")
        cache.apply(Reflector::Event::kUpsert, ev->key, ev->object);
      else if (ev->type == "DELETED")
        cache.apply(Reflector::Event::kDelete, ev->key, ev->object);
      return true;
    });
  }
  (void)cache.state();
  for (const auto& [involved, error] : cache.rejected())
    if (error.reason.empty()) __builtin_trap();  // every rejection says why
  (void)cache.errors();
  return 0;
}
