// --deny-response reject at the program level (BPF_PROG_TEST_RUN): the
// answer smik_to_pod builds in place of a denied flow's first packet (a
// RST|ACK for a SYN, ICMP administratively prohibited for a datagram:
// addresses and ports turned round, seq/ack right, checksums right, the
// datagram quoted), what is never answered, and the per-source rate limit.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include <cstring>

#include "tests/kernel/datapath_fixture.h"

using namespace smik;
using namespace smik::kernel_test;

namespace {

constexpr int kRedirect = 7;  // TC_ACT_REDIRECT: the answer goes back out

// The Internet checksum of b[off, off + n), plus `seed` (a partial sum).
uint16_t checksum(const std::vector<uint8_t>& b, size_t off, size_t n, uint32_t seed = 0) {
  uint32_t sum = seed;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (b[off + i] << 8) | b[off + i + 1];
  if (n & 1) sum += b[off + n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

uint32_t pseudoSum6(const std::vector<uint8_t>& b, size_t ip_off, uint32_t len) {
  uint32_t sum = 0;
  for (size_t i = 8; i < 40; i += 2) sum += (b[ip_off + i] << 8) | b[ip_off + i + 1];
  return sum + (len >> 16) + (len & 0xffff) + 58;
}

uint16_t get16(const std::vector<uint8_t>& b, size_t off) { return (b[off] << 8) | b[off + 1]; }

std::vector<uint8_t> bytes(const std::string& ip) {
  Addr a = addr(ip);
  size_t n = a.family == SMIK_AF_INET ? 4 : 16;
  return {a.bytes.begin(), a.bytes.begin() + n};
}

class DenyResponseTest : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    configure(SMIK_DENY_REJECT);
    apply();  // nothing may reach the server pod
  }
  void configure(uint8_t mode, uint32_t rate = 0, uint32_t burst = 0) {
    smik_tc_config cfg{};
    cfg.deny_response = mode;
    cfg.answers_per_sec = rate;
    cfg.answer_burst = burst;
    const UniqueFd fd = pinned(maps::kTcConfigMap);
    ASSERT_TRUE(fd.valid());
    __u32 zero = 0;
    ASSERT_EQ(bpf_map_update_elem(fd.get(), &zero, &cfg, BPF_ANY), 0);
  }
  uint64_t answers(int i) { return dp_->maps().answerStats()[i]; }

  // Checks `out` is the ICMP answer to `spec`, quoting the denied packet.
  void expectAnswer(const PacketSpec& spec, const std::vector<uint8_t>& out) {
    std::vector<uint8_t> in = buildPacket(spec);
    bool v6 = spec.src.find(':') != std::string::npos;
    size_t ip_len = v6 ? 40 : 20, icmp = 14 + ip_len, quote = icmp + 8;
    ASSERT_GE(out.size(), quote + 28) << "no room for a quote";
    // Ethernet turned round: the answer enters the host as the pod's packet.
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, in.begin() + 6));
    EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, in.begin()));
    EXPECT_EQ(get16(out, 12), v6 ? 0x86DD : 0x0800);
    // The quote: the denied IP packet from its start, at most 128 bytes.
    size_t quoted = std::min<size_t>(in.size() - 14, 128);
    EXPECT_EQ(out.size(), quote + quoted);
    EXPECT_TRUE(std::equal(out.begin() + quote, out.end(), in.begin() + 14))
        << "the quote is the denied packet";
    const uint32_t icmp_len = 8 + quoted;
    if (!v6) {
      EXPECT_EQ(out[14], 0x45);
      EXPECT_EQ(get16(out, 16), 20 + icmp_len) << "total length";
      EXPECT_EQ(out[23], 1) << "ICMP";
      EXPECT_GT(out[22], 0) << "TTL";
      EXPECT_EQ(checksum(out, 14, 20), 0) << "IPv4 header checksum";
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 26, out.begin() + 30), bytes(spec.dst));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 30, out.begin() + 34), bytes(spec.src));
      EXPECT_EQ(out[icmp], 3) << "destination unreachable";
      EXPECT_EQ(out[icmp + 1], 13) << "communication administratively prohibited";
      EXPECT_EQ(checksum(out, icmp, icmp_len), 0) << "ICMP checksum";
    } else {
      EXPECT_EQ(out[14] >> 4, 6);
      EXPECT_EQ(get16(out, 18), icmp_len) << "payload length";
      EXPECT_EQ(out[20], 58) << "ICMPv6";
      EXPECT_GT(out[21], 0) << "hop limit";
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 22, out.begin() + 38), bytes(spec.dst));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 38, out.begin() + 54), bytes(spec.src));
      EXPECT_EQ(out[icmp], 1) << "destination unreachable";
      EXPECT_EQ(out[icmp + 1], 1) << "administratively prohibited";
      EXPECT_EQ(checksum(out, icmp, icmp_len, pseudoSum6(out, 14, icmp_len)), 0)
          << "ICMPv6 checksum (with the pseudo-header)";
    }
  }

  // Checks `out` is the RST|ACK refusing the SYN `spec`.
  void expectRst(const PacketSpec& spec, const std::vector<uint8_t>& out) {
    std::vector<uint8_t> in = buildPacket(spec);
    bool v6 = spec.src.find(':') != std::string::npos;
    size_t ip_len = v6 ? 40 : 20, th = 14 + ip_len;
    ASSERT_EQ(out.size(), th + 20) << "IP and TCP headers, no options, no payload";
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, in.begin() + 6));
    EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, in.begin()));
    EXPECT_EQ(get16(out, th), spec.dport) << "ports turned round";
    EXPECT_EQ(get16(out, th + 2), spec.sport);
    uint32_t in_seq = (in[th + 4] << 24) | (in[th + 5] << 16) | (in[th + 6] << 8) | in[th + 7];
    uint32_t seq = (out[th + 4] << 24) | (out[th + 5] << 16) | (out[th + 6] << 8) | out[th + 7];
    uint32_t ack = (out[th + 8] << 24) | (out[th + 9] << 16) | (out[th + 10] << 8) | out[th + 11];
    size_t payload = in.size() - th - 20;  // buildPacket's filler after the SYN's header
    EXPECT_EQ(seq, 0u) << "the SYN carried no ACK: seq 0";
    EXPECT_EQ(ack, in_seq + 1 + payload) << "its seq + the SYN + its data";
    EXPECT_EQ(out[th + 12] >> 4, 5);
    EXPECT_EQ(out[th + 13], kRst | kAck);
    uint32_t pseudo = 6 + 20;
    if (!v6) {
      EXPECT_EQ(out[14], 0x45);
      EXPECT_EQ(get16(out, 16), 40) << "total length";
      EXPECT_EQ(out[23], 6);
      EXPECT_EQ(checksum(out, 14, 20), 0) << "IPv4 header checksum";
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 26, out.begin() + 30), bytes(spec.dst));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 30, out.begin() + 34), bytes(spec.src));
      for (size_t i = 26; i < 34; i += 2) pseudo += get16(out, i);
    } else {
      EXPECT_EQ(get16(out, 18), 20) << "payload length";
      EXPECT_EQ(out[20], 6);
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 22, out.begin() + 38), bytes(spec.dst));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 38, out.begin() + 54), bytes(spec.src));
      for (size_t i = 22; i < 54; i += 2) pseudo += get16(out, i);
    }
    EXPECT_EQ(checksum(out, th, 20, pseudo), 0) << "TCP checksum (with the pseudo-header)";
  }

  void expectAnswered(const PacketSpec& spec) {
    std::vector<uint8_t> out;
    ASSERT_EQ(pkt::runTcOut(dp_->toPodProgFd(), buildPacket(spec), kLo, &out), kRedirect);
    if (spec.proto == 6)
      expectRst(spec, out);
    else
      expectAnswer(spec, out);
  }
};

