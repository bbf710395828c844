// Who the peers are: the other nodes' agents, found in the cluster state as
// the pods of the agent's DaemonSet (namespace + label selector), plus a
// static list (tests, nodes without Kubernetes).
#pragma once

#include <compare>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "agent/model/objects.h"

namespace smik::peer {

struct PeerAddr {
  // The peer's node name; empty when not known in advance (a static
  // "host:port"): the name the peer answers with is used then.
  std::string node;
  std::string address;  // "host:port", "[v6]:port"
  auto operator<=>(const PeerAddr&) const = default;
};

// An equality-based Kubernetes label selector: "k=v", "k==v", "k!=v", "k",
// "!k", joined by commas (all must hold). Set-based terms ("k in (a,b)") are
// rejected.
class LabelSelector {
 public:
  static bool parse(const std::string& text, LabelSelector* out, std::string* err);
  bool matches(const model::Labels& labels) const;

 private:
  enum class Op { kEquals, kNotEquals, kExists, kNotExists };
  std::vector<std::tuple<std::string, Op, std::string>> terms_;
};

struct DiscoveryConfig {
  std::string ns = "smik-system";
  LabelSelector selector;
  int port = 9465;
  std::string self_node;  // this agent's --node: never its own peer
};

// The agent pods of other nodes that have an address: podIP (for a
// hostNetwork agent the node's IP) and port, named by their node. Sorted.
std::vector<PeerAddr> discoverPeers(const model::ClusterState& state, const DiscoveryConfig& cfg);

// "[NODE=]HOST:PORT,..." as --peers takes it.
bool parsePeerList(const std::string& text, std::vector<PeerAddr>* out, std::string* err);

}  // namespace smik::peer
