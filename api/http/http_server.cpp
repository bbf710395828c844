#include "api/http/http_server.h"

#include <httplib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/base/proc_stat.h"
#include "api/http/smi_routes.h"
#include "api/proto/json.h"
#include "api/proto/status.h"
#include "api/smi/merged_view.h"
#include "api/smi/smi_metrics.h"

namespace smik::api {

std::string statusJson(const AgentStatus& s) { return toJson(statusReply(s)); }

namespace {

// "name: help; name: help", for a metric's HELP line.
template <size_t N>
std::string factsHelp(const abi::Fact (&table)[N]) {
  std::string out;
  for (const abi::Fact& f : table) out += std::string(out.empty() ? "" : "; ") + f.name + ": " + f.help;
  return out;
}

// One sample per entry of table: name{label="entry name"} counts[entry.id].
template <size_t N>
std::string factSamples(const std::string& name, const char* label, const abi::Fact (&table)[N],
                        const std::vector<uint64_t>& counts) {
  std::string out;
  for (const abi::Fact& f : table)
    if (f.id < counts.size())
      out += name + "{" + label + "=\"" + f.name + "\"} " + std::to_string(counts[f.id]) + "\n";
  return out;
}

}  // namespace

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
  std::vector<uint64_t> verdict_packets, verdict_bytes;
  for (const auto& c : s.reasons) {
    verdict_packets.push_back(c.packets);
    verdict_bytes.push_back(c.bytes);
  }
  metric("smik_packets_total",
         "Packets seen by the tc programs, by verdict (" + factsHelp(abi::kReasons) + ").",
         "counter", factSamples("smik_packets_total", "verdict", abi::kReasons, verdict_packets));
  metric("smik_bytes_total", "Bytes seen by the tc programs, by verdict.", "counter",
         factSamples("smik_bytes_total", "verdict", abi::kReasons, verdict_bytes));
  metric("smik_conntrack_events_total",
         "Conntrack events (" + factsHelp(abi::kCtCounters) +
             "; swept: expired entries the agent deleted).",
         "counter",
         factSamples("smik_conntrack_events_total", "event", abi::kCtCounters, s.ct_stats) +
             "smik_conntrack_events_total{event=\"swept\"} " + std::to_string(s.ct_swept_total) +
             "\n");
  metric("smik_deny_answers_total",
         "Answers to denied new flows, --deny-response reject (" +
             factsHelp(abi::kAnswerCounters) + ").",
         "counter",
         factSamples("smik_deny_answers_total", "event", abi::kAnswerCounters, s.answer_stats));
  metric("smik_socket_events_total",
         "Service translation by the socket programs (" + factsHelp(abi::kSockCounters) + ").",
         "counter", factSamples("smik_socket_events_total", "event", abi::kSockCounters, s.sock_stats));
  metric("smik_http_requests_total",
         "HTTP/1.x requests judged in the kernel (--http-rules=enforce), by verdict (" +
             factsHelp(abi::kHttpCounters) + ").",
         "counter", factSamples("smik_http_requests_total", "verdict", abi::kHttpCounters, s.http_stats));
  // "ready" counts: a node without HTTP rules runs none of the judge's
  // programs, and has nothing for them to judge (HttpEnforcer::open).
  const bool judge = s.http_judge == "attached" || s.http_judge.rfind("ready", 0) == 0;
  metric("smik_http_judge_attached",
         "1 if the kernel's HTTP request judge is attached (--http-rules=enforce), or loaded and ready "
         "to attach with the first port an HTTP rule governs.",
         "gauge", std::string("smik_http_judge_attached ") + (judge ? "1" : "0") + "\n");
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
  // The seconds histogram of h with these labels, into out.
  auto seconds = [&](const std::string& name, const std::string& labels,
                     const telemetry::Histogram& h, std::string* out) {
    double sum_s = 0;
    std::vector<uint64_t> at(std::size(kLe), 0);
    for (uint32_t b = 0; b < SMIK_HIST_BUCKETS; b++) {
      uint64_t n = h.buckets[b];
      if (!n) continue;
      double s = telemetry::Histogram::bucketMid(b) / 1e6;
      sum_s += s * n;
      for (size_t le = 0; le < std::size(kLe); le++)
        if (s <= kLe[le]) at[le] += n;
    }
    for (size_t le = 0; le < std::size(kLe); le++) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", kLe[le]);
      *out += name + "_bucket{" + labels + ",le=\"" + bound + "\"} " + std::to_string(at[le]) + "\n";
    }
    *out += name + "_bucket{" + labels + ",le=\"+Inf\"} " + std::to_string(h.count()) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9f", sum_s);
    *out += name + "_sum{" + labels + "} " + sum + "\n";
    *out += name + "_count{" + labels + "} " + std::to_string(h.count()) + "\n";
  };
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
    seconds("smik_tcp_handshake_seconds", labels, c.handshake_us, &hist);
  }
  // HTTP responses (ports the HTTP judge governs), counted at the server.
  // Not smik_http_requests_total: that name already counts the judge's
  // verdicts by `verdict`, and one family with two label sets would make
  // every sum() over it count a request twice. Bounded labels: workloads,
  // the method (nine names and "other") and the status class, never a path.
  std::string responses = "# HELP smik_http_responses_total HTTP responses by source and "
                          "destination workload, request method and status class (1xx..5xx; "
                          "other: a status outside them), counted at the server.\n"
                          "# TYPE smik_http_responses_total counter\n";
  std::string latency = "# HELP smik_http_response_seconds HTTP response latency: the "
                        "request fully received to the first byte of its response sent, at the "
                        "server's socket.\n"
                        "# TYPE smik_http_response_seconds histogram\n";
  static const char* kClasses[SMIK_HTTP_CLASSES] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (const auto& e : store.httpTotals()) {
    std::string labels = "source_namespace=\"" + escapeLabel(e.src_ns) + "\",source_workload=\"" +
                         escapeLabel(e.src_workload) + "\",destination_namespace=\"" +
                         escapeLabel(e.dst_ns) + "\",destination_workload=\"" +
                         escapeLabel(e.dst_workload) + "\"";
    for (int m = 0; m < SMIK_HTTP_METHODS; m++)
      for (int c = 0; c < SMIK_HTTP_CLASSES; c++)
        if (e.answers[m][c])
          responses += "smik_http_responses_total{" + labels + ",method=\"" + abi::kHttpMethods[m] +
                       "\",code_class=\"" + kClasses[c] + "\"} " + std::to_string(e.answers[m][c]) +
                       "\n";
    seconds("smik_http_response_seconds", labels, e.response_us, &latency);
  }
  return conns + hist + responses + latency;
}

