// Services and TrafficSplit (README: SMI semantics): which endpoints a
// Service has, tables that stay put across recompiles, `smik explain` of a
// Service, old split versions, and capacity.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/compile/explain.h"
#include "maps/maps.h"
#include "tests/unit/services_support.h"

namespace smik::compile {
namespace {

using ::testing::HasSubstr;

// ---- endpoint derivation ---------------------------------------------------------

TEST(ServiceEndpoints, SlicesWinOverSelector) {
  const std::string y = app("web", "10.96.0.1", {"10.0.0.1"}) +
                        slice("web-a", "web", "IPv4",
                              "[{addresses: [10.2.0.1], targetRef: {kind: Pod, name: x}}]",
                              "[{name: http, port: 8080}]");
  const ServiceTable t = tableOf(compiled(y), "prod/web", 80);
  EXPECT_EQ(allAddrs(t), (std::set<std::string>{"10.2.0.1:8080"}));
  ASSERT_EQ(t.groups.size(), 1u);
  EXPECT_EQ(t.groups[0].endpoints[0].pod, "prod/x");
}

TEST(ServiceEndpoints, SlicesWinEvenWithoutReadyEndpoint) {
  const std::string y = app("web", "10.96.0.1", {"10.0.0.1"}) +
                        slice("web-a", "web", "IPv4",
                              "[{addresses: [10.2.0.1], conditions: {ready: false}}]",
                              "[{name: http, port: 8080}]");
  const Plan p = compiled(y);
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_TRUE(t.groups.empty());
  EXPECT_EQ(maps::svcValue(maps::svcTable(t), 0).total, 0u);
}

TEST(ServiceEndpoints, NotReadyEndpointsAreExcluded) {
  const std::string y =
      service("web", "10.96.0.1") +
      slice("web-a", "web", "IPv4",
            "[{addresses: [10.2.0.1], conditions: {ready: true}},"
            " {addresses: [10.2.0.2], conditions: {ready: false}},"
            " {addresses: [10.2.0.3]}]",
            "[{name: http, port: 8080}]");
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 80)),
            (std::set<std::string>{"10.2.0.1:8080", "10.2.0.3:8080"}));
}

TEST(ServiceEndpoints, SlicesOfOtherServicesOrNamespacesDoNotCount) {
  const std::string y =
      app("web", "10.96.0.1", {"10.0.0.1"}) +
      slice("api-a", "api", "IPv4", "[{addresses: [10.2.0.9]}]", "[{name: http, port: 8080}]") +
      "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-x, "
      "namespace: dev, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\n"
      "endpoints: [{addresses: [10.9.0.1]}]\nports: [{name: http, port: 8080}]\n";
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 80)),
            (std::set<std::string>{"10.0.0.1:80"}));
}

TEST(ServiceEndpoints, SlicePortsMatchByNameAndProtocol) {
  const std::string y =
      service("web", "10.96.0.1",
              "[{name: http, port: 80}, {name: dns, port: 53, protocol: UDP},"
              " {name: admin, port: 9000}]") +
      slice("web-a", "web", "IPv4", "[{addresses: [10.2.0.1]}]",
            "[{name: metrics, port: 9090}, {name: http, port: 8080},"
            " {name: dns, port: 5353, protocol: UDP}, {name: admin, port: 9001, protocol: UDP}]");
  const Plan p = compiled(y);
  EXPECT_EQ(allAddrs(tableOf(p, "prod/web", 80)), (std::set<std::string>{"10.2.0.1:8080"}));
  EXPECT_EQ(allAddrs(tableOf(p, "prod/web", 53, Proto::kUdp)),
            (std::set<std::string>{"10.2.0.1:5353"}));
  // "admin" exists in the slice only as UDP: the TCP port has no endpoint.
  EXPECT_TRUE(tableOf(p, "prod/web", 9000).groups.empty());
}

TEST(ServiceEndpoints, UnnamedSlicePortMatchesUnnamedServicePort) {
  const std::string y = serviceIn("prod", "web", "10.96.0.1", "[{port: 80}]", "") +
                        slice("web-a", "web", "IPv4", "[{addresses: [10.2.0.1]}]",
                              "[{port: 8080}]");
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 80)),
            (std::set<std::string>{"10.2.0.1:8080"}));
}

