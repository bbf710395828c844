// Keep-alive HTTP/1.1 between two pods of the test bed: small requests and
// responses on one connection, the client busy-polling, p50/p99 and requests
// per second, under four configurations interleaved in rounds (a b c d a b
// c d ...) so drift on a shared VM hits all alike:
//   none     no agent (baseline)
//   smik_l4  smik's tc programs on both pods' veths and its socket programs
//            on their cgroup, the server's port granted at L4
//   smik_l7  the same and the kernel's HTTP judge (--http-rules enforce) on
//            the server's port: every request is judged against an
//            HTTPRouteGroup of 100 matches (their regexes in one DFA)
//   nginx    no smik program; what users would otherwise put there: nginx
//            (Debian's nginx-core) as a reverse proxy in the server's pod,
//            the same matches as `location ~` blocks with `limit_except`,
//            everything else 403, proxying to the server over keep-alive
//            upstream connections
// The request's path matches one of the last patterns (nginx tries its
// regex locations in order), and a probe at startup shows that a denied
// path and a denied method get 403 from both enforcers (and 200 with
// none): a run cannot silently measure a configuration that enforces
// nothing. One more pass with the kernel's BPF run-time statistics on
// gives the judge's cost per request (the ratio rows run without them:
// they cost two clock reads per program run).
// nginx is started by this benchmark in the server pod, stopped by its PID;
// its configuration and temp files live in a directory of this run.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/datapath/datapath.h"
#include "agent/datapath/http_apply.h"
#include "agent/model/parse.h"
#include "bench/http_peers.h"
#include "bench/prog_stats.h"
#include "bench/pinned.h"
#include "bench/result.h"
#include "bench/seed.h"
#include "bench/sockets.h"
#include "maps/desired.h"
#include "tests/testbed/testbed.h"

using namespace smik;

