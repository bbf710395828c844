// Control plane end to end (root): build/smik-agent on a temporary manifest
// directory. Pods sit on the agent's node but have no veth, so nothing is
// hooked; the policy for their identities is still compiled and swapped into
// the pinned maps, and /status policyGeneration moves on every swap.
//  - propagation: a TrafficTarget file is rewritten (written aside, renamed
//    into place) 100 times, each time with another source; time from the
//    rename to the moment /status reports the next policy generation.
//  - RSS: VmRSS of the agent once it has applied 10k and then 50k pods.
// Everything carries a per-run prefix and is removed again, also on failure:
// the agent (killed by PID), its pin dir (smik-agent --uninstall), the cgroup
// and the manifest directory.
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/base/proc_stat.h"
#include "bench/result.h"
#include "tests/kube/fake_cluster.h"
#include "tests/testbed/testbed.h"

using namespace smik;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kNode = "bench-node";
constexpr int kNamespaces = 20;
constexpr int kPodsPerFile = 5000;  // files stay under the agent's 4 MiB limit
// Pods on the agent's node: a large node (kubelet's default limit is 110);
// the rest are on 100 other nodes. The agent resolves local pods' interfaces
// (a route lookup each) when netlink reports a change or a pod's address
// changes, so this number once set every round's cost (bench/README.md).
constexpr int kLocalPods = 250;

std::string saOf(int a) { return "sa" + std::to_string(a); }
std::string nsOf(int a) { return "ns" + std::to_string(a % kNamespaces); }

void writeFile(const fs::path& dir, const std::string& name, const std::string& text) {
  fs::path tmp = dir / ("." + name + ".tmp");  // dot files: not read by the agent
  {
    std::ofstream out(tmp);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, dir / name);
}

std::string baseManifests(int sas) {
  std::ostringstream o;
  for (int n = 0; n < kNamespaces; n++) {
    o << "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns" << n
      << "\n  labels:\n    smik.io/mesh: enabled\n---\n";
    o << "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata:\n  name: tcp\n  namespace: ns"
      << n << "\nspec:\n  matches:\n    ports: [8080]\n---\n";
  }
  for (int a = 0; a < sas; a++)
    o << "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: " << saOf(a)
      << "\n  namespace: " << nsOf(a) << "\n---\n";
  return o.str();
}

std::string podsFile(int from, int to, int sas) {
  std::ostringstream o;
  for (int p = from; p < to; p++) {
    int a = p % sas;
    o << "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod" << p << "\n  namespace: " << nsOf(a)
      << "\nspec:\n  serviceAccountName: " << saOf(a) << "\n  nodeName: "
      << (p < kLocalPods ? std::string(kNode) : "node-" + std::to_string(p % 100))
      << "\nstatus:\n  phase: Running\n  podIP: 10." << 64 + (p >> 16) << "." << ((p >> 8) & 255)
      << "." << (p & 255) << "\n---\n";
  }
  return o.str();
}

std::string trafficTarget(int i, int dst, int src) {
  std::ostringstream o;
  o << "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata:\n  name: tt" << i
    << "\n  namespace: " << nsOf(dst) << "\nspec:\n  destination:\n    kind: ServiceAccount\n    name: "
    << saOf(dst) << "\n    namespace: " << nsOf(dst)
    << "\n  rules:\n  - kind: TCPRoute\n    name: tcp\n  sources:\n  - kind: ServiceAccount\n    name: "
    << saOf(src) << "\n    namespace: " << nsOf(src) << "\n---\n";
  return o.str();
}

long vmRssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

struct Run {
  testbed::TestBed bed;  // only for spawn (kill by PID) and the prefix
  fs::path dir;
  std::string pin, cgroup, prefix;
  int port;
  std::unique_ptr<testbed::Proc> agent;
  httplib::Client http;

