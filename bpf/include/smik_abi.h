/* The kernel-user ABI of smik: every map key and value, shared verbatim by the
 * BPF C (which includes vmlinux.h first) and the C++ agent. Layout is checked
 * at compile time on both sides; change a struct and both builds must agree.
 *
 * Addresses are always 16 bytes plus a family tag, so IPv6 is an addition to
 * the data path, never an ABI change. IPv4 sits in the first 4 bytes.
 */
#ifndef SMIK_ABI_H
#define SMIK_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define SMIK_STATIC_ASSERT static_assert
#else
#define SMIK_STATIC_ASSERT _Static_assert
#endif

/* Reserved identities. Dynamic (ServiceAccount) identities start at
 * SMIK_ID_FIRST_DYNAMIC. */
#define SMIK_ID_UNKNOWN 0       /* no entry: a source we know nothing about */
#define SMIK_ID_HOST 1          /* this node (kubelet probes): allowed unless SMIK_POL_F_HOST_JUDGED */
#define SMIK_ID_WORLD 2         /* outside the cluster */
#define SMIK_ID_FIRST_DYNAMIC 256
/* Policy key src_id of a destination's meta entry (see smik_policy_value). */
#define SMIK_ID_META 0xffffffffu

#define SMIK_AF_INET 4
#define SMIK_AF_INET6 6

#define SMIK_PROTO_TCP 6
#define SMIK_PROTO_UDP 17

/* Map capacities, every map's in one place (README: "Capacity and kernel
 * memory"). The agent's compiler admits only what fits the maps it fills
 * (ipcache, endpoints, policy, services, backends) and rejects the largest
 * objects otherwise; the kernel-written maps are LRU and evict. Fixed for
 * the life of the pins, except conntrack: --ct-max sizes a new smik_ct. */
#define SMIK_MAX_IPS (1 << 18)          /* smik_ipcache: pod and node addresses */
#define SMIK_MAX_ENDPOINTS 4096         /* smik_endpoints: local meshed pods */
#define SMIK_MAX_POLICY (1 << 18)       /* a policy generation (inner map) */
#define SMIK_MAX_CT (1 << 18)           /* smik_ct: the default of --ct-max */
#define SMIK_MAX_EDGES (1 << 16)        /* smik_edges (LRU) */
#define SMIK_MAX_SERVICES (1 << 16)     /* smik_services: ClusterIP x port tables */
#define SMIK_MAX_BACKENDS (1 << 18)     /* smik_backends: both generations of every table */
#define SMIK_MAX_REVNAT (1 << 18)       /* smik_revnat (LRU) */
#define SMIK_MAX_CONN_EDGES (1 << 14)   /* smik_conn (LRU) */
#define SMIK_MAX_DENIED (1 << 16)       /* smik_denied (LRU) */
#define SMIK_MAX_EV_LIMITS (1 << 14)    /* smik_ev_limits (LRU) */
#define SMIK_EVENTS_BYTES (256 * 1024)  /* smik_events ring buffer */
#define SMIK_MAX_FRAGS 8192             /* smik_frags (LRU): verdicts of fragmented datagrams */
#define SMIK_MAX_OWN_SOCKETS 1024       /* smik_own_sockets (LRU): the agent's API sockets */
#define SMIK_ONE_SLOT 1                 /* smik_policy (outer), smik_state, smik_conn_zero */
/* The counter arrays have one slot per counter: SMIK_REASON_MAX (smik_reasons),
 * SMIK_CT_COUNTER_MAX (smik_ct_stats), SMIK_SOCK_MAX (smik_sock_stats). */
#define SMIK_ENDPOINT_ADDRS 4

/* ipcache: exact pod (and node) addresses in a hash: one O(1) lookup per new
 * flow whatever the cluster size. CIDR identities, when they come, get an LPM
 * map consulted only on a miss. v4 addresses are zero-padded to 16 bytes. */
struct smik_ip_key {
  __u8 family;
  __u8 pad[3];
  __u8 addr[16];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_ip_key) == 20, "smik_ip_key layout");

#define SMIK_IP_F_LOCAL 1 /* a pod on this node */

struct smik_ip_info {
  __u32 identity;
  __u32 flags;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_ip_info) == 8, "smik_ip_info layout");

/* endpoints: host-side ifindex of a local meshed pod -> its identity and the
 * only source addresses it may send from (anti-spoofing). */
#define SMIK_EP_ATTACH_TCX 1
#define SMIK_EP_ATTACH_CLSACT 2

struct smik_endpoint {
  __u32 identity;
  __u8 naddrs;
  __u8 attach; /* SMIK_EP_ATTACH_*: how the agent hooked it, for uninstall */
  __u8 pad[2];
  __u8 families[SMIK_ENDPOINT_ADDRS];
  __u8 addrs[SMIK_ENDPOINT_ADDRS][16];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_endpoint) == 76, "smik_endpoint layout");

/* policy (inner map of smik_policy_outer): an allow-list.
 * {src, dst, dport, proto}: exact grant; dport 0 = every port of proto.
 * {SMIK_ID_META, dst, 0, 0}: how dst is enforced (SMIK_POL_F_*). A destination
 * without a meta entry is not enforced (permissive mode, or not meshed). */
struct smik_policy_key {
  __u32 src_id;
  __u32 dst_id;
  __u16 dport; /* host order */
  __u8 proto;
  __u8 pad;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_policy_key) == 12, "smik_policy_key layout");

#define SMIK_POL_F_ENFORCED 1 /* meta entry: default deny for this dst */
#define SMIK_POL_F_HOST_JUDGED 2 /* meta entry: SMIK_ID_HOST sources need a grant too */

struct smik_policy_value {
  __u32 rule_id; /* 1-based index into the agent's rule table; 0 = meta entry */
  __u32 flags;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_policy_value) == 8, "smik_policy_value layout");

/* state: one entry, the policy generation now in the outer map slot. */
struct smik_state {
  __u32 policy_gen;
  __u32 pad;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_state) == 8, "smik_state layout");

/* conntrack, keyed by the tuple as seen travelling *into* the pod. A pod's
 * own outgoing flow is stored reversed (so its replies match); an allowed
 * inbound flow is stored as is. Ports in network order; ICMP echo is keyed by
 * its id (request: sport = id, dport = 0; reply: sport = 0, dport = id), so a
 * reply matches the reversed key of its request. Only TCP, UDP and ICMP echo
 * get entries: other protocols have no flow a reply could be matched to.
 *
 * Every entry carries the identities it was judged with and the generation it
 * was last judged under; when the generation moves (a policy swap, or an
 * address or endpoint changing identity) the next packet re-judges it. A
 * denied re-judgement leaves the entry REVOKED (not deleted): packets of the
 * flow in either direction are dropped, and the pod's next packet cannot
 * re-create it as a flow of its own. */
