// The tc programs on crafted packets (BPF_PROG_TEST_RUN), with maps seeded
// through the same maps/ API the agent uses. Each test loads a fresh object
// under its own pin dir: test runs change real maps.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "agent/datapath/datapath.h"
#include "agent/datapath/system.h"
#include "tests/kernel/packet.h"

using namespace smik;
using smik::pkt::buildPacket;
using smik::pkt::kAck;
using smik::pkt::kFin;
using smik::pkt::kFirst;
using smik::pkt::kLater;
using smik::pkt::kRst;
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
    options_.pin_dir = pin_;
    std::string err;
    dp_ = datapath::Datapath::open(options_, &err);
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
    if (ct_fd_ >= 0) close(ct_fd_);
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
    ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), nullptr, &err)) << err;
  }
  int toPod(const PacketSpec& p) { return pkt::runTc(dp_->toPodProgFd(), buildPacket(p), kLo); }
  int fromPod(const PacketSpec& p) { return pkt::runTc(dp_->fromPodProgFd(), buildPacket(p), kLo); }
  uint64_t reason(int r) { return dp_->maps().reasons()[r].packets; }
  uint64_t ctStat(int i) { return dp_->maps().ctStats()[i]; }
  int ctFd() {
    if (ct_fd_ < 0) ct_fd_ = bpf_obj_get((pin_ + "/" + maps::kCtMap).c_str());
    return ct_fd_;
  }
  size_t ctEntries() {
    size_t n = 0;
    smik_ct_key k{}, next{};
    const smik_ct_key* prev = nullptr;
    while (bpf_map_get_next_key(ctFd(), prev, &next) == 0) {
      n++;
      k = next;
      prev = &k;
    }
    return n;
  }
  static uint64_t nowNs() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  }
  smik_edge_value edge(uint32_t src, uint32_t dst, uint16_t port, uint8_t proto) {
    for (const auto& e : dp_->maps().edges())
      if (e.key.src_id == src && e.key.dst_id == dst && e.key.dport == port && e.key.proto == proto)
        return e.value;
    return {};
  }

  // What the next agent does: open the pins the last one left.
  void reopen() {
    dp_.reset();
    std::string err;
    dp_ = datapath::Datapath::open(options_, &err);
    ASSERT_TRUE(dp_) << err;
  }
  // From scratch: no pins, as after --uninstall.
  void reinstall() {
    dp_.reset();
    std::string err;
    ASSERT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
    reopen();
  }
  maps::MapDef pinnedDef(const std::string& name) {
    maps::MapDef def;
    int fd = bpf_obj_get((pin_ + "/" + name).c_str());
    EXPECT_GE(fd, 0) << name;
    EXPECT_TRUE(maps::mapDefOf(fd, &def)) << name;
    close(fd);
    return def;
  }

  std::string pin_;
  int ct_fd_ = -1;
  datapath::Options options_;
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
  // The pod's own flow to 10.1.0.3:80; an error quoting it passes, one
  // quoting anything else is judged like any packet (and no rule grants ICMP).
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 80}), kPass);
  auto quote = [](uint16_t sport, uint16_t dport) {
    return pkt::ipPacket({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = sport, .dport = dport});
  };
  EXPECT_EQ(toPod({.src = "10.1.0.3", .proto = 1, .icmp_type = 3, .icmp_quote = quote(6000, 80)}), kPass);
  EXPECT_EQ(toPod({.src = "10.9.9.9", .proto = 1, .icmp_type = 11, .icmp_quote = quote(6000, 80)}), kPass)
      << "a router on the way";
  EXPECT_EQ(toPod({.src = "10.1.0.3", .proto = 1, .icmp_type = 3, .icmp_quote = quote(6001, 80)}), kDrop)
      << "no such flow: an unreachable that could abort the pod's other connections";
  EXPECT_EQ(toPod({.src = "10.1.0.3", .proto = 1, .icmp_type = 3}), kDrop) << "quoting nothing";
  EXPECT_EQ(toPod({.src = "192.168.77.1", .proto = 1, .icmp_type = 3}), kPass) << "the host may";
  EXPECT_EQ(toPod({.src = "10.1.0.3", .proto = 1, .icmp_type = 8}), kDrop);
  EXPECT_EQ(reason(SMIK_REASON_UNSUPPORTED), 3u) << "no SMI route can name ICMP";
  EXPECT_EQ(reason(SMIK_REASON_POLICY), 0u);
  // IPv6: packet too big about the pod's own flow.
  EXPECT_EQ(fromPod({.src = "fd00::2", .dst = "fd00::1", .sport = 6000, .dport = 443}), kPass);
  auto quote6 = pkt::ipPacket({.src = "fd00::2", .dst = "fd00::1", .sport = 6000, .dport = 443});
  EXPECT_EQ(toPod({.src = "fd00::1", .dst = "fd00::2", .proto = 1, .icmp_type = 2, .icmp_quote = quote6}), kPass);
  auto other6 = pkt::ipPacket({.src = "fd00::2", .dst = "fd00::1", .sport = 6000, .dport = 444});
  EXPECT_EQ(toPod({.src = "fd00::1", .dst = "fd00::2", .proto = 1, .icmp_type = 1, .icmp_quote = other6}), kDrop);
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
    maps::KernelState cur = dp_->maps().read().value();
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
  ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), &st, &err)) << err;
  EXPECT_EQ(st.ip_writes + st.ip_deletes + st.endpoint_writes + st.endpoint_deletes, 0);
  EXPECT_FALSE(st.policy_swapped);
  EXPECT_EQ(dp_->maps().policyGeneration(), gen);
  auto back = dp_->maps().read().value();
  EXPECT_EQ(back.policy, state_.policy);
  EXPECT_EQ(back.ips, state_.ips);
}


