// Hostile manifests: megabyte scalars, alias fan-out and self-reference,
// stray commas, deep nesting: an error naming the file, never a crash or hang.
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
    EXPECT_THAT(
        e, HasSubstr("t.yaml: ServiceAccount default/sa: metadata.labels.app: expected a string"));
    EXPECT_LT(e.size(), 300u) << "the value is cut short in the message";
  }
  // As a port: a number too large for 64 bits, out of range.
  EXPECT_THAT(error("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                        "spec:\n  ports:\n  - port: " + digits + "\n"), HasSubstr("out of range"));
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
  EXPECT_THAT(r.errors[0].str(), HasSubstr("laughs.yaml: rejected before parsing: line "));
  EXPECT_THAT(r.errors[0].str(), HasSubstr("aliases expand to more than 100000 nodes"));

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
  EXPECT_THAT(error("apiVersion: v1\nkind: List\nitems: &items [*items]\n"),
              HasSubstr("an alias names a node that contains it"));
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
    EXPECT_THAT(r.errors[0].str(), HasSubstr("a ',' outside any list or map"));
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
    EXPECT_THAT(r.errors[0].str(), HasSubstr("deep.yaml: rejected before parsing: line "));
    EXPECT_THAT(r.errors[0].str(), HasSubstr("nested deeper than 100 levels"));
  }
  const ParseResult r = parseManifests(
      "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nx:\n" + block_maps + "\n",
      "deep.yaml");
  ASSERT_EQ(r.errors.size(), 1u) << errorsOf(r);
  EXPECT_THAT(r.errors[0].str(),
              HasSubstr("deep.yaml: rejected before parsing: line 104: nested deeper"));
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
