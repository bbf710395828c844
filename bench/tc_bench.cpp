// ns per packet of the tc policy program (BPF_PROG_TEST_RUN), by policy size,
// against an empty tc program measured the same way in the same run.
//
//   new flow     allowed, first packet: policy lookups + conntrack insert
//   established  allowed, conntrack hit (every packet after the first)
//   denied       policy path with no match: every lookup, then drop
//
// "new flow" needs a fresh tuple per packet, so it runs one packet per test
// run (repeat=1) and is compared with the empty program at repeat=1 too.
#include <benchmark/benchmark.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "agent/datapath/datapath.h"
#include "bench/pinned.h"
#include "bench/result.h"
#include "tests/kernel/packet.h"

using namespace smik;

namespace {

constexpr uint32_t kLo = 1;
constexpr uint32_t kRepeat = 200000;
std::map<std::string, double> g_ns;  // "case/size" -> ns per packet (last repetition)
std::map<std::string, std::vector<double>> g_all;  // every repetition, for RESULT lines

int emptyProg() {
  static int fd = [] {
    bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    return bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "smik_empty", "GPL", insns, 2, nullptr);
  }();
  return fd;
}

smik::Addr v4(uint32_t host_order) {
  smik::Addr a;
  a.family = SMIK_AF_INET;
  uint32_t be = htonl(host_order);
  std::memcpy(a.bytes.data(), &be, 4);
  return a;
}

// A loaded datapath holding n identities (pod IPs) and n policy entries.
struct Loaded {
  bench::PinnedDatapath dp;
  explicit Loaded(int n) {
    dp.open("/sys/fs/bpf/smik-bench-" + std::to_string(getpid()) + "-" + std::to_string(n));
    std::string err;
    maps::KernelState s;
    s.policy_installed = true;
    const uint32_t base = 0x0a000000;  // 10.0.0.0
    for (int i = 0; i < n; i++) {
      uint32_t id = SMIK_ID_FIRST_DYNAMIC + i;
      s.ips[v4(base + i)] = {id, 0};
      uint32_t dst = SMIK_ID_FIRST_DYNAMIC + uint32_t(i) * 7919u % uint32_t(n);
      s.policy[{id, dst, uint16_t(1000 + i % 5000), 6, 0}] = {1, 0};
    }
    // client 10.0.0.0 (id 256) may reach the server (id 257) on 8080
    s.policy[{SMIK_ID_FIRST_DYNAMIC, SMIK_ID_FIRST_DYNAMIC + 1, 8080, 6, 0}] = {1, 0};
    s.policy[{SMIK_ID_META, SMIK_ID_FIRST_DYNAMIC + 1, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
    smik_endpoint ep{};
    ep.identity = SMIK_ID_FIRST_DYNAMIC + 1;
    ep.naddrs = 1;
    ep.families[0] = SMIK_AF_INET;
    std::memcpy(ep.addrs[0], v4(base + 1).bytes.data(), 16);
    s.endpoints[kLo] = ep;
    if (!maps::apply(dp->maps(), s, dp->maps().read().value(), nullptr, &err)) throw std::runtime_error(err);
  }
};

Loaded& loaded(int n) {
  static std::map<int, std::unique_ptr<Loaded>> cache;
  auto& l = cache[n];
  if (!l) l = std::make_unique<Loaded>(n);
  return *l;
}

pkt::PacketSpec allowed() { return {.src = "10.0.0.0", .dst = "10.0.0.1", .dport = 8080}; }

void record(benchmark::State& st, const std::string& name, double ns) {
  st.SetIterationTime(ns * 1e-9);
  g_ns[name] = ns;
  g_all[name].push_back(ns);
}

void BM_Empty(benchmark::State& st) {
  auto p = pkt::buildPacket(allowed());
  for (auto _ : st) {
    uint32_t ns = 0;
    pkt::runTc(emptyProg(), p, kLo, kRepeat, &ns);
    record(st, "empty", ns);
  }
}

void BM_EmptySingle(benchmark::State& st) {
  auto p = pkt::buildPacket(allowed());
  for (auto _ : st) {
    double total = 0;
    for (int i = 0; i < 2000; i++) {
      uint32_t ns = 0;
      pkt::runTc(emptyProg(), p, kLo, 1, &ns);
      total += ns;
    }
    record(st, "empty-single", total / 2000);
  }
}

void BM_Established(benchmark::State& st) {
  auto& l = loaded(st.range(0));
  auto p = pkt::buildPacket(allowed());
  if (pkt::runTc(l.dp->toPodProgFd(), p, kLo) != 0) st.SkipWithError("not allowed");
  for (auto _ : st) {
    uint32_t ns = 0;
    pkt::runTc(l.dp->toPodProgFd(), p, kLo, kRepeat, &ns);
    record(st, "established/" + std::to_string(st.range(0)), ns);
  }
}

void BM_Denied(benchmark::State& st) {
  auto& l = loaded(st.range(0));
  auto spec = allowed();
  spec.dport = 8081;
  auto p = pkt::buildPacket(spec);
  if (pkt::runTc(l.dp->toPodProgFd(), p, kLo) != 2) st.SkipWithError("not denied");
  for (auto _ : st) {
    uint32_t ns = 0;
    pkt::runTc(l.dp->toPodProgFd(), p, kLo, kRepeat, &ns);
    record(st, "denied/" + std::to_string(st.range(0)), ns);
  }
}

// Mean ns of one packet per test run, each with a fresh source port (so each
// is a conntrack miss), as the first packet of a flow runs.
double singlePacketNs(benchmark::State& st, int prog_fd, uint16_t dport, int want) {
  static uint32_t sport = 0;
  double total = 0;
  for (int i = 0; i < 2000; i++) {
    auto spec = allowed();
    spec.dport = dport;
    spec.sport = 1024 + (sport++ % 60000);
    uint32_t ns = 0;
    if (pkt::runTc(prog_fd, pkt::buildPacket(spec), kLo, 1, &ns) != want)
      st.SkipWithError("unexpected verdict");
    total += ns;
  }
  return total / 2000;
}

// The denied path one packet per run, like new flows: separates the cost of
// the conntrack insert from the cost of running cold, one packet at a time.
void BM_DeniedSingle(benchmark::State& st) {
  auto& l = loaded(st.range(0));
  for (auto _ : st)
    record(st, "denied-single/" + std::to_string(st.range(0)),
           singlePacketNs(st, l.dp->toPodProgFd(), 8081, 2));
}

void BM_NewFlow(benchmark::State& st) {
  auto& l = loaded(st.range(0));
  for (auto _ : st)
    record(st, "new-flow/" + std::to_string(st.range(0)),
           singlePacketNs(st, l.dp->toPodProgFd(), 8080, 0));
}

BENCHMARK(BM_Empty)->UseManualTime()->Iterations(5)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_EmptySingle)->UseManualTime()->Iterations(5)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_NewFlow)->Arg(10)->Arg(1000)->Arg(10000)->Arg(100000)->UseManualTime()->Iterations(5)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Established)->Arg(10)->Arg(1000)->Arg(10000)->Arg(100000)->UseManualTime()->Iterations(5)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_DeniedSingle)->Arg(10)->Arg(1000)->Arg(10000)->Arg(100000)->UseManualTime()->Iterations(5)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Denied)->Arg(10)->Arg(1000)->Arg(10000)->Arg(100000)->UseManualTime()->Iterations(5)->Unit(benchmark::kNanosecond);

}  // namespace

