// End to end with the Kubernetes source: the real agent reads a fake API
// server (HTTPS, bearer token, chunked watches) and enforces on real pods.
// Policy changes made through the API change enforcement within seconds;
// with the API server away at start the pinned policy keeps enforcing, the
// agent says it is not ready and why, and the resync after it comes back
// neither drops an allowed connection nor admits a denied one.
#include <fcntl.h>
#include <httplib.h>
#include <sched.h>

#include <atomic>
#include <optional>

#include "tests/e2e/fixture.h"
#include "tests/kube/fake_cluster.h"
#include "tests/testbed/certs.h"

namespace smik::e2e {
namespace {

using smik::testing::FakeCluster;

class Kube : public E2E {
 protected:
  void SetUp() override {
    E2E::SetUp();
    if (IsSkipped()) return;
    api_port_ = freePort();
    kubeconfig_ = "/tmp/" + bed_->prefix() + "-kubeconfig";
  }
  void TearDown() override {
    serving_.reset();  // the server first, as when it was the test's own
    if (agent_) {
      kill(agent_->pid(), SIGTERM);
      agent_->wait(3000);
      agent_.reset();
    }
    cluster_.reset();
    std::error_code ec;
    if (!kubeconfig_.empty()) fs::remove(kubeconfig_, ec);
    E2E::TearDown();
  }

  // HTTP/2, as real API servers speak it (the stale-table test below keeps
  // HTTP/1.1, so the agent's fallback runs end to end too).
  void startCluster(uint64_t first_rv = 1000) {
    FakeCluster::Options o;
    o.tls = true;
    o.http2 = true;
    o.tls_dir = SMIK_KUBE_FIXTURES_DIR "/tls";
    o.port = api_port_;
    o.first_rv = first_rv;
    cluster_ = std::make_unique<FakeCluster>(o);
    cluster_->writeKubeconfig(kubeconfig_);
  }

  std::string tcpWithin(Pod& from, Pod& to, int port, int timeout_ms) {
    auto r = bed_->run(from, {SMIK_TESTPEER, "tcp", to.ip(), std::to_string(port), "--timeout-ms",
                              std::to_string(timeout_ms)},
                       timeout_ms + 5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }

  // The agent on the fake API server, ready (every collection listed).
  void startKubeAgent(const std::vector<std::string>& extra = {}) {
    auto args = kubeArgs();
    args.insert(args.end(), extra.begin(), extra.end());
    agent_ = std::make_unique<Proc>(bed_->spawn(args));
    ASSERT_TRUE(eventually([&] { return httpGet(http_port_, "/readyz").first == 200; }, 10000))
        << agent_->output();
  }

  // Where the enforcement tests start: client and server pods under
  // applyCluster's policy, the agent enforcing it as read from the API
  // server, the server listening, and the policy seen to hold.
  void startEnforcing() {
    client_ = &bed_->addPod("client", bed_->nextIp());
    server_ = &bed_->addPod("server", bed_->nextIp());
    startCluster();
    applyCluster(*client_, *server_);
    ASSERT_NO_FATAL_FAILURE(startKubeAgent());
    waitAttached(2);
    serving_.emplace(serve(*server_, "8080,9090"));
    expectTcp(*client_, *server_, 8080, "ok");
    expectTcp(*client_, *server_, 9090, "timeout");
  }

  std::vector<std::string> kubeArgs() {
    std::vector<std::string> a = agentArgs({});
    auto it = std::find(a.begin(), a.end(), "--manifests");
    *it = "--kubeconfig";
    *(it + 1) = kubeconfig_;
    return a;
  }

  // Pods client and server in meshed namespace "app", servers on 8080 and
  // 9090; client may reach 8080 only.
  void applyCluster(Pod& client, Pod& server, bool with_target = true) {
    cluster_->applyYaml(ns("app", true) + pod("app", "client", "client", client.ip()) +
                        pod("app", "server", "server", server.ip()) +
                        tcpRoute("app", "web", "[8080]"));
    if (with_target) applyTarget();
  }
  void applyTarget() {
    cluster_->applyYaml(trafficTarget("app", "client-to-server", "app", "server",
                                      rule("TCPRoute", "web"), "app", "client"));
  }

  // What the aggregator's client certificate is checked against: the test
  // PKI's CA (it signed client.crt, CN smik-agent).
  void applyRequestHeaderConfig() {
    std::ifstream ca(SMIK_KUBE_FIXTURES_DIR "/tls/ca.crt");
    std::stringstream pem;
    pem << ca.rdbuf();
    cluster_->apply({{"apiVersion", "v1"},
                     {"kind", "ConfigMap"},
                     {"metadata",
                      {{"name", "extension-apiserver-authentication"}, {"namespace", "kube-system"}}},
                     {"data",
                      {{"requestheader-client-ca-file", pem.str()},
                       {"requestheader-allowed-names", "[\"smik-agent\"]"}}}});
  }

  std::unique_ptr<FakeCluster> cluster_;
  Pod* client_ = nullptr;  // startEnforcing()'s
  Pod* server_ = nullptr;
  std::optional<Proc> serving_;
  int api_port_ = 0;
  std::string kubeconfig_;
};

TEST_F(Kube, PolicyChangesThroughTheApiServerChangeEnforcement) {
  ASSERT_NO_FATAL_FAILURE(startEnforcing());
  Pod& client = *client_;
  Pod& server = *server_;

  // Revoked through the API: denied within seconds.
  cluster_->remove("TrafficTarget", "app", "client-to-server");
  expectTcp(client, server, 8080, "timeout", 3000);
  // Granted again, now for both ports.
  cluster_->applyYaml(tcpRoute("app", "web", "[8080, 9090]"));
  applyTarget();
  expectTcp(client, server, 8080, "ok", 3000);
  expectTcp(client, server, 9090, "ok", 3000);

  // A bad object is rejected by name, the rest stays enforced, and the
  // object gets a Kubernetes Event saying why.
  cluster_->applyYaml(tcpRoute("app", "broken", "[70000]"));
  ASSERT_TRUE(eventually([&] { return status().find("app/broken") != std::string::npos; }, 3000))
      << status();
  expectTcp(client, server, 8080, "ok");
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& e : cluster_->events())
          if (e["involvedObject"]["name"] == "broken" && e["reason"] == "Rejected") return true;
        return false;
      },
      3000));
  // `smik status` says what the source mirrors.
  auto st = bed_->run({SMIK_CLI, "status", "--grpc", "/tmp/" + bed_->prefix() + "-default-agent.sock"},
                      10000);
  EXPECT_NE(st.output.find("source: kubernetes https://127.0.0.1:"), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("pods (v1): synced, resourceVersion "), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("traffictargets (access.smi-spec.io/v1alpha3): synced"),
            std::string::npos)
      << st.output;
  // The agent lists once per collection and then only watches.
  size_t pod_lists = 0;
  for (const auto& r : cluster_->requests())
    if (r.rfind("GET /api/v1/pods", 0) == 0 && r.find("watch=") == std::string::npos) pod_lists++;
  EXPECT_EQ(pod_lists, 1u);
  // Every list, watch and Event of the agent on one connection (issue 13).
  EXPECT_EQ(cluster_->connections(), 1u);
  EXPECT_GE(cluster_->streams(), 2 * 14u);
}

