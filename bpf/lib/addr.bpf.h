/* Address helpers every program that keys maps by address shares. */
#ifndef SMIK_ADDR_BPF_H
#define SMIK_ADDR_BPF_H

#include <bpf/bpf_endian.h>

/* A dual-stack AF_INET6 socket (Java's default) reaches an IPv4 address as
 * ::ffff:a.b.c.d and the kernel sends IPv4. Services, reverse entries, edges
 * and governed HTTP ports know such a socket by the IPv4 form, so the programs
 * that see it as IPv6 (connect6, getpeername6, recvmsg6, sockops) and those
 * that see it as IPv4 (sendmsg4, which the kernel runs for an unconnected
 * v4-mapped sendmsg; the tc programs) agree. Rewrites family+addr in place; 1
 * if it was mapped. */
static __always_inline int unmap_v4(__u8 *family, __u8 *addr) {
  __u32 *w = (__u32 *)addr;
  if (*family != SMIK_AF_INET6 || w[0] || w[1] || w[2] != bpf_htonl(0xffff))
    return 0;
  w[0] = w[3];
  w[1] = w[2] = w[3] = 0;
  *family = SMIK_AF_INET;
  return 1;
}

/* Two family-tagged 16-byte addresses (the ABI's form) are equal. */
static __always_inline int addr_eq(const __u8 *a, const __u8 *b) {
  const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
  return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

#endif /* SMIK_ADDR_BPF_H */
