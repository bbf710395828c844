#include "agent/model/parse.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <string>

namespace smik::model {
namespace {

ParseResult parse(std::string_view text) { return parseManifests(text, "t.yaml"); }

std::string errorsOf(const ParseResult& r) {
  std::string s;
  for (const ParseError& e : r.errors) s += e.str() + "\n";
  return s;
}

template <class T>
std::vector<T> all(const ParseResult& r) {
  std::vector<T> out;
  for (const Object& o : r.objects)
    if (const T* t = std::get_if<T>(&o)) out.push_back(*t);
  return out;
}

// The single object `text` parses to; fails the test on anything else.
template <class T>
T one(std::string_view text) {
  const ParseResult r = parse(text);
  EXPECT_TRUE(r.errors.empty()) << errorsOf(r);
  const std::vector<T> objs = all<T>(r);
  EXPECT_EQ(r.objects.size(), 1u);
  EXPECT_EQ(objs.size(), 1u);
  return objs.empty() ? T{} : objs[0];
}

// The single error `text` produces, as ParseError::str().
std::string error(std::string_view text) {
  const ParseResult r = parse(text);
  EXPECT_TRUE(r.objects.empty());
  EXPECT_EQ(r.errors.size(), 1u) << errorsOf(r);
  return r.errors.empty() ? "" : r.errors[0].str();
}

}  // namespace

void PrintTo(const ObjectRef& r, std::ostream* os) { *os << "ObjectRef(" << r.str() << ")"; }

namespace {

#define EXPECT_CONTAINS(haystack, needle)                          \
  do {                                                             \
    const std::string h_ = (haystack);                             \
    EXPECT_NE(h_.find(needle), std::string::npos) << "in: " << h_; \
  } while (0)

// ---- objects.cpp ------------------------------------------------------------

TEST(Objects, RefAndErrorStrings) {
  EXPECT_EQ((ObjectRef{"TrafficTarget", "default", "foo"}).str(), "TrafficTarget default/foo");
  EXPECT_EQ((ObjectRef{"Namespace", "", "prod"}).str(), "Namespace prod");
  EXPECT_EQ((ParseError{"a.yaml", {"Pod", "ns", "p"}, "bad"}).str(), "a.yaml: Pod ns/p: bad");
  EXPECT_EQ((ParseError{"a.yaml", {}, "bad"}).str(), "a.yaml: bad");
  EXPECT_STREQ(protoName(Proto::kTcp), "TCP");
  EXPECT_STREQ(protoName(Proto::kUdp), "UDP");
}

TEST(Objects, KindRefAndClusterStateKeys) {
  L4Route udp;
  udp.meta = {"r", "ns", {}, ""};
  udp.proto = Proto::kUdp;
  L4Route tcp = udp;
  tcp.proto = Proto::kTcp;
  tcp.ports = {80};
  EXPECT_EQ(kindOf(udp), "UDPRoute");
  EXPECT_EQ(kindOf(tcp), "TCPRoute");
  EXPECT_EQ(kindOf(HttpRouteGroup{}), "HTTPRouteGroup");
  EXPECT_EQ(refOf(udp), (ObjectRef{"UDPRoute", "ns", "r"}));

  ClusterState s;
  s.add(Namespace{{"prod", "", {}, ""}});
  s.add(ServiceAccount{{"sa", "prod", {}, ""}});
  s.add(udp);
  s.add(tcp);
  tcp.ports = {443};
  s.add(tcp);  // upsert
  TrafficTarget tt;
  tt.meta = {"tt", "prod", {}, ""};
  s.add(tt);
  s.add(Pod{{"p", "prod", {}, ""}, "sa", "n1", {"10.0.0.1"}, "Running", false});
  s.add(HttpRouteGroup{{"h", "prod", {}, ""}, {}});
  EXPECT_EQ(s.namespaces.count("prod"), 1u);
  EXPECT_EQ(s.service_accounts.count("prod/sa"), 1u);
  EXPECT_EQ(s.pods.count("prod/p"), 1u);
  EXPECT_EQ(s.traffic_targets.count("prod/tt"), 1u);
  EXPECT_EQ(s.http_route_groups.count("prod/h"), 1u);
  ASSERT_EQ(s.tcp_routes.size(), 1u);
  EXPECT_EQ(s.tcp_routes.at("ns/r").ports, std::vector<uint16_t>{443});
  ASSERT_EQ(s.udp_routes.size(), 1u);
  EXPECT_TRUE(s.udp_routes.at("ns/r").ports.empty());
}

TEST(Objects, NewKindsInClusterState) {
  Service svc;
  svc.meta = {"web", "shop", {}, ""};
  EndpointSlice es;
  es.meta = {"web-abc12", "shop", {}, ""};
  TrafficSplit ts;
  ts.meta = {"split", "shop", {}, ""};
  EXPECT_EQ(kindOf(svc), "Service");
  EXPECT_EQ(kindOf(es), "EndpointSlice");
  EXPECT_EQ(kindOf(ts), "TrafficSplit");
  EXPECT_EQ(refOf(svc), (ObjectRef{"Service", "shop", "web"}));
  EXPECT_EQ(refOf(es), (ObjectRef{"EndpointSlice", "shop", "web-abc12"}));
  EXPECT_EQ(refOf(ts), (ObjectRef{"TrafficSplit", "shop", "split"}));

  ClusterState s;
  s.add(svc);
  s.add(es);
  s.add(ts);
  ts.backends = {{"web-v2", 5}};
  s.add(ts);  // upsert
  ASSERT_EQ(s.services.count("shop/web"), 1u);
  ASSERT_EQ(s.endpoint_slices.count("shop/web-abc12"), 1u);
  ASSERT_EQ(s.traffic_splits.size(), 1u);
  ASSERT_EQ(s.traffic_splits.at("shop/split").backends.size(), 1u);
  EXPECT_EQ(s.traffic_splits.at("shop/split").backends[0].weight, 5);
  EXPECT_TRUE(s.pods.empty());
}

// ---- TrafficTarget ----------------------------------------------------------

TEST(TrafficTarget, V1alpha1TopLevelWithPort) {
  const auto tt = one<TrafficTarget>(R"(
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: tt, namespace: prod}
destination: {kind: ServiceAccount, name: server, port: 8080}
specs:
- kind: HTTPRouteGroup
  name: routes
  matches: [metrics]
- kind: TCPRoute
  name: tcp
sources:
- {kind: ServiceAccount, name: client, namespace: other}
- {kind: ServiceAccount, name: local}
)");
  EXPECT_EQ(tt.original_version, "v1alpha1");
  EXPECT_EQ(tt.meta.ns, "prod");
  EXPECT_EQ(tt.destination.kind, "ServiceAccount");
  EXPECT_EQ(tt.destination.name, "server");
  EXPECT_EQ(tt.destination.ns, "prod");
  EXPECT_EQ(tt.legacy_port, 8080);
  ASSERT_EQ(tt.rules.size(), 2u);
  EXPECT_EQ(tt.rules[0].kind, "HTTPRouteGroup");
  EXPECT_EQ(tt.rules[0].name, "routes");
  EXPECT_EQ(tt.rules[0].matches, std::vector<std::string>{"metrics"});
  EXPECT_EQ(tt.rules[1].kind, "TCPRoute");
  EXPECT_TRUE(tt.rules[1].matches.empty());
  ASSERT_EQ(tt.sources.size(), 2u);
  EXPECT_EQ(tt.sources[0].ns, "other");
  EXPECT_EQ(tt.sources[1].ns, "prod");
}

TEST(TrafficTarget, V1alpha1WithoutPortMeansAllPorts) {
  const auto tt = one<TrafficTarget>(R"(
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: tt}
destination: {kind: ServiceAccount, name: server}
)");
  EXPECT_FALSE(tt.legacy_port.has_value());
  EXPECT_TRUE(tt.rules.empty());
  EXPECT_TRUE(tt.sources.empty());
}

constexpr const char* kV1alpha2 = R"(
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: tt, namespace: prod}
spec:
  destination: {kind: ServiceAccount, name: server, port: PORT}
  rules: [{kind: TCPRoute, name: tcp}]
  sources: [{kind: ServiceAccount, name: client}]
)";

std::string withPort(const std::string& port) {
  std::string s = kV1alpha2;
  return s.replace(s.find("PORT"), 4, port);
}

TEST(TrafficTarget, V1alpha2PortAsNumberAndString) {
  for (const char* port : {"9090", "\"9090\"", "'9090'"}) {
    const auto tt = one<TrafficTarget>(withPort(port));
    EXPECT_EQ(tt.original_version, "v1alpha2");
    EXPECT_EQ(tt.legacy_port, 9090) << port;
    EXPECT_EQ(tt.destination.ns, "prod");
    ASSERT_EQ(tt.rules.size(), 1u);
    EXPECT_EQ(tt.rules[0].kind, "TCPRoute");
    ASSERT_EQ(tt.sources.size(), 1u);
    EXPECT_EQ(tt.sources[0].ns, "prod");
  }
  EXPECT_FALSE(one<TrafficTarget>(withPort("null")).legacy_port.has_value());
}

TEST(TrafficTarget, V1alpha2BadPorts) {
  EXPECT_CONTAINS(error(withPort("0")), "spec.destination.port: port 0 out of range 1..65535");
  EXPECT_CONTAINS(error(withPort("70000")), "port 70000 out of range");
  EXPECT_CONTAINS(error(withPort("\"http\"")), "spec.destination.port: expected an integer");
  EXPECT_CONTAINS(error(withPort("80.5")), "spec.destination.port: expected an integer");
  EXPECT_CONTAINS(error(withPort("[80]")), "spec.destination.port: expected an integer");
  EXPECT_CONTAINS(error(withPort("99999999999999999999999")), "out of range");
}

TEST(TrafficTarget, V1alpha2RulesAndSourcesOptional) {
  const auto tt = one<TrafficTarget>(R"(
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: tt}
spec:
  destination: {kind: ServiceAccount, name: server}
)");
  EXPECT_EQ(tt.destination.ns, "default");
  EXPECT_TRUE(tt.rules.empty());
  EXPECT_TRUE(tt.sources.empty());
}

constexpr const char* kV1alpha3 = R"(
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: tt
  namespace: prod
  labels: {team: a}
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  destination: {kind: ServiceAccount, name: server, namespace: prod}
  rules:
  - {kind: TCPRoute, name: tcp}
  - {kind: UDPRoute, name: udp}
  - {kind: HTTPRouteGroup, name: http, matches: [a, b]}
  sources:
  - {kind: ServiceAccount, name: client}
  - {kind: ServiceAccount, name: other, namespace: ns2}
)";

