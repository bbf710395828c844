// Cluster-wide TrafficMetrics (api/peer): two nodes' stores, each holding the
// half of a connection its kernel saw, merged into the numbers one node with
// both ends would report; the JSON the SMI API renders from the merge; the
// partial marker when a peer fails; the gRPC fan-out over mutual TLS against
// in-process peers (a real PeerServer, and a fake one that never answers in
// time); peer discovery and flag parsing.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/compile/compile.h"
#include "agent/model/parse.h"
#include "api/smi/smi_metrics.h"
#include "api/peer/discovery.h"
#include "api/smi/merged_view.h"
#include "api/peer/peer_api.h"
#include "api/peer/peer_grpc.h"
#include "smik/v1/smik.grpc.pb.h"
#include "tests/testbed/certs.h"
#include "tests/unit/state_of.h"

namespace smik::peer {
namespace {

using json = nlohmann::json;
using api::MetricsQuery;
using api::ResourceAnswer;
using api::answerQuery;
using api::PeerResult;
using api::PeerFanout;
using api::MergedView;
using telemetry::Counts;
using telemetry::Histogram;
using telemetry::ResourceRef;
using telemetry::Side;
using telemetry::Store;

const std::string kBase = api::kSmiMetricsBase;

using smik::testing::stateOf;

std::string podYaml(const std::string& name, const std::string& rs, const std::string& node,
                    const std::string& ip) {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: app, " +
         "ownerReferences: [{kind: ReplicaSet, name: " + rs + ", controller: true}]}\n" +
         "spec: {nodeName: " + node + "}\nstatus: {phase: Running, podIP: " + ip + "}\n---\n";
}

// Deployments client and web, one pod of each per node; a TrafficSplit on web.
const std::string kCluster =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n---\n"
    "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web-1, namespace: app, "
    "ownerReferences: [{kind: Deployment, name: web, controller: true}]}\n---\n"
    "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: client-1, namespace: app, "
    "ownerReferences: [{kind: Deployment, name: client, controller: true}]}\n---\n"
    "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: web-split, "
    "namespace: app}\nspec: {service: web, backends: [{service: web-v1, weight: 90}, "
    "{service: web-v2, weight: 10}]}\n---\n" +
    podYaml("client-a", "client-1", "node-a", "10.0.0.1") +
    podYaml("client-b", "client-1", "node-b", "10.0.0.2") +
    podYaml("web-a", "web-1", "node-a", "10.0.0.11") +
    podYaml("web-b", "web-1", "node-b", "10.0.0.12");

// node-b has heard of a pod node-a has not (yet).
const std::string kClusterAtB = kCluster + podYaml("late", "web-1", "node-b", "10.0.0.13");

struct Conn {
  const char* client;
  const char* server;
  smik_conn_stats stats{};
};

maps::ConnEdge edge(const Conn& c) {
  maps::ConnEdge e;
  e.key.family = SMIK_AF_INET;
  e.key.proto = SMIK_PROTO_TCP;
  e.key.port = 8080;
  smik::Addr a;
  smik::parseAddr(c.client, &a);
  std::memcpy(e.key.client, a.bytes.data(), 16);
  smik::parseAddr(c.server, &a);
  std::memcpy(e.key.server, a.bytes.data(), 16);
  e.stats = c.stats;
  return e;
}

void samples(uint32_t* hist, uint64_t us, uint32_t n) { hist[smik_hist_bucket(us)] += n; }

// What each node's kernel counted:
//   node-a: client-a -> web-a, both ends here: 90 established (1 ms handshakes).
//           client-a -> web-b, client end only: 4 established (2 ms), 2 refused,
//           1 timed out (dropped by node-b's policy: node-a cannot know why).
//           client-b -> web-a, server end only: 5 accepted.
//   node-b: client-a -> web-b, server end only: 4 accepted, 1 denied by policy.
//           client-b -> web-b, both ends here: 10 established (50 ms).
//           client-b -> web-a, client end only: 5 established (3 ms).
std::vector<maps::ConnEdge> nodeAKernel() {
  Conn local{"10.0.0.1", "10.0.0.11"};
  local.stats.client_success = local.stats.server_success = 90;
  samples(local.stats.handshake_us, 1000, 90);
  samples(local.stats.srtt_us, 900, 180);
  Conn out{"10.0.0.1", "10.0.0.12"};
  out.stats.client_success = 4;
  out.stats.client_refused = 2;
  out.stats.client_timeout = 1;
  samples(out.stats.handshake_us, 2000, 4);
  samples(out.stats.srtt_us, 1900, 4);
  Conn in{"10.0.0.2", "10.0.0.11"};
  in.stats.server_success = 5;
  samples(in.stats.srtt_us, 2900, 5);
  return {edge(local), edge(out), edge(in)};
}

std::vector<maps::ConnEdge> nodeBKernel() {
  Conn in{"10.0.0.1", "10.0.0.12"};
  in.stats.server_success = 4;
  in.stats.server_policy = 1;
  samples(in.stats.srtt_us, 1800, 4);
  Conn local{"10.0.0.2", "10.0.0.12"};
  local.stats.client_success = local.stats.server_success = 10;
  samples(local.stats.handshake_us, 50000, 10);
  samples(local.stats.srtt_us, 49000, 20);
  Conn out{"10.0.0.2", "10.0.0.11"};
  out.stats.client_success = 5;
  samples(out.stats.handshake_us, 3000, 5);
  samples(out.stats.srtt_us, 3100, 5);
  return {edge(in), edge(local), edge(out)};
}

ResourceRef pod(const std::string& name) { return {"Pod", "app", name}; }
ResourceRef deployment(const std::string& name) { return {"Deployment", "app", name}; }

// A peer for MergedView without gRPC: answers from stores, or fails.
class FakeFanout : public PeerFanout {
 public:
  struct Peer {
    std::string node;
    const Store* store = nullptr;  // nullptr: fails
  };
  std::vector<Peer> peers;
  std::vector<MetricsQuery> asked;

