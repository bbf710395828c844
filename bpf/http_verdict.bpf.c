/* HTTP/1.x requests judged before the server application reads them.
 *
 * sockops (on the pods' cgroup): an accepted socket of a governed (address,
 * port) gets its framer state and joins smik_http_socks.
 * sk_skb verdict (parserless, on smik_http_socks): walks every byte of each
 * skb through the request framer (smik_abi.h, "HTTP/1.x requests judged in
 * the kernel"). No strparser: it makes ordinary servers see spurious EAGAIN.
 * One verdict covers a whole skb, so an skb holding any request that is
 * denied or cannot be judged is dropped whole and becomes the answer.
 * cgroup ingress (guard): payload for a governed socket the verdict does not
 * see is dropped. cgroup egress (on the same cgroup): the server's
 * responses, framed as they leave, are counted per edge, and its answer to a
 * CONNECT or WebSocket upgrade decides whether a tunnel opens.
 * What each refuses and why: bpf/README.md, "The HTTP judge fails closed".
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "smik_abi.h"
#include "addr.bpf.h"
#include "conntrack.bpf.h"
#include "events.bpf.h"
#include "http_answers.bpf.h"
#include "ipcache.bpf.h"
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Accepted sockets under judgement, keyed by socket cookie (one key on both
 * hooks: no 4-tuple byte-order traps). */
struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, SMIK_HTTP_MAX_SOCKETS);
  __type(key, __u64);
  __type(value, __u64);
} smik_http_socks SEC(".maps");

/* A connection's 4-tuple, as the verdict reads it from the socket: what its
 * edge (smik_conn_key) is made of. */
struct tunnel_key {
  __u8 local[16];
  __u8 remote[16];
  __u16 local_port; /* host order, both */
  __u16 remote_port;
  __u32 family; /* SMIK_AF_* */
};

#define TUNNEL_KEY(k, ctx)                                       \
  do {                                                           \
    (k)->family = sock_addrs(ctx, (k)->local, (k)->remote);      \
    (k)->local_port = sock_local_port(ctx);                      \
    (k)->remote_port = sock_remote_port(ctx);                    \
  } while (0)

/* Governed (local address, port) -> destination identity and path DFA. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_HTTP_MAX_PORTS);
  __type(key, struct smik_http_port_key);
  __type(value, struct smik_http_port);
} smik_http_ports SEC(".maps");

/* The port numbers some address is or was governed on, a bit each. The
 * guard and the egress program run on every packet of every pod under the
 * cgroup; a socket whose local port has no bit is no judged socket and on
 * no governed port, and costs them an array read (inlined) instead of the
 * hash lookups (≈ 140 and 220 ns a run on such sockets, bench/README.md).
 * The agent sets a port's bit before it governs any address on it and
 * never clears it (a socket judged on a port outlives the port's
 * governance), so a missing bit never hides a governed port. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_HTTP_PORT_WORDS);
  __type(key, __u32);
  __type(value, __u64);
} smik_http_port_bits SEC(".maps");

static __always_inline int port_may_be_governed(__u16 port) {
  __u32 k = port >> 6;
  __u64 *w = bpf_map_lookup_elem(&smik_http_port_bits, &k);
  return w && ((*w >> (port & 63)) & 1);
}

/* {source, destination, port} -> patterns granted per method. Written by the
 * agent only, so not preallocated: at 160 bytes a value, a full preallocated
 * table would pin 14 MiB that a node with a few HTTP ports never uses. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, SMIK_HTTP_MAX_GRANTS);
  __type(key, struct smik_http_grant_key);
  __type(value, struct smik_http_grant);
} smik_http_grants SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_HTTP_MAX_DFAS);
  __type(key, __u32);
  __type(value, struct smik_http_dfa);
} smik_http_dfas SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_HTTP_MAX_TRANS_SLOTS);
  __type(key, __u32);
  __type(value, struct smik_http_trans_slot);
} smik_http_trans SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_HTTP_MAX_ACCEPTS);
  __type(key, __u32);
  __type(value, struct smik_http_mask);
} smik_http_accepts SEC(".maps");

/* Header DFA id -> which header conditions each path pattern bit needs. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SMIK_HTTP_MAX_DFAS);
  __type(key, __u32);
  __type(value, struct smik_http_needs);
} smik_http_needs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct smik_http_config);
} smik_http_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SMIK_HTTP_COUNTER_MAX);
  __type(key, __u32);
  __type(value, __u64);
} smik_http_stats SEC(".maps");


static __always_inline void count(__u32 c) {
  __u64 *v = bpf_map_lookup_elem(&smik_http_stats, &c);
  if (v)
    *v += 1;
}

/* ---- exchanges: what the server said to the requests it was let through ----
 *
 * Per connection (socket cookie): the requests completely received and not
 * yet answered, oldest first, with their method and (per batch: the
 * requests one skb completed) their receive time, and where
 * the server's byte stream is in its responses. The verdict queues a request
 * when its last byte (end of head, of its Content-Length body, of its
 * chunked trailers) passed; the egress program frames the server's bytes as
 * they are transmitted, each once (by TCP sequence number: a retransmission
 * is not framed again), and takes the oldest request off the queue at each
 * final status line. Both run under the socket's lock (the verdict from the
 * receive path, egress from the transmit path), so a connection's state is
 * never written by both at once. It lives beside the request framer's
 * state, in the socket's entry of smik_http_conns (struct conn_state). It
 * decides no verdict: it places the answers owed, and counts. */
#define R_STATUS 0     /* a status line is next; pos: its bytes read */
#define R_HEAD 1       /* the rest of the head, until its empty line */
#define R_BODY 2       /* count: Content-Length bytes left */
#define R_CHUNK_SIZE 3 /* a chunk-size line */
#define R_CHUNK_DATA 4 /* count: chunk bytes and their CRLF left */
#define R_TRAILER 5    /* trailer lines, until an empty one */
#define R_OFF 6        /* no more counting on this connection */

#define RF_CL 1        /* the head has a Content-Length */
#define RF_TE 2        /* ... a Transfer-Encoding */
#define RF_CHUNKED 4   /* ... whose last coding is chunked */
#define RF_EXT 8       /* in a chunk extension */

/* Header value being read (exchange.hv). */
#define HV_NAME 0
#define HV_OTHER 1
#define HV_CL 2
#define HV_TE 3

/* exchange.method[]: this request asked for a tunnel (CONNECT, WebSocket
 * upgrade): its final status decides whether one opens */
#define X_TUNNEL 0x80
/* exchange.method[]: the request's receive time is its batch's (the oldest
 * batch not yet answered) */
#define X_TIMED 0x40
/* exchange.tunnel: a connection whose last request asked for a tunnel
 * (CONNECT, WebSocket upgrade). The verdict writes PENDING, the egress
 * program the server's answer to that request as it leaves, and the
 * verdict reads it at the client's next bytes. */
#define TUNNEL_NONE 0
#define TUNNEL_PENDING 1 /* asked for; the server has not answered */
#define TUNNEL_REFUSED 2
#define TUNNEL_OPEN 3

struct exchange {
  __u64 batch_ns[SMIK_HTTP_BATCHES];  /* ns: the batch's last byte passed the verdict */
  __u8 batch_left[SMIK_HTTP_BATCHES]; /* the batch's requests not answered yet */
  __u8 method[SMIK_HTTP_PIPELINE];    /* smik_http_method, | X_TUNNEL, | X_TIMED */
  struct smik_conn_key edge;          /* the connection's edge, as counted */
  __u64 count;
  __u64 first_ns;  /* the response's first byte was sent */
  __u16 status;
  __u8 oldest;     /* ring index of the oldest request queued */
  __u8 queued;     /* requests queued */
  __u8 batch_oldest; /* ring index of the oldest batch */
  __u8 batches;    /* batches with requests not answered yet */
  __u8 phase;      /* R_* */
  __u8 pos;        /* status line bytes; header name bytes */
  __u8 line;       /* 1 once the current line has a byte (CR aside) */
  __u8 cand;       /* header names still matching: 1 content-length, 2 transfer-encoding */
  __u8 flags;      /* RF_* */
  __u8 hv;         /* HV_* */
  __u8 sub;        /* transfer-encoding: chars of "chunked" matched */
  __u8 answering;  /* method of the request this response answers */
  __u8 answered;   /* this response took a request off the queue */
  __u8 seq_known;  /* seq is set (at the first new byte sent after the state was made) */
  __u8 owed;       /* 1 + the answer (SMIK_HTTP_ANSWERS) owed once every request queued is answered */
  __u8 tracked;    /* a request was queued: the server's bytes from here on are answers */
  __u32 seq;       /* TCP sequence number of the next byte to frame */
  __u8 fin;        /* the client's FIN came with answers still owed: gone once they are out */
  __u8 tunnel;     /* TUNNEL_* */
  __u8 to_close;   /* R_OFF: the server's last answer runs to its close */
};

/* A judged socket's state, keyed by socket cookie (sk_storage is refused in
 * sk_skb): the request framer's (smik_http_conn, the verdict's) and its
 * exchange (the response framer's), one entry so that each request costs the
 * verdict one lookup, not two (each is a cache miss or two on a busy node).
 * Made by sockops when the socket is accepted, with the exchange zeroed and
 * not yet tracked; removed when the socket closes (forget_closed). LRU all
 * the same: an entry evicted from a live socket (only more live sockets than
 * entries do that) is a socket without framer state, whose payload the guard
 * drops. */
struct conn_state {
  struct smik_http_conn c;
  struct exchange x;
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_HTTP_MAX_SOCKETS);
  __type(key, __u64);
  __type(value, struct conn_state);
} smik_http_conns SEC(".maps");

/* The server has sent (as far as TCP has transmitted) the whole of an answer
 * to every request let through, and nothing more: an answer of the judge's
 * sent now comes after all of them. */
static __always_inline int answered_all(const struct exchange *a) {
  return a->queued == 0 && a->phase == R_STATUS && a->pos == 0;
}

/* Answers per server-side edge (smik_abi.h, "HTTP answers per edge"). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_HTTP_MAX_EDGES);
  __type(key, struct smik_conn_key);
  __type(value, struct smik_http_edge_stats);
} smik_http_edges SEC(".maps");

/* A zeroed smik_http_edge_stats to create entries from: too big for the stack. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct smik_http_edge_stats);
} smik_http_edges_zero SEC(".maps");

/* ---- sockops: governed accepted sockets join the sockhash ---------------- */

#define TCP_CLOSE_ 7

/* A judged socket's state goes when the socket closes, however it closes:
 * the server first (idle timeouts, `Connection: close`, HTTP/1.0), a reset,
 * or the client's FIN (the verdict's last call, or the egress program's
 * last answer, takes it first then). Left to the LRU, the entries of closed
 * sockets would make room for new ones by evicting the state of long-idle
 * live connections, whose next request the guard would then reset. */
static __always_inline void forget_closed(struct bpf_sock_ops *skops) {
  if (skops->args[1] != TCP_CLOSE_ || !(skops->bpf_sock_ops_cb_flags & SMIK_JUDGED_SOCKET_MARK))
    return;
  __u64 cookie = bpf_get_socket_cookie(skops);
  bpf_map_delete_elem(&smik_http_conns, &cookie);
}

SEC("sockops")
int smik_http_sockops(struct bpf_sock_ops *skops) {
  if (skops->op == BPF_SOCK_OPS_STATE_CB) {
    forget_closed(skops);
    return 1;
  }
  if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
    return 1;
  struct smik_http_port_key pk = {.port = sock_local_port(skops)};
  struct smik_ip_key ik = {};
  pk.family = ik.family = sock_addrs(skops, pk.addr, ik.addr);
  if (!pk.family)
    return 1;
  unmap_v4(&pk.family, pk.addr);
  unmap_v4(&ik.family, ik.addr);
  struct smik_http_port *p = bpf_map_lookup_elem(&smik_http_ports, &pk);
  if (!p)
    return 1;
  struct conn_state st = {.c = {.dst_id = p->dst_id,
                                .port = pk.port,
                                .dfa_id = p->dfa_id,
                                .hdr_dfa_id = p->hdr_dfa_id}};
  struct smik_ip_info *src = bpf_map_lookup_elem(&smik_ipcache, &ik);
  st.c.src_id = src ? src->identity : SMIK_ID_UNKNOWN;
  __u64 cookie = bpf_get_socket_cookie(skops);
  /* State only for a socket the verdict will see: a governed socket without
   * state is what the guard below drops (a full sockhash must not leave a
   * socket unjudged yet looking judged). Both happen before the first byte
   * of payload is queued: the socket is locked while this runs. */
  if (bpf_sock_hash_update(skops, &smik_http_socks, &cookie, BPF_NOEXIST) != 0) {
    count(SMIK_HTTP_C_SOCKHASH_FULL);
    return 1;
  }
  bpf_map_update_elem(&smik_http_conns, &cookie, &st, BPF_ANY);
  bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | SMIK_JUDGED_SOCKET_FLAGS);
  count(SMIK_HTTP_C_SOCKETS);
  return 1;
}

/* ---- the guard: no governed socket is left unjudged ---------------------------
 *
 * The verdict sees only sockets in smik_http_socks. A governed socket can be
 * outside it: the sockhash was full, the socket was established before the
 * judge was attached or before its port was governed, its framer state was
 * evicted. cgroup ingress runs for every packet before TCP queues its payload,
 * so there a payload for a governed (address, port) whose socket has no
 * framer state is dropped and counted (SMIK_HTTP_C_UNJUDGED): such a
 * connection carries nothing to the application. Packets without payload
 * pass, so handshakes and closes finish. A payload that completes a
 * handshake reaches the listener, before sockops has made the socket's
 * state: it is dropped too, and the client's retransmission after the
 * handshake is judged. */
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define IPPROTO_TCP_ 6
#define TCP_LISTEN_ 10

/* The destination and whether the TCP segment may carry payload (1 also when
 * the headers cannot be read: unknown is treated as payload). */
