// Plan -> kernel state, and the diff writer, on the in-memory FakeBackend.
#include "maps/desired.h"
#include "maps/maps.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace smik::maps {
namespace {

smik::Addr addr(const std::string& text) {
  smik::Addr a;
  EXPECT_TRUE(smik::parseAddr(text, &a)) << text;
  return a;
}

bool sameEndpoint(const smik_endpoint& a, const smik_endpoint& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

bool sameEndpoints(const std::map<uint32_t, smik_endpoint>& a,
                   const std::map<uint32_t, smik_endpoint>& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
           return x.first == y.first && sameEndpoint(x.second, y.second);
         });
}

// What the backend holds equals `want` (ips, endpoints, policy, installed).
void expectHolds(Backend& b, const KernelState& want) {
  const KernelState got = b.read().value();
  EXPECT_EQ(got.ips, want.ips);
  EXPECT_TRUE(sameEndpoints(got.endpoints, want.endpoints));
  EXPECT_EQ(got.policy, want.policy);
  EXPECT_EQ(got.policy_installed, want.policy_installed);
}

smik_endpoint endpoint(uint32_t identity, const std::string& ip) {
  smik_endpoint e{};
  e.identity = identity;
  e.naddrs = 1;
  const smik::Addr a = addr(ip);
  e.families[0] = a.family;
  std::memcpy(e.addrs[0], a.bytes.data(), 16);
  return e;
}

smik_policy_key grant(uint32_t src, uint32_t dst, uint16_t port) {
  return {src, dst, port, SMIK_PROTO_TCP, 0};
}

