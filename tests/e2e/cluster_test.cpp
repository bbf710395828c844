// End to end: cluster-wide TrafficMetrics with two agents on this machine
// acting as two nodes. One manifest set places pods on node-a and node-b;
// agent A (--node node-a) and agent B (--node node-b) each have their own pin
// directory, HTTP port, gRPC socket, peer port and certificate, and list
// each other in --peers.
//
// Each node's pods live in their own cgroup (<bed>/node-a/<pod>,
// <bed>/node-b/<pod>) and each agent attaches its socket programs to its
// node's cgroup only: as on two real nodes, agent A's kernel programs see
// the connections node-a's pods open and accept, never node-b's. (Both at
// the bed's root would let each agent count both ends of every connection,
// and there would be nothing to merge.) The tc programs need nothing
// special: each agent hooks only its own node's pods' veths.
#include <cstring>
#include <nlohmann/json.hpp>

#include "tests/e2e/fixture.h"
#include "tests/testbed/certs.h"

namespace smik::e2e {
namespace {

using nlohmann::json;

constexpr const char* kPeerName = "smik-peer.smik-system";
constexpr int kPeerTimeoutMs = 1000;

int occurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) n++;
  return n;
}

// The item of an edges list for (direction, peer name); null if none.
json edgeTo(const json& list, const std::string& direction, const std::string& peer) {
  for (const auto& i : list["items"])
    if (i["edge"]["direction"] == direction && i["edge"]["resource"]["name"] == peer) return i;
  return nullptr;
}

std::string podOf(const std::string& name, const std::string& sa, const std::string& ip,
                  const std::string& node, const std::string& rs = "") {
  std::string owner = rs.empty()
                          ? ""
                          : "  ownerReferences:\n  - {apiVersion: apps/v1, kind: ReplicaSet, "
                            "name: " +
                                rs + ", uid: x, controller: true}\n";
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: app\n" + owner +
         "spec:\n  serviceAccountName: " + sa + "\n  nodeName: " + node +
         "\nstatus:\n  phase: Running\n  podIP: " + ip + "\n---\n";
}

class Cluster : public E2E {
 protected:
  void SetUp() override {
    E2E::SetUp();
    if (IsSkipped()) return;
    pin_b_ = "/sys/fs/bpf/" + bed_->prefix() + "-e2e-b";
    http_b_ = freePort();
    peer_a_ = freePort();
    peer_b_ = freePort();
    ASSERT_TRUE(http_b_ && peer_a_ && peer_b_);
    ASSERT_TRUE(http_b_ != http_port_ && peer_a_ != peer_b_ && peer_a_ != http_port_ &&
                peer_b_ != http_port_ && peer_a_ != http_b_ && peer_b_ != http_b_)
        << "freePort handed out one port twice";
    certs_ = std::make_unique<testbed::CertDir>(bed_->prefix() + "-tls");
    certs_->makeCa("ca");
    certs_->makeCert("node-a", "ca", kPeerName);
    certs_->makeCert("node-b", "ca", kPeerName);
  }

  void TearDown() override {
    if (agent_b_) {
      kill(agent_b_->pid(), SIGTERM);
      agent_b_->wait(3000);
      agent_b_.reset();
    }
    if (bed_ && !pin_b_.empty() && fs::exists(pin_b_)) {
      auto r = bed_->run({SMIK_AGENT, "--uninstall", "--pin-dir", pin_b_}, 10000);
      EXPECT_TRUE(r.ok()) << r.output;
    }
    certs_.reset();
    std::error_code ec;
    for (const auto& s : sockets_) fs::remove(s, ec);
    E2E::TearDown();
    if (!pin_b_.empty()) {
      EXPECT_FALSE(fs::exists(pin_b_)) << "uninstall left " << pin_b_;
    }
  }

