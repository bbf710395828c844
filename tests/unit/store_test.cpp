// The telemetry store: cumulative kernel reads become per-interval deltas,
// attributed to pods and their owners, summed over windows.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>

#include "agent/model/parse.h"
#include "agent/compile/compile.h"
#include "agent/telemetry/store.h"
#include "tests/unit/state_of.h"

namespace smik::telemetry {
namespace {

using Clock = std::chrono::system_clock;

using smik::testing::stateOf;

const char* kTopology = R"(
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-1a, namespace: shop, ownerReferences: [{kind: Deployment, name: web, controller: true}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1a-x, namespace: shop, ownerReferences: [{kind: ReplicaSet, name: web-1a, controller: true}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, ownerReferences: [{kind: StatefulSet, name: db, controller: true}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cache-2b-y, namespace: shop, labels: {pod-template-hash: 2b}, ownerReferences: [{kind: ReplicaSet, name: cache-2b, controller: true}]}
status: {phase: Running, podIP: 10.0.0.3}
)";

// client -> server:5432 over TCP, as the kernel keys an edge.
smik_conn_key edgeKey(const char* client, const char* server) {
  smik_conn_key k{};
  k.family = SMIK_AF_INET;
  k.proto = SMIK_PROTO_TCP;
  k.port = 5432;
  smik::Addr a;
  smik::parseAddr(client, &a);
  std::memcpy(k.client, a.bytes.data(), 16);
  smik::parseAddr(server, &a);
  std::memcpy(k.server, a.bytes.data(), 16);
  return k;
}

maps::ConnEdge edge(const char* client, const char* server, uint64_t ok, uint64_t refused,
                    uint64_t server_ok) {
  maps::ConnEdge e;
  e.key = edgeKey(client, server);
  e.stats.client_success = ok;
  e.stats.client_refused = refused;
  e.stats.server_success = server_ok;
  e.stats.handshake_us[smik_hist_bucket(200)] = ok;
  return e;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { store.setTopology(stateOf(kTopology), compile::Plan{}); }
  void at(int second, std::vector<maps::ConnEdge> read) {
    store.sample(read, t0 + std::chrono::seconds(second));
  }
  Store store{600};
  Clock::time_point t0 = Clock::now();
};

// The HTTP judge's responses on the same edge, cumulative: ok 2xx and
// failed 5xx to GET, each answered in 300 µs.
maps::HttpEdge httpEdge(const char* client, const char* server, uint64_t ok, uint64_t failed) {
  maps::HttpEdge e;
  e.key = edgeKey(client, server);
  e.stats.answers[SMIK_HTTP_M_GET][2] = ok;
  e.stats.answers[SMIK_HTTP_M_GET][5] = failed;
  e.stats.response_us[smik_hist_bucket(300)] = static_cast<uint32_t>(ok + failed);
  return e;
}

TEST_F(StoreTest, HttpEdgesReportRequestsOnBothEndsOnce) {
  store.sample({edge("10.0.0.1", "10.0.0.2", 1, 0, 1)}, {httpEdge("10.0.0.1", "10.0.0.2", 10, 2)},
               t0);
  store.sample({edge("10.0.0.1", "10.0.0.2", 2, 0, 2)}, {httpEdge("10.0.0.1", "10.0.0.2", 17, 3)},
               t0 + std::chrono::seconds(10));
  auto to = store.edges({"Pod", "shop", "web-1a-x"}, 5);
  ASSERT_EQ(to.size(), 1u);
  EXPECT_EQ(to[0].side, Side::kClient);
  EXPECT_TRUE(to[0].counts.countsRequests());
  EXPECT_EQ(to[0].counts.reportedSuccess(), 7u);
  EXPECT_EQ(to[0].counts.reportedFailure(), 1u);
  EXPECT_EQ(to[0].counts.success, 1u) << "the connection stays counted as one";
  EXPECT_EQ(to[0].counts.latency().count(), 8u);
  EXPECT_DOUBLE_EQ(to[0].counts.latency().quantile(0.5), Histogram::bucketMid(smik_hist_bucket(300)));
  auto from = store.edges({"Pod", "data", "db-0"}, 5);
  ASSERT_EQ(from.size(), 1u);
  EXPECT_EQ(from[0].counts.reportedSuccess(), 7u);
  EXPECT_EQ(from[0].counts.reportedFailure(), 1u);
  Counts in = store.inbound({"Pod", "data", "db-0"}, 600);
  EXPECT_EQ(in.reportedSuccess(), 17u);
  EXPECT_EQ(in.reportedFailure(), 3u);
  // Prometheus: cumulative, by workload pair, and still there once the
  // kernel evicted the edge.
  store.sample({}, {}, t0 + std::chrono::seconds(20));
  auto totals = store.httpTotals();
  ASSERT_EQ(totals.size(), 1u);
  EXPECT_EQ(totals[0].src_workload, "web");
  EXPECT_EQ(totals[0].dst_workload, "db");
  EXPECT_EQ(totals[0].answers[SMIK_HTTP_M_GET][2], 17u);
  EXPECT_EQ(totals[0].answers[SMIK_HTTP_M_GET][5], 3u);
  EXPECT_EQ(totals[0].response_us.count(), 20u);
}

TEST_F(StoreTest, EdgesWithoutHttpResponsesReportConnections) {
  at(0, {edge("10.0.0.1", "10.0.0.2", 0, 0, 0)});
  at(10, {edge("10.0.0.1", "10.0.0.2", 4, 1, 4)});
  auto to = store.edges({"Pod", "shop", "web-1a-x"}, 5);
  ASSERT_EQ(to.size(), 1u);
  EXPECT_FALSE(to[0].counts.countsRequests());
  EXPECT_EQ(to[0].counts.reportedSuccess(), 4u);
  EXPECT_EQ(to[0].counts.reportedFailure(), 1u);
  EXPECT_EQ(&to[0].counts.latency(), &to[0].counts.handshake_us);
}

TEST_F(StoreTest, CumulativeReadsBecomeWindowedDeltas) {
  at(0, {edge("10.0.0.1", "10.0.0.2", 10, 1, 10)});  // history before the window
  at(10, {edge("10.0.0.1", "10.0.0.2", 15, 1, 15)});
  at(20, {edge("10.0.0.1", "10.0.0.2", 22, 3, 22)});
  ResourceRef web{"Pod", "shop", "web-1a-x"};
  // An interval counts when it ends inside the window (reads are 1 s apart
  // in the agent; 10 s here to make the arithmetic plain).
  auto e = store.edges(web, 5);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].peer, (ResourceRef{"Pod", "data", "db-0"}));
  EXPECT_EQ(e[0].side, Side::kClient);
  EXPECT_EQ(e[0].counts.success, 7u) << "only the interval ending at 20 s";
  EXPECT_EQ(e[0].counts.refused, 2u);
  EXPECT_EQ(store.edges(web, 15)[0].counts.success, 12u);
  EXPECT_EQ(store.edges(web, 60)[0].counts.success, 22u) << "the first read counts from zero";
  EXPECT_NEAR(e[0].counts.handshake_us.quantile(0.5), 200, 200 * 0.05);
}

TEST_F(StoreTest, ServerSideAndResourceTotals) {
  at(1, {edge("10.0.0.1", "10.0.0.2", 4, 2, 4)});
  ResourceRef db{"Pod", "data", "db-0"};
  auto e = store.edges(db, 30);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].side, Side::kServer);
  EXPECT_EQ(e[0].peer.name, "web-1a-x");
  EXPECT_EQ(e[0].counts.success, 4u);
  EXPECT_EQ(e[0].counts.refused, 2u) << "a refusal is the server's answer";
  EXPECT_EQ(store.inbound(db, 30).success, 4u);
  EXPECT_EQ(store.inbound({"Pod", "shop", "web-1a-x"}, 30).success, 0u);
}

