// The tc programs against their C++ reference (compile::ReferenceDatapath):
// generated plans, generated packets (IPv4/IPv6, extension headers,
// fragments, TCP flags, UDP, ICMP, other protocols, spoofed and truncated
// ones), policy swaps and identity changes in between. Every packet's verdict
// and reason must be the same on both sides, and so must the conntrack table
// at the end of each plan. Seeded: SMIK_DIFF_SEED=<n> replays a failure.
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <sstream>

#include "agent/compile/verdict.h"
#include "agent/datapath/datapath.h"
#include "tests/kernel/packet.h"

using namespace smik;

namespace {

constexpr uint32_t kLo = 1;
constexpr int kPlans = 25;
constexpr int kStepsPerPlan = 400;

smik::Addr addr(const std::string& s) {
  smik::Addr a;
  smik::parseAddr(s, &a);
  return a;
}

uint64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

const uint32_t kIds[] = {SMIK_ID_HOST, 300, 301, 302, 303};
const uint16_t kPorts[] = {53, 80, 8080, 6000, 40000, 40001};
// Address pool: index 0 is the pod (both families), 1 a second local pod.
std::string v4(int i) { return "10.9.0." + std::to_string(i + 1); }
std::string v6(int i) { return "fd09::" + std::to_string(i + 1); }
constexpr int kAddrs = 6;

struct Generator {
  std::mt19937_64 rng;
  explicit Generator(uint64_t seed) : rng(seed) {}
  uint64_t below(uint64_t n) { return rng() % n; }
  bool chance(int percent) { return below(100) < uint64_t(percent); }
  template <typename T, size_t N>
  T pick(const T (&a)[N]) { return a[below(N)]; }

  void identities(maps::KernelState* s) {
    s->ips.clear();
    for (int i = 0; i < kAddrs; i++) {
      if (i > 1 && chance(20)) continue;  // unknown: world
      uint32_t id = pick(kIds);
      if (i <= 1) id = i == 0 ? 300 : 301;  // the local pods keep theirs
      uint32_t flags = i <= 1 ? SMIK_IP_F_LOCAL : 0;
      s->ips[addr(v4(i))] = {id, flags};
      s->ips[addr(v6(i))] = {id, flags};
    }
  }

  void policy(maps::KernelState* s) {
    s->policy.clear();
    for (uint32_t dst : {300u, 301u}) {
      if (chance(75)) {
        uint32_t flags = SMIK_POL_F_ENFORCED | (chance(30) ? SMIK_POL_F_HOST_JUDGED : 0);
        s->policy[{SMIK_ID_META, dst, 0, 0, 0}] = {0, flags};
      }
      int grants = below(6);
      for (int g = 0; g < grants; g++) {
        uint32_t src = pick(kIds);
        uint16_t port = chance(20) ? 0 : pick(kPorts);
        uint8_t proto = chance(50) ? 6 : 17;
        s->policy[{src, dst, port, proto, 0}] = {uint32_t(g + 1), 0};
      }
    }
  }

