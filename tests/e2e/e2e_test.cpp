// End to end: real pods (netns + veth), the real smik-agent on a manifest
// directory, real TCP/UDP between them. Every test names its objects with the
// test bed's per-run prefix and removes them, also on failure.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/testbed/testbed.h"

namespace fs = std::filesystem;
using smik::testbed::Pod;
using smik::testbed::Proc;
using smik::testbed::TestBed;

namespace {

constexpr const char* kNode = "e2e-node";

// GET http://127.0.0.1:port/path -> (status, body); status 0 if unreachable.
std::pair<int, std::string> httpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    close(fd);
    return {0, ""};
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  send(fd, req.data(), req.size(), 0);
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, n);
  close(fd);
  int status = 0;
  if (resp.size() > 12) status = std::atoi(resp.substr(9, 3).c_str());
  auto body = resp.find("\r\n\r\n");
  return {status, body == std::string::npos ? "" : resp.substr(body + 4)};
}

bool eventually(const std::function<bool()>& cond, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

std::string ns(const std::string& name, bool meshed) {
  return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n" +
         (meshed ? "  labels:\n    smik.io/mesh: enabled\n" : "") + "---\n";
}

std::string pod(const std::string& namesp, const std::string& name, const std::string& sa,
                const std::string& ip, const std::string& node = kNode) {
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + namesp +
         "\nspec:\n  serviceAccountName: " + sa + "\n  nodeName: " + node +
         "\nstatus:\n  phase: Running\n  podIP: " + ip + "\n---\n";
}

std::string tcpRoute(const std::string& namesp, const std::string& name,
                     const std::string& ports, const std::string& kind = "TCPRoute") {
  return "apiVersion: specs.smi-spec.io/v1alpha4\nkind: " + kind + "\nmetadata:\n  name: " + name +
         "\n  namespace: " + namesp + "\nspec:\n  matches:\n    ports: " + ports + "\n---\n";
}

std::string trafficTarget(const std::string& namesp, const std::string& name,
                          const std::string& dst_ns, const std::string& dst_sa,
                          const std::string& rules_yaml, const std::string& src_ns,
                          const std::string& src_sa) {
  return "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata:\n  name: " +
         name + "\n  namespace: " + namesp +
         "\nspec:\n  destination:\n    kind: ServiceAccount\n    name: " + dst_sa +
         "\n    namespace: " + dst_ns + "\n  rules:\n" + rules_yaml +
         "  sources:\n  - kind: ServiceAccount\n    name: " + src_sa + "\n    namespace: " +
         src_ns + "\n---\n";
}

std::string rule(const std::string& kind, const std::string& name) {
  return "  - kind: " + kind + "\n    name: " + name + "\n";
}

class E2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "KERNEL TEST SKIPPED: end-to-end tests need root";
    bed_ = std::make_unique<TestBed>();
    dir_ = "/tmp/" + bed_->prefix() + "-manifests";
    fs::create_directories(dir_);
    pin_ = "/sys/fs/bpf/" + bed_->prefix() + "-e2e";
    http_port_ = 20000 + (getpid() * 7 + counter_++) % 20000;
  }

  void TearDown() override {
    if (agent_) {
      kill(agent_->pid(), SIGTERM);
      agent_->wait(3000);
      agent_.reset();
    }
    if (!pin_.empty() && fs::exists(pin_)) {
      auto r = bed_->run({SMIK_AGENT, "--uninstall", "--pin-dir", pin_}, 10000);
      EXPECT_TRUE(r.ok()) << r.output;
    }
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
    bed_.reset();
    if (!pin_.empty()) {
      EXPECT_FALSE(fs::exists(pin_)) << "uninstall left " << pin_;
    }
  }

  void write(const std::string& file, const std::string& text) {
    // Write then rename: the agent never reads a half-written file.
    std::string tmp = dir_ + "/." + file + ".tmp";
    std::ofstream(tmp) << text;
    fs::rename(tmp, dir_ + "/" + file);
  }
  void remove(const std::string& file) { fs::remove(dir_ + "/" + file); }

  std::vector<std::string> agentArgs(const std::vector<std::string>& extra) {
    std::vector<std::string> a = {SMIK_AGENT,  "--manifests", dir_,
                                  "--node",    kNode,         "--http",
                                  "127.0.0.1:" + std::to_string(http_port_), "--pin-dir", pin_,
                                  // warnings only: the test reads stdout only on failure
                                  "--log-level", "warn"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  void startAgent(const std::vector<std::string>& extra = {}) {
    agent_ = std::make_unique<Proc>(bed_->spawn(agentArgs(extra)));
    ASSERT_TRUE(eventually([&] { return httpGet(http_port_, "/readyz").first == 200; }, 10000))
        << "agent never became ready:\n"
        << agent_->output();
  }

  void stopAgent() {
    kill(agent_->pid(), SIGTERM);
    EXPECT_EQ(agent_->wait(5000), 0) << agent_->output();
    agent_.reset();
  }

  // Waits until every endpoint the manifests name is hooked (pods' veths exist).
  void waitAttached(size_t n) {
    ASSERT_TRUE(eventually(
        [&] {
          auto [code, body] = httpGet(http_port_, "/status");
          size_t count = 0;
          for (size_t p = body.find("(" ); p != std::string::npos; p = body.find("(", p + 1)) count++;
          return code == 200 && count >= n;
        },
        5000))
        << httpGet(http_port_, "/status").second;
  }

  Proc serve(Pod& p, const std::string& tcp, const std::string& udp = "") {
    std::vector<std::string> argv = {SMIK_TESTPEER, "serve", "--id", p.name()};
    if (!tcp.empty()) argv.insert(argv.end(), {"--tcp", tcp});
    if (!udp.empty()) argv.insert(argv.end(), {"--udp", udp});
    Proc proc = bed_->spawn(p, argv);
    EXPECT_TRUE(proc.waitFor("ready\n", 5000)) << "server in " << p.name() << " did not start";
    return proc;
  }

  // "ok", "timeout", "refused"... of one attempt from `from` to to:port.
  std::string tcp(Pod& from, Pod& to, int port, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {SMIK_TESTPEER, "tcp", to.ip(), std::to_string(port),
                                     "--timeout-ms", "300"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = bed_->run(from, argv, 5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }
  std::string udp(Pod& from, Pod& to, int port) {
    auto r = bed_->run(from, {SMIK_TESTPEER, "udp", to.ip(), std::to_string(port),
                              "--timeout-ms", "300"}, 5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }
  std::string hostTcp(Pod& to, int port) {
    auto r = bed_->run({SMIK_TESTPEER, "tcp", to.ip(), std::to_string(port), "--timeout-ms", "300"},
                       5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }

  // Polls until the outcome matches (policy changes apply within 1 s).
  void expectTcp(Pod& from, Pod& to, int port, const std::string& want, int within_ms = 1500) {
    std::string got;
    bool ok = eventually([&] { return (got = tcp(from, to, port)) == want; }, within_ms);
    EXPECT_TRUE(ok) << from.name() << " -> " << to.name() << ":" << port << " tcp: want " << want
                    << ", got " << got;
  }
  void expectUdp(Pod& from, Pod& to, int port, const std::string& want, int within_ms = 1500) {
    std::string got;
    bool ok = eventually([&] { return (got = udp(from, to, port)) == want; }, within_ms);
    EXPECT_TRUE(ok) << from.name() << " -> " << to.name() << ":" << port << " udp: want " << want
                    << ", got " << got;
  }

  std::string status() { return httpGet(http_port_, "/status").second; }

  // The usual pair: meshed namespace "app" with pods client and server
  // (ServiceAccounts of the same names), written to pods.yaml.
  std::pair<Pod*, Pod*> clientAndServer(const std::string& namesp = "app") {
    Pod& client = bed_->addPod("client", bed_->nextIp());
    Pod& server = bed_->addPod("server", bed_->nextIp());
    write("pods.yaml", ns(namesp, true) + pod(namesp, "client", "client", client.ip()) +
                           pod(namesp, "server", "server", server.ip()));
    return {&client, &server};
  }

  static inline int counter_ = 0;
  std::unique_ptr<TestBed> bed_;
  std::string dir_, pin_;
  int http_port_ = 0;
  std::unique_ptr<Proc> agent_;
};

// The SMI conformance access scenario: default deny, a TCPRoute with
// `ports: []` allows every TCP port, deleting the TrafficTarget revokes.
TEST_F(E2E, ConformanceAccessScenario) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("base.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) +
                         pod("app", "server", "server", server.ip()));
  startAgent();
  waitAttached(2);
  Proc srv = serve(server, "8080,9090", "8080");

  expectTcp(client, server, 8080, "timeout");
  expectUdp(client, server, 8080, "timeout");

  write("tt.yaml", tcpRoute("app", "all-tcp", "[]") +
                       trafficTarget("app", "client-to-server", "app", "server",
                                     rule("TCPRoute", "all-tcp"), "app", "client"));
  expectTcp(client, server, 8080, "ok");
  expectTcp(client, server, 9090, "ok");
  expectUdp(client, server, 8080, "timeout");  // a TCPRoute grants TCP only
  expectTcp(server, client, 8080, "timeout");  // the grant is one way

  remove("tt.yaml");
  expectTcp(client, server, 8080, "timeout");
  expectTcp(client, server, 9090, "timeout");
}

// The spec's own example (traffic-access_v1alpha3_04.yaml): TCP 8301/8302 and
// UDP 8301/8302 allowed, TCP 8300 allowed, UDP 8300 blocked.
TEST_F(E2E, SpecExampleProtocolSpecificPorts) {
  std::ifstream in(std::string(SMIK_SHARED_DIR) + "/smi/examples/traffic-access_v1alpha3_04.yaml");
  ASSERT_TRUE(in) << "spec example missing";
  std::stringstream ss;
  ss << in.rdbuf();
  // The snippet omits apiVersion; add it to each document (top-level kind
  // lines only, never the rules' "- kind:").
  std::string example = std::regex_replace("\n" + ss.str(), std::regex("\nkind: (TCPRoute|UDPRoute)\n"),
                                           "\napiVersion: specs.smi-spec.io/v1alpha4\nkind: $1\n");
  example = std::regex_replace(example, std::regex("\nkind: TrafficTarget\n"),
                               "\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n");

  auto [c, s] = clientAndServer("default");
  Pod& client = *c;
  Pod& server = *s;
  write("example.yaml", example);
  startAgent();
  waitAttached(2);
  Proc srv = serve(server, "8300,8301,8302", "8300,8301,8302");
  for (int port : {8300, 8301, 8302}) expectTcp(client, server, port, "ok");
  expectUdp(client, server, 8301, "ok");
  expectUdp(client, server, 8302, "ok");
  expectUdp(client, server, 8300, "timeout");
}

// Rules are per namespace: a TrafficTarget only speaks for destinations in
// its own namespace; unmeshed namespaces keep plain Kubernetes behaviour.
TEST_F(E2E, PerNamespaceRules) {
  Pod& a_client = bed_->addPod("aclient", bed_->nextIp());
  Pod& b_server = bed_->addPod("bserver", bed_->nextIp());
  Pod& b_other = bed_->addPod("bother", bed_->nextIp());
  Pod& plain = bed_->addPod("plain", bed_->nextIp());
  write("pods.yaml", ns("team-a", true) + ns("team-b", true) + ns("legacy", false) +
                         pod("team-a", "aclient", "client", a_client.ip()) +
                         pod("team-b", "bserver", "server", b_server.ip()) +
                         pod("team-b", "bother", "other", b_other.ip()) +
                         pod("legacy", "plain", "default", plain.ip()));
  write("policy.yaml",
        tcpRoute("team-b", "web", "[8080]") +
            trafficTarget("team-b", "a-to-server", "team-b", "server", rule("TCPRoute", "web"),
                          "team-a", "client") +
            // Lives in team-a but names a team-b destination: ignored.
            tcpRoute("team-a", "web", "[8080]") +
            trafficTarget("team-a", "sneaky", "team-b", "server", rule("TCPRoute", "web"),
                          "team-b", "other"));
  startAgent();
  waitAttached(3);
  Proc s1 = serve(b_server, "8080");
  Proc s2 = serve(plain, "8080");
  expectTcp(a_client, b_server, 8080, "ok");
  expectTcp(b_other, b_server, 8080, "timeout");
  expectTcp(b_other, plain, 8080, "ok");  // legacy namespace is not meshed
  EXPECT_NE(status().find("team-a/sneaky"), std::string::npos) << "diagnostic missing";
}

TEST_F(E2E, HostToPodAllowedUnderDefaultDeny) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  Pod& server = *s;
  startAgent();
  waitAttached(2);
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "timeout");
  std::string got;
  EXPECT_TRUE(eventually([&] { return (got = hostTcp(server, 8080)) == "ok"; }, 1500)) << got;
}

TEST_F(E2E, SpoofedSourceDropped) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  std::string spoof = bed_->nextIp();  // no pod has it
  write("pods.yaml", ns("app", true) + ns("open", false) +
                         pod("app", "client", "client", client.ip()) +
                         pod("open", "server", "server", server.ip()));
  startAgent();
  waitAttached(1);
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "ok");  // server is not meshed: allowed
  // A spoofed SYN's answer could never come back anyway: the counter is the proof.
  EXPECT_EQ(tcp(client, server, 8080, {"--src", spoof}), "timeout");
  EXPECT_EQ(tcp(client, server, 8080, {"--src", server.ip()}), "timeout") << "another pod's IP";
  std::smatch m;
  std::string st = status();
  ASSERT_TRUE(std::regex_search(st, m, std::regex("\"spoofed\":\\s*\\{[^}]*\"packets\":\\s*(\\d+)")))
      << st;
  EXPECT_GE(std::stoull(m[1]), 2u);
}

