// The SMI kinds field by field: TrafficTarget, TCPRoute/UDPRoute,
// HTTPRouteGroup (and the object names and errors of objects.cpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <string>

#include "agent/model/parse.h"
#include "tests/unit/parse_support.h"

namespace smik::model {
namespace {

using ::testing::HasSubstr;

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
  EXPECT_THAT(error(withPort("0")),
              HasSubstr("spec.destination.port: port 0 out of range 1..65535"));
  EXPECT_THAT(error(withPort("70000")), HasSubstr("port 70000 out of range"));
  EXPECT_THAT(error(withPort("\"http\"")), HasSubstr("spec.destination.port: expected an integer"));
  EXPECT_THAT(error(withPort("80.5")), HasSubstr("spec.destination.port: expected an integer"));
  EXPECT_THAT(error(withPort("[80]")), HasSubstr("spec.destination.port: expected an integer"));
  EXPECT_THAT(error(withPort("99999999999999999999999")), HasSubstr("out of range"));
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
  EXPECT_EQ(tt.meta.labels, (model::Labels{{"team", "a"}}));
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
  EXPECT_THAT(error(v1alpha3Spec("  rules: []\n  sources: []\n")),
              HasSubstr("missing required field spec.destination"));
  EXPECT_THAT(error("apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n"
                        "metadata: {name: tt}\n"), HasSubstr("missing required field spec"));
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
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: IdentityBinding, name: s}\n"
                                 "  rules: []\n  sources: []\n")),
              HasSubstr("spec.destination.kind: unsupported subject kind \"IdentityBinding\""));
  EXPECT_EQ(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                               "  rules: [{kind: Foo, name: x}]\n  sources: []\n")),
            "t.yaml: TrafficTarget default/tt: spec.rules[0].kind: unsupported rule kind \"Foo\"");
  EXPECT_THAT(error("apiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\n"
                    "metadata: {name: tt}\nspec:\n"
                    "  destination: {kind: ServiceAccount, name: s}\n"
                    "  rules: [{kind: UDPRoute, name: u}]\n"),
              HasSubstr("spec.rules[0].kind: unsupported rule kind \"UDPRoute\""));
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount}\n  rules: []\n"
                                 "  sources: []\n")),
              HasSubstr("missing required field spec.destination.name"));
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                 "  rules: [{kind: TCPRoute}]\n  sources: []\n")),
              HasSubstr("missing required field spec.rules[0].name"));
}

TEST(TrafficTarget, WrongTypes) {
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                 "  rules: {}\n  sources: []\n")),
              HasSubstr("spec.rules: expected a list, got a map"));
  EXPECT_THAT(error(v1alpha3Spec("  destination: [a]\n  rules: []\n  sources: []\n")),
              HasSubstr("spec.destination: expected a map, got a list"));
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                 "  rules: [tcp]\n  sources: []\n")),
              HasSubstr("spec.rules[0]: expected a map, got \"tcp\""));
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: 5}\n"
                                 "  rules: []\n  sources: []\n")),
              HasSubstr("spec.destination.name: expected a string, got 5"));
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                 "  rules: [{kind: TCPRoute, name: t, matches: a}]\n"
                                 "  sources: []\n")),
              HasSubstr("spec.rules[0].matches: expected a list"));
  EXPECT_THAT(error(v1alpha3Spec("  destination: {kind: ServiceAccount, name: s}\n"
                                 "  rules: []\n  sources: [{kind: ServiceAccount, name: c, "
                                 "namespace: {}}]\n")),
              HasSubstr("spec.sources[0].namespace: expected a string, got a map"));
}

// ---- TCPRoute / UDPRoute ----------------------------------------------------


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
  EXPECT_THAT(error(route("TCPRoute", "v1alpha4", "spec: {}")),
              HasSubstr("missing required field spec.matches.ports"));
  EXPECT_THAT(error(route("TCPRoute", "v1alpha4", "")),
              HasSubstr("missing required field spec.matches.ports"));
  EXPECT_THAT(error(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: }}")),
              HasSubstr("missing required field spec.matches.ports"));
}

