// Services and TrafficSplit (README: SMI semantics): weights as the kernel's
// cumulative slots, and the fallbacks when backends are missing or empty.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/compile/explain.h"
#include "maps/maps.h"
#include "tests/unit/services_support.h"

namespace smik::compile {
namespace {

using ::testing::HasSubstr;

// ---- slot tables ----------------------------------------------------------------

TEST(ServiceSlots, WeightsBecomeCumulativeSlots) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "80"}, {"web-v2", "20"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1", "prod/web-v2"}));
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.svc_id, t.svc_id);
  ASSERT_EQ(v.ngroups, 2);
  EXPECT_EQ(v.cum[0], 80u);
  EXPECT_EQ(v.cum[1], 100u);
  EXPECT_EQ(v.total, 100u);
}

TEST(ServiceSlots, LargeRelativeWeightsAreKeptExactly) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "1000"}, {"web-v2", "500"}}));
  const smik_svc_value v = maps::svcValue(maps::svcTable(tableOf(p, "prod/web", 80)), 0);
  ASSERT_EQ(v.ngroups, 2);
  EXPECT_EQ(v.cum[0], 1000u);
  EXPECT_EQ(v.cum[1], 1500u);
  EXPECT_EQ(v.total, 1500u);
}

TEST(ServiceSlots, EndpointProbabilityIsGroupShareOverItsEndpoints) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "80"}, {"web-v2", "20"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  ASSERT_EQ(v.ngroups, 2);
  EXPECT_EQ(v.offset[0], 0);
  EXPECT_EQ(v.count[0], 1);
  EXPECT_EQ(v.offset[1], 1);
  EXPECT_EQ(v.count[1], 3);
  const auto prob = kernelProbabilities(t);
  ASSERT_EQ(prob.size(), 4u);
  EXPECT_DOUBLE_EQ(prob.at("10.0.1.1:80"), 0.8);
  for (const char* a : {"10.0.2.1:80", "10.0.2.2:80", "10.0.2.3:80"})
    EXPECT_DOUBLE_EQ(prob.at(a), 0.2 / 3) << a;
  // The root's own pods get nothing while the split is in force.
  EXPECT_EQ(prob.count("10.0.0.1:80"), 0u);
}

TEST(ServiceSlots, PerServiceNotPerPod) {
  // smi-spec #39: equal weights, 1 vs 3 pods: each Service gets half.
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "1"}, {"web-v2", "1"}}));
  const auto shares = kernelShares(tableOf(p, "prod/web", 80));
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v1"), 0.5);
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v2"), 0.5);
}

TEST(ServiceSlots, ZeroWeightBackendIsAbsent) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "100"},
                                                                {"web-v2", "0"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1"}));
  const auto prob = kernelProbabilities(t);
  EXPECT_EQ(prob, (std::map<std::string, double>{{"10.0.1.1:80", 1.0}}));
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.ngroups, 1);
  EXPECT_EQ(v.total, 100u);
}

TEST(ServiceSlots, ZeroWeightBackendMayNotExistYet) {
  // The spec's workflow: foobar-v2 is created with weight 0 before its Service.
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "100"},
                                                                {"web-v3", "0"}}));
  EXPECT_EQ(groupServices(tableOf(p, "prod/web", 80)),
            (std::vector<std::string>{"prod/web-v1"}));
}

TEST(ServiceSlots, RelativeWeightsGiveTheSameShares) {
  const Plan a =
      compiled(canary() + split("web-split", "web", {{"web-v1", "1000"}, {"web-v2", "500"}}));
  const Plan b =
      compiled(canary() + split("web-split", "web", {{"web-v1", "2"}, {"web-v2", "1"}}));
  const auto pa = kernelProbabilities(tableOf(a, "prod/web", 80));
  const auto pb = kernelProbabilities(tableOf(b, "prod/web", 80));
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& [addr, prob] : pa) EXPECT_DOUBLE_EQ(prob, pb.at(addr)) << addr;
  EXPECT_DOUBLE_EQ(kernelShares(tableOf(a, "prod/web", 80)).at("prod/web-v1"), 2.0 / 3);
}

// Shares of web-v1/web-v2 for weights w1/w2, and the table's raw group weights.
std::pair<std::map<std::string, double>, std::vector<uint32_t>> hugeSplit(const std::string& w1,
                                                                         const std::string& w2) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", w1}, {"web-v2", w2}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  std::vector<uint32_t> weights;
  uint64_t sum = 0;
  for (const auto& g : t.groups) {
    weights.push_back(g.weight);
    sum += g.weight;
  }
  EXPECT_LE(sum, uint64_t{UINT32_MAX}) << "cumulative weights would wrap in 32 bits";
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(uint64_t{v.total}, sum);
  return {kernelShares(t), weights};
}

