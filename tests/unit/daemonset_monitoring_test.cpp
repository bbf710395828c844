// Offline checks of the monitoring that ships with the cluster install: the
// Grafana dashboard names only metrics the agent's /metrics really serves
// (taken from the exporter itself, so renaming a metric fails here), and the
// PodMonitor and the prometheus.io/* annotations scrape the port and path
// the agent serves them on.
#include <gtest/gtest.h>
#include <httplib.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "agent/telemetry/store.h"
#include "api/http/http_server.h"

#include "tests/unit/daemonset_checks.h"
#include "tests/unit/daemonset_support.h"

namespace daemonset_test {
namespace {

const fs::path kDashboard = kInstall / "grafana" / "smik-dashboard.json";
const fs::path kChartDashboard = kChart / "dashboards" / "smik-dashboard.json";

// What the agent's --http listener answers a remote client (Prometheus) at
// `path`, from the real route table and exporter; "" when it serves no such
// path to other hosts.
std::string servedAt(const std::string& path) {
  const smik::api::Route* r = agentRoutes().find(path);
  if (!r || r->local_only) return "";
  httplib::Request req;
  httplib::Response res;
  r->handler(smik::api::RoutedRequest{req, path, /*local_client=*/false}, res);
  return res.body;
}

// Every series name a scrape of /metrics can hold, from its "# TYPE" lines
// (present even when a family has no samples yet): a histogram's are its
// _bucket, _sum and _count.
std::set<std::string> exportedSeries() {
  std::set<std::string> out;
  static const std::regex type(R"re(^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) (\w+)$)re");
  std::stringstream text(servedAt("/metrics"));
  std::string line;
  std::smatch m;
  while (std::getline(text, line)) {
    if (!std::regex_match(line, m, type)) continue;
    const std::string name = m[1], kind = m[2];
    if (kind == "histogram" || kind == "summary") {
      out.insert(name + "_sum");
      out.insert(name + "_count");
    }
    if (kind == "histogram")
      out.insert(name + "_bucket");
    else
      out.insert(name);
  }
  return out;
}

// The metric names a PromQL expression selects. Strings, label matchers,
// range selectors and by/on/... label lists hold label names, values and
// durations, never metrics, so they go first; what is left is functions
// (a name before "("), keywords, numbers and the metric names.
std::set<std::string> metricNamesIn(std::string e) {
  static const std::regex strings(R"re("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)re");
  static const std::regex matchers(R"re(\{[^}]*\})re");
  static const std::regex ranges(R"re(\[[^\]]*\])re");
  static const std::regex labelLists(
      R"re(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))re");
  static const std::regex ident(R"re((^|[^A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*))re");
  static const std::set<std::string> keywords = {
      "and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
      "group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"};
  e = std::regex_replace(e, strings, "\"\"");
  e = std::regex_replace(e, matchers, " ");
  e = std::regex_replace(e, ranges, " ");
  e = std::regex_replace(e, labelLists, " ");
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(e.begin(), e.end(), ident); it != std::sregex_iterator();
       ++it) {
    // A name before "(" is a function or aggregation. Looked at, not matched:
    // the "(" may be the boundary the next name starts after.
    size_t next = it->position(2) + it->length(2);
    while (next < e.size() && std::isspace(static_cast<unsigned char>(e[next]))) ++next;
    if (next < e.size() && e[next] == '(') continue;
    const std::string name = (*it)[2];
    if (!keywords.count(name)) out.insert(name);
  }
  return out;
}

// Every PromQL expression of a dashboard: panel targets (rows and nested
// panels included) and the metric inside a variable's label_values(...).
void collectExpressions(const nlohmann::json& j, std::vector<std::string>* out) {
  static const std::regex labelValues(R"re(^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$)re");
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      if (key == "expr" && value.is_string()) out->push_back(value.get<std::string>());
      // A variable's query is a string, or (newer Grafana) an object whose
      // "query" string the recursion below reaches.
      if (key == "query" && value.is_string()) {
        std::smatch m;
        const std::string q = value.get<std::string>();
        if (std::regex_match(q, m, labelValues)) out->push_back(m[1]);
      }
      collectExpressions(value, out);
    }
  } else if (j.is_array()) {
    for (const auto& v : j) collectExpressions(v, out);
  }
}

