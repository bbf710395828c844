// compile() time for synthetic clusters: 1k/10k/50k pods x 100/1k/10k
// TrafficTargets (no root). Meshed namespaces, pods with IPs and service
// accounts spread over 10 nodes, one TCPRoute per namespace, TrafficTargets
// with 3 sources each; compiled for one node as the agent does.
// Repetitions are interleaved over the grid; the figure per cell is the median.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "bench/result.h"

using namespace smik;

namespace {

constexpr int kNamespaces = 20;
constexpr int kNodes = 10;

model::ClusterState makeState(int pods, int tts) {
  model::ClusterState s;
  for (int n = 0; n < kNamespaces; n++) {
    model::Namespace ns;
    ns.meta.name = "ns" + std::to_string(n);
    ns.meta.labels[compile::kMeshLabel] = compile::kMeshLabelValue;
    s.add(ns);
    model::L4Route r;
    r.meta.name = "tcp";
    r.meta.ns = ns.meta.name;
    r.proto = model::Proto::kTcp;
    r.ports = {8080, 9090};
    s.add(r);
  }
  // One service account per 10 pods (at least 100), round-robin over namespaces.
  int sas = std::max(100, pods / 10);
  auto saNs = [&](int a) { return "ns" + std::to_string(a % kNamespaces); };
  auto saName = [&](int a) { return "sa" + std::to_string(a); };
  for (int a = 0; a < sas; a++) {
    model::ServiceAccount sa;
    sa.meta.name = saName(a);
    sa.meta.ns = saNs(a);
    s.add(sa);
  }
  std::vector<std::shared_ptr<const model::Pod>> pod_list;  // sorted once (the map is a sorted vector)
  for (int p = 0; p < pods; p++) {
    model::Pod pod;
    int a = p % sas;
    pod.meta.name = "pod" + std::to_string(p);
    pod.meta.ns = saNs(a);
    pod.service_account = saName(a);
    pod.node_name = "node-" + std::to_string((p / sas) % kNodes);  // an SA's pods on every node
    pod.phase = "Running";
    pod.ips = {"10." + std::to_string(64 + (p >> 16)) + "." + std::to_string((p >> 8) & 255) + "." +
               std::to_string(p & 255)};
    pod.container_ports = {{"http", 8080, model::Proto::kTcp}};
    pod_list.push_back(std::make_shared<const model::Pod>(std::move(pod)));
  }
  s.setPods(std::move(pod_list));
  for (int t = 0; t < tts; t++) {
    model::TrafficTarget tt;
    int dst = t % sas;
    tt.meta.name = "tt" + std::to_string(t);
    tt.meta.ns = saNs(dst);
    tt.original_version = "v1alpha3";
    tt.destination = {"ServiceAccount", saName(dst), saNs(dst)};
    tt.rules = {{"TCPRoute", "tcp", {}}};
    for (int k = 1; k <= 3; k++) {
      int src = (dst + k * 7919 + t) % sas;
      tt.sources.push_back({"ServiceAccount", saName(src), saNs(src)});
    }
    s.add(tt);
  }
  return s;
}

std::map<std::pair<int, int>, std::unique_ptr<model::ClusterState>> g_states;
std::map<std::pair<int, int>, std::vector<double>> g_ms;
std::map<std::pair<int, int>, size_t> g_entries;

void BM_Compile(benchmark::State& st) {
  auto key = std::make_pair(int(st.range(0)), int(st.range(1)));
  auto& s = g_states[key];
  if (!s) s = std::make_unique<model::ClusterState>(makeState(key.first, key.second));
  compile::NodeConfig node;
  node.node_name = "node-0";
  for (auto _ : st) {
    auto t0 = std::chrono::steady_clock::now();
    auto plan = compile::compile(*s, node);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.SetIterationTime(sec);
    g_ms[key].push_back(sec * 1e3);
    g_entries[key] = plan.policy.size();
    benchmark::DoNotOptimize(plan);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = bench::takeQuick(&argc, argv);
  benchmark::Initialize(&argc, argv);
  const std::vector<int> pods = {1000, 10000, 50000}, tts = {100, 1000, 10000};
  int reps = quick ? 3 : 9;  // the whole grid takes ~1 s a repetition
  for (int r = 0; r < reps; r++)
    for (int p : pods)
      for (int t : tts) {
        benchmark::RegisterBenchmark("compile", BM_Compile)
            ->Args({p, t})
            ->UseManualTime()
            ->Iterations(1)
            ->Unit(benchmark::kMillisecond);
      }
  benchmark::RunSpecifiedBenchmarks();
  std::printf("\n%-28s %10s %10s %10s %10s  (median of %d runs)\n", "compile()", "ms", "min",
              "max", "policy", reps);
  for (auto& [k, v] : g_ms) {
    std::string name = "compile/pods=" + std::to_string(k.first) + "/tts=" + std::to_string(k.second);
    double m = bench::median(v);
    std::printf("%-28s %10.1f %10.1f %10.1f %10zu\n", name.c_str(), m,
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()),
                g_entries[k]);
  }
  for (auto& [k, v] : g_ms)
    bench::result("compile/pods=" + std::to_string(k.first) + "/tts=" + std::to_string(k.second), v, "ms");
  benchmark::Shutdown();
  return 0;
}
