/* SMI access control on the host-side veth of each local meshed pod.
 *
 * The policy lives in an inner map swapped whole by the agent (one update of
 * the outer slot), so a packet is judged by the old or the new policy, never
 * by a half-written one.
 *
 * Lookup order: the one statement of it. The C++ reference
 * (agent/compile/verdict.cpp, which `smik explain` and the differential
 * kernel test use) follows these steps and cites their numbers; the code
 * below marks them "step N".
 *
 * smik_to_pod (host veth egress: packets going into the pod)
 *   1. Not IP: pass. A truncated IP or L4 header: drop (malformed).
 *   2. A later fragment: the verdict of its datagram's first fragment; drop
 *      (fragment) when that was not seen.
 *   3. Neighbour and router discovery, IPv6 link setup: pass (on a veth they
 *      can only come from the host). An ICMP error quoting one of the pod's
 *      live flows: pass.
 *   4. The flow's live conntrack entry (an expired one, or a closed TCP one
 *      a new SYN reuses, counts as absent) judged under the policy
 *      generation now in force: its verdict (pass; drop (policy) if revoked).
 *      A passed TCP segment with payload of an entry the HTTP judge marked
 *      (SMIK_CT_F_RESET) becomes RSTs to both ends (reset_flow).
 *   5. No endpoint entry for the interface: drop (unhooked). The agent
 *      attaches only after writing the entry and detaches before deleting
 *      it, so a hook without one has lost it: fail closed, and count it.
 *   6. The peer's identity from its address (SMIK_ID_WORLD when unknown), the
 *      pod's from its endpoint. A conntrack entry of an older generation is
 *      judged again: another identity on either side deletes it (and the
 *      packet goes on to step 7); otherwise step 7 for the entry's own
 *      direction either keeps it or revokes it, and its verdict decides.
 *   7. The policy (policy_allows), first match wins:
 *      7a. no policy generation installed: only the node (SMIK_ID_HOST)
 *          passes: fail closed;
 *      7b. a grant {peer, pod, port, proto}: pass;
 *      7c. a grant {peer, pod, 0, proto} (every port of proto): pass;
 *      7d. the peer is the node and the pod's meta entry lacks
 *          SMIK_POL_F_HOST_JUDGED: pass (kubelet probes);
 *      7e. the pod's meta entry has SMIK_POL_F_ENFORCED: drop (policy; for
 *          neither TCP nor UDP, unsupported: no SMI route can name it);
 *      7f. otherwise (no meta entry: not enforced, permissive): pass.
 *      Guessing a flow's direction (step 12) counts only 7b-7d.
 *   8. Passed by 7 and opening a flow (UDP, an echo request, TCP without RST
 *      or FIN): a conntrack entry {peer -> pod}, INBOUND.
 *   9. A first fragment's verdict is kept for its later fragments (step 2).
 *   A flow denied by step 7 (not a revoked one: that is no new flow) may be
 *   answered after the verdict is counted: see "Answers to denied flows".
 *
 * smik_from_pod (host veth ingress: packets leaving the pod)
 *   10. Not IP: pass; malformed: drop. No endpoint entry: drop (unhooked,
 *       as in step 5). From an
 *       address not the pod's own (IPv6 link setup aside): drop (spoofed).
 *   11. Later fragments, ICMP errors and discovery, protocols without flows:
 *       pass. The flow's conntrack entry, judged again as in step 6 when its
 *       generation is old: its verdict.
 *   12. Otherwise the pod's own new flow passes and is recorded so that its
 *       replies pass step 4: REPLY, or INBOUND when it is UDP or a mid-flow
 *       TCP packet (the entry expired or never fit) that policy grants
 *       inbound (7b-7d), so that revoking that grant reaches it. A RST or a
 *       SYN|ACK (answering a SYN never admitted) and an echo reply record
 *       nothing.
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "smik_abi.h"
#include "conntrack.bpf.h"
#include "http_answers.bpf.h"
#include "ipcache.bpf.h"
#include "parse.bpf.h"
#include "telemetry.bpf.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_HLEN_ 14

char LICENSE[] SEC("license") = "GPL";

/* Host-side ifindex of a local meshed pod -> who it is and its addresses. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_ENDPOINTS);
  __type(key, __u32);
  __type(value, struct smik_endpoint);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_endpoints SEC(".maps");

/* The template every policy generation is created from. Sizes, not BTF
 * types: clang emits only forward declarations for types used nowhere else. */
struct smik_policy_inner {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_POLICY);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(key_size, sizeof(struct smik_policy_key));
  __uint(value_size, sizeof(struct smik_policy_value));
};

/* Slot 0: the policy now in force. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SMIK_ONE_SLOT);
  __type(key, __u32);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
  __array(values, struct smik_policy_inner);
} smik_policy SEC(".maps");

/* Slot 0: generation of the policy in smik_policy (moves after each swap). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_ONE_SLOT);
  __type(key, __u32);
  __type(value, struct smik_state);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_state SEC(".maps");

/* Verdicts of first fragments, for the later fragments of their datagram. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_FRAGS);
  __type(key, struct smik_frag_key);
  __type(value, struct smik_frag_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_frags SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SMIK_CT_COUNTER_MAX);
  __type(key, __u32);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ct_stats SEC(".maps");

/* Verdict counters by reason. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SMIK_REASON_MAX);
  __type(key, __u32);
  __type(value, struct smik_counter);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_reasons SEC(".maps");

/* New-flow verdicts per (source identity, destination identity, port, proto).
 * Not per-CPU: 64k edges x 24 bytes per CPU would be 300 MiB at 192 CPUs. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_EDGES);
  __type(key, struct smik_edge_key);
  __type(value, struct smik_edge_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_edges SEC(".maps");

/* Slot 0: settings the agent writes (--deny-response). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct smik_tc_config);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_tc_config SEC(".maps");

/* Answers to denied flows, per source address: a token bucket each. LRU: a
 * source evicted starts again with a full bucket, which bounds nothing
 * worse than one more burst to that source. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_ANSWER_LIMITS);
  __type(key, struct smik_ip_key);
  __type(value, struct smik_answer_limit);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_answer_limits SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SMIK_ANSWER_COUNTER_MAX);
  __type(key, __u32);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_answer_stats SEC(".maps");

static __always_inline int count(struct __sk_buff *skb, __u32 reason) {
  struct smik_counter *c = bpf_map_lookup_elem(&smik_reasons, &reason);
  if (c) {
    c->packets++;
    c->bytes += skb->len;
  }
  return reason == SMIK_REASON_FORWARDED ? TC_ACT_OK : TC_ACT_SHOT;
}

static __always_inline void count_edge(struct __sk_buff *skb, __u32 src, __u32 dst,
                                       __u16 dport, __u8 proto, int allowed) {
  struct smik_edge_key k = {.src_id = src, .dst_id = dst, .dport = dport, .proto = proto};
  struct smik_edge_value *v = bpf_map_lookup_elem(&smik_edges, &k);
  if (!v) {
    struct smik_edge_value zero = {};
    bpf_map_update_elem(&smik_edges, &k, &zero, BPF_NOEXIST);
    v = bpf_map_lookup_elem(&smik_edges, &k);
    if (!v)
      return;
  }
  if (allowed) {
    __sync_fetch_and_add(&v->flows_allowed, 1);
  } else {
    __sync_fetch_and_add(&v->packets_denied, 1);
    __sync_fetch_and_add(&v->bytes_denied, skb->len);
  }
}

static __always_inline void ct_count(__u32 idx) {
  __u64 *c = bpf_map_lookup_elem(&smik_ct_stats, &idx);
  if (c)
    (*c)++;
}

static __always_inline __u32 identity_of(__u8 family, const __u8 *addr) {
  struct smik_ip_key k = {.family = family};
  copy16(k.addr, addr);
  struct smik_ip_info *info = bpf_map_lookup_elem(&smik_ipcache, &k);
  return info ? info->identity : SMIK_ID_WORLD;
}

static __always_inline __u32 current_gen(void) {
  __u32 zero = 0;
  struct smik_state *st = bpf_map_lookup_elem(&smik_state, &zero);
  return st ? st->policy_gen : 0;
}

/* Step 7: the allow-list. One inner map holds the grants and the meta entry
 * (whether the node is judged, whether an unmatched flow is denied), so a
 * swap changes all of it together.
 * explicit_only: only 7b-7d count (a flow's direction is being guessed). */
