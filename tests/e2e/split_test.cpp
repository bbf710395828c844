// End to end: Services and TrafficSplit translated at connect()/sendmsg() in
// real pods' sockets (see fixture.h). Service VIPs come from the test bed's own
// blackholed block, so an untranslated packet never leaves the machine.
#include <map>
#include <nlohmann/json.hpp>

#include "tests/e2e/fixture.h"

namespace smik::e2e {
namespace {

// `vips`: the ClusterIP, or a dual-stack Service's "v4,v6".
std::string service(const std::string& namesp, const std::string& name, const std::string& vips,
                    const std::string& selector, int port = 80, int target = 8080) {
  return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\n  namespace: " + namesp +
         "\nspec:\n  clusterIP: " + vips.substr(0, vips.find(',')) + "\n  clusterIPs: " +
         flowList(vips) + "\n  selector: " + selector + "\n  ports:\n" +
         "  - {name: web, port: " + std::to_string(port) + ", targetPort: " +
         std::to_string(target) + ", protocol: TCP}\n" + "  - {name: dns, port: " +
         std::to_string(port) + ", targetPort: " + std::to_string(target) +
         ", protocol: UDP}\n---\n";
}

// pod() with labels.
std::string labelledPod(const std::string& namesp, const std::string& name, const std::string& sa,
                        const std::string& ips, const std::string& labels) {
  std::string p = pod(namesp, name, sa, ips);
  return p.insert(p.find("\nspec:"), "\n  labels: " + labels);
}

std::string split(const std::string& namesp, const std::string& root,
                  const std::vector<std::pair<std::string, int>>& backends) {
  std::string y = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata:\n"
                  "  name: web-split\n  namespace: " + namesp + "\nspec:\n  service: " + root +
                  "\n  backends:\n";
  for (const auto& [svc, w] : backends)
    y += "  - service: " + svc + "\n    weight: " + std::to_string(w) + "\n";
  return y + "---\n";
}

// Replies by backend id ("ok v1a peer=..." lines) and whether every reply
// claimed to come from `want_peer`.
struct Tally {
  std::map<std::string, int> by_backend;
  int ok = 0, failed = 0, wrong_peer = 0;
  int v1() const { return get("v1a") + get("v1b"); }
  int v2() const { return get("v2a") + get("v2b"); }
  int get(const std::string& k) const {
    auto it = by_backend.find(k);
    return it == by_backend.end() ? 0 : it->second;
  }
};

Tally tally(const std::string& output, const std::string& want_peer) {
  Tally t;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string status, id, peer;
    f >> status >> id >> peer;
    if (status != "ok") {
      t.failed++;
      continue;
    }
    t.ok++;
    t.by_backend[id]++;
    if (!want_peer.empty() && peer != "peer=" + want_peer) t.wrong_peer++;
  }
  return t;
}

class Split : public E2E {
 protected:
  // Namespace "shop" (not meshed unless asked), a client, root Service "web"
  // over four pods, web-v1 over v1a/v1b, web-v2 over v2a/v2b; every backend
  // pod answers TCP and UDP 8080 with its name.
  // Pods and Services are dual stack (IPv6 twins of the IPv4 addresses)
  // where the test bed has IPv6.
  void build(bool meshed = false, const std::string& extra = "") {
    client_ = &bed_->addPod("client", bed_->nextIp());
    std::string pods = ns("shop", meshed) + pod("shop", "client", "client", ips(*client_));
    for (const char* name : {"v1a", "v1b", "v2a", "v2b"}) {
      Pod& p = bed_->addPod(name, bed_->nextIp());
      std::string version = std::string(name).substr(0, 2);
      pods += labelledPod("shop", name, version, ips(p), "{app: web, version: " + version + "}");
      backends_.push_back(&p);
    }
    vip_ = bed_->nextIp();
    vip1_ = bed_->nextIp();
    vip2_ = bed_->nextIp();
    write("pods.yaml", pods + extra);
    write("services.yaml", service("shop", "web", vips(vip_), "{app: web}") +
                               service("shop", "web-v1", vips(vip1_), "{app: web, version: v1}") +
                               service("shop", "web-v2", vips(vip2_), "{app: web, version: v2}"));
    for (Pod* p : backends_) servers_.push_back(serve(*p, "8080", "8080"));
  }

  std::string vips(const std::string& vip) const {
    std::string v6 = bed_->ip6Of(vip);
    return v6.empty() ? vip : vip + "," + v6;
  }
  // The ClusterIP of family_ for an IPv4 one.
  std::string dial(const std::string& vip) const { return family_ == 6 ? bed_->ip6Of(vip) : vip; }