namespace {

constexpr uint16_t kServerPort = 8080;  // the application, judged by smik_l7
constexpr uint16_t kProxyPort = 8000;   // nginx in front of it
constexpr const char* kNode = "bench-node";
constexpr const char* kNs = "bench";

// The HTTPRouteGroup: 100 matches, each with a path regex of its own (with
// the node's own traffic, which passes unjudged, 101 of the 128 patterns a
// port holds). The first 63 are read (GET); the last 37 read and written
// (GET, POST, PUT), as an API's route group names what each path takes. Two
// shapes alternate, one with an optional suffix, so the DFA is no literal
// trie.
constexpr int kMatches = 100, kReadOnly = 63;
std::string pathRegex(int i) {
  const std::string svc = "/api/v1/svc" + std::to_string(i);
  return i % 2 ? "^" + svc + "/users/[a-z0-9-]+/orders(/[0-9]+)?$" : "^" + svc + "/items/[0-9]+$";
}
struct Match {
  std::string name;
  int regex;
  std::vector<std::string> methods;
};
std::vector<Match> matches() {
  std::vector<Match> m;
  for (int i = 0; i < kMatches; i++)
    m.push_back({"svc" + std::to_string(i), i,
                 i < kReadOnly ? std::vector<std::string>{"GET"}
                               : std::vector<std::string>{"GET", "POST", "PUT"}});
  return m;
}
// What the client asks, all along: matches regex 99 of 100.
const std::string kPath = "/api/v1/svc98/items/12345";
// What the probe shows refused: no pattern matches / a method not granted.
const std::string kDeniedPath = "/api/v1/svc98/admin/12345";
const std::string kDeniedMethod = "DELETE";

std::string g_self;

// The SMI objects smik compiles: a meshed namespace, the two pods (the
// server declares its port), the route group, and a TrafficTarget granting
// the client every match of it.
std::string manifests(const std::string& client_ip, const std::string& server_ip) {
  std::ostringstream o;
  o << "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " << kNs
    << "\n  labels:\n    smik.io/mesh: enabled\n---\n";
  auto pod = [&](const std::string& name, const std::string& ip, const std::string& ports) {
    o << "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " << name << "\n  namespace: " << kNs
      << "\nspec:\n  serviceAccountName: " << name << "\n  nodeName: " << kNode << "\n" << ports
      << "status:\n  phase: Running\n  podIP: " << ip << "\n  podIPs:\n  - ip: " << ip << "\n---\n";
  };
  pod("client", client_ip, "");
  pod("server", server_ip,
      "  containers:\n  - name: app\n    image: x\n    ports:\n    - containerPort: " +
          std::to_string(kServerPort) + "\n");
  o << "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n  name: api\n"
    << "  namespace: " << kNs << "\nspec:\n  matches:\n";
  for (const auto& m : matches()) {
    o << "  - name: " << m.name << "\n    pathRegex: '" << pathRegex(m.regex) << "'\n    methods: [";
    for (size_t i = 0; i < m.methods.size(); i++) o << (i ? ", " : "") << m.methods[i];
    o << "]\n";
  }
  o << "---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata:\n  name: api\n"
    << "  namespace: " << kNs << "\nspec:\n  destination:\n    kind: ServiceAccount\n    name: server\n"
    << "    namespace: " << kNs << "\n  rules:\n  - kind: HTTPRouteGroup\n    name: api\n"
    << "  sources:\n  - kind: ServiceAccount\n    name: client\n    namespace: " << kNs << "\n";
  return o.str();
}

// The same matches as an nginx user writes them: a regex location per path
// (a path's matches merged: nginx takes the first location that matches),
// its methods by limit_except, everything else 403. Reverse proxy as
// nginx's documentation sets it up for keep-alive upstreams.
std::string nginxConfig(const std::string& dir) {
  std::map<int, std::vector<std::string>> methods;
  for (const auto& m : matches())
    methods[m.regex].insert(methods[m.regex].end(), m.methods.begin(), m.methods.end());
  std::ostringstream o;
  o << "worker_processes auto;\ndaemon off;\npid " << dir << "/nginx.pid;\nerror_log " << dir
    << "/error.log warn;\nevents {\n  worker_connections 1024;\n}\nhttp {\n"
    << "  access_log off;\n  default_type application/octet-stream;\n"
    << "  sendfile on;\n  tcp_nodelay on;\n  keepalive_timeout 65;\n"
    // nginx closes a keep-alive connection after 1000 requests by default;
    // a run sends more on one connection.
    << "  keepalive_requests 1000000;\n";
  for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
    o << "  " << t << "_temp_path " << dir << "/" << t << ";\n";
  o << "  upstream app {\n    server 127.0.0.1:" << kServerPort << ";\n    keepalive 16;\n"
    << "    keepalive_requests 1000000;\n  }\n"
    << "  server {\n    listen " << kProxyPort << ";\n"
    << "    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n"
    << "    proxy_set_header Host $host;\n";
  for (const auto& [regex, ms] : methods) {
    o << "    location ~ \"" << pathRegex(regex) << "\" {\n      limit_except";
    for (const auto& m : ms) o << " " << m;
    o << " {\n        deny all;\n      }\n      proxy_pass http://app;\n    }\n";
  }
  o << "    location / {\n      return 403;\n    }\n  }\n}\n";
  return o.str();
}

struct Rtt {
  double p50 = 0, p99 = 0, rps = 0;
};

struct Bed {
  testbed::TestBed bed;
  testbed::Pod* client;
  testbed::Pod* server;
  std::unique_ptr<testbed::Proc> app, nginx;
  bench::PinnedDatapath dp;
  std::unique_ptr<datapath::HttpEnforcer> judge;
  compile::Plan plan;
  std::string dir;

  Bed() {
    try {
      setUp();
    } catch (...) {  // no destructor runs for a half-made Bed
      tearDown();
      throw;
    }
  }
  ~Bed() { tearDown(); }

