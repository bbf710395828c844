// The socket programs on their own: sock_lb (connect/sendmsg/recvmsg/
// getpeername translation) and sockops (connection telemetry), loaded by
// Datapath and attached to a test bed's cgroup, with the maps written
// directly (no agent, no manifests), one behaviour per test.
//
// Why real sockets and not BPF_PROG_TEST_RUN: the kernel offers no test run
// for cgroup sock_addr and sock_ops programs (bpf_prog_test_run() answers
// ENOTSUPP for these types on Linux 6.18), and their effect is what the
// socket calls return. The pods and the traffic generator are the test
// bed's (tests/testbed/README.md).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "agent/datapath/datapath.h"
#include "maps/maps.h"
#include "maps/memory.h"
#include "tests/support/eventually.h"
#include "tests/testbed/testbed.h"

namespace smik::kernel_test {
namespace {

using smik::testing::eventually;
using testbed::Pod;
using testbed::Proc;
using testbed::TestBed;

constexpr uint16_t kVipPort = 80;
constexpr uint16_t kServerPort = 8080;

int occurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) n++;
  return n;
}

smik_backend backendAt(const std::string& ip, uint16_t port) {
  smik_backend b{};
  inet_pton(AF_INET, ip.c_str(), b.addr);
  b.port = port;
  b.family = SMIK_AF_INET;
  return b;
}

smik_svc_key serviceKey(const std::string& vip, uint16_t port, uint8_t proto) {
  smik_svc_key k{};
  inet_pton(AF_INET, vip.c_str(), k.addr);
  k.port = port;
  k.proto = proto;
  k.family = SMIK_AF_INET;
  return k;
}

// A client pod and two server pods ("a", "b") under one bed, the socket
// programs attached at the bed's cgroup, and a VIP that no interface holds
// (blackholed by the bed: untranslated traffic to it goes nowhere).
class SocketPrograms : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "KERNEL TEST SKIPPED: needs root (BPF, netns, cgroups)";
    bed_ = std::make_unique<TestBed>();
    client_ = &bed_->addPod("client", bed_->nextIp());
    a_ = &bed_->addPod("a", bed_->nextIp());
    b_ = &bed_->addPod("b", bed_->nextIp());
    vip_ = bed_->nextIp();
    for (Pod* p : {a_, b_}) {
      servers_.push_back(std::make_unique<Proc>(
          bed_->spawn(*p, {SMIK_TESTPEER, "serve", "--tcp", std::to_string(kServerPort), "--udp",
                           std::to_string(kServerPort), "--id", p->name()})));
      ASSERT_TRUE(servers_.back()->waitFor("ready\n", 5000)) << servers_.back()->output();
    }
    pin_ = "/sys/fs/bpf/" + bed_->prefix() + "-sock";
    datapath::Options o;
    o.pin_dir = pin_;
    o.cgroup = bed_->cgroupRoot();
    std::string err;
    dp_ = datapath::Datapath::open(o, &err);
    ASSERT_TRUE(dp_) << err;
    ASSERT_TRUE(dp_->attachSocketPrograms(&err)) << err;
    state_.policy_installed = true;
  }
  void TearDown() override {
    servers_.clear();
    dp_.reset();
    std::string err;
    if (!pin_.empty()) {
      EXPECT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
    }
    bed_.reset();
  }

  // vip:kVipPort (proto) -> the given groups of (weight, backends).
  void service(uint8_t proto, std::vector<maps::SvcTable::Group> groups, uint32_t svc_id = 7) {
    state_.services[serviceKey(vip_, kVipPort, proto)] = maps::SvcTable{svc_id, std::move(groups)};
    std::string err;
    ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), nullptr, &err)) << err;
  }
  std::string client(const std::vector<std::string>& args) {
    std::vector<std::string> argv{SMIK_TESTPEER};
    argv.insert(argv.end(), args.begin(), args.end());
    return bed_->run(*client_, argv, 30000).output;
  }
  // Connection telemetry of (client pod -> server address:port), TCP, direct
  // (no service), both ends summed.
  smik_conn_stats connStats(const std::string& server, uint16_t port) {
    smik_conn_stats sum{};
    in_addr c{}, s{};
    inet_pton(AF_INET, client_->ip().c_str(), &c);
    inet_pton(AF_INET, server.c_str(), &s);
    for (const auto& e : dp_->maps().connEdges()) {
      if (e.key.family != SMIK_AF_INET || e.key.port != port || e.key.proto != IPPROTO_TCP)
        continue;
      if (std::memcmp(e.key.client, &c, 4) != 0 || std::memcmp(e.key.server, &s, 4) != 0) continue;
      if (e.key.svc_id != 0) continue;
      sum.client_success += e.stats.client_success;
      sum.client_refused += e.stats.client_refused;
      sum.server_success += e.stats.server_success;
    }
    return sum;
  }

  // Reverse-translation entries held (smik_revnat, every socket's).
  uint64_t revnatEntries() {
    UniqueFd fd{bpf_obj_get((pin_ + "/" + maps::kRevnatMap).c_str())};
    maps::MapDef def;
    if (!fd || !maps::mapDefOf(fd.get(), &def)) return UINT64_MAX;
    return maps::countEntries(fd.get(), def);
  }

  std::unique_ptr<TestBed> bed_;
  Pod* client_ = nullptr;
  Pod* a_ = nullptr;
  Pod* b_ = nullptr;
  std::string vip_, pin_;
  std::vector<std::unique_ptr<Proc>> servers_;
  std::unique_ptr<datapath::Datapath> dp_;
  maps::KernelState state_;
};

