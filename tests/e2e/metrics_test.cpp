// End to end: connection telemetry from the kernel through the SMI
// TrafficMetrics API (see fixture.h), exact to the connection.
#include <nlohmann/json.hpp>

#include "tests/e2e/fixture.h"

namespace smik::e2e {
namespace {

using nlohmann::json;

std::string podWithOwner(const std::string& namesp, const std::string& name, const std::string& sa,
                         const std::string& ip, const std::string& rs, const std::string& hash) {
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + namesp +
         "\n  labels: {pod-template-hash: " + hash + "}\n  ownerReferences:\n"
         "  - {apiVersion: apps/v1, kind: ReplicaSet, name: " + rs + ", uid: x, controller: true}\n"
         "spec:\n  serviceAccountName: " + sa + "\n  nodeName: " + kNode +
         "\nstatus:\n  phase: Running\n  podIP: " + ip + "\n---\n";
}

class Metrics : public E2E {
 protected:
  json get(const std::string& path) {
    auto [code, body] = httpGet(http_port_, "/apis/metrics.smi-spec.io/v1alpha1" + path);
    EXPECT_EQ(code, 200) << path << ": " << body;
    return code == 200 ? json::parse(body) : json();
  }
};

// After a known number of successful, policy-denied and refused connections,
// the API returns exactly those counts on the client's "to" edge and on the
// server's "from" edge, with ordered, plausible latency percentiles.
TEST_F(Metrics, EdgesCountEveryConnectionExactlyOnce) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("pods.yaml", ns("app", true) +
                         podWithOwner("app", "client-6d4b-x1", "client", client.ip(), "client-6d4b",
                                      "6d4b") +
                         // the ReplicaSet object is known here: no need for the hash
                         podWithOwner("app", "server", "server", server.ip(), "web-5f7c", "zzzz") +
                         "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-5f7c\n"
                         "  namespace: app\n  ownerReferences:\n  - {apiVersion: apps/v1, "
                         "kind: Deployment, name: web, uid: y, controller: true}\n---\n");
  write("policy.yaml", tcpRoute("app", "web", "[8080, 9090]") +
                           trafficTarget("app", "tt", "app", "server", rule("TCPRoute", "web"),
                                         "app", "client"));
  startAgent({"--metrics-interval-ms", "200"});
  waitAttached(2);
  Proc srv = serve(server, "8080");  // nothing listens on 9090: refused

  auto run = [&](int port, int n) {
    return bed_->run(client, {SMIK_TESTPEER, "tcp", server.ip(), std::to_string(port), "--count",
                              std::to_string(n), "--timeout-ms", "300"},
                     30000)
        .output;
  };
  std::string ok = run(8080, 5), refused = run(9090, 3), denied = run(7070, 4);
  ASSERT_EQ(std::count(ok.begin(), ok.end(), 'k'), 5) << ok;  // "ok server" x5
  ASSERT_NE(refused.find("refused"), std::string::npos) << refused;
  ASSERT_NE(denied.find("timeout"), std::string::npos) << denied;

  json to, from;
  ASSERT_TRUE(eventually(
      [&] {
        to = get("/namespaces/app/pods/client-6d4b-x1/edges");
        from = get("/namespaces/app/pods/server/edges");
        return to["items"].size() == 1 && from["items"].size() == 1 &&
               metric(to["items"][0], "failure_count") == "7" &&
               metric(from["items"][0], "failure_count") == "7";
      },
      3000))
      << to.dump(1) << "\n" << from.dump(1);
  const json& t = to["items"][0];
  EXPECT_EQ(t["kind"], "TrafficMetrics");
  EXPECT_EQ(t["edge"]["direction"], "to");
  EXPECT_EQ(t["edge"]["side"], "client");
  EXPECT_EQ(t["edge"]["resource"]["name"], "server");
  EXPECT_EQ(metric(t, "success_count"), "5");
  EXPECT_EQ(metric(t, "failure_count"), "7");
  const json& f = from["items"][0];
  EXPECT_EQ(f["edge"]["direction"], "from");
  EXPECT_EQ(f["edge"]["side"], "server");
  EXPECT_EQ(f["edge"]["resource"]["name"], "client-6d4b-x1");
  EXPECT_EQ(metric(f, "success_count"), "5");
  EXPECT_EQ(metric(f, "failure_count"), "7");