  void setUp() {
    client = &bed.addPod("client", bed.nextIp());
    server = &bed.addPod("server", bed.nextIp());
    dir = "/tmp/" + bed.prefix() + "-httpbench";
    std::filesystem::create_directories(dir);
    app = std::make_unique<testbed::Proc>(
        bed.spawn(*server, {g_self, "--http-server", std::to_string(kServerPort)}));
    if (!app->waitFor("ready\n", 5000)) throw std::runtime_error("HTTP server did not start");
    dp.open("/sys/fs/bpf/" + bed.prefix() + "-httpbench", bed.cgroupRoot());
    compilePolicy();
    seed();
  }
  void tearDown() {
    judge.reset();
    stopNginx();
    dp.close();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }

  // The agent's path from SMI objects to what the kernel holds.
  void compilePolicy() {
    auto parsed = model::parseManifests(manifests(client->ip(), server->ip()), "bench.yaml");
    if (!parsed.errors.empty()) throw std::runtime_error(parsed.errors.front().str());
    model::ClusterState state;
    for (const auto& obj : parsed.objects) state.add(obj);
    compile::NodeConfig node;
    node.node_name = kNode;
    node.http_rules = compile::HttpRulesAtL4::kEnforce;
    plan = compile::compile(state, node);
    for (const auto& d : plan.diagnostics) std::printf("compile: %s\n", d.str().c_str());
    if (plan.http.size() != 1) throw std::runtime_error("expected one HTTP-judged port");
    const auto& hp = plan.http.begin()->second;
    if (!hp.error.empty()) throw std::runtime_error("route group not compiled: " + hp.error);
    std::printf("smik: %zu HTTPRouteGroup matches, %zu path patterns, DFA of %zu states x %u byte classes\n",
                matches().size(), hp.patterns.size(), hp.dfa.states(), unsigned(hp.dfa.classes));
  }
  void seed() {
    const std::map<std::string, uint32_t> ifindex = {{std::string(kNs) + "/client", client->hostIfIndex()},
                                                     {std::string(kNs) + "/server", server->hostIfIndex()}};
    std::map<std::string, uint8_t> modes;
    for (const auto& [pod, i] : ifindex) modes[pod] = dp->attachMode();
    maps::KernelState s = maps::desiredState(plan, ifindex, modes);
    std::string err;
    if (!maps::apply(dp->maps(), s, dp->maps().read().value(), nullptr, &err)) throw std::runtime_error(err);
    std::printf("smik: %zu policy entries, %zu ipcache entries\n", s.policy.size(), s.ips.size());
  }

  // tc on both veths, socket programs on the pods' cgroup; or nothing.
  void smikL4(bool on) { bench::attachSmik(*dp, *client, *server, on); }
  // The HTTP judge as the agent runs it (HttpEnforcer, the ipcache shared
  // with tc), unpinned: gone, it detaches, and smik_l4 runs without it.
  void smikL7(bool on) {
    if (!on) {
      judge.reset();
      return;
    }
    UniqueFd ipcache(bpf_obj_get((dp.pin() + "/" + maps::kIpcacheMap).c_str()));
    if (!ipcache) throw std::runtime_error("no pinned ipcache under " + dp.pin());
    std::string err;
    judge = datapath::HttpEnforcer::open(ipcache.get(), {}, {}, bed.cgroupRoot(), "", &err);
    if (!judge || !judge->stage(plan, &err) || !judge->finish(plan, &err))
      throw std::runtime_error("HTTP judge: " + err);
  }

  void startNginx() {
    std::ofstream(dir + "/nginx.conf") << nginxConfig(dir);
    nginx = std::make_unique<testbed::Proc>(bed.spawn(
        *server, {"nginx", "-p", dir, "-c", dir + "/nginx.conf", "-e", dir + "/error.log"}));
    // Ready once it answers (it prints nothing); a bound, not a measurement.
    for (int i = 0; i < 100; i++) {
      if (probe("GET", kPath, kProxyPort) == 200) return;
      if (nginx->wait(50) != -1) break;  // exited
    }
    std::ifstream log(dir + "/error.log");
    std::stringstream text;
    text << log.rdbuf();
    throw std::runtime_error("nginx did not start: " + nginx->output() + text.str());
  }
  // SIGQUIT to the master we started (graceful: it stops its workers); if it
  // does not go, SIGKILL to that PID (the pod's removal ends its workers).
  void stopNginx() {
    if (!nginx) return;
    if (nginx->wait(0) == -1) {
      ::kill(nginx->pid(), SIGQUIT);
      if (nginx->wait(5000) == -1) nginx->kill();
    }
    nginx.reset();
  }

