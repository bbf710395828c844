// TrafficSplit in every version, and what any document may hold: kinds,
// versions, multi-document files.
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
  EXPECT_THAT(error(split("v1alpha3", "  service: r\n  matches: [{name: m}]\n  backends: []\n")),
              HasSubstr("missing required field spec.matches[0].kind"));
  EXPECT_THAT(error(split("v1alpha3",
                          "  service: r\n  matches: [{kind: HTTPRouteGroup}]\n  backends: []\n")),
              HasSubstr("missing required field spec.matches[0].name"));
  EXPECT_THAT(error(split("v1alpha3", "  service: r\n  matches: m\n  backends: []\n")),
              HasSubstr("spec.matches: expected a list, got \"m\""));
}

TEST(TrafficSplit, RequiredFields) {
  EXPECT_EQ(error("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n"
                  "metadata: {name: ts, namespace: shop}\n"),
            "t.yaml: TrafficSplit shop/ts: missing required field spec");
  EXPECT_EQ(error(split("v1alpha4", "  backends: []\n")),
            "t.yaml: TrafficSplit shop/ts: missing required field spec.service");
  EXPECT_EQ(error(split("v1alpha4", "  service: root\n")),
            "t.yaml: TrafficSplit shop/ts: missing required field spec.backends");
  EXPECT_THAT(error(split("v1alpha4", "  service: root\n  backends: null\n")),
              HasSubstr("missing required field spec.backends"));
  EXPECT_THAT(error(split("v1alpha4", "  service: root\n  backends: [{weight: 1}]\n")),
              HasSubstr("missing required field spec.backends[0].service"));
  EXPECT_THAT(error(split("v1alpha4", "  service: root\n  backends: [{service: a}]\n")),
              HasSubstr("missing required field spec.backends[0].weight"));
  EXPECT_THAT(error(split("v1alpha1", "  service: root\n  backends: [{service: a}]\n")),
              HasSubstr("missing required field spec.backends[0].weight"));
  EXPECT_THAT(error(split("v1alpha4", "  service: 5\n  backends: []\n")),
              HasSubstr("spec.service: expected a string, got 5"));
  EXPECT_THAT(error(split("v1alpha4", "  service: \"\"\n  backends: []\n")),
              HasSubstr("spec.service: must not be empty"));
  EXPECT_THAT(error(split("v1alpha4", "  service: r\n  backends: {service: a}\n")),
              HasSubstr("spec.backends: expected a list, got a map"));
  EXPECT_THAT(error(split("v1alpha4", "  service: r\n  backends: [{service: [a], weight: 1}]\n")),
              HasSubstr("spec.backends[0].service: expected a string, got a list"));
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
    EXPECT_THAT(error(splitWeight(v, "500m")),
                HasSubstr("weight \"500m\" is not a number (a string)"));
    EXPECT_THAT(error(splitWeight(v, "-0.5")), HasSubstr("weight -0.5 is fractional"));
    EXPECT_THAT(error(splitWeight(v, "2.0")),
                HasSubstr("spec.backends[0].weight: weight 2.0 must be written as an integer"));
    EXPECT_THAT(error(splitWeight(v, "1e3")),
                HasSubstr("weight 1e3 must be written as an integer"));
    EXPECT_THAT(error(splitWeight(v, ".inf")), HasSubstr("weight .inf is not a number"));
    EXPECT_THAT(error(splitWeight(v, "-.Inf")), HasSubstr("weight -.Inf is not a number"));
    EXPECT_THAT(error(splitWeight(v, ".nan")), HasSubstr("weight .nan is not a number"));
    EXPECT_THAT(error(splitWeight(v, "true")), HasSubstr("weight true is not a number"));
    EXPECT_THAT(error(splitWeight(v, "[1]")),
                HasSubstr("spec.backends[0].weight: expected a whole number, got a list"));
    EXPECT_THAT(error(splitWeight(v, "99999999999999999999")),
                HasSubstr("weight 99999999999999999999 is out of range"));
  }
  // The error names the failing backend.
  EXPECT_THAT(error(split("v1alpha4",
                          "  service: r\n  backends:\n  - {service: a, weight: 1}\n"
                          "  - {service: b, weight: -1}\n")),
              HasSubstr("spec.backends[1].weight: weight -1 is negative"));
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
  EXPECT_THAT(bad("0.0000000000000000000000000000001"),
              HasSubstr("is not a whole number of milli-units"));
  EXPECT_THAT(bad("0.0001"), HasSubstr("weight 0.0001 is not a whole number of milli-units"));
  EXPECT_THAT(bad("0." + std::string(100, '0') + "1k"),
              HasSubstr("is not a whole number of milli-units"));
  EXPECT_EQ(bad("-1"),
            "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight -1 is negative; weights "
            "must not be negative");
  EXPECT_THAT(bad("\"-500m\""), HasSubstr("weight \"-500m\" is negative"));
  EXPECT_THAT(bad("-1.5"), HasSubstr("weight -1.5 is negative"));
  EXPECT_EQ(bad("2X"),
            "t.yaml: TrafficSplit shop/ts: spec.backends[0].weight: weight \"2X\" has an "
            "unsupported suffix \"X\" (m, k, M, G, Ki, Mi, Gi or none)");
  for (const char* suffix : {"K", "T", "Ti", "n", "u", "e3", "E", "mi", " m", "m "})
    EXPECT_THAT(bad(std::string("\"1") + suffix + "\""), HasSubstr("has an unsupported suffix"));
  EXPECT_THAT(bad("1e3"), HasSubstr("weight 1e3 has an unsupported suffix \"e3\""));
  EXPECT_THAT(bad("1.2.3"), HasSubstr("has an unsupported suffix \".3\""));
  EXPECT_THAT(bad("abc"), HasSubstr("weight \"abc\" is not a quantity"));
  EXPECT_THAT(bad("m"), HasSubstr("weight \"m\" is not a quantity"));
  EXPECT_THAT(bad("\"\""), HasSubstr("weight \"\" is not a quantity"));
  EXPECT_THAT(bad("."), HasSubstr("is not a quantity"));
  EXPECT_THAT(bad("9223372036854775808m"),
              HasSubstr("weight \"9223372036854775808m\" is out of range"));
  EXPECT_THAT(bad("9223372036854775808"), HasSubstr("is out of range"));
  EXPECT_THAT(bad("9223372036854775k"), HasSubstr("is out of range"));
  EXPECT_THAT(bad("99999999999999999999999999999999999999Gi"), HasSubstr("is out of range"));
  EXPECT_THAT(bad("1" + std::string(40, '0')), HasSubstr("has too many digits"));
  EXPECT_THAT(
      bad("true"),
      HasSubstr("spec.backends[0].weight: expected a quantity such as 1 or \"500m\", got true"));
  EXPECT_THAT(bad("{a: 1}"), HasSubstr("expected a quantity such as 1 or \"500m\", got a map"));
}

