// Who is in the mesh and where: meshed namespaces, local and remote pods,
// identities, and plans that do not depend on input order.
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

// ---- who is in the mesh, and where -----------------------------------------------

TEST(CompileMesh, PodsInUnlabelledNamespacesAreNotEndpoints) {
  const std::string yaml = base() + plainNs("dev") + plainNs("lab", "{smik.io/mesh: disabled}") +
                           pod("dev", "app-0", "app", "n1", "10.0.0.30") +
                           pod("lab", "exp-0", "exp", "n1", "10.0.0.31") +
                           pod("nowhere", "ghost-0", "ghost", "n1", "10.0.0.32");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(endpointsOf(p), (std::set<std::string>{"prod/client-0", "prod/server-0"}));
  EXPECT_EQ(enforced(p), (std::set<std::string>{"prod/client", "prod/server"}));
  // Still sources with a known identity.
  EXPECT_EQ(p.ip_identity.at(addr("10.0.0.30")).identity, p.identities.at("dev/app"));
}

TEST(CompileMesh, MeshAllMakesEveryPodAnEndpoint) {
  const std::string yaml = base() + plainNs("dev") + pod("dev", "app-0", "app", "n1", "10.0.0.30") +
                           pod("nowhere", "ghost-0", "ghost", "n1", "10.0.0.32");
  NodeConfig n = node();
  n.mesh_all = true;
  const Plan p = compile(stateOf(yaml), n);
  EXPECT_EQ(endpointsOf(p), (std::set<std::string>{"dev/app-0", "nowhere/ghost-0", "prod/client-0",
                                                   "prod/server-0"}));
  EXPECT_EQ(enforced(p),
            (std::set<std::string>{"dev/app", "nowhere/ghost", "prod/client", "prod/server"}));
}

TEST(CompileMesh, OnlyPodsOnThisNodeAreEndpoints) {
  const std::string yaml = base() + pod("prod", "db-0", "db", "n2", "10.0.1.40");
  const Plan n1 = compile(stateOf(yaml), node(AccessMode::kStrict, "n1"));
  EXPECT_EQ(endpointsOf(n1), (std::set<std::string>{"prod/client-0", "prod/server-0"}));
  EXPECT_EQ(enforced(n1), (std::set<std::string>{"prod/client", "prod/server"}));

  const Plan n2 = compile(stateOf(yaml), node(AccessMode::kStrict, "n2"));
  EXPECT_EQ(endpointsOf(n2), (std::set<std::string>{"prod/db-0"}));
  EXPECT_EQ(enforced(n2), (std::set<std::string>{"prod/db"}));

  const Plan cluster = compile(stateOf(yaml), node(AccessMode::kStrict, ""));
  EXPECT_EQ(endpointsOf(cluster),
            (std::set<std::string>{"prod/client-0", "prod/db-0", "prod/server-0"}));
}

TEST(CompileMesh, GrantsAreOnlyCompiledForLocalDestinations) {
  const Plan p =
      compile(stateOf(base() + clientToServerTcp("[80]")), node(AccessMode::kStrict, "n9"));
  EXPECT_TRUE(p.policy.empty());
}

TEST(CompileMesh, EveryPodIpIsMappedLocalFlagOnlyForLocalPods) {
  const std::string yaml =
      base() + plainNs("dev") + pod("dev", "app-0", "app", "n2", "10.0.1.30") +
      pod("prod", "dual-0", "dual", "n2", "", "",
          "{phase: Running, podIP: 10.0.1.50, podIPs: [{ip: 10.0.1.50}, {ip: 'fd00::50'}]}");
  const Plan p = compile(stateOf(yaml), node(AccessMode::kStrict, "n1"));
  const auto info = [&](const std::string& ns_sa, uint32_t flags) {
    return smik_ip_info{p.identities.at(ns_sa), flags};
  };
  const FlatMap<Addr, smik_ip_info> want = {
      {addr("10.0.0.10"), info("prod/server", SMIK_IP_F_LOCAL)},
      {addr("10.0.0.20"), info("prod/client", SMIK_IP_F_LOCAL)},
      {addr("10.0.1.30"), info("dev/app", 0)},
      {addr("10.0.1.50"), info("prod/dual", 0)},
      {addr("fd00::50"), info("prod/dual", 0)},
  };
  EXPECT_EQ(p.ip_identity, want);
}