// "expression: name" for every name the dashboard uses that `exported` lacks.
std::vector<std::string> unknownMetrics(const std::string& dashboard,
                                        const std::set<std::string>& exported,
                                        std::set<std::string>* used = nullptr) {
  std::vector<std::string> exprs;
  collectExpressions(nlohmann::json::parse(dashboard), &exprs);
  std::vector<std::string> out;
  for (const auto& e : exprs) {
    const auto names = metricNamesIn(e);
    if (names.empty()) out.push_back(e + ": names no metric");
    for (const auto& n : names) {
      if (used) used->insert(n);
      if (!exported.count(n)) out.push_back(e + ": " + n);
    }
  }
  return out;
}

TEST(DaemonsetMonitoring, PromqlMetricNamesAreFoundInEveryForm) {
  EXPECT_EQ(metricNamesIn("histogram_quantile(0.99, sum by (le, workload) "
                          "(rate(a_bucket{x=\"{y}\", z=~\"$v\"}[$__rate_interval])))"),
            (std::set<std::string>{"a_bucket"}));
  EXPECT_EQ(metricNamesIn("max by (map) (b / on (map) group_left(node) c) and on (i) d "
                          "offset 5m > 1e3"),
            (std::set<std::string>{"b", "c", "d"}));
  EXPECT_EQ(metricNamesIn("sum(rate(e[1m])) without (pod) / ignoring(x) f:recorded"),
            (std::set<std::string>{"e", "f:recorded"}));
  EXPECT_TRUE(metricNamesIn("vector(1)").empty());
  std::vector<std::string> exprs;
  collectExpressions(nlohmann::json::parse(R"json({"panels": [{"panels": [{"targets": [
      {"expr": "g"}]}]}], "templating": {"list": [
      {"query": {"query": "label_values(h{a=\"b\"}, instance)"}},
      {"query": "label_values(i, pod)"}, {"query": "prometheus"}]}})json"),
                     &exprs);
  EXPECT_EQ(exprs, (std::vector<std::string>{"g", "h{a=\"b\"}", "i"}));
}

// The exporter's names come from the code that serves /metrics: a metric
// renamed there and not in the dashboard fails this test.
TEST(DaemonsetMonitoring, DashboardNamesOnlyMetricsTheAgentExports) {
  const std::set<std::string> exported = exportedSeries();
  for (const char* n : {"smik_ready", "smik_packets_total", "smik_tcp_handshake_seconds_bucket",
                        "process_resident_memory_bytes"})
    ASSERT_TRUE(exported.count(n)) << n << " not in /metrics:\n" << servedAt("/metrics");
  std::set<std::string> used;
  for (const auto& bad : unknownMetrics(readFile(kDashboard), exported, &used))
    ADD_FAILURE() << kDashboard.filename() << ": not a metric smik exports: " << bad;
  // What issue 14 asks the dashboard to show, each by the metric that has it.
  for (const char* n : {
           "smik_tcp_connections_total",         // connections and denials per edge
           "smik_tcp_handshake_seconds_bucket",  // handshake latency
           "smik_packets_total",                 // verdict counters
           "smik_policy_apply_duration_seconds",  // apply duration
           "smik_map_entries", "smik_map_max_entries",  // map fill
           "process_resident_memory_bytes",             // agent memory
           "smik_http_requests_total",                  // the HTTP judge's verdicts
       })
    EXPECT_TRUE(used.count(n)) << "the dashboard does not show " << n;
}