static __always_inline int guard_parse(struct __sk_buff *skb, struct smik_http_port_key *pk) {
  __u32 l3, len = skb->len;
  __u8 b[2];
  if (skb->protocol == bpf_htons(ETH_P_IP_)) {
    pk->family = SMIK_AF_INET;
    if (bpf_skb_load_bytes(skb, 16, pk->addr, 4) < 0 || bpf_skb_load_bytes(skb, 0, b, 1) < 0)
      return -1;
    l3 = (b[0] & 0xf) * 4;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6_)) {
    pk->family = SMIK_AF_INET6;
    if (bpf_skb_load_bytes(skb, 24, pk->addr, 16) < 0 || bpf_skb_load_bytes(skb, 6, b, 1) < 0)
      return -1;
    if (b[0] != IPPROTO_TCP_)
      return 1; /* extension headers: not walked, so not known to be empty */
    l3 = 40;
  } else {
    return -1;
  }
  if (bpf_skb_load_bytes(skb, l3 + 12, b, 1) < 0)
    return 1;
  __u32 headers = l3 + (b[0] >> 4) * 4;
  return len > headers;
}

/* One end of a connected socket (remote: its peer's) in the ABI's 16-byte
 * address form: its SMIK_AF_*, or 0 for another family. */
static __always_inline __u8 sock_end(const struct bpf_sock *sk, int remote, __u8 *addr) {
  __u32 *a = (__u32 *)addr;
  if (sk->family == AF_INET_) {
    a[0] = remote ? sk->dst_ip4 : sk->src_ip4;
    return SMIK_AF_INET;
  }
  if (sk->family == AF_INET6_) {
    a[0] = remote ? sk->dst_ip6[0] : sk->src_ip6[0];
    a[1] = remote ? sk->dst_ip6[1] : sk->src_ip6[1];
    a[2] = remote ? sk->dst_ip6[2] : sk->src_ip6[2];
    a[3] = remote ? sk->dst_ip6[3] : sk->src_ip6[3];
    return SMIK_AF_INET6;
  }
  return 0;
}

/* The conntrack key of a connection's flow into the pod, saddr (the peer)
 * and daddr (the pod) as the socket holds them: a v4-mapped pair unmapped,
 * as the tc programs see it on the wire. 0 for a family no flow has. */
static __always_inline int ct_key_into_pod(struct smik_ct_key *k, __u8 family, __u16 peer_port_be,
                                           __u16 pod_port_be) {
  __u8 pod = family;
  k->family = family;
  if (unmap_v4(&pod, k->daddr))
    unmap_v4(&k->family, k->saddr);
  if (!family || pod != k->family)
    return 0;
  k->sport = peer_port_be;
  k->dport = pod_port_be;
  k->proto = IPPROTO_TCP_;
  return 1;
}

/* The same from a full socket (the guard's, the egress program's). */
static __always_inline int flow_into_pod(const struct bpf_sock *sk, struct smik_ct_key *k) {
  __u8 family = sock_end(sk, 1, k->saddr);
  sock_end(sk, 0, k->daddr);
  /* dst_port: network order; src_port: host order */
  return ct_key_into_pod(k, family, (__u16)sk->dst_port, bpf_htons((__u16)sk->src_port));
}

/* A refusal here leaves both ends waiting: the client retransmits its
 * request until TCP gives up, the server waits for it. So the flow's
 * conntrack entry into the pod, keyed (peer, pod), is marked, and the tc
 * programs turn the flow's next segment with payload (that retransmission)
 * into RSTs to both ends (reset_flow in tc_policy.bpf.c). A flow without an
 * entry (the table was full) stays refused and waits, as before. */
static __always_inline void mark_reset(const struct bpf_sock *sk) {
  struct smik_ct_key k = {};
  if (!flow_into_pod(sk, &k))
    return;
  struct smik_ct_value *ct = bpf_map_lookup_elem(&smik_ct, &k);
  if (ct && !(ct->flags & SMIK_CT_F_RESET))
    ct->flags |= SMIK_CT_F_RESET;
}

SEC("cgroup_skb/ingress")
int smik_http_guard(struct __sk_buff *skb) {
  struct bpf_sock *sk = skb->sk;
  if (!sk)
    return 1;
  sk = bpf_sk_fullsock(sk);
  if (!sk || sk->protocol != IPPROTO_TCP_)
    return 1;
  struct smik_http_port_key pk = {.port = (__u16)sk->src_port};
  if (!port_may_be_governed(pk.port))
    return 1;
  /* A listener may be bound to the wildcard: only the packet says which
   * governed address the handshake it completes is for. */
  int listener = sk->state == TCP_LISTEN_;
  int payload = 1;
  if (listener) {
    payload = guard_parse(skb, &pk);
    if (payload < 0)
      return 1; /* not IP: no governed address */
  } else {
    /* A connected socket's local end, as sockops keyed it when it decided
     * whether to judge the socket: its packets' destination. Read from the
     * socket, not the packet, so that a packet to a socket no port governs
     * (the client's answers, every other pod's traffic) costs one map
     * lookup and no packet read. */
    pk.family = sock_end(sk, 0, pk.addr);
    if (!pk.family)
      return 1;
  }
  unmap_v4(&pk.family, pk.addr);
  if (!bpf_map_lookup_elem(&smik_http_ports, &pk))
    return 1;
  if (!listener) {
    __u64 cookie = bpf_get_socket_cookie(skb);
    if (bpf_map_lookup_elem(&smik_http_conns, &cookie))
      return 1;
    /* no framer state: only now is the packet read, for its payload */
    struct smik_http_port_key dst = {};
    payload = guard_parse(skb, &dst);
    if (payload < 0)
      return 1;
  }
  if (!payload)
    return 1;
  count(SMIK_HTTP_C_UNJUDGED);
  if (!listener)
    mark_reset(sk);
  return 0;
}

/* ---- the framer ----------------------------------------------------------- */

/* What a walk decided for its skb. */
enum walk_verdict {
  W_PASS = 0,
  W_DENY,         /* 403 */
  W_MALFORMED,    /* 400 */
  W_NOT_HTTP1,    /* 400 */
  W_UNFRAMEABLE,  /* 400 */
  W_URI_TOO_LONG, /* 414 */
  W_HEAD_TOO_LARGE, /* 431 */
  W_NO_STATE,     /* 503 */
  W_PATH_NOT_NORMAL, /* 400 */
};

#define BUF 64
/* Requests one skb may complete and still have their answers followed: as
 * many methods as walk.done_methods holds (the walk, with the verdict's
 * frame, fills the 512 bytes of stack a BPF call chain may have). */
#define MAX_DONE 16

struct limits {
  __u32 max_line, max_head, max_headers;
};

/* A global function may read the walk's buffer, not the walk: its skb
 * pointer would be lost to the verifier. */
struct walk_bytes {
  __u8 b[BUF];
};

/* Methods, 4 bits each, first lowest, in 32-bit words: the verifier tracks
 * an 8-byte value spilled to the stack, and would tell the loop's
 * iterations apart by it. */
struct methods {
  __u32 w[MAX_DONE / 8];
};

struct walk {
  struct __sk_buff *skb;
  __u32 off;     /* next byte of the skb to frame */
  __u32 len;
  __u32 buf_off; /* skb offset of buf[0] */
  __u32 buf_len;
  __u32 verdict; /* walk_verdict */
  struct limits lim;
  struct smik_http_conn c;
  /* requests this skb completed, and their methods (4 bits each, first
   * lowest): queued for their answers once the skb passes */
  __u32 done;
  struct methods done_methods;
  __u32 kept; /* skb offset where the last request it completed ends */
  struct walk_bytes buf;
};

const char http_version[] = "HTTP/1.";
const char name_cl[] = "content-length";
const char name_te[] = "transfer-encoding";
const char chunked[] = "chunked";
const char name_upgrade[] = "upgrade";
const char websocket[] = "websocket";
#define NAME_UPGRADE_LEN 7
#define WEBSOCKET_LEN 9
#define NAME_CL_LEN 14
#define NAME_TE_LEN 17
#define CHUNKED_LEN 7
/* A Content-Length or chunk size beyond this is refused, not framed. */
#define MAX_BODY (1ULL << 48)

static __always_inline int is_tchar(__u8 b) {
  if ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'))
    return 1;
  switch (b) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return 1;
  }
  return 0;
}

static __always_inline __u8 lower(__u8 b) { return (b >= 'A' && b <= 'Z') ? b + 32 : b; }

static __always_inline int hex_value(__u8 b) {
  if (b >= '0' && b <= '9') return b - '0';
  b = lower(b);
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  return -1;
}

