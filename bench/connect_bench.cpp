// Connection setup between two pods of the test bed, in one run,
// interleaved (A B C D A B C D ...) so drift on a shared VM hits all alike:
//   connect/*  connect()+close() rate (TCP, RST on close: no TIME_WAIT)
//   udp/*      sendto() rate on one unconnected UDP socket, a new 64-byte
//              datagram each time (every one is translated at sendmsg)
// in four configurations:
//   direct_no_programs     to the pod IP, nothing of smik anywhere (baseline)
//   direct_smik_attached   to the pod IP, every smik program attached: socket
//                          LB and sockops on the pods' cgroup, tc policy on
//                          both pods' veths (10k policy entries)
//   service_vip_smik       to a ClusterIP translated by smik at connect/sendmsg,
//                          everything attached as above
//   service_vip_kube_proxy to the ClusterIP, translated the way kube-proxy's
//                          nftables mode renders it (a verdict map of service
//                          IPs, a per-service chain picking an endpoint, a DNAT
//                          chain per endpoint), no smik program: what smik replaces
// Also: request/response on one busy keep-alive connection (busy-polling
// client, client and server on different CPUs) with the socket programs off
// and on (telemetry must cost nothing per packet), and one pass with the
// kernel's BPF run-time statistics on, which attributes the time per
// connection and per datagram to each smik program (the ratio rows are
// measured with the statistics off: they cost two clock reads per run).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include <algorithm>
#include <benchmark/benchmark.h>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "agent/datapath/datapath.h"
#include "bench/prog_stats.h"
#include "bench/pinned.h"
#include "bench/result.h"
#include "bench/seed.h"
#include "bench/sockets.h"
#include "tests/testbed/testbed.h"

using namespace smik;

namespace {

constexpr int kConnects = 4000;
constexpr int kDatagrams = 50000;
constexpr int kRoundTrips = 20000;
constexpr uint16_t kPort = 8080, kVipPort = 80, kUdpPort = 5353, kUdpVipPort = 53, kEchoPort = 9000;
constexpr uint32_t kClientId = 4001, kServerId = 4002;
constexpr int kPolicyEntries = 10000;
std::string g_self;

sockaddr_in sockaddrOf(const char* ip, int port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin.sin_addr);
  return sin;
}

