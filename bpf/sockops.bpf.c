/* Connection telemetry from sockops, attached at the cgroup2 root: every TCP
 * connection of the node's pods counts once, at the client (connect() ->
 * ESTABLISHED = success; SYN_SENT -> CLOSE = failure: refused, timed out, or
 * denied by policy) and at the server (passive ESTABLISHED). Work happens only
 * at state changes: nothing per packet.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "smik_abi.h"
#include "revnat.bpf.h"
#include "sock.bpf.h"
#include "telemetry.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_CLOSE_ 7
#define ECONNREFUSED_ 111

/* The reverse-translation entry of a client socket (sock_lb's connect4/6),
 * keyed by the edge's server, which is the backend. */
static __always_inline void revnat_key_of(struct bpf_sock_ops *skops, const struct smik_conn_key *k,
                                          struct smik_revnat_key *rk) {
  rk->cookie = bpf_get_socket_cookie(skops);
  rk->port = k->port;
  rk->family = k->family;
  __builtin_memcpy(rk->addr, k->server, 16);
}

/* The edge of this socket: the active side is the client. */
static __always_inline int edge_addrs(struct bpf_sock_ops *skops, int active,
                                      struct smik_conn_key *k) {
  __u8 *local = active ? k->client : k->server, *remote = active ? k->server : k->client;
  k->family = sock_addrs(skops, local, remote);
  if (!k->family)
    return 0;
  /* a dual-stack socket's IPv4 connection: the edge of the IPv4 addresses */
  __u8 client_family = k->family;
  if (unmap_v4(&k->family, k->server))
    unmap_v4(&client_family, k->client);
  k->proto = SMIK_PROTO_TCP;
  k->port = active ? sock_remote_port(skops) : sock_local_port(skops);
  return 1;
}

/* edge_addrs, and for a client the service it dialled, if it dialled one
 * (*translated: it did). */
static __always_inline int edge_of(struct bpf_sock_ops *skops, int active,
                                   struct smik_conn_key *k, int *translated) {
  if (!edge_addrs(skops, active, k))
    return 0;
  if (active) {
    struct smik_revnat_key rk = {};
    revnat_key_of(skops, k, &rk);
    struct smik_revnat_value *rv = bpf_map_lookup_elem(&smik_revnat, &rk);
    if (rv) {
      k->svc_id = rv->svc_id;
      *translated = 1;
    }
  }
  return 1;
}

/* The denied-attempt key the tc program wrote for this client socket. */
static __always_inline void denied_key(struct bpf_sock_ops *skops, const struct smik_conn_key *k,
                                       struct smik_ct_key *dk) {
  __builtin_memcpy(dk->saddr, k->client, 16);
  __builtin_memcpy(dk->daddr, k->server, 16);
  dk->sport = bpf_htons(sock_local_port(skops));
  dk->dport = bpf_htons(k->port);
  dk->proto = SMIK_PROTO_TCP;
  dk->family = k->family;
}

static __always_inline int refused(struct bpf_sock_ops *skops) {
  struct bpf_sock *sk = skops->sk;
  if (!sk)
    return 0;
  struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
  if (!tp)
    return 0;
  return BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_err) == ECONNREFUSED_;
}

/* A client socket that went through a service is marked at ESTABLISHED by
 * asking for RTO callbacks too (rare: a retransmission timeout, which the
 * program ignores): its close then knows it has an entry to delete, and
 * every other socket's close (graceful or reset) stays free of a lookup. */
#define TRANSLATED_FLAGS (BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG)

static __always_inline int marked_translated(struct bpf_sock_ops *skops) {
  return (skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_RTO_CB_FLAG) != 0;
}

/* A closed client socket's reverse entry goes with it: a closed socket has
 * no peer to name (getpeername: ENOTCONN), and the freed element is the one
 * the next connect() takes, where a full LRU map would make every connect()
 * evict one (bench/README.md, per-program costs). */
static __always_inline void forget_translation(struct bpf_sock_ops *skops,
                                               const struct smik_conn_key *k) {
  struct smik_revnat_key rk = {};
  revnat_key_of(skops, k, &rk);
  bpf_map_delete_elem(&smik_revnat, &rk);
}