struct smik_ct_key {
  __u8 saddr[16];
  __u8 daddr[16];
  __u16 sport;
  __u16 dport;
  __u8 proto;
  __u8 family;
  __u8 pad[2];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_ct_key) == 40, "smik_ct_key layout");

#define SMIK_CT_F_REPLY 1   /* the pod started it: judged as "pod -> peer" */
#define SMIK_CT_F_INBOUND 2 /* the peer started it: judged as "peer -> pod" */
#define SMIK_CT_F_REVOKED 4 /* judged again and denied: dropped both ways */
/* Set by the HTTP judge's guard: the flow's server socket is governed but out
 * of the judge's reach (its payload is dropped), so the flow's next segment
 * with payload into the pod is turned into resets of both ends. */
#define SMIK_CT_F_RESET 8
/* Set by the HTTP judge's response framer: a request the judge refused was
 * pipelined behind requests the server had not answered yet, and its answer
 * is owed right after those answers. smik_ct_answers (same key) says where:
 * the flow's segment out of the pod that ends at `seq` carries the last of
 * them, and the tc program sends the answer after it, then resets the
 * server's socket. */
#define SMIK_CT_F_ANSWER 16
/* Set by the tc program once it has sent that answer: the client's stream
 * has ended, and the server's socket must not outlive it. The reset sent
 * with the answer takes the sequence number the server's last segment
 * acknowledged; bytes the client sent meanwhile move what the server
 * expects, and it takes that reset for a stale one (RFC 5961: it answers
 * with a challenge ACK and stays open). So every segment the server still
 * sends (that ACK, a retransmission) becomes a reset into the pod at its
 * acknowledgement number, until the socket is gone. */
#define SMIK_CT_F_RESET_SERVER 32
/* skb->mark of the segments the tc program puts in again at the pod's veth
 * (the server's last segment, the answer after it): they pass as they are,
 * never taken for the server's own segments after the answer. */
#define SMIK_TC_OWN_MARK 0x534d494bu

struct smik_ct_answer {
  __u32 seq;    /* the server's sequence number right after its last answer */
  __u32 answer; /* which (SMIK_HTTP_ANSWERS order), or SMIK_CT_ANSWER_RESET */
};
/* No place for an answer could be found (the response framer lost track of
 * the server's answers): both ends are reset at `seq` instead. */
#define SMIK_CT_ANSWER_RESET 0xff
/* Where the server's answers end is not known at all (the response framer
 * stopped before the refusal): both ends are reset at the server's next
 * segment out of the pod, whatever its sequence number (`seq` unused). */
#define SMIK_CT_ANSWER_RESET_NEXT 0xfe
SMIK_STATIC_ASSERT(sizeof(struct smik_ct_answer) == 8, "smik_ct_answer layout");
#define SMIK_CT_ANSWERS_MAX 8192 /* answers owed at once, node-wide */

#define SMIK_CT_S_FIN_IN 1  /* TCP: FIN seen into the pod */
#define SMIK_CT_S_FIN_OUT 2 /* TCP: FIN seen from the pod */
#define SMIK_CT_S_CLOSED 4  /* TCP: RST, or FIN both ways: short lifetime */

struct smik_ct_value {
  __u64 last_seen_ns; /* CLOCK_MONOTONIC (coarse), refreshed at most once a second */
  __u32 policy_gen;   /* generation this entry was last judged under */
  __u32 src_id;       /* identity of the packets' source into the pod (the peer) */
  __u32 dst_id;       /* identity of the pod */
  __u8 flags;         /* SMIK_CT_F_* */
  __u8 state;         /* SMIK_CT_S_* */
  __u8 pad[2];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_ct_value) == 24, "smik_ct_value layout");

/* Lifetimes after the last packet (shared by the programs, which treat an
 * expired entry as absent, and the agent's sweep, which deletes it). */
#define SMIK_SEC 1000000000ull
#define SMIK_CT_TCP_LIFETIME (6 * 3600 * SMIK_SEC)
#define SMIK_CT_TCP_CLOSED_LIFETIME (10 * SMIK_SEC)
#define SMIK_CT_UDP_LIFETIME (120 * SMIK_SEC)
#define SMIK_CT_ICMP_LIFETIME (30 * SMIK_SEC)
/* A revoked flow stays revoked while its peers keep trying, and this long after. */
#define SMIK_CT_REVOKED_LIFETIME (600 * SMIK_SEC)
#define SMIK_CT_REFRESH_NS SMIK_SEC

static inline __u64 smik_ct_lifetime(const struct smik_ct_key *k, const struct smik_ct_value *v) {
  if (v->flags & SMIK_CT_F_REVOKED)
    return SMIK_CT_REVOKED_LIFETIME;
  if (k->proto == SMIK_PROTO_TCP)
    return (v->state & SMIK_CT_S_CLOSED) ? SMIK_CT_TCP_CLOSED_LIFETIME : SMIK_CT_TCP_LIFETIME;
  if (k->proto == SMIK_PROTO_UDP)
    return SMIK_CT_UDP_LIFETIME;
  return SMIK_CT_ICMP_LIFETIME;
}

static inline int smik_ct_expired(const struct smik_ct_key *k, const struct smik_ct_value *v,
                                  __u64 now_ns) {
  return now_ns > v->last_seen_ns && now_ns - v->last_seen_ns > smik_ct_lifetime(k, v);
}

/* Per-CPU conntrack counters (index = SMIK_CT_*). The table is the one list
 * of them: the enum below, /status ("conntrack", camelCase), gRPC
 * (ConntrackCounters: a field per name) and Prometheus
 * (smik_conntrack_events_total{event=name}) all come from it. Append only;
 * a retired counter keeps its number. X(ID, index, name, help). */
#define SMIK_CT_COUNTERS(X)                                                           \
  X(CREATED, 0, "created", "entries inserted")                                        \
  X(INSERT_FAILED, 1, "insert_failed",                                                \
    "entries not inserted, the table full: the flow is judged packet by packet")     \
  X(REBUILT, 2, "rebuilt", "entries a mid-flow TCP packet of the pod re-created")    \
  X(REVOKED, 3, "revoked", "entries revoked by a re-judgement")                       \
  X(IDENTITY_CHANGED, 4, "identity_changed",                                          \
    "entries dropped: an address or endpoint changed identity")                      \
  X(CLOSED, 5, "closed", "TCP entries closed by RST or FIN both ways")                \
  X(FRAGMENTS_TRACKED, 6, "fragments_tracked",                                        \
    "first fragments whose verdict later fragments follow")                          \
  X(RESET, 7, "reset",                                                                \
    "flows reset at both ends: an HTTP-governed server socket the judge cannot see")