#define M(a, b, c, d, e, f, g) \
  ((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 | \
   (__u64)(f) << 40 | (__u64)(g) << 48)

static __always_inline __u8 method_of(__u64 acc) {
  switch (acc) {
    case M('G', 'E', 'T', 0, 0, 0, 0): return SMIK_HTTP_M_GET;
    case M('H', 'E', 'A', 'D', 0, 0, 0): return SMIK_HTTP_M_HEAD;
    case M('P', 'O', 'S', 'T', 0, 0, 0): return SMIK_HTTP_M_POST;
    case M('P', 'U', 'T', 0, 0, 0, 0): return SMIK_HTTP_M_PUT;
    case M('D', 'E', 'L', 'E', 'T', 'E', 0): return SMIK_HTTP_M_DELETE;
    case M('C', 'O', 'N', 'N', 'E', 'C', 'T'): return SMIK_HTTP_M_CONNECT;
    case M('O', 'P', 'T', 'I', 'O', 'N', 'S'): return SMIK_HTTP_M_OPTIONS;
    case M('T', 'R', 'A', 'C', 'E', 0, 0): return SMIK_HTTP_M_TRACE;
    case M('P', 'A', 'T', 'C', 'H', 0, 0): return SMIK_HTTP_M_PATCH;
  }
  return SMIK_HTTP_M_OTHER;
}

static __always_inline __u16 dfa_start(__u16 dfa_id) {
  __u32 k = dfa_id;
  struct smik_http_dfa *d = bpf_map_lookup_elem(&smik_http_dfas, &k);
  return (d && d->states) ? d->start : 0;
}

/* One step in DFA d (NULL: no DFA); a run of steps looks d up once. */
static __always_inline __u16 dfa_next(const struct smik_http_dfa *d, __u16 state, __u8 b) {
  if (!d || state == 0 || state >= d->states)
    return 0;
  __u32 t = d->trans_base + (__u32)state * d->classes + d->class_of[b];
  __u32 slot = t / SMIK_HTTP_TRANS_PER_SLOT;
  struct smik_http_trans_slot *s = bpf_map_lookup_elem(&smik_http_trans, &slot);
  if (!s)
    return 0;
  __u16 next = s->next[t & (SMIK_HTTP_TRANS_PER_SLOT - 1)];
  return next < d->states ? next : 0;
}

static __always_inline __u16 dfa_step(__u16 dfa_id, __u16 state, __u8 b) {
  __u32 k = dfa_id;
  return dfa_next(bpf_map_lookup_elem(&smik_http_dfas, &k), state, b);
}

/* The accept set of a DFA state; NULL: no pattern matches. */
static __always_inline struct smik_http_mask *dfa_accepts(__u16 dfa_id, __u16 state) {
  __u32 k = dfa_id;
  struct smik_http_dfa *d = bpf_map_lookup_elem(&smik_http_dfas, &k);
  if (!d || state == 0 || state >= d->states)
    return 0;
  __u32 a = d->accept_base + state;
  return bpf_map_lookup_elem(&smik_http_accepts, &a);
}

static __always_inline __u64 header_accepts(__u16 dfa_id, __u16 state) {
  struct smik_http_mask *m = dfa_accepts(dfa_id, state);
  return m ? m->w[0] : 0;
}

/* The pattern bits granted for this method whose path matched, against the
 * grant of this connection's edge, looked up per request: a revoked grant
 * denies the next request of an open connection. Returns whether any. */
static __always_inline int candidates(const struct smik_http_conn *c, struct smik_http_mask *out) {
  struct smik_http_grant_key k = {.src_id = c->src_id, .dst_id = c->dst_id, .port = c->port};
  struct smik_http_grant *g = bpf_map_lookup_elem(&smik_http_grants, &k);
  if (!g)
    return 0;
  __u32 m = c->method;
  if (m >= SMIK_HTTP_METHODS)
    return 0;
  struct smik_http_mask *a = dfa_accepts(c->dfa_id, c->dfa_state);
  if (!a)
    return 0;
  __u64 any = 0;
  for (int i = 0; i < SMIK_HTTP_MASK_WORDS; i++)
    any |= out->w[i] = g->patterns[m].w[i] & a->w[i];
  return any != 0;
}

static __always_inline struct smik_http_needs *needs_of(const struct smik_http_conn *c) {
  __u32 k = c->hdr_dfa_id;
  return bpf_map_lookup_elem(&smik_http_needs, &k);
}

#define LINE_DENY 0
#define LINE_ALLOW 1
#define LINE_HEAD_DECIDES 2

/* At the end of the request line. A port without header conditions never
 * reads a header value: its verdict is the path's. */
static __always_inline int judge_line(const struct smik_http_conn *c) {
  struct smik_http_mask cand;
  if (!candidates(c, &cand))
    return LINE_DENY;
  if (!c->hdr_dfa_id)
    return LINE_ALLOW;
  struct smik_http_needs *n = needs_of(c);
  if (!n)
    return LINE_DENY;
  __u64 unconditional = 0;
  for (int i = 0; i < SMIK_HTTP_MASK_WORDS; i++)
    unconditional |= cand.w[i] & n->unconditional.w[i];
  return unconditional ? LINE_ALLOW : LINE_HEAD_DECIDES;
}

/* At the end of the head: some candidate whose conditions all hold. */
static __always_inline int judge_head(const struct smik_http_conn *c) {
  struct smik_http_mask cand;
  if (!candidates(c, &cand))
    return 0;
  struct smik_http_needs *n = needs_of(c);
  if (!n)
    return 0;
  __u32 held = c->hdr_present & ~c->hdr_failed;
  for (__u32 w = 0; w < SMIK_HTTP_MASK_WORDS; w++) {
    __u64 word = cand.w[w];
    for (__u32 i = 0; i < 64; i++) {
      if (!(word >> i))
        break;
      if (((word >> i) & 1) && !(n->needs[w * 64 + i] & ~held))
        return 1;
    }
  }
  return 0;
}

static __always_inline void start_request(struct smik_http_conn *c) {
  c->phase = SMIK_HTTP_P_START;
  c->line_bytes = c->head_bytes = 0;
  c->headers = 0;
  c->flags = 0;
  c->count = 0;
  c->method_acc = 0;
  c->pos = 0;
  c->hdr = 0;
}

static __always_inline void start_header_line(struct smik_http_conn *c) {
  c->phase = SMIK_HTTP_P_HNAME;
  c->pos = 0;
  c->cand = 7;
  c->value = SMIK_HTTP_V_OTHER;
  c->sub = 0;
  if (c->hdr & SMIK_HTTP_H_DECIDES) {
    c->hdr_state = dfa_start(c->hdr_dfa_id);
    c->hdr_commit = 0;
  }
}

static __always_inline void allowed(struct smik_http_conn *c) {
  c->requests++;
  count(SMIK_HTTP_C_ALLOWED);
}

/* The request line is complete: judge it, or leave it to the head. */
static __always_inline __u32 end_request_line(struct smik_http_conn *c) {
  if (c->pos != 8)
    return W_NOT_HTTP1;
  int v = judge_line(c);
  if (v == LINE_DENY)
    return W_DENY;
  c->hdr = 0;
  if (v == LINE_HEAD_DECIDES) {
    c->hdr = SMIK_HTTP_H_DECIDES;
    c->hdr_present = c->hdr_failed = 0;
  } else {
    allowed(c);
  }
  start_header_line(c);
  return W_PASS;
}

/* A header line is complete: what it says of each condition. A name bit,
 * once its name and ':' matched, is set in every later state (its pattern is
 * a prefix, so the DFA cannot die on that line): a value that fails its
 * regex still marks its condition present, and failed. */
static __always_inline void end_header_conditions(struct smik_http_conn *c) {
  __u64 m = header_accepts(c->hdr_dfa_id, c->hdr_commit);
  __u32 names = (__u32)(m >> SMIK_HTTP_HEADER_NAME_SHIFT);
  c->hdr_present |= names;
  c->hdr_failed |= names & ~(__u32)m;
}

/* The empty line after the headers: where does this request's body end? */
static __always_inline __u32 end_head(struct smik_http_conn *c) {
  if (c->hdr & SMIK_HTTP_H_DECIDES) {
    /* before the framing: the verdict is the policy's, as at a request line */
    c->hdr = 0;
    if (!judge_head(c))
      return W_DENY;
    allowed(c);
  }
  __u8 f = c->flags;
  /* CONNECT, or an upgrade to websocket only (h2c would carry requests
   * unjudged), without a body: the server's answer decides whether the rest
   * of the stream is a tunnel. Until it has answered, bytes are requests. */
  if ((c->method == SMIK_HTTP_M_CONNECT ||
       ((f & SMIK_HTTP_F_WEBSOCKET) && !(f & SMIK_HTTP_F_UPGRADE_OTHER))) &&
      !(f & SMIK_HTTP_F_TE) && !((f & SMIK_HTTP_F_CL) && c->count > 0)) {
    c->phase = SMIK_HTTP_P_TUNNEL_PENDING;
    return W_PASS;
  }
  if (f & SMIK_HTTP_F_TE) {
    /* RFC 9112 6.1: both framings, or a last coding other than chunked, are
     * what request smuggling is made of; HTTP/1.0 has no chunked. */
    if ((f & SMIK_HTTP_F_CL) || !(f & SMIK_HTTP_F_CHUNKED) || (f & SMIK_HTTP_F_HTTP10))
      return W_UNFRAMEABLE;
    c->phase = SMIK_HTTP_P_CHUNK_SIZE;
    c->count = 0;
    c->line_bytes = 0;
    c->flags &= ~SMIK_HTTP_F_DIGIT;
    return W_PASS;
  }
  if ((f & SMIK_HTTP_F_CL) && c->count > 0) {
    c->phase = SMIK_HTTP_P_BODY;
    return W_PASS;
  }
  start_request(c);
  return W_PASS;
}

static __always_inline __u32 end_header_line(struct smik_http_conn *c) {
  if (c->hdr & SMIK_HTTP_H_DECIDES)
    end_header_conditions(c);
  if (c->value == SMIK_HTTP_V_CONTENT_LENGTH) {
    if (!(c->flags & SMIK_HTTP_F_DIGIT))
      return W_UNFRAMEABLE;
  } else if (c->value == SMIK_HTTP_V_UPGRADE) {
    if (c->sub == WEBSOCKET_LEN || c->sub == 0xfe)
      c->flags |= SMIK_HTTP_F_WEBSOCKET;
    else
      c->flags |= SMIK_HTTP_F_UPGRADE_OTHER;
  } else if (c->value == SMIK_HTTP_V_TRANSFER_ENCODING) {
    /* the last coding of the last Transfer-Encoding line decides */
    if (c->sub == CHUNKED_LEN || c->sub == 0xfe)
      c->flags |= SMIK_HTTP_F_CHUNKED;
    else if (c->sub == 0)
      return W_UNFRAMEABLE; /* an empty coding */
    else
      c->flags &= ~SMIK_HTTP_F_CHUNKED;
  }
  start_header_line(c);
  return W_PASS;
}

static __always_inline __u32 header_name_byte(struct smik_http_conn *c, __u8 b) {
  if ((c->hdr & SMIK_HTTP_H_DECIDES) && c->hdr_state) {
    /* names are case-insensitive: the DFA reads them lowercased, then ':' */
    c->hdr_state = dfa_step(c->hdr_dfa_id, c->hdr_state, lower(b));
    c->hdr_commit = c->hdr_state;
    c->hdr |= SMIK_HTTP_H_LEADING;
  }
  if (b == ':') {
    if (c->pos == 0)
      return W_MALFORMED;
    if ((c->cand & 1) && c->pos == NAME_CL_LEN) {
      /* one Content-Length only: a list, or a second line, may be read otherwise downstream */
      if (c->flags & SMIK_HTTP_F_CL)
        return W_UNFRAMEABLE;
      c->flags |= SMIK_HTTP_F_CL;
      c->flags &= ~SMIK_HTTP_F_DIGIT;
      c->count = 0;
      c->value = SMIK_HTTP_V_CONTENT_LENGTH;
      c->pos = 0;
    } else if ((c->cand & 4) && c->pos == NAME_UPGRADE_LEN) {
      c->value = SMIK_HTTP_V_UPGRADE;
      c->sub = 0;
    } else if ((c->cand & 2) && c->pos == NAME_TE_LEN) {
      c->flags |= SMIK_HTTP_F_TE;
      c->value = SMIK_HTTP_V_TRANSFER_ENCODING;
      c->sub = 0;
    } else {
      c->value = SMIK_HTTP_V_OTHER;
    }
    c->phase = SMIK_HTTP_P_HVALUE;
    return W_PASS;
  }
  /* no whitespace before ':' and no obs-fold (RFC 9112 5.1, 5.2) */
  if (!is_tchar(b))
    return W_MALFORMED;
  __u8 l = lower(b), pos = c->pos;
  if (pos >= NAME_CL_LEN || l != name_cl[pos & 15])
    c->cand &= ~1;
  if (pos >= NAME_TE_LEN || l != name_te[pos & 31])
    c->cand &= ~2;
  if (pos >= NAME_UPGRADE_LEN || l != name_upgrade[pos & 7])
    c->cand &= ~4;
  if (pos < 255)
    c->pos = pos + 1;
  return W_PASS;
}

/* The value as a condition reads it, without its surrounding whitespace:
 * leading whitespace is skipped, trailing whitespace read but not committed
 * (the line's verdict is the state at its last other byte). */
static __always_inline void header_value_condition(struct smik_http_conn *c, __u8 b, int ws) {
  if (ws && (c->hdr & SMIK_HTTP_H_LEADING))
    return;
  if (c->hdr_state)
    c->hdr_state = dfa_step(c->hdr_dfa_id, c->hdr_state, b);
  if (!ws) {
    c->hdr_commit = c->hdr_state;
    c->hdr &= ~SMIK_HTTP_H_LEADING;
  }
}

static __always_inline __u32 header_value_byte(struct smik_http_conn *c, __u8 b) {
  if ((b < 0x20 && b != '\t') || b == 0x7f)
    return W_MALFORMED;
  int ws = b == ' ' || b == '\t';
  if (c->hdr & SMIK_HTTP_H_DECIDES)
    header_value_condition(c, b, ws);
  if (c->value == SMIK_HTTP_V_CONTENT_LENGTH) {
    /* pos: 0 leading whitespace, 1 digits, 2 trailing whitespace */
    if (ws) {
      if (c->pos == 1)
        c->pos = 2;
      return W_PASS;
    }
    if (b < '0' || b > '9' || c->pos == 2)
      return W_UNFRAMEABLE;
    c->pos = 1;
    c->flags |= SMIK_HTTP_F_DIGIT;
    c->count = c->count * 10 + (b - '0');
    if (c->count > MAX_BODY)
      return W_UNFRAMEABLE;
  } else if (c->value == SMIK_HTTP_V_UPGRADE) {
    /* sub: chars of "websocket" matched, 0xfe = all and whitespace, 0xff = other */
    __u8 s = c->sub;
    if (ws) {
      if (s == WEBSOCKET_LEN)
        c->sub = 0xfe;
      else if (s != 0 && s != 0xfe)
        c->sub = 0xff;
    } else if (s < WEBSOCKET_LEN && lower(b) == websocket[s & 15]) {
      c->sub = s + 1;
    } else {
      c->sub = 0xff;
    }
  } else if (c->value == SMIK_HTTP_V_TRANSFER_ENCODING) {
    /* sub: chars of "chunked" matched in this coding, 0xfe = "chunked" and
     * whitespace after it, 0xff = another coding */
    __u8 s = c->sub;
    if (b == ',') {
      c->sub = 0;
    } else if (ws) {
      if (s == CHUNKED_LEN)
        c->sub = 0xfe;
      else if (s != 0 && s != 0xfe)
        c->sub = 0xff;
    } else if (s < CHUNKED_LEN && lower(b) == chunked[s & 7]) {
      c->sub = s + 1;
    } else {
      c->sub = 0xff;
    }
  }
  return W_PASS;
}

/* One byte (not CR or LF) of a chunk-size line. */
static __always_inline __u32 chunk_size_byte(struct smik_http_conn *c, __u8 b) {
  if (c->phase == SMIK_HTTP_P_CHUNK_EXT)
    return ((b < 0x20 && b != '\t') || b == 0x7f) ? W_MALFORMED : W_PASS;
  int h = hex_value(b);
  if (h >= 0 && c->pos == 0) {
    c->flags |= SMIK_HTTP_F_DIGIT;
    c->count = c->count * 16 + h;
    return c->count > MAX_BODY ? W_UNFRAMEABLE : W_PASS;
  }
  if (!(c->flags & SMIK_HTTP_F_DIGIT))
    return W_UNFRAMEABLE;
  if (b == ' ' || b == '\t') { /* BWS before a chunk extension */
    c->pos = 1;
    return W_PASS;
  }
  if (b == ';') {
    c->phase = SMIK_HTTP_P_CHUNK_EXT;
    return W_PASS;
  }
  return W_UNFRAMEABLE;
}

static __always_inline __u32 end_chunk_size(struct smik_http_conn *c) {
  if (!(c->flags & SMIK_HTTP_F_DIGIT))
    return W_UNFRAMEABLE;
  if (c->count == 0) {
    c->phase = SMIK_HTTP_P_TRAILER;
    c->pos = 0;
    c->head_bytes = 0;
  } else {
    c->phase = SMIK_HTTP_P_CHUNK_DATA;
  }
  return W_PASS;
}

/* LF after CR: the end of a line in any phase. */
static __always_inline __u32 end_line(struct smik_http_conn *c) {
  switch (c->phase) {
    case SMIK_HTTP_P_START:
      return W_PASS; /* empty lines before a request line (RFC 9112 2.2) */
    case SMIK_HTTP_P_VERSION:
      return end_request_line(c);
    case SMIK_HTTP_P_HNAME:
      if (c->pos != 0)
        return W_MALFORMED; /* a name without ':' */
      return end_head(c);
    case SMIK_HTTP_P_HVALUE:
      return end_header_line(c);
    case SMIK_HTTP_P_CHUNK_SIZE:
    case SMIK_HTTP_P_CHUNK_EXT:
      return end_chunk_size(c);
    case SMIK_HTTP_P_CHUNK_END:
      if (c->pos != 0)
        return W_UNFRAMEABLE;
      c->phase = SMIK_HTTP_P_CHUNK_SIZE;
      c->count = 0;
      c->line_bytes = 0;
      c->pos = 0;
      c->flags &= ~SMIK_HTTP_F_DIGIT;
      return W_PASS;
    case SMIK_HTTP_P_TRAILER:
      if (c->pos == 0) { /* the empty line: the request is complete */
        start_request(c);
        return W_PASS;
      }
      c->pos = 0;
      return W_PASS;
  }
  /* a line break inside the method or the target */
  return W_MALFORMED;
}

/* Limits, counted per byte of the phase's line or block. */
static __always_inline __u32 account(struct smik_http_conn *c, const struct limits *l) {
  switch (c->phase) {
    case SMIK_HTTP_P_START:
    case SMIK_HTTP_P_METHOD:
    case SMIK_HTTP_P_PATH:
    case SMIK_HTTP_P_QUERY:
    case SMIK_HTTP_P_VERSION:
      return ++c->line_bytes > l->max_line ? W_URI_TOO_LONG : W_PASS;
    case SMIK_HTTP_P_CHUNK_SIZE:
    case SMIK_HTTP_P_CHUNK_EXT:
      return ++c->line_bytes > l->max_head ? W_HEAD_TOO_LARGE : W_PASS;
    case SMIK_HTTP_P_HNAME:
    case SMIK_HTTP_P_HVALUE:
    case SMIK_HTTP_P_TRAILER:
      return ++c->head_bytes > l->max_head ? W_HEAD_TOO_LARGE : W_PASS;
  }
  return W_PASS;
}

/* ---- the path: only a normal one is judged --------------------------------
 *
 * A grant names paths by regex over bytes, but the application acts on the
 * path it resolves: "/public/../admin", "/public/%2e%2e/admin",
 * "/public/..;/admin" (Tomcat), "/public\..\admin" (servers that take '\' for
 * '/') and "//admin" (servers that merge slashes) all pass a "/public" prefix
 * by their bytes and reach /admin. The judge does not resolve paths the way
 * some server might (they disagree); it refuses, with 400 and
 * SMIK_HTTP_C_PATH_NOT_NORMAL, every path whose meaning depends on how it is
 * resolved, and runs the DFA over what is left exactly as the application
 * reads it:
 * - origin-form only ("/..."); "*" (OPTIONS) and host:port for CONNECT,
 *   which have no path, go to the DFA as they are. An absolute-form target ("http://h/p") is refused.
 * - %XX is decoded before the DFA (a grant for "/[^a].*" must not pass
 *   "/%61dmin"); %2F, %5C, %25 (double encoding), %00-%1F, %7F and a broken
 *   escape are refused.
 * - dot segments ("." "..", also as "..;" or with dots from %2e) are
 *   refused, as are empty segments ("//", "/;") and a backslash.
 * - the query is not matched (Envoy and Istio match the path without it);
 *   a fragment ('#') is never sent by a client and is refused anywhere. */
#define SEG_START 0     /* just after '/' */
#define SEG_DOT1 1      /* "." so far */
#define SEG_DOTS 2      /* ".." (or more dots) so far */
#define SEG_NAME 3      /* a segment that is no dot segment */
#define SEG_ASTERISK 4  /* OPTIONS "*" */
#define SEG_AUTHORITY 5 /* CONNECT host:port */

/* The path is over: a dot segment or half an escape at its end is refused. */
static __always_inline __u32 path_end(struct smik_http_conn *c) {
  if (c->pos == 0)
    return W_MALFORMED;
  if (c->value != 0 || c->sub == SEG_DOT1 || c->sub == SEG_DOTS)
    return W_PATH_NOT_NORMAL;
  return W_PASS;
}

/* The segment an origin-form path's byte leaves it in (escapes decoded);
 * W_PATH_NOT_NORMAL, with the state untouched, for a byte that makes the
 * path's meaning depend on how it is resolved. */
static __always_inline __u32 path_segment(struct smik_http_conn *c, __u8 p, int raw) {
  __u8 seg = c->sub;
  if (p == '/' && raw) {
    if (seg != SEG_NAME)
      return W_PATH_NOT_NORMAL; /* "//", "/./", "/../" */
    c->sub = SEG_START;
  } else if (p == '.') {
    c->sub = seg == SEG_START ? SEG_DOT1 : (seg == SEG_DOT1 || seg == SEG_DOTS) ? SEG_DOTS : seg;
  } else if (p == ';') {
    if (seg != SEG_NAME)
      return W_PATH_NOT_NORMAL; /* "/..;/", "/;/" */
  } else {
    c->sub = SEG_NAME;
  }
  return W_PASS;
}

/* One byte of the path as the application reads it (escapes decoded). */
static __always_inline __u32 path_char(struct smik_http_conn *c, __u8 p, int raw) {
  __u8 seg = c->sub;
  if (seg == SEG_ASTERISK)
    return W_PATH_NOT_NORMAL; /* "*" is the whole target */
  if (seg == SEG_AUTHORITY) {
    if (p == '/' || p == '\\' || !raw)
      return W_PATH_NOT_NORMAL;
  } else if (path_segment(c, p, raw) != W_PASS) {
    return W_PATH_NOT_NORMAL;
  }
  if (c->dfa_state)
    c->dfa_state = dfa_step(c->dfa_id, c->dfa_state, p);
  return W_PASS;
}

static __always_inline __u32 path_byte(struct smik_http_conn *c, __u8 b) {
  if (b == ' ' || b == '?') {
    __u32 v = path_end(c);
    if (v != W_PASS)
      return v;
    c->phase = b == ' ' ? SMIK_HTTP_P_VERSION : SMIK_HTTP_P_QUERY;
    c->pos = 0;
    return W_PASS;
  }
  if (b < 0x20 || b >= 0x7f)
    return W_MALFORMED;
  if (b == '#' || b == '\\')
    return W_PATH_NOT_NORMAL;
  if (c->pos == 0) { /* the target's form */
    c->pos = 1;
    if (b == '*') /* OPTIONS; also the HTTP/2 preface, refused at its version */
      c->sub = SEG_ASTERISK;
    else if (b != '/' && c->method == SMIK_HTTP_M_CONNECT)
      c->sub = SEG_AUTHORITY;
    else if (b != '/')
      return W_PATH_NOT_NORMAL;
    else
      c->sub = SEG_START;
    if (c->dfa_state)
      c->dfa_state = dfa_step(c->dfa_id, c->dfa_state, b);
    return W_PASS;
  }
  /* value: 0, or 1 after '%', or 2 after its first hex digit (kept in cand) */
  if (c->value == 0) {
    if (b != '%')
      return path_char(c, b, 1);
    if (c->sub == SEG_AUTHORITY)
      return W_PATH_NOT_NORMAL;
    c->value = 1;
    return W_PASS;
  }
  int h = hex_value(b);
  if (h < 0)
    return W_PATH_NOT_NORMAL;
  if (c->value == 1) {
    c->cand = (__u8)h;
    c->value = 2;
    return W_PASS;
  }
  c->value = 0;
  __u8 d = (__u8)(c->cand << 4 | h);
  if (d < 0x20 || d == 0x7f || d == '/' || d == '\\' || d == '%')
    return W_PATH_NOT_NORMAL;
  return path_char(c, d, 0);
}

/* ---- runs of bytes the framer only counts ---------------------------------
 *
 * Most of a request is bytes whose only effect is a count and at most one
 * transition: a header value no condition or framing reads, the rest of a
 * header name no framing name still matches, the query, the path's plain
 * characters and slashes with their DFA steps, and "HTTP/1.x". smik_http_skip
 * takes such a run from the walk's buffer in one loop, doing to the state
 * exactly what smik_http_frame_byte would do byte by byte; the byte that
 * ends the run (CR, SP, '%', a dot segment's slash, a byte the framer
 * refuses, a limit's last byte, the buffer's end) goes to
 * smik_http_frame_byte, which decides it as before. */
#define SKIP_NONE 0
#define SKIP_VALUE 1 /* a header value read by nothing */
#define SKIP_NAME 2  /* a header name past the framing names */
#define SKIP_QUERY 3
#define SKIP_PATH 4
#define SKIP_VERSION 5 /* "HTTP/1.x", all eight bytes at once */

static __always_inline int skip_mode(const struct smik_http_conn *c) {
  if (c->flags & SMIK_HTTP_F_CR)
    return SKIP_NONE;
  switch (c->phase) {
    case SMIK_HTTP_P_HVALUE:
      return (c->value == SMIK_HTTP_V_OTHER && !(c->hdr & SMIK_HTTP_H_DECIDES)) ? SKIP_VALUE
                                                                               : SKIP_NONE;
    case SMIK_HTTP_P_HNAME:
      return (c->pos != 0 && c->cand == 0 && !(c->hdr & SMIK_HTTP_H_DECIDES)) ? SKIP_NAME
                                                                             : SKIP_NONE;
    case SMIK_HTTP_P_QUERY:
      return SKIP_QUERY;
    case SMIK_HTTP_P_VERSION:
      return c->pos == 0 ? SKIP_VERSION : SKIP_NONE;
    case SMIK_HTTP_P_PATH:
      /* past the target's first byte, outside an escape, in an origin-form path */
      return (c->pos != 0 && c->value == 0 && c->sub <= SEG_NAME) ? SKIP_PATH : SKIP_NONE;
  }
  return SKIP_NONE;
}

/* One byte of a path run: 0 ends the run (the framer decides that byte). */
static __always_inline int skip_path_byte(struct smik_http_conn *c, const struct smik_http_dfa *d,
                                          __u8 b) {
  if (b <= ' ' || b >= 0x7f || b == '?' || b == '%' || b == '#' || b == '\\')
    return 0;
  if (path_segment(c, b, 1) != W_PASS)
    return 0;
  c->dfa_state = dfa_next(d, c->dfa_state, b);
  return 1;
}

/* "HTTP/1.0" or "HTTP/1.1" whole in the buffer and within the line's
 * limit: 8, else 0 (the framer then reads the bytes one by one and refuses
 * the one that is wrong, as before). */
static __always_inline int skip_version(struct smik_http_conn *c, const struct walk_bytes *buf,
                                        __u32 start, __u32 end, __u32 room) {
  if (start >= BUF || end > BUF || end - start < 8 || room < 8)
    return 0;
  for (__u32 i = 0; i < 7; i++) {
    __u32 k = start + i;
    asm volatile("" : "+r"(k));
    if (buf->b[k & (BUF - 1)] != http_version[i])
      return 0;
  }
  __u32 k = start + 7;
  asm volatile("" : "+r"(k));
  __u8 minor = buf->b[k & (BUF - 1)];
  if (minor == '0')
    c->flags |= SMIK_HTTP_F_HTTP10;
  else if (minor != '1')
    return 0;
  c->pos = 8;
  c->line_bytes += 8;
  return 8;
}

/* Takes a run from buf->b[start, end); returns the bytes taken. A global
 * function: the verifier checks its loop once. */
__attribute__((noinline)) int smik_http_skip(struct smik_http_conn *c, const struct limits *l,
                                              const struct walk_bytes *buf, __u32 start,
                                              __u32 end) {
  if (!c || !l || !buf)
    return 0;
  int mode = skip_mode(c);
  if (mode == SKIP_NONE)
    return 0;
  /* the run stops before the byte a limit refuses: the framer refuses it */
  int line = mode == SKIP_PATH || mode == SKIP_QUERY || mode == SKIP_VERSION;
  __u32 used = line ? c->line_bytes : c->head_bytes;
  __u32 max = line ? l->max_line : l->max_head;
  __u32 room = used < max ? max - used : 0;
  if (mode == SKIP_VERSION)
    return skip_version(c, buf, start, end, room);
  struct smik_http_dfa *d = 0;
  if (mode == SKIP_PATH) {
    __u32 k = c->dfa_id;
    d = bpf_map_lookup_elem(&smik_http_dfas, &k);
  }
  __u32 n = 0;
  for (__u32 j = 0; j < BUF; j++) {
    __u32 i = start + j;
    if (i >= end || n >= room)
      break;
    /* clang drops a mask it proves redundant; the verifier needs it */
    asm volatile("" : "+r"(i));
    __u8 b = buf->b[i & (BUF - 1)];
    int ok;
    if (mode == SKIP_VALUE)
      ok = (b >= 0x20 && b != 0x7f) || b == '\t';
    else if (mode == SKIP_NAME)
      ok = is_tchar(b);
    else if (mode == SKIP_QUERY)
      ok = b > 0x20 && b < 0x7f && b != '#';
    else
      ok = skip_path_byte(c, d, b);
    if (!ok)
      break;
    n++;
  }
  if (mode == SKIP_PATH || mode == SKIP_QUERY)
    c->line_bytes += n;
  else
    c->head_bytes += n;
  if (mode == SKIP_NAME)
    c->pos = c->pos + n < 255 ? c->pos + n : 255;
  return n;
}

/* A global function: the verifier checks it once, not once per path of the
 * loop that calls it (inlined, the paths multiply past its limits). */
__attribute__((noinline)) int smik_http_frame_byte(struct smik_http_conn *c, const struct limits *l,
                                                    __u8 b) {
  if (!c || !l)
    return W_MALFORMED;
  /* The verifier does not know a global function's __u8 argument is a byte,
   * and clang, which does, drops the mask: index tables with a masked copy. */
  __u32 byte = b;
  asm volatile("" : "+r"(byte));
  b = (__u8)(byte & 0xff);
  __u32 v = account(c, l);
  if (v != W_PASS)
    return v;
  if (c->flags & SMIK_HTTP_F_CR) {
    c->flags &= ~SMIK_HTTP_F_CR;
    /* bare CR: servers disagree on it, so it frames nothing */
    return b == '\n' ? end_line(c) : W_MALFORMED;
  }
  if (b == '\r') {
    if (c->phase == SMIK_HTTP_P_METHOD || c->phase == SMIK_HTTP_P_PATH ||
        c->phase == SMIK_HTTP_P_QUERY)
      return W_MALFORMED;
    c->flags |= SMIK_HTTP_F_CR;
    return W_PASS;
  }
  if (b == '\n')
    return W_MALFORMED; /* bare LF: same */
  switch (c->phase) {
    case SMIK_HTTP_P_START:
      c->phase = SMIK_HTTP_P_METHOD;
      c->method_acc = 0;
      c->pos = 0;
      /* fall through */
    case SMIK_HTTP_P_METHOD:
      if (b == ' ') {
        if (c->pos == 0)
          return W_MALFORMED;
        c->method = c->pos > 7 ? SMIK_HTTP_M_OTHER : method_of(c->method_acc);
        c->phase = SMIK_HTTP_P_PATH;
        c->dfa_state = dfa_start(c->dfa_id);
        c->pos = 0;
        c->sub = SEG_START;
        c->value = 0;
        return W_PASS;
      }
      /* TLS (0x16), a NUL, anything that cannot start a method */
      if (!is_tchar(b))
        return c->pos == 0 ? W_NOT_HTTP1 : W_MALFORMED;
      if (c->pos < 8)
        c->method_acc |= (__u64)b << ((c->pos & 7) * 8);
      if (c->pos < 255)
        c->pos++;
      return W_PASS;
    case SMIK_HTTP_P_PATH:
      return path_byte(c, b);
    case SMIK_HTTP_P_QUERY:
      if (b == ' ') {
        c->phase = SMIK_HTTP_P_VERSION;
        c->pos = 0;
        return W_PASS;
      }
      if (b <= 0x20 || b >= 0x7f)
        return W_MALFORMED;
      return b == '#' ? W_PATH_NOT_NORMAL : W_PASS;
    case SMIK_HTTP_P_VERSION: {
      __u8 pos = c->pos;
      if (pos < 7) {
        if (b != http_version[pos & 7])
          return W_NOT_HTTP1;
      } else if (pos == 7) {
        if (b == '0')
          c->flags |= SMIK_HTTP_F_HTTP10;
        else if (b != '1')
          return W_NOT_HTTP1;
      } else {
        return W_NOT_HTTP1;
      }
      c->pos = pos + 1;
      return W_PASS;
    }
    case SMIK_HTTP_P_HNAME:
      if (c->pos == 0 && ++c->headers > l->max_headers)
        return W_HEAD_TOO_LARGE;
      return header_name_byte(c, b);
    case SMIK_HTTP_P_HVALUE:
      return header_value_byte(c, b);
    case SMIK_HTTP_P_CHUNK_SIZE:
    case SMIK_HTTP_P_CHUNK_EXT:
      return chunk_size_byte(c, b);
    case SMIK_HTTP_P_CHUNK_END:
      return W_UNFRAMEABLE; /* chunk data longer than its size */
    case SMIK_HTTP_P_TRAILER:
      c->pos = 1;
      return ((b < 0x20 && b != '\t') || b == 0x7f) ? W_MALFORMED : W_PASS;
  }
  return W_MALFORMED;
}

static __always_inline int walk_frame(struct walk *w, struct smik_http_conn *c);

#define WALK_COMPLETE 2 /* walk_frame: a request ended; the walk goes on */
#define FB_COMPLETE (1u << 16)

/* Frames the buffer's bytes from `start`: runs a byte at a time or taken
 * whole (smik_http_skip). Stops at the buffer's end, at a body (counted,
 * never read: the caller's), at a refusal, and where a request ends, so the
 * caller sees each request complete. Returns the bytes taken | the refusal
 * << 8 | FB_COMPLETE. One call per buffer instead of one bpf_loop step per
 * byte or run: a global function, its loop verified once. */
__attribute__((noinline)) __u32 smik_http_frame_buf(struct smik_http_conn *c,
                                                     const struct limits *l,
                                                     const struct walk_bytes *buf, __u32 start,
                                                     __u32 end) {
  if (!c || !l || !buf)
    return W_MALFORMED << 8;
  __u32 at = start;
  for (__u32 k = 0; k < BUF; k++) {
    if (at >= end || at >= BUF)
      break;
    __u8 before = c->phase;
    if (before == SMIK_HTTP_P_BODY || before == SMIK_HTTP_P_CHUNK_DATA ||
        before == SMIK_HTTP_P_TUNNEL_PENDING)
      break;
    if (skip_mode(c) != SKIP_NONE) {
      int run = smik_http_skip(c, l, buf, at, end);
      if (run > 0 && run <= BUF) {
        at += run;
        continue;
      }
    }
    __u32 i = at;
    /* clang drops a mask it proves redundant; the verifier needs it */
    asm volatile("" : "+r"(i));
    __u8 b = buf->b[i & (BUF - 1)];
    at++;
    __u32 v = smik_http_frame_byte(c, l, b);
    if (v != W_PASS)
      return ((at - start) & 0xff) | ((v & 0xff) << 8);
    if (before != SMIK_HTTP_P_START &&
        (c->phase == SMIK_HTTP_P_START || c->phase == SMIK_HTTP_P_TUNNEL_PENDING))
      return ((at - start) & 0xff) | FB_COMPLETE;
  }
  return (at - start) & 0xff;
}

/* One bpf_loop step: skip body bytes, or frame the buffer's bytes up to the
 * end of a request. A request is complete where the framer goes back to the
 * start of the next one (or waits for the answer to a CONNECT or upgrade). */
static int walk_step(__u32 i, void *ctx) {
  struct walk *w = ctx;
  struct smik_http_conn *c = &w->c;
  if (w->off >= w->len)
    return 1;
  /* bytes before the server answered the CONNECT or upgrade: requests */
  if (c->phase == SMIK_HTTP_P_TUNNEL_PENDING)
    start_request(c);
  int r = walk_frame(w, c);
  if (r == WALK_COMPLETE) {
    /* into the method's own word without a branch on done: the verifier
     * would tell every iteration of the loop apart by it; past MAX_DONE
     * the queue gives up anyway */
    __u32 m = c->method & 0xf, shift = (w->done & 7) * 4, high = (w->done >> 3) & 1;
    w->done_methods.w[0] |= (m * (high ^ 1)) << shift;
    w->done_methods.w[1] |= (m * high) << shift;
    w->done++;
    w->kept = w->off;
    return 0;
  }
  return r;
}

/* Passes over up to *count bytes of [*off, end): body or chunk bytes,
 * counted and never read (the request framer's and the response framer's
 * alike). True once the count is used up. */
static __always_inline int skip_counted(__u64 *count, __u32 *off, __u32 end) {
  __u64 left = end - *off;
  __u64 n = *count < left ? *count : left;
  *off += (__u32)n;
  *count -= n;
  return *count == 0;
}

static __always_inline int walk_frame(struct walk *w, struct smik_http_conn *c) {
  if (c->phase == SMIK_HTTP_P_BODY || c->phase == SMIK_HTTP_P_CHUNK_DATA) {
    if (skip_counted(&c->count, &w->off, w->len)) {
      if (c->phase == SMIK_HTTP_P_BODY) {
        start_request(c);
        return WALK_COMPLETE;
      } else {
        c->phase = SMIK_HTTP_P_CHUNK_END;
        c->pos = 0;
      }
    }
    return 0;
  }
  if (w->off < w->buf_off || w->off >= w->buf_off + w->buf_len) {
    __u64 n = w->len - w->off;
    if (n > BUF)
      n = BUF;
    /* clang folds the clamp into a form the verifier cannot bound: bound it again */
    asm volatile("" : "+r"(n));
    if (n == 0 || n > BUF || bpf_skb_load_bytes(w->skb, w->off, w->buf.b, n) < 0) {
      w->verdict = W_MALFORMED;
      return 1;
    }
    w->buf_off = w->off;
    w->buf_len = (__u32)n;
  }
  __u32 fr = smik_http_frame_buf(c, &w->lim, &w->buf, w->off - w->buf_off, w->buf_len);
  __u32 took = fr & 0xff, v = (fr >> 8) & 0xff;
  w->off += took;
  if (v != W_PASS || took == 0) {
    /* took nothing: it cannot (it frames a byte at least), and must never loop */
    w->verdict = v != W_PASS ? v : W_MALFORMED;
    return 1;
  }
  return (fr & FB_COMPLETE) ? WALK_COMPLETE : 0;
}

/* ---- answers ----------------------------------------------------------------
 *
 * The refused skb becomes the answer, sent on the socket's own egress. The
 * kernel advances the socket's copied_seq by the redirected skb's length
 * (tcp_eat_skb runs after the program), not by the bytes the skb brought:
 * an answer longer than the skb puts copied_seq ahead of rcv_nxt, and until
 * more bytes than that arrive the kernel never hands the next skbs to this
 * program. They stay queued, a reset leaves them there, and the server's
 * read() then fails with EAGAIN forever (found by a generated stream whose
 * refusal fell in a short segment). An answer shorter than the skb puts
 * copied_seq behind: poll() reports the socket readable with nothing to
 * read. So the answer takes the skb's length exactly: a body of spaces fills
 * what the status line and headers leave (its Content-Length says how
 * much). An skb too short for even the bare answer grows, and the bytes it
 * grew by (the debt, kept in the closed connection's `count`) are taken off
 * the next refused skbs, which are trimmed before they are dropped. */
#define ANSWER_HEAD(code, text) "HTTP/1.1 " code " " text "\r\ncontent-length: "
#define HEAD_MAX 64
/* The answers, in answer()'s order (h). Two tables, not an array of
 * structs, so the skeleton's C++ needs no type of ours. */
#define HEAD_TEXT(code, text) ANSWER_HEAD(code, text),
#define HEAD_LEN(code, text) sizeof(ANSWER_HEAD(code, text)) - 1,
const char answer_head[SMIK_HTTP_ANSWER_COUNT][HEAD_MAX] = {SMIK_HTTP_ANSWERS(HEAD_TEXT)};
const __u32 answer_head_len[SMIK_HTTP_ANSWER_COUNT] = {SMIK_HTTP_ANSWERS(HEAD_LEN)};
#undef HEAD_TEXT
#undef HEAD_LEN
/* the space before CRLF is optional whitespace after the value, there to
 * take up one byte where no Content-Length fits the length exactly */
const char answer_tail[] = "\r\nconnection: close \r\n\r\n";
#define ANSWER_TAIL_LEN (sizeof(answer_tail) - 1)
/* For an skb too short for that answer (a request sent in small pieces): the
 * same status in HTTP/1.0, which a client takes as the connection's last
 * answer without a Connection header, with no reason phrase (RFC 9112 4:
 * it may be empty). 35 bytes at the least instead of 66 to 88, so that far
 * fewer answers grow their skb (see above). The space after the colon is
 * optional whitespace: left out where no Content-Length fits exactly. */
#define COMPACT_HEAD(code, text) "HTTP/1.0 " code " \r\ncontent-length: ",
#define COMPACT_HEAD_LEN 31
const char compact_head[SMIK_HTTP_ANSWER_COUNT][32] = {SMIK_HTTP_ANSWERS(COMPACT_HEAD)};
const char compact_tail[] = "\r\n\r\n";
#define COMPACT_TAIL_LEN 4
#define FILL 64
const char answer_fill[FILL] = "                                                                ";

struct answer_fill {
  struct __sk_buff *skb;
  __u32 off;
  __u32 end;
  int failed;
};

/* The i-th FILL bytes of the body. The step only reads its context (but for
 * a failure): the verifier sees every iteration alike. */
static int fill_step(__u32 i, void *ctx) {
  struct answer_fill *f = ctx;
  __u64 off = (__u64)f->off + (__u64)i * FILL;
  if (off >= f->end)
    return 1;
  __u64 n = f->end - off;
  if (n > FILL)
    n = FILL;
  /* clang folds the clamp into a form the verifier cannot bound: bound it again */
  asm volatile("" : "+r"(n));
  if (n == 0 || n > FILL || bpf_skb_store_bytes(f->skb, (__u32)off, answer_fill, n, 0) < 0) {
    f->failed = 1;
    return 1;
  }
  return 0;
}

/* Decimal digits of v, up to 7 (the body's bound). */
static __always_inline __u32 digits_of(__u32 v) {
  __u32 k = 1;
  for (int i = 0; i < 6 && v >= 10; i++) {
    v /= 10;
    k++;
  }
  return k;
}

/* The body length whose Content-Length (k digits) makes head + k + tail +
 * body exactly `room` bytes, or -1 when no k does (room = 10^m + m). */
static __always_inline long body_for(__u32 room) {
  for (__u32 k = 1; k <= 7; k++) {
    if (room < k)
      break;
    if (digits_of(room - k) == k)
      return room - k;
  }
  return -1;
}

/* Writes the head, the Content-Length, the tail and the body into the skb
 * at its own length when it has room; returns the bytes the skb grew by (0
 * in the usual case), or -1. A subprogram: its scratch would push the
 * verdict's stack over 512 bytes. */
/* The body that makes an answer of `fixed` bytes around its number (an
 * optional space included) exactly `len` bytes: with the space (*pad 0) or
 * without it (*pad 1); -1 when neither fits. */
static __always_inline long fit_body(__u32 len, __u32 fixed, __u32 *pad) {
  *pad = 0;
  if (len < fixed)
    return -1;
  long body = body_for(len - fixed); /* len == fixed: a digit fits without the space */
  if (body < 0) {
    *pad = 1;
    body = body_for(len - fixed + 1);
  }
  return body;
}

static __noinline long write_answer(struct __sk_buff *skb, __u32 h) {
  if (h >= SMIK_HTTP_ANSWER_COUNT)
    return -1;
  __u32 head_len = answer_head_len[h];
  if (head_len == 0 || head_len > HEAD_MAX)
    return -1;
  __u32 len = skb->len;
  __u32 fixed = head_len + ANSWER_TAIL_LEN;
  __u32 pad; /* one optional space left out: one byte less */
  int compact = 0;
  long body = fit_body(len, fixed, &pad);
  if (body < 0) { /* too short for it: the compact answer */
    compact = 1;
    head_len = COMPACT_HEAD_LEN;
    fixed = COMPACT_HEAD_LEN + COMPACT_TAIL_LEN;
    body = fit_body(len, fixed, &pad);
  }
  __u32 total = len;
  if (body < 0) { /* too short even for that: the bare compact answer, longer than the skb */
    body = 0;
    pad = 0;
    total = fixed + 1;
  }
  if (body > 9999999)
    return -1;
  __u32 k = digits_of((__u32)body);
  if (total != len && bpf_skb_change_tail(skb, total, 0) < 0)
    return -1;
  char num[8] = {};
  __u32 v = (__u32)body;
  for (int i = 6; i >= 0; i--) {
    num[i] = '0' + v % 10;
    v /= 10;
  }
  /* the compact head's optional space is its last byte */
  __u32 at = compact ? head_len - pad : head_len;
  long stored;
  if (!compact)
    stored = bpf_skb_store_bytes(skb, 0, answer_head[h], head_len, 0);
  else if (pad)
    stored = bpf_skb_store_bytes(skb, 0, compact_head[h], COMPACT_HEAD_LEN - 1, 0);
  else
    stored = bpf_skb_store_bytes(skb, 0, compact_head[h], COMPACT_HEAD_LEN, 0);
  if (stored < 0)
    return -1;
  /* the number's last k digits, each size a constant the verifier can check */
  stored = -1;
  switch (k) {
#define DIGITS(n) \
  case n:         \
    stored = bpf_skb_store_bytes(skb, at, num + 7 - n, n, 0); \
    break;
    DIGITS(1) DIGITS(2) DIGITS(3) DIGITS(4) DIGITS(5) DIGITS(6) DIGITS(7)
#undef DIGITS
  }
  if (stored < 0)
    return -1;
  if (compact) {
    if (bpf_skb_store_bytes(skb, at + k, compact_tail, COMPACT_TAIL_LEN, 0) < 0)
      return -1;
  } else if (pad) {
    /* "\r\nconnection: close" then "\r\n\r\n": the space left out */
    if (bpf_skb_store_bytes(skb, at + k, answer_tail, ANSWER_TAIL_LEN - 5, 0) < 0 ||
        bpf_skb_store_bytes(skb, at + k + ANSWER_TAIL_LEN - 5, answer_tail + ANSWER_TAIL_LEN - 4, 4, 0) < 0)
      return -1;
  } else if (bpf_skb_store_bytes(skb, at + k, answer_tail, ANSWER_TAIL_LEN, 0) < 0) {
    return -1;
  }
  struct answer_fill f = {.skb = skb, .off = fixed + k - pad, .end = total};
  if (f.off < f.end)
    bpf_loop((f.end - f.off) / FILL + 1, fill_step, &f, 0);
  if (f.failed)
    return -1;
  return total > len ? total - len : 0;
}

/* The counter (SMIK_HTTP_C_*) of a refusal: also the reason its event gives. */
static __always_inline __u8 counter_of(__u32 verdict) {
  switch (verdict) {
    case W_DENY:
      return SMIK_HTTP_C_DENIED_POLICY;
    case W_URI_TOO_LONG:
      return SMIK_HTTP_C_URI_TOO_LONG;
    case W_HEAD_TOO_LARGE:
      return SMIK_HTTP_C_HEAD_TOO_LARGE;
    case W_NO_STATE:
      return SMIK_HTTP_C_NO_STATE;
    case W_NOT_HTTP1:
      return SMIK_HTTP_C_NOT_HTTP1;
    case W_UNFRAMEABLE:
      return SMIK_HTTP_C_UNFRAMEABLE;
    case W_PATH_NOT_NORMAL:
      return SMIK_HTTP_C_PATH_NOT_NORMAL;
  }
  return SMIK_HTTP_C_MALFORMED;
}

/* Which answer (SMIK_HTTP_ANSWERS order) a refusal gets. */
static __always_inline __u32 answer_of(__u32 verdict) {
  switch (verdict) {
    case W_DENY:
      return 1;
    case W_URI_TOO_LONG:
      return 2;
    case W_HEAD_TOO_LARGE:
      return 3;
    case W_NO_STATE:
      return 4;
  }
  return 0; /* 400 */
}

/* The skb becomes the answer, sent on the socket's own egress; *debt gets
 * the bytes it grew by. */
static __always_inline int answer(struct __sk_buff *skb, __u64 cookie, __u32 verdict, __u64 *debt) {
  count(counter_of(verdict));
  long grew = write_answer(skb, answer_of(verdict));
  if (grew >= 0 && bpf_sk_redirect_hash(skb, &smik_http_socks, &cookie, 0) == SK_PASS) {
    *debt = (__u64)grew;
    return SK_PASS;
  }
  count(SMIK_HTTP_C_ANSWER_FAILED);
  return SK_DROP;
}

/* A refused skb after the answer: trimmed by what the answer still owes
 * (see above), then dropped. */
static __always_inline int drop_repaying(struct __sk_buff *skb, __u64 *debt) {
  count(SMIK_HTTP_C_DROPPED);
  __u32 len = skb->len;
  if (*debt == 0 || len == 0)
    return SK_DROP;
  __u32 take = *debt < len ? (__u32)*debt : len;
  if (bpf_skb_change_tail(skb, len - take, 0) == 0)
    *debt -= take;
  return SK_DROP;
}

/* ---- http-deny events ---------------------------------------------------------
 *
 * Only a refusal costs anything here: the framer keeps no byte of the path
 * per socket (that would cost every allowed request). The refused request's
 * line is read back from the skb being refused, before it becomes the
 * answer: while the request is in its line or head, that line began
 * line_bytes + head_bytes before the byte that decided (the framer counts
 * every one of them, CRLFs and the empty lines before it too). A line begun
 * in an earlier skb (a request split across segments, or sent a byte at a
 * time) is gone: its event has the method, when it was read, and no path
 * (SMIK_EV_HTTP_PATH unset). A refusal in a body, or before the method was
 * read (TLS, HTTP/2), has neither. */
#define METHOD_SCAN 24 /* the request line's first bytes, where its first space is looked for */

/* The connection's edge, as sockops names it on the server side. */
static __always_inline void edge_of(const struct tunnel_key *tk, struct smik_conn_key *k) {
  __builtin_memcpy(k->client, tk->remote, 16);
  __builtin_memcpy(k->server, tk->local, 16);
  k->family = (__u8)tk->family;
  __u8 client_family = k->family;
  if (unmap_v4(&k->family, k->server))
    unmap_v4(&client_family, k->client);
  k->port = tk->local_port;
  k->proto = SMIK_PROTO_TCP;
}

/* An owed answer can be sent on this connection: its flow has a conntrack
 * entry for the response framer to mark (none when the table was full, or
 * when the judge runs without the tc programs' table). Without one the
 * answer goes at once, even ahead of the server's: answered out of turn
 * rather than never. */
/* The conntrack key of the connection's flow into the pod, from the
 * verdict's view of the socket (flow_into_pod's, for a tunnel_key). */
static __always_inline int tk_flow_into_pod(const struct tunnel_key *tk, struct smik_ct_key *k) {
  __builtin_memcpy(k->saddr, tk->remote, 16);
  __builtin_memcpy(k->daddr, tk->local, 16);
  return ct_key_into_pod(k, (__u8)tk->family, bpf_htons(tk->remote_port), bpf_htons(tk->local_port));
}

static __always_inline int can_owe(const struct tunnel_key *tk) {
  struct smik_ct_key k = {};
  return tk_flow_into_pod(tk, &k) && bpf_map_lookup_elem(&smik_ct, &k) != 0;
}

/* Leaves `ans` for the tc program on the flow's conntrack entry (see
 * "answers owed" below). False when the flow has no entry or
 * smik_ct_answers is full: nothing is marked. */
static __always_inline int mark_owed(const struct smik_ct_key *k, const struct smik_ct_answer *ans) {
  struct smik_ct_value *ct = bpf_map_lookup_elem(&smik_ct, k);
  if (!ct || bpf_map_update_elem(&smik_ct_answers, k, ans, BPF_ANY) != 0)
    return 0;
  ct->flags |= SMIK_CT_F_ANSWER;
  return 1;
}

/* Counting of the server's answers stopped before this refusal (more
 * requests waited than the queue holds, or a response the framer cannot
 * read), so where they end is not known: an answer sent now could overtake
 * them, and one held back has no place to wait for. The flow is marked for
 * the tc program to reset both ends at the server's next segment out of the
 * pod (SMIK_CT_ANSWER_RESET_NEXT): its acknowledgement of the refused bytes,
 * which TCP sends after this program returns, or an answer. The client sees
 * the answers that segment ends with, if any, then the reset; never a 403
 * out of turn. False when the flow has no conntrack entry or
 * smik_ct_answers is full. */
static __always_inline int reset_at_next_segment(const struct tunnel_key *tk) {
  struct smik_ct_key k = {};
  struct smik_ct_answer ans = {.answer = SMIK_CT_ANSWER_RESET_NEXT};
  return tk_flow_into_pod(tk, &k) && mark_owed(&k, &ans);
}

/* The skb offset of the refused request's path, or -1 when not in this skb. */
static __always_inline long path_offset(struct __sk_buff *skb, const struct smik_http_conn *c,
                                        __u32 off) {
  if (c->phase < SMIK_HTTP_P_PATH || c->phase > SMIK_HTTP_P_HVALUE)
    return -1;
  __u32 walked = c->line_bytes + c->head_bytes;
  if (walked > off)
    return -1; /* the line began in an earlier skb */
  __u32 start = off - walked;
  __u8 head[METHOD_SCAN];
  /* 64 bits: the verifier bounds the register the helper gets, not a 32-bit copy */
  __u64 n = off - start < METHOD_SCAN ? off - start : METHOD_SCAN;
  asm volatile("" : "+r"(n));
  if (n == 0 || n > METHOD_SCAN || bpf_skb_load_bytes(skb, start, head, n) < 0)
    return -1;
  for (__u32 i = 0; i < METHOD_SCAN; i++) {
    if (i >= n)
      break;
    if (head[i] == ' ')
      return start + i + 1 < off ? (long)(start + i + 1) : -1;
  }
  return -1; /* a long method, or many empty lines before it */
}

/* One http-deny event for the request refused at skb offset off (the byte
 * after the one that decided), within the events' rate limit. A global
 * function: the verifier checks it once, not once per way to a refusal. */
__attribute__((noinline)) int smik_http_deny_event(struct __sk_buff *skb,
                                                    const struct tunnel_key *tk,
                                                    const struct smik_http_conn *c, __u32 off,
                                                    __u32 reason) {
  if (!skb || !tk || !c)
    return 0;
  struct smik_conn_key edge = {};
  edge_of(tk, &edge);
  __u64 now = bpf_ktime_get_ns();
  __u32 suppressed;
  if (!event_admitted(&edge, SMIK_EV_HTTP_DENY, now, &suppressed))
    return 0;
  struct smik_http_event *e = bpf_ringbuf_reserve(&smik_events, sizeof(*e), 0);
  if (!e)
    return 0;
  fill_event(&e->ev, &edge, SMIK_EV_HTTP_DENY, (__u8)reason, now, suppressed);
  e->method = 0;
  e->flags = 0;
  e->path_len = 0;
  e->pad = 0;
  __builtin_memset(e->path, 0, sizeof(e->path));
  if (c->phase >= SMIK_HTTP_P_PATH && c->phase <= SMIK_HTTP_P_TRAILER) {
    e->method = c->method;
    e->flags |= SMIK_EV_HTTP_METHOD;
  }
  long at = path_offset(skb, c, off);
  __u32 avail = at >= 0 ? off - (__u32)at : 0;
  /* 64 bits: the verifier bounds the register the helper gets, not a 32-bit copy */
  __u64 n = avail < SMIK_EV_PATH_MAX ? avail : SMIK_EV_PATH_MAX;
  asm volatile("" : "+r"(n));
  if (n == 0 || n > SMIK_EV_PATH_MAX || bpf_skb_load_bytes(skb, (__u32)at, e->path, n) < 0) {
    bpf_ringbuf_submit(e, 0);
    return 0;
  }
  /* the path ends at its first space or '?' (the query is not the path) */
  __u64 len = n;
  for (__u32 i = 0; i < SMIK_EV_PATH_MAX; i++) {
    if (i >= n)
      break;
    if (e->path[i] == ' ' || e->path[i] == '?') {
      len = i;
      break;
    }
  }
  if (len < n) {
    /* what followed the path (the query, the version) stays out of the event */
    __builtin_memset(e->path, 0, sizeof(e->path));
    asm volatile("" : "+r"(len));
    if (len > 0 && len <= SMIK_EV_PATH_MAX)
      bpf_skb_load_bytes(skb, (__u32)at, e->path, len);
  }
  e->flags |= SMIK_EV_HTTP_PATH;
  e->path_len = (__u16)len;
  __u8 next = ' ';
  if (len == SMIK_EV_PATH_MAX && avail > SMIK_EV_PATH_MAX &&
      bpf_skb_load_bytes(skb, (__u32)at + SMIK_EV_PATH_MAX, &next, 1) == 0 && next != ' ' &&
      next != '?')
    e->flags |= SMIK_EV_HTTP_TRUNCATED;
  bpf_ringbuf_submit(e, 0);
  return 0;
}

/* Queues the requests an skb that passed completed, received now (one
 * batch: a receive time for all of them, while SMIK_HTTP_BATCHES are not
 * all waiting); the last one is marked X_TUNNEL when it asked for a tunnel.
 * The connection's first one starts its exchange (with its edge). More than
 * SMIK_HTTP_PIPELINE waiting, or more than MAX_DONE in one skb: counting
 * stops (and a tunnel asked for then never opens: its answer is not
 * framed). A global function: the verifier checks it once, not on every
 * path of the verdict. */
__attribute__((noinline)) int smik_http_queue_requests(struct __sk_buff *skb,
                                                        const struct smik_http_conn *c,
                                                        struct exchange *a, __u32 done,
                                                        const struct methods *methods) {
  if (!skb || !c || !a || !methods)
    return 0;
  if (!a->tracked) {
    struct tunnel_key tk = {};
    TUNNEL_KEY(&tk, skb);
    edge_of(&tk, &a->edge);
    a->tracked = 1;
  }
  if (a->phase == R_OFF)
    return 0;
  if (a->queued + done > SMIK_HTTP_PIPELINE || done > MAX_DONE) {
    a->phase = R_OFF;
    count(SMIK_HTTP_C_RESPONSES_UNTRACKED);
    return 0;
  }
  if (done == 0)
    return 0;
  __u8 timed = 0;
  if (a->batches < SMIK_HTTP_BATCHES) {
    __u32 b = (a->batch_oldest + a->batches) & (SMIK_HTTP_BATCHES - 1);
    a->batch_ns[b] = bpf_ktime_get_ns();
    a->batch_left[b] = (__u8)done;
    a->batches++;
    timed = X_TIMED;
  }
  for (__u32 i = 0; i < MAX_DONE; i++) {
    if (i >= done)
      break;
    __u32 slot = (a->oldest + a->queued) & (SMIK_HTTP_PIPELINE - 1);
    a->method[slot] = ((methods->w[(i >> 3) & 1] >> ((i & 7) * 4)) & 0xf) | timed;
    if (i + 1 == done && c->phase == SMIK_HTTP_P_TUNNEL_PENDING)
      a->method[slot] |= X_TUNNEL;
    a->queued++;
  }
  return 0;
}

/* --http-non-http1 allow-tcp: the connection is another protocol from its
 * first bytes, so nothing on it could be an HTTP/1.x request a rule judges:
 * a first byte no method starts with (a TLS record: 0x16), or the HTTP/2
 * prior-knowledge preface's "PRI * HTTP/2.0" (its version refused: no
 * HTTP/1.x server serves a PRI request). Never after a request was let
 * through: a stream that turns into something else stays refused. */
static __always_inline int opaque_from_start(const struct smik_http_conn *c) {
  if (c->requests != 0)
    return 0;
  if (c->phase == SMIK_HTTP_P_METHOD || c->phase == SMIK_HTTP_P_START)
    return c->pos == 0 && c->line_bytes <= 1;
  const __u64 pri = 'P' | ('R' << 8) | ('I' << 16);
  return c->phase == SMIK_HTTP_P_VERSION && c->method_acc == pri;
}

/* Requests this skb completed before the refused one (pipelined in one
 * segment) reach the server; the refused one and whatever follows it do not,
 * and its answer is owed behind theirs. The skb is trimmed to the last byte
 * of the last request let through: the kernel then advances copied_seq by
 * what the server reads, the trimmed bytes' worth short of rcv_nxt, so the
 * socket polls readable with nothing to read until the reset that follows
 * the server's answers (see bpf/README.md, "An answer never overtakes the
 * server's"). An upgrade or CONNECT among them is queued as a plain
 * request: a 101 to it stops the framing, and the connection is reset after
 * it (SMIK_CT_ANSWER_RESET) rather than opened. False, with nothing changed,
 * where the answers to those requests could not be framed (the queue is
 * full or framing stopped) or the skb cannot be trimmed: the whole skb is
 * refused then, as before. */
static __always_inline int pass_before_refusal(struct __sk_buff *skb, struct exchange *a,
                                               struct walk *w) {
  __u8 queued = a->queued, batches = a->batches;
  smik_http_queue_requests(skb, &w->c, a, w->done, &w->done_methods);
  if (a->phase == R_OFF)
    return 0;
  if (bpf_skb_change_tail(skb, w->kept, 0) != 0) {
    a->queued = queued; /* just appended: taken back */
    a->batches = batches;
    return 0;
  }
  a->owed = (__u8)answer_of(w->verdict) + 1;
  count(counter_of(w->verdict));
  count(SMIK_HTTP_C_ANSWER_DEFERRED);
  return 1;
}

static __always_inline __u32 limit(__u32 configured, __u32 fallback) {
  return configured ? configured : fallback;
}

/* "sk_skb": libbpf 1.1 has no section name for BPF_SK_SKB_VERDICT; the loader
 * attaches it as that */
SEC("sk_skb")
int smik_http_verdict(struct __sk_buff *skb) {
  __u64 cookie = bpf_get_socket_cookie(skb);
  struct conn_state *st = bpf_map_lookup_elem(&smik_http_conns, &cookie);
  if (skb->len == 0) {
    /* parserless mode calls at FIN with no bytes: the stream is over */
    if (!st)
      return SK_PASS;
    /* The server may still answer what it was asked before the client's
     * FIN: then the state stays until the egress program has framed the
     * last of those answers (or for the LRU). */
    if (st->x.queued == 0 || st->x.phase == R_OFF)
      bpf_map_delete_elem(&smik_http_conns, &cookie);
    else
      st->x.fin = 1;
    return SK_PASS;
  }
  if (!st) {
    struct tunnel_key tk = {};
    struct smik_http_conn none = {};
    TUNNEL_KEY(&tk, skb);
    smik_http_deny_event(skb, &tk, &none, 0, SMIK_HTTP_C_NO_STATE);
    /* Reached only when the state went between the guard's lookup and
     * this one (the guard drops a stateless socket's payload): no state to
     * keep a debt in. */
    __u64 debt = 0;
    return answer(skb, cookie, W_NO_STATE, &debt);
  }
  struct smik_http_conn *c = &st->c;
  struct exchange *a = &st->x;
  if (c->phase == SMIK_HTTP_P_CLOSED)
    return drop_repaying(skb, &c->count);
  if (c->phase == SMIK_HTTP_P_TUNNEL)
    return SK_PASS;
  if (c->phase == SMIK_HTTP_P_TUNNEL_PENDING) {
    __u8 tunnel = a->tunnel;
    a->tunnel = TUNNEL_NONE;
    if (tunnel == TUNNEL_OPEN) {
      c->phase = SMIK_HTTP_P_TUNNEL;
      count(SMIK_HTTP_C_TUNNELS);
      return SK_PASS;
    }
  }
  __u32 zero = 0;
  struct smik_http_config *cfg = bpf_map_lookup_elem(&smik_http_config, &zero);
  struct walk w = {.skb = skb, .len = skb->len};
  w.lim.max_line = limit(cfg ? cfg->max_line : 0, SMIK_HTTP_DEFAULT_MAX_LINE);
  w.lim.max_head = limit(cfg ? cfg->max_head : 0, SMIK_HTTP_DEFAULT_MAX_HEAD);
  w.lim.max_headers = limit(cfg ? cfg->max_headers : 0, SMIK_HTTP_DEFAULT_MAX_HEADERS);
  w.c = *c;
  /* every step consumes at least one byte */
  bpf_loop(w.len + 1, walk_step, &w, 0);
  if (w.verdict == W_PASS && w.off < w.len)
    w.verdict = W_MALFORMED; /* not walked to the end: never pass unjudged bytes */
  if (w.verdict == W_NOT_HTTP1 && cfg && (cfg->flags & SMIK_HTTP_CFG_NOT_HTTP1_TCP) &&
      opaque_from_start(&w.c)) {
    w.c.phase = SMIK_HTTP_P_TUNNEL;
    *c = w.c;
    count(SMIK_HTTP_C_NOT_HTTP1_PASSED);
    return SK_PASS;
  }
  if (w.verdict == W_PASS) {
    if (w.done)
      smik_http_queue_requests(skb, &w.c, a, w.done, &w.done_methods);
    *c = w.c;
    /* before the bytes reach the server, so before its answer */
    if (w.c.phase == SMIK_HTTP_P_TUNNEL_PENDING)
      a->tunnel = TUNNEL_PENDING;
    return SK_PASS;
  }
  struct tunnel_key tk = {};
  TUNNEL_KEY(&tk, skb);
  smik_http_deny_event(skb, &tk, &w.c, w.off, counter_of(w.verdict));
  w.c.phase = SMIK_HTTP_P_CLOSED;
  w.c.count = 0; /* from here on: what the answer owes */
  if (w.done && w.kept < w.len && can_owe(&tk) && pass_before_refusal(skb, a, &w)) {
    *c = w.c;
    return SK_PASS;
  }
  if (a->tracked && a->phase != R_OFF && !answered_all(a) && can_owe(&tk)) {
    /* Requests let through before this one are not all answered yet: an
     * answer sent now would overtake theirs, and the client would take it
     * for the first one's. It is owed instead: the response framer sees
     * when the server's last answer goes out, and the tc program on the
     * pod's veth sends this one after it (see "answers owed"). The skb is
     * dropped: the kernel counts its own length as read. */
    a->owed = (__u8)answer_of(w.verdict) + 1;
    count(counter_of(w.verdict));
    count(SMIK_HTTP_C_ANSWER_DEFERRED);
    *c = w.c;
    return SK_DROP;
  }
  if (a->tracked && a->phase == R_OFF && !a->to_close && reset_at_next_segment(&tk)) {
    count(counter_of(w.verdict));
    count(SMIK_HTTP_C_ANSWER_FAILED);
    *c = w.c;
    return SK_DROP;
  }
  if (a->to_close) {
    /* The server's last answer runs to its close, and the client reads it
     * to the end: no answer has a place after it, and one sent now would
     * land inside it. Dropped unanswered, as a server drops requests
     * pipelined behind such an answer; its close ends the connection. */
    count(counter_of(w.verdict));
    count(SMIK_HTTP_C_ANSWER_FAILED);
    *c = w.c;
    return SK_DROP;
  }
  /* the judge's answer goes out on this socket: not the server's */
  a->phase = R_OFF;
  int v = answer(skb, cookie, w.verdict, &w.c.count);
  *c = w.c;
  return v;
}

/* ---- the server's responses, counted per edge --------------------------------------
 *
 * The response framer reads only what framing needs: the status line, the
 * Content-Length and Transfer-Encoding header lines, the end of the head,
 * chunk-size lines and trailers. Body bytes are skipped by count, never read,
 * so a body that looks like a status line is never one. An skb's new bytes
 * are read in windows of RESP_WINDOW bytes (bpf_skb_load_bytes: also from a
 * GSO skb's pages, so a sendfile()'s or splice()'s bytes too).
 * - 1xx other than 101 is interim: its request waits for the final status.
 * - 101, and 2xx to CONNECT: a tunnel; nothing after it is counted. When it
 *   answers the request that asked for one (X_TUNNEL), the tunnel opens; any
 *   other final status to that request refuses it.
 * - HEAD, 204, 304: no body. Content-Length: that many bytes. chunked (the
 *   last coding): chunks, then trailers. Neither: the body runs until close,
 *   and nothing after it is counted.
 * - Not "HTTP/1.x NNN": counting stops. */
#define RESP_WINDOW 128

struct resp_walk {
  struct exchange a;
  __u64 now;
};

/* The server's final status to the request that asked for a tunnel: 101 to
 * an upgrade, 2xx to CONNECT opens it; anything else refuses it. Only while
 * the verdict waits (PENDING): once the client's next bytes were judged as
 * requests, a late answer opens nothing. */
static __always_inline void decide_tunnel(struct exchange *a, __u8 method, __u16 st) {
  if (a->tunnel != TUNNEL_PENDING)
    return;
  int open = method == SMIK_HTTP_M_CONNECT ? st >= 200 && st < 300 : st == 101;
  a->tunnel = open ? TUNNEL_OPEN : TUNNEL_REFUSED;
}

/* The status line's final status answers the oldest request queued. */
static __always_inline void count_response(struct resp_walk *x) {
  struct exchange *a = &x->a;
  __u16 st = a->status;
  a->answered = 0;
  if (st >= 100 && st < 200 && st != 101)
    return; /* interim */
  if (a->queued == 0)
    return; /* nothing asked that this could answer */
  __u32 slot = a->oldest & (SMIK_HTTP_PIPELINE - 1);
  __u8 asked = a->method[slot];
  __u8 method = asked & 0xf;
  /* 0: no receive time kept (its batch found them all taken) */
  __u64 received = 0;
  if ((asked & X_TIMED) && a->batches) {
    __u32 b = a->batch_oldest & (SMIK_HTTP_BATCHES - 1);
    received = a->batch_ns[b];
    if (a->batch_left[b] > 1) {
      a->batch_left[b]--;
    } else {
      a->batch_oldest = (a->batch_oldest + 1) & (SMIK_HTTP_BATCHES - 1);
      a->batches--;
    }
  }
  if (asked & X_TUNNEL)
    decide_tunnel(a, method, st);
  a->oldest = (a->oldest + 1) & (SMIK_HTTP_PIPELINE - 1);
  a->queued--;
  a->answered = 1;
  a->answering = method;
  struct smik_http_edge_stats *s = bpf_map_lookup_elem(&smik_http_edges, &a->edge);
  if (!s) {
    __u32 zero = 0;
    struct smik_http_edge_stats *z = bpf_map_lookup_elem(&smik_http_edges_zero, &zero);
    if (!z)
      return;
    bpf_map_update_elem(&smik_http_edges, &a->edge, z, BPF_NOEXIST);
    s = bpf_map_lookup_elem(&smik_http_edges, &a->edge);
    if (!s)
      return;
  }
  __u32 cls = st / 100;
  if (cls > 5)
    cls = 0;
  __u32 m = method < SMIK_HTTP_METHODS ? method : SMIK_HTTP_M_OTHER;
  __u32 i = m * SMIK_HTTP_CLASSES + cls;
  /* clang proves the bound and drops the check the verifier needs */
  asm volatile("" : "+r"(i));
  if (i < SMIK_HTTP_METHODS * SMIK_HTTP_CLASSES)
    __sync_fetch_and_add(&s->answers[0][0] + i, 1);
  if (!received)
    return;
  __u64 us = a->first_ns > received ? (a->first_ns - received) / 1000 : 0;
  __u32 b = smik_hist_bucket(us);
  asm volatile("" : "+r"(b));
  if (b < SMIK_HIST_BUCKETS)
    __sync_fetch_and_add(&s->response_us[b], 1);
}

/* The status line's 12 bytes are in (a byte at a time or at once): the
 * answer counts, and the rest of its line is no header. */
static __always_inline void status_line_read(struct resp_walk *x) {
  struct exchange *a = &x->a;
  count_response(x);
  a->phase = R_HEAD;
  a->line = 1;
  a->hv = HV_OTHER;
  a->cand = 0;
}

/* The empty line after a response head: where does its body end? */
static __always_inline void resp_end_head(struct exchange *a) {
  __u16 st = a->status;
  __u8 f = a->flags;
  a->pos = 0;
  a->line = 0;
  a->hv = HV_NAME;
  a->cand = 3;
  if (st >= 100 && st < 200 && st != 101) {
    a->phase = R_STATUS; /* interim: the final status follows */
    return;
  }
  if (st == 101 || (a->answering == SMIK_HTTP_M_CONNECT && a->answered && st >= 200 && st < 300)) {
    a->phase = R_OFF; /* a tunnel */
    return;
  }
  if ((a->answered && a->answering == SMIK_HTTP_M_HEAD) || st == 204 || st == 304) {
    a->phase = R_STATUS;
    return;
  }
  if (f & RF_TE) {
    if (f & RF_CHUNKED) {
      a->phase = R_CHUNK_SIZE;
      a->count = 0;
      a->flags = 0;
    } else {
      a->phase = R_OFF; /* until close */
      a->to_close = 1;
    }
    return;
  }
  if (f & RF_CL) {
    a->phase = a->count ? R_BODY : R_STATUS;
    return;
  }
  a->phase = R_OFF; /* until close */
  a->to_close = 1;
}

static __always_inline void resp_end_line(struct exchange *a) {
  if (a->phase == R_HEAD) {
    if (!a->line) {
      resp_end_head(a);
      return;
    }
    if (a->hv == HV_TE) {
      if (a->sub == CHUNKED_LEN || a->sub == 0xfe)
        a->flags |= RF_CHUNKED;
      else
        a->flags &= ~RF_CHUNKED;
    }
  } else if (a->phase == R_CHUNK_SIZE) {
    a->flags &= ~RF_EXT;
    if (a->count == 0) {
      a->phase = R_TRAILER;
    } else {
      a->count += 2; /* the CRLF after the chunk's data */
      a->phase = R_CHUNK_DATA;
    }
  } else if (a->phase == R_TRAILER && !a->line) {
    a->phase = R_STATUS;
    a->pos = 0;
    a->flags = 0;
    return;
  }
  a->line = 0;
  a->pos = 0;
  a->hv = HV_NAME;
  a->cand = 3;
}

static __always_inline void resp_header_byte(struct exchange *a, __u8 b) {
  if (a->hv == HV_NAME) {
    if (b == ':') {
      if ((a->cand & 1) && a->pos == NAME_CL_LEN) {
        a->hv = HV_CL;
        a->flags |= RF_CL;
        a->count = 0;
      } else if ((a->cand & 2) && a->pos == NAME_TE_LEN) {
        a->hv = HV_TE;
        a->flags |= RF_TE;
        a->sub = 0;
      } else {
        a->hv = HV_OTHER;
      }
      return;
    }
    __u8 l = lower(b), pos = a->pos;
    if (pos >= NAME_CL_LEN || l != name_cl[pos & 15])
      a->cand &= ~1;
    if (pos >= NAME_TE_LEN || l != name_te[pos & 31])
      a->cand &= ~2;
    if (pos < 255)
      a->pos = pos + 1;
    return;
  }
  int ws = b == ' ' || b == '\t';
  if (a->hv == HV_CL) {
    if (ws)
      return;
    if (b < '0' || b > '9') {
      a->phase = R_OFF; /* a framing the counter does not follow */
      return;
    }
    a->count = a->count * 10 + (b - '0');
    if (a->count > MAX_BODY)
      a->phase = R_OFF;
  } else if (a->hv == HV_TE) {
    __u8 s = a->sub;
    if (b == ',')
      a->sub = 0;
    else if (ws)
      a->sub = s == CHUNKED_LEN ? 0xfe : (s == 0 || s == 0xfe) ? s : 0xff;
    else if (s < CHUNKED_LEN && lower(b) == chunked[s & 7])
      a->sub = s + 1;
    else
      a->sub = 0xff;
  }
}

/* One byte of the server's stream outside a body. A global function: the
 * verifier checks it once, not once per byte of the window loop. Returns 1
 * when the caller should stop reading bytes (a body to skip, or counting
 * stopped). */
__attribute__((noinline)) int smik_http_resp_byte(struct resp_walk *x, __u32 byte) {
  if (!x)
    return 1;
  struct exchange *a = &x->a;
  __u8 b = (__u8)(byte & 0xff);
  if (a->phase == R_STATUS) {
    __u8 pos = a->pos;
    if (pos == 0) {
      a->first_ns = x->now;
      a->status = 0;
      a->flags = 0;
    }
    int ok;
    if (pos < 7)
      ok = b == http_version[pos & 7];
    else if (pos == 7)
      ok = b == '0' || b == '1';
    else if (pos == 8)
      ok = b == ' ';
    else
      ok = b >= '0' && b <= '9';
    if (!ok) {
      a->phase = R_OFF;
      return 1;
    }
    if (pos >= 9)
      a->status = a->status * 10 + (b - '0');
    a->pos = pos + 1;
    if (a->pos == 12)
      status_line_read(x);
    return 0;
  }
  if (b == '\r')
    return 0;
  if (b == '\n') {
    resp_end_line(a);
    return a->phase == R_BODY || a->phase == R_CHUNK_DATA || a->phase == R_OFF;
  }
  a->line = 1;
  if (a->phase == R_HEAD) {
    resp_header_byte(a, b);
    return a->phase == R_OFF;
  }
  if (a->phase == R_CHUNK_SIZE && !(a->flags & RF_EXT)) {
    int h = hex_value(b);
    if (h >= 0) {
      a->count = a->count * 16 + h;
      if (a->count > MAX_BODY) {
        a->phase = R_OFF;
        return 1;
      }
    } else {
      a->flags |= RF_EXT; /* extensions, whitespace: up to the line's end */
    }
  }
  return 0;
}

/* A window of the server's bytes, copied out of the skb. */
struct resp_bytes {
  __u8 b[RESP_WINDOW];
};

/* Bytes up to the line's end that change nothing: a header line whose
 * name is neither Content-Length nor Transfer-Encoding (from the byte that
 * ruled both out), another header's value, the status line's reason. */
static __always_inline int resp_rest_of_line(const struct exchange *a) {
  return a->phase == R_HEAD && (a->hv == HV_OTHER || (a->hv == HV_NAME && a->cand == 0 && a->line));
}

/* A whole "HTTP/1.x NNN" at the window's start: read at once, not a byte at
 * a time (a status line split across skbs goes the byte way). */
static __always_inline int resp_status_line(const struct resp_bytes *w) {
  const __u8 *b = w->b;
  int ok = b[7] == '0' || b[7] == '1';
  for (int i = 0; i < 7; i++)
    ok &= b[i] == http_version[i];
  ok &= b[8] == ' ';
  for (int i = 9; i < 12; i++)
    ok &= b[i] >= '0' && b[i] <= '9';
  return ok;
}

/* What smik_http_resp_byte does over a status line's 12 bytes.
 * A global function: count_response is verified once more, not per window
 * byte. */
__attribute__((noinline)) int smik_http_resp_status(struct resp_walk *x, __u32 status) {
  if (!x)
    return 0;
  struct exchange *a = &x->a;
  a->first_ns = x->now;
  a->flags = 0;
  a->status = (__u16)status;
  a->pos = 12;
  status_line_read(x);
  return 0;
}

/* Frames up to `n` bytes of the window; returns how many it took (it stops
 * at a body to skip, or when counting stopped). The rest of a line that
 * changes nothing is passed over here, to its LF, a compare a byte. A
 * global function: the verifier checks its loop once, not once per window. */
__attribute__((noinline)) int smik_http_resp_window(const struct resp_bytes *w, struct resp_walk *x,
                                                     __u32 n) {
  if (!w || !x)
    return 0;
  __u32 from = 0;
  if (x->a.phase == R_STATUS && x->a.pos == 0 && n >= 12 && resp_status_line(w)) {
    smik_http_resp_status(x, (w->b[9] - '0') * 100 + (w->b[10] - '0') * 10 + (w->b[11] - '0'));
    from = 12; /* a constant: the verifier bounds the loop from it */
  }
  int took = from;
  int rest = resp_rest_of_line(&x->a);
  for (__u32 j = from; j < RESP_WINDOW; j++) {
    if (j >= n)
      break;
    took++;
    __u8 b = w->b[j];
    if (rest && b != '\n')
      continue;
    if (smik_http_resp_byte(x, b))
      break;
    rest = resp_rest_of_line(&x->a);
  }
  return took;
}

struct egress_walk {
  struct __sk_buff *skb;
  __u32 off; /* next skb byte to frame */
  __u32 end;
  struct resp_walk x;
  struct resp_bytes buf;
};

/* One bpf_loop step: skip body bytes, or frame one window. Every step takes
 * at least one byte. */
static int egress_step(__u32 i, void *ctx) {
  struct egress_walk *w = ctx;
  struct exchange *a = &w->x.a;
  if (w->off >= w->end || a->phase == R_OFF)
    return 1;
  if (a->phase == R_BODY || a->phase == R_CHUNK_DATA) {
    if (skip_counted(&a->count, &w->off, w->end)) {
      a->phase = a->phase == R_BODY ? R_STATUS : R_CHUNK_SIZE;
      a->pos = 0;
      a->line = 0;
    }
    return 0;
  }
  __u64 n = w->end - w->off;
  if (n > RESP_WINDOW)
    n = RESP_WINDOW;
  /* clang folds the clamp into a form the verifier cannot bound: bound it again */
  asm volatile("" : "+r"(n));
  if (n == 0 || n > RESP_WINDOW || bpf_skb_load_bytes(w->skb, w->off, w->buf.b, n) < 0)
    return 1; /* left unframed: counting stops below */
  w->off += smik_http_resp_window(&w->buf, &w->x, (__u32)n);
  return 0;
}

/* ---- egress: the server's responses as they are transmitted -----------------------
 *
 * cgroup egress (where the guard is) sees every skb a pod sends, whatever
 * wrote it (write, sendfile, splice), after TCP made it: a GSO skb of many
 * segments, one send split over skbs, many sends in one. A socket with no
 * response state (none the verdict judges, or none that finished a request
 * yet) costs one lookup and no packet read; packets without payload are
 * not framed. The state keeps the sequence number of the next byte to frame:
 * a retransmission, or a re-send overlapping what was framed, frames only
 * bytes not framed before, so each byte is framed once and in order. A gap
 * (bytes that were never seen) stops the connection's counting. Never drops
 * a packet: metrics, and the answer that opens a tunnel. */
static __always_inline int tcp_payload(struct __sk_buff *skb, __u32 *seq) {
  __u32 l3;
  __u8 b[9];
  if (skb->protocol == bpf_htons(ETH_P_IP_)) {
    if (bpf_skb_load_bytes(skb, 0, b, 1) < 0)
      return -1;
    l3 = (b[0] & 0xf) * 4;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6_)) {
    if (bpf_skb_load_bytes(skb, 6, b, 1) < 0 || b[0] != IPPROTO_TCP_)
      return -1; /* extension headers: not walked */
    l3 = 40;
  } else {
    return -1;
  }
  /* sequence number, acknowledgment number, data offset */
  if (bpf_skb_load_bytes(skb, l3 + 4, b, 9) < 0)
    return -1;
  *seq = ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
  return l3 + (b[8] >> 4) * 4;
}