// ---- maps: bounded, reported, and cleaned up on adoption -----------------------

// The connection telemetry map is LRU: once full, a new edge takes the place
// of the idlest instead of going uncounted.
TEST_F(DatapathTest, ConnectionTelemetryKeepsCountingWhenItsMapIsFull) {
  apply();  // the server denies everything: each attempt counts on its edge
  const int n = SMIK_MAX_CONN_EDGES + 64;
  std::string last;
  for (int i = 0; i < n; i++) {
    last = "10.2." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    ASSERT_EQ(toPod({.src = last, .dport = 8080}), kDrop);
  }
  auto edges = dp_->maps().connEdges();
  EXPECT_LE(edges.size(), size_t{SMIK_MAX_CONN_EDGES});
  EXPECT_GT(edges.size(), size_t{SMIK_MAX_CONN_EDGES} * 9 / 10);
  const compile::Addr client = addr(last);
  bool counted = false;
  for (const auto& e : edges)
    counted |= std::memcmp(e.key.client, client.bytes.data(), 16) == 0 && e.stats.server_policy == 1;
  EXPECT_TRUE(counted) << "the newest edge, " << last << ", was not counted";
}

// An agent killed between writing a table's new generation and switching to
// it (or before freeing the old one) leaves smik_backends entries no table
// points at; the next agent removes them when it adopts the pins.
TEST_F(DatapathTest, OrphanedServiceBackendsAreRemovedOnAdoption) {
  smik_svc_key vip{};
  std::memcpy(vip.addr, addr("10.96.0.1").bytes.data(), 16);
  vip.port = 80;
  vip.proto = SMIK_PROTO_TCP;
  vip.family = SMIK_AF_INET;
  maps::SvcTable table{77, {{1, {}}}};
  for (const char* ip : {"10.1.0.2", "10.1.0.3"}) {
    smik_backend b{};
    std::memcpy(b.addr, addr(ip).bytes.data(), 16);
    b.port = 8080;
    b.family = SMIK_AF_INET;
    table.groups[0].endpoints.push_back(b);
  }
  state_.services[vip] = table;
  apply();

  int services = bpf_obj_get((pin_ + "/" + maps::kServicesMap).c_str());
  int backends = bpf_obj_get((pin_ + "/" + maps::kBackendsMap).c_str());
  ASSERT_GE(services, 0);
  ASSERT_GE(backends, 0);
  smik_svc_value live{};
  ASSERT_EQ(bpf_map_lookup_elem(services, &vip, &live), 0);
  smik_backend junk = table.groups[0].endpoints[0];
  const uint8_t other = live.gen ^ 1;
  for (smik_backend_key k : {smik_backend_key{77, 0, other, 0}, smik_backend_key{77, 1, other, 0},
                             smik_backend_key{77, 2, live.gen, 0}, smik_backend_key{99, 0, 0, 0}})
    ASSERT_EQ(bpf_map_update_elem(backends, &k, &junk, BPF_ANY), 0);
  auto keys = [&] {
    std::vector<smik_backend_key> out;
    smik_backend_key k{}, next{};
    for (const smik_backend_key* prev = nullptr; bpf_map_get_next_key(backends, prev, &next) == 0;
         prev = &k) {
      out.push_back(next);
      k = next;
    }
    return out;
  };
  ASSERT_EQ(keys().size(), 6u);

  reopen();
  auto left = keys();
  EXPECT_EQ(left.size(), 2u);
  for (const auto& k : left) {
    EXPECT_EQ(k.svc_id, 77u);
    EXPECT_EQ(k.gen, live.gen);
    EXPECT_LT(k.index, 2);
  }
  EXPECT_TRUE(dp_->maps().read().value().services.at(vip) == table) << "the live table is untouched";
  close(services);
  close(backends);
}

