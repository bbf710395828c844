#include "agent/model/interned.h"

#include <mutex>
#include <unordered_map>

namespace smik::model {

namespace {

// Keys view their entry's own value, which never moves.
struct Table {
  std::mutex mu;
  std::unordered_map<std::string_view, Interned::Entry*> entries;
};

Table& table() {
  // Never destroyed: an Interned in static storage may outlive any order of
  // static destructors.
  static Table* t = new Table;
  return *t;
}

}  // namespace

// A found entry has refs >= 1: the step to 0 and the erase happen together
// under the lock (release), so intern never revives an entry being freed.
Interned::Entry* Interned::intern(std::string_view s) {
  if (s.empty()) return nullptr;
  Table& t = table();
  std::lock_guard lock(t.mu);
  auto it = t.entries.find(s);
  if (it != t.entries.end()) {
    it->second->refs.fetch_add(1, std::memory_order_relaxed);
    return it->second;
  }
  auto* e = new Entry(s);
  t.entries.emplace(std::string_view(e->value), e);
  return e;
}

void Interned::retain(Entry* e) {
  if (e) e->refs.fetch_add(1, std::memory_order_relaxed);
}

void Interned::release(Entry* e) {
  if (!e) return;
  // Not the last holder: no lock.
  uint32_t n = e->refs.load(std::memory_order_relaxed);
  while (n > 1)
    if (e->refs.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) return;
  // Maybe the last: decide under the lock, where intern may have taken a
  // reference meanwhile.
  Table& t = table();
  std::lock_guard lock(t.mu);
  if (e->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  t.entries.erase(std::string_view(e->value));
  delete e;
}

size_t Interned::distinctValues() {
  Table& t = table();
  std::lock_guard lock(t.mu);
  return t.entries.size();
}

}  // namespace smik::model