static __always_inline void on_failed_connect(struct bpf_sock_ops *skops) {
  struct smik_conn_key k = {};
  int translated = 0;
  if (!edge_of(skops, 1, &k, &translated))
    return;
  if (translated)
    forget_translation(skops, &k);
  struct smik_conn_stats *s = conn_stats(&k);
  if (!s)
    return;
  struct smik_ct_key dk = {};
  denied_key(skops, &k, &dk);
  __u8 reason;
  if (bpf_map_lookup_elem(&smik_denied, &dk)) {
    bpf_map_delete_elem(&smik_denied, &dk);
    conn_inc(s->client_policy);
    reason = SMIK_FAIL_POLICY;
  } else if (refused(skops)) {
    conn_inc(s->client_refused);
    reason = SMIK_FAIL_REFUSED;
  } else {
    conn_inc(s->client_timeout); /* SYNs unanswered, or the client gave up waiting */
    reason = SMIK_FAIL_TIMEOUT;
  }
  emit_event(&k, SMIK_EV_CONN_FAILED, reason);
}

/* connect() -> ESTABLISHED without any per-socket state (socket storage or a
 * map entry per connect() cost 3-5% of the connection rate, bench/README.md):
 * the SYN's RTT sample is the handshake; a retransmitted SYN gives no sample
 * (Karn), and then the initial RTO (1 s, doubling) is what the client waited. */
static __always_inline __u64 handshake_us(struct bpf_sock_ops *skops) {
  __u64 us = skops->srtt_us >> 3;
  __u32 retries = skops->total_retrans;
  if (retries)
    us += ((1ULL << (retries > 6 ? 6 : retries)) - 1) * 1000000ULL;
  return us;
}

static __always_inline void on_established(struct bpf_sock_ops *skops, int active) {
  struct smik_conn_key k = {};
  int translated = 0;
  if (!edge_of(skops, active, &k, &translated))
    return;
  if (translated)
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | TRANSLATED_FLAGS);
  struct smik_conn_stats *s = conn_stats(&k);
  if (!s)
    return;
  if (active) {
    conn_inc(s->client_success);
    hist_add(s->handshake_us, handshake_us(skops));
  } else {
    conn_inc(s->server_success);
  }
  hist_add(s->srtt_us, skops->srtt_us >> 3);
  /* Read after the adds, not their result (fetching adds need -mcpu=v3):
   * two first connections racing on two CPUs may announce nothing. */
  if (s->client_success + s->server_success == 1)
    emit_event(&k, SMIK_EV_NEW_EDGE, 0);
}

SEC("sockops")
int smik_sockops(struct bpf_sock_ops *skops) {
  if (skops->family != AF_INET_ && skops->family != AF_INET6_)
    return 1;
  struct bpf_sock *sk = skops->sk;
  if (!sk)
    return 1;
  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
      /* state callbacks for this socket only: no per-packet cost */
      bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
      break;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
      on_established(skops, 1);
      break;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
      on_established(skops, 0);
      break;
    case BPF_SOCK_OPS_STATE_CB: {
      /* client sockets asked for state callbacks (at connect), and so did
       * the server sockets the HTTP judge marked (sock.bpf.h) */
      if (skops->args[1] != TCP_CLOSE_ || (skops->bpf_sock_ops_cb_flags & SMIK_JUDGED_SOCKET_MARK))
        break;
      if (skops->args[0] == TCP_SYN_SENT_) {
        on_failed_connect(skops);
      } else if (skops->args[0] == TCP_ESTABLISHED_) {
        /* straight from ESTABLISHED to CLOSE: reset, not a graceful close.
         * Only a marked socket has a service to look up (one established
         * before this smik was installed counts without it). */
        struct smik_conn_key k = {};
        int translated = 0;
        int found = marked_translated(skops) ? edge_of(skops, 1, &k, &translated)
                                             : edge_addrs(skops, 1, &k);
        if (found) {
          if (translated)
            forget_translation(skops, &k);
          struct smik_conn_stats *s = conn_stats(&k);
          if (s)
            conn_inc(s->client_reset);
        }
      } else {
        /* a graceful close (from FIN_WAIT2, LAST_ACK, CLOSING, or into
         * TIME_WAIT) */
        struct smik_conn_key k = {};
        if (marked_translated(skops) && edge_addrs(skops, 1, &k))
          forget_translation(skops, &k);
      }
      break;
    }
  }
  return 1;
}