TEST(ServiceSlots, HugeWeightsNeverRoundANonZeroWeightToZero) {
  const auto [shares, weights] = hugeSplit("4000000000", "1");
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_GT(weights[0], 0u);
  EXPECT_GT(weights[1], 0u);
  EXPECT_GT(shares.at("prod/web-v2"), 0.0);
}

// BUG (agent/compile/services.cpp, applySplit, the scaling line
// `w = std::max<int64_t>(1, w * ((int64_t{1} << 31) / sum))`): whenever the
// weights sum over 2^31, `(1 << 31) / sum` is integer division and is 0, so
// every weight becomes max(1, 0) = 1: weights 3000000000/1000000000 give
// 50%/50% instead of 75%/25%.
TEST(ServiceSlots, HugeWeightsKeepTheirRatio) {
  const auto [shares, weights] = hugeSplit("3000000000", "1000000000");
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_NEAR(shares.at("prod/web-v1"), 0.75, 0.0075);
  EXPECT_NEAR(shares.at("prod/web-v2"), 0.25, 0.0025);
  EXPECT_LE(uint64_t{weights[0]} + weights[1], uint64_t{1} << 31);
}

// BUG (agent/compile/services.cpp, applySplit, `int64_t sum += w`): weights are
// int64 (parseWeight accepts up to INT64_MAX), and the sum is not guarded, so
// 8000000000000000000 + 4000000000000000000 overflows int64 (undefined
// behaviour; in practice it wraps negative, skips scaling and each weight is
// truncated by static_cast<uint32_t>), giving an arbitrary ratio instead of 2:1.
TEST(ServiceSlots, WeightsWhoseSumOverflowsInt64KeepTheirRatio) {
  const auto [shares, weights] = hugeSplit("8000000000000000000", "4000000000000000000");
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_NEAR(shares.at("prod/web-v1"), 2.0 / 3, 0.01 * 2 / 3);
  EXPECT_NEAR(shares.at("prod/web-v2"), 1.0 / 3, 0.01 / 3);
}

TEST(ServiceSlots, WeightsSummingTo2Pow31AreKept) {
  const auto [shares, weights] = hugeSplit("1073741824", "1073741824");
  EXPECT_EQ(weights, (std::vector<uint32_t>{1u << 30, 1u << 30}));
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v1"), 0.5);
}

// Root web plus `n` backends b0..b<n-1>, each with one pod and weight 1;
// `missing` names one more backend whose Service does not exist.
std::string manyBackends(int n, const std::string& missing = "") {
  std::string y = app("web", "10.96.0.1", {"10.0.0.1"});
  Backends backends;
  for (int i = 0; i < n; i++) {
    const std::string name = "b" + std::to_string(i);
    y += app(name, "10.96.1." + std::to_string(i + 1), {"10.1.0." + std::to_string(i + 1)});
    backends.push_back({name, "1"});
  }
  if (!missing.empty()) backends.insert(backends.begin(), {missing, "5"});
  return y + split("many", "web", backends);
}

TEST(ServiceSlots, MoreThanMaxGroupsBackendsAreCappedWithDiagnostic) {
  const Plan p = compiled(manyBackends(SMIK_MAX_GROUPS + 1));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  ASSERT_EQ(t.groups.size(), size_t{SMIK_MAX_GROUPS});
  EXPECT_EQ(t.groups.front().service, "prod/b0");  // the first ones, in backend order
  EXPECT_EQ(t.groups.back().service, "prod/b" + std::to_string(SMIK_MAX_GROUPS - 1));
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.ngroups, SMIK_MAX_GROUPS);
  EXPECT_EQ(v.total, uint32_t{SMIK_MAX_GROUPS});
  EXPECT_THAT(joined(messagesFor(p, splitRef("many"))),
              HasSubstr("more than " + std::to_string(SMIK_MAX_GROUPS)));
}

TEST(ServiceSlots, CapCountsOnlyUsableBackends) {
  // 17 backends of which one does not exist: 16 usable, nothing capped.
  const Plan p = compiled(manyBackends(SMIK_MAX_GROUPS, "ghost"));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.groups.size(), size_t{SMIK_MAX_GROUPS});
  const std::string d = joined(messagesFor(p, splitRef("many")));
  EXPECT_EQ(d.find("more than"), std::string::npos) << d;
  EXPECT_THAT(d, HasSubstr("ghost"));
}