// Two pods, one allow rule, one enforced destination.
KernelState sampleState() {
  KernelState s;
  s.ips[addr("10.0.0.10")] = {300, SMIK_IP_F_LOCAL};
  s.ips[addr("10.0.0.20")] = {301, SMIK_IP_F_LOCAL};
  s.ips[addr("10.0.1.30")] = {302, 0};
  s.endpoints[11] = endpoint(300, "10.0.0.10");
  s.endpoints[12] = endpoint(301, "10.0.0.20");
  s.policy[grant(301, 300, 80)] = {1, 0};
  s.policy[{SMIK_ID_META, 300, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  s.policy_installed = true;
  return s;
}

compile::Plan samplePlan() {
  compile::Plan p;
  p.identities = {{"prod/server", 300}, {"prod/client", 301}};
  p.ip_identity[addr("10.0.0.10")] = {300, SMIK_IP_F_LOCAL};
  p.ip_identity[addr("fd00::10")] = {300, SMIK_IP_F_LOCAL};
  p.ip_identity[addr("10.0.0.20")] = {301, SMIK_IP_F_LOCAL};
  p.endpoints["prod/server-0"] = {"prod/server-0", 300, {addr("10.0.0.10"), addr("fd00::10")}};
  p.endpoints["prod/client-0"] = {"prod/client-0", 301, {addr("10.0.0.20")}};
  p.policy[grant(301, 300, 80)] = {1, 0};
  p.policy[{SMIK_ID_META, 300, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  p.rules = {{"prod/allow", "TCPRoute web"}};
  return p;
}

// FakeBackend that records each call, in order.
class RecordingBackend : public FakeBackend {
 public:
  std::vector<std::string> calls;

  bool putIp(const smik::Addr& a, const smik_ip_info& v, std::string* err) override {
    calls.push_back("putIp " + a.str());
    return FakeBackend::putIp(a, v, err);
  }
  bool deleteIp(const smik::Addr& a, std::string* err) override {
    calls.push_back("deleteIp " + a.str());
    return FakeBackend::deleteIp(a, err);
  }
  bool putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) override {
    calls.push_back("putEndpoint " + std::to_string(ifindex));
    return FakeBackend::putEndpoint(ifindex, v, err);
  }
  bool deleteEndpoint(uint32_t ifindex, std::string* err) override {
    calls.push_back("deleteEndpoint " + std::to_string(ifindex));
    return FakeBackend::deleteEndpoint(ifindex, err);
  }
  bool swapPolicy(const PolicyEntries& entries, std::string* err) override {
    calls.push_back("swapPolicy");
    return FakeBackend::swapPolicy(entries, err);
  }
};

}  // namespace

// ---- desiredState ------------------------------------------------------------------

TEST(DesiredState, CopiesAddressesAndPolicy) {
  const compile::Plan p = samplePlan();
  const KernelState s = desiredState(p, {}, {});
  EXPECT_EQ(s.ips, p.ip_identity);
  EXPECT_EQ(s.policy, p.policy);
  EXPECT_TRUE(s.policy_installed);
  // The addresses are the plan's own vector, not a copy (1.4 MiB at 50k
  // pods); a write to the state's copies it and leaves the plan's alone.
  EXPECT_TRUE(s.ips.sharesWith(p.ip_identity));
  KernelState written = s;
  written.ips.erase(written.ips.begin()->first);
  EXPECT_EQ(s.ips, p.ip_identity);
  EXPECT_EQ(written.ips.size() + 1, p.ip_identity.size());
}

TEST(DesiredState, EndpointsOnlyForPodsWithAnInterface) {
  const compile::Plan p = samplePlan();
  const KernelState s =
      desiredState(p, {{"prod/server-0", 7}, {"prod/gone-0", 9}}, {{"prod/server-0", 1}});
  ASSERT_EQ(s.endpoints.size(), 1u);
  ASSERT_EQ(s.endpoints.count(7), 1u);
  const smik_endpoint& ep = s.endpoints.at(7);
  EXPECT_EQ(ep.identity, 300u);
  EXPECT_EQ(ep.attach, SMIK_EP_ATTACH_TCX);
  ASSERT_EQ(ep.naddrs, 2);
  EXPECT_EQ(ep.families[0], SMIK_AF_INET);
  EXPECT_EQ(ep.families[1], SMIK_AF_INET6);
  EXPECT_EQ(std::memcmp(ep.addrs[0], addr("10.0.0.10").bytes.data(), 16), 0);
  EXPECT_EQ(std::memcmp(ep.addrs[1], addr("fd00::10").bytes.data(), 16), 0);
  EXPECT_EQ(ep.families[2], 0);
  EXPECT_EQ(ep.pad[0], 0);
}

TEST(DesiredState, AttachModePerPodAndZeroWhenUnknown) {
  const compile::Plan p = samplePlan();
  const KernelState s = desiredState(p, {{"prod/server-0", 7}, {"prod/client-0", 8}},
                                     {{"prod/client-0", SMIK_EP_ATTACH_CLSACT}});
  ASSERT_EQ(s.endpoints.size(), 2u);
  EXPECT_EQ(s.endpoints.at(7).attach, 0);
  EXPECT_EQ(s.endpoints.at(8).attach, SMIK_EP_ATTACH_CLSACT);
  EXPECT_EQ(s.endpoints.at(8).identity, 301u);
  EXPECT_EQ(s.endpoints.at(8).naddrs, 1);
}

TEST(DesiredState, AtMostFourAddressesPerEndpoint) {
  compile::Plan p;
  p.endpoints["prod/many-0"] = {
      "prod/many-0",
      400,
      {addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3"), addr("10.0.0.4"), addr("10.0.0.5")}};
  const KernelState s = desiredState(p, {{"prod/many-0", 3}}, {});
  ASSERT_EQ(s.endpoints.count(3), 1u);
  EXPECT_EQ(s.endpoints.at(3).naddrs, SMIK_ENDPOINT_ADDRS);
  EXPECT_EQ(std::memcmp(s.endpoints.at(3).addrs[3], addr("10.0.0.4").bytes.data(), 16), 0);
}

TEST(DesiredState, EmptyPlanStillInstallsAPolicy) {
  const KernelState s = desiredState(compile::Plan{}, {}, {});
  EXPECT_TRUE(s.policy.empty());
  EXPECT_TRUE(s.policy_installed);
}

// ---- ipKey ---------------------------------------------------------------------------

TEST(IpKey, FamilyTaggedAndRoundTrip) {
  for (const char* text : {"10.1.2.3", "fd00::1:2"}) {
    SCOPED_TRACE(text);
    const smik::Addr a = addr(text);
    const smik_ip_key k = ipKey(a);
    if (a.family == SMIK_AF_INET) {  // v4 sits in the first 4 bytes, the rest zero
      for (int i = 4; i < 16; i++) EXPECT_EQ(k.addr[i], 0) << i;
    }
    EXPECT_EQ(k.family, a.family);
    EXPECT_EQ(addrOf(k), a);
    EXPECT_EQ(addrOf(k).str(), text);
  }
}

// ---- apply -----------------------------------------------------------------------------

TEST(Apply, FirstApplyWritesEverything) {
  FakeBackend fb;
  const KernelState next = sampleState();
  ApplyStats st;
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_EQ(st.ip_writes, 3);
  EXPECT_EQ(st.endpoint_writes, 2);
  EXPECT_TRUE(st.policy_swapped);
  EXPECT_EQ(st.ip_deletes + st.endpoint_deletes, 0);
  EXPECT_EQ(fb.writes, 6);
  EXPECT_EQ(fb.swaps, 1);
  EXPECT_EQ(fb.policyGeneration(), 1u);
  expectHolds(fb, next);
}

TEST(Apply, SameStateAgainWritesNothing) {
  FakeBackend fb;
  const KernelState next = sampleState();
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), nullptr, &err)) << err;
  const int writes = fb.writes;
  ApplyStats st;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_EQ(fb.writes, writes);
  EXPECT_EQ(fb.swaps, 1);
  EXPECT_EQ(fb.policyGeneration(), 1u);
  EXPECT_FALSE(st.policy_swapped);
  EXPECT_EQ(st.ip_writes + st.endpoint_writes + st.ip_deletes + st.endpoint_deletes, 0);
}

TEST(Apply, PolicyChangeSwapsExactlyOnce) {
  FakeBackend fb;
  KernelState next = sampleState();
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), nullptr, &err)) << err;
  const int writes = fb.writes;
  next.policy[grant(302, 300, 443)] = {2, 0};
  next.policy.erase(grant(301, 300, 80));
  ApplyStats st;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_TRUE(st.policy_swapped);
  EXPECT_EQ(fb.swaps, 2);
  EXPECT_EQ(fb.writes, writes + 1);  // the swap only: addresses and endpoints untouched
  EXPECT_EQ(fb.policyGeneration(), 2u);
  expectHolds(fb, next);
}