static __always_inline int policy_allows(__u32 src, __u32 dst, __u16 dport, __u8 proto,
                                         int explicit_only) {
  __u32 zero = 0;
  void *policy = bpf_map_lookup_elem(&smik_policy, &zero);
  if (!policy)
    return src == SMIK_ID_HOST; /* 7a */
  struct smik_policy_key k = {.src_id = src, .dst_id = dst, .dport = dport, .proto = proto};
  if (dport && bpf_map_lookup_elem(policy, &k))
    return 1; /* 7b */
  k.dport = 0;
  if (bpf_map_lookup_elem(policy, &k))
    return 1; /* 7c */
  struct smik_policy_key meta = {.src_id = SMIK_ID_META, .dst_id = dst};
  struct smik_policy_value *m = bpf_map_lookup_elem(policy, &meta);
  __u32 flags = m ? m->flags : 0;
  if (src == SMIK_ID_HOST && !(flags & SMIK_POL_F_HOST_JUDGED))
    return 1; /* 7d */
  if (explicit_only)
    return 0;
  return !(flags & SMIK_POL_F_ENFORCED); /* 7e, 7f */
}

/* Telemetry: a denied attempt counts once at the server's edge (however often
 * its SYN is retransmitted) and is remembered for the client's sockops. */
static __always_inline void record_denial(const struct smik_ct_key *ck, const struct pkt *p,
                                          __u16 dport) {
  __u8 one = 1;
  if (bpf_map_update_elem(&smik_denied, ck, &one, BPF_NOEXIST) != 0)
    return; /* a retransmit of an attempt already counted */
  struct smik_conn_key ek = {.port = dport, .proto = p->proto, .family = p->family};
  copy16(ek.client, p->saddr);
  copy16(ek.server, p->daddr);
  struct smik_conn_stats *s = conn_stats(&ek);
  if (s)
    conn_inc(s->server_policy);
  emit_event(&ek, SMIK_EV_POLICY_DENY, SMIK_FAIL_POLICY);
}

static __always_inline void ct_key_of(struct smik_ct_key *k, const struct pkt *p, int reversed) {
  k->proto = p->proto;
  k->family = p->family;
  if (reversed) {
    copy16(k->saddr, p->daddr);
    copy16(k->daddr, p->saddr);
    k->sport = p->dport;
    k->dport = p->sport;
  } else {
    copy16(k->saddr, p->saddr);
    copy16(k->daddr, p->daddr);
    k->sport = p->sport;
    k->dport = p->dport;
  }
}

/* Protocols whose flows a reply can be matched to. */
static __always_inline int keyable(const struct pkt *p) {
  return p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->icmp == ICMP_ECHO_REQUEST ||
         p->icmp == ICMP_ECHO_REPLY;
}

/* A port as policy names it (host order); protocols without ports have 0. */
static __always_inline __u16 policy_port(__u8 proto, __u16 port_be) {
  return (proto == IPPROTO_TCP || proto == IPPROTO_UDP) ? bpf_ntohs(port_be) : 0;
}

enum rejudged { RJ_KEEP = 0, RJ_REVOKE = 1, RJ_IDENTITY = 2 };

/* An entry judged again under a new generation: the identities it was made
 * with must still hold, and the policy must still allow it in its direction
 * (an inbound flow: peer -> pod; the pod's own flow: pod -> peer, which only
 * a destination enforced on this node can refuse). */
static __always_inline int rejudge(const struct smik_ct_key *k, const struct smik_ct_value *ct,
                                   __u32 peer, __u32 pod) {
  if (peer != ct->src_id || pod != ct->dst_id)
    return RJ_IDENTITY;
  int ok = (ct->flags & SMIK_CT_F_INBOUND)
               ? policy_allows(peer, pod, policy_port(k->proto, k->dport), k->proto, 0)
               : policy_allows(pod, peer, policy_port(k->proto, k->sport), k->proto, 0);
  return ok ? RJ_KEEP : RJ_REVOKE;
}

/* Brings a found entry up to generation gen. Returns the entry, or NULL when
 * it belonged to another workload (then it is gone). */
static __always_inline struct smik_ct_value *ct_validate(const struct smik_ct_key *k,
                                                         struct smik_ct_value *ct, __u32 gen,
                                                         __u32 peer, __u32 pod, __u64 now) {
  int r = rejudge(k, ct, peer, pod);
  if (r == RJ_IDENTITY) {
    bpf_map_delete_elem(&smik_ct, k);
    ct_count(SMIK_CT_IDENTITY_CHANGED);
    return 0;
  }
  if (r == RJ_REVOKE) {
    if (!(ct->flags & SMIK_CT_F_REVOKED))
      ct_count(SMIK_CT_REVOKED);
    ct->flags |= SMIK_CT_F_REVOKED;
    ct->last_seen_ns = now;
  } else {
    ct->flags &= ~SMIK_CT_F_REVOKED;
  }
  ct->policy_gen = gen;
  return ct;
}

/* A live entry of the flow (expired ones count as absent; a new SYN on a
 * closed TCP entry starts a new flow). */
static __always_inline struct smik_ct_value *ct_find(const struct smik_ct_key *k,
                                                     const struct pkt *p, __u64 now) {
  struct smik_ct_value *ct = bpf_map_lookup_elem(&smik_ct, k);
  if (!ct || smik_ct_expired(k, ct, now))
    return 0;
  if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN_ | TCP_ACK_)) == TCP_SYN_ &&
      (ct->state & SMIK_CT_S_CLOSED))
    return 0;
  return ct;
}

/* Keeps an entry alive and follows TCP to its close. */
static __always_inline void ct_touch(struct smik_ct_value *ct, const struct pkt *p, __u64 now,
                                     __u8 fin_bit) {
  if (now - ct->last_seen_ns > SMIK_CT_REFRESH_NS)
    ct->last_seen_ns = now;
  if (p->proto != IPPROTO_TCP || !(p->tcp_flags & (TCP_FIN_ | TCP_RST_)))
    return;
  __u8 st = ct->state;
  if (p->tcp_flags & TCP_RST_)
    st |= SMIK_CT_S_CLOSED;
  else
    st |= fin_bit;
  if ((st & (SMIK_CT_S_FIN_IN | SMIK_CT_S_FIN_OUT)) == (SMIK_CT_S_FIN_IN | SMIK_CT_S_FIN_OUT))
    st |= SMIK_CT_S_CLOSED;
  if ((st & SMIK_CT_S_CLOSED) && !(ct->state & SMIK_CT_S_CLOSED)) {
    ct_count(SMIK_CT_CLOSED);
    ct->last_seen_ns = now; /* the short lifetime runs from the close */
  }
  ct->state = st;
}