TEST(ServiceSlots, ExactlyMaxGroupsBackendsIsNotCapped) {
  const Plan p = compiled(manyBackends(SMIK_MAX_GROUPS));
  EXPECT_EQ(tableOf(p, "prod/web", 80).groups.size(), size_t{SMIK_MAX_GROUPS});
  EXPECT_TRUE(messagesFor(p, splitRef("many")).empty())
      << joined(messagesFor(p, splitRef("many")));
}

// ---- fallbacks ------------------------------------------------------------------

TEST(ServiceFallback, AllWeightsZeroServesRootEndpoints) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "0"}, {"web-v2", "0"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  EXPECT_THAT(joined(messagesFor(p, splitRef("web-split"))), HasSubstr("all weights zero"));
}

TEST(ServiceFallback, EmptyBackendListServesRootEndpoints) {
  const Plan p = compiled(canary() + split("web-split", "web", {}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
}

TEST(ServiceFallback, AllBackendsSkippedServesRootWithOneDiagnosticEach) {
  const std::string y =
      app("web", "10.96.0.1", {"10.0.0.1"}) +
      app("wrongport", "10.96.0.21", {"10.0.3.1"}, "[{name: http, port: 8080}]") +
      service("noready", "10.96.0.22") +  // selects no pod
      split("web-split", "web", {{"missing", "1"}, {"wrongport", "1"}, {"noready", "1"}});
  const Plan p = compiled(y);
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80"}));
  const auto d = messagesFor(p, splitRef("web-split"));
  auto naming = [&](const std::string& what) {
    int n = 0;
    for (const auto& m : d) n += m.find(what) != std::string::npos;
    return n;
  };
  EXPECT_EQ(naming("missing"), 1) << joined(d);
  EXPECT_EQ(naming("wrongport"), 1) << joined(d);
  EXPECT_EQ(naming("noready"), 1) << joined(d);
  EXPECT_EQ(naming("root Service's own endpoints"), 1) << joined(d);
  EXPECT_THAT(joined(d), HasSubstr("does not exist"));
  EXPECT_THAT(joined(d), HasSubstr("has no port 80"));
  EXPECT_THAT(joined(d), HasSubstr("no ready endpoint"));
}

TEST(ServiceFallback, SkippedBackendLeavesTheOthers) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "3"},
                                                                {"ghost", "1"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_DOUBLE_EQ(kernelShares(t).at("prod/web-v1"), 1.0);
  EXPECT_THAT(joined(messagesFor(p, splitRef("web-split"))), HasSubstr("ghost"));
}

TEST(ServiceFallback, BackendWithoutRootPortIsSkippedForThatPortOnly) {
  const char* both = "[{name: http, port: 80}, {name: https, port: 443}]";
  const std::string y = app("web", "10.96.0.1", {"10.0.0.1"}, both) +
                        app("web-v1", "10.96.0.11", {"10.0.1.1"}, both) +
                        app("web-v2", "10.96.0.12", {"10.0.2.1"}) +  // port 80 only
                        split("web-split", "web", {{"web-v1", "1"}, {"web-v2", "1"}});
  const Plan p = compiled(y);
  const ServiceTable t80 = tableOf(p, "prod/web", 80);
  EXPECT_EQ(groupServices(t80), (std::vector<std::string>{"prod/web-v1", "prod/web-v2"}));
  const ServiceTable t443 = tableOf(p, "prod/web", 443);
  EXPECT_EQ(t443.split, "prod/web-split");
  EXPECT_EQ(groupServices(t443), (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_EQ(allAddrs(t443), (std::set<std::string>{"10.0.1.1:443"}));
  const auto d = messagesFor(p, splitRef("web-split"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_THAT(d[0], HasSubstr("web-v2"));
  EXPECT_THAT(d[0], HasSubstr("443"));
}

TEST(ServiceFallback, BackendPortMatchesByNumberAndProtocol) {
  // A backend with 80/UDP only does not serve the root's 80/TCP.
  const std::string y = app("web", "10.96.0.1", {"10.0.0.1"}) +
                        app("web-v1", "10.96.0.11", {"10.0.1.1"}) +
                        app("web-udp", "10.96.0.13", {"10.0.4.1"},
                            "[{name: other, port: 80, protocol: UDP}]") +
                        split("web-split", "web", {{"web-v1", "1"}, {"web-udp", "1"}});
  const Plan p = compiled(y);
  EXPECT_EQ(groupServices(tableOf(p, "prod/web", 80)),
            (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_THAT(joined(messagesFor(p, splitRef("web-split"))), HasSubstr("web-udp"));
}

TEST(ServiceFallback, BackendMapsPortToItsOwnTargetPort) {
  const std::string y = serviceIn("prod", "web", "10.96.0.1", "[{port: 80, targetPort: 8080}]",
                                  "{app: web}") +
                        pod("web-0", "web", "10.0.0.1") +
                        serviceIn("prod", "green", "10.96.0.11", "[{port: 80, targetPort: 8081}]",
                                  "{app: green}") +
                        pod("green-0", "green", "10.0.1.1") +
                        split("web-split", "web", {{"green", "1"}});
  const ServiceTable t = tableOf(compiled(y), "prod/web", 80);
  EXPECT_EQ(allAddrs(t), (std::set<std::string>{"10.0.1.1:8081"}));
}

TEST(ServiceFallback, RootAsBackendUsesRootEndpointsWithoutRecursion) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web", "900"}, {"web-v1", "100"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web", "prod/web-v1"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  const auto prob = kernelProbabilities(t);
  EXPECT_DOUBLE_EQ(prob.at("10.0.0.1:80"), 0.45);
  EXPECT_DOUBLE_EQ(prob.at("10.0.0.2:80"), 0.45);
  EXPECT_DOUBLE_EQ(prob.at("10.0.1.1:80"), 0.1);
}

TEST(ServiceFallback, BackendThatIsAnotherSplitsRootIsNotResolvedRecursively) {
  const std::string y = canary() + app("web-v1-next", "10.96.0.31", {"10.0.5.1"}) +
                        split("outer", "web", {{"web-v1", "1"}}) +
                        split("inner", "web-v1", {{"web-v1-next", "1"}});
  const Plan p = compiled(y);
  const ServiceTable outer = tableOf(p, "prod/web", 80);
  EXPECT_EQ(outer.split, "prod/outer");
  ASSERT_EQ(groupServices(outer), (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_EQ(allAddrs(outer), (std::set<std::string>{"10.0.1.1:80"}));
  // The inner split still governs connections to web-v1's own ClusterIP.
  const ServiceTable inner = tableOf(p, "prod/web-v1", 80);
  EXPECT_EQ(inner.split, "prod/inner");
  EXPECT_EQ(allAddrs(inner), (std::set<std::string>{"10.0.5.1:80"}));
}

TEST(ServiceFallback, SplitWithMatchesIsNotAppliedAtL4) {
  const Plan p = compiled(canary() + split("ab-test", "web", {{"web-v1", "0"}, {"web-v2", "100"}},
                                           "v1alpha4", "",
                                           "matches: [{kind: HTTPRouteGroup, name: ab-test}]"));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  EXPECT_THAT(joined(messagesFor(p, splitRef("ab-test"))), HasSubstr("not applied"));
}

TEST(ServiceFallback, OldestSplitOwnsTheRoot) {
  const std::string y =
      canary() +
      split("a-newer", "web", {{"web-v2", "1"}}, "v1alpha4",
            "creationTimestamp: \"2024-02-01T00:00:00Z\"") +
      split("z-older", "web", {{"web-v1", "1"}}, "v1alpha4",
            "creationTimestamp: \"2024-01-01T00:00:00Z\"");
  const Plan p = compiled(y);
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/z-older");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1"}));
  const auto loser = messagesFor(p, splitRef("a-newer"));
  ASSERT_EQ(loser.size(), 1u) << joined(loser);
  EXPECT_THAT(loser[0], HasSubstr("z-older"));
  EXPECT_TRUE(messagesFor(p, splitRef("z-older")).empty());
}

TEST(ServiceFallback, SameAgeSplitsAreOrderedByName) {
  const std::string ts = "creationTimestamp: \"2024-01-01T00:00:00Z\"";
  const Plan p = compiled(canary() + split("beta", "web", {{"web-v2", "1"}}, "v1alpha4", ts) +
                          split("alpha", "web", {{"web-v1", "1"}}, "v1alpha4", ts));
  EXPECT_EQ(tableOf(p, "prod/web", 80).split, "prod/alpha");
  EXPECT_THAT(joined(messagesFor(p, splitRef("beta"))), HasSubstr("ignored"));
  EXPECT_TRUE(messagesFor(p, splitRef("alpha")).empty());
}

TEST(ServiceFallback, SplitOfMissingRootIsDiagnosed) {
  const Plan p = compiled(canary() + split("orphan", "nothere", {{"web-v1", "1"}}));
  EXPECT_THAT(joined(messagesFor(p, splitRef("orphan"))), HasSubstr("does not exist"));
  // And nothing else is split by it.
  for (const auto& [k, t] : p.services) EXPECT_EQ(t.split, "") << t.service;
}

}  // namespace
}  // namespace smik::compile
