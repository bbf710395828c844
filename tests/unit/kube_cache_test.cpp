// KubeCache: reflector events to the model the compiler reads, rejected
// objects reported by ns/name like the manifest source does.
#include "agent/source/kube_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace smik::kube {
namespace {

using json = nlohmann::json;
using Event = Reflector::Event;

json object(const std::string& api_version, const std::string& kind, const std::string& name,
            json extra = json::object()) {
  json o = {{"apiVersion", api_version},
            {"kind", kind},
            {"metadata", {{"name", name}, {"namespace", "prod"}, {"resourceVersion", "7"}}}};
  o.update(extra);
  return o;
}

json pod(const std::string& name, const std::string& ip) {
  return object("v1", "Pod", name,
                {{"spec", {{"serviceAccountName", "web"}}}, {"status", {{"podIP", ip}}}});
}

TEST(KubeCache, UpsertsBecomeModelObjects) {
  KubeCache cache;
  cache.apply(Event::kUpsert, "prod/a", pod("a", "10.0.0.1"));
  cache.apply(Event::kUpsert, "prod/a",
              object("v1", "Service", "a", {{"spec", {{"clusterIP", "10.96.0.10"}}}}));
  cache.apply(Event::kUpsert, "prod/web", object("apps/v1", "Deployment", "web"));
  const auto s = cache.state();
  ASSERT_EQ(s.pods.count("prod/a"), 1u);  // same ns/name, different kinds: both kept
  EXPECT_EQ(s.pods.at("prod/a")->service_account, "web");
  EXPECT_EQ(s.pods.at("prod/a")->ips, std::vector<std::string>{"10.0.0.1"});
  ASSERT_EQ(s.services.count("prod/a"), 1u);
  EXPECT_EQ(s.services.at("prod/a").cluster_ips, std::vector<std::string>{"10.96.0.10"});
  EXPECT_EQ(s.workloads.count("Deployment/prod/web"), 1u);
  EXPECT_TRUE(cache.errors().empty());
}

TEST(KubeCache, RejectedObjectsAreReportedAndReplacedByAGoodVersion) {
  KubeCache cache;
  cache.apply(Event::kUpsert, "prod/bad", pod("bad", "10.0.0.256"));
  EXPECT_TRUE(cache.state().pods.empty());
  auto errors = cache.errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].object.kind, "Pod");
  EXPECT_EQ(errors[0].object.ns, "prod");
  EXPECT_EQ(errors[0].object.name, "bad");
  EXPECT_FALSE(errors[0].reason.empty());
  EXPECT_EQ(cache.rejectedTotal(), 1u);

  cache.apply(Event::kUpsert, "prod/bad", pod("bad", "10.0.0.2"));
  EXPECT_TRUE(cache.errors().empty());
  EXPECT_EQ(cache.state().pods.count("prod/bad"), 1u);
}

TEST(KubeCache, DeletesRemoveObjectsAndErrors) {
  KubeCache cache;
  cache.apply(Event::kUpsert, "prod/a", pod("a", "10.0.0.1"));
  cache.apply(Event::kUpsert, "prod/bad", pod("bad", "bogus"));
  const uint64_t g = cache.generation();
  cache.apply(Event::kDelete, "prod/a", pod("a", "10.0.0.1"));
  cache.apply(Event::kDelete, "prod/bad", pod("bad", "bogus"));
  EXPECT_TRUE(cache.state().pods.empty());
  EXPECT_TRUE(cache.errors().empty());
  EXPECT_EQ(cache.generation(), g + 2);
  cache.apply(Event::kDelete, "prod/never", pod("never", "10.0.0.1"));
  EXPECT_EQ(cache.generation(), g + 2);  // nothing changed
}

