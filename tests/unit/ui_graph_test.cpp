// `smik ui` (api/ui/): the graph it builds from TrafficMetrics answers as the
// agent renders them (api/smi/, over a fake telemetry store), and what its
// local server answers: the page, the graph, explain, and nothing to a Host
// that is not its own.
#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/telemetry/metrics.h"
#include "api/smi/smi_metrics.h"
#include "api/ui/graph.h"
#include "api/ui/ui_server.h"

namespace smik::ui {
namespace {

using json = nlohmann::json;
using telemetry::Counts;
using telemetry::EdgeMetrics;
using telemetry::ResourceRef;
using telemetry::Side;

void record(telemetry::Histogram& h, uint64_t us, uint64_t times) {
  h.buckets[smik_hist_bucket(us)] += times;
}

Counts established(uint64_t n, uint64_t handshake_us) {
  Counts c;
  c.success = n;
  record(c.handshake_us, handshake_us, n);
  return c;
}

Counts denied(uint64_t n) {
  Counts c;
  c.policy = n;
  return c;
}

ResourceRef pod(const std::string& ns, const std::string& name) { return {"Pod", ns, name}; }

// Namespaces app and outside. app/client -> app/server: 40 established (1 ms
// handshakes) and 2 refused, seen at both ends; outside/intruder ->
// app/server: 3 denied by policy, seen at the intruder's end only;
// legacy/old -> app/server: 5 seen at the server only (the client's node
// did not answer). Deployments web -> db.
class FakeView : public telemetry::MetricsView {
 public:
  FakeView() {
    objects_ = {pod("app", "client"), pod("app", "server"), pod("outside", "intruder"),
                {"Deployment", "app", "web"}, {"Deployment", "app", "db"},
                {"Namespace", "", "app"}, {"Namespace", "", "outside"}};
    Counts ok = established(40, 1000);
    ok.refused = 2;
    Counts server_side = ok;
    Counts legacy = established(5, 3000);
    edges_[pod("app", "client")] = {{pod("app", "server"), Side::kClient, ok}};
    edges_[pod("outside", "intruder")] = {{pod("app", "server"), Side::kClient, denied(3)}};
    edges_[pod("app", "server")] = {{pod("app", "client"), Side::kServer, server_side},
                                    {pod("legacy", "old"), Side::kServer, legacy}};
    edges_[{"Deployment", "app", "web"}] = {
        {{"Deployment", "app", "db"}, Side::kClient, established(7, 500)}};
    edges_[{"Namespace", "", "outside"}] = {{{"Namespace", "", "app"}, Side::kClient, denied(3)}};
    inbound_[pod("app", "server")] = established(45, 1000);
  }
  std::vector<ResourceRef> list(const std::string& kind, const std::string& ns) const override {
    std::vector<ResourceRef> out;
    for (const auto& r : objects_)
      if (r.kind == kind && (ns.empty() || r.ns == ns)) out.push_back(r);
    return out;
  }
  bool exists(const ResourceRef& r) const override {
    for (const auto& o : objects_)
      if (o == r) return true;
    return false;
  }
  Counts inbound(const ResourceRef& r, int) const override {
    auto it = inbound_.find(r);
    return it == inbound_.end() ? Counts{} : it->second;
  }
  std::vector<EdgeMetrics> edges(const ResourceRef& r, int) const override {
    auto it = edges_.find(r);
    return it == edges_.end() ? std::vector<EdgeMetrics>{} : it->second;
  }
  std::vector<telemetry::SplitBackendMetrics> split(const ResourceRef&, int) const override {
    return {};
  }
  int maxWindow() const override { return 3600; }
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::from_time_t(1554762355);
  }
  std::vector<std::string> missingNodes() const override { return missing_; }

  std::vector<std::string> missing_;

 private:
  std::vector<ResourceRef> objects_;
  std::map<ResourceRef, std::vector<EdgeMetrics>> edges_;
  std::map<ResourceRef, Counts> inbound_;
};

// The TrafficMetrics API as an agent answers it, with every request seen.
struct FakeApi {
  FakeView view;
  std::mutex mu;
  std::vector<std::string> requests;
  std::set<std::string> failing;  // paths (no query) answered 503

