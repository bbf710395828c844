// The agent's rounds on an in-memory dataplane (no root): a new pod is hooked
// (endpoint entry, deny by default, tc programs) before anything else is
// written, so a write that fails later leaves it enforced; /readyz answers
// 503 with the reason and `smik status` names pods without enforcement
// until a retry puts everything in force.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "agent/agent.h"
#include "agent/source/manifest_dir.h"
#include "api/http/http_server.h"
#include "tests/support/eventually.h"
#include "tests/support/sockets.h"

namespace smik {
namespace {

namespace fs = std::filesystem;
using smik::testing::eventually;
using smik::testing::freePort;

// Pods' veths by name, hooks as a map: what the kernel would do, in memory.
class FakeDataplane : public datapath::Dataplane {
 public:
  maps::FakeBackend backend;
  std::map<std::string, uint32_t> interfaces;  // pod -> host-side ifindex

  maps::Backend& maps() override { return backend; }
  bool tcxAvailable() const override { return true; }
  uint8_t attachMode() const override { return SMIK_EP_ATTACH_TCX; }
  std::vector<std::string> hostAddresses() const override { return host_addrs; }
  std::vector<std::string> host_addrs;  // what hostAddresses() reports, set by tests
  // With reports_net_changes, hostNetworkChanged() answers net_changed
  // (and clears it), as netlink would; without, always true.
  bool reports_net_changes = false, net_changed = false;
  bool hostNetworkChanged() override {
    return !reports_net_changes || std::exchange(net_changed, false);
  }
  mutable int resolves = 0;
  std::map<std::string, uint32_t> resolveInterfaces(const compile::Plan& plan) const override {
    resolves++;
    std::map<std::string, uint32_t> out;
    for (const auto& [pod, ep] : plan.endpoints)
      if (auto it = interfaces.find(pod); it != interfaces.end()) out[pod] = it->second;
    return out;
  }
  void detachGone(const std::map<std::string, uint32_t>& wanted) override {
    std::erase_if(attached_, [&](const auto& a) {
      auto w = wanted.find(a.second.pod);
      bool gone = w == wanted.end() || w->second != a.first;
      if (gone) log("detach " + a.second.pod);
      return gone;
    });
  }
  void attachNew(const std::map<std::string, uint32_t>& wanted,
                 std::vector<std::string>*) override {
    for (const auto& [pod, ifindex] : wanted) {
      if (!attached_.count(ifindex)) log("attach " + pod);
      attached_[ifindex] = {pod, "veth" + std::to_string(ifindex), ifindex, SMIK_EP_ATTACH_TCX};
    }
  }
  const std::map<uint32_t, datapath::Attachment>& attachments() const override { return attached_; }
  bool attachSocketPrograms(std::string*) override {
    log("sockets");
    return sockets_ = true;
  }
  // Each hook change with what the maps held at that moment: "detach app/a
  // (endpoints 11 12, services 0)".
  std::vector<std::string> calls;
  bool socketProgramsAttached() const override { return sockets_; }
  std::vector<maps::MapUsage> mapUsage() override { return {}; }