// Bad input never crashes the agent nor half-applies; the last good version
// of a file stays in force until the file is fixed.
TEST_F(E2E, BadFilesAreRejectedAndLastGoodPolicyStays) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  Pod& server = *s;
  std::string good = tcpRoute("app", "web", "[8080]") +
                     trafficTarget("app", "tt", "app", "server", rule("TCPRoute", "web"), "app",
                                   "client");
  write("tt.yaml", good);
  startAgent();
  waitAttached(2);
  Proc srv = serve(server, "8080,9090");
  expectTcp(client, server, 8080, "ok");

  write("syntax.yaml", "kind: [unclosed\n");
  write("badport.yaml", tcpRoute("app", "bad", "[70000]"));
  write("unknown.yaml", "apiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: g\n");
  write("huge.yaml", std::string(5 * 1024 * 1024, '#'));
  // The good file turns bad: its previous version must stay enforced.
  write("tt.yaml", good + "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n"
                          "metadata:\n  name: broken\n  namespace: app\nspec:\n  destination:\n"
                          "    kind: Group\n    name: x\n  rules: []\n  sources: []\n");
  ASSERT_TRUE(eventually([&] { return status().find("badport.yaml") != std::string::npos &&
                                      status().find("huge.yaml") != std::string::npos &&
                                      status().find("TrafficTarget app/broken") != std::string::npos; },
                         2000))
      << status();
  std::string st = status();
  EXPECT_NE(st.find("syntax.yaml"), std::string::npos);
  EXPECT_NE(st.find("Gizmo"), std::string::npos);
  EXPECT_NE(st.find("70000"), std::string::npos);
  EXPECT_EQ(httpGet(http_port_, "/readyz").first, 200);
  expectTcp(client, server, 8080, "ok");
  expectTcp(client, server, 9090, "timeout");
  auto metrics = httpGet(http_port_, "/metrics").second;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics, m, std::regex("smik_rejected_objects_total (\\d+)")));
  EXPECT_GE(std::stoi(m[1]), 5);

  // Fixed by removing the grant: now it is revoked.
  write("tt.yaml", tcpRoute("app", "web", "[8080]"));
  expectTcp(client, server, 8080, "timeout");
  EXPECT_EQ(agent_->wait(0), -1) << "agent exited:\n" << agent_->output();
}

