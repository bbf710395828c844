// A map kept as one sorted vector of (key, value) pairs: std::map's reading
// interface (find, at, count, ordered iteration) at the size of its entries.
// A std::map node costs 32 bytes of links and a malloc chunk header beside
// its entry (an address -> identity node: 80 bytes for a 28-byte entry); at
// 50k pods the agent holds several such maps (bench/README.md, issue 13).
//
// Differences from std::map:
//  - an insert that does not go at the end moves every later entry: build
//    a large one with fromUnsorted() (or in key order, which appends);
//  - inserting or erasing invalidates iterators and references;
//  - entries are std::pair<K, V>: a key written through an iterator breaks
//    the order (nothing may do that).
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <utility>
#include <vector>

namespace smik {

template <typename K, typename V>
class FlatMap {
 public:
  using key_type = K;
  using mapped_type = V;
  using value_type = std::pair<K, V>;
  using container_type = std::vector<value_type>;
  using iterator = typename container_type::iterator;
  using const_iterator = typename container_type::const_iterator;
  using size_type = std::size_t;

  // Which of several entries of one key fromUnsorted() keeps.
  enum class Keep { kFirst, kLast };

  FlatMap() = default;
  // As std::map's: the first of a repeated key is kept.
  FlatMap(std::initializer_list<value_type> init)
      : FlatMap(fromUnsorted(container_type(init), Keep::kFirst)) {}

  // From entries in any order: sorted by key, one per key (of a repeated
  // key, the first or the last in `entries`' order), no spare capacity.
  static FlatMap fromUnsorted(container_type entries, Keep keep) {
    FlatMap m;
    auto less = [](const value_type& a, const value_type& b) { return a.first < b.first; };
    auto same = [](const value_type& a, const value_type& b) { return !(a.first < b.first); };
    if (!std::is_sorted(entries.begin(), entries.end(), less) ||
        std::adjacent_find(entries.begin(), entries.end(), same) != entries.end()) {
      std::stable_sort(entries.begin(), entries.end(), less);
      // Among equal keys (adjacent, in their original order) keep one.
      auto out = entries.begin();
      for (auto it = entries.begin(); it != entries.end();) {
        auto end = it + 1;
        while (end != entries.end() && !(it->first < end->first)) ++end;
        auto kept = keep == Keep::kFirst ? it : end - 1;
        if (out != kept) *out = std::move(*kept);
        ++out;
        it = end;
      }
      entries.erase(out, entries.end());
    }
    entries.shrink_to_fit();
    m.v_ = std::move(entries);
    return m;
  }

  iterator begin() { return v_.begin(); }
  iterator end() { return v_.end(); }
  const_iterator begin() const { return v_.begin(); }
  const_iterator end() const { return v_.end(); }
  size_type size() const { return v_.size(); }
  bool empty() const { return v_.empty(); }
  void clear() { v_.clear(); }
  void reserve(size_type n) { v_.reserve(n); }
  void shrink_to_fit() { v_.shrink_to_fit(); }
  size_type capacity() const { return v_.capacity(); }
  // The sorted vector itself, leaving this map empty.
  container_type release() && { return std::move(v_); }

  iterator lower_bound(const K& k) {
    return std::partition_point(v_.begin(), v_.end(), [&](const value_type& e) { return e.first < k; });
  }
  const_iterator lower_bound(const K& k) const {
    return std::partition_point(v_.begin(), v_.end(), [&](const value_type& e) { return e.first < k; });
  }
  iterator find(const K& k) {
    auto it = lower_bound(k);
    return it != v_.end() && !(k < it->first) ? it : v_.end();
  }
  const_iterator find(const K& k) const {
    auto it = lower_bound(k);
    return it != v_.end() && !(k < it->first) ? it : v_.end();
  }
  size_type count(const K& k) const { return find(k) != v_.end() ? 1 : 0; }
  bool contains(const K& k) const { return find(k) != v_.end(); }
  V& at(const K& k) {
    auto it = find(k);
    if (it == v_.end()) throw std::out_of_range("FlatMap::at");
    return it->second;
  }
  const V& at(const K& k) const {
    auto it = find(k);
    if (it == v_.end()) throw std::out_of_range("FlatMap::at");
    return it->second;
  }

  // Inserts (k, v) unless k is there: std::map::emplace's answer.
  std::pair<iterator, bool> emplace(const K& k, V v) {
    auto it = position(k);
    if (it != v_.end() && !(k < it->first)) return {it, false};
    return {v_.emplace(it, k, std::move(v)), true};
  }
  std::pair<iterator, bool> insert(value_type e) { return emplace(e.first, std::move(e.second)); }
  std::pair<iterator, bool> insert_or_assign(const K& k, V v) {
    auto [it, fresh] = emplace(k, V{});
    it->second = std::move(v);
    return {it, fresh};
  }
  V& operator[](const K& k) { return emplace(k, V{}).first->second; }

  size_type erase(const K& k) {
    auto it = find(k);
    if (it == v_.end()) return 0;
    v_.erase(it);
    return 1;
  }
  iterator erase(const_iterator it) { return v_.erase(it); }
  // Every entry pred(entry) holds for, in one pass; how many.
  template <typename Pred>
  friend size_type erase_if(FlatMap& m, Pred pred) {
    return std::erase_if(m.v_, pred);
  }

  friend bool operator==(const FlatMap& a, const FlatMap& b) { return a.v_ == b.v_; }

 private:
  // Where k is or would go; past the last entry without a search when k
  // sorts after it (a build in key order appends).
  iterator position(const K& k) {
    if (v_.empty() || v_.back().first < k) return v_.end();
    return lower_bound(k);
  }

  container_type v_;
};

}  // namespace smik