TEST(TrafficTarget, V1alpha3) {
  const auto tt = one<TrafficTarget>(kV1alpha3);
  EXPECT_EQ(tt.original_version, "v1alpha3");
  EXPECT_EQ(tt.meta.name, "tt");
  EXPECT_EQ(tt.meta.labels, (std::map<std::string, std::string>{{"team", "a"}}));
  EXPECT_EQ(tt.meta.creation_timestamp, "2024-05-01T10:00:00Z");
  EXPECT_EQ(tt.destination.name, "server");
  EXPECT_FALSE(tt.legacy_port.has_value());
  ASSERT_EQ(tt.rules.size(), 3u);
  EXPECT_EQ(tt.rules[1].kind, "UDPRoute");
  EXPECT_EQ(tt.rules[2].matches, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(tt.sources.size(), 2u);
  EXPECT_EQ(tt.sources[0].ns, "prod");
  EXPECT_EQ(tt.sources[1].ns, "ns2");
}

std::string v1alpha3Spec(const std::string& spec) {
  return "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n"
         "metadata: {name: tt}\nspec:\n" +
         spec;
}

TEST(TrafficTarget, V1alpha3EmptyListsAreValidMissingKeysAreNot) {
  const auto tt = one<TrafficTarget>(
      v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n  rules: []\n  sources: []\n"));
  EXPECT_TRUE(tt.rules.empty());
  EXPECT_TRUE(tt.sources.empty());

  EXPECT_EQ(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n  sources: []\n")),
            "t.yaml: TrafficTarget default/tt: missing required field spec.rules");
  EXPECT_EQ(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n  rules: []\n")),
            "t.yaml: TrafficTarget default/tt: missing required field spec.sources");
  EXPECT_CONTAINS(error(v1alpha3Spec("  rules: []\n  sources: []\n")),
                  "missing required field spec.destination");
  EXPECT_CONTAINS(error("apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n"
                        "metadata: {name: tt}\n"),
                  "missing required field spec");
}

TEST(TrafficTarget, V1alpha3DestinationPortIsPrunedNotApplied) {
  const auto tt = one<TrafficTarget>(
      v1alpha3Spec("  destination: {kind: ServiceAccount, name: s, port: \"9091\"}\n  rules: []\n"
                   "  sources: []\n"));
  EXPECT_FALSE(tt.legacy_port.has_value());
}

TEST(TrafficTarget, SubjectAndRuleKinds) {
  EXPECT_EQ(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n  rules: []\n"
                               "  sources: [{kind: Group, name: admins}]\n")),
            "t.yaml: TrafficTarget default/tt: spec.sources[0].kind: unsupported subject kind "
            "\"Group\" (ServiceAccount, or Host for the node itself)");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: IdentityBinding, name: s}\n"
                                     "  rules: []\n  sources: []\n")),
                  "spec.destination.kind: unsupported subject kind \"IdentityBinding\"");
  EXPECT_EQ(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                               "  rules: [{kind: Foo, name: x}]\n  sources: []\n")),
            "t.yaml: TrafficTarget default/tt: spec.rules[0].kind: unsupported rule kind \"Foo\"");
  EXPECT_CONTAINS(error("apiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\n"
                        "metadata: {name: tt}\nspec:\n"
                        "  destination: {kind: ServiceAccount, name: s}\n"
                        "  rules: [{kind: UDPRoute, name: u}]\n"),
                  "spec.rules[0].kind: unsupported rule kind \"UDPRoute\"");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount}\n  rules: []\n"
                                     "  sources: []\n")),
                  "missing required field spec.destination.name");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                     "  rules: [{kind: TCPRoute}]\n  sources: []\n")),
                  "missing required field spec.rules[0].name");
}

TEST(TrafficTarget, WrongTypes) {
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                     "  rules: {}\n  sources: []\n")),
                  "spec.rules: expected a list, got a map");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: [a]\n  rules: []\n  sources: []\n")),
                  "spec.destination: expected a map, got a list");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                     "  rules: [tcp]\n  sources: []\n")),
                  "spec.rules[0]: expected a map, got \"tcp\"");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: 5}\n"
                                     "  rules: []\n  sources: []\n")),
                  "spec.destination.name: expected a string, got 5");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                     "  rules: [{kind: TCPRoute, name: t, matches: a}]\n"
                                     "  sources: []\n")),
                  "spec.rules[0].matches: expected a list");
  EXPECT_CONTAINS(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                     "  rules: []\n  sources: [{kind: ServiceAccount, name: c, "
                                     "namespace: {}}]\n")),
                  "spec.sources[0].namespace: expected a string, got a map");
}

// ---- TCPRoute / UDPRoute ----------------------------------------------------

std::string route(const std::string& kind, const std::string& version, const std::string& spec) {
  return "apiVersion: specs.smi-spec.io/" + version + "\nkind: " + kind +
         "\nmetadata: {name: r, namespace: db}\n" + spec;
}

TEST(L4Route, TcpV1alpha4Ports) {
  const auto r =
      one<L4Route>(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: [3306, 6446]}}"));
  EXPECT_EQ(r.proto, Proto::kTcp);
  EXPECT_EQ(r.meta.ns, "db");
  EXPECT_EQ(r.ports, (std::vector<uint16_t>{3306, 6446}));
  EXPECT_EQ(
      one<L4Route>(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: [1, 65535]}}")).ports,
      (std::vector<uint16_t>{1, 65535}));
}

TEST(L4Route, TcpV1alpha4EmptyListIsAllPorts) {
  EXPECT_TRUE(
      one<L4Route>(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: []}}")).ports.empty());
}

TEST(L4Route, TcpV1alpha4MissingPortsIsAnError) {
  EXPECT_EQ(error(route("TCPRoute", "v1alpha4", "spec: {matches: {}}")),
            "t.yaml: TCPRoute db/r: missing required field spec.matches.ports");
  EXPECT_CONTAINS(error(route("TCPRoute", "v1alpha4", "spec: {}")),
                  "missing required field spec.matches.ports");
  EXPECT_CONTAINS(error(route("TCPRoute", "v1alpha4", "")),
                  "missing required field spec.matches.ports");
  EXPECT_CONTAINS(error(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: }}")),
                  "missing required field spec.matches.ports");
}

TEST(L4Route, BadPorts) {
  const auto bad = [](const std::string& ports) {
    return error(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: " + ports + "}}"));
  };
  EXPECT_EQ(bad("[80, 0]"),
            "t.yaml: TCPRoute db/r: spec.matches.ports[1]: port 0 out of range 1..65535");
  EXPECT_CONTAINS(bad("[70000]"), "spec.matches.ports[0]: port 70000 out of range 1..65535");
  EXPECT_CONTAINS(bad("[-1]"), "spec.matches.ports[0]: port -1 out of range");
  EXPECT_CONTAINS(bad("\"abc\""), "spec.matches.ports: expected a list, got \"abc\"");
  EXPECT_CONTAINS(bad("[abc]"), "spec.matches.ports[0]: expected an integer, got \"abc\"");
  EXPECT_CONTAINS(bad("[\"80\"]"), "spec.matches.ports[0]: expected an integer, got \"80\"");
  EXPECT_CONTAINS(bad("[8.5]"), "spec.matches.ports[0]: expected an integer, got 8.5");
  EXPECT_CONTAINS(bad("[true]"), "spec.matches.ports[0]: expected an integer, got true");
  EXPECT_CONTAINS(bad("[[80]]"), "spec.matches.ports[0]: expected an integer, got a list");
  EXPECT_CONTAINS(error(route("TCPRoute", "v1alpha4", "spec: {matches: [{ports: [80]}]}")),
                  "spec.matches: expected a map, got a list");
}

TEST(L4Route, OlderTcpRoutesMeanAllPorts) {
  EXPECT_TRUE(one<L4Route>(route("TCPRoute", "v1alpha1", "")).ports.empty());
  EXPECT_TRUE(one<L4Route>(route("TCPRoute", "v1alpha2", "spec: garbage")).ports.empty());
  const auto r = one<L4Route>(route("TCPRoute", "v1alpha3", "spec: {matches: {ports: [80]}}"));
  EXPECT_EQ(r.proto, Proto::kTcp);
  EXPECT_TRUE(r.ports.empty());
}

TEST(L4Route, UdpRoute) {
  const auto r = one<L4Route>(route("UDPRoute", "v1alpha4", "spec: {matches: {ports: [53]}}"));
  EXPECT_EQ(r.proto, Proto::kUdp);
  EXPECT_EQ(r.ports, std::vector<uint16_t>{53});
  EXPECT_TRUE(
      one<L4Route>(route("UDPRoute", "v1alpha4", "spec: {matches: {ports: []}}")).ports.empty());
  EXPECT_CONTAINS(error(route("UDPRoute", "v1alpha4", "spec: {matches: {ports: [0]}}")),
                  "port 0 out of range");
  EXPECT_EQ(error(route("UDPRoute", "v1alpha3", "spec: {matches: {ports: [53]}}")),
            "t.yaml: UDPRoute db/r: unsupported apiVersion \"specs.smi-spec.io/v1alpha3\" for "
            "UDPRoute");
}

// ---- HTTPRouteGroup ---------------------------------------------------------

TEST(HttpRouteGroup, HeadersAsListAndAsMap) {
  const char* list_form = R"(
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g}
spec:
  matches:
  - name: android
    pathRegex: /api/.*
    methods: [GET, HEAD]
    headers:
    - user-agent: ".*Android.*"
    - cookie: "type=insider"
)";
  const char* map_form = R"(
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g}
spec:
  matches:
  - name: android
    pathRegex: /api/.*
    methods: [GET, HEAD]
    headers:
      user-agent: ".*Android.*"
      cookie: "type=insider"
)";
  for (const char* text : {list_form, map_form}) {
    const auto g = one<HttpRouteGroup>(text);
    EXPECT_EQ(g.meta.ns, "default");
    ASSERT_EQ(g.matches.size(), 1u);
    const HttpMatch& m = g.matches[0];
    EXPECT_EQ(m.name, "android");
    EXPECT_EQ(m.path_regex, "/api/.*");
    EXPECT_EQ(m.methods, (std::vector<std::string>{"GET", "HEAD"}));
    EXPECT_EQ(m.headers, (std::vector<std::pair<std::string, std::string>>{
                             {"user-agent", ".*Android.*"}, {"cookie", "type=insider"}}));
  }
}

TEST(HttpRouteGroup, MatchesLocationDependsOnVersion) {
  const auto g = one<HttpRouteGroup>(
      "apiVersion: specs.smi-spec.io/v1alpha1\nkind: HTTPRouteGroup\nmetadata: {name: g}\n"
      "matches: [{name: all}]\n");
  ASSERT_EQ(g.matches.size(), 1u);
  EXPECT_EQ(g.matches[0].name, "all");
  EXPECT_TRUE(g.matches[0].path_regex.empty());
  EXPECT_TRUE(g.matches[0].methods.empty());

  EXPECT_CONTAINS(error("apiVersion: specs.smi-spec.io/v1alpha2\nkind: HTTPRouteGroup\n"
                        "metadata: {name: g}\nspec: {matches: [{name: all}]}\n"),
                  "missing required field matches");
  EXPECT_CONTAINS(error("apiVersion: specs.smi-spec.io/v1alpha3\nkind: HTTPRouteGroup\n"
                        "metadata: {name: g}\nmatches: [{name: all}]\n"),
                  "missing required field spec.matches");
}

TEST(HttpRouteGroup, Errors) {
  const auto bad = [](const std::string& match) {
    return error(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n"
        "metadata: {name: g}\nspec:\n  matches:\n  - " +
        match + "\n");
  };
  EXPECT_CONTAINS(bad("{pathRegex: /x}"), "missing required field spec.matches[0].name");
  EXPECT_CONTAINS(bad("{name: m, methods: [FETCH]}"),
                  "spec.matches[0].methods[0]: unsupported method \"FETCH\"");
  EXPECT_CONTAINS(bad("{name: m, methods: GET}"), "spec.matches[0].methods: expected a list");
  EXPECT_CONTAINS(bad("{name: m, headers: x}"),
                  "spec.matches[0].headers: expected a list or a map, got \"x\"");
  EXPECT_CONTAINS(bad("{name: m, headers: [x]}"),
                  "spec.matches[0].headers[0]: expected a map, got \"x\"");
  EXPECT_CONTAINS(bad("{name: m, headers: {a: [b]}}"),
                  "spec.matches[0].headers.a: expected a string, got a list");
  EXPECT_CONTAINS(bad("{name: m, pathRegex: [x]}"), "spec.matches[0].pathRegex: expected a string");
}

// ---- core kinds, metadata, defaults -----------------------------------------

TEST(Pod, Fields) {
  const auto p = one<Pod>(R"(
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  serviceAccountName: web
  serviceAccount: legacy
  nodeName: node-a
  hostNetwork: false
status:
  phase: Running
  podIP: 10.0.0.7
  podIPs:
  - ip: 10.0.0.7
  - ip: fd00::7
)");
  EXPECT_EQ(p.meta.name, "web-1");
  EXPECT_EQ(p.meta.ns, "shop");
  EXPECT_EQ(p.meta.labels.at("app"), "web");
  EXPECT_EQ(p.service_account, "web");
  EXPECT_EQ(p.node_name, "node-a");
  EXPECT_FALSE(p.host_network);
  EXPECT_EQ(p.phase, "Running");
  EXPECT_EQ(p.ips, (std::vector<std::string>{"10.0.0.7", "fd00::7"}));
}

TEST(Pod, FallbacksAndDefaults) {
  const auto deprecated = one<Pod>(
      "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
      "spec: {serviceAccount: old, hostNetwork: true}\nstatus: {podIP: 192.168.1.2}\n");
  EXPECT_EQ(deprecated.meta.ns, "default");
  EXPECT_EQ(deprecated.service_account, "old");
  EXPECT_TRUE(deprecated.host_network);
  EXPECT_EQ(deprecated.ips, std::vector<std::string>{"192.168.1.2"});

  const auto bare = one<Pod>("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n");
  EXPECT_EQ(bare.service_account, "default");
  EXPECT_TRUE(bare.node_name.empty());
  EXPECT_TRUE(bare.phase.empty());
  EXPECT_TRUE(bare.ips.empty());
  EXPECT_FALSE(bare.host_network);

  const auto pending = one<Pod>(
      "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {phase: Pending, podIP: \"\"}\n");
  EXPECT_TRUE(pending.ips.empty());
}