// ---- sock_lb -------------------------------------------------------------------

TEST_F(SocketPrograms, ConnectToAServicePortReachesItsBackend) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}});
  const std::string out = client({"tcp", vip_, std::to_string(kVipPort), "--count", "3"});
  EXPECT_EQ(occurrences(out, "ok a\n"), 3) << out;
}

TEST_F(SocketPrograms, GetpeernameAnswersTheServiceAddress) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}});
  const std::string out =
      client({"tcp", vip_, std::to_string(kVipPort), "--show-peer", "1"});
  EXPECT_NE(out.find(vip_ + ":" + std::to_string(kVipPort)), std::string::npos) << out;
  EXPECT_EQ(out.find(a_->ip()), std::string::npos) << "the backend's address leaked: " << out;
}

// A TCP socket's reverse entry lives while the socket can name a peer: the
// service address answers getpeername for as long as the connection is
// open, and the entry goes when the socket closes, gracefully or refused, so
// closed sockets neither fill the map nor make each connect() evict.
TEST_F(SocketPrograms, AReverseEntryLivesAsLongAsItsConnection) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}});
  Proc held = bed_->spawn(*client_, {SMIK_TESTPEER, "hold", vip_, std::to_string(kVipPort),
                                     "--seconds", "1.5"});
  EXPECT_TRUE(eventually([&] { return revnatEntries() == 1; })) << revnatEntries();
  ASSERT_EQ(held.wait(10000), 0) << held.output();
  EXPECT_TRUE(eventually([&] { return revnatEntries() == 0; })) << revnatEntries();

  // getpeername while connected, before the close takes the entry
  const std::string out =
      client({"tcp", vip_, std::to_string(kVipPort), "--count", "3", "--show-peer", "1"});
  EXPECT_EQ(occurrences(out, "peer=" + vip_ + ":" + std::to_string(kVipPort)), 3) << out;
  EXPECT_EQ(out.find(a_->ip()), std::string::npos) << "the backend's address leaked: " << out;
  EXPECT_TRUE(eventually([&] { return revnatEntries() == 0; })) << revnatEntries();

  // a refused connect() through the service: counted against the service,
  // then gone
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), 9999)}}}, 43);
  ASSERT_EQ(occurrences(client({"tcp", vip_, std::to_string(kVipPort)}), "refused"), 1);
  in_addr a{};
  inet_pton(AF_INET, a_->ip().c_str(), &a);
  EXPECT_TRUE(eventually([&] {
    for (const auto& e : dp_->maps().connEdges())
      if (e.key.svc_id == 43 && std::memcmp(e.key.server, &a, 4) == 0 && e.stats.client_refused == 1)
        return true;
    return false;
  }));
  EXPECT_TRUE(eventually([&] { return revnatEntries() == 0; })) << revnatEntries();
}

TEST_F(SocketPrograms, OtherPortsAndAddressesAreNotTranslated) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}});
  // The VIP on a port that is no service port: untranslated, so blackholed.
  EXPECT_EQ(occurrences(client({"tcp", vip_, "81", "--timeout-ms", "300"}), "ok"), 0);
  // A pod address: reached as it is.
  const std::string direct = client({"tcp", b_->ip(), std::to_string(kServerPort)});
  EXPECT_EQ(occurrences(direct, "ok b\n"), 1) << direct;
}

TEST_F(SocketPrograms, AServicePortIsPerProtocol) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}});
  const std::string udp =
      client({"udp", vip_, std::to_string(kVipPort), "--timeout-ms", "300"});
  EXPECT_EQ(occurrences(udp, "ok"), 0) << "a TCP service port translated UDP: " << udp;
}