TEST(CompileMesh, HostAddressesMapToHostIdentity) {
  NodeConfig n = node();
  n.host_addrs = {"192.168.1.5", "fd00::1:5"};
  const Plan p = compile(stateOf(base()), n);
  EXPECT_EQ(p.ip_identity.at(addr("192.168.1.5")), (smik_ip_info{SMIK_ID_HOST, 0}));
  EXPECT_EQ(p.ip_identity.at(addr("fd00::1:5")), (smik_ip_info{SMIK_ID_HOST, 0}));
  EXPECT_EQ(p.identityName(SMIK_ID_HOST), "host");
}

// What the HOST identity stands for: the node's real addresses only. An
// address that stands for a service (a ClusterIP on kube-ipvs0, a VIP on a
// dummy), a pod's host-side veth, loopback and link-local ones are not the
// node, so traffic from them is judged like any unknown source.
TEST(CompileMesh, OnlyRealInterfacesHoldNodeAddresses) {
  using datapath::isNodeAddress;
  EXPECT_TRUE(isNodeAddress("192.0.2.2", "virtio_net"));
  EXPECT_TRUE(isNodeAddress("fd00::2", "e1000e"));
  EXPECT_TRUE(isNodeAddress("10.0.0.5", "bonding"));
  EXPECT_TRUE(isNodeAddress("10.0.0.5", "bridge"));
  EXPECT_TRUE(isNodeAddress("10.0.0.5", "")) << "lo, or a driver that does not say";
  EXPECT_FALSE(isNodeAddress("10.96.0.1", "dummy")) << "kube-ipvs0";
  EXPECT_FALSE(isNodeAddress("169.254.20.10", "dummy")) << "nodelocaldns";
  EXPECT_FALSE(isNodeAddress("10.244.0.1", "veth"));
  EXPECT_FALSE(isNodeAddress("10.244.0.1", "netkit"));
  EXPECT_FALSE(isNodeAddress("127.0.0.1", ""));
  EXPECT_FALSE(isNodeAddress("127.0.1.1", ""));
  EXPECT_FALSE(isNodeAddress("::1", ""));
  EXPECT_FALSE(isNodeAddress("169.254.1.1", "virtio_net"));
  EXPECT_FALSE(isNodeAddress("fe80::1", "virtio_net"));
  EXPECT_FALSE(isNodeAddress("not-an-ip", "virtio_net"));
}

// --host-traffic: allow leaves host sources unjudged (no flag); policy marks
// every enforced destination's meta entry, so the kernel judges host sources
// there by the same swap that installs the grants.
TEST(CompileHostTraffic, PolicyMarksEveryEnforcedDestination) {
  const std::string yaml = base() + clientToServerTcp("[8080]");
  NodeConfig n = node();
  const Plan allow = compile(stateOf(yaml), n);
  EXPECT_EQ(enforced(allow), (std::set<std::string>{"prod/server", "prod/client"}));

  n.host_traffic = HostTraffic::kPolicy;
  const Plan policy = compile(stateOf(yaml), n);
  std::set<std::string> judged;
  for (const auto& [k, v] : policy.policy) {
    if (k.src_id != SMIK_ID_META) continue;
    EXPECT_EQ(v.flags, uint32_t{SMIK_POL_F_ENFORCED | SMIK_POL_F_HOST_JUDGED});
    judged.insert(policy.identityName(k.dst_id));
  }
  EXPECT_EQ(judged, (std::set<std::string>{"prod/server", "prod/client"}));
  EXPECT_EQ(grants(policy), grants(allow)) << "the grants themselves do not change";

  // Permissive: nothing is enforced, host included.
  n.access_mode = AccessMode::kPermissive;
  EXPECT_TRUE(compile(stateOf(yaml), n).policy.empty());
}

