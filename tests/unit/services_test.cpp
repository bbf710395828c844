// Services and TrafficSplit (spec.md §1.5, §2.6): what connect() to each
// ClusterIP:port becomes, one small test per behaviour, each built from YAML
// manifests through the real parser and checked down to the kernel form
// (maps::svcValue: cumulative weights, offsets, counts).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/compile/explain.h"
#include "agent/model/parse.h"
#include "maps/desired.h"
#include "maps/maps.h"
#include "tests/unit/state_of.h"

namespace smik::compile {
namespace {

using model::ClusterState;
using model::ObjectRef;
using model::Proto;

#define EXPECT_CONTAINS(haystack, needle)                          \
  do {                                                             \
    const std::string h_ = (haystack);                             \
    EXPECT_NE(h_.find(needle), std::string::npos) << "in: " << h_; \
  } while (0)

// ---- manifests ----------------------------------------------------------------

using smik::testing::stateOf;

// A Service in `ns`. `ip` is a clusterIP ("None" = headless) or, when it
// starts with '[', a clusterIPs list. `selector` is a YAML map; "" leaves the
// selector out. `ports` is a YAML list.
std::string serviceIn(const std::string& ns, const std::string& name, const std::string& ip,
                      const std::string& ports, const std::string& selector,
                      const std::string& extra_spec = "") {
  std::string s = "---\napiVersion: v1\nkind: Service\nmetadata: {name: " + name +
                  ", namespace: " + ns + "}\nspec:\n";
  s += ip.front() == '[' ? "  clusterIPs: " + ip + "\n" : "  clusterIP: " + ip + "\n";
  if (!selector.empty()) s += "  selector: " + selector + "\n";
  s += "  ports: " + ports + "\n";
  if (!extra_spec.empty()) s += "  " + extra_spec + "\n";
  return s;
}

const char* kHttp = "[{name: http, port: 80}]";

// A Service in prod selecting app=<name>.
std::string service(const std::string& name, const std::string& ip,
                    const std::string& ports = kHttp) {
  return serviceIn("prod", name, ip, ports, "{app: " + name + "}");
}

// A pod; `ips` is one IP or, when it starts with '[', a podIPs list of IPs.
std::string podIn(const std::string& ns, const std::string& name, const std::string& app,
                  const std::string& ips, const std::string& extra_spec = "",
                  const std::string& phase = "Running") {
  std::string status = "{phase: " + phase + ", ";
  if (ips.front() == '[') {
    std::string list;
    std::string rest = ips.substr(1, ips.size() - 2);
    size_t start = 0;
    while (start <= rest.size()) {
      size_t comma = rest.find(',', start);
      std::string ip = rest.substr(start, comma == std::string::npos ? std::string::npos
                                                                      : comma - start);
      while (!ip.empty() && ip.front() == ' ') ip.erase(0, 1);
      list += (list.empty() ? "" : ", ") + std::string("{ip: \"") + ip + "\"}";
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    status += "podIPs: [" + list + "]}";
  } else {
    status += "podIP: \"" + ips + "\"}";
  }
  return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: " + ns +
         ", labels: {app: " + app + "}}\nspec: {nodeName: n1" +
         (extra_spec.empty() ? "" : ", " + extra_spec) + "}\nstatus: " + status + "\n";
}

std::string pod(const std::string& name, const std::string& app, const std::string& ips,
                const std::string& extra_spec = "") {
  return podIn("prod", name, app, ips, extra_spec);
}

// A Service `name` (selector app=name, port 80) with one running pod per IP.
std::string app(const std::string& name, const std::string& vip,
                const std::vector<std::string>& pod_ips, const std::string& ports = kHttp) {
  std::string s = service(name, vip, ports);
  for (size_t i = 0; i < pod_ips.size(); i++)
    s += pod(name + "-" + std::to_string(i), name, pod_ips[i]);
  return s;
}

// An EndpointSlice of Service `svc` in prod; `endpoints` and `ports` are YAML lists.
std::string slice(const std::string& name, const std::string& svc, const std::string& type,
                  const std::string& endpoints, const std::string& ports) {
  return "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: " + name +
         ", namespace: prod, labels: {kubernetes.io/service-name: " + svc +
         "}}\naddressType: " + type + "\nendpoints: " + endpoints + "\nports: " + ports + "\n";
}

using Backends = std::vector<std::pair<std::string, std::string>>;  // service, weight

// A TrafficSplit in prod. `meta_extra` is added to metadata ("creationTimestamp: ..."),
// `spec_extra` to spec ("matches: [...]").
std::string split(const std::string& name, const std::string& root, const Backends& backends,
                  const std::string& version = "v1alpha4", const std::string& meta_extra = "",
                  const std::string& spec_extra = "") {
  std::string s = "---\napiVersion: split.smi-spec.io/" + version +
                  "\nkind: TrafficSplit\nmetadata: {name: " + name + ", namespace: prod" +
                  (meta_extra.empty() ? "" : ", " + meta_extra) + "}\nspec:\n  service: " + root +
                  "\n";
  if (!spec_extra.empty()) s += "  " + spec_extra + "\n";
  s += "  backends:\n";
  for (const auto& [svc, w] : backends) s += "  - {service: " + svc + ", weight: " + w + "}\n";
  if (backends.empty()) s = s.substr(0, s.size() - 1) + " []\n";
  return s;
}

NodeConfig node() {
  NodeConfig n;
  n.node_name = "n1";
  return n;
}

Plan compiled(const std::string& yaml) { return compile(stateOf(yaml), node()); }

// ---- plan views ---------------------------------------------------------------

std::vector<ServiceTable> tablesFor(const Plan& p, const std::string& svc, uint16_t port,
                                    Proto proto = Proto::kTcp) {
  std::vector<ServiceTable> out;
  for (const auto& [k, t] : p.services) {
    EXPECT_EQ(k.port, t.port);
    EXPECT_EQ(k.proto, static_cast<uint8_t>(t.proto));
    EXPECT_EQ(k.family, t.vip.family);
    if (t.service == svc && t.port == port && t.proto == proto) out.push_back(t);
  }
  return out;
}

// The one table of svc:port/proto (fails the test when there is not exactly one).
ServiceTable tableOf(const Plan& p, const std::string& svc, uint16_t port,
                     Proto proto = Proto::kTcp) {
  auto ts = tablesFor(p, svc, port, proto);
  EXPECT_EQ(ts.size(), 1u) << "tables of " << svc << " " << port;
  return ts.empty() ? ServiceTable{} : ts.front();
}

std::vector<std::string> groupServices(const ServiceTable& t) {
  std::vector<std::string> out;
  for (const auto& g : t.groups) out.push_back(g.service);
  return out;
}

std::set<std::string> addrsOf(const ServiceGroup& g) {
  std::set<std::string> out;
  for (const auto& e : g.endpoints) out.insert(e.addr.str() + ":" + std::to_string(e.port));
  return out;
}

std::set<std::string> allAddrs(const ServiceTable& t) {
  std::set<std::string> out;
  for (const auto& g : t.groups)
    for (const auto& a : addrsOf(g)) out.insert(a);
  return out;
}

// Probability of each endpoint ("ip:port") as the kernel's pick() computes it
// from the smik_svc_value: group g for r < cum[g] (r uniform in [0, total)),
// then one of its count[g] endpoints from offset[g] uniformly.
std::map<std::string, double> kernelProbabilities(const ServiceTable& t) {
  const maps::SvcTable kt = maps::svcTable(t);
  const smik_svc_value v = maps::svcValue(kt, 0);
  std::vector<smik_backend> flat;
  for (const auto& g : kt.groups) flat.insert(flat.end(), g.endpoints.begin(), g.endpoints.end());
  std::map<std::string, double> out;
  if (v.total == 0) return out;
  uint32_t prev = 0;
  for (int g = 0; g < v.ngroups; g++) {
    const double share = double(v.cum[g] - prev) / v.total;
    prev = v.cum[g];
    EXPECT_GT(v.count[g], 0);
    for (int i = 0; i < v.count[g]; i++) {
      EXPECT_LT(size_t(v.offset[g] + i), flat.size());
      if (size_t(v.offset[g] + i) >= flat.size()) continue;
      const smik_backend& b = flat[v.offset[g] + i];
      Addr a;
      a.family = b.family;
      std::memcpy(a.bytes.data(), b.addr, 16);
      out[a.str() + ":" + std::to_string(b.port)] += share / v.count[g];
    }
  }
  return out;
}

// Share of each group's Service as the kernel's cumulative weights give it.
std::map<std::string, double> kernelShares(const ServiceTable& t) {
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  std::map<std::string, double> out;
  uint32_t prev = 0;
  for (int g = 0; g < v.ngroups; g++) {
    out[t.groups[g].service] += v.total ? double(v.cum[g] - prev) / v.total : 0;
    prev = v.cum[g];
  }
  return out;
}

std::vector<std::string> diagnosticsFor(const Plan& p, const ObjectRef& ref) {
  std::vector<std::string> out;
  for (const auto& d : p.diagnostics)
    if (d.object == ref) out.push_back(d.message);
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

ObjectRef splitRef(const std::string& name) { return {"TrafficSplit", "prod", name}; }

// Root "web" (10.96.0.1, two pods) and backends v1 (one pod), v2 (three pods).
std::string canary() {
  return app("web", "10.96.0.1", {"10.0.0.1", "10.0.0.2"}) +
         app("web-v1", "10.96.0.11", {"10.0.1.1"}) +
         app("web-v2", "10.96.0.12", {"10.0.2.1", "10.0.2.2", "10.0.2.3"});
}

// ---- slot tables ----------------------------------------------------------------

TEST(ServiceSlots, WeightsBecomeCumulativeSlots) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "80"}, {"web-v2", "20"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1", "prod/web-v2"}));
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.svc_id, t.svc_id);
  ASSERT_EQ(v.ngroups, 2);
  EXPECT_EQ(v.cum[0], 80u);
  EXPECT_EQ(v.cum[1], 100u);
  EXPECT_EQ(v.total, 100u);
}

TEST(ServiceSlots, LargeRelativeWeightsAreKeptExactly) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "1000"}, {"web-v2", "500"}}));
  const smik_svc_value v = maps::svcValue(maps::svcTable(tableOf(p, "prod/web", 80)), 0);
  ASSERT_EQ(v.ngroups, 2);
  EXPECT_EQ(v.cum[0], 1000u);
  EXPECT_EQ(v.cum[1], 1500u);
  EXPECT_EQ(v.total, 1500u);
}

