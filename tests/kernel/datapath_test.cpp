// The tc programs on crafted packets (BPF_PROG_TEST_RUN), with maps seeded
// through the same maps/ API the agent uses. Each test loads a fresh object
// under its own pin dir: test runs change real maps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "agent/datapath/datapath.h"
#include "tests/kernel/packet.h"

using namespace smik;
using smik::pkt::buildPacket;
using smik::pkt::kAck;
using smik::pkt::kSyn;
using smik::pkt::PacketSpec;

namespace {

constexpr int kPass = 0, kDrop = 2;
constexpr uint32_t kLo = 1;  // test runs need a real device; the endpoint sits on lo
constexpr uint32_t kClient = 1000, kServer = 2000, kOther = 3000;

compile::Addr addr(const std::string& s) {
  compile::Addr a;
  EXPECT_TRUE(compile::parseAddr(s, &a)) << s;
  return a;
}

class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "KERNEL TEST SKIPPED: needs root for BPF";
    static int n = 0;
    pin_ = "/sys/fs/bpf/smik-dpt-" + std::to_string(getpid()) + "-" + std::to_string(n++);
    datapath::Options o;
    o.pin_dir = pin_;
    std::string err;
    dp_ = datapath::Datapath::open(o, &err);
    ASSERT_TRUE(dp_) << err;
    // server pod 10.1.0.2 on "lo", client pod 10.1.0.1 elsewhere
    state_.ips[addr("10.1.0.1")] = {kClient, 0};
    state_.ips[addr("10.1.0.2")] = {kServer, SMIK_IP_F_LOCAL};
    state_.ips[addr("10.1.0.3")] = {kOther, 0};
    state_.ips[addr("192.168.77.1")] = {SMIK_ID_HOST, 0};
    state_.ips[addr("fd00::1")] = {kClient, 0};
    smik_endpoint ep{};
    ep.identity = kServer;
    ep.naddrs = 2;
    ep.families[0] = SMIK_AF_INET;
    std::memcpy(ep.addrs[0], addr("10.1.0.2").bytes.data(), 16);
    ep.families[1] = SMIK_AF_INET6;
    std::memcpy(ep.addrs[1], addr("fd00::2").bytes.data(), 16);
    state_.endpoints[kLo] = ep;
    enforce(kServer);
  }
  void TearDown() override {
    dp_.reset();
    std::string err;
    if (!pin_.empty()) {
      EXPECT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
    }
  }

  void allow(uint32_t src, uint32_t dst, uint16_t port, uint8_t proto, uint32_t rule = 1) {
    state_.policy[{src, dst, port, proto, 0}] = {rule, 0};
  }
  void enforce(uint32_t dst) { state_.policy[{SMIK_ID_META, dst, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED}; }
  void apply() {
    state_.policy_installed = true;
    std::string err;
    ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read(), nullptr, &err)) << err;
  }
  int toPod(const PacketSpec& p) { return pkt::runTc(dp_->toPodProgFd(), buildPacket(p), kLo); }
  int fromPod(const PacketSpec& p) { return pkt::runTc(dp_->fromPodProgFd(), buildPacket(p), kLo); }
  uint64_t reason(int r) { return dp_->maps().reasons()[r].packets; }
  smik_edge_value edge(uint32_t src, uint32_t dst, uint16_t port, uint8_t proto) {
    for (const auto& e : dp_->maps().edges())
      if (e.key.src_id == src && e.key.dst_id == dst && e.key.dport == port && e.key.proto == proto)
        return e.value;
    return {};
  }

  std::string pin_;
  std::unique_ptr<datapath::Datapath> dp_;
  maps::KernelState state_;
};

TEST_F(DatapathTest, ExactPortAllowedOtherPortDenied) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080}), kPass);
  EXPECT_EQ(toPod({.dport = 8081}), kDrop);
  EXPECT_EQ(toPod({.dport = 8080, .proto = 17}), kDrop) << "a TCP grant is not a UDP grant";
  EXPECT_EQ(reason(SMIK_REASON_POLICY), 2u);
  EXPECT_EQ(edge(kClient, kServer, 8080, 6).flows_allowed, 1u);
  EXPECT_EQ(edge(kClient, kServer, 8081, 6).packets_denied, 1u);
}

TEST_F(DatapathTest, WildcardPortIsThatProtocolOnly) {
  allow(kClient, kServer, 0, SMIK_PROTO_UDP);
  apply();
  EXPECT_EQ(toPod({.dport = 53, .proto = 17}), kPass);
  EXPECT_EQ(toPod({.dport = 9999, .proto = 17}), kPass);
  EXPECT_EQ(toPod({.dport = 53, .proto = 6}), kDrop);
}

