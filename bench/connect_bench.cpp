// connect() rate between two pods of the test bed: through a Service VIP with
// the socket programs attached (smik's translation at connect time) against a
// direct connect to the pod IP with no programs, in one run, interleaved.
// Also: a direct connect with the programs attached (the cost of the hook for
// sockets that are not ours: one hash lookup).
#include <arpa/inet.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "agent/datapath/datapath.h"
#include "bench/result.h"
#include "bench/sockets.h"
#include "tests/testbed/testbed.h"

using namespace smik;

namespace {

constexpr int kConnects = 4000;
constexpr uint16_t kPort = 8080, kVipPort = 80;
std::string g_self;

// Inside the client pod: n connect()+close() to ip:port; prints seconds.
int clientMain(const char* ip, int port, int n) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin.sin_addr);
  linger lg{1, 0};  // close with RST: no TIME_WAIT to run out of ports
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; i++) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM, 0));
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
      std::perror("connect");
      return 1;
    }
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.9f\n", s);
  return 0;
}



// Inside the server pod: accept and close, forever.
int serverMain(int port) {
  UniqueFd fd = bench::listenTcp(port, 4096);
  if (!fd) return 1;
  while (true) UniqueFd(accept(fd.get(), nullptr, nullptr));  // accepted and closed
}

struct Bed {
  testbed::TestBed bed;
  testbed::Pod* client;
  testbed::Pod* server;
  std::string vip;
  std::unique_ptr<testbed::Proc> srv, echo;
  std::unique_ptr<datapath::Datapath> dp;
  std::string pin;

  Bed() {
    client = &bed.addPod("client", bed.nextIp());
    server = &bed.addPod("server", bed.nextIp());
    vip = bed.nextIp();  // blackholed: never leaves the machine untranslated
    srv = std::make_unique<testbed::Proc>(bed.spawn(*server, {g_self, "--server", "8080"}));
    if (!srv->waitFor("ready\n", 5000)) throw std::runtime_error("server did not start");
    echo = std::make_unique<testbed::Proc>(bed.spawn(*server, {g_self, "--echo", "9000"}));
    if (!echo->waitFor("ready\n", 5000)) throw std::runtime_error("echo server did not start");
    pin = "/sys/fs/bpf/" + bed.prefix() + "-bench";
    datapath::Options o;
    o.pin_dir = pin;
    o.cgroup = bed.cgroupRoot();
    std::string err;
    dp = datapath::Datapath::open(o, &err);
    if (!dp) throw std::runtime_error(err);
    maps::KernelState s;
    s.policy_installed = true;
    smik_svc_key k{};
    inet_pton(AF_INET, vip.c_str(), k.addr);
    k.port = kVipPort;
    k.proto = IPPROTO_TCP;
    k.family = SMIK_AF_INET;
    smik_backend b{};
    inet_pton(AF_INET, server->ip().c_str(), b.addr);
    b.port = kPort;
    b.family = SMIK_AF_INET;
    s.services[k] = maps::SvcTable{1, {{1, {b}}}};
    if (!maps::apply(dp->maps(), s, dp->maps().read().value(), nullptr, &err)) throw std::runtime_error(err);
  }
  ~Bed() {
    dp.reset();
    std::string err;
    datapath::Datapath::uninstall(pin, &err);
  }
  std::pair<double, double> pingpong() {
    auto r = bed.run(*client, {g_self, "--pingpong", server->ip(), "9000", "20000"}, 120000);
    if (!r.ok()) throw std::runtime_error("pingpong failed: " + r.output);
    std::istringstream in(r.output);
    double p50, p99;
    in >> p50 >> p99;
    return {p50, p99};
  }
  double run(const std::string& ip, int port) {
    auto r = bed.run(*client, {g_self, "--client", ip, std::to_string(port),
                               std::to_string(kConnects)}, 60000);
    if (!r.ok()) throw std::runtime_error("client failed: " + r.output);
    return std::stod(r.output);
  }
};

Bed& bed() {
  static Bed b;
  return b;
}

std::map<std::string, std::vector<double>> g_rates;  // conns/s per repetition

// smik's socket programs on or off for a run; a run whose programs cannot
// attach is skipped, not measured without them.
void useSocketPrograms(benchmark::State& st, Bed& b, bool programs) {
  std::string err;
  if (programs && !b.dp->socketProgramsAttached() && !b.dp->attachSocketPrograms(&err))
    st.SkipWithError(err.c_str());
  if (!programs) b.dp->detachSocketPrograms();
}

void measure(benchmark::State& st, const std::string& name, bool programs, bool via_vip) {
  auto& b = bed();
  useSocketPrograms(st, b, programs);
  for (auto _ : st) {
    double s = via_vip ? b.run(b.vip, kVipPort) : b.run(b.server->ip(), kPort);
    st.SetIterationTime(s / kConnects);
    g_rates[name].push_back(kConnects / s);
  }
}

