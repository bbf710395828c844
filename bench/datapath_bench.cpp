// Pod-to-pod data path on the test bed (root): single-stream TCP throughput
// (iperf3) and 64-byte request/response latency (p50/p99 over 20000 round
// trips on one connection, the client busy-polling) between two pods, under
// six configurations, interleaved (a b c d e f a b c ...) so drift on a
// shared VM hits all alike:
//   none         no filtering at all (baseline)
//   smik         smik's tc programs on both pods' host-side veths, both pods
//                enforced, 10k policy entries (the allowing one among them)
//   nftables_ct  how people write an nftables firewall: a forward chain that
//                accepts `ct state established,related` first, then looks up
//                saddr.daddr.dport in a hashed set of the same 10k entries
//                (new flows only), then drops
//   iptables_ct  the iptables equivalent: `-m conntrack --ctstate
//                ESTABLISHED,RELATED -j ACCEPT`, then 10k NetworkPolicy-like
//                ACCEPT rules for new flows, then DROP
//   nftables     the set lookup on every packet, no conntrack (both directions)
//   iptables     the 10k rules walked by every packet, no conntrack
// Every rule, chain, table and pin carries the run's prefix and is removed
// again, also on failure.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <csignal>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent/datapath/datapath.h"
#include "bench/pinned.h"
#include "bench/result.h"
#include "bench/seed.h"
#include "bench/sockets.h"
#include "tests/testbed/testbed.h"

using namespace smik;

namespace {

constexpr int kEntries = 10000;
constexpr uint16_t kIperfPort = 5201, kEchoPort = 9000;
constexpr uint32_t kClientId = 4001, kServerId = 4002;
constexpr int kRoundTrips = 20000;
std::string g_self;
int g_iperf_seconds = 3;

// iperf3 pinned as the ping-pong peers are (bench::pinTo).
bool g_pin = false;

int pingpongMain(const char* ip, int port, int n) {
  bench::pinTo(0);
  return bench::pingpongClient(ip, port, n);
}


int echoMain(int port) {
  bench::pinTo(1);
  return bench::echoServer(port);
}


std::string writeTemp(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
  return path;
}

struct Bed {
  testbed::TestBed bed;
  testbed::Pod* client;
  testbed::Pod* server;
  std::unique_ptr<testbed::Proc> iperf, echo;
  bench::PinnedDatapath dp;
  std::string chain, table, tmp;
  bool ipt = false, nft = false;
  bool filter_table_existed = true;  // iptables-nft creates "table ip filter" on first use

  Bed() {
    client = &bed.addPod("client", bed.nextIp());
    server = &bed.addPod("server", bed.nextIp());
    chain = bed.prefix() + "-FW";  // iptables chain names: <= 28 chars
    table = bed.prefix() + "_bench";
    tmp = "/tmp/" + bed.prefix() + "-dpbench";
    filter_table_existed = testbed::tryCommand({"nft", "list", "table", "ip", "filter"});
    iperf = std::make_unique<testbed::Proc>(
        bed.spawn(*server, {"iperf3", "-s", "--forceflush", "-p", std::to_string(kIperfPort)}));
    echo = std::make_unique<testbed::Proc>(bed.spawn(*server, {g_self, "--echo", std::to_string(kEchoPort)}));
    if (!echo->waitFor("ready\n", 5000)) throw std::runtime_error("echo server did not start");
    if (!iperf->waitFor("listening", 5000)) throw std::runtime_error("iperf3 server did not start");
    dp.open("/sys/fs/bpf/" + bed.prefix() + "-dpbench");
    seedSmik();
  }
  ~Bed() {
    removeIptables();
    removeNft();
    dp.close();
    std::remove((tmp + ".ipt").c_str());
    std::remove((tmp + ".nft").c_str());
  }

  void seedSmik() {
    maps::KernelState s;
    s.policy_installed = true;
    bench::enforcePods(s, dp->attachMode(), {{client, kClientId}, {server, kServerId}});
    s.policy[{kClientId, kServerId, kIperfPort, SMIK_PROTO_TCP, 0}] = {1, 0};
    s.policy[{kClientId, kServerId, kEchoPort, SMIK_PROTO_TCP, 0}] = {1, 0};
    bench::fillPolicy(s, kClientId, kServerId, kEntries);
    std::string err;
    if (!maps::apply(dp->maps(), s, dp->maps().read().value(), nullptr, &err)) throw std::runtime_error(err);
    std::printf("smik: %zu policy entries, %zu ipcache entries\n", s.policy.size(), s.ips.size());
  }
  void attachSmik() {
    std::vector<std::string> errors;
    dp->attachNew({{"client", client->hostIfIndex()}, {"server", server->hostIfIndex()}}, &errors);
    if (!errors.empty()) throw std::runtime_error(errors.front());
  }
  void detachSmik() { dp->detachGone({}); }