  std::vector<PeerResult> query(const MetricsQuery& q) override {
    asked.push_back(q);
    std::vector<PeerResult> out;
    for (const auto& p : peers) {
      PeerResult r;
      r.node = p.node;
      r.ok = p.store != nullptr;
      if (r.ok)
        r.answer = answerQuery(*p.store, p.node, q);
      else
        r.error = "deadline exceeded";
      out.push_back(std::move(r));
    }
    return out;
  }
};

class Merge : public ::testing::Test {
 protected:
  void SetUp() override {
    a.setTopology(stateOf(kCluster), compile::Plan{});
    b.setTopology(stateOf(kClusterAtB), compile::Plan{});
    const auto now = std::chrono::system_clock::now();
    a.sample(nodeAKernel(), now);
    b.sample(nodeBKernel(), now);
    fanout.peers = {{"node-b", &b}};
  }

  // As the HTTP server asks: this node's store merged with the peers'.
  MergedView view(int window_s = 30) { return MergedView(a, "node-a", fanout, window_s); }

  json get(const telemetry::MetricsView& v, const std::string& path,
           std::vector<std::string>* missing = nullptr) {
    auto r = api::handleSmiMetrics(v, kBase + path, "");
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    if (missing) *missing = r.missing_nodes;
    return json::parse(r.body);
  }