std::map<std::string, std::vector<std::pair<double, double>>> g_rtt;  // p50, p99 µs per run

// Request/response on one established connection: telemetry works at state
// changes only, so this must not move.
void measureRtt(benchmark::State& st, const std::string& name, bool programs) {
  auto& b = bed();
  useSocketPrograms(st, b, programs);
  for (auto _ : st) {
    auto [p50, p99] = b.pingpong();
    st.SetIterationTime(p50 * 1e-6);
    g_rtt[name].push_back({p50, p99});
  }
}

void BM_RttNoPrograms(benchmark::State& st) { measureRtt(st, "no programs", false); }
void BM_RttSmik(benchmark::State& st) { measureRtt(st, "smik attached", true); }

void BM_DirectNoPrograms(benchmark::State& st) { measure(st, "direct, no programs", false, false); }
void BM_ServiceVip(benchmark::State& st) { measure(st, "service VIP, smik", true, true); }
void BM_DirectWithPrograms(benchmark::State& st) { measure(st, "direct, smik attached", true, false); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  g_self = argv[0][0] == '/' ? argv[0] : std::string(get_current_dir_name()) + "/" + argv[0];
  if (argc >= 2 && std::string(argv[1]) == "--client") return clientMain(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (argc >= 2 && std::string(argv[1]) == "--server") return serverMain(std::atoi(argv[2]));
  if (argc >= 2 && std::string(argv[1]) == "--echo") return bench::echoServer(std::atoi(argv[2]));
  if (argc >= 2 && std::string(argv[1]) == "--pingpong")
    return bench::pingpongClient(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (geteuid() != 0) {
    std::fprintf(stderr, "smik_bench_connect needs root (pods, BPF)\n");
    return 1;
  }
  const bool quick = bench::takeQuick(&argc, argv);
  benchmark::Initialize(&argc, argv);
  // Interleaved: A B C A B C ... so drift on a shared VM hits all alike.
  for (int rep = 0; rep < (quick ? 3 : 5); rep++) {
    benchmark::RegisterBenchmark("connect/direct_no_programs", BM_DirectNoPrograms)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("connect/service_vip_smik", BM_ServiceVip)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("connect/direct_smik_attached", BM_DirectWithPrograms)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  }
  for (int rep = 0; rep < (quick ? 2 : 3); rep++) {
    benchmark::RegisterBenchmark("rtt/no_programs", BM_RttNoPrograms)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("rtt/smik_attached", BM_RttSmik)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  double base = median(g_rates["direct, no programs"]);
  std::printf("\n%-24s %14s %8s   (median of %zu runs of %d connects; min..max)\n", "connect()",
              "conns/s", "ratio", g_rates["direct, no programs"].size(), kConnects);
  for (const char* name : {"direct, no programs", "service VIP, smik", "direct, smik attached"}) {
    auto& v = g_rates[name];
    double m = median(v);
    std::printf("%-24s %14.0f %8.3f   %.0f..%.0f\n", name, m, base > 0 ? m / base : 0,
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
  }
  std::printf("\n%-24s %10s %10s   (20000 round trips of 64 B per run; median run)\n",
              "request/response", "p50 µs", "p99 µs");
  double base50 = 0, base99 = 0;
  for (const char* name : {"no programs", "smik attached"}) {
    std::vector<double> p50s, p99s;
    for (auto [a, b] : g_rtt[name]) p50s.push_back(a), p99s.push_back(b);
    double m50 = median(p50s), m99 = median(p99s);
    if (base50 == 0) base50 = m50, base99 = m99;
    std::printf("%-24s %10.1f %10.1f   ratio %.3f / %.3f\n", name, m50, m99, m50 / base50, m99 / base99);
  }
  // Machine-readable (bench/run).
  const std::map<std::string, std::string> slug = {
      {"direct, no programs", "direct_no_programs"}, {"service VIP, smik", "service_vip_smik"},
      {"direct, smik attached", "direct_smik_attached"}, {"no programs", "no_programs"},
      {"smik attached", "smik_attached"}};
  for (const char* name : {"direct, no programs", "service VIP, smik", "direct, smik attached"})
    smik::bench::result(std::string("connect/") + slug.at(name), g_rates[name], "conn/s",
                        std::string(name) == "direct, no programs" ? 0 : base);
  double b50 = 0, b99 = 0;
  for (const char* name : {"no programs", "smik attached"}) {
    std::vector<double> p50s, p99s;
    for (auto [a, b] : g_rtt[name]) p50s.push_back(a), p99s.push_back(b);
    double m50 = smik::bench::result(std::string("telemetry_rtt/") + slug.at(name) + "/p50", p50s, "us", b50);
    double m99 = smik::bench::result(std::string("telemetry_rtt/") + slug.at(name) + "/p99", p99s, "us", b99);
    if (b50 == 0) b50 = m50, b99 = m99;
  }
  benchmark::Shutdown();
  return 0;
}