TEST_F(DenyResponseTest, DeniedTcpSynIsAnsweredWithRstV4) {
  expectAnswered({.dport = 8080});
  EXPECT_EQ(answers(SMIK_ANSWER_SENT), 1u);
  // Still a denial by policy, in every count.
  EXPECT_EQ(reason(SMIK_REASON_POLICY), 1u);
  EXPECT_EQ(edge(kClient, kServer, 8080, 6).packets_denied, 1u);
}

TEST_F(DenyResponseTest, DeniedTcpSynIsAnsweredWithRstV6) {
  expectAnswered({.src = "fd00::1", .dst = "fd00::2", .dport = 8080});
  EXPECT_EQ(reason(SMIK_REASON_POLICY), 1u);
}

TEST_F(DenyResponseTest, DeniedUdpDatagramIsAnsweredWithIcmpProhibited) {
  expectAnswered({.dport = 53, .proto = 17});
  expectAnswered({.src = "fd00::1", .dst = "fd00::2", .sport = 40001, .dport = 53, .proto = 17});
  EXPECT_EQ(answers(SMIK_ANSWER_SENT), 2u);
}

// An odd length and one past the quote's limit: the quote is trimmed to 128
// bytes and the checksums still hold.
TEST_F(DenyResponseTest, LongDatagramIsQuotedInPart) {
  for (size_t extra : {size_t{1}, size_t{600}}) {
    SCOPED_TRACE(extra);
    PacketSpec spec{.sport = uint16_t(41000 + extra), .dport = 53, .proto = 17};
    std::vector<uint8_t> in = buildPacket(spec);
    in.insert(in.end(), extra, 0x5a);
    size_t l3 = in.size() - 14;
    in[16] = l3 >> 8;  // total length, its checksum again
    in[17] = l3 & 0xff;
    in[24] = in[25] = 0;
    uint16_t sum = checksum(in, 14, 20);
    in[24] = sum >> 8;
    in[25] = sum & 0xff;
    std::vector<uint8_t> out;
    ASSERT_EQ(pkt::runTcOut(dp_->toPodProgFd(), in, kLo, &out), kRedirect);
    size_t quoted = std::min<size_t>(l3, 128);
    ASSERT_EQ(out.size(), 14 + 28 + quoted);
    EXPECT_TRUE(std::equal(out.begin() + 42, out.end(), in.begin() + 14));
    EXPECT_EQ(checksum(out, 14, 20), 0);
    EXPECT_EQ(checksum(out, 34, 8 + quoted), 0);
  }
}