TEST_F(DatapathTest, ConntrackSizeComesFromTheOptionsAndAPinnedOneKeepsIt) {
  EXPECT_EQ(pinnedDef(maps::kCtMap).max_entries, uint32_t{SMIK_MAX_CT});
  options_.ct_max = 4096;
  reinstall();
  EXPECT_EQ(pinnedDef(maps::kCtMap).max_entries, 4096u);
  // Another --ct-max later: the pinned map, and the flows in it, stay.
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  options_.ct_max = 8192;
  reopen();
  EXPECT_EQ(pinnedDef(maps::kCtMap).max_entries, 4096u);
  state_.policy.erase({kClient, kServer, 8080, SMIK_PROTO_TCP, 0});
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP, 2);  // a new generation that still allows it
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass);
  bool reported = false;
  for (const auto& u : dp_->mapUsage())
    reported |= u.def.name == maps::kCtMap && u.def.max_entries == 4096;
  EXPECT_TRUE(reported);
}

TEST_F(DatapathTest, CounterMapsPinnedByAnotherVersionAreReplaced) {
  dp_.reset();
  std::string err;
  ASSERT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
  ASSERT_TRUE(datapath::ensurePinDir(pin_, &err)) << err;
  // An older smik's smik_conn: per-CPU, another value size.
  int old = bpf_map_create(BPF_MAP_TYPE_PERCPU_HASH, "smik_conn", sizeof(smik_conn_key), 64, 16,
                           nullptr);
  ASSERT_GE(old, 0);
  ASSERT_EQ(bpf_obj_pin(old, (pin_ + "/" + maps::kConnMap).c_str()), 0);
  close(old);
  dp_ = datapath::Datapath::open(options_, &err);
  ASSERT_TRUE(dp_) << err;
  const maps::MapDef conn = pinnedDef(maps::kConnMap);
  EXPECT_EQ(conn.type, uint32_t{BPF_MAP_TYPE_LRU_HASH});
  EXPECT_EQ(conn.value_size, sizeof(smik_conn_stats));
}

// The memory each map reports is what the kernel charges for it (fdinfo's
// memlock), computed from the map's definition and entries.
TEST_F(DatapathTest, MemoryFormulaMatchesTheKernelForEveryMap) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080}), kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dport = 8080}), kDrop);  // conn, denied, edges entries
  const uint32_t cpus = libbpf_num_possible_cpus();
  std::set<std::string> reported;
  for (const auto& u : dp_->mapUsage()) reported.insert(u.def.name);
  int checked = 0;
  auto check = [&](int fd, const std::string& name) {
    maps::MapDef def;
    ASSERT_TRUE(maps::mapDefOf(fd, &def)) << name;
    const uint64_t entries = maps::countEntries(fd, def);
    const int64_t ours = maps::mapBytes(def, cpus, maps::isHash(def) ? entries : def.max_entries);
    const int64_t kernel = maps::kernelMemlock(fd);
    EXPECT_GT(kernel, 0) << name;
    EXPECT_LE(std::abs(ours - kernel), 4096) << name << ": ours " << ours << ", kernel's " << kernel;
    EXPECT_TRUE(reported.count(name)) << name << " missing from mapUsage()";
    checked++;
  };
  for (const auto& e : std::filesystem::directory_iterator(pin_)) {
    if (e.is_directory()) continue;  // links/
    int fd = bpf_obj_get(e.path().c_str());
    ASSERT_GE(fd, 0) << e.path();
    check(fd, e.path().filename());
    close(fd);
  }
  __u32 zero = 0, id = 0;
  int outer = bpf_obj_get((pin_ + "/" + maps::kPolicyMap).c_str());
  ASSERT_EQ(bpf_map_lookup_elem(outer, &zero, &id), 0);
  int inner = bpf_map_get_fd_by_id(id);
  check(inner, "smik_pol_gen");
  close(inner);
  close(outer);
  EXPECT_GE(checked, 14);
}

}  // namespace

