#include "agent/datapath/http_apply.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

namespace smik::datapath {

namespace http = compile::http;

std::unique_ptr<HttpEnforcer> HttpEnforcer::open(int ipcache_fd, ConntrackMaps conntrack,
                                                 HttpEventMaps events,
                                                 const std::string& cgroup,
                                                 const std::string& pin_dir, std::string* err) {
  std::unique_ptr<HttpEnforcer> e(new HttpEnforcer);
  e->judge_ = HttpJudge::open(err, ipcache_fd, 0, events, conntrack);
  if (!e->judge_) return nullptr;
  e->cgroup_ = cgroup;
  e->pin_dir_ = pin_dir;
  // A previous agent's judge still runs (its links pinned): replaced now,
  // as before, so that its sockets and policy never outlive it unjudged or stale.
  std::error_code ec;
  if (!pin_dir.empty() && std::filesystem::exists(pin_dir + "/http/" + HttpJudge::kSockopsPin, ec) && !e->attach(err))
    return nullptr;
  return e;
}

// The guard first, then egress and sockops (HttpJudge::attach); pinned.
bool HttpEnforcer::attach(std::string* err) {
  if (judge_->attached()) return true;
  if (!judge_->attach(cgroup_, err)) return false;
  if (!pin_dir_.empty()) {
    // Not under links/: what Datapath adopts there and nobody claims, it removes.
    std::error_code ec;
    std::filesystem::create_directories(pin_dir_ + "/http", ec);
    if (!judge_->pin(pin_dir_ + "/http", err)) return false;
  }
  spdlog::info("HTTP request judge attached at {}", cgroup_);
  return true;
}

// The table space of DFAs no port points at any more and no socket runs:
// without this, every policy change that touches a port's patterns would
// take new space until the tables were full and no new policy could apply.
void HttpEnforcer::reclaim() { judge_->release(inUse(judge_->liveDfas())); }

// `live` (what sockets run) and every id a port's addresses may point at:
// its DFAs, and those it pointed at before until a stage pointed every
// address away from them. Neither reused nor given back.
std::set<uint16_t> HttpEnforcer::inUse(std::set<uint16_t> live) const {
  for (const auto& [key, p] : ports_) {
    live.insert(p.dfa), live.insert(p.hdr);
    live.insert(p.retired.begin(), p.retired.end());
  }
  live.erase(0);
  return live;
}

// An id nothing may read (ids wrap around).
uint16_t HttpEnforcer::freeDfaId(const std::set<uint16_t>& live) const {
  const std::set<uint16_t> busy = inUse(live);
  for (uint32_t i = 1; i < SMIK_HTTP_MAX_DFAS; ++i) {
    uint16_t id = uint16_t(1 + (last_dfa_ + i - 1) % (SMIK_HTTP_MAX_DFAS - 1));
    if (!busy.count(id)) return id;
  }
  return 0;
}

bool HttpEnforcer::loadPatterns(const Key& key, const compile::HttpPortPlan& hp, std::string* err) {
  Port& port = ports_[key];
  std::map<std::string, size_t> wanted;  // meaning -> index in hp
  for (size_t i = 0; i < hp.patterns.size(); ++i) wanted.emplace(hp.meaning(i), i);
  std::set<std::string> held;
  for (const auto& [r, b] : port.bit_of) held.insert(r);
  if (port.dfa != 0 && std::equal(wanted.begin(), wanted.end(), held.begin(), held.end(),
                                  [](const auto& w, const std::string& h) { return w.first == h; }))
    return true;
  if (!hp.error.empty() || wanted.empty()) {  // nothing to match: every request is denied
    port.retired.insert({port.dfa, port.hdr});
    port.bit_of.clear();
    port.dfa = 0;
    port.hdr = 0;
    return true;
  }
  // A bit is free for a new pattern when no DFA still running (or in force)
  // gives it another meaning. Read per port, not once per stage: a socket
  // accepted while an earlier port of this stage still pointed at its old
  // DFA runs that id, which that port no longer holds as retired, and only
  // a fresh read keeps it from being chosen and rewritten below.
  std::set<uint16_t> live = judge_->liveDfas();
  live.insert(port.dfa);
  live.insert(port.retired.begin(), port.retired.end());
  for (auto it = port.meaning.begin(); it != port.meaning.end();)
    it = live.count(it->first) ? std::next(it) : port.meaning.erase(it);
  std::map<std::string, size_t> bits;
  std::array<bool, kBits> taken{};
  for (const auto& [r, i] : wanted)
    if (auto b = port.bit_of.find(r); b != port.bit_of.end()) bits[r] = b->second, taken[b->second] = true;
  for (const auto& [r, i] : wanted) {
    if (bits.count(r)) continue;
    size_t b = 0;
    for (; b < kBits; ++b) {
      if (taken[b]) continue;
      bool clash = false;
      for (const auto& [id, m] : port.meaning) clash |= !m[b].empty() && m[b] != r;
      if (!clash) break;
    }
    if (b == kBits)
      return (*err = "port " + std::to_string(key.second) + ": no pattern bit is free of a meaning "
                     "open connections still run (they reconnect, then it is)"), false;
    bits[r] = b;
    taken[b] = true;
  }
  size_t width = 0;
  for (const auto& [r, b] : bits) width = std::max(width, b + 1);
  std::vector<http::Pattern> patterns(width, {"$never", http::Anchor::kPrefix});  // holes match nothing
  std::vector<uint32_t> needs(width, 0);
  std::array<std::string, kBits> meaning{};
  for (const auto& [r, b] : bits) {
    const size_t i = wanted.at(r);
    patterns[b] = hp.patterns[i];
    needs[b] = i < hp.needs.size() ? hp.needs[i] : 0;
    meaning[b] = r;
  }
  auto dfa = http::compileDfa(patterns);
  if (auto* e = std::get_if<http::RegexError>(&dfa)) return (*err = e->describe(patterns)), false;
  uint16_t id = freeDfaId(live);
  if (id == 0) return (*err = "every HTTP DFA id is in use"), false;
  if (!judge_->loadDfa(id, std::get<http::Dfa>(dfa), err)) return false;
  last_dfa_ = id;
  // The header DFA and what each bit needs of it, under an id of its own,
  // before the port points at either.
  uint16_t hdr = 0;
  if (!hp.headers.empty()) {
    live.insert(id);
    hdr = freeDfaId(live);
    if (hdr == 0) return (*err = "every HTTP DFA id is in use"), false;
    if (!judge_->loadDfa(hdr, hp.header_dfa, err) || !judge_->loadNeeds(hdr, needs, err)) return false;
    last_dfa_ = hdr;
  }
  port.meaning[id] = meaning;
  port.retired.insert({port.dfa, port.hdr});
  port.bit_of = std::move(bits);
  port.dfa = id;
  port.hdr = hdr;
  return true;
}

bool HttpEnforcer::stage(const compile::Plan& plan, std::string* err) {
  // Before the first port is governed: sockops must see its sockets accepted.
  if (!plan.http.empty() && !attach(err)) return false;
  reclaim();
  for (const auto& [key, hp] : plan.http) {
    if (!loadPatterns(key, hp, err)) return false;
    const Port& port = ports_.at(key);
    // Grants in the stable bits: valid on the DFA in force and the new one.
    std::set<uint32_t> now;
    for (const auto& [src, g] : hp.grants) {
      smik_http_grant out{};
      for (unsigned m = 0; m < SMIK_HTTP_METHODS; ++m)
        for (size_t i = 0; i < hp.patterns.size(); ++i)
          if (abi::test(g.patterns[m], unsigned(i))) {
            auto b = port.bit_of.find(hp.meaning(i));
            if (b != port.bit_of.end()) out.patterns[m] |= abi::httpBit(unsigned(b->second));
          }
      if (!judge_->grant(src, key.first, key.second, out, err)) return false;
      now.insert(src);
    }
    for (uint32_t src : granted_[key])
      if (!now.count(src) && !judge_->revoke(src, key.first, key.second, err)) return false;
    granted_[key] = std::move(now);
    // Last: the port points at the new DFA (one map update per address).
    for (const auto& [pod, ep] : plan.endpoints) {
      if (ep.identity != key.first) continue;
      for (const auto& a : ep.addrs) {
        if (!judge_->govern(a, key.second, key.first, port.dfa, err, port.hdr)) return false;
        governed_.insert({a, key.second});
      }
    }
    ports_.at(key).retired.clear();
  }
  return true;
}

bool HttpEnforcer::finish(const compile::Plan& plan, std::string* err) {
  std::set<std::pair<Addr, uint16_t>> wanted;
  for (const auto& [key, hp] : plan.http)
    for (const auto& [pod, ep] : plan.endpoints)
      if (ep.identity == key.first)
        for (const auto& a : ep.addrs) wanted.insert({a, key.second});
  for (auto it = governed_.begin(); it != governed_.end();) {
    if (wanted.count(*it)) {
      ++it;
      continue;
    }
    if (!judge_->ungovern(it->first, it->second, err)) return false;
    it = governed_.erase(it);
  }
  for (auto it = granted_.begin(); it != granted_.end();) {
    if (plan.http.count(it->first)) {
      ++it;
      continue;
    }
    for (uint32_t src : it->second)
      if (!judge_->revoke(src, it->first.first, it->first.second, err)) return false;
    ports_[it->first].bit_of.clear();  // its meanings stay while sockets run them
    ports_[it->first].dfa = 0;
    ports_[it->first].hdr = 0;
    it = granted_.erase(it);
  }
  return true;
}

}  // namespace smik::datapath
