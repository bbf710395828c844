#include "api/http/http_server.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "api/http/smi_routes.h"
#include "api/smi/smi_metrics.h"
#include "api/smi/merged_view.h"

namespace smik::api {

namespace {
const char* kReasonNames[] = {"forwarded", "policy", "spoofed", "malformed", "unsupported",
                              "fragment"};
// index = SMIK_CT_*
const char* kCtNames[] = {"created", "insertFailed", "rebuilt", "revoked", "identityChanged",
                          "closed", "fragmentsTracked"};
const char* kCtMetric[] = {"created", "insert_failed", "rebuilt", "revoked", "identity_changed",
                           "closed", "fragments_tracked"};

nlohmann::json mapsJson(const std::vector<maps::MapUsage>& usage) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& u : usage)
    out.push_back({{"name", u.def.name},
                   {"type", maps::mapTypeName(u.def.type)},
                   {"entries", u.entries},
                   {"maxEntries", u.def.max_entries},
                   {"bytes", u.bytes}});
  return out;
}
}

std::string statusJson(const AgentStatus& s) {
  nlohmann::json j;
  j["ready"] = s.ready;
  j["source"] = s.source;
  if (!s.not_ready.empty()) j["notReady"] = s.not_ready;
  if (!s.degraded.empty()) j["degraded"] = s.degraded;
  if (!s.collections.empty()) j["collections"] = s.collections;
  j["node"] = s.node;
  j["accessMode"] = s.access_mode;
  j["hostTraffic"] = s.host_traffic;
  j["attachMode"] = s.attach_mode;
  j["policyGeneration"] = s.policy_generation;
  j["policyEntries"] = s.policy_entries;
  j["identities"] = s.identities;
  j["ipEntries"] = s.ip_entries;
  j["endpoints"] = s.endpoints;
  j["rejectedObjectsTotal"] = s.rejected_objects_total;
  j["rejected"] = s.rejected;
  j["diagnostics"] = s.diagnostics;
  j["errors"] = s.errors;
  j["appliesTotal"] = s.applies_total;
  j["lastApplyMs"] = s.last_apply_ms;
  nlohmann::json verdicts = nlohmann::json::object();
  for (size_t i = 0; i < s.reasons.size() && i < std::size(kReasonNames); i++)
    verdicts[kReasonNames[i]] = {{"packets", s.reasons[i].packets}, {"bytes", s.reasons[i].bytes}};
  j["verdicts"] = verdicts;
  j["services"] = s.services;
  j["socketPrograms"] = s.socket_programs;
  const char* sock_names[] = {"translated", "noBackend", "reversed", "stale"};
  nlohmann::json sock = nlohmann::json::object();
  for (size_t i = 0; i < s.sock_stats.size() && i < std::size(sock_names); i++)
    sock[sock_names[i]] = s.sock_stats[i];
  j["connect"] = sock;
  nlohmann::json ct = nlohmann::json::object();
  for (size_t i = 0; i < s.ct_stats.size() && i < std::size(kCtNames); i++) ct[kCtNames[i]] = s.ct_stats[i];
  ct["swept"] = s.ct_swept_total;
  j["conntrack"] = ct;
  nlohmann::json edges = nlohmann::json::array();
  for (const auto& e : s.edges)
    edges.push_back({{"source", e.source}, {"destination", e.destination}, {"proto", e.proto},
                     {"port", e.port}, {"flowsAllowed", e.flows_allowed},
                     {"packetsDenied", e.packets_denied}});
  j["edges"] = edges;
  j["edgesTotal"] = s.edges_total;
  j["notEnforced"] = s.not_enforced;
  j["maps"] = mapsJson(s.maps);
  j["possibleCpus"] = s.possible_cpus;
  return j.dump(2) + "\n";
}