TEST(ServiceSlots, EndpointProbabilityIsGroupShareOverItsEndpoints) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "80"}, {"web-v2", "20"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  ASSERT_EQ(v.ngroups, 2);
  EXPECT_EQ(v.offset[0], 0);
  EXPECT_EQ(v.count[0], 1);
  EXPECT_EQ(v.offset[1], 1);
  EXPECT_EQ(v.count[1], 3);
  const auto prob = kernelProbabilities(t);
  ASSERT_EQ(prob.size(), 4u);
  EXPECT_DOUBLE_EQ(prob.at("10.0.1.1:80"), 0.8);
  for (const char* a : {"10.0.2.1:80", "10.0.2.2:80", "10.0.2.3:80"})
    EXPECT_DOUBLE_EQ(prob.at(a), 0.2 / 3) << a;
  // The root's own pods get nothing while the split is in force.
  EXPECT_EQ(prob.count("10.0.0.1:80"), 0u);
}

TEST(ServiceSlots, PerServiceNotPerPod) {
  // smi-spec #39: equal weights, 1 vs 3 pods: each Service gets half.
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web-v1", "1"}, {"web-v2", "1"}}));
  const auto shares = kernelShares(tableOf(p, "prod/web", 80));
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v1"), 0.5);
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v2"), 0.5);
}

