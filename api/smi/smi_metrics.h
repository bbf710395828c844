// The SMI TrafficMetrics API (metrics.smi-spec.io/v1alpha1; README: Traffic metrics),
// served from the telemetry store. Latency here is L4 (TCP handshake), not
// HTTP response time: see the block comment at the top of smi_metrics.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/telemetry/metrics.h"

namespace smik::api {

inline constexpr const char* kSmiMetricsBase = "/apis/metrics.smi-spec.io/v1alpha1";

// Marks on every TrafficMetrics item of an answer some nodes' numbers are
// missing from (a peer failed or timed out): "true", and the nodes, sorted,
// comma-separated.
inline constexpr const char* kPartialAnnotation = "metrics.smik.io/partial";
inline constexpr const char* kMissingNodesAnnotation = "metrics.smik.io/missing-nodes";

struct SmiResponse {
  int status = 200;
  std::string body;  // JSON: a TrafficMetrics, a list, discovery or a Status
  // Nodes whose numbers are not in body (view.missingNodes(), sorted); the
  // items carry the annotations above and the HTTP answer a Warning header.
  std::vector<std::string> missing_nodes;
};

// What a path under kSmiMetricsBase asks for: the one reading of it that
// authorization (the aggregated API's SubjectAccessReview) and the answer
// both use.
struct SmiTarget {
  enum class Kind { kNotFound, kDiscovery, kList, kObject, kEdges };
  Kind kind = Kind::kNotFound;
  std::string resource;  // the plural, as written: "pods", "namespaces"
  std::string ns;        // empty: every namespace (lists), or a Namespace itself
  std::string name;      // empty for lists
};
SmiTarget parseSmiPath(std::string_view path);

// Answers one GET of `path` (the full request path, query excluded); query_t
// is the value of ?t= (a Go duration), empty when absent. No I/O beyond view.
SmiResponse handleSmiMetrics(const telemetry::MetricsView& view, const std::string& path,
                             const std::string& query_t);

// The view one request is answered from, given its window (?t=, clamped to
// local's longest): e.g. a peer::MergedView that asks the other nodes once
// for this request.
using ViewForRequest = std::function<std::unique_ptr<telemetry::MetricsView>(int window_s)>;
// One GET as every server of the API answers it: from per_request's view,
// or from local alone (this node's kernel, no peer asked) when local_only
// (?local=true) or per_request is empty.
SmiResponse answerSmiRequest(const telemetry::MetricsView& local, const ViewForRequest& per_request,
                             const std::string& path, const std::string& query_t,
                             bool local_only);
// The Warning header of a partial answer (empty when r is whole): RFC 7234
// warn-code 299, as the Kubernetes API server sends its warnings and kubectl
// prints them.
inline std::string partialWarning(const SmiResponse& r) {
  if (r.missing_nodes.empty()) return "";
  std::string nodes;
  for (const auto& n : r.missing_nodes) nodes += (nodes.empty() ? "" : ", ") + n;
  return "299 - \"partial TrafficMetrics: no answer from node(s) " + nodes + "\"";
}
// Exposed for tests and other exporters.

// A Kubernetes Quantity as resource.NewMilliQuantity(milli, DecimalSI).String()
// prints it: "0", "150", "296875m", "1k", "1500".
std::string quantityFromMilli(int64_t milli);
// The window in seconds for ?t=: Go duration syntax rounded up to whole
// seconds; invalid or empty means 30s; clamped to [1, max_window_s].
int windowSeconds(const std::string& query_t, int max_window_s);
// Seconds as Go's time.Duration.String() prints them: "30s", "1m0s", "1h0m5s".
std::string goDuration(int seconds);

}  // namespace smik::api
