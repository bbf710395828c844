// --http-rules=enforce: HTTPRouteGroup rules compiled to the kernel judge's
// grants (README: SMI semantics), and explain's verdict on single requests.
#include <gmock/gmock.h>

#include "agent/compile/explain.h"
#include "tests/unit/compile_support.h"

namespace smik::compile {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// prod: server (serving TCP `ports`) and client, both on n1.
std::string httpBase(const std::string& ports = "[{containerPort: 8080}]") {
  return meshedNs("prod") +
         pod("prod", "server-0", "server", "n1", "10.0.0.10",
             "containers: [{name: app, image: x, ports: " + ports + "}]") +
         pod("prod", "client-0", "client", "n1", "10.0.0.20") +
         pod("prod", "other-0", "other", "n1", "10.0.0.30");
}

// specs v1alpha4 HTTPRouteGroup with matches given as YAML flow maps.
std::string routeGroup(const std::string& name, const std::vector<std::string>& matches) {
  std::string y = "---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n"
                  "metadata: {name: " + name + ", namespace: prod}\nspec:\n  matches:\n";
  for (const auto& m : matches) y += "  - " + m + "\n";
  return y;
}

std::string httpRule(const std::string& group, const std::string& matches = "") {
  return "{kind: HTTPRouteGroup, name: " + group +
         (matches.empty() ? "" : ", matches: " + matches) + "}";
}

NodeConfig enforcing() {
  NodeConfig n = node();
  n.http_rules = HttpRulesAtL4::kEnforce;
  return n;
}

const std::string kBooks = routeGroup(
    "books", {"{name: buy, pathRegex: '/books-bought', methods: [GET]}",
              "{name: put, pathRegex: '/books/[0-9]+$', methods: [PUT, POST]}",
              "{name: any, pathRegex: '/ping', methods: ['*']}"});

uint32_t id(const Plan& p, const std::string& sa) { return p.identities.at(sa); }

// Whether the plan's grant for src lets `method path` through, as the kernel
// computes it: patterns[method] & the DFA's accept mask of the path.
bool judged(const Plan& p, const std::string& src, uint16_t port, unsigned method,
            const std::string& path) {
  auto it = p.http.find({id(p, "prod/server"), port});
  if (it == p.http.end()) return false;
  auto g = it->second.grants.find(id(p, src));
  if (g == it->second.grants.end()) return false;
  return abi::any(g->second.patterns[method] & http::matchAll(it->second.dfa, path));
}

TEST(CompileHttp, RuleGrantsItsMethodsAndPathsOnTheServedPorts) {
  const Plan p = compile(stateOf(httpBase() + kBooks +
                                 trafficTarget("prod", "t", "server", "[" + httpRule("books") + "]",
                                               "[" + source("client") + "]")),
                         enforcing());
  // L4: the TCP port that carries the requests, for the granted source only.
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/8080"}));
  ASSERT_EQ(p.http.size(), 1u);
  EXPECT_TRUE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/books-bought"));
  EXPECT_TRUE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/books-bought/2"));  // prefix anchor
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_POST, "/books-bought"));
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/x/books-bought"));
  EXPECT_TRUE(judged(p, "prod/client", 8080, SMIK_HTTP_M_PUT, "/books/12"));
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_PUT, "/books/12/x"));  // $
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/books/12"));
  for (unsigned m = 0; m < SMIK_HTTP_METHODS; ++m)
    EXPECT_TRUE(judged(p, "prod/client", 8080, m, "/ping")) << httpMethodName(m);
  EXPECT_FALSE(judged(p, "prod/other", 8080, SMIK_HTTP_M_GET, "/ping"));
}

TEST(CompileHttp, MatchesNarrowTheRule) {
  const Plan p = compile(
      stateOf(httpBase() + kBooks +
              trafficTarget("prod", "t", "server", "[" + httpRule("books", "[buy]") + "]",
                            "[" + source("client") + "]")),
      enforcing());
  EXPECT_TRUE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/books-bought"));
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/ping"));
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_PUT, "/books/1"));
}