#define SMIK_X_CT_ENUM(id, n, name, help) SMIK_CT_##id = n,
enum smik_ct_counter {
  SMIK_CT_COUNTERS(SMIK_X_CT_ENUM)
  SMIK_CT_COUNTER_MAX = 8, /* the map's size: room to append */
};
#undef SMIK_X_CT_ENUM

/* Fragments: the first fragment carries the ports and is judged; later
 * fragments of the same datagram follow its verdict. */
struct smik_frag_key {
  __u8 saddr[16];
  __u8 daddr[16];
  __u32 id; /* IPv4 identification (16 bits) or IPv6 fragment identification */
  __u8 proto;
  __u8 family;
  __u8 pad[2];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_frag_key) == 40, "smik_frag_key layout");

struct smik_frag_value {
  __u8 allowed;
  __u8 pad[7];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_frag_value) == 8, "smik_frag_value layout");

/* IPv6 extension headers walked before the packet counts as malformed. */
#define SMIK_IPV6_MAX_EXT 8

/* Per-CPU counters of verdicts by reason (index = SMIK_REASON_*): the one
 * list of verdict reasons, for the enum below, /status ("verdicts"), gRPC
 * (StatusReply.verdicts, keyed by name) and Prometheus
 * (smik_packets_total{verdict=name}). Append only. X(ID, index, name, help). */
#define SMIK_REASONS(X)                                                               \
  X(FORWARDED, 0, "forwarded", "passed: any reason")                                  \
  X(POLICY, 1, "policy", "dropped: no TrafficTarget allows it")                       \
  X(SPOOFED, 2, "spoofed", "dropped: the pod sent from an address not its own")       \
  X(MALFORMED, 3, "malformed", "dropped: truncated IP or L4 header")                  \
  X(UNSUPPORTED, 4, "unsupported",                                                    \
    "dropped: not TCP or UDP (no SMI rule can name it), to an enforced destination") \
  X(FRAGMENT, 5, "fragment", "dropped: a later fragment whose first was not seen")   \
  X(UNHOOKED, 6, "unhooked",                                                          \
    "dropped: on a pod's hook whose endpoint entry is missing (fail closed)")

#define SMIK_X_REASON_ENUM(id, n, name, help) SMIK_REASON_##id = n,
enum smik_reason {
  SMIK_REASONS(SMIK_X_REASON_ENUM)
  SMIK_REASON_MAX = 8, /* the map's size: room to append */
};
#undef SMIK_X_REASON_ENUM

/* ---- Answers to denied flows (--deny-response) ----
 *
 * smik_tc_config[0]: the tc programs' settings, written by the agent. An
 * all-zero entry (no agent has written one) is SMIK_DENY_DROP: the program
 * never answers what nobody asked it to. */
#define SMIK_DENY_DROP 0   /* a denied packet is dropped, unanswered */
#define SMIK_DENY_REJECT 1 /* a denied SYN is answered with a RST, a denied UDP
                              datagram with ICMP administratively prohibited
                              (bpf/README.md) */
#define SMIK_DENY_ANSWERS_PER_SEC 10 /* per source address, sustained */
#define SMIK_DENY_ANSWER_BURST 10    /* per source address, back to back */
#define SMIK_MAX_ANSWER_LIMITS (1 << 13) /* smik_answer_limits (LRU): sources rate-limited */

struct smik_tc_config {
  __u8 deny_response;    /* SMIK_DENY_* */
  __u8 pad[3];
  __u32 answers_per_sec; /* 0 = SMIK_DENY_ANSWERS_PER_SEC */
  __u32 answer_burst;    /* 0 = SMIK_DENY_ANSWER_BURST */
  __u32 pad2;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_tc_config) == 16, "smik_tc_config layout");

/* smik_answer_limits, keyed by the source address (a smik_ip_key): the
 * source's token bucket as a GCRA "theoretical arrival time". */
struct smik_answer_limit {
  __u64 tat_ns;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_answer_limit) == 8, "smik_answer_limit layout");

/* Per-CPU counters of the answers to denied packets (index = SMIK_ANSWER_*):
 * the one list, for the enum below, /status ("denyAnswers"), gRPC
 * (DenyAnswerCounters: a field per name) and Prometheus
 * (smik_deny_answers_total{event=name}). The denied packets themselves
 * count under the verdict "policy" whatever happens to them here. Append
 * only. X(ID, index, name, help). */
#define SMIK_ANSWER_COUNTERS(X)                                                       \
  X(SENT, 0, "sent", "denied new flows answered (a SYN with a RST, a datagram with ICMP)") \
  X(RATE_LIMITED, 1, "rate_limited",                                                  \
    "answers not sent: the source's rate limit was spent")                            \
  X(UNANSWERABLE, 2, "unanswerable",                                                  \
    "denied packets never answered: not a flow's first packet, a RST, an ICMP error, " \
    "a fragment, a broadcast or multicast")                                           \
  X(FAILED, 3, "failed", "answers that could not be built (the packet was dropped)")

#define SMIK_X_ANSWER_ENUM(id, n, name, help) SMIK_ANSWER_##id = n,
enum smik_answer_counter {
  SMIK_ANSWER_COUNTERS(SMIK_X_ANSWER_ENUM)
  SMIK_ANSWER_COUNTER_MAX = 8, /* the map's size: room to append */
};
#undef SMIK_X_ANSWER_ENUM

struct smik_counter {
  __u64 packets;
  __u64 bytes;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_counter) == 16, "smik_counter layout");

/* Per-edge verdicts for new flows (one copy for all CPUs, added atomically). */
struct smik_edge_key {
  __u32 src_id;
  __u32 dst_id;
  __u16 dport; /* host order */
  __u8 proto;
  __u8 pad;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_edge_key) == 12, "smik_edge_key layout");

struct smik_edge_value {
  __u64 flows_allowed; /* new inbound flows admitted by policy */
  __u64 packets_denied;
  __u64 bytes_denied;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_edge_value) == 24, "smik_edge_value layout");


