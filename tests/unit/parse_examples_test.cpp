// The SMI specification's own examples (tests/fixtures/smi-examples), each
// parsed to what the spec means by it.
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

// ---- the SMI spec examples ----------------------------------------------------

std::string examplePath(const std::string& name) {
  return std::string(SMIK_FIXTURES_DIR) + "/smi-examples/" + name;
}

// Spec snippets mostly omit apiVersion: take it from the file name. A
// TrafficTarget gets the access version; routes get the specs version paired
// with it (tests/fixtures/smi-examples/README.md), or the file's own version in traffic-specs
// files.
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

// An example, parsed with the errors it should have and nothing ignored,
// and the state its objects make.
struct LoadedExample {
  ParseResult parsed;
  ClusterState state;
};
LoadedExample loadChecked(const std::string& file, size_t errors) {
  LoadedExample out{loadExample(file), {}};
  for (const Object& o : out.parsed.objects) out.state.add(o);
  EXPECT_EQ(out.parsed.errors.size(), errors) << errorsOf(out.parsed);
  EXPECT_EQ(out.parsed.ignored, 0);
  return out;
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
    const auto [r, s] = loadChecked(c.file, c.errors);
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

// tests/fixtures/smi-examples/README.md: these examples put HTTPRouteGroup `matches` at the top
// level under a version that wants spec.matches; the CRD rejects them. The TrafficSplit itself is
// valid and keeps its match.
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
  std::vector<SplitExample> expected = {
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
  };
  // v1alpha3 and v1alpha4 carry the same nine examples. The HTTPRouteGroup
  // of each _02 has top-level `matches`; only it is rejected.
  for (const std::string version : {"v1alpha3", "v1alpha4"}) {
    const auto file = [&](int n) {
      return "traffic-split_" + version + "_0" + std::to_string(n) + ".yaml";
    };
    expected.insert(expected.end(),
                    {{file(1), 0, 0, "canary", "website", canary},
                     {file(2), 0, 1, "ab-test", "website", ab},
                     {file(3), 3, 0, "", "", {}},
                     {file(4), 3, 0, "", "", {}},
                     {file(5), 0, 0, "foobar-rollout", "foobar", rollout_start},
                     {file(6), 0, 0, "foobar-rollout", "foobar", rollout_mid},
                     {file(7), 0, 0, "foobar-rollout", "foobar", rollout_end},
                     {file(8), 0, 0, "my-split", "foobar", self},
                     {file(9), 0, 0, "my-canary", "web", web}});
  }
  size_t on_disk = 0;
  for (const auto& e : std::filesystem::directory_iterator(examplePath("")))
    on_disk += e.path().filename().string().starts_with("traffic-split_");
  EXPECT_EQ(on_disk, expected.size());

  for (const SplitExample& c : expected) {
    SCOPED_TRACE(c.file);
    const auto [r, s] = loadChecked(c.file, c.errors);
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

}  // namespace
}  // namespace smik::model