// The check above can fail: a metric renamed on either side is reported, and
// only that one.
TEST(DaemonsetMonitoring, ARenamedMetricIsReported) {
  const std::string dashboard = readFile(kDashboard);
  std::set<std::string> exported = exportedSeries();
  ASSERT_TRUE(unknownMetrics(dashboard, exported).empty());

  std::set<std::string> renamed = exported;
  renamed.erase("smik_policy_apply_duration_seconds");
  renamed.insert("smik_policy_apply_seconds");
  auto bad = unknownMetrics(dashboard, renamed);
  ASSERT_FALSE(bad.empty());
  for (const auto& b : bad)
    EXPECT_NE(b.find(": smik_policy_apply_duration_seconds"), std::string::npos) << b;

  std::string edited = dashboard;
  const std::string from = "smik_map_max_entries";
  const size_t at = edited.find(from);
  ASSERT_NE(at, std::string::npos);
  edited.replace(at, from.size(), "smik_map_capacity");
  bad = unknownMetrics(edited, exported);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find(": smik_map_capacity"), std::string::npos) << bad[0];
}

TEST(DaemonsetMonitoring, DashboardIsWellFormed) {
  auto d = nlohmann::json::parse(readFile(kDashboard));
  EXPECT_EQ(d["uid"], "smik-agent");
  std::set<int> ids;
  size_t targets = 0;
  for (const auto& p : d["panels"]) {
    EXPECT_TRUE(ids.insert(p["id"].get<int>()).second) << "panel id " << p["id"] << " twice";
    if (p["type"] == "row") continue;
    // One data source for all, chosen by the variable: the sidecar imports
    // the JSON as is, with no __inputs to map.
    EXPECT_EQ(p["datasource"]["uid"], "${datasource}") << p["title"];
    for (const auto& t : p["targets"]) {
      ++targets;
      EXPECT_EQ(t["datasource"]["uid"], "${datasource}") << p["title"];
    }
  }
  EXPECT_GE(targets, 20u);
}

// Helm reads the dashboard from inside the chart; that copy must not drift
// from the one daemonset/grafana ships for importing by hand.
TEST(DaemonsetMonitoring, ChartDashboardIsTheInstallOne) {
  EXPECT_TRUE(readFile(kChartDashboard) == readFile(kDashboard))
      << kChartDashboard << " differs from " << kDashboard << ": copy it over";
}

// The agent's own memory and CPU are read, not placeholders: this test
// process has some megabytes resident and has spent CPU building the above.
TEST(DaemonsetMonitoring, ProcessMetricsAreThisProcesss) {
  std::string text = servedAt("/metrics");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"re(\nprocess_resident_memory_bytes (\d+)\n)re")))
      << text;
  const double rss = std::stod(m[1]);
  EXPECT_GT(rss, 1 << 20);
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"re(\nprocess_virtual_memory_bytes (\d+)\n)re")));
  EXPECT_GE(std::stod(m[1]), rss);
  // Enough CPU to show in the counter's hundredths of a second (clock() is
  // this process's CPU time).
  const std::clock_t start = std::clock();
  while (std::clock() < start + CLOCKS_PER_SEC / 20) {
  }
  text = servedAt("/metrics");
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"re(\nprocess_cpu_seconds_total ([0-9.]+)\n)re")));
  EXPECT_GT(std::stod(m[1]), 0);
}

// ---- the PodMonitor and the annotations ---------------------------------------