/* ---- Services and TrafficSplit: socket-level translation at connect time ----
 *
 * smik_services: {ClusterIP, port, proto} -> the live backend table of that
 * service port: up to SMIK_MAX_GROUPS weighted groups (one per TrafficSplit
 * backend Service; a plain Service is one group), each a run of endpoints in
 * smik_backends under the table's generation. The agent writes a new table's
 * endpoints under the other generation, then replaces this value (one update:
 * a connection sees the old or the new table), then waits out readers before
 * that generation is reused. */
#define SMIK_MAX_GROUPS 16

struct smik_svc_key {
  __u8 addr[16];
  __u16 port; /* host order */
  __u8 proto;
  __u8 family;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_svc_key) == 20, "smik_svc_key layout");

struct smik_svc_value {
  __u32 svc_id;  /* stable per service port: validates reverse translations */
  __u8 gen;      /* generation of this table's endpoints in smik_backends */
  __u8 ngroups;
  __u16 pad;
  __u32 total;   /* sum of the groups' weights; 0 = nothing to translate to */
  __u32 cum[SMIK_MAX_GROUPS];    /* cumulative weights: group g wins r < cum[g] */
  __u16 offset[SMIK_MAX_GROUPS]; /* group g's first endpoint index */
  __u16 count[SMIK_MAX_GROUPS];  /* group g's endpoints (> 0) */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_svc_value) == 140, "smik_svc_value layout");

struct smik_backend_key {
  __u32 svc_id;
  __u16 index;
  __u8 gen;
  __u8 pad;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_backend_key) == 8, "smik_backend_key layout");

struct smik_backend {
  __u8 addr[16];
  __u16 port; /* host order */
  __u8 family;
  __u8 pad;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_backend) == 20, "smik_backend layout");

/* Reverse translation for getpeername/recvmsg: what a socket dialled. */
struct smik_revnat_key {
  __u64 cookie;
  __u8 addr[16]; /* the backend the socket really talks to */
  __u16 port;    /* host order */
  __u8 family;
  __u8 pad[5];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_revnat_key) == 32, "smik_revnat_key layout");

struct smik_revnat_value {
  __u8 addr[16]; /* the service address the application dialled */
  __u16 port;    /* host order */
  __u8 family;
  __u8 pad;
  __u32 svc_id;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_revnat_value) == 24, "smik_revnat_value layout");

/* Per-CPU counters of the socket programs (index = SMIK_SOCK_*): the one
 * list, for the enum below, /status ("connect", camelCase), gRPC
 * (ConnectCounters: a field per name) and Prometheus
 * (smik_socket_events_total{event=name}). Append only. X(ID, index, name, help). */
#define SMIK_SOCK_COUNTERS(X)                                                         \
  X(TRANSLATED, 0, "translated", "connect() or sendmsg() sent to a backend")           \
  X(NO_BACKEND, 1, "no_backend", "a service address with an empty table")            \
  X(REVERSED, 2, "reversed", "getpeername() or recvmsg() answered with the service")  \
  X(STALE, 3, "stale", "a reverse entry of a service that changed id")

#define SMIK_X_SOCK_ENUM(id, n, name, help) SMIK_SOCK_##id = n,
enum smik_sock_counter {
  SMIK_SOCK_COUNTERS(SMIK_X_SOCK_ENUM)
  SMIK_SOCK_MAX = 4, /* the map's size */
};
#undef SMIK_X_SOCK_ENUM


/* ---- Connection telemetry (sockops, tc denials) ----
 *
 * Counters per edge {client address, server address, server port, proto}:
 * each side counts what it observes. One copy for all CPUs, added to
 * atomically: a per-CPU copy of this 1.7 KiB value would be 1.7 KiB per CPU
 * per edge (1.7 GiB at 64 CPUs, full). Latencies go to log-linear
 * histograms of 32-bit counters: values below SMIK_HIST_SUB have a bucket
 * each, then SMIK_HIST_SUB buckets per power of two, so a bucket's midpoint
 * is within 1 / (2 SMIK_HIST_SUB) of any value in it: 6.25% with 8 (as
 * many per power of two as a Prometheus native histogram of schema 3).
 * 16 per power of two (3.2%) cost 30 MiB more kernel memory at the default
 * map sizes (README, "Capacity and kernel memory"). Change SMIK_HIST_SUB_LOG2
 * alone: everything else, in BPF and C++, follows from it. */
#define SMIK_HIST_SUB_LOG2 3
#define SMIK_HIST_SUB (1 << SMIK_HIST_SUB_LOG2)
#define SMIK_HIST_MAX_LOG2 28 /* values >= 2^28 (µs: ~4.5 min) land in the last bucket */
#define SMIK_HIST_BUCKETS ((SMIK_HIST_MAX_LOG2 - SMIK_HIST_SUB_LOG2 + 1) * SMIK_HIST_SUB)
SMIK_STATIC_ASSERT(SMIK_HIST_SUB_LOG2 >= 1 && SMIK_HIST_SUB_LOG2 < SMIK_HIST_MAX_LOG2,
                   "histogram layout");

struct smik_conn_key {
  __u8 client[16];
  __u8 server[16];
  __u16 port; /* server port, host order */
  __u8 proto;
  __u8 family;
  /* client side: the service table (smik_svc_value.svc_id) its connect()
   * went through, 0 for a direct connection; always 0 on the server side */
  __u32 svc_id;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_conn_key) == 40, "smik_conn_key layout");

struct smik_conn_stats {
  /* observed at the client (its "to" edge) */
  __u64 client_success;        /* reached ESTABLISHED */
  __u64 client_refused;        /* RST answered the SYN */
  __u64 client_timeout;        /* no answer: SYN retransmits ran out, or the client gave up */
  __u64 client_policy;         /* a smik tc program on this node dropped its SYN */
  __u64 client_reset;          /* ESTABLISHED, then reset (not a failed attempt) */
  /* observed at the server (its "from" edge) */
  __u64 server_success;        /* passive ESTABLISHED */
  __u64 server_policy;         /* inbound attempt denied by policy (once per attempt) */
  __u64 pad;
  __u32 handshake_us[SMIK_HIST_BUCKETS]; /* client: connect() to ESTABLISHED */
  __u32 srtt_us[SMIK_HIST_BUCKETS];      /* both sides: smoothed RTT at ESTABLISHED */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_conn_stats) == 64 + 8 * SMIK_HIST_BUCKETS,
                   "smik_conn_stats layout");

/* Events for `smik events` (ring buffer), at most one per edge and kind per
 * second (rate-limited in the kernel). The one list of kinds, for the enum
 * below, gRPC (Event.kind, WatchRequest.kinds) and the CLI's --kind.
 * X(ID, value, name, help). */
