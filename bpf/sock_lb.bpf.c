/* Services and TrafficSplit at the socket: connect()/sendmsg() to a
 * ClusterIP:port is rewritten to one backend endpoint, chosen by weight, and
 * getpeername()/recvmsg() translate back so the application sees the address
 * it dialled. One decision per connection: no per-packet NAT, and the tc
 * policy sees real pod addresses.
 *
 * These programs run for every socket of the cgroup subtree (attached at the
 * cgroup2 root); the first statement is one hash lookup that returns at once
 * for anything that is not a service address.
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "smik_abi.h"
#include "revnat.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Service address -> live backend table. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_SERVICES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct smik_svc_key);
  __type(value, struct smik_svc_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_services SEC(".maps");

/* {service, generation, index} -> endpoint. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_BACKENDS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct smik_backend_key);
  __type(value, struct smik_backend);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_backends SEC(".maps");

/* The agent's own Kubernetes API sockets (cookie -> 1), registered before
 * they connect: never translated. On a fresh node the agent lists before any
 * table exists, so it reaches the API server's ClusterIP the node's own way
 * (kube-proxy, or a kubeconfig naming real addresses); a restarted agent must
 * not depend instead on a table a previous run left, which may point at API
 * servers that are gone: then it could never list again to fix it. Cookies
 * are never reused and only connect() reads this, so LRU eviction of long
 * connected sockets is harmless. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_OWN_SOCKETS);
  __type(key, __u64);
  __type(value, __u8);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_own_sockets SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SMIK_SOCK_MAX);
  __type(key, __u32);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_sock_stats SEC(".maps");

static __always_inline void bump(__u32 which) {
  __u64 *c = bpf_map_lookup_elem(&smik_sock_stats, &which);
  if (c)
    (*c)++;
}

/* A UDP socket's choice must be a function of the socket (every datagram of
 * it goes to the same backend): mix the cookie. */
static __always_inline __u32 mix32(__u64 x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (__u32)x;
}

/* Destination of ctx as a family-tagged 16-byte address. */
static __always_inline void ctx_addr(struct bpf_sock_addr *ctx, __u8 family, __u8 *addr) {
  __u32 *w = (__u32 *)addr;
  if (family == SMIK_AF_INET) {
    w[0] = ctx->user_ip4;
  } else {
    w[0] = ctx->user_ip6[0];
    w[1] = ctx->user_ip6[1];
    w[2] = ctx->user_ip6[2];
    w[3] = ctx->user_ip6[3];
  }
}

/* mapped: addr is IPv4, written as ::ffff:addr into an IPv6 ctx (unmap_v4). */
static __always_inline void set_ctx_addr(struct bpf_sock_addr *ctx, __u8 family, const __u8 *addr,
                                         __u16 port, int mapped) {
  const __u32 *w = (const __u32 *)addr;
  if (family == SMIK_AF_INET) {
    ctx->user_ip4 = w[0];
  } else if (mapped) {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = bpf_htonl(0xffff);
    ctx->user_ip6[3] = w[0];
  } else {
    ctx->user_ip6[0] = w[0];
    ctx->user_ip6[1] = w[1];
    ctx->user_ip6[2] = w[2];
    ctx->user_ip6[3] = w[3];
  }
  ctx->user_port = bpf_htons(port);
}

static __always_inline __u16 ctx_port(struct bpf_sock_addr *ctx) {
  /* user_port holds the be16 port in its low 16 bits (bpf/README.md, port byte order) */
  return bpf_ntohs((__u16)ctx->user_port);
}

/* Weighted group, then an endpoint of it uniformly. */
static __always_inline int pick(const struct smik_svc_value *svc, __u32 r1, __u32 r2,
                                struct smik_backend_key *bk) {
  __u32 target = r1 % svc->total;
  int g = -1;
  for (int i = 0; i < SMIK_MAX_GROUPS; i++) {
    if (i >= svc->ngroups)
      break;
    if (target < svc->cum[i]) {
      g = i;
      break;
    }
  }
  if (g < 0 || svc->count[g] == 0)
    return 0;
  bk->svc_id = svc->svc_id;
  bk->gen = svc->gen;
  bk->index = svc->offset[g] + r2 % svc->count[g];
  return 1;
}

