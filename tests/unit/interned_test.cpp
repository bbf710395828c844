// model::Interned: one shared copy of each value, freed with its last holder,
// safe across threads (pods are parsed and read on several).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "agent/model/interned.h"

namespace smik::model {
namespace {

TEST(Interned, ReadsAsTheString) {
  Interned ns = "shop";
  EXPECT_EQ(ns, "shop");
  EXPECT_EQ(ns, std::string("shop"));
  EXPECT_NE(ns, "shop2");
  EXPECT_EQ(ns.str(), "shop");
  EXPECT_EQ(ns.size(), 4u);
  EXPECT_EQ(ns + "/web", "shop/web");
  EXPECT_EQ("ns " + ns, "ns shop");
  std::map<std::string, int> by_ns{{"shop", 1}};
  EXPECT_EQ(by_ns.at(ns), 1);
  EXPECT_TRUE(Interned().empty());
  EXPECT_TRUE(Interned("").empty());
  EXPECT_EQ(Interned(), "");
  EXPECT_LT(Interned("a"), Interned("b"));
}

TEST(Interned, EqualValuesShareOneEntryFreedWithTheLast) {
  const size_t before = Interned::distinctValues();
  {
    Interned a = "interned-test-value";
    Interned b = std::string("interned-test-value");
    EXPECT_EQ(a, b);
    EXPECT_EQ(&a.str(), &b.str());
    EXPECT_EQ(Interned::distinctValues(), before + 1);
    Interned c = a;
    a = "interned-test-other";
    EXPECT_EQ(Interned::distinctValues(), before + 2);
    Interned d = std::move(c);
    EXPECT_TRUE(c.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_EQ(d, "interned-test-value");
  }
  EXPECT_EQ(Interned::distinctValues(), before);
}

// Threads interning, copying and dropping the same few values: every entry
// is freed exactly once (ASan in the test build) and none is left over.
TEST(Interned, ConcurrentInternAndReleaseLeaveNothing) {
  const size_t before = Interned::distinctValues();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++)
    threads.emplace_back([t] {
      for (int i = 0; i < 20000; i++) {
        Interned a = "interned-race-" + std::to_string((i + t) % 3);
        Interned b = a;
        Interned c = "interned-race-" + std::to_string(i % 3);
        if (b != a || c.str() != "interned-race-" + std::to_string(i % 3)) std::abort();
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(Interned::distinctValues(), before);
}

}  // namespace
}  // namespace smik::model