TEST(ServiceEndpoints, DualStackVipsGetTheirOwnFamilyFromSelector) {
  const std::string y = service("web", "[10.96.0.1, \"fd00::1\"]") +
                        pod("web-0", "web", "[10.0.0.1, fd00:1::1]") +
                        pod("web-1", "web", "10.0.0.2");  // IPv4 only
  const Plan p = compiled(y);
  const auto ts = tablesFor(p, "prod/web", 80);
  ASSERT_EQ(ts.size(), 2u);
  for (const auto& t : ts) {
    if (t.vip.family == SMIK_AF_INET) {
      EXPECT_EQ(t.vip.str(), "10.96.0.1");
      EXPECT_EQ(allAddrs(t), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
    } else {
      EXPECT_EQ(t.vip.str(), "fd00::1");
      EXPECT_EQ(allAddrs(t), (std::set<std::string>{"fd00:1::1:80"}));
    }
  }
  EXPECT_NE(ts[0].svc_id, ts[1].svc_id);
}

TEST(ServiceEndpoints, DualStackVipsGetTheirOwnFamilyFromSlices) {
  const std::string y =
      service("web", "[10.96.0.1, \"fd00::1\"]") +
      slice("web-v4", "web", "IPv4", "[{addresses: [10.2.0.1]}]", "[{name: http, port: 8080}]") +
      slice("web-v6", "web", "IPv6", "[{addresses: [\"fd00:2::1\"]}]",
            "[{name: http, port: 8080}]");
  const Plan p = compiled(y);
  const auto ts = tablesFor(p, "prod/web", 80);
  ASSERT_EQ(ts.size(), 2u);
  for (const auto& t : ts) {
    EXPECT_EQ(allAddrs(t), t.vip.family == SMIK_AF_INET
                               ? std::set<std::string>{"10.2.0.1:8080"}
                               : std::set<std::string>{"fd00:2::1:8080"});
  }
}

TEST(ServiceEndpoints, DualStackSplitUsesEachFamilysBackendEndpoints) {
  const std::string y = service("web", "[10.96.0.1, \"fd00::1\"]") +
                        pod("web-0", "web", "[10.0.0.1, fd00:1::1]") +
                        service("web-v1", "[10.96.0.11, \"fd00::11\"]") +
                        pod("web-v1-0", "web-v1", "[10.0.1.1, fd00:1::11]") +
                        split("web-split", "web", {{"web-v1", "1"}});
  const auto ts = tablesFor(compiled(y), "prod/web", 80);
  ASSERT_EQ(ts.size(), 2u);
  for (const auto& t : ts) {
    EXPECT_EQ(t.split, "prod/web-split");
    EXPECT_EQ(allAddrs(t), t.vip.family == SMIK_AF_INET
                               ? std::set<std::string>{"10.0.1.1:80"}
                               : std::set<std::string>{"fd00:1::11:80"});
  }
}

TEST(ServiceEndpoints, SelectorTakesRunningPodsOfTheSameNamespaceOnly) {
  const std::string y =
      service("web", "10.96.0.1") + pod("web-0", "web", "10.0.0.1") +
      podIn("dev", "web-dev", "web", "10.0.9.1") +
      podIn("prod", "web-pending", "web", "10.0.0.2", "", "Pending") +
      podIn("prod", "web-done", "web", "10.0.0.3", "", "Succeeded") +
      podIn("prod", "web-failed", "web", "10.0.0.4", "", "Failed") +
      pod("web-host", "web", "192.168.1.10", "hostNetwork: true") +
      pod("api-0", "api", "10.0.0.5");
  const ServiceTable t = tableOf(compiled(y), "prod/web", 80);
  EXPECT_EQ(allAddrs(t), (std::set<std::string>{"10.0.0.1:80"}));
  ASSERT_EQ(t.groups.size(), 1u);
  EXPECT_EQ(t.groups[0].endpoints[0].pod, "prod/web-0");
}

TEST(ServiceEndpoints, SelectorNeedsEveryLabel) {
  const std::string y =
      serviceIn("prod", "web", "10.96.0.1", kHttp, "{app: web, tier: front}") +
      pod("web-0", "web", "10.0.0.1") +
      "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: prod, labels: "
      "{app: web, tier: front, extra: x}}\nspec: {}\nstatus: {phase: Running, podIP: 10.0.0.2}\n";
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 80)),
            (std::set<std::string>{"10.0.0.2:80"}));
}

