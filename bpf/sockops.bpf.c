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
#include "telemetry.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET_ 2
#define AF_INET6_ 10
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_CLOSE_ 7
#define ECONNREFUSED_ 111

/* Per socket: when connect() started and how it is going. */
struct sk_tel {
  __u64 t_connect;
  __u32 rto;
  __u8 active;
  __u8 established;
  __u8 pad[2];
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct sk_tel);
} smik_sk_tel SEC(".maps");

/* The edge of this socket: the active side is the client. */
static __always_inline int edge_of(struct bpf_sock_ops *skops, int active,
                                   struct smik_conn_key *k) {
  __u32 *client = (__u32 *)k->client, *server = (__u32 *)k->server;
  __u32 *local = active ? client : server, *remote = active ? server : client;
  if (skops->family == AF_INET_) {
    k->family = SMIK_AF_INET;
    local[0] = skops->local_ip4;
    remote[0] = skops->remote_ip4;
  } else if (skops->family == AF_INET6_) {
    k->family = SMIK_AF_INET6;
    /* constant offsets: the verifier refuses ctx loads through a moved pointer */
    local[0] = skops->local_ip6[0];
    local[1] = skops->local_ip6[1];
    local[2] = skops->local_ip6[2];
    local[3] = skops->local_ip6[3];
    remote[0] = skops->remote_ip6[0];
    remote[1] = skops->remote_ip6[1];
    remote[2] = skops->remote_ip6[2];
    remote[3] = skops->remote_ip6[3];
  } else {
    return 0;
  }
  k->proto = SMIK_PROTO_TCP;
  /* remote_port: be16 in the upper half; local_port: host order (E12) */
  k->port = active ? bpf_ntohl(skops->remote_port) : skops->local_port;
  if (active) {
    /* the verifier wants the pointer it saw checked, not a fresh load */
    struct bpf_sock *sk = skops->sk;
    if (sk) {
      __u32 *dialled = bpf_sk_storage_get(&smik_sk_svc, sk, 0, 0);
      if (dialled)
        k->svc_id = *dialled;
    }
  }
  return 1;
}

/* The denied-attempt key the tc program wrote for this client socket. */
static __always_inline void denied_key(struct bpf_sock_ops *skops, const struct smik_conn_key *k,
                                       struct smik_ct_key *dk) {
  __builtin_memcpy(dk->saddr, k->client, 16);
  __builtin_memcpy(dk->daddr, k->server, 16);
  dk->sport = bpf_htons((__u16)skops->local_port);
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

static __always_inline void on_failed_connect(struct bpf_sock_ops *skops, struct sk_tel *t) {
  struct smik_conn_key k = {};
  if (!edge_of(skops, 1, &k))
    return;
  struct smik_conn_stats *s = conn_stats(&k);
  if (!s)
    return;
  struct smik_ct_key dk = {};
  denied_key(skops, &k, &dk);
  __u8 reason;
  if (bpf_map_lookup_elem(&smik_denied, &dk)) {
    bpf_map_delete_elem(&smik_denied, &dk);
    s->client_policy++;
    reason = SMIK_FAIL_POLICY;
  } else if (refused(skops)) {
    s->client_refused++;
    reason = SMIK_FAIL_REFUSED;
  } else {
    s->client_timeout++; /* SYNs unanswered, or the client gave up waiting */
    reason = SMIK_FAIL_TIMEOUT;
  }
  (void)t;
  emit_event(&k, SMIK_EV_CONN_FAILED, reason);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, int active,
                                           struct sk_tel *t) {
  struct smik_conn_key k = {};
  if (!edge_of(skops, active, &k))
    return;
  struct smik_conn_stats *s = conn_stats(&k);
  if (!s)
    return;
  if (active) {
    s->client_success++;
    if (t && t->t_connect)
      hist_add(s->handshake_us, (bpf_ktime_get_ns() - t->t_connect) / 1000);
  } else {
    s->server_success++;
  }
  hist_add(s->srtt_us, skops->srtt_us >> 3);
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
    case BPF_SOCK_OPS_TCP_CONNECT_CB: {
      struct sk_tel *t = bpf_sk_storage_get(&smik_sk_tel, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
      if (t) {
        t->t_connect = bpf_ktime_get_ns();
        t->active = 1;
      }
      /* state and RTO callbacks for this socket only: no per-packet cost */
      bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG);
      break;
    }
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
      struct sk_tel *t = bpf_sk_storage_get(&smik_sk_tel, sk, 0, 0);
      if (t)
        t->established = 1;
      on_established(skops, 1, t);
      break;
    }
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
      on_established(skops, 0, 0);
      break;
    case BPF_SOCK_OPS_RTO_CB: {
      struct sk_tel *t = bpf_sk_storage_get(&smik_sk_tel, sk, 0, 0);
      if (t)
        t->rto++;
      break;
    }
    case BPF_SOCK_OPS_STATE_CB: {
      if (skops->args[1] != TCP_CLOSE_)
        break;
      struct sk_tel *t = bpf_sk_storage_get(&smik_sk_tel, sk, 0, 0);
      if (!t || !t->active)
        break;
      if (skops->args[0] == TCP_SYN_SENT_ && !t->established) {
        on_failed_connect(skops, t);
      } else if (skops->args[0] == TCP_ESTABLISHED_) {
        /* straight from ESTABLISHED to CLOSE: reset, not a graceful close */
        struct smik_conn_key k = {};
        if (edge_of(skops, 1, &k)) {
          struct smik_conn_stats *s = conn_stats(&k);
          if (s)
            s->client_reset++;
        }
      }
      t->active = 0; /* count once */
      break;
    }
  }
  return 1;
}
