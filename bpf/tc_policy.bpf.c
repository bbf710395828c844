/* SMI access control on the host-side veth of each local meshed pod.
 *
 *   smik_to_pod   (host veth egress: packets going into the pod)
 *       conntrack hit -> pass; else the destination's policy decides.
 *   smik_from_pod (host veth ingress: packets leaving the pod)
 *       anti-spoofing, then record the flow so its replies pass.
 *
 * The policy lives in an inner map swapped whole by the agent (one update of
 * the outer slot), so a packet is judged by the old or the new policy, never
 * by a half-written one.
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "smik_abi.h"
#include "parse.bpf.h"
#include "telemetry.bpf.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

char LICENSE[] SEC("license") = "GPL";

/* Pod (and node) address -> identity, for every pod of the cluster. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_IPS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct smik_ip_key);
  __type(value, struct smik_ip_info);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ipcache SEC(".maps");

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
  __uint(max_entries, 1);
  __type(key, __u32);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
  __array(values, struct smik_policy_inner);
} smik_policy SEC(".maps");

/* Slot 0: generation of the policy in smik_policy (moves after each swap). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct smik_state);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_state SEC(".maps");

/* Flows that pass without a policy lookup (see smik_ct_key). Per-CPU LRU
 * lists: inserting a new flow takes no lock shared with other CPUs. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_CT);
  __uint(map_flags, BPF_F_NO_COMMON_LRU);
  __type(key, struct smik_ct_key);
  __type(value, struct smik_ct_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ct SEC(".maps");

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

static __always_inline __u32 identity_of(const struct pkt *p) {
  struct smik_ip_key k = {.family = p->family};
  copy16(k.addr, p->saddr);
  struct smik_ip_info *info = bpf_map_lookup_elem(&smik_ipcache, &k);
  return info ? info->identity : SMIK_ID_WORLD;
}

/* The allow-list: exact port, then every port of the protocol, then the
 * destination's meta entry says whether an unmatched flow is denied. */
static __always_inline int policy_allows(__u32 src, __u32 dst, __u16 dport, __u8 proto) {
  __u32 zero = 0;
  void *policy = bpf_map_lookup_elem(&smik_policy, &zero);
  if (!policy)
    return 0; /* no policy installed yet: fail closed */
  struct smik_policy_key k = {.src_id = src, .dst_id = dst, .dport = dport, .proto = proto};
  if (dport && bpf_map_lookup_elem(policy, &k))
    return 1;
  k.dport = 0;
  if (bpf_map_lookup_elem(policy, &k))
    return 1;
  struct smik_policy_key meta = {.src_id = SMIK_ID_META, .dst_id = dst};
  struct smik_policy_value *m = bpf_map_lookup_elem(policy, &meta);
  return !(m && (m->flags & SMIK_POL_F_ENFORCED));
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

SEC("tc")
int smik_to_pod(struct __sk_buff *skb) {
  struct pkt p = {};
  int r = parse_packet(skb, &p);
  if (r == PARSE_NOT_IP)
    return count(skb, SMIK_REASON_FORWARDED);
  if (r == PARSE_MALFORMED)
    return count(skb, SMIK_REASON_MALFORMED);
  /* On a veth, link-local traffic can only come from the host itself. */
  if (p.icmp == ICMP_INFRA || is_ipv6_link_setup(&p))
    return count(skb, SMIK_REASON_FORWARDED);

  __u32 zero = 0;
  struct smik_state *st = bpf_map_lookup_elem(&smik_state, &zero);
  __u32 gen = st ? st->policy_gen : 0;

  /* Established flows first: one lookup decides most packets. */
  struct smik_ct_key ck = {};
  ct_key_of(&ck, &p, 0);
  struct smik_ct_value *ct = bpf_map_lookup_elem(&smik_ct, &ck);
  if (ct && ((ct->flags & SMIK_CT_F_REPLY) || ct->policy_gen == gen))
    return count(skb, SMIK_REASON_FORWARDED);

  __u32 ifindex = skb->ifindex;
  struct smik_endpoint *ep = bpf_map_lookup_elem(&smik_endpoints, &ifindex);
  if (!ep)
    return count(skb, SMIK_REASON_FORWARDED); /* not (or no longer) ours */

  __u32 src = identity_of(&p);
  __u32 dst = ep->identity;
  __u16 dport = bpf_ntohs(p.dport);
  if (src != SMIK_ID_HOST && !policy_allows(src, dst, dport, p.proto)) {
    if (ct)
      bpf_map_delete_elem(&smik_ct, &ck); /* revoked */
    count_edge(skb, src, dst, dport, p.proto, 0);
    record_denial(&ck, &p, dport);
    /* SMI routes name TCP and UDP only: anything else can never be granted */
    int l4 = p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP;
    return count(skb, l4 ? SMIK_REASON_POLICY : SMIK_REASON_UNSUPPORTED);
  }
  if (ct) {
    ct->policy_gen = gen; /* still allowed under the new generation */
  } else {
    struct smik_ct_value v = {
        .policy_gen = gen, .flags = SMIK_CT_F_INBOUND, .src_id = src, .dst_id = dst};
    bpf_map_update_elem(&smik_ct, &ck, &v, BPF_ANY);
    count_edge(skb, src, dst, dport, p.proto, 1);
  }
  return count(skb, SMIK_REASON_FORWARDED);
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

SEC("tc")
int smik_from_pod(struct __sk_buff *skb) {
  struct pkt p = {};
  int r = parse_packet(skb, &p);
  if (r == PARSE_NOT_IP)
    return count(skb, SMIK_REASON_FORWARDED);
  if (r == PARSE_MALFORMED)
    return count(skb, SMIK_REASON_MALFORMED);

  __u32 ifindex = skb->ifindex;
  struct smik_endpoint *ep = bpf_map_lookup_elem(&smik_endpoints, &ifindex);
  if (!ep)
    return count(skb, SMIK_REASON_FORWARDED);
  if (!is_own_addr(ep, &p) && !is_ipv6_link_setup(&p))
    return count(skb, SMIK_REASON_SPOOFED);
  if (p.icmp == ICMP_INFRA)
    return count(skb, SMIK_REASON_FORWARDED);

  /* A TCP flow is the pod's own only if the pod sent its SYN: a server
   * answering a revoked client must not reopen the flow for it. */
  if (p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_SYN_ | TCP_ACK_)) != TCP_SYN_)
    return count(skb, SMIK_REASON_FORWARDED);

  struct smik_ct_key ck = {};
  ct_key_of(&ck, &p, 1);
  if (!bpf_map_lookup_elem(&smik_ct, &ck)) {
    struct smik_ct_value v = {.flags = SMIK_CT_F_REPLY, .src_id = ep->identity};
    bpf_map_update_elem(&smik_ct, &ck, &v, BPF_NOEXIST);
  }
  return count(skb, SMIK_REASON_FORWARDED);
}