/* ---- answers owed ---------------------------------------------------------------
 *
 * A request refused while the server still owed answers to requests before
 * it (pipelined) cannot be answered in the place of its skb: that answer
 * would leave before theirs. The verdict drops the skb and leaves the
 * answer owed in the connection's exchange; here, once the server's stream
 * has the last of those answers whole (answered_all, at the skb that
 * completes it, whose last byte is at sequence number `end`), the flow's
 * conntrack entry is marked (SMIK_CT_F_ANSWER) with where and which answer
 * (smik_ct_answers). The tc program on the pod's veth sees that skb next:
 * it lets it through, sends the answer after it (with a FIN: the
 * connection is closed, as after every refusal) and resets the server's
 * socket, whose stream never had the answer (answer_owed in tc_policy). A
 * flow without a conntrack entry (the table was full) or a full
 * smik_ct_answers leaves the answer unsent (SMIK_HTTP_C_ANSWER_FAILED): the
 * client waits for the server to close an idle connection. */
static __always_inline void send_owed(struct __sk_buff *skb, struct exchange *a, __u32 end,
                                      int lost) {
  struct smik_ct_answer ans = {.seq = end, .answer = lost ? SMIK_CT_ANSWER_RESET : a->owed - 1u};
  if (lost)
    count(SMIK_HTTP_C_ANSWER_FAILED);
  a->owed = 0;
  a->phase = R_OFF; /* what follows on the stream is the judge's answer */
  struct bpf_sock *sk = skb->sk;
  if (sk)
    sk = bpf_sk_fullsock(sk);
  struct smik_ct_key k = {};
  if (!sk || !flow_into_pod(sk, &k) || !mark_owed(&k, &ans))
    count(SMIK_HTTP_C_ANSWER_FAILED);
}