// A TrafficTarget source {kind: Host, name: local} grants the node itself.
TEST(CompileHostTraffic, HostSourceGrantsTheNode) {
  const std::string yaml =
      base() + tcpRoute("prod", "probes", "[8080]") +
      trafficTarget("prod", "kubelet", "server", "[" + rule("TCPRoute", "probes") + "]",
                    "[{kind: Host, name: local}, " + source("client") + "]");
  NodeConfig n = node();
  n.host_traffic = HostTraffic::kPolicy;
  const Plan p = compile(stateOf(yaml), n);
  EXPECT_EQ(grants(p), (std::set<std::string>{"host -> prod/server TCP/8080",
                                              "prod/client -> prod/server TCP/8080"}));
  EXPECT_EQ(p.identities.count("/local"), 0u) << "the host is no ServiceAccount";
  EXPECT_TRUE(diagnosticsFor(p, ttRef("prod", "kubelet")).empty());

  // With allow the grant is compiled but changes nothing: say so.
  const Plan allow = compile(stateOf(yaml), node());
  EXPECT_EQ(grants(allow), grants(p));
  EXPECT_EQ(joined(diagnosticsFor(allow, ttRef("prod", "kubelet"))),
            "info: source Host: host traffic passes anyway (--host-traffic=allow)\n");
}

TEST(CompileHostTraffic, HostSubjectIsASourceNamedLocalOnly) {
  auto errors = [](const std::string& tt_yaml) {
    std::string s;
    for (const auto& e : model::parseManifests(tt_yaml, "t.yaml").errors) s += e.str() + "\n";
    return s;
  };
  const std::string r = "[" + rule("TCPRoute", "web") + "]";
  EXPECT_EQ(errors(trafficTarget("prod", "ok", "server", r, "[{kind: Host, name: local}]")), "");
  EXPECT_THAT(errors(trafficTarget("prod", "n", "server", r, "[{kind: Host, name: node-1}]")),
              HasSubstr("a Host source is named \"local\""));
  EXPECT_THAT(errors(trafficTarget("prod", "ns", "server", r,
                                   "[{kind: Host, name: local, namespace: prod}]")),
              HasSubstr("a Host source has no namespace"));
  EXPECT_THAT(errors("---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n"
                     "metadata: {name: d, namespace: prod}\nspec:\n"
                     "  destination: {kind: Host, name: local}\n  rules: " +
                     r + "\n  sources: [" + source("client") + "]\n"),
              HasSubstr("unsupported subject kind \"Host\" (only ServiceAccount)"));

  HostTraffic h = HostTraffic::kAllow;
  EXPECT_TRUE(parseHostTraffic("policy", &h));
  EXPECT_EQ(h, HostTraffic::kPolicy);
  EXPECT_TRUE(parseHostTraffic("allow", &h));
  EXPECT_EQ(h, HostTraffic::kAllow);
  EXPECT_FALSE(parseHostTraffic("deny", &h));
  EXPECT_STREQ(hostTrafficName(HostTraffic::kPolicy), "policy");
}

TEST(CompileMesh, PodWithoutServiceAccountUsesDefault) {
  const std::string yaml = meshedNs("prod") + pod("prod", "plain-0", "", "n1", "10.0.0.60") +
                           pod("prod", "client-0", "client", "n1", "10.0.0.20") +
                           clientToServerTcp("[80]") +
                           grant("to-default", "default", "TCPRoute", "web", "client");
  const Plan p = compile(stateOf(yaml), node());
  ASSERT_EQ(p.identities.count("prod/default"), 1u);
  EXPECT_EQ(p.endpoints.at("prod/plain-0").identity, p.identities.at("prod/default"));
  EXPECT_EQ(grants(p), (std::set<std::string>{"prod/client -> prod/default TCP/80"}));
}

TEST(CompileMesh, HostNetworkAndFinishedPodsHoldNoAddress) {
  const std::string yaml =
      base() + pod("prod", "agent-0", "agent", "n1", "192.168.1.5", "hostNetwork: true") +
      pod("prod", "job-0", "job", "n1", "", "", "{phase: Succeeded, podIP: 10.0.0.70}") +
      pod("prod", "crash-0", "crash", "n1", "", "", "{phase: Failed, podIP: 10.0.0.71}");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(p.ip_identity.count(addr("192.168.1.5")), 0u);
  EXPECT_EQ(p.ip_identity.count(addr("10.0.0.70")), 0u);
  EXPECT_EQ(p.ip_identity.count(addr("10.0.0.71")), 0u);
  EXPECT_EQ(p.ip_identity.size(), 2u);
  EXPECT_EQ(endpointsOf(p), (std::set<std::string>{"prod/client-0", "prod/server-0"}));
}

TEST(CompileMesh, PodWithoutIpIsNotAnEndpointYet) {
  const std::string yaml = base() + pod("prod", "new-0", "new", "n1", "", "", "{phase: Pending}");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(endpointsOf(p), (std::set<std::string>{"prod/client-0", "prod/server-0"}));
  EXPECT_EQ(enforced(p).count("prod/new"), 0u);
}