  explicit Run(int port)
      : dir("/tmp/" + bed.prefix() + "-agentbench"),
        pin("/sys/fs/bpf/" + bed.prefix() + "-agentbench"),
        cgroup(testbed::cgroup2Mount() + "/" + bed.prefix() + "-agentbench"),
        port(port),
        http("127.0.0.1", port) {
    fs::create_directories(dir);
    fs::create_directories(cgroup);
    http.set_connection_timeout(0, 200000);
    http.set_read_timeout(5, 0);
  }
  ~Run() {
    if (agent) agent->kill();
    testbed::tryCommand({SMIK_AGENT, "--uninstall", "--pin-dir", pin});
    std::error_code ec;
    fs::remove(cgroup, ec);
    fs::remove_all(dir, ec);
  }
  // source: {"--manifests", dir} or {"--kubeconfig", file}.
  void start(const std::vector<std::string>& source) {
    // SMIK_BENCH_AGENT: another agent binary (another tree's, for a diagnosis).
    const char* bin = std::getenv("SMIK_BENCH_AGENT");
    std::vector<std::string> argv = {bin && *bin ? bin : SMIK_AGENT, "--node", kNode, "--http",
                                     "127.0.0.1:" + std::to_string(port), "--grpc", "",
                                     "--pin-dir", pin, "--cgroup", cgroup, "--log-level", "warn",
                                     "--events", "false"};
    argv.insert(argv.begin() + 1, source.begin(), source.end());
    agent = std::make_unique<testbed::Proc>(bed.spawn(argv));
  }
  nlohmann::json status() {
    auto r = http.Get("/status");
    if (!r || r->status != 200) return nullptr;
    return nlohmann::json::parse(r->body, nullptr, false);
  }
  // Polls /status until pred holds; throws after timeout_ms.
  template <class F>
  nlohmann::json waitUntil(F pred, int timeout_ms, const char* what) {
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < end) {
      auto s = status();
      if (!s.is_null() && !s.is_discarded() && pred(s)) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // /status reads maps: do not hog the CPU
    }
    throw std::runtime_error(std::string("timed out waiting for ") + what + "; agent output:\n" +
                             (agent ? agent->output() : ""));
  }
};

// SIGINT/SIGTERM: unwind through the destructors (they clean up).
volatile sig_atomic_t stop = 0;