  Store a{600}, b{600};
  FakeFanout fanout;
};

std::string metric(const json& item, const std::string& name) {
  for (const auto& m : item["metrics"])
    if (m["name"] == name) return m["value"].get<std::string>();
  return "<missing>";
}

TEST_F(Merge, ServerOnAnotherNodeGetsItsServerSideCounts) {
  // Alone, node-a knows only what web-b's clients on node-a saw of it.
  Counts alone = a.inbound(pod("web-b"), 30);
  EXPECT_EQ(alone.success, 0u);
  EXPECT_EQ(alone.refused, 2u);

  MergedView v = view();
  Counts c = v.inbound(pod("web-b"), 30);
  EXPECT_EQ(c.success, 14u);  // 4 from client-a, 10 from client-b: both accepted on node-b
  EXPECT_EQ(c.refused, 2u);   // the refusals only client-a's kernel saw
  EXPECT_EQ(c.policy, 1u);    // denied by node-b's policy, counted there
  EXPECT_EQ(c.timeout, 0u);   // the client's view of that denial is not the server's
  EXPECT_EQ(c.failure(), 3u);
  // Every client's handshake, wherever its client ran: never a blend with srtt.
  EXPECT_EQ(c.handshake_us.count(), 14u);
  EXPECT_TRUE(v.missingNodes().empty());
}

TEST_F(Merge, PercentilesAreOfTheMergedDistribution) {
  MergedView v = view();
  Counts web = v.inbound(deployment("web"), 30);
  EXPECT_EQ(web.success, 109u);
  Histogram combined;  // every handshake to web, from either node
  combined.buckets[smik_hist_bucket(1000)] += 90;
  combined.buckets[smik_hist_bucket(2000)] += 4;
  combined.buckets[smik_hist_bucket(3000)] += 5;
  combined.buckets[smik_hist_bucket(50000)] += 10;
  EXPECT_EQ(web.latency().buckets, combined.buckets);
  for (double q : {0.5, 0.9, 0.99}) EXPECT_EQ(web.latency().quantile(q), combined.quantile(q)) << q;
  // Neither node's own p90 is the cluster's (1 ms at node-a, 50 ms at node-b,
  // 3 ms together), nor is any blend of the two.
  EXPECT_EQ(a.inbound(deployment("web"), 30).latency().quantile(0.9), Histogram::bucketMid(smik_hist_bucket(1000)));
  EXPECT_EQ(b.inbound(deployment("web"), 30).latency().quantile(0.9), Histogram::bucketMid(smik_hist_bucket(50000)));
  EXPECT_EQ(combined.quantile(0.9), Histogram::bucketMid(smik_hist_bucket(3000)));

  // And the API renders the merged quantiles.
  json item = get(v, "/namespaces/app/deployments/web");
  EXPECT_EQ(metric(item, "success_count"), "109");
  EXPECT_EQ(metric(item, "failure_count"), "3");
  EXPECT_EQ(metric(item, "p90_response_latency"),
            api::quantityFromMilli(static_cast<int64_t>(combined.quantile(0.9))));
  EXPECT_EQ(metric(item, "p99_response_latency"),
            api::quantityFromMilli(static_cast<int64_t>(combined.quantile(0.99))));
}

TEST_F(Merge, EdgesOfTheSamePeerAndSideAdd) {
  MergedView v = view();
  auto edges = v.edges(pod("web-b"), 30);
  ASSERT_EQ(edges.size(), 2u);
  // Sorted by peer: client-a, then client-b; both "from" (server side).
  EXPECT_EQ(edges[0].peer, pod("client-a"));
  EXPECT_EQ(edges[0].side, Side::kServer);
  EXPECT_EQ(edges[0].counts.success, 4u);   // node-b
  EXPECT_EQ(edges[0].counts.failure(), 3u);  // 2 refused (node-a) + 1 policy (node-b)
  // The handshakes are node-a's half of these very connections.
  EXPECT_EQ(edges[0].counts.handshake_us.count(), 4u);
  EXPECT_EQ(edges[1].peer, pod("client-b"));
  EXPECT_EQ(edges[1].counts.success, 10u);

  // Accepted on node-a from a client on node-b: the handshakes are only in
  // node-b's store, on an edge that there has samples and no count.
  auto in_a = v.edges(pod("web-a"), 30);
  ASSERT_EQ(in_a.size(), 2u);
  EXPECT_EQ(in_a[1].peer, pod("client-b"));
  EXPECT_EQ(in_a[1].side, Side::kServer);
  EXPECT_EQ(in_a[1].counts.success, 5u);
  EXPECT_EQ(in_a[1].counts.handshake_us.count(), 5u);
  EXPECT_EQ(a.edges(pod("web-a"), 30)[1].counts.handshake_us.count(), 0u) << "node-a alone";

  // The client's side: "to" edges, counted at node-a only, never doubled by
  // the srtt samples node-b holds for the same connections.
  auto out = v.edges(pod("client-a"), 30);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].peer, pod("web-a"));
  EXPECT_EQ(out[0].side, Side::kClient);
  EXPECT_EQ(out[0].counts.success, 90u);
  EXPECT_EQ(out[1].peer, pod("web-b"));
  EXPECT_EQ(out[1].side, Side::kClient);
  EXPECT_EQ(out[1].counts.success, 4u);
  EXPECT_EQ(out[1].counts.failure(), 3u);
  EXPECT_EQ(out[1].counts.handshake_us.count(), 4u);