  std::vector<std::string> nodeArgs(const std::string& node, int http, const std::string& pin,
                                    int peer_port, const std::string& peers) {
    const std::string sock = "/tmp/" + bed_->prefix() + "-" + node + ".sock";
    sockets_.push_back(sock);
    return {SMIK_AGENT,
            "--manifests", dir_,
            "--node", node,
            "--http", "127.0.0.1:" + std::to_string(http),
            "--pin-dir", pin,
            "--log-level", "warn",
            "--cgroup", bed_->groupCgroup(node),
            "--grpc", sock,
            "--metrics-interval-ms", "200",
            "--peer-listen", "127.0.0.1:" + std::to_string(peer_port),
            "--peer-tls-cert", certs_->crt(node),
            "--peer-tls-key", certs_->key(node),
            "--peer-tls-ca", certs_->crt("ca"),
            "--peers", peers,
            "--peer-timeout-ms", std::to_string(kPeerTimeoutMs),
            // denials read as timeouts here (deny_response_test.cpp: answers)
            "--deny-response", "drop"};
  }

  // Ready, with `endpoints` local pods hooked.
  void waitReady(Proc& agent, int http, size_t endpoints) {
    ASSERT_TRUE(eventually([&] { return httpGet(http, "/readyz").first == 200; }, 10000))
        << "agent never became ready:\n" << agent.output();
    ASSERT_TRUE(eventually(
        [&] {
          auto [code, body] = httpGet(http, "/status");
          return code == 200 && json::parse(body)["endpoints"].size() >= endpoints;
        },
        5000))
        << httpGet(http, "/status").second;
  }

  json get(int http, const std::string& path) {
    auto [code, body] = httpGet(http, "/apis/metrics.smi-spec.io/v1alpha1" + path);
    EXPECT_EQ(code, 200) << path << ": " << body;
    return code == 200 ? json::parse(body) : json();
  }

  std::string pin_b_;
  int http_b_ = 0, peer_a_ = 0, peer_b_ = 0;
  std::unique_ptr<testbed::CertDir> certs_;
  std::unique_ptr<Proc> agent_b_;
  std::vector<std::string> sockets_;
};

// Connections from node-a to node-b, as every test below starts: a client
// and web-a on node-a, web-b on node-b (web-a and web-b one Deployment);
// client -> web-b 8080 four times, 9090 twice (refused), 7070 three times
// (denied); client -> web-a twice; web-b -> client three times. Returns
// once each node's store holds what its own kernel saw.
class ClusterTraffic : public Cluster {
 protected:
  void SetUp() override {
    Cluster::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    client_ = &bed_->addPod("client", bed_->nextIp(), "node-a");
    web_a_ = &bed_->addPod("web-a", bed_->nextIp(), "node-a");
    web_b_ = &bed_->addPod("web-b", bed_->nextIp(), "node-b");
    writeManifests();
    agent_ = std::make_unique<Proc>(bed_->spawn(nodeArgs(
        "node-a", http_port_, pin_, peer_a_, "node-b=127.0.0.1:" + std::to_string(peer_b_))));
    startAgentB();
    waitReady(*agent_, http_port_, 2);
    ASSERT_NO_FATAL_FAILURE(makeTraffic());
    ASSERT_NO_FATAL_FAILURE(waitForBothStores());
  }

  void TearDown() override {
    servers_.clear();
    Cluster::TearDown();
  }

  void writeManifests() {
    write("pods.yaml",
          ns("app", true) + podOf("client", "client", client_->ip(), "node-a") +
              podOf("web-a", "web", web_a_->ip(), "node-a", "web-1") +
              podOf("web-b", "web", web_b_->ip(), "node-b", "web-1") +
              "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-1\n  namespace: app\n"
              "  ownerReferences:\n  - {apiVersion: apps/v1, kind: Deployment, name: web, uid: y, "
              "controller: true}\n---\n");
    write("policy.yaml", tcpRoute("app", "web", "[8080, 9090]") +
                             trafficTarget("app", "to-web", "app", "web", rule("TCPRoute", "web"),
                                           "app", "client") +
                             tcpRoute("app", "client", "[8080]") +
                             trafficTarget("app", "to-client", "app", "client",
                                           rule("TCPRoute", "client"), "app", "web"));
  }

