// The kernel's HTTP/1.x request judge (bpf/http_verdict.bpf.c): loads it,
// attaches it, and writes what it judges by: the governed server ports, the
// path DFAs of agent/compile/http_regex.h, the grants, the limits.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <utility>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/table_space.h"
#include "agent/base/unique_fd.h"
#include "agent/compile/compile.h"
#include "agent/compile/http_regex.h"
#include "bpf/include/smik_abi.h"
#include "maps/maps.h"
#include "maps/memory.h"

struct smik_http;

namespace smik::datapath {

// The events' ring buffer and rate limit an HttpJudge writes to; -1: its own.
struct HttpEventMaps {
  int ring = -1;
  int limits = -1;
};

// The tc programs' conntrack table and the answers owed on its flows; -1: its own.
struct ConntrackMaps {
  int table = -1;
  int answers = -1;
};

class HttpJudge {
 public:
  // Loads the programs and attaches the verdict to the socket map (it judges
  // nothing until attach() puts sockets there). `ipcache_fd` >= 0 shares the
  // tc programs' source identities instead of a map of its own.
  // `max_sockets` > 0 sizes the socket map and the sockets' state map below
  // SMIK_HTTP_MAX_SOCKETS (tests fill them: a governed socket that does not
  // fit is refused its payload).
  // `events` fds >= 0: http-deny events go to that ring buffer (the tc
  // programs' smik_events, which the agent reads) under that rate limit
  // (their smik_ev_limits) instead of maps of its own.
  // `conntrack` fds >= 0: the tc programs' smik_ct, where the guard marks
  // the flows of sockets it refuses for the tc programs to reset, and their
  // smik_ct_answers, where the response framer leaves the answers owed after
  // the server's; without them nothing is marked (one-entry maps of its own
  // stay empty) and an owed answer is never sent.
  static std::unique_ptr<HttpJudge> open(std::string* err, int ipcache_fd = -1,
                                         uint32_t max_sockets = 0, HttpEventMaps events = {},
                                         ConntrackMaps conntrack = {});
  // The judge's own maps (smik_http_*) as this build defines them, from the
  // object opened but not loaded (no root): for the kernel memory table.
  // The maps it shares with the tc programs are theirs to count.
  static std::vector<maps::MapDef> mapDefs(std::string* err);
  ~HttpJudge();
  HttpJudge(const HttpJudge&) = delete;
  HttpJudge& operator=(const HttpJudge&) = delete;

  // Accepted sockets of governed ports under `cgroup` are judged from now on;
  // a governed socket there that is not (established before, or refused by a
  // full socket map) gets no payload through (SMIK_HTTP_C_UNJUDGED).
  bool attach(const std::string& cgroup, std::string* err);
  bool attached() const { return sockops_link_.valid(); }
  // The sockops link's pin under pin()'s dir: there while a judge runs.
  static constexpr const char* kSockopsPin = "http_sockops";

  // Places `dfa` in the transition and accept tables and publishes it as
  // dfa_id. A published id is never rewritten in place (a reader could see
  // half of it): load the new DFA under a free id, then point the port at it.
  // An id loaded before must be one nothing reads any more (no port points
  // at it, no socket runs it): its table space is given back first.
  bool loadDfa(uint16_t dfa_id, const compile::http::Dfa& dfa, std::string* err);
  // Gives back the table space of every loaded id not in `keep` (what ports
  // point at and sockets run) and unpublishes it: an id a bug still handed
  // out would match nothing (deny), never another DFA's transitions.
  void release(const std::set<uint16_t>& keep);
  // The judge's own maps (smik_http_*; not the ipcache or event maps it
  // shares), for the map listing: name, fd, and for the DFA tables, written
  // by offset, the units taken (an array's size says nothing of its use).
  struct MapRef {
    std::string name;
    int fd = -1;
    std::optional<uint64_t> taken;
  };
  std::vector<MapRef> maps() const;
  // What each path pattern bit needs of the header conditions of the header
  // DFA hdr_dfa_id (loaded with loadDfa): written before a port points at it.
  bool loadNeeds(uint16_t hdr_dfa_id, const std::vector<uint32_t>& needs, std::string* err);
  // hdr_dfa_id 0: the port's grants name no header (no header value is read).
  // The port number's bit in smik_http_port_bits is set first, for good.
  bool govern(const smik::Addr& addr, uint16_t port, uint32_t dst_id, uint16_t dfa_id,
              std::string* err, uint16_t hdr_dfa_id = 0);
  bool grant(uint32_t src_id, uint32_t dst_id, uint16_t port, const smik_http_grant& g,
             std::string* err);
  bool revoke(uint32_t src_id, uint32_t dst_id, uint16_t port, std::string* err);
  bool setIdentity(const smik::Addr& addr, uint32_t identity, std::string* err);
  bool setLimits(const smik_http_config& limits, std::string* err);
  // Stops judging new sockets of (addr, port); open ones keep their state.
  bool ungovern(const smik::Addr& addr, uint16_t port, std::string* err);

  // Pins the sockops link and the socket map under `dir` and keeps the
  // verdict attached when this object goes: the judge outlives the agent
  // (as the other programs do). A pin already there is replaced.
  bool pin(const std::string& dir, std::string* err);

  // DFA ids some judged socket still runs (its state names the ids it
  // started with, path and header): an id, or a pattern bit of its DFA, is
  // reused only once no socket runs it.
  std::set<uint16_t> liveDfas() const;

  // SMIK_HTTP_C_*, summed over CPUs.
  std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> counters() const;
  // Responses counted per server-side edge (cumulative; one value for all
  // CPUs). An edge evicted between finding its key and reading it is skipped.
  std::vector<maps::HttpEdge> responseEdges() const;
  // Framer states alive (one per judged socket not yet finished).
  size_t connections() const;
  // The ring buffer its http-deny events go to (smik_http_event records).
  int eventsFd() const;
  // Its programs by name (sockops, guard, verdict, egress; the fds are
  // its own): what the benchmarks read the kernel's run-time statistics of.
  std::vector<std::pair<std::string, int>> programs() const;

 private:
  HttpJudge() = default;
  smik_http* skel_ = nullptr;
  UniqueFd sockops_link_;
  UniqueFd guard_link_;
  UniqueFd egress_link_;
  int socks_fd_ = -1;
  bool verdict_attached_ = false;
  bool keep_ = false;  // pinned: the verdict stays attached after us
  std::set<uint16_t> port_bits_;  // set in smik_http_port_bits
  // Where each loaded id's DFA sits in the tables (transitions in slots).
  struct Placement {
    uint32_t slot = 0, slots = 0;
    uint32_t accept = 0, states = 0;
  };
  void giveBack(uint16_t dfa_id);
  std::map<uint16_t, Placement> placed_;
  TableSpace slots_{SMIK_HTTP_MAX_TRANS_SLOTS};
  TableSpace accepts_{SMIK_HTTP_MAX_ACCEPTS};
};

}  // namespace smik::datapath
