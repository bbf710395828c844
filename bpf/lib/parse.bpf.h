/* Packet parsing for the tc programs: Ethernet + IPv4/IPv6 (options, the
 * IPv6 extension-header chain, fragments) + the L4 header, into one
 * family-neutral summary. The C++ reference (agent/compile/verdict.cpp,
 * parsePacket) states the same rules; the differential kernel test holds the
 * two to each other. */
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
#define TCP_FIN_ 0x01
#define TCP_SYN_ 0x02
#define TCP_RST_ 0x04
#define TCP_PSH_ 0x08
#define TCP_ACK_ 0x10

#define NEXTHDR_HOP_ 0
#define NEXTHDR_ROUTING_ 43
#define NEXTHDR_FRAGMENT_ 44
#define NEXTHDR_AUTH_ 51
#define NEXTHDR_DEST_ 60

enum parse_result {
  PARSE_OK = 0,
  PARSE_NOT_IP = 1, /* ARP and friends: not ours to judge */
  PARSE_MALFORMED = 2,
};

/* ICMP classes: neighbour discovery is infrastructure; an error passes when
 * the packet it quotes belongs to a flow of the pod; echo is tracked by its
 * id; the rest is judged like any other protocol (no SMI rule can grant it). */
enum icmp_class {
  ICMP_NONE = 0,
  ICMP_INFRA = 1, /* neighbour and router discovery */
  ICMP_OTHER = 2,
  ICMP_ECHO_REQUEST = 3,
  ICMP_ECHO_REPLY = 4,
  ICMP_ERROR = 5, /* unreachable, time exceeded, parameter problem (v6: too big) */
};

enum frag_kind {
  FRAG_NONE = 0,  /* a whole datagram (an IPv6 atomic fragment counts as whole) */
  FRAG_FIRST = 1, /* offset 0, more to come: carries the L4 header, judged */
  FRAG_LATER = 2, /* offset > 0: no L4 header, follows the first's verdict */
};

struct pkt {
  __u8 family; /* SMIK_AF_* */
  __u8 proto;  /* the real L4 protocol, after any extension headers */
  __u8 icmp;   /* enum icmp_class */
  __u8 frag;   /* enum frag_kind */
  __u8 tcp_flags;
  __u8 frag_proto; /* protocol field the fragments share (IPv6: the fragment header's) */
  __u8 pad;
  __u8 l4_off; /* where the L4 header starts (for an ICMP error's quote); 0 = beyond 255 */
  __u16 sport; /* network order; ICMP echo: the id (request: sport, reply: dport) */
  __u16 dport;
  __u32 frag_id;
  __u8 saddr[16];
  __u8 daddr[16];
};

static __always_inline void copy16(__u8 *dst, const void *src) {
  __builtin_memcpy(dst, src, 16);
}