// Inside the client pod: n connect()+close() to ip:port; prints seconds.
int clientMain(const char* ip, int port, int n) {
  sockaddr_in sin = sockaddrOf(ip, port);
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

// Inside the client pod: n sendto() of 64 bytes on one unconnected UDP
// socket, as a DNS client or a metrics exporter sends; prints seconds.
int udpClientMain(const char* ip, int port, int n) {
  sockaddr_in sin = sockaddrOf(ip, port);
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM, 0));
  char buf[64] = {};
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; i++) {
    if (sendto(fd.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&sin), sizeof sin) !=
        sizeof buf) {
      std::perror("sendto");
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

// Inside the server pod: read datagrams and drop them, forever.
int udpServerMain(int port) {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in sin = sockaddrOf("0.0.0.0", port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    std::perror("bind");
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  char buf[2048];
  while (true) recv(fd.get(), buf, sizeof buf, 0);
}

struct Bed {
  testbed::TestBed bed;
  testbed::Pod* client;
  testbed::Pod* server;
  std::string vip;
  std::unique_ptr<testbed::Proc> srv, udp_srv, echo;
  bench::PinnedDatapath dp;
  std::string kp_table, tmp;
  bool kube_proxy = false;

  Bed() {
    client = &bed.addPod("client", bed.nextIp());
    server = &bed.addPod("server", bed.nextIp());
    vip = bed.nextIp();  // blackholed: never leaves the machine untranslated
    kp_table = bed.prefix() + "_kube_proxy";
    tmp = "/tmp/" + bed.prefix() + "-connect.nft";
    srv = std::make_unique<testbed::Proc>(bed.spawn(*server, {g_self, "--server", std::to_string(kPort)}));
    if (!srv->waitFor("ready\n", 5000)) throw std::runtime_error("server did not start");
    udp_srv = std::make_unique<testbed::Proc>(
        bed.spawn(*server, {g_self, "--udp-server", std::to_string(kUdpPort)}));
    if (!udp_srv->waitFor("ready\n", 5000)) throw std::runtime_error("UDP server did not start");
    echo = std::make_unique<testbed::Proc>(bed.spawn(*server, {g_self, "--echo", std::to_string(kEchoPort)}));
    if (!echo->waitFor("ready\n", 5000)) throw std::runtime_error("echo server did not start");
    dp.open("/sys/fs/bpf/" + bed.prefix() + "-bench", bed.cgroupRoot());
    seed();
  }
  ~Bed() {
    removeKubeProxy();
    dp.close();
    std::remove(tmp.c_str());
  }

  // The ClusterIP (TCP and UDP) and the policy the tc programs judge: both
  // pods enforced, the client granted the server's ports, among 10k entries
  // of other identities (as smik_bench_datapath).
  void seed() {
    maps::KernelState s;
    s.policy_installed = true;
    auto service = [&](uint16_t port, uint8_t proto, uint16_t target) {
      smik_svc_key k{};
      inet_pton(AF_INET, vip.c_str(), k.addr);
      k.port = port;
      k.proto = proto;
      k.family = SMIK_AF_INET;
      smik_backend b{};
      inet_pton(AF_INET, server->ip().c_str(), b.addr);
      b.port = target;
      b.family = SMIK_AF_INET;
      s.services[k] = maps::SvcTable{uint32_t(s.services.size() + 1), {{1, {b}}}};
    };
    service(kVipPort, IPPROTO_TCP, kPort);
    service(kUdpVipPort, IPPROTO_UDP, kUdpPort);
    bench::enforcePods(s, dp->attachMode(), {{client, kClientId}, {server, kServerId}});
    s.policy[{kClientId, kServerId, kPort, SMIK_PROTO_TCP, 0}] = {1, 0};
    s.policy[{kClientId, kServerId, kEchoPort, SMIK_PROTO_TCP, 0}] = {1, 0};
    s.policy[{kClientId, kServerId, kUdpPort, SMIK_PROTO_UDP, 0}] = {1, 0};
    bench::fillPolicy(s, kClientId, kServerId, kPolicyEntries);
    std::string err;
    if (!maps::apply(dp->maps(), s, dp->maps().read().value(), nullptr, &err)) throw std::runtime_error(err);
  }

  // Every smik program on (socket LB + sockops on the cgroup, tc on both
  // veths) or none of them.
  void smik(bool on) { bench::attachSmik(*dp, *client, *server, on); }
  // Only the socket programs: the telemetry rows isolate sockops' cost.
  void socketProgramsOnly(bool on) {
    dp->detachGone({});
    std::string err;
    if (!on) dp->detachSocketPrograms();
    else if (!dp->socketProgramsAttached() && !dp->attachSocketPrograms(&err))
      throw std::runtime_error(err);
  }

  // The ClusterIP as kube-proxy's nftables mode renders a Service with one
  // endpoint (names shortened): service-ips verdict map -> service chain
  // (numgen over the endpoints) -> endpoint chain (DNAT). kube-proxy hooks
  // prerouting for pods' traffic; the NAT chains see only each flow's first
  // packet (conntrack does the rest).
  void addKubeProxy() {
    std::ostringstream o;
    const std::string ep = server->ip();
    o << "table ip " << kp_table << " {\n"
      << "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n"
      << "    elements = { " << vip << " . tcp . " << kVipPort << " : goto service-tcp, " << vip
      << " . udp . " << kUdpVipPort << " : goto service-udp }\n  }\n"
      << "  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
      << "    jump services\n  }\n"
      << "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n"
      << "  chain service-tcp {\n    numgen random mod 1 vmap { 0 : goto endpoint-tcp }\n  }\n"
      << "  chain endpoint-tcp {\n    meta l4proto tcp dnat to " << ep << ":" << kPort << "\n  }\n"
      << "  chain service-udp {\n    numgen random mod 1 vmap { 0 : goto endpoint-udp }\n  }\n"
      << "  chain endpoint-udp {\n    meta l4proto udp dnat to " << ep << ":" << kUdpPort << "\n  }\n"
      << "}\n";
    std::ofstream(tmp) << o.str();
    kube_proxy = true;  // from here on, removal is attempted
    testbed::command({"nft", "-f", tmp});
  }
  void removeKubeProxy() {
    if (!kube_proxy) return;
    testbed::tryCommand({"nft", "delete", "table", "ip", kp_table});
    kube_proxy = false;
  }

  double timed(const std::vector<std::string>& argv) {
    auto r = bed.run(*client, argv, 60000);
    if (!r.ok()) throw std::runtime_error(argv[1] + " failed: " + r.output);
    return std::stod(r.output);
  }
  double connects(const std::string& ip, int port) {
    return timed({g_self, "--client", ip, std::to_string(port), std::to_string(kConnects)});
  }
  double datagrams(const std::string& ip, int port) {
    return timed({g_self, "--udp-client", ip, std::to_string(port), std::to_string(kDatagrams)});
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

  // Every smik program this bed runs: tc (one program each way, on both
  // veths) and whatever is attached to the bed's cgroup.
  std::vector<int> programFds() {
    std::vector<int> fds = {dup(dp->toPodProgFd()), dup(dp->fromPodProgFd())};
    UniqueFd cg(open(bed.cgroupRoot().c_str(), O_RDONLY | O_DIRECTORY));
    for (auto type : {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG,
                      BPF_CGROUP_UDP6_SENDMSG, BPF_CGROUP_UDP4_RECVMSG, BPF_CGROUP_UDP6_RECVMSG,
                      BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_INET6_GETPEERNAME, BPF_CGROUP_SOCK_OPS}) {
      uint32_t ids[8], n = 8;
      if (bpf_prog_query(cg.get(), type, 0, nullptr, ids, &n) != 0) continue;
      for (uint32_t i = 0; i < n; i++) fds.push_back(bpf_prog_get_fd_by_id(ids[i]));
    }
    return fds;
  }
};

std::unique_ptr<Bed> g_bed;
std::map<std::string, std::vector<double>> g_rates;  // per second, per repetition
std::map<std::string, std::vector<std::pair<double, double>>> g_rtt;  // p50, p99 µs per run

const std::vector<std::string> kConfigs = {"direct_no_programs", "direct_smik_attached",
                                           "service_vip_smik", "service_vip_kube_proxy"};

// One round of one configuration: its connect and its UDP rate.
void BM_Config(benchmark::State& st) {
  auto& b = *g_bed;
  const std::string& cfg = kConfigs[st.range(0)];
  try {
    b.smik(cfg.find("smik") != std::string::npos);
    if (cfg == "service_vip_kube_proxy") b.addKubeProxy();
    const bool vip = cfg.rfind("service_vip", 0) == 0;
    for (auto _ : st) {
      double s = vip ? b.connects(b.vip, kVipPort) : b.connects(b.server->ip(), kPort);
      double u = vip ? b.datagrams(b.vip, kUdpVipPort) : b.datagrams(b.server->ip(), kUdpPort);
      st.SetIterationTime(s / kConnects);
      g_rates["connect/" + cfg].push_back(kConnects / s);
      g_rates["udp/" + cfg].push_back(kDatagrams / u);
    }
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
  b.removeKubeProxy();
  b.smik(false);
}

// Request/response on one established connection, socket programs off or
// on: telemetry works at state changes only, so this must not move.
void BM_Rtt(benchmark::State& st) {
  auto& b = *g_bed;
  const bool on = st.range(0);
  try {
    b.socketProgramsOnly(on);
    for (auto _ : st) {
      auto [p50, p99] = b.pingpong();
      st.SetIterationTime(p50 * 1e-6);
      g_rtt[on ? "smik_attached" : "no_programs"].push_back({p50, p99});
    }
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
  b.socketProgramsOnly(false);
}

// Where the time of a connection (and of a datagram, and of a round trip)
// goes, program by program: BPF run-time statistics on for this pass only.
void breakdown() {
  auto& b = *g_bed;
  UniqueFd stats(bpf_enable_stats(BPF_STATS_RUN_TIME));
  if (!stats) {
    std::printf("\nno BPF run-time statistics (bpf_enable_stats: %s)\n", std::strerror(errno));
    return;
  }
  b.smik(true);
  std::vector<UniqueFd> progs;
  for (int fd : b.programFds()) progs.emplace_back(fd);
  auto snapshot = [&] {
    std::vector<bench::ProgStats> v;
    for (auto& p : progs) v.push_back(bench::statsOf(p.get()));
    return v;
  };
  struct Pass {
    const char* what;
    int n;
    std::function<void()> run;
  };
  const Pass passes[] = {
      {"connect", kConnects, [&] { b.connects(b.vip, kVipPort); }},
      {"connect_direct", kConnects, [&] { b.connects(b.server->ip(), kPort); }},
      {"datagram", kDatagrams, [&] { b.datagrams(b.vip, kUdpVipPort); }},
      {"round_trip", kRoundTrips, [&] { b.pingpong(); }},
  };
  std::printf("\n%-14s %-16s %10s %10s %12s   (BPF run-time statistics, everything attached; via the ClusterIP but connect_direct)\n",
              "per", "program", "runs/op", "ns/run", "ns/op");
  for (const auto& pass : passes) {
    auto before = snapshot();
    pass.run();
    auto after = snapshot();
    double total = 0;
    for (size_t i = 0; i < after.size(); i++) {
      uint64_t runs = after[i].runs - before[i].runs, ns = after[i].run_ns - before[i].run_ns;
      if (after[i].name.empty()) continue;
      double per_op = double(ns) / pass.n;
      total += per_op;
      std::printf("%-14s %-16s %10.2f %10.1f %12.1f\n", pass.what, after[i].name.c_str(),
                  double(runs) / pass.n, runs ? double(ns) / runs : 0.0, per_op);
      bench::result(std::string("cost/") + pass.what + "/" + after[i].name, {per_op}, "ns");
    }
    std::printf("%-14s %-16s %10s %10s %12.1f\n", pass.what, "all", "", "", total);
    bench::result(std::string("cost/") + pass.what + "/all", {total}, "ns");
  }
  b.smik(false);
}

}  // namespace

int main(int argc, char** argv) {
  g_self = argv[0][0] == '/' ? argv[0] : std::string(get_current_dir_name()) + "/" + argv[0];
  const std::string mode = argc >= 2 ? argv[1] : "";
  if (mode == "--client") return clientMain(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (mode == "--udp-client") return udpClientMain(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (mode == "--server") return serverMain(std::atoi(argv[2]));
  if (mode == "--udp-server") return udpServerMain(std::atoi(argv[2]));
  if (mode == "--echo") return bench::pinTo(1), bench::echoServer(std::atoi(argv[2]));
  if (mode == "--pingpong") return bench::pinTo(0), bench::pingpongClient(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (geteuid() != 0) {
    std::fprintf(stderr, "smik_bench_connect needs root (pods, BPF, nftables)\n");
    return 1;
  }
  const bool quick = bench::takeQuick(&argc, argv);
  // SIGINT/SIGTERM: exit through the cleanup (the nftables table, pins, pods).
  std::signal(SIGINT, [](int) { g_bed.reset(); _exit(130); });
  std::signal(SIGTERM, [](int) { g_bed.reset(); _exit(143); });
  benchmark::Initialize(&argc, argv);
  try {
    g_bed = std::make_unique<Bed>();
  } catch (const std::exception& e) {
    g_bed.reset();
    std::fprintf(stderr, "smik_bench_connect: %s\n", e.what());
    return 1;
  }
  const int rounds = quick ? 5 : 9;
  for (int r = 0; r < rounds; r++)
    for (int c = 0; c < int(kConfigs.size()); c++)
      benchmark::RegisterBenchmark(("connect/" + kConfigs[c]).c_str(), BM_Config)
          ->Arg(c)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  for (int r = 0; r < rounds; r++)
    for (int on = 0; on < 2; on++)
      benchmark::RegisterBenchmark(on ? "rtt/smik_attached" : "rtt/no_programs", BM_Rtt)
          ->Arg(on)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  breakdown();
  g_bed.reset();  // removes the table, the programs, the pins and the pods

  for (const char* kind : {"connect", "udp"}) {
    double base = bench::median(g_rates[std::string(kind) + "/direct_no_programs"]);
    std::printf("\n%-34s %12s %8s   (median of %d rounds; min..max)\n",
                kind == std::string("connect") ? "connect()+close()" : "sendto() 64 B, unconnected UDP",
                "per s", "ratio", rounds);
    for (const auto& cfg : kConfigs) {
      auto& v = g_rates[std::string(kind) + "/" + cfg];
      if (v.empty()) continue;
      double m = bench::median(v);
      std::printf("%-34s %12.0f %8.3f   %.0f..%.0f\n", cfg.c_str(), m, base > 0 ? m / base : 0,
                  *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
    }
    for (const auto& cfg : kConfigs)
      bench::result(std::string(kind) + "/" + cfg, g_rates[std::string(kind) + "/" + cfg],
                    kind == std::string("connect") ? "conn/s" : "dgram/s",
                    cfg == "direct_no_programs" ? 0 : base);
  }
  std::printf("\n%-24s %10s %10s   (%d busy-polled round trips of 64 B per run; median of %d rounds)\n",
              "request/response", "p50 µs", "p99 µs", kRoundTrips, rounds);
  double b50 = 0, b99 = 0;
  for (const char* name : {"no_programs", "smik_attached"}) {
    std::vector<double> p50s, p99s;
    for (auto [a, c] : g_rtt[name]) p50s.push_back(a), p99s.push_back(c);
    double m50 = bench::result(std::string("telemetry_rtt/") + name + "/p50", p50s, "us", b50);
    double m99 = bench::result(std::string("telemetry_rtt/") + name + "/p99", p99s, "us", b99);
    if (b50 == 0) b50 = m50, b99 = m99;
    std::printf("%-24s %10.2f %10.2f   ratio %.3f / %.3f\n", name, m50, m99, b50 > 0 ? m50 / b50 : 0,
                b99 > 0 ? m99 / b99 : 0);
  }
  benchmark::Shutdown();
  return 0;
}
