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

/* Per-CPU conntrack counters (index = SMIK_CT_*). */
enum smik_ct_counter {
  SMIK_CT_CREATED = 0,       /* entries inserted */
  SMIK_CT_INSERT_FAILED = 1, /* table full: the flow is judged packet by packet */
  SMIK_CT_REBUILT = 2,       /* a mid-flow TCP packet of the pod re-created its entry */
  SMIK_CT_REVOKED = 3,       /* entries revoked by a re-judgement */
  SMIK_CT_IDENTITY_CHANGED = 4, /* entries dropped: an address or endpoint changed identity */
  SMIK_CT_CLOSED = 5,        /* TCP entries closed by RST or FIN both ways */
  SMIK_CT_FRAG_TRACKED = 6,  /* first fragments whose verdict later fragments follow */
  SMIK_CT_COUNTER_MAX = 8,
};

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

/* Per-CPU counters of verdicts by reason (index = SMIK_REASON_*). */
enum smik_reason {
  SMIK_REASON_FORWARDED = 0,  /* passed: any reason */
  SMIK_REASON_POLICY = 1,     /* dropped: no TrafficTarget allows it */
  SMIK_REASON_SPOOFED = 2,    /* dropped: pod sent from an address not its own */
  SMIK_REASON_MALFORMED = 3,  /* dropped: truncated IP/L4 header */
  SMIK_REASON_UNSUPPORTED = 4, /* dropped: not TCP/UDP (no SMI rule can name it), enforced dst */
  SMIK_REASON_FRAGMENT = 5,   /* dropped: a later fragment whose first fragment was not seen */
  SMIK_REASON_MAX = 8,
};

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

/* Per-CPU counters of the socket programs (index = SMIK_SOCK_*). */
enum smik_sock_counter {
  SMIK_SOCK_TRANSLATED = 0, /* connect/sendmsg sent to a backend */
  SMIK_SOCK_NO_BACKEND = 1, /* a service address with an empty table */
  SMIK_SOCK_REVERSED = 2,   /* getpeername/recvmsg answered with the service */
  SMIK_SOCK_STALE = 3,      /* reverse entry of a service that changed id */
  SMIK_SOCK_MAX = 4,
};


/* ---- Connection telemetry (sockops, tc denials) ----
 *
 * Counters per edge {client address, server address, server port, proto}:
 * each side counts what it observes. One copy for all CPUs, added to
 * atomically: a per-CPU copy of this 3 KiB value would be 3 KiB per CPU per
 * edge (3.4 GiB at 64 CPUs, full). Latencies go to log-linear
 * histograms: values below 16 have a bucket each, then 16 buckets per power
 * of two (a bucket's midpoint is within 3.2% of any value in it). */
#define SMIK_HIST_SUB 16
#define SMIK_HIST_MAX_LOG2 28 /* values >= 2^28 (µs: ~4.5 min) land in the last bucket */
#define SMIK_HIST_BUCKETS ((SMIK_HIST_MAX_LOG2 - 3) * SMIK_HIST_SUB)

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
 * second (rate-limited in the kernel). */
enum smik_event_kind {
  SMIK_EV_POLICY_DENY = 1,
  SMIK_EV_CONN_FAILED = 2,
  SMIK_EV_NEW_EDGE = 3,
};

struct smik_event {
  __u64 ts_ns;
  struct smik_conn_key edge;
  __u8 kind;   /* smik_event_kind */
  __u8 reason; /* SMIK_FAIL_* for failures */
  __u16 pad;
  __u32 suppressed; /* events of this edge and kind dropped by the rate limit since */
};
SMIK_STATIC_ASSERT(sizeof(struct smik_event) == 56, "smik_event layout");

enum smik_fail_reason {
  SMIK_FAIL_REFUSED = 1,
  SMIK_FAIL_TIMEOUT = 2,
  SMIK_FAIL_POLICY = 3,
};

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
  __u32 sub = (__u32)(v >> (log2 - 4)) & (SMIK_HIST_SUB - 1);
  return (log2 - 3) * SMIK_HIST_SUB + sub;
}

#endif /* SMIK_ABI_H */