TEST(L4Route, BadPorts) {
  const auto bad = [](const std::string& ports) {
    return error(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: " + ports + "}}"));
  };
  EXPECT_EQ(bad("[80, 0]"),
            "t.yaml: TCPRoute db/r: spec.matches.ports[1]: port 0 out of range 1..65535");
  EXPECT_THAT(bad("[70000]"), HasSubstr("spec.matches.ports[0]: port 70000 out of range 1..65535"));
  EXPECT_THAT(bad("[-1]"), HasSubstr("spec.matches.ports[0]: port -1 out of range"));
  EXPECT_THAT(bad("\"abc\""), HasSubstr("spec.matches.ports: expected a list, got \"abc\""));
  EXPECT_THAT(bad("[abc]"), HasSubstr("spec.matches.ports[0]: expected an integer, got \"abc\""));
  EXPECT_THAT(bad("[\"80\"]"), HasSubstr("spec.matches.ports[0]: expected an integer, got \"80\""));
  EXPECT_THAT(bad("[8.5]"), HasSubstr("spec.matches.ports[0]: expected an integer, got 8.5"));
  EXPECT_THAT(bad("[true]"), HasSubstr("spec.matches.ports[0]: expected an integer, got true"));
  EXPECT_THAT(bad("[[80]]"), HasSubstr("spec.matches.ports[0]: expected an integer, got a list"));
  EXPECT_THAT(error(route("TCPRoute", "v1alpha4", "spec: {matches: [{ports: [80]}]}")),
              HasSubstr("spec.matches: expected a map, got a list"));
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
  EXPECT_THAT(error(route("UDPRoute", "v1alpha4", "spec: {matches: {ports: [0]}}")),
              HasSubstr("port 0 out of range"));
  EXPECT_EQ(error(route("UDPRoute", "v1alpha3", "spec: {matches: {ports: [53]}}")),
            "t.yaml: UDPRoute db/r: unsupported apiVersion \"specs.smi-spec.io/v1alpha3\" for "
            "UDPRoute");
}

// ---- HTTPRouteGroup ---------------------------------------------------------

TEST(HttpRouteGroup, HeadersAsListAndAsMap) {
  const std::string head = R"(
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g}
spec:
  matches:
  - name: android
    pathRegex: /api/.*
    methods: [GET, HEAD]
    headers:
)";
  const std::string list_form = head + R"(    - user-agent: ".*Android.*"
    - cookie: "type=insider"
)";
  const std::string map_form = head + R"(      user-agent: ".*Android.*"
      cookie: "type=insider"
)";
  for (const std::string& text : {list_form, map_form}) {
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

  EXPECT_THAT(error("apiVersion: specs.smi-spec.io/v1alpha2\nkind: HTTPRouteGroup\n"
                    "metadata: {name: g}\nspec: {matches: [{name: all}]}\n"),
              HasSubstr("missing required field matches"));
  EXPECT_THAT(error("apiVersion: specs.smi-spec.io/v1alpha3\nkind: HTTPRouteGroup\n"
                    "metadata: {name: g}\nmatches: [{name: all}]\n"),
              HasSubstr("missing required field spec.matches"));
}

TEST(HttpRouteGroup, Errors) {
  const auto bad = [](const std::string& match) {
    return error(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n"
        "metadata: {name: g}\nspec:\n  matches:\n  - " +
        match + "\n");
  };
  EXPECT_THAT(bad("{pathRegex: /x}"), HasSubstr("missing required field spec.matches[0].name"));
  EXPECT_THAT(bad("{name: m, methods: [FETCH]}"),
              HasSubstr("spec.matches[0].methods[0]: unsupported method \"FETCH\""));
  EXPECT_THAT(bad("{name: m, methods: GET}"),
              HasSubstr("spec.matches[0].methods: expected a list"));
  EXPECT_THAT(bad("{name: m, headers: x}"),
              HasSubstr("spec.matches[0].headers: expected a list or a map, got \"x\""));
  EXPECT_THAT(bad("{name: m, headers: [x]}"),
              HasSubstr("spec.matches[0].headers[0]: expected a map, got \"x\""));
  EXPECT_THAT(bad("{name: m, headers: {a: [b]}}"),
              HasSubstr("spec.matches[0].headers.a: expected a string, got a list"));
  EXPECT_THAT(bad("{name: m, pathRegex: [x]}"),
              HasSubstr("spec.matches[0].pathRegex: expected a string"));
}

}  // namespace
}  // namespace smik::model