/* The verdict of a live entry: a revoked flow stays revoked while its peers
 * keep trying; any other passes and is kept alive. */
static __always_inline __u32 ct_verdict(struct smik_ct_value *ct, const struct pkt *p, __u64 now,
                                        __u8 fin_bit) {
  if (ct->flags & SMIK_CT_F_REVOKED) {
    ct->last_seen_ns = now;
    return SMIK_REASON_POLICY;
  }
  ct_touch(ct, p, now, fin_bit);
  return SMIK_REASON_FORWARDED;
}

static __always_inline void ct_insert(const struct smik_ct_key *k, __u8 flags, __u32 peer,
                                      __u32 pod, __u32 gen, __u64 now) {
  struct smik_ct_value v = {
      .last_seen_ns = now, .policy_gen = gen, .src_id = peer, .dst_id = pod, .flags = flags};
  if (bpf_map_update_elem(&smik_ct, k, &v, BPF_ANY) == 0)
    ct_count(SMIK_CT_CREATED);
  else
    ct_count(SMIK_CT_INSERT_FAILED);
}

/* Neighbour discovery, DAD and MLD (behind a hop-by-hop header) run before
 * and beside the pod's own address, from link-local (fe80::/10) or the
 * unspecified address. Such packets never leave the link: no spoofing risk. */
static __always_inline int is_ipv6_link_setup(const struct pkt *p) {
  if (p->family != SMIK_AF_INET6)
    return 0;
  if (p->saddr[0] == 0xfe && (p->saddr[1] & 0xc0) == 0x80)
    return 1;
  const __u8 unspecified[16] = {};
  return equal16(p->saddr, unspecified);
}

static __always_inline void frag_key_of(struct smik_frag_key *k, const struct pkt *p) {
  copy16(k->saddr, p->saddr);
  copy16(k->daddr, p->daddr);
  k->id = p->frag_id;
  k->proto = p->frag_proto;
  k->family = p->family;
}

/* A later fragment has no ports: it follows its first fragment's verdict. */
static __always_inline __u32 later_fragment(const struct pkt *p) {
  struct smik_frag_key k = {};
  frag_key_of(&k, p);
  struct smik_frag_value *v = bpf_map_lookup_elem(&smik_frags, &k);
  if (!v)
    return SMIK_REASON_FRAGMENT;
  return v->allowed ? SMIK_REASON_FORWARDED : SMIK_REASON_POLICY;
}

static __always_inline void first_fragment(const struct pkt *p, __u32 reason) {
  struct smik_frag_key k = {};
  frag_key_of(&k, p);
  struct smik_frag_value v = {.allowed = reason == SMIK_REASON_FORWARDED};
  bpf_map_update_elem(&smik_frags, &k, &v, BPF_ANY);
  ct_count(SMIK_CT_FRAGMENTS_TRACKED);
}

/* Is the ICMP error about a live flow of the pod? It quotes the packet the
 * pod sent: that packet's tuple, reversed, is the flow's key. */
static __always_inline int icmp_error_related(struct __sk_buff *skb, const struct pkt *p,
                                              __u64 now) {
  if (!p->l4_off)
    return 0;
  struct smik_ct_key k = {.family = p->family};
  __u32 off = (__u32)p->l4_off + 8;
  __u8 proto;
  if (p->family == SMIK_AF_INET) {
    __u8 ip[20];
    if (bpf_skb_load_bytes(skb, off, ip, 20) != 0)
      return 0;
    __u32 ihl = (ip[0] & 0xf) * 4;
    if (ihl < 20)
      return 0;
    proto = ip[9];
    __builtin_memcpy(k.saddr, ip + 16, 4);
    __builtin_memcpy(k.daddr, ip + 12, 4);
    off += ihl;
  } else {
    __u8 ip[40];
    if (bpf_skb_load_bytes(skb, off, ip, 40) != 0)
      return 0;
    proto = ip[6];
    copy16(k.saddr, ip + 24);
    copy16(k.daddr, ip + 8);
    off += 40;
  }
  __u8 l4[8];
  if (bpf_skb_load_bytes(skb, off, l4, 8) != 0)
    return 0;
  if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
    __builtin_memcpy(&k.sport, l4 + 2, 2);
    __builtin_memcpy(&k.dport, l4, 2);
  } else if (proto == (p->family == SMIK_AF_INET ? IPPROTO_ICMP_ : IPPROTO_ICMPV6_)) {
    __u8 request = p->family == SMIK_AF_INET ? 8 : 128;
    __u8 reply = p->family == SMIK_AF_INET ? 0 : 129;
    if (l4[0] == request)
      __builtin_memcpy(&k.dport, l4 + 4, 2);
    else if (l4[0] == reply)
      __builtin_memcpy(&k.sport, l4 + 4, 2);
    else
      return 0;
  } else {
    return 0;
  }
  k.proto = proto;
  if (!equal16(k.daddr, p->daddr))
    return 0; /* about another host's packet */
  struct smik_ct_value *ct = bpf_map_lookup_elem(&smik_ct, &k);
  return ct && !smik_ct_expired(&k, ct, now) && !(ct->flags & SMIK_CT_F_REVOKED);
}

/* The verdict of a live entry into the pod; an entry the HTTP judge marked
 * for reset is handed out (*marked) for its segment to be tried by
 * reset_flow. */
static __always_inline __u32 ct_verdict_in(struct smik_ct_value *ct, const struct pkt *p,
                                           __u64 now, struct smik_ct_value **marked) {
  __u32 reason = ct_verdict(ct, p, now, SMIK_CT_S_FIN_IN);
  if (reason == SMIK_REASON_FORWARDED && (ct->flags & SMIK_CT_F_RESET))
    *marked = ct;
  return reason;
}

/* A packet into the pod: steps 3 to 8. *new_flow_denied: step 7 denied it
 * (a new flow, which may be answered; a revoked one is not new). *marked:
 * see ct_verdict_in. */