  // with_ct: accept established flows first, judge new ones by the rules.
  void addIptables(bool with_ct) {
    std::ostringstream o;
    o << "*filter\n:" << chain << " - [0:0]\n";
    if (with_ct) o << "-A " << chain << " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n";
    for (int i = 0; i < kEntries - 2; i++)
      o << "-A " << chain << " -s " << bench::fillerIp(i) << "/32 -d " << server->ip()
        << "/32 -p tcp -m tcp --dport " << 8000 + i % 100 << " -j ACCEPT\n";
    o << "-A " << chain << " -s " << client->ip() << "/32 -d " << server->ip()
      << "/32 -p tcp -m multiport --dports " << kIperfPort << "," << kEchoPort << " -j ACCEPT\n";
    if (!with_ct)
      o << "-A " << chain << " -s " << server->ip() << "/32 -d " << client->ip()
        << "/32 -p tcp -m multiport --sports " << kIperfPort << "," << kEchoPort << " -j ACCEPT\n";
    o << "-A " << chain << " -j DROP\nCOMMIT\n";
    ipt = true;  // from here on, removal is attempted
    testbed::command({"iptables-restore", "--noflush", writeTemp(tmp + ".ipt", o.str())});
    testbed::command({"iptables", "-I", "FORWARD", "1", "-s", bed.subnetCidr(), "-d",
                      bed.subnetCidr(), "-j", chain});
  }
  void removeIptables() {
    if (!ipt) return;
    while (testbed::tryCommand({"iptables", "-D", "FORWARD", "-s", bed.subnetCidr(), "-d",
                                bed.subnetCidr(), "-j", chain})) {
    }
    testbed::tryCommand({"iptables", "-F", chain});
    testbed::tryCommand({"iptables", "-X", chain});
    ipt = false;
    // If iptables-nft created the filter table for us and nobody has put a
    // rule in it since, remove it again (every iptables-nft rule has a counter).
    if (!filter_table_existed) {
      try {
        auto t = testbed::command({"nft", "list", "table", "ip", "filter"});
        if (t.find("counter") == std::string::npos)
          testbed::tryCommand({"nft", "delete", "table", "ip", "filter"});
      } catch (const std::exception&) {
      }
    }
  }
  void addNft(bool with_ct) {
    std::ostringstream o;
    o << "table ip " << table << " {\n  set allowed {\n    type ipv4_addr . ipv4_addr . inet_service\n"
      << "    flags constant\n    elements = {\n";
    o << "      " << client->ip() << " . " << server->ip() << " . " << kIperfPort << ",\n";
    o << "      " << client->ip() << " . " << server->ip() << " . " << kEchoPort << ",\n";
    for (int i = 0; i < kEntries - 2; i++)
      o << "      " << bench::fillerIp(i) << " . " << server->ip() << " . " << 8000 + i % 100
        << (i + 3 < kEntries ? ",\n" : "\n");
    o << "    }\n  }\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
      << "    ip saddr " << bed.subnetCidr() << " ip daddr " << bed.subnetCidr() << " jump pods\n  }\n"
      << "  chain pods {\n";
    if (with_ct) o << "    ct state established,related accept\n";
    o << "    ip saddr . ip daddr . tcp dport @allowed accept\n";
    if (!with_ct) o << "    ip daddr . ip saddr . tcp sport @allowed accept\n";
    o << "    drop\n  }\n}\n";
    nft = true;
    testbed::command({"nft", "-f", writeTemp(tmp + ".nft", o.str())});
  }
  void removeNft() {
    if (!nft) return;
    testbed::tryCommand({"nft", "delete", "table", "ip", table});
    nft = false;
  }

