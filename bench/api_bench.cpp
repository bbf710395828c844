// Latency of the SMI TrafficMetrics API for one pod's edges with 10k edges in
// the store (30 one-second intervals, every edge active in each), and the
// cost of one sample (a kernel read's worth of deltas) at that size.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>

#include <cstring>

#include "agent/compile/compile.h"
#include "agent/telemetry/store.h"
#include "api/smi/smi_metrics.h"

using namespace smik;

namespace {

constexpr int kPods = 2000;
constexpr int kEdges = 10000;

smik::Addr podAddr(int i) {
  smik::Addr a;
  a.family = SMIK_AF_INET;
  uint32_t be = htonl(0x0a000000u + i);
  std::memcpy(a.bytes.data(), &be, 4);
  return a;
}

model::ClusterState topology() {
  model::ClusterState s;
  std::vector<std::shared_ptr<const model::Pod>> pods;  // sorted once (the map is a sorted vector)
  for (int i = 0; i < kPods; i++) {
    model::Pod p;
    p.meta.ns = "ns" + std::to_string(i % 20);
    p.meta.name = "pod" + std::to_string(i);
    p.meta.owner_kind = "ReplicaSet";
    p.meta.owner_name = "dep" + std::to_string(i % 100) + "-abc";
    p.meta.labels["pod-template-hash"] = "abc";
    p.ips = {podAddr(i).str()};
    p.phase = "Running";
    pods.push_back(std::make_shared<const model::Pod>(p));
  }
  s.setPods(std::move(pods));
  return s;
}

// Cumulative kernel counters for kEdges edges, grown by `round`.
std::vector<maps::ConnEdge> kernelRead(int round) {
  std::vector<maps::ConnEdge> edges(kEdges);
  for (int i = 0; i < kEdges; i++) {
    auto& e = edges[i];
    e.key.family = SMIK_AF_INET;
    e.key.proto = SMIK_PROTO_TCP;
    e.key.port = 8080;
    std::memcpy(e.key.client, podAddr(i % kPods).bytes.data(), 16);
    std::memcpy(e.key.server, podAddr((i * 7 + 1) % kPods).bytes.data(), 16);
    e.key.svc_id = i / kPods;  // distinct keys beyond kPods pairs
    e.stats.client_success = e.stats.server_success = 10 * round;
    e.stats.client_refused = round;
    e.stats.handshake_us[100 + i % 50] = 10 * round;
    e.stats.srtt_us[90 + i % 40] = 10 * round;
  }
  return edges;
}

telemetry::Store& filledStore() {
  static telemetry::Store store(600);
  static bool filled = [] {
    store.setTopology(topology(), compile::Plan{});
    auto t0 = std::chrono::system_clock::now();
    for (int r = 1; r <= 31; r++) store.sample(kernelRead(r), t0 + std::chrono::seconds(r));
    return true;
  }();
  (void)filled;
  return store;
}

void BM_PodEdges(benchmark::State& st) {
  auto& store = filledStore();
  for (auto _ : st) {
    auto r = api::handleSmiMetrics(store, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/ns1/pods/pod1/edges", "30s");
    if (r.status != 200) st.SkipWithError("not 200");
    benchmark::DoNotOptimize(r.body);
  }
}

void BM_NamespacePods(benchmark::State& st) {
  auto& store = filledStore();
  for (auto _ : st) {
    auto r = api::handleSmiMetrics(store, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/ns1/pods", "30s");
    benchmark::DoNotOptimize(r.body);
  }
}

void BM_Sample(benchmark::State& st) {
  telemetry::Store store(600);
  store.setTopology(topology(), compile::Plan{});
  int r = 1;
  auto t0 = std::chrono::system_clock::now();
  for (auto _ : st) {
    st.PauseTiming();
    auto read = kernelRead(r);
    st.ResumeTiming();
    store.sample(read, t0 + std::chrono::seconds(r++));
  }
}

BENCHMARK(BM_PodEdges)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_NamespacePods)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Sample)->Unit(benchmark::kMillisecond)->Iterations(20);

}  // namespace

BENCHMARK_MAIN();
