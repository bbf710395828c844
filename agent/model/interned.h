// A string field whose values repeat across many objects (a pod's namespace,
// service account, node, phase, owner): one shared copy of each distinct
// value instead of a 32-byte std::string in every object. At 50k pods the
// strings alone were ~15 MiB of the agent's heap, nearly all duplicates.
//
// 8 bytes: a pointer to a reference-counted, immutable entry of one
// process-wide table; the empty string is the null pointer and takes no
// entry. An entry is freed with its last holder, so names that come and go
// (nodes, ReplicaSets) do not pile up. Thread-safe: model objects are shared
// between snapshots, and parsed and read on several threads.
//
// Reads like a const std::string (it converts to one); assigning builds or
// finds the entry. Interning costs a hash and a lock per assignment: parse
// time, not compile time, which only reads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace smik::model {

class Interned {
 public:
  Interned() = default;
  Interned(std::string_view s) : entry_(intern(s)) {}  // NOLINT: reads as a string
  Interned(const std::string& s) : Interned(std::string_view(s)) {}  // NOLINT
  Interned(const char* s) : Interned(std::string_view(s)) {}  // NOLINT
  Interned(const Interned& o) : entry_(o.entry_) { retain(entry_); }
  Interned(Interned&& o) noexcept : entry_(o.entry_) { o.entry_ = nullptr; }
  Interned& operator=(const Interned& o) {
    retain(o.entry_);
    release(entry_);
    entry_ = o.entry_;
    return *this;
  }
  Interned& operator=(Interned&& o) noexcept {
    if (this != &o) {
      release(entry_);
      entry_ = o.entry_;
      o.entry_ = nullptr;
    }
    return *this;
  }
  ~Interned() { release(entry_); }

  // Inline: the compiler reads these fields in its hottest loops.
  const std::string& str() const { return entry_ ? entry_->value : kEmpty; }
  operator const std::string&() const { return str(); }  // NOLINT: reads as a string
  bool empty() const { return entry_ == nullptr; }
  size_t size() const { return str().size(); }
  const char* c_str() const { return str().c_str(); }

  // Equal values share their entry: comparing two is comparing pointers.
  friend bool operator==(const Interned& a, const Interned& b) { return a.entry_ == b.entry_; }
  friend bool operator==(const Interned& a, std::string_view b) { return a.str() == b; }
  friend bool operator==(const Interned& a, const std::string& b) { return a.str() == b; }
  friend bool operator==(const Interned& a, const char* b) { return a.str() == b; }
  friend auto operator<=>(const Interned& a, const Interned& b) { return a.str() <=> b.str(); }

  // How many distinct non-empty values are held now (tests, diagnostics).
  static size_t distinctValues();

  struct Entry {
    std::atomic<uint32_t> refs{1};
    const std::string value;
    explicit Entry(std::string_view v) : value(v) {}
  };

 private:
  static inline const std::string kEmpty;  // constant-initialized: no guard on reads
  static Entry* intern(std::string_view s);
  static void retain(Entry* e);
  static void release(Entry* e);
  Entry* entry_ = nullptr;
};

// std::string's own operator+ is a template, which sees no conversion.
inline std::string operator+(const std::string& a, const Interned& b) { return a + b.str(); }
inline std::string operator+(std::string&& a, const Interned& b) { return std::move(a) + b.str(); }
inline std::string operator+(const Interned& a, const std::string& b) { return a.str() + b; }
inline std::string operator+(const char* a, const Interned& b) { return a + b.str(); }
inline std::string operator+(const Interned& a, const char* b) { return a.str() + b; }
inline std::string operator+(const Interned& a, char b) { return a.str() + b; }
inline std::ostream& operator<<(std::ostream& o, const Interned& s) { return o << s.str(); }

}  // namespace smik::model
