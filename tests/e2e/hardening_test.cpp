// End to end: the data path under traffic that tries to get around it or
// wear it down (see fixture.h for the pods and the agent).
#include "bpf/include/smik_abi.h"
#include "tests/e2e/fixture.h"

namespace smik::e2e {
namespace {

std::string udpRoute(const std::string& namesp, const std::string& name, const std::string& ports) {
  return tcpRoute(namesp, name, ports, "UDPRoute");
}

// A datagram larger than the MTU crosses the veth as IP fragments (IPv6:
// behind a fragment header): a peer granted one UDP port gets its large
// datagrams through (large DNS/EDNS and Kerberos answers), in both
// directions, and nothing else.
class Fragments : public OverFamilies<E2E> {};

TEST_P(Fragments, LargeDatagramsCrossAsFragments) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", ips(client)) +
                         pod("app", "server", "server", ips(server)));
  write("tt.yaml", udpRoute("app", "dns", "[5353]") +
                       trafficTarget("app", "client-to-server", "app", "server",
                                     rule("UDPRoute", "dns"), "app", "client"));
  startAgent();
  waitAttached(2);
  Proc srv = bed_->spawn(server, {SMIK_TESTPEER, "serve", "--udp", "5353,5354", "--echo", "1"});
  ASSERT_TRUE(srv.waitFor("ready\n", 5000));
  auto exchange = [&](int port, int size) {
    auto r = bed_->run(client, {SMIK_TESTPEER, "udp", addr(server), std::to_string(port),
                                "--size", std::to_string(size), "--echo", "1", "--timeout-ms",
                                "500"},
                       5000);
    return r.output.substr(0, r.output.find('\n'));
  };
  std::string got;
  EXPECT_TRUE(eventually([&] { return (got = exchange(5353, 100)) == "ok 100B"; }, 3000)) << got;
  EXPECT_EQ(exchange(5353, 4000), "ok 4000B") << "3 fragments each way";
  EXPECT_EQ(exchange(5353, 20000), "ok 20000B") << "14 fragments each way";
  EXPECT_EQ(exchange(5354, 4000), "timeout") << "another port, fragmented or not";
  auto st = nlohmann::json::parse(status());
  EXPECT_GE(st["conntrack"]["fragmentsTracked"].get<uint64_t>(), 4u) << st.dump();
}
SMIK_E2E_FAMILIES(Fragments);

// One pod opening flows by the hundred thousand (more than the conntrack
// table holds) does not break another pod's established connection, and the
// node says the table filled up.
constexpr size_t kStatusEdges = 256;  // AgentStatus::kStatusEdges

TEST_F(E2E, FlowFloodDoesNotBreakEstablishedConnections) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Pod& noisy = bed_->addPod("noisy", bed_->nextIp());
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) +
                         pod("app", "server", "server", server.ip()) +
                         pod("app", "noisy", "noisy", noisy.ip()));
  write("tt.yaml", tcpRoute("app", "web", "[8080]") +
                       trafficTarget("app", "client-to-server", "app", "server",
                                     rule("TCPRoute", "web"), "app", "client"));
  startAgent();
  waitAttached(3);
  Proc srv = serve(server, "8080");
  expectTcp(client, server, 8080, "ok");
  // A connection that is idle through the flood (a round trip before, then
  // every 7 s): a table that evicts idle flows would drop it.
  Proc held = bed_->spawn(client, {SMIK_TESTPEER, "hold", server.ip(), "8080", "--seconds", "15",
                                   "--interval-ms", "7000"});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // From every CPU: a table with per-CPU LRU lists evicts per CPU.
  long cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  long flows = SMIK_MAX_CT / cpus + SMIK_MAX_CT / 4;
  std::vector<Proc> sprays;
  for (long cpu = 0; cpu < cpus; cpu++)
    sprays.push_back(bed_->spawn(noisy, {SMIK_TESTPEER, "spray", server.ip(), "--count",
                                         std::to_string(flows), "--cpu", std::to_string(cpu)}));
  for (auto& s : sprays) ASSERT_EQ(s.wait(60000), 0) << s.output();
  EXPECT_EQ(held.wait(30000), 0) << held.output();
  EXPECT_EQ(held.output().rfind("ok ", 0), 0u) << held.output();
  std::string metrics = httpGetFull(http_port_, "/metrics", 30).body;
  std::string line = "smik_conntrack_events_total{event=\"insert_failed\"} ";
  auto at = metrics.find(line);
  ASSERT_NE(at, std::string::npos) << metrics;
  EXPECT_GT(std::stoull(metrics.substr(at + line.size())), 0u);
  // The flood left thousands of denied edges: /status lists the most active
  // and says how many there are.
  auto status = nlohmann::json::parse(httpGetFull(http_port_, "/status", 30).body);
  EXPECT_GT(status["edgesTotal"].get<uint64_t>(), kStatusEdges);
  EXPECT_EQ(status["edges"].size(), kStatusEdges);
}

}  // namespace
}  // namespace smik::e2e