// ---- bypasses that must stay closed ------------------------------------------

namespace bypass {

constexpr uint8_t kHop = 0, kRouting = 43, kDest = 60, kAuth = 51;
const char* kPod6 = "fd00::2";
const char* kPeer6 = "fd00::1";  // kClient

}  // namespace bypass

// A packet behind IPv6 extension headers is judged by its real protocol and
// ports, in both directions: the pod sending one must not open a port-less
// flow its peer can then use for anything.
TEST_F(DatapathTest, Ipv6ExtensionHeadersAreWalked) {
  using namespace bypass;
  allow(kClient, kServer, 53, SMIK_PROTO_UDP);
  apply();
  for (std::vector<uint8_t> ext : {std::vector<uint8_t>{kHop}, {kDest}, {kRouting}, {kAuth},
                                    {kHop, kDest, kRouting, kDest}}) {
    SCOPED_TRACE(testing::PrintToString(ext));
    EXPECT_EQ(toPod({.src = kPeer6, .dst = kPod6, .dport = 53, .proto = 17, .v6_ext = ext}), kPass)
        << "the granted UDP/53 behind extension headers";
    EXPECT_EQ(toPod({.src = kPeer6, .dst = kPod6, .dport = 22, .proto = 17, .v6_ext = ext}), kDrop);
    EXPECT_EQ(toPod({.src = kPeer6, .dst = kPod6, .dport = 22, .proto = 6, .v6_ext = ext}), kDrop);
    // The pod's own datagram behind the same headers opens only its own flow.
    EXPECT_EQ(fromPod({.src = kPod6, .dst = kPeer6, .sport = 7000, .dport = 9000, .proto = 17,
                       .v6_ext = ext}),
              kPass);
    EXPECT_EQ(toPod({.src = kPeer6, .dst = kPod6, .sport = 9000, .dport = 7000, .proto = 17,
                     .v6_ext = ext}),
              kPass)
        << "the reply to the pod's own datagram";
    EXPECT_EQ(toPod({.src = kPeer6, .dst = kPod6, .sport = 1, .dport = 22, .proto = 6,
                     .tcp_flags = kAck, .v6_ext = ext}),
              kDrop)
        << "anything else behind the same headers";
  }
  // A chain longer than the walk is malformed, not passed.
  std::vector<uint8_t> nine(9, kDest);
  EXPECT_EQ(toPod({.src = kPeer6, .dst = kPod6, .dport = 53, .proto = 17, .v6_ext = nine}), kDrop);
  EXPECT_GE(reason(SMIK_REASON_MALFORMED), 1u);
}

TEST_F(DatapathTest, PodsOtherProtocolsOpenNoFlow) {
  apply();
  // GRE (47) from the pod: no flow to key, so nothing comes back through it.
  auto out = buildPacket({.src = "10.1.0.2", .dst = "10.1.0.3", .proto = 17});
  out[14 + 9] = 47;
  EXPECT_EQ(pkt::runTc(dp_->fromPodProgFd(), out, kLo), kPass);
  auto in = buildPacket({.src = "10.1.0.3", .dst = "10.1.0.2", .proto = 17});
  in[14 + 9] = 47;
  EXPECT_EQ(pkt::runTc(dp_->toPodProgFd(), in, kLo), kDrop);
  // Echo: the reply of the pod's own ping passes, by its id only.
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .proto = 1, .icmp_type = 8, .icmp_id = 77}), kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .proto = 1, .icmp_type = 0, .icmp_id = 77}), kPass);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .proto = 1, .icmp_type = 0, .icmp_id = 78}), kDrop);
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dst = "10.1.0.2", .proto = 1, .icmp_type = 8, .icmp_id = 77}), kDrop)
      << "an echo request is not a reply";
}

