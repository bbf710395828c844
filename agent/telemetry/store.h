// The metrics store: reads of the kernel's cumulative per-edge counters turned
// into per-interval deltas, attributed to pods when they are read (so an IP
// reused by a later pod never inherits history), and summed over any window
// up to max_window for the SMI TrafficMetrics API and Prometheus.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "agent/base/addr.h"
#include "agent/model/objects.h"
#include "agent/telemetry/metrics.h"
#include "maps/maps.h"

namespace smik::compile {
struct Plan;  // setTopology() keeps its address map to name addresses by
}

namespace smik::telemetry {

class Store : public MetricsView {
 public:
  using Clock = std::chrono::system_clock;
  explicit Store(int max_window_s = 600) : max_window_s_(max_window_s) {}

  // Who is who: pod IPs, pods' owners, namespaces, splits. Called on every
  // recompile; samples taken later are attributed with it.
  // Shares the agent's copy of the state rather than copying its pods: at 50k
  // pods every copy is tens of MiB.
  // The plan is shared too: the store names addresses by an index beside
  // the plan's own sorted address map instead of a copy of it.
  void setTopology(std::shared_ptr<const model::ClusterState> state,
                   std::shared_ptr<const compile::Plan> plan);
  void setTopology(std::shared_ptr<const model::ClusterState> state, const compile::Plan& plan);
  void setTopology(const model::ClusterState& state, const compile::Plan& plan) {
    setTopology(std::make_shared<const model::ClusterState>(state), plan);
  }
  // One reading of the kernel's cumulative counters: connections, and the
  // HTTP judge's responses per server-side edge.
  void sample(const std::vector<maps::ConnEdge>& edges, const std::vector<maps::HttpEdge>& http,
              Clock::time_point now);
  void sample(const std::vector<maps::ConnEdge>& edges, Clock::time_point now) {
    sample(edges, {}, now);
  }

  std::vector<ResourceRef> list(const std::string& kind, const std::string& ns) const override;
  bool exists(const ResourceRef& r) const override;
  Counts inbound(const ResourceRef& r, int window_s) const override;
  std::vector<EdgeMetrics> edges(const ResourceRef& r, int window_s) const override;
  // edges(), plus edges that carry latency samples but no count: the half of
  // a connection this node saw when the other end is on another node (the
  // client's handshake of a connection this node's server did not accept
  // here). Another node's answer completes them; alone they say nothing.
  std::vector<EdgeMetrics> edgeSamples(const ResourceRef& r, int window_s) const;
  std::vector<SplitBackendMetrics> split(const ResourceRef& r, int window_s) const override;
  int maxWindow() const override { return max_window_s_; }
  Clock::time_point now() const override;
  // The cluster state the store names things with (the agent's, shared).
  std::shared_ptr<const model::ClusterState> topology() const {
    std::lock_guard<std::mutex> l(mu_);
    return state_;
  }

  // Owner of a pod as the metrics API names it, for kind (Pod, Deployment,
  // DaemonSet, StatefulSet, Namespace); empty name if it has none of that kind.
  ResourceRef ownerOf(const std::string& pod, const std::string& kind) const;
  // ns/pod of an address, or the address itself when no pod has it.
  std::string nameOf(const Addr& a) const;

  // Cumulative totals since the kernel started counting, by workload pair:
  // what Prometheus scrapes. Labels stay bounded: namespaces and workloads
  // (the pod's Deployment/DaemonSet/StatefulSet, else the pod), never IPs.
  struct WorkloadEdge {
    std::string ns, workload, peer_ns, peer_workload;  // peer: "" when not a pod
    Side side = Side::kClient;
    Counts counts;
  };
  std::vector<WorkloadEdge> totals() const;

  // Cumulative HTTP responses by workload pair (client: source, server:
  // destination), method and status class: what Prometheus scrapes.
  struct HttpWorkloadEdge {
    std::string src_ns, src_workload, dst_ns, dst_workload;  // "" when not a pod
    uint64_t answers[SMIK_HTTP_METHODS][SMIK_HTTP_CLASSES] = {};
    Histogram response_us;
  };
  std::vector<HttpWorkloadEdge> httpTotals() const;