TEST(Apply, ChangedEntriesAreRewrittenOneByOne) {
  FakeBackend fb;
  KernelState next = sampleState();
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), nullptr, &err)) << err;
  next.ips[addr("10.0.1.30")] = {303, 0};  // the pod behind the IP changed identity
  next.endpoints[12].attach = SMIK_EP_ATTACH_TCX;
  ApplyStats st;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_EQ(st.ip_writes, 1);
  EXPECT_EQ(st.endpoint_writes, 1);
  EXPECT_FALSE(st.policy_swapped);
  expectHolds(fb, next);
}

TEST(Apply, RemovedAddressesAndEndpointsAreDeleted) {
  FakeBackend fb;
  KernelState next = sampleState();
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), nullptr, &err)) << err;
  next.ips.erase(addr("10.0.0.20"));
  next.ips.erase(addr("10.0.1.30"));
  next.endpoints.erase(12);
  ApplyStats st;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_EQ(st.ip_deletes, 2);
  EXPECT_EQ(st.endpoint_deletes, 1);
  EXPECT_EQ(st.ip_writes + st.endpoint_writes, 0);
  EXPECT_FALSE(st.policy_swapped);
  expectHolds(fb, next);
}

// The address diff is one merge of two sorted maps: additions, changes and
// removals interleaved across both families, at either end and in between,
// each written once, and nothing written for what is the same.
TEST(Apply, AddressMergeWritesEachDifferenceOnceAcrossFamilies) {
  RecordingBackend rb;
  KernelState before;
  before.policy_installed = true;
  for (const char* a : {"10.0.0.1", "10.0.0.5", "10.0.0.9", "fd00::1", "fd00::5", "fd00::9"})
    before.ips[addr(a)] = {300, 0};
  std::string err;
  ASSERT_TRUE(apply(rb, before, rb.read().value(), nullptr, &err)) << err;
  rb.calls.clear();

  KernelState next = before;
  next.ips.erase(addr("10.0.0.1"));          // first of all: removed
  next.ips[addr("10.0.0.0")] = {301, 0};     // before the first: added
  next.ips[addr("10.0.0.5")] = {301, 0};     // identity moved
  next.ips[addr("10.0.0.7")] = {300, SMIK_IP_F_LOCAL};  // between two held
  next.ips.erase(addr("fd00::5"));           // in the middle of the other family
  next.ips[addr("fd00::9")] = {300, SMIK_IP_F_LOCAL};   // flags changed, last of all
  next.ips[addr("fd00::a")] = {302, 0};      // after the last: added
  ApplyStats st;
  ASSERT_TRUE(apply(rb, next, rb.read().value(), &st, &err)) << err;
  EXPECT_EQ(rb.calls, (std::vector<std::string>{"putIp 10.0.0.0", "putIp 10.0.0.5",
                                                "putIp 10.0.0.7", "putIp fd00::9",
                                                "putIp fd00::a", "deleteIp 10.0.0.1",
                                                "deleteIp fd00::5"}));
  EXPECT_EQ(st.ip_writes, 5);
  EXPECT_EQ(st.ip_deletes, 2);
  EXPECT_TRUE(st.generation_bumped);
  expectHolds(rb, next);

  // Everything removed, and then everything back.
  KernelState none;
  none.policy_installed = true;
  ASSERT_TRUE(apply(rb, none, rb.read().value(), &st, &err)) << err;
  EXPECT_TRUE(rb.held().ips.empty());
  ASSERT_TRUE(apply(rb, next, rb.read().value(), &st, &err)) << err;
  expectHolds(rb, next);
}

