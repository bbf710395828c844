// The compiled plan's HTTP rules (Plan::http) written to the kernel's judge
// (http_judge.h) so that no request is judged against half a policy.
//
// A socket keeps the path DFA (and header DFA) it was accepted with for its
// whole life, while the grant it is judged by is looked up per request. So a
// pattern (a path regex with the header conditions it is granted with) keeps
// its bit across policies for as long as any DFA that gave the bit another
// meaning may still run: a grant then means the same on the old DFA and on
// the new one, and each request is judged by the old grant or the new one,
// never a mix. Revoking a grant denies the next request of an open
// connection; a pattern added while a connection is open reaches it only
// after it reconnects (its DFA lacks the pattern).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/datapath/http_judge.h"

namespace smik::datapath {

class HttpEnforcer {
 public:
  // Loads the judge. Its cgroup programs (guard, egress, sockops) run on
  // every packet of every pod under `cgroup`, so they attach there only with
  // the first port an HTTP rule governs (stage), or at once where a previous
  // agent's judge is pinned under pin_dir/http (its place is taken without a
  // gap); pinned there once attached (the links and the socket map), so
  // they outlive the agent. A node without HTTP rules pays nothing per
  // packet. ipcache_fd: the tc programs' identities;
  // events: their ring buffer and its rate limit, where http-deny events go;
  // conntrack: their flows, where the guard marks those to reset, and the
  // answers owed on them.
  static std::unique_ptr<HttpEnforcer> open(int ipcache_fd, ConntrackMaps conntrack,
                                            HttpEventMaps events,
                                            const std::string& cgroup,
                                            const std::string& pin_dir, std::string* err);

  // Before the L4 policy opens the ports: the DFAs, grants and governed
  // addresses of `plan`. A socket accepted before its port is governed would
  // never be judged, so nothing may open a port this did not govern first.
  bool stage(const compile::Plan& plan, std::string* err);
  // After the L4 policy swap: stops governing what `plan` no longer judges.
  bool finish(const compile::Plan& plan, std::string* err);

  // The framer's limits and flags (smik_http_config; a zero limit: its default).
  bool setLimits(const smik_http_config& c, std::string* err) { return judge_->setLimits(c, err); }
  std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> counters() const { return judge_->counters(); }
  std::vector<maps::HttpEdge> responseEdges() const { return judge_->responseEdges(); }
  size_t connections() const { return judge_->connections(); }
  std::vector<HttpJudge::MapRef> maps() const { return judge_->maps(); }
  std::vector<std::pair<std::string, int>> programs() const { return judge_->programs(); }
  // Its cgroup programs are attached (see open).
  bool attached() const { return judge_->attached(); }

 private:
  static constexpr size_t kBits = SMIK_HTTP_MAX_PATTERNS;
  struct Port {
    // A pattern's meaning: HttpPortPlan::meaning (regex and header conditions).
    std::map<std::string, size_t> bit_of;          // patterns in force -> bit
    std::map<uint16_t, std::array<std::string, kBits>> meaning;  // DFA id -> bit -> meaning
    uint16_t dfa = 0;  // 0 is never loaded: no path matches
    uint16_t hdr = 0;  // its header DFA; 0: no header conditions
    // Ids the port pointed at before, until every address of it points at
    // dfa and hdr (a failed stage can leave some on the old ones).
    std::set<uint16_t> retired;
  };
  using Key = std::pair<uint32_t, uint16_t>;  // destination identity, port

  bool attach(std::string* err);
  bool loadPatterns(const Key& key, const compile::HttpPortPlan& hp, std::string* err);
  uint16_t freeDfaId(const std::set<uint16_t>& live) const;
  std::set<uint16_t> inUse(std::set<uint16_t> live) const;
  void reclaim();

  std::unique_ptr<HttpJudge> judge_;
  std::string cgroup_, pin_dir_;
  std::map<Key, Port> ports_;
  std::map<Key, std::set<uint32_t>> granted_;   // sources with a grant written
  std::set<std::pair<Addr, uint16_t>> governed_;
  uint16_t last_dfa_ = 0;
};

}  // namespace smik::datapath