  Tally connectMany(const std::string& vip, int n, const std::string& proto = "tcp",
                    std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {SMIK_TESTPEER, proto, vip, "80", "--count",
                                     std::to_string(n), "--show-peer", "1", "--timeout-ms", "400"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = bed_->run(*client_, argv, 120000);
    return tally(r.output, vip + ":80");
  }

  // A meshed "shop" split 50/50 whose client may reach v1's ServiceAccount
  // only, the agent running with every pod hooked.
  void startWithClientAllowedToV1Only() {
    build(/*meshed=*/true);
    write("policy.yaml", tcpRoute("shop", "web", "[8080]") +
                             trafficTarget("shop", "client-to-v1", "shop", "v1",
                                           rule("TCPRoute", "web"), "shop", "client"));
    write("split.yaml", split("shop", "web", {{"web-v1", 50}, {"web-v2", 50}}));
    startAgent();
    waitAttached(5);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }

  // Polls until a batch of connections is served by v2 only / v1 only...
  bool eventuallyShare(const std::string& vip, const std::function<bool(const Tally&)>& ok) {
    return eventually([&] { return ok(connectMany(vip, 20)); }, 1500);
  }

  Pod* client_ = nullptr;
  std::vector<Pod*> backends_;
  std::vector<Proc> servers_;
  std::string vip_, vip1_, vip2_;
};

using SplitFamilies = OverFamilies<Split>;
SMIK_E2E_FAMILIES(SplitFamilies);

// An 80/20 split over 1000 TCP connections lands within a few points of its
// weights, spreads over every endpoint of each backend, and every socket
// reports the Service address as its peer; over IPv4 and IPv6.
TEST_P(SplitFamilies, TcpFollowsWeightsOverEveryEndpoint) {
  build();
  write("split.yaml", split("shop", "web", {{"web-v1", 80}, {"web-v2", 20}}));
  startAgent();
  ASSERT_TRUE(eventuallyShare(dial(vip_), [](const Tally& t) { return t.ok == 20; }));
  Tally t = connectMany(dial(vip_), 1000);
  EXPECT_EQ(t.ok, 1000) << t.failed << " failed";
  EXPECT_EQ(t.wrong_peer, 0) << "getpeername() must return the Service address";
  EXPECT_NEAR(t.v1() / 1000.0, 0.80, 0.04) << "v1 " << t.v1() << " v2 " << t.v2();
  for (const char* id : {"v1a", "v1b", "v2a", "v2b"}) EXPECT_GT(t.get(id), 50) << id;

  // The TrafficMetrics of the split: one item per backend, counting exactly
  // the connections to the apex that went there (the 20 probes included).
  std::map<std::string, std::string> success;
  ASSERT_TRUE(eventually(
      [&] {
        auto [code, body] =
            httpGet(http_port_, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/trafficsplits/web-split?t=5m");
        if (code != 200) return false;
        auto list = nlohmann::json::parse(body);
        for (const auto& item : list["items"])
          for (const auto& m : item["metrics"])
            if (m["name"] == "success_count")
              success[item["backend"]["name"]] = m["value"].get<std::string>();
        return success["web-v1"] != "0" &&
               quantity(success["web-v1"]) + quantity(success["web-v2"]) == 1020;
      },
      3000))
      << success["web-v1"] << " + " << success["web-v2"];
  int v2 = quantity(success["web-v2"]);  // the burst's, plus those of the 20 probes
  EXPECT_GE(v2, t.v2());
  EXPECT_LE(v2, t.v2() + 20);
}

// UDP: each socket picks by weight; one socket keeps one backend; replies come
// from the Service address (recvmsg), for connected and unconnected sockets;
// over IPv4 and IPv6.
TEST_P(SplitFamilies, UdpFollowsWeightsPerSocket) {
  build();
  write("split.yaml", split("shop", "web", {{"web-v1", 80}, {"web-v2", 20}}));
  startAgent();
  ASSERT_TRUE(eventuallyShare(dial(vip_), [](const Tally& t) { return t.ok == 20; }));
  for (const char* mode : {"0", "1"}) {
    SCOPED_TRACE(std::string("unconnected ") + mode);
    Tally t = connectMany(dial(vip_), 400, "udp", {"--unconnected", mode});
    EXPECT_EQ(t.ok, 400) << t.failed << " failed";
    EXPECT_EQ(t.wrong_peer, 0) << "replies must come from the Service address";
    EXPECT_NEAR(t.v1() / 400.0, 0.80, 0.07) << "v1 " << t.v1() << " v2 " << t.v2();
    Tally one = connectMany(dial(vip_), 30, "udp", {"--unconnected", mode, "--one-socket", "1"});
    EXPECT_EQ(one.ok, 30);
    EXPECT_EQ(one.by_backend.size(), 1u) << "one socket, one backend";
  }
}

// The SMI conformance split scenario, with weight changes applied within a
// second while an established connection keeps working.
TEST_F(Split, WeightChangesApplyAndKeepExistingConnections) {
  build();
  write("split.yaml", split("shop", "web", {{"web-v1", 1}, {"web-v2", 0}}));
  startAgent();
  ASSERT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v1() == 20; }))
      << "1/0: all to v1";
  Proc hold = bed_->spawn(*client_, {SMIK_TESTPEER, "hold", vip_, "80", "--seconds", "3"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  write("split.yaml", split("shop", "web", {{"web-v1", 0}, {"web-v2", 1}}));
  EXPECT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v2() == 20; }))
      << "0/1: all to v2 within a second";
  EXPECT_EQ(hold.wait(10000), 0) << "the connection opened before the change broke: "
                                 << hold.output();

  write("split.yaml", split("shop", "web", {{"web-v1", 75}, {"web-v2", 25}}));
  EXPECT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v1() > 0 && t.v2() < 20; }));
  Tally a = connectMany(vip_, 200);
  EXPECT_GT(a.v1(), a.v2()) << "75/25 skews to v1";
  write("split.yaml", split("shop", "web", {{"web-v1", 25}, {"web-v2", 75}}));
  EXPECT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v2() > t.v1(); }));
  Tally b = connectMany(vip_, 200);
  EXPECT_GT(b.v2(), b.v1()) << "25/75 skews to v2";
}