TEST(Apply, AdditionsThenPolicySwapThenDeletions) {
  RecordingBackend rb;
  KernelState before = sampleState();
  std::string err;
  ASSERT_TRUE(apply(rb, before, rb.read().value(), nullptr, &err)) << err;
  rb.calls.clear();

  KernelState next = before;
  next.ips.erase(addr("10.0.0.20"));
  next.endpoints.erase(12);
  next.ips[addr("10.0.0.40")] = {304, SMIK_IP_F_LOCAL};
  next.ips[addr("fd00::40")] = {304, SMIK_IP_F_LOCAL};
  next.endpoints[14] = endpoint(304, "10.0.0.40");
  next.policy.erase(grant(301, 300, 80));
  next.policy[grant(304, 300, 80)] = {1, 0};
  ASSERT_TRUE(apply(rb, next, rb.read().value(), nullptr, &err)) << err;

  const auto& c = rb.calls;
  ASSERT_EQ(std::count(c.begin(), c.end(), "swapPolicy"), 1) << ::testing::PrintToString(c);
  const size_t swap = std::find(c.begin(), c.end(), "swapPolicy") - c.begin();
  std::vector<std::string> adds(c.begin(), c.begin() + swap);
  std::vector<std::string> removals(c.begin() + swap + 1, c.end());
  std::sort(adds.begin(), adds.end());
  std::sort(removals.begin(), removals.end());
  EXPECT_EQ(adds,
            (std::vector<std::string>{"putEndpoint 14", "putIp 10.0.0.40", "putIp fd00::40"}));
  EXPECT_EQ(removals, (std::vector<std::string>{"deleteEndpoint 12", "deleteIp 10.0.0.20"}));
  expectHolds(rb, next);
}

