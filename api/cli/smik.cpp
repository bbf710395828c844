// smik: the operator's CLI. explain and policy run the agent's own compiler on
// a manifest directory (--manifests, offline) or ask a running agent; status,
// metrics, events and map dump ask the agent over its gRPC socket; ui serves
// the service graph of the TrafficMetrics API on 127.0.0.1.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/base/host_port.h"
#include "agent/compile/explain.h"
#include "agent/source/kube_config.h"
#include "agent/source/kube_http.h"
#include "agent/source/manifest_dir.h"
#include "api/proto/explain.h"
#include "api/proto/json.h"
#include "api/proto/policy.h"
#include "api/ui/ui_server.h"
#include "bpf/include/smik_abi.h"
#include "smik/v1/smik.grpc.pb.h"

using namespace smik;
namespace pb = smik::v1;

namespace {

constexpr const char* kDefaultSocket = "/run/smik/agent.sock";

// ---- talking to the agent ------------------------------------------------------

struct Conn {
  std::string socket = kDefaultSocket;
  std::string output = "text";
};

void addConn(CLI::App* cmd, Conn& c) {
  cmd->add_option("--grpc", c.socket, "agent's gRPC socket")->capture_default_str();
  cmd->add_option("-o,--output", c.output, "text | json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
}

std::unique_ptr<pb::Agent::Stub> stub(const Conn& c) {
  std::string target = c.socket.rfind("unix:", 0) == 0 ? c.socket : "unix:" + c.socket;
  return pb::Agent::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
}

void withDeadline(grpc::ClientContext* ctx, int seconds) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

// Exit status 2 for a question the agent could not answer as asked (as the
// offline commands do for bad input), 1 when there was no agent to ask.
int rpcFailed(const Conn& c, const grpc::Status& st) {
  switch (st.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
      std::cerr << st.error_message() << "\n";
      return 2;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      std::cerr << "no agent answering on " << c.socket << ": " << st.error_message() << "\n";
      return 1;
    default:
      std::cerr << "agent: " << st.error_message() << "\n";
      return 1;
  }
}

// ---- offline: a manifest directory -------------------------------------------------

struct Common {
  Conn conn;
  std::string manifests;
  std::string mode = "strict";
  std::string http_rules = "enforce";
  std::string host_traffic = "allow";
  std::string cluster_domain = kDefaultClusterDomain;
  bool mesh_all = false;
  std::vector<CLI::Option*> offline_only;  // meaningless when the agent answers
};

void addCommon(CLI::App* cmd, Common& c) {
  cmd->add_option("--manifests", c.manifests,
                  "manifest directory (offline); without it the running agent answers");
  c.offline_only.push_back(
      cmd->add_option("--access-mode", c.mode,
                      "with --manifests: strict | permissive | per-destination")
          ->capture_default_str());
  c.offline_only.push_back(
      cmd->add_option("--http-rules", c.http_rules, "with --manifests: enforce | deny | allow-tcp")
          ->capture_default_str());
  c.offline_only.push_back(
      cmd->add_option("--host-traffic", c.host_traffic, "with --manifests: allow | policy")
          ->capture_default_str());
  c.offline_only.push_back(
      cmd->add_flag("--mesh-all", c.mesh_all, "with --manifests: mesh every pod"));
  c.offline_only.push_back(
      cmd->add_option("--cluster-domain", c.cluster_domain,
                      "with --manifests: the cluster's DNS domain (NAME.NS.svc.DOMAIN in TrafficSplits)")
          ->capture_default_str());
  addConn(cmd, c.conn);
}

// The agent judges with its own configuration: say so instead of silently
// dropping what the user asked for.
void noteOfflineOnly(const Common& c) {
  for (const auto* o : c.offline_only)
    if (o->count() > 0)
      std::cerr << "note: " << o->get_name()
                << " applies to --manifests only; the agent uses its own\n";
}

bool load(const Common& c, model::ClusterState* state, compile::NodeConfig* node) {
  source::ManifestDir dir(c.manifests);
  dir.refresh();
  for (const auto& e : dir.errors()) std::cerr << "rejected: " << e.str() << "\n";
  if (!compile::parseAccessMode(c.mode, &node->access_mode)) {
    std::cerr << "unknown access mode " << c.mode << "\n";
    return false;
  }
  if (!compile::parseHostTraffic(c.host_traffic, &node->host_traffic)) {
    std::cerr << "unknown host traffic setting " << c.host_traffic << " (allow or policy)\n";
    return false;
  }
  node->mesh_all = c.mesh_all;
  node->cluster_domain = c.cluster_domain;
  if (!compile::parseHttpRules(c.http_rules, &node->http_rules))
    node->http_rules = compile::HttpRulesAtL4::kGrantNothing;
  *state = dir.state();
  return true;
}

// ---- explain ---------------------------------------------------------------------

// Offline or from the agent, the same reply and the same printing. service:
// the "ns/name" asked about, empty for a pod.
int printExplanation(const std::string& output, const pb::ExplainReply& r,
                     const std::string& service) {
  if (output == "json") {
    std::cout << api::toJson(r);
    return 0;
  }
  if (service.empty()) {
    std::cout << r.summary() << "\n";
    for (const auto& d : r.details()) std::cout << "  - " << d << "\n";
    return 0;
  }
  for (const auto& route : r.services()) {
    std::cout << service << " " << route.cluster_ip() << ": "
              << (route.traffic_split().empty() ? "no TrafficSplit, even over ready endpoints"
                                                : "TrafficSplit " + route.traffic_split())
              << "\n";
    if (route.groups().empty()) std::cout << "  no ready endpoint: connections are not translated\n";
    for (const auto& g : route.groups()) {
      std::printf("  %5.1f%%  %s (weight %u)\n", g.share() * 100, g.service().c_str(), g.weight());
      for (const auto& ep : g.endpoints())
        std::printf("          %5.1f%%  %s %s\n", ep.probability() * 100, ep.address().c_str(),
                    ep.pod().c_str());
    }
  }
  for (const auto& n : r.notes()) std::cout << "  " << n << "\n";
  return 0;
}

// node_name: answer as that node's agent would, from the plan compiled for
// it (empty: the plan of each destination's own node). request: an HTTP
// request's verdict too (null: the connection's only). service: --to's
// NS/SERVICE:PORT (null: --to is NS/POD).
int explainOffline(const Common& c, const std::string& node_name, const std::string& from,
                   const std::string& to, const HostPort* service, int port, model::Proto proto,
                   const compile::HttpRequest* request) {
  model::ClusterState state;
  compile::NodeConfig node;
  if (!load(c, &state, &node)) return 2;
  node.node_name = node_name;
  std::optional<compile::Plan> plan;
  if (!node_name.empty()) plan = compile::compile(state, node);
  const compile::Plan* applied = plan ? &*plan : nullptr;
  std::string err;
  if (service) {
    std::vector<compile::ServiceExplanation> out;
    std::vector<std::string> notes;
    if (!compile::explainService(state, node, service->host, service->port, proto, &out, &notes,
                                 &err, applied)) {
      std::cerr << "explain: " << err << "\n";
      return 2;
    }
    return printExplanation(c.conn.output, api::explainReply(out, notes), service->host);
  }
  compile::Explanation e;
  if (!compile::explain(state, node, from, to, port, proto, &e, &err, applied, request)) {
    std::cerr << "explain: " << err << "\n";
    return 2;
  }
  return printExplanation(c.conn.output, api::explainReply(e), "");
}

int explainOnline(const Common& c, const CLI::Option* node_opt, const std::string& from,
                  const std::string& to, const HostPort* service, int port,
                  const std::string& proto, const compile::HttpRequest* request) {
  noteOfflineOnly(c);
  if (node_opt->count() > 0)
    std::cerr << "note: --node applies to --manifests only; the agent answers for its node\n";
  pb::ExplainRequest req;
  req.set_from(from);
  req.set_to(to);
  req.set_port(port);
  req.set_proto(proto);
  if (request) {
    req.set_method(request->method);
    req.set_path(request->path);
    for (const auto& [name, value] : request->headers) {
      pb::HttpHeader* h = req.add_headers();
      h->set_name(name);
      h->set_value(value);
    }
  }
  pb::ExplainReply r;
  grpc::ClientContext ctx;
  withDeadline(&ctx, 10);
  grpc::Status st = stub(c.conn)->Explain(&ctx, req, &r);
  if (!st.ok()) return rpcFailed(c.conn, st);
  return printExplanation(c.conn.output, r, service ? service->host : "");
}

int explainCmd(const Common& c, const CLI::Option* node_opt, const std::string& node_name,
               const std::string& from, const std::string& to, int port,
               const std::string& proto_s, const std::string& method, const std::string& path,
               const std::vector<std::string>& headers) {
  model::Proto proto;
  if (proto_s == "tcp")
    proto = model::Proto::kTcp;
  else if (proto_s == "udp")
    proto = model::Proto::kUdp;
  else
    return std::cerr << "--proto must be tcp or udp\n", 2;
  std::optional<HostPort> service;
  if (to.find(':') != std::string::npos) {  // NS/SERVICE:PORT, else NS/POD
    Result<HostPort> parsed = parseHostPort(to);
    if (!parsed) return std::cerr << "--to SERVICE:PORT wants a port: " << parsed.error() << "\n", 2;
    service = *std::move(parsed);
  } else if (from.empty() || port == 0) {
    return std::cerr << "explain --to NS/POD needs --from NS/POD and --port\n", 2;
  }
  const HostPort* service_or_null = service ? &*service : nullptr;
  compile::HttpRequest request{method.empty() ? "GET" : method, path.empty() ? "/" : path};
  for (const auto& h : headers) {  // NAME=VALUE (or NAME: VALUE, as it is sent)
    const size_t eq = h.find_first_of("=:");
    if (eq == std::string::npos || eq == 0)
      return std::cerr << "--header wants NAME=VALUE, not " << h << "\n", 2;
    request.headers.emplace_back(h.substr(0, eq), h.substr(eq + 1));
  }
  const bool http = !method.empty() || !path.empty() || !headers.empty();
  if (c.manifests.empty())
    return explainOnline(c, node_opt, from, to, service_or_null, port, proto_s,
                         http ? &request : nullptr);
  return explainOffline(c, node_name, from, to, service_or_null, port, proto,
                        http ? &request : nullptr);
}

// ---- policy ----------------------------------------------------------------------

// The listing as `smik policy` prints it, offline and online alike: the plan
// as api::policyReply gives it.
int printPolicy(const std::string& output, const pb::GetPolicyReply& r) {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& pe : r.entries()) {
    nlohmann::json e;
    e["destination"] = pe.destination();
    if (pe.source().empty()) {
      e["enforced"] = pe.enforced();
    } else {
      e["source"] = pe.source();
      e["proto"] = pe.proto();
      e["port"] = pe.port() == 0 ? nlohmann::json("*") : nlohmann::json(pe.port());
      e["trafficTarget"] = pe.traffic_target();
      e["rule"] = pe.rule();
    }
    entries.push_back(e);
  }
  nlohmann::json http = nlohmann::json::array();
  for (const auto& g : r.http()) {
    std::string methods;
    for (const auto& m : g.methods()) methods += (methods.empty() ? "" : ",") + m;
    // std::map: headers in name order, whatever order the protobuf map keeps
    const std::map<std::string, std::string> headers(g.headers().begin(), g.headers().end());
    http.push_back({{"source", g.source()},
                    {"destination", g.destination()},
                    {"port", g.port()},
                    {"methods", methods.empty() ? "*" : methods},
                    {"pathRegex", g.path_regex()},
                    {"headers", headers},
                    {"trafficTarget", g.traffic_target()},
                    {"rule", g.rule()},
                    {"match", g.match()}});
  }
  if (output == "json") {
    const std::map<std::string, uint32_t> identities(r.identities().begin(), r.identities().end());
    nlohmann::json j{{"policy", entries}, {"identities", identities}, {"http", http}};
    j["diagnostics"] = std::vector<std::string>(r.diagnostics().begin(), r.diagnostics().end());
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "access mode " << r.access_mode() << ", " << r.identities_size() << " identities, "
            << r.meshed_pods() << " meshed pods\n";
  for (const auto& e : entries) {
    if (e.contains("enforced")) {
      std::cout << "  enforce  " << e["destination"].get<std::string>() << " (default deny)\n";
    } else {
      std::cout << "  allow    " << e["source"].get<std::string>() << " -> "
                << e["destination"].get<std::string>() << " " << e["proto"].get<std::string>()
                << "/" << (e["port"].is_string() ? "*" : std::to_string(e["port"].get<int>()))
                << "   (" << e["trafficTarget"].get<std::string>() << ", "
                << e["rule"].get<std::string>() << ")\n";
    }
  }
  for (const auto& h : http) {
    std::string headers;
    for (const auto& [name, regex] : h["headers"].items())
      headers += " " + name + "~" + regex.get<std::string>();
    const std::string path = h["pathRegex"].get<std::string>();
    const std::string match = h["match"].get<std::string>();
    std::cout << "  http     " << h["source"].get<std::string>() << " -> "
              << h["destination"].get<std::string>() << " TCP/" << h["port"].get<int>() << " "
              << h["methods"].get<std::string>() << " " << (path.empty() ? "(any path)" : path)
              << headers << "   (" << h["trafficTarget"].get<std::string>() << ", "
              << h["rule"].get<std::string>() << (match.empty() ? "" : " match " + match) << ")\n";
  }
  for (const auto& d : r.diagnostics()) std::cout << "  " << d << "\n";
  return 0;
}

int policyOffline(const Common& c, const std::string& node_name) {
  model::ClusterState state;
  compile::NodeConfig node;
  if (!load(c, &state, &node)) return 2;
  node.node_name = node_name;
  return printPolicy(c.conn.output, api::policyReply(compile::compile(state, node), node));
}

int policyOnline(const Common& c, CLI::Option* node_opt) {
  noteOfflineOnly(c);
  if (node_opt->count() > 0)
    std::cerr << "note: --node applies to --manifests only; the agent compiles for its node\n";
  pb::GetPolicyReply r;
  grpc::ClientContext ctx;
  withDeadline(&ctx, 10);
  grpc::Status st = stub(c.conn)->GetPolicy(&ctx, pb::GetPolicyRequest(), &r);
  if (!st.ok()) return rpcFailed(c.conn, st);
  return printPolicy(c.conn.output, r);
}

// ---- status ----------------------------------------------------------------------

// One line per map, and the total: what the node's kernel holds for smik.
void printMaps(const pb::StatusReply& s) {
  if (s.maps().empty()) return;
  std::cout << "maps (kernel memory when full, " << s.possible_cpus() << " CPUs):\n";
  uint64_t total = 0;
  char line[160];
  for (const auto& m : s.maps()) {
    total += m.bytes();
    std::snprintf(line, sizeof line, "  %-28s %-16s %9llu / %-9u %9.1f MiB\n", m.name().c_str(),
                  m.type().c_str(), static_cast<unsigned long long>(m.entries()), m.max_entries(),
                  m.bytes() / 1048576.0);
    std::cout << line;
  }
  std::snprintf(line, sizeof line, "  %-56s %9.1f MiB\n", "total", total / 1048576.0);
  std::cout << line;
}

void printLines(const char* title, const google::protobuf::RepeatedPtrField<std::string>& lines) {
  if (title) std::cout << title;
  for (const auto& l : lines) std::cout << "  " << l << "\n";
}

void printStatus(const pb::StatusReply& s) {
  std::cout << "ready: " << (s.ready() ? "yes" : "no") << "   node: " << s.node()
            << "   access mode: " << s.access_mode() << "   attach: " << s.attach_mode() << "\n"
            << "source: " << s.source() << "\n"
            << (s.has_not_ready() ? "not ready: " + s.not_ready() + "\n" : "")
            << (s.has_degraded() ? "degraded: " + s.degraded() + "\n" : "")
            << "policy generation " << s.policy_generation() << ", " << s.policy_entries()
            << " entries, " << s.ip_entries() << " IPs, " << s.identities() << " identities\n";
  if (!s.collections().empty()) printLines("collections:\n", s.collections());
  printLines("endpoints:\n", s.endpoints());
  if (!s.not_enforced().empty())
    printLines("NOT ENFORCED (local meshed pods without their tc programs):\n", s.not_enforced());
  std::cout << "rejected objects (" << s.rejected_objects_total() << " since start):\n";
  printLines(nullptr, s.rejected());
  std::cout << "verdicts:\n";
  for (const abi::Fact& f : abi::kReasons)  // the kernel's order, not the map's
    if (auto it = s.verdicts().find(f.name); it != s.verdicts().end())
      std::cout << "  " << f.name << ": " << it->second.packets() << " packets\n";
  const auto& a = s.deny_answers();
  std::cout << "answers to denied flows: " << a.sent() << " sent, " << a.rate_limited()
            << " rate-limited, " << a.unanswerable() << " unanswerable, " << a.failed()
            << " failed\n";
  std::cout << "edges (new flows judged by the tc programs; the " << s.edges_size()
            << " most active of " << s.edges_total() << "):\n";
  for (const auto& e : s.edges())
    std::cout << "  " << e.source() << " -> " << e.destination() << " " << e.proto() << "/"
              << e.port() << ": " << e.flows_allowed() << " flows allowed, " << e.packets_denied()
              << " packets denied\n";
  printMaps(s);
  if (!s.diagnostics().empty()) printLines("diagnostics:\n", s.diagnostics());
  if (!s.errors().empty()) printLines("errors of the last apply:\n", s.errors());
}

// The HTTP path, kept for `--http ADDR` (scripts and agents from before the
// gRPC API): /status is the StatusReply's JSON.
int statusHttp(const std::string& addr, const std::string& output, bool check) {
  const Result<HostPort> agent = parseHostPort(addr);
  if (!agent) {
    std::cerr << "status --http: " << agent.error() << "\n";
    return 1;
  }
  httplib::Client cli(agent->host, agent->port);
  cli.set_connection_timeout(2);
  if (check) {  // for probes: exit status only
    auto r = cli.Get("/readyz");
    return r && r->status == 200 ? 0 : 1;
  }
  auto res = cli.Get("/status");
  if (!res || res->status != 200) {
    std::cerr << "no agent answering on " << addr << "\n";
    return 1;
  }
  if (output == "json") {
    std::cout << res->body;
    return 0;
  }
  pb::StatusReply r;
  std::string err;
  if (!api::fromJson(res->body, &r, &err)) {
    std::cerr << "/status of " << addr << ": " << err << "\n";
    return 1;
  }
  printStatus(r);
  return 0;
}

int statusCmd(const Conn& c, bool check) {
  pb::StatusReply r;
  grpc::ClientContext ctx;
  withDeadline(&ctx, check ? 2 : 5);
  grpc::Status st = stub(c)->Status(&ctx, pb::StatusRequest(), &r);
  if (check) return st.ok() && r.ready() ? 0 : 1;  // for probes: exit status only
  if (!st.ok()) return rpcFailed(c, st);
  if (c.output == "json") {
    std::cout << api::toJson(r);
    return 0;
  }
  printStatus(r);
  return 0;
}

// ---- metrics ---------------------------------------------------------------------

// "30s", "5m", "1h30m", "90" (seconds) -> seconds; -1 if malformed.
int parseWindow(const std::string& s) {
  if (s.empty()) return -1;
  long total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) j++;
    if (j == i || j - i > 7) return -1;
    long n = std::stol(s.substr(i, j - i));
    if (j == s.size()) {
      if (i != 0) return -1;  // a bare number only on its own
      total = n;
      break;
    }
    char unit = s[j];
    long mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : 0;
    if (mult == 0) return -1;
    total += n * mult;
    i = j + 1;
  }
  return total > 0 && total < (1L << 30) ? static_cast<int>(total) : -1;
}

