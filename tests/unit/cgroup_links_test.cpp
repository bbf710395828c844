// Attaching the socket programs after a partial failure: what was attached
// stays attached once, what failed is attached on the retry.
#include "agent/datapath/cgroup_links.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <map>
#include <set>

namespace smik::datapath {
namespace {

// The kernel's side, in memory, with failures injected: which programs have
// a link at the cgroup (counted, so a second attachment shows), which pins
// a previous agent left.
class FakeLinkOps : public LinkOps {
 public:
  std::map<std::string, int> attached;  // program -> links at the cgroup
  std::set<std::string> pinned;         // a previous agent's pins, not claimed yet
  std::set<std::string> refuse_create;  // programs the kernel refuses
  std::set<std::string> refuse_pin;

  UniqueFd takeOver(const CgroupProgram& p) override {
    if (!pinned.erase(p.pin)) return {};
    return handle();  // its link was attached already: counted when created
  }
  UniqueFd create(const CgroupProgram& p, std::string* err) override {
    if (refuse_create.count(p.name)) {
      *err = "attach " + p.name + ": refused";
      return {};
    }
    attached[p.name]++;
    return handle();
  }
  bool pin(UniqueFd, const CgroupProgram& p, UniqueFd* out, std::string* err) override {
    if (refuse_pin.count(p.name)) {
      attached[p.name]--;  // an unpinned link detaches when it is dropped
      *err = "pin " + p.name + ": refused";
      return false;
    }
    *out = handle();
    return true;
  }

 private:
  static UniqueFd handle() { return UniqueFd(eventfd(0, EFD_CLOEXEC)); }
};

std::vector<CgroupProgram> programs() {
  std::vector<CgroupProgram> out;
  for (const char* name : {"connect4", "sendmsg4", "recvmsg4", "sockops"})
    out.push_back({name, std::string("/pins/links/cgroup_") + name, 3, 0});
  return out;
}

TEST(CgroupLinksTest, AttachesEachProgramOnce) {
  FakeLinkOps ops;
  CgroupLinks links;
  std::string err;
  ASSERT_TRUE(links.attach(programs(), ops, &err)) << err;
  EXPECT_EQ(links.size(), 4u);
  for (const auto& p : programs()) EXPECT_EQ(ops.attached[p.name], 1) << p.name;
}

// The bug this guards against: the retry created a second link for each
// program the failed call had attached.
TEST(CgroupLinksTest, RetryAfterARefusedProgramAttachesNothingTwice) {
  FakeLinkOps ops;
  ops.refuse_create = {"recvmsg4"};
  CgroupLinks links;
  std::string err;
  EXPECT_FALSE(links.attach(programs(), ops, &err));
  EXPECT_EQ(err, "attach recvmsg4: refused");
  EXPECT_EQ(links.size(), 2u) << "the two before it stay attached";
  EXPECT_EQ(ops.attached.count("sockops"), 0u) << "nothing after it is tried";

  ops.refuse_create.clear();
  ASSERT_TRUE(links.attach(programs(), ops, &err)) << err;
  EXPECT_EQ(links.size(), 4u);
  for (const auto& p : programs()) EXPECT_EQ(ops.attached[p.name], 1) << p.name;
}

TEST(CgroupLinksTest, RetryAfterAFailedPinAttachesNothingTwice) {
  FakeLinkOps ops;
  ops.refuse_pin = {"sendmsg4"};
  CgroupLinks links;
  std::string err;
  EXPECT_FALSE(links.attach(programs(), ops, &err));
  EXPECT_EQ(ops.attached["sendmsg4"], 0) << "its unpinned link was dropped";
  EXPECT_FALSE(links.holds("/pins/links/cgroup_sendmsg4"));

  ops.refuse_pin.clear();
  ASSERT_TRUE(links.attach(programs(), ops, &err)) << err;
  for (const auto& p : programs()) EXPECT_EQ(ops.attached[p.name], 1) << p.name;
}

// A previous agent's links are taken over, not attached again; a retry
// after a failure past them keeps them.
TEST(CgroupLinksTest, PreviousAgentsLinksAreTakenOverOnceAcrossARetry) {
  FakeLinkOps ops;
  for (const auto& p : programs()) {
    ops.attached[p.name] = 1;
    ops.pinned.insert(p.pin);
  }
  ops.pinned.erase("/pins/links/cgroup_sockops");  // its pin went away
  ops.attached["sockops"] = 0;
  ops.refuse_create = {"sockops"};
  CgroupLinks links;
  std::string err;
  EXPECT_FALSE(links.attach(programs(), ops, &err));
  EXPECT_EQ(links.size(), 3u);

  ops.refuse_create.clear();
  ASSERT_TRUE(links.attach(programs(), ops, &err)) << err;
  for (const auto& p : programs()) EXPECT_EQ(ops.attached[p.name], 1) << p.name;
}

}  // namespace
}  // namespace smik::datapath