  json list = get(v, "/namespaces/app/pods/web-b/edges");
  ASSERT_EQ(list["items"].size(), 2u) << list.dump(1);
  EXPECT_EQ(list["items"][0]["edge"]["direction"], "from");
  EXPECT_EQ(list["items"][0]["edge"]["resource"]["name"], "client-a");
  EXPECT_EQ(metric(list["items"][0], "success_count"), "4");
  EXPECT_EQ(metric(list["items"][0], "failure_count"), "3");
}

TEST_F(Merge, ListsAreUnions) {
  MergedView v = view();
  auto pods = v.list("Pod", "app");
  std::vector<ResourceRef> want = {pod("client-a"), pod("client-b"), pod("late"), pod("web-a"),
                                   pod("web-b")};
  EXPECT_EQ(pods, want);
  json list = get(v, "/namespaces/app/pods");
  ASSERT_EQ(list["items"].size(), 5u);
  EXPECT_EQ(list["items"][2]["resource"]["name"], "late");
  EXPECT_EQ(list["items"][4]["resource"]["name"], "web-b");
  EXPECT_EQ(metric(list["items"][4], "success_count"), "14");
  // A resource only a peer knows exists, with the peer's numbers.
  EXPECT_TRUE(v.exists(pod("late")));
  EXPECT_FALSE(v.exists(pod("nobody")));
}

TEST_F(Merge, OneFanOutPerRequest) {
  MergedView list_view = view();
  get(list_view, "/namespaces/app/pods");  // a list and every item's numbers
  EXPECT_EQ(fanout.asked.size(), 1u);
  MergedView edges_view = view();
  get(edges_view, "/namespaces/app/pods/web-b/edges");  // exists, then the edges
  EXPECT_EQ(fanout.asked.size(), 2u);
  EXPECT_EQ(fanout.asked[1].name, "web-b");
  EXPECT_EQ(fanout.asked[1].window_s, 30);
}

TEST_F(Merge, SplitBackendsAdd) {
  // Connections through the split as a peer saw them (its clients).
  class SplitPeer : public PeerFanout {
   public:
    std::vector<PeerResult> query(const MetricsQuery& q) override {
      PeerResult r{"node-b", true, "", {"node-b", q.window_s, {}}};
      ResourceAnswer a;
      a.ref = {"TrafficSplit", "app", "web-split"};
      a.exists = true;
      Counts v1, v3;
      v1.success = 9;
      v3.success = 1;
      a.split = {{"web", "web-v1", 90, v1}, {"web", "web-v3", 5, v3}};
      r.answer.resources.push_back(a);
      return {r};
    }
  } peer;
  MergedView v(a, "node-a", peer, 30);
  auto backends = v.split({"TrafficSplit", "app", "web-split"}, 30);
  ASSERT_EQ(backends.size(), 3u);
  EXPECT_EQ(backends[0].backend, "web-v1");
  EXPECT_EQ(backends[0].counts.success, 9u);
  EXPECT_EQ(backends[1].backend, "web-v2");  // node-a's spec order first
  EXPECT_EQ(backends[1].counts.success, 0u);
  EXPECT_EQ(backends[2].backend, "web-v3");  // then what only the peer knows
}