// Later fragments follow their first fragment's verdict; one without a known
// first fragment is dropped.
TEST_F(DatapathTest, FragmentsFollowTheirFirstFragment) {
  using namespace bypass;
  allow(kClient, kServer, 53, SMIK_PROTO_UDP);
  apply();
  for (std::string src : {"10.1.0.1", kPeer6}) {
    SCOPED_TRACE(src);
    std::string dst = src == kPeer6 ? kPod6 : "10.1.0.2";
    EXPECT_EQ(toPod({.src = src, .dst = dst, .dport = 53, .proto = 17, .frag = kFirst, .frag_id = 7}), kPass);
    EXPECT_EQ(toPod({.src = src, .dst = dst, .proto = 17, .frag = kLater, .frag_id = 7}), kPass)
        << "a later fragment of an allowed datagram (large DNS answers)";
    EXPECT_EQ(toPod({.src = src, .dst = dst, .proto = 17, .frag = kLater, .frag_id = 7, .frag_offset = 9}), kPass);
    EXPECT_EQ(toPod({.src = src, .dst = dst, .dport = 22, .proto = 17, .frag = kFirst, .frag_id = 8}), kDrop);
    EXPECT_EQ(toPod({.src = src, .dst = dst, .proto = 17, .frag = kLater, .frag_id = 8}), kDrop)
        << "a later fragment of a denied datagram";
    EXPECT_EQ(toPod({.src = src, .dst = dst, .proto = 17, .frag = kLater, .frag_id = 9}), kDrop)
        << "no first fragment seen";
    EXPECT_EQ(toPod({.src = src, .dst = dst, .proto = 6, .frag = kLater, .frag_id = 7}), kDrop)
        << "same id, another protocol";
  }
  EXPECT_EQ(reason(SMIK_REASON_FRAGMENT), 4u);
  // RFC 1858: a TCP fragment at offset 8 could rewrite the judged header.
  EXPECT_EQ(toPod({.dport = 53, .proto = 6, .frag = kLater, .frag_id = 7, .frag_offset = 1}), kDrop);
  // A first fragment too short for its L4 header is malformed.
  auto tiny = buildPacket({.dport = 53, .proto = 6, .frag = kFirst, .frag_id = 11});
  tiny.resize(14 + 20 + 8);
  EXPECT_EQ(pkt::runTc(dp_->toPodProgFd(), tiny, kLo), kDrop);
}

// A revoked UDP peer stays out: the server answering it neither reopens the
// flow nor reaches it.
TEST_F(DatapathTest, UdpRevocationCutsBothDirections) {
  allow(kClient, kServer, 53, SMIK_PROTO_UDP);
  apply();
  PacketSpec query{.sport = 5353, .dport = 53, .proto = 17};
  PacketSpec answer{.src = "10.1.0.2", .dst = "10.1.0.1", .sport = 53, .dport = 5353, .proto = 17};
  EXPECT_EQ(toPod(query), kPass);
  EXPECT_EQ(fromPod(answer), kPass);
  state_.policy.erase({kClient, kServer, 53, SMIK_PROTO_UDP, 0});
  apply();
  EXPECT_EQ(toPod(query), kDrop);
  EXPECT_EQ(fromPod(answer), kDrop) << "the server's datagrams to the revoked client are cut";
  EXPECT_EQ(toPod(query), kDrop) << "and did not reopen the flow";
  EXPECT_EQ(fromPod(answer), kDrop);
  // Granted again: the flow lives again.
  allow(kClient, kServer, 53, SMIK_PROTO_UDP);
  apply();
  EXPECT_EQ(fromPod(answer), kPass);
  EXPECT_EQ(toPod(query), kPass);
  EXPECT_GE(ctStat(SMIK_CT_REVOKED), 1u);
}