static __always_inline __u32 judge_to_pod(struct __sk_buff *skb, const struct pkt *p,
                                          int *new_flow_denied,
                                          struct smik_ct_value **marked) {
  /* step 3 */
  if (p->icmp == ICMP_INFRA || is_ipv6_link_setup(p))
    return SMIK_REASON_FORWARDED;
  __u32 gen = current_gen();
  __u64 now = bpf_ktime_get_coarse_ns();
  if (p->icmp == ICMP_ERROR && icmp_error_related(skb, p, now))
    return SMIK_REASON_FORWARDED;
  struct smik_ct_key ck = {};
  ct_key_of(&ck, p, 0);
  /* step 4: established flows first, one lookup decides most packets */
  struct smik_ct_value *ct = keyable(p) ? ct_find(&ck, p, now) : 0;
  if (ct && ct->policy_gen == gen)
    return ct_verdict_in(ct, p, now, marked);

  /* step 5 */
  __u32 ifindex = skb->ifindex;
  struct smik_endpoint *ep = bpf_map_lookup_elem(&smik_endpoints, &ifindex);
  if (!ep)
    return SMIK_REASON_UNHOOKED;
  /* step 6 */
  __u32 pod = ep->identity;
  __u32 peer = identity_of(p->family, p->saddr);
  if (ct && (ct = ct_validate(&ck, ct, gen, peer, pod, now)))
    return ct_verdict_in(ct, p, now, marked);

  /* step 7 */
  __u16 dport = policy_port(p->proto, p->dport);
  if (!policy_allows(peer, pod, dport, p->proto, 0)) {
    count_edge(skb, peer, pod, dport, p->proto, 0);
    record_denial(&ck, p, dport);
    *new_flow_denied = 1;
    /* SMI routes name TCP and UDP only: anything else can never be granted */
    int l4 = p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP;
    return l4 ? SMIK_REASON_POLICY : SMIK_REASON_UNSUPPORTED;
  }
  /* step 8: an allowed packet opens (or, mid-flow, rebuilds) the peer's
   * flow; a stray RST, FIN or echo reply opens nothing */
  int opens = p->proto == IPPROTO_UDP || p->icmp == ICMP_ECHO_REQUEST ||
              (p->proto == IPPROTO_TCP && !(p->tcp_flags & (TCP_RST_ | TCP_FIN_)));
  if (opens) {
    ct_insert(&ck, SMIK_CT_F_INBOUND, peer, pod, gen, now);
    count_edge(skb, peer, pod, dport, p->proto, 1);
  }
  return SMIK_REASON_FORWARDED;
}

/* ---- Answers to denied flows ---------------------------------------------
 *
 * With --deny-response reject (the agent's default) a denied new TCP or UDP
 * flow is answered, so that its client fails within a round trip instead of
 * retrying its SYN for two minutes: a denied SYN gets a TCP RST|ACK, a
 * denied UDP datagram ICMP "communication administratively prohibited"
 * (IPv4 type 3 code 13, ICMPv6 type 1 code 1).
 *
 * A RST for TCP, not the ICMP error, though the ICMP code would name the
 * policy: the client's kernel takes an ICMP error for a socket its user
 * holds locked as a soft error only, and between pods of one node the whole
 * round trip runs inside the client's connect() (its SYN is forwarded, judged
 * and answered in the softirq its own send runs), so the connection would
 * wait for its SYN retransmit, a second later. A RST that finds the socket
 * locked is queued and handled when connect() lets go: ECONNREFUSED at once.
 * That the refusal is a policy's is what smik's telemetry says (the flow is
 * counted as denied by policy, never "refused") and `smik explain`.
 *
 * It can never amplify: only a flow's first packet is answered (a TCP SYN
 * without ACK, RST or FIN; a UDP datagram), never a fragment, an ICMP
 * message, a RST, a packet to or from a broadcast or multicast address, or
 * a GSO batch; at most one answer per denied packet (the answer is that
 * packet, no bigger: a RST is at most the SYN's size, an ICMP error at most
 * 62 + 128 bytes), and per source address at most SMIK_DENY_ANSWER_BURST
 * back to back and SMIK_DENY_ANSWERS_PER_SEC sustained (smik_answer_limits).
 *
 * The answer is the denied packet turned round in place (no copy, no second
 * packet): for UDP trimmed to its first ANSWER_QUOTE bytes (its IP header and
 * the start of its L4 header, which the client's kernel matches to its
 * socket) with a new IP and ICMP header in front; for TCP new IP and TCP
 * headers in place of the SYN's. It is put in at the ingress of the same
 * veth, as if the pod had sent it, and the node routes it like any packet
 * of the pod: out of the source pod's host-side veth to the source pod when
 * it is local, to its node otherwise, up the node's own stack for the node.
 * On the way it passes smik_from_pod here (a RST, or an ICMP error, from the
 * pod's own address: steps 11 and 12) and the source pod's smik_to_pod (the
 * reply to, or an ICMP error quoting, the source's own live flow). */
#define ANSWER_QUOTE 128

static __always_inline void answer_count(__u32 idx) {
  __u64 *c = bpf_map_lookup_elem(&smik_answer_stats, &idx);
  if (c)
    (*c)++;
}

/* A flow's first packet, between unicast addresses: the only kind answered. */
static __always_inline int answerable(struct __sk_buff *skb, const struct pkt *p) {
  if (p->frag != FRAG_NONE || skb->gso_segs > 1)
    return 0;
  if (p->proto == IPPROTO_TCP) {
    if ((p->tcp_flags & (TCP_SYN_ | TCP_ACK_ | TCP_RST_ | TCP_FIN_)) != TCP_SYN_)
      return 0;
  } else if (p->proto != IPPROTO_UDP) {
    return 0;
  }
  __u8 dmac0;
  if (bpf_skb_load_bytes(skb, 0, &dmac0, 1) != 0 || (dmac0 & 1))
    return 0; /* an Ethernet group address */
  if (p->family == SMIK_AF_INET) {
    /* 224/4 multicast, 240/4 and 255.255.255.255; 0/8 and 127/8 sources */
    __u8 s0 = p->saddr[0];
    return p->daddr[0] < 224 && s0 < 224 && s0 != 0 && s0 != 127;
  }
  const __u8 loopback[16] = {[15] = 1}, unspecified[16] = {};
  return p->daddr[0] != 0xff && p->saddr[0] != 0xff && !equal16(p->saddr, loopback) &&
         !equal16(p->saddr, unspecified);
}

/* The source's token bucket, as GCRA: its theoretical arrival time moves one
 * interval per answer and may run at most burst - 1 intervals ahead of now.
 * Not atomic: two CPUs answering the same source at the same instant may
 * both pass, still one answer per denied packet. */
static __always_inline int answer_allowed(const struct pkt *p, const struct smik_tc_config *cfg) {
  __u64 rate = cfg->answers_per_sec ? cfg->answers_per_sec : SMIK_DENY_ANSWERS_PER_SEC;
  __u64 burst = cfg->answer_burst ? cfg->answer_burst : SMIK_DENY_ANSWER_BURST;
  __u64 interval = SMIK_SEC / rate;
  __u64 now = bpf_ktime_get_ns();
  struct smik_ip_key k = {.family = p->family};
  copy16(k.addr, p->saddr);
  struct smik_answer_limit *l = bpf_map_lookup_elem(&smik_answer_limits, &k);
  if (!l) {
    struct smik_answer_limit fresh = {.tat_ns = now + interval};
    return bpf_map_update_elem(&smik_answer_limits, &k, &fresh, BPF_NOEXIST) == 0;
  }
  __u64 tat = l->tat_ns > now ? l->tat_ns : now;
  if (tat - now > (burst - 1) * interval)
    return 0;
  l->tat_ns = tat + interval;
  return 1;
}

static __always_inline __u16 csum_fold_(__s64 sum) {
  __u32 s = (__u32)sum;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return (__u16)~s;
}

/* The Ethernet header with its addresses swapped: the answer enters the
 * host as the pod's own packet. */
