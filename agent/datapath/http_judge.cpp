#include "agent/datapath/http_judge.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/result.h"
#include "smik_http.skel.h"

namespace smik::datapath {
namespace {

bool update(int fd, const void* key, const void* value, const std::string& what, std::string* err) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) == 0) return true;
  *err = errnoText("update " + what);
  return false;
}

}  // namespace

std::unique_ptr<HttpJudge> HttpJudge::open(std::string* err, int ipcache_fd, uint32_t max_sockets,
                                           HttpEventMaps events, ConntrackMaps conntrack) {
  std::unique_ptr<HttpJudge> j(new HttpJudge);
  j->skel_ = smik_http__open();
  if (!j->skel_) return (*err = errnoText("open HTTP judge object")), nullptr;
  // The shared definition pins the ipcache by name for the tc programs; the
  // judge never pins (it would create or adopt /sys/fs/bpf/smik_ipcache):
  // it has a map of its own or the fd it is handed.
  if (int r = bpf_map__set_pin_path(j->skel_->maps.smik_ipcache, nullptr); r != 0)
    return (*err = errnoText("unpin the ipcache", r)), nullptr;
  if (ipcache_fd >= 0) {
    if (int r = bpf_map__reuse_fd(j->skel_->maps.smik_ipcache, ipcache_fd); r != 0)
      return (*err = errnoText("share the ipcache", r)), nullptr;
  }
  // The conntrack table and its owed answers likewise; its own are one entry
  // (never read).
  for (auto [m, fd] : {std::pair{j->skel_->maps.smik_ct, conntrack.table},
                       std::pair{j->skel_->maps.smik_ct_answers, conntrack.answers}}) {
    if (int r = bpf_map__set_pin_path(m, nullptr); r != 0)
      return (*err = errnoText(std::string("unpin ") + bpf_map__name(m), r)), nullptr;
    if (int r = fd >= 0 ? bpf_map__reuse_fd(m, fd) : bpf_map__set_max_entries(m, 1); r != 0)
      return (*err = errnoText(std::string("share ") + bpf_map__name(m), r)), nullptr;
  }
  // The events' maps likewise: those handed over, or its own.
  for (auto [m, fd] : {std::pair{j->skel_->maps.smik_events, events.ring},
                       std::pair{j->skel_->maps.smik_ev_limits, events.limits}}) {
    if (int r = bpf_map__set_pin_path(m, nullptr); r != 0)
      return (*err = errnoText(std::string("unpin ") + bpf_map__name(m), r)), nullptr;
    if (fd < 0) continue;
    if (int r = bpf_map__reuse_fd(m, fd); r != 0)
      return (*err = errnoText(std::string("share ") + bpf_map__name(m), r)), nullptr;
  }
  if (max_sockets > 0 && max_sockets < SMIK_HTTP_MAX_SOCKETS) {
    if (int r = bpf_map__set_max_entries(j->skel_->maps.smik_http_socks, max_sockets); r != 0)
      return (*err = errnoText("size smik_http_socks", r)), nullptr;
    if (int r = bpf_map__set_max_entries(j->skel_->maps.smik_http_conns, max_sockets); r != 0)
      return (*err = errnoText("size smik_http_conns", r)), nullptr;
  }
  if (int r = smik_http__load(j->skel_); r != 0)
    return (*err = errnoText("load HTTP judge programs", r)), nullptr;
  j->socks_fd_ = bpf_map__fd(j->skel_->maps.smik_http_socks);
  // Parserless (BPF_SK_SKB_VERDICT): the stream parser makes servers see
  // spurious EAGAIN and drop connections.
  if (bpf_prog_attach(bpf_program__fd(j->skel_->progs.smik_http_verdict), j->socks_fd_,
                      BPF_SK_SKB_VERDICT, 0) != 0)
    return (*err = errnoText("attach the verdict to smik_http_socks")), nullptr;
  j->verdict_attached_ = true;
  return j;
}

std::vector<maps::MapDef> HttpJudge::mapDefs(std::string* err) {
  smik_http* skel = smik_http__open();
  if (!skel) return (*err = errnoText("open HTTP judge object")), std::vector<maps::MapDef>{};
  std::vector<maps::MapDef> out;
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, skel->obj) {
    const std::string name = bpf_map__name(m);
    if (name.rfind("smik_http_", 0) != 0) continue;  // as maps() reports them
    out.push_back(maps::mapDefOf(m));
  }
  smik_http__destroy(skel);
  return out;
}