// Only a flow's first packet is answered: never a RST, an ACK, a SYN|ACK, a
// FIN, an ICMP error or echo, a fragment, a multicast or broadcast address.
TEST_F(DenyResponseTest, HostilePacketsAreNeverAnswered) {
  const PacketSpec never[] = {
      {.tcp_flags = kRst},
      {.tcp_flags = kRst | kAck},
      {.tcp_flags = kAck},
      {.tcp_flags = kSyn | kAck},
      {.tcp_flags = kFin | kAck},
      {.tcp_flags = kSyn | kFin},
      {.proto = 17, .frag = kFirst, .frag_id = 7},
      {.proto = 17, .frag = kLater, .frag_id = 8},
      {.proto = 6, .frag = kLater, .frag_id = 9},
      {.src = "fd00::1", .dst = "fd00::2", .proto = 17, .frag = kFirst, .frag_id = 10},
      {.src = "fd00::1", .dst = "fd00::2", .proto = 17, .frag = kLater, .frag_id = 11},
      {.dst = "224.0.0.251", .dport = 5353, .proto = 17},
      {.dst = "255.255.255.255", .dport = 67, .proto = 17},
      {.src = "0.0.0.0", .dport = 67, .proto = 17},
      {.src = "fd00::1", .dst = "ff02::fb", .dport = 5353, .proto = 17},
      {.proto = 1, .icmp_type = 3, .icmp_quote = pkt::ipPacket({.src = "10.1.0.2", .dst = "10.1.0.1"})},
      {.proto = 1, .icmp_type = 8},
  };
  for (const PacketSpec& p : never) {
    SCOPED_TRACE(testing::Message() << p.src << " -> " << p.dst << " proto " << int(p.proto)
                                    << " flags " << int(p.tcp_flags) << " frag " << int(p.frag));
    std::vector<uint8_t> out;
    EXPECT_EQ(pkt::runTcOut(dp_->toPodProgFd(), buildPacket(p), kLo, &out), kDrop);
  }
  EXPECT_EQ(answers(SMIK_ANSWER_SENT), 0u);
  EXPECT_GE(answers(SMIK_ANSWER_UNANSWERABLE), 8u);
}