TEST(CompileHttp, RulesAndTargetsAreAdditive) {
  const Plan p = compile(
      stateOf(httpBase() + kBooks +
              trafficTarget("prod", "a", "server", "[" + httpRule("books", "[buy]") + "]",
                            "[" + source("client") + "]") +
              trafficTarget("prod", "b", "server", "[" + httpRule("books", "[put]") + "]",
                            "[" + source("client") + ", " + source("other") + "]")),
      enforcing());
  EXPECT_TRUE(judged(p, "prod/client", 8080, SMIK_HTTP_M_GET, "/books-bought"));
  EXPECT_TRUE(judged(p, "prod/client", 8080, SMIK_HTTP_M_POST, "/books/7"));
  EXPECT_FALSE(judged(p, "prod/other", 8080, SMIK_HTTP_M_GET, "/books-bought"));
  EXPECT_TRUE(judged(p, "prod/other", 8080, SMIK_HTTP_M_POST, "/books/7"));
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/8080",
                                              "prod/other -> prod/server TCP/8080"}));
}

TEST(CompileHttp, EveryServedTcpPortUnlessDestinationPortNarrows) {
  const std::string ports = "[{containerPort: 8080}, {containerPort: 9090}, "
                            "{containerPort: 53, protocol: UDP}]";
  const Plan p = compile(stateOf(httpBase(ports) + kBooks +
                                 trafficTarget("prod", "t", "server", "[" + httpRule("books") + "]",
                                               "[" + source("client") + "]")),
                         enforcing());
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/8080",
                                              "prod/client -> prod/server TCP/9090"}));
  EXPECT_EQ(p.http.size(), 2u);

  const std::string legacy =
      "---\napiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\n"
      "metadata: {name: legacy, namespace: prod}\nspec:\n"
      "  destination: {kind: ServiceAccount, name: server, port: 7000}\n"
      "  rules: [" + httpRule("books") + "]\n  sources: [" + source("client") + "]\n";
  const Plan q = compile(stateOf(httpBase(ports) + kBooks + legacy), enforcing());
  EXPECT_EQ(grants(q), (std::set<std::string>{"prod/client -> prod/server TCP/7000"}));
  EXPECT_TRUE(q.http.count({id(q, "prod/server"), 7000}));
}

TEST(CompileHttp, NoServedPortGrantsNothingWithAWarning) {
  const Plan p = compile(stateOf(httpBase("[]") + kBooks +
                                 trafficTarget("prod", "t", "server", "[" + httpRule("books") + "]",
                                               "[" + source("client") + "]")),
                         enforcing());
  EXPECT_EQ(grants(p), kNone);
  EXPECT_TRUE(p.http.empty());
  EXPECT_THAT(joined(diagnosticsFor(p, ttRef("prod", "t"))), HasSubstr("no TCP containerPort"));
}

// As the kernel judges a request with header lines: candidates by method
// and path, each allowed if its header conditions hold.
bool judgedWith(const Plan& p, const std::string& src, uint16_t port, unsigned method,
                const std::string& path, const std::vector<std::pair<std::string, std::string>>& headers) {
  auto it = p.http.find({id(p, "prod/server"), port});
  if (it == p.http.end()) return false;
  const HttpPortPlan& hp = it->second;
  auto g = hp.grants.find(id(p, src));
  if (g == hp.grants.end() || hp.dfa.states() == 0) return false;
  return hp.allows(g->second.patterns[method], http::matchAll(hp.dfa, path),
                   http::headerConditionsHeld(hp.header_dfa, headers));
}