TEST(KubeCache, SmiObjectsParseThroughTheManifestParser) {
  KubeCache cache;
  cache.apply(Event::kUpsert, "prod/split",
              object("split.smi-spec.io/v1alpha4", "TrafficSplit", "split", json::parse(R"({
                "spec": {"service": "web", "backends": [
                  {"service": "web-v1", "weight": 90}, {"service": "web-v2", "weight": 10}]}})")));
  cache.apply(Event::kUpsert, "prod/cfg", object("v1", "ConfigMap", "cfg"));  // known, unused
  const auto s = cache.state();
  ASSERT_EQ(s.traffic_splits.count("prod/split"), 1u);
  EXPECT_EQ(s.traffic_splits.at("prod/split").backends.size(), 2u);
  EXPECT_TRUE(cache.errors().empty());
}

TEST(KubeCache, SmikResourcesCoverEveryModelKind) {
  std::set<std::string> kinds;
  for (const auto& r : smikResources()) kinds.insert(r.kind);
  for (const char* k : {"Namespace", "ServiceAccount", "Pod", "Service", "EndpointSlice",
                        "TrafficTarget", "HTTPRouteGroup", "TCPRoute", "UDPRoute", "TrafficSplit",
                        "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"})
    EXPECT_EQ(kinds.count(k), 1u) << k;
}

// An object too deep for the parser, or with fields of the wrong type, is a
// rejected object named like any other: never a crash (the conversion to
// the parser's tree recursed once per level, and json::value() throws on a
// type it did not expect).
TEST(KubeCache, DeepOrMistypedObjectsAreRejectedByName) {
  KubeCache cache;
  json tt = object("access.smi-spec.io/v1alpha3", "TrafficTarget", "tt");
  json deep = json::array();
  json* innermost = &deep;
  for (int i = 0; i < 100'000; ++i) innermost = &innermost->emplace_back(json::array());
  tt["spec"]["x"] = std::move(deep);  // moved, not copied: a copy would recurse
  cache.apply(Event::kUpsert, "prod/tt", tt);
  cache.apply(Event::kUpsert, "prod/typed",
              {{"apiVersion", 1}, {"kind", json::array({"Pod"})}, {"metadata", {{"name", 2}}}});
  cache.apply(Event::kUpsert, "prod/list", json::array({1, 2}));
  cache.apply(Event::kUpsert, "prod/a", pod("a", "10.0.0.1"));
  EXPECT_EQ(cache.state().pods.size(), 1u);
  EXPECT_TRUE(cache.state().traffic_targets.empty());
  std::set<std::string> errors;
  for (const auto& e : cache.errors()) errors.insert(e.str());
  EXPECT_EQ(errors.count("kubernetes: TrafficTarget prod/tt: nested deeper than 100 levels"), 1u);
  EXPECT_EQ(errors.size(), 3u);
  ASSERT_TRUE(cache.find({"TrafficTarget", "prod", "tt"}));
}

// Pods come and go in no key order, many more than the store's buffer of
// changes holds: through every merge the model is what the events say,
// rejected pods and Services (indexed for Events) included.
TEST(KubeCache, ManyPodsInAnyOrderThroughUpdatesDeletesAndReturns) {
  KubeCache cache;
  std::mt19937 rng(5);
  std::map<std::string, std::string> want;  // key -> ip of the pods kept
  std::set<std::string> rejected;
  auto ipOf = [](int i, int gen) {
    return "10." + std::to_string(gen) + "." + std::to_string(i / 250) + "." +
           std::to_string(i % 250);
  };
  const int n = 3000;
  std::vector<int> order(n);
  for (int i = 0; i < n; i++) order[i] = i;
  for (int round = 0; round < 4; round++) {
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      const std::string name = "p" + std::to_string(i);
      const std::string key = "prod/" + name;
      switch (rng() % 4) {
        case 0:
          cache.apply(Event::kDelete, key, pod(name, ipOf(i, round)));
          want.erase(key);
          rejected.erase("Pod prod/" + name);
          break;
        case 1:
          if (i % 7 == 0) {  // rejected, replacing whatever was there
            cache.apply(Event::kUpsert, key, pod(name, "10.0.0.256"));
            want.erase(key);
            rejected.insert("Pod prod/" + name);
            break;
          }
          [[fallthrough]];
        default:
          cache.apply(Event::kUpsert, key, pod(name, ipOf(i, round)));
          want[key] = ipOf(i, round);
          rejected.erase("Pod prod/" + name);
      }
    }
    // A Service among the pods: its own collection, found by name.
    cache.apply(Event::kUpsert, "prod/svc" + std::to_string(round),
                object("v1", "Service", "svc" + std::to_string(round),
                       {{"spec", {{"clusterIP", "10.96.0." + std::to_string(round + 1)}}}}));
    const auto s = cache.state();
    ASSERT_EQ(s.pods.size(), want.size()) << "round " << round;
    for (const auto& [key, ip] : want) {
      ASSERT_EQ(s.pods.count(key), 1u) << key;
      EXPECT_EQ(s.pods.at(key)->ips, std::vector<std::string>{ip}) << key;
    }
    std::set<std::string> errors;
    for (const auto& e : cache.errors()) errors.insert(e.object.str());
    EXPECT_EQ(errors, rejected) << "round " << round;
    EXPECT_EQ(s.services.size(), size_t(round + 1));
    EXPECT_TRUE(cache.find({"Service", "prod", "svc" + std::to_string(round)}));
  }
  for (int round = 0; round < 4; round++)
    cache.apply(Event::kDelete, "prod/svc" + std::to_string(round),
                object("v1", "Service", "svc" + std::to_string(round)));
  EXPECT_FALSE(cache.find({"Service", "prod", "svc0"}));
  EXPECT_TRUE(cache.state().services.empty());
  const uint64_t g = cache.generation();
  cache.dropResource({"v1", "Pod", "pods", ""});
  EXPECT_GT(cache.generation(), g);
  EXPECT_TRUE(cache.state().pods.empty());
  EXPECT_TRUE(cache.errors().empty());
}

}  // namespace
}  // namespace smik::kube