 private:
  // A histogram delta, sparse: most intervals touch a handful of buckets.
  using Sparse = std::vector<std::pair<uint16_t, uint32_t>>;
  struct SideDelta {
    uint64_t success = 0, refused = 0, timeout = 0, policy = 0, reset = 0;
    Sparse handshake, srtt;
    uint64_t http_success = 0, http_failure = 0;
    Sparse response;
    bool empty() const;
  };
  struct EdgeDelta {
    std::string client_pod, server_pod;  // ns/name; empty when the IP is no pod's
    // When the client dialled a Service: that Service and the backend
    // Service (TrafficSplit group) its connection was sent to (ns/name).
    std::string via_service, via_backend;
    SideDelta client, server;
  };
  struct Interval {
    Clock::time_point t;
    std::vector<EdgeDelta> edges;
    // Indexes into edges by client pod and by server pod: a query touches
    // only the edges of the pods it asks about.
    std::unordered_map<std::string, std::vector<uint32_t>> by_client, by_server;
  };
  std::vector<std::string> podsOf(const ResourceRef& r) const;  // caller holds mu_
  std::vector<EdgeMetrics> edgesOf(const ResourceRef& r, int window_s, bool samples_only_too) const;

  static void addTo(Counts* c, const SideDelta& d);
  // One kernel edge's cumulative counts into workload totals (caller holds mu_).
  using WorkloadKey = std::tuple<std::string, std::string, std::string, std::string, Side>;
  void addTotals(const std::vector<uint8_t>& raw, const smik_conn_stats& s,
                 std::map<WorkloadKey, Counts>* agg) const;
  std::vector<const Interval*> window(int window_s) const;  // caller holds mu_
  // (namespace, workload) of a pod for Prometheus labels (caller holds mu_).
  std::pair<std::string, std::string> workloadOf(const std::string& pod) const;
  using HttpWorkloadKey = std::tuple<std::string, std::string, std::string, std::string>;
  void addHttpTotals(const std::vector<uint8_t>& raw, const smik_http_edge_stats& s,
                     std::map<HttpWorkloadKey, HttpWorkloadEdge>* agg) const;

  int max_window_s_;
  mutable std::mutex mu_;
  // Pod keys ("ns/name") by address. As a map of strings it cost 100 bytes
  // a pod (5 MiB at 50k pods); as a sorted vector of (address, pointer to
  // the key), 32; now 4: the index of the pod (in the state's pods) that
  // names each address of the plan's own sorted address map, which holds
  // every pod's address but those the compiler leaves out (a pod not
  // holding its address, one over capacity): those few are kept aside,
  // address and index.
  class PodsByIp {
   public:
    // entries: each pod address with the index of its pod in state->pods.
    void assign(std::shared_ptr<const model::ClusterState> state,
                std::shared_ptr<const compile::Plan> plan,
                std::vector<std::pair<Addr, uint32_t>> entries);
    const std::string& find(const Addr& a) const;  // "" when no pod's

   private:
    static constexpr uint32_t kNone = ~0u;
    const std::string& keyAt(uint32_t i) const;
    std::shared_ptr<const model::ClusterState> state_;
    std::shared_ptr<const compile::Plan> plan_;
    std::vector<uint32_t> named_;  // parallel to plan_->ip_identity; kNone: no pod's
    std::vector<std::pair<Addr, uint32_t>> aside_;  // sorted; not in the plan's map
  };
  PodsByIp pod_by_ip_;
  std::shared_ptr<const model::ClusterState> state_ = std::make_shared<const model::ClusterState>();
  std::map<std::string, std::string> namespaces_;
  struct ServiceRoute {
    std::string service;                                          // ns/name
    std::map<std::pair<Addr, uint16_t>, std::string> group_of;  // endpoint -> backend
  };
  std::map<uint32_t, ServiceRoute> routes_;  // by svc_id
  std::map<std::vector<uint8_t>, smik_conn_stats> last_;  // cumulative, by raw key
  std::map<WorkloadKey, Counts> evicted_;  // what edges the kernel dropped had counted
  std::map<std::vector<uint8_t>, smik_http_edge_stats> last_http_;  // cumulative, by raw key
  std::map<HttpWorkloadKey, HttpWorkloadEdge> evicted_http_;
  std::deque<Interval> intervals_;
  Clock::time_point last_sample_{};
};

}  // namespace smik::telemetry