  // (Re)starts node-b's agent; node-b has one local pod. A restarted agent
  // adopts its pinned maps, whose cumulative counters become its first
  // interval.
  void startAgentB() {
    agent_b_ = std::make_unique<Proc>(bed_->spawn(nodeArgs(
        "node-b", http_b_, pin_b_, peer_b_, "node-a=127.0.0.1:" + std::to_string(peer_a_))));
    waitReady(*agent_b_, http_b_, 1);
  }

  void makeTraffic() {
    servers_.push_back(serve(*client_, "8080"));
    servers_.push_back(serve(*web_a_, "8080"));
    servers_.push_back(
        serve(*web_b_, "8080"));  // nothing on 9090: refused; 7070 is not in the route
    auto run = [&](Pod& from, Pod& to, int port, int n) {
      return bed_->run(from, {SMIK_TESTPEER, "tcp", to.ip(), std::to_string(port), "--count",
                              std::to_string(n), "--timeout-ms", "300"},
                       30000)
          .output;
    };
    std::string ok_b = run(*client_, *web_b_, 8080, 4), refused = run(*client_, *web_b_, 9090, 2),
                denied = run(*client_, *web_b_, 7070, 3), ok_a = run(*client_, *web_a_, 8080, 2),
                back = run(*web_b_, *client_, 8080, 3);
    ASSERT_EQ(occurrences(ok_b, "ok web-b\n"), 4) << ok_b;
    ASSERT_EQ(occurrences(refused, "refused"), 2) << refused;
    ASSERT_EQ(occurrences(denied, "timeout"), 3) << denied;
    ASSERT_EQ(occurrences(ok_a, "ok web-a\n"), 2) << ok_a;
    ASSERT_EQ(occurrences(back, "ok client\n"), 3) << back;
  }

  // Node-b's agent alone saw web-b accept; node-a's alone saw the refusals
  // and timeouts its client met. Waits until both stores hold them.
  void waitForBothStores() {
    json b_alone, b_edges, a_alone;
    ASSERT_TRUE(eventually(
        [&] {
          b_alone = get(http_b_, "/namespaces/app/pods/web-b?local=true");
          b_edges = get(http_b_, "/namespaces/app/pods/web-b/edges?local=true");
          a_alone = get(http_port_, "/namespaces/app/pods/client/edges?local=true");
          json to_b = edgeTo(a_alone, "to", "web-b"), from_b = edgeTo(a_alone, "from", "web-b"),
               to_client = edgeTo(b_edges, "to", "client");
          return metric(b_alone, "success_count") == "4" &&
                 metric(b_alone, "failure_count") == "3" && !to_client.is_null() &&
                 metric(to_client, "success_count") == "3" && !to_b.is_null() &&
                 metric(to_b, "failure_count") == "5" && !from_b.is_null() &&
                 metric(from_b, "success_count") == "3";
        },
        5000))
        << b_alone.dump(1) << "\n" << b_edges.dump(1) << "\n" << a_alone.dump(1);
  }

  // `smik metrics -n app web-b -o json` against node-a's agent.
  json cli(std::vector<std::string> extra) {
    std::vector<std::string> argv = {SMIK_CLI, "metrics", "-n", "app", "web-b", "-o", "json",
                                     "--grpc", sockets_[0]};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = bed_->run(argv, 10000);
    EXPECT_TRUE(r.ok()) << r.output;
    return r.ok() ? json::parse(r.output) : json();
  }

  void stopAgentB() {
    kill(agent_b_->pid(), SIGTERM);
    EXPECT_EQ(agent_b_->wait(5000), 0) << agent_b_->output();
  }

  Pod* client_ = nullptr;
  Pod* web_a_ = nullptr;
  Pod* web_b_ = nullptr;
  std::vector<Proc> servers_;
};

// Separate nodes indeed: node-a's kernel never saw web-b accept anything,
// only the refusals its own client met.
TEST_F(ClusterTraffic, EachNodeCountsWhatItsOwnKernelSaw) {
  json web_b_at_a = get(http_port_, "/namespaces/app/pods/web-b?local=true");
  EXPECT_EQ(metric(web_b_at_a, "success_count"), "0") << web_b_at_a.dump(1);
  EXPECT_EQ(metric(web_b_at_a, "failure_count"), "2") << "the refusals, seen by the client";
}

