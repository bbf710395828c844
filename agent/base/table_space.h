// Space in a fixed-size kernel table (an array map written by offset, like
// the HTTP judge's DFA transitions): runs of units handed out first fit and
// given back when nothing reads them any more, so a long-lived agent that
// keeps replacing what it placed never runs out of room (a bump pointer
// would, after enough policy changes).
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <optional>

namespace smik {

class TableSpace {
 public:
  explicit TableSpace(uint32_t capacity) : capacity_(capacity) {
    if (capacity > 0) free_[0] = capacity;
  }

  // The base of `units` consecutive free units (lowest that fits), now taken.
  std::optional<uint32_t> take(uint32_t units) {
    if (units == 0) return std::nullopt;
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < units) continue;
      const uint32_t base = it->first, left = it->second - units;
      free_.erase(it);
      if (left > 0) free_[base + units] = left;
      return base;
    }
    return std::nullopt;
  }

  // Gives back a run take() handed out; neighbouring free runs merge, so a
  // table emptied piece by piece is one run again.
  void give(uint32_t base, uint32_t units) {
    if (units == 0) return;
    auto next = free_.lower_bound(base);
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == base) {
        base = prev->first;
        units += prev->second;
        free_.erase(prev);
      }
    }
    if (next != free_.end() && base + units == next->first) {
      units += next->second;
      free_.erase(next);
    }
    free_[base] = units;
  }

  uint32_t capacity() const { return capacity_; }
  uint32_t freeUnits() const {
    uint32_t n = 0;
    for (const auto& [base, units] : free_) n += units;
    return n;
  }
  // Runs of free units: 1 when nothing is taken, or all of it.
  size_t freeRuns() const { return free_.size(); }

 private:
  uint32_t capacity_;
  std::map<uint32_t, uint32_t> free_;  // base -> length, disjoint, never adjacent
};

}  // namespace smik