TEST_F(Kube, UnreachableAtStartKeepsThePinnedPolicyAndResyncsCleanly) {
  ASSERT_NO_FATAL_FAILURE(startEnforcing());
  Pod& client = *client_;
  Pod& server = *server_;

  // Agent and API server both go away; the kernel keeps enforcing.
  stopAgent();
  cluster_.reset();

  // Probes in the background for the rest of the test: any allowed
  // connection refused or denied one admitted is a failure.
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0}, wrong{0};
  std::string first_wrong;
  std::mutex wrong_mu;
  std::thread probe([&] {
    while (!stop) {
      // The allowed attempt gets 2 s: on a loaded machine a 300 ms connect
      // may time out without any drop. A denied one can never succeed.
      std::string a = tcpWithin(client, server, 8080, 2000), d = tcp(client, server, 9090);
      if (a != "ok" || d != "timeout") {
        std::lock_guard l(wrong_mu);
        if (wrong++ == 0) first_wrong = "8080: " + a + ", 9090: " + d;
      }
      rounds++;
    }
  });
  // Joined however the test ends (an ASSERT returns early).
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } joiner{stop, probe};

  agent_ = std::make_unique<Proc>(bed_->spawn(kubeArgs()));
  std::pair<int, std::string> ready;
  // /readyz answers from the agent's first moment: "no policy applied yet"
  // until the source has tried the API server once.
  ASSERT_TRUE(eventually(
      [&] {
        ready = httpGet(http_port_, "/readyz");
        return ready.first == 503 &&
               ready.second.find("waiting for the Kubernetes API") != std::string::npos;
      },
      5000))
      << ready.first << " " << ready.second << "\n"
      << agent_->output();
  EXPECT_NE(status().find("\"notReady\""), std::string::npos) << status();
  // Stays not ready, retrying, for a while: enforcement unchanged meanwhile.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(httpGet(http_port_, "/readyz").first, 503);

  // The API server is back, its history moved on (watches from the old
  // version would get 410): the agent lists, compiles, becomes ready.
  startCluster(50'000);
  applyCluster(client, server);
  // Discovery retries back off to 30 s (as client-go's reflectors do): the
  // next attempt may be that far away.
  ASSERT_TRUE(eventually([&] { return httpGet(http_port_, "/readyz").first == 200; }, 45000))
      << agent_->output();
  const int at_ready = rounds;
  ASSERT_TRUE(eventually([&] { return rounds >= at_ready + 3; }, 10000));
  stop = true;
  probe.join();
  EXPECT_GE(rounds.load(), 6);
  EXPECT_EQ(wrong.load(), 0) << "first wrong outcome: " << first_wrong;
}

