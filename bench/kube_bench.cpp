// The Kubernetes source against the fake API server (HTTPS, pages of 500,
// in a child process): how long the first complete view of N pods takes
// (wall time includes the fake server making its pages; CPU time is the
// source's alone), what holding it costs in memory, and how fast one change
// arrives through the watch; and what the agent costs the API server:
// TCP connections, requests (HTTP/2 streams), and the server's CPU time for
// the initial sync and for 10 s of open watches.
//   build/bench/smik_bench_kube [--quick] [--pods N] [--reps R]
//                               [--server h1|h2] [--transport mux|per-request]
// --quick: one repetition per size; --pods: that size alone (A/B runs);
// --server: the fake API server's HTTP/1.1 (cpp-httplib) or HTTP/2
// (nghttp2, as real API servers offer); --transport: the agent's requests
// multiplexed on one connection (the default) or one connection each (as
// before issue 13).
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#include "agent/base/unique_fd.h"
#include "agent/source/kube_source.h"
#include "bench/result.h"
#include "tests/kube/fake_cluster.h"

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// This process's CPU time: the source's own cost, without the API server's.
double cpuMs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

double rssMiB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

// A pod as a real API server sends it, managedFields and all (~2.5 KiB):
// the source must not keep what the compiler does not read.
json pod(int i) {
  const std::string name = "web-" + std::to_string(i);
  const std::string ip =
      "10." + std::to_string(1 + i / 65536) + "." + std::to_string(i / 256 % 256) + "." +
      std::to_string(i % 256);
  json managed = json::array();
  for (const char* m : {"kube-controller-manager", "kubelet"})
    managed.push_back({{"manager", m},
                       {"operation", "Update"},
                       {"apiVersion", "v1"},
                       {"time", "2026-11-26T10:00:00Z"},
                       {"fieldsType", "FieldsV1"},
                       {"fieldsV1",
                        {{"f:metadata", {{"f:labels", {{".", json::object()}, {"f:app", json::object()}}}}},
                         {"f:status", {{"f:conditions", json::object()}, {"f:podIP", json::object()}}}}}});
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", name},
            {"namespace", "ns-" + std::to_string(i % 100)},
            {"labels", {{"app", "web"}, {"pod-template-hash", "7c9f6d"}}},
            {"ownerReferences",
             {{{"apiVersion", "apps/v1"}, {"kind", "ReplicaSet"}, {"name", "web-7c9f6d"},
               {"uid", "0b7e-" + std::to_string(i)}, {"controller", true}}}},
            {"managedFields", managed}}},
          {"spec",
           {{"serviceAccountName", "sa-" + std::to_string(i % 500)},
            {"nodeName", "node-" + std::to_string(i % 50)},
            {"containers",
             {{{"name", "web"},
               {"image", "registry.example/web:1.2.3"},
               {"ports", {{{"containerPort", 8080}, {"protocol", "TCP"}}}},
               {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}}}}}}}}},
          {"status",
           {{"phase", "Running"},
            {"podIP", ip},
            {"podIPs", {{{"ip", ip}}}},
            {"conditions",
             {{{"type", "Ready"}, {"status", "True"}},
              {{"type", "ContainersReady"}, {"status", "True"}}}}}}};
}

// What the API server has seen of the agent so far.
struct ServerCounts {
  uint64_t connections = 0, open = 0, streams = 0;
};

