// The tc programs on crafted packets (BPF_PROG_TEST_RUN): bypasses that
// must stay closed (extension headers, fragments, other protocols, reused
// addresses, revocation of established flows, conntrack floods).
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
  {
    UniqueFd old(bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "smik_ct", sizeof(smik_ct_key), 16, 4096, &o));
    ASSERT_TRUE(old);
    ASSERT_EQ(bpf_obj_pin(old.get(), (pin_ + "/" + maps::kCtMap).c_str()), 0);
  }
  dp_ = datapath::Datapath::open(options_, &err);
  ASSERT_TRUE(dp_) << err;
  EXPECT_EQ(pinnedDef(maps::kCtMap).type, uint32_t{BPF_MAP_TYPE_HASH});
  EXPECT_EQ(pinnedDef(maps::kCtMap).value_size, uint32_t(sizeof(smik_ct_value)));
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kSyn}), kPass);
}