TEST_F(Merge, FailedPeerIsNamedAndEveryItemMarked) {
  fanout.peers.push_back({"node-c", nullptr});
  MergedView v = view();
  std::vector<std::string> missing;
  json item = get(v, "/namespaces/app/pods/web-b", &missing);
  EXPECT_EQ(missing, std::vector<std::string>{"node-c"});
  EXPECT_EQ(metric(item, "success_count"), "14");  // what did answer is served
  EXPECT_EQ(item["metadata"]["annotations"][api::kPartialAnnotation], "true");
  EXPECT_EQ(item["metadata"]["annotations"][api::kMissingNodesAnnotation], "node-c");

  MergedView lv = view();
  json list = get(lv, "/namespaces/app/pods");
  ASSERT_EQ(list["items"].size(), 5u);
  for (const auto& i : list["items"])
    EXPECT_EQ(i["metadata"]["annotations"][api::kMissingNodesAnnotation], "node-c") << i.dump();
  EXPECT_FALSE(list["metadata"].contains("annotations")) << "ListMeta has no annotations";

  // Every peer answering: no marks.
  fanout.peers.pop_back();
  MergedView whole = view();
  json full = get(whole, "/namespaces/app/pods/web-b", &missing);
  EXPECT_TRUE(missing.empty());
  EXPECT_FALSE(full["metadata"].contains("annotations")) << full.dump(1);
}

TEST_F(Merge, ANodeCountsOnce) {
  // node-b reached twice (listed and discovered), and this node in its own
  // peer list: each node's connections once.
  fanout.peers = {{"node-b", &b}, {"node-b", &b}, {"node-a", &a}};
  MergedView v = view();
  EXPECT_EQ(v.inbound(pod("web-b"), 30).success, 14u);
  EXPECT_EQ(v.inbound(pod("web-a"), 30).success, 95u);
}

TEST_F(Merge, WithoutPeersTheJsonIsTheStoresOwn) {
  fanout.peers.clear();
  for (const char* path : {"/namespaces/app/pods", "/namespaces/app/pods/web-b/edges",
                           "/namespaces/app/deployments/web", "/namespaces/app/trafficsplits/web-split",
                           "/namespaces/app/pods/client-a/edges"}) {
    MergedView v = view();
    auto merged = api::handleSmiMetrics(v, kBase + path, "");
    auto plain = api::handleSmiMetrics(a, kBase + path, "");
    EXPECT_EQ(merged.status, plain.status) << path;
    EXPECT_EQ(merged.body, plain.body) << path;
  }
}

// ---- over gRPC, mutual TLS ----------------------------------------------------------------

// One CA, peers' certificates and a few bad ones, made once for every test.
class Certs {
 public:
  static testbed::CertDir& get() {
    auto& d = holder();
    if (!d) {
      d = std::make_unique<testbed::CertDir>("smik-peer-test");
      d->makeCa("ca");
      d->makeCa("other-ca");
      d->makeCert("node-a", "ca", kDefaultServerName);
      d->makeCert("node-b", "ca", kDefaultServerName);
      d->makeCert("stranger", "other-ca", kDefaultServerName);
      d->makeCert("unnamed", "ca", "someone-else.example");
    }
    return *d;
  }
  static void remove() { holder().reset(); }
  static Tls tls(const std::string& cert, const std::string& ca = "ca") {
    Tls t;
    std::string err;
    auto& d = get();
    EXPECT_TRUE(loadTls({d.crt(cert), d.key(cert), d.crt(ca), kDefaultServerName}, &t, &err))
        << err;
    return t;
  }