TEST(CompileMesh, EndpointCarriesIdentityAndAllAddresses) {
  const std::string yaml =
      meshedNs("prod") + pod("prod", "dual-0", "dual", "n1", "", "",
                             "{phase: Running, podIPs: [{ip: 10.0.0.50}, {ip: 'fd00::50'}]}");
  const Plan p = compile(stateOf(yaml), node());
  ASSERT_EQ(p.endpoints.count("prod/dual-0"), 1u);
  const LocalEndpoint& ep = p.endpoints.at("prod/dual-0");
  EXPECT_EQ(ep.pod, "prod/dual-0");
  EXPECT_EQ(ep.identity, p.identities.at("prod/dual"));
  EXPECT_EQ(ep.addrs, (std::vector<Addr>{addr("10.0.0.50"), addr("fd00::50")}));
  EXPECT_EQ(ep.addrs[0].family, SMIK_AF_INET);
  EXPECT_EQ(ep.addrs[1].family, SMIK_AF_INET6);
}

TEST(CompileMesh, DuplicatePodIpIsKeptByTheFirstPodByName) {
  const std::string yaml = meshedNs("prod") + pod("prod", "a-0", "a", "n1", "10.0.0.80") +
                           pod("prod", "b-0", "b", "n2", "10.0.0.80");
  const Plan p = compile(stateOf(yaml), node());
  EXPECT_EQ(p.ip_identity.at(addr("10.0.0.80")),
            (smik_ip_info{p.identities.at("prod/a"), SMIK_IP_F_LOCAL}));
  EXPECT_THAT(joined(diagnosticsFor(p, {"Pod", "prod", "b-0"})),
              HasSubstr("IP 10.0.0.80 is also claimed by another pod"));
}

// The address map is built by one sort, not one insert at a time: of each
// shared address (IPv4 and IPv6 alike) the first pod by name keeps it
// whatever order the addresses sort in, a pod of the same identity and
// locality is no conflict, a node address takes it from any pod, and the
// diagnostics come in pod order, one per address lost.
TEST(CompileMesh, SharedAddressesAcrossFamiliesKeepTheFirstPodAndPodOrder) {
  const std::string dual = "{phase: Running, podIP: 10.0.0.90, podIPs: [{ip: 10.0.0.90}, {ip: 'fd00::90'}]}";
  const std::string yaml =
      meshedNs("prod") +
      pod("prod", "a-0", "a", "n1", "", "", dual) +
      // Same addresses, another identity: both lost, in the pod's order.
      pod("prod", "b-0", "b", "n2", "", "",
          "{phase: Running, podIP: 'fd00::90', podIPs: [{ip: 'fd00::90'}, {ip: 10.0.0.90}]}") +
      // Same identity and locality as a-0's: no conflict, no diagnostic.
      pod("prod", "c-0", "a", "n1", "10.0.0.90") +
      // A lower address than a-0's, claimed by a later pod: its own.
      pod("prod", "d-0", "b", "n2", "10.0.0.1") +
      pod("prod", "e-0", "b", "n2", "10.0.0.1") +
      // The node's own address, claimed by a pod too: the node keeps it.
      pod("prod", "f-0", "b", "n2", "192.168.1.5");
  NodeConfig n = node();
  n.host_addrs = {"192.168.1.5", "fd00::1:5"};
  const Plan p = compile(stateOf(yaml), n);
  const smik_ip_info a{p.identities.at("prod/a"), SMIK_IP_F_LOCAL};
  const smik_ip_info b{p.identities.at("prod/b"), 0};
  const FlatMap<Addr, smik_ip_info> want = {
      {addr("10.0.0.1"), b},
      {addr("10.0.0.90"), a},
      {addr("192.168.1.5"), {SMIK_ID_HOST, 0}},
      {addr("fd00::1:5"), {SMIK_ID_HOST, 0}},
      {addr("fd00::90"), a},
  };
  EXPECT_EQ(p.ip_identity, want);
  std::vector<std::string> claimed;
  for (const auto& d : p.diagnostics)
    if (d.message.find("also claimed") != std::string::npos)
      claimed.push_back(d.object.name + " " + d.message.substr(0, d.message.find(" is also")));
  EXPECT_EQ(claimed, (std::vector<std::string>{"b-0 IP fd00::90", "b-0 IP 10.0.0.90"}));
  // Sorted, one entry per address: what the maps layer merges against.
  EXPECT_TRUE(std::is_sorted(p.ip_identity.begin(), p.ip_identity.end(),
                             [](const auto& x, const auto& y) { return x.first < y.first; }));
}