// Runs f with this thread in `pod`'s network namespace, then returns: a
// socket made meanwhile stays there (a listener "in" the pod).
void inNetns(const Pod& pod, const std::function<void()>& f) {
  struct Back {
    UniqueFd self, target;
    ~Back() {  // never stay elsewhere
      if (self && ::setns(self.get(), CLONE_NEWNET) != 0) std::abort();
    }
  } back{UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)),
         UniqueFd(::open(("/var/run/netns/" + pod.netns()).c_str(), O_RDONLY | O_CLOEXEC))};
  if (!back.self || !back.target || ::setns(back.target.get(), CLONE_NEWNET) != 0)
    throw std::runtime_error("cannot enter the netns of " + pod.name());
  f();
}

// The agent's own API connections are never translated by its own socket
// programs. It dials the `kubernetes` Service's ClusterIP, which the node
// reaches without smik (kube-proxy's part; here the API server holds that
// address itself), as on any first start, when no table exists yet. A first
// agent pins the Service's table while its endpoint is an address that then
// goes away; restarted inside the cgroup its programs watch (as a node's
// agent is, under the cgroup2 root), the agent still lists, and fixes the
// table.
TEST_F(Kube, OwnApiConnectionsPassAStaleTableForTheApiServersClusterIp) {
  const std::string vip = bed_->nextIp(), gone = bed_->nextIp();  // gone: blackholed
  Pod& apiserver = bed_->addPod("apiserver", vip);
  FakeCluster::Options o;
  o.tls = true;
  o.tls_dir = SMIK_KUBE_FIXTURES_DIR "/tls";
  o.address = vip;
  o.port = 443;
  inNetns(apiserver, [&] { cluster_ = std::make_unique<FakeCluster>(o); });
  cluster_->writeKubeconfig(kubeconfig_);
  auto kubernetesService = [&](const std::string& endpoint) {
    cluster_->applyYaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\n"
        "spec:\n  clusterIP: " + vip + "\n  ports:\n"
        "  - {name: https, port: 443, targetPort: 443, protocol: TCP}\n---\n"
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kubernetes\n"
        "  namespace: default\n  labels: {kubernetes.io/service-name: kubernetes}\n"
        "addressType: IPv4\nendpoints:\n- addresses: [" + endpoint + "]\n"
        "ports:\n- {name: https, port: 443, protocol: TCP}\n");
  };
  // The kernel's table for the ClusterIP, as `smik map dump services` shows it.
  auto table = [&] {
    return bed_->run({SMIK_CLI, "map", "dump", "services", "--grpc",
                      "/tmp/" + bed_->prefix() + "-default-agent.sock"}, 5000).output;
  };
  auto startInGroup = [&] {
    agent_ = std::make_unique<Proc>(bed_->spawnInGroup("node", kubeArgs()));
    return eventually([&] { return httpGet(http_port_, "/readyz").first == 200; }, 15000);
  };

  kubernetesService(gone);
  ASSERT_TRUE(startInGroup()) << agent_->output();
  std::string t;
  ASSERT_TRUE(eventually([&] { return (t = table()).find(": " + gone + ":443") != std::string::npos; },
                         3000))
      << "the ClusterIP's table does not point at " << gone << ":\n" << t;
  stopAgent();  // the table stays pinned

  kubernetesService(vip);  // the API server moved while no agent ran
  ASSERT_TRUE(startInGroup()) << "the agent could not reach the API server past the stale table:\n"
                              << agent_->output();
  EXPECT_TRUE(eventually([&] { return (t = table()).find(": " + vip + ":443") != std::string::npos; },
                         3000))
      << "the table still points at the old endpoint:\n" << t;
}

