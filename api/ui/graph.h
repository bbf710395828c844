// The service graph `smik ui` draws, built from the SMI TrafficMetrics API
// alone: the list of one kind's resources (nodes) and each one's /edges
// (edges), read through whatever answers that API (the API server with the
// user's kubeconfig, or an agent's --http). Nothing here reads anything a
// `kubectl get --raw` of the same paths would not.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace smik::ui {

// One GET of a TrafficMetrics path (query included) and what came back.
struct Fetched {
  int status = 0;     // 0: no HTTP answer (error says why)
  std::string body;   // the JSON, or the error Status
  std::string error;  // transport failure
};
// Called from several threads at once: each call must stand alone.
using Fetch = std::function<Fetched(const std::string& path_and_query)>;

// The kinds a graph can be drawn of (TrafficMetrics edges join resources of
// one kind only): "pod", "deployment", "daemonset", "statefulset", "namespace".
// The plural for the API path, or "" for anything else.
std::string pluralOfKind(const std::string& kind);

// "1m", "5m", "1h", "90s" -> seconds; -1 when it is not a window the API
// takes (Go duration of s/m/h, 1 s to 24 h).
int windowSecondsOf(const std::string& window);

struct GraphRequest {
  std::string kind = "deployment";
  std::string window = "5m";
  std::string ns;    // only this namespace's resources (their peers are drawn too); "" all
  int parallel = 8;  // /edges requests in flight at once
};

// {"kind","window","windowSeconds","nodes":[...],"edges":[...],
//  "namespaces":[...],"missingNodes":[...],"errors":[...]}:
// - a node: {"id": "Kind/ns/name", "kind","namespace","name","inbound":{counts}};
// - an edge: {"id": "from>to", "from","to","side","success","failure",
//   "denied","successRate" (0..1, null without attempts),"perSecond",
//   "p50Ms","p90Ms","p99Ms"}, counted where the connection started (the
//   client's "to" edge), or where it was accepted when only that side saw it;
// - missingNodes: cluster nodes whose numbers are not in the answer (the
//   API's partial marks); errors: requests that failed (an edge list that
//   could not be read leaves that resource's edges out, and says so).
// A failed list of the resources is an error result: {"error": "..."} with
// the HTTP status of the answer (or 502 when there was none) in *status.
nlohmann::json buildGraph(const Fetch& fetch, const GraphRequest& req, int* status);

}  // namespace smik::ui