TEST(ServiceEndpoints, NamedTargetPortIsResolvedPerPod) {
  const std::string y =
      serviceIn("prod", "web", "10.96.0.1", "[{name: web, port: 80, targetPort: http}]",
                "{app: web}") +
      pod("web-a", "web", "10.0.0.1",
          "containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]") +
      pod("web-b", "web", "10.0.0.2",
          "containers: [{name: side, ports: [{name: metrics, containerPort: 9100}]},"
          " {name: c, ports: [{name: http, containerPort: 9090}]}]") +
      pod("web-c", "web", "10.0.0.3",
          "containers: [{name: c, ports: [{name: metrics, containerPort: 8080}]}]") +
      pod("web-d", "web", "10.0.0.4",
          "containers: [{name: c, ports: [{name: http, containerPort: 7070, protocol: UDP}]}]");
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 80)),
            (std::set<std::string>{"10.0.0.1:8080", "10.0.0.2:9090"}));
}

TEST(ServiceEndpoints, NumericTargetPort) {
  const std::string y =
      serviceIn("prod", "web", "10.96.0.1", "[{port: 80, targetPort: 8080}]", "{app: web}") +
      pod("web-0", "web", "10.0.0.1");
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 80)),
            (std::set<std::string>{"10.0.0.1:8080"}));
}

TEST(ServiceEndpoints, NoTargetPortMeansPort) {
  const std::string y =
      serviceIn("prod", "web", "10.96.0.1", "[{port: 8443}]", "{app: web}") +
      pod("web-0", "web", "10.0.0.1");
  EXPECT_EQ(allAddrs(tableOf(compiled(y), "prod/web", 8443)),
            (std::set<std::string>{"10.0.0.1:8443"}));
}

TEST(ServiceEndpoints, NoSelectorNoSlicesGivesEmptyTable) {
  const Plan p = compiled(serviceIn("prod", "ext", "10.96.0.40", kHttp, "") +
                          pod("web-0", "web", "10.0.0.1"));
  const ServiceTable t = tableOf(p, "prod/ext", 80);
  EXPECT_TRUE(t.groups.empty());
  EXPECT_NE(t.svc_id, 0u);
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.ngroups, 0);
  EXPECT_EQ(v.total, 0u);
}

TEST(ServiceEndpoints, HeadlessServiceHasNoTable) {
  const Plan p = compiled(serviceIn("prod", "db", "None", kHttp, "{app: db}") +
                          pod("db-0", "db", "10.0.0.1"));
  EXPECT_TRUE(tablesFor(p, "prod/db", 80).empty());
  EXPECT_TRUE(p.services.empty());
}

TEST(ServiceEndpoints, EveryClusterIpServiceGetsATable) {
  const std::string y = canary() + app("other", "10.96.0.50", {}) +
                        serviceIn("prod", "np", "10.96.0.51", kHttp, "{app: web}",
                                  "type: NodePort") +
                        split("web-split", "web", {{"web-v1", "1"}});
  const Plan p = compiled(y);
  std::set<std::string> names;
  for (const auto& [k, t] : p.services) names.insert(t.service);
  EXPECT_EQ(names, (std::set<std::string>{"prod/web", "prod/web-v1", "prod/web-v2", "prod/other",
                                          "prod/np"}));
  EXPECT_EQ(tableOf(p, "prod/web", 80).split, "prod/web-split");
  EXPECT_EQ(tableOf(p, "prod/web-v1", 80).split, "");
  EXPECT_EQ(allAddrs(tableOf(p, "prod/web-v1", 80)), (std::set<std::string>{"10.0.1.1:80"}));
  EXPECT_TRUE(tableOf(p, "prod/other", 80).groups.empty());
}