#define SMIK_EVENT_KINDS(X)                                                           \
  X(POLICY_DENY, 1, "policy-deny", "a smik tc program dropped a new flow")            \
  X(CONN_FAILED, 2, "connect-failed", "a TCP connect() failed (see the reason)")      \
  X(NEW_EDGE, 3, "new-edge", "the first connection between two endpoints")            \
  X(HTTP_DENY, 4, "http-deny", "the HTTP judge refused a request (method, path, reason)")

#define SMIK_X_EV_ENUM(id, n, name, help) SMIK_EV_##id = n,
enum smik_event_kind {
  SMIK_EVENT_KINDS(SMIK_X_EV_ENUM)
};
#undef SMIK_X_EV_ENUM

struct smik_event {
  __u64 ts_ns;
  struct smik_conn_key edge;
  __u8 kind;   /* smik_event_kind */
  __u8 reason; /* SMIK_FAIL_* for failures */
  __u16 pad;
  __u32 suppressed; /* events of this edge and kind dropped by the rate limit since */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_event) == 56, "smik_event layout");

/* An http-deny event: a smik_event (reason: SMIK_HTTP_C_*, the judge's
 * counter of the refusal) and what the judge knew of the request. A record
 * of fixed size, like every ring buffer record, so the path is a prefix:
 * SMIK_EV_PATH_MAX bytes as sent (escapes not decoded, no query), cut at the
 * first byte the judge refused. The reader takes a record shorter than this
 * for no event at all. */
#define SMIK_EV_PATH_MAX 64
#define SMIK_EV_HTTP_METHOD 1    /* method is the request's */
#define SMIK_EV_HTTP_PATH 2      /* path holds its first path_len bytes */
#define SMIK_EV_HTTP_TRUNCATED 4 /* ... and the path goes on past them */
struct smik_http_event {
  struct smik_event ev;
  __u8 method; /* smik_http_method, if SMIK_EV_HTTP_METHOD */
  __u8 flags;  /* SMIK_EV_HTTP_* */
  __u16 path_len;
  __u32 pad;
  __u8 path[SMIK_EV_PATH_MAX];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_event) == 56 + 8 + SMIK_EV_PATH_MAX,
                   "smik_http_event layout");
SMIK_STATIC_ASSERT(__builtin_offsetof(struct smik_http_event, path) == 64,
                   "smik_http_event layout");

/* Why a connection failed (smik_event.reason): the one list, for the enum
 * below and gRPC (Event.reason). X(ID, value, name, help). */
#define SMIK_FAIL_REASONS(X)                                                          \
  X(REFUSED, 1, "refused", "a RST answered the SYN")                                  \
  X(TIMEOUT, 2, "timeout", "no answer: SYN retransmits ran out, or the client gave up") \
  X(POLICY, 3, "policy", "a smik tc program on this node dropped it")

#define SMIK_X_FAIL_ENUM(id, n, name, help) SMIK_FAIL_##id = n,
enum smik_fail_reason {
  SMIK_FAIL_REASONS(SMIK_X_FAIL_ENUM)
};
#undef SMIK_X_FAIL_ENUM

/* Histogram bucket of a value (shared by BPF and C++). */
static inline __u32 smik_hist_bucket(__u64 v) {
  if (v < SMIK_HIST_SUB)
    return (__u32)v;
  __u32 log2 = 0;
  __u64 x = v;
  if (x >> 32) { x >>= 32; log2 += 32; }
  if (x >> 16) { x >>= 16; log2 += 16; }
  if (x >> 8) { x >>= 8; log2 += 8; }
  if (x >> 4) { x >>= 4; log2 += 4; }
  if (x >> 2) { x >>= 2; log2 += 2; }
  if (x >> 1) { log2 += 1; }
  if (log2 >= SMIK_HIST_MAX_LOG2)
    return SMIK_HIST_BUCKETS - 1;
  /* log2 >= SMIK_HIST_SUB_LOG2 here: v >= SMIK_HIST_SUB */
  __u32 sub = (__u32)(v >> (log2 - SMIK_HIST_SUB_LOG2)) & (SMIK_HIST_SUB - 1);
  return (log2 - SMIK_HIST_SUB_LOG2 + 1) * SMIK_HIST_SUB + sub;
}

#ifdef __cplusplus
/* The tables above as arrays of {value, name, help}, for the agent and its
 * APIs (BPF C has no use for the strings). */
#include <cstddef>

namespace smik::abi {

struct Fact {
  unsigned id;
  const char* name;
  const char* help;
};

#define SMIK_X_FACT(id, n, name, help) Fact{n, name, help},
inline constexpr Fact kReasons[] = {SMIK_REASONS(SMIK_X_FACT)};
inline constexpr Fact kCtCounters[] = {SMIK_CT_COUNTERS(SMIK_X_FACT)};
inline constexpr Fact kSockCounters[] = {SMIK_SOCK_COUNTERS(SMIK_X_FACT)};
inline constexpr Fact kEventKinds[] = {SMIK_EVENT_KINDS(SMIK_X_FACT)};
inline constexpr Fact kFailReasons[] = {SMIK_FAIL_REASONS(SMIK_X_FACT)};
inline constexpr Fact kAnswerCounters[] = {SMIK_ANSWER_COUNTERS(SMIK_X_FACT)};
#undef SMIK_X_FACT

/* The name of value id in table, or fallback when the table has none (a
 * kernel newer than the agent). */
template <std::size_t N>
constexpr const char* nameOf(const Fact (&table)[N], unsigned id, const char* fallback = "") {
  for (const Fact& f : table)
    if (f.id == id) return f.name;
  return fallback;
}

}  // namespace smik::abi
#endif
/* ---- HTTP/1.x requests judged in the kernel (sk_skb verdict on server sockets) ----
 *
 * A sockops program puts each accepted socket of a governed (local address,
 * port) into smik_http_socks (keyed by socket cookie) and gives it a
 * smik_http_conn in smik_http_conns. The verdict program frames every request
 * in each skb itself (request line, headers, Content-Length and chunked
 * bodies, carried across skbs in smik_http_conn), runs the path through the
 * destination port's DFA as the bytes arrive, and judges method + path at the
 * end of the request line against the grant of {source identity, destination
 * identity, port}. When only grants that name headers could allow the
 * request, its header lines run through the port's header DFA and the head's
 * empty line decides. An skb holding a denied or unjudgeable request is
 * dropped whole and turned into the answer (403/400/414/431/503) sent back on
 * the socket, and the connection is closed to the application: nothing after
 * it is passed. Bytes already passed cannot be recalled, so a request head
 * that spans skbs passes its first part (servers do not act on an incomplete
 * head) and is judged at the skb that completes its request line (or, judged
 * by headers, its head). A path
 * whose meaning depends on how a server resolves it is refused, and a
 * governed socket outside the sockhash gets no payload through (a cgroup
 * ingress guard): bpf/README.md, "The HTTP judge fails closed". */