// ---- identities ----------------------------------------------------------------

TEST(CompileIdentity, SameInputGivesSameIds) {
  const ClusterState s = stateOf(base() + clientToServerTcp("[80]"));
  EXPECT_EQ(compile(s, node()).identities, compile(s, node()).identities);
  EXPECT_EQ(compile(s, node()).identities,
            compile(s, node(AccessMode::kPermissive, "n2")).identities);
}

TEST(CompileIdentity, UnrelatedServiceAccountDoesNotChangeExistingIds) {
  const Plan before = compile(stateOf(base()), node());
  const Plan after = compile(
      stateOf(serviceAccount("aaa", "first") + base() + serviceAccount("prod", "zzz")), node());
  for (const auto& [name, id] : before.identities) EXPECT_EQ(after.identities.at(name), id) << name;
  EXPECT_EQ(after.identities.size(), before.identities.size() + 2);
}

TEST(CompileIdentity, IdsDependOnlyOnTheName) {
  const auto alone = assignIdentities({"prod/server"});
  const auto among = assignIdentities({"a/a", "prod/client", "prod/server", "z/z"});
  EXPECT_EQ(alone.at("prod/server"), among.at("prod/server"));
}

TEST(CompileIdentity, IdsAreDynamicUniqueAndNeverMeta) {
  std::set<std::string> names;
  for (int ns = 0; ns < 40; ++ns)
    for (int sa = 0; sa < 50; ++sa)
      names.insert("ns" + std::to_string(ns) + "/sa" + std::to_string(sa));
  const auto ids = assignIdentities(names);
  ASSERT_EQ(ids.size(), names.size());
  std::set<uint32_t> seen;
  for (const auto& [name, id] : ids) {
    EXPECT_GE(id, uint32_t{SMIK_ID_FIRST_DYNAMIC}) << name;
    EXPECT_NE(id, SMIK_ID_META) << name;
    EXPECT_TRUE(seen.insert(id).second) << name << " reuses id " << id;
  }
}

// Stability holds up to hash collisions (by design: ids are a stateless hash).
// These two names collide (found by search); the first by name keeps the
// hashed slot, the other probes to the next id.
TEST(CompileIdentity, CollisionsAreProbedInNameOrder) {
  const auto later_alone = assignIdentities({"ns/sa-221924"});
  const auto both = assignIdentities({"ns/sa-195396", "ns/sa-221924"});
  EXPECT_EQ(later_alone.at("ns/sa-221924"), 1753641363u);
  EXPECT_EQ(both.at("ns/sa-195396"), 1753641363u);
  EXPECT_EQ(both.at("ns/sa-221924"), 1753641364u);
}

TEST(CompileIdentity, TrafficTargetSubjectsGetIdsWithoutPods) {
  const Plan p = compile(
      stateOf(base() + trafficTarget("prod", "t", "server", "[" + rule("TCPRoute", "web") + "]",
                                     "[" + source("ops", "tools") + "]")),
      node());
  EXPECT_EQ(p.identities.count("tools/ops"), 1u);
  EXPECT_EQ(p.identityName(p.identities.at("tools/ops")), "tools/ops");
}

// ---- determinism and rule origins ------------------------------------------------