  pkt::PacketSpec packet(bool into_pod) {
    pkt::PacketSpec p;
    bool six = chance(40);
    int pod = 0, peer = 1 + below(kAddrs - 1);
    if (!into_pod && chance(5)) pod = 2 + below(kAddrs - 2);  // spoofed
    auto a = [&](int i) { return six ? v6(i) : v4(i); };
    p.src = into_pod ? a(peer) : a(pod);
    p.dst = into_pod ? a(pod) : a(peer);
    if (six && into_pod && chance(3)) p.src = "fe80::1";
    int proto = below(100);
    p.proto = proto < 45 ? 6 : proto < 85 ? 17 : proto < 97 ? 1 : 47;
    p.sport = pick(kPorts);
    p.dport = pick(kPorts);
    const uint8_t flags[] = {pkt::kSyn, pkt::kSyn | pkt::kAck, pkt::kAck, pkt::kAck,
                             pkt::kFin | pkt::kAck, pkt::kRst, pkt::kRst | pkt::kAck, 0x18};
    p.tcp_flags = pick(flags);
    const uint8_t v4icmp[] = {8, 0, 3, 11, 5, 13};
    const uint8_t v6icmp[] = {128, 129, 1, 135, 143, 2};
    p.icmp_type = six ? pick(v6icmp) : pick(v4icmp);
    p.icmp_id = 1 + below(3);
    bool error = (!six && (p.icmp_type == 3 || p.icmp_type == 11)) ||
                 (six && (p.icmp_type == 1 || p.icmp_type == 2));
    if (p.proto == 1 && error && chance(70)) {
      // Quote a packet of one of the pod's possible flows (sometimes of
      // another host, sometimes an echo).
      pkt::PacketSpec q;
      q.src = chance(90) ? (six ? v6(0) : v4(0)) : (six ? v6(3) : v4(3));
      q.dst = six ? v6(peer) : v4(peer);
      q.proto = chance(80) ? (chance(50) ? 6 : 17) : 1;
      q.sport = pick(kPorts);
      q.dport = pick(kPorts);
      q.icmp_type = six ? (chance(50) ? 128 : 129) : (chance(50) ? 8 : 0);
      q.icmp_id = 1 + below(3);
      p.icmp_quote = pkt::ipPacket(q);
      if (chance(10)) p.icmp_quote.resize(below(p.icmp_quote.size()));
    }
    if (six && chance(20)) {
      const uint8_t ext[] = {0, 43, 60, 51};
      int n = chance(10) ? 9 : 1 + below(3);
      for (int i = 0; i < n; i++) p.v6_ext.push_back(pick(ext));
    }
    if (chance(12)) {
      p.frag = chance(50) ? pkt::kFirst : pkt::kLater;
      p.frag_id = 1 + below(4);
      p.frag_offset = chance(10) ? 1 : 2 + below(4);
    }
    return p;
  }
};

std::string describe(const pkt::PacketSpec& p, bool into_pod) {
  std::ostringstream o;
  o << (into_pod ? "to_pod " : "from_pod ") << p.src << ":" << p.sport << " -> " << p.dst << ":"
    << p.dport << " proto " << int(p.proto) << " flags 0x" << std::hex << int(p.tcp_flags)
    << std::dec << " icmp " << int(p.icmp_type) << "/" << p.icmp_id << " frag " << int(p.frag)
    << " id " << p.frag_id << " off " << p.frag_offset << " ext " << p.v6_ext.size();
  return o.str();
}

class DifferentialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "KERNEL TEST SKIPPED: needs root for BPF";
    pin_ = "/sys/fs/bpf/smik-diff-" + std::to_string(getpid());
    datapath::Options o;
    o.pin_dir = pin_;
    std::string err;
    dp_ = datapath::Datapath::open(o, &err);
    ASSERT_TRUE(dp_) << err;
    ct_map_.reset(bpf_obj_get((pin_ + "/" + maps::kCtMap).c_str()));
    frags_map_.reset(bpf_obj_get((pin_ + "/" + maps::kFragsMap).c_str()));
    ASSERT_TRUE(ct_map_);
    ASSERT_TRUE(frags_map_);
  }
  void TearDown() override {
    ct_map_.reset();
    frags_map_.reset();
    dp_.reset();
    std::string err;
    if (!pin_.empty()) EXPECT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
  }

  template <typename K>
  void clearMap(int fd) {
    K k{};
    while (bpf_map_get_next_key(fd, nullptr, &k) == 0) bpf_map_delete_elem(fd, &k);
  }

  void apply(const maps::KernelState& next) {
    std::string err;
    ASSERT_TRUE(maps::apply(dp_->maps(), next, dp_->maps().read().value(), nullptr, &err)) << err;
    ref_.ips = next.ips.map();
    ref_.endpoints = next.endpoints;
    ref_.policy = next.policy;
    ref_.generation = dp_->maps().policyGeneration();
  }

  // The reason the kernel counted for one run: the counter that moved.
  int kernelReason(const std::vector<smik_counter>& before) {
    auto after = dp_->maps().reasons();
    for (size_t i = 0; i < after.size(); i++)
      if (after[i].packets != before[i].packets) return int(i);
    return -1;
  }

  std::map<std::vector<uint8_t>, smik_ct_value> kernelCt() {
    std::map<std::vector<uint8_t>, smik_ct_value> out;
    smik_ct_key k{}, next{};
    const smik_ct_key* prev = nullptr;
    while (bpf_map_get_next_key(ct_map_.get(), prev, &next) == 0) {
      smik_ct_value v{};
      if (bpf_map_lookup_elem(ct_map_.get(), &next, &v) == 0) out[compile::keyBytes(next)] = v;
      k = next;
      prev = &k;
    }
    return out;
  }

  std::string pin_;
  std::unique_ptr<datapath::Datapath> dp_;
  UniqueFd ct_map_, frags_map_;
  compile::ReferenceDatapath ref_;
};