#define SMIK_HTTP_MAX_SOCKETS (1 << 16)       /* smik_http_socks, smik_http_conns (LRU) */
#define SMIK_HTTP_MAX_PORTS 4096              /* smik_http_ports: governed (address, port) */
/* smik_http_port_bits: a bit per port number (word port / 64, bit port % 64)
 * that some address is or was governed on. */
#define SMIK_HTTP_PORT_WORDS (65536 / 64)
#define SMIK_HTTP_MAX_GRANTS (1 << 16)        /* smik_http_grants */
#define SMIK_HTTP_MAX_DFAS 1024               /* smik_http_dfas */
/* Transitions of all DFAs, 4 per slot (an ARRAY value is 8 bytes anyway):
 * two DFAs at the compiler's budget (4096 states x 256 classes) fit. */
#define SMIK_HTTP_TRANS_PER_SLOT 4
#define SMIK_HTTP_MAX_TRANSITIONS (1 << 21)
#define SMIK_HTTP_MAX_TRANS_SLOTS (SMIK_HTTP_MAX_TRANSITIONS / SMIK_HTTP_TRANS_PER_SLOT)
#define SMIK_HTTP_MAX_ACCEPTS (1 << 15)       /* smik_http_accepts: states of all DFAs */
#define SMIK_HTTP_DFA_MAX_STATES 4096         /* one DFA (the compiler's budget) */

/* Defaults of smik_http_config's limits (a 0 there means the default). */
#define SMIK_HTTP_DEFAULT_MAX_LINE 8192    /* request line bytes, CRLF included: else 414 */
#define SMIK_HTTP_DEFAULT_MAX_HEAD 16384   /* header block bytes (and trailers): else 431 */
#define SMIK_HTTP_DEFAULT_MAX_HEADERS 100  /* header lines: else 431 */

/* Methods as grant slots. A method SMI does not name is OTHER: only "*" grants it. */
enum smik_http_method {
  SMIK_HTTP_M_GET = 0,
  SMIK_HTTP_M_HEAD = 1,
  SMIK_HTTP_M_POST = 2,
  SMIK_HTTP_M_PUT = 3,
  SMIK_HTTP_M_DELETE = 4,
  SMIK_HTTP_M_CONNECT = 5,
  SMIK_HTTP_M_OPTIONS = 6,
  SMIK_HTTP_M_TRACE = 7,
  SMIK_HTTP_M_PATCH = 8,
  SMIK_HTTP_M_OTHER = 9,
  SMIK_HTTP_METHODS = 10,
};
#ifdef __cplusplus
namespace smik::abi {
/* By smik_http_method. */
inline constexpr const char* kHttpMethods[SMIK_HTTP_METHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"};
}  // namespace smik::abi
#endif

/* smik_http_ports: the server sockets judged. A dual-stack socket's IPv4
 * connection is keyed by its IPv4 address. */
struct smik_http_port_key {
  __u8 family; /* SMIK_AF_* */
  __u8 pad;
  __u16 port; /* host order */
  __u8 addr[16];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_port_key) == 20, "smik_http_port_key layout");

struct smik_http_port {
  __u32 dst_id; /* identity of the pod behind the address */
  __u16 dfa_id; /* smik_http_dfas index of the port's path patterns */
  __u16 hdr_dfa_id; /* smik_http_dfas index of its header conditions; 0: none (no header is read) */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_port) == 8, "smik_http_port layout");

/* smik_http_dfas: one path DFA (agent/compile/http_regex.h) of up to
 * SMIK_HTTP_MAX_PATTERNS patterns; state s's transition on byte b is
 * smik_http_trans[trans_base + s * classes + class_of[b]] (4 to a slot), its
 * accept mask smik_http_accepts[accept_base + s]. State 0 is dead. The path
 * is the request target up to '?' (the query is not matched, as Envoy's
 * regex route match strips it). */
struct smik_http_dfa {
  __u32 trans_base;  /* a multiple of SMIK_HTTP_TRANS_PER_SLOT */
  __u32 accept_base;
  __u16 states;      /* 0: no DFA, no path matches */
  __u16 classes;
  __u16 start;
  __u16 pad;
  __u8 class_of[256];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_dfa) == 272, "smik_http_dfa layout");

/* A set of a port's patterns, bit i = pattern i: a DFA state's accept set
 * (smik_http_accepts) and what a grant allows per method. Two words, so a
 * port's grants can name 128 distinct patterns and a policy change can swap
 * a port's patterns for as many new ones while open connections still run
 * the old DFA (bits keep their meaning until those close:
 * agent/datapath/http_apply.h). A header DFA's accept set uses w[0] only. */
#define SMIK_HTTP_MASK_WORDS 2
#define SMIK_HTTP_MAX_PATTERNS (64 * SMIK_HTTP_MASK_WORDS)
struct smik_http_mask {
  __u64 w[SMIK_HTTP_MASK_WORDS];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_mask) == 16, "smik_http_mask layout");
#ifdef __cplusplus
/* Set algebra for the agent and the tests (found by ADL: the struct is global). */
inline constexpr smik_http_mask operator&(smik_http_mask a, const smik_http_mask& b) {
  for (int i = 0; i < SMIK_HTTP_MASK_WORDS; ++i) a.w[i] &= b.w[i];
  return a;
}
inline constexpr smik_http_mask& operator|=(smik_http_mask& a, const smik_http_mask& b) {
  for (int i = 0; i < SMIK_HTTP_MASK_WORDS; ++i) a.w[i] |= b.w[i];
  return a;
}
inline constexpr bool operator==(const smik_http_mask& a, const smik_http_mask& b) {
  for (int i = 0; i < SMIK_HTTP_MASK_WORDS; ++i)
    if (a.w[i] != b.w[i]) return false;
  return true;
}
inline constexpr bool operator<(const smik_http_mask& a, const smik_http_mask& b) {
  for (int i = SMIK_HTTP_MASK_WORDS - 1; i >= 0; --i)
    if (a.w[i] != b.w[i]) return a.w[i] < b.w[i];
  return false;
}
namespace smik::abi {
/* Pattern i alone; i >= SMIK_HTTP_MAX_PATTERNS gives the empty set. */
inline constexpr smik_http_mask httpBit(unsigned i) {
  smik_http_mask m{};
  if (i < SMIK_HTTP_MAX_PATTERNS) m.w[i / 64] = __u64{1} << (i % 64);
  return m;
}
/* The low 64 patterns as one word (tests and header DFAs). */
inline constexpr smik_http_mask httpMask(__u64 low) { return smik_http_mask{{low, 0}}; }
inline constexpr bool any(const smik_http_mask& m) {
  for (__u64 w : m.w)
    if (w) return true;
  return false;
}
inline constexpr bool test(const smik_http_mask& m, unsigned i) {
  return i < SMIK_HTTP_MAX_PATTERNS && ((m.w[i / 64] >> (i % 64)) & 1);
}
}  // namespace smik::abi
#endif