// A group MAC is never answered either, whatever the IP addresses say.
TEST_F(DenyResponseTest, EthernetGroupAddressIsNeverAnswered) {
  std::vector<uint8_t> in = buildPacket({});
  in[0] = 0x01;  // the group bit
  EXPECT_EQ(pkt::runTc(dp_->toPodProgFd(), in, kLo), kDrop);
  EXPECT_EQ(answers(SMIK_ANSWER_SENT), 0u);
}

// A flood from one source: at most the burst back to back, then nothing until
// the rate gives another token; another source has its own bucket.
TEST_F(DenyResponseTest, AnswersPerSourceAreRateLimited) {
  configure(SMIK_DENY_REJECT, /*rate=*/1, /*burst=*/3);
  int answered = 0;
  for (int i = 0; i < 50; i++)
    answered += toPod({.sport = uint16_t(30000 + i), .dport = 8080}) == kRedirect;
  EXPECT_EQ(answered, 3) << "a flood of SYNs from one source: the burst, no more";
  EXPECT_EQ(answers(SMIK_ANSWER_RATE_LIMITED), 47u);
  EXPECT_EQ(reason(SMIK_REASON_POLICY), 50u) << "each counted as denied";
  EXPECT_EQ(toPod({.src = "10.1.0.3", .dport = 8080}), kRedirect) << "another source";
  EXPECT_EQ(toPod({.src = "fd00::1", .dst = "fd00::2", .dport = 8080}), kRedirect)
      << "the client's IPv6 address is another source";
}

TEST_F(DenyResponseTest, DropAnswersNothing) {
  configure(SMIK_DENY_DROP);
  EXPECT_EQ(toPod({.dport = 8080}), kDrop);
  EXPECT_EQ(toPod({.dport = 53, .proto = 17}), kDrop);
  EXPECT_EQ(answers(SMIK_ANSWER_SENT) + answers(SMIK_ANSWER_UNANSWERABLE), 0u);
}

// Allowed and established traffic is untouched; a revoked flow is no new flow.
TEST_F(DenyResponseTest, AllowedAndRevokedFlowsAreNotAnswered) {
  allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
  apply();
  EXPECT_EQ(toPod({.dport = 8080}), kPass);
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kPass);
  state_.policy.erase({kClient, kServer, 8080, SMIK_PROTO_TCP, 0});
  apply();
  EXPECT_EQ(toPod({.dport = 8080, .tcp_flags = kAck}), kDrop) << "revoked: dropped, unanswered";
  EXPECT_EQ(answers(SMIK_ANSWER_SENT), 0u);
}

// The agent's setting reaches the pinned map, and a reopened data path
// (a restarted agent) writes its own.
TEST_F(DenyResponseTest, OptionsReachTheConfigMap) {
  auto mode = [&] {
    smik_tc_config cfg{};
    const UniqueFd fd = pinned(maps::kTcConfigMap);
    __u32 zero = 0;
    EXPECT_EQ(bpf_map_lookup_elem(fd.get(), &zero, &cfg), 0);
    return cfg.deny_response;
  };
  options_.deny_response = SMIK_DENY_DROP;
  reopen();
  EXPECT_EQ(mode(), SMIK_DENY_DROP);
  EXPECT_EQ(toPod({.dport = 8080}), kDrop);
  options_.deny_response = SMIK_DENY_REJECT;
  reopen();
  EXPECT_EQ(mode(), SMIK_DENY_REJECT);
  EXPECT_EQ(toPod({.sport = 40100, .dport = 8080}), kRedirect);
}