nlohmann::json resourceJson(const pb::Resource& r) {
  nlohmann::json j = {{"kind", r.kind()}};
  if (!r.namespace_().empty()) j["namespace"] = r.namespace_();
  j["name"] = r.name();
  return j;
}

std::string resourceName(const pb::Resource& r) {
  return r.namespace_().empty() ? r.name() : r.namespace_() + "/" + r.name();
}

// Percent of attempts that were established; NaN when there were none.
double successRate(const pb::Counts& c) {
  uint64_t total = c.success() + c.failure();
  return total == 0 ? NAN : 100.0 * static_cast<double>(c.success()) / static_cast<double>(total);
}

nlohmann::json countsJson(const pb::Counts& c) {
  double rate = successRate(c);
  return {{"success", c.success()},
          {"failure", c.failure()},
          {"refused", c.refused()},
          {"timeout", c.timeout()},
          {"policy", c.policy()},
          {"reset", c.reset()},
          {"successRate", std::isnan(rate) ? nlohmann::json(nullptr) : nlohmann::json(rate)},
          {"p50Ms", c.p50_ms()},
          {"p90Ms", c.p90_ms()},
          {"p99Ms", c.p99_ms()},
          {"requests", c.requests()}};
}

void printTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); i++) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); i++) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 3, ' ');
    }
    std::cout << line << "\n";
  }
}