// A process's CPU time (user + system), from /proc.
double processCpuMs(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return (utime + stime) * 1e3 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The API server runs in a child process, so the parent's RSS is the
// source's alone and the child's CPU time the server's alone. Commands on
// `cmd`: an int i relabels pod i; -2 reports ServerCounts; -1 ends.
struct ApiServerProcess {
  pid_t pid = -1;
  int port = 0;
  smik::UniqueFd cmd, reply;
  ApiServerProcess(int pods, bool http2) {
    int port_pipe[2], cmd_pipe[2];
    if (pipe(port_pipe) != 0 || pipe(cmd_pipe) != 0) std::abort();
    smik::UniqueFd port_read(port_pipe[0]), port_write(port_pipe[1]);
    smik::UniqueFd cmd_read(cmd_pipe[0]), cmd_write(cmd_pipe[1]);
    pid = fork();
    if (pid == 0) {
      port_read.reset();
      cmd_write.reset();
      smik::testing::FakeCluster::Options o;
      o.tls = true;
      o.tls_dir = SMIK_KUBE_FIXTURES_DIR "/tls";
      o.http2 = http2;
      smik::testing::FakeCluster cluster(o);
      for (int i = 0; i < pods; ++i) cluster.apply(pod(i));
      const int p = cluster.port();
      if (write(port_write.get(), &p, sizeof p) != sizeof p) _exit(1);
      int i;
      while (read(cmd_read.get(), &i, sizeof i) == sizeof i && i != -1) {
        if (i == -2) {
          const ServerCounts c{cluster.connections(), cluster.connectionsOpen(), cluster.streams()};
          if (write(port_write.get(), &c, sizeof c) != sizeof c) _exit(1);
          continue;
        }
        json changed = pod(i);
        changed["metadata"]["labels"]["rev"] = std::to_string(i);
        cluster.apply(changed);
      }
      _exit(0);
    }
    port_write.reset();
    cmd_read.reset();
    cmd = std::move(cmd_write);
    reply = std::move(port_read);
    if (read(reply.get(), &port, sizeof port) != sizeof port) std::abort();
  }
  ServerCounts counts() {
    change(-2);
    ServerCounts c;
    if (read(reply.get(), &c, sizeof c) != sizeof c) std::abort();
    return c;
  }
  double cpuMs() const { return processCpuMs(pid); }
  void change(int i) {
    if (write(cmd.get(), &i, sizeof i) != sizeof i) std::abort();
  }
  ~ApiServerProcess() {
    change(-1);
    cmd.reset();
    waitpid(pid, nullptr, 0);
  }
};

struct Transport {
  bool http2_server = true;
  smik::kube::HttpTransport client = smik::kube::HttpTransport::kMultiplexed;
  std::string tag() const {
    return std::string(http2_server ? ",server=h2" : ",server=h1") +
           (client == smik::kube::HttpTransport::kMultiplexed ? ",client=mux" : ",client=per-request");
  }
};

void run(int pods, int reps, const Transport& transport) {
  ApiServerProcess server(pods, transport.http2_server);
  smik::kube::KubeConfig k;
  k.server = "https://127.0.0.1:" + std::to_string(server.port);
  k.ca_file = SMIK_KUBE_FIXTURES_DIR "/tls/ca.crt";
  k.token = "smik-test-token";
  const std::string tag = "pods=" + std::to_string(pods) + transport.tag();

  std::vector<double> sync_ms, sync_cpu_ms, rss, change_ms, server_sync_cpu_ms,
      server_watch_cpu_ms, connections, streams;
  for (int r = 0; r < reps; ++r) {
    malloc_trim(0);
    const double before = rssMiB();
    smik::kube::KubeSourceOptions ko;
    ko.record_events = false;
    ko.transport = transport.client;
    const ServerCounts counts0 = server.counts();
    auto t0 = Clock::now();
    const double cpu0 = cpuMs();
    const double server_cpu0 = server.cpuMs();
    smik::kube::KubeSource kube(k, ko);
    kube.start();
    while (!kube.synced()) std::this_thread::sleep_for(1ms);
    kube.refresh();
    sync_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    sync_cpu_ms.push_back(cpuMs() - cpu0);
    server_sync_cpu_ms.push_back(server.cpuMs() - server_cpu0);
    // Every watch open, then 10 s of them idle: bookmarks and the
    // connections' upkeep, per agent.
    size_t collections = kube.reflectors().size();
    auto watching = [&] {
      size_t n = 0;
      for (const auto& [res, st] : kube.reflectors()) n += st.watches > 0;
      return n;
    };
    while (watching() < collections) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(200ms);
    const ServerCounts counts1 = server.counts();
    connections.push_back(static_cast<double>(counts1.connections - counts0.connections));
    streams.push_back(static_cast<double>(counts1.streams - counts0.streams));
    if (r == 0) {
      const double idle0 = server.cpuMs();
      std::this_thread::sleep_for(10s);
      server_watch_cpu_ms.push_back(server.cpuMs() - idle0);
    }
    malloc_trim(0);
    // The first repetition only: later ones reuse the heap the earlier
    // source freed, and their RSS growth says nothing.
    if (r == 0) rss.push_back(rssMiB() - before);
    if (r == 0) {
      // One pod at a time relabelled: from the API write to the source's
      // refresh() seeing it (watch delivery, JSON parse, model update).
      for (int c = 0; c < 40; ++c) {
        auto t1 = Clock::now();
        server.change(c);
        while (!kube.refresh()) kube.waitForChange(50);
        change_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t1).count());
      }
    }
    kube.stop();
  }
  smik::bench::result("kube_initial_sync/" + tag, sync_ms, "ms");
  smik::bench::result("kube_initial_sync_cpu/" + tag, sync_cpu_ms, "ms");
  smik::bench::result("kube_source_rss/" + tag, rss, "MiB");
  smik::bench::result("kube_api_connections/" + tag, connections, "connections");
  smik::bench::result("kube_api_requests/" + tag, streams, "requests");
  smik::bench::result("kube_api_server_sync_cpu/" + tag, server_sync_cpu_ms, "ms");
  smik::bench::result("kube_api_server_watch_cpu_10s/" + tag, server_watch_cpu_ms, "ms");
  std::sort(change_ms.begin(), change_ms.end());
  smik::bench::result("kube_watch_change_p50/" + tag, {change_ms[change_ms.size() / 2]}, "ms");
  smik::bench::result("kube_watch_change_max/" + tag, {change_ms.back()}, "ms");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int only = 0, reps = 0;
  Transport transport;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      transport.http2_server = std::strcmp(argv[++i], "h1") != 0;
    if (std::strcmp(argv[i], "--transport") == 0 && i + 1 < argc)
      transport.client = std::strcmp(argv[++i], "per-request") == 0
                             ? smik::kube::HttpTransport::kPerRequest
                             : smik::kube::HttpTransport::kMultiplexed;
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--pods") == 0 && i + 1 < argc) only = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
  }
  // 50k pods in the quick run too: the initial sync there is a goal.
  for (int pods : only ? std::vector<int>{only} : std::vector<int>{1000, 10000, 50000})
    run(pods, reps > 0 ? reps : quick ? 1 : 3, transport);
  return 0;
}