  int probe(const std::string& method, const std::string& path, int port) {
    auto r = bed.run(*client, {g_self, "--probe", server->ip(), std::to_string(port), method, path}, 20000);
    return r.ok() ? std::atoi(r.output.c_str()) : -1;
  }
  // n requests over `conns` connections at once; returns requests per second.
  double load(int port, int conns, int n) {
    auto r = bed.run(*client, {g_self, "--load", server->ip(), std::to_string(port), kPath,
                               std::to_string(n), std::to_string(conns)}, 300000);
    if (!r.ok()) throw std::runtime_error("HTTP load failed: " + r.output);
    return std::atof(r.output.c_str());
  }
  Rtt requests(int port, int n) {
    auto r = bed.run(*client, {g_self, "--client", server->ip(), std::to_string(port), kPath,
                               std::to_string(n)}, 300000);
    if (!r.ok()) throw std::runtime_error("HTTP client failed: " + r.output);
    Rtt t;
    std::istringstream(r.output) >> t.p50 >> t.p99 >> t.rps;
    return t;
  }
};

std::unique_ptr<Bed> g_bed;
int g_requests = 20000;
const std::vector<std::string> kConfigs = {"none", "smik_l4", "smik_l7", "nginx"};
std::map<std::string, std::vector<Rtt>> g_rtt;  // per configuration, one per round

void setConfig(const std::string& cfg, bool on) {
  auto& b = *g_bed;
  if (cfg == "smik_l4" || cfg == "smik_l7") b.smikL4(on);
  if (cfg == "smik_l7") b.smikL7(on);
}
int portOf(const std::string& cfg) { return cfg == "nginx" ? kProxyPort : kServerPort; }

void BM_Config(benchmark::State& st) {
  const std::string& cfg = kConfigs[st.range(0)];
  try {
    setConfig(cfg, true);
    for (auto _ : st) {
      Rtt t = g_bed->requests(portOf(cfg), g_requests);
      st.SetIterationTime(t.p50 * 1e-6);
      st.counters["p99_us"] = t.p99;
      st.counters["req/s"] = t.rps;
      g_rtt[cfg].push_back(t);
    }
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
  setConfig(cfg, false);
}

// What each configuration answers to the request the benchmark sends and to
// the two it must refuse; false if an enforcer does not enforce.
bool sanity() {
  auto& b = *g_bed;
  bool ok = true;
  std::printf("\n%-10s %-44s %6s %6s\n", "config", "request", "status", "wanted");
  for (const auto& cfg : kConfigs) {
    if (cfg == "smik_l4") continue;  // as none: nothing judges requests
    setConfig(cfg, true);
    const bool enforcing = cfg != "none";
    const std::pair<std::string, std::string> reqs[] = {
        {"GET", kPath}, {"GET", kDeniedPath}, {kDeniedMethod, kPath}};
    for (const auto& [method, path] : reqs) {
      const int want = method == "GET" && path == kPath ? 200 : enforcing ? 403 : 200;
      const int got = b.probe(method, path, portOf(cfg));
      std::printf("%-10s %-44s %6d %6d%s\n", cfg.c_str(), (method + " " + path).c_str(), got, want,
                  got == want ? "" : "  MISMATCH");
      ok = ok && got == want;
    }
    setConfig(cfg, false);
  }
  return ok;
}

// A program that does nothing, attached where the guard is (every packet
// into the pods): what the statistics count for any run at these hooks,
// however little the program does. -1 when it cannot be attached.
int emptyProgramAtTheGuardsHook(UniqueFd* link) {
  const bpf_insn insns[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .src_reg = 0, .off = 0, .imm = 1},
      {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
  };
  const int prog = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SKB, "smik_empty", "GPL", insns, 2, nullptr);
  if (prog < 0) return -1;
  const UniqueFd cg(::open(g_bed->bed.cgroupRoot().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  link->reset(cg ? bpf_link_create(prog, cg.get(), BPF_CGROUP_INET_INGRESS, nullptr) : -1);
  if (!*link) {
    ::close(prog);
    return -1;
  }
  return prog;
}

// The judge's programs with the kernel's run-time statistics on, over one
// run of requests: ns per request of each and of all. Beside them, an empty
// program at the guard's hook: the statistics' floor per run (their two
// clock reads, the dispatch, the program's first cache lines), which each
// of the judge's five runs per request carries too. Two runs: one request
// at a time on one connection (the server's CPU idles between requests, and
// the judge's code and maps go cold in the caches), and a busy server
// (kLoadConns connections at once: the CPU goes from one request to the next).
constexpr int kLoadConns = 8;

void kernelCost() {
  auto& b = *g_bed;
  UniqueFd stats(bpf_enable_stats(BPF_STATS_RUN_TIME));
  if (!stats) {
    std::printf("\nno BPF run-time statistics (bpf_enable_stats: %s)\n", std::strerror(errno));
    return;
  }
  setConfig("smik_l7", true);
  auto progs = b.judge->programs();
  UniqueFd empty_link;
  const UniqueFd empty(emptyProgramAtTheGuardsHook(&empty_link));
  if (empty) progs.emplace_back("empty_program", empty.get());
  auto snapshot = [&] {
    std::vector<bench::ProgStats> v;
    for (const auto& [name, fd] : progs) v.push_back(bench::statsOf(fd));
    return v;
  };
  // `n`: the requests `run` sends, warm-up included.
  auto measure = [&](const std::string& what, const std::string& key, int n, const auto& run) {
    auto before = snapshot();
    run();
    auto after = snapshot();
    std::printf("\n%-20s %10s %10s %12s   (BPF run-time statistics, smik_l7, %s, %d requests)\n",
                "program", "runs/req", "ns/run", "ns/request", what.c_str(), n);
    double total = 0, judge_runs = 0, floor = 0;
    for (size_t i = 0; i < after.size(); i++) {
      const uint64_t runs = after[i].runs - before[i].runs, ns = after[i].run_ns - before[i].run_ns;
      const double per = double(ns) / n;
      // The program's own name: the kernel's is cut at 15 characters.
      const std::string& name = progs[i].first;
      std::printf("%-20s %10.2f %10.1f %12.1f\n", name.c_str(), double(runs) / n,
                  runs ? double(ns) / runs : 0.0, per);
      if (name == "empty_program") {
        floor = runs ? double(ns) / runs : 0.0;
        bench::result("http/" + key + "/empty_program_per_run", {floor}, "ns");
        continue;
      }
      total += per;
      judge_runs += double(runs) / n;
      bench::result("http/" + key + "/" + name, {per}, "ns");
    }
    std::printf("%-20s %10.2f %10s %12.1f\n", "all (judge)", judge_runs, "", total);
    bench::result("http/" + key + "_ns_per_request", {total}, "ns");
    if (floor > 0)
      std::printf("%-20s %10s %10s %12.1f   (all, less the empty program's time per run for each run)\n",
                  "above the floor", "", "", total - judge_runs * floor);
  };
  // Warm-up requests ran too (and the connection's setup and teardown).
  measure("one connection", "kernel", g_requests + g_requests / 100,
          [&] { b.requests(kServerPort, g_requests); });
  const int load_n = g_requests * 2 / kLoadConns * kLoadConns;
  double rps = 0;
  measure("busy server: " + std::to_string(kLoadConns) + " connections at once", "kernel_busy", load_n,
          [&] { rps = b.load(kServerPort, kLoadConns, load_n); });
  std::printf("%-20s %10s %10s %12.0f\n", "requests/s", "", "", rps);
  setConfig("smik_l7", false);
}

}  // namespace

int main(int argc, char** argv) {
  g_self = argv[0][0] == '/' ? argv[0] : std::string(get_current_dir_name()) + "/" + argv[0];
  const std::string mode = argc >= 2 ? argv[1] : "";
  if (mode == "--http-server") return bench::pinTo(1), bench::httpServer(std::atoi(argv[2]));
  if (mode == "--client") {
    const int n = std::atoi(argv[5]);
    return bench::pinTo(0),
           bench::httpClient(argv[2], std::atoi(argv[3]), bench::httpRequest("GET", argv[4]), n, n / 100);
  }
  if (mode == "--load")
    return bench::pinTo(0), bench::httpLoad(argv[2], std::atoi(argv[3]), bench::httpRequest("GET", argv[4]),
                                            std::atoi(argv[6]), std::atoi(argv[5]));
  if (mode == "--probe") return bench::httpProbe(argv[2], std::atoi(argv[3]), argv[4], argv[5]);
  if (geteuid() != 0) {
    std::fprintf(stderr, "smik_bench_http needs root (pods, BPF)\n");
    return 1;
  }
  const bool quick = bench::takeQuick(&argc, argv);
  std::signal(SIGINT, [](int) { g_bed.reset(); _exit(130); });
  std::signal(SIGTERM, [](int) { g_bed.reset(); _exit(143); });
  benchmark::Initialize(&argc, argv);
  const int rounds = quick ? 3 : 9;
  g_requests = quick ? 3000 : 20000;
  try {
    g_bed = std::make_unique<Bed>();
    g_bed->startNginx();
    setConfig("nginx", false);
  } catch (const std::exception& e) {
    g_bed.reset();
    std::fprintf(stderr, "smik_bench_http: %s\n", e.what());
    return 1;
  }
  if (!sanity()) {
    g_bed.reset();
    std::fprintf(stderr, "smik_bench_http: an enforcer does not answer as configured (above)\n");
    return 1;
  }
  for (int r = 0; r < rounds; r++)
    for (int c = 0; c < int(kConfigs.size()); c++)
      benchmark::RegisterBenchmark(("http/" + kConfigs[c]).c_str(), BM_Config)
          ->Arg(c)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  kernelCost();
  g_bed.reset();  // stops nginx, removes the programs, the pins and the pods

  std::printf("\n%-10s %10s %7s %10s %7s %10s %7s %12s   (median of %d rounds, %d requests each, one keep-alive connection)\n",
              "config", "p50 us", "ratio", "p99 us", "ratio", "req/s", "ratio", "added p50 us", rounds,
              g_requests);
  const auto& base = g_rtt["none"];
  auto column = [](const std::vector<Rtt>& v, double Rtt::*f) {
    std::vector<double> out;
    for (const auto& t : v) out.push_back(t.*f);
    return out;
  };
  const double b50 = bench::median(column(base, &Rtt::p50)), b99 = bench::median(column(base, &Rtt::p99)),
               brps = bench::median(column(base, &Rtt::rps));
  for (const auto& cfg : kConfigs) {
    const auto& v = g_rtt[cfg];
    if (v.empty()) continue;  // every round of it failed (logged above)
    const bool b = cfg == "none";
    const double p50 = bench::result("http/" + cfg + "/p50", column(v, &Rtt::p50), "us", b ? 0 : b50);
    const double p99 = bench::result("http/" + cfg + "/p99", column(v, &Rtt::p99), "us", b ? 0 : b99);
    const double rps = bench::result("http/" + cfg + "/rps", column(v, &Rtt::rps), "req/s", b ? 0 : brps);
    // Added latency per round against that round's baseline (interleaved:
    // both saw the same state of the machine).
    std::vector<double> added;
    for (size_t r = 0; r < v.size() && r < base.size(); r++) added.push_back(v[r].p50 - base[r].p50);
    const double a = b ? 0 : bench::result("http/" + cfg + "/added_p50", added, "us");
    std::printf("%-10s %10.2f %7.3f %10.2f %7.3f %10.0f %7.3f %12.2f\n", cfg.c_str(), p50,
                b50 > 0 ? p50 / b50 : 0, p99, b99 > 0 ? p99 / b99 : 0, rps, brps > 0 ? rps / brps : 0, a);
  }
  benchmark::Shutdown();
  return 0;
}