int metricsCmd(const Conn& c, const std::string& kind, const std::string& ns,
               const std::string& name, const std::string& window, bool local) {
  int window_s = parseWindow(window);
  if (window_s < 0) return std::cerr << "--window wants a duration like 30s, 5m or 1h\n", 2;
  pb::ListEdgesRequest req;
  req.set_kind(kind);
  req.set_namespace_(ns);
  req.set_name(name);
  req.set_window_seconds(window_s);
  req.set_local(local);
  pb::ListEdgesReply r;
  grpc::ClientContext ctx;
  withDeadline(&ctx, 10);
  grpc::Status st = stub(c)->ListEdges(&ctx, req, &r);
  if (!st.ok()) return rpcFailed(c, st);

  if (c.output == "json") {
    nlohmann::json items = nlohmann::json::array();
    for (const auto& rm : r.resources()) {
      nlohmann::json edges = nlohmann::json::array();
      for (const auto& e : rm.edges())
        edges.push_back({{"peer", resourceJson(e.peer())},
                         {"direction", e.direction()},
                         {"side", e.side()},
                         {"counts", countsJson(e.counts())}});
      items.push_back({{"resource", resourceJson(rm.resource())},
                       {"inbound", countsJson(rm.inbound())},
                       {"edges", edges}});
    }
    std::cout << nlohmann::json{{"windowSeconds", r.window_seconds()},
                                {"timestampUnixMs", r.timestamp_unix_ms()},
                                {"missingNodes", std::vector<std::string>(r.missing_nodes().begin(),
                                                                          r.missing_nodes().end())},
                                {"resources", items}}
                     .dump(2)
              << "\n";
    return 0;
  }

  auto ms = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, v < 10 ? "%.3f" : "%.1f", v);
    return std::string(buf);
  };
  auto row = [&](const std::string& res, const std::string& peer, const std::string& dir,
                 const pb::Counts& k) {
    double rate = successRate(k);
    char pct[16] = "-";
    if (!std::isnan(rate)) std::snprintf(pct, sizeof pct, "%.1f%%", rate);
    bool lat = k.success() > 0 || k.requests();
    return std::vector<std::string>{res,
                                    peer,
                                    dir,
                                    std::to_string(k.success()),
                                    std::to_string(k.failure()),
                                    pct,
                                    lat ? ms(k.p50_ms()) : "-",
                                    lat ? ms(k.p90_ms()) : "-",
                                    lat ? ms(k.p99_ms()) : "-"};
  };
  std::vector<std::vector<std::string>> rows = {
      {"RESOURCE", "PEER", "DIRECTION", "SUCCESS", "FAILURE", "SUCCESS%", "P50", "P90", "P99 ms"}};
  for (const auto& rm : r.resources()) {
    std::string res = resourceName(rm.resource());
    // "*": everything the resource accepted, from any peer (also the node and
    // the world, which no edge names).
    rows.push_back(row(res, "*", "from", rm.inbound()));
    for (const auto& e : rm.edges())
      rows.push_back(row(res, resourceName(e.peer()), e.direction(), e.counts()));
  }
  std::cout << "window " << r.window_seconds()
            << "s; on ports with HTTP rules requests (failure: 5xx) and HTTP response latency, "
               "else connections and TCP handshake latency, ms\n";
  if (r.missing_nodes_size() > 0) {
    std::cout << "PARTIAL: no answer from node(s)";
    for (const auto& n : r.missing_nodes()) std::cout << " " << n;
    std::cout << "; their share is missing\n";
  }
  printTable(rows);
  return 0;
}

