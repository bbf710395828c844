// The C++ statement of the data path (compile::ReferenceDatapath), rootless.
// The differential kernel test holds the tc programs to it; these pin down
// what it says.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>

#include "agent/compile/verdict.h"
#include "tests/kernel/packet.h"

using namespace smik;
using compile::judgePolicy;
using compile::PolicyMatch;

namespace {

TEST(JudgePolicy, LookupOrder) {
  compile::PolicyEntries p;
  p[{300, 400, 8080, 6, 0}] = {1, 0};
  p[{300, 400, 0, 6, 0}] = {2, 0};
  EXPECT_EQ(judgePolicy(&p, SMIK_ID_HOST, 400, 22, 6).match, PolicyMatch::kHost);
  EXPECT_EQ(judgePolicy(&p, 300, 400, 8080, 6).rule_id, 1u) << "exact port before all ports";
  EXPECT_EQ(judgePolicy(&p, 300, 400, 22, 6).match, PolicyMatch::kAllPorts);
  EXPECT_EQ(judgePolicy(&p, 300, 400, 22, 17).match, PolicyMatch::kNotEnforced);
  p[{SMIK_ID_META, 400, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  EXPECT_EQ(judgePolicy(&p, 300, 400, 22, 17).match, PolicyMatch::kDefaultDeny);
  EXPECT_FALSE(judgePolicy(nullptr, 300, 400, 8080, 6).allowed) << "no policy: fail closed";
}

compile::ParsedPacket parse(const pkt::PacketSpec& s) {
  auto b = pkt::buildPacket(s);
  return compile::parsePacket(b.data(), b.size());
}

TEST(ParsePacket, Ipv6ExtensionChainToTheRealProtocol) {
  auto p = parse({.src = "fd00::1", .dst = "fd00::2", .dport = 53, .proto = 17, .v6_ext = {0, 60, 43, 51}});
  ASSERT_EQ(p.result, compile::ParsedPacket::Result::kOk);
  EXPECT_EQ(p.proto, 17);
  EXPECT_EQ(ntohs(p.dport), 53);
  std::vector<uint8_t> nine(9, 60);
  EXPECT_EQ(parse({.src = "fd00::1", .dst = "fd00::2", .v6_ext = nine}).result,
            compile::ParsedPacket::Result::kMalformed);
}

TEST(ParsePacket, Fragments) {
  auto first = parse({.dport = 53, .proto = 17, .frag = pkt::kFirst, .frag_id = 9});
  EXPECT_EQ(first.frag, compile::Fragment::kFirst);
  EXPECT_EQ(ntohs(first.dport), 53);
  auto later = parse({.src = "fd00::1", .dst = "fd00::2", .proto = 17, .frag = pkt::kLater, .frag_id = 9});
  EXPECT_EQ(later.frag, compile::Fragment::kLater);
  EXPECT_EQ(later.frag_id, 9u);
  EXPECT_EQ(later.dport, 0) << "no L4 header in a later fragment";
}

// The reference's conntrack on the scenario of the UDP revocation bypass.
TEST(ReferenceDatapath, RevokedUdpPeerStaysOut) {
  compile::ReferenceDatapath dp;
  smik::Addr client, server;
  smik::parseAddr("10.1.0.1", &client);
  smik::parseAddr("10.1.0.2", &server);
  dp.ips[client] = {300, 0};
  dp.ips[server] = {400, SMIK_IP_F_LOCAL};
  smik_endpoint ep{};
  ep.identity = 400;
  ep.naddrs = 1;
  ep.families[0] = SMIK_AF_INET;
  std::memcpy(ep.addrs[0], server.bytes.data(), 16);
  dp.endpoints[7] = ep;
  dp.policy = compile::PolicyEntries{{{SMIK_ID_META, 400, 0, 0, 0}, {0, SMIK_POL_F_ENFORCED}},
                                     {{300, 400, 53, 17, 0}, {1, 0}}};
  auto query = pkt::buildPacket({.sport = 5353, .dport = 53, .proto = 17});
  auto answer = pkt::buildPacket({.src = "10.1.0.2", .dst = "10.1.0.1", .sport = 53, .dport = 5353, .proto = 17});
  EXPECT_EQ(dp.toPod(query, 7, 1), uint32_t(SMIK_REASON_FORWARDED));
  EXPECT_EQ(dp.fromPod(answer, 7, 2), uint32_t(SMIK_REASON_FORWARDED));
  dp.policy->erase({300, 400, 53, 17, 0});
  dp.generation++;
  EXPECT_EQ(dp.fromPod(answer, 7, 3), uint32_t(SMIK_REASON_POLICY));
  EXPECT_EQ(dp.toPod(query, 7, 4), uint32_t(SMIK_REASON_POLICY));
}

}  // namespace