TEST_F(DatapathTest, OtherSourceIdentityDenied) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dport = 8080}), kDrop);
  EXPECT_EQ(toPod({.src = "10.9.9.9", .dport = 8080}), kDrop) << "unknown source = world";
}

TEST_F(DatapathTest, HostIsAlwaysAllowed) {
  apply();
  EXPECT_EQ(toPod({.src = "192.168.77.1", .dport = 8080}), kPass);
}

// --host-traffic=policy: the destination's meta entry says host sources are
// judged, so the node needs a grant like any source; a policy without the
// flag (--host-traffic=allow) lets it pass again, by the same one swap.
TEST_F(DatapathTest, HostIsJudgedWhenThePolicySaysSo) {
  state_.policy[{SMIK_ID_META, kServer, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED | SMIK_POL_F_HOST_JUDGED};
  allow(SMIK_ID_HOST, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.src = "192.168.77.1", .dport = 8080}), kPass) << "granted";
  EXPECT_EQ(toPod({.src = "192.168.77.1", .dport = 8081}), kDrop) << "not granted";
  EXPECT_EQ(toPod({.src = "192.168.77.1", .dport = 8081, .proto = 1}), kDrop) << "ICMP echo";
  EXPECT_EQ(edge(SMIK_ID_HOST, kServer, 8081, 6).packets_denied, 1u);
  EXPECT_EQ(toPod({.src = "10.1.0.1", .dport = 8080}), kDrop) << "the host's grant is the host's";

  enforce(kServer);  // the flag gone
  apply();
  EXPECT_EQ(toPod({.src = "192.168.77.1", .dport = 8081}), kPass);
}

TEST_F(DatapathTest, UnenforcedDestinationAllowsAll) {
  state_.policy.clear();  // permissive: no meta entry
  apply();
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dport = 1234}), kPass);
}

TEST_F(DatapathTest, NoPolicyGenerationFailsClosed) {
  state_.policy.clear();
  state_.policy[{kOther, kOther, 1, 6, 0}] = {1, 0};  // something, not for kServer
  // Never applied: the outer slot is empty.
  std::string err;
  ASSERT_TRUE(dp_->maps().putEndpoint(kLo, state_.endpoints[kLo], &err)) << err;
  EXPECT_EQ(toPod({.dport = 8080}), kDrop);
}

TEST_F(DatapathTest, EstablishedFlowSkipsPolicyLookup) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass);
  EXPECT_EQ(edge(kClient, kServer, 8080, 6).flows_allowed, 1u) << "one new flow, not three";
}

TEST_F(DatapathTest, RepliesToPodsOwnConnectionsPass) {
  apply();  // nothing may connect to the server pod
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 5555, .dport = 80}), kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .sport = 80, .dport = 5555,
                   .tcp_flags = kSyn | kAck}),
            kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .sport = 80, .dport = 5556,
                   .tcp_flags = kSyn | kAck}),
            kDrop)
      << "another port is not a reply";
  // UDP "connections" too
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 53, .proto = 17}), kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .sport = 53, .dport = 6000, .proto = 17}), kPass);
}

TEST_F(DatapathTest, ServerAnswerDoesNotOpenFlow) {
  apply();
  // The pod answering (SYN|ACK) a flow that was never admitted creates nothing.
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 8080, .dport = 4000,
                     .tcp_flags = kSyn | kAck}),
            kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .sport = 4000, .dport = 8080,
                   .tcp_flags = kAck}),
            kDrop);
}

TEST_F(DatapathTest, SpoofedSourceDropped) {
  apply();
  EXPECT_EQ(fromPod({.src = "10.1.0.77", .dst = "10.1.0.3"}), kDrop);
  EXPECT_EQ(fromPod({.src = "10.1.0.3", .dst = "10.1.0.1"}), kDrop) << "another pod's IP";
  EXPECT_EQ(fromPod({.src = "fd00::2", .dst = "fd00::1"}), kPass) << "its second address";
  EXPECT_EQ(reason(SMIK_REASON_SPOOFED), 2u);
}

TEST_F(DatapathTest, RevocationReachesEstablishedFlows) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  state_.policy.erase({kClient, kServer, 8080, SMIK_PROTO_TCP, 0});
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kDrop);
  // and a policy change that still allows it keeps the flow
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  allow(kOther, kServer, 9, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass);
}

TEST_F(DatapathTest, Ipv6FollowsTheSamePolicy) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.src = "fd00::1", .dst = "fd00::2", .dport = 8080}), kPass);
  EXPECT_EQ(toPod({.src = "fd00::1", .dst = "fd00::2", .dport = 22}), kDrop);
}