static __always_inline int translate(struct bpf_sock_addr *ctx, __u8 family) {
  struct smik_svc_key key = {.family = family, .proto = (__u8)ctx->protocol};
  ctx_addr(ctx, family, key.addr);
  int mapped = unmap_v4(&key.family, key.addr);
  key.port = ctx_port(ctx);
  struct smik_svc_value *svc = bpf_map_lookup_elem(&smik_services, &key);
  if (!svc)
    return 1; /* not a service: the common case, one lookup */
  if (!svc->total) {
    bump(SMIK_SOCK_NO_BACKEND);
    return 1;
  }

  __u64 cookie = bpf_get_socket_cookie(ctx);
  if (bpf_map_lookup_elem(&smik_own_sockets, &cookie))
    return 1;
  __u32 r1, r2;
  if (key.proto == IPPROTO_UDP) {
    r1 = mix32(cookie ^ svc->svc_id);
    r2 = mix32(cookie + 0x9e3779b97f4a7c15ULL + svc->svc_id);
  } else {
    r1 = bpf_get_prandom_u32();
    r2 = bpf_get_prandom_u32();
  }
  struct smik_backend_key bk = {};
  if (!pick(svc, r1, r2, &bk))
    return 1;
  struct smik_backend *be = bpf_map_lookup_elem(&smik_backends, &bk);
  if (!be)
    return 1; /* table mid-replacement by a crashed agent: leave it be */
  if (be->family != key.family)
    return 1; /* a v4-mapped socket can only reach IPv4 */

  struct smik_revnat_key rk = {.cookie = cookie, .port = be->port, .family = key.family};
  __builtin_memcpy(rk.addr, be->addr, 16);
  struct smik_revnat_value rv = {.port = key.port, .family = key.family, .svc_id = svc->svc_id};
  __builtin_memcpy(rv.addr, key.addr, 16);
  /* An unconnected UDP socket comes through here for every datagram, to the
   * same backend (the pick is a function of the socket): rewriting an equal
   * entry of the LRU map cost more than half of sendmsg's run time
   * (bench/README.md, per-program costs). A new connect() has a new cookie,
   * so TCP skips the lookup. */
  struct smik_revnat_value *have =
      key.proto == IPPROTO_UDP ? bpf_map_lookup_elem(&smik_revnat, &rk) : NULL;
  if (!have || have->svc_id != rv.svc_id || have->port != rv.port ||
      have->family != rv.family || !addr_eq(have->addr, rv.addr))
    bpf_map_update_elem(&smik_revnat, &rk, &rv, BPF_ANY);

  set_ctx_addr(ctx, family, be->addr, be->port, mapped);
  bump(SMIK_SOCK_TRANSLATED);
  return 1;
}

/* The peer a socket sees (getpeername) or hears from (recvmsg): the service
 * address it dialled, if it dialled one. */
static __always_inline int reverse(struct bpf_sock_addr *ctx, __u8 family) {
  struct smik_revnat_key rk = {.cookie = bpf_get_socket_cookie(ctx), .family = family};
  ctx_addr(ctx, family, rk.addr);
  int mapped = unmap_v4(&rk.family, rk.addr);
  rk.port = ctx_port(ctx);
  struct smik_revnat_value *rv = bpf_map_lookup_elem(&smik_revnat, &rk);
  if (!rv)
    return 1;
  struct smik_svc_key key = {.port = rv->port, .family = rk.family, .proto = (__u8)ctx->protocol};
  __builtin_memcpy(key.addr, rv->addr, 16);
  struct smik_svc_value *svc = bpf_map_lookup_elem(&smik_services, &key);
  if (!svc || svc->svc_id != rv->svc_id) {
    bpf_map_delete_elem(&smik_revnat, &rk); /* the service is gone or was replaced */
    bump(SMIK_SOCK_STALE);
    return 1;
  }
  set_ctx_addr(ctx, family, rv->addr, rv->port, mapped);
  bump(SMIK_SOCK_REVERSED);
  return 1;
}

SEC("cgroup/connect4")
int smik_connect4(struct bpf_sock_addr *ctx) { return translate(ctx, SMIK_AF_INET); }

SEC("cgroup/connect6")
int smik_connect6(struct bpf_sock_addr *ctx) { return translate(ctx, SMIK_AF_INET6); }

SEC("cgroup/sendmsg4")
int smik_sendmsg4(struct bpf_sock_addr *ctx) { return translate(ctx, SMIK_AF_INET); }

SEC("cgroup/sendmsg6")
int smik_sendmsg6(struct bpf_sock_addr *ctx) { return translate(ctx, SMIK_AF_INET6); }

SEC("cgroup/recvmsg4")
int smik_recvmsg4(struct bpf_sock_addr *ctx) { return reverse(ctx, SMIK_AF_INET); }

SEC("cgroup/recvmsg6")
int smik_recvmsg6(struct bpf_sock_addr *ctx) { return reverse(ctx, SMIK_AF_INET6); }

SEC("cgroup/getpeername4")
int smik_getpeername4(struct bpf_sock_addr *ctx) { return reverse(ctx, SMIK_AF_INET); }

SEC("cgroup/getpeername6")
int smik_getpeername6(struct bpf_sock_addr *ctx) { return reverse(ctx, SMIK_AF_INET6); }