static __always_inline int load_swapped_eth(struct __sk_buff *skb, __u8 *swapped) {
  if (bpf_skb_load_bytes(skb, 0, swapped + 6, 6) != 0 ||
      bpf_skb_load_bytes(skb, 6, swapped, 6) != 0 ||
      bpf_skb_load_bytes(skb, 12, swapped + 12, 2) != 0)
    return -1;
  return 0;
}

/* The builders are functions of their own (bpf-to-bpf calls): inlined
 * together into smik_to_pod their buffers overflowed its 512-byte stack. */

/* Turns the denied datagram into its ICMP answer (see above). Non-zero when a
 * helper failed: the packet is then dropped, whatever it has become. */
static __noinline int build_answer(struct __sk_buff *skb, const struct pkt *p) {
  int v4 = p->family == SMIK_AF_INET;
  /* 64 bits: a 32-bit length is checked in one register and passed in
   * another (its zero-extended copy), which the verifier cannot follow */
  __u64 quote = (__u64)skb->len - ETH_HLEN_;
  if (quote > ANSWER_QUOTE)
    quote = ANSWER_QUOTE;
  asm volatile("" : "+r"(quote));
  if (quote < 28 || quote > ANSWER_QUOTE)
    return -1;
  /* zero beyond the quote: an odd length's checksum pads with a zero byte */
  __u8 body[ANSWER_QUOTE] = {};
  if (bpf_skb_load_bytes(skb, ETH_HLEN_, body, quote) != 0)
    return -1;
  __u8 swapped[ETH_HLEN_];
  if (load_swapped_eth(skb, swapped) != 0)
    return -1;

  __u8 icmp[8] = {};
  __u32 icmp_len = 8 + (__u32)quote;
  __s64 sum;
  __u8 ip[40] = {};
  __u32 ip_len;
  if (v4) {
    ip_len = 20;
    ip[0] = 0x45;
    ip[1] = 0xc0; /* precedence "internetwork control", as the kernel's own errors */
    ip[2] = (ip_len + icmp_len) >> 8;
    ip[3] = (ip_len + icmp_len) & 0xff;
    ip[8] = 64;
    ip[9] = IPPROTO_ICMP_;
    __builtin_memcpy(ip + 12, p->daddr, 4);
    __builtin_memcpy(ip + 16, p->saddr, 4);
    __u16 ipsum = csum_fold_(bpf_csum_diff(0, 0, (__be32 *)ip, 20, 0));
    __builtin_memcpy(ip + 10, &ipsum, 2);
    icmp[0] = 3;  /* destination unreachable */
    icmp[1] = 13; /* communication administratively prohibited */
    sum = 0;
  } else {
    ip_len = 40;
    ip[0] = 0x60;
    ip[4] = icmp_len >> 8;
    ip[5] = icmp_len & 0xff;
    ip[6] = IPPROTO_ICMPV6_;
    ip[7] = 64;
    copy16(ip + 8, p->daddr);
    copy16(ip + 24, p->saddr);
    icmp[0] = 1; /* destination unreachable */
    icmp[1] = 1; /* communication with destination administratively prohibited */
    /* the pseudo-header: the addresses (as in the header), upper-layer
     * length, next header */
    __u8 pseudo[8] = {};
    pseudo[2] = icmp_len >> 8;
    pseudo[3] = icmp_len & 0xff;
    pseudo[7] = IPPROTO_ICMPV6_;
    sum = bpf_csum_diff(0, 0, (__be32 *)(ip + 8), 32, 0);
    sum = bpf_csum_diff(0, 0, (__be32 *)pseudo, 8, (__wsum)sum);
  }
  sum = bpf_csum_diff(0, 0, (__be32 *)icmp, 8, (__wsum)sum);
  sum = bpf_csum_diff(0, 0, (__be32 *)body, ANSWER_QUOTE, (__wsum)sum);
  if (sum < 0)
    return -1;
  __u16 icmpsum = csum_fold_(sum);
  __builtin_memcpy(icmp + 2, &icmpsum, 2);

  if (bpf_skb_change_tail(skb, ETH_HLEN_ + quote, 0) != 0 ||
      bpf_skb_adjust_room(skb, ip_len + 8, BPF_ADJ_ROOM_MAC, 0) != 0 ||
      bpf_skb_store_bytes(skb, 0, swapped, ETH_HLEN_, 0) != 0 ||
      bpf_skb_store_bytes(skb, ETH_HLEN_, ip, ip_len, 0) != 0 ||
      bpf_skb_store_bytes(skb, ETH_HLEN_ + ip_len, icmp, 8, 0) != 0)
    return -1;
  /* a verdict on the old L4 checksum says nothing of the new packet's */
  bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
  return 0;
}

/* The HTTP judge's answers as the tc program sends them when owed (see
 * answer_owed): no body, and the connection closed. Zero-padded to
 * OWED_MAX, a multiple of 4, so the checksum can sum the whole row. */
#define OWED_TEXT(code, text) "HTTP/1.1 " code " " text "\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
#define OWED_ROW(code, text) OWED_TEXT(code, text),
#define OWED_LEN(code, text) sizeof(OWED_TEXT(code, text)) - 1,
#define OWED_MAX 96
const char owed_answer[SMIK_HTTP_ANSWER_COUNT][OWED_MAX] = {SMIK_HTTP_ANSWERS(OWED_ROW)};
static const __u32 owed_answer_len[SMIK_HTTP_ANSWER_COUNT] = {SMIK_HTTP_ANSWERS(OWED_LEN)};
_Static_assert(SMIK_HTTP_ANSWER_COUNT == 5, "write_rst stores each answer by its index");

/* A segment to write over an skb: fresh IP and TCP headers (no options)
 * behind the Ethernet header `eth`, from (saddr, ports[0..1]) to (daddr,
 * ports[2..3]), ports as on the wire; a payload when `answer` is set (1 +
 * its index in owed_answer). */
struct rst_spec {
  __u8 eth[ETH_HLEN_];
  __u8 ports[4];
  __u8 saddr[16];
  __u8 daddr[16];
  __u32 seq, ack;
  __u8 flags;
  __u8 v4;
  __u8 answer;
  __u8 window[2];
};

/* Writes r over the skb, which becomes exactly that segment (a RST, or an
 * owed answer). Non-zero when a helper failed (the skb is then whatever it
 * has become: drop it). */