// ---- Resets of flows the HTTP judge cannot see ------------------------------
//
// The HTTP judge's guard marks a flow (SMIK_CT_F_RESET) whose governed server
// socket it has no state for; smik_to_pod turns the flow's next segment with
// payload into a RST into the pod (seq = the segment's own, which the server
// expects: the guard dropped the payload) and sends a clone back to the
// client (seq = the segment's ack; not observable under BPF_PROG_TEST_RUN,
// the e2e test sees the client reset). Segments that cannot be turned so
// pass unchanged and keep the mark; the reset happens once.
class FlowResetTest : public DatapathTest {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    allow(kClient, kServer, 8080, SMIK_PROTO_TCP);
    apply();
  }
  // The conntrack key of s's TCP flow into the pod.
  static smik_ct_key keyOf(const PacketSpec& s) {
    smik_ct_key k{};
    const Addr src = addr(s.src), dst = addr(s.dst);
    std::memcpy(k.saddr, src.bytes.data(), 16);
    std::memcpy(k.daddr, dst.bytes.data(), 16);
    k.sport = htons(s.sport);
    k.dport = htons(s.dport);
    k.proto = 6;
    k.family = src.family;
    return k;
  }
  // What the guard does: marks the flow's entry into the pod.
  void mark(const PacketSpec& s) {
    const smik_ct_key k = keyOf(s);
    smik_ct_value v{};
    ASSERT_EQ(bpf_map_lookup_elem(ctFd(), &k, &v), 0) << "the flow has no entry";
    v.flags |= SMIK_CT_F_RESET;
    ASSERT_EQ(bpf_map_update_elem(ctFd(), &k, &v, BPF_EXIST), 0);
  }
  uint8_t entryFlags(const PacketSpec& s) {
    const smik_ct_key k = keyOf(s);
    smik_ct_value v{};
    EXPECT_EQ(bpf_map_lookup_elem(ctFd(), &k, &v), 0);
    return v.flags;
  }
  // s's segment with its sequence and acknowledgement numbers, its payload
  // (buildPacket's 16 filler bytes) cut to `payload` bytes.
  static std::vector<uint8_t> segment(const PacketSpec& s, uint32_t seq, uint32_t ack,
                                      size_t payload) {
    std::vector<uint8_t> b = buildPacket(s);
    const bool v6 = s.src.find(':') != std::string::npos;
    const size_t th = 14 + (v6 ? 40 : 20);
    b.resize(th + 20 + payload);
    if (v6) {
      const size_t len = 20 + payload;
      b[18] = len >> 8, b[19] = len & 0xff;
    } else {
      const size_t len = 20 + 20 + payload;
      b[16] = len >> 8, b[17] = len & 0xff;
      b[24] = b[25] = 0;
      const uint16_t sum = checksum(b, 14, 20);
      b[24] = sum >> 8, b[25] = sum & 0xff;
    }
    for (int i = 0; i < 4; i++) {
      b[th + 4 + i] = seq >> (24 - 8 * i);
      b[th + 8 + i] = ack >> (24 - 8 * i);
    }
    return b;
  }
  int run(const std::vector<uint8_t>& in, std::vector<uint8_t>* out) {
    return pkt::runTcOut(dp_->toPodProgFd(), in, kLo, out);
  }
};