  Fetch fetch() {
    return [this](const std::string& path_and_query) {
      {
        std::lock_guard<std::mutex> lock(mu);
        requests.push_back(path_and_query);
      }
      auto q = path_and_query.find('?');
      std::string path = path_and_query.substr(0, q);
      std::string t;
      if (q != std::string::npos && path_and_query.compare(q, 3, "?t=") == 0)
        t = path_and_query.substr(q + 3);
      if (failing.count(path)) return Fetched{503, R"({"kind":"Status","message":"busy"})", ""};
      api::SmiResponse r = api::answerSmiRequest(view, {}, path, t, true);
      return Fetched{r.status, r.body, ""};
    };
  }
};

json build(FakeApi& api, const std::string& kind, const std::string& window = "5m",
           int* status_out = nullptr) {
  GraphRequest req;
  req.kind = kind;
  req.window = window;
  int status = 0;
  json g = buildGraph(api.fetch(), req, &status);
  if (status_out) *status_out = status;
  else EXPECT_EQ(status, 200) << g.dump(1);
  return g;
}

const json* edge(const json& g, const std::string& from, const std::string& to) {
  for (const auto& e : g["edges"])
    if (e["from"] == from && e["to"] == to) return &e;
  return nullptr;
}

std::vector<std::string> nodeIds(const json& g) {
  std::vector<std::string> ids;
  for (const auto& n : g["nodes"]) ids.push_back(n["id"]);
  return ids;
}

TEST(UiGraph, PodsAreNodesAndEdgesCarryTheClientsCounts) {
  FakeApi api;
  json g = build(api, "pod");
  EXPECT_EQ(nodeIds(g), (std::vector<std::string>{"Pod/app/client", "Pod/app/server",
                                                  "Pod/legacy/old", "Pod/outside/intruder"}))
      << "every resource listed, and peers the list does not name";
  EXPECT_EQ(g["namespaces"], json({"app", "legacy", "outside"}));
  ASSERT_EQ(g["edges"].size(), 3u) << g.dump(1);

  const json* ok = edge(g, "Pod/app/client", "Pod/app/server");
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["id"], "Pod/app/client>Pod/app/server");
  EXPECT_EQ((*ok)["side"], "client") << "the client's end wins over the server's";
  EXPECT_EQ((*ok)["success"], 40);
  EXPECT_EQ((*ok)["failure"], 2);
  EXPECT_EQ((*ok)["denied"], 0);
  EXPECT_DOUBLE_EQ((*ok)["successRate"].get<double>(), 40.0 / 42);
  EXPECT_DOUBLE_EQ((*ok)["perSecond"].get<double>(), 42.0 / 300);
  EXPECT_NEAR((*ok)["p50Ms"].get<double>(), 1.0, 0.04);
  EXPECT_NEAR((*ok)["p99Ms"].get<double>(), 1.0, 0.04);

  const json* no = edge(g, "Pod/outside/intruder", "Pod/app/server");
  ASSERT_TRUE(no);
  EXPECT_EQ((*no)["success"], 0);
  EXPECT_EQ((*no)["failure"], 3);
  EXPECT_EQ((*no)["denied"], 3) << "policy_denied_count marks the edge denied";
  EXPECT_DOUBLE_EQ((*no)["successRate"].get<double>(), 0);

  const json* old = edge(g, "Pod/legacy/old", "Pod/app/server");
  ASSERT_TRUE(old);
  EXPECT_EQ((*old)["side"], "server") << "only the server's end saw it";
  EXPECT_EQ((*old)["success"], 5);

  for (const auto& n : g["nodes"])
    if (n["id"] == "Pod/app/server") {
      EXPECT_EQ(n["inbound"]["success"], 45);
    }
  EXPECT_TRUE(g["missingNodes"].empty());
  EXPECT_TRUE(g["errors"].empty());
}

TEST(UiGraph, AsksTheApiForTheWindow) {
  FakeApi api;
  json g = build(api, "pod", "1h");
  EXPECT_EQ(g["windowSeconds"], 3600);
  ASSERT_EQ(api.requests.size(), 4u);  // the list, and the edges of each of the 3 pods
  std::set<std::string> asked(api.requests.begin(), api.requests.end());
  EXPECT_EQ(asked, (std::set<std::string>{
                       "/apis/metrics.smi-spec.io/v1alpha1/pods?t=1h",
                       "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/client/edges?t=1h",
                       "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/server/edges?t=1h",
                       "/apis/metrics.smi-spec.io/v1alpha1/namespaces/outside/pods/intruder/"
                       "edges?t=1h"}));
  const json* ok = edge(g, "Pod/app/client", "Pod/app/server");
  ASSERT_TRUE(ok);
  EXPECT_DOUBLE_EQ((*ok)["perSecond"].get<double>(), 42.0 / 3600);
}

TEST(UiGraph, DeploymentsAndNamespaces) {
  FakeApi api;
  json d = build(api, "deployment");
  EXPECT_EQ(nodeIds(d), (std::vector<std::string>{"Deployment/app/db", "Deployment/app/web"}));
  const json* e = edge(d, "Deployment/app/web", "Deployment/app/db");
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["success"], 7);

  json n = build(api, "namespace");
  EXPECT_EQ(nodeIds(n), (std::vector<std::string>{"Namespace//app", "Namespace//outside"}));
  EXPECT_EQ(n["namespaces"], json({"app", "outside"}));
  const json* ne = edge(n, "Namespace//outside", "Namespace//app");
  ASSERT_TRUE(ne);
  EXPECT_EQ((*ne)["denied"], 3);
  EXPECT_TRUE(std::count(api.requests.begin(), api.requests.end(),
                         "/apis/metrics.smi-spec.io/v1alpha1/namespaces/outside/edges?t=5m"));
}