/* The L4 header at `off`: the whole header must be there (a first fragment
 * that splits it is malformed: RFC 7112 for IPv6, the tiny-fragment attack
 * of RFC 1858 for IPv4). */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct pkt *p) {
  __u32 need = p->proto == IPPROTO_TCP ? 20 : 8;
  if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_ICMP_ &&
      p->proto != IPPROTO_ICMPV6_)
    return PARSE_OK;
  /* Read in place when the header is in the linear data (nearly always),
   * else copy it out: same bytes, a helper call less on the common path. */
  __u8 buf[20];
  const __u8 *h = buf;
  void *data = (void *)(long)skb->data;
  void *data_end = (void *)(long)skb->data_end;
  if (off <= 256 && data + off + 20 <= data_end) {
    h = data + off;
  } else if (need == 20) {
    if (bpf_skb_load_bytes(skb, off, buf, 20) != 0)
      return PARSE_MALFORMED;
  } else if (bpf_skb_load_bytes(skb, off, buf, 8) != 0) {
    return PARSE_MALFORMED;
  }
  if (p->proto == IPPROTO_TCP) {
    if ((h[12] >> 4) < 5)
      return PARSE_MALFORMED; /* data offset below the header's own size */
    __builtin_memcpy(&p->sport, h, 2);
    __builtin_memcpy(&p->dport, h + 2, 2);
    p->tcp_flags = h[13];
  } else if (p->proto == IPPROTO_UDP) {
    __builtin_memcpy(&p->sport, h, 2);
    __builtin_memcpy(&p->dport, h + 2, 2);
  } else {
    __u8 type = h[0];
    int v6 = p->proto == IPPROTO_ICMPV6_;
    __u8 request = v6 ? 128 : 8, reply = v6 ? 129 : 0;
    if (type == request) {
      p->icmp = ICMP_ECHO_REQUEST;
      __builtin_memcpy(&p->sport, h + 4, 2);
    } else if (type == reply) {
      p->icmp = ICMP_ECHO_REPLY;
      __builtin_memcpy(&p->dport, h + 4, 2);
    } else if (v6) {
      /* 1-4 errors, 133-137 neighbour/router discovery */
      p->icmp = (type >= 1 && type <= 4) ? ICMP_ERROR
                : (type >= 133 && type <= 137) ? ICMP_INFRA : ICMP_OTHER;
    } else {
      /* 3 unreachable, 11 time exceeded, 12 parameter problem */
      p->icmp = (type == 3 || type == 11 || type == 12) ? ICMP_ERROR : ICMP_OTHER;
    }
    p->l4_off = off <= 255 ? off : 0;
  }
  return PARSE_OK;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, void *data, void *data_end,
                                      struct pkt *p) {
  struct iphdr *ip = data + sizeof(struct ethhdr);
  if ((void *)(ip + 1) > data_end)
    return PARSE_MALFORMED;
  __u32 ihl = ip->ihl * 4;
  if (ihl < sizeof(*ip))
    return PARSE_MALFORMED;
  p->family = SMIK_AF_INET;
  p->proto = ip->protocol;
  p->frag_proto = ip->protocol;
  __builtin_memcpy(p->saddr, &ip->saddr, 4);
  __builtin_memcpy(p->daddr, &ip->daddr, 4);
  __u16 frag = bpf_ntohs(ip->frag_off);
  p->frag_id = bpf_ntohs(ip->id);
  if (frag & IP_OFFSET_) {
    /* A TCP fragment at offset 8 can rewrite the flags of the header the
     * first fragment was judged by (RFC 1858): no host sends one. */
    if (ip->protocol == IPPROTO_TCP && (frag & IP_OFFSET_) == 1)
      return PARSE_MALFORMED;
    p->frag = FRAG_LATER;
    return PARSE_OK;
  }
  if (frag & IP_MF_)
    p->frag = FRAG_FIRST;
  return parse_l4(skb, sizeof(struct ethhdr) + ihl, p);
}

/* Walks at most SMIK_IPV6_MAX_EXT extension headers to the real L4 protocol;
 * a longer chain is malformed. */
static __always_inline int parse_ipv6(struct __sk_buff *skb, void *data, void *data_end,
                                      struct pkt *p) {
  struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
  if ((void *)(ip6 + 1) > data_end)
    return PARSE_MALFORMED;
  p->family = SMIK_AF_INET6;
  copy16(p->saddr, &ip6->saddr);
  copy16(p->daddr, &ip6->daddr);
  __u8 next = ip6->nexthdr;
  __u32 off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
  for (int i = 0; i < SMIK_IPV6_MAX_EXT; i++) {
    __u8 h[8];
    if (next == NEXTHDR_HOP_ || next == NEXTHDR_ROUTING_ || next == NEXTHDR_DEST_) {
      if (bpf_skb_load_bytes(skb, off, h, 2) != 0)
        return PARSE_MALFORMED;
      next = h[0];
      off += ((__u32)h[1] + 1) * 8;
    } else if (next == NEXTHDR_AUTH_) {
      if (bpf_skb_load_bytes(skb, off, h, 2) != 0)
        return PARSE_MALFORMED;
      next = h[0];
      off += ((__u32)h[1] + 2) * 4;
    } else if (next == NEXTHDR_FRAGMENT_) {
      if (bpf_skb_load_bytes(skb, off, h, 8) != 0)
        return PARSE_MALFORMED;
      __u16 fo = ((__u16)h[2] << 8) | h[3];
      p->frag_proto = h[0];
      p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
      if (fo & 0xFFF8) {
        p->proto = h[0];
        p->frag = FRAG_LATER;
        return PARSE_OK;
      }
      if (fo & 1)
        p->frag = FRAG_FIRST;
      next = h[0];
      off += 8;
    } else {
      p->proto = next;
      return parse_l4(skb, off, p);
    }
  }
  return PARSE_MALFORMED;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p) {
  void *data = (void *)(long)skb->data;
  void *data_end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;

  if ((void *)(eth + 1) > data_end)
    return PARSE_NOT_IP;
  if (eth->h_proto == bpf_htons(ETH_P_IP))
    return parse_ipv4(skb, data, data_end, p);
  if (eth->h_proto == bpf_htons(ETH_P_IPV6))
    return parse_ipv6(skb, data, data_end, p);
  return PARSE_NOT_IP;
}

/* clang 14 has no BPF memcmp: compare as four words. */
static __always_inline int equal16(const __u8 *a, const __u8 *b) {
  const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

#endif /* SMIK_PARSE_BPF_H */