TEST(Pod, Errors) {
  EXPECT_EQ(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.256}\n"),
            "t.yaml: Pod default/p: status.podIP: invalid IP address \"10.0.0.256\"");
  EXPECT_CONTAINS(
      error(
          "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{ip: 'fd00::zz'}]}\n"),
      "status.podIPs[0].ip: invalid IP address \"fd00::zz\"");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{}]}\n"),
                  "missing required field status.podIPs[0].ip");
  EXPECT_CONTAINS(
      error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: yes}\n"),
      "spec.hostNetwork: expected a boolean, got \"yes\"");
  EXPECT_CONTAINS(
      error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: \"true\"}\n"),
      "spec.hostNetwork: expected a boolean");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: [a]\n"),
                  "spec: expected a map, got a list");
}

TEST(Pod, ContainerPorts) {
  const auto p = one<Pod>(R"(
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 53, protocol: UDP}
    - {name: sctp, containerPort: 9999, protocol: SCTP}
    - {name: dns-tcp, containerPort: 53, protocol: TCP}
  - name: no-ports
  - name: sidecar
    ports: [{name: admin, containerPort: 15000, protocol: ""}]
)");
  ASSERT_EQ(p.container_ports.size(), 4u);  // the SCTP port is dropped
  EXPECT_EQ(p.container_ports[0].name, "http");
  EXPECT_EQ(p.container_ports[0].port, 8080);
  EXPECT_EQ(p.container_ports[0].proto, Proto::kTcp);
  EXPECT_EQ(p.container_ports[1].name, "");
  EXPECT_EQ(p.container_ports[1].port, 53);
  EXPECT_EQ(p.container_ports[1].proto, Proto::kUdp);
  EXPECT_EQ(p.container_ports[2].name, "dns-tcp");
  EXPECT_EQ(p.container_ports[2].proto, Proto::kTcp);
  EXPECT_EQ(p.container_ports[3].name, "admin");
  EXPECT_EQ(p.container_ports[3].port, 15000);
  EXPECT_EQ(p.container_ports[3].proto, Proto::kTcp);
  EXPECT_TRUE(one<Pod>("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").container_ports.empty());
}

TEST(Pod, ContainerPortErrors) {
  const auto bad = [](const std::string& port) {
    return error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - {name: a}\n  - name: b\n    ports: [" +
        port + "]\n");
  };
  EXPECT_EQ(
      bad("{name: http}"),
      "t.yaml: Pod default/p: missing required field spec.containers[1].ports[0].containerPort");
  EXPECT_CONTAINS(bad("{containerPort: 0}"),
                  "spec.containers[1].ports[0].containerPort: port 0 out of range 1..65535");
  EXPECT_CONTAINS(bad("{containerPort: 65536}"), "port 65536 out of range 1..65535");
  EXPECT_CONTAINS(bad("{containerPort: \"80\"}"),
                  "spec.containers[1].ports[0].containerPort: expected an integer, got \"80\"");
  EXPECT_CONTAINS(bad("{containerPort: 80, protocol: HTTP}"),
                  "spec.containers[1].ports[0].protocol: unsupported protocol \"HTTP\" "
                  "(TCP, UDP or SCTP)");
  EXPECT_CONTAINS(bad("{containerPort: 80, protocol: tcp}"), "unsupported protocol \"tcp\"");
  // An SCTP port is dropped, but still has to be a port.
  EXPECT_CONTAINS(bad("{containerPort: 0, protocol: SCTP}"), "port 0 out of range");
  EXPECT_CONTAINS(bad("{containerPort: 80, name: [x]}"),
                  "spec.containers[1].ports[0].name: expected a string, got a list");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {}}\n"),
                  "spec.containers: expected a list, got a map");
}

// ---- Service ----------------------------------------------------------------

TEST(Service, Fields) {
  const auto svc = one<Service>(R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:10:96::a"]
  selector: {app: web, tier: "1"}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: "8443", protocol: TCP}
  - {name: grpc, port: 9090, targetPort: grpc-port}
  - {name: dns, port: 53, protocol: UDP}
  - {name: sctp, port: 3868, protocol: SCTP}
  - {port: 8000, targetPort: 0}
  - {port: 8001, targetPort: ""}
  - {port: 8002, targetPort: null, nodePort: 30002}
)");
  EXPECT_EQ(svc.meta.ns, "shop");
  EXPECT_EQ(svc.meta.labels.at("app"), "web");
  EXPECT_EQ(svc.type, "NodePort");
  EXPECT_EQ(svc.cluster_ips, (std::vector<std::string>{"10.96.0.10", "fd00:10:96::a"}));
  EXPECT_TRUE(svc.has_selector);
  EXPECT_EQ(svc.selector, (std::map<std::string, std::string>{{"app", "web"}, {"tier", "1"}}));
  ASSERT_EQ(svc.ports.size(), 7u);  // SCTP dropped
  const auto expectPort = [](const ServicePort& p, const std::string& name, uint16_t port,
                             Proto proto, uint16_t target, const std::string& target_name) {
    SCOPED_TRACE(std::to_string(port));
    EXPECT_EQ(p.name, name);
    EXPECT_EQ(p.port, port);
    EXPECT_EQ(p.proto, proto);
    EXPECT_EQ(p.target_port_number, target);
    EXPECT_EQ(p.target_port_name, target_name);
  };
  expectPort(svc.ports[0], "http", 80, Proto::kTcp, 8080, "");
  expectPort(svc.ports[1], "https", 443, Proto::kTcp, 8443, "");
  expectPort(svc.ports[2], "grpc", 9090, Proto::kTcp, 0, "grpc-port");
  expectPort(svc.ports[3], "dns", 53, Proto::kUdp, 53, "");
  expectPort(svc.ports[4], "", 8000, Proto::kTcp, 8000, "");
  expectPort(svc.ports[5], "", 8001, Proto::kTcp, 8001, "");
  expectPort(svc.ports[6], "", 8002, Proto::kTcp, 8002, "");
}

TEST(Service, DefaultsHeadlessAndSelectorless) {
  const auto bare = one<Service>("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
  EXPECT_EQ(bare.meta.ns, "default");
  EXPECT_EQ(bare.type, "ClusterIP");
  EXPECT_TRUE(bare.cluster_ips.empty());
  EXPECT_TRUE(bare.ports.empty());
  EXPECT_TRUE(bare.selector.empty());
  EXPECT_FALSE(bare.has_selector);

  const auto only_ip = one<Service>(
      "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
      "spec: {clusterIP: 10.0.0.1, clusterIPs: [], ports: [{port: 80}], selector: {}}\n");
  EXPECT_EQ(only_ip.cluster_ips, std::vector<std::string>{"10.0.0.1"});
  EXPECT_FALSE(only_ip.has_selector);  // an empty selector selects nothing
  ASSERT_EQ(only_ip.ports.size(), 1u);
  EXPECT_EQ(only_ip.ports[0].target_port_number, 80);
  EXPECT_EQ(only_ip.ports[0].proto, Proto::kTcp);

  for (const char* spec : {"{clusterIP: None}", "{clusterIP: \"None\", clusterIPs: [None]}",
                           "{clusterIP: \"\"}", "{clusterIPs: [\"\"]}", "{type: \"\"}"}) {
    const auto headless = one<Service>(
        std::string("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: ") + spec + "\n");
    EXPECT_TRUE(headless.cluster_ips.empty()) << spec;
    EXPECT_EQ(headless.type, "ClusterIP") << spec;
  }
  EXPECT_EQ(one<Service>("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                         "spec: {type: ExternalName, externalName: db.example.com}\n")
                .type,
            "ExternalName");
}

TEST(Service, Errors) {
  const auto bad = [](const std::string& spec) {
    return error("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec: " + spec +
                 "\n");
  };
  EXPECT_EQ(bad("{clusterIP: 10.0.0.256}"),
            "t.yaml: Service n/s: spec.clusterIP: invalid IP address \"10.0.0.256\"");
  EXPECT_CONTAINS(bad("{clusterIPs: [10.0.0.1, 'fd00::zz']}"),
                  "spec.clusterIPs[1]: invalid IP address \"fd00::zz\"");
  EXPECT_CONTAINS(bad("{clusterIP: none}"), "spec.clusterIP: invalid IP address \"none\"");
  EXPECT_CONTAINS(bad("{clusterIP: 10}"), "spec.clusterIP: expected a string, got 10");
  EXPECT_CONTAINS(bad("{clusterIPs: 10.0.0.1}"), "spec.clusterIPs: expected a list");
  EXPECT_EQ(bad("{ports: [{port: 80}, {port: 0}]}"),
            "t.yaml: Service n/s: spec.ports[1].port: port 0 out of range 1..65535");
  EXPECT_CONTAINS(bad("{ports: [{port: 65536}]}"), "spec.ports[0].port: port 65536 out of range");
  EXPECT_CONTAINS(bad("{ports: [{name: http}]}"), "missing required field spec.ports[0].port");
  EXPECT_CONTAINS(bad("{ports: [{port: \"80\"}]}"),
                  "spec.ports[0].port: expected an integer, got \"80\"");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: 70000}]}"),
                  "spec.ports[0].targetPort: port 70000 out of range 1..65535");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: \"70000\"}]}"),
                  "spec.ports[0].targetPort: port 70000 out of range 1..65535");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: -1}]}"),
                  "spec.ports[0].targetPort: port -1 out of range");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: 80.5}]}"),
                  "spec.ports[0].targetPort: expected an integer or a port name, got 80.5");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: [80]}]}"),
                  "spec.ports[0].targetPort: expected an integer or a port name, got a list");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: Http_Port}]}"),
                  "spec.ports[0].targetPort: invalid port name \"Http_Port\"");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, targetPort: a-very-long-port-name}]}"),
                  "invalid port name");
  EXPECT_CONTAINS(bad("{ports: [{port: 80, protocol: ICMP}]}"),
                  "spec.ports[0].protocol: unsupported protocol \"ICMP\"");
  EXPECT_CONTAINS(bad("{selector: {app: 1}}"), "spec.selector.app: expected a string, got 1");
  EXPECT_CONTAINS(bad("{type: [ClusterIP]}"), "spec.type: expected a string, got a list");
  EXPECT_CONTAINS(error("apiVersion: apps/v1\nkind: Service\nmetadata: {name: s}\n"),
                  "unsupported apiVersion \"apps/v1\" for Service");
}

// ---- EndpointSlice ----------------------------------------------------------

TEST(EndpointSlice, V1Fields) {
  const auto es = one<EndpointSlice>(R"(
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: x}
addressType: IPv4
endpoints:
- addresses: [10.1.0.5]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, name: web-1, namespace: shop}
  nodeName: node-a
- addresses: [10.1.0.6, 10.1.0.7]
  conditions: {ready: false}
  targetRef: {kind: Node, name: node-b}
- addresses: [10.1.0.8]
- addresses: [10.1.0.9]
  conditions: {ready: null}
  targetRef: {name: nameless-kind}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 53, protocol: UDP}
- {name: sctp, port: 3868, protocol: SCTP}
- {port: 9090}
- {name: any}
)");
  EXPECT_EQ(es.meta.ns, "shop");
  EXPECT_EQ(es.service_name, "web");
  EXPECT_EQ(es.address_type, "IPv4");
  ASSERT_EQ(es.endpoints.size(), 4u);
  EXPECT_EQ(es.endpoints[0].addresses, std::vector<std::string>{"10.1.0.5"});
  EXPECT_TRUE(es.endpoints[0].ready);
  EXPECT_EQ(es.endpoints[0].target_pod, "web-1");
  EXPECT_EQ(es.endpoints[1].addresses, (std::vector<std::string>{"10.1.0.6", "10.1.0.7"}));
  EXPECT_FALSE(es.endpoints[1].ready);
  EXPECT_EQ(es.endpoints[1].target_pod, "");  // not a Pod
  EXPECT_TRUE(es.endpoints[2].ready);         // no conditions: ready
  EXPECT_EQ(es.endpoints[2].target_pod, "");
  EXPECT_TRUE(es.endpoints[3].ready);  // ready: null
  EXPECT_EQ(es.endpoints[3].target_pod, "");
  ASSERT_EQ(es.ports.size(), 4u);  // SCTP dropped
  EXPECT_EQ(es.ports[0].name, "http");
  EXPECT_EQ(es.ports[0].port, 8080);
  EXPECT_EQ(es.ports[0].proto, Proto::kTcp);
  EXPECT_EQ(es.ports[1].port, 53);
  EXPECT_EQ(es.ports[1].proto, Proto::kUdp);
  EXPECT_EQ(es.ports[2].name, "");
  EXPECT_EQ(es.ports[2].port, 9090);
  EXPECT_EQ(es.ports[2].proto, Proto::kTcp);
  EXPECT_EQ(es.ports[3].name, "any");
  EXPECT_EQ(es.ports[3].port, 0);  // absent: not restricted
}

