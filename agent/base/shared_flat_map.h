// A FlatMap whose copies share one vector until one of them is written
// (copy on write). The plan's address -> identity map and the agent's view
// of the kernel's address map are equal after every successful apply (the
// view is the desired state, and the desired state's addresses are the
// plan's): at 50k pods each copy was another 1.4 MiB (bench/README.md,
// issue 13). Copies made while one thread reads and another writes are
// safe as for any value: each writer detaches onto its own vector first.
//
// The interface is FlatMap's. A mutating call (operator[], emplace,
// erase, the non-const iterators ...) on a map that shares its vector
// copies it first, so iterators taken from a const reference before a
// write point into the old vector: take them after.
#pragma once

#include <memory>
#include <utility>

#include "agent/base/flat_map.h"

namespace smik {

template <typename K, typename V>
class SharedFlatMap {
 public:
  using Map = FlatMap<K, V>;
  using key_type = K;
  using mapped_type = V;
  using value_type = typename Map::value_type;
  using iterator = typename Map::iterator;
  using const_iterator = typename Map::const_iterator;
  using size_type = typename Map::size_type;
  using Keep = typename Map::Keep;

  SharedFlatMap() = default;
  // Implicit: a FlatMap (built with fromUnsorted, say) becomes the one shared vector.
  SharedFlatMap(Map m) {  // NOLINT(google-explicit-constructor)
    if (!m.empty()) p_ = std::make_shared<Map>(std::move(m));
  }
  SharedFlatMap(std::initializer_list<value_type> init) : SharedFlatMap(Map(init)) {}
  static SharedFlatMap fromUnsorted(typename Map::container_type entries, Keep keep) {
    return SharedFlatMap(Map::fromUnsorted(std::move(entries), keep));
  }

  // The map itself, read-only, never detaching: what erase_if scans before
  // it writes, and what code keeping a FlatMap of its own copies (the
  // differential test's reference data path).
  const Map& map() const { return get(); }

  // Whether two maps share one vector (tests, and the agent's accounting).
  bool sharesWith(const SharedFlatMap& o) const { return p_ && p_ == o.p_; }

  const_iterator begin() const { return get().begin(); }
  const_iterator end() const { return get().end(); }
  iterator begin() { return mut().begin(); }
  iterator end() { return mut().end(); }
  size_type size() const { return p_ ? p_->size() : 0; }
  bool empty() const { return size() == 0; }
  void clear() { p_.reset(); }
  void reserve(size_type n) { mut().reserve(n); }
  void shrink_to_fit() {
    if (p_ && p_.use_count() == 1) p_->shrink_to_fit();
  }
  size_type capacity() const { return p_ ? p_->capacity() : 0; }

  const_iterator lower_bound(const K& k) const { return get().lower_bound(k); }
  iterator lower_bound(const K& k) { return mut().lower_bound(k); }
  const_iterator find(const K& k) const { return get().find(k); }
  iterator find(const K& k) { return mut().find(k); }
  size_type count(const K& k) const { return get().count(k); }
  bool contains(const K& k) const { return get().contains(k); }
  const V& at(const K& k) const { return get().at(k); }
  V& at(const K& k) { return mut().at(k); }

  std::pair<iterator, bool> emplace(const K& k, V v) { return mut().emplace(k, std::move(v)); }
  std::pair<iterator, bool> insert(value_type e) { return mut().insert(std::move(e)); }
  std::pair<iterator, bool> insert_or_assign(const K& k, V v) {
    return mut().insert_or_assign(k, std::move(v));
  }
  V& operator[](const K& k) { return mut()[k]; }

  size_type erase(const K& k) { return contains(k) ? mut().erase(k) : 0; }
  // `it` may come from before the vector was detached: erased by position.
  iterator erase(const_iterator it) {
    const auto at = it - get().begin();
    Map& m = mut();
    return m.erase(m.begin() + at);
  }
  template <typename Pred>
  friend size_type erase_if(SharedFlatMap& m, Pred pred) {
    if (!std::any_of(m.map().begin(), m.map().end(), [&](const value_type& e) { return pred(e); }))
      return 0;
    return erase_if(m.mut(), pred);
  }

  friend bool operator==(const SharedFlatMap& a, const SharedFlatMap& b) {
    return a.p_ == b.p_ || a.get() == b.get();
  }

 private:
  const Map& get() const {
    static const Map kEmpty;
    return p_ ? *p_ : kEmpty;
  }
  // The vector this map may write: its own, copied from the shared one if
  // another map holds it too.
  Map& mut() {
    if (!p_)
      p_ = std::make_shared<Map>();
    else if (p_.use_count() > 1)
      p_ = std::make_shared<Map>(*p_);
    return *p_;
  }

  std::shared_ptr<Map> p_;  // null: empty
};

}  // namespace smik