std::string prometheusProcess() {
  // The names and meanings of the Prometheus client libraries' process
  // collector, so dashboards and alerts written for any exporter's memory
  // and CPU work on the agent unchanged.
  long pages_virtual = 0, pages_resident = 0;
  std::ifstream statm("/proc/self/statm");
  statm >> pages_virtual >> pages_resident;
  const long page = sysconf(_SC_PAGESIZE);
  const double cpu_s = processCpuSeconds();
  char cpu[32];
  std::snprintf(cpu, sizeof cpu, "%.2f", cpu_s);
  return "# HELP process_resident_memory_bytes Resident memory size of the agent in bytes.\n"
         "# TYPE process_resident_memory_bytes gauge\n"
         "process_resident_memory_bytes " + std::to_string(pages_resident * page) + "\n"
         "# HELP process_virtual_memory_bytes Virtual memory size of the agent in bytes.\n"
         "# TYPE process_virtual_memory_bytes gauge\n"
         "process_virtual_memory_bytes " + std::to_string(pages_virtual * page) + "\n"
         "# HELP process_cpu_seconds_total User and system CPU time the agent spent, in seconds.\n"
         "# TYPE process_cpu_seconds_total counter\n"
         "process_cpu_seconds_total " + cpu + "\n";
}

HttpSources sourcesOf(Agent& agent) {
  return {[&agent] { return agent.ready(); }, [&agent] { return agent.notReadyReason(); },
          [&agent] { return agent.status(); }, &agent.metrics(), agent.nodeConfig().node_name};
}

Router httpRoutes(const HttpSources& sources, api::PeerFanout* fanout) {
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
                                  prometheusProcess() +
                                  (fanout ? fanout->prometheusText() : ""),
                              "text/plain; version=0.0.4");
              }});
  router.add({"/status",
              [sources](const RoutedRequest&, httplib::Response& r) {
                r.set_content(statusJson(sources.status()), "application/json");
              },
              false, /*local_only=*/true});
  mountSmiMetrics(router, *sources.metrics,
                  fanout ? mergedViews(*fanout, *sources.metrics, sources.node) : nullptr,
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