TEST_F(SocketPrograms, UdpRepliesComeFromTheServiceAddress) {
  service(IPPROTO_UDP, {{1, {backendAt(b_->ip(), kServerPort)}}});
  // Connected sockets drop datagrams from any other source than the peer
  // they connected to, unconnected ones see the source: both must see the
  // VIP (recvmsg translation), and reach b (sendmsg translation).
  const std::string connected = client({"udp", vip_, std::to_string(kVipPort), "--count", "3"});
  EXPECT_EQ(occurrences(connected, "ok b\n"), 3) << connected;
  const std::string unconnected = client(
      {"udp", vip_, std::to_string(kVipPort), "--unconnected", "1", "--show-peer", "1"});
  EXPECT_NE(unconnected.find("ok b"), std::string::npos) << unconnected;
  EXPECT_NE(unconnected.find(vip_ + ":" + std::to_string(kVipPort)), std::string::npos)
      << unconnected;
}

TEST_F(SocketPrograms, AGroupOfWeightZeroGetsNoConnections) {
  service(IPPROTO_TCP, {{0, {backendAt(a_->ip(), kServerPort)}},
                        {1, {backendAt(b_->ip(), kServerPort)}}});
  const std::string out = client({"tcp", vip_, std::to_string(kVipPort), "--count", "20"});
  EXPECT_EQ(occurrences(out, "ok b\n"), 20) << out;
}

TEST_F(SocketPrograms, ConnectionsSpreadOverEveryEndpointOfAGroup) {
  service(IPPROTO_TCP,
          {{1, {backendAt(a_->ip(), kServerPort), backendAt(b_->ip(), kServerPort)}}});
  const std::string out = client({"tcp", vip_, std::to_string(kVipPort), "--count", "60"});
  // Each endpoint with probability 1/2: both below 5 of 60 is < 1e-12.
  EXPECT_EQ(occurrences(out, "ok "), 60) << out;
  EXPECT_GE(occurrences(out, "ok a\n"), 5) << out;
  EXPECT_GE(occurrences(out, "ok b\n"), 5) << out;
}

TEST_F(SocketPrograms, AServiceRemovedIsNoLongerTranslated) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}});
  ASSERT_EQ(occurrences(client({"tcp", vip_, std::to_string(kVipPort)}), "ok a\n"), 1);
  state_.services.clear();
  std::string err;
  ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), nullptr, &err)) << err;
  EXPECT_EQ(occurrences(client({"tcp", vip_, std::to_string(kVipPort), "--timeout-ms", "300"}),
                        "ok"),
            0);
}

// ---- sockops ---------------------------------------------------------------------

TEST_F(SocketPrograms, EstablishedConnectionsAreCountedAtBothEnds) {
  const std::string out = client({"tcp", a_->ip(), std::to_string(kServerPort), "--count", "4"});
  ASSERT_EQ(occurrences(out, "ok a\n"), 4) << out;
  smik_conn_stats seen{};
  EXPECT_TRUE(eventually([&] {
    seen = connStats(a_->ip(), kServerPort);
    return seen.client_success == 4 && seen.server_success == 4;
  })) << "client side " << seen.client_success << ", server side " << seen.server_success;
  EXPECT_EQ(seen.client_refused, 0u);
}

TEST_F(SocketPrograms, ARefusedConnectionIsCountedAsRefused) {
  const std::string out = client({"tcp", a_->ip(), "9999", "--count", "2"});
  ASSERT_EQ(occurrences(out, "refused"), 2) << out;
  smik_conn_stats at_client{};
  EXPECT_TRUE(eventually([&] {
    at_client = connStats(a_->ip(), 9999);
    return at_client.client_refused == 2;
  })) << "refused " << at_client.client_refused;
  EXPECT_EQ(at_client.client_success, 0u);
}

// A connection through a service is counted once, against the backend it
// reached (not the VIP), and names the service table it went through.
TEST_F(SocketPrograms, AConnectionThroughAServiceIsCountedAgainstItsBackend) {
  service(IPPROTO_TCP, {{1, {backendAt(a_->ip(), kServerPort)}}}, 42);
  ASSERT_EQ(occurrences(client({"tcp", vip_, std::to_string(kVipPort), "--count", "3"}), "ok a\n"),
            3);
  in_addr c{}, a{};
  inet_pton(AF_INET, client_->ip().c_str(), &c);
  inet_pton(AF_INET, a_->ip().c_str(), &a);
  uint64_t via_service = 0, to_vip = 0;
  EXPECT_TRUE(eventually([&] {
    via_service = to_vip = 0;
    for (const auto& e : dp_->maps().connEdges()) {
      if (std::memcmp(e.key.client, &c, 4) != 0) continue;
      if (e.key.svc_id == 42 && std::memcmp(e.key.server, &a, 4) == 0 && e.key.port == kServerPort)
        via_service += e.stats.client_success;
      if (e.key.port == kVipPort) to_vip += e.stats.client_success;
    }
    return via_service == 3;
  })) << via_service;
  EXPECT_EQ(to_vip, 0u);
}

}  // namespace
}  // namespace smik::kernel_test