TEST(ServiceSlots, ZeroWeightBackendIsAbsent) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "100"},
                                                                {"web-v2", "0"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1"}));
  const auto prob = kernelProbabilities(t);
  EXPECT_EQ(prob, (std::map<std::string, double>{{"10.0.1.1:80", 1.0}}));
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.ngroups, 1);
  EXPECT_EQ(v.total, 100u);
}

TEST(ServiceSlots, ZeroWeightBackendMayNotExistYet) {
  // The spec's workflow: foobar-v2 is created with weight 0 before its Service.
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "100"},
                                                                {"web-v3", "0"}}));
  EXPECT_EQ(groupServices(tableOf(p, "prod/web", 80)),
            (std::vector<std::string>{"prod/web-v1"}));
}

TEST(ServiceSlots, RelativeWeightsGiveTheSameShares) {
  const Plan a =
      compiled(canary() + split("web-split", "web", {{"web-v1", "1000"}, {"web-v2", "500"}}));
  const Plan b =
      compiled(canary() + split("web-split", "web", {{"web-v1", "2"}, {"web-v2", "1"}}));
  const auto pa = kernelProbabilities(tableOf(a, "prod/web", 80));
  const auto pb = kernelProbabilities(tableOf(b, "prod/web", 80));
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& [addr, prob] : pa) EXPECT_DOUBLE_EQ(prob, pb.at(addr)) << addr;
  EXPECT_DOUBLE_EQ(kernelShares(tableOf(a, "prod/web", 80)).at("prod/web-v1"), 2.0 / 3);
}