TEST(CompileHttp, HeaderMatchesGrantOnlyWithTheirHeaders) {
  const std::string group = routeGroup(
      "g", {"{name: android, pathRegex: '/books', methods: [GET], headers: [{User-Agent: '.*Android.*'}]}",
            "{name: admin, pathRegex: '/books', methods: [DELETE], headers: {x-role: admin, x-team: 'a|b'}}",
            "{name: plain, pathRegex: '/ping', methods: [GET]}"});
  const Plan p = compile(
      stateOf(httpBase() + group +
              trafficTarget("prod", "t", "server", "[" + httpRule("g") + "]", "[" + source("client") + "]")),
      enforcing());
  const auto& hp = p.http.at({id(p, "prod/server"), 8080});
  ASSERT_TRUE(hp.error.empty()) << hp.error;
  // names lowercased, conditions sorted; /books twice (two sets of
  // conditions), /ping, and the node's own every-request grant
  ASSERT_EQ(hp.headers.size(), 3u);
  EXPECT_EQ(hp.headers[0].name, "user-agent");
  EXPECT_EQ(hp.patterns.size(), 4u);
  EXPECT_GT(hp.header_dfa.states(), 0u);
  const unsigned kGet = SMIK_HTTP_M_GET, kDelete = SMIK_HTTP_M_DELETE;
  EXPECT_FALSE(judgedWith(p, "prod/client", 8080, kGet, "/books", {}));
  EXPECT_TRUE(judgedWith(p, "prod/client", 8080, kGet, "/books/1", {{"user-agent", "x Android y"}}));
  EXPECT_FALSE(judgedWith(p, "prod/client", 8080, kGet, "/books", {{"user-agent", "iPhone"}}));
  EXPECT_FALSE(judgedWith(p, "prod/client", 8080, kDelete, "/books", {{"user-agent", "Android"}}));
  // every header of a match, together
  EXPECT_TRUE(judgedWith(p, "prod/client", 8080, kDelete, "/books", {{"X-Role", "admin"}, {"x-team", "b"}}));
  EXPECT_FALSE(judgedWith(p, "prod/client", 8080, kDelete, "/books", {{"X-Role", "admin"}}));
  EXPECT_FALSE(judgedWith(p, "prod/client", 8080, kDelete, "/books", {{"X-Role", "admin"}, {"x-team", "ab"}}));
  EXPECT_TRUE(judgedWith(p, "prod/client", 8080, kGet, "/ping", {}));
  EXPECT_THAT(joined(diagnosticsFor(p, ttRef("prod", "t"))), Not(HasSubstr("header")));

  // Only header matches: the port opens at L4, each request needs its headers.
  const Plan q = compile(
      stateOf(httpBase() + group +
              trafficTarget("prod", "t", "server", "[" + httpRule("g", "[android]") + "]",
                            "[" + source("client") + "]")),
      enforcing());
  EXPECT_EQ(grants(q), (std::set<std::string>{"prod/client -> prod/server TCP/8080"}));
  EXPECT_FALSE(judgedWith(q, "prod/client", 8080, kGet, "/ping", {{"user-agent", "Android"}}));
  EXPECT_TRUE(judgedWith(q, "prod/client", 8080, kGet, "/books", {{"user-agent", "Android"}}));
}

TEST(CompileHttp, TooManyHeaderConditionsOnAPortDenyEveryRequestThere) {
  std::vector<std::string> matches;
  for (int i = 0; i <= 32; ++i)
    matches.push_back("{name: m" + std::to_string(i) + ", pathRegex: '/x', headers: [{x-h" +
                      std::to_string(i) + ": a}]}");
  const Plan p = compile(
      stateOf(httpBase() + routeGroup("many", matches) +
              trafficTarget("prod", "t", "server", "[" + httpRule("many") + "]", "[" + source("client") + "]")),
      enforcing());
  const auto& hp = p.http.at({id(p, "prod/server"), 8080});
  EXPECT_THAT(hp.error, HasSubstr("32 header conditions"));
  EXPECT_TRUE(hp.grants.empty());
  EXPECT_THAT(joined(diagnosticsFor(p, ttRef("prod", "t"))), HasSubstr("every request to that port is denied"));
}

