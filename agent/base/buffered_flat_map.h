// A map of many entries that change one at a time, in little more than
// the entries' own size: a sorted vector of (key, value) pairs (FlatMap's
// layout) and a small std::map of the changes not yet merged into it.
//
// A std::map node costs 32 bytes of links and a malloc chunk header beside
// its entry: the Kubernetes source's reflector (key -> version, 80 bytes a
// node for a 40-byte entry) and cache (key -> entry, 112 bytes for 56) held
// one each per pod (bench/README.md, issue 13). A plain FlatMap would move
// half of its entries for every insert or erase in the middle, and watch
// events arrive in no key order; here a new key, or the erasure of one in
// the vector, goes into the buffer, and the buffer is merged into a new
// vector (exactly sized) once it holds more than kMinBuffer plus a
// 1/kBufferShare of the vector: each change costs O(log n) and, amortised,
// moves kBufferShare entries.
//
// The buffer holds new keys (with a value: such a key is not in the vector)
// and erased keys of the vector (without one). A value replaced or erased
// in the vector is replaced or reset there at once: what it held is not
// kept until the next merge.
//
// Differences from std::map: find() gives a pointer (null: absent), valid
// until the next put, erase or compact; iteration is forEach().
#pragma once

#include <algorithm>
#include <cstddef>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "agent/base/flat_map.h"

namespace smik {

template <typename K, typename V>
class BufferedFlatMap {
 public:
  using value_type = std::pair<K, V>;
  static constexpr size_t kMinBuffer = 64;
  static constexpr size_t kBufferShare = 32;

  BufferedFlatMap() = default;
  // Sorted and one per key already: its vector as it is.
  explicit BufferedFlatMap(FlatMap<K, V> sorted)
      : base_(std::move(sorted).release()), size_(base_.size()) {}

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Changes not merged yet (for tests).
  size_t buffered() const { return buffer_.size(); }

  const V* find(const K& k) const {
    if (auto b = buffer_.find(k); b != buffer_.end()) return b->second ? &*b->second : nullptr;
    const value_type* e = baseFind(k);
    return e ? &e->second : nullptr;
  }
  V* find(const K& k) { return const_cast<V*>(std::as_const(*this).find(k)); }
  bool contains(const K& k) const { return find(k) != nullptr; }

  // Inserts k, or replaces its value.
  void put(const K& k, V v) {
    if (auto b = buffer_.find(k); b != buffer_.end()) {
      if (b->second) {
        *b->second = std::move(v);
        return;
      }
      // Erased from the vector and not merged yet: it comes back in place.
      baseFind(k)->second = std::move(v);
      buffer_.erase(b);
      ++size_;
      return;
    }
    if (value_type* e = baseFind(k)) {
      e->second = std::move(v);
      return;
    }
    buffer_.emplace(k, std::optional<V>(std::move(v)));
    ++size_;
    maybeCompact();
  }

  // Removes k; false when it is not there.
  bool erase(const K& k) {
    if (auto b = buffer_.find(k); b != buffer_.end()) {
      if (!b->second) return false;
      buffer_.erase(b);
      --size_;
      return true;
    }
    value_type* e = baseFind(k);
    if (!e) return false;
    e->second = V{};  // what it held goes now, not at the next merge
    buffer_.emplace(k, std::nullopt);
    --size_;
    maybeCompact();
    return true;
  }

  void clear() {
    base_.clear();
    base_.shrink_to_fit();
    buffer_.clear();
    size_ = 0;
  }

  // f(key, value) for every entry, in key order.
  template <typename F>
  void forEach(F&& f) const {
    auto b = buffer_.begin();
    for (const value_type& e : base_) {
      for (; b != buffer_.end() && b->first < e.first; ++b)
        if (b->second) f(b->first, *b->second);
      if (b != buffer_.end() && !(e.first < b->first)) {  // erased
        ++b;
        continue;
      }
      f(e.first, e.second);
    }
    for (; b != buffer_.end(); ++b)
      if (b->second) f(b->first, *b->second);
  }

  // Merges the buffer into a new vector, exactly sized.
  void compact() {
    if (buffer_.empty()) return;
    std::vector<value_type> out;
    out.reserve(size_);
    auto take = [&](typename Buffer::iterator it) {
      auto node = buffer_.extract(it);
      if (node.mapped()) out.emplace_back(std::move(node.key()), std::move(*node.mapped()));
    };
    for (value_type& e : base_) {
      while (!buffer_.empty() && buffer_.begin()->first < e.first) take(buffer_.begin());
      if (!buffer_.empty() && !(e.first < buffer_.begin()->first)) {  // erased
        buffer_.erase(buffer_.begin());
        continue;
      }
      out.push_back(std::move(e));
    }
    while (!buffer_.empty()) take(buffer_.begin());
    base_ = std::move(out);
  }

 private:
  using Buffer = std::map<K, std::optional<V>>;

  const value_type* baseFind(const K& k) const {
    auto it = std::partition_point(base_.begin(), base_.end(),
                                   [&](const value_type& e) { return e.first < k; });
    return it != base_.end() && !(k < it->first) ? &*it : nullptr;
  }
  value_type* baseFind(const K& k) {
    return const_cast<value_type*>(std::as_const(*this).baseFind(k));
  }
  void maybeCompact() {
    if (buffer_.size() > kMinBuffer + base_.size() / kBufferShare) compact();
  }

  std::vector<value_type> base_;  // sorted by key, one per key
  Buffer buffer_;                 // value: a key not in base_; none: erased from base_
  size_t size_ = 0;
};

}  // namespace smik