HttpJudge::~HttpJudge() {
  guard_link_.reset();
  egress_link_.reset();
  sockops_link_.reset();
  // Pinned (keep_): the programs stay attached to the pinned socket map
  // after us, as the tc and socket programs do.
  if (verdict_attached_ && !keep_)
    bpf_prog_detach2(bpf_program__fd(skel_->progs.smik_http_verdict), socks_fd_, BPF_SK_SKB_VERDICT);
  if (skel_) smik_http__destroy(skel_);
}

bool HttpJudge::attach(const std::string& cgroup, std::string* err) {
  if (sockops_link_) return (*err = "already attached"), false;
  UniqueFd cg{::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (!cg) return (*err = errnoText("open cgroup " + cgroup)), false;
  // The guard first: from the moment sockops judges new sockets, no older
  // one of a governed port carries payload unjudged.
  UniqueFd guard{bpf_link_create(bpf_program__fd(skel_->progs.smik_http_guard), cg.get(),
                                 BPF_CGROUP_INET_INGRESS, nullptr)};
  if (!guard) return (*err = errnoText("attach the HTTP guard to " + cgroup)), false;
  // The server's answers as they leave (every skb, whatever wrote it):
  // counted per edge, and the one that decides whether a CONNECT or
  // WebSocket upgrade opens a tunnel.
  UniqueFd egress{bpf_link_create(bpf_program__fd(skel_->progs.smik_http_egress), cg.get(),
                                  BPF_CGROUP_INET_EGRESS, nullptr)};
  if (!egress) return (*err = errnoText("attach the HTTP egress program to " + cgroup)), false;
  UniqueFd sockops{bpf_link_create(bpf_program__fd(skel_->progs.smik_http_sockops), cg.get(),
                                   BPF_CGROUP_SOCK_OPS, nullptr)};
  if (!sockops) return (*err = errnoText("attach HTTP sockops to " + cgroup)), false;
  guard_link_ = std::move(guard);
  egress_link_ = std::move(egress);
  sockops_link_ = std::move(sockops);
  return true;
}

bool HttpJudge::loadDfa(uint16_t dfa_id, const compile::http::Dfa& dfa, std::string* err) {
  if (dfa_id == 0 || dfa_id >= SMIK_HTTP_MAX_DFAS) return (*err = "DFA id out of range"), false;
  const size_t states = dfa.states(), classes = dfa.classes;
  if (states == 0 || states > SMIK_HTTP_DFA_MAX_STATES || classes == 0 || classes > 256 ||
      dfa.next.size() != states * classes || dfa.start >= states)
    return (*err = "not a DFA the kernel can run"), false;
  giveBack(dfa_id);
  const size_t transitions = states * classes;
  const auto slots = static_cast<uint32_t>((transitions + SMIK_HTTP_TRANS_PER_SLOT - 1) /
                                           SMIK_HTTP_TRANS_PER_SLOT);
  const std::optional<uint32_t> slot = slots_.take(slots);
  const std::optional<uint32_t> accept = slot ? accepts_.take(static_cast<uint32_t>(states))
                                              : std::nullopt;
  if (!accept) {
    if (slot) slots_.give(*slot, slots);
    return (*err = "the kernel's DFA tables are full (" + std::to_string(states) + " states, " +
                   std::to_string(slots_.freeUnits()) + " transition slots and " +
                   std::to_string(accepts_.freeUnits()) + " accept entries free)"),
           false;
  }
  // Taken from here on: a failed write leaves the space with the id, given
  // back when the id is loaded again or released.
  placed_[dfa_id] = {*slot, slots, *accept, static_cast<uint32_t>(states)};

  // Transitions, 4 to a slot, from a slot boundary.
  const int trans_fd = bpf_map__fd(skel_->maps.smik_http_trans);
  for (size_t t = 0; t < transitions; t += SMIK_HTTP_TRANS_PER_SLOT) {
    smik_http_trans_slot out{};
    for (size_t i = 0; i < SMIK_HTTP_TRANS_PER_SLOT && t + i < transitions; ++i)
      out.next[i] = dfa.next[t + i];
    const uint32_t key = *slot + static_cast<uint32_t>(t / SMIK_HTTP_TRANS_PER_SLOT);
    if (!update(trans_fd, &key, &out, "smik_http_trans", err)) return false;
  }
  const int acc_fd = bpf_map__fd(skel_->maps.smik_http_accepts);
  for (size_t s = 0; s < states; ++s) {
    const uint32_t key = *accept + static_cast<uint32_t>(s);
    if (!update(acc_fd, &key, &dfa.accepts[s], "smik_http_accepts", err)) return false;
  }
  smik_http_dfa d{};
  d.trans_base = *slot * SMIK_HTTP_TRANS_PER_SLOT;
  d.accept_base = *accept;
  d.states = static_cast<uint16_t>(states);
  d.classes = static_cast<uint16_t>(classes);
  d.start = dfa.start;
  for (int b = 0; b < 256; ++b) {
    if (dfa.class_of[b] >= classes) return (*err = "byte class out of range"), false;
    d.class_of[b] = static_cast<uint8_t>(dfa.class_of[b]);
  }
  const uint32_t key = dfa_id;
  return update(bpf_map__fd(skel_->maps.smik_http_dfas), &key, &d, "smik_http_dfas", err);
}

void HttpJudge::giveBack(uint16_t dfa_id) {
  auto it = placed_.find(dfa_id);
  if (it == placed_.end()) return;
  // Unpublished before its space can hold another DFA: states 0 matches
  // nothing. Nothing reads it (the caller's promise); this keeps a broken
  // promise failing closed.
  const smik_http_dfa none{};
  const uint32_t key = dfa_id;
  bpf_map_update_elem(bpf_map__fd(skel_->maps.smik_http_dfas), &key, &none, BPF_ANY);
  slots_.give(it->second.slot, it->second.slots);
  accepts_.give(it->second.accept, it->second.states);
  placed_.erase(it);
}

void HttpJudge::release(const std::set<uint16_t>& keep) {
  std::vector<uint16_t> gone;
  for (const auto& [id, p] : placed_)
    if (!keep.count(id)) gone.push_back(id);
  for (uint16_t id : gone) giveBack(id);
}

std::vector<HttpJudge::MapRef> HttpJudge::maps() const {
  std::vector<MapRef> out;
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, skel_->obj) {
    const std::string name = bpf_map__name(m);
    if (name.rfind("smik_http_", 0) != 0) continue;  // shared maps, .rodata and such
    MapRef r{name, bpf_map__fd(m), std::nullopt};
    if (m == skel_->maps.smik_http_trans) r.taken = slots_.capacity() - slots_.freeUnits();
    if (m == skel_->maps.smik_http_accepts) r.taken = accepts_.capacity() - accepts_.freeUnits();
    out.push_back(std::move(r));
  }
  return out;
}