struct smik_http_trans_slot {
  __u16 next[SMIK_HTTP_TRANS_PER_SLOT];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_trans_slot) == 8, "smik_http_trans_slot layout");

/* smik_http_grants: what a source may ask of a destination port. A request is
 * allowed when its path's accept mask and patterns[method] share a bit: each
 * bit a pattern of the port's DFA, so a rule's methods and paths stay paired. */
struct smik_http_grant_key {
  __u32 src_id;
  __u32 dst_id;
  __u16 port; /* host order */
  __u16 pad;
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_grant_key) == 12, "smik_http_grant_key layout");

struct smik_http_grant {
  struct smik_http_mask patterns[SMIK_HTTP_METHODS];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_grant) == 160, "smik_http_grant layout");

/* Header matches. A port whose grants name headers has a header DFA
 * (agent/compile/http_regex.h, compileHeaderDfa) over each header line as
 * "lowercased-name:value", the value without its surrounding whitespace:
 * accept bit i says condition i's name and value matched, bit 32 + i that the
 * line is condition i's header at all. Condition i holds when its header was
 * present and every line of it matched. smik_http_needs (keyed by the header
 * DFA's id, written before any port points at it) says per pattern bit of
 * the path DFA which conditions it needs too. */
#define SMIK_HTTP_MAX_HEADER_CONDITIONS 32
#define SMIK_HTTP_HEADER_NAME_SHIFT 32
struct smik_http_needs {
  struct smik_http_mask unconditional; /* pattern bits that need no header */
  __u32 needs[SMIK_HTTP_MAX_PATTERNS]; /* per pattern bit: conditions that must hold */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_needs) == 16 + 4 * 128, "smik_http_needs layout");

/* smik_http_config[0]: limits; 0 = the SMIK_HTTP_DEFAULT_* value. */
struct smik_http_config {
  __u32 max_line;
  __u32 max_head;
  __u32 max_headers;
  __u32 flags; /* SMIK_HTTP_CFG_* */
};
/* --http-non-http1 allow-tcp: a connection that is not HTTP/1.x from its
 * first bytes (a TLS record, the HTTP/2 prior-knowledge preface) passes
 * unjudged instead of refused; it has the port at L4 already. */
#define SMIK_HTTP_CFG_NOT_HTTP1_TCP 1
SMIK_STATIC_ASSERT(sizeof(struct smik_http_config) == 16, "smik_http_config layout");

/* Where the framer is in a connection's byte stream. */
enum smik_http_phase {
  SMIK_HTTP_P_START = 0,      /* before a request line (empty lines are skipped) */
  SMIK_HTTP_P_METHOD = 1,
  SMIK_HTTP_P_PATH = 2,       /* the target up to '?': fed to the DFA */
  SMIK_HTTP_P_QUERY = 3,      /* the rest of the target */
  SMIK_HTTP_P_VERSION = 4,    /* "HTTP/1.x" CRLF */
  SMIK_HTTP_P_HNAME = 5,      /* a header name, or the empty line ending the head */
  SMIK_HTTP_P_HVALUE = 6,
  SMIK_HTTP_P_BODY = 7,       /* Content-Length bytes left in `count` */
  SMIK_HTTP_P_CHUNK_SIZE = 8,
  SMIK_HTTP_P_CHUNK_EXT = 9,
  SMIK_HTTP_P_CHUNK_DATA = 10, /* chunk bytes left in `count` */
  SMIK_HTTP_P_CHUNK_END = 11,  /* the CRLF after chunk data */
  SMIK_HTTP_P_TRAILER = 12,    /* trailer lines, until an empty one */
  SMIK_HTTP_P_CLOSED = 13,     /* a request was denied: every later byte is dropped */
  SMIK_HTTP_P_TUNNEL_PENDING = 14, /* after an allowed CONNECT or WebSocket upgrade: the server's answer decides */
  SMIK_HTTP_P_TUNNEL = 15,     /* the server opened the tunnel: the rest of the stream passes */
};

#define SMIK_HTTP_F_CR 1       /* a CR was read: the next byte must be LF */
#define SMIK_HTTP_F_CL 2       /* the head has a Content-Length */
#define SMIK_HTTP_F_TE 4       /* the head has a Transfer-Encoding */
#define SMIK_HTTP_F_CHUNKED 8  /* ... whose last coding is chunked */
#define SMIK_HTTP_F_HTTP10 16
#define SMIK_HTTP_F_DIGIT 32   /* a digit of the number being read */
#define SMIK_HTTP_F_WEBSOCKET 64  /* an Upgrade line asks for websocket, exactly */
#define SMIK_HTTP_F_UPGRADE_OTHER 128 /* an Upgrade line asks for anything else (h2c: no tunnel) */

/* Which header value is being read (smik_http_conn.value). */
#define SMIK_HTTP_V_OTHER 0
#define SMIK_HTTP_V_CONTENT_LENGTH 1
#define SMIK_HTTP_V_TRANSFER_ENCODING 2
#define SMIK_HTTP_V_UPGRADE 3

/* smik_http_conns (LRU, keyed by socket cookie): the framer's state. A
 * governed socket without one (evicted, or never made) is denied, never
 * judged from the middle of its stream. */
