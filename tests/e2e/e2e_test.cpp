// End to end: SMI access control between real pods (see fixture.h).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>

#include <atomic>
#include <mutex>

#include "tests/e2e/fixture.h"

namespace smik::e2e {
namespace {

using Access = OverFamilies<E2E>;
SMIK_E2E_FAMILIES(Access);

// The SMI conformance access scenario: default deny, a TCPRoute with
// `ports: []` allows every TCP port, deleting the TrafficTarget revokes; over
// IPv4 and over IPv6 between dual-stack pods.
TEST_P(Access, ConformanceAccessScenario) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("base.yaml", ns("app", true) + pod("app", "client", "client", ips(client)) +
                         pod("app", "server", "server", ips(server)));
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
  std::ifstream in(std::string(SMIK_FIXTURES_DIR) + "/smi-examples/traffic-access_v1alpha3_04.yaml");
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

// --host-traffic=policy: the node's own traffic (kubelet probes) is judged
// like any source: denied until a TrafficTarget names the source
// {kind: Host, name: local}, then allowed on the granted port only, and
// revoked with the TrafficTarget; over IPv4 and IPv6.
TEST_P(Access, HostTrafficUnderPolicyNeedsAGrant) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", ips(client)) +
                         pod("app", "server", "server", ips(server)));
  startAgent({"--host-traffic", "policy"});
  waitAttached(2);
  EXPECT_NE(status().find("\"hostTraffic\": \"policy\""), std::string::npos) << status();
  Proc srv = serve(server, "8080,9090");
  std::string got;
  auto expectHost = [&](int port, const std::string& want) {
    EXPECT_TRUE(eventually([&] { return (got = hostTcp(server, port)) == want; }, 1500))
        << "host -> server:" << port << ": want " << want << ", got " << got;
  };
  expectHost(8080, "timeout");

  write("probes.yaml",
        tcpRoute("app", "probes", "[8080]") +
            "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata:\n"
            "  name: kubelet\n  namespace: app\nspec:\n  destination:\n"
            "    kind: ServiceAccount\n    name: server\n    namespace: app\n  rules:\n" +
            rule("TCPRoute", "probes") + "  sources:\n  - kind: Host\n    name: local\n---\n");
  expectHost(8080, "ok");
  expectHost(9090, "timeout");
  expectTcp(client, server, 8080, "timeout");  // the host's grant is the host's alone

  remove("probes.yaml");
  expectHost(8080, "timeout");
}

