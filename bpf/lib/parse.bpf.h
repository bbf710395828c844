/* Packet parsing for the tc programs: Ethernet + IPv4/IPv6 + the first 4 bytes
 * of TCP/UDP, into one family-neutral summary. Direct packet access only. */
#ifndef SMIK_PARSE_BPF_H
#define SMIK_PARSE_BPF_H

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP_ 1
#define IPPROTO_ICMPV6_ 58
#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1FFF
#define TCP_SYN_ 0x02
#define TCP_ACK_ 0x10

enum parse_result {
  PARSE_OK = 0,
  PARSE_NOT_IP = 1, /* ARP and friends: not ours to judge */
  PARSE_MALFORMED = 2,
};

/* ICMP classes: errors and neighbour discovery are infrastructure, passed
 * like replies; echo and the rest are judged like any other protocol. */
enum icmp_class { ICMP_NONE = 0, ICMP_INFRA = 1, ICMP_OTHER = 2 };

struct pkt {
  __u8 family; /* SMIK_AF_* */
  __u8 proto;
  __u8 icmp;   /* enum icmp_class */
  __u8 later_fragment; /* no L4 header: ports unknown (0) */
  __u8 tcp_flags;
  __u8 pad[3];
  __u16 sport; /* network order; 0 when the protocol has no ports */
  __u16 dport;
  __u8 saddr[16];
  __u8 daddr[16];
};

static __always_inline void copy16(__u8 *dst, const void *src) {
  __builtin_memcpy(dst, src, 16);
}

static __always_inline int parse_l4(void *l4, void *data_end, struct pkt *p) {
  if (p->later_fragment)
    return PARSE_OK;
  if (p->proto == IPPROTO_TCP) {
    struct tcphdr *th = l4;
    if ((void *)(th + 1) > data_end)
      return PARSE_MALFORMED;
    p->sport = th->source;
    p->dport = th->dest;
    p->tcp_flags = ((__u8 *)th)[13];
  } else if (p->proto == IPPROTO_UDP) {
    struct udphdr *uh = l4;
    if ((void *)(uh + 1) > data_end)
      return PARSE_MALFORMED;
    p->sport = uh->source;
    p->dport = uh->dest;
  } else if (p->proto == IPPROTO_ICMP_) {
    __u8 *type = l4;
    if ((void *)(type + 1) > data_end)
      return PARSE_MALFORMED;
    /* 3 unreachable, 11 time exceeded, 12 parameter problem */
    p->icmp = (*type == 3 || *type == 11 || *type == 12) ? ICMP_INFRA : ICMP_OTHER;
  } else if (p->proto == IPPROTO_ICMPV6_) {
    __u8 *type = l4;
    if ((void *)(type + 1) > data_end)
      return PARSE_MALFORMED;
    /* 1-4 errors, 133-137 neighbour/router discovery */
    p->icmp = (*type <= 4 || (*type >= 133 && *type <= 137)) ? ICMP_INFRA : ICMP_OTHER;
  }
  return PARSE_OK;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p) {
  void *data = (void *)(long)skb->data;
  void *data_end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;

  if ((void *)(eth + 1) > data_end)
    return PARSE_NOT_IP;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
      return PARSE_MALFORMED;
    __u32 ihl = ip->ihl * 4;
    if (ihl < sizeof(*ip))
      return PARSE_MALFORMED;
    p->family = SMIK_AF_INET;
    p->proto = ip->protocol;
    __builtin_memcpy(p->saddr, &ip->saddr, 4);
    __builtin_memcpy(p->daddr, &ip->daddr, 4);
    p->later_fragment = (bpf_ntohs(ip->frag_off) & IP_OFFSET_) != 0;
    return parse_l4((void *)ip + ihl, data_end, p);
  }
  if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > data_end)
      return PARSE_MALFORMED;
    p->family = SMIK_AF_INET6;
    p->proto = ip6->nexthdr; /* extension headers: judged with ports 0 */
    copy16(p->saddr, &ip6->saddr);
    copy16(p->daddr, &ip6->daddr);
    return parse_l4(ip6 + 1, data_end, p);
  }
  return PARSE_NOT_IP;
}

/* clang 14 has no BPF memcmp: compare as four words. */
static __always_inline int equal16(const __u8 *a, const __u8 *b) {
  const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

#endif /* SMIK_PARSE_BPF_H */