// One source end to end: start the agent, 10k pods, 100 policy changes, 50k pods.
void benchSource(bool quick, bool kube) {
  // Row names: the manifest source's as before, the Kubernetes source's marked.
  const std::string tag = kube ? "_kube" : "";
  Run run(20000 + (getpid() * 13) % 10000);  // below the ephemeral port range
  // Objects go into a manifest file (written aside, renamed into place) or
  // to the fake API server (HTTPS, watched by the agent).
  std::unique_ptr<smik::testing::FakeCluster> cluster;
  // In the run's directory: removed with it (the agent reads no manifests then).
  const std::string kubeconfig = (run.dir / "kubeconfig").string();
  if (kube) {
    smik::testing::FakeCluster::Options o;
    o.tls = true;
    o.tls_dir = SMIK_KUBE_FIXTURES_DIR "/tls";
    cluster = std::make_unique<smik::testing::FakeCluster>(o);
    cluster->writeKubeconfig(kubeconfig);
  }
  auto put = [&](const std::string& name, const std::string& text) {
    if (cluster)
      cluster->applyYaml(text);
    else
      writeFile(run.dir, name, text);
  };
  const int sas = 1000, tts = 100, changes = 100;
  std::printf("agent: %d namespaces, %d service accounts, %d TrafficTargets, %d pods on node %s\n",
              kNamespaces, sas, tts, kLocalPods, kNode);
  put("base.yaml", baseManifests(sas));
  {
    std::ostringstream o;
    for (int i = 0; i < tts; i++) o << trafficTarget(i, i % sas, (i + 1) % sas);
    put("tts.yaml", o.str());
  }
  put("changing.yaml", trafficTarget(tts, 0, 500));
  int pods = 0;
  auto addPods = [&](int upto) {
    for (; pods < upto; pods += kPodsPerFile)
      put("pods" + std::to_string(pods / kPodsPerFile) + ".yaml",
          podsFile(pods, std::min(upto, pods + kPodsPerFile), sas));
    pods = upto;
  };
  if (cluster)
    run.start({"--kubeconfig", kubeconfig});
  else
    run.start({"--manifests", run.dir.string()});
  run.waitUntil([&](auto& j) { return j["ready"] == true; }, 30000, "the agent to be ready");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long rss0 = vmRssKiB(run.agent->pid());
  auto t0 = Clock::now();
  addPods(10000);
  auto s = run.waitUntil([&](auto& j) { return j["ipEntries"] >= 10000; }, 60000,
                         "the agent to apply 10k pods");
  double load10k = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long rss10k = vmRssKiB(run.agent->pid());
  std::printf("10k pods written to applied: %.0f ms; policy entries %d\n", load10k,
              int(s["policyEntries"]));

  // Idle: nothing changes; what the agent's rounds (every 250 ms) cost.
  const double idle_s = quick ? 3 : 10;
  double cpu0 = processCpuSeconds(std::to_string(run.agent->pid()));
  std::this_thread::sleep_for(std::chrono::duration<double>(idle_s));
  double idle_pct = 100 * (processCpuSeconds(std::to_string(run.agent->pid())) - cpu0) / idle_s;

  // Propagation: 100 changes of one TrafficTarget's source.
  std::vector<double> ms, apply_ms;
  uint32_t gen = s["policyGeneration"];
  for (int i = 0; i < changes && !stop; i++) {
    std::string text = trafficTarget(tts, 0, 501 + i % 400);
    fs::path tmp = run.dir / ".changing.yaml.tmp";
    if (!cluster) std::ofstream(tmp) << text;
    auto c0 = Clock::now();
    if (cluster)
      cluster->applyYaml(text);
    else
      fs::rename(tmp, run.dir / "changing.yaml");
    auto j = run.waitUntil([&](auto& j) { return uint32_t(j["policyGeneration"]) != gen; }, 10000,
                           "a policy swap");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - c0).count());
    gen = j["policyGeneration"];
    if (j.contains("lastApplyMs") && j["lastApplyMs"].is_number()) apply_ms.push_back(j["lastApplyMs"]);
    std::this_thread::sleep_for(std::chrono::milliseconds(quick ? 20 : 50));
  }
  if (stop) throw std::runtime_error("interrupted");
  std::sort(ms.begin(), ms.end());
  double p50 = ms[ms.size() / 2], p99 = ms[ms.size() * 99 / 100];

  addPods(50000);
  s = run.waitUntil([&](auto& j) { return j["ipEntries"] >= 50000; }, 120000,
                    "the agent to apply 50k pods");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  long rss50k = vmRssKiB(run.agent->pid());
  // SMIK_BENCH_HOLD_S: keep the agent running that long after the 50k
  // reading, to look at it (/proc/PID/smaps, malloc_info from a debugger).
  if (const char* hold = std::getenv("SMIK_BENCH_HOLD_S")) {
    std::printf("holding the agent (pid %d) for %s s\n", int(run.agent->pid()), hold);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(hold)));
  }

  std::printf("\n%-34s %10s %10s %10s\n", "control plane", "value", "min", "max");
  std::printf("%-34s %8.1fms %8.1fms %8.1fms   (%zu changes, 10k pods)\n", "propagation p50", p50,
              ms.front(), ms.back(), ms.size());
  std::printf("%-34s %8.1fms\n", "propagation p99", p99);
  if (!apply_ms.empty())
    std::printf("%-34s %8.1fms   (the agent's own lastApplyMs, median)\n", "  of which apply", bench::median(apply_ms));
  std::printf("%-34s %8.2f%%    (of one core, %d local pods, 10k in all, no changes for %.0f s)\n",
              "agent CPU, idle", idle_pct, kLocalPods, idle_s);
  std::printf("%-34s %7.1fMiB\n", "agent RSS, no pods", rss0 / 1024.0);
  std::printf("%-34s %7.1fMiB\n", "agent RSS, 10k pods", rss10k / 1024.0);
  std::printf("%-34s %7.1fMiB\n", "agent RSS, 50k pods", rss50k / 1024.0);
  // RESULT lines: the propagation figures are percentiles over the changes
  // (reps = changes, min/max = fastest/slowest change).
  std::printf("RESULT propagation%s/p50 %.4g ms - - %zu %.4g %.4g\n", tag.c_str(), p50, ms.size(),
              ms.front(), ms.back());
  std::printf("RESULT propagation%s/p99 %.4g ms - - %zu %.4g %.4g\n", tag.c_str(), p99, ms.size(),
              ms.front(), ms.back());
  if (!apply_ms.empty()) bench::result("propagation" + tag + "/agent_last_apply", apply_ms, "ms");
  bench::result("agent_idle_cpu" + tag + "/local_pods=" + std::to_string(kLocalPods), {idle_pct}, "%");
  bench::result("agent_rss" + tag + "/pods=0", {rss0 / 1024.0}, "MiB");
  bench::result("agent_rss" + tag + "/pods=10000", {rss10k / 1024.0}, "MiB");
  bench::result("agent_rss" + tag + "/pods=50000", {rss50k / 1024.0}, "MiB");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, only_dir = false, only_kube = false;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    if (a == "--manifests") only_dir = true;  // only the manifest-directory source
    if (a == "--kube") only_kube = true;      // only the Kubernetes source (fake API server)
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "smik_bench_agent needs root (BPF, cgroup)\n");
    return 1;
  }
  // SIGINT/SIGTERM: unwind through the destructors (they clean up).
  std::signal(SIGINT, [](int) { stop = 1; });
  std::signal(SIGTERM, [](int) { stop = 1; });
  try {
    if (!only_kube) benchSource(quick, false);
    if (!only_dir && !stop) benchSource(quick, true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smik_bench_agent: %s\n", e.what());
    return 1;
  }
  return 0;
}