TEST_F(DifferentialTest, KernelEqualsReference) {
  uint64_t seed = std::random_device{}();
  if (const char* s = getenv("SMIK_DIFF_SEED")) seed = std::stoull(s);
  SCOPED_TRACE("SMIK_DIFF_SEED=" + std::to_string(seed));
  std::cout << "SMIK_DIFF_SEED=" << seed << "\n";
  Generator gen(seed);
  int packets = 0, skipped = 0;
  for (int plan = 0; plan < kPlans; plan++) {
    SCOPED_TRACE("plan " + std::to_string(plan));
    clearMap<smik_ct_key>(ct_map_.get());
    clearMap<smik_frag_key>(frags_map_.get());
    ref_.ct.clear();
    ref_.frags.clear();
    maps::KernelState state;
    state.policy_installed = true;
    smik_endpoint ep{};
    ep.identity = 300;
    ep.naddrs = 2;
    ep.families[0] = SMIK_AF_INET;
    std::memcpy(ep.addrs[0], addr(v4(0)).bytes.data(), 16);
    ep.families[1] = SMIK_AF_INET6;
    std::memcpy(ep.addrs[1], addr(v6(0)).bytes.data(), 16);
    state.endpoints[kLo] = ep;
    gen.identities(&state);
    gen.policy(&state);
    apply(state);
    for (int step = 0; step < kStepsPerPlan; step++) {
      if (gen.chance(4)) {  // the cluster changes under the flows
        if (gen.chance(60)) gen.policy(&state);
        else gen.identities(&state);
        apply(state);
        continue;
      }
      bool into = gen.chance(55);
      pkt::PacketSpec spec = gen.packet(into);
      auto frame = pkt::buildPacket(spec);
      // truncated anywhere past the Ethernet header (test runs need one)
      bool truncated = gen.chance(3);
      if (truncated) frame.resize(14 + gen.below(frame.size() - 14));
      auto before = dp_->maps().reasons();
      int prog = into ? dp_->toPodProgFd() : dp_->fromPodProgFd();
      int verdict = pkt::runTc(prog, frame, kLo);
      int kreason = kernelReason(before);
      // The test run itself refuses frames cut inside the IP header (the
      // stack drops those before any tc program sees them).
      if (truncated && verdict == -EINVAL) {
        skipped++;
        continue;
      }
      uint64_t now = nowNs();
      uint32_t rreason = into ? ref_.toPod(frame, kLo, now) : ref_.fromPod(frame, kLo, now);
      int rverdict = rreason == SMIK_REASON_FORWARDED ? 0 : 2;
      packets++;
      ASSERT_EQ(verdict, rverdict) << describe(spec, into) << " (len " << frame.size()
                                   << "), reference reason " << rreason;
      ASSERT_EQ(kreason, int(rreason)) << describe(spec, into);
    }
    auto kct = kernelCt();
    ASSERT_EQ(kct.size(), ref_.ct.size());
    for (const auto& [k, v] : ref_.ct) {
      auto it = kct.find(k);
      ASSERT_NE(it, kct.end());
      EXPECT_EQ(it->second.flags, v.flags);
      EXPECT_EQ(it->second.state, v.state);
      EXPECT_EQ(it->second.src_id, v.src_id);
      EXPECT_EQ(it->second.dst_id, v.dst_id);
      EXPECT_EQ(it->second.policy_gen, v.policy_gen);
    }
  }
  std::cout << packets << " packets, kernel == reference (" << skipped
            << " truncated frames refused by the test run)\n";
}

}  // namespace