std::string prometheusText(const AgentStatus& s) {
  std::string out;
  auto metric = [&](const std::string& name, const std::string& help, const std::string& type,
                    const std::string& body) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + body;
  };
  metric("smik_ready", "1 once the first complete policy is enforced.", "gauge",
         "smik_ready " + std::to_string(s.ready ? 1 : 0) + "\n");
  metric("smik_rejected_objects_total", "Manifest objects rejected as invalid.", "counter",
         "smik_rejected_objects_total " + std::to_string(s.rejected_objects_total) + "\n");
  metric("smik_policy_applies_total", "Policy applications to the kernel.", "counter",
         "smik_policy_applies_total " + std::to_string(s.applies_total) + "\n");
  char apply_s[32];
  std::snprintf(apply_s, sizeof apply_s, "%.6f", s.last_apply_ms / 1000);
  metric("smik_policy_apply_duration_seconds",
         "How long the last change took from compile to the kernel maps.", "gauge",
         std::string("smik_policy_apply_duration_seconds ") + apply_s + "\n");
  metric("smik_policy_generation", "Generation of the policy in force (moves on every swap).",
         "gauge", "smik_policy_generation " + std::to_string(s.policy_generation) + "\n");
  metric("smik_services", "Service ports translated at connect().", "gauge",
         "smik_services " + std::to_string(s.services) + "\n");
  metric("smik_policy_entries", "Entries in the policy generation in force.", "gauge",
         "smik_policy_entries " + std::to_string(s.policy_entries) + "\n");
  metric("smik_endpoints", "Local meshed pods with tc programs attached.", "gauge",
         "smik_endpoints " + std::to_string(s.endpoints.size()) + "\n");
  std::string pk, by;
  for (size_t i = 0; i < s.reasons.size() && i < std::size(kReasonNames); i++) {
    pk += std::string("smik_packets_total{verdict=\"") + kReasonNames[i] + "\"} " +
          std::to_string(s.reasons[i].packets) + "\n";
    by += std::string("smik_bytes_total{verdict=\"") + kReasonNames[i] + "\"} " +
          std::to_string(s.reasons[i].bytes) + "\n";
  }
  metric("smik_packets_total", "Packets seen by the tc programs, by verdict.", "counter", pk);
  metric("smik_bytes_total", "Bytes seen by the tc programs, by verdict.", "counter", by);
  std::string ct;
  for (size_t i = 0; i < s.ct_stats.size() && i < std::size(kCtMetric); i++)
    ct += std::string("smik_conntrack_events_total{event=\"") + kCtMetric[i] + "\"} " +
          std::to_string(s.ct_stats[i]) + "\n";
  ct += "smik_conntrack_events_total{event=\"swept\"} " + std::to_string(s.ct_swept_total) + "\n";
  metric("smik_conntrack_events_total",
         "Conntrack entries created, not inserted (table full), rebuilt, revoked, dropped for "
         "a changed identity, closed, swept when expired; first fragments tracked.",
         "counter", ct);
  metric("smik_pods_not_enforced",
         "Local meshed pods without their tc programs (no interface yet, a failed write, a full "
         "endpoints map).",
         "gauge", "smik_pods_not_enforced " + std::to_string(s.not_enforced.size()) + "\n");
  std::string entries, max, bytes;
  for (const auto& u : s.maps) {
    std::string label = "{map=\"" + u.def.name + "\"} ";
    entries += "smik_map_entries" + label + std::to_string(u.entries) + "\n";
    max += "smik_map_max_entries" + label + std::to_string(u.def.max_entries) + "\n";
    bytes += "smik_map_bytes" + label + std::to_string(u.bytes) + "\n";
  }
  metric("smik_map_entries", "Entries in each BPF map (arrays: their size).", "gauge", entries);
  metric("smik_map_max_entries", "Capacity of each BPF map.", "gauge", max);
  metric("smik_map_bytes",
         "Kernel memory of each BPF map when full, at this node's possible CPUs (README.md: "
         "Capacity and kernel memory).",
         "gauge", bytes);
  return out;
}