TEST(UiGraph, PartialAnswersNameTheMissingNodes) {
  FakeApi api;
  api.view.missing_ = {"node-b", "node-c"};
  json g = build(api, "pod");
  EXPECT_EQ(g["missingNodes"], json({"node-b", "node-c"}));
  EXPECT_EQ(g["edges"].size(), 3u);
}

TEST(UiGraph, AnEdgeListThatFailsIsNamedAndTheRestIsDrawn) {
  FakeApi api;
  api.failing.insert("/apis/metrics.smi-spec.io/v1alpha1/namespaces/outside/pods/intruder/edges");
  json g = build(api, "pod");
  ASSERT_EQ(g["errors"].size(), 1u);
  EXPECT_EQ(g["errors"][0], "edges of Pod/outside/intruder: HTTP 503: busy");
  EXPECT_FALSE(edge(g, "Pod/outside/intruder", "Pod/app/server"));
  EXPECT_TRUE(edge(g, "Pod/app/client", "Pod/app/server"));
}

TEST(UiGraph, AListThatFailsIsAnError) {
  FakeApi api;
  api.failing.insert("/apis/metrics.smi-spec.io/v1alpha1/pods");
  int status = 0;
  json g = build(api, "pod", "5m", &status);
  EXPECT_EQ(status, 503);
  EXPECT_EQ(g["error"], "GET /apis/metrics.smi-spec.io/v1alpha1/pods?t=5m: HTTP 503: busy");

  Fetch nothing = [](const std::string&) { return Fetched{0, "", "connection refused"}; };
  g = buildGraph(nothing, GraphRequest{"pod", "5m", "", 2}, &status);
  EXPECT_EQ(status, 502);
  EXPECT_NE(g["error"].get<std::string>().find("connection refused"), std::string::npos);
}

TEST(UiGraph, RefusesKindsAndWindowsTheApiDoesNotHave) {
  FakeApi api;
  int status = 0;
  build(api, "trafficsplit", "5m", &status);
  EXPECT_EQ(status, 400);
  build(api, "pod", "5 minutes", &status);
  EXPECT_EQ(status, 400);
  build(api, "pod", "0s", &status);
  EXPECT_EQ(status, 400);
  EXPECT_TRUE(api.requests.empty());
  EXPECT_EQ(windowSecondsOf("1m"), 60);
  EXPECT_EQ(windowSecondsOf("90s"), 90);
  EXPECT_EQ(windowSecondsOf("1h"), 3600);
  EXPECT_EQ(windowSecondsOf("25h"), -1);
}

TEST(UiGraph, OneNamespaceKeepsItsPeersFromOthers) {
  FakeApi api;
  GraphRequest req{"pod", "5m", "outside", 4};
  int status = 0;
  json g = buildGraph(api.fetch(), req, &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(nodeIds(g), (std::vector<std::string>{"Pod/app/server", "Pod/outside/intruder"}));
  EXPECT_EQ(g["edges"].size(), 1u);
}

// ---- the server ------------------------------------------------------------------

UiConfig config(FakeApi& api, Explain explain = {}) {
  UiConfig c;
  c.fetch = api.fetch();
  c.explain = std::move(explain);
  c.source = "the fake API";
  c.kind = "pod";
  return c;
}

UiRequest get(const std::string& path, int port,
              std::multimap<std::string, std::string> params = {}) {
  return UiRequest{path, std::move(params), "127.0.0.1:" + std::to_string(port)};
}

TEST(UiServer, ServesThePageFromTheBinary) {
  FakeApi api;
  UiServer s(config(api));
  UiResponse r = s.answer(get("/", 0));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("<script src=\"/app.js\">"), std::string::npos);
  EXPECT_EQ(r.body.find("https:"), std::string::npos) << "nothing from elsewhere";
  EXPECT_EQ(r.body.find("//cdn"), std::string::npos);
  UiResponse js = s.answer(get("/app.js", 0));
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_NE(js.body.find("/api/graph"), std::string::npos);
  EXPECT_EQ(js.body.find("https:"), std::string::npos);
  EXPECT_EQ(s.answer(get("/style.css", 0)).content_type, "text/css; charset=utf-8");
  EXPECT_EQ(s.answer(get("/nothing", 0)).status, 404);
}