// Without a split a ClusterIP balances evenly over its ready endpoints; an
// all-zero split falls back to the root's own endpoints; deleting the split
// restores plain balancing.
TEST_F(Split, PlainServicesAllZeroFallbackAndDeletion) {
  build();
  startAgent();
  ASSERT_TRUE(eventuallyShare(vip2_, [](const Tally& t) { return t.ok == 20; }));
  Tally plain = connectMany(vip2_, 200);
  EXPECT_EQ(plain.ok, 200);
  EXPECT_EQ(plain.v1(), 0);
  EXPECT_NEAR(plain.get("v2a") / 200.0, 0.5, 0.15);

  write("split.yaml", split("shop", "web", {{"web-v1", 0}, {"web-v2", 0}}));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  Tally zero = connectMany(vip_, 200);
  EXPECT_EQ(zero.ok, 200);
  for (const char* id : {"v1a", "v1b", "v2a", "v2b"}) EXPECT_GT(zero.get(id), 15) << id;
  EXPECT_NE(status().find("all weights zero"), std::string::npos) << status();

  write("split.yaml", split("shop", "web", {{"web-v2", 1}}));
  ASSERT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v2() == 20; }));
  remove("split.yaml");
  ASSERT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v1() > 0; }))
      << "deleting the split restores the root's own endpoints";
}

// Access control still applies behind a split: a client allowed only to v1's
// ServiceAccount is denied on v2 exactly as with a direct connection; over
// IPv4 and IPv6.
TEST_P(SplitFamilies, AccessControlStillAppliesToSplitBackends) {
  startWithClientAllowedToV1Only();
  Tally t = connectMany(dial(vip_), 60);  // denied ones wait out their timeout
  EXPECT_GT(t.ok, 12);
  EXPECT_GT(t.failed, 12) << "connections sent to v2 must be denied";
  EXPECT_EQ(t.v2(), 0) << "v2 answered a client it does not allow";
}