TEST_F(StoreTest, OwnersAndNamespaces) {
  at(1, {edge("10.0.0.1", "10.0.0.2", 3, 0, 3), edge("10.0.0.3", "10.0.0.2", 5, 0, 5)});
  EXPECT_EQ(store.ownerOf("shop/web-1a-x", "Deployment"), (ResourceRef{"Deployment", "shop", "web"}));
  EXPECT_EQ(store.ownerOf("shop/cache-2b-y", "Deployment"), (ResourceRef{"Deployment", "shop", "cache"}))
      << "no ReplicaSet object: its name minus the pod-template-hash";
  EXPECT_EQ(store.ownerOf("data/db-0", "StatefulSet"), (ResourceRef{"StatefulSet", "data", "db"}));
  EXPECT_TRUE(store.ownerOf("data/db-0", "Deployment").name.empty());
  auto deployments = store.list("Deployment", "shop");
  EXPECT_EQ(deployments.size(), 2u);
  EXPECT_EQ(store.inbound({"StatefulSet", "data", "db"}, 30).success, 8u);
  auto ns = store.edges({"Namespace", "", "shop"}, 30);
  ASSERT_EQ(ns.size(), 1u);
  EXPECT_EQ(ns[0].peer, (ResourceRef{"Namespace", "", "data"}));
  EXPECT_EQ(ns[0].counts.success, 8u);
  EXPECT_TRUE(store.edges({"Deployment", "shop", "web"}, 30).empty())
      << "a Deployment's peers are Deployments; db-0 has none";
}