TEST(Apply, EmptyPolicyIsInstalledWhenNoneIs) {
  FakeBackend fb;
  KernelState next;
  next.policy_installed = true;
  ASSERT_FALSE(fb.read().value().policy_installed);
  ApplyStats st;
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_TRUE(st.policy_swapped);
  EXPECT_EQ(fb.swaps, 1);
  EXPECT_TRUE(fb.read().value().policy_installed);
  EXPECT_TRUE(fb.read().value().policy.empty());

  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_EQ(fb.swaps, 1);
}

TEST(Apply, InjectedFailureStopsWithAnError) {
  FakeBackend fb;
  const KernelState next = sampleState();
  fb.fail_after_writes = 2;
  std::string err;
  EXPECT_FALSE(apply(fb, next, fb.read().value(), nullptr, &err));
  EXPECT_EQ(err, "injected failure");
  EXPECT_EQ(fb.writes, 2);
  // A prefix of the sequence: no policy yet, so nothing is judged by half of it.
  EXPECT_EQ(fb.swaps, 0);
  EXPECT_FALSE(fb.read().value().policy_installed);

  // The caller re-reads and retries.
  err.clear();
  ApplyStats st;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), &st, &err)) << err;
  EXPECT_EQ(st.ip_writes + st.endpoint_writes, 3);
  expectHolds(fb, next);
}

TEST(Apply, FailedSwapDeletesNothing) {
  FakeBackend fb;
  KernelState next = sampleState();
  std::string err;
  ASSERT_TRUE(apply(fb, next, fb.read().value(), nullptr, &err)) << err;
  const KernelState before = fb.read().value();
  next.ips.erase(addr("10.0.1.30"));
  next.policy.clear();
  fb.fail_after_writes = fb.writes;  // the swap is the next write
  EXPECT_FALSE(apply(fb, next, fb.read().value(), nullptr, &err));
  EXPECT_EQ(err, "injected failure");
  expectHolds(fb, before);
  EXPECT_EQ(fb.policyGeneration(), 1u);
}


// ---- hook: new pods under enforcement before anything else is written -----------

