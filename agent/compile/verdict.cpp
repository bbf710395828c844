#include "agent/compile/verdict.h"

#include <cstring>

namespace smik::compile {

namespace {

constexpr uint8_t kTcp = 6, kUdp = 17, kIcmp = 1, kIcmp6 = 58;
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kAck = 0x10;

const smik_policy_value* find(const PolicyEntries& p, uint32_t src, uint32_t dst, uint16_t port,
                              uint8_t proto) {
  auto it = p.find(smik_policy_key{src, dst, port, proto, 0});
  return it == p.end() ? nullptr : &it->second;
}

}  // namespace

const char* policyMatchName(PolicyMatch m) {
  switch (m) {
    case PolicyMatch::kHost: return "host";
    case PolicyMatch::kExactPort: return "exact port";
    case PolicyMatch::kAllPorts: return "all ports";
    case PolicyMatch::kNotEnforced: return "not enforced";
    case PolicyMatch::kDefaultDeny: return "default deny";
    case PolicyMatch::kNoPolicy: return "no policy installed";
  }
  return "?";
}

PolicyVerdict judgePolicy(const PolicyEntries* policy, uint32_t src, uint32_t dst, uint16_t dport,
                          uint8_t proto) {
  bool host = src == SMIK_ID_HOST;
  if (!policy) return host ? PolicyVerdict{true, PolicyMatch::kHost, 0} : PolicyVerdict{};  // 7a
  if (dport) {
    if (auto* v = find(*policy, src, dst, dport, proto)) return {true, PolicyMatch::kExactPort, v->rule_id};  // 7b
  }
  if (auto* v = find(*policy, src, dst, 0, proto)) return {true, PolicyMatch::kAllPorts, v->rule_id};  // 7c
  auto* meta = find(*policy, SMIK_ID_META, dst, 0, 0);
  uint32_t flags = meta ? meta->flags : 0;
  // 7d: --host-traffic=policy marks the destination's meta entry: the node
  // is then judged like any source; otherwise it is always allowed.
  if (host && !(flags & SMIK_POL_F_HOST_JUDGED)) return {true, PolicyMatch::kHost, 0};
  if (flags & SMIK_POL_F_ENFORCED) return {false, PolicyMatch::kDefaultDeny, 0};  // 7e
  return {true, PolicyMatch::kNotEnforced, 0};  // 7f
}

// ---- parsing (bpf/lib/parse.bpf.h) -------------------------------------------

namespace {

using Result = ParsedPacket::Result;

struct Bytes {
  const uint8_t* d;
  size_t n;
  bool has(size_t off, size_t len) const { return off <= n && len <= n - off; }
};

void parseL4(const Bytes& b, size_t off, ParsedPacket* p) {
  if (p->proto == kTcp) {
    if (!b.has(off, 20) || (b.d[off + 12] >> 4) < 5) return void(p->result = Result::kMalformed);
    std::memcpy(&p->sport, b.d + off, 2);
    std::memcpy(&p->dport, b.d + off + 2, 2);
    p->tcp_flags = b.d[off + 13];
  } else if (p->proto == kUdp) {
    if (!b.has(off, 8)) return void(p->result = Result::kMalformed);
    std::memcpy(&p->sport, b.d + off, 2);
    std::memcpy(&p->dport, b.d + off + 2, 2);
  } else if (p->proto == kIcmp || p->proto == kIcmp6) {
    if (!b.has(off, 8)) return void(p->result = Result::kMalformed);
    uint8_t type = b.d[off];
    bool v6 = p->proto == kIcmp6;
    if (type == (v6 ? 128 : 8)) {
      p->icmp = IcmpClass::kEchoRequest;
      std::memcpy(&p->sport, b.d + off + 4, 2);
    } else if (type == (v6 ? 129 : 0)) {
      p->icmp = IcmpClass::kEchoReply;
      std::memcpy(&p->dport, b.d + off + 4, 2);
    } else if (v6) {
      p->icmp = (type >= 1 && type <= 4)       ? IcmpClass::kError
                : (type >= 133 && type <= 137) ? IcmpClass::kInfra
                                               : IcmpClass::kOther;
    } else {
      p->icmp = (type == 3 || type == 11 || type == 12) ? IcmpClass::kError : IcmpClass::kOther;
    }
    p->l4_off = off <= 255 ? uint8_t(off) : 0;
  }
  p->result = Result::kOk;
}

void parseIpv4(const Bytes& b, ParsedPacket* p) {
  const size_t ip = 14;
  if (!b.has(ip, 20)) return void(p->result = Result::kMalformed);
  size_t ihl = (b.d[ip] & 0x0f) * 4;
  if (ihl < 20) return void(p->result = Result::kMalformed);
  p->family = SMIK_AF_INET;
  p->proto = p->frag_proto = b.d[ip + 9];
  std::memcpy(p->saddr.data(), b.d + ip + 12, 4);
  std::memcpy(p->daddr.data(), b.d + ip + 16, 4);
  uint16_t frag = (b.d[ip + 6] << 8) | b.d[ip + 7];
  p->frag_id = (b.d[ip + 4] << 8) | b.d[ip + 5];
  if (frag & 0x1fff) {
    // RFC 1858: a TCP fragment at offset 8 could rewrite the judged flags.
    if (p->proto == kTcp && (frag & 0x1fff) == 1) return void(p->result = Result::kMalformed);
    p->frag = Fragment::kLater;
    p->result = Result::kOk;
    return;
  }
  if (frag & 0x2000) p->frag = Fragment::kFirst;
  parseL4(b, ip + ihl, p);
}

void parseIpv6(const Bytes& b, ParsedPacket* p) {
  const size_t ip = 14;
  if (!b.has(ip, 40)) return void(p->result = Result::kMalformed);
  p->family = SMIK_AF_INET6;
  std::memcpy(p->saddr.data(), b.d + ip + 8, 16);
  std::memcpy(p->daddr.data(), b.d + ip + 24, 16);
  uint8_t next = b.d[ip + 6];
  size_t off = ip + 40;
  for (int i = 0; i < SMIK_IPV6_MAX_EXT; i++) {
    if (next == 0 || next == 43 || next == 60) {  // hop-by-hop, routing, destination options
      if (!b.has(off, 2)) return void(p->result = Result::kMalformed);
      size_t len = (size_t(b.d[off + 1]) + 1) * 8;
      next = b.d[off];
      off += len;
    } else if (next == 51) {  // authentication header
      if (!b.has(off, 2)) return void(p->result = Result::kMalformed);
      size_t len = (size_t(b.d[off + 1]) + 2) * 4;
      next = b.d[off];
      off += len;
    } else if (next == 44) {  // fragment
      if (!b.has(off, 8)) return void(p->result = Result::kMalformed);
      uint16_t fo = (b.d[off + 2] << 8) | b.d[off + 3];
      p->frag_proto = b.d[off];
      p->frag_id = (uint32_t(b.d[off + 4]) << 24) | (uint32_t(b.d[off + 5]) << 16) |
                   (uint32_t(b.d[off + 6]) << 8) | b.d[off + 7];
      if (fo & 0xfff8) {
        p->proto = b.d[off];
        p->frag = Fragment::kLater;
        p->result = Result::kOk;
        return;
      }
      if (fo & 1) p->frag = Fragment::kFirst;
      next = b.d[off];
      off += 8;
    } else {
      p->proto = next;
      parseL4(b, off, p);
      return;
    }
  }
  p->result = Result::kMalformed;  // a chain longer than SMIK_IPV6_MAX_EXT
}

}  // namespace

ParsedPacket parsePacket(const uint8_t* data, size_t len) {
  ParsedPacket p;
  Bytes b{data, len};
  if (!b.has(0, 14)) return p;
  uint16_t ethertype = (data[12] << 8) | data[13];
  if (ethertype == 0x0800) {
    parseIpv4(b, &p);
  } else if (ethertype == 0x86DD) {
    parseIpv6(b, &p);
  }
  return p;
}

// ---- conntrack and verdicts (bpf/tc_policy.bpf.c) ------------------------------

std::vector<uint8_t> keyBytes(const smik_ct_key& k) {
  auto* b = reinterpret_cast<const uint8_t*>(&k);
  return {b, b + sizeof k};
}
std::vector<uint8_t> keyBytes(const smik_frag_key& k) {
  auto* b = reinterpret_cast<const uint8_t*>(&k);
  return {b, b + sizeof k};
}

namespace {

bool keyable(const ParsedPacket& p) {
  return p.proto == kTcp || p.proto == kUdp || p.icmp == IcmpClass::kEchoRequest ||
         p.icmp == IcmpClass::kEchoReply;
}

uint16_t policyPort(uint8_t proto, uint16_t port_be) {
  if (proto != kTcp && proto != kUdp) return 0;
  return uint16_t((port_be & 0xff) << 8 | port_be >> 8);
}

smik_ct_key ctKey(const ParsedPacket& p, bool reversed) {
  smik_ct_key k{};
  k.proto = p.proto;
  k.family = p.family;
  const auto& s = reversed ? p.daddr : p.saddr;
  const auto& d = reversed ? p.saddr : p.daddr;
  std::memcpy(k.saddr, s.data(), 16);
  std::memcpy(k.daddr, d.data(), 16);
  k.sport = reversed ? p.dport : p.sport;
  k.dport = reversed ? p.sport : p.dport;
  return k;
}

smik_frag_key fragKey(const ParsedPacket& p) {
  smik_frag_key k{};
  std::memcpy(k.saddr, p.saddr.data(), 16);
  std::memcpy(k.daddr, p.daddr.data(), 16);
  k.id = p.frag_id;
  k.proto = p.frag_proto;
  k.family = p.family;
  return k;
}

bool isLinkSetup(const ParsedPacket& p) {
  if (p.family != SMIK_AF_INET6) return false;
  if (p.saddr[0] == 0xfe && (p.saddr[1] & 0xc0) == 0x80) return true;
  return p.saddr == std::array<uint8_t, 16>{};
}

bool isOwnAddr(const smik_endpoint& ep, const ParsedPacket& p) {
  for (int i = 0; i < SMIK_ENDPOINT_ADDRS && i < ep.naddrs; i++)
    if (ep.families[i] == p.family && std::memcmp(ep.addrs[i], p.saddr.data(), 16) == 0) return true;
  return false;
}

void touch(smik_ct_value* ct, const ParsedPacket& p, uint64_t now, uint8_t fin_bit) {
  if (now - ct->last_seen_ns > SMIK_CT_REFRESH_NS) ct->last_seen_ns = now;
  if (p.proto != kTcp || !(p.tcp_flags & (kFin | kRst))) return;
  uint8_t st = ct->state;
  if (p.tcp_flags & kRst) st |= SMIK_CT_S_CLOSED;
  else st |= fin_bit;
  if ((st & (SMIK_CT_S_FIN_IN | SMIK_CT_S_FIN_OUT)) == (SMIK_CT_S_FIN_IN | SMIK_CT_S_FIN_OUT))
    st |= SMIK_CT_S_CLOSED;
  if ((st & SMIK_CT_S_CLOSED) && !(ct->state & SMIK_CT_S_CLOSED)) ct->last_seen_ns = now;
  ct->state = st;
}

// A live entry's verdict (ct_verdict in bpf/tc_policy.bpf.c). The HTTP
// judge's marks (SMIK_CT_F_RESET, SMIK_CT_F_ANSWER and the
// SMIK_CT_F_RESET_SERVER that follows it) are not modelled: the judge sets
// them from a socket's state no packet here carries.
uint32_t entryVerdict(smik_ct_value* ct, const ParsedPacket& p, uint64_t now, uint8_t fin_bit) {
  if (ct->flags & SMIK_CT_F_REVOKED) {
    ct->last_seen_ns = now;
    return SMIK_REASON_POLICY;
  }
  touch(ct, p, now, fin_bit);
  return SMIK_REASON_FORWARDED;
}

}  // namespace

uint32_t ReferenceDatapath::identityOf(uint8_t family, const std::array<uint8_t, 16>& a) const {
  Addr k;
  k.family = family;
  k.bytes = a;
  auto it = ips.find(k);
  return it == ips.end() ? SMIK_ID_WORLD : it->second.identity;
}

bool ReferenceDatapath::allows(uint32_t src, uint32_t dst, uint16_t dport, uint8_t proto,
                               bool explicit_only) const {
  PolicyVerdict v = judgePolicy(policy ? &*policy : nullptr, src, dst, dport, proto);
  if (explicit_only && v.match == PolicyMatch::kNotEnforced) return false;
  return v.allowed;
}

smik_ct_value* ReferenceDatapath::find(const smik_ct_key& k, const ParsedPacket& p, uint64_t now) {
  auto it = ct.find(keyBytes(k));
  if (it == ct.end() || smik_ct_expired(&k, &it->second, now)) return nullptr;
  if (p.proto == kTcp && (p.tcp_flags & (kSyn | kAck)) == kSyn && (it->second.state & SMIK_CT_S_CLOSED))
    return nullptr;
  return &it->second;
}

smik_ct_value* ReferenceDatapath::validate(const smik_ct_key& k, smik_ct_value* v, uint32_t peer,
                                           uint32_t pod, uint64_t now) {
  if (peer != v->src_id || pod != v->dst_id) {
    ct.erase(keyBytes(k));  // the entry belonged to another workload
    return nullptr;
  }
  bool ok = (v->flags & SMIK_CT_F_INBOUND)
                ? allows(peer, pod, policyPort(k.proto, k.dport), k.proto, false)
                : allows(pod, peer, policyPort(k.proto, k.sport), k.proto, false);
  if (ok) {
    v->flags &= ~SMIK_CT_F_REVOKED;
  } else {
    v->flags |= SMIK_CT_F_REVOKED;
    v->last_seen_ns = now;
  }
  v->policy_gen = generation;
  return v;
}

void ReferenceDatapath::insert(const smik_ct_key& k, uint8_t flags, uint32_t peer, uint32_t pod,
                               uint64_t now) {
  auto key = keyBytes(k);
  if (!ct.count(key) && ct.size() >= ct_capacity) return;  // full: judged packet by packet
  smik_ct_value v{};
  v.last_seen_ns = now;
  v.policy_gen = generation;
  v.src_id = peer;
  v.dst_id = pod;
  v.flags = flags;
  ct[key] = v;
}

bool ReferenceDatapath::icmpErrorRelated(const ParsedPacket& p, const std::vector<uint8_t>& frame,
                                         uint64_t now) {
  if (!p.l4_off) return false;
  Bytes b{frame.data(), frame.size()};
  smik_ct_key k{};
  k.family = p.family;
  size_t off = size_t(p.l4_off) + 8;
  uint8_t proto;
  if (p.family == SMIK_AF_INET) {
    if (!b.has(off, 20)) return false;
    size_t ihl = (b.d[off] & 0x0f) * 4;
    if (ihl < 20) return false;
    proto = b.d[off + 9];
    std::memcpy(k.saddr, b.d + off + 16, 4);
    std::memcpy(k.daddr, b.d + off + 12, 4);
    off += ihl;
  } else {
    if (!b.has(off, 40)) return false;
    proto = b.d[off + 6];
    std::memcpy(k.saddr, b.d + off + 24, 16);
    std::memcpy(k.daddr, b.d + off + 8, 16);
    off += 40;
  }
  if (!b.has(off, 8)) return false;
  const uint8_t* l4 = b.d + off;
  if (proto == kTcp || proto == kUdp) {
    std::memcpy(&k.sport, l4 + 2, 2);
    std::memcpy(&k.dport, l4, 2);
  } else if (proto == (p.family == SMIK_AF_INET ? kIcmp : kIcmp6)) {
    bool v4 = p.family == SMIK_AF_INET;
    if (l4[0] == (v4 ? 8 : 128)) std::memcpy(&k.dport, l4 + 4, 2);
    else if (l4[0] == (v4 ? 0 : 129)) std::memcpy(&k.sport, l4 + 4, 2);
    else return false;
  } else {
    return false;
  }
  k.proto = proto;
  if (std::memcmp(k.daddr, p.daddr.data(), 16) != 0) return false;
  auto it = ct.find(keyBytes(k));
  return it != ct.end() && !smik_ct_expired(&k, &it->second, now) &&
         !(it->second.flags & SMIK_CT_F_REVOKED);
}

uint32_t ReferenceDatapath::judgeToPod(const ParsedPacket& p, const std::vector<uint8_t>& frame,
                                       uint32_t ifindex, uint64_t now) {
  // step 3
  if (p.icmp == IcmpClass::kInfra || isLinkSetup(p)) return SMIK_REASON_FORWARDED;
  if (p.icmp == IcmpClass::kError && icmpErrorRelated(p, frame, now)) return SMIK_REASON_FORWARDED;
  // step 4
  smik_ct_key k = ctKey(p, false);
  smik_ct_value* v = keyable(p) ? find(k, p, now) : nullptr;
  if (v && v->policy_gen == generation) return entryVerdict(v, p, now, SMIK_CT_S_FIN_IN);
  // step 5
  auto ep = endpoints.find(ifindex);
  if (ep == endpoints.end()) return SMIK_REASON_UNHOOKED;
  // step 6
  uint32_t pod = ep->second.identity;
  uint32_t peer = identityOf(p.family, p.saddr);
  if (v && (v = validate(k, v, peer, pod, now))) return entryVerdict(v, p, now, SMIK_CT_S_FIN_IN);
  // step 7
  uint16_t dport = policyPort(p.proto, p.dport);
  if (!allows(peer, pod, dport, p.proto, false))
    return (p.proto == kTcp || p.proto == kUdp) ? SMIK_REASON_POLICY : SMIK_REASON_UNSUPPORTED;
  // step 8
  bool opens = p.proto == kUdp || p.icmp == IcmpClass::kEchoRequest ||
               (p.proto == kTcp && !(p.tcp_flags & (kRst | kFin)));
  if (opens) insert(k, SMIK_CT_F_INBOUND, peer, pod, now);
  return SMIK_REASON_FORWARDED;
}

uint32_t ReferenceDatapath::toPod(const std::vector<uint8_t>& frame, uint32_t ifindex,
                                  uint64_t now) {
  ParsedPacket p = parsePacket(frame.data(), frame.size());
  // step 1
  if (p.result == Result::kNotIp) return SMIK_REASON_FORWARDED;
  if (p.result == Result::kMalformed) return SMIK_REASON_MALFORMED;
  if (p.frag == Fragment::kLater) {  // step 2
    auto it = frags.find(keyBytes(fragKey(p)));
    if (it == frags.end()) return SMIK_REASON_FRAGMENT;
    return it->second.allowed ? SMIK_REASON_FORWARDED : SMIK_REASON_POLICY;
  }
  uint32_t reason = judgeToPod(p, frame, ifindex, now);
  if (p.frag == Fragment::kFirst) {  // step 9
    smik_frag_value fv{};
    fv.allowed = reason == SMIK_REASON_FORWARDED;
    frags[keyBytes(fragKey(p))] = fv;
  }
  return reason;
}

uint32_t ReferenceDatapath::judgeFromPod(const ParsedPacket& p, const smik_endpoint& ep,
                                         uint64_t now) {
  // step 11
  uint32_t pod = ep.identity;
  smik_ct_key k = ctKey(p, true);
  smik_ct_value* v = find(k, p, now);
  std::optional<uint32_t> peer;
  if (v && v->policy_gen != generation) {
    peer = identityOf(p.family, p.daddr);
    v = validate(k, v, *peer, pod, now);
  }
  if (v) return entryVerdict(v, p, now, SMIK_CT_S_FIN_OUT);
  // step 12
  bool rebuilt = false;
  if (p.proto == kTcp) {
    if ((p.tcp_flags & kRst) || (p.tcp_flags & (kSyn | kAck)) == (kSyn | kAck))
      return SMIK_REASON_FORWARDED;
    rebuilt = !(p.tcp_flags & kSyn);
  } else if (p.icmp == IcmpClass::kEchoReply) {
    return SMIK_REASON_FORWARDED;
  }
  if (!peer) peer = identityOf(p.family, p.daddr);
  uint8_t dir = SMIK_CT_F_REPLY;
  if ((p.proto == kUdp || rebuilt) && allows(*peer, pod, policyPort(p.proto, p.sport), p.proto, true))
    dir = SMIK_CT_F_INBOUND;
  insert(k, dir, *peer, pod, now);
  return SMIK_REASON_FORWARDED;
}

uint32_t ReferenceDatapath::fromPod(const std::vector<uint8_t>& frame, uint32_t ifindex,
                                    uint64_t now) {
  ParsedPacket p = parsePacket(frame.data(), frame.size());
  // step 10
  if (p.result == Result::kNotIp) return SMIK_REASON_FORWARDED;
  if (p.result == Result::kMalformed) return SMIK_REASON_MALFORMED;
  auto ep = endpoints.find(ifindex);
  if (ep == endpoints.end()) return SMIK_REASON_UNHOOKED;
  if (!isOwnAddr(ep->second, p) && !isLinkSetup(p)) return SMIK_REASON_SPOOFED;
  if (p.frag == Fragment::kLater || p.icmp == IcmpClass::kInfra || p.icmp == IcmpClass::kError ||
      !keyable(p))  // step 11
    return SMIK_REASON_FORWARDED;
  return judgeFromPod(p, ep->second, now);
}

}  // namespace smik::compile