TEST(TrafficSplit, Versions) {
  EXPECT_EQ(
      error("apiVersion: split.smi-spec.io/v1alpha5\nkind: TrafficSplit\n"
            "metadata: {name: ts}\nspec: {service: r, backends: []}\n"),
      "t.yaml: TrafficSplit default/ts: unsupported apiVersion \"split.smi-spec.io/v1alpha5\" "
      "for TrafficSplit");
  EXPECT_THAT(error("apiVersion: specs.smi-spec.io/v1alpha4\nkind: TrafficSplit\n"
                    "metadata: {name: ts}\nspec: {service: r, backends: []}\n"),
              HasSubstr("unsupported apiVersion \"specs.smi-spec.io/v1alpha4\" for TrafficSplit"));
  EXPECT_THAT(error("apiVersion: v1\nkind: TrafficSplit\nmetadata: {name: ts}\n"),
              HasSubstr("unsupported apiVersion \"v1\" for TrafficSplit"));
}

TEST(Metadata, NamespaceIsClusterScoped) {
  const auto ns = one<Namespace>(
      "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  namespace: ignored\n"
      "  labels: {smik.io/mesh: enabled, tier: \"1\"}\n  creationTimestamp: "
      "2024-01-02T03:04:05Z\n");
  EXPECT_EQ(ns.meta.name, "prod");
  EXPECT_TRUE(ns.meta.ns.empty());
  EXPECT_EQ(ns.meta.labels,
            (model::Labels{{"smik.io/mesh", "enabled"}, {"tier", "1"}}));
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
  EXPECT_THAT(error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, labels: [a]}\n"),
              HasSubstr("metadata.labels: expected a map, got a list"));
  EXPECT_THAT(error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, labels: {v: 1}}\n"),
              HasSubstr("metadata.labels.v: expected a string, got 1"));
  EXPECT_THAT(error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: 7}\n"),
              HasSubstr("metadata.namespace: expected a string, got 7"));
  EXPECT_THAT(error("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: \"\"}\n"),
              HasSubstr("metadata.name: must not be empty"));
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
  EXPECT_THAT(error("apiVersion: v1\nkind: [Pod]\nmetadata: {name: p}\n"),
              HasSubstr("kind: expected a string, got a list"));
  EXPECT_THAT(error("apiVersion: 1\nkind: Pod\nmetadata: {name: p}\n"),
              HasSubstr("apiVersion: expected a string, got 1"));
  EXPECT_THAT(error("- a\n- b\n"), HasSubstr("document: expected a map, got a list"));
}

