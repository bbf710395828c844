/* Events for `smik events` (smik_event, smik_http_event): the ring buffer
 * and its rate limit, one event per edge and kind a second, so a flood of
 * denials cannot flood userspace. The tc, sockops and HTTP judge objects all
 * write here; the HTTP judge is handed the tc object's two maps by fd
 * instead of pinning them (agent/datapath/http_judge.cpp). */
#ifndef SMIK_EVENTS_BPF_H
#define SMIK_EVENTS_BPF_H

#include <bpf/bpf_helpers.h>

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

/* Whether an event of this edge and kind may go out now (at most one a
 * second); if so, *suppressed is how many the limit dropped since the last. */
static __always_inline int event_admitted(const struct smik_conn_key *edge, __u8 kind, __u64 now,
                                          __u32 *suppressed) {
  struct smik_ev_limit_key lk = {.kind = kind};
  __builtin_memcpy(&lk.edge, edge, sizeof(*edge));
  *suppressed = 0;
  struct smik_ev_limit *l = bpf_map_lookup_elem(&smik_ev_limits, &lk);
  if (l) {
    if (now - l->last_ns < 1000000000ULL) {
      l->suppressed++;
      return 0;
    }
    *suppressed = l->suppressed;
    l->last_ns = now;
    l->suppressed = 0;
  } else {
    struct smik_ev_limit fresh = {.last_ns = now};
    bpf_map_update_elem(&smik_ev_limits, &lk, &fresh, BPF_ANY);
  }
  return 1;
}

static __always_inline void fill_event(struct smik_event *e, const struct smik_conn_key *edge,
                                       __u8 kind, __u8 reason, __u64 now, __u32 suppressed) {
  e->ts_ns = now;
  __builtin_memcpy(&e->edge, edge, sizeof(*edge));
  e->kind = kind;
  e->reason = reason;
  e->pad = 0;
  e->suppressed = suppressed;
}

static __always_inline void emit_event(const struct smik_conn_key *edge, __u8 kind, __u8 reason) {
  __u64 now = bpf_ktime_get_ns();
  __u32 suppressed;
  if (!event_admitted(edge, kind, now, &suppressed))
    return;
  struct smik_event *e = bpf_ringbuf_reserve(&smik_events, sizeof(*e), 0);
  if (!e)
    return;
  fill_event(e, edge, kind, reason, now, suppressed);
  bpf_ringbuf_submit(e, 0);
}

#endif /* SMIK_EVENTS_BPF_H */