struct smik_http_conn {
  __u32 src_id;
  __u32 dst_id;
  __u16 port;      /* host order */
  __u16 dfa_id;
  __u16 dfa_state; /* the path so far */
  __u8 phase;      /* smik_http_phase */
  __u8 method;     /* smik_http_method */
  __u64 method_acc; /* the method's bytes so far, first byte lowest */
  __u64 count;     /* a number being read, or body / chunk bytes left; closed: the bytes its answer owes */
  __u32 line_bytes; /* of the request line, or of the chunk line */
  __u32 head_bytes; /* of the header block (or trailers) */
  __u16 headers;
  __u8 pos;        /* in a fixed token: "HTTP/1.x", a header name, a value's shape */
  __u8 cand;       /* header names still matching: 1 content-length, 2 transfer-encoding */
  __u8 flags;      /* SMIK_HTTP_F_* */
  __u8 value;      /* SMIK_HTTP_V_* */
  __u8 sub;        /* transfer-encoding: chars of "chunked" matched in this coding */
  __u8 hdr;        /* SMIK_HTTP_H_*: this request's header lines decide */
  __u64 requests;  /* requests allowed on this connection */
  __u16 hdr_dfa_id; /* the port's header conditions when accepted; 0: none */
  __u16 hdr_state;  /* the header line so far in the header DFA */
  __u16 hdr_commit; /* ... as of its last byte that is not whitespace */
  __u8 pad[2];
  __u32 hdr_present; /* conditions whose header was seen in this head */
  __u32 hdr_failed;  /* ... with a line whose value did not match */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_conn) == 72, "smik_http_conn layout");

#define SMIK_HTTP_H_DECIDES 1 /* only header-conditional grants could allow it: judged at the head's end */
#define SMIK_HTTP_H_LEADING 2 /* in a value's leading whitespace (not matched) */

/* The HTTP judge's per-CPU counters (index = SMIK_HTTP_C_*), one table for
 * the enum, Prometheus (smik_http_requests_total{verdict=name}), /status and
 * the CLI. Append only. X(ID, index, name, help). */
#define SMIK_HTTP_COUNTER_FACTS(X)                                                          \
  X(ALLOWED, 0, "allowed", "requests passed after their request line (or head) was judged") \
  X(DENIED_POLICY, 1, "denied_policy", "403: no grant for this method, path and headers")   \
  X(MALFORMED, 2, "malformed", "400: not HTTP/1.x syntax the framer can follow")           \
  X(NOT_HTTP1, 3, "not_http1", "400: TLS, the HTTP/2 preface, another version")            \
  X(UNFRAMEABLE, 4, "unframeable", "400: framing servers disagree on (CL + TE, ...)")      \
  X(URI_TOO_LONG, 5, "uri_too_long", "414: request line over the limit")                   \
  X(HEAD_TOO_LARGE, 6, "head_too_large", "431: header block over the limit")               \
  X(NO_STATE, 7, "no_state", "503: a judged socket without its framer state")              \
  X(DROPPED, 8, "dropped", "skbs dropped after a connection's denial")                     \
  X(SOCKETS, 9, "sockets", "accepted sockets put under judgement")                         \
  X(SOCKHASH_FULL, 10, "sockhash_full", "accepted sockets that could not be (not judged)") \
  X(ANSWER_FAILED, 11, "answer_failed", "a denial whose answer could not be sent")         \
  X(PATH_NOT_NORMAL, 12, "path_not_normal",                                                \
    "400: a path servers may resolve otherwise than its bytes read")                       \
  X(UNJUDGED, 13, "unjudged",                                                              \
    "packets with payload dropped: a governed socket not under judgement")                 \
  X(TUNNELS, 14, "tunnels", "CONNECT / WebSocket tunnels the server opened (not judged further)") \
  X(RESPONSES_UNTRACKED, 15, "responses_untracked",                                            \
    "connections whose answers stopped being counted (a response the counter cannot "       \
    "frame, more pipelined than it keeps): metrics only, never a verdict")                  \
  X(ANSWER_DEFERRED, 16, "answer_deferred",                                                    \
    "refusals answered after the server's answers to the requests before them, not at once") \
  X(NOT_HTTP1_PASSED, 17, "not_http1_passed",                                                  \
    "connections not HTTP/1.x from their first bytes passed unjudged (--http-non-http1 allow-tcp)")

enum smik_http_counter {
#define SMIK_X_HTTP_ENUM(id, n, name, help) SMIK_HTTP_C_##id = n,
  SMIK_HTTP_COUNTER_FACTS(SMIK_X_HTTP_ENUM)
#undef SMIK_X_HTTP_ENUM
  SMIK_HTTP_COUNTER_MAX = 18,
};

/* ---- HTTP answers per edge (cgroup egress of judged server sockets) ----
 *
 * Requests the verdict passed complete (head and body framed) are queued per
 * connection with their receive time; the server's responses, framed as they
 * are sent (status line, Content-Length / chunked / no body), each answer the
 * oldest. Counted per server-side edge (smik_conn_key, svc_id 0) by method
 * and status class, with the response latency: request fully received ->
 * the response's first byte sent, in µs, in the smik_conn histogram layout.
 * One copy for all CPUs, added to atomically (as smik_conn). LRU: a full map
 * drops the edge idle longest, whose counts the agent has read. */
#define SMIK_HTTP_MAX_EDGES (1 << 13)   /* smik_http_edges (LRU) */
#define SMIK_HTTP_PIPELINE 32           /* requests awaiting an answer, kept per connection */
/* Receive times kept per connection: one per skb that completed requests
 * (its requests were received at once). Requests of an skb that finds them
 * all taken are answered and counted, without a latency sample. */
#define SMIK_HTTP_BATCHES 8
/* Status classes: 1 to 5 for 1xx to 5xx; 0: a status line the counter could
 * not read (its request is answered, its class unknown). */
#define SMIK_HTTP_CLASSES 6

struct smik_http_edge_stats {
  __u64 answers[SMIK_HTTP_METHODS][SMIK_HTTP_CLASSES];
  __u32 response_us[SMIK_HIST_BUCKETS];
};
SMIK_STATIC_ASSERT(sizeof(struct smik_http_edge_stats) ==
                       8 * SMIK_HTTP_METHODS * SMIK_HTTP_CLASSES + 4 * SMIK_HIST_BUCKETS,
                   "smik_http_edge_stats layout");

#ifdef __cplusplus
namespace smik::abi {
#define SMIK_X_FACT(id, n, name, help) Fact{n, name, help},
inline constexpr Fact kHttpCounters[] = {SMIK_HTTP_COUNTER_FACTS(SMIK_X_FACT)};
#undef SMIK_X_FACT
static_assert(sizeof(kHttpCounters) / sizeof(kHttpCounters[0]) == SMIK_HTTP_COUNTER_MAX,
              "every HTTP counter has its fact");
}  // namespace smik::abi
#endif

#endif /* SMIK_ABI_H */