// ---- kinds, versions, documents ---------------------------------------------

TEST(Documents, UnknownKindAndVersion) {
  EXPECT_EQ(error("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n"),
            "t.yaml: Widget w: unknown kind \"Widget\"");
  EXPECT_THAT(error("apiVersion: access.smi-spec.io/v1alpha4\nkind: IdentityBinding\n"
                        "metadata: {name: i}\n"), HasSubstr("unknown kind \"IdentityBinding\""));
  EXPECT_EQ(error("apiVersion: access.smi-spec.io/v1alpha4\nkind: TrafficTarget\n"
                  "metadata: {name: tt}\nspec: {}\n"),
            "t.yaml: TrafficTarget default/tt: unsupported apiVersion "
            "\"access.smi-spec.io/v1alpha4\" for TrafficTarget");
  EXPECT_THAT(
      error("apiVersion: specs.smi-spec.io/v1alpha5\nkind: TCPRoute\nmetadata: {name: r}\n"),
      HasSubstr("unsupported apiVersion \"specs.smi-spec.io/v1alpha5\" for TCPRoute"));
  EXPECT_THAT(error("apiVersion: specs.smi-spec.io/v1alpha4\nkind: TrafficTarget\n"
                        "metadata: {name: r}\n"), HasSubstr("unsupported apiVersion"));
  EXPECT_THAT(error("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: p}\n"),
              HasSubstr("unsupported apiVersion \"apps/v1\" for Pod"));
  EXPECT_THAT(error("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n"),
              HasSubstr("unsupported apiVersion \"v1\" for Deployment"));
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
  EXPECT_THAT(error("apiVersion: v1\nkind: List\nitems: {}\n"),
              HasSubstr("items: expected a list"));
  EXPECT_THAT(error("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List}\n"),
              HasSubstr("a List inside a List"));
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

  EXPECT_THAT(error(R"({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
      "metadata": {"name": "r"}, "spec": {"matches": {"ports": ["80"]}}})"),
              HasSubstr("spec.matches.ports[0]: expected an integer, got \"80\""));
}

TEST(Documents, SyntaxErrorIsOneErrorForTheFile) {
  const ParseResult r = parse(
      "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
      "apiVersion: v1\nkind: [Namespace\n");
  EXPECT_TRUE(r.objects.empty());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].object, ObjectRef{});
  EXPECT_THAT(r.errors[0].str(), HasSubstr("t.yaml: YAML syntax error at line "));
  EXPECT_THAT(error("{\"apiVersion\": \"v1\""), HasSubstr("YAML syntax error"));
  EXPECT_THAT(error("a: b\n  c: d\n"), HasSubstr("YAML syntax error at line 2"));
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
  EXPECT_THAT(error(big), HasSubstr("file too large"));
  const std::string long_port = "[" + std::string(1000, 'x') + "]";
  const std::string e =
      error(route("TCPRoute", "v1alpha4", "spec: {matches: {ports: " + long_port + "}}"));
  EXPECT_THAT(e, HasSubstr("expected an integer, got \"xxx"));
  EXPECT_LT(e.size(), 200u);
}

}  // namespace
}  // namespace smik::model