std::string slice(const std::string& version, const std::string& address_type,
                  const std::string& rest) {
  return "apiVersion: discovery.k8s.io/" + version +
         "\nkind: EndpointSlice\nmetadata:\n  name: es\n  labels: {kubernetes.io/service-name: "
         "svc}\naddressType: " +
         address_type + "\n" + rest;
}

TEST(EndpointSlice, V1beta1Ipv6FqdnAndEmpty) {
  const auto beta = one<EndpointSlice>(
      slice("v1beta1", "IPv4",
            "endpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: false}\n"
            "  topology: {kubernetes.io/hostname: node-a}\n"
            "  targetRef: {kind: Pod, name: p}\nports: [{name: http, port: 80}]\n"));
  EXPECT_EQ(beta.meta.ns, "default");
  EXPECT_EQ(beta.service_name, "svc");
  ASSERT_EQ(beta.endpoints.size(), 1u);
  EXPECT_FALSE(beta.endpoints[0].ready);
  EXPECT_EQ(beta.endpoints[0].target_pod, "p");
  ASSERT_EQ(beta.ports.size(), 1u);
  EXPECT_EQ(beta.ports[0].port, 80);

  const auto v6 = one<EndpointSlice>(
      slice("v1", "IPv6", "endpoints: [{addresses: ['fd00::1', '2001:db8::2']}]\n"));
  EXPECT_EQ(v6.address_type, "IPv6");
  ASSERT_EQ(v6.endpoints.size(), 1u);
  EXPECT_EQ(v6.endpoints[0].addresses, (std::vector<std::string>{"fd00::1", "2001:db8::2"}));

  // FQDN slices parse, but nothing in them is an address smik can use.
  const auto fqdn = one<EndpointSlice>(
      slice("v1", "FQDN", "endpoints: [{addresses: [db.example.com]}]\nports: [{port: 5432}]\n"));
  EXPECT_EQ(fqdn.address_type, "FQDN");
  EXPECT_TRUE(fqdn.endpoints.empty());
  ASSERT_EQ(fqdn.ports.size(), 1u);
  EXPECT_EQ(fqdn.ports[0].port, 5432);

  const auto empty = one<EndpointSlice>(slice("v1", "IPv4", "endpoints: null\nports: []\n"));
  EXPECT_TRUE(empty.endpoints.empty());
  EXPECT_TRUE(empty.ports.empty());
}

TEST(EndpointSlice, Errors) {
  EXPECT_EQ(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                  "metadata: {name: es, namespace: n, labels: {app: x}}\naddressType: IPv4\n"),
            "t.yaml: EndpointSlice n/es: missing required field "
            "metadata.labels.kubernetes.io/service-name");
  EXPECT_CONTAINS(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                        "metadata: {name: es}\naddressType: IPv4\n"),
                  "missing required field metadata.labels.kubernetes.io/service-name");
  EXPECT_CONTAINS(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                        "metadata: {name: es, labels: {kubernetes.io/service-name: ''}}\n"
                        "addressType: IPv4\n"),
                  "missing required field metadata.labels.kubernetes.io/service-name");
  EXPECT_EQ(error(slice("v1", "IPv4", "endpoints: [{addresses: [10.0.0.1, 10.0.0.256]}]\n")),
            "t.yaml: EndpointSlice default/es: endpoints[0].addresses[1]: invalid IPv4 address "
            "\"10.0.0.256\"");
  EXPECT_CONTAINS(error(slice("v1", "IPv4", "endpoints: [{addresses: ['fd00::1']}]\n")),
                  "endpoints[0].addresses[0]: invalid IPv4 address \"fd00::1\"");
  EXPECT_CONTAINS(error(slice("v1", "IPv6", "endpoints: [{addresses: [10.0.0.1]}]\n")),
                  "endpoints[0].addresses[0]: invalid IPv6 address \"10.0.0.1\"");
  EXPECT_CONTAINS(error(slice("v1", "IPv4", "endpoints: [{addresses: [web-1]}]\n")),
                  "invalid IPv4 address \"web-1\"");
  EXPECT_CONTAINS(error(slice("v1", "IPv4", "endpoints: [{conditions: {ready: true}}]\n")),
                  "missing required field endpoints[0].addresses");
  EXPECT_CONTAINS(error(slice("v1", "IPv4",
                              "endpoints: [{addresses: [10.0.0.1], conditions: "
                              "{ready: \"true\"}}]\n")),
                  "endpoints[0].conditions.ready: expected a boolean, got \"true\"");
  EXPECT_CONTAINS(error(slice("v1", "IPv4", "ports: [{port: 0}]\n")),
                  "ports[0].port: port 0 out of range 1..65535");
  EXPECT_CONTAINS(error(slice("v1", "IPv4", "ports: [{port: 65536}]\n")),
                  "ports[0].port: port 65536 out of range 1..65535");
  EXPECT_CONTAINS(error(slice("v1", "IPv4", "ports: [{port: 80, protocol: ICMP}]\n")),
                  "ports[0].protocol: unsupported protocol \"ICMP\"");
  EXPECT_CONTAINS(error(slice("v1", "IPv5", "")),
                  "addressType: unsupported address type \"IPv5\" (IPv4, IPv6 or FQDN)");
  EXPECT_CONTAINS(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                        "metadata: {name: es, labels: {kubernetes.io/service-name: s}}\n"),
                  "missing required field addressType");
  EXPECT_CONTAINS(error(slice("v2", "IPv4", "")),
                  "unsupported apiVersion \"discovery.k8s.io/v2\" for EndpointSlice");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: EndpointSlice\nmetadata: {name: es}\n"),
                  "unsupported apiVersion \"v1\" for EndpointSlice");
}

// ---- TrafficSplit -----------------------------------------------------------

std::string split(const std::string& version, const std::string& spec) {
  return "apiVersion: split.smi-spec.io/" + version +
         "\nkind: TrafficSplit\nmetadata: {name: ts, namespace: shop}\nspec:\n" + spec;
}

// A split with one backend of the given weight.
std::string splitWeight(const std::string& version, const std::string& weight) {
  return split(version, "  service: root\n  backends:\n  - {service: b, weight: " + weight + "}\n");
}

TEST(TrafficSplit, V1alpha4Fields) {
  const auto ts = one<TrafficSplit>(R"(
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: canary
  namespace: shop
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  service: website
  matches:
  - {kind: HTTPRouteGroup, name: firefox}
  - {kind: HTTPRouteGroup, name: android}
  backends:
  - {service: website-v1, weight: 90}
  - {service: website-v2, weight: 10}
  - {service: website-v3, weight: 0}
)");
  EXPECT_EQ(ts.original_version, "v1alpha4");
  EXPECT_EQ(refOf(ts), (ObjectRef{"TrafficSplit", "shop", "canary"}));
  EXPECT_EQ(ts.meta.creation_timestamp, "2024-05-01T10:00:00Z");
  EXPECT_EQ(ts.service, "website");
  EXPECT_TRUE(ts.has_matches);
  EXPECT_EQ(ts.match_names, (std::vector<std::string>{"firefox", "android"}));
  ASSERT_EQ(ts.backends.size(), 3u);
  EXPECT_EQ(ts.backends[0].service, "website-v1");
  EXPECT_EQ(ts.backends[0].weight, 90);
  EXPECT_EQ(ts.backends[1].service, "website-v2");
  EXPECT_EQ(ts.backends[1].weight, 10);
  EXPECT_EQ(ts.backends[2].weight, 0);
}

TEST(TrafficSplit, EveryVersionAndDefaults) {
  for (const char* v : {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}) {
    SCOPED_TRACE(v);
    const auto ts = one<TrafficSplit>(split(
        v, "  service: root\n  backends: [{service: a, weight: 1}, {service: b, weight: 0}]\n"));
    EXPECT_EQ(ts.original_version, v);
    EXPECT_EQ(ts.service, "root");
    ASSERT_EQ(ts.backends.size(), 2u);
    // v1alpha1 weights are Quantities: 1 is 1000m.
    EXPECT_EQ(ts.backends[0].weight, std::string(v) == "v1alpha1" ? 1000 : 1);
    EXPECT_EQ(ts.backends[1].weight, 0);
    EXPECT_FALSE(ts.has_matches);
    EXPECT_TRUE(ts.match_names.empty());
    // An empty backend list is valid at parse time.
    EXPECT_TRUE(one<TrafficSplit>(split(v, "  service: root\n  backends: []\n")).backends.empty());
  }
  // metadata.namespace defaults.
  EXPECT_EQ(one<TrafficSplit>("apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n"
                              "metadata: {name: ts}\nspec: {service: r, backends: []}\n")
                .meta.ns,
            "default");
}

TEST(TrafficSplit, Matches) {
  const std::string with_matches =
      "  service: root\n  matches: [{kind: HTTPRouteGroup, name: m}]\n"
      "  backends: [{service: a, weight: 1}]\n";
  for (const char* v : {"v1alpha3", "v1alpha4"}) {
    const auto ts = one<TrafficSplit>(split(v, with_matches));
    EXPECT_TRUE(ts.has_matches) << v;
    EXPECT_EQ(ts.match_names, std::vector<std::string>{"m"}) << v;
  }
  // Older versions have no `matches`: the API server prunes it.
  for (const char* v : {"v1alpha1", "v1alpha2"}) {
    const auto ts = one<TrafficSplit>(split(v, with_matches));
    EXPECT_FALSE(ts.has_matches) << v;
    EXPECT_TRUE(ts.match_names.empty()) << v;
  }
  const auto empty = one<TrafficSplit>(split("v1alpha4",
                                             "  service: r\n  matches: []\n"
                                             "  backends: []\n"));
  EXPECT_FALSE(empty.has_matches);

  EXPECT_EQ(error(split("v1alpha4",
                        "  service: r\n  matches: [{kind: TCPRoute, name: t}]\n"
                        "  backends: []\n")),
            "t.yaml: TrafficSplit shop/ts: spec.matches[0].kind: unsupported match kind "
            "\"TCPRoute\" (only HTTPRouteGroup)");
  EXPECT_CONTAINS(
      error(split("v1alpha3", "  service: r\n  matches: [{name: m}]\n  backends: []\n")),
      "missing required field spec.matches[0].kind");
  EXPECT_CONTAINS(
      error(
          split("v1alpha3", "  service: r\n  matches: [{kind: HTTPRouteGroup}]\n  backends: []\n")),
      "missing required field spec.matches[0].name");
  EXPECT_CONTAINS(error(split("v1alpha3", "  service: r\n  matches: m\n  backends: []\n")),
                  "spec.matches: expected a list, got \"m\"");
}

TEST(TrafficSplit, RequiredFields) {
  EXPECT_EQ(error("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n"
                  "metadata: {name: ts, namespace: shop}\n"),
            "t.yaml: TrafficSplit shop/ts: missing required field spec");
  EXPECT_EQ(error(split("v1alpha4", "  backends: []\n")),
            "t.yaml: TrafficSplit shop/ts: missing required field spec.service");
  EXPECT_EQ(error(split("v1alpha4", "  service: root\n")),
            "t.yaml: TrafficSplit shop/ts: missing required field spec.backends");
  EXPECT_CONTAINS(error(split("v1alpha4", "  service: root\n  backends: null\n")),
                  "missing required field spec.backends");
  EXPECT_CONTAINS(error(split("v1alpha4", "  service: root\n  backends: [{weight: 1}]\n")),
                  "missing required field spec.backends[0].service");
  EXPECT_CONTAINS(error(split("v1alpha4", "  service: root\n  backends: [{service: a}]\n")),
                  "missing required field spec.backends[0].weight");
  EXPECT_CONTAINS(error(split("v1alpha1", "  service: root\n  backends: [{service: a}]\n")),
                  "missing required field spec.backends[0].weight");
  EXPECT_CONTAINS(error(split("v1alpha4", "  service: 5\n  backends: []\n")),
                  "spec.service: expected a string, got 5");
  EXPECT_CONTAINS(error(split("v1alpha4", "  service: \"\"\n  backends: []\n")),
                  "spec.service: must not be empty");
  EXPECT_CONTAINS(error(split("v1alpha4", "  service: r\n  backends: {service: a}\n")),
                  "spec.backends: expected a list, got a map");
  EXPECT_CONTAINS(
      error(split("v1alpha4", "  service: r\n  backends: [{service: [a], weight: 1}]\n")),
      "spec.backends[0].service: expected a string, got a list");
}

