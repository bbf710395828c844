// Cluster-wide TrafficMetrics: one node's kernel sees only its half of a
// connection (the client's side where the client runs, the server's side
// where the server runs), so the agent that receives an SMI request asks
// every other node's agent the same question and merges the raw answers
// (counts and histogram buckets, never percentiles) before the SMI API
// renders them. Nothing here speaks gRPC: PeerFanout is the seam (GrpcFanout in
// api/peer/peer_grpc.h is the real one, tests use fakes).
#pragma once

#include <compare>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/telemetry/metrics.h"
#include "agent/telemetry/store.h"
#include "api/smi/smi_metrics.h"

namespace smik::api {

// name empty: every resource of kind in ns (all namespaces when ns is empty),
// each with its inbound counts or, for a TrafficSplit, its backends. name set:
// that resource with everything the SMI API may ask of it.
struct MetricsQuery {
  std::string kind;  // MetricsView kinds: "Pod", ..., "Namespace", "TrafficSplit"
  std::string ns;
  std::string name;
  int window_s = 30;
  auto operator<=>(const MetricsQuery&) const = default;
};

struct ResourceAnswer {
  telemetry::ResourceRef ref;
  bool exists = false;
  telemetry::Counts inbound;
  // Including edges with latency samples and no count (Store::edgeSamples):
  // they complete another node's half of the same connections.
  std::vector<telemetry::EdgeMetrics> edges;
  std::vector<telemetry::SplitBackendMetrics> split;
};

struct NodeAnswer {
  std::string node;
  int window_s = 0;
  std::vector<ResourceAnswer> resources;
};

// What this node's store knows for q: what a peer sends back, and the local
// share of a merge.
NodeAnswer answerQuery(const telemetry::Store& store, const std::string& node,
                       const MetricsQuery& q);

struct PeerResult {
  std::string node;  // the answering agent's --node; the configured name on failure
  bool ok = false;
  std::string error;  // why not ok
  NodeAnswer answer;  // when ok
};

class PeerFanout {
 public:
  virtual ~PeerFanout() = default;
  // Asks every peer q, in parallel, each within its own timeout: one result
  // per peer, never blocking longer than the slowest timeout.
  virtual std::vector<PeerResult> query(const MetricsQuery& q) = 0;
  // Prometheus text of the fan-out's own counters.
  virtual std::string prometheusText() const { return ""; }
};

// This node's store merged with every peer's answers, for one SMI request:
// each distinct question is fanned out once and its answers reused by every
// later call (a list of 50k pods asks the peers once, not 50k times). Not
// thread-safe: one MergedView per request.
//
// Merging: counts and histograms add (percentiles are computed by the API
// from the merged histogram), lists are unions, edges with the same peer
// resource and side add, TrafficSplit backends with the same name add. A peer
// that fails or times out is left out and named by missingNodes().
class MergedView : public telemetry::MetricsView {
 public:
  // window_s: the request's window, which list() (it takes none) fetches
  // each resource's numbers for.
  MergedView(const telemetry::Store& local, std::string node, PeerFanout& peers, int window_s);

  std::vector<telemetry::ResourceRef> list(const std::string& kind,
                                           const std::string& ns) const override;
  bool exists(const telemetry::ResourceRef& r) const override;
  telemetry::Counts inbound(const telemetry::ResourceRef& r, int window_s) const override;
  std::vector<telemetry::EdgeMetrics> edges(const telemetry::ResourceRef& r,
                                            int window_s) const override;
  std::vector<telemetry::SplitBackendMetrics> split(const telemetry::ResourceRef& r,
                                                    int window_s) const override;
  int maxWindow() const override { return local_.maxWindow(); }
  std::chrono::system_clock::time_point now() const override { return local_.now(); }
  std::vector<std::string> missingNodes() const override {
    return {missing_.begin(), missing_.end()};
  }

 private:
  // Every node's answer to one query: this node's first, then each peer
  // that answered (a node counted once, never this node again).
  using Answers = std::vector<NodeAnswer>;
  const Answers& fetch(const MetricsQuery& q) const;
  // r's entry in each node's answer (nodes without one are left out), from a
  // cached query that covers r: its own, or a list of its kind. need_edges:
  // only r's own query has edges.
  std::vector<const ResourceAnswer*> answersFor(const telemetry::ResourceRef& r, int window_s,
                                                bool need_edges) const;

  const telemetry::Store& local_;
  std::string node_;
  PeerFanout& peers_;
  int window_s_;
  mutable std::map<MetricsQuery, Answers> cache_;
  mutable std::set<std::string> missing_;
};

// For the SMI API servers (api::mountSmiMetrics, answerSmiRequest): a
// MergedView of local and fanout per request. Both outlive what it returns.
ViewForRequest mergedViews(PeerFanout& fanout, const telemetry::Store& local,
                                std::string node);

}  // namespace smik::api
