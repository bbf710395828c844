// The SMI TrafficMetrics API (metrics.smi-spec.io/v1alpha1, spec.md §3),
// served from the telemetry store. Latency here is L4 (TCP handshake), not
// HTTP response time: see the block comment at the top of smi_metrics.cpp.
#pragma once

#include <cstdint>
#include <string>

#include "agent/telemetry/metrics.h"

namespace httplib {
class Server;
}

namespace smik::api {

inline constexpr const char* kSmiMetricsBase = "/apis/metrics.smi-spec.io/v1alpha1";

struct SmiResponse {
  int status = 200;
  std::string body;  // JSON: a TrafficMetrics, a list, discovery or a Status
};

// Answers one GET of `path` (the full request path, query excluded); query_t
// is the value of ?t= (a Go duration), empty when absent. No I/O beyond view.
SmiResponse handleSmiMetrics(const telemetry::MetricsView& view, const std::string& path,
                             const std::string& query_t);

// Routes GET and HEAD of every path under kSmiMetricsBase to handleSmiMetrics.
// view must outlive the server.
void mountSmiMetrics(httplib::Server& server, const telemetry::MetricsView& view);

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