// ONE request to node-a for the node-b pod: node-b's server side merged in.
TEST_F(ClusterTraffic, OneRequestMergesThePeersCounts) {
  json web_b_item = get(http_port_, "/namespaces/app/pods/web-b");
  EXPECT_EQ(metric(web_b_item, "success_count"), "4") << web_b_item.dump(1);
  EXPECT_EQ(metric(web_b_item, "failure_count"), "5") << "2 refused (node-a) + 3 denied (node-b)";
  EXPECT_GT(quantity(metric(web_b_item, "p50_response_latency")), 0);
  EXPECT_FALSE(web_b_item["metadata"].contains("annotations")) << web_b_item.dump(1);
}

TEST_F(ClusterTraffic, EdgesAreCountedOnceClusterWide) {
  json web_b_edges = get(http_port_, "/namespaces/app/pods/web-b/edges");
  ASSERT_EQ(web_b_edges["items"].size(), 2u) << web_b_edges.dump(1);
  json from_client = edgeTo(web_b_edges, "from", "client");
  json to_client = edgeTo(web_b_edges, "to", "client");
  ASSERT_FALSE(from_client.is_null() || to_client.is_null()) << web_b_edges.dump(1);
  EXPECT_EQ(from_client["edge"]["side"], "server");
  EXPECT_EQ(metric(from_client, "success_count"), "4");
  EXPECT_EQ(metric(from_client, "failure_count"), "5");
  EXPECT_EQ(to_client["edge"]["side"], "client");
  EXPECT_EQ(metric(to_client, "success_count"), "3");  // opened on node-b: only B counted it
  EXPECT_GT(quantity(metric(to_client, "p50_response_latency")), 0);

  // The client's edges: both directions, each counted once cluster-wide.
  json client_edges = get(http_port_, "/namespaces/app/pods/client/edges");
  ASSERT_EQ(client_edges["items"].size(), 3u) << client_edges.dump(1);
  json to_b = edgeTo(client_edges, "to", "web-b"), to_a = edgeTo(client_edges, "to", "web-a"),
       from_b = edgeTo(client_edges, "from", "web-b");
  ASSERT_FALSE(to_b.is_null() || to_a.is_null() || from_b.is_null()) << client_edges.dump(1);
  EXPECT_EQ(metric(to_b, "success_count"), "4");
  EXPECT_EQ(metric(to_b, "failure_count"), "5");
  EXPECT_EQ(metric(to_a, "success_count"), "2");
  EXPECT_EQ(metric(from_b, "success_count"), "3");
}

// A Deployment with a pod on each node.
TEST_F(ClusterTraffic, ADeploymentSpanningNodesSumsBoth) {
  json web = get(http_port_, "/namespaces/app/deployments/web");
  EXPECT_EQ(metric(web, "success_count"), "6") << web.dump(1);
  EXPECT_EQ(metric(web, "failure_count"), "5");
}

// `smik metrics` asks node-a's agent and gets the same cluster-wide
// numbers; --local gives node-a's own.
TEST_F(ClusterTraffic, CliShowsTheClusterOrTheLocalNode) {
  json cluster_cli = cli({});
  ASSERT_EQ(cluster_cli["resources"].size(), 1u) << cluster_cli.dump(1);
  EXPECT_EQ(cluster_cli["resources"][0]["inbound"]["success"], 4) << cluster_cli.dump(1);
  EXPECT_EQ(cluster_cli["resources"][0]["inbound"]["failure"], 5);
  EXPECT_TRUE(cluster_cli["missingNodes"].empty());
  json local_cli = cli({"--local"});
  EXPECT_EQ(local_cli["resources"][0]["inbound"]["success"], 0) << local_cli.dump(1);
}