  double iperfGbps() {
    std::vector<std::string> argv = {"iperf3", "-c", server->ip(), "-p", std::to_string(kIperfPort),
                                     "-t", std::to_string(g_iperf_seconds), "-J"};
    if (g_pin) argv.insert(argv.end(), {"-A", "0,1"});  // client CPU 0, server CPU 1
    auto r = bed.run(*client, argv, (g_iperf_seconds + 30) * 1000);
    if (!r.ok()) throw std::runtime_error("iperf3 failed: " + r.output);
    auto j = nlohmann::json::parse(r.output);
    return double(j["end"]["sum_received"]["bits_per_second"]) / 1e9;
  }
  std::pair<double, double> pingpong() {
    auto r = bed.run(*client, {g_self, "--pingpong", server->ip(), std::to_string(kEchoPort),
                               std::to_string(kRoundTrips)}, 120000);
    if (!r.ok()) throw std::runtime_error("pingpong failed: " + r.output);
    std::istringstream in(r.output);
    double p50, p99;
    in >> p50 >> p99;
    return {p50, p99};
  }
};

std::unique_ptr<Bed> g_bed;
struct Samples {
  std::vector<double> gbps, p50, p99;
};
std::map<std::string, Samples> g_s;
const std::vector<std::string> kConfigs = {"none", "smik", "nftables_ct", "iptables_ct", "nftables",
                                           "iptables"};

void BM_Config(benchmark::State& st) {
  auto& b = *g_bed;
  const std::string& cfg = kConfigs[st.range(0)];
  try {
    if (cfg == "smik") b.attachSmik();
    if (cfg == "iptables" || cfg == "iptables_ct") b.addIptables(cfg == "iptables_ct");
    if (cfg == "nftables" || cfg == "nftables_ct") b.addNft(cfg == "nftables_ct");
    for (auto _ : st) {
      double g = b.iperfGbps();
      auto [p50, p99] = b.pingpong();
      st.SetIterationTime(p50 * 1e-6);
      st.counters["Gbit/s"] = g;
      st.counters["p99_us"] = p99;
      g_s[cfg].gbps.push_back(g);
      g_s[cfg].p50.push_back(p50);
      g_s[cfg].p99.push_back(p99);
    }
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
  b.detachSmik();
  b.removeIptables();
  b.removeNft();
}

}  // namespace

int main(int argc, char** argv) {
  g_self = argv[0][0] == '/' ? argv[0] : std::string(get_current_dir_name()) + "/" + argv[0];
  g_pin = bench::canPin();
  if (argc >= 2 && std::string(argv[1]) == "--echo") return echoMain(std::atoi(argv[2]));
  if (argc >= 2 && std::string(argv[1]) == "--pingpong")
    return pingpongMain(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  const bool quick = bench::takeQuick(&argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "smik_bench_datapath needs root (pods, BPF, iptables)\n");
    return 1;
  }
  // SIGINT/SIGTERM: exit through main's cleanup (destructors remove rules).
  std::signal(SIGINT, [](int) { g_bed.reset(); _exit(130); });
  std::signal(SIGTERM, [](int) { g_bed.reset(); _exit(143); });
  // At least 5 rounds either way: the median of 5 and its min..max show the
  // spread a single run hides. --quick shortens the throughput runs only.
  g_iperf_seconds = quick ? 1 : 5;
  int reps = quick ? 5 : 7;
  benchmark::Initialize(&argc, argv);
  try {
    g_bed = std::make_unique<Bed>();
  } catch (const std::exception& e) {
    g_bed.reset();
    std::fprintf(stderr, "smik_bench_datapath: %s\n", e.what());
    return 1;
  }
  for (int r = 0; r < reps; r++)
    for (int c = 0; c < int(kConfigs.size()); c++)
      benchmark::RegisterBenchmark(("datapath/" + kConfigs[c]).c_str(), BM_Config)
          ->Arg(c)
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  g_bed.reset();  // removes rules, tables, programs and pods

  auto& base = g_s["none"];
  double bg = bench::median(base.gbps), b50 = bench::median(base.p50), b99 = bench::median(base.p99);
  std::printf("\n%-12s %10s %7s %10s %7s %10s %7s   (median of %d rounds; iperf3 -t %d, %d busy-polled round trips of 64 B)\n",
              "pod->pod", "Gbit/s", "ratio", "p50 us", "ratio", "p99 us", "ratio", reps,
              g_iperf_seconds, kRoundTrips);
  for (auto& c : kConfigs) {
    auto& s = g_s[c];
    if (s.p50.empty()) continue;  // every round of it failed (logged above)
    double g = bench::median(s.gbps), p50 = bench::median(s.p50), p99 = bench::median(s.p99);
    std::printf("%-12s %10.2f %7.3f %10.1f %7.3f %10.1f %7.3f   p50 %.1f..%.1f\n", c.c_str(), g,
                bg > 0 ? g / bg : 0, p50, b50 > 0 ? p50 / b50 : 0, p99, b99 > 0 ? p99 / b99 : 0,
                *std::min_element(s.p50.begin(), s.p50.end()), *std::max_element(s.p50.begin(), s.p50.end()));
  }
  for (auto& c : kConfigs) {
    auto& s = g_s[c];
    bool b = c == "none";
    bench::result("datapath/" + c + "/throughput", s.gbps, "Gbit/s", b ? 0 : bg);
    bench::result("datapath/" + c + "/rtt_p50", s.p50, "us", b ? 0 : b50);
    bench::result("datapath/" + c + "/rtt_p99", s.p99, "us", b ? 0 : b99);
  }
  benchmark::Shutdown();
  return 0;
}