// ---- events ----------------------------------------------------------------------

std::string eventTime(int64_t unix_ns, bool rfc3339) {
  std::time_t secs = static_cast<std::time_t>(unix_ns / 1000000000);
  int64_t frac = unix_ns % 1000000000;
  std::tm tm{};
  char buf[64];
  if (rfc3339) {
    gmtime_r(&secs, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char out[96];
    std::snprintf(out, sizeof out, "%s.%09lldZ", buf, static_cast<long long>(frac));
    return out;
  }
  localtime_r(&secs, &tm);
  std::strftime(buf, sizeof buf, "%b %e %H:%M:%S", &tm);
  char out[96];
  std::snprintf(out, sizeof out, "%s.%03lld", buf, static_cast<long long>(frac / 1000000));
  return out;
}

int eventsCmd(const Conn& c, int count, const std::vector<std::string>& kinds) {
  pb::WatchRequest req;
  for (const auto& k : kinds) req.add_kinds(k);
  grpc::ClientContext ctx;
  auto reader = stub(c)->WatchEvents(&ctx, req);
  pb::Event e;
  int seen = 0;
  while ((count <= 0 || seen < count) && reader->Read(&e)) {
    seen++;
    if (c.output == "json") {
      nlohmann::json j = {{"time", eventTime(e.time_unix_ns(), true)},
                          {"kind", e.kind()},
                          {"reason", e.reason()},
                          {"client", e.client()},
                          {"server", e.server()},
                          {"port", e.port()},
                          {"proto", e.proto()},
                          {"suppressed", e.suppressed()}};
      if (e.kind() == abi::nameOf(abi::kEventKinds, SMIK_EV_HTTP_DENY)) {
        j["method"] = e.method();
        j["path"] = e.path();
        j["path_truncated"] = e.path_truncated();
      }
      std::cout << j.dump() << std::endl;  // a line per event, flushed: pipes read it live
      continue;
    }
    std::string line = eventTime(e.time_unix_ns(), false) + ": " + e.client() + " -> " +
                       e.server() + " " + std::to_string(e.port()) + "/" + e.proto() + " " +
                       e.kind();
    if (!e.method().empty() || !e.path().empty())
      line += " " + (e.method().empty() ? "?" : e.method()) + " " +
              (e.path().empty() ? "?" : e.path() + (e.path_truncated() ? "..." : ""));
    if (!e.reason().empty()) line += " (" + e.reason() + ")";
    if (e.suppressed() > 0) line += ", " + std::to_string(e.suppressed()) + " like it suppressed";
    std::cout << line << std::endl;
  }
  if (count > 0 && seen >= count) {
    ctx.TryCancel();
    reader->Finish();
    return 0;
  }
  grpc::Status st = reader->Finish();
  return st.ok() ? 0 : rpcFailed(c, st);
}

// ---- map dump --------------------------------------------------------------------

int mapDumpCmd(const Conn& c, const std::string& name) {
  pb::DumpMapRequest req;
  req.set_name(name);
  pb::DumpMapReply r;
  grpc::ClientContext ctx;
  withDeadline(&ctx, 30);
  grpc::Status st = stub(c)->DumpMap(&ctx, req, &r);
  if (!st.ok()) return rpcFailed(c, st);
  if (c.output == "json") {
    nlohmann::json entries = nlohmann::json::array();
    for (const auto& e : r.entries()) entries.push_back({{"key", e.key()}, {"value", e.value()}});
    std::cout << nlohmann::json{{"map", r.name()}, {"entries", entries}}.dump(2) << "\n";
    return 0;
  }
  std::cout << r.name() << ": " << r.entries_size() << " entries\n";
  size_t w = 0;
  for (const auto& e : r.entries()) w = std::max(w, e.key().size());
  for (const auto& e : r.entries())
    std::cout << "  " << e.key() << std::string(w - e.key().size() + 3, ' ') << e.value() << "\n";
  return 0;
}

// ---- ui --------------------------------------------------------------------------

// Where the page's numbers come from: the TrafficMetrics API through the API
// server (the user's kubeconfig: what `kubectl get --raw` of the same paths
// shows them), or an agent's --http listener (loopback: the node's own).
struct UiSource {
  ui::Fetch fetch;
  std::string description;
};

std::optional<UiSource> kubeSource(const std::string& kubeconfig, const std::string& context) {
  std::string paths = kubeconfig;
  if (paths.empty()) {
    const char* env = std::getenv("KUBECONFIG");
    const char* home = std::getenv("HOME");
    paths = env && *env ? env : home ? std::string(home) + "/.kube/config" : "";
  }
  kube::ConfigResult c = kube::loadKubeconfig(paths, context);
  if (!c.config) {
    std::cerr << "smik ui: " << c.error
              << " (or read one agent's numbers with --agent http://127.0.0.1:9464)\n";
    return std::nullopt;
  }
  kube::KubeConfig config = *c.config;
  UiSource s;
  s.description = "the API server " + config.server;
  // A client per request: the graph asks for several edge lists at once,
  // and a client is cheap next to the round trip.
  s.fetch = [config](const std::string& path) {
    kube::HttpClient client(config, kube::HttpTimeouts{std::chrono::seconds(5),
                                                       std::chrono::seconds(15)});
    kube::Cancel cancel;
    ui::Fetched f;
    kube::HttpResponse r = client.get(
        path, [&](std::string_view piece) { return f.body.append(piece), true; }, cancel);
    f.status = static_cast<int>(r.status);
    f.error = r.error;
    if (r.status < 200 || r.status >= 300) f.body = r.body;
    return f;
  };
  return s;
}

std::optional<UiSource> agentSource(const std::string& url) {
  if (url.rfind("http://", 0) != 0) {
    std::cerr << "smik ui: --agent wants the agent's --http address, http://HOST:PORT\n";
    return std::nullopt;
  }
  UiSource s;
  s.description = "the agent at " + url;
  s.fetch = [url](const std::string& path) {
    httplib::Client client(url);
    client.set_connection_timeout(2);
    client.set_read_timeout(15);
    ui::Fetched f;
    auto r = client.Get(path);
    if (!r) {
      f.error = "no answer from " + url + ": " + httplib::to_string(r.error());
      return f;
    }
    f.status = r->status;
    f.body = r->body;
    return f;
  };
  return s;
}

// An edge's explanation, by the machinery `smik explain` uses: the
// compiler on --manifests, else the agent's gRPC Explain.
ui::Explain uiExplain(const Common& c) {
  if (!c.manifests.empty()) {
    return [c](const ui::ExplainQuery& q) {
      ui::ExplainAnswer a;
      a.source = "the manifests in " + c.manifests;
      model::ClusterState state;
      compile::NodeConfig node;
      std::string err;
      compile::Explanation e;
      if (!load(c, &state, &node)) {
        a.reason = "cannot load " + c.manifests;
        return a;
      }
      if (!compile::explain(state, node, q.from, q.to, static_cast<uint16_t>(q.port),
                            q.proto == "udp" ? model::Proto::kUdp : model::Proto::kTcp, &e, &err)) {
        a.reason = err;
        return a;
      }
      a.available = true;
      a.reply = nlohmann::json::parse(api::toJson(api::explainReply(e)));
      return a;
    };
  }
  return [c](const ui::ExplainQuery& q) {
    ui::ExplainAnswer a;
    a.source = "the agent at unix:" + c.conn.socket;
    std::error_code ec;
    if (!std::filesystem::exists(c.conn.socket, ec)) {
      a.reason = "no agent socket at " + c.conn.socket +
                 " (smik ui explains with the local agent's --grpc, or --manifests DIR)";
      return a;
    }
    pb::ExplainRequest req;
    req.set_from(q.from);
    req.set_to(q.to);
    req.set_port(q.port);
    req.set_proto(q.proto);
    pb::ExplainReply r;
    grpc::ClientContext ctx;
    withDeadline(&ctx, 10);
    grpc::Status st = stub(c.conn)->Explain(&ctx, req, &r);
    if (!st.ok()) {
      a.reason = "the agent at " + c.conn.socket + ": " + st.error_message();
      return a;
    }
    a.available = true;
    a.reply = nlohmann::json::parse(api::toJson(r));
    return a;
  };
}

// xdg-open, when there is one; the URL is printed either way.
void openBrowser(const std::string& url) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (size_t at = 0; at <= dirs.size();) {
    size_t colon = dirs.find(':', at);
    if (colon == std::string::npos) colon = dirs.size();
    std::string exe = dirs.substr(at, colon - at) + "/xdg-open";
    at = colon + 1;
    if (access(exe.c_str(), X_OK) != 0) continue;
    // Twice forked: the browser's launcher is nobody's child to reap.
    pid_t pid = fork();
    if (pid == 0) {
      setsid();
      if (fork() == 0) {
        execl(exe.c_str(), "xdg-open", url.c_str(), static_cast<char*>(nullptr));
        _exit(127);
      }
      _exit(0);
    }
    if (pid > 0) waitpid(pid, nullptr, 0);
    return;
  }
  std::cerr << "smik ui: no xdg-open on PATH; open the URL yourself\n";
}

