/* A socket's two ends, as the hooks that see an established socket read them
 * from their context: bpf_sock_ops (sockops), __sk_buff (sk_skb) and
 * sk_msg_md (sk_msg) name the fields alike and encode them alike. */
#ifndef SMIK_SOCK_BPF_H
#define SMIK_SOCK_BPF_H

#include <bpf/bpf_endian.h>

/* The kernel's address families, as the contexts' family field holds them
 * (vmlinux.h has no macros). */
#define AF_INET_ 2
#define AF_INET6_ 10

/* Every sockops program of the cgroup runs for every callback of a socket,
 * and a socket's state callbacks (BPF_SOCK_OPS_STATE_CB_FLAG) come to all of
 * them once any asked. The connection counter (sockops.bpf.c) asks for its
 * client sockets, at connect(); the HTTP judge (http_verdict.bpf.c) for the
 * server sockets it judges, so that their state goes when they close. The
 * judge marks its sockets by asking for retransmission callbacks too, which
 * no program acts on (one more call per retransmitted segment, to return):
 * a socket with the mark is the judge's, never a client of the counter's. */
#define SMIK_JUDGED_SOCKET_MARK BPF_SOCK_OPS_RETRANS_CB_FLAG
#define SMIK_JUDGED_SOCKET_FLAGS (BPF_SOCK_OPS_STATE_CB_FLAG | SMIK_JUDGED_SOCKET_MARK)

/* Copies the socket's local and remote addresses into two 16-byte map-key
 * addresses (an IPv4 address into the first 4 bytes; the rest is left as
 * the caller zeroed it) and gives their SMIK_AF_* family, or 0 for a socket
 * neither IPv4 nor IPv6 (nothing copied). A v4-mapped IPv6 address stays as
 * it is: unmap_v4 (addr.bpf.h) is the caller's choice.
 *
 * A macro, not a function: the three contexts are different types, and the
 * verifier accepts a context load only at a constant offset from the
 * context pointer itself, so each field is read by name, none through a
 * moved pointer or a loop. local and remote must be 4-byte aligned. */
#define sock_addrs(ctx, local, remote)                       \
  ({                                                         \
    __u32 *l_ = (__u32 *)(local), *r_ = (__u32 *)(remote);   \
    __u8 f_ = 0;                                             \
    if ((ctx)->family == AF_INET_) {                         \
      f_ = SMIK_AF_INET;                                     \
      l_[0] = (ctx)->local_ip4;                              \
      r_[0] = (ctx)->remote_ip4;                             \
    } else if ((ctx)->family == AF_INET6_) {                 \
      f_ = SMIK_AF_INET6;                                    \
      l_[0] = (ctx)->local_ip6[0];                           \
      l_[1] = (ctx)->local_ip6[1];                           \
      l_[2] = (ctx)->local_ip6[2];                           \
      l_[3] = (ctx)->local_ip6[3];                           \
      r_[0] = (ctx)->remote_ip6[0];                          \
      r_[1] = (ctx)->remote_ip6[1];                          \
      r_[2] = (ctx)->remote_ip6[2];                          \
      r_[3] = (ctx)->remote_ip6[3];                          \
    }                                                        \
    f_;                                                      \
  })

/* The ports in host order (the table in bpf/README.md): local_port already
 * is; remote_port holds the network-order port in its upper 16 bits. */
#define sock_local_port(ctx) ((__u16)(ctx)->local_port)
#define sock_remote_port(ctx) ((__u16)bpf_ntohl((ctx)->remote_port))

#endif /* SMIK_SOCK_BPF_H */
