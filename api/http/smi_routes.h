// The SMI TrafficMetrics API (api/smi) on an HTTP listener: both listeners
// (the plain --http one and the aggregated API's) answer it this way.
#pragma once

#include "agent/telemetry/metrics.h"
#include "api/smi/smi_metrics.h"

namespace httplib {
struct Response;
}

namespace smik::api {

// Status, body, and for a partial answer the Warning header.
void writeSmiResponse(const SmiResponse& r, httplib::Response& res);
class Router;
// Routes every path under kSmiMetricsBase (canonical: the router's) to
// answerSmiRequest. local outlives the router; local_only: for loopback
// clients only (the plain listener's, unauthenticated).
void mountSmiMetrics(Router& router, const telemetry::MetricsView& local,
                     ViewForRequest per_request = nullptr, bool local_only = false);

}  // namespace smik::api