// Shares of web-v1/web-v2 for weights w1/w2, and the table's raw group weights.
std::pair<std::map<std::string, double>, std::vector<uint32_t>> hugeSplit(const std::string& w1,
                                                                         const std::string& w2) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", w1}, {"web-v2", w2}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  std::vector<uint32_t> weights;
  uint64_t sum = 0;
  for (const auto& g : t.groups) {
    weights.push_back(g.weight);
    sum += g.weight;
  }
  EXPECT_LE(sum, uint64_t{UINT32_MAX}) << "cumulative weights would wrap in 32 bits";
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(uint64_t{v.total}, sum);
  return {kernelShares(t), weights};
}

TEST(ServiceSlots, HugeWeightsNeverRoundANonZeroWeightToZero) {
  const auto [shares, weights] = hugeSplit("4000000000", "1");
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_GT(weights[0], 0u);
  EXPECT_GT(weights[1], 0u);
  EXPECT_GT(shares.at("prod/web-v2"), 0.0);
}

// BUG (agent/compile/services.cpp, applySplit, the scaling line
// `w = std::max<int64_t>(1, w * ((int64_t{1} << 31) / sum))`): whenever the
// weights sum over 2^31, `(1 << 31) / sum` is integer division and is 0, so
// every weight becomes max(1, 0) = 1: weights 3000000000/1000000000 give
// 50%/50% instead of 75%/25%.
TEST(ServiceSlots, HugeWeightsKeepTheirRatio) {
  const auto [shares, weights] = hugeSplit("3000000000", "1000000000");
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_NEAR(shares.at("prod/web-v1"), 0.75, 0.0075);
  EXPECT_NEAR(shares.at("prod/web-v2"), 0.25, 0.0025);
  EXPECT_LE(uint64_t{weights[0]} + weights[1], uint64_t{1} << 31);
}

// BUG (agent/compile/services.cpp, applySplit, `int64_t sum += w`): weights are
// int64 (parseWeight accepts up to INT64_MAX), and the sum is not guarded, so
// 8000000000000000000 + 4000000000000000000 overflows int64 (undefined
// behaviour; in practice it wraps negative, skips scaling and each weight is
// truncated by static_cast<uint32_t>), giving an arbitrary ratio instead of 2:1.
TEST(ServiceSlots, WeightsWhoseSumOverflowsInt64KeepTheirRatio) {
  const auto [shares, weights] = hugeSplit("8000000000000000000", "4000000000000000000");
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_NEAR(shares.at("prod/web-v1"), 2.0 / 3, 0.01 * 2 / 3);
  EXPECT_NEAR(shares.at("prod/web-v2"), 1.0 / 3, 0.01 / 3);
}

TEST(ServiceSlots, WeightsSummingTo2Pow31AreKept) {
  const auto [shares, weights] = hugeSplit("1073741824", "1073741824");
  EXPECT_EQ(weights, (std::vector<uint32_t>{1u << 30, 1u << 30}));
  EXPECT_DOUBLE_EQ(shares.at("prod/web-v1"), 0.5);
}

// Root web plus `n` backends b0..b<n-1>, each with one pod and weight 1;
// `missing` names one more backend whose Service does not exist.
std::string manyBackends(int n, const std::string& missing = "") {
  std::string y = app("web", "10.96.0.1", {"10.0.0.1"});
  Backends backends;
  for (int i = 0; i < n; i++) {
    const std::string name = "b" + std::to_string(i);
    y += app(name, "10.96.1." + std::to_string(i + 1), {"10.1.0." + std::to_string(i + 1)});
    backends.push_back({name, "1"});
  }
  if (!missing.empty()) backends.insert(backends.begin(), {missing, "5"});
  return y + split("many", "web", backends);
}

