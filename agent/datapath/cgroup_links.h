// The socket programs' cgroup links, one per program, held by their pin path.
// Attaching is retried after a partial failure (the kernel refused one
// program, a pin failed): the programs attached by the failed call keep
// their links and are skipped, never attached a second time. Without that a
// retry finds no previous agent's pin to take over (it was claimed), creates
// a second link and replaces the pin, and the cgroup runs the program twice.
// Header-only and kernel-free behind LinkOps, so a unit test drives it with
// injected failures.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/unique_fd.h"

namespace smik::datapath {

// One program to hook at the cgroup.
struct CgroupProgram {
  std::string name;
  std::string pin;  // where its link is pinned
  int prog_fd = -1;
  int attach_type = 0;  // enum bpf_attach_type
};

// The kernel operations attaching needs: the data path's, or a test's fake.
class LinkOps {
 public:
  virtual ~LinkOps() = default;
  // A previous agent's link pinned at p.pin, switched to p's program in
  // place; invalid if there is none to take over.
  virtual UniqueFd takeOver(const CgroupProgram& p) = 0;
  // A new link of p at the cgroup; invalid, with *err, if the kernel refuses.
  virtual UniqueFd create(const CgroupProgram& p, std::string* err) = 0;
  // Pins link at p.pin into *out; false, with *err, and the link dropped.
  virtual bool pin(UniqueFd link, const CgroupProgram& p, UniqueFd* out, std::string* err) = 0;
};

class CgroupLinks {
 public:
  // Attaches each program that has no link yet, in order; false, with
  // *err, at the first that fails (those before it stay attached).
  bool attach(const std::vector<CgroupProgram>& programs, LinkOps& ops, std::string* err) {
    for (const auto& p : programs) {
      if (links_.count(p.pin)) continue;  // attached by an earlier call
      UniqueFd link = ops.takeOver(p);
      if (!link) {
        UniqueFd created = ops.create(p, err);
        if (!created || !ops.pin(std::move(created), p, &link, err)) return false;
      }
      links_.emplace(p.pin, std::move(link));
    }
    return true;
  }
  bool holds(const std::string& pin) const { return links_.count(pin) > 0; }
  size_t size() const { return links_.size(); }
  // Closes the links; unpinned ones detach (pinned ones stay: their pin holds them).
  void clear() { links_.clear(); }

 private:
  std::map<std::string, UniqueFd> links_;  // by pin path
};

}  // namespace smik::datapath