TEST(ServiceEndpoints, UdpPortsGetUdpTables) {
  const std::string y =
      service("dns", "10.96.0.10",
              "[{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]") +
      pod("dns-0", "dns", "10.0.0.53");
  const Plan p = compiled(y);
  ASSERT_EQ(p.services.size(), 2u);
  const ServiceTable udp = tableOf(p, "prod/dns", 53, Proto::kUdp);
  const ServiceTable tcp = tableOf(p, "prod/dns", 53, Proto::kTcp);
  EXPECT_EQ(allAddrs(udp), (std::set<std::string>{"10.0.0.53:53"}));
  EXPECT_EQ(allAddrs(tcp), (std::set<std::string>{"10.0.0.53:53"}));
  EXPECT_NE(udp.svc_id, tcp.svc_id);
  std::set<uint8_t> protos;
  for (const auto& [k, t] : p.services) protos.insert(k.proto);
  EXPECT_EQ(protos, (std::set<uint8_t>{SMIK_PROTO_TCP, SMIK_PROTO_UDP}));
}

TEST(ServiceEndpoints, UdpSplitUsesBackendsUdpPort) {
  const char* udp = "[{name: dns, port: 53, protocol: UDP}]";
  const std::string y = app("dns", "10.96.0.10", {"10.0.0.53"}, udp) +
                        app("dns-v2", "10.96.0.11", {"10.0.1.53"}, udp) +
                        split("dns-split", "dns", {{"dns-v2", "1"}});
  const ServiceTable t = tableOf(compiled(y), "prod/dns", 53, Proto::kUdp);
  EXPECT_EQ(t.split, "prod/dns-split");
  EXPECT_EQ(allAddrs(t), (std::set<std::string>{"10.0.1.53:53"}));
}

// ---- stability --------------------------------------------------------------------

std::map<std::string, uint32_t> idsByTable(const Plan& p) {
  std::map<std::string, uint32_t> out;
  for (const auto& [k, t] : p.services)
    out[t.service + "|" + t.vip.str() + "|" + std::to_string(t.port) + "|" +
        protoName(t.proto)] = t.svc_id;
  return out;
}

TEST(ServiceStability, SvcIdsAreStableAndUnique) {
  const std::string y = canary() + service("multi", "[10.96.0.60, \"fd00::60\"]",
                                           "[{name: a, port: 80}, {name: b, port: 81},"
                                           " {name: c, port: 81, protocol: UDP}]") +
                        split("web-split", "web", {{"web-v1", "1"}});
  const auto first = idsByTable(compiled(y));
  const auto again = idsByTable(compiled(y));
  EXPECT_EQ(first, again);
  EXPECT_EQ(first.size(), 9u);  // web, web-v1, web-v2: 1 each; multi: 2 VIPs x 3 ports
  std::set<uint32_t> ids;
  for (const auto& [name, id] : first) {
    EXPECT_NE(id, 0u) << name;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), first.size());
}

TEST(ServiceStability, UnrelatedServiceLeavesIdsUnchanged) {
  const auto before = idsByTable(compiled(canary()));
  const auto after = idsByTable(compiled(canary() + app("aaa-first", "10.96.0.70", {"10.0.7.1"}) +
                                         app("zzz-last", "10.96.0.71", {"10.0.7.2"})));
  EXPECT_EQ(after.size(), before.size() + 2);
  for (const auto& [name, id] : before) EXPECT_EQ(after.at(name), id) << name;
}

TEST(ServiceStability, SplitChangesDoNotChangeIds) {
  const auto plain = idsByTable(compiled(canary()));
  const auto split_on =
      idsByTable(compiled(canary() + split("web-split", "web", {{"web-v1", "1"}})));
  EXPECT_EQ(plain, split_on);
}

// ---- explainService ---------------------------------------------------------------

TEST(ServiceExplain, ProbabilitiesSumToOnePerTable) {
  const std::string y = service("web", "[10.96.0.1, \"fd00::1\"]") +
                        pod("web-0", "web", "[10.0.0.1, fd00:1::1]") +
                        service("web-v1", "[10.96.0.11, \"fd00::11\"]") +
                        pod("web-v1-0", "web-v1", "[10.0.1.1, fd00:1::11]") +
                        pod("web-v1-1", "web-v1", "[10.0.1.2, fd00:1::12]") +
                        pod("web-v1-2", "web-v1", "[10.0.1.3, fd00:1::13]") +
                        split("web-split", "web", {{"web", "1"}, {"web-v1", "2"}});
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  ASSERT_TRUE(explainService(stateOf(y), node(), "prod/web", 80, Proto::kTcp, &out, &notes, &err))
      << err;
  ASSERT_EQ(out.size(), 2u);
  for (const auto& e : out) {
    double sum = 0, shares = 0;
    for (const auto& g : e.groups) {
      shares += g.share;
      for (const auto& c : g.endpoints) sum += c.probability;
    }
    EXPECT_NEAR(sum, 1.0, 1e-9) << e.vip;
    EXPECT_NEAR(shares, 1.0, 1e-9) << e.vip;
    ASSERT_EQ(e.groups.size(), 2u);
    EXPECT_NEAR(e.groups[0].share, 1.0 / 3, 1e-9);
    ASSERT_EQ(e.groups[1].endpoints.size(), 3u);
    EXPECT_NEAR(e.groups[1].endpoints[0].probability, 2.0 / 9, 1e-9);
  }
}

