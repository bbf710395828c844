/* Telemetry maps and helpers shared by the tc program (policy denials) and
 * the sockops program (connection outcomes). Both objects pin these maps by
 * name, so they count into the same maps. */
#ifndef SMIK_TELEMETRY_BPF_H
#define SMIK_TELEMETRY_BPF_H

#include <bpf/bpf_helpers.h>

/* Per-edge connection outcomes and latency histograms (see smik_conn_stats).
 * LRU: when full, a new edge takes the place of the one idle longest (the
 * agent has read its counts within a second) instead of going uncounted. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_CONN_EDGES);
  __type(key, struct smik_conn_key);
  __type(value, struct smik_conn_stats);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_conn SEC(".maps");

/* A zeroed smik_conn_stats to create entries from: too big for the stack. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_ONE_SLOT);
  __type(key, __u32);
  __type(value, struct smik_conn_stats);
} smik_conn_zero SEC(".maps");

/* Attempts a tc program denied, by tuple (as seen into the pod): counts each
 * attempt once however often its SYN is retransmitted, and lets the client's
 * sockops name "policy" as the reason its connect() failed. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_DENIED);
  __type(key, struct smik_ct_key);
  __type(value, __u8);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_denied SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, SMIK_EVENTS_BYTES);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_events SEC(".maps");

struct smik_ev_limit_key {
  struct smik_conn_key edge;
  __u32 kind;
};
struct smik_ev_limit {
  __u64 last_ns;
  __u32 suppressed;
  __u32 pad;
};

/* Last event time per edge and kind: at most one event a second each. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_EV_LIMITS);
  __type(key, struct smik_ev_limit_key);
  __type(value, struct smik_ev_limit);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ev_limits SEC(".maps");

static __always_inline struct smik_conn_stats *conn_stats(const struct smik_conn_key *k) {
  struct smik_conn_stats *s = bpf_map_lookup_elem(&smik_conn, k);
  if (s)
    return s;
  __u32 zero = 0;
  struct smik_conn_stats *z = bpf_map_lookup_elem(&smik_conn_zero, &zero);
  if (!z)
    return 0;
  bpf_map_update_elem(&smik_conn, k, z, BPF_NOEXIST);
  return bpf_map_lookup_elem(&smik_conn, k);
}

/* smik_conn values are shared by every CPU. */
#define conn_inc(field) __sync_fetch_and_add(&(field), 1)

static __always_inline void hist_add(__u32 *hist, __u64 v) {
  __u32 b = smik_hist_bucket(v);
  /* clang proves b < SMIK_HIST_BUCKETS and drops the check the verifier needs */
  asm volatile("" : "+r"(b));
  if (b < SMIK_HIST_BUCKETS)
    conn_inc(hist[b]);
}

static __always_inline void emit_event(const struct smik_conn_key *edge, __u8 kind, __u8 reason) {
  struct smik_ev_limit_key lk = {.kind = kind};
  __builtin_memcpy(&lk.edge, edge, sizeof(*edge));
  __u64 now = bpf_ktime_get_ns();
  __u32 suppressed = 0;
  struct smik_ev_limit *l = bpf_map_lookup_elem(&smik_ev_limits, &lk);
  if (l) {
    if (now - l->last_ns < 1000000000ULL) {
      l->suppressed++;
      return;
    }
    suppressed = l->suppressed;
    l->last_ns = now;
    l->suppressed = 0;
  } else {
    struct smik_ev_limit fresh = {.last_ns = now};
    bpf_map_update_elem(&smik_ev_limits, &lk, &fresh, BPF_ANY);
  }
  struct smik_event *e = bpf_ringbuf_reserve(&smik_events, sizeof(*e), 0);
  if (!e)
    return;
  e->ts_ns = now;
  __builtin_memcpy(&e->edge, edge, sizeof(*edge));
  e->kind = kind;
  e->reason = reason;
  e->pad = 0;
  e->suppressed = suppressed;
  bpf_ringbuf_submit(e, 0);
}

#endif /* SMIK_TELEMETRY_BPF_H */