TEST_F(FlowResetTest, AMarkedFlowsNextSegmentWithPayloadBecomesARstIntoThePod) {
  uint64_t resets = 0;
  for (const auto& [src, dst] : {std::pair{"10.1.0.1", "10.1.0.2"}, std::pair{"fd00::1", "fd00::2"}}) {
    SCOPED_TRACE(src);
    const PacketSpec syn{.src = src, .dst = dst, .tcp_flags = kSyn};
    ASSERT_EQ(toPod(syn), kPass);
    mark(syn);
    const PacketSpec seg{.src = src, .dst = dst, .tcp_flags = kAck};
    std::vector<uint8_t> out;
    // Not a segment to turn: no payload (a pure ACK's seq may lie past the
    // dropped bytes, where a RST would only draw a challenge ACK), a SYN.
    // Unchanged, and the mark stays.
    for (const auto& in : {segment(seg, 1000, 5000, 0),
                           segment({.src = src, .dst = dst, .tcp_flags = kSyn}, 999, 0, 16)}) {
      EXPECT_EQ(run(in, &out), kPass);
      EXPECT_EQ(out, in);
    }
    EXPECT_TRUE(entryFlags(syn) & SMIK_CT_F_RESET);
    EXPECT_EQ(ctStat(SMIK_CT_RESET), resets);

    const std::vector<uint8_t> in = segment(seg, 1000, 5000, 16);
    ASSERT_EQ(run(in, &out), kPass) << "the RST goes on into the pod";
    const bool v6 = std::string(src).find(':') != std::string::npos;
    const size_t th = 14 + (v6 ? 40 : 20);
    ASSERT_EQ(out.size(), th + 20) << "IP and TCP headers, no options, no payload";
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + 14, in.begin())) << "Ethernet unchanged";
    EXPECT_EQ(get16(out, th), seg.sport) << "ports as they came";
    EXPECT_EQ(get16(out, th + 2), seg.dport);
    const uint32_t seq = (out[th + 4] << 24) | (out[th + 5] << 16) | (out[th + 6] << 8) | out[th + 7];
    EXPECT_EQ(seq, 1000u) << "where the server expects the next byte";
    EXPECT_EQ(out[th + 13], kRst);
    uint32_t pseudo = 6 + 20;
    if (!v6) {
      EXPECT_EQ(get16(out, 16), 40) << "total length";
      EXPECT_EQ(checksum(out, 14, 20), 0) << "IPv4 header checksum";
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 26, out.begin() + 30), bytes(src));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 30, out.begin() + 34), bytes(dst));
      for (size_t i = 26; i < 34; i += 2) pseudo += get16(out, i);
    } else {
      EXPECT_EQ(get16(out, 18), 20) << "payload length";
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 22, out.begin() + 38), bytes(src));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 38, out.begin() + 54), bytes(dst));
      for (size_t i = 22; i < 54; i += 2) pseudo += get16(out, i);
    }
    EXPECT_EQ(checksum(out, th, 20, pseudo), 0) << "TCP checksum (with the pseudo-header)";
    EXPECT_EQ(ctStat(SMIK_CT_RESET), ++resets);
    EXPECT_FALSE(entryFlags(syn) & SMIK_CT_F_RESET) << "once";

    // Once: the flow's next segment is judged as any other (its entry
    // closed by the reset, so it passes as a closed flow's stray would).
    EXPECT_EQ(run(in, &out), kPass);
    EXPECT_EQ(out, in);
    EXPECT_EQ(ctStat(SMIK_CT_RESET), resets);
  }
}