TEST(ServiceExplain, AgreesWithKernelProbabilities) {
  const ClusterState s =
      stateOf(canary() + split("web-split", "web", {{"web-v1", "80"}, {"web-v2", "20"}}));
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  ASSERT_TRUE(explainService(s, node(), "prod/web", 80, Proto::kTcp, &out, &notes, &err)) << err;
  ASSERT_EQ(out.size(), 1u);
  const auto kernel = kernelProbabilities(tableOf(compile(s, node()), "prod/web", 80));
  size_t n = 0;
  for (const auto& g : out[0].groups)
    for (const auto& c : g.endpoints) {
      EXPECT_NEAR(c.probability, kernel.at(c.address), 1e-12) << c.address;
      n++;
    }
  EXPECT_EQ(n, kernel.size());
  EXPECT_EQ(out[0].vip, "10.96.0.1:80/TCP");
}

TEST(ServiceExplain, NamesTheSplitAndItsDiagnostics) {
  const ClusterState s =
      stateOf(canary() + split("web-split", "web", {{"web-v1", "1"}, {"ghost", "1"}}, "v1alpha4",
                               "creationTimestamp: \"2024-01-01T00:00:00Z\"") +
              split("late", "web", {{"web-v2", "1"}}, "v1alpha4",
                    "creationTimestamp: \"2024-06-01T00:00:00Z\"") +
              split("elsewhere", "web-v2", {{"nothing", "1"}}));
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  ASSERT_TRUE(explainService(s, node(), "prod/web", 80, Proto::kTcp, &out, &notes, &err)) << err;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].split, "prod/web-split");
  const std::string all = joined(notes);
  EXPECT_THAT(all, HasSubstr("ghost"));
  EXPECT_THAT(all, HasSubstr("web-split"));
  EXPECT_THAT(all, HasSubstr("late"));
  EXPECT_EQ(all.find("nothing"), std::string::npos) << all;  // another root's split
}

TEST(ServiceExplain, PlainServiceHasNoSplit) {
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  ASSERT_TRUE(
      explainService(stateOf(canary()), node(), "prod/web", 80, Proto::kTcp, &out, &notes, &err));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].split, "");
  ASSERT_EQ(out[0].groups.size(), 1u);
  EXPECT_EQ(out[0].groups[0].service, "prod/web");
  EXPECT_DOUBLE_EQ(out[0].groups[0].share, 1.0);
  ASSERT_EQ(out[0].groups[0].endpoints.size(), 2u);
  EXPECT_DOUBLE_EQ(out[0].groups[0].endpoints[0].probability, 0.5);
  EXPECT_EQ(out[0].groups[0].endpoints[0].pod, "prod/web-0");
  EXPECT_TRUE(notes.empty());
}

TEST(ServiceExplain, UnknownServiceIsAnError) {
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  EXPECT_FALSE(
      explainService(stateOf(canary()), node(), "prod/nope", 80, Proto::kTcp, &out, &notes, &err));
  EXPECT_THAT(err, HasSubstr("prod/nope"));
  EXPECT_TRUE(out.empty());
}

TEST(ServiceExplain, UnknownPortIsAnError) {
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  EXPECT_FALSE(
      explainService(stateOf(canary()), node(), "prod/web", 81, Proto::kTcp, &out, &notes, &err));
  EXPECT_THAT(err, HasSubstr("81"));
  err.clear();
  out.clear();
  EXPECT_FALSE(
      explainService(stateOf(canary()), node(), "prod/web", 80, Proto::kUdp, &out, &notes, &err));
  EXPECT_FALSE(err.empty());
}

// ---- versions ---------------------------------------------------------------------