TEST(TrafficSplit, IntegerWeights) {
  for (const char* v : {"v1alpha2", "v1alpha3", "v1alpha4"}) {
    SCOPED_TRACE(v);
    EXPECT_EQ(one<TrafficSplit>(splitWeight(v, "1000")).backends.at(0).weight, 1000);
    EXPECT_EQ(one<TrafficSplit>(splitWeight(v, "+7")).backends.at(0).weight, 7);
    EXPECT_EQ(one<TrafficSplit>(splitWeight(v, "9223372036854775807")).backends.at(0).weight,
              INT64_MAX);

    EXPECT_EQ(error(splitWeight(v, "1.5")),
              "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight 1.5 is fractional; "
              "weights must be whole numbers");
    EXPECT_EQ(error(splitWeight(v, "-3")),
              "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight -3 is negative; "
              "weights must not be negative");
    EXPECT_EQ(error(splitWeight(v, "\"10\"")),
              "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight \"10\" is not a "
              "number (a string); weights are plain integers since v1alpha2");
    EXPECT_CONTAINS(error(splitWeight(v, "500m")), "weight \"500m\" is not a number (a string)");
    EXPECT_CONTAINS(error(splitWeight(v, "-0.5")), "weight -0.5 is fractional");
    EXPECT_CONTAINS(error(splitWeight(v, "2.0")),
                    "spec.backends[0].weight: weight 2.0 must be written as an integer");
    EXPECT_CONTAINS(error(splitWeight(v, "1e3")), "weight 1e3 must be written as an integer");
    EXPECT_CONTAINS(error(splitWeight(v, ".inf")), "weight .inf is not a number");
    EXPECT_CONTAINS(error(splitWeight(v, "-.Inf")), "weight -.Inf is not a number");
    EXPECT_CONTAINS(error(splitWeight(v, ".nan")), "weight .nan is not a number");
    EXPECT_CONTAINS(error(splitWeight(v, "true")), "weight true is not a number");
    EXPECT_CONTAINS(error(splitWeight(v, "[1]")),
                    "spec.backends[0].weight: expected a whole number, got a list");
    EXPECT_CONTAINS(error(splitWeight(v, "99999999999999999999")),
                    "weight 99999999999999999999 is out of range");
  }
  // The error names the failing backend.
  EXPECT_CONTAINS(error(split("v1alpha4",
                              "  service: r\n  backends:\n  - {service: a, weight: 1}\n"
                              "  - {service: b, weight: -1}\n")),
                  "spec.backends[1].weight: weight -1 is negative");
}

TEST(TrafficSplit, V1alpha1QuantityWeightsNormalisedByValue) {
  const std::vector<std::pair<std::string, int64_t>> cases = {
      {"500m", 500},
      {"\"500m\"", 500},
      {"1", 1000},
      {"\"1\"", 1000},
      {"1500m", 1500},
      {"0m", 0},
      {"0", 0},
      {"2k", 2000000},
      {"1.5", 1500},
      {"\"1.5\"", 1500},
      {"100m", 100},
      {"10m", 10},
      {"0.5", 500},
      {".5", 500},
      {"5.", 5000},
      {"+2", 2000},
      {"0.001", 1},
      {"1.000000", 1000},
      {"0.5k", 500000},
      {"1M", 1000000000},
      {"1G", 1000000000000},
      {"1Ki", 1024000},
      {"1Mi", 1048576000},
      {"1Gi", 1073741824000},
      {"-0", 0},
      {"-0m", 0},
      {"00012m", 12},
      {"9223372036854775807m", INT64_MAX},
      {"9223372036854775.807", INT64_MAX},
      {"0." + std::string(100, '0') + "k", 0},
  };
  for (const auto& [text, milli] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(one<TrafficSplit>(splitWeight("v1alpha1", text)).backends.at(0).weight, milli);
  }
  // Mixed suffixes keep their ratio: 1 vs 500m is 2:1, as 1000 vs 500.
  const auto ts = one<TrafficSplit>(
      split("v1alpha1",
            "  service: r\n  backends: [{service: a, weight: 1}, {service: b, weight: 500m}]\n"));
  EXPECT_EQ(ts.backends.at(0).weight, 1000);
  EXPECT_EQ(ts.backends.at(1).weight, 500);
}

TEST(TrafficSplit, V1alpha1QuantityErrors) {
  const auto bad = [](const std::string& w) { return error(splitWeight("v1alpha1", w)); };
  EXPECT_EQ(bad("0.5m"),
            "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight \"0.5m\" is not a whole "
            "number of milli-units");
  EXPECT_CONTAINS(bad("0.0000000000000000000000000000001"), "is not a whole number of milli-units");
  EXPECT_CONTAINS(bad("0.0001"), "weight 0.0001 is not a whole number of milli-units");
  EXPECT_CONTAINS(bad("0." + std::string(100, '0') + "1k"), "is not a whole number of milli-units");
  EXPECT_EQ(bad("-1"),
            "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight -1 is negative; weights "
            "must not be negative");
  EXPECT_CONTAINS(bad("\"-500m\""), "weight \"-500m\" is negative");
  EXPECT_CONTAINS(bad("-1.5"), "weight -1.5 is negative");
  EXPECT_EQ(bad("2X"),
            "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight \"2X\" has an "
            "unsupported suffix \"X\" (m, k, M, G, Ki, Mi, Gi or none)");
  for (const char* suffix : {"K", "T", "Ti", "n", "u", "e3", "E", "mi", " m", "m "})
    EXPECT_CONTAINS(bad(std::string("\"1") + suffix + "\""), "has an unsupported suffix");
  EXPECT_CONTAINS(bad("1e3"), "weight 1e3 has an unsupported suffix \"e3\"");
  EXPECT_CONTAINS(bad("1.2.3"), "has an unsupported suffix \".3\"");
  EXPECT_CONTAINS(bad("abc"), "weight \"abc\" is not a quantity");
  EXPECT_CONTAINS(bad("m"), "weight \"m\" is not a quantity");
  EXPECT_CONTAINS(bad("\"\""), "weight \"\" is not a quantity");
  EXPECT_CONTAINS(bad("."), "is not a quantity");
  EXPECT_CONTAINS(bad("9223372036854775808m"), "weight \"9223372036854775808m\" is out of range");
  EXPECT_CONTAINS(bad("9223372036854775808"), "is out of range");
  EXPECT_CONTAINS(bad("9223372036854775k"), "is out of range");
  EXPECT_CONTAINS(bad("99999999999999999999999999999999999999Gi"), "is out of range");
  EXPECT_CONTAINS(bad("1" + std::string(40, '0')), "has too many digits");
  EXPECT_CONTAINS(bad("true"),
                  "spec.backends[0].weight: expected a quantity such as 1 or \"500m\", got true");
  EXPECT_CONTAINS(bad("{a: 1}"), "expected a quantity such as 1 or \"500m\", got a map");
}

TEST(TrafficSplit, Versions) {
  EXPECT_EQ(
      error("apiVersion: split.smi-spec.io/v1alpha5\nkind: TrafficSplit\n"
            "metadata: {name: ts}\nspec: {service: r, backends: []}\n"),
      "t.yaml: TrafficSplit default/ts: unsupported apiVersion \"split.smi-spec.io/v1alpha5\" "
      "for TrafficSplit");
  EXPECT_CONTAINS(error("apiVersion: specs.smi-spec.io/v1alpha4\nkind: TrafficSplit\n"
                        "metadata: {name: ts}\nspec: {service: r, backends: []}\n"),
                  "unsupported apiVersion \"specs.smi-spec.io/v1alpha4\" for TrafficSplit");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: TrafficSplit\nmetadata: {name: ts}\n"),
                  "unsupported apiVersion \"v1\" for TrafficSplit");
}

TEST(Metadata, NamespaceIsClusterScoped) {
  const auto ns = one<Namespace>(
      "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  namespace: ignored\n"
      "  labels: {smik.io/mesh: enabled, tier: \"1\"}\n  creationTimestamp: "
      "2024-01-02T03:04:05Z\n");
  EXPECT_EQ(ns.meta.name, "prod");
  EXPECT_TRUE(ns.meta.ns.empty());
  EXPECT_EQ(ns.meta.labels,
            (std::map<std::string, std::string>{{"smik.io/mesh", "enabled"}, {"tier", "1"}}));
  EXPECT_EQ(ns.meta.creation_timestamp, "2024-01-02T03:04:05Z");
  EXPECT_EQ(refOf(ns).str(), "Namespace prod");
}

TEST(Metadata, DefaultsAndTypes) {
  EXPECT_EQ(
      one<ServiceAccount>("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n").meta.ns,
      "default");
  EXPECT_EQ(one<ServiceAccount>(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: \"\"}\n")
                .meta.ns,
            "default");
  EXPECT_EQ(
      error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: [1]}\n"),
      "t.yaml: ServiceAccount: metadata.name: expected a string, got a list (document at line 1)");
  EXPECT_CONTAINS(
      error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, labels: [a]}\n"),
      "metadata.labels: expected a map, got a list");
  EXPECT_CONTAINS(
      error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, labels: {v: 1}}\n"),
      "metadata.labels.v: expected a string, got 1");
  EXPECT_CONTAINS(
      error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: 7}\n"),
      "metadata.namespace: expected a string, got 7");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: \"\"}\n"),
                  "metadata.name: must not be empty");
}

TEST(Metadata, MissingRequiredFields) {
  EXPECT_EQ(error("kind: Pod\nmetadata: {name: p}\n"),
            "t.yaml: Pod default/p: missing required field apiVersion");
  EXPECT_EQ(error("apiVersion: v1\nmetadata: {name: p, namespace: x}\n"),
            "t.yaml: x/p: missing required field kind");
  EXPECT_EQ(error("\n\napiVersion: v1\nkind: Pod\n"),
            "t.yaml: Pod: missing required field metadata (document at line 3)");
  EXPECT_EQ(error("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n"),
            "t.yaml: Pod x/: missing required field metadata.name (document at line 1)");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: [Pod]\nmetadata: {name: p}\n"),
                  "kind: expected a string, got a list");
  EXPECT_CONTAINS(error("apiVersion: 1\nkind: Pod\nmetadata: {name: p}\n"),
                  "apiVersion: expected a string, got 1");
  EXPECT_CONTAINS(error("- a\n- b\n"), "document: expected a map, got a list");
}

// ---- kinds, versions, documents ---------------------------------------------

TEST(Documents, UnknownKindAndVersion) {
  EXPECT_EQ(error("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n"),
            "t.yaml: Widget w: unknown kind \"Widget\"");
  EXPECT_CONTAINS(error("apiVersion: access.smi-spec.io/v1alpha4\nkind: IdentityBinding\n"
                        "metadata: {name: i}\n"),
                  "unknown kind \"IdentityBinding\"");
  EXPECT_EQ(error("apiVersion: access.smi-spec.io/v1alpha4\nkind: TrafficTarget\n"
                  "metadata: {name: tt}\nspec: {}\n"),
            "t.yaml: TrafficTarget default/tt: unsupported apiVersion "
            "\"access.smi-spec.io/v1alpha4\" for TrafficTarget");
  EXPECT_CONTAINS(
      error("apiVersion: specs.smi-spec.io/v1alpha5\nkind: TCPRoute\nmetadata: {name: r}\n"),
      "unsupported apiVersion \"specs.smi-spec.io/v1alpha5\" for TCPRoute");
  EXPECT_CONTAINS(error("apiVersion: specs.smi-spec.io/v1alpha4\nkind: TrafficTarget\n"
                        "metadata: {name: r}\n"),
                  "unsupported apiVersion");
  EXPECT_CONTAINS(error("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: p}\n"),
                  "unsupported apiVersion \"apps/v1\" for Pod");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n"),
                  "unsupported apiVersion \"v1\" for Deployment");
}