// An answer the HTTP judge owes (SMIK_CT_F_ANSWER, where in smik_ct_answers):
// the pod's segment that ends exactly there is let through (a clone, put in
// again), followed by the answer (another clone), and itself becomes a RST
// into the pod at the sequence number the server expects next (its ack).
// The clones go to lo here; the e2e tests see them reach the client.
TEST_F(FlowResetTest, TheSegmentEndingTheServersAnswersTurnsIntoAResetOfTheServer) {
  const UniqueFd answers(pinned("smik_ct_answers"));
  ASSERT_TRUE(answers.valid());
  uint64_t resets = 0;
  for (const auto& [src, dst] : {std::pair{"10.1.0.1", "10.1.0.2"}, std::pair{"fd00::1", "fd00::2"}}) {
    SCOPED_TRACE(src);
    const PacketSpec syn{.src = src, .dst = dst, .tcp_flags = kSyn};
    ASSERT_EQ(toPod(syn), kPass);
    const smik_ct_key k = keyOf(syn);
    smik_ct_value v{};
    ASSERT_EQ(bpf_map_lookup_elem(ctFd(), &k, &v), 0);
    v.flags |= SMIK_CT_F_ANSWER;
    ASSERT_EQ(bpf_map_update_elem(ctFd(), &k, &v, BPF_EXIST), 0);
    const smik_ct_answer owed{.seq = 3016, .answer = 1};
    ASSERT_EQ(bpf_map_update_elem(answers.get(), &k, &owed, BPF_ANY), 0);

    // The server's segments out of the pod (ports turned round).
    const PacketSpec seg{.src = dst, .dst = src, .sport = syn.dport, .dport = syn.sport, .tcp_flags = kAck};
    std::vector<uint8_t> out;
    // Ending elsewhere (earlier bytes of its answer; bytes past it): unchanged, still owed.
    for (const auto& in : {segment(seg, 3000, 1000, 10), segment(seg, 3010, 1000, 16)}) {
      EXPECT_EQ(pkt::runTcOut(dp_->fromPodProgFd(), in, kLo, &out), kPass);
      EXPECT_EQ(out, in);
    }
    EXPECT_TRUE(entryFlags(syn) & SMIK_CT_F_ANSWER);

    const std::vector<uint8_t> in = segment(seg, 3000, 1000, 16);
    EXPECT_EQ(pkt::runTcOut(dp_->fromPodProgFd(), in, kLo, &out), kRedirect) << "into the pod";
    const bool v6 = std::string(src).find(':') != std::string::npos;
    const size_t th = 14 + (v6 ? 40 : 20);
    ASSERT_EQ(out.size(), th + 20) << "IP and TCP headers, no options, no payload";
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, in.begin() + 6)) << "to the pod's MAC";
    EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, in.begin())) << "from the host's";
    EXPECT_EQ(get16(out, th), syn.sport) << "from the client's port";
    EXPECT_EQ(get16(out, th + 2), syn.dport) << "to the server's";
    const uint32_t seq = (out[th + 4] << 24) | (out[th + 5] << 16) | (out[th + 6] << 8) | out[th + 7];
    EXPECT_EQ(seq, 1000u) << "where the server expects the client's next byte";
    EXPECT_EQ(out[th + 13], kRst);
    uint32_t pseudo = 6 + 20;
    if (!v6) {
      EXPECT_EQ(checksum(out, 14, 20), 0) << "IPv4 header checksum";
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 26, out.begin() + 30), bytes(src));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 30, out.begin() + 34), bytes(dst));
      for (size_t i = 26; i < 34; i += 2) pseudo += get16(out, i);
    } else {
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 22, out.begin() + 38), bytes(src));
      EXPECT_EQ(std::vector<uint8_t>(out.begin() + 38, out.begin() + 54), bytes(dst));
      for (size_t i = 22; i < 54; i += 2) pseudo += get16(out, i);
    }
    EXPECT_EQ(checksum(out, th, 20, pseudo), 0) << "TCP checksum (with the pseudo-header)";
    EXPECT_EQ(ctStat(SMIK_CT_RESET), ++resets);
    EXPECT_FALSE(entryFlags(syn) & SMIK_CT_F_ANSWER) << "once";
    smik_ct_answer left{};
    EXPECT_NE(bpf_map_lookup_elem(answers.get(), &k, &left), 0) << "taken";
    EXPECT_TRUE(entryFlags(syn) & SMIK_CT_F_RESET_SERVER);

    // The segments it put in again (marked) pass as they are, the mark taken off.
    EXPECT_EQ(pkt::runTcOut(dp_->fromPodProgFd(), in, kLo, &out, SMIK_TC_OWN_MARK), kPass);
    EXPECT_EQ(out, in);
    // Whatever the server still sends becomes a reset into the pod at its
    // acknowledgement number: the client sent 40 more bytes meanwhile, so
    // the reset at 1000 was stale and the server answered it with an ACK.
    const std::vector<uint8_t> challenge = segment(seg, 3016, 1040, 0);
    EXPECT_EQ(pkt::runTcOut(dp_->fromPodProgFd(), challenge, kLo, &out), kRedirect) << "into the pod";
    ASSERT_EQ(out.size(), th + 20);
    EXPECT_EQ(get16(out, th), syn.sport);
    EXPECT_EQ(get16(out, th + 2), syn.dport);
    EXPECT_EQ((out[th + 4] << 24) | (out[th + 5] << 16) | (out[th + 6] << 8) | out[th + 7], 1040);
    EXPECT_EQ(out[th + 13], kRst);
    // A reset of its own (its socket gone, to the client's next segment) passes.
    const std::vector<uint8_t> rst = segment({.src = dst, .dst = src, .sport = syn.dport, .dport = syn.sport,
                                              .tcp_flags = kRst},
                                             3016, 0, 0);
    EXPECT_EQ(pkt::runTcOut(dp_->fromPodProgFd(), rst, kLo, &out), kPass);
    EXPECT_EQ(out, rst);
  }
}

// An unmarked flow's segments pass untouched: the mark alone turns them.
TEST_F(FlowResetTest, AnUnmarkedFlowIsNeverReset) {
  const PacketSpec syn{.tcp_flags = kSyn};
  ASSERT_EQ(toPod(syn), kPass);
  std::vector<uint8_t> out;
  const std::vector<uint8_t> in = segment({.tcp_flags = kAck}, 1000, 5000, 16);
  EXPECT_EQ(run(in, &out), kPass);
  EXPECT_EQ(out, in);
  EXPECT_EQ(ctStat(SMIK_CT_RESET), 0u);
}

}  // namespace