 private:
  static std::unique_ptr<testbed::CertDir>& holder() {
    static std::unique_ptr<testbed::CertDir> dir;
    return dir;
  }
};

// Removes the certificates after the last test, also when one failed.
class CertCleanup : public ::testing::Environment {
 public:
  void TearDown() override { Certs::remove(); }
};
[[maybe_unused]] const auto* const kCertCleanup =
    ::testing::AddGlobalTestEnvironment(new CertCleanup);

// A peer that takes longer than anyone waits: a node whose agent hangs.
class SlowPeer final : public v1::Peer::Service {
 public:
  grpc::Status QueryMetrics(grpc::ServerContext* ctx, const v1::MetricsQuery*,
                            v1::MetricsAnswer*) override {
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!ctx->IsCancelled() && std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return {grpc::StatusCode::CANCELLED, "gave up"};
  }
};

std::unique_ptr<grpc::Server> serveTls(grpc::Service* service, const Tls& tls, int* port) {
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = tls.ca;
  opts.pem_key_cert_pairs.push_back({tls.key, tls.cert});
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(opts), port);
  b.RegisterService(service);
  return b.BuildAndStart();
}

std::string addr(int port) { return "127.0.0.1:" + std::to_string(port); }

class OverGrpc : public Merge {
 protected:
  void SetUp() override {
    Merge::SetUp();
    std::string err;
    ASSERT_TRUE(server_b.start("127.0.0.1:0", Certs::tls("node-b"), b, "node-b", &err)) << err;
  }

  std::unique_ptr<GrpcFanout> fanoutTo(std::vector<PeerAddr> peers, const Tls& tls,
                                       int timeout_ms = 5000) {
    return std::make_unique<GrpcFanout>(tls, std::chrono::milliseconds(timeout_ms),
                                        [peers] { return peers; });
  }

  PeerServer server_b;
};

TEST_F(OverGrpc, MergesAPeersAnswer) {
  // Named by the address only: the peer's answer names its node.
  auto f = fanoutTo({{"", addr(server_b.port())}}, Certs::tls("node-a"));
  MergedView v(a, "node-a", *f, 30);
  json item = get(v, "/namespaces/app/deployments/web");
  EXPECT_EQ(metric(item, "success_count"), "109");
  EXPECT_FALSE(item["metadata"].contains("annotations"));
  auto e = v.edges(pod("web-b"), 30);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].counts.failure(), 3u);
  EXPECT_EQ(e[0].counts.handshake_us.count(), 4u);  // histograms survive the wire
  EXPECT_NE(f->prometheusText().find(
                "smik_peer_requests_total{peer=\"node-b\",outcome=\"ok\"} 2"),
            std::string::npos)
      << f->prometheusText();
}

TEST_F(OverGrpc, SlowPeerTimesOutAndTheAnswerIsPartial) {
  SlowPeer slow;
  int slow_port = 0;
  auto slow_server = serveTls(&slow, Certs::tls("node-b"), &slow_port);
  ASSERT_TRUE(slow_server && slow_port);
  auto f = fanoutTo({{"node-b", addr(server_b.port())}, {"node-slow", addr(slow_port)}},
                    Certs::tls("node-a"), 1000);
  MergedView v(a, "node-a", *f, 30);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> missing;
  json item = get(v, "/namespaces/app/pods/web-b", &missing);
  // Not a performance bound: the slow peer holds its answer for 30 s; the
  // request must come back long before that.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(missing, std::vector<std::string>{"node-slow"});
  EXPECT_EQ(metric(item, "success_count"), "14") << "node-b's numbers are still merged";
  EXPECT_EQ(item["metadata"]["annotations"][api::kPartialAnnotation], "true");
  EXPECT_EQ(item["metadata"]["annotations"][api::kMissingNodesAnnotation], "node-slow");
  const std::string prom = f->prometheusText();
  EXPECT_NE(prom.find("smik_peer_requests_total{peer=\"node-slow\",outcome=\"timeout\"} 1"),
            std::string::npos)
      << prom;
  EXPECT_NE(prom.find("smik_peer_requests_total{peer=\"node-b\",outcome=\"ok\"} 1"),
            std::string::npos)
      << prom;
  slow_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

TEST_F(OverGrpc, ACertificateFromAnotherCaIsRefused) {
  // Trusts the peer, but its own certificate is not signed by the peers' CA.
  Tls t = Certs::tls("stranger");
  t.ca = Certs::tls("node-a").ca;
  auto f = fanoutTo({{"node-b", addr(server_b.port())}}, t);
  auto r = f->query({"Pod", "app", "web-b", 30});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].ok);
  EXPECT_EQ(r[0].node, "node-b");
  EXPECT_NE(f->prometheusText().find("peer=\"node-b\",outcome=\"unavailable\""), std::string::npos)
      << f->prometheusText();
}

