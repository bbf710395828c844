// The tc programs on crafted packets (BPF_PROG_TEST_RUN), with maps seeded
// through the same maps/ API the agent uses: policy verdicts, conntrack,
// atomic policy swaps, and the maps' bounds and adoption.
#include "tests/kernel/datapath_fixture.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

using namespace smik;
using namespace smik::kernel_test;

namespace {

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

// A hook whose endpoint entry is gone has lost it (the agent writes the
// entry before attaching and detaches before deleting it): fail closed, both
// ways, counted.
TEST_F(DatapathTest, AHookWithoutItsEndpointEntryFailsClosed) {
  state_.endpoints.clear();
  apply();
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dport = 22}), kDrop);
  EXPECT_EQ(fromPod({.src = "10.1.0.2", .dst = "10.1.0.3"}), kDrop);
  EXPECT_EQ(reason(SMIK_REASON_UNHOOKED), 2u);
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
  const smik::Addr client = addr(last);
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

  UniqueFd services_fd = pinned(maps::kServicesMap), backends_fd = pinned(maps::kBackendsMap);
  ASSERT_TRUE(services_fd);
  ASSERT_TRUE(backends_fd);
  const int services = services_fd.get(), backends = backends_fd.get();
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
  {
    UniqueFd old(bpf_map_create(BPF_MAP_TYPE_PERCPU_HASH, "smik_conn", sizeof(smik_conn_key), 64,
                                16, nullptr));
    ASSERT_TRUE(old);
    ASSERT_EQ(bpf_obj_pin(old.get(), (pin_ + "/" + maps::kConnMap).c_str()), 0);
  }
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
    UniqueFd fd(bpf_obj_get(e.path().c_str()));
    ASSERT_TRUE(fd) << e.path();
    check(fd.get(), e.path().filename());
  }
  __u32 zero = 0, id = 0;
  UniqueFd outer = pinned(maps::kPolicyMap);
  ASSERT_EQ(bpf_map_lookup_elem(outer.get(), &zero, &id), 0);
  UniqueFd inner(bpf_map_get_fd_by_id(id));
  check(inner.get(), "smik_pol_gen");
  EXPECT_GE(checked, 14);
}

}  // namespace
