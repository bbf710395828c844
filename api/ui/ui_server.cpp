#include "api/ui/ui_server.h"

#include <httplib.h>

#include <cstdlib>

namespace smik::ui {

namespace {

using json = nlohmann::json;

std::string param(const UiRequest& req, const std::string& name, const std::string& fallback = "") {
  auto it = req.params.find(name);
  return it == req.params.end() ? fallback : it->second;
}

UiResponse jsonResponse(int status, const json& j) {
  return {status, "application/json", j.dump()};
}

UiResponse errorResponse(int status, const std::string& message) {
  return jsonResponse(status, {{"error", message}});
}

// "ns/name", both parts DNS-label-ish: what explain takes, nothing that
// would mean something else in a path or a log line.
bool nsName(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size() || s.size() > 320)
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
              (c == '/' && i == slash);
    if (!ok) return false;
  }
  return true;
}

}  // namespace

struct UiServer::Impl {
  httplib::Server server;
};

UiServer::UiServer(UiConfig config) : config_(std::move(config)), impl_(std::make_unique<Impl>()) {
  // Every answer carries the security headers; the routes are answer()'s.
  impl_->server.Get(".*", [this](const httplib::Request& hr, httplib::Response& res) {
    UiRequest req{hr.path, {}, hr.get_header_value("Host")};
    for (const auto& [k, v] : hr.params) req.params.emplace(k, v);
    UiResponse r = answer(req);
    res.status = r.status;
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'self'; style-src 'self'; "
                   "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                   "frame-ancestors 'none'");
    res.set_content(r.body, r.content_type.c_str());
  });
}

UiServer::~UiServer() { stop(); }

Result<int> UiServer::bind(int port) {
  // 127.0.0.1 only, whatever is asked: the page shows the cluster's graph
  // with the user's credentials, for the user alone.
  int bound = port == 0 ? impl_->server.bind_to_any_port("127.0.0.1")
                        : (impl_->server.bind_to_port("127.0.0.1", port) ? port : -1);
  if (bound <= 0) return fail("cannot listen on 127.0.0.1:" + std::to_string(port));
  port_ = bound;
  return bound;
}

bool UiServer::run() { return impl_->server.listen_after_bind(); }

void UiServer::stop() {
  if (impl_) impl_->server.stop();
}

UiResponse UiServer::answer(const UiRequest& req) const {
  const std::string port = std::to_string(port_);
  if (req.host != "127.0.0.1:" + port && req.host != "localhost:" + port)
    return {403, "text/plain", "smik ui answers http://127.0.0.1:" + port + "/ only\n"};
  if (req.path == "/api/graph") return graph(req);
  if (req.path == "/api/explain") return explainEdge(req);
  if (req.path == "/api/config")
    return jsonResponse(200, {{"source", config_.source},
                              {"kind", config_.kind},
                              {"window", config_.window},
                              {"explain", static_cast<bool>(config_.explain)}});
  if (const Asset* a = findAsset(req.path == "/" ? "/index.html" : req.path))
    return {200, std::string(a->content_type), std::string(a->body)};
  return {404, "text/plain", "not found\n"};
}

UiResponse UiServer::graph(const UiRequest& req) const {
  GraphRequest g;
  g.kind = param(req, "kind", config_.kind);
  g.window = param(req, "window", config_.window);
  g.ns = param(req, "namespace");
  if (!g.ns.empty() && !nsName(g.ns + "/x")) return errorResponse(400, "bad namespace");
  int status = 200;
  json j = buildGraph(config_.fetch, g, &status);
  j["source"] = config_.source;
  return jsonResponse(status, j);
}

UiResponse UiServer::explainEdge(const UiRequest& req) const {
  ExplainQuery q;
  q.from = param(req, "from");
  q.to = param(req, "to");
  q.proto = param(req, "proto", "tcp");
  q.port = std::atoi(param(req, "port").c_str());
  if (!nsName(q.from) || !nsName(q.to))
    return errorResponse(400, "from and to are pods: NAMESPACE/NAME");
  if (q.port < 1 || q.port > 65535) return errorResponse(400, "port: 1 to 65535");
  if (q.proto != "tcp" && q.proto != "udp") return errorResponse(400, "proto: tcp or udp");
  if (!config_.explain)
    return jsonResponse(200, {{"available", false},
                              {"reason", "no agent socket or manifest directory was given "
                                         "to smik ui (--grpc, --manifests)"}});
  ExplainAnswer a = config_.explain(q);
  json j = {{"available", a.available}, {"source", a.source}};
  if (!a.reason.empty()) j["reason"] = a.reason;
  if (a.available) j["reply"] = a.reply;
  return jsonResponse(200, j);
}

}  // namespace smik::ui
