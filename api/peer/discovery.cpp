#include "api/peer/discovery.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "agent/base/host_port.h"

namespace smik::peer {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

std::vector<std::string> splitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = std::min(s.find(',', start), s.size());
    out.push_back(trim(s.substr(start, end - start)));
    start = end + 1;
  }
  return out;
}

bool validKey(const std::string& k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/';
  });
}

}  // namespace

bool LabelSelector::parse(const std::string& text, LabelSelector* out, std::string* err) {
  out->terms_.clear();
  if (trim(text).empty()) return true;  // selects everything, as in Kubernetes
  for (const auto& term : splitCommas(text)) {
    std::string key, value;
    Op op;
    if (term.find('(') != std::string::npos || term.find(' ') != std::string::npos) {
      *err = "set-based selector term '" + term + "' is not supported (use k=v, k!=v, k, !k)";
      return false;
    }
    if (auto p = term.find("!="); p != std::string::npos) {
      op = Op::kNotEquals, key = term.substr(0, p), value = term.substr(p + 2);
    } else if (auto p = term.find("=="); p != std::string::npos) {
      op = Op::kEquals, key = term.substr(0, p), value = term.substr(p + 2);
    } else if (auto p = term.find('='); p != std::string::npos) {
      op = Op::kEquals, key = term.substr(0, p), value = term.substr(p + 1);
    } else if (!term.empty() && term[0] == '!') {
      op = Op::kNotExists, key = term.substr(1);
    } else {
      op = Op::kExists, key = term;
    }
    key = trim(key);
    value = trim(value);
    if (!validKey(key)) {
      *err = "bad label selector term '" + term + "'";
      return false;
    }
    out->terms_.emplace_back(key, op, value);
  }
  return true;
}

bool LabelSelector::matches(const model::Labels& labels) const {
  for (const auto& [key, op, value] : terms_) {
    auto it = labels.find(key);
    const bool has = it != labels.end();
    switch (op) {
      case Op::kEquals:
        if (!has || it->second != value) return false;
        break;
      case Op::kNotEquals:
        if (has && it->second == value) return false;
        break;
      case Op::kExists:
        if (!has) return false;
        break;
      case Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

std::vector<PeerAddr> discoverPeers(const model::ClusterState& state, const DiscoveryConfig& cfg) {
  std::set<PeerAddr> out;
  for (const auto& [key, pod_ptr] : state.pods) {
    const auto& pod = *pod_ptr;
    if (pod.meta.ns != cfg.ns || !cfg.selector.matches(pod.meta.labels)) continue;
    if (pod.node_name == cfg.self_node || pod.ips.empty()) continue;
    if (pod.phase == "Succeeded" || pod.phase == "Failed") continue;
    // A hostNetwork pod's status.podIP is its node's address, as we want
    // it. --peer-port is checked to be in 1..65535.
    out.insert({pod.node_name.empty() ? pod.meta.name : pod.node_name.str(),
                joinHostPort(pod.ips.front(), static_cast<uint16_t>(cfg.port))});
  }
  return {out.begin(), out.end()};
}

bool parsePeerList(const std::string& text, std::vector<PeerAddr>* out, std::string* err) {
  out->clear();
  if (trim(text).empty()) return true;
  for (const auto& item : splitCommas(text)) {
    PeerAddr p;
    std::string addr = item;
    if (auto eq = item.find('='); eq != std::string::npos) {
      p.node = trim(item.substr(0, eq));
      addr = trim(item.substr(eq + 1));
      if (p.node.empty()) return (*err = "--peers: empty node name in '" + item + "'"), false;
    }
    if (Result<HostPort> hp = parseHostPort(addr); !hp)
      return (*err = "--peers: '" + item + "' is not [NODE=]HOST:PORT: " + hp.error()), false;
    p.address = addr;
    out->push_back(std::move(p));
  }
  return true;
}

}  // namespace smik::peer