int main(int argc, char** argv) {
  if (geteuid() != 0) {
    std::fprintf(stderr, "smik_bench_tc needs root (BPF_PROG_TEST_RUN)\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  std::printf("\n%-14s %10s %10s %10s %10s   %s\n", "case", "10", "1k", "10k", "100k", "100k/10  vs empty@10");
  for (const char* c : {"new-flow", "denied-single", "established", "denied"}) {
    double a = g_ns[std::string(c) + "/10"], k1 = g_ns[std::string(c) + "/1000"], b = g_ns[std::string(c) + "/10000"],
           d = g_ns[std::string(c) + "/100000"];
    bool single = std::string(c) == "new-flow" || std::string(c) == "denied-single";
    double base = single ? g_ns["empty-single"] : g_ns["empty"];
    std::printf("%-14s %8.1fns %8.1fns %8.1fns %8.1fns   %.2fx    %.2fx\n", c, a, k1, b, d, a > 0 ? d / a : 0,
                base > 0 ? a / base : 0);
  }
  std::printf("%-14s %8.1fns (repeat=%u)  %8.1fns (repeat=1)\n", "empty tc prog", g_ns["empty"],
              kRepeat, g_ns["empty-single"]);
  // Machine-readable (bench/run): median of the repetitions; baseline = the
  // empty program in the same run mode.
  for (auto& [name, v] : g_all) {
    if (name.rfind("empty", 0) == 0) continue;
    bool single = name.rfind("new-flow", 0) == 0 || name.rfind("denied-single", 0) == 0;
    smik::bench::result("tc/" + name, v, "ns", smik::bench::median(g_all[single ? "empty-single" : "empty"]));
  }
  smik::bench::result("tc/empty", g_all["empty"], "ns");
  smik::bench::result("tc/empty-single", g_all["empty-single"], "ns");
  benchmark::Shutdown();
  // Datapaths are unpinned by their destructors at exit.
  return 0;
}