TEST(UiServer, AnswersOnlyItsOwnHost) {
  FakeApi api;
  UiServer s(config(api));
  for (const char* host : {"evil.example:0", "127.0.0.1:1", "", "127.0.0.1.evil.example:0"}) {
    UiResponse r = s.answer(UiRequest{"/api/graph", {}, host});
    EXPECT_EQ(r.status, 403) << host;
  }
  EXPECT_TRUE(api.requests.empty()) << "a refused request reads nothing";
  EXPECT_EQ(s.answer(UiRequest{"/", {}, "localhost:0"}).status, 200);
}

TEST(UiServer, GraphAndConfig) {
  FakeApi api;
  UiServer s(config(api));
  UiResponse r = s.answer(get("/api/graph", 0, {{"window", "1m"}}));
  ASSERT_EQ(r.status, 200) << r.body;
  json g = json::parse(r.body);
  EXPECT_EQ(g["kind"], "pod") << "the configured kind when the page names none";
  EXPECT_EQ(g["window"], "1m");
  EXPECT_EQ(g["source"], "the fake API");
  EXPECT_EQ(g["edges"].size(), 3u);
  EXPECT_EQ(s.answer(get("/api/graph", 0, {{"kind", "bogus"}})).status, 400);
  EXPECT_EQ(s.answer(get("/api/graph", 0, {{"namespace", "../x"}})).status, 400);
  json c = json::parse(s.answer(get("/api/config", 0)).body);
  EXPECT_EQ(c["kind"], "pod");
  EXPECT_EQ(c["explain"], false);
}

TEST(UiServer, ExplainSaysWhenNothingCanJudge) {
  FakeApi api;
  UiServer s(config(api));
  UiResponse r = s.answer(
      get("/api/explain", 0, {{"from", "app/client"}, {"to", "app/server"}, {"port", "8080"}}));
  ASSERT_EQ(r.status, 200);
  json j = json::parse(r.body);
  EXPECT_EQ(j["available"], false);
  EXPECT_NE(j["reason"].get<std::string>().find("--grpc"), std::string::npos);
}

TEST(UiServer, ExplainAsksWithTheEdgeAndReturnsTheReply) {
  FakeApi api;
  std::vector<ExplainQuery> asked;
  UiServer s(config(api, [&](const ExplainQuery& q) {
    asked.push_back(q);
    ExplainAnswer a;
    a.available = true;
    a.source = "a test";
    a.reply = {{"allowed", false}, {"summary", "denied"}, {"trafficTarget", ""}};
    return a;
  }));
  UiResponse r = s.answer(get("/api/explain", 0, {{"from", "outside/intruder"},
                                                  {"to", "app/server"},
                                                  {"port", "8080"},
                                                  {"proto", "udp"}}));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["available"], true);
  EXPECT_EQ(j["source"], "a test");
  EXPECT_EQ(j["reply"]["allowed"], false);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].from, "outside/intruder");
  EXPECT_EQ(asked[0].to, "app/server");
  EXPECT_EQ(asked[0].port, 8080);
  EXPECT_EQ(asked[0].proto, "udp");

  for (auto params : std::vector<std::multimap<std::string, std::string>>{
           {{"from", "app/client"}, {"to", "app/server"}},                      // no port
           {{"from", "app/client"}, {"to", "server"}, {"port", "80"}},          // not ns/name
           {{"from", "App/x"}, {"to", "app/server"}, {"port", "80"}},           // not a name
           {{"from", "a/b"}, {"to", "c/d"}, {"port", "70000"}},
           {{"from", "a/b"}, {"to", "c/d"}, {"port", "80"}, {"proto", "sctp"}}})
    EXPECT_EQ(s.answer(get("/api/explain", 0, params)).status, 400);
  EXPECT_EQ(asked.size(), 1u);
}

TEST(UiServer, ListensOnLoopbackOnly) {
  FakeApi api;
  UiServer s(config(api));
  Result<int> port = s.bind(0);
  ASSERT_TRUE(port) << port.error();
  std::thread t([&] { s.run(); });
  httplib::Client c("127.0.0.1", *port);
  auto r = c.Get("/api/graph?kind=pod&window=5m");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_NE(r->get_header_value("Content-Security-Policy").find("default-src 'none'"),
            std::string::npos);
  EXPECT_EQ(r->get_header_value("X-Frame-Options"), "DENY");
  EXPECT_EQ(json::parse(r->body)["edges"].size(), 3u);
  // The Host a rebinding page would send.
  auto evil = c.Get("/api/graph", {{"Host", "evil.example:" + std::to_string(*port)}});
  ASSERT_TRUE(evil);
  EXPECT_EQ(evil->status, 403);
  s.stop();
  t.join();
}

}  // namespace
}  // namespace smik::ui
