// The TrafficMetrics API (api/smi/smi_metrics.cpp; README: Traffic metrics) over a
// fake telemetry store: every path shape, the JSON the SMI examples show, the
// errors, ?t=, Quantity strings, and golden files for whole responses.
//
// Goldens: tests/fixtures/metrics/*.json, compared as parsed JSON without the
// timestamps. After an intended change of output, regenerate them with
//   SMIK_UPDATE_GOLDENS=1 <test binary> --gtest_filter='SmiGolden*'
// and review the diff against the spec's examples.
#include "api/http/smi_routes.h"
#include "api/smi/smi_metrics.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/telemetry/metrics.h"
#include "api/http/listen.h"
#include "api/http/router.h"

namespace smik::api {
namespace {

using json = nlohmann::json;
using telemetry::Counts;
using telemetry::EdgeMetrics;
using telemetry::Histogram;
using telemetry::MetricsView;
using telemetry::ResourceRef;
using telemetry::Side;
using telemetry::SplitBackendMetrics;

const std::string kBase = kSmiMetricsBase;

// ---- a small cluster ------------------------------------------------------------
//
// Namespaces shop and payments. Pods shop/web-1, shop/web-2 (idle),
// shop/cart-1, payments/ledger-1 (its clients are on other nodes: srtt only).
// Deployments shop/web and shop/cart. web-1 -> cart-1 seen at both ends;
// ledger-1 -> web-1 seen at web-1. TrafficSplit shop/web-split: apex web,
// backends web-v1 (90) and web-v2 (10).

ResourceRef pod(const std::string& ns, const std::string& name) { return {"Pod", ns, name}; }
ResourceRef deployment(const std::string& name) { return {"Deployment", "shop", name}; }
ResourceRef nspace(const std::string& name) { return {"Namespace", "", name}; }
ResourceRef trafficSplit(const std::string& name) { return {"TrafficSplit", "shop", name}; }

void record(Histogram& h, uint64_t us, uint64_t times = 1) {
  h.buckets[smik_hist_bucket(us)] += times;
}

// 150 established (handshakes: 12 µs each), 2 refused, 1 timed out, 3 denied, 5 reset.
Counts busyCounts() {
  Counts c;
  c.success = 150, c.refused = 2, c.timeout = 1, c.policy = 3, c.reset = 5;
  record(c.handshake_us, 12, 150);
  record(c.srtt_us, 400, 150);  // ignored: handshakes exist
  return c;
}

// Latencies spread so p50, p90 and p99 differ: 1000 µs x 50, 2000 x 40, 9000 x 10.
Counts spreadCounts(uint64_t success) {
  Counts c;
  c.success = success;
  record(c.handshake_us, 1000, 50);
  record(c.handshake_us, 2000, 40);
  record(c.handshake_us, 9000, 10);
  return c;
}

Counts srttOnlyCounts() {
  Counts c;
  c.success = 7;
  record(c.srtt_us, 1000, 7);
  return c;
}

class FakeMetricsView : public MetricsView {
 public:
  FakeMetricsView() {
    for (const auto& r : {nspace("shop"), nspace("payments"), pod("shop", "web-1"),
                          pod("shop", "web-2"), pod("shop", "cart-1"), pod("payments", "ledger-1"),
                          deployment("web"), deployment("cart"), trafficSplit("web-split")})
      objects.insert(r);
    inbound_[pod("shop", "web-1")] = busyCounts();
    inbound_[pod("shop", "cart-1")] = spreadCounts(100);
    inbound_[pod("payments", "ledger-1")] = srttOnlyCounts();
    inbound_[deployment("web")] = busyCounts();
    inbound_[nspace("shop")] = spreadCounts(250);

    edges_[pod("shop", "web-1")] = {
        {pod("shop", "cart-1"), Side::kClient, spreadCounts(100)},
        {pod("payments", "ledger-1"), Side::kServer, srttOnlyCounts()},
    };
    edges_[pod("shop", "cart-1")] = {{pod("shop", "web-1"), Side::kServer, spreadCounts(100)}};
    edges_[deployment("web")] = {{deployment("cart"), Side::kClient, spreadCounts(100)}};
    edges_[nspace("shop")] = {{nspace("payments"), Side::kClient, srttOnlyCounts()}};

    Counts v2 = busyCounts();
    v2.success = 15;
    split_[trafficSplit("web-split")] = {{"web", "web-v1", 90, spreadCounts(135)},
                                         {"web", "web-v2", 10, v2}};
  }