// PodMonitor smik-agent scrapes what the DaemonSet serves: the container port
// of --http, by name, at the path of the prometheus.io/path annotation, where
// the agent answers every client with its Prometheus text.
void checkPodMonitor(const Docs& docs, const std::string& ns) {
  Y pm = find(docs, "PodMonitor", "smik-agent");
  ASSERT_TRUE(pm) << "no PodMonitor smik-agent";
  EXPECT_EQ(str(pm["apiVersion"]), "monitoring.coreos.com/v1");
  EXPECT_EQ(str(pm["metadata"]["namespace"]), ns);
  Y ds = find(docs, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds);
  Y tmpl = ds["spec"]["template"];
  ASSERT_FALSE(pm["spec"]["selector"]["matchLabels"].entries().empty());
  for (const auto& [key, value] : pm["spec"]["selector"]["matchLabels"].entries())
    EXPECT_EQ(str(tmpl["metadata"]["labels"][key]), str(value)) << "selector misses the agents";
  Y agent = byName(tmpl["spec"]["containers"], "agent");
  auto args = parseArgs(agent["args"]);
  auto endpoints = pm["spec"]["podMetricsEndpoints"].items();
  ASSERT_EQ(endpoints.size(), 1u);
  Y ep = endpoints[0];
  Y port = byName(agent["ports"], str(ep["port"]));
  ASSERT_TRUE(port) << "the agent container has no port named " << str(ep["port"]);
  EXPECT_EQ(port["containerPort"].num(-1), portOf(args["--http"]));
  Y annotations = tmpl["metadata"]["annotations"];
  EXPECT_EQ(str(annotations["prometheus.io/scrape"]), "true");
  EXPECT_EQ(str(ep["path"]), str(annotations["prometheus.io/path"]));
  EXPECT_EQ(annotations["prometheus.io/port"].num(-1), port["containerPort"].num(-2));
  EXPECT_NE(servedAt(str(ep["path"])).find("# TYPE smik_ready gauge"), std::string::npos)
      << "the agent serves no Prometheus text to other hosts at " << str(ep["path"]);
  // The edge series' own namespace label must survive the operator's target
  // label of the same name, or every per-edge panel comes out empty.
  EXPECT_EQ(str(ep["honorLabels"]), "true");
}

TEST(DaemonsetMonitoring, PodMonitorScrapesTheAgentsMetricsPort) {
  Docs docs = plainInstall();
  for (auto& d : loadFile(kInstall / "podmonitor.yaml")) docs.push_back(d);
  checkPodMonitor(docs, kNs);
  // Not a path the agent serves only to loopback clients, nor one it lacks.
  EXPECT_EQ(servedAt("/status"), "");
  EXPECT_EQ(servedAt("/no-such-path"), "");
}

TEST(DaemonsetMonitoring, HelmInstallsMonitoringOnlyWhenAsked) {
  Y values(YAML::LoadFile((kChart / "values.yaml").string()));
  EXPECT_EQ(str(values["monitoring"]["podMonitor"]["enabled"]), "false");
  EXPECT_EQ(str(values["monitoring"]["grafanaDashboard"]["enabled"]), "false");
  EXPECT_EQ(str(values["monitoring"]["grafanaDashboard"]["labels"]["grafana_dashboard"]), "1");
  if (!onPath("helm")) GTEST_SKIP() << "helm not on PATH";
  Ran off = helmTemplate("");
  ASSERT_EQ(off.status, 0) << off.err;
  Docs plain = loadDocs(off.out);
  EXPECT_FALSE(find(plain, "PodMonitor", "smik-agent"));
  EXPECT_FALSE(find(plain, "ConfigMap", "smik-grafana-dashboard"));
  Ran on = helmTemplate(
      "--set monitoring.podMonitor.enabled=true --set monitoring.grafanaDashboard.enabled=true");
  ASSERT_EQ(on.status, 0) << on.err;
  Docs docs = loadDocs(on.out);
  checkPodMonitor(docs, kNs);
  Y cm = find(docs, "ConfigMap", "smik-grafana-dashboard");
  ASSERT_TRUE(cm);
  EXPECT_EQ(str(cm["metadata"]["labels"]["grafana_dashboard"]), "1");
  EXPECT_EQ(nlohmann::json::parse(str(cm["data"]["smik-dashboard.json"])),
            nlohmann::json::parse(readFile(kDashboard)));
}

}  // namespace
}  // namespace daemonset_test