struct UiArgs {
  Common common;  // --manifests and --grpc, for explain
  std::string kubeconfig, context, agent, kind = "deployment", window = "5m";
  int port = 0;
  bool open = false;
};

int uiCmd(const UiArgs& a) {
  std::optional<UiSource> source =
      a.agent.empty() ? kubeSource(a.kubeconfig, a.context) : agentSource(a.agent);
  if (!source) return 2;
  if (ui::windowSecondsOf(a.window) < 0) return std::cerr << "--window: 1m, 5m, 1h...\n", 2;
  ui::UiConfig config;
  config.fetch = source->fetch;
  config.source = source->description;
  config.explain = uiExplain(a.common);
  config.kind = a.kind;
  config.window = a.window;
  ui::UiServer server(std::move(config));
  Result<int> port = server.bind(a.port);
  if (!port) return std::cerr << "smik ui: " << port.error() << "\n", 1;
  const std::string url = "http://127.0.0.1:" + std::to_string(*port) + "/";
  std::cout << url << std::endl;
  std::cerr << "smik ui: serving the service graph of " << source->description
            << " on " << url << " (127.0.0.1 only; Ctrl-C stops)\n";
  if (a.open) openBrowser(url);
  return server.run() ? 0 : 1;
}

// Each subcommand's flags, and the function that declares them on the app.
struct ExplainArgs {
  Common common;
  std::string from, to, proto = "tcp", method, path;
  std::vector<std::string> headers;
  int port = 0;
  std::string node;
  CLI::Option* node_opt = nullptr;
};
CLI::App* addExplain(CLI::App& app, ExplainArgs& a) {
  auto* explain = app.add_subcommand("explain", "why a connection is allowed or denied");
  addCommon(explain, a.common);
  explain->add_option("--from", a.from, "source pod NS/POD");
  explain
      ->add_option("--to", a.to,
                   "destination pod NS/POD, or NS/SERVICE:PORT for where a "
                   "connection to that Service goes")
      ->required();
  explain->add_option("--port", a.port, "destination (pod) port")->check(CLI::Range(1, 65535));
  explain->add_option("--proto", a.proto, "tcp | udp")->capture_default_str();
  explain->add_option("--method", a.method, "an HTTP request's method (GET ...): its verdict too");
  explain->add_option("--path", a.path, "an HTTP request's target (/books?x=1)");
  explain->add_option("--header", a.headers,
                      "an HTTP request header NAME=VALUE (repeat for several lines)");
  a.node_opt = explain->add_option(
      "--node", a.node,
      "with --manifests: answer as this node's agent would (default: each destination's node)");
  return explain;
}