// sampleState plus a new local pod (ifindex 13, identity 303, 10.0.0.30)
// that client may reach on port 443, and a new remote address.
KernelState withNewPod(KernelState s) {
  s.ips[addr("10.0.0.30")] = {303, SMIK_IP_F_LOCAL};
  s.ips[addr("10.0.2.1")] = {304, 0};
  s.endpoints[13] = endpoint(303, "10.0.0.30");
  s.policy[grant(301, 303, 443)] = {2, 0};
  s.policy[grant(304, 300, 80)] = {1, 0};  // another destination's change
  s.policy[{SMIK_ID_META, 303, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  return s;
}

TEST(Hook, NewPodsIdentityPolicyThenItsEndpointOnly) {
  RecordingBackend rb;
  const KernelState before = sampleState();
  std::string err;
  ASSERT_TRUE(apply(rb, before, rb.read().value(), nullptr, &err)) << err;
  rb.calls.clear();
  const KernelState next = withNewPod(before);
  KernelState current = rb.read().value();
  std::map<uint32_t, std::string> failed;
  ASSERT_TRUE(hook(rb, next, &current, &failed, nullptr, &err)) << err;
  EXPECT_TRUE(failed.empty());
  EXPECT_EQ(rb.calls, (std::vector<std::string>{"swapPolicy", "putEndpoint 13"}));
  // 303's whole policy (deny by default, its grant), nothing of 300's change
  // and no address: those wait for the fill.
  PolicyEntries want = before.policy;
  want[grant(301, 303, 443)] = {2, 0};
  want[{SMIK_ID_META, 303, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  EXPECT_EQ(rb.read().value().policy, want);
  EXPECT_EQ(rb.read().value().ips, before.ips);
  EXPECT_EQ(current.policy, want);
  EXPECT_TRUE(sameEndpoint(current.endpoints.at(13), next.endpoints.at(13)));

  // The fill then writes the rest, and only the rest.
  rb.calls.clear();
  ASSERT_TRUE(apply(rb, next, current, nullptr, &err)) << err;
  std::sort(rb.calls.begin(), rb.calls.end());
  EXPECT_EQ(rb.calls, (std::vector<std::string>{"putIp 10.0.0.30", "putIp 10.0.2.1", "swapPolicy"}));
  expectHolds(rb, next);
}

TEST(Hook, AFailedFillLeavesTheNewPodDenyingByDefault) {
  FakeBackend fb;
  std::string err;
  ASSERT_TRUE(apply(fb, sampleState(), fb.read().value(), nullptr, &err)) << err;
  const KernelState next = withNewPod(sampleState());
  KernelState current = fb.read().value();
  std::map<uint32_t, std::string> failed;
  ASSERT_TRUE(hook(fb, next, &current, &failed, nullptr, &err)) << err;
  fb.fail_after_writes = fb.writes;  // the fill's first write (an address) fails
  EXPECT_FALSE(apply(fb, next, current, nullptr, &err));
  const KernelState held = fb.read().value();
  ASSERT_EQ(held.endpoints.count(13), 1u);
  EXPECT_EQ(held.policy.count({SMIK_ID_META, 303, 0, 0, 0}), 1u) << "enforced: deny by default";
  EXPECT_EQ(held.ips.count(addr("10.0.0.30")), 0u);
}

TEST(Hook, AFailedSwapWritesNoEndpoint) {
  FakeBackend fb;
  std::string err;
  ASSERT_TRUE(apply(fb, sampleState(), fb.read().value(), nullptr, &err)) << err;
  KernelState current = fb.read().value();
  std::map<uint32_t, std::string> failed;
  fb.fail_after_writes = fb.writes;
  EXPECT_FALSE(hook(fb, withNewPod(sampleState()), &current, &failed, nullptr, &err));
  EXPECT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed.count(13), 1u);
  EXPECT_EQ(fb.read().value().endpoints.count(13), 0u) << "never hooked without its deny by default";
}

TEST(Hook, AReplicaOfAnEnforcedIdentityNeedsNoSwap) {
  FakeBackend fb;
  std::string err;
  const KernelState before = sampleState();
  ASSERT_TRUE(apply(fb, before, fb.read().value(), nullptr, &err)) << err;
  KernelState next = before;
  next.endpoints[13] = endpoint(300, "10.0.0.11");  // another pod of identity 300
  next.ips[addr("10.0.0.11")] = {300, SMIK_IP_F_LOCAL};
  KernelState current = fb.read().value();
  std::map<uint32_t, std::string> failed;
  ApplyStats st;
  ASSERT_TRUE(hook(fb, next, &current, &failed, &st, &err)) << err;
  EXPECT_FALSE(st.policy_swapped);
  EXPECT_EQ(fb.swaps, 1);
  EXPECT_EQ(st.endpoint_writes, 1);

  // Nothing new: nothing written.
  const int writes = fb.writes;
  ASSERT_TRUE(hook(fb, next, &current, &failed, nullptr, &err)) << err;
  EXPECT_EQ(fb.writes, writes);
}

TEST(Hook, OnFreshPinsTheFirstHookInstallsAPolicy) {
  FakeBackend fb;
  KernelState current = fb.read().value();
  std::map<uint32_t, std::string> failed;
  std::string err;
  const KernelState next = sampleState();
  ASSERT_TRUE(hook(fb, next, &current, &failed, nullptr, &err)) << err;
  EXPECT_TRUE(fb.read().value().policy_installed);
  EXPECT_EQ(fb.read().value().policy, next.policy) << "every destination here is a new endpoint's";
  ASSERT_TRUE(apply(fb, next, current, nullptr, &err)) << err;
  EXPECT_EQ(fb.swaps, 1) << "the fill had no policy left to change";
}

}  // namespace smik::maps