TEST_F(DatapathTest, TcpRevocationCutsBothDirections) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  PacketSpec data_in{.dport = 8080, .tcp_flags = kAck};
  PacketSpec data_out{.src = "10.1.0.2", .dst = "10.1.0.1", .sport = 8080, .dport = 40000, .tcp_flags = kAck};
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  EXPECT_EQ(fromPod(data_out), kPass);
  state_.policy.erase({kClient, kServer, 8080, SMIK_PROTO_TCP, 0});
  apply();
  EXPECT_EQ(fromPod(data_out), kDrop) << "the server's side of a revoked connection";
  EXPECT_EQ(toPod(data_in), kDrop);
}

// The pod's own flow to a destination on this node that stops admitting it
// is cut at the pod's side too.
TEST_F(DatapathTest, PodsOwnFlowRejudgedWhenItsDestinationRevokes) {
  // A second local pod (kOther at 10.1.0.3) with its own enforcement; the
  // server pod (kServer) connects to it.
  enforce(kOther);
  allow(kServer, kOther, 9000, SMIK_PROTO_UDP);
  apply();
  PacketSpec out{.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 9000, .proto = 17};
  PacketSpec back{.src = "10.1.0.3", .dst = "10.1.0.2", .sport = 9000, .dport = 6000, .proto = 17};
  EXPECT_EQ(fromPod(out), kPass);
  EXPECT_EQ(toPod(back), kPass);
  state_.policy.erase({kServer, kOther, 9000, SMIK_PROTO_UDP, 0});
  apply();
  EXPECT_EQ(toPod(back), kDrop);
  EXPECT_EQ(fromPod(out), kDrop);
}

// A pod IP handed to a pod of another ServiceAccount does not inherit the
// flows of the old one, in either direction.
TEST_F(DatapathTest, ReusedAddressDoesNotInheritFlows) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 53, .proto = 17}), kPass);
  uint32_t gen = dp_->maps().policyGeneration();
  // 10.1.0.1 now belongs to kOther, 10.1.0.3 to kClient; the policy is unchanged.
  state_.ips[addr("10.1.0.1")] = {kOther, 0};
  state_.ips[addr("10.1.0.3")] = {kClient, 0};
  maps::ApplyStats st;
  std::string err;
  state_.policy_installed = true;
  ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), &st, &err)) << err;
  EXPECT_FALSE(st.policy_swapped);
  EXPECT_TRUE(st.generation_bumped);
  EXPECT_GT(dp_->maps().policyGeneration(), gen);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kDrop) << "kOther may not reach 8080";
  EXPECT_EQ(toPod({.src = "10.1.0.3", .sport = 53, .dport = 6000, .proto = 17}), kDrop)
      << "the reply path of a flow to the address's previous owner";
  EXPECT_GE(ctStat(SMIK_CT_IDENTITY_CHANGED), 2u);
  // An address that goes away also moves the generation.
  state_.ips.erase(addr("10.1.0.3"));
  ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), &st, &err)) << err;
  EXPECT_TRUE(st.generation_bumped);
}

// TCP entries follow the connection to its close; a closed tuple opened again
// is judged again.
TEST_F(DatapathTest, ClosedTcpIsJudgedAgain) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kFin | kAck}), kPass);
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.1", .sport = 8080, .dport = 40000,
                     .tcp_flags = kFin | kAck}),
            kPass);
  EXPECT_EQ(ctStat(SMIK_CT_CLOSED), 1u);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass) << "the last ACK";
  // Closed entries go after their short lifetime; live ones stay.
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 80}), kPass);
  std::string err;
  EXPECT_EQ(dp_->maps().sweepConntrack(nowNs() + SMIK_CT_TCP_CLOSED_LIFETIME + SMIK_SEC, &err), 1) << err;
  EXPECT_EQ(ctEntries(), 1u);
  // RST closes too.
  EXPECT_EQ(toPod({.src = "10.1.0.3", .sport = 80, .dport = 6000, .tcp_flags = kRst}), kPass);
  EXPECT_EQ(dp_->maps().sweepConntrack(nowNs() + SMIK_CT_TCP_CLOSED_LIFETIME + SMIK_SEC, &err), 1) << err;
  EXPECT_EQ(ctEntries(), 0u);
}