TEST(ServiceSlots, MoreThanMaxGroupsBackendsAreCappedWithDiagnostic) {
  const Plan p = compiled(manyBackends(SMIK_MAX_GROUPS + 1));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  ASSERT_EQ(t.groups.size(), size_t{SMIK_MAX_GROUPS});
  EXPECT_EQ(t.groups.front().service, "prod/b0");  // the first ones, in backend order
  EXPECT_EQ(t.groups.back().service, "prod/b" + std::to_string(SMIK_MAX_GROUPS - 1));
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  EXPECT_EQ(v.ngroups, SMIK_MAX_GROUPS);
  EXPECT_EQ(v.total, uint32_t{SMIK_MAX_GROUPS});
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("many"))),
                  "more than " + std::to_string(SMIK_MAX_GROUPS));
}

TEST(ServiceSlots, CapCountsOnlyUsableBackends) {
  // 17 backends of which one does not exist: 16 usable, nothing capped.
  const Plan p = compiled(manyBackends(SMIK_MAX_GROUPS, "ghost"));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.groups.size(), size_t{SMIK_MAX_GROUPS});
  const std::string d = joined(diagnosticsFor(p, splitRef("many")));
  EXPECT_EQ(d.find("more than"), std::string::npos) << d;
  EXPECT_CONTAINS(d, "ghost");
}

TEST(ServiceSlots, ExactlyMaxGroupsBackendsIsNotCapped) {
  const Plan p = compiled(manyBackends(SMIK_MAX_GROUPS));
  EXPECT_EQ(tableOf(p, "prod/web", 80).groups.size(), size_t{SMIK_MAX_GROUPS});
  EXPECT_TRUE(diagnosticsFor(p, splitRef("many")).empty())
      << joined(diagnosticsFor(p, splitRef("many")));
}

// ---- fallbacks ------------------------------------------------------------------

TEST(ServiceFallback, AllWeightsZeroServesRootEndpoints) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "0"}, {"web-v2", "0"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("web-split"))), "all weights zero");
}

