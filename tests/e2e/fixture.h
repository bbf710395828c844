// The end-to-end fixture: real pods (netns + veth), the real smik-agent on a
// manifest directory, real TCP/UDP between them. Every test names its objects
// with the test bed's per-run prefix and removes them, also on failure.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/support/eventually.h"
#include "tests/support/sockets.h"
#include "tests/testbed/testbed.h"

namespace fs = std::filesystem;
using smik::testbed::Pod;
using smik::testbed::Proc;
using smik::testbed::TestBed;

namespace smik::e2e {

constexpr const char* kNode = "e2e-node";

struct HttpReply {
  int status = 0;  // 0: unreachable
  std::string headers, body;
};

// GET http://127.0.0.1:port/path, headers kept (a partial answer's Warning).
inline HttpReply httpGetFull(int port, const std::string& path, int timeout_s = 2) {
  HttpReply r;
  UniqueFd fd = smik::testing::connectLoopback(port, timeout_s);
  if (!fd) return r;
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  send(fd.get(), req.data(), req.size(), 0);
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd.get(), buf, sizeof buf, 0)) > 0) resp.append(buf, n);
  if (resp.size() > 12) r.status = std::atoi(resp.substr(9, 3).c_str());
  auto end = resp.find("\r\n\r\n");
  r.headers = resp.substr(0, end);
  r.body = end == std::string::npos ? "" : resp.substr(end + 4);
  return r;
}

// GET http://127.0.0.1:port/path -> (status, body); status 0 if unreachable.
inline std::pair<int, std::string> httpGet(int port, const std::string& path) {
  HttpReply r = httpGetFull(port, path);
  return {r.status, std::move(r.body)};
}

// Value of metric `name` in a TrafficMetrics item, as the Quantity string.
inline std::string metric(const nlohmann::json& item, const std::string& name) {
  for (const auto& m : item["metrics"])
    if (m["name"] == name) return m["value"].get<std::string>();
  return "<missing>";
}

// Kubernetes Quantity string -> number ("150", "296875m", "1k", "2M").
inline double quantity(const std::string& q) {
  if (q.empty()) return 0;
  switch (q.back()) {
    case 'm': return std::stod(q.substr(0, q.size() - 1)) / 1000;
    case 'k': return std::stod(q.substr(0, q.size() - 1)) * 1000;
    case 'M': return std::stod(q.substr(0, q.size() - 1)) * 1000000;
    default: return std::stod(q);
  }
}

using smik::testing::eventually;
using smik::testing::freePort;

inline std::string ns(const std::string& name, bool meshed) {
  return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n" +
         (meshed ? "  labels:\n    smik.io/mesh: enabled\n" : "") + "---\n";
}

// "a" -> "[a]", "a,b" -> "[a, b]": a YAML flow list of comma-separated values.
inline std::string flowList(const std::string& csv) {
  std::string out = "[";
  std::istringstream in(csv);
  for (std::string v; std::getline(in, v, ',');) out += (out.size() > 1 ? ", " : "") + v;
  return out + "]";
}

// `ips`: one address, or a dual-stack pod's "v4,v6" (podIP is the first).
inline std::string pod(const std::string& namesp, const std::string& name, const std::string& sa,
                const std::string& ips, const std::string& node = kNode) {
  std::string list;
  std::istringstream in(ips);
  for (std::string ip; std::getline(in, ip, ',');) list += "\n  - ip: " + ip;
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + namesp +
         "\nspec:\n  serviceAccountName: " + sa + "\n  nodeName: " + node +
         "\nstatus:\n  phase: Running\n  podIP: " + ips.substr(0, ips.find(',')) +
         "\n  podIPs:" + list + "\n---\n";
}

inline std::string tcpRoute(const std::string& namesp, const std::string& name,
                     const std::string& ports, const std::string& kind = "TCPRoute") {
  return "apiVersion: specs.smi-spec.io/v1alpha4\nkind: " + kind + "\nmetadata:\n  name: " + name +
         "\n  namespace: " + namesp + "\nspec:\n  matches:\n    ports: " + ports + "\n---\n";
}

