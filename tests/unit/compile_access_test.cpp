// Who may talk to whom: access modes, rules, ports and protocols, and the
// v1alpha1/v1alpha2 destination.port.
// (README: SMI semantics, where the spec is silent; one small test per
// decision, each built from YAML manifests through the real parser.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/compile/explain.h"
#include "agent/datapath/system.h"
#include "agent/model/parse.h"
#include "tests/unit/compile_support.h"

namespace smik::compile {

using ::testing::HasSubstr;

// ---- access modes --------------------------------------------------------

TEST(CompileAccessMode, StrictEnforcesEveryLocalMeshedIdentity) {
  const Plan p = compile(stateOf(base()), node(AccessMode::kStrict));
  EXPECT_EQ(enforced(p), (std::set<std::string>{"prod/client", "prod/server"}));
  EXPECT_EQ(grants(p), kNone);
  const smik_policy_key meta{SMIK_ID_META, p.identities.at("prod/server"), 0, 0, 0};
  ASSERT_EQ(p.policy.count(meta), 1u);
  EXPECT_EQ(p.policy.at(meta), (smik_policy_value{0, SMIK_POL_F_ENFORCED}));
}

TEST(CompileAccessMode, PermissiveInstallsNoPolicyEntries) {
  const Plan p =
      compile(stateOf(base() + clientToServerTcp("[80]")), node(AccessMode::kPermissive));
  EXPECT_TRUE(p.policy.empty());
  EXPECT_TRUE(p.rules.empty());
  // Addresses and endpoints are still known.
  EXPECT_EQ(endpointsOf(p), (std::set<std::string>{"prod/client-0", "prod/server-0"}));
  EXPECT_EQ(p.ip_identity.size(), 2u);
}

TEST(CompileAccessMode, PerDestinationEnforcesOnlyTrafficTargetDestinations) {
  const Plan p =
      compile(stateOf(base() + clientToServerTcp("[80]")), node(AccessMode::kPerDestination));
  EXPECT_EQ(enforced(p), (std::set<std::string>{"prod/server"}));
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/80"}));
}

TEST(CompileAccessMode, PerDestinationIgnoresInvalidTrafficTargets) {
  const std::string invalid =
      trafficTarget("prod", "no-rules", "server", "[]", "[" + source("client") + "]") +
      meshedNs("team") + tcpRoute("team", "web", "[80]") +
      trafficTarget("team", "elsewhere", "server", "[" + rule("TCPRoute", "web") + "]",
                    "[" + source("client", "prod") + "]", "prod");
  const Plan p = compile(stateOf(base() + invalid), node(AccessMode::kPerDestination));
  EXPECT_EQ(enforced(p), kNone);
  EXPECT_EQ(grants(p), kNone);
}

TEST(CompileAccessMode, ParseAndNames) {
  for (auto m : {AccessMode::kStrict, AccessMode::kPermissive, AccessMode::kPerDestination}) {
    AccessMode out = AccessMode::kStrict;
    EXPECT_TRUE(parseAccessMode(accessModeName(m), &out));
    EXPECT_EQ(out, m);
  }
  AccessMode out = AccessMode::kPermissive;
  EXPECT_FALSE(parseAccessMode("Strict", &out));
  EXPECT_FALSE(parseAccessMode("", &out));
  EXPECT_EQ(out, AccessMode::kPermissive);
}

// ---- rules, ports and protocols -------------------------------------------

TEST(CompileRules, TrafficTargetsAreAdditive) {
  const std::string yaml = base() + tcpRoute("prod", "web", "[80]") +
                           tcpRoute("prod", "admin", "[9000]") + udpRoute("prod", "dns", "[53]") +
                           grant("a", "server", "TCPRoute", "web", "client") +
                           grant("b", "server", "TCPRoute", "admin", "ops") +
                           grant("c", "server", "UDPRoute", "dns", "client") +
                           // Overlaps "a": a union, not a conflict.
                           trafficTarget("prod", "d", "server", "[" + rule("TCPRoute", "web") + "]",
                                         "[" + source("client") + ", " + source("ops") + "]");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(grants(p), (std::set<std::string>{
                           "prod/client -> prod/server TCP/80",
                           "prod/client -> prod/server UDP/53",
                           "prod/ops -> prod/server TCP/80",
                           "prod/ops -> prod/server TCP/9000",
                       }));
}

TEST(CompileRules, EmptyPortListMeansAllPortsOfThatProtocolOnly) {
  const Plan tcp = compile(stateOf(base() + clientToServerTcp("[]")), node());
  EXPECT_EQ(grants(tcp), (std::set<std::string>{"prod/client -> prod/server TCP/*"}));
  const smik_policy_key all_tcp{tcp.identities.at("prod/client"), tcp.identities.at("prod/server"),
                                0, SMIK_PROTO_TCP, 0};
  EXPECT_EQ(tcp.policy.count(all_tcp), 1u);

  const Plan udp = compile(stateOf(base() + udpRoute("prod", "dns", "[]") +
                                   grant("dns", "server", "UDPRoute", "dns", "client")),
                           node());
  EXPECT_EQ(grants(udp), (std::set<std::string>{"prod/client -> prod/server UDP/*"}));
}

TEST(CompileRules, TcpAndUdpRoutesGrantOnlyTheirProtocol) {
  // The spec's traffic-access_v1alpha3_04 semantics.
  const std::string yaml = base() + tcpRoute("prod", "tcp-ports", "[8301, 8302, 8300]") +
                           udpRoute("prod", "udp-ports", "[8301, 8302]") +
                           trafficTarget("prod", "protocol-specific", "server",
                                         "[" + rule("TCPRoute", "tcp-ports") + ", " +
                                             rule("UDPRoute", "udp-ports") + "]",
                                         "[" + source("client") + "]");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(grants(p), (std::set<std::string>{
                           "prod/client -> prod/server TCP/8300",
                           "prod/client -> prod/server TCP/8301",
                           "prod/client -> prod/server TCP/8302",
                           "prod/client -> prod/server UDP/8301",
                           "prod/client -> prod/server UDP/8302",
                       }));
}

TEST(CompileRules, TrafficTargetOutsideDestinationNamespaceIsIgnored) {
  const std::string yaml =
      base() + meshedNs("team") + tcpRoute("team", "web", "[80]") +
      trafficTarget("team", "cross", "server", "[" + rule("TCPRoute", "web") + "]",
                    "[" + source("client", "prod") + "]", "prod");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(grants(p), kNone);
  const auto d = diagnosticsFor(p, ttRef("team", "cross"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_THAT(d[0], HasSubstr("warning: destination namespace prod differs"));
}

TEST(CompileRules, RoutesAreResolvedInTheTrafficTargetNamespace) {
  const std::string tt = grant("allow-web", "server", "TCPRoute", "web", "client");
  const Plan elsewhere =
      compile(stateOf(base() + meshedNs("other") + tcpRoute("other", "web", "[80]") + tt), node());
  EXPECT_EQ(grants(elsewhere), kNone);
  const auto d = diagnosticsFor(elsewhere, ttRef("prod", "allow-web"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_THAT(d[0], HasSubstr("TCPRoute web not found in namespace prod: grants nothing"));

  const Plan here = compile(stateOf(base() + tcpRoute("prod", "web", "[80]") + tt), node());
  EXPECT_EQ(grants(here), (std::set<std::string>{"prod/client -> prod/server TCP/80"}));
}

TEST(CompileRules, EmptyRulesGrantNothing) {
  const Plan p =
      compile(stateOf(base() + tcpRoute("prod", "web", "[]") +
                      trafficTarget("prod", "empty", "server", "[]", "[" + source("client") + "]")),
              node());
  EXPECT_EQ(grants(p), kNone);
  EXPECT_EQ(enforced(p), (std::set<std::string>{"prod/client", "prod/server"}));
  const auto d = diagnosticsFor(p, ttRef("prod", "empty"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_EQ(d[0], "warning: no rules: grants nothing");
}

TEST(CompileRules, EmptySourcesGrantNothing) {
  const Plan p = compile(
      stateOf(base() + tcpRoute("prod", "web", "[]") +
              trafficTarget("prod", "nobody", "server", "[" + rule("TCPRoute", "web") + "]", "[]")),
      node());
  EXPECT_EQ(grants(p), kNone);
  const auto d = diagnosticsFor(p, ttRef("prod", "nobody"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_EQ(d[0], "warning: no sources: grants nothing");
}

TEST(CompileRules, MissingRouteGrantsNothingNeverAllPorts) {
  const std::string yaml =
      base() + tcpRoute("prod", "web", "[80]") +
      trafficTarget("prod", "partly-missing", "server",
                    "[" + rule("TCPRoute", "ghost") + ", " + rule("UDPRoute", "ghost") + ", " +
                        rule("TCPRoute", "web") + "]",
                    "[" + source("client") + "]") +
      grant("all-missing", "server", "TCPRoute", "gone", "other");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/80"}));
  for (const auto& [k, v] : p.policy) {
    if (k.src_id != SMIK_ID_META) {
      EXPECT_NE(k.dport, 0) << "an all-ports grant appeared";
    }
  }
  const auto d = diagnosticsFor(p, ttRef("prod", "partly-missing"));
  ASSERT_EQ(d.size(), 2u) << joined(d);
  EXPECT_THAT(d[0], HasSubstr("TCPRoute ghost not found in namespace prod: grants nothing"));
  EXPECT_THAT(d[1], HasSubstr("UDPRoute ghost not found in namespace prod: grants nothing"));
  EXPECT_EQ(diagnosticsFor(p, ttRef("prod", "all-missing")).size(), 1u);
}

TEST(CompileRules, HttpRouteGroupOnlyGrantsNothingByDefault) {
  const std::string yaml = base() + httpGroup("prod", "api") +
                           grant("http-only", "server", "HTTPRouteGroup", "api", "client");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(grants(p), kNone);
  EXPECT_EQ(enforced(p).count("prod/server"), 1u);
  const auto d = diagnosticsFor(p, ttRef("prod", "http-only"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_THAT(d[0],
              HasSubstr("warning: HTTPRouteGroup api: HTTP rules are L7 and grant nothing at L4"));
}

TEST(CompileRules, HttpRouteGroupOnlyGrantsAllTcpWhenConfigured) {
  const std::string yaml = base() + httpGroup("prod", "api") +
                           grant("http-only", "server", "HTTPRouteGroup", "api", "client");
  NodeConfig n = node();
  n.http_rules = HttpRulesAtL4::kGrantAllTcp;
  const Plan p = compile(stateOf(yaml), n);
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/*"}));
  const auto d = diagnosticsFor(p, ttRef("prod", "http-only"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_THAT(d[0], HasSubstr("info: HTTPRouteGroup api: L7 rule enforced at L4 as all TCP ports"));
}

TEST(CompileRules, MissingHttpRouteGroupGrantsNothingEvenWhenLenient) {
  NodeConfig n = node();
  n.http_rules = HttpRulesAtL4::kGrantAllTcp;
  const Plan p =
      compile(stateOf(base() + grant("http-only", "server", "HTTPRouteGroup", "api", "client")), n);
  EXPECT_EQ(grants(p), kNone);
  EXPECT_THAT(joined(diagnosticsFor(p, ttRef("prod", "http-only"))),
              HasSubstr("HTTPRouteGroup api not found in namespace prod"));
}

TEST(CompileRules, TcpRouteWithHttpRouteGroupGrantsOnlyTheTcpRoutePorts) {
  const std::string yaml =
      base() + httpGroup("prod", "api") + tcpRoute("prod", "web", "[8080]") +
      trafficTarget("prod", "mixed", "server",
                    "[" + rule("TCPRoute", "web") + ", " + rule("HTTPRouteGroup", "api") + "]",
                    "[" + source("client") + "]");
  for (auto mode : {HttpRulesAtL4::kGrantNothing, HttpRulesAtL4::kGrantAllTcp}) {
    NodeConfig n = node();
    n.http_rules = mode;
    const Plan p = compile(stateOf(yaml), n);
    EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/8080"}));
    const auto d = diagnosticsFor(p, ttRef("prod", "mixed"));
    ASSERT_EQ(d.size(), 1u) << joined(d);
    EXPECT_THAT(d[0],
                HasSubstr("info: HTTPRouteGroup api: path/method restrictions are not enforced"));
  }
}

// ---- v1alpha1/v1alpha2 destination.port -----------------------------------------

TEST(CompileLegacyPort, PortInRouteNarrowsToThatPort) {
  const Plan p =
      compile(stateOf(base() + tcpRoute("prod", "web", "[80, 8080]") + legacyTarget("web", "8080")),
              node());
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/server TCP/8080"}));
}

TEST(CompileLegacyPort, RouteWithoutPortsGrantsTheDestinationPort) {
  // specs v1alpha3 TCPRoute: no ports, i.e. all ports.
  const std::string any =
      "---\napiVersion: specs.smi-spec.io/v1alpha3\nkind: TCPRoute\n"
      "metadata: {name: any, namespace: prod}\nspec: {}\n";
  const Plan narrowed = compile(stateOf(base() + any + legacyTarget("any", "9090")), node());
  EXPECT_EQ(grants(narrowed), (std::set<std::string>{"prod/client -> prod/server TCP/9090"}));
  // No destination.port: all TCP ports.
  const Plan all = compile(stateOf(base() + any + legacyTarget("any", "")), node());
  EXPECT_EQ(grants(all), (std::set<std::string>{"prod/client -> prod/server TCP/*"}));
}

TEST(CompileLegacyPort, PortNotInRouteGrantsNothing) {
  const Plan p = compile(
      stateOf(base() + tcpRoute("prod", "web", "[80]") + legacyTarget("web", "8080")), node());
  EXPECT_EQ(grants(p), kNone);
  const auto d = diagnosticsFor(p, ttRef("prod", "legacy"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_THAT(d[0], HasSubstr("TCPRoute web has no port 8080 (destination.port): grants nothing"));
}

}  // namespace smik::compile