namespace {

std::string escapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string prometheusTelemetry(const telemetry::Store& store) {
  // Coarse seconds buckets for a standard Prometheus histogram, filled from
  // the kernel's log-linear one by bucket midpoint.
  static const double kLe[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                               0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
  std::string conns = "# HELP smik_tcp_connections_total TCP connection attempts by outcome, "
                      "observed at the client (side=client) or the server (side=server).\n"
                      "# TYPE smik_tcp_connections_total counter\n";
  std::string hist = "# HELP smik_tcp_handshake_seconds TCP handshake time (connect() to "
                     "ESTABLISHED) measured at the client.\n"
                     "# TYPE smik_tcp_handshake_seconds histogram\n";
  for (const auto& e : store.totals()) {
    std::string labels = "namespace=\"" + escapeLabel(e.ns) + "\",workload=\"" +
                         escapeLabel(e.workload) + "\",peer_namespace=\"" +
                         escapeLabel(e.peer_ns) + "\",peer_workload=\"" +
                         escapeLabel(e.peer_workload) + "\",side=\"" +
                         (e.side == telemetry::Side::kClient ? "client" : "server") + "\"";
    const auto& c = e.counts;
    for (auto [outcome, n] : {std::pair<const char*, uint64_t>{"success", c.success},
                              {"refused", c.refused}, {"timeout", c.timeout},
                              {"policy", c.policy}, {"reset", c.reset}}) {
      conns += "smik_tcp_connections_total{" + labels + ",outcome=\"" + outcome + "\"} " +
               std::to_string(n) + "\n";
    }
    if (e.side != telemetry::Side::kClient) continue;
    uint64_t total = c.handshake_us.count();
    double sum_s = 0;
    size_t le = 0;
    std::vector<uint64_t> at(std::size(kLe), 0);
    for (uint32_t b = 0; b < SMIK_HIST_BUCKETS; b++) {
      uint64_t n = c.handshake_us.buckets[b];
      if (!n) continue;
      double s = telemetry::Histogram::bucketMid(b) / 1e6;
      sum_s += s * n;
      for (le = 0; le < std::size(kLe); le++)
        if (s <= kLe[le]) at[le] += n;
    }
    for (le = 0; le < std::size(kLe); le++) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", kLe[le]);
      hist += "smik_tcp_handshake_seconds_bucket{" + labels + ",le=\"" + bound + "\"} " +
              std::to_string(at[le]) + "\n";
    }
    hist += "smik_tcp_handshake_seconds_bucket{" + labels + ",le=\"+Inf\"} " +
            std::to_string(total) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9f", sum_s);
    hist += "smik_tcp_handshake_seconds_sum{" + labels + "} " + sum + "\n";
    hist += "smik_tcp_handshake_seconds_count{" + labels + "} " + std::to_string(total) + "\n";
  }
  return conns + hist;
}

HttpSources sourcesOf(Agent& agent) {
  return {[&agent] { return agent.ready(); }, [&agent] { return agent.notReadyReason(); },
          [&agent] { return agent.status(); }, &agent.metrics(), agent.nodeConfig().node_name};
}

Router httpRoutes(const HttpSources& sources, peer::PeerFanout* fanout) {
  Router router;
  router.add({"/healthz",
              [](const RoutedRequest&, httplib::Response& r) { r.set_content("ok\n", "text/plain"); },
              /*prefix=*/false, /*local_only=*/false, /*probe=*/true});
  router.add({"/readyz",
              [sources](const RoutedRequest&, httplib::Response& r) {
                const bool ready = sources.ready();
                r.status = ready ? 200 : 503;
                r.set_content(ready ? "ready\n" : "not ready: " + sources.not_ready_reason() + "\n",
                              "text/plain");
              },
              false, false, /*probe=*/true});
  router.add({"/metrics", [sources, fanout](const RoutedRequest&, httplib::Response& r) {
                r.set_content(prometheusText(sources.status()) +
                                  prometheusTelemetry(*sources.metrics) +
                                  (fanout ? fanout->prometheusText() : ""),
                              "text/plain; version=0.0.4");
              }});
  router.add({"/status",
              [sources](const RoutedRequest&, httplib::Response& r) {
                r.set_content(statusJson(sources.status()), "application/json");
              },
              false, /*local_only=*/true});
  mountSmiMetrics(router, *sources.metrics,
                  fanout ? peer::mergedViews(*fanout, *sources.metrics, sources.node) : nullptr,
                  /*local_only=*/true);
  return router;
}

bool HttpServer::start(const std::string& addr, Agent* agent, std::string* err) {
  return start(addr, sourcesOf(*agent), err);
}

bool HttpServer::start(const std::string& addr, const HttpSources& sources, std::string* err,
                       ListenLimits limits) {
  listener_ = std::make_unique<Listener>(httpRoutes(sources, fanout_), limits);
  if (listener_->start(addr, err)) return true;
  *err = "--http: " + *err;
  listener_.reset();
  return false;
}

void HttpServer::stop() {
  if (listener_) listener_->stop();
}

HttpServer::HttpServer() = default;
HttpServer::~HttpServer() { stop(); }

}  // namespace smik::api