// Policy swaps in a tight loop while traffic runs: both policies allow port
// 8080 (one by exact port, one by `ports: []`), so every connection and every
// exchange on a held connection must succeed through every swap.
TEST_F(E2E, PolicySwapsUnderTrafficNeverDeny) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  Pod& server = *s;
  auto policy = [&](const std::string& ports) {
    return tcpRoute("app", "web", ports) +
           trafficTarget("app", "tt", "app", "server", rule("TCPRoute", "web"), "app", "client");
  };
  write("tt.yaml", policy("[8080]"));
  startAgent();
  waitAttached(2);
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "ok");

  Proc hold = bed_->spawn(client, {SMIK_TESTPEER, "hold", server.ip(), "8080", "--seconds", "4"});
  Proc burst = bed_->spawn(client, {SMIK_TESTPEER, "tcp", server.ip(), "8080", "--count", "300",
                                    "--timeout-ms", "1000"});
  auto start_gen = status();
  for (int i = 0; i < 40; i++) {
    write("tt.yaml", policy(i % 2 ? "[8080]" : "[8080, 8081]"));
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
  }
  EXPECT_EQ(burst.wait(20000), 0) << burst.output().substr(0, 2000);
  EXPECT_EQ(hold.wait(10000), 0) << hold.output();
  std::smatch m;
  std::string st = status();
  ASSERT_TRUE(std::regex_search(st, m, std::regex("\"policyGeneration\":\\s*(\\d+)")));
  EXPECT_GE(std::stoi(m[1]), 10) << "the policy did not really swap";
}

