/* Telemetry maps and helpers shared by the tc program (policy denials) and
 * the sockops program (connection outcomes). Both objects pin these maps by
 * name, so they count into the same maps. */
#ifndef SMIK_TELEMETRY_BPF_H
#define SMIK_TELEMETRY_BPF_H

#include <bpf/bpf_helpers.h>

#include "events.bpf.h"

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

#endif /* SMIK_TELEMETRY_BPF_H */