TEST_F(OverGrpc, AClientCertificateWithoutThePeerNameIsDenied) {
  auto f = fanoutTo({{"node-b", addr(server_b.port())}}, Certs::tls("unnamed"));
  auto r = f->query({"Pod", "app", "web-b", 30});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].ok);
  EXPECT_NE(r[0].error.find("DNS SAN"), std::string::npos) << r[0].error;
  EXPECT_NE(f->prometheusText().find("outcome=\"denied\""), std::string::npos);
}

TEST_F(OverGrpc, TheServerNameIsVerified) {
  PeerServer impostor;  // the right CA, another name
  std::string err;
  ASSERT_TRUE(impostor.start("127.0.0.1:0", Certs::tls("unnamed"), b, "node-x", &err)) << err;
  auto f = fanoutTo({{"node-x", addr(impostor.port())}}, Certs::tls("node-a"));
  auto r = f->query({"Pod", "app", "web-b", 30});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].ok);
}

TEST_F(OverGrpc, OnlyThePeerServiceIsServed) {
  Tls t = Certs::tls("node-a");
  grpc::SslCredentialsOptions opts{t.ca, t.key, t.cert};
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(kDefaultServerName);
  auto channel = grpc::CreateCustomChannel(addr(server_b.port()), grpc::SslCredentials(opts), args);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::StatusReply reply;
  auto status = v1::Agent::NewStub(channel)->Status(&ctx, v1::StatusRequest{}, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();

  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::MetricsQuery q;
  q.set_kind("Secret");
  v1::MetricsAnswer answer;
  status = v1::Peer::NewStub(channel)->QueryMetrics(&ctx2, q, &answer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// ---- configuration ------------------------------------------------------------------------

TEST(PeerApiConfig, NoListenerWithoutTls) {
  Store store;
  PeerConfig cfg;
  cfg.listen = "127.0.0.1:0";
  PeerApi api;
  auto errors = api.start(cfg, store, "node-a");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("--peer-tls-cert"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("--peer-tls-key"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("--peer-tls-ca"), std::string::npos) << errors[0];
  EXPECT_EQ(api.fanout(), nullptr);

  PeerConfig only_key = cfg;
  only_key.tls_cert = Certs::get().crt("node-a");
  only_key.tls_ca = Certs::get().crt("ca");
  PeerApi api2;
  errors = api2.start(only_key, store, "node-a");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("--peer-tls-key"), std::string::npos) << errors[0];
  EXPECT_EQ(errors[0].find("--peer-tls-cert"), std::string::npos) << errors[0];

  PeerConfig peers_only;
  peers_only.peers = "node-b=127.0.0.1:1";
  PeerApi api3;
  EXPECT_EQ(api3.start(peers_only, store, "node-a").size(), 1u);
  EXPECT_EQ(api3.fanout(), nullptr);

  PeerApi off;  // nothing asked: a single node, no error
  EXPECT_TRUE(off.start(PeerConfig{}, store, "node-a").empty());
  EXPECT_EQ(off.fanout(), nullptr);
}

TEST(PeerApiConfig, StartsWithTls) {
  Store store;
  PeerConfig cfg;
  cfg.listen = "127.0.0.1:0";
  cfg.tls_cert = Certs::get().crt("node-a");
  cfg.tls_key = Certs::get().key("node-a");
  cfg.tls_ca = Certs::get().crt("ca");
  PeerApi api;
  auto errors = api.start(cfg, store, "node-a");
  EXPECT_TRUE(errors.empty()) << errors[0];
  EXPECT_NE(api.fanout(), nullptr);
  cfg.peers = "node-b=nonsense";
  PeerApi bad;
  errors = bad.start(cfg, store, "node-a");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("--peers"), std::string::npos);
}

TEST(Discovery, OtherNodesAgentPods) {
  auto state = stateOf(R"(
apiVersion: v1
kind: Pod
metadata: {name: agent-a, namespace: smik-system, labels: {app.kubernetes.io/name: smik-agent}}
spec: {nodeName: node-a, hostNetwork: true}
status: {phase: Running, podIP: 192.168.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-b, namespace: smik-system, labels: {app.kubernetes.io/name: smik-agent}}
spec: {nodeName: node-b, hostNetwork: true}
status: {phase: Running, podIP: 192.168.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-c, namespace: smik-system, labels: {app.kubernetes.io/name: smik-agent}}
spec: {nodeName: node-c}
status: {phase: Running, podIP: "fd00::3"}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-d, namespace: smik-system, labels: {app.kubernetes.io/name: smik-agent}}
spec: {nodeName: node-d}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: smik-system, labels: {app.kubernetes.io/name: something}}
spec: {nodeName: node-e}
status: {phase: Running, podIP: 192.168.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-f, namespace: default, labels: {app.kubernetes.io/name: smik-agent}}
spec: {nodeName: node-f}
status: {phase: Running, podIP: 192.168.0.6}
)");
  DiscoveryConfig cfg;
  std::string err;
  ASSERT_TRUE(LabelSelector::parse("app.kubernetes.io/name=smik-agent", &cfg.selector, &err));
  cfg.self_node = "node-a";
  auto peers = discoverPeers(state, cfg);
  std::vector<PeerAddr> want = {{"node-b", "192.168.0.2:9465"}, {"node-c", "[fd00::3]:9465"}};
  EXPECT_EQ(peers, want);
}