namespace {

std::string dump(const Plan& p) {
  std::string s;
  for (const auto& [name, id] : p.identities) s += "id " + name + "=" + std::to_string(id) + "\n";
  for (const auto& [a, info] : p.ip_identity)
    s += "ip " + a.str() + "=" + std::to_string(info.identity) + "/" + std::to_string(info.flags) +
         "\n";
  for (const auto& [name, ep] : p.endpoints) {
    s += "ep " + name + " " + ep.pod + "=" + std::to_string(ep.identity);
    for (const auto& a : ep.addrs) s += " " + a.str();
    s += "\n";
  }
  for (const auto& [k, v] : p.policy)
    s += "pol " + std::to_string(k.src_id) + ">" + std::to_string(k.dst_id) + ":" +
         std::to_string(k.dport) + "/" + std::to_string(k.proto) + "=" + std::to_string(v.rule_id) +
         "," + std::to_string(v.flags) + "\n";
  for (const auto& r : p.rules) s += "rule " + r.traffic_target + " " + r.rule + "\n";
  for (const auto& d : p.diagnostics) s += "diag " + d.str() + "\n";
  return s;
}

const std::vector<std::string>& mixedDocuments() {
  static const std::vector<std::string> docs = {
      meshedNs("prod"),
      pod("prod", "server-0", "server", "n1", "10.0.0.10"),
      pod("prod", "client-0", "client", "n1", "10.0.0.20"),
      pod("prod", "db-0", "db", "n2", "10.0.1.40"),
      tcpRoute("prod", "web", "[80, 443]"),
      udpRoute("prod", "dns", "[53]"),
      httpGroup("prod", "api"),
      trafficTarget("prod", "web", "server",
                    "[" + rule("TCPRoute", "web") + ", " + rule("UDPRoute", "dns") + "]",
                    "[" + source("client") + ", " + source("db") + "]"),
      grant("api", "server", "HTTPRouteGroup", "api", "client"),
      grant("broken", "client", "TCPRoute", "missing", "server"),
  };
  return docs;
}

}  // namespace

TEST(CompileDeterminism, TwoRunsProduceIdenticalPlans) {
  std::string yaml;
  for (const auto& d : mixedDocuments()) yaml += d;
  const ClusterState s = stateOf(yaml);
  const std::string first = dump(compile(s, node()));
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(dump(compile(s, node())), first);
  EXPECT_EQ(dump(compile(stateOf(yaml), node())), first);
}

TEST(CompileDeterminism, DocumentOrderDoesNotMatter) {
  std::string forward, backward;
  for (const auto& d : mixedDocuments()) forward += d;
  for (auto it = mixedDocuments().rbegin(); it != mixedDocuments().rend(); ++it) backward += *it;
  EXPECT_EQ(dump(compile(stateOf(backward), node())), dump(compile(stateOf(forward), node())));
}

TEST(CompileRuleOrigin, RuleIdPointsAtTheGrantingRule) {
  const std::string yaml =
      base() + tcpRoute("prod", "web", "[80]") + udpRoute("prod", "dns", "[53]") +
      tcpRoute("prod", "admin", "[9000]") +
      trafficTarget("prod", "web-and-dns", "server",
                    "[" + rule("TCPRoute", "web") + ", " + rule("UDPRoute", "dns") + "]",
                    "[" + source("client") + "]") +
      grant("admin", "server", "TCPRoute", "admin", "ops");
  const Plan p = compile(stateOf(yaml), node());
  ASSERT_EQ(p.rules.size(), 3u);
  const auto origin = [&](const std::string& src, uint16_t port, uint8_t proto) {
    const smik_policy_key k{p.identities.at(src), p.identities.at("prod/server"), port, proto, 0};
    const auto it = p.policy.find(k);
    if (it == p.policy.end()) return std::string("no entry");
    const uint32_t id = it->second.rule_id;
    if (id < 1 || id > p.rules.size()) return "bad rule_id " + std::to_string(id);
    EXPECT_EQ(it->second.flags, 0u);
    return p.rules[id - 1].traffic_target + " " + p.rules[id - 1].rule;
  };
  EXPECT_EQ(origin("prod/client", 80, SMIK_PROTO_TCP), "prod/web-and-dns TCPRoute web");
  EXPECT_EQ(origin("prod/client", 53, SMIK_PROTO_UDP), "prod/web-and-dns UDPRoute dns");
  EXPECT_EQ(origin("prod/ops", 9000, SMIK_PROTO_TCP), "prod/admin TCPRoute admin");
}

TEST(CompileRuleOrigin, OverlappingGrantKeepsTheFirstTrafficTargetByName) {
  const std::string yaml = base() + tcpRoute("prod", "web", "[80]") +
                           grant("b-second", "server", "TCPRoute", "web", "client") +
                           grant("a-first", "server", "TCPRoute", "web", "client");
  const Plan p = compile(stateOf(yaml), node());
  const smik_policy_key k{p.identities.at("prod/client"), p.identities.at("prod/server"), 80,
                          SMIK_PROTO_TCP, 0};
  ASSERT_EQ(p.policy.count(k), 1u);
  EXPECT_EQ(p.rules.at(p.policy.at(k).rule_id - 1).traffic_target, "prod/a-first");
}

}  // namespace smik::compile