TEST(CompileHttp, HeaderNamesAndRegexesTheJudgeCannotReadRejectTheRouteGroup) {
  auto r = model::parseManifests(
      routeGroup("bad", {"{name: n, pathRegex: '/', headers: [{'bad name': x}]}"}), "bad.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].str(), HasSubstr("a header name is a token"));
  r = model::parseManifests(routeGroup("bad", {"{name: n, pathRegex: '/', headers: [{x-a: '(?i)a'}]}"}),
                            "bad.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].str(), HasSubstr("HTTPRouteGroup prod/bad"));
  EXPECT_THAT(r.errors[0].str(), HasSubstr("kernel's HTTP judge cannot run it"));
}

TEST(CompileHttp, TcpRouteForTheSameSourceStillGrantsTheWholePort) {
  const Plan p = compile(
      stateOf(httpBase() + kBooks + tcpRoute("prod", "raw", "[8080]") +
              trafficTarget("prod", "h", "server", "[" + httpRule("books", "[buy]") + "]",
                            "[" + source("client") + ", " + source("other") + "]") +
              trafficTarget("prod", "t", "server", "[" + rule("TCPRoute", "raw") + "]",
                            "[" + source("other") + "]")),
      enforcing());
  EXPECT_FALSE(judged(p, "prod/client", 8080, SMIK_HTTP_M_DELETE, "/anything"));
  EXPECT_TRUE(judged(p, "prod/other", 8080, SMIK_HTTP_M_DELETE, "/anything"));
  EXPECT_TRUE(judged(p, "prod/other", 8080, SMIK_HTTP_M_GET, "/books-bought"));
}

TEST(CompileHttp, HostTrafficPassesUnjudgedWhenAllowed) {
  const std::string yaml = httpBase() + kBooks +
                           trafficTarget("prod", "t", "server", "[" + httpRule("books", "[buy]") + "]",
                                         "[" + source("client") + "]");
  const Plan p = compile(stateOf(yaml), enforcing());
  const auto& hp = p.http.at({id(p, "prod/server"), 8080});
  ASSERT_TRUE(hp.grants.count(SMIK_ID_HOST));  // kubelet probes
  EXPECT_TRUE(abi::any(hp.grants.at(SMIK_ID_HOST).patterns[SMIK_HTTP_M_GET] & http::matchAll(hp.dfa, "/healthz")));
  NodeConfig judged_host = enforcing();
  judged_host.host_traffic = HostTraffic::kPolicy;
  const Plan q = compile(stateOf(yaml), judged_host);
  EXPECT_FALSE(q.http.at({id(q, "prod/server"), 8080}).grants.count(SMIK_ID_HOST));
}

TEST(CompileHttp, OtherModesKeepTheirL4Projection) {
  const std::string yaml = httpBase() + kBooks +
                           trafficTarget("prod", "t", "server", "[" + httpRule("books") + "]",
                                         "[" + source("client") + "]");
  NodeConfig deny = node();
  EXPECT_EQ(grants(compile(stateOf(yaml), deny)), kNone);
  EXPECT_TRUE(compile(stateOf(yaml), deny).http.empty());
  NodeConfig allow = node();
  allow.http_rules = HttpRulesAtL4::kGrantAllTcp;
  EXPECT_EQ(grants(compile(stateOf(yaml), allow)),
            (std::set<std::string>{"prod/client -> prod/server TCP/*"}));
}

TEST(CompileHttp, PatternsOverTheDfaBudgetDenyEveryRequestOnThePort) {
  // Each regex alone fits; together their DFA does not.
  const std::vector<std::string> matches = {"{name: a, pathRegex: '.*a.{10}', methods: [GET]}",
                                            "{name: b, pathRegex: '.*b.{10}', methods: [GET]}"};
  const Plan p = compile(
      stateOf(httpBase() + routeGroup("big", matches) +
              trafficTarget("prod", "t", "server", "[" + httpRule("big") + "]", "[" + source("client") + "]")),
      enforcing());
  const auto& hp = p.http.at({id(p, "prod/server"), 8080});
  EXPECT_FALSE(hp.error.empty());
  EXPECT_EQ(hp.dfa.states(), 0u);
  EXPECT_TRUE(hp.grants.empty());
  EXPECT_THAT(joined(diagnosticsFor(p, ttRef("prod", "t"))), HasSubstr("every request to that port is denied"));
}

TEST(CompileHttp, UnsupportedRegexRejectsTheRouteGroup) {
  const auto r = model::parseManifests(
      routeGroup("bad", {"{name: back, pathRegex: '/(a)\\1', methods: [GET]}"}), "bad.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].str(), HasSubstr("HTTPRouteGroup prod/bad"));
  EXPECT_THAT(r.errors[0].str(), HasSubstr("pathRegex"));
  EXPECT_THAT(r.errors[0].str(), HasSubstr("kernel's HTTP judge cannot run it"));
}

TEST(CompileHttp, ExplainNamesTheDecidingMatch) {
  const std::string yaml = httpBase() + kBooks +
                           trafficTarget("prod", "t", "server", "[" + httpRule("books", "[buy]") + "]",
                                         "[" + source("client") + "]");
  const auto state = stateOf(yaml);
  Explanation e;
  std::string err;
  HttpRequest get{"GET", "/books-bought?x=1"};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &get)) << err;
  EXPECT_TRUE(e.allowed) << e.summary;
  EXPECT_EQ(e.traffic_target, "prod/t");
  EXPECT_EQ(e.http_match, "buy");
  HttpRequest other{"GET", "/books"};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &other));
  EXPECT_FALSE(e.allowed);
  EXPECT_THAT(e.summary, HasSubstr("DENY (403)"));
  EXPECT_THAT(joined(e.details), HasSubstr("does not match regex \"/books-bought\""));
  HttpRequest post{"POST", "/books-bought"};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &post));
  EXPECT_FALSE(e.allowed);
  EXPECT_THAT(joined(e.details), HasSubstr("method POST not granted"));
  // A source with no grant is stopped at L4.
  ASSERT_TRUE(explain(state, enforcing(), "prod/other-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &get));
  EXPECT_FALSE(e.allowed);
  EXPECT_THAT(e.summary, HasSubstr("DENY"));
  EXPECT_THAT(e.summary, Not(HasSubstr("403")));
}

TEST(CompileHttp, ExplainJudgesTheHeadersItIsGiven) {
  const std::string yaml =
      httpBase() +
      routeGroup("g", {"{name: android, pathRegex: '/books', methods: [GET], headers: [{user-agent: '.*Android.*'}]}"}) +
      trafficTarget("prod", "t", "server", "[" + httpRule("g") + "]", "[" + source("client") + "]");
  const auto state = stateOf(yaml);
  Explanation e;
  std::string err;
  HttpRequest with{"GET", "/books", {{"User-Agent", "Android 14"}}};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &with)) << err;
  EXPECT_TRUE(e.allowed) << e.summary;
  EXPECT_EQ(e.http_match, "android");
  HttpRequest without{"GET", "/books"};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &without));
  EXPECT_FALSE(e.allowed);
  EXPECT_THAT(joined(e.details), HasSubstr("header user-agent absent"));
  HttpRequest wrong{"GET", "/books", {{"user-agent", "iPhone"}}};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &wrong));
  EXPECT_FALSE(e.allowed);
  EXPECT_THAT(joined(e.details), HasSubstr("does not match regex \".*Android.*\" (the whole value)"));
  HttpRequest twice{"GET", "/books", {{"user-agent", "Android"}, {"user-agent", "iPhone"}}};
  ASSERT_TRUE(explain(state, enforcing(), "prod/client-0", "prod/server-0", 8080, Proto::kTcp, &e,
                      &err, nullptr, &twice));
  EXPECT_FALSE(e.allowed);
  EXPECT_THAT(joined(e.details), HasSubstr("not every one of its 2 lines"));
}

}  // namespace
}  // namespace smik::compile