TEST_F(DatapathTest, UdpFlowsAge) {
  apply();
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 53, .proto = 17}), kPass);
  std::string err;
  EXPECT_EQ(dp_->maps().sweepConntrack(nowNs() + SMIK_SEC, &err), 0);
  EXPECT_EQ(ctEntries(), 1u);
  EXPECT_EQ(dp_->maps().sweepConntrack(nowNs() + SMIK_CT_UDP_LIFETIME + SMIK_SEC, &err), 1) << err;
  EXPECT_EQ(ctEntries(), 0u);
}

// The pod's own TCP connection survives losing its entry: its next packet
// rebuilds it. A server of a revoked flow cannot do the same.
TEST_F(DatapathTest, PodsOwnTcpFlowIsRebuilt) {
  apply();
  PacketSpec out{.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 80, .tcp_flags = kAck};
  PacketSpec in{.src = "10.1.0.3", .dst = "10.1.0.2", .sport = 80, .dport = 6000, .tcp_flags = kAck};
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 80}), kPass);
  EXPECT_EQ(toPod(in), kPass);
  // Lost (the table was full when it started, or it idled out).
  smik_ct_key k{};
  std::memcpy(k.saddr, addr("10.1.0.3").bytes.data(), 16);
  std::memcpy(k.daddr, addr("10.1.0.2").bytes.data(), 16);
  k.sport = htons(80);
  k.dport = htons(6000);
  k.proto = 6;
  k.family = SMIK_AF_INET;
  ASSERT_EQ(bpf_map_delete_elem(ctFd(), &k), 0);
  EXPECT_EQ(toPod(in), kDrop);
  EXPECT_EQ(fromPod(out), kPass);
  EXPECT_EQ(toPod(in), kPass) << "rebuilt by the pod's own packet";
  EXPECT_EQ(ctStat(SMIK_CT_REBUILT), 1u);
}

// One pod opening flows by the hundred thousand must not break another's
// established connection: the table is not an LRU, it fills and then new
// flows are judged packet by packet.
TEST_F(DatapathTest, FloodDoesNotEvictEstablishedFlows) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);  // an inbound connection
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 6000, .dport = 80}), kPass);
  // The pod sprays UDP to fresh ports, well past the table's size.
  auto spray = buildPacket({.src = "10.1.0.2", .dst = "10.1.0.3", .sport = 1, .dport = 1, .proto = 17});
  size_t l4 = 14 + 20;
  uint32_t n = SMIK_MAX_CT + SMIK_MAX_CT / 4;
  for (uint32_t i = 0; i < n; i++) {
    spray[l4] = i >> 8, spray[l4 + 1] = i & 0xff;  // source port
    spray[l4 + 2] = 0, spray[l4 + 3] = (i >> 16) + 1;  // destination port
    ASSERT_EQ(pkt::runTc(dp_->fromPodProgFd(), spray, kLo), kPass);
  }
  EXPECT_GT(ctStat(SMIK_CT_INSERT_FAILED), 0u);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass) << "established inbound connection";
  EXPECT_EQ(toPod({.src = "10.1.0.3", .sport = 80, .dport = 6000, .tcp_flags = kAck}), kPass)
      << "replies of the pod's established outbound connection";
  EXPECT_EQ(toPod({.sport = 40001, .dport = 8080, .tcp_flags = kSyn}), kPass)
      << "a new allowed flow still passes, judged packet by packet";
}

// An older smik pinned its conntrack as a per-CPU-list LRU of 16-byte values:
// the next agent replaces it (its flows are re-created as they continue)
// instead of failing to load.
TEST_F(DatapathTest, ConntrackOfAnOlderLayoutIsReplaced) {
  dp_.reset();
  std::string err;
  ASSERT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
  ASSERT_TRUE(datapath::ensurePinDir(pin_, &err)) << err;
  LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_NO_COMMON_LRU);
  int old = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "smik_ct", sizeof(smik_ct_key), 16, 4096, &o);
  ASSERT_GE(old, 0);
  ASSERT_EQ(bpf_obj_pin(old, (pin_ + "/" + maps::kCtMap).c_str()), 0);
  close(old);
  dp_ = datapath::Datapath::open(options_, &err);
  ASSERT_TRUE(dp_) << err;
  EXPECT_EQ(pinnedDef(maps::kCtMap).type, uint32_t{BPF_MAP_TYPE_HASH});
  EXPECT_EQ(pinnedDef(maps::kCtMap).value_size, uint32_t(sizeof(smik_ct_value)));
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
}