  std::vector<ResourceRef> list(const std::string& kind, const std::string& ns) const override {
    std::vector<ResourceRef> out;
    for (const auto& r : objects)
      if (r.kind == kind && (ns.empty() || r.ns == ns)) out.push_back(r);
    return out;
  }
  bool exists(const ResourceRef& r) const override { return objects.count(r) > 0; }
  Counts inbound(const ResourceRef& r, int window_s) const override {
    windows_asked.push_back(window_s);
    auto it = inbound_.find(r);
    return it == inbound_.end() ? Counts{} : it->second;
  }
  std::vector<EdgeMetrics> edges(const ResourceRef& r, int window_s) const override {
    windows_asked.push_back(window_s);
    auto it = edges_.find(r);
    return it == edges_.end() ? std::vector<EdgeMetrics>{} : it->second;
  }
  std::vector<SplitBackendMetrics> split(const ResourceRef& r, int window_s) const override {
    windows_asked.push_back(window_s);
    auto it = split_.find(r);
    return it == split_.end() ? std::vector<SplitBackendMetrics>{} : it->second;
  }
  int maxWindow() const override { return 300; }
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::from_time_t(1554762355);  // 2019-04-08T22:25:55Z
  }

  std::set<ResourceRef> objects;
  mutable std::vector<int> windows_asked;