bool HttpJudge::loadNeeds(uint16_t hdr_dfa_id, const std::vector<uint32_t>& needs, std::string* err) {
  if (hdr_dfa_id == 0 || hdr_dfa_id >= SMIK_HTTP_MAX_DFAS || needs.size() > SMIK_HTTP_MAX_PATTERNS)
    return (*err = "header needs out of range"), false;
  smik_http_needs n{};
  for (unsigned i = 0; i < SMIK_HTTP_MAX_PATTERNS; ++i) {  // bits past `needs` need nothing (as PortJudge reads them)
    n.needs[i] = i < needs.size() ? needs[i] : 0;
    if (n.needs[i] == 0) n.unconditional |= abi::httpBit(i);
  }
  const uint32_t key = hdr_dfa_id;
  return update(bpf_map__fd(skel_->maps.smik_http_needs), &key, &n, "smik_http_needs", err);
}

bool HttpJudge::govern(const smik::Addr& addr, uint16_t port, uint32_t dst_id, uint16_t dfa_id,
                       std::string* err, uint16_t hdr_dfa_id) {
  smik_http_port_key k{};
  k.family = addr.family;
  k.port = port;
  std::memcpy(k.addr, addr.bytes.data(), 16);
  smik_http_port v{dst_id, dfa_id, hdr_dfa_id};
  if (!port_bits_.count(port)) {
    // Before the address is governed: the guard and the egress program
    // look no further on a port without its bit.
    const int bits = bpf_map__fd(skel_->maps.smik_http_port_bits);
    uint32_t word = port / 64;
    uint64_t w = 0;
    if (bpf_map_lookup_elem(bits, &word, &w) != 0)
      return (*err = errnoText("read smik_http_port_bits")), false;
    w |= uint64_t{1} << (port % 64);
    if (!update(bits, &word, &w, "smik_http_port_bits", err)) return false;
    port_bits_.insert(port);
  }
  return update(bpf_map__fd(skel_->maps.smik_http_ports), &k, &v, "smik_http_ports", err);
}

bool HttpJudge::grant(uint32_t src_id, uint32_t dst_id, uint16_t port, const smik_http_grant& g,
                      std::string* err) {
  smik_http_grant_key k{src_id, dst_id, port, 0};
  return update(bpf_map__fd(skel_->maps.smik_http_grants), &k, &g, "smik_http_grants", err);
}

bool HttpJudge::revoke(uint32_t src_id, uint32_t dst_id, uint16_t port, std::string* err) {
  smik_http_grant_key k{src_id, dst_id, port, 0};
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.smik_http_grants), &k) == 0 || errno == ENOENT)
    return true;
  return (*err = errnoText("delete from smik_http_grants")), false;
}