TEST(Documents, IgnoredKindsAreCounted) {
  const ParseResult r = parse(R"(
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: web}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: s}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: traffictargets.access.smi-spec.io}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
)");
  EXPECT_TRUE(r.errors.empty()) << errorsOf(r);
  EXPECT_EQ(r.ignored, 4);
  EXPECT_EQ(r.objects.size(), 1u);
}

TEST(Documents, MultiDocWithEmptyDocumentsAndPerDocumentErrors) {
  const ParseResult r = parse(R"(---
---
# only a comment
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: a}
---
apiVersion: v1
kind: Gadget
metadata: {name: g}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: b, namespace: n}
...
)");
  ASSERT_EQ(r.objects.size(), 2u) << errorsOf(r);
  EXPECT_EQ(refOf(r.objects[0]).str(), "ServiceAccount default/a");
  EXPECT_EQ(refOf(r.objects[1]).str(), "ServiceAccount n/b");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].object, (ObjectRef{"Gadget", "", "g"}));
  EXPECT_EQ(r.errors[0].file, "t.yaml");
  EXPECT_EQ(r.errors[0].reason, "unknown kind \"Gadget\"");
  EXPECT_TRUE(parse("").objects.empty());
  EXPECT_TRUE(parse("").errors.empty());
  EXPECT_TRUE(parse("---\n...\n").errors.empty());
}

TEST(Documents, ListIsExpanded) {
  const ParseResult r = parse(R"(
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: prod}
- apiVersion: v1
  kind: Endpoints
  metadata: {name: s}
- apiVersion: specs.smi-spec.io/v1alpha4
  kind: TCPRoute
  metadata: {name: r, namespace: prod}
  spec: {matches: {ports: [70000]}}
)");
  ASSERT_EQ(r.objects.size(), 1u);
  EXPECT_EQ(refOf(r.objects[0]).str(), "Namespace prod");
  EXPECT_EQ(r.ignored, 1);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].str(),
            "t.yaml: TCPRoute prod/r: spec.matches.ports[0]: port 70000 out of range 1..65535");

  EXPECT_TRUE(parse("apiVersion: v1\nkind: List\nitems: []\n").errors.empty());
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: List\nitems: {}\n"), "items: expected a list");
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List}\n"),
                  "a List inside a List");
}

TEST(Documents, Json) {
  const ParseResult r = parse(R"({
	"apiVersion": "v1",
	"kind": "List",
	"items": [
		{"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
		 "metadata": {"name": "r", "namespace": "ns", "labels": {"v": "1"}},
		 "spec": {"matches": {"ports": [8080, 8443]}}},
		{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
		 "spec": {"hostNetwork": true, "serviceAccountName": "sa"},
		 "status": {"podIPs": [{"ip": "10.1.2.3"}]}}
	]
})");
  ASSERT_TRUE(r.errors.empty()) << errorsOf(r);
  ASSERT_EQ(r.objects.size(), 2u);
  const auto& route = std::get<L4Route>(r.objects[0]);
  EXPECT_EQ(route.ports, (std::vector<uint16_t>{8080, 8443}));
  EXPECT_EQ(route.meta.labels.at("v"), "1");
  const auto& pod = std::get<Pod>(r.objects[1]);
  EXPECT_TRUE(pod.host_network);
  EXPECT_EQ(pod.service_account, "sa");
  EXPECT_EQ(pod.ips, std::vector<std::string>{"10.1.2.3"});

  EXPECT_CONTAINS(error(R"({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
      "metadata": {"name": "r"}, "spec": {"matches": {"ports": ["80"]}}})"),
                  "spec.matches.ports[0]: expected an integer, got \"80\"");
}

TEST(Documents, SyntaxErrorIsOneErrorForTheFile) {
  const ParseResult r = parse(
      "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
      "apiVersion: v1\nkind: [Namespace\n");
  EXPECT_TRUE(r.objects.empty());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].object, ObjectRef{});
  EXPECT_CONTAINS(r.errors[0].str(), "t.yaml: YAML syntax error at line ");
  EXPECT_CONTAINS(error("{\"apiVersion\": \"v1\""), "YAML syntax error");
  EXPECT_CONTAINS(error("a: b\n  c: d\n"), "YAML syntax error at line 2");
}

TEST(Documents, NeverThrows) {
  const std::string deep = std::string(5000, '[') + std::string(5000, ']');
  const std::string big(kMaxManifestBytes + 1, '#');
  for (const std::string& text :
       {deep, big, std::string("\xff\xfe\x00garbage", 10), std::string("*unknown_alias"),
        std::string("a: &x [*x]"), std::string("!!binary xyz"), std::string("? [a]\n: b\n"),
        std::string("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {[k]: v}}\n"),
        std::string("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: 7}\n")}) {
    ParseResult r;
    EXPECT_NO_THROW(r = parse(text));
    EXPECT_TRUE(r.objects.empty()) << text.substr(0, 40);
    EXPECT_FALSE(r.errors.empty()) << text.substr(0, 40);
  }
  EXPECT_CONTAINS(error(big), "file too large");
  const std::string long_port = "[" + std::string(1000, 'x') + "]";
  const std::string e =
      error(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: " + long_port + "}}"));
  EXPECT_CONTAINS(e, "expected an integer, got \"xxx");
  EXPECT_LT(e.size(), 200u);
}

// ---- the SMI spec examples ----------------------------------------------------

std::string examplePath(const std::string& name) {
  return std::string(SMIK_FIXTURES_DIR) + "/smi-examples/" + name;
}

// Spec snippets mostly omit apiVersion: take it from the file name. A
// TrafficTarget gets the access version; routes get the specs version paired
// with it (tests/fixtures/smi-examples/README.md), or the file's own version in traffic-specs files.
ParseResult loadExample(const std::string& name) {
  const std::string version = name.substr(name.find("_v") + 1, 8);
  std::string route_version = version;
  if (name.starts_with("traffic-access_")) {
    static const std::map<std::string, std::string> kPairs = {{"v1alpha1", "v1alpha1"},
                                                              {"v1alpha2", "v1alpha3"},
                                                              {"v1alpha3", "v1alpha4"},
                                                              {"v1alpha4", "v1alpha4"}};
    route_version = kPairs.at(version);
  }
  YAML::Emitter out;
  for (YAML::Node doc : YAML::LoadAllFromFile(examplePath(name))) {
    const YAML::Node& view = doc;
    if (doc.IsMap() && !view["apiVersion"]) {
      const std::string kind = view["kind"].as<std::string>("");
      doc["apiVersion"] = kind == "TrafficTarget"  ? "access.smi-spec.io/" + version
                          : kind == "TrafficSplit" ? "split.smi-spec.io/" + version
                                                   : "specs.smi-spec.io/" + route_version;
    }
    out << YAML::BeginDoc << doc;
  }
  EXPECT_TRUE(out.good()) << out.GetLastError();
  return parseManifests(out.c_str(), name);
}

struct ExampleCounts {
  std::string file;
  size_t traffic_targets, tcp, udp, http, errors;
};

TEST(SpecExamples, EveryAccessAndSpecsExample) {
  const std::vector<ExampleCounts> expected = {
      {"traffic-access_v1alpha1_01.yaml", 0, 0, 0, 1, 0},
      {"traffic-access_v1alpha1_02.yaml", 1, 0, 0, 0, 0},
      {"traffic-access_v1alpha1_03.yaml", 2, 0, 0, 1, 0},
      {"traffic-access_v1alpha2_01.yaml", 0, 0, 0, 1, 0},
      {"traffic-access_v1alpha2_02.yaml", 1, 0, 0, 0, 0},
      {"traffic-access_v1alpha2_03.yaml", 2, 0, 0, 1, 0},
      {"traffic-access_v1alpha3_01.yaml", 0, 1, 0, 1, 0},
      {"traffic-access_v1alpha3_02.yaml", 1, 0, 0, 0, 0},
      {"traffic-access_v1alpha3_03.yaml", 2, 1, 0, 1, 0},
      {"traffic-access_v1alpha3_04.yaml", 1, 1, 1, 0, 0},
      {"traffic-specs_v1alpha1_01.yaml", 0, 0, 0, 1, 0},
      // Written with `apiVersion: v1alpha1` (no group) in the spec: rejected.
      {"traffic-specs_v1alpha1_02.yaml", 0, 0, 0, 0, 1},
      {"traffic-specs_v1alpha1_03.yaml", 0, 1, 0, 0, 0},
      {"traffic-specs_v1alpha2_01.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha2_02.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha2_03.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha2_04.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha2_05.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha2_06.yaml", 0, 1, 0, 0, 0},
      {"traffic-specs_v1alpha3_01.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha3_02.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha3_03.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha3_04.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha3_05.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha3_06.yaml", 0, 1, 0, 0, 0},
      {"traffic-specs_v1alpha4_01.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha4_02.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha4_03.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha4_04.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha4_05.yaml", 0, 0, 0, 1, 0},
      {"traffic-specs_v1alpha4_06.yaml", 0, 1, 0, 0, 0},
      {"traffic-specs_v1alpha4_07.yaml", 0, 1, 0, 0, 0},
      {"traffic-specs_v1alpha4_08.yaml", 0, 0, 1, 0, 0},
      {"traffic-specs_v1alpha4_09.yaml", 0, 0, 1, 0, 0},
  };
  // Every access v1alpha1..3 and specs example is listed above.
  size_t on_disk = 0;
  for (const auto& e : std::filesystem::directory_iterator(examplePath(""))) {
    const std::string n = e.path().filename();
    if (n.starts_with("traffic-specs_") ||
        (n.starts_with("traffic-access_") && !n.starts_with("traffic-access_v1alpha4")))
      ++on_disk;
  }
  EXPECT_EQ(on_disk, expected.size());

  for (const ExampleCounts& c : expected) {
    SCOPED_TRACE(c.file);
    const ParseResult r = loadExample(c.file);
    ClusterState s;
    for (const Object& o : r.objects) s.add(o);
    EXPECT_EQ(r.errors.size(), c.errors) << errorsOf(r);
    EXPECT_EQ(r.ignored, 0);
    // Duplicate names within one example (TCPRoute and HTTPRouteGroup both
    // "the-routes") live in different maps, so counting via ClusterState works.
    EXPECT_EQ(s.traffic_targets.size(), c.traffic_targets);
    EXPECT_EQ(s.tcp_routes.size(), c.tcp);
    EXPECT_EQ(s.udp_routes.size(), c.udp);
    EXPECT_EQ(s.http_route_groups.size(), c.http);
    for (const auto& [key, tt] : s.traffic_targets) {
      EXPECT_FALSE(tt.rules.empty()) << key;
      EXPECT_FALSE(tt.sources.empty()) << key;
    }
  }
}

TEST(SpecExamples, AccessV1alpha3_04_ProtocolSpecific) {
  const ParseResult r = loadExample("traffic-access_v1alpha3_04.yaml");
  ASSERT_TRUE(r.errors.empty()) << errorsOf(r);
  ClusterState s;
  for (const Object& o : r.objects) s.add(o);

  ASSERT_EQ(s.tcp_routes.count("default/tcp-ports"), 1u);
  EXPECT_EQ(s.tcp_routes.at("default/tcp-ports").ports, (std::vector<uint16_t>{8301, 8302, 8300}));
  ASSERT_EQ(s.udp_routes.count("default/udp-ports"), 1u);
  EXPECT_EQ(s.udp_routes.at("default/udp-ports").ports, (std::vector<uint16_t>{8301, 8302}));
  EXPECT_EQ(s.udp_routes.at("default/udp-ports").proto, Proto::kUdp);

  // The TrafficTarget has no namespace in the spec: it lands in "default".
  ASSERT_EQ(s.traffic_targets.count("default/protocal-specific"), 1u);
  const TrafficTarget& tt = s.traffic_targets.at("default/protocal-specific");
  EXPECT_EQ(tt.original_version, "v1alpha3");
  EXPECT_EQ(tt.destination.kind, "ServiceAccount");
  EXPECT_EQ(tt.destination.name, "server");
  EXPECT_EQ(tt.destination.ns, "default");
  ASSERT_EQ(tt.rules.size(), 2u);
  EXPECT_EQ(tt.rules[0].kind, "TCPRoute");
  EXPECT_EQ(tt.rules[0].name, "tcp-ports");
  EXPECT_EQ(tt.rules[1].kind, "UDPRoute");
  EXPECT_EQ(tt.rules[1].name, "udp-ports");
  ASSERT_EQ(tt.sources.size(), 1u);
  EXPECT_EQ(tt.sources[0].name, "client");
  EXPECT_EQ(tt.sources[0].ns, "default");
  EXPECT_FALSE(tt.legacy_port.has_value());
}