TEST(ServiceFallback, EmptyBackendListServesRootEndpoints) {
  const Plan p = compiled(canary() + split("web-split", "web", {}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
}

TEST(ServiceFallback, AllBackendsSkippedServesRootWithOneDiagnosticEach) {
  const std::string y =
      app("web", "10.96.0.1", {"10.0.0.1"}) +
      app("wrongport", "10.96.0.21", {"10.0.3.1"}, "[{name: http, port: 8080}]") +
      service("noready", "10.96.0.22") +  // selects no pod
      split("web-split", "web", {{"missing", "1"}, {"wrongport", "1"}, {"noready", "1"}});
  const Plan p = compiled(y);
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80"}));
  const auto d = diagnosticsFor(p, splitRef("web-split"));
  auto naming = [&](const std::string& what) {
    int n = 0;
    for (const auto& m : d) n += m.find(what) != std::string::npos;
    return n;
  };
  EXPECT_EQ(naming("missing"), 1) << joined(d);
  EXPECT_EQ(naming("wrongport"), 1) << joined(d);
  EXPECT_EQ(naming("noready"), 1) << joined(d);
  EXPECT_EQ(naming("root Service's own endpoints"), 1) << joined(d);
  EXPECT_CONTAINS(joined(d), "does not exist");
  EXPECT_CONTAINS(joined(d), "has no port 80");
  EXPECT_CONTAINS(joined(d), "no ready endpoint");
}

TEST(ServiceFallback, SkippedBackendLeavesTheOthers) {
  const Plan p = compiled(canary() + split("web-split", "web", {{"web-v1", "3"},
                                                                {"ghost", "1"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_DOUBLE_EQ(kernelShares(t).at("prod/web-v1"), 1.0);
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("web-split"))), "ghost");
}

TEST(ServiceFallback, BackendWithoutRootPortIsSkippedForThatPortOnly) {
  const char* both = "[{name: http, port: 80}, {name: https, port: 443}]";
  const std::string y = app("web", "10.96.0.1", {"10.0.0.1"}, both) +
                        app("web-v1", "10.96.0.11", {"10.0.1.1"}, both) +
                        app("web-v2", "10.96.0.12", {"10.0.2.1"}) +  // port 80 only
                        split("web-split", "web", {{"web-v1", "1"}, {"web-v2", "1"}});
  const Plan p = compiled(y);
  const ServiceTable t80 = tableOf(p, "prod/web", 80);
  EXPECT_EQ(groupServices(t80), (std::vector<std::string>{"prod/web-v1", "prod/web-v2"}));
  const ServiceTable t443 = tableOf(p, "prod/web", 443);
  EXPECT_EQ(t443.split, "prod/web-split");
  EXPECT_EQ(groupServices(t443), (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_EQ(allAddrs(t443), (std::set<std::string>{"10.0.1.1:443"}));
  const auto d = diagnosticsFor(p, splitRef("web-split"));
  ASSERT_EQ(d.size(), 1u) << joined(d);
  EXPECT_CONTAINS(d[0], "web-v2");
  EXPECT_CONTAINS(d[0], "443");
}

TEST(ServiceFallback, BackendPortMatchesByNumberAndProtocol) {
  // A backend with 80/UDP only does not serve the root's 80/TCP.
  const std::string y = app("web", "10.96.0.1", {"10.0.0.1"}) +
                        app("web-v1", "10.96.0.11", {"10.0.1.1"}) +
                        app("web-udp", "10.96.0.13", {"10.0.4.1"},
                            "[{name: other, port: 80, protocol: UDP}]") +
                        split("web-split", "web", {{"web-v1", "1"}, {"web-udp", "1"}});
  const Plan p = compiled(y);
  EXPECT_EQ(groupServices(tableOf(p, "prod/web", 80)),
            (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("web-split"))), "web-udp");
}

TEST(ServiceFallback, BackendMapsPortToItsOwnTargetPort) {
  const std::string y = serviceIn("prod", "web", "10.96.0.1", "[{port: 80, targetPort: 8080}]",
                                  "{app: web}") +
                        pod("web-0", "web", "10.0.0.1") +
                        serviceIn("prod", "green", "10.96.0.11", "[{port: 80, targetPort: 8081}]",
                                  "{app: green}") +
                        pod("green-0", "green", "10.0.1.1") +
                        split("web-split", "web", {{"green", "1"}});
  const ServiceTable t = tableOf(compiled(y), "prod/web", 80);
  EXPECT_EQ(allAddrs(t), (std::set<std::string>{"10.0.1.1:8081"}));
}

TEST(ServiceFallback, RootAsBackendUsesRootEndpointsWithoutRecursion) {
  const Plan p =
      compiled(canary() + split("web-split", "web", {{"web", "900"}, {"web-v1", "100"}}));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/web-split");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web", "prod/web-v1"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  const auto prob = kernelProbabilities(t);
  EXPECT_DOUBLE_EQ(prob.at("10.0.0.1:80"), 0.45);
  EXPECT_DOUBLE_EQ(prob.at("10.0.0.2:80"), 0.45);
  EXPECT_DOUBLE_EQ(prob.at("10.0.1.1:80"), 0.1);
}

TEST(ServiceFallback, BackendThatIsAnotherSplitsRootIsNotResolvedRecursively) {
  const std::string y = canary() + app("web-v1-next", "10.96.0.31", {"10.0.5.1"}) +
                        split("outer", "web", {{"web-v1", "1"}}) +
                        split("inner", "web-v1", {{"web-v1-next", "1"}});
  const Plan p = compiled(y);
  const ServiceTable outer = tableOf(p, "prod/web", 80);
  EXPECT_EQ(outer.split, "prod/outer");
  ASSERT_EQ(groupServices(outer), (std::vector<std::string>{"prod/web-v1"}));
  EXPECT_EQ(allAddrs(outer), (std::set<std::string>{"10.0.1.1:80"}));
  // The inner split still governs connections to web-v1's own ClusterIP.
  const ServiceTable inner = tableOf(p, "prod/web-v1", 80);
  EXPECT_EQ(inner.split, "prod/inner");
  EXPECT_EQ(allAddrs(inner), (std::set<std::string>{"10.0.5.1:80"}));
}

TEST(ServiceFallback, SplitWithMatchesIsNotAppliedAtL4) {
  const Plan p = compiled(canary() + split("ab-test", "web", {{"web-v1", "0"}, {"web-v2", "100"}},
                                           "v1alpha4", "",
                                           "matches: [{kind: HTTPRouteGroup, name: ab-test}]"));
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "");
  ASSERT_EQ(groupServices(t), (std::vector<std::string>{"prod/web"}));
  EXPECT_EQ(addrsOf(t.groups[0]), (std::set<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("ab-test"))), "not applied");
}

TEST(ServiceFallback, OldestSplitOwnsTheRoot) {
  const std::string y =
      canary() +
      split("a-newer", "web", {{"web-v2", "1"}}, "v1alpha4",
            "creationTimestamp: \"2024-02-01T00:00:00Z\"") +
      split("z-older", "web", {{"web-v1", "1"}}, "v1alpha4",
            "creationTimestamp: \"2024-01-01T00:00:00Z\"");
  const Plan p = compiled(y);
  const ServiceTable t = tableOf(p, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/z-older");
  EXPECT_EQ(groupServices(t), (std::vector<std::string>{"prod/web-v1"}));
  const auto loser = diagnosticsFor(p, splitRef("a-newer"));
  ASSERT_EQ(loser.size(), 1u) << joined(loser);
  EXPECT_CONTAINS(loser[0], "z-older");
  EXPECT_TRUE(diagnosticsFor(p, splitRef("z-older")).empty());
}

TEST(ServiceFallback, SameAgeSplitsAreOrderedByName) {
  const std::string ts = "creationTimestamp: \"2024-01-01T00:00:00Z\"";
  const Plan p = compiled(canary() + split("beta", "web", {{"web-v2", "1"}}, "v1alpha4", ts) +
                          split("alpha", "web", {{"web-v1", "1"}}, "v1alpha4", ts));
  EXPECT_EQ(tableOf(p, "prod/web", 80).split, "prod/alpha");
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("beta"))), "ignored");
  EXPECT_TRUE(diagnosticsFor(p, splitRef("alpha")).empty());
}