TEST(Discovery, SelectorsAndPeerLists) {
  LabelSelector s;
  std::string err;
  ASSERT_TRUE(LabelSelector::parse("app=smik, tier!=test,canary,!legacy", &s, &err)) << err;
  EXPECT_TRUE(s.matches({{"app", "smik"}, {"canary", ""}}));
  EXPECT_FALSE(s.matches({{"app", "smik"}, {"canary", ""}, {"tier", "test"}}));
  EXPECT_FALSE(s.matches({{"app", "smik"}, {"canary", ""}, {"legacy", "1"}}));
  EXPECT_FALSE(s.matches({{"app", "smik"}}));
  EXPECT_FALSE(s.matches({{"app", "other"}, {"canary", ""}}));
  EXPECT_FALSE(LabelSelector::parse("app in (a,b)", &s, &err));
  EXPECT_NE(err.find("set-based"), std::string::npos);

  std::vector<PeerAddr> peers;
  ASSERT_TRUE(parsePeerList("node-b=10.0.0.2:9465, [fd00::1]:9465,host.example:1", &peers, &err))
      << err;
  std::vector<PeerAddr> want = {
      {"node-b", "10.0.0.2:9465"}, {"", "[fd00::1]:9465"}, {"", "host.example:1"}};
  EXPECT_EQ(peers, want);
  for (const char* bad : {"10.0.0.2", "node=:1", "=1.2.3.4:5", "fd00::1:9465", "a:0", "a:65536"})
    EXPECT_FALSE(parsePeerList(bad, &peers, &err)) << bad;
}

}  // namespace
}  // namespace smik::peer