  double p50 = quantity(metric(t, "p50_response_latency")),
         p90 = quantity(metric(t, "p90_response_latency")),
         p99 = quantity(metric(t, "p99_response_latency"));
  EXPECT_GT(p50, 0);
  EXPECT_LE(p50, p90);
  EXPECT_LE(p90, p99);
  EXPECT_LT(p99, 300) << "ms: a handshake on a veth; the client's own timeout is 300 ms";

  // Resource level: inbound traffic the server accepted, from anyone.
  json srv_metrics = get("/namespaces/app/pods/server");
  EXPECT_EQ(metric(srv_metrics, "success_count"), "5");
  // Owners: Deployments (the client's through its ReplicaSet's name and
  // pod-template-hash, the server's through its ReplicaSet object), and the
  // namespace.
  json dep = get("/namespaces/app/deployments/client/edges");
  ASSERT_EQ(dep["items"].size(), 1u) << dep.dump(1);
  EXPECT_EQ(dep["items"][0]["edge"]["resource"]["name"], "web");
  EXPECT_EQ(metric(dep["items"][0], "success_count"), "5");
  json web = get("/namespaces/app/deployments/web");
  EXPECT_EQ(metric(web, "success_count"), "5");
  EXPECT_EQ(metric(web, "failure_count"), "7");
  json nsm = get("/namespaces/app");
  EXPECT_EQ(metric(nsm, "success_count"), "5");
  EXPECT_EQ(metric(nsm, "failure_count"), "7");

  // Prometheus: the text parses (every sample line is name{labels} value)
  // and carries the same counts, by workload, without IP addresses.
  std::string prom = httpGet(http_port_, "/metrics").second;
  std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eEInfa]+$)");
  std::istringstream lines(prom);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << "not Prometheus text: " << line;
    samples++;
  }
  EXPECT_GT(samples, 20);
  EXPECT_EQ(prom.find(client.ip()), std::string::npos) << "pod IPs must not be labels";
  auto count = [&](const std::string& labels) {
    std::smatch m;
    std::regex re("smik_tcp_connections_total\\{" + labels + "\\} (\\d+)");
    return std::regex_search(prom, m, re) ? std::stoi(m[1]) : -1;
  };
  EXPECT_EQ(count(R"(namespace="app",workload="client",peer_namespace="app",peer_workload="web",side="client",outcome="success")"), 5) << prom;
  EXPECT_EQ(count(R"(namespace="app",workload="client",peer_namespace="app",peer_workload="web",side="client",outcome="policy")"), 4);
  EXPECT_EQ(count(R"(namespace="app",workload="client",peer_namespace="app",peer_workload="web",side="client",outcome="refused")"), 3);
  EXPECT_EQ(count(R"(namespace="app",workload="web",peer_namespace="app",peer_workload="client",side="server",outcome="policy")"), 4);
}

// kubectl reads the API through a kubeconfig pointing at the agent.
TEST_F(Metrics, KubectlGetRaw) {
  if (access("/usr/bin/kubectl", X_OK) != 0 && access("/usr/local/bin/kubectl", X_OK) != 0)
    GTEST_SKIP() << "KUBECTL NOT INSTALLED: kubectl get --raw not tested";
  Pod& client = bed_->addPod("client", bed_->nextIp());
  write("pods.yaml", ns("app", false) + pod("app", "client", "client", client.ip()));
  startAgent();
  std::string kubeconfig = dir_ + "/../" + bed_->prefix() + "-kubeconfig";
  std::ofstream(kubeconfig) << "apiVersion: v1\nkind: Config\nclusters:\n- name: smik\n  cluster:\n"
                               "    server: http://127.0.0.1:" << http_port_ << "\n"
                               "contexts:\n- name: smik\n  context: {cluster: smik, user: smik}\n"
                               "users:\n- name: smik\n  user: {}\ncurrent-context: smik\n";
  auto r = bed_->run({"kubectl", "--kubeconfig", kubeconfig, "get", "--raw",
                      "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods"},
                     20000);
  std::filesystem::remove(kubeconfig);
  ASSERT_TRUE(r.ok()) << r.output;
  json list = json::parse(r.output);
  EXPECT_EQ(list["kind"], "TrafficMetricsList");
  ASSERT_EQ(list["items"].size(), 1u);
  EXPECT_EQ(list["items"][0]["resource"]["name"], "client");
}

}  // namespace
}  // namespace smik::e2e