// SIGTERM leaves enforcement in place; a new agent adopts it with no window:
// no allowed connection breaks and no denied one gets through. Uninstall then
// removes every hook.
TEST_F(E2E, RestartKeepsEnforcingAndUninstallRemovesAll) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Pod& intruder = bed_->addPod("intruder", bed_->nextIp());
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) +
                         pod("app", "server", "server", server.ip()) +
                         pod("app", "intruder", "intruder", intruder.ip()));
  write("tt.yaml", tcpRoute("app", "web", "[8080]") +
                       trafficTarget("app", "tt", "app", "server", rule("TCPRoute", "web"), "app",
                                     "client"));
  startAgent();
  waitAttached(3);
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "ok");
  expectTcp(intruder, server, 8080, "timeout");

  Proc hold = bed_->spawn(client, {SMIK_TESTPEER, "hold", server.ip(), "8080", "--seconds", "3"});
  Proc denied = bed_->spawn(intruder, {SMIK_TESTPEER, "tcp", server.ip(), "8080", "--count", "12",
                                       "--timeout-ms", "200"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stopAgent();
  // No agent at all: still enforcing.
  EXPECT_EQ(tcp(intruder, server, 8080), "timeout");
  EXPECT_EQ(tcp(client, server, 8080), "ok");
  startAgent();
  EXPECT_EQ(hold.wait(10000), 0) << "allowed connection broke across restart: " << hold.output();
  denied.wait(10000);
  std::string out = denied.output();
  EXPECT_EQ(out.find("ok"), std::string::npos) << "denied connection admitted: " << out;
  EXPECT_NE(out.find("timeout"), std::string::npos) << out;
  expectTcp(client, server, 8080, "ok");
  expectTcp(intruder, server, 8080, "timeout");

  stopAgent();
  auto r = bed_->run({SMIK_AGENT, "--uninstall", "--pin-dir", pin_}, 10000);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_FALSE(fs::exists(pin_));
  expectTcp(intruder, server, 8080, "ok");  // no programs left: plain networking
}

// Kernels without tcx get clsact filters: same enforcement, and uninstall
// removes the filters it made.
TEST_F(E2E, ClsactFallbackEnforcesAndUninstalls) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  Pod& server = *s;
  startAgent({"--force-clsact"});
  waitAttached(2);
  EXPECT_NE(status().find("\"attachMode\": \"clsact\""), std::string::npos) << status();
  auto filters = [&](const char* dir) {
    return smik::testbed::command({"tc", "filter", "show",
                                   "dev", server.hostIf(), dir});
  };
  EXPECT_NE(filters("egress").find("smik_to_pod"), std::string::npos) << filters("egress");
  EXPECT_NE(filters("ingress").find("smik_from_pod"), std::string::npos) << filters("ingress");
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "timeout");
  write("tt.yaml", tcpRoute("app", "web", "[8080]") +
                       trafficTarget("app", "tt", "app", "server", rule("TCPRoute", "web"), "app",
                                     "client"));
  expectTcp(client, server, 8080, "ok");
  expectTcp(server, client, 8080, "timeout");

  stopAgent();
  auto r = bed_->run({SMIK_AGENT, "--uninstall", "--pin-dir", pin_}, 10000);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(filters("egress").find("smik"), std::string::npos) << filters("egress");
  EXPECT_EQ(filters("ingress").find("smik"), std::string::npos) << filters("ingress");
}

// A pod that leaves the manifests loses its hook; one that arrives gets one.
TEST_F(E2E, PodsComingAndGoingAreHookedAndUnhooked) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("ns.yaml", ns("app", true));
  write("client.yaml", pod("app", "client", "client", client.ip()));
  startAgent();
  waitAttached(1);
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "ok");  // server not known yet: not enforced
  write("server.yaml", pod("app", "server", "server", server.ip()));
  expectTcp(client, server, 8080, "timeout");
  EXPECT_TRUE(fs::exists(pin_ + "/links/" + server.hostIf() + "_" +
                         std::to_string(server.hostIfIndex()) + "_to"));
  remove("server.yaml");
  expectTcp(client, server, 8080, "ok");
  EXPECT_TRUE(eventually([&] {
    return !fs::exists(pin_ + "/links/" + server.hostIf() + "_" +
                       std::to_string(server.hostIfIndex()) + "_to");
  }, 1500));
}

}  // namespace