TEST_F(StoreTest, AnIpReusedLaterNeverInheritsHistory) {
  at(1, {edge("10.0.0.1", "10.0.0.2", 3, 0, 3)});
  // 10.0.0.1 now belongs to another pod: later deltas are its, earlier ones not.
  store.setTopology(stateOf(R"(
apiVersion: v1
kind: Pod
metadata: {name: newcomer, namespace: shop}
status: {phase: Running, podIP: 10.0.0.1}
)"), compile::Plan{});
  at(2, {edge("10.0.0.1", "10.0.0.2", 4, 0, 4)});
  EXPECT_EQ(store.inbound({"Pod", "shop", "newcomer"}, 30).success, 0u);
  auto e = store.edges({"Pod", "shop", "newcomer"}, 30);
  ASSERT_EQ(e.size(), 0u) << "its peer db-0 is no longer known in this topology";
}


// Addresses are named through the compiled plan's own address map (an index
// beside it) and, for the addresses the plan leaves out, a list aside: the
// same names as with no plan at all, whichever pod the compiler gave a shared
// address to, for a pod that no longer holds its address, a host-network
// pod and the node's own addresses.
TEST(StoreNames, ThroughThePlanTheSameAsWithout) {
  const model::ClusterState state = stateOf(R"(
apiVersion: v1
kind: Pod
metadata: {name: a-first, namespace: shop}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: z-last, namespace: shop}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: shop}
status: {phase: Succeeded, podIP: 10.0.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: dual, namespace: data}
status: {phase: Running, podIPs: [{ip: 10.0.0.7}, {ip: "fd00::7"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: kube-system}
spec: {hostNetwork: true, nodeName: n1}
status: {phase: Running, podIP: 192.168.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: data}
status: {phase: Pending}
)");
  compile::NodeConfig node;
  node.node_name = "n1";
  node.host_addrs = {"192.168.1.5", "192.168.1.6"};
  const auto plan = std::make_shared<const compile::Plan>(compile::compile(state, node));
  Addr shared;
  ASSERT_TRUE(parseAddr("10.0.0.5", &shared));
  ASSERT_TRUE(plan->ip_identity.count(shared)) << "the plan names the shared address";
  Store with, without;
  with.setTopology(std::make_shared<const model::ClusterState>(state), plan);
  without.setTopology(state, compile::Plan{});
  const std::map<std::string, std::string> want = {
      {"10.0.0.5", "shop/z-last"},  // the last by key, as always (the plan: a-first's)
      {"10.0.0.6", "shop/done"},    // not in the plan: it no longer holds it
      {"10.0.0.7", "data/dual"},
      {"fd00::7", "data/dual"},
      {"192.168.1.5", "192.168.1.5"},  // the node's, and a host-network pod's: nobody's
      {"192.168.1.6", "192.168.1.6"},
      {"10.0.0.8", "10.0.0.8"},
      {"::", "::"},
  };
  for (const auto& [text, name] : want) {
    Addr a;
    ASSERT_TRUE(parseAddr(text, &a)) << text;
    EXPECT_EQ(with.nameOf(a), name) << text;
    EXPECT_EQ(without.nameOf(a), name) << text;
  }
}

// The kernel's telemetry map is LRU: an idle edge may be evicted between two
// reads. When it comes back it counts from zero, and Prometheus' totals
// (cumulative) never go down.
TEST_F(StoreTest, AnEvictedEdgeCountsFromZeroWhenItComesBack) {
  auto totalSuccess = [&] {
    uint64_t n = 0;
    for (const auto& w : store.totals())
      if (w.side == Side::kClient) n += w.counts.success;
    return n;
  };
  at(0, {edge("10.0.0.1", "10.0.0.2", 10, 0, 10)});
  EXPECT_EQ(totalSuccess(), 10u);
  at(10, {});  // evicted
  EXPECT_EQ(totalSuccess(), 10u);
  // Back, from zero, with more than it had: all 12 are new.
  at(20, {edge("10.0.0.1", "10.0.0.2", 12, 0, 12)});
  ResourceRef web{"Pod", "shop", "web-1a-x"};
  EXPECT_EQ(store.edges(web, 5)[0].counts.success, 12u);
  EXPECT_EQ(store.edges(web, 60)[0].counts.success, 22u);
  EXPECT_EQ(totalSuccess(), 22u);
  at(30, {edge("10.0.0.1", "10.0.0.2", 15, 0, 15)});
  EXPECT_EQ(store.edges(web, 5)[0].counts.success, 3u);
  EXPECT_EQ(totalSuccess(), 25u);
}

}  // namespace
}  // namespace smik::telemetry