bool HttpJudge::setIdentity(const smik::Addr& addr, uint32_t identity, std::string* err) {
  smik_ip_key k{};
  k.family = addr.family;
  std::memcpy(k.addr, addr.bytes.data(), 16);
  smik_ip_info v{identity, 0};
  return update(bpf_map__fd(skel_->maps.smik_ipcache), &k, &v, "smik_ipcache", err);
}

bool HttpJudge::setLimits(const smik_http_config& limits, std::string* err) {
  const uint32_t zero = 0;
  return update(bpf_map__fd(skel_->maps.smik_http_config), &zero, &limits, "smik_http_config", err);
}

bool HttpJudge::ungovern(const smik::Addr& addr, uint16_t port, std::string* err) {
  smik_http_port_key k{};
  k.family = addr.family;
  k.port = port;
  std::memcpy(k.addr, addr.bytes.data(), 16);
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.smik_http_ports), &k) == 0 || errno == ENOENT)
    return true;
  return (*err = errnoText("delete from smik_http_ports")), false;
}

bool HttpJudge::pin(const std::string& dir, std::string* err) {
  const std::string link_pin = dir + "/" + kSockopsPin, socks_pin = dir + "/smik_http_socks";
  // The guard too: without it, a governed socket the judge does not see
  // would carry payload unjudged once the agent is gone.
  const std::string guard_pin = dir + "/http_guard";
  // The egress program too: without it, no tunnel would open once the agent
  // is gone.
  const std::string egress_pin = dir + "/http_egress";
  if (!sockops_link_ || !guard_link_ || !egress_link_) return (*err = "pin: not attached"), false;
  for (const auto& [fd, path] : {std::pair{sockops_link_.get(), link_pin},
                                 std::pair{socks_fd_, socks_pin},
                                 std::pair{guard_link_.get(), guard_pin},
                                 std::pair{egress_link_.get(), egress_pin}}) {
    ::unlink(path.c_str());  // a previous agent's: its sockets stay with its maps
    if (bpf_obj_pin(fd, path.c_str()) != 0) return (*err = errnoText("pin " + path)), false;
  }
  keep_ = true;
  return true;
}

std::set<uint16_t> HttpJudge::liveDfas() const {
  std::set<uint16_t> out;
  const int fd = bpf_map__fd(skel_->maps.smik_http_conns);
  uint64_t key = 0, next = 0;
  const uint64_t* prev = nullptr;
  // Each value is the request framer's smik_http_conn, then the response
  // framer's state (private to the BPF object): read whole, the first part used.
  std::vector<uint8_t> value(bpf_map__value_size(skel_->maps.smik_http_conns));
  if (value.size() < sizeof(smik_http_conn)) return out;
  smik_http_conn c{};
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (bpf_map_lookup_elem(fd, &next, value.data()) == 0) {
      std::memcpy(&c, value.data(), sizeof c);
      out.insert(c.dfa_id);
      if (c.hdr_dfa_id) out.insert(c.hdr_dfa_id);
    }
    key = next;
    prev = &key;
  }
  return out;
}

std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> HttpJudge::counters() const {
  std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> out{};
  const int fd = bpf_map__fd(skel_->maps.smik_http_stats);
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return out;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus));
  for (uint32_t i = 0; i < SMIK_HTTP_COUNTER_MAX; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) continue;
    for (uint64_t v : per_cpu) out[i] += v;
  }
  return out;
}

std::vector<maps::HttpEdge> HttpJudge::responseEdges() const {
  std::vector<maps::HttpEdge> out;
  const int fd = bpf_map__fd(skel_->maps.smik_http_edges);
  smik_conn_key key{}, next{};
  const smik_conn_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    maps::HttpEdge e{next, {}};
    if (bpf_map_lookup_elem(fd, &next, &e.stats) == 0) out.push_back(e);
    key = next;
    prev = &key;
  }
  return out;
}

int HttpJudge::eventsFd() const { return bpf_map__fd(skel_->maps.smik_events); }

std::vector<std::pair<std::string, int>> HttpJudge::programs() const {
  std::vector<std::pair<std::string, int>> out;
  for (const bpf_program* p : {skel_->progs.smik_http_sockops, skel_->progs.smik_http_guard,
                               skel_->progs.smik_http_verdict, skel_->progs.smik_http_egress})
    out.emplace_back(bpf_program__name(p), bpf_program__fd(p));
  return out;
}

size_t HttpJudge::connections() const {
  const int fd = bpf_map__fd(skel_->maps.smik_http_conns);
  size_t n = 0;
  uint64_t key = 0, next = 0;
  const uint64_t* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++n;
    key = next;
    prev = &key;
  }
  return n;
}

}  // namespace smik::datapath