 private:
  std::map<ResourceRef, Counts> inbound_;
  std::map<ResourceRef, std::vector<EdgeMetrics>> edges_;
  std::map<ResourceRef, std::vector<SplitBackendMetrics>> split_;
};

// ---- helpers --------------------------------------------------------------------------

class SmiMetrics : public ::testing::Test {
 protected:
  // GET kBase + suffix; expects 200 and parses the body.
  json get(const std::string& suffix, const std::string& t = "") {
    const SmiResponse r = handleSmiMetrics(view_, kBase + suffix, t);
    EXPECT_EQ(r.status, 200) << suffix << ": " << r.body;
    return json::parse(r.body);
  }
  // GET that must fail with `code`; returns the Status.
  json getError(const std::string& path, int code = 404) {
    const SmiResponse r = handleSmiMetrics(view_, path, "");
    EXPECT_EQ(r.status, code) << path << ": " << r.body;
    const json status = json::parse(r.body);
    EXPECT_EQ(status["kind"], "Status");
    EXPECT_EQ(status["apiVersion"], "v1");
    EXPECT_EQ(status["status"], "Failure");
    EXPECT_EQ(status["code"], code);
    return status;
  }
  FakeMetricsView view_;
};

// name -> value of a TrafficMetrics' metrics array.
std::map<std::string, std::string> metricValues(const json& item) {
  std::map<std::string, std::string> out;
  for (const auto& m : item.at("metrics")) out[m.at("name")] = m.at("value");
  return out;
}

std::string latencyOf(double us) { return quantityFromMilli(static_cast<int64_t>(us)); }

std::string midOf(uint64_t us) { return latencyOf(Histogram::bucketMid(smik_hist_bucket(us))); }

// ---- Quantity, durations, ?t= -------------------------------------------------------

TEST(SmiQuantity, FormatsLikeKubernetesDecimalSI) {
  EXPECT_EQ(quantityFromMilli(0), "0");
  EXPECT_EQ(quantityFromMilli(150000), "150");      // 150 ms latency, 150 connections
  EXPECT_EQ(quantityFromMilli(296875), "296875m");  // 296.875
  EXPECT_EQ(quantityFromMilli(73492), "73492m");
  EXPECT_EQ(quantityFromMilli(10), "10m");
  EXPECT_EQ(quantityFromMilli(1), "1m");
  EXPECT_EQ(quantityFromMilli(100), "100m");    // 0.1
  EXPECT_EQ(quantityFromMilli(1500), "1500m");  // 1.5: the mantissa stays whole
  EXPECT_EQ(quantityFromMilli(1000), "1");
  EXPECT_EQ(quantityFromMilli(12000), "12");
  EXPECT_EQ(quantityFromMilli(1500000), "1500");  // not "1.5k"
  EXPECT_EQ(quantityFromMilli(1000000), "1k");    // Go prints 1000 as "1k"
  EXPECT_EQ(quantityFromMilli(20000000), "20k");
  EXPECT_EQ(quantityFromMilli(2000000000), "2M");
  EXPECT_EQ(quantityFromMilli(-1500), "-1500m");
  EXPECT_EQ(quantityFromMilli(std::numeric_limits<int64_t>::max()), "9223372036854775807m");
}

TEST(SmiDuration, PrintsLikeGo) {
  EXPECT_EQ(goDuration(30), "30s");
  EXPECT_EQ(goDuration(1), "1s");
  EXPECT_EQ(goDuration(60), "1m0s");
  EXPECT_EQ(goDuration(90), "1m30s");
  EXPECT_EQ(goDuration(300), "5m0s");
  EXPECT_EQ(goDuration(3600), "1h0m0s");
  EXPECT_EQ(goDuration(3725), "1h2m5s");
  EXPECT_EQ(goDuration(0), "0s");
}

TEST(SmiWindow, ParsesGoDurations) {
  EXPECT_EQ(windowSeconds("30s", 300), 30);
  EXPECT_EQ(windowSeconds("1m", 300), 60);
  EXPECT_EQ(windowSeconds("5m", 300), 300);
  EXPECT_EQ(windowSeconds("1m30s", 300), 90);
  EXPECT_EQ(windowSeconds("1.5m", 300), 90);
  EXPECT_EQ(windowSeconds(".5m", 300), 30);
  EXPECT_EQ(windowSeconds("0.3m", 300), 18);  // exact, not 18.000001 rounded up
  EXPECT_EQ(windowSeconds("+45s", 300), 45);
  EXPECT_EQ(windowSeconds("2m0.5s", 300), 121);
  EXPECT_EQ(windowSeconds("90000ms", 300), 90);
  EXPECT_EQ(windowSeconds("45000000us", 300), 45);
  EXPECT_EQ(windowSeconds("45000000\u00b5s", 300), 45);
}

TEST(SmiWindow, RoundsUpToWholeSeconds) {
  EXPECT_EQ(windowSeconds("500ms", 300), 1);
  EXPECT_EQ(windowSeconds("1ns", 300), 1);
  EXPECT_EQ(windowSeconds("1.2s", 300), 2);
  EXPECT_EQ(windowSeconds("59999ms", 300), 60);
}

TEST(SmiWindow, InvalidOrAbsentIsThirtySeconds) {
  for (const char* bad : {"", "abc", "5", "1x", "m", "1m30", "--1s", "1s ", " 1s", ".s", "1.2.3s",
                          "99999999999999999999h", "3000000h"})
    EXPECT_EQ(windowSeconds(bad, 300), 30) << "t=" << bad;
}

TEST(SmiWindow, ClampsToOneSecondAndTheStoresMaximum) {
  EXPECT_EQ(windowSeconds("0", 300), 1);
  EXPECT_EQ(windowSeconds("0s", 300), 1);
  EXPECT_EQ(windowSeconds("-5s", 300), 1);
  EXPECT_EQ(windowSeconds("10m", 300), 300);
  EXPECT_EQ(windowSeconds("2h", 300), 300);
  EXPECT_EQ(windowSeconds("", 10), 10);  // even the default
  EXPECT_EQ(windowSeconds("5s", 0), 1);  // a store that keeps nothing
}

TEST_F(SmiMetrics, WindowReachesTheStoreAndTheAnswer) {
  struct Case {
    std::string t;
    int seconds;
    std::string window;
  };
  for (const Case& c : {Case{"", 30, "30s"}, Case{"1m", 60, "1m0s"}, Case{"5m", 300, "5m0s"},
                        Case{"1m30s", 90, "1m30s"}, Case{"500ms", 1, "1s"}, Case{"1h", 300, "5m0s"},
                        Case{"bogus", 30, "30s"}}) {
    view_.windows_asked.clear();
    const json item = get("/namespaces/shop/pods/web-1", c.t);
    EXPECT_EQ(item["window"], c.window) << "t=" << c.t;
    EXPECT_EQ(view_.windows_asked, std::vector<int>{c.seconds}) << "t=" << c.t;
  }
}

// ---- discovery -----------------------------------------------------------------------

TEST_F(SmiMetrics, DiscoveryListsEveryKind) {
  const json d = get("");
  EXPECT_EQ(d["kind"], "APIResourceList");
  EXPECT_EQ(d["apiVersion"], "v1");
  EXPECT_EQ(d["groupVersion"], "metrics.smi-spec.io/v1alpha1");
  std::map<std::string, bool> namespaced;
  for (const auto& r : d["resources"]) {
    namespaced[r["name"]] = r["namespaced"];
    EXPECT_EQ(r["kind"], "TrafficMetrics");
    EXPECT_EQ(r["verbs"], json({"get", "list"}));
  }
  const std::map<std::string, bool> want = {{"pods", true},        {"deployments", true},
                                            {"daemonsets", true},  {"statefulsets", true},
                                            {"namespaces", false}, {"trafficsplits", true}};
  EXPECT_EQ(namespaced, want);
}

TEST_F(SmiMetrics, TrailingSlashesAreStripped) {
  EXPECT_EQ(get("/")["kind"], "APIResourceList");
  EXPECT_EQ(get("/namespaces/shop/pods/")["kind"], "TrafficMetricsList");
  EXPECT_EQ(get("/namespaces/shop/pods/web-1//")["metadata"]["name"], "web-1");
}

// ---- lists ------------------------------------------------------------------------------

TEST_F(SmiMetrics, ListOfAKindInEveryNamespace) {
  const json l = get("/pods");
  EXPECT_EQ(l["kind"], "TrafficMetricsList");
  EXPECT_EQ(l["apiVersion"], "metrics.smi-spec.io/v1alpha1");
  EXPECT_EQ(l["metadata"]["selfLink"], kBase + "/pods");
  EXPECT_EQ(l["resource"], json({{"kind", "Pod"}}));
  std::set<std::string> names;
  for (const auto& item : l["items"]) {
    names.insert(item["metadata"]["namespace"].get<std::string>() + "/" +
                 item["metadata"]["name"].get<std::string>());
    EXPECT_EQ(item["kind"], "TrafficMetrics");
    EXPECT_EQ(item["edge"],
              json({{"direction", "from"}, {"side", "server"}, {"resource", nullptr}}));
    EXPECT_EQ(item["resource"]["kind"], "Pod");
  }
  EXPECT_EQ(names, (std::set<std::string>{"shop/web-1", "shop/web-2", "shop/cart-1",
                                          "payments/ledger-1"}));
}

TEST_F(SmiMetrics, ListOfAKindInOneNamespace) {
  const json l = get("/namespaces/payments/pods");
  EXPECT_EQ(l["metadata"]["selfLink"], kBase + "/namespaces/payments/pods");
  EXPECT_EQ(l["resource"], json({{"kind", "Pod"}, {"namespace", "payments"}}));
  ASSERT_EQ(l["items"].size(), 1u);
  EXPECT_EQ(l["items"][0]["resource"],
            json({{"kind", "Pod"}, {"namespace", "payments"}, {"name", "ledger-1"}}));
  EXPECT_EQ(get("/namespaces/nowhere/deployments")["items"], json::array());
  EXPECT_EQ(get("/daemonsets")["items"], json::array());
  EXPECT_EQ(get("/namespaces/shop/statefulsets")["resource"]["kind"], "StatefulSet");
}

TEST_F(SmiMetrics, ListOfNamespaces) {
  const json l = get("/namespaces");
  EXPECT_EQ(l["resource"], json({{"kind", "Namespace"}}));
  ASSERT_EQ(l["items"].size(), 2u);
  for (const auto& item : l["items"]) {
    EXPECT_FALSE(item["metadata"].contains("namespace"));
    EXPECT_FALSE(item["resource"].contains("namespace"));
    EXPECT_EQ(item["metadata"]["selfLink"],
              kBase + "/namespaces/" + item["metadata"]["name"].get<std::string>());
  }
}

// ---- one object ------------------------------------------------------------------------

TEST_F(SmiMetrics, OnePodLikeTheSpecExample) {
  const json m = get("/namespaces/shop/pods/web-1");
  EXPECT_EQ(m["kind"], "TrafficMetrics");
  EXPECT_EQ(m["apiVersion"], "metrics.smi-spec.io/v1alpha1");
  EXPECT_EQ(m["metadata"]["name"], "web-1");
  EXPECT_EQ(m["metadata"]["namespace"], "shop");
  EXPECT_EQ(m["metadata"]["selfLink"], kBase + "/namespaces/shop/pods/web-1");
  EXPECT_EQ(m["metadata"]["creationTimestamp"], "2019-04-08T22:25:55Z");
  EXPECT_EQ(m["timestamp"], "2019-04-08T22:25:55Z");
  EXPECT_EQ(m["window"], "30s");
  EXPECT_EQ(m["resource"], json({{"kind", "Pod"}, {"namespace", "shop"}, {"name", "web-1"}}));
  EXPECT_EQ(m["edge"], json({{"direction", "from"}, {"side", "server"}, {"resource", nullptr}}));
  ASSERT_EQ(m["metrics"].size(), 6u);
  const std::vector<std::string> order = {"p99_response_latency", "p90_response_latency",
                                          "p50_response_latency", "success_count", "failure_count",
                                          "policy_denied_count"};
  for (size_t i = 0; i < order.size(); i++) {
    EXPECT_EQ(m["metrics"][i]["name"], order[i]);
    EXPECT_EQ(m["metrics"][i].contains("unit"), i < 3) << order[i];
    if (i < 3) {
      EXPECT_EQ(m["metrics"][i]["unit"], "ms");
    }
  }
  // 12 µs handshakes (srtt 400 µs ignored); failures = refused + timeout + policy, not reset.
  const auto v = metricValues(m);
  EXPECT_EQ(v.at("p99_response_latency"), "12m");
  EXPECT_EQ(v.at("p50_response_latency"), "12m");
  EXPECT_EQ(v.at("success_count"), "150");
  EXPECT_EQ(v.at("failure_count"), "6");
  EXPECT_EQ(v.at("policy_denied_count"), "3") << "of the 6 failures, the TrafficTarget's drops";
}

TEST_F(SmiMetrics, QuantilesAreHandshakeBucketMidpointsInMs) {
  const auto v = metricValues(get("/namespaces/shop/pods/cart-1"));
  EXPECT_EQ(v.at("p50_response_latency"), midOf(1000));
  EXPECT_EQ(v.at("p50_response_latency"), "991m");  // bucket 960..1023 µs
  EXPECT_EQ(v.at("p90_response_latency"), midOf(2000));
  EXPECT_EQ(v.at("p99_response_latency"), midOf(9000));
  EXPECT_EQ(v.at("success_count"), "100");
  EXPECT_EQ(v.at("failure_count"), "0");
}

TEST_F(SmiMetrics, LatencyFallsBackToSrttWithoutHandshakes) {
  const auto v = metricValues(get("/namespaces/payments/pods/ledger-1"));
  EXPECT_EQ(v.at("p50_response_latency"), midOf(1000));
  EXPECT_EQ(v.at("p99_response_latency"), midOf(1000));
  EXPECT_EQ(v.at("success_count"), "7");
}

TEST_F(SmiMetrics, IdleResourceReportsZeros) {
  const json m = get("/namespaces/shop/pods/web-2");
  ASSERT_EQ(m["metrics"].size(), 6u);
  for (const auto& metric : m["metrics"]) EXPECT_EQ(metric["value"], "0") << metric["name"];
}

TEST_F(SmiMetrics, OneDeployment) {
  const json m = get("/namespaces/shop/deployments/web");
  EXPECT_EQ(m["resource"], json({{"kind", "Deployment"}, {"namespace", "shop"}, {"name", "web"}}));
  EXPECT_EQ(m["metadata"]["selfLink"], kBase + "/namespaces/shop/deployments/web");
  EXPECT_EQ(metricValues(m).at("success_count"), "150");
}

TEST_F(SmiMetrics, OneNamespace) {
  const json m = get("/namespaces/shop");
  EXPECT_EQ(m["kind"], "TrafficMetrics");
  EXPECT_EQ(m["metadata"]["name"], "shop");
  EXPECT_FALSE(m["metadata"].contains("namespace"));
  EXPECT_EQ(m["metadata"]["selfLink"], kBase + "/namespaces/shop");
  EXPECT_EQ(m["resource"], json({{"kind", "Namespace"}, {"name", "shop"}}));
  EXPECT_EQ(metricValues(m).at("success_count"), "250");
}

// ---- edges -------------------------------------------------------------------------------

TEST_F(SmiMetrics, PodEdgesInBothDirections) {
  const json l = get("/namespaces/shop/pods/web-1/edges");
  EXPECT_EQ(l["kind"], "TrafficMetricsList");
  EXPECT_EQ(l["metadata"]["selfLink"], kBase + "/namespaces/shop/pods/web-1/edges");
  EXPECT_EQ(l["resource"], json({{"kind", "Pod"}, {"namespace", "shop"}, {"name", "web-1"}}));
  ASSERT_EQ(l["items"].size(), 2u);

  const json& to = l["items"][0];
  EXPECT_EQ(to["edge"],
            json({{"direction", "to"},
                  {"side", "client"},
                  {"resource", {{"kind", "Pod"}, {"namespace", "shop"}, {"name", "cart-1"}}}}));
  EXPECT_EQ(to["resource"]["name"], "web-1");
  EXPECT_EQ(to["metadata"]["selfLink"], kBase + "/namespaces/shop/pods/web-1/edges");
  EXPECT_EQ(metricValues(to).at("success_count"), "100");

  const json& from = l["items"][1];
  EXPECT_EQ(
      from["edge"],
      json({{"direction", "from"},
            {"side", "server"},
            {"resource", {{"kind", "Pod"}, {"namespace", "payments"}, {"name", "ledger-1"}}}}));
  EXPECT_EQ(metricValues(from).at("p50_response_latency"), midOf(1000));  // srtt: remote client
}

TEST_F(SmiMetrics, TheOtherEndOfAnEdge) {
  const json l = get("/namespaces/shop/pods/cart-1/edges");
  ASSERT_EQ(l["items"].size(), 1u);
  EXPECT_EQ(l["items"][0]["edge"]["direction"], "from");
  EXPECT_EQ(l["items"][0]["edge"]["side"], "server");
  EXPECT_EQ(l["items"][0]["edge"]["resource"]["name"], "web-1");
}

TEST_F(SmiMetrics, ResourceWithoutTrafficHasNoEdges) {
  const json l = get("/namespaces/shop/pods/web-2/edges");
  EXPECT_EQ(l["items"], json::array());
}

TEST_F(SmiMetrics, DeploymentEdges) {
  const json l = get("/namespaces/shop/deployments/web/edges");
  ASSERT_EQ(l["items"].size(), 1u);
  EXPECT_EQ(l["items"][0]["edge"]["resource"],
            json({{"kind", "Deployment"}, {"namespace", "shop"}, {"name", "cart"}}));
}

TEST_F(SmiMetrics, NamespaceEdges) {
  const json l = get("/namespaces/shop/edges");
  EXPECT_EQ(l["metadata"]["selfLink"], kBase + "/namespaces/shop/edges");
  EXPECT_EQ(l["resource"], json({{"kind", "Namespace"}, {"name", "shop"}}));
  ASSERT_EQ(l["items"].size(), 1u);
  EXPECT_EQ(l["items"][0]["edge"],
            json({{"direction", "to"},
                  {"side", "client"},
                  {"resource", {{"kind", "Namespace"}, {"name", "payments"}}}}));
  EXPECT_FALSE(l["items"][0]["metadata"].contains("namespace"));
}

// ---- TrafficSplit -------------------------------------------------------------------------

TEST_F(SmiMetrics, SplitIsAListWithOneItemPerBackend) {
  const json l = get("/namespaces/shop/trafficsplits/web-split");
  EXPECT_EQ(l["kind"], "TrafficMetricsList");
  EXPECT_EQ(l["metadata"]["selfLink"], kBase + "/namespaces/shop/trafficsplits/web-split");
  const json ref = {{"kind", "TrafficSplit"}, {"namespace", "shop"}, {"name", "web-split"}};
  EXPECT_EQ(l["resource"], ref);
  ASSERT_EQ(l["items"].size(), 2u);
  for (const auto& item : l["items"]) {
    EXPECT_EQ(item["kind"], "TrafficMetrics");
    EXPECT_EQ(item["resource"], ref);
    EXPECT_EQ(item["edge"],
              json({{"direction", "from"}, {"side", "client"}, {"resource", json::object()}}));
    EXPECT_EQ(item["backend"]["apex"], "web");
  }
  EXPECT_EQ(l["items"][0]["backend"], json({{"apex", "web"}, {"name", "web-v1"}, {"weight", 90}}));
  EXPECT_EQ(l["items"][1]["backend"], json({{"apex", "web"}, {"name", "web-v2"}, {"weight", 10}}));
  EXPECT_EQ(metricValues(l["items"][0]).at("success_count"), "135");
  EXPECT_EQ(metricValues(l["items"][1]).at("success_count"), "15");
  EXPECT_EQ(metricValues(l["items"][1]).at("failure_count"), "6");
}

TEST_F(SmiMetrics, OnlySplitItemsCarryABackend) {
  EXPECT_FALSE(get("/namespaces/shop/pods/web-1").contains("backend"));
  const json edges = get("/namespaces/shop/pods/web-1/edges");
  for (const auto& item : edges["items"]) EXPECT_FALSE(item.contains("backend"));
}

TEST_F(SmiMetrics, ListOfSplitsFlattensTheirBackends) {
  for (const std::string path : {"/trafficsplits", "/namespaces/shop/trafficsplits"}) {
    const json l = get(path);
    EXPECT_EQ(l["resource"]["kind"], "TrafficSplit");
    ASSERT_EQ(l["items"].size(), 2u) << path;
    EXPECT_EQ(l["items"][0]["backend"]["name"], "web-v1");
  }
  EXPECT_EQ(get("/namespaces/payments/trafficsplits")["items"], json::array());
}

// ---- errors ---------------------------------------------------------------------------------

TEST_F(SmiMetrics, UnsupportedResource) {
  for (const std::string path :
       {"/services", "/namespaces/shop/services", "/namespaces/shop/services/web",
        "/namespaces/shop/Pods/web-1/edges"}) {
    const json s = getError(kBase + path);
    EXPECT_EQ(s["reason"], "NotFound");
    EXPECT_EQ(s["message"].get<std::string>().rfind("Unsupported resource: ", 0), 0u) << path;
  }
  EXPECT_EQ(getError(kBase + "/services")["message"], "Unsupported resource: services");
}

TEST_F(SmiMetrics, UnknownObject) {
  json s = getError(kBase + "/namespaces/shop/pods/nope");
  EXPECT_EQ(s["message"], "pods \"nope\" not found");
  EXPECT_EQ(s["reason"], "NotFound");
  EXPECT_EQ(s["details"], json({{"name", "nope"}, {"kind", "pods"}}));
  // Right name, wrong namespace.
  EXPECT_EQ(getError(kBase + "/namespaces/payments/pods/web-1")["message"],
            "pods \"web-1\" not found");
  EXPECT_EQ(getError(kBase + "/namespaces/shop/pods/nope/edges")["message"],
            "pods \"nope\" not found");
  EXPECT_EQ(getError(kBase + "/namespaces/nowhere")["message"], "namespaces \"nowhere\" not found");
  EXPECT_EQ(getError(kBase + "/namespaces/nowhere/edges")["message"],
            "namespaces \"nowhere\" not found");
  EXPECT_EQ(getError(kBase + "/namespaces/shop/trafficsplits/nope")["message"],
            "trafficsplits \"nope\" not found");
}

TEST_F(SmiMetrics, OtherPathsAreNotFound) {
  for (const std::string& path :
       {kBase + "/pods/web-1", kBase + "/namespaces/shop/pods/web-1/metrics",
        kBase + "/namespaces/shop/pods/web-1/edges/x", kBase + "/namespaces/shop/namespaces",
        kBase + "/namespaces/shop/namespaces/shop", kBase + "//pods", kBase + "/namespaces//pods",
        kBase + "0", std::string("/apis/metrics.smi-spec.io"), std::string("/healthz"),
        std::string("")}) {
    const json s = getError(path);
    EXPECT_EQ(s["reason"], "NotFound") << path;
  }
  EXPECT_EQ(getError(kBase + "/namespaces/shop/trafficsplits/web-split/edges")["reason"],
            "NotFound");
}

// ---- over HTTP: routing, HEAD, content type ---------------------------------------------------

class SmiMetricsHttp : public SmiMetrics {
 protected:
  void SetUp() override {
    Router router;
    mountSmiMetrics(router, view_);
    router.add({"/healthz", [](const RoutedRequest&, httplib::Response& res) {
                  res.set_content("ok", "text/plain");
                }});
    listener_ = std::make_unique<Listener>(std::move(router));
    std::string err;
    ASSERT_TRUE(listener_->start("127.0.0.1:0", &err)) << err;
  }
  void TearDown() override { listener_->stop(); }
  httplib::Client client() { return httplib::Client("127.0.0.1", listener_->port()); }