SEC("cgroup_skb/egress")
int smik_http_egress(struct __sk_buff *skb) {
  struct bpf_sock *sk = skb->sk;
  if (!sk)
    return 1;
  sk = bpf_sk_fullsock(sk);
  /* src_port: host order */
  if (!sk || !port_may_be_governed((__u16)sk->src_port))
    return 1;
  __u64 cookie = bpf_get_socket_cookie(skb);
  struct conn_state *st = bpf_map_lookup_elem(&smik_http_conns, &cookie);
  if (!st)
    return 1;
  struct exchange *state = &st->x;
  if (!state->tracked || state->phase == R_OFF)
    return 1;
  __u32 seq = 0;
  int off = tcp_payload(skb, &seq);
  if (off < 0 || off > 0xffff) {
    state->phase = R_OFF;
    count(SMIK_HTTP_C_RESPONSES_UNTRACKED);
    return 1;
  }
  __u32 len = skb->len;
  if (len <= (__u32)off)
    return 1; /* no payload: an ACK, a FIN */
  len -= off;
  if (!state->seq_known) {
    /* The first bytes after the state was made. New bytes leave at snd_nxt
     * (TCP advances it once they are out); an older sequence number is a
     * retransmission of bytes sent before: not framed. */
    struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
    if (!tp || tp->snd_nxt != seq)
      return 1;
    state->seq = seq;
    state->seq_known = 1;
  }
  __s32 ahead = (__s32)(seq - state->seq);
  if (ahead > 0) {
    state->phase = R_OFF; /* bytes never seen: the stream cannot be followed */
    count(SMIK_HTTP_C_RESPONSES_UNTRACKED);
    return 1;
  }
  __u32 framed = (__u32)(-ahead);
  if (framed >= len)
    return 1; /* all of it was framed before */
  struct egress_walk w = {.skb = skb, .off = off + framed, .end = off + len};
  w.x.a = *state;
  w.x.now = bpf_ktime_get_ns();
  bpf_loop(len - framed + 1, egress_step, &w, 0);
  w.x.a.seq = seq + len;
  if (w.off < w.end && w.x.a.phase != R_OFF) {
    w.x.a.phase = R_OFF;
    count(SMIK_HTTP_C_RESPONSES_UNTRACKED);
  }
  *state = w.x.a;
  /* Counting stopped in this skb (a body that runs to the close, a 101,
   * a response the framer cannot read): where the server's answers end is
   * no longer known, and the answer owed can never be placed. Rather than
   * leave the client waiting, the flow is reset after this skb. */
  if (state->owed && (state->phase == R_OFF || answered_all(state)))
    send_owed(skb, state, w.x.a.seq, state->phase == R_OFF);
  /* the client is gone and its last answer is out: so is the socket's state */
  if (state->fin && (state->phase == R_OFF || answered_all(state)))
    bpf_map_delete_elem(&smik_http_conns, &cookie);
  return 1;
}