struct PolicyArgs {
  Common common;
  std::string node;
  CLI::Option* node_opt = nullptr;
};
CLI::App* addPolicy(CLI::App& app, PolicyArgs& a) {
  auto* policy = app.add_subcommand("policy", "the compiled policy");
  addCommon(policy, a.common);
  a.node_opt = policy->add_option(
      "--node", a.node, "with --manifests: compile for this node only (default: every pod)");
  return policy;
}

struct StatusArgs {
  Conn conn;
  std::string http;
  bool check = false;
  CLI::Option* http_opt = nullptr;
};
CLI::App* addStatus(CLI::App& app, StatusArgs& a) {
  auto* status = app.add_subcommand("status", "a running agent's state");
  addConn(status, a.conn);
  a.http_opt =
      status->add_option("--http", a.http, "ask the agent's HTTP address (host:port) instead");
  status->add_flag("--check", a.check, "print nothing; exit 0 only if the agent is ready (probes)");
  return status;
}

struct MetricsArgs {
  Conn conn;
  std::string kind = "pod", ns, name, window = "30s";
  bool local = false;
};
CLI::App* addMetrics(CLI::App& app, MetricsArgs& a) {
  auto* metrics = app.add_subcommand(
      "metrics", "connection success rate and handshake latency per resource and edge");
  addConn(metrics, a.conn);
  metrics->add_option("--kind", a.kind, "pod | deployment | daemonset | statefulset | namespace")
      ->capture_default_str();
  metrics->add_option("-n,--namespace", a.ns, "only this namespace (default: all)");
  metrics->add_option("name", a.name, "only this resource");
  metrics->add_option("--window", a.window, "how far back: 30s, 5m, 1h...")->capture_default_str();
  metrics->add_flag("--local", a.local,
                    "this node's counts only (default: every node's, through the agent's peers)");
  return metrics;
}

