/* The conntrack table: flows that pass the tc programs without a policy
 * lookup (see smik_ct_key). The tc programs own it; the HTTP judge's guard
 * marks a flow in it for reset (SMIK_CT_F_RESET) when the flow's server
 * socket is out of the judge's reach, and its response framer for an
 * answer owed after the server's (SMIK_CT_F_ANSWER). One definition, as for the ipcache: a
 * shared fd with another layout would be refused at load, or read wrong.
 *
 * A plain hash, not an LRU: one pod opening flows by the hundred thousand
 * must not evict another pod's established ones. When it is full a new flow
 * is judged packet by packet (counted as SMIK_CT_INSERT_FAILED); closed and
 * idle entries expire (smik_ct_lifetime) and the agent sweeps them out.
 * Preallocated: inserting takes an element from a per-CPU free list (no
 * allocation on the new-flow path; a new flow costs what it did with the
 * LRU). */
#ifndef SMIK_CONNTRACK_BPF_H
#define SMIK_CONNTRACK_BPF_H

#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_CT);
  __type(key, struct smik_ct_key);
  __type(value, struct smik_ct_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ct SEC(".maps");

/* Answers the HTTP judge owes after the server's last answer on a flow
 * (SMIK_CT_F_ANSWER): set by the judge's response framer, taken by the tc
 * program that sends it. Keyed as the flow's smik_ct entry. Rarely more
 * than a few at once: not preallocated (0.1 MiB instead of 0.9); an insert
 * that fails is counted (answer_failed). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, SMIK_CT_ANSWERS_MAX);
  __type(key, struct smik_ct_key);
  __type(value, struct smik_ct_answer);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ct_answers SEC(".maps");

#endif /* SMIK_CONNTRACK_BPF_H */