TEST_F(DatapathTest, Ipv6LinkLocalIsNotSpoofingNorPolicy) {
  apply();
  EXPECT_EQ(fromPod({.src = "fe80::1", .dst = "ff02::16", .proto = 1, .icmp_type = 143}), kPass);
  EXPECT_EQ(fromPod({.src = "::", .dst = "ff02::1:ff00:2", .proto = 1, .icmp_type = 135}), kPass);
  EXPECT_EQ(toPod({.src = "fe80::9", .dst = "fd00::2", .dport = 22}), kPass);
  EXPECT_EQ(fromPod({.src = "fd00::77", .dst = "fd00::1"}), kDrop) << "a global v6 not its own";
}

TEST_F(DatapathTest, NonIpPassesMalformedDropped) {
  apply();
  EXPECT_EQ(pkt::runTc(dp_->toPodProgFd(), pkt::buildArp(), kLo), kPass);
  auto pkt = buildPacket({.dport = 8080});
  pkt.resize(14 + 20 + 2);  // TCP header cut short
  EXPECT_EQ(pkt::runTc(dp_->toPodProgFd(), pkt, kLo), kDrop);
  EXPECT_EQ(reason(SMIK_REASON_MALFORMED), 1u);
}

TEST_F(DatapathTest, IcmpErrorsPassEchoIsJudged) {
  apply();
  EXPECT_EQ(toPod({.src = "10.1.0.3", .proto = 1, .icmp_type = 3}), kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .proto = 1, .icmp_type = 8}), kDrop);
  EXPECT_EQ(reason(SMIK_REASON_UNSUPPORTED), 1u) << "no SMI route can name ICMP";
  EXPECT_EQ(reason(SMIK_REASON_POLICY), 0u);
}

TEST_F(DatapathTest, PacketsOfOtherInterfacesAreNotOurs) {
  state_.endpoints.clear();
  apply();
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dport = 22}), kPass);
}

// Policies swapped in a tight loop while packets run. Every policy in the
// cycle admits client -> server:8080, each by a different mechanism (exact
// port under enforcement, no enforcement, all-ports grant), so any packet
// judged by a mix of two generations (e.g. enforcement of one, grants of the
// other) would be dropped. With the map-in-map swap none may be.
TEST_F(DatapathTest, PolicySwapsUnderTrafficAreAtomic) {
  std::vector<maps::PolicyEntries> cycle(3);
  for (uint32_t i = 0; i < 3000; i++) {  // bulk, so a non-atomic write would take long
    for (auto& p : cycle) p[{kOther + 1 + i, kServer, uint16_t(i + 1), 6, 0}] = {2, 0};
  }
  cycle[0][{SMIK_ID_META, kServer, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  cycle[0][{kClient, kServer, 8080, SMIK_PROTO_TCP, 0}] = {1, 0};
  cycle[2][{SMIK_ID_META, kServer, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  cycle[2][{kClient, kServer, 0, SMIK_PROTO_TCP, 0}] = {1, 0};
  state_.policy = cycle[0];
  apply();
  uint32_t gen0 = dp_->maps().policyGeneration();

  constexpr int kSwaps = 150;
  std::atomic<bool> done{false};
  std::string swap_err;
  std::thread swapper([&] {
    maps::KernelState cur = dp_->maps().read();
    for (int i = 1; i <= kSwaps && swap_err.empty(); i++) {
      maps::KernelState next = cur;
      next.policy = cycle[i % 3];
      if (maps::apply(dp_->maps(), next, cur, nullptr, &swap_err)) cur = next;
    }
    done = true;
  });
  int packets = 0, drops = 0;
  uint16_t sport = 1024;
  while (!done) {
    // a fresh source port: a conntrack miss, so the policy in force decides
    if (toPod({.sport = sport++, .dport = 8080}) != kPass) drops++;
    packets++;
  }
  swapper.join();
  ASSERT_TRUE(swap_err.empty()) << swap_err;
  EXPECT_EQ(dp_->maps().policyGeneration(), gen0 + kSwaps);
  EXPECT_GT(packets, 100);
  EXPECT_EQ(drops, 0) << "of " << packets << " packets";
}

TEST_F(DatapathTest, ApplyWritesOnlyTheDifference) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  uint32_t gen = dp_->maps().policyGeneration();
  maps::ApplyStats st;
  std::string err;
  ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read(), &st, &err)) << err;
  EXPECT_EQ(st.ip_writes + st.ip_deletes + st.endpoint_writes + st.endpoint_deletes, 0);
  EXPECT_FALSE(st.policy_swapped);
  EXPECT_EQ(dp_->maps().policyGeneration(), gen);
  auto back = dp_->maps().read();
  EXPECT_EQ(back.policy, state_.policy);
  EXPECT_EQ(back.ips, state_.ips);
}

}  // namespace