// The host identity is the node's real addresses only: a source on a
// virtual interface (here a veth; ClusterIPs sit on kube-ipvs0, a dummy) is
// not the node and is judged like any unknown source, while the node's
// uplink address still passes (--host-traffic=allow, the default).
TEST_F(E2E, HostIdentityIsTheNodesRealAddressesOnly) {
  auto [c, s] = clientAndServer();
  Pod& server = *s;
  std::string vip = bed_->nextIp();
  bed_->addHostVeth(vip + "/32");
  startAgent();
  waitAttached(2);
  Proc srv = serve(server, "8080");
  std::string got;
  EXPECT_TRUE(eventually([&] { return (got = hostTcp(server, 8080)) == "ok"; }, 1500)) << got;
  auto fromVeth = [&] {
    auto r = bed_->run({SMIK_TESTPEER, "tcp", server.ip(), "8080", "--timeout-ms", "300", "--src",
                        vip}, 5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  };
  EXPECT_EQ(fromVeth(), "timeout") << "an address on a veth passed as the node";
  std::string edges = status();
  EXPECT_NE(edges.find("\"world\""), std::string::npos) << edges;
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


// TCPRoute `route` of ports 1..60000 and TrafficTarget `name` granting it to
// app/server from ServiceAccounts app/s1..s<sources>: sources x 60000 entries.
std::string portFlood(const std::string& name, const std::string& route, int sources) {
  std::string ports = "[";
  for (int p = 1; p <= 60000; p++) ports += (p > 1 ? "," : "") + std::to_string(p);
  std::string tt = trafficTarget("app", name, "app", "server", rule("TCPRoute", route), "app", "s1");
  tt.resize(tt.size() - 4);  // the other sources before its "---"
  for (int i = 2; i <= sources; i++)
    tt += "  - kind: ServiceAccount\n    name: s" + std::to_string(i) + "\n    namespace: app\n";
  return tcpRoute("app", route, ports + "]") + tt;
}

// A TrafficTarget too large for the policy map (5 sources x 60000 ports:
// 300000 entries, the map holds 262144) arrives with a new local pod. The
// compiler rejects the TrafficTarget alone, by name and limit; the new pod
// is hooked and enforced (deny by default, its own grant), not left open.
TEST_F(E2E, TooLargeTrafficTargetDoesNotLeaveANewPodUnenforced) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  Pod& late = bed_->addPod("late", bed_->nextIp());
  startAgent();
  waitAttached(2);

  write("late.yaml", pod("app", "late", "late", late.ip()) + portFlood("flood", "huge", 5) +
                         "---\n" + tcpRoute("app", "web", "[9090]") +
                         trafficTarget("app", "to-late", "app", "late", rule("TCPRoute", "web"),
                                       "app", "client"));
  // Under the sanitizers the 300,000-entry compile takes seconds.
  waitAttached(3, 30000);
  ASSERT_TRUE(eventually([&] {
    return status().find("TrafficTarget app/flood: rejected") != std::string::npos;
  }, 30000)) << status();
  Proc srv = serve(late, "9090,9091");
  expectTcp(client, late, 9090, "ok", 5000);
  expectTcp(client, late, 9091, "timeout");  // enforced: denied by default
  const auto st = nlohmann::json::parse(status());
  EXPECT_EQ(st["ready"], true) << st.dump(1);
  EXPECT_TRUE(st["errors"].empty()) << st.dump(1);
  EXPECT_TRUE(st.contains("notEnforced") && st["notEnforced"].empty()) << st.dump(1);
  EXPECT_NE(st["diagnostics"].dump().find(
                "TrafficTarget app/flood: rejected: the policy map holds 262144 entries"),
            std::string::npos)
      << st["diagnostics"].dump(1);
}

// Tries the window between a new pod's hook and the rest of the apply: a
// prober in the client's netns dials the new pod's ungranted port without
// pause while the agent hooks the pod and writes a 180,000-entry policy
// (seconds of map writes). Before the hook the pod is not yet the mesh's and
// is reached; no dial that starts once its tc link is pinned may be.
TEST_F(E2E, NoUngrantedConnectionOnceANewPodIsHooked) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  Pod& late = bed_->addPod("late", bed_->nextIp());
  startAgent();
  waitAttached(2);
  Proc srv = serve(late, "9090,9091");
  expectTcp(client, late, 9091, "ok", 5000);  // not the mesh's yet

  using Clock = std::chrono::steady_clock;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Clock::time_point> reached;  // when each dial that connected began
  size_t dials = 0;
  std::thread prober([&] {
    UniqueFd ns(open(("/var/run/netns/" + client.netns()).c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns || setns(ns.get(), CLONE_NEWNET) != 0) return;  // this thread only
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9091);
    inet_pton(AF_INET, late.ip().c_str(), &to.sin_addr);
    while (!stop) {
      auto began = Clock::now();
      UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to);
      pollfd p{fd.get(), POLLOUT, 0};
      int err = 1;
      socklen_t len = sizeof err;
      if (poll(&p, 1, 50) == 1) getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      std::lock_guard<std::mutex> l(mu);
      dials++;
      if (err == 0) reached.push_back(began);
    }
  });

  write("late.yaml", pod("app", "late", "late", late.ip()) + portFlood("big", "many", 3) +
                         "---\n" + tcpRoute("app", "web", "[9090]") +
                         trafficTarget("app", "to-late", "app", "late", rule("TCPRoute", "web"),
                                       "app", "client"));
  const std::string link = pin_ + "/links/" + late.hostIf() + "_" +
                           std::to_string(late.hostIfIndex()) + "_to";
  Clock::time_point hooked{};
  for (auto deadline = Clock::now() + std::chrono::seconds(60); Clock::now() < deadline;) {
    if (fs::exists(link)) {
      hooked = Clock::now();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Keep dialling until the whole policy is in (its grant opens 9090).
  bool applied = eventually([&] { return tcp(client, late, 9090) == "ok"; }, 60000);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  prober.join();

  ASSERT_NE(hooked, Clock::time_point{}) << "never hooked: " << status();
  EXPECT_TRUE(applied) << status();
  std::lock_guard<std::mutex> l(mu);
  ASSERT_FALSE(reached.empty()) << "the prober never connected, so it proves nothing";
  size_t after = std::count_if(reached.begin(), reached.end(), [&](auto t) { return t > hooked; });
  std::cout << dials << " dials, " << reached.size() << " reached the pod before its hook\n";
  EXPECT_EQ(after, 0u) << after << " of " << dials << " dials begun after the hook connected to "
                       << "an ungranted port";
  expectTcp(client, late, 9091, "timeout");
  const auto entries = nlohmann::json::parse(status()).value("policyEntries", uint64_t{0});
  EXPECT_GE(entries, 180000u) << "the large policy was not applied, so the window "
                                           << "was not widened";
}

// A pod the manifests name before its veth exists (the CNI still at work)
// is hooked as soon as the veth and its route appear, and a sandbox made
// again with the same address (a new veth) is hooked again: the agent reads
// interfaces when netlink reports a change, so within a round or two, not
// at its 30 s full reading.
TEST_F(E2E, AVethThatAppearsOrIsMadeAgainIsHookedAtOnce) {
  auto [c, s] = clientAndServer();
  Pod& client = *c;
  const std::string ip = bed_->nextIp();
  write("late.yaml", pod("app", "late", "late", ip));
  startAgent();
  waitAttached(2);
  auto hookedAt = [&](Pod& p) {
    const std::string want = p.hostIf() + "(" + std::to_string(p.hostIfIndex()) + ")";
    return eventually([&] { return status().find(want) != std::string::npos; }, 3000);
  };
  {
    Pod& late = bed_->addPod("late", ip);
    ASSERT_TRUE(hookedAt(late)) << status();
    Proc srv = serve(late, "9091");
    expectTcp(client, late, 9091, "timeout");
  }
  bed_->removePod("late");
  Pod& again = bed_->addPod("late", ip);
  ASSERT_TRUE(hookedAt(again)) << status();
  Proc srv = serve(again, "9091");
  expectTcp(client, again, 9091, "timeout");
}

// Every map is reported with its entries, capacity and kernel memory; the
// conntrack size comes from --ct-max.
TEST_F(E2E, MapsAreReportedWithTheirSizeAndMemory) {
  clientAndServer();
  startAgent({"--ct-max", "8192"});
  waitAttached(2);
  const auto st = nlohmann::json::parse(status());
  std::map<std::string, nlohmann::json> maps;
  for (const auto& m : st["maps"]) maps[m["name"]] = m;
  for (const char* name : {"smik_ipcache", "smik_endpoints", "smik_policy", "smik_pol_gen",
                           "smik_ct", "smik_edges", "smik_conn", "smik_denied", "smik_events",
                           "smik_revnat", "smik_services", "smik_backends"}) {
    ASSERT_TRUE(maps.count(name)) << name << " missing: " << st["maps"].dump(1);
    EXPECT_GT(maps[name]["bytes"].get<uint64_t>(), 0u) << name;
  }
  EXPECT_EQ(maps["smik_ct"]["maxEntries"], 8192);
  EXPECT_EQ(maps["smik_endpoints"]["entries"], 2);
  EXPECT_EQ(maps["smik_conn"]["type"], "lru_hash");
  const std::string prom = httpGet(http_port_, "/metrics").second;
  EXPECT_NE(prom.find("smik_map_max_entries{map=\"smik_ct\"} 8192\n"), std::string::npos) << prom;
  EXPECT_NE(prom.find("smik_map_bytes{map=\"smik_conn\"} "), std::string::npos);
  EXPECT_NE(prom.find("smik_pods_not_enforced 0\n"), std::string::npos);
}

}  // namespace
}  // namespace smik::e2e