// Connections the split's TrafficMetrics counted (success_count over its
// backends, 5 minutes).
double splitSuccesses(int http_port) {
  auto [code, body] = httpGet(
      http_port, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/trafficsplits/web-split?t=5m");
  if (code != 200) return -1;
  double sum = 0;
  const auto list = nlohmann::json::parse(body);
  for (const auto& item : list["items"]) sum += quantity(metric(item, "success_count"));
  return sum;
}

// A dual-stack AF_INET6 socket (Java's default) dials an IPv4 ClusterIP as
// ::ffff:a.b.c.d: it is translated like an IPv4 socket to a backend's
// ::ffff:IPv4 (all such a socket can reach), getpeername (TCP) and recvfrom
// (UDP, connected and not) answer with the ::ffff: ClusterIP it dialled, and
// the connections count for the split.
TEST_F(Split, V4MappedClusterIpFromDualStackSockets) {
  build();
  write("split.yaml", split("shop", "web", {{"web-v1", 50}, {"web-v2", 50}}));
  startAgent();
  ASSERT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.ok == 20; }));
  double before = 0;
  ASSERT_TRUE(eventually([&] { return (before = splitSuccesses(http_port_)) >= 20; }, 3000)) << before;

  const std::string mapped = "::ffff:" + vip_;
  Tally t = connectMany(mapped, 100);
  EXPECT_EQ(t.ok, 100) << t.failed << " failed";
  EXPECT_EQ(t.wrong_peer, 0) << "getpeername() must return ::ffff:<ClusterIP>";
  EXPECT_GT(t.v1(), 15);
  EXPECT_GT(t.v2(), 15);
  for (const char* mode : {"0", "1"}) {
    SCOPED_TRACE(std::string("udp, unconnected ") + mode);
    Tally u = connectMany(mapped, 40, "udp", {"--unconnected", mode});
    EXPECT_EQ(u.ok, 40) << u.failed << " failed";
    EXPECT_EQ(u.wrong_peer, 0) << "replies must come from ::ffff:<ClusterIP>";
  }
  double after = 0;
  EXPECT_TRUE(eventually([&] { return (after = splitSuccesses(http_port_)) == before + 100; }, 3000))
      << "the split counted " << after - before << " of the 100 v4-mapped connections";
}

// The policy still judges what a v4-mapped socket sends (IPv4 on the wire):
// a client allowed to v1 only reaches v1 through ::ffff:<ClusterIP>, and the
// connections sent to v2 are dropped by policy, not lost untranslated.
TEST_F(Split, V4MappedClusterIpIsStillJudgedByPolicy) {
  startWithClientAllowedToV1Only();
  Tally t = connectMany("::ffff:" + vip_, 40);
  EXPECT_GT(t.ok, 5);
  EXPECT_EQ(t.v1(), t.ok);
  EXPECT_GT(t.failed, 5) << "connections sent to v2 must be denied";
  std::smatch m;
  std::string st = status();
  ASSERT_TRUE(std::regex_search(st, m, std::regex("\"policy\":\\s*\\{[^}]*\"packets\":\\s*(\\d+)")))
      << st;
  EXPECT_GE(std::stoull(m[1]), static_cast<unsigned long long>(t.failed)) << "denied by policy";
}

}  // namespace
}  // namespace smik::e2e

namespace smik::e2e {
namespace {

// Tables replaced in a tight loop while connections run: every connect()
// must find a whole table (old or new). A reader that saw the old table while
// its endpoints were freed would go untranslated to the blackholed VIP.
TEST_F(Split, TableSwapsUnderConnectionsNeverLoseOne) {
  build();
  write("split.yaml", split("shop", "web", {{"web-v1", 1}, {"web-v2", 0}}));
  startAgent();
  ASSERT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v1() == 20; }));
  Proc burst = bed_->spawn(*client_, {SMIK_TESTPEER, "tcp", vip_, "80", "--count", "1500",
                                      "--timeout-ms", "1000"});
  for (int i = 0; i < 40; i++) {
    write("split.yaml", split("shop", "web", {{"web-v1", i % 2}, {"web-v2", 1 - i % 2}}));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(burst.wait(60000), 0);
  Tally t = tally(burst.output(), "");
  EXPECT_EQ(t.ok, 1500) << t.failed << " connections lost";
  EXPECT_GT(t.v1(), 0);
  EXPECT_GT(t.v2(), 0) << "the tables did not really change during the burst";
}

}  // namespace
}  // namespace smik::e2e

namespace smik::e2e {
namespace {

// The socket programs stay pinned across an agent restart (links adopted in
// place), and uninstall removes them: the VIP is then plain (blackholed).
TEST_F(Split, RestartKeepsTranslatingUninstallStops) {
  build();
  write("split.yaml", split("shop", "web", {{"web-v1", 0}, {"web-v2", 1}}));
  startAgent();
  ASSERT_TRUE(eventuallyShare(vip_, [](const Tally& t) { return t.v2() == 20; }));
  stopAgent();
  EXPECT_EQ(connectMany(vip_, 20).v2(), 20) << "no agent: still translated";
  startAgent();
  EXPECT_EQ(connectMany(vip_, 20).v2(), 20);
  EXPECT_NE(status().find("\"socketPrograms\": true"), std::string::npos) << status();
  stopAgent();
  auto r = bed_->run({SMIK_AGENT, "--uninstall", "--pin-dir", pin_}, 10000);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(connectMany(vip_, 3).ok, 0) << "uninstalled: nothing translates any more";
}

}  // namespace
}  // namespace smik::e2e
