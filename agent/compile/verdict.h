// The data path's verdict in C++: the tc programs' lookup order, their packet
// parsing and their conntrack. The order is stated once, as numbered steps,
// at the top of bpf/tc_policy.bpf.c; the code here cites the step numbers.
// `smik explain` reports a flow by step 7, and the differential kernel test
// (tests/kernel/differential_test.cpp) requires the kernel programs to reach
// the same verdict on every generated packet. Change one, change the other.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "agent/compile/compile.h"
#include "bpf/include/smik_abi.h"

namespace smik::compile {

using PolicyEntries = std::map<smik_policy_key, smik_policy_value>;

// Which sub-step of step 7 (bpf/tc_policy.bpf.c) decided.
enum class PolicyMatch {
  kHost,          // 7a or 7d: the node itself
  kExactPort,     // 7b: a grant of this port
  kAllPorts,      // 7c: a grant of every port of the protocol
  kNotEnforced,   // 7f: the destination has no meta entry: permissive
  kDefaultDeny,   // 7e: enforced and nothing grants it
  kNoPolicy,      // 7a: no generation installed: fail closed
};
const char* policyMatchName(PolicyMatch m);

struct PolicyVerdict {
  bool allowed = false;
  PolicyMatch match = PolicyMatch::kNoPolicy;
  uint32_t rule_id = 0;  // for kExactPort / kAllPorts
};

// Step 7. policy == nullptr: no generation installed.
PolicyVerdict judgePolicy(const PolicyEntries* policy, uint32_t src, uint32_t dst, uint16_t dport,
                          uint8_t proto);

// ---- packets ----------------------------------------------------------------

enum class IcmpClass : uint8_t {
  kNone = 0,
  kInfra = 1,  // neighbour and router discovery
  kOther = 2,
  kEchoRequest = 3,
  kEchoReply = 4,
  kError = 5,  // passes when the packet it quotes is one of the pod's flows
};
enum class Fragment : uint8_t { kNone = 0, kFirst = 1, kLater = 2 };

struct ParsedPacket {
  enum class Result { kOk, kNotIp, kMalformed } result = Result::kNotIp;
  uint8_t family = 0;
  uint8_t proto = 0;  // the real L4 protocol, after extension headers
  IcmpClass icmp = IcmpClass::kNone;
  Fragment frag = Fragment::kNone;
  uint8_t tcp_flags = 0;
  uint8_t frag_proto = 0;
  uint16_t sport = 0, dport = 0;  // network order, as the conntrack key holds them
  uint32_t frag_id = 0;
  uint8_t l4_off = 0;  // of an ICMP error: where its header starts (0 = beyond 255)
  std::array<uint8_t, 16> saddr{}, daddr{};
};

// An Ethernet frame, parsed as bpf/lib/parse.bpf.h does.
ParsedPacket parsePacket(const uint8_t* data, size_t len);

// ---- the tc programs over their maps ----------------------------------------

class ReferenceDatapath {
 public:
  // What the maps hold (the agent writes these).
  FlatMap<Addr, smik_ip_info> ips;
  std::map<uint32_t, smik_endpoint> endpoints;  // by host-side ifindex
  std::optional<PolicyEntries> policy;
  uint32_t generation = 0;

  // What the programs write.
  std::map<std::vector<uint8_t>, smik_ct_value> ct;      // key: smik_ct_key bytes
  std::map<std::vector<uint8_t>, smik_frag_value> frags; // key: smik_frag_key bytes
  size_t ct_capacity = SMIK_MAX_CT;

  // SMIK_REASON_* of a packet going into / coming out of the pod behind
  // ifindex at monotonic time now_ns; FORWARDED means it passes.
  uint32_t toPod(const std::vector<uint8_t>& frame, uint32_t ifindex, uint64_t now_ns);
  uint32_t fromPod(const std::vector<uint8_t>& frame, uint32_t ifindex, uint64_t now_ns);

 private:
  uint32_t identityOf(uint8_t family, const std::array<uint8_t, 16>& a) const;
  bool allows(uint32_t src, uint32_t dst, uint16_t dport, uint8_t proto, bool explicit_only) const;
  smik_ct_value* find(const smik_ct_key& k, const ParsedPacket& p, uint64_t now);
  smik_ct_value* validate(const smik_ct_key& k, smik_ct_value* ct, uint32_t peer, uint32_t pod,
                          uint64_t now);
  void insert(const smik_ct_key& k, uint8_t flags, uint32_t peer, uint32_t pod, uint64_t now);
  uint32_t judgeToPod(const ParsedPacket& p, const std::vector<uint8_t>& frame, uint32_t ifindex,
                      uint64_t now);
  bool icmpErrorRelated(const ParsedPacket& p, const std::vector<uint8_t>& frame, uint64_t now);
  uint32_t judgeFromPod(const ParsedPacket& p, const smik_endpoint& ep, uint64_t now);
};

std::vector<uint8_t> keyBytes(const smik_ct_key& k);
std::vector<uint8_t> keyBytes(const smik_frag_key& k);

}  // namespace smik::compile