TEST(SpecExamples, LegacyPortsOfOlderTrafficTargets) {
  for (const char* file : {"traffic-access_v1alpha1_03.yaml", "traffic-access_v1alpha2_03.yaml"}) {
    SCOPED_TRACE(file);
    ClusterState s;
    for (const Object& o : loadExample(file).objects) s.add(o);
    ASSERT_EQ(s.traffic_targets.size(), 2u);
    const TrafficTarget& metrics = s.traffic_targets.at("default/api-service-metrics");
    const TrafficTarget& api = s.traffic_targets.at("default/api-service-api");
    EXPECT_FALSE(metrics.legacy_port.has_value());
    EXPECT_EQ(api.legacy_port, 8080);
    EXPECT_EQ(api.rules.at(0).matches, std::vector<std::string>{"api"});
    ASSERT_EQ(api.sources.size(), 2u);
    EXPECT_EQ(api.sources[1].name, "payments-service");
    const HttpRouteGroup& g = s.http_route_groups.at("default/api-service-routes");
    ASSERT_EQ(g.matches.size(), 2u);
    EXPECT_EQ(g.matches[0].methods, std::vector<std::string>{"*"});
    EXPECT_EQ(g.matches[1].path_regex, "/metrics");
  }
}

TEST(SpecExamples, RouteDetails) {
  const ParseResult old_tcp = loadExample("traffic-specs_v1alpha3_06.yaml");  // spec: {}
  ASSERT_EQ(old_tcp.objects.size(), 1u);
  EXPECT_TRUE(std::get<L4Route>(old_tcp.objects[0]).ports.empty());

  const ParseResult tcp = loadExample("traffic-specs_v1alpha4_06.yaml");
  ASSERT_EQ(tcp.objects.size(), 1u);
  EXPECT_EQ(std::get<L4Route>(tcp.objects[0]).ports, (std::vector<uint16_t>{3306, 6446}));

  const ParseResult udp = loadExample("traffic-specs_v1alpha4_08.yaml");
  ASSERT_EQ(udp.objects.size(), 1u);
  EXPECT_EQ(std::get<L4Route>(udp.objects[0]).proto, Proto::kUdp);
  EXPECT_EQ(std::get<L4Route>(udp.objects[0]).ports, (std::vector<uint16_t>{989, 990}));

  // Headers written as a map, as the spec prose does.
  const ParseResult h = loadExample("traffic-specs_v1alpha4_04.yaml");
  ASSERT_EQ(h.objects.size(), 1u);
  const auto& g = std::get<HttpRouteGroup>(h.objects[0]);
  ASSERT_EQ(g.matches.size(), 2u);
  EXPECT_EQ(g.matches[0].headers,
            (std::vector<std::pair<std::string, std::string>>{
                {"user-agent", ".*Android.*"}, {"cookie", "^(.*?;)?(type=insider)(;.*)?$"}}));
  EXPECT_EQ(g.matches[1].name, "firefox-users");

  const ParseResult bad = loadExample("traffic-specs_v1alpha1_02.yaml");
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].str(),
            "traffic-specs_v1alpha1_02.yaml: HTTPRouteGroup default/the-routes: unsupported "
            "apiVersion \"v1alpha1\" for HTTPRouteGroup");
}

// tests/fixtures/smi-examples/README.md: these examples put HTTPRouteGroup `matches` at the top level
// under a version that wants spec.matches; the CRD rejects them. The
// TrafficSplit itself is valid and keeps its match.
TEST(SpecExamples, SplitAbTestRouteGroupIsRejected) {
  for (const char* file : {"traffic-split_v1alpha3_02.yaml", "traffic-split_v1alpha4_02.yaml"}) {
    SCOPED_TRACE(file);
    const ParseResult r = loadExample(file);
    EXPECT_EQ(r.ignored, 0);
    ASSERT_EQ(r.errors.size(), 1u) << errorsOf(r);
    EXPECT_EQ(r.errors[0].object, (ObjectRef{"HTTPRouteGroup", "default", "ab-test"}));
    EXPECT_EQ(r.errors[0].reason, "missing required field spec.matches");
    ASSERT_EQ(r.objects.size(), 1u);
    const auto& ts = std::get<TrafficSplit>(r.objects[0]);
    EXPECT_EQ(refOf(ts), (ObjectRef{"TrafficSplit", "default", "ab-test"}));
    EXPECT_EQ(ts.service, "website");
    EXPECT_TRUE(ts.has_matches);
    EXPECT_EQ(ts.match_names, std::vector<std::string>{"ab-test"});
    ASSERT_EQ(ts.backends.size(), 2u);
    EXPECT_EQ(ts.backends[0].service, "website-v1");
    EXPECT_EQ(ts.backends[0].weight, 0);
    EXPECT_EQ(ts.backends[1].service, "website-v2");
    EXPECT_EQ(ts.backends[1].weight, 100);
  }
}

// Draft v1alpha4 TrafficTargets (IdentityBinding subjects) have no CRD.
TEST(SpecExamples, AccessV1alpha4DraftIsUnsupported) {
  const ParseResult ib = loadExample("traffic-access_v1alpha4_01.yaml");
  ASSERT_EQ(ib.errors.size(), 1u);
  EXPECT_EQ(ib.errors[0].reason, "unknown kind \"IdentityBinding\"");

  const ParseResult tt = loadExample("traffic-access_v1alpha4_05.yaml");
  EXPECT_EQ(tt.objects.size(), 2u);  // the routes are plain specs v1alpha4
  ASSERT_EQ(tt.errors.size(), 1u);
  EXPECT_EQ(tt.errors[0].reason,
            "unsupported apiVersion \"access.smi-spec.io/v1alpha4\" for TrafficTarget");
}

// ---- the SMI TrafficSplit examples -------------------------------------------

struct SplitExample {
  std::string file;
  size_t services, errors;
  // The example's TrafficSplit, if it has one (always in namespace default).
  std::string name, root;
  std::vector<std::pair<std::string, int64_t>> backends;  // service, weight
};

TEST(SpecExamples, EverySplitExample) {
  using B = std::vector<std::pair<std::string, int64_t>>;
  const B canary = {{"website-v1", 90}, {"website-v2", 10}};
  const B ab = {{"website-v1", 0}, {"website-v2", 100}};
  const B rollout_start = {{"foobar-v1", 100}, {"foobar-v2", 0}};
  const B rollout_mid = {{"foobar-v1", 1000}, {"foobar-v2", 500}};
  const B rollout_end = {{"foobar-v2", 1}};
  const B self = {{"foobar-next", 100}, {"foobar", 900}};
  const B web = {{"web-next", 100}, {"web-current", 900}};
  const std::vector<SplitExample> expected = {
      // v1alpha1 weights are Quantities, normalised to milli-units by value:
      // 10m, 100m, 1500m; 1 and 0m; 1 and 500m; 1; 100m and 900m.
      {"traffic-split_v1alpha1_01.yaml",
       0,
       0,
       "my-weights",
       "numbers",
       {{"one", 10}, {"two", 100}, {"three", 1500}}},
      {"traffic-split_v1alpha1_02.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha1_03.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha1_04.yaml",
       0,
       0,
       "foobar-rollout",
       "foobar",
       {{"foobar-v1", 1000}, {"foobar-v2", 0}}},
      {"traffic-split_v1alpha1_05.yaml",
       0,
       0,
       "foobar-rollout",
       "foobar",
       {{"foobar-v1", 1000}, {"foobar-v2", 500}}},
      {"traffic-split_v1alpha1_06.yaml", 0, 0, "foobar-rollout", "foobar", {{"foobar-v2", 1000}}},
      {"traffic-split_v1alpha1_07.yaml", 0, 0, "my-split", "foobar", self},
      {"traffic-split_v1alpha1_08.yaml", 0, 0, "my-canary", "web", web},
      {"traffic-split_v1alpha2_01.yaml",
       0,
       0,
       "my-trafficsplit",
       "my-website",
       {{"my-website-v1", 50}, {"my-website-v2", 50}}},
      {"traffic-split_v1alpha2_02.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha2_03.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha2_04.yaml", 0, 0, "foobar-rollout", "foobar", rollout_start},
      {"traffic-split_v1alpha2_05.yaml", 0, 0, "foobar-rollout", "foobar", rollout_mid},
      {"traffic-split_v1alpha2_06.yaml", 0, 0, "foobar-rollout", "foobar", rollout_end},
      {"traffic-split_v1alpha2_07.yaml", 0, 0, "my-split", "foobar", self},
      {"traffic-split_v1alpha2_08.yaml", 0, 0, "my-canary", "web", web},
      {"traffic-split_v1alpha3_01.yaml", 0, 0, "canary", "website", canary},
      // The HTTPRouteGroup has top-level `matches`; only it is rejected.
      {"traffic-split_v1alpha3_02.yaml", 0, 1, "ab-test", "website", ab},
      {"traffic-split_v1alpha3_03.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha3_04.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha3_05.yaml", 0, 0, "foobar-rollout", "foobar", rollout_start},
      {"traffic-split_v1alpha3_06.yaml", 0, 0, "foobar-rollout", "foobar", rollout_mid},
      {"traffic-split_v1alpha3_07.yaml", 0, 0, "foobar-rollout", "foobar", rollout_end},
      {"traffic-split_v1alpha3_08.yaml", 0, 0, "my-split", "foobar", self},
      {"traffic-split_v1alpha3_09.yaml", 0, 0, "my-canary", "web", web},
      {"traffic-split_v1alpha4_01.yaml", 0, 0, "canary", "website", canary},
      {"traffic-split_v1alpha4_02.yaml", 0, 1, "ab-test", "website", ab},
      {"traffic-split_v1alpha4_03.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha4_04.yaml", 3, 0, "", "", {}},
      {"traffic-split_v1alpha4_05.yaml", 0, 0, "foobar-rollout", "foobar", rollout_start},
      {"traffic-split_v1alpha4_06.yaml", 0, 0, "foobar-rollout", "foobar", rollout_mid},
      {"traffic-split_v1alpha4_07.yaml", 0, 0, "foobar-rollout", "foobar", rollout_end},
      {"traffic-split_v1alpha4_08.yaml", 0, 0, "my-split", "foobar", self},
      {"traffic-split_v1alpha4_09.yaml", 0, 0, "my-canary", "web", web},
  };
  size_t on_disk = 0;
  for (const auto& e : std::filesystem::directory_iterator(examplePath("")))
    on_disk += e.path().filename().string().starts_with("traffic-split_");
  EXPECT_EQ(on_disk, expected.size());

  for (const SplitExample& c : expected) {
    SCOPED_TRACE(c.file);
    const ParseResult r = loadExample(c.file);
    ClusterState s;
    for (const Object& o : r.objects) s.add(o);
    EXPECT_EQ(r.errors.size(), c.errors) << errorsOf(r);
    EXPECT_EQ(r.ignored, 0);
    EXPECT_EQ(s.services.size(), c.services);
    EXPECT_EQ(s.traffic_splits.size(), c.name.empty() ? 0u : 1u);
    EXPECT_EQ(r.objects.size(), s.services.size() + s.traffic_splits.size());
    if (c.name.empty()) continue;
    ASSERT_EQ(s.traffic_splits.count("default/" + c.name), 1u);
    const TrafficSplit& ts = s.traffic_splits.at("default/" + c.name);
    EXPECT_EQ(ts.original_version, c.file.substr(c.file.find("_v") + 1, 8));
    EXPECT_EQ(ts.service, c.root);
    B got;
    for (const TrafficSplitBackend& b : ts.backends) got.emplace_back(b.service, b.weight);
    EXPECT_EQ(got, c.backends);
    EXPECT_EQ(ts.has_matches, c.name == "ab-test");
  }
}