 private:
  void log(const std::string& what) {
    const auto& held = backend.held();
    std::string eps;
    for (const auto& [ifindex, ep] : held.endpoints) eps += " " + std::to_string(ifindex);
    calls.push_back(what + " (endpoints" + eps + ", services " +
                    std::to_string(held.services.size()) + ")");
  }
  std::map<uint32_t, datapath::Attachment> attached_;
  bool sockets_ = false;
};

std::string pod(const std::string& name, const std::string& ip) {
  return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name +
         ", namespace: app}\nspec: {serviceAccountName: " + name +
         ", nodeName: n1}\nstatus: {phase: Running, podIP: " + ip + "}\n";
}

const char* kMeshedNamespace =
    "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app, labels: {smik.io/mesh: enabled}}\n";

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/smik-agent-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    write("base.yaml", std::string(kMeshedNamespace) + pod("a", "10.0.0.10"));
    auto dp = std::make_unique<FakeDataplane>();
    dp_ = dp.get();
    dp_->interfaces = {{"app/a", 11}, {"app/b", 12}};
    AgentConfig cfg;
    cfg.node.node_name = "n1";
    cfg.pin_dir.clear();  // no ring buffer to read
    agent_ = Agent::create(cfg, std::make_unique<source::ManifestDir>(dir_), std::move(dp));
    port_ = freePort();
    std::string err;
    ASSERT_TRUE(http_.start("127.0.0.1:" + std::to_string(port_), agent_.get(), &err)) << err;
    agent_->runOnce();
    ASSERT_EQ(get("/readyz").first, 200);
  }
  void TearDown() override {
    http_.stop();
    agent_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void write(const std::string& file, const std::string& text) {
    std::ofstream(dir_ + "/." + file) << text;
    fs::rename(dir_ + "/." + file, dir_ + "/" + file);
  }
  std::pair<int, std::string> get(const std::string& path) {
    httplib::Client c("127.0.0.1", port_);
    auto r = c.Get(path.c_str());
    return r ? std::pair{r->status, r->body} : std::pair{0, std::string()};
  }
  uint32_t identityOf(const std::string& sa) {
    return compile::assignIdentities({"app/a", "app/b"}).at(sa);
  }
  bool hooked(const std::string& pod, uint32_t ifindex) {
    auto a = dp_->attachments().find(ifindex);
    return a != dp_->attachments().end() && a->second.pod == pod &&
           dp_->backend.read().value().endpoints.count(ifindex) == 1;
  }
  bool deniesByDefault(const std::string& sa) {
    auto p = dp_->backend.read().value().policy;
    auto meta = p.find({SMIK_ID_META, identityOf(sa), 0, 0, 0});
    return meta != p.end() && (meta->second.flags & SMIK_POL_F_ENFORCED);
  }
  // After the back-off (250 ms after a first failure), the next round retries.
  void retry() {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    agent_->runOnce();
  }

  std::string dir_;
  FakeDataplane* dp_ = nullptr;
  std::unique_ptr<Agent> agent_;
  api::HttpServer http_;
  int port_ = 0;
};

TEST_F(AgentTest, AFailedWriteLeavesTheNewPodHookedAndTheNodeUnready) {
  write("b.yaml", pod("b", "10.0.0.11"));
  // The hook takes two writes (b's policy, b's endpoint); the fill's first
  // (an address) fails.
  dp_->backend.fail_after_writes = dp_->backend.writes + 2;
  agent_->runOnce();
  EXPECT_TRUE(hooked("app/b", 12));
  EXPECT_TRUE(deniesByDefault("app/b"));
  EXPECT_TRUE(hooked("app/a", 11));
  auto [code, body] = get("/readyz");
  EXPECT_EQ(code, 503);
  EXPECT_EQ(body, "not ready: apply: injected failure (retrying)\n");
  auto status = nlohmann::json::parse(get("/status").second);
  EXPECT_EQ(status["ready"], false);
  EXPECT_TRUE(status["notEnforced"].empty()) << status.dump(1);

  retry();
  EXPECT_EQ(get("/readyz").first, 200);
  smik::Addr b;
  ASSERT_TRUE(smik::parseAddr("10.0.0.11", &b));
  EXPECT_EQ(dp_->backend.read().value().ips.count(b), 1u);
}

// apply() writes the difference from what the kernel holds: while that
// cannot be read whole, nothing is written and the node stays unready.
TEST_F(AgentTest, NothingIsWrittenWhileTheKernelCannotBeRead) {
  write("b.yaml", pod("b", "10.0.0.11"));
  dp_->backend.fail_after_writes = dp_->backend.writes + 2;  // the fill's first write
  dp_->backend.fail_reads = 2;  // the re-read after it, and the next round's
  agent_->runOnce();
  EXPECT_EQ(get("/readyz").first, 503);
  const int writes = dp_->backend.writes;
  retry();
  EXPECT_EQ(dp_->backend.writes, writes) << "written against a state that was not read";
  auto [code, body] = get("/readyz");
  EXPECT_EQ(code, 503);
  EXPECT_EQ(body, "not ready: read maps: injected read failure (retrying)\n");
  EXPECT_EQ(dp_->backend.fail_reads, 0);

  // The back-off grows with each failure: poll rounds until one succeeds.
  EXPECT_TRUE(eventually([&] {
    agent_->runOnce();
    return get("/readyz").first == 200;
  }, std::chrono::seconds(10), std::chrono::milliseconds(100)));
  smik::Addr b;
  ASSERT_TRUE(smik::parseAddr("10.0.0.11", &b));
  EXPECT_EQ(dp_->backend.read().value().ips.count(b), 1u);
}

TEST_F(AgentTest, APodWhoseEndpointCannotBeWrittenIsNamedUntilARetryHooksIt) {
  write("b.yaml", pod("b", "10.0.0.11"));
  dp_->backend.fail_after_writes = dp_->backend.writes + 1;  // b's endpoint entry
  agent_->runOnce();
  EXPECT_FALSE(hooked("app/b", 12));
  EXPECT_TRUE(hooked("app/a", 11)) << "an unrelated write failed: a keeps its programs";
  auto [code, body] = get("/readyz");
  EXPECT_EQ(code, 503);
  EXPECT_EQ(body,
            "not ready: 1 local meshed pod(s) not enforced: app/b (endpoint entry not written: "
            "injected failure)\n");
  auto status = nlohmann::json::parse(get("/status").second);
  EXPECT_EQ(status["notEnforced"],
            nlohmann::json::array({"app/b: endpoint entry not written: injected failure"}));

  retry();
  EXPECT_TRUE(hooked("app/b", 12));
  EXPECT_EQ(get("/readyz").first, 200);
  EXPECT_TRUE(nlohmann::json::parse(get("/status").second)["notEnforced"].empty());
}

TEST_F(AgentTest, APodWithoutItsVethIsListedButDoesNotUnreadyTheNode) {
  write("c.yaml", pod("c", "10.0.0.12"));  // no interface for c
  agent_->runOnce();
  EXPECT_EQ(get("/readyz").first, 200);
  auto status = nlohmann::json::parse(get("/status").second);
  EXPECT_EQ(status["notEnforced"],
            nlohmann::json::array({"app/c: no host-side interface for its address yet"}));
}

// ---- the order of a round, its retries, what it publishes ----------------

// A ClusterIP Service with one ready endpoint (pod a).
const char* kService =
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\n"
    "spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}\n"
    "addressType: IPv4\nendpoints: [{addresses: [10.0.0.10], conditions: {ready: true}}]\n"
    "ports: [{name: http, port: 8080}]\n";

TEST_F(AgentTest, TheFirstRoundHooksPodsBeforeSocketProgramsAndThoseOnlyOnceServicesAreWritten) {
  // SetUp's round: a's endpoint entry is in the maps before its programs,
  // the socket programs come last.
  ASSERT_EQ(dp_->calls.size(), 2u);
  EXPECT_EQ(dp_->calls[0], "attach app/a (endpoints 11, services 0)");
  EXPECT_EQ(dp_->calls[1], "sockets (endpoints 11, services 0)");
}

TEST_F(AgentTest, SocketProgramsWaitForAFillThatFailed) {
  // A fresh agent whose first fill fails: no socket program may translate
  // connect() before the service tables are written.
  write("svc.yaml", kService);
  auto dp = std::make_unique<FakeDataplane>();
  FakeDataplane* fake = dp.get();
  fake->interfaces = {{"app/a", 11}};
  fake->backend.fail_after_writes = 2;  // the hook's two writes pass, the fill fails
  AgentConfig cfg;
  cfg.node.node_name = "n1";
  cfg.pin_dir.clear();
  auto agent = Agent::create(cfg, std::make_unique<source::ManifestDir>(dir_), std::move(dp));
  agent->runOnce();
  EXPECT_FALSE(fake->socketProgramsAttached());
  EXPECT_FALSE(agent->ready());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  agent->runOnce();
  ASSERT_TRUE(fake->socketProgramsAttached());
  EXPECT_EQ(fake->calls.back(), "sockets (endpoints 11, services 1)");
  EXPECT_TRUE(agent->ready());
}

TEST_F(AgentTest, AGonePodIsUnhookedWhileItsEndpointEntryStillDeniesThenTheEntryGoes) {
  write("b.yaml", pod("b", "10.0.0.11"));
  agent_->runOnce();
  ASSERT_TRUE(hooked("app/b", 12));
  fs::remove(dir_ + "/b.yaml");
  dp_->calls.clear();
  agent_->runOnce();
  ASSERT_EQ(dp_->calls.size(), 1u);
  EXPECT_EQ(dp_->calls[0], "detach app/b (endpoints 11 12, services 0)");
  EXPECT_EQ(dp_->backend.read().value().endpoints.count(12), 0u);
  EXPECT_TRUE(hooked("app/a", 11));
}

TEST_F(AgentTest, AFailedRoundIsRetriedOnlyAfterItsBackOff) {
  write("b.yaml", pod("b", "10.0.0.11"));
  dp_->backend.fail_after_writes = dp_->backend.writes + 2;
  agent_->runOnce();
  ASSERT_FALSE(agent_->ready());
  // Nothing changed and the 250 ms have not passed: no write is tried.
  const int writes = dp_->backend.writes, swaps = dp_->backend.swaps;
  agent_->runOnce();
  EXPECT_EQ(dp_->backend.writes, writes);
  EXPECT_EQ(dp_->backend.swaps, swaps);
  EXPECT_FALSE(agent_->ready());
  retry();
  EXPECT_GT(dp_->backend.writes, writes);
  EXPECT_TRUE(agent_->ready());
  // In force: later rounds with nothing new write nothing.
  const int after = dp_->backend.writes;
  retry();
  EXPECT_EQ(dp_->backend.writes, after);
}

TEST_F(AgentTest, ANewHostAddressIsCompiledWithoutAnObjectChanging) {
  dp_->host_addrs = {"192.168.7.1"};
  agent_->runOnce();
  smik::Addr host;
  ASSERT_TRUE(smik::parseAddr("192.168.7.1", &host));
  auto ips = dp_->backend.read().value().ips;
  ASSERT_EQ(ips.count(host), 1u);
  EXPECT_EQ(ips.at(host).identity, uint32_t(SMIK_ID_HOST));
  EXPECT_EQ(agent_->applied()->node.host_addrs, dp_->host_addrs);
}

// An idle round reads neither the host's addresses nor the pods' interfaces
// while the network reports no change; a reported change is read at once.
TEST_F(AgentTest, InterfacesAndAddressesAreReadAgainOnlyWhenTheNetworkChanged) {
  dp_->reports_net_changes = true;
  write("c.yaml", pod("c", "10.0.0.12"));
  agent_->runOnce();  // a new plan: read
  EXPECT_FALSE(hooked("app/c", 13));
  int reads = dp_->resolves;
  dp_->interfaces["app/c"] = 13;  // its veth appears...
  dp_->host_addrs = {"192.168.7.1"};
  agent_->runOnce();  // ...but nothing reported it
  EXPECT_EQ(dp_->resolves, reads);
  EXPECT_FALSE(hooked("app/c", 13));
  EXPECT_TRUE(agent_->applied()->node.host_addrs.empty());
  dp_->net_changed = true;
  agent_->runOnce();
  EXPECT_TRUE(hooked("app/c", 13));
  EXPECT_EQ(agent_->applied()->node.host_addrs, dp_->host_addrs);
}

TEST_F(AgentTest, TheAppliedViewIsThePlanInForceAndNeverChangesUnderItsReader) {
  std::shared_ptr<const AppliedView> before = agent_->applied();
  ASSERT_TRUE(before->compiled);
  EXPECT_EQ(before->plan->endpoints.count("app/a"), 1u);
  EXPECT_EQ(before->state->pods.count("app/a"), 1u);
  write("b.yaml", pod("b", "10.0.0.11"));
  agent_->runOnce();
  std::shared_ptr<const AppliedView> after = agent_->applied();
  EXPECT_EQ(after->plan->endpoints.count("app/b"), 1u);
  EXPECT_EQ(after->identity_names.at(identityOf("app/b")), "app/b");
  // What a reader holds is the plan it got, whatever the agent did since.
  EXPECT_EQ(before->plan->endpoints.count("app/b"), 0u);
  EXPECT_EQ(before->state->pods.count("app/b"), 0u);
  // Nothing new: the same view, not a recompile.
  agent_->runOnce();
  EXPECT_EQ(agent_->applied(), after);
}

}  // namespace
}  // namespace smik