static __noinline int write_rst(struct __sk_buff *skb, const struct rst_spec *r) {
  __u32 plen = 0;
  const char *payload = 0;
  if (r->answer) {
    __u32 h = r->answer - 1u;
    if (h >= SMIK_HTTP_ANSWER_COUNT)
      return -1;
    payload = owed_answer[h];
    plen = owed_answer_len[h];
    if (plen == 0 || plen > OWED_MAX)
      return -1;
  }
  __u32 l4_len = 20 + plen;
  __u8 tcp[20] = {};
  __builtin_memcpy(tcp, r->ports, 4);
  __u32 seq = r->seq, ack = r->ack;
  tcp[4] = seq >> 24;
  tcp[5] = seq >> 16;
  tcp[6] = seq >> 8;
  tcp[7] = seq;
  tcp[8] = ack >> 24;
  tcp[9] = ack >> 16;
  tcp[10] = ack >> 8;
  tcp[11] = ack;
  tcp[12] = 5 << 4;
  tcp[13] = r->flags;
  tcp[14] = r->window[0];
  tcp[15] = r->window[1];
  __u8 ip[40] = {};
  __u32 ip_len;
  __s64 sum;
  if (r->v4) {
    ip_len = 20;
    ip[0] = 0x45;
    ip[2] = (20 + l4_len) >> 8; /* total length */
    ip[3] = (20 + l4_len) & 0xff;
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    __builtin_memcpy(ip + 12, r->saddr, 4);
    __builtin_memcpy(ip + 16, r->daddr, 4);
    __u16 ipsum = csum_fold_(bpf_csum_diff(0, 0, (__be32 *)ip, 20, 0));
    __builtin_memcpy(ip + 10, &ipsum, 2);
    sum = bpf_csum_diff(0, 0, (__be32 *)(ip + 12), 8, 0); /* the pseudo-header's addresses */
  } else {
    ip_len = 40;
    ip[0] = 0x60;
    ip[4] = l4_len >> 8; /* payload length */
    ip[5] = l4_len & 0xff;
    ip[6] = IPPROTO_TCP;
    ip[7] = 64;
    copy16(ip + 8, r->saddr);
    copy16(ip + 24, r->daddr);
    sum = bpf_csum_diff(0, 0, (__be32 *)(ip + 8), 32, 0);
  }
  /* The rest of either pseudo-header, in ones' complement the same words:
   * the protocol and the TCP length. */
  __u8 pseudo[4] = {0, IPPROTO_TCP, l4_len >> 8, l4_len & 0xff};
  if (sum >= 0)
    sum = bpf_csum_diff(0, 0, (__be32 *)pseudo, 4, (__wsum)sum);
  if (sum >= 0)
    sum = bpf_csum_diff(0, 0, (__be32 *)tcp, 20, (__wsum)sum);
  if (sum >= 0 && payload) /* the row's zero padding adds nothing */
    sum = bpf_csum_diff(0, 0, (__be32 *)payload, OWED_MAX, (__wsum)sum);
  if (sum < 0)
    return -1;
  __u16 tcpsum = csum_fold_(sum);
  __builtin_memcpy(tcp + 16, &tcpsum, 2);
  if (bpf_skb_change_tail(skb, ETH_HLEN_ + ip_len + l4_len, 0) != 0 ||
      bpf_skb_store_bytes(skb, 0, r->eth, ETH_HLEN_, 0) != 0 ||
      bpf_skb_store_bytes(skb, ETH_HLEN_, ip, ip_len, 0) != 0 ||
      bpf_skb_store_bytes(skb, ETH_HLEN_ + ip_len, tcp, 20, 0) != 0)
    return -1;
  if (payload) {
    /* each row's length a constant: the verifier cannot keep a loaded
     * length's bounds across the spills above */
    long stored = -1;
    switch (r->answer - 1u) {
#define OWED_STORE(i)                                                                     \
  case i:                                                                                 \
    stored = bpf_skb_store_bytes(skb, ETH_HLEN_ + ip_len + 20, owed_answer[i], owed_answer_len[i], 0); \
    break;
      OWED_STORE(0) OWED_STORE(1) OWED_STORE(2) OWED_STORE(3) OWED_STORE(4)
#undef OWED_STORE
    }
    if (stored != 0)
      return -1;
  }
  bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
  return 0;
}

/* A TCP segment's headers as the RST builders need them: where the TCP
 * header starts, the segment's length and its first 20 bytes. An IPv4
 * header with options or an IPv6 extension header before TCP: -1 (not
 * answered: the fixed layout is what makes the rewrite safe). */
struct tcp_seg {
  __u32 seg_len; /* TCP header and payload */
  __u32 doff;    /* TCP header length */
  __u32 seq, ack;
  __u8 th[20];
};

static __always_inline int load_tcp_seg(struct __sk_buff *skb, int v4, struct tcp_seg *t) {
  __u8 l3[40];
  __u32 l4_off;
  if (v4) {
    if (bpf_skb_load_bytes(skb, ETH_HLEN_, l3, 20) != 0 || l3[0] != 0x45)
      return -1;
    l4_off = ETH_HLEN_ + 20;
    t->seg_len = (((__u32)l3[2] << 8) | l3[3]) - 20;
  } else {
    if (bpf_skb_load_bytes(skb, ETH_HLEN_, l3, 40) != 0 || l3[6] != IPPROTO_TCP)
      return -1;
    l4_off = ETH_HLEN_ + 40;
    t->seg_len = ((__u32)l3[4] << 8) | l3[5];
  }
  if (bpf_skb_load_bytes(skb, l4_off, t->th, 20) != 0)
    return -1;
  t->doff = (t->th[12] >> 4) * 4;
  if (t->seg_len < t->doff)
    return -1;
  __u8 *h = t->th;
  t->seq = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
  t->ack = ((__u32)h[8] << 24) | ((__u32)h[9] << 16) | ((__u32)h[10] << 8) | h[11];
  return 0;
}

/* Addresses r back to the segment's sender: Ethernet, IP addresses and
 * ports turned round. Non-zero when the Ethernet header cannot be read. */
static __always_inline int rst_back(struct __sk_buff *skb, const struct pkt *p,
                                    const struct tcp_seg *t, struct rst_spec *r) {
  if (load_swapped_eth(skb, r->eth) != 0)
    return -1;
  __builtin_memcpy(r->ports, t->th + 2, 2);
  __builtin_memcpy(r->ports + 2, t->th, 2);
  copy16(r->saddr, p->daddr);
  copy16(r->daddr, p->saddr);
  return 0;
}

/* Turns a denied SYN into the RST|ACK that refuses it (RFC 9293 3.10.7.1:
 * no ACK in the segment, so seq 0 and ack = its seq + its length), back to
 * its sender. */
static __noinline int build_rst(struct __sk_buff *skb, const struct pkt *p) {
  struct tcp_seg t = {};
  if (load_tcp_seg(skb, p->family == SMIK_AF_INET, &t) != 0)
    return -1;
  struct rst_spec r = {.v4 = p->family == SMIK_AF_INET, .flags = TCP_RST_ | TCP_ACK_};
  if (rst_back(skb, p, &t, &r) != 0)
    return -1;
  r.ack = t.seq + 1 + (t.seg_len - t.doff); /* the SYN counts one */
  return write_rst(skb, &r);
}

/* ---- Resets of flows the HTTP judge cannot see ---------------------------
 *
 * The HTTP judge's guard drops the payload of a connection to a governed
 * port whose socket the judge has no state for (established before the port
 * was governed, or the judge's tables were full): fail closed. Left at that,
 * both ends would hang: the client retransmits its request until TCP gives
 * up (minutes), and the server waits for it. So the guard also marks the
 * flow's conntrack entry (SMIK_CT_F_RESET), and here the flow's next segment
 * with payload into the pod (the client's retransmission, one RTO later)
 * becomes two RSTs: a clone turned back to the client, put in at the ingress
 * as the pod's own packet (as the answers to denied flows above), and the
 * segment itself, on its way into the pod, to the server's socket. Each
 * takes the sequence number its receiver expects next, so that both accept
 * it (RFC 5961 3.2): the client's is the segment's acknowledgement number,
 * the server's the segment's own sequence number (the guard dropped the
 * payload before TCP read it: the retransmission starts where the server
 * expects). Returns 1 for a segment that is not such (no payload, no ACK, a
 * SYN or RST, a GSO batch, options in the IPv4 header or an IPv6 extension
 * header: unchanged, judged as before), 0 when both RSTs went, -1 when a
 * helper failed (drop what the skb has become). */