TEST(ServiceVersions, V1alpha1QuantitiesGiveTheSameSharesAsV1alpha4) {
  const Plan old_style = compiled(
      canary() + split("web-split", "web", {{"web-v1", "\"500m\""}, {"web-v2", "\"1\""}},
                       "v1alpha1"));
  const Plan new_style =
      compiled(canary() + split("web-split", "web", {{"web-v1", "500"}, {"web-v2", "1000"}}));
  const ServiceTable a = tableOf(old_style, "prod/web", 80);
  const ServiceTable b = tableOf(new_style, "prod/web", 80);
  EXPECT_EQ(a.split, "prod/web-split");
  EXPECT_EQ(a.groups, b.groups);
  EXPECT_EQ(kernelProbabilities(a), kernelProbabilities(b));
  EXPECT_DOUBLE_EQ(kernelShares(a).at("prod/web-v1"), 1.0 / 3);
}

TEST(ServiceVersions, V1alpha1UnquotedQuantity) {
  const Plan p = compiled(canary() + split("web-split", "web",
                                           {{"web-v1", "1"}, {"web-v2", "1500m"}}, "v1alpha1"));
  const auto shares = kernelShares(tableOf(p, "prod/web", 80));
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v1"), 0.4);
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v2"), 0.6);
}


// ---- capacity -------------------------------------------------------------------

std::vector<std::string> servicesOf(const Plan& p) {
  std::set<std::string> out;
  for (const auto& [k, t] : p.services) out.insert(t.service);
  return {out.begin(), out.end()};
}

TEST(ServiceCapacity, TheServiceWithMostPortsGoesWhenTheServicesMapIsFull) {
  const std::string yaml = app("web", "10.96.0.10", {"10.0.0.1"},
                               "[{name: a, port: 80}, {name: b, port: 81}, {name: c, port: 82}]") +
                           app("db", "10.96.0.11", {"10.0.0.2"}) +
                           app("cache", "10.96.0.12", {"10.0.0.3"});
  NodeConfig n = node();
  n.capacity.services = 3;
  const Plan p = compile(stateOf(yaml), n);
  EXPECT_EQ(servicesOf(p), (std::vector<std::string>{"prod/cache", "prod/db"}));
  ASSERT_EQ(p.over_capacity.size(), 1u);
  EXPECT_EQ(p.over_capacity[0].object, (ObjectRef{"Service", "prod", "web"}));
  EXPECT_EQ(p.over_capacity[0].map, "smik_services");
  EXPECT_EQ(p.over_capacity[0].entries, 3u);
  EXPECT_THAT(
      p.over_capacity[0].message,
      HasSubstr("rejected: the services map holds 3 service ports and the Services need 5"));
}

TEST(ServiceCapacity, TheServiceWithMostEndpointsGoesWhenTheBackendsMapIsFull) {
  const std::string yaml = app("web", "10.96.0.10", {"10.0.0.1", "10.0.0.2", "10.0.0.3"}) +
                           app("db", "10.96.0.11", {"10.0.0.4", "10.0.0.5"});
  NodeConfig n = node();
  n.capacity.backends = 4;
  const Plan p = compile(stateOf(yaml), n);
  EXPECT_EQ(servicesOf(p), (std::vector<std::string>{"prod/db"}));
  ASSERT_EQ(p.over_capacity.size(), 1u);
  EXPECT_EQ(p.over_capacity[0].object, (ObjectRef{"Service", "prod", "web"}));
  EXPECT_EQ(p.over_capacity[0].map, "smik_backends");
  EXPECT_THAT(p.over_capacity[0].message, HasSubstr("connect() to it is not translated"));
  std::vector<ServiceExplanation> tables;
  std::vector<std::string> notes;
  std::string err;
  EXPECT_FALSE(
      explainService(stateOf(yaml), n, "prod/web", 80, Proto::kTcp, &tables, &notes, &err));
  EXPECT_THAT(err, HasSubstr("Service prod/web: rejected: the backends map takes 4 endpoints"));
}

TEST(ServiceCapacity, DefaultBackendsLimitIsHalfTheMap) {
  EXPECT_EQ(Capacity{}.backends * 2, size_t{SMIK_MAX_BACKENDS});
  EXPECT_EQ(Capacity{}.services, size_t{SMIK_MAX_SERVICES});
}

}  // namespace
}  // namespace smik::compile