struct EventsArgs {
  Conn conn;
  int count = 0;
  std::vector<std::string> kinds;
};
CLI::App* addEvents(CLI::App& app, EventsArgs& a) {
  auto* events = app.add_subcommand("events", "follow denied, failed and new connections and refused HTTP requests live");
  addConn(events, a.conn);
  events->add_option("--count", a.count, "exit after N events (default: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber);
  std::vector<std::string> kind_names;
  for (const abi::Fact& f : abi::kEventKinds) kind_names.push_back(f.name);
  events->add_option("--kind", a.kinds, "only these kinds (comma-separated)")
      ->delimiter(',')
      ->check(CLI::IsMember(kind_names));
  return events;
}

struct MapDumpArgs {
  Conn conn;
  std::string name;
};
CLI::App* addMapDump(CLI::App& app, MapDumpArgs& a) {
  auto* map = app.add_subcommand("map", "the agent's kernel maps");
  map->require_subcommand(1);
  auto* dump = map->add_subcommand("dump", "a map's entries, decoded");
  addConn(dump, a.conn);
  dump->add_option("name", a.name, "policy | ipcache | endpoints | services | edges | conn")
      ->required();
  return dump;
}

CLI::App* addUi(CLI::App& app, UiArgs& a) {
  auto* ui = app.add_subcommand("ui", "the live service graph, as a web page on 127.0.0.1");
  ui->add_option("--kubeconfig", a.kubeconfig,
                 "read TrafficMetrics through this cluster's API server (default: KUBECONFIG, "
                 "~/.kube/config)");
  ui->add_option("--context", a.context, "the kubeconfig context (default: current-context)");
  ui->add_option("--agent", a.agent,
                 "read one agent's TrafficMetrics instead: its --http address, "
                 "http://127.0.0.1:9464")
      ->excludes("--kubeconfig")
      ->excludes("--context");
  ui->add_option("--port", a.port, "local port (default: any free one)")
      ->check(CLI::Range(0, 65535));
  ui->add_option("--kind", a.kind, "what the graph opens with: deployment | daemonset | "
                                   "statefulset | pod | namespace")
      ->capture_default_str()
      ->check(CLI::IsMember({"deployment", "daemonset", "statefulset", "pod", "namespace"}));
  ui->add_option("--window", a.window, "the window it opens with: 1m, 5m, 1h...")
      ->capture_default_str();
  ui->add_flag("--open", a.open, "also open the page with xdg-open");
  ui->add_option("--manifests", a.common.manifests,
                 "explain edges from this manifest directory (default: the agent's --grpc)");
  ui->add_option("--grpc", a.common.conn.socket, "the local agent's gRPC socket, for explain")
      ->capture_default_str();
  return ui;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);  // the manifest reader's progress is the agent's news
  CLI::App app{"smik: SMI in the kernel"};
  app.require_subcommand(1);
  ExplainArgs ex;
  PolicyArgs po;
  StatusArgs st;
  MetricsArgs me;
  EventsArgs ev;
  MapDumpArgs md;
  CLI::App* explain = addExplain(app, ex);
  CLI::App* policy = addPolicy(app, po);
  addStatus(app, st);
  CLI::App* metrics = addMetrics(app, me);
  CLI::App* events = addEvents(app, ev);
  CLI::App* dump = addMapDump(app, md);
  UiArgs ua;
  CLI::App* ui_cmd = addUi(app, ua);

  CLI11_PARSE(app, argc, argv);
  if (explain->parsed())
    return explainCmd(ex.common, ex.node_opt, ex.node, ex.from, ex.to, ex.port, ex.proto, ex.method,
                      ex.path, ex.headers);
  if (policy->parsed())
    return po.common.manifests.empty() ? policyOnline(po.common, po.node_opt)
                                       : policyOffline(po.common, po.node);
  if (metrics->parsed()) return metricsCmd(me.conn, me.kind, me.ns, me.name, me.window, me.local);
  if (events->parsed()) return eventsCmd(ev.conn, ev.count, ev.kinds);
  if (dump->parsed()) return mapDumpCmd(md.conn, md.name);
  if (ui_cmd->parsed()) return uiCmd(ua);
  if (st.http_opt->count() > 0) return statusHttp(st.http, st.conn.output, st.check);
  return statusCmd(st.conn, st.check);
}