static __noinline int reset_flow(struct __sk_buff *skb, const struct pkt *p) {
  int v4 = p->family == SMIK_AF_INET;
  struct tcp_seg t = {};
  if (skb->gso_segs > 1 || load_tcp_seg(skb, v4, &t) != 0 || t.seg_len == t.doff)
    return 1;
  __u8 flags = t.th[13];
  if (!(flags & TCP_ACK_) || (flags & (TCP_SYN_ | TCP_RST_)))
    return 1;
  __u8 eth[ETH_HLEN_];
  if (bpf_skb_load_bytes(skb, 0, eth, ETH_HLEN_) != 0)
    return 1;
  struct rst_spec r = {.v4 = v4, .flags = TCP_RST_, .seq = t.ack};
  if (rst_back(skb, p, &t, &r) != 0)
    return 1;
  if (write_rst(skb, &r) != 0 || bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS) != 0)
    return -1;
  __builtin_memcpy(r.eth, eth, ETH_HLEN_);
  __builtin_memcpy(r.ports, t.th, 4);
  copy16(r.saddr, p->saddr);
  copy16(r.daddr, p->daddr);
  r.seq = t.seq;
  return write_rst(skb, &r) != 0 ? -1 : 0;
}

/* ---- Answers the HTTP judge owes -----------------------------------------
 *
 * The judge refused a request pipelined behind requests the server had not
 * answered yet, and holds its answer back until theirs are out (or, when
 * where they end is not known, SMIK_CT_ANSWER_RESET_NEXT: the server's
 * next segment, whichever it is, and a reset instead of the answer): its
 * response framer marks the flow (SMIK_CT_F_ANSWER) at the skb that
 * completes the server's last answer, with that skb's end in the server's
 * sequence space (smik_ct_answers). The segment out of the pod that ends
 * there (that skb; or, if it was not recognised, the server's next ACK,
 * which starts there) makes three packets:
 * - itself, unchanged, put in again at this ingress (a clone; the flow is
 *   no longer marked when this program sees it again);
 * - the answer with a FIN, in the server's place: sequence number `end`,
 *   the segment's acknowledgement and window, put in the same way after it,
 *   so the client reads it after the server's last answer and then the end
 *   of the stream, as after a refusal answered at once;
 * - a RST into the pod at the sequence number the server expects next (the
 *   segment's acknowledgement number): the server's stream never had the
 *   answer, so its socket can take no part in the rest of the connection.
 * Returns 1 for a segment that is not that one (unchanged), 0 when the skb
 * has become the RST (to redirect into the pod), -1 when a helper failed
 * (drop what the skb has become). A failure is counted with the answers to
 * denied flows (SMIK_ANSWER_FAILED). */
static __noinline int answer_owed(struct __sk_buff *skb, const struct pkt *p,
                                  struct smik_ct_value *ct) {
  struct smik_ct_key k = {};
  ct_key_of(&k, p, 1);
  struct smik_ct_answer *ans = bpf_map_lookup_elem(&smik_ct_answers, &k);
  if (!ans) {
    ct->flags &= ~SMIK_CT_F_ANSWER;
    return 1;
  }
  int v4 = p->family == SMIK_AF_INET;
  struct tcp_seg t = {};
  if (load_tcp_seg(skb, v4, &t) != 0)
    return 1;
  __u8 flags = t.th[13];
  if (!(flags & TCP_ACK_) || (flags & (TCP_SYN_ | TCP_RST_)))
    return 1;
  __u32 end = t.seq + (t.seg_len - t.doff);
  __u32 which = ans->answer;
  if (end != ans->seq && which != SMIK_CT_ANSWER_RESET_NEXT)
    return 1;
  bpf_map_delete_elem(&smik_ct_answers, &k);
  ct->flags &= ~SMIK_CT_F_ANSWER;
  /* SMIK_CT_ANSWER_RESET(_NEXT): a RST in the answer's place, which the
   * client accepts at exactly this sequence number (after the segment) */
  int reset = which == SMIK_CT_ANSWER_RESET || which == SMIK_CT_ANSWER_RESET_NEXT;
  struct rst_spec r = {.v4 = v4,
                       .flags = reset ? TCP_RST_ : TCP_ACK_ | TCP_PSH_ | TCP_FIN_,
                       .seq = end,
                       .ack = reset ? 0 : t.ack,
                       .answer = reset ? 0 : (__u8)(which + 1)};
  if (bpf_skb_load_bytes(skb, 0, r.eth, ETH_HLEN_) != 0)
    return 1;
  __builtin_memcpy(r.ports, t.th, 4);
  __builtin_memcpy(r.window, t.th + 14, 2);
  copy16(r.saddr, p->saddr);
  copy16(r.daddr, p->daddr);
  /* the clones come back through this program: marked, they pass */
  skb->mark = SMIK_TC_OWN_MARK;
  if (t.seg_len > t.doff && bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS) != 0) {
    /* the segment itself still goes, unchanged: the server's answer is
     * whole, the judge's is not sent (the client waits for the server to
     * close), without the mark meant for the clones */
    skb->mark = 0;
    answer_count(SMIK_ANSWER_FAILED);
    return 1;
  }
  if (write_rst(skb, &r) != 0 || bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS) != 0) {
    answer_count(SMIK_ANSWER_FAILED);
    return -1;
  }
  skb->mark = 0;
  ct->flags |= SMIK_CT_F_RESET_SERVER;
  /* one spec for both: two would not fit the stack under smik_from_pod's */
  __builtin_memset(&r, 0, sizeof r);
  r.v4 = v4;
  r.flags = TCP_RST_;
  r.seq = t.ack;
  if (rst_back(skb, p, &t, &r) != 0 || write_rst(skb, &r) != 0)
    return -1;
  return 0;
}

/* A segment the server sends after the judge's answer went in its place
 * (SMIK_CT_F_RESET_SERVER): a reset into the pod instead, at the segment's
 * acknowledgement number, the one sequence number the server accepts a
 * reset at. Returns 1 for a RST or SYN (unchanged), 0 when the skb has
 * become the reset (to redirect into the pod), -1 to drop it (a GSO batch,
 * a helper failed): nothing of the server's reaches the client after the
 * end of its stream. */
static __noinline int reset_server(struct __sk_buff *skb, const struct pkt *p) {
  int v4 = p->family == SMIK_AF_INET;
  struct tcp_seg t = {};
  if (load_tcp_seg(skb, v4, &t) != 0)
    return -1;
  __u8 flags = t.th[13];
  if (flags & (TCP_SYN_ | TCP_RST_))
    return 1;
  if (!(flags & TCP_ACK_) || skb->gso_segs > 1)
    return -1;
  struct rst_spec r = {.v4 = v4, .flags = TCP_RST_, .seq = t.ack};
  if (rst_back(skb, p, &t, &r) != 0 || write_rst(skb, &r) != 0)
    return -1;
  return 0;
}