// Node-b's agent goes away: node-a answers with what it has, in time, and
// says whose numbers are missing. (A peer that accepts and never answers is
// the unit tests' SlowPeer: a timeout, not a hang.)
TEST_F(ClusterTraffic, APeerGoneGivesAPartialAnswerInTime) {
  stopAgentB();
  const auto t0 = std::chrono::steady_clock::now();
  HttpReply partial =
      httpGetFull(http_port_, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/web-b", 10);
  // Not a performance bound: without a per-peer timeout this would hang.
  EXPECT_LT(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(kPeerTimeoutMs + 2000));
  ASSERT_EQ(partial.status, 200) << partial.body;
  EXPECT_EQ(cli({})["missingNodes"], json({"node-b"}));
  json p = json::parse(partial.body);
  EXPECT_EQ(p["metadata"]["annotations"]["metrics.smik.io/partial"], "true") << p.dump(1);
  EXPECT_EQ(p["metadata"]["annotations"]["metrics.smik.io/missing-nodes"], "node-b");
  EXPECT_EQ(metric(p, "success_count"), "0");  // node-a's own share only
  EXPECT_EQ(metric(p, "failure_count"), "2");
  EXPECT_NE(partial.headers.find("Warning: 299 - "), std::string::npos) << partial.headers;
  EXPECT_NE(partial.headers.find("node-b"), std::string::npos) << partial.headers;

  // Lists too: every item names the missing node.
  json list = get(http_port_, "/namespaces/app/pods");
  ASSERT_EQ(list["items"].size(), 3u) << list.dump(1);
  for (const auto& item : list["items"])
    EXPECT_EQ(item["metadata"]["annotations"]["metrics.smik.io/missing-nodes"], "node-b");
}

// Node-b's agent comes back: whole answers again, within gRPC's reconnect
// backoff, and the peer counters saw both the outage and the recovery.
TEST_F(ClusterTraffic, APeerBackGivesWholeAnswersAgain) {
  stopAgentB();
  get(http_port_, "/namespaces/app/pods/web-b");  // one request that finds node-b away
  startAgentB();
  json whole;
  EXPECT_TRUE(eventually(
      [&] {
        whole = get(http_port_, "/namespaces/app/pods/web-b");
        return !whole["metadata"].contains("annotations") &&
               metric(whole, "success_count") == "4";
      },
      10000))
      << whole.dump(1);

  const std::string prom = httpGet(http_port_, "/metrics").second;
  std::smatch m;
  EXPECT_TRUE(std::regex_search(
      prom, m, std::regex(R"(smik_peer_requests_total\{peer="node-b",outcome="ok"\} [1-9])")))
      << prom;
  EXPECT_TRUE(std::regex_search(
      prom, m,
      std::regex(R"(smik_peer_requests_total\{peer="node-b",outcome="unavailable"\} [1-9])")))
      << prom;
}

// The peer listener never serves plaintext: without certificates it stays
// closed (and says which flag is missing) while the agent enforces as usual.
TEST_F(Cluster, NoPeerListenerWithoutCertificates) {
  Pod& client = bed_->addPod("client", bed_->nextIp(), "node-a");
  write("pods.yaml", ns("app", false) + podOf("client", "client", client.ip(), "node-a"));
  std::vector<std::string> args = {SMIK_AGENT, "--manifests", dir_, "--node", "node-a",
                                   "--http", "127.0.0.1:" + std::to_string(http_port_),
                                   "--pin-dir", pin_, "--cgroup", bed_->groupCgroup("node-a"),
                                   "--grpc", "/tmp/" + bed_->prefix() + "-node-a.sock",
                                   "--peer-listen", "127.0.0.1:" + std::to_string(peer_a_)};
  sockets_.push_back(args.back());
  agent_ = std::make_unique<Proc>(bed_->spawn(args));
  ASSERT_TRUE(eventually([&] { return httpGet(http_port_, "/readyz").first == 200; }, 10000))
      << agent_->output();
  EXPECT_FALSE(smik::testing::connectLoopback(peer_a_)) << "something listens on the peer port";
  EXPECT_NE(agent_->output().find("--peer-tls-cert"), std::string::npos) << agent_->output();
  stopAgent();
}

}  // namespace
}  // namespace smik::e2e