  std::unique_ptr<Listener> listener_;
};

TEST_F(SmiMetricsHttp, GetWithWindowAndTrailingSlash) {
  auto c = client();
  auto res = c.Get((kBase + "/namespaces/shop/pods/web-1/?t=1m").c_str());
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  const json m = json::parse(res->body);
  EXPECT_EQ(m["window"], "1m0s");
  EXPECT_EQ(m["metadata"]["name"], "web-1");
}

TEST_F(SmiMetricsHttp, HeadIsAGetWithoutBody) {
  auto c = client();
  auto head = c.Head(kBase + "/namespaces/shop/pods");
  ASSERT_TRUE(head) << httplib::to_string(head.error());
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->get_header_value("Content-Type"), "application/json");
  EXPECT_TRUE(head->body.empty());
  auto get = c.Get(kBase + "/namespaces/shop/pods");
  ASSERT_TRUE(get);
  EXPECT_EQ(head->get_header_value("Content-Length"), std::to_string(get->body.size()));

  auto missing = c.Head(kBase + "/namespaces/shop/pods/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST_F(SmiMetricsHttp, DiscoveryAndErrorsOverHttp) {
  auto c = client();
  auto d = c.Get(kBase);
  ASSERT_TRUE(d);
  EXPECT_EQ(json::parse(d->body)["kind"], "APIResourceList");
  auto err = c.Get(kBase + "/services");
  ASSERT_TRUE(err);
  EXPECT_EQ(err->status, 404);
  EXPECT_EQ(err->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(json::parse(err->body)["message"], "Unsupported resource: services");
}

TEST_F(SmiMetricsHttp, LeavesOtherPathsToTheirHandlers) {
  auto c = client();
  auto h = c.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->body, "ok");
  auto other = c.Get("/apis/metrics.smi-spec.io/v1alpha10");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  EXPECT_EQ(other->body, "not found\n");  // the router's own 404: not routed to the API
}

// ---- golden files ------------------------------------------------------------------------------

void stripTimestamps(json& j) {
  if (j.is_object()) {
    j.erase("timestamp");
    j.erase("creationTimestamp");
  }
  if (j.is_structured())
    for (auto& child : j) stripTimestamps(child);
}

std::string goldenPath(const std::string& name) {
  return std::string(SMIK_FIXTURES_DIR) + "/metrics/" + name + ".json";
}

void checkGolden(const std::string& name, const SmiResponse& r) {
  const std::string path = goldenPath(name);
  if (std::getenv("SMIK_UPDATE_GOLDENS")) {
    std::ofstream(path) << r.body;
    return;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing golden " << path << " (SMIK_UPDATE_GOLDENS=1 writes it)";
  std::stringstream want_text;
  want_text << in.rdbuf();
  json want = json::parse(want_text.str());
  json got = json::parse(r.body);
  stripTimestamps(want);
  stripTimestamps(got);
  EXPECT_EQ(got, want) << name << ": patch from the golden to what we serve: "
                       << json::diff(want, got).dump() << "\ngot:\n"
                       << got.dump(2);
}

struct GoldenCase {
  std::string name;
  std::string path;  // after the base
  std::string t;
  int status;
};

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.name; }

class SmiGolden : public SmiMetrics, public ::testing::WithParamInterface<GoldenCase> {};

TEST_P(SmiGolden, MatchesTheFile) {
  const GoldenCase& c = GetParam();
  const SmiResponse r = handleSmiMetrics(view_, kBase + c.path, c.t);
  EXPECT_EQ(r.status, c.status) << r.body;
  checkGolden(c.name, r);
}

INSTANTIATE_TEST_SUITE_P(
    Responses, SmiGolden,
    ::testing::Values(
        GoldenCase{"discovery", "/", "", 200}, GoldenCase{"pods_all_namespaces", "/pods", "", 200},
        GoldenCase{"pods_shop", "/namespaces/shop/pods", "", 200},
        GoldenCase{"pod_web-1", "/namespaces/shop/pods/web-1", "", 200},
        GoldenCase{"pod_web-1_window_1m", "/namespaces/shop/pods/web-1", "1m", 200},
        GoldenCase{"pod_web-1_edges", "/namespaces/shop/pods/web-1/edges", "", 200},
        GoldenCase{"deployment_web", "/namespaces/shop/deployments/web", "", 200},
        GoldenCase{"deployment_web_edges", "/namespaces/shop/deployments/web/edges", "", 200},
        GoldenCase{"namespaces", "/namespaces", "", 200},
        GoldenCase{"namespace_shop", "/namespaces/shop", "", 200},
        GoldenCase{"namespace_shop_edges", "/namespaces/shop/edges", "", 200},
        GoldenCase{"trafficsplit_web-split", "/namespaces/shop/trafficsplits/web-split", "", 200},
        GoldenCase{"trafficsplits_shop", "/namespaces/shop/trafficsplits", "", 200},
        GoldenCase{"error_unsupported_resource", "/services", "", 404},
        GoldenCase{"error_pod_not_found", "/namespaces/shop/pods/nope", "", 404}),
    [](const ::testing::TestParamInfo<GoldenCase>& info) {
      std::string n = info.param.name;
      for (char& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

}  // namespace
}  // namespace smik::api