/* A denied new flow's packet, counted already: answered, or dropped. */
static __always_inline int deny_response(struct __sk_buff *skb, const struct pkt *p) {
  __u32 zero = 0;
  struct smik_tc_config *cfg = bpf_map_lookup_elem(&smik_tc_config, &zero);
  if (!cfg || cfg->deny_response != SMIK_DENY_REJECT)
    return TC_ACT_SHOT;
  if (!answerable(skb, p)) {
    answer_count(SMIK_ANSWER_UNANSWERABLE);
    return TC_ACT_SHOT;
  }
  if (!answer_allowed(p, cfg)) {
    answer_count(SMIK_ANSWER_RATE_LIMITED);
    return TC_ACT_SHOT;
  }
  int built = p->proto == IPPROTO_TCP ? build_rst(skb, p) : build_answer(skb, p);
  if (built != 0) {
    answer_count(SMIK_ANSWER_FAILED);
    return TC_ACT_SHOT;
  }
  answer_count(SMIK_ANSWER_SENT);
  return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

SEC("tc")
int smik_to_pod(struct __sk_buff *skb) {
  struct pkt p = {};
  int r = parse_packet(skb, &p);
  if (r == PARSE_NOT_IP) /* step 1 */
    return count(skb, SMIK_REASON_FORWARDED);
  if (r == PARSE_MALFORMED)
    return count(skb, SMIK_REASON_MALFORMED);
  if (p.frag == FRAG_LATER) /* step 2 */
    return count(skb, later_fragment(&p));
  int new_flow_denied = 0;
  struct smik_ct_value *marked = 0;
  __u32 reason = judge_to_pod(skb, &p, &new_flow_denied, &marked);
  if (p.frag == FRAG_FIRST) /* step 9 */
    first_fragment(&p, reason);
  int act = count(skb, reason);
  if (new_flow_denied && reason == SMIK_REASON_POLICY)
    act = deny_response(skb, &p);
  if (marked && p.proto == IPPROTO_TCP && p.frag == FRAG_NONE) {
    int r = reset_flow(skb, &p);
    if (r <= 0) {
      marked->flags &= ~SMIK_CT_F_RESET;
      marked->state |= SMIK_CT_S_CLOSED;
      ct_count(SMIK_CT_RESET);
    }
    if (r < 0)
      act = TC_ACT_SHOT;
  }
  return act;
}

static __always_inline int is_own_addr(const struct smik_endpoint *ep, const struct pkt *p) {
#pragma unroll
  for (int i = 0; i < SMIK_ENDPOINT_ADDRS; i++) {
    if (i < ep->naddrs && ep->families[i] == p->family &&
        equal16(ep->addrs[i], p->saddr))
      return 1;
  }
  return 0;
}

/* A packet from the pod, steps 11 and 12: its flow's entry is kept (or
 * made) so the replies pass; a revoked flow is cut in this direction too. */
static __always_inline __u32 judge_from_pod(const struct pkt *p, const struct smik_endpoint *ep,
                                            struct smik_ct_value **entry) {
  __u32 gen = current_gen();
  __u64 now = bpf_ktime_get_coarse_ns();
  __u32 pod = ep->identity;
  __u32 peer = 0;
  int have_peer = 0;
  struct smik_ct_key ck = {};
  ct_key_of(&ck, p, 1);
  struct smik_ct_value *ct = ct_find(&ck, p, now);
  if (ct && ct->policy_gen != gen) {
    peer = identity_of(p->family, p->daddr);
    have_peer = 1;
    ct = ct_validate(&ck, ct, gen, peer, pod, now);
  }
  if (ct) {
    *entry = ct; /* the caller looks at its SMIK_CT_F_ANSWER */
    return ct_verdict(ct, p, now, SMIK_CT_S_FIN_OUT);
  }

  __u8 flags = p->tcp_flags;
  int rebuilt = 0;
  if (p->proto == IPPROTO_TCP) {
    /* A SYN|ACK answers a SYN this program never admitted (or could not
     * record): it opens nothing, so a server answering a revoked or denied
     * client cannot reopen the flow for it. A RST opens nothing. */
    if ((flags & TCP_RST_) || (flags & (TCP_SYN_ | TCP_ACK_)) == (TCP_SYN_ | TCP_ACK_))
      return SMIK_REASON_FORWARDED;
    rebuilt = !(flags & TCP_SYN_); /* mid-flow: the entry expired or never fit */
  } else if (p->icmp == ICMP_ECHO_REPLY) {
    return SMIK_REASON_FORWARDED;
  }
  if (!have_peer)
    peer = identity_of(p->family, p->daddr);
  /* step 12: which side started it? A SYN or an echo request says;
   * otherwise a flow the policy grants inbound is taken as the peer's. */
  __u8 dir = SMIK_CT_F_REPLY;
  if (p->proto == IPPROTO_UDP || rebuilt) {
    if (policy_allows(peer, pod, policy_port(p->proto, p->sport), p->proto, 1))
      dir = SMIK_CT_F_INBOUND;
  }
  ct_insert(&ck, dir, peer, pod, gen, now);
  if (rebuilt)
    ct_count(SMIK_CT_REBUILT);
  return SMIK_REASON_FORWARDED;
}

SEC("tc")
int smik_from_pod(struct __sk_buff *skb) {
  struct pkt p = {};
  int r = parse_packet(skb, &p);
  if (r == PARSE_NOT_IP) /* step 10 */
    return count(skb, SMIK_REASON_FORWARDED);
  if (r == PARSE_MALFORMED)
    return count(skb, SMIK_REASON_MALFORMED);

  __u32 ifindex = skb->ifindex;
  struct smik_endpoint *ep = bpf_map_lookup_elem(&smik_endpoints, &ifindex);
  if (!ep)
    return count(skb, SMIK_REASON_UNHOOKED);
  if (!is_own_addr(ep, &p) && !is_ipv6_link_setup(&p))
    return count(skb, SMIK_REASON_SPOOFED);
  /* step 11: later fragments carry no ports (the datagram's first fragment
   * was judged); ICMP errors, discovery and protocols without flows open
   * nothing */
  if (p.frag == FRAG_LATER || p.icmp == ICMP_INFRA || p.icmp == ICMP_ERROR || !keyable(&p))
    return count(skb, SMIK_REASON_FORWARDED);
  int own = skb->mark == SMIK_TC_OWN_MARK;
  if (own)
    skb->mark = 0;
  struct smik_ct_value *ct = 0;
  int act = count(skb, judge_from_pod(&p, ep, &ct));
  if (ct && !own && (ct->flags & SMIK_CT_F_RESET_SERVER) && act == TC_ACT_OK &&
      p.proto == IPPROTO_TCP && p.frag == FRAG_NONE) {
    int r = reset_server(skb, &p);
    if (r == 0)
      return bpf_redirect(skb->ifindex, 0);
    return r < 0 ? TC_ACT_SHOT : act;
  }
  if (ct && (ct->flags & SMIK_CT_F_ANSWER) && act == TC_ACT_OK && p.proto == IPPROTO_TCP &&
      p.frag == FRAG_NONE) {
    int r = answer_owed(skb, &p, ct);
    if (r == 0) {
      ct_count(SMIK_CT_RESET);
      return bpf_redirect(skb->ifindex, 0);
    }
    if (r < 0)
      return TC_ACT_SHOT;
  }
  return act;
}