TEST(ServiceFallback, SplitOfMissingRootIsDiagnosed) {
  const Plan p = compiled(canary() + split("orphan", "nothere", {{"web-v1", "1"}}));
  EXPECT_CONTAINS(joined(diagnosticsFor(p, splitRef("orphan"))), "does not exist");
  // And nothing else is split by it.
  for (const auto& [k, t] : p.services) EXPECT_EQ(t.split, "") << t.service;
}

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
  EXPECT_CONTAINS(all, "ghost");
  EXPECT_CONTAINS(all, "web-split");
  EXPECT_CONTAINS(all, "late");
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
  EXPECT_CONTAINS(err, "prod/nope");
  EXPECT_TRUE(out.empty());
}

TEST(ServiceExplain, UnknownPortIsAnError) {
  std::vector<ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  EXPECT_FALSE(
      explainService(stateOf(canary()), node(), "prod/web", 81, Proto::kTcp, &out, &notes, &err));
  EXPECT_CONTAINS(err, "81");
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
  const std::string yaml =
      app("web", "10.96.0.10", {"10.0.0.1"}, "[{name: a, port: 80}, {name: b, port: 81}, {name: c, port: 82}]") +
      app("db", "10.96.0.11", {"10.0.0.2"}) + app("cache", "10.96.0.12", {"10.0.0.3"});
  NodeConfig n = node();
  n.capacity.services = 3;
  const Plan p = compile(stateOf(yaml), n);
  EXPECT_EQ(servicesOf(p), (std::vector<std::string>{"prod/cache", "prod/db"}));
  ASSERT_EQ(p.over_capacity.size(), 1u);
  EXPECT_EQ(p.over_capacity[0].object, (ObjectRef{"Service", "prod", "web"}));
  EXPECT_EQ(p.over_capacity[0].map, "smik_services");
  EXPECT_EQ(p.over_capacity[0].entries, 3u);
  EXPECT_CONTAINS(p.over_capacity[0].message,
                  "rejected: the services map holds 3 service ports and the Services need 5");
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
  EXPECT_CONTAINS(p.over_capacity[0].message, "connect() to it is not translated");
  std::vector<ServiceExplanation> tables;
  std::vector<std::string> notes;
  std::string err;
  EXPECT_FALSE(explainService(stateOf(yaml), n, "prod/web", 80, Proto::kTcp, &tables, &notes, &err));
  EXPECT_CONTAINS(err, "Service prod/web: rejected: the backends map takes 4 endpoints");
}

TEST(ServiceCapacity, DefaultBackendsLimitIsHalfTheMap) {
  EXPECT_EQ(Capacity{}.backends * 2, size_t{SMIK_MAX_BACKENDS});
  EXPECT_EQ(Capacity{}.services, size_t{SMIK_MAX_SERVICES});
}

}  // namespace
}  // namespace smik::compile