// The APIService path: TLS with the requestheader CA read from the cluster,
// the user from X-Remote-User, authorization by SubjectAccessReview, and the
// node's real connection counts in the answer.
TEST_F(Kube, AggregatedApiServesAuthorizedUsersOnly) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  startCluster();
  applyCluster(client, server);
  applyRequestHeaderConfig();
  cluster_->setAuthorizer([](const nlohmann::json& spec) {
    return spec["user"] == "alice" && spec["resourceAttributes"]["namespace"] == "app";
  });
  const int secure_port = freePort();
  ASSERT_NO_FATAL_FAILURE(
      startKubeAgent({"--secure-listen", "127.0.0.1:" + std::to_string(secure_port)}));
  waitAttached(2);
  Proc srv = serve(server, "8080");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(tcp(client, server, 8080), "ok");

  httplib::SSLClient c("127.0.0.1", secure_port, SMIK_KUBE_FIXTURES_DIR "/tls/client.crt",
                       SMIK_KUBE_FIXTURES_DIR "/tls/client.key");
  c.enable_server_certificate_verification(false);  // self-signed, as the plain install
  const std::string path = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/server";
  // Counters are read once a second: wait for the three connections.
  nlohmann::json m;
  double success = 0;
  std::string last;
  ASSERT_TRUE(eventually(
      [&] {
        auto r = c.Get(path, {{"X-Remote-User", "alice"}});
        if (!r) return (last = httplib::to_string(r.error())), false;
        last = r->body;
        if (r->status != 200) return false;
        m = nlohmann::json::parse(r->body);
        for (const auto& metric : m["metrics"])
          if (metric["name"] == "success_count") success = quantity(metric["value"].get<std::string>());
        return success >= 3;
      },
      5000))
      << last << agent_->output();
  EXPECT_EQ(m["kind"], "TrafficMetrics");
  EXPECT_EQ(m["resource"]["name"], "server");
  EXPECT_EQ(success, 3);

  auto denied = c.Get(path, {{"X-Remote-User", "mallory"}});
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403);
  auto other_ns = c.Get("/apis/metrics.smi-spec.io/v1alpha1/namespaces/kube-system/pods",
                        {{"X-Remote-User", "alice"}});
  ASSERT_TRUE(other_ns);
  EXPECT_EQ(other_ns->status, 403);
  // The reviews went on the source's connection: one per agent (issue 13).
  EXPECT_EQ(cluster_->connections(), 1u);
}

// The APIService's requests fan out to the peers like --http's: with a peer
// that does not answer, the aggregated API serves this node's numbers,
// marked partial (annotations, and the Warning header kubectl prints).
TEST_F(Kube, AggregatedApiAnswersForTheClusterAndSaysWhoIsMissing) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  startCluster();
  applyCluster(client, server);
  applyRequestHeaderConfig();
  cluster_->setAuthorizer([](const nlohmann::json&) { return true; });
  testbed::CertDir certs(bed_->prefix() + "-peer-tls");
  certs.makeCa("ca");
  certs.makeCert("node", "ca", "smik-peer.smik-system");
  const int secure_port = freePort(), gone = freePort();  // nothing listens on `gone`
  ASSERT_NO_FATAL_FAILURE(startKubeAgent(
      {"--secure-listen", "127.0.0.1:" + std::to_string(secure_port), "--peer-tls-cert",
       certs.crt("node"), "--peer-tls-key", certs.key("node"), "--peer-tls-ca", certs.crt("ca"),
       "--peers", "node-gone=127.0.0.1:" + std::to_string(gone)}));

  httplib::SSLClient c("127.0.0.1", secure_port, SMIK_KUBE_FIXTURES_DIR "/tls/client.crt",
                       SMIK_KUBE_FIXTURES_DIR "/tls/client.key");
  c.enable_server_certificate_verification(false);
  const std::string path = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/server";
  httplib::Response r;
  auto get = [&](const std::string& p) {
    auto res = c.Get(p, {{"X-Remote-User", "alice"}});
    if (res) r = *res;
    return static_cast<bool>(res);
  };
  ASSERT_TRUE(eventually([&] { return get(path); }, 5000)) << agent_->output();
  ASSERT_EQ(r.status, 200) << r.body;
  auto m = nlohmann::json::parse(r.body);
  EXPECT_EQ(m["metadata"]["annotations"]["metrics.smik.io/missing-nodes"], "node-gone") << r.body;
  EXPECT_NE(r.get_header_value("Warning").find("node-gone"), std::string::npos);

  // ?local=true: this node only, nobody is missing.
  ASSERT_TRUE(get(path + "?local=true"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(nlohmann::json::parse(r.body)["metadata"].contains("annotations")) << r.body;
  EXPECT_FALSE(r.has_header("Warning"));
}

}  // namespace
}  // namespace smik::e2e