inline std::string trafficTarget(const std::string& namesp, const std::string& name,
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

inline std::string rule(const std::string& kind, const std::string& name) {
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
    http_port_ = freePort();
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
                                  http_host_ + ":" + std::to_string(http_port_), "--pin-dir", pin_,
                                  // warnings only: the test reads stdout only on failure
                                  "--log-level", "warn",
                                  // socket programs for this bed's pods only
                                  "--cgroup", bed_->cgroupRoot()};
    a.insert(a.end(), extra.begin(), extra.end());
    // The tests of who may reach whom read a denial as a timeout; what a
    // rejected flow gets instead is deny_response_test.cpp's.
    if (std::find(extra.begin(), extra.end(), "--deny-response") == extra.end())
      a.insert(a.end(), {"--deny-response", "drop"});
    // Never the shared default socket: parallel runs would collide on it.
    if (std::find(extra.begin(), extra.end(), "--grpc") == extra.end())
      a.insert(a.end(), {"--grpc", "/tmp/" + bed_->prefix() + "-default-agent.sock"});
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
  void waitAttached(size_t n, int within_ms = 5000) {
    ASSERT_TRUE(eventually([&] { return hookedPods() >= n; }, within_ms))
        << httpGet(http_port_, "/status").second;
  }

  // Pods /status lists as hooked. Only that list: a "(" in a diagnostic
  // once counted as a hooked pod, and a test checked a pod not yet hooked.
  size_t hookedPods() {
    auto [code, body] = httpGet(http_port_, "/status");
    if (code != 200) return 0;
    auto st = nlohmann::json::parse(body, nullptr, false);
    if (st.is_discarded() || !st.contains("endpoints")) return 0;
    return st["endpoints"].size();
  }

  Proc serve(Pod& p, const std::string& tcp, const std::string& udp = "") {
    std::vector<std::string> argv = {SMIK_TESTPEER, "serve", "--id", p.name()};
    if (!tcp.empty()) argv.insert(argv.end(), {"--tcp", tcp});
    if (!udp.empty()) argv.insert(argv.end(), {"--udp", udp});
    Proc proc = bed_->spawn(p, argv);
    EXPECT_TRUE(proc.waitFor("ready\n", 5000)) << "server in " << p.name() << " did not start";
    return proc;
  }

  // The address of `p` that tests of family_ dial.
  const std::string& addr(const Pod& p) const { return family_ == 6 ? p.ip6() : p.ip(); }
  // Every address of `p`, for its manifest: "v4,v6" (dual stack) or "v4".
  static std::string ips(const Pod& p) { return p.ip6().empty() ? p.ip() : p.ip() + "," + p.ip6(); }
  // family_ 6: IPv6 tests skip where the test bed has no IPv6.
  bool skipWithoutFamily() {
    return family_ == 6 && bed_->subnet6Cidr().empty();
  }

  // "ok", "timeout", "refused"... of one attempt from `from` to to:port.
  std::string tcp(Pod& from, Pod& to, int port, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {SMIK_TESTPEER, "tcp", addr(to), std::to_string(port),
                                     "--timeout-ms", "300"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = bed_->run(from, argv, 5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }
  std::string udp(Pod& from, Pod& to, int port) {
    auto r = bed_->run(from, {SMIK_TESTPEER, "udp", addr(to), std::to_string(port),
                              "--timeout-ms", "300"}, 5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }
  std::string hostTcp(Pod& to, int port) {
    auto r = bed_->run({SMIK_TESTPEER, "tcp", addr(to), std::to_string(port), "--timeout-ms", "300"},
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

  std::unique_ptr<TestBed> bed_;
  std::string dir_, pin_;
  std::string http_host_ = "127.0.0.1";  // --http's address; the tests read 127.0.0.1
  int http_port_ = 0;
  int family_ = 4;  // which of a dual-stack pod's addresses tests dial
  std::unique_ptr<Proc> agent_;
};

// A fixture whose tests run once per address family, IPv4 and IPv6, between
// the same dual-stack pods (family_ says which address is dialled). Tests are
// TEST_P(Fixture, ...), instantiated with SMIK_E2E_FAMILIES(Fixture).
template <class Base>
class OverFamilies : public Base, public ::testing::WithParamInterface<int> {
 protected:
  void SetUp() override {
    this->family_ = this->GetParam();
    Base::SetUp();
    if (!::testing::Test::IsSkipped() && this->skipWithoutFamily())
      GTEST_SKIP() << "no IPv6 on this machine (the test bed could not claim an IPv6 block)";
  }
};

inline std::string familyName(const ::testing::TestParamInfo<int>& info) {
  return "IPv" + std::to_string(info.param);
}

#define SMIK_E2E_FAMILIES(Fixture) \
  INSTANTIATE_TEST_SUITE_P(, Fixture, ::testing::Values(4, 6), ::smik::e2e::familyName)

}  // namespace smik::e2e
