// What the telemetry store answers: connection counts and latency histograms
// per resource and per edge, over a time window. The SMI TrafficMetrics API,
// Prometheus and gRPC all read through MetricsView.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "bpf/include/smik_abi.h"

namespace smik::telemetry {

// Log-linear histogram in the kernel's layout (smik_hist_bucket); values in µs.
struct Histogram {
  std::array<uint64_t, SMIK_HIST_BUCKETS> buckets{};
  uint64_t count() const;
  // The q-quantile (0 < q <= 1), as the midpoint of its bucket; 0 when empty.
  double quantile(double q) const;
  void add(const Histogram& o);
  void subtract(const Histogram& o);  // o must be an earlier snapshot of this one
  static double bucketLow(uint32_t b);
  static double bucketMid(uint32_t b);
};

// Connection outcomes. At L4 "success" is a TCP connection that reached
// ESTABLISHED; a failure is an attempt that never did.
struct Counts {
  uint64_t success = 0;
  uint64_t refused = 0;  // RST answered the SYN
  uint64_t timeout = 0;  // no answer (or the client gave up first)
  uint64_t policy = 0;   // dropped by a TrafficTarget decision (smik's tc program)
  uint64_t reset = 0;    // established, then reset: not counted as a failure
  Histogram handshake_us;  // client side: connect() -> ESTABLISHED
  Histogram srtt_us;       // smoothed RTT at ESTABLISHED
  // HTTP responses on ports the HTTP judge governs, observed at the server
  // (whichever side asks: both ends of the edge get the server's count).
  uint64_t http_success = 0;  // a final status below 500
  uint64_t http_failure = 0;  // 5xx, as smi-metrics counts failures
  Histogram response_us;      // request fully received -> response's first byte sent
  uint64_t failure() const { return refused + timeout + policy; }
  uint64_t requests() const { return http_success + http_failure; }
  // What every API reports (README "What the numbers mean"): requests when
  // the window holds HTTP responses, else connections; never a sum of both.
  bool countsRequests() const { return requests() > 0; }
  uint64_t reportedSuccess() const { return countsRequests() ? http_success : success; }
  uint64_t reportedFailure() const { return countsRequests() ? http_failure : failure(); }
  // What the latency percentiles are read from, in every API: response
  // latency when requests are reported; else handshakes, else (server side,
  // clients on other nodes) the smoothed RTT; never a blend.
  const Histogram& latency() const {
    if (countsRequests()) return response_us;
    return handshake_us.count() > 0 ? handshake_us : srtt_us;
  }
  bool empty() const { return success == 0 && failure() == 0 && reset == 0 && requests() == 0; }
  void add(const Counts& o);
  void subtract(const Counts& o);
};

// A Kubernetes object the metrics speak of. kind is "Pod", "Deployment",
// "DaemonSet", "StatefulSet", "Namespace" (ns empty) or "TrafficSplit".
struct ResourceRef {
  std::string kind;
  std::string ns;
  std::string name;
  auto operator<=>(const ResourceRef&) const = default;
};

enum class Side {
  kClient,  // observed where the connection started: "to" edges
  kServer,  // observed where it was accepted: "from" edges, and resource totals
};

struct EdgeMetrics {
  ResourceRef peer;  // same kind as the resource asked about
  Side side = Side::kClient;
  Counts counts;
};

// One TrafficSplit backend: connections sent to the split's root (apex)
// Service that went to this backend, observed at the clients.
struct SplitBackendMetrics {
  std::string apex;
  std::string backend;
  uint32_t weight = 0;
  Counts counts;
};

class MetricsView {
 public:
  virtual ~MetricsView() = default;
  // Resources of `kind` in namespace `ns` (all namespaces when ns is empty).
  virtual std::vector<ResourceRef> list(const std::string& kind, const std::string& ns) const = 0;
  virtual bool exists(const ResourceRef& r) const = 0;
  // Everything r accepted (server side), from anyone, in the last window_s seconds.
  virtual Counts inbound(const ResourceRef& r, int window_s) const = 0;
  // r's edges with peers of its own kind: "to" (client side) and "from"
  // (server side), only those that carried traffic in the window.
  virtual std::vector<EdgeMetrics> edges(const ResourceRef& r, int window_s) const = 0;
  // Per backend of a TrafficSplit (r.kind == "TrafficSplit").
  virtual std::vector<SplitBackendMetrics> split(const ResourceRef& r, int window_s) const = 0;
  // Longest window the store keeps, in seconds.
  virtual int maxWindow() const = 0;
  virtual std::chrono::system_clock::time_point now() const = 0;
  // Nodes whose numbers should be in the answers but are not (a view that
  // merges several nodes' stores and could not reach some): the API marks
  // its answer partial. Empty for a single store.
  virtual std::vector<std::string> missingNodes() const { return {}; }
};

}  // namespace smik::telemetry
