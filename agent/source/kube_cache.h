// The reflectors' stores combined into the model the compiler reads. Every
// object is parsed by the same code as manifest files, so a cluster and a
// directory of manifests mean exactly the same thing to smik.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/base/buffered_flat_map.h"
#include "agent/model/objects.h"
#include "agent/model/parse.h"
#include "agent/source/kube_events.h"
#include "agent/source/kube_reflector.h"

namespace smik::kube {

// The collections smik reads, at the versions it understands best.
std::vector<Resource> smikResources();

// More than `limit` objects and arrays deep: the cache rejects such an
// object before parsing it.
bool nestedDeeperThan(const nlohmann::json& j, size_t limit);

class KubeCache {
 public:
  // Feed from Reflector::OnEvent; thread-safe (one reflector thread each).
  void apply(Reflector::Event event, const std::string& key, const nlohmann::json& object);
  Reflector::OnEvent sink() {
    return [this](Reflector::Event e, const std::string& key, const nlohmann::json& o) {
      apply(e, key, o);
    };
  }

  model::ClusterState state() const;
  // Objects the cluster has but smik rejects now, with ns/name and reason.
  std::vector<model::ParseError> errors() const;
  // Rejected objects with what an Event about them needs.
  std::vector<std::pair<InvolvedObject, model::ParseError>> rejected() const;
  // The object (of an SMI kind, or a Service) a compiler diagnostic names.
  std::optional<InvolvedObject> find(const model::ObjectRef& ref) const;
  // Forgets every object of one collection (its reflector was replaced by
  // one at another version).
  void dropResource(const Resource& resource);
  // Changes on every applied event that changed something.
  uint64_t generation() const;
  // Newly rejected objects since start (a rejected object counts once per change).
  uint64_t rejectedTotal() const;

 private:
  struct Extra {
    std::optional<model::ParseError> error;
    InvolvedObject involved;
  };
  // What an object other than a pod keeps; one pointer in its Entry.
  struct Rest {
    // On the heap: a model::Object is as big as its largest kind (400 bytes).
    std::unique_ptr<model::Object> object;  // null: rejected or ignored
    // SMI kinds, Services and rejected objects only: 350 bytes each of
    // empty fields would add up over the many objects that need none.
    std::unique_ptr<Extra> extra;
  };
  // 24 bytes: pods, most of a cluster, carry a pod and nothing else.
  struct Entry {
    std::shared_ptr<const model::Pod> pod;  // shared with every state() snapshot
    std::unique_ptr<Rest> rest;             // null for a pod
    const model::Object* object() const { return rest ? rest->object.get() : nullptr; }
    const Extra* extra() const { return rest ? rest->extra.get() : nullptr; }
  };
  static_assert(sizeof(Entry) <= 3 * sizeof(void*), "a pod's entry: its pointer and one more");
  // "ns/name" -> entry, one collection's: 56 bytes an object, not the
  // 112 of a std::map node.
  using Entries = BufferedFlatMap<std::string, Entry>;
  mutable std::mutex mu_;
  void unindex(const Entry& e);  // mu_ held
  // "apiVersion Kind" -> "ns/name" -> entry. Not one map by "apiVersion
  // Kind ns/name": a key that long is a heap string, 48 bytes a pod more.
  std::map<std::string, Entries> entries_;
  template <class F>
  void forEachEntry(F&& f) const {  // mu_ held
    for (const auto& [collection, objects] : entries_)
      objects.forEach([&](const std::string&, const Entry& e) { f(e); });
  }
  std::map<model::ObjectRef, InvolvedObject> smi_index_;  // SMI, Services, rejected objects
  uint64_t generation_ = 0;
  uint64_t rejected_total_ = 0;
};

}  // namespace smik::kube