// The spec's rollout workflow (TrafficSplit, v1alpha4): pre-create v2 at weight 0, shift to
// 1000/500 (v2 gets a third), then v2 alone. v1alpha1 writes the middle step
// as 1 / 500m: normalised by value it keeps the same 2:1 ratio.
TEST(SpecExamples, SplitRolloutWorkflow) {
  const auto weights = [](const std::string& file) {
    const ParseResult r = loadExample(file);
    EXPECT_TRUE(r.errors.empty()) << errorsOf(r);
    std::map<std::string, int64_t> w;
    for (const Object& o : r.objects)
      for (const TrafficSplitBackend& b : std::get<TrafficSplit>(o).backends)
        w[b.service] = b.weight;
    return w;
  };
  using W = std::map<std::string, int64_t>;
  EXPECT_EQ(weights("traffic-split_v1alpha4_05.yaml"), (W{{"foobar-v1", 100}, {"foobar-v2", 0}}));
  const W mid = weights("traffic-split_v1alpha4_06.yaml");
  EXPECT_EQ(mid, (W{{"foobar-v1", 1000}, {"foobar-v2", 500}}));
  EXPECT_EQ(weights("traffic-split_v1alpha4_07.yaml"), (W{{"foobar-v2", 1}}));

  const W legacy = weights("traffic-split_v1alpha1_05.yaml");
  ASSERT_EQ(legacy.size(), 2u);
  EXPECT_EQ(legacy.at("foobar-v1") * mid.at("foobar-v2"),
            legacy.at("foobar-v2") * mid.at("foobar-v1"));
}

// The backend Services of the split examples: same port, own targetPort.
TEST(SpecExamples, SplitBackendServices) {
  for (const char* file : {"traffic-split_v1alpha1_02.yaml", "traffic-split_v1alpha4_03.yaml"}) {
    SCOPED_TRACE(file);
    ClusterState s;
    for (const Object& o : loadExample(file).objects) s.add(o);
    ASSERT_EQ(s.services.size(), 3u);
    const Service& root = s.services.at("default/birds");
    EXPECT_EQ(root.selector, (std::map<std::string, std::string>{{"app", "birds"}}));
    EXPECT_TRUE(root.has_selector);
    EXPECT_TRUE(root.cluster_ips.empty());
    ASSERT_EQ(root.ports.size(), 2u);
    EXPECT_EQ(root.ports[0].name, "grpc");
    EXPECT_EQ(root.ports[0].port, 8080);
    EXPECT_EQ(root.ports[0].target_port_number, 8080);
    EXPECT_EQ(root.ports[1].name, "rest");
    EXPECT_EQ(root.ports[1].target_port_number, 9090);
    const Service& green = s.services.at("default/green-birds");
    EXPECT_EQ(green.selector.at("color"), "green");
    ASSERT_EQ(green.ports.size(), 2u);
    EXPECT_EQ(green.ports[0].port, 8080);
    EXPECT_EQ(green.ports[0].target_port_number, 8081);
    EXPECT_EQ(green.ports[1].target_port_number, 9090);
    EXPECT_EQ(s.services.at("default/blue-birds").ports.at(0).target_port_number, 8080);
  }
  // The "missing port" variant: blue-birds serves 1024, not the root's 8080.
  ClusterState s;
  for (const Object& o : loadExample("traffic-split_v1alpha4_04.yaml").objects) s.add(o);
  ASSERT_EQ(s.services.size(), 3u);
  ASSERT_EQ(s.services.at("default/blue-birds").ports.size(), 1u);
  EXPECT_EQ(s.services.at("default/blue-birds").ports[0].port, 1024);
  EXPECT_EQ(s.services.at("default/green-birds").ports.at(0).port, 8080);
}


// Workload controllers are read for ownership only: who owns whom names the
// Deployment of a pod in metrics.
TEST(Documents, WorkloadsAndOwnerReferences) {
  const ParseResult r = parse(R"(
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-7b9c
  namespace: shop
  ownerReferences:
  - {apiVersion: apps/v1, kind: Deployment, name: web, uid: a, controller: true}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-7b9c-x1
  namespace: shop
  ownerReferences:
  - {apiVersion: v1, kind: Other, name: nope, uid: b}
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7b9c, uid: c, controller: true}
)");
  ASSERT_TRUE(r.errors.empty()) << errorsOf(r);
  ASSERT_EQ(r.objects.size(), 2u);
  const auto& rs = std::get<Workload>(r.objects[0]);
  EXPECT_EQ(rs.kind, "ReplicaSet");
  EXPECT_EQ(rs.meta.owner_kind, "Deployment");
  EXPECT_EQ(rs.meta.owner_name, "web");
  const auto& pod = std::get<Pod>(r.objects[1]);
  EXPECT_EQ(pod.meta.owner_kind, "ReplicaSet") << "the controller wins over the first";
  EXPECT_EQ(pod.meta.owner_name, "web-7b9c");
  ClusterState s;
  for (const auto& o : r.objects) s.add(o);
  EXPECT_EQ(s.workloads.count("ReplicaSet/shop/web-7b9c"), 1u);
}

// ---- hostile input -------------------------------------------------------------
// A manifest is untrusted text: whatever it holds, the parser answers with
// objects or errors naming the file, never a crash, a hang or a blow-up.

// What std::regex made of plain scalars before: the scanner must agree with
// it on every short string over the characters that matter.
TEST(ParseHostile, ScalarClassifierMatchesTheCoreSchemaOnEveryShortString) {
  const std::regex int_re(R"([-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)");
  const std::regex float_re(
      R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))");
  const std::regex bool_re("true|True|TRUE|false|False|FALSE");
  const auto expected = [&](const std::string& s) {
    if (std::regex_match(s, int_re)) return ScalarType::kInt;
    if (std::regex_match(s, float_re)) return ScalarType::kFloat;
    if (std::regex_match(s, bool_re)) return ScalarType::kBool;
    return ScalarType::kString;
  };
  const std::string alphabet = "0178.+-eExXoaF";
  std::vector<std::string> all = {""};
  for (size_t len = 1, begin = 0; len <= 5; ++len) {
    const size_t end = all.size();
    for (size_t i = begin; i < end; ++i)
      for (char c : alphabet) all.push_back(all[i] + c);
    begin = end;
  }
  for (const char* s : {".inf", "-.Inf", "+.INF", ".nan", ".NaN", ".NAN", "+.nan", "true", "True",
                        "TRUE", "false", "tRUE", "0x1F", "0o17", "+0x1", "0o8", "1e", "1e+"})
    all.push_back(s);
  int mismatches = 0;
  for (const std::string& s : all)
    if (classifyPlainScalar(s) != expected(s) && ++mismatches < 10)
      ADD_FAILURE() << "\"" << s << "\": " << static_cast<int>(classifyPlainScalar(s)) << " vs "
                    << static_cast<int>(expected(s));
  EXPECT_EQ(mismatches, 0) << "of " << all.size();
}

TEST(ParseHostile, MegabyteScalarsAreReadWithoutRecursion) {
  const std::string digits(1 << 20, '7');
  const auto account = [](const std::string& label) {
    return "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n  labels:\n    app: " +
           label + "\n";
  };
  EXPECT_EQ(one<ServiceAccount>(account(digits + "x")).meta.labels.at("app").size(),
            digits.size() + 1);  // not a number: a string, and a fine label
  const std::string some(1 << 16, '7');
  for (const std::string& value : {digits, "-" + some, "0x" + some, "1." + some + "e5"}) {
    const std::string e = error(account(value));
    EXPECT_CONTAINS(e, "t.yaml: ServiceAccount default/sa: metadata.labels.app: expected a string");
    EXPECT_LT(e.size(), 300u) << "the value is cut short in the message";
  }
  // As a port: a number too large for 64 bits, out of range.
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                        "spec:\n  ports:\n  - port: " + digits + "\n"),
                  "out of range");
}

// Aliases nested three deep: 100 pods of 100 containers of 100 ports each,
// a million ports, from a file of a few kilobytes.
std::string billionLaughs(int fan_out) {
  std::string aliases;
  const auto many = [&](const std::string& name) {
    std::string out = "[";
    for (int i = 0; i < fan_out; ++i) out += (i ? ", *" : "*") + name;
    return out + "]";
  };
  return "apiVersion: v1\nkind: List\ndefs:\n"
         "  port: &port {containerPort: 80}\n"
         "  ports: &ports " + many("port") + "\n"
         "  container: &container {name: c, ports: *ports}\n"
         "  containers: &containers " + many("container") + "\n"
         "  pod: &pod {apiVersion: v1, kind: Pod, metadata: {name: p},"
         " spec: {containers: *containers}}\n"
         "items: " + many("pod") + "\n";
}

TEST(ParseHostile, AliasFanOutIsBounded) {
  const auto started = std::chrono::steady_clock::now();
  const ParseResult r = parseManifests(billionLaughs(100), "laughs.yaml");
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_TRUE(r.objects.empty());
  ASSERT_EQ(r.errors.size(), 1u) << errorsOf(r);
  EXPECT_CONTAINS(r.errors[0].str(), "laughs.yaml: rejected before parsing: line ");
  EXPECT_CONTAINS(r.errors[0].str(), "aliases expand to more than 100000 nodes");

  // Aliases within the bound are fine: a shared label block.
  const ParseResult ok = parse(R"(apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: &labels {smik.io/mesh: enabled}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: *labels}}
)");
  ASSERT_TRUE(ok.errors.empty()) << errorsOf(ok);
  ASSERT_EQ(ok.objects.size(), 2u);
  EXPECT_EQ(std::get<Namespace>(ok.objects[1]).meta.labels.at("smik.io/mesh"), "enabled");
}

TEST(ParseHostile, AnAliasInsideItsOwnAnchorIsRefused) {
  EXPECT_CONTAINS(error("apiVersion: v1\nkind: List\nitems: &items [*items]\n"),
                  "an alias names a node that contains it");
}

// Found by fuzzing (tests/fuzz/corpus/manifest/timeout-yaml-cpp-comma-*):
// yaml-cpp 0.7 loops forever on a ',' outside any collection, making
// document after document of nothing; the agent's manifest thread hung.
TEST(ParseHostile, ACommaOutsideAnyCollectionIsAnErrorNotAHang) {
  for (const std::string text :
       {",", "\"\",", "'x' ,", "{a: 1},", "[a],",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\n[a],\n"}) {
    const auto started = std::chrono::steady_clock::now();
    const ParseResult r = parse(text);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1)) << text;
    EXPECT_TRUE(r.objects.empty()) << text;
    ASSERT_EQ(r.errors.size(), 1u) << text << "\n" << errorsOf(r);
    EXPECT_CONTAINS(r.errors[0].str(), "a ',' outside any list or map");
  }
}

TEST(ParseHostile, NestingDepthIsBounded) {
  const int deep = 100'000;
  const std::string flow_lists = std::string(deep, '[') + std::string(deep, ']');
  std::string flow_maps, block_lists, block_maps;
  for (int i = 0; i < deep; ++i) flow_maps += "{a: ";
  flow_maps += "1" + std::string(deep, '}');
  for (int i = 0; i < deep; ++i) block_lists += "- ";
  block_lists += "x";
  for (int i = 1; i <= 2000; ++i) block_maps += std::string(i, ' ') + "a:\n";
  block_maps += std::string(2001, ' ') + "1";
  for (const std::string& nest : {flow_lists, flow_maps, block_lists}) {
    const ParseResult r = parseManifests(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nx:\n  " + nest + "\n", "deep.yaml");
    ASSERT_EQ(r.errors.size(), 1u) << errorsOf(r);
    EXPECT_CONTAINS(r.errors[0].str(), "deep.yaml: rejected before parsing: line ");
    EXPECT_CONTAINS(r.errors[0].str(), "nested deeper than 100 levels");
  }
  const ParseResult r = parseManifests(
      "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nx:\n" + block_maps + "\n", "deep.yaml");
  ASSERT_EQ(r.errors.size(), 1u) << errorsOf(r);
  EXPECT_CONTAINS(r.errors[0].str(), "deep.yaml: rejected before parsing: line 104: nested deeper");
  // The limit itself is allowed: 99 levels under the document's own map.
  const ParseResult at_limit = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nx: " +
                                     std::string(99, '[') + std::string(99, ']') + "\n");
  EXPECT_TRUE(at_limit.errors.empty()) << errorsOf(at_limit);
  const ParseResult over = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nx: " +
                                 std::string(100, '[') + std::string(100, ']') + "\n");
  EXPECT_EQ(over.errors.size(), 1u);
}

}  // namespace
}  // namespace smik::model
