// --http-rules=enforce end to end: the agent compiles the SMI spec's
// HTTPRouteGroup example (narrowed to one path) from a manifest directory,
// and the kernel judges each request between real pods: the allowed path
// answers 200, another path 403 on the same keep-alive connection (and the
// server never reads it), a source with no grant is stopped at L4.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <cstdio>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/base/unique_fd.h"
#include "tests/e2e/fixture.h"
#include "tests/support/raw_http.h"

namespace smik::e2e {
namespace {

using namespace std::chrono_literals;
using smik::testing::takeResponse;
constexpr int kPort = 8080;

// One TCP connection dialled from a pod's network namespace.
class PodClient {
 public:
  PodClient(const Pod& from, const std::string& ip, int port) {
    std::thread([&] {
      const UniqueFd ns(open(("/var/run/netns/" + from.netns()).c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns || setns(ns.get(), CLONE_NEWNET) != 0) return;
      const bool v6 = ip.find(':') != std::string::npos;
      UniqueFd fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      const int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      sockaddr_storage a{};
      socklen_t alen;
      if (v6) {
        auto* a6 = reinterpret_cast<sockaddr_in6*>(&a);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET6, ip.c_str(), &a6->sin6_addr);
        alen = sizeof *a6;
      } else {
        auto* a4 = reinterpret_cast<sockaddr_in*>(&a);
        a4->sin_family = AF_INET;
        a4->sin_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET, ip.c_str(), &a4->sin_addr);
        alen = sizeof *a4;
      }
      // Non-blocking connect bounded by poll: a dropped SYN must not hang the test.
      fcntl(fd.get(), F_SETFL, O_NONBLOCK);
      connect(fd.get(), reinterpret_cast<sockaddr*>(&a), alen);
      pollfd p{fd.get(), POLLOUT, 0};
      int soerr = 1;
      socklen_t len = sizeof soerr;
      if (poll(&p, 1, 1000) != 1 || getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 ||
          soerr != 0)
        return;
      fcntl(fd.get(), F_SETFL, 0);
      fd_ = std::move(fd);
    }).join();
  }
  bool connected() const { return fd_.valid(); }

  // Sends `GET path` and reads the response: {status, body}; {0, ""} when the
  // connection ended (or nothing came within 5 s).
  std::pair<int, std::string> get(const std::string& path, const std::string& headers = "",
                                  bool bytewise = false) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: bookstore\r\n" + headers + "\r\n";
    // one byte a write (TCP_NODELAY): the judge sees the head in as many segments
    for (size_t at = 0; at < req.size();) {
      const size_t n = bytewise ? 1 : req.size() - at;
      if (write(fd_.get(), req.data() + at, n) != static_cast<ssize_t>(n)) return {0, ""};
      at += n;
    }
    for (;;) {
      if (auto r = takeResponse(buf_)) return *r;
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, 5000) != 1) return {0, ""};
      char chunk[4096];
      const ssize_t n = read(fd_.get(), chunk, sizeof chunk);
      if (n < 0) read_errno_ = errno;
      if (n <= 0) return {0, ""};
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }
  // Writes raw bytes; false if not all were.
  bool send(const std::string& bytes) {
    // MSG_NOSIGNAL: a write after the judge ended the connection fails, never kills the test
    return ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // The last read failed because the peer reset the connection.
  bool wasReset() const { return read_errno_ == ECONNRESET; }
  // Closes with RST, straight from ESTABLISHED.
  void resetNow() {
    const linger l{1, 0};
    setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    fd_.reset();
  }

  static std::string request(const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: bookstore\r\n\r\n";
  }
  // Up to `want` answers' statuses, and whether the connection ended first.
  std::pair<std::vector<int>, bool> answers(size_t want) {
    std::vector<int> out;
    while (out.size() < want) {
      if (auto r = takeResponse(buf_)) {
        out.push_back(r->first);
        continue;
      }
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, 5000) != 1) return {out, false};
      char chunk[4096];
      const ssize_t n = read(fd_.get(), chunk, sizeof chunk);
      if (n < 0) read_errno_ = errno;
      if (n <= 0) return {out, true};
      buf_.append(chunk, static_cast<size_t>(n));
    }
    return {out, false};
  }

  // Sends a GET of each path in one write and reads their answers' statuses.
  std::vector<int> pipelined(const std::vector<std::string>& paths) {
    std::string req;
    for (const auto& p : paths) req += request(p);
    if (!send(req)) return {};
    return answers(paths.size()).first;
  }
  // The same, then reads answers until the connection ends: their statuses,
  // and whether it ended (end of stream or reset) rather than going quiet
  // for 5 s.
  std::pair<std::vector<int>, bool> pipelinedToTheEnd(const std::vector<std::string>& paths) {
    std::string req;
    for (const auto& p : paths) req += request(p);
    if (!send(req)) return {{}, true};
    return answers(SIZE_MAX);
  }
  // As pipelinedToTheEnd, each GET in a write of its own, `gap` apart (so
  // each is a segment of its own, sent before the earlier ones are answered).
  std::pair<std::vector<int>, bool> pipelinedApart(const std::vector<std::string>& paths,
                                                   std::chrono::milliseconds gap) {
    for (const auto& p : paths) {
      if (!send(request(p))) return {{}, true};
      std::this_thread::sleep_for(gap);
    }
    return answers(SIZE_MAX);
  }

 private:
  UniqueFd fd_;
  std::string buf_;
  int read_errno_ = 0;
};

// The server pod, declaring the port its requests arrive on (which is how
// the agent knows an HTTPRouteGroup's rules apply there).
// `addresses`: its manifest's podIPs ("" = its IPv4 address alone).
std::string serverPod(const Pod& server, const std::string& addresses = "") {
  std::string manifest = pod("app", "server", "server", addresses.empty() ? server.ip() : addresses);
  manifest.replace(manifest.find("  nodeName:"), 0,
                   "  containers:\n  - name: app\n    image: x\n    ports:\n"
                   "    - containerPort: " + std::to_string(kPort) + "\n");
  return manifest;
}

// The spec's HTTPRouteGroup example (traffic-specs v1alpha4) and a
// TrafficTarget granting the client its `buy` match only.
std::string bookstorePolicy() {
  return "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n"
         "  name: the-routes\n  namespace: app\nspec:\n  matches:\n"
         "  - name: buy\n    pathRegex: /books-bought\n    methods: [GET]\n"
         "  - name: everything\n    pathRegex: \".*\"\n    methods: [\"*\"]\n---\n" +
         trafficTarget("app", "bookstore", "app", "server",
                       "  - kind: HTTPRouteGroup\n    name: the-routes\n    matches: [buy]\n",
                       "app", "client");
}

class HttpRules : public E2E {
 protected:
  // The agent over a client and a server pod whose port 8080 the client is
  // granted at L4 only (a TCPRoute).
  void startWithL4Only(Pod& client, Pod& server) {
    write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + serverPod(server));
    write("policy.yaml", tcpRoute("app", "port", "[8080]") +
                             trafficTarget("app", "l4", "app", "server", rule("TCPRoute", "port"),
                                           "app", "client"));
    startAgent();
    waitAttached(2);
  }
  // A client and a server pod (both families where the bed has IPv6) under
  // the bookstore policy, the agent, and the HTTP server, started.
  Proc bookstore(Pod& client, Pod& server, const std::string& policy = bookstorePolicy()) {
    write("pods.yaml", ns("app", true) + pod("app", "client", "client", ips(client)) +
                           serverPod(server, ips(server)));
    write("policy.yaml", policy);
    startAgent();
    waitAttached(2);
    Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
    EXPECT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
    return app;
  }
  // Replaces the policy with the bookstore's HTTP rules, until they judge.
  void applyBookstorePolicy(Pod& client, Pod& server) {
    write("policy.yaml", bookstorePolicy());
    ASSERT_TRUE(eventually(
        [&] {
          PodClient c(client, server.ip(), kPort);
          return c.connected() && c.get("/admin/new").first == 403;
        },
        5000))
        << "the HTTP policy never came into force";
  }
  // The judge's counter of `verdict` (smik_http_requests_total) comes to `want`.
  void expectJudged(const std::string& verdict, long want) {
    std::string metrics;
    EXPECT_TRUE(sampleComesTo("smik_http_requests_total{verdict=\"" + verdict + "\"}",
                              [want](long v) { return v == want; }, &metrics))
        << verdict << " never came to " << want << "\n" << metrics.substr(0, 4000);
  }
  // Whether the Prometheus sample `sample` (its name and labels) comes to a
  // value `ok` takes within 3 s (the agent polls the kernel's counters);
  // `page` keeps the last page read, for the failure's message.
  bool sampleComesTo(const std::string& sample, const std::function<bool(long)>& ok,
                     std::string* page) {
    return eventually(
        [&] {
          *page = httpGet(http_port_, "/metrics").second;
          const size_t at = page->find(sample + " ");
          return at != std::string::npos && ok(std::atol(page->c_str() + at + sample.size() + 1));
        },
        3000);
  }
};

TEST_F(HttpRules, EnforceJudgesEachRequestOnAKeepAliveConnection) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Pod& stranger = bed_->addPod("stranger", bed_->nextIp());
  const std::string server_pod = serverPod(server);
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + server_pod +
                         pod("app", "stranger", "stranger", stranger.ip()));
  write("policy.yaml", bookstorePolicy());
  startAgent();  // --http-rules enforce is the default
  waitAttached(3);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();

  {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    auto [code, body] = c.get("/books-bought");
    EXPECT_EQ(code, 200) << body;
    auto [code2, body2] = c.get("/books-bought/42");  // anchored at the start only
    EXPECT_EQ(code2, 200) << body2;
    const auto t0 = std::chrono::steady_clock::now();
    auto [denied, denied_body] = c.get("/buy-everything");
    EXPECT_EQ(denied, 403) << denied_body;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "the 403 must come promptly";
  }
  // A new connection after the denial works again.
  {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get("/books-bought").first, 200);
  }
  // The application read the granted requests, never the denied one.
  ASSERT_TRUE(eventually([&] { return app.output().find("END") != std::string::npos; }, 5000));
  EXPECT_NE(app.output().find("REQ GET /books-bought "), std::string::npos) << app.output();
  EXPECT_EQ(app.output().find("/buy-everything"), std::string::npos) << app.output();

  // No grant at all: the tc policy drops the SYN (L4), no HTTP is spoken.
  PodClient s(stranger, server.ip(), kPort);
  EXPECT_FALSE(s.connected());

  // Judged-request counters reach Prometheus.
  const std::string metrics = httpGet(http_port_, "/metrics").second;
  EXPECT_NE(metrics.find("smik_http_requests_total{verdict=\"denied_policy\"} 1"), std::string::npos)
      << metrics.substr(0, 4000);
  EXPECT_NE(metrics.find("smik_http_judge_attached 1"), std::string::npos);

  // `smik events --kind http-deny` names the refused request. The stream may
  // not be subscribed at the first denial, and the kernel sends one event
  // per edge and kind a second: deny again, slower than that, until one comes.
  Proc events = bed_->spawn({SMIK_CLI, "events", "--count", "1", "--kind", "http-deny", "-o",
                             "json", "--grpc", "/tmp/" + bed_->prefix() + "-default-agent.sock"});
  int status = -1;
  for (int i = 0; i < 6 && status < 0; i++) {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get("/buy-everything?coupon=1").first, 403);
    status = events.wait(1500);
  }
  ASSERT_EQ(status, 0) << "no http-deny event within 9 s: " << events.output();
  const nlohmann::json e = nlohmann::json::parse(events.output());
  EXPECT_EQ(e["kind"], "http-deny");
  EXPECT_EQ(e["reason"], "denied_policy");
  EXPECT_EQ(e["method"], "GET");
  EXPECT_EQ(e["path"], "/buy-everything");
  EXPECT_EQ(e["path_truncated"], false);
  EXPECT_EQ(e["client"], "app/client");
  EXPECT_EQ(e["server"], "app/server");
  EXPECT_EQ(e["port"], kPort);
}

// The judge asks for its server sockets' state changes, to forget them when
// they close; the connection counter gets those callbacks too, and must not
// take a judged server socket's reset for a client's reset (of the edge
// turned round: the server pod as the client). The client here is the test
// process, outside the agent's cgroup: only the server's side is counted.
TEST_F(HttpRules, AJudgedServerSocketsResetIsNotCountedAsAClients) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Proc app = bookstore(client, server);
  ASSERT_FALSE(HasFailure());
  PodClient c(client, server.ip(), kPort);
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(c.get("/books-bought").first, 200);
  c.resetNow();
  ASSERT_TRUE(eventually(
      [&] { return app.output().find("END error Connection reset") != std::string::npos; }, 3000))
      << app.output();
  // A connection after the reset: once the agent has read its count, it has
  // read whatever the reset counted.
  {
    PodClient after(client, server.ip(), kPort);
    ASSERT_TRUE(after.connected());
    EXPECT_EQ(after.get("/books-bought").first, 200);
  }
  const std::string edge = "namespace=\"app\",workload=\"server\",peer_namespace=\"app\",peer_workload=\"client\"";
  std::string metrics;
  // The page's connection counts, for a failure's message.
  auto counts = [&] {
    std::string out;
    std::istringstream lines(metrics);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("smik_tcp_connections_total{", 0) == 0) out += line + "\n";
    return out;
  };
  EXPECT_TRUE(sampleComesTo("smik_tcp_connections_total{" + edge + ",side=\"server\",outcome=\"success\"}",
                            [](long v) { return v == 2; }, &metrics))
      << counts();
  EXPECT_EQ(metrics.find(edge + ",side=\"client\""), std::string::npos) << counts();
}

// The names of the HTTP judge's programs attached at `cgroup` (guard,
// egress, sockops), as the kernel keeps them (15 characters).
std::vector<std::string> judgePrograms(const std::string& cgroup) {
  std::vector<std::string> names;
  const smik::UniqueFd cg(open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  for (bpf_attach_type type : {BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_SOCK_OPS}) {
    uint32_t ids[64], count = 64;
    if (!cg || bpf_prog_query(cg.get(), type, 0, nullptr, ids, &count) != 0) continue;
    for (uint32_t i = 0; i < count; ++i) {
      const smik::UniqueFd prog(bpf_prog_get_fd_by_id(ids[i]));
      bpf_prog_info info{};
      uint32_t len = sizeof info;
      if (prog && bpf_obj_get_info_by_fd(prog.get(), &info, &len) == 0 &&
          std::string(info.name).rfind("smik_http_", 0) == 0)
        names.push_back(info.name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The judge's cgroup programs run on every packet of every pod under the
// agent's cgroup: a node whose policy has no HTTP rule runs none of them
// (the judge is loaded and ready), and the first rule attaches them before
// it governs a port: from then on requests are judged.
TEST_F(HttpRules, TheJudgesProgramsAttachWithTheFirstHttpRule) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  startWithL4Only(client, server);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
  {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get("/admin/l4").first, 200);  // L4 only: any path
  }
  EXPECT_EQ(judgePrograms(bed_->cgroupRoot()), std::vector<std::string>{});
  EXPECT_NE(httpGet(http_port_, "/metrics").second.find("smik_http_judge_attached 1"), std::string::npos);

  ASSERT_NO_FATAL_FAILURE(applyBookstorePolicy(client, server));
  EXPECT_EQ(judgePrograms(bed_->cgroupRoot()),
            (std::vector<std::string>{"smik_http_egres", "smik_http_guard", "smik_http_socko"}));
  PodClient c(client, server.ip(), kPort);
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(c.get("/books-bought").first, 200);
}

// A keep-alive connection opened while its port was granted at L4 only, and
// then governed by an HTTPRouteGroup: the judge never saw it accepted, so the
// guard refuses its payload. Both ends must learn it at once (a reset at the
// client's retransmission), not wait: the client retransmitting its request
// for minutes, the server reading for ever. New connections are judged.
TEST_F(HttpRules, AConnectionOpenedBeforeItsPortWasGovernedIsResetNotLeftWaiting) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  startWithL4Only(client, server);
  // --fork: a process per connection, so that new ones are served while
  // the first stays open
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort), "--fork"});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
  PodClient early(client, server.ip(), kPort);
  ASSERT_TRUE(early.connected());
  EXPECT_EQ(early.get("/admin/before").first, 200);  // L4 only: any path

  ASSERT_NO_FATAL_FAILURE(applyBookstorePolicy(client, server));
  const auto t0 = std::chrono::steady_clock::now();
  const auto [code, body] = early.get("/books-bought");  // granted, but out of the judge's reach
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 0) << body;
  EXPECT_TRUE(early.wasReset());
  EXPECT_LT(waited, 3s) << "the client must be reset at its retransmission, not left to time out";
  // The server saw the connection reset and never read the refused request.
  ASSERT_TRUE(eventually(
      [&] { return app.output().find("END error Connection reset") != std::string::npos; }, 3000))
      << app.output();
  EXPECT_NE(app.output().find("REQ GET /admin/before "), std::string::npos) << app.output();
  EXPECT_EQ(app.output().find("/books-bought"), std::string::npos) << app.output();
  // Counted (on the agent's next poll of the counters). At least once: a
  // connection of the wait above can have been opened just before the swap
  // and be reset too.
  std::string metrics;
  EXPECT_TRUE(sampleComesTo("smik_conntrack_events_total{event=\"reset\"}",
                            [](long v) { return v >= 1; }, &metrics))
      << metrics.substr(0, 4000);
  // A new connection is judged: the granted request passes.
  PodClient after(client, server.ip(), kPort);
  ASSERT_TRUE(after.connected());
  EXPECT_EQ(after.get("/books-bought").first, 200);
}

// A request refused while the server has not answered the request pipelined
// before it: answered at once, its 403 would reach the client first, and the
// client would take it for the answer to the earlier request (whose real
// answer would then follow on a closed stream). The judge holds it back until
// the server's answer is out: the client reads 200 then 403, then the end of
// the connection; the server never reads the refused request, and its socket
// is reset (its stream never had the 403).
class HttpRulesPipelined : public HttpRules {
 protected:
  void refusedBehindAnAnswerComesAfterIt(bool v6);
  void servedBeforeARefusalInTheSameSegment(bool v6);
  // The server saw `n` connections reset (each after its answers).
  void expectResets(Proc& app, size_t n) {
    ASSERT_TRUE(eventually(
        [&] {
          const std::string out = app.output();
          size_t ends = 0;
          for (size_t at = 0; (at = out.find("END error Connection reset", at)) != std::string::npos; ++at)
            ++ends;
          return ends == n;
        },
        3000))
        << app.output();
  }
  // `n` refusals were answered behind the server's answers, and the
  // connection after them is served as ever.
  void expectDeferredThenServed(Pod& client, const std::string& server_ip, long n) {
    expectJudged("answer_deferred", n);
    PodClient after(client, server_ip, kPort);
    ASSERT_TRUE(after.connected());
    EXPECT_EQ(after.get("/books-bought").first, 200);
  }
};

// The server's answer has no length (its body runs to the close): where it
// ends is never known, so the answer owed for the request refused behind it
// can never be placed. The connection is reset after the server's bytes,
// loudly, rather than left waiting for the server to close it.
TEST_F(HttpRulesPipelined, ARefusalBehindAnAnswerOfNoLengthResetsTheConnection) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Proc app = bookstore(client, server);
  PodClient c(client, server.ip(), kPort);
  ASSERT_TRUE(c.connected());
  const auto [statuses, ended] = c.pipelinedApart({"/books-bought/m/200/lateclose", "/admin/x"}, 50ms);
  EXPECT_EQ(statuses, (std::vector<int>{200}));
  EXPECT_TRUE(ended) << "reset, not left waiting";
  EXPECT_TRUE(c.wasReset());
  ASSERT_TRUE(eventually(
      [&] { return app.output().find("END error Connection reset") != std::string::npos; }, 3000))
      << app.output();
  EXPECT_EQ(app.output().find("/admin/"), std::string::npos) << app.output();
  expectJudged("answer_failed", 1);
}

TEST_F(HttpRulesPipelined, ARefusedPipelinedRequestIsAnsweredAfterTheAnswerBeforeIt) {
  refusedBehindAnAnswerComesAfterIt(false);
}

TEST_F(HttpRulesPipelined, ARefusedPipelinedRequestIsAnsweredAfterTheAnswerBeforeItOverIpv6) {
  if (bed_->subnet6Cidr().empty()) GTEST_SKIP() << "the test bed has no IPv6";
  refusedBehindAnAnswerComesAfterIt(true);
}

void HttpRulesPipelined::refusedBehindAnAnswerComesAfterIt(bool v6) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  const std::string server_ip = v6 ? server.ip6() : server.ip();
  Proc app = bookstore(client, server);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    PodClient c(client, server_ip, kPort);
    ASSERT_TRUE(c.connected());
    // "late": the server answers 300 ms after it reads the request, long
    // after the refused one arrived
    const std::string late = "/books-bought/m/200/late?" + std::to_string(round);
    const auto [statuses, ended] = c.pipelinedApart({late, "/admin/" + std::to_string(round)}, 50ms);
    EXPECT_EQ(statuses, (std::vector<int>{200, 403}));
    EXPECT_TRUE(ended) << "the connection must end after the 403";
  }
  expectResets(app, 3);
  EXPECT_NE(app.output().find("SENT GET /books-bought/m/200/late?2"), std::string::npos) << app.output();
  EXPECT_EQ(app.output().find("/admin/"), std::string::npos) << app.output();
  expectDeferredThenServed(client, server_ip, 3);
}

// Requests pipelined in one segment ahead of a refused one reach the server
// and are answered; the refused one and the one after it never do, and the
// 403 comes after the server's answers. Once the server answers at once,
// once 300 ms late (long after the segment was judged).
TEST_F(HttpRulesPipelined, RequestsBeforeARefusedOneInTheSameSegmentAreServed) {
  servedBeforeARefusalInTheSameSegment(false);
}

TEST_F(HttpRulesPipelined, RequestsBeforeARefusedOneInTheSameSegmentAreServedOverIpv6) {
  if (bed_->subnet6Cidr().empty()) GTEST_SKIP() << "the test bed has no IPv6";
  servedBeforeARefusalInTheSameSegment(true);
}

void HttpRulesPipelined::servedBeforeARefusalInTheSameSegment(bool v6) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  const std::string server_ip = v6 ? server.ip6() : server.ip();
  Proc app = bookstore(client, server);
  const std::vector<std::vector<std::string>> rounds = {
      {"/books-bought?a0", "/books-bought?b0", "/admin/0", "/books-bought?c0"},
      {"/books-bought?a1", "/books-bought/m/200/late?b1", "/admin/1", "/books-bought?c1"},
  };
  for (const auto& paths : rounds) {
    SCOPED_TRACE(paths[1]);
    PodClient c(client, server_ip, kPort);
    ASSERT_TRUE(c.connected());
    const auto [statuses, ended] = c.pipelinedToTheEnd(paths);
    EXPECT_EQ(statuses, (std::vector<int>{200, 200, 403}));
    EXPECT_TRUE(ended) << "the connection must end after the 403";
  }
  expectResets(app, 2);
  const std::string out = app.output();
  for (const auto& paths : rounds) {
    EXPECT_NE(out.find("REQ GET " + paths[0] + " "), std::string::npos) << out;
    EXPECT_NE(out.find("REQ GET " + paths[1] + " "), std::string::npos) << out;
    EXPECT_EQ(out.find(paths[3]), std::string::npos) << out;
  }
  EXPECT_EQ(out.find("/admin/"), std::string::npos) << out;
  expectDeferredThenServed(client, server_ip, 2);
}

// A deep pipeline: the judge follows the answers to up to SMIK_HTTP_PIPELINE
// (32) requests waiting, 16 of them completed in one segment (it once gave
// up past 8, and a refusal behind them then refused the whole segment, the
// allowed requests too). Sixteen allowed requests and a refused one in one
// segment: the sixteen are served and counted (every fifth answered 503: a
// failure), the 403 comes after their
// answers, and nothing after it reaches the server. Then three segments on
// one connection, all waiting behind a late answer: each request's latency
// is measured from its own segment's arrival, and every one is sampled.
TEST_F(HttpRulesPipelined, SixteenRequestsAheadOfARefusalInOneSegmentAreServedAndCounted) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Proc app = bookstore(client, server);
  std::vector<std::string> paths;
  std::vector<int> want;
  for (int i = 0; i < 16; ++i) {
    const bool fails = i % 5 == 4;
    paths.push_back(std::string(fails ? "/books-bought/m/503/cl?" : "/books-bought?") + std::to_string(i));
    want.push_back(fails ? 503 : 200);
  }
  want.push_back(403);
  paths.push_back("/admin/x");
  paths.push_back("/books-bought?after");
  PodClient c(client, server.ip(), kPort);
  ASSERT_TRUE(c.connected());
  const auto [statuses, ended] = c.pipelinedToTheEnd(paths);
  EXPECT_EQ(statuses, want);
  EXPECT_TRUE(ended) << "the connection must end after the 403";
  expectResets(app, 1);
  const std::string out = app.output();
  for (size_t i = 0; i < 16; ++i)
    EXPECT_NE(out.find("REQ GET " + paths[i] + " "), std::string::npos) << paths[i] << "\n" << out;
  EXPECT_EQ(out.find("/admin/"), std::string::npos) << out;
  EXPECT_EQ(out.find("?after"), std::string::npos) << out;
  expectJudged("answer_deferred", 1);
  expectJudged("responses_untracked", 0);
  // Three segments of ten a moment apart, all owed behind the first
  // request's late answer (300 ms): three batches waiting, each request's
  // latency from its own segment.
  PodClient d(client, server.ip(), kPort);
  ASSERT_TRUE(d.connected());
  for (int seg = 0; seg < 3; ++seg) {
    std::string bytes;
    for (int i = 0; i < 10; ++i)
      bytes += PodClient::request(std::string(seg == 0 && i == 0 ? "/books-bought/m/200/late?" : "/books-bought?") +
                                  "d" + std::to_string(seg * 10 + i));
    ASSERT_TRUE(d.send(bytes));
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(d.answers(30).first, std::vector<int>(30, 200));
  // 13 + 30 answered 2xx, 3 5xx; each with its latency.
  const std::string labels =
      "source_namespace=\"app\",source_workload=\"client\",destination_namespace=\"app\","
      "destination_workload=\"server\"";
  std::string prom;
  EXPECT_TRUE(sampleComesTo("smik_http_responses_total{" + labels + ",method=\"GET\",code_class=\"2xx\"}",
                            [](long v) { return v == 43; }, &prom))
      << prom.substr(0, 6000);
  EXPECT_NE(prom.find("smik_http_responses_total{" + labels + ",method=\"GET\",code_class=\"5xx\"} 3"),
            std::string::npos)
      << prom.substr(0, 6000);
  EXPECT_NE(prom.find("smik_http_response_seconds_count{" + labels + "} 46"), std::string::npos)
      << prom.substr(0, 6000);
  expectJudged("responses_untracked", 0);
}

// More requests wait for answers than the judge follows (32): counting
// stops, and where the server's answers end is no longer known. A request
// refused after that cannot be answered in its place: sent at once, its 403
// would reach the client ahead of the server's answers (as it once did),
// and the client would take it for the first request's. So the connection
// is reset at the server's next segment instead (its acknowledgement of
// the refused bytes, or an answer): the client sees no 403 out of turn, and
// the server never reads the refused request.
TEST_F(HttpRulesPipelined, ARefusalAfterCountingStoppedResetsRatherThanOvertakes) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Proc app = bookstore(client, server);
  long round = 0;
  for (const std::string& server_ip : {server.ip(), server.ip6()}) {
    if (server_ip.empty()) continue;
    SCOPED_TRACE(server_ip);
    ++round;
    const size_t log_from = app.output().size();
    PodClient c(client, server_ip, kPort);
    ASSERT_TRUE(c.connected());
    // 33 allowed requests behind a 300 ms answer, 16 at most a segment
    std::vector<std::string> segments(3);
    segments[0] = PodClient::request("/books-bought/m/200/late?q0");
    for (int i = 1; i < 33; ++i)
      segments[i < 16 ? 0 : i < 32 ? 1 : 2] += PodClient::request("/books-bought?q" + std::to_string(i));
    for (const auto& seg : segments) {
      ASSERT_TRUE(c.send(seg));
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(c.send(PodClient::request("/admin/x")));
    const auto [statuses, ended] = c.answers(SIZE_MAX);
    EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 403), 0) << "a 403 out of turn";
    EXPECT_EQ(statuses, std::vector<int>(statuses.size(), 200));
    EXPECT_TRUE(ended) << "reset, not left waiting";
    EXPECT_TRUE(c.wasReset());
    // The server's socket is reset too. The server learns it at its next
    // write or read: the late answer's write takes the error, and its reads
    // then end the connection at the requests it had.
    ASSERT_TRUE(eventually([&] { return app.output().find("END ", log_from) != std::string::npos; }, 3000))
        << app.output();
    EXPECT_EQ(app.output().find("/admin/"), std::string::npos) << app.output();
    expectJudged("responses_untracked", round);
    expectJudged("answer_failed", round);
    std::string metrics;
    EXPECT_TRUE(sampleComesTo("smik_conntrack_events_total{event=\"reset\"}",
                              [&](long v) { return v == round; }, &metrics))
        << metrics.substr(0, 4000);
  }
}

// An upgrade passed ahead of a refusal in its segment was queued as a plain
// request: the server's 101 to it ends what the judge can follow, so the
// answer owed can never be placed, and the connection is reset after the
// 101 rather than opened as a tunnel the refused bytes were meant for.
TEST_F(HttpRulesPipelined, AnUpgradeAheadOfARefusalInItsSegmentOpensNothing) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Proc app = bookstore(client, server,
                       "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n"
                       "  name: the-routes\n  namespace: app\nspec:\n  matches:\n"
                       "  - name: ok\n    pathRegex: /ok\n    methods: [GET]\n---\n" +
                           trafficTarget("app", "ok", "app", "server",
                                         "  - kind: HTTPRouteGroup\n    name: the-routes\n    matches: [ok]\n",
                                         "app", "client"));
  PodClient c(client, server.ip(), kPort);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /ok/ws HTTP/1.1\r\nHost: bookstore\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" +
                     PodClient::request("/admin/x")));
  const auto [statuses, ended] = c.answers(SIZE_MAX);
  EXPECT_EQ(statuses, (std::vector<int>{101}));
  EXPECT_TRUE(ended);
  EXPECT_TRUE(c.wasReset());
  expectResets(app, 1);
  EXPECT_NE(app.output().find("REQ GET /ok/ws "), std::string::npos) << app.output();
  EXPECT_EQ(app.output().find("/admin/"), std::string::npos) << app.output();
  expectJudged("answer_failed", 1);
  expectJudged("tunnels", 0);
}

// Generated streams through the whole data path (the agent, tc's conntrack
// and owed answers, the judge): on each connection up to 12 GETs, allowed or
// refused (by policy, for a dot segment, for framing servers disagree on),
// some with a body (either framing) that holds a request of its own,
// written in pieces cut anywhere, some together and some a moment apart.
// Whatever the cuts, the client gets 200 for each request before the first
// refused one and then that one's answer (403 or 400); the server reads
// exactly those allowed requests, none after the refusal and never the
// refused one.
TEST_F(HttpRulesPipelined, GeneratedStreamsAreAnsweredInOrderAndRefusedWhole) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Proc app = bookstore(client, server);
  const uint32_t seed = 20261205;
  std::mt19937 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  // A GET with no body, a Content-Length one or a chunked one; a body holds
  // a request of its own, which must never be taken for one.
  auto withBody = [](const std::string& path, int framing) {
    if (framing == 0) return PodClient::request(path);
    const std::string inner = "GET /admin?smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    std::string head = "GET " + path + " HTTP/1.1\r\nHost: bookstore\r\n";
    if (framing == 1) return head + "Content-Length: " + std::to_string(inner.size()) + "\r\n\r\n" + inner;
    char size[16];
    std::snprintf(size, sizeof size, "%zx", inner.size());
    return head + "Transfer-Encoding: chunked\r\n\r\n" + size + "\r\n" + inner + "\r\n0\r\n\r\n";
  };
  std::vector<std::string> served;  // what the server must read, in order
  int refused_streams = 0;
  int deep = 0;  // streams with more than 8 requests served
  std::string before;  // the last stream's story, for a failure's message
  for (int stream = 0; stream < 40 && !HasFailure(); ++stream) {
    const std::string server_ip = !server.ip6().empty() && uniform(0, 1) ? server.ip6() : server.ip();
    std::string bytes;
    size_t allowed_before = 0;
    int refusal = 0;  // the first refused request's status
    // up to 12: deeper than the 8 answers the judge once followed (longer
    // streams refuse less often, so that some pass 8 before a refusal)
    const int requests = uniform(1, 12);
    for (int r = 0; r < requests; ++r) {
      const std::string id = "s" + std::to_string(stream) + "r" + std::to_string(r);
      // refused by policy (403), for a dot segment (400), for framing
      // servers disagree on (400); or allowed
      const int kind = uniform(0, 8 + 3 * requests);
      int status = 200;
      if (kind <= 1) {
        bytes += withBody("/admin?" + id, uniform(0, 2));
        status = 403;
      } else if (kind == 2) {
        bytes += withBody("/books-bought/../admin?" + id, uniform(0, 2));
        status = 400;
      } else if (kind == 3) {
        bytes += "GET /books-bought?" + id + " HTTP/1.1\r\nHost: bookstore\r\nContent-Length: 5\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        status = 400;
      } else {
        bytes += withBody("/books-bought?" + id, uniform(0, 2));
      }
      if (refusal == 0 && status == 200) {
        ++allowed_before;
        served.push_back("/books-bought?" + id);
      }
      if (refusal == 0 && status != 200) refusal = status;
    }
    const bool refused = refusal != 0;
    refused_streams += refused;
    deep += allowed_before > 8;
    std::vector<size_t> cuts = {0, bytes.size()};
    for (int n = uniform(0, 4); n > 0; --n) cuts.push_back(static_cast<size_t>(uniform(1, static_cast<int>(bytes.size()) - 1)));
    std::sort(cuts.begin(), cuts.end());
    std::string how;
    for (size_t i = 1; i < cuts.size(); ++i) how += std::to_string(cuts[i]) + " ";
    const std::string story = "stream " + std::to_string(stream) + " to " + server_ip + ", cut at " + how + "\n" + bytes;
    SCOPED_TRACE(story);
    PodClient c(client, server_ip, kPort);
    ASSERT_TRUE(c.connected());
    for (size_t i = 1; i < cuts.size(); ++i) {
      if (cuts[i] == cuts[i - 1]) continue;
      if (!c.send(bytes.substr(cuts[i - 1], cuts[i] - cuts[i - 1]))) break;  // ended by the refusal
      if (uniform(0, 1)) std::this_thread::sleep_for(std::chrono::milliseconds(uniform(1, 20)));
    }
    // A client reads up to the refusal (its answer says connection: close).
    const auto [statuses, ended] = c.answers(allowed_before + (refused ? 1 : 0));
    std::vector<int> want(allowed_before, 200);
    if (refused) want.push_back(refusal);
    EXPECT_EQ(statuses, want) << (ended ? "the connection ended early" : "") << "\nthe stream before: " << before
                              << "\nthe server's log, last lines:\n"
                              << app.output().substr(app.output().size() > 1500 ? app.output().size() - 1500 : 0);
    before = story;
  }
  // The server's log: the requests it read, in order (the log is written
  // as it reads; the last connection's reads are in by its answers).
  std::vector<std::string> read;
  const std::string out = app.output();
  for (size_t at = out.find("REQ GET "); at != std::string::npos; at = out.find("REQ GET ", at + 1))
    read.push_back(out.substr(at + 8, out.find(' ', at + 8) - at - 8));
  EXPECT_EQ(read, served) << out.substr(0, 4000);
  EXPECT_GT(refused_streams, 5);
  EXPECT_GT(deep, 2);
  // Some refusals came while answers were owed (answered after them).
  std::string metrics;
  long deferred = 0;
  EXPECT_TRUE(sampleComesTo("smik_http_requests_total{verdict=\"answer_deferred\"}",
                            [&](long v) { return (deferred = v) >= 3; }, &metrics))
      << metrics.substr(0, 4000);
  std::printf("40 streams, seed %u: %d refused (%ld answered after owed answers), %d with more than 8 "
              "served, %zu requests served\n", seed, refused_streams, deferred, deep, served.size());
}

// curl, as people run it, through the judge: one keep-alive connection
// across allowed and refused requests, bodies of both framings, a refusal
// of a head that asks `Expect: 100-continue`, HTTP/1.0, IPv6, and HTTP/2
// with prior knowledge (refused: not HTTP/1.x).
TEST_F(HttpRules, CurlIsServedAndRefusedRequestByRequest) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", ips(client)) +
                         serverPod(server, ips(server)));
  write("policy.yaml",
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n"
        "  name: the-routes\n  namespace: app\nspec:\n  matches:\n"
        "  - name: buy\n    pathRegex: /books-bought\n    methods: [GET]\n"
        "  - name: order\n    pathRegex: /orders/[0-9]+\n    methods: [POST]\n---\n" +
            trafficTarget("app", "bookstore", "app", "server",
                          "  - kind: HTTPRouteGroup\n    name: the-routes\n    matches: [buy, order]\n",
                          "app", "client"));
  startAgent();
  waitAttached(2);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
  // One line per URL: its status and how many connections curl opened for it.
  auto curl = [&](const std::vector<std::string>& args, const std::vector<std::string>& urls) {
    std::vector<std::string> argv = {"curl", "-sS", "--max-time", "5", "-w", "%{http_code} %{num_connects}\n"};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const auto& u : urls) {
      argv.push_back("-o");
      argv.push_back("/dev/null");
      argv.push_back(u);
    }
    return bed_->run(client, argv, 15000);
  };
  const std::string base = "http://" + server.ip() + ":" + std::to_string(kPort);
  {  // keep-alive: the refusal ends the connection (connection: close), the next request opens one
    auto r = curl({}, {base + "/books-bought?1", base + "/books-bought?2", base + "/admin/x",
                       base + "/books-bought?3"});
    EXPECT_TRUE(r.ok()) << r.output;
    EXPECT_EQ(r.output, "200 1\n200 0\n403 0\n200 1\n");
  }
  const std::string body(6000, 'b');  // several segments
  {  // Content-Length and chunked bodies; "Expect:" off, as this server never answers 100
    auto r = curl({"-H", "Expect:", "--data-binary", body}, {base + "/orders/7"});
    EXPECT_EQ(r.output, "200 1\n");
    r = curl({"-H", "Expect:", "-H", "Transfer-Encoding: chunked", "--data-binary", body}, {base + "/orders/8"});
    EXPECT_EQ(r.output, "200 1\n");
  }
  {  // refused at its head: curl never sends the body it waits to be asked for
    auto r = curl({"-H", "Expect: 100-continue", "--data-binary", body}, {base + "/orders/admin"});
    EXPECT_EQ(r.output, "403 1\n");
  }
  {  // this server answers HTTP/1.1 without "connection: close": curl keeps the connection
    auto r = curl({"--http1.0"}, {base + "/books-bought?10", base + "/admin/10"});
    EXPECT_EQ(r.output, "200 1\n403 0\n");
  }
  if (!server.ip6().empty()) {
    const std::string base6 = "http://[" + server.ip6() + "]:" + std::to_string(kPort);
    auto r = curl({"-g"}, {base6 + "/books-bought?6", base6 + "/admin/6"});
    EXPECT_EQ(r.output, "200 1\n403 0\n");
  }
  {  // HTTP/2 with prior knowledge: refused before any request reaches the server
    auto r = curl({"--http2-prior-knowledge"}, {base + "/books-bought?h2"});
    EXPECT_FALSE(r.ok()) << r.output;
  }
  const std::string out = app.output();
  for (const char* seen : {"REQ GET /books-bought?1 ", "REQ GET /books-bought?2 ", "REQ GET /books-bought?3 ",
                           "REQ POST /orders/7 6000 ", "REQ POST /orders/8 6000 ", "REQ GET /books-bought?10 "})
    EXPECT_NE(out.find(seen), std::string::npos) << seen << "\n" << out;
  if (!server.ip6().empty()) {
    EXPECT_NE(out.find("REQ GET /books-bought?6 "), std::string::npos) << out;
  }
  for (const char* never : {"/admin/", "/orders/admin", "?h2", "PRI"})
    EXPECT_EQ(out.find(never), std::string::npos) << never << "\n" << out;
  expectJudged("not_http1", 1);
}

// The judge's limits and what it does with a connection that is not HTTP/1.x
// are the agent's flags (the kernel's defaults otherwise: 100 header lines,
// such connections refused).
TEST_F(HttpRules, TheJudgesLimitsAndItsChoiceForOtherProtocolsAreFlags) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + serverPod(server));
  write("policy.yaml", bookstorePolicy());
  startAgent({"--http-max-headers", "3", "--http-non-http1", "allow-tcp"});
  waitAttached(2);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
  {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get("/books-bought", "A: 1\r\nB: 2\r\n").first, 200) << "Host and 2 more: 3 lines";
  }
  {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get("/books-bought", "A: 1\r\nB: 2\r\nC: 3\r\n").first, 431);
  }
  // A TLS ClientHello's first bytes, then more: passed whole, unjudged.
  const std::string hello =
      std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11) + std::string(160, 'z');
  {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.send(hello));
  }  // closed: the server logs what it read
  EXPECT_TRUE(eventually(
      [&] { return app.output().find(" read=" + std::to_string(hello.size()) + " ") != std::string::npos; },
      3000))
      << app.output();
  expectJudged("not_http1_passed", 1);
  expectJudged("head_too_large", 1);
}

// A match with headers (the spec's user-agent example, in the CRD's list
// form) and one in the map form the spec prose shows.
std::string headerPolicy() {
  return "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n"
         "  name: the-routes\n  namespace: app\nspec:\n  matches:\n"
         "  - name: android\n    pathRegex: /books\n    methods: [GET]\n"
         "    headers:\n    - user-agent: \".*Android.*\"\n"
         "  - name: staff\n    pathRegex: /admin\n    methods: [GET]\n"
         "    headers: {X-Role: admin, x-team: \"a|b\"}\n---\n" +
         trafficTarget("app", "bookstore", "app", "server",
                       "  - kind: HTTPRouteGroup\n    name: the-routes\n", "app", "client");
}

TEST_F(HttpRules, HeaderMatchesAreJudgedPerRequest) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  const std::string server_pod = serverPod(server);
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + server_pod);
  write("policy.yaml", headerPolicy());
  startAgent();
  waitAttached(2);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();

  const std::string android = "User-Agent: Mozilla/5.0 (Linux; Android 14)\r\n";
  {  // one connection per verdict that ends it
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get("/books/1", android).first, 200);
    EXPECT_EQ(c.get("/books/2", "user-AGENT: x Android y\r\n").first, 200);  // names in any case
    EXPECT_EQ(c.get("/admin", "x-role: admin\r\nX-Team: b\r\n").first, 200);
    EXPECT_EQ(c.get("/books/3", android, true).first, 200);  // a byte a segment
    EXPECT_EQ(c.get("/books/wrong", "User-Agent: curl/8\r\n").first, 403);
  }
  for (const auto& [path, headers] : std::vector<std::pair<std::string, std::string>>{
           {"/books/missing", ""},
           {"/admin/half", "x-role: admin\r\n"},  // every header of the match
           {"/admin/twice", "x-role: admin\r\nx-role: guest\r\nx-team: a\r\n"},
           {"/admin/bytewise", "x-role: admin\r\nx-team: c\r\n"}}) {
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.get(path, headers, path == "/admin/bytewise").first, 403) << path;
  }
  // The application read the granted requests, never a denied one.
  ASSERT_TRUE(eventually([&] {
    const std::string out = app.output();
    size_t ends = 0;
    for (size_t p = out.find("END"); p != std::string::npos; p = out.find("END", p + 1)) ++ends;
    return ends >= 5;
  }, 5000)) << app.output();
  for (const char* seen : {"REQ GET /books/1 ", "REQ GET /books/2 ", "REQ GET /admin ", "REQ GET /books/3 "})
    EXPECT_NE(app.output().find(seen), std::string::npos) << seen << app.output();
  for (const char* denied : {"/books/wrong", "/books/missing", "/admin/half", "/admin/twice", "/admin/bytewise"})
    EXPECT_EQ(app.output().find("REQ GET " + std::string(denied)), std::string::npos) << denied << app.output();
  const std::string metrics = httpGet(http_port_, "/metrics").second;
  EXPECT_NE(metrics.find("smik_http_requests_total{verdict=\"denied_policy\"} 5"), std::string::npos)
      << metrics.substr(0, 4000);
  EXPECT_NE(metrics.find("smik_http_requests_total{verdict=\"allowed\"} 4"), std::string::npos);

  // The running agent explains a request from the policy in force (gRPC),
  // and lists the grants its judge holds.
  const std::string sock = "/tmp/" + bed_->prefix() + "-default-agent.sock";
  auto smik = [&](std::vector<std::string> args) {
    args.insert(args.begin(), SMIK_CLI);
    args.insert(args.end(), {"--grpc", sock, "-o", "json"});
    const testbed::RunResult r = bed_->run(args, 10000);
    EXPECT_TRUE(r.ok()) << r.output;
    return r.ok() ? nlohmann::json::parse(r.output) : nlohmann::json();
  };
  const std::vector<std::string> edge = {"explain", "--from", "app/client", "--to", "app/server",
                                         "--port", std::to_string(kPort)};
  auto explain = [&](std::vector<std::string> request) {
    request.insert(request.begin(), edge.begin(), edge.end());
    return smik(request);
  };
  nlohmann::json granted =
      explain({"--method", "GET", "--path", "/admin", "--header", "X-Role=admin", "--header", "x-team=a"});
  EXPECT_EQ(granted["allowed"], true) << granted.dump(1);
  EXPECT_EQ(granted["trafficTarget"], "app/bookstore");
  EXPECT_EQ(granted["httpMatch"], "staff") << granted.dump(1);
  nlohmann::json wrong = explain({"--path", "/books/1", "--header", "User-Agent=curl/8"});
  EXPECT_EQ(wrong["allowed"], false) << wrong.dump(1);
  EXPECT_NE(wrong.dump().find("user-agent does not match regex"), std::string::npos) << wrong.dump(1);
  nlohmann::json post = explain({"--method", "POST", "--path", "/books/1", "--header",
                                 "user-agent=Android"});
  EXPECT_EQ(post["allowed"], false);
  EXPECT_NE(post.dump().find("method POST not granted"), std::string::npos) << post.dump(1);
  // Without a request: the connection's verdict, as before.
  EXPECT_EQ(smik(edge)["allowed"], true);

  nlohmann::json policy = smik({"policy"});
  // The two matches for the client, and every request from the host
  // (--host-traffic allow, the default, reaches the judge as a grant too).
  ASSERT_EQ(policy["http"].size(), 3u) << policy.dump(1);
  std::map<std::string, nlohmann::json> by_match;
  for (const auto& g : policy["http"]) by_match[g["source"].get<std::string>() + " " + g["match"].get<std::string>()] = g;
  EXPECT_EQ(by_match["host "]["methods"], "*") << policy["http"].dump(1);
  EXPECT_EQ(by_match["host "]["rule"], "host traffic");
  by_match["staff"] = by_match["app/client staff"];
  by_match["android"] = by_match["app/client android"];
  const nlohmann::json& staff = by_match["staff"];
  EXPECT_EQ(staff["source"], "app/client") << policy["http"].dump(1);
  EXPECT_EQ(staff["destination"], "app/server");
  EXPECT_EQ(staff["port"], kPort);
  EXPECT_EQ(staff["methods"], "GET");
  EXPECT_EQ(staff["pathRegex"], "/admin");
  EXPECT_EQ(staff["headers"], (nlohmann::json{{"x-role", "admin"}, {"x-team", "a|b"}}));
  EXPECT_EQ(staff["trafficTarget"], "app/bookstore");
  EXPECT_EQ(by_match["android"]["headers"], (nlohmann::json{{"user-agent", ".*Android.*"}}));
}

// An agent whose HTTPRouteGroups keep changing (a deployment pipeline that
// rewrites them every few minutes, for weeks) loads a new DFA each time:
// the kernel's DFA tables must get back the space of the ones no port or
// socket runs any more, or a day comes when no new policy applies. The
// map listing says how much of each table is taken: it must stay at what
// the DFAs in force need (the port's, and the one before it while the swap
// is under way), round after round, instead of growing with every change.
TEST_F(HttpRules, PolicyChangesGiveTheirDfaTableSpaceBack) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  const std::string server_pod = serverPod(server);
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + server_pod);
  const std::string padding(40, 'x');
  auto path = [&](int round, int match) {
    return "/r" + std::to_string(round) + "-m" + std::to_string(match) + "-" + padding;
  };
  auto policy = [&](int round) {
    std::string matches;
    for (int m = 0; m < 8; ++m)
      matches += "  - name: m" + std::to_string(m) + "\n    pathRegex: " + path(round, m) +
                 "\n    methods: [GET]\n";
    return "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n"
           "  name: the-routes\n  namespace: app\nspec:\n  matches:\n" + matches + "---\n" +
           trafficTarget("app", "bookstore", "app", "server",
                         "  - kind: HTTPRouteGroup\n    name: the-routes\n", "app", "client");
  };
  write("policy.yaml", policy(0));
  startAgent();
  waitAttached(2);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
  // One connection per check, after the agent says it applied: the server
  // keeps each denied connection open.
  auto status = [&](const std::string& p) {
    PodClient c(client, server.ip(), kPort);
    return c.connected() ? c.get(p).first : -1;
  };
  auto applies = [&] { return nlohmann::json::parse(this->status())["appliesTotal"].get<int>(); };
  auto taken = [&](const std::string& table) -> uint64_t {
    const nlohmann::json st = nlohmann::json::parse(this->status());
    for (const auto& m : st["maps"])
      if (m["name"] == table) return m["entries"].get<uint64_t>();
    ADD_FAILURE() << "no map " << table << " in /status";
    return 0;
  };
  ASSERT_TRUE(eventually([&] { return status(path(0, 7)) == 200; }, 5000)) << this->status();
  const uint64_t accepts_one = taken("smik_http_accepts");
  const uint64_t slots_one = taken("smik_http_trans");
  ASSERT_GT(accepts_one, 8u * padding.size()) << "one DFA's states";
  for (int round = 1; round <= 6; ++round) {
    const int before = applies();
    write("policy.yaml", policy(round));
    ASSERT_TRUE(eventually([&] { return applies() > before; }, 10000)) << "round " << round;
    EXPECT_EQ(status(path(round, 7)), 200) << "round " << round << "\n" << this->status();
    EXPECT_EQ(status(path(round - 1, 7)), 403) << "round " << round;
    // This round's DFA, and at most the one it replaced (given back at the
    // next change): never one more per round.
    EXPECT_LE(taken("smik_http_accepts"), 2 * accepts_one + accepts_one / 4) << "round " << round;
    EXPECT_LE(taken("smik_http_trans"), 2 * slots_one + slots_one / 4) << "round " << round;
    if (HasFailure()) break;
  }
  const nlohmann::json st = nlohmann::json::parse(this->status());
  EXPECT_EQ(st["applyErrorsTotal"], 0) << st.dump(1);
}

// A port's grants name up to 128 patterns (two 64-bit words in the kernel's
// masks): a group of 100 path matches and a header match past them is
// enforced whole, each pattern by its own bit. While a connection still runs
// a port's DFA, each of its bits keeps its meaning, so a change can bring in
// only as many new patterns as bits are free of it; one that needs more is
// refused by name, the policy in force stays, and it applies once that
// connection is gone (the agent retries).
TEST_F(HttpRules, APortHoldsAHundredAndTwentyEightPatternsAcrossASwap) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  const std::string server_pod = serverPod(server);
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + server_pod);
  auto path = [](int k) {
    std::string n = std::to_string(k);
    return "/p" + std::string(3 - n.size(), '0') + n + "$";
  };
  // Matches `first` .. `last` - 1, and the staff match (sorted last: its
  // bit is the port's highest, its header needs past the first word).
  auto policy = [&](int first, int last) {
    std::string matches;
    for (int k = first; k < last; ++k)
      matches += "  - name: m" + std::to_string(k) + "\n    pathRegex: \"" + path(k) +
                 "\"\n    methods: [GET]\n";
    matches += "  - name: staff\n    pathRegex: /zz-staff\n    methods: [GET]\n"
               "    headers: {x-role: admin}\n";
    return "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata:\n"
           "  name: the-routes\n  namespace: app\nspec:\n  matches:\n" + matches + "---\n" +
           trafficTarget("app", "bookstore", "app", "server",
                         "  - kind: HTTPRouteGroup\n    name: the-routes\n", "app", "client");
  };
  auto get = [&](int k) { return "/p" + path(k).substr(2, 3); };
  // 100 path matches + staff + the host-traffic grant: 102 patterns.
  write("policy.yaml", policy(0, 100));
  startAgent();
  waitAttached(2);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort), "--fork"});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();
  auto status = [&](const std::string& p, const std::string& headers = "") {
    PodClient c(client, server.ip(), kPort);
    return c.connected() ? c.get(p, headers).first : -1;
  };
  auto applies = [&] { return nlohmann::json::parse(this->status())["appliesTotal"].get<int>(); };
  ASSERT_TRUE(eventually([&] { return status(get(0)) == 200; }, 5000)) << this->status();
  for (int k : {1, 62, 63, 64, 65, 98, 99}) EXPECT_EQ(status(get(k)), 200) << get(k);
  EXPECT_EQ(status(get(100)), 403);
  EXPECT_EQ(status(get(7) + "x"), 403);  // "$": the whole path
  EXPECT_EQ(status("/zz-staff", "x-role: admin\r\n"), 200);
  EXPECT_EQ(status("/zz-staff", "x-role: guest\r\n"), 403);
  EXPECT_EQ(status("/zz-staff"), 403);

  // A connection that stays open on this DFA: its 102 bits keep their meanings.
  PodClient held(client, server.ip(), kPort);
  ASSERT_TRUE(held.connected());
  ASSERT_EQ(held.get(get(50)).first, 200);

  // 10 matches out, 26 in: 116 patterns, the 26 in the 26 bits still free.
  int before = applies();
  write("policy.yaml", policy(10, 126));
  ASSERT_TRUE(eventually([&] { return applies() > before; }, 10000));
  nlohmann::json st = nlohmann::json::parse(this->status());
  EXPECT_TRUE(st["errors"].empty()) << st["errors"].dump(1);
  EXPECT_EQ(status(get(125)), 200);
  EXPECT_EQ(status(get(100)), 200);
  EXPECT_EQ(status(get(5)), 403);
  EXPECT_EQ(status("/zz-staff", "x-role: admin\r\n"), 200);
  EXPECT_EQ(held.get(get(60)).first, 200) << "the open connection keeps its DFA and its grants";

  // One more new match needs a bit no running DFA gives another meaning:
  // there is none while `held` runs the first DFA. Refused by name; the
  // policy in force stays.
  before = applies();
  write("policy.yaml", policy(10, 127));
  ASSERT_TRUE(eventually([&] { return applies() > before; }, 10000));
  st = nlohmann::json::parse(this->status());
  EXPECT_NE(st["errors"].dump().find("no pattern bit is free"), std::string::npos) << st["errors"].dump(1);
  EXPECT_EQ(status(get(126)), 403);
  EXPECT_EQ(status(get(125)), 200);
  EXPECT_EQ(status(get(5)), 403);

  // Once that connection is gone, the agent's retry applies it.
  held = PodClient(client, server.ip(), kPort);  // closes the old one
  EXPECT_TRUE(eventually([&] { return status(get(126)) == 200; }, 15000)) << this->status();
  EXPECT_EQ(status(get(125)), 200);
  EXPECT_EQ(status("/zz-staff", "x-role: admin\r\n"), 200);
  EXPECT_EQ(status("/zz-staff"), 403);
}

// Requests on an HTTP-ruled port are what TrafficMetrics count there: N
// answered requests of which K were 5xx are success N-K and failure K, on
// the client's "to" edge, the server's "from" edge and the server's totals,
// however the responses were framed and whether or not they were pipelined.
TEST_F(HttpRules, TrafficMetricsCountRequestsAndTheir5xxExactly) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  const std::string server_pod = serverPod(server);
  write("pods.yaml", ns("app", true) + pod("app", "client", "client", client.ip()) + server_pod);
  write("policy.yaml", bookstorePolicy());
  startAgent({"--metrics-interval-ms", "200"});
  waitAttached(2);
  Proc app = bed_->spawn(server, {SMIK_HTTP_SERVER, "--serve", std::to_string(kPort)});
  ASSERT_TRUE(app.waitFor("ready\n", 5000)) << app.output();

  // The server answers /books-bought/m/<status>/<framing> as asked; every
  // body it sends is itself a "HTTP/1.1 500" status line.
  const std::vector<std::pair<std::string, int>> asked = {
      {"200/cl", 200}, {"500/split", 500}, {"200/chunked", 200}, {"503/chunked", 503},
      {"200/interim", 200}, {"204/empty", 204}, {"404/cl", 404}, {"502/cl", 502}};
  const auto start = std::chrono::steady_clock::now();
  int n = 0, k = 0;
  {
    PodClient c(client, server.ip(), kPort);  // keep-alive: one connection
    ASSERT_TRUE(c.connected());
    for (const auto& [how, status] : asked) {
      const std::string path = "/books-bought/m/" + how + "?" + std::to_string(++n);
      EXPECT_EQ(c.get(path).first, status) << path;
      if (status >= 500) ++k;
    }
  }
  {  // pipelined: three requests in one write, answered in order
    PodClient c(client, server.ip(), kPort);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.pipelined({"/books-bought/m/200/split?p1", "/books-bought/m/500/cl?p2",
                           "/books-bought/m/200/cl?p3"}),
              (std::vector<int>{200, 500, 200}));
    n += 3;
    k += 1;
  }
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::string want_ok = std::to_string(n - k), want_failed = std::to_string(k);

  auto get = [&](const std::string& path) {
    auto [code, body] = httpGet(http_port_, "/apis/metrics.smi-spec.io/v1alpha1" + path);
    return code == 200 ? nlohmann::json::parse(body) : nlohmann::json();
  };
  nlohmann::json to, from, total;
  ASSERT_TRUE(eventually(
      [&] {
        to = get("/namespaces/app/pods/client/edges");
        from = get("/namespaces/app/pods/server/edges");
        total = get("/namespaces/app/pods/server");
        return to["items"].size() == 1 && from["items"].size() == 1 &&
               metric(to["items"][0], "success_count") == want_ok &&
               metric(from["items"][0], "success_count") == want_ok &&
               metric(total, "success_count") == want_ok;
      },
      5000))
      << to.dump(1) << "\n" << from.dump(1) << "\n" << total.dump(1);
  for (const nlohmann::json* item : {&to["items"][0], &from["items"][0], &total}) {
    EXPECT_EQ(metric(*item, "success_count"), want_ok) << item->dump(1);
    EXPECT_EQ(metric(*item, "failure_count"), want_failed) << item->dump(1);
    const double p50 = quantity(metric(*item, "p50_response_latency")),
                 p99 = quantity(metric(*item, "p99_response_latency"));
    EXPECT_GT(p50, 0) << item->dump(1);  // the split answers take several ms
    EXPECT_LE(p50, p99);
    EXPECT_LT(p99, wall_ms) << item->dump(1);
  }
  EXPECT_EQ(to["items"][0]["edge"]["resource"]["name"], "server");
  EXPECT_EQ(from["items"][0]["edge"]["resource"]["name"], "client");

  // Prometheus: by workload pair, method and status class.
  const std::string prom = httpGet(http_port_, "/metrics").second;
  const std::string labels =
      "source_namespace=\"app\",source_workload=\"client\",destination_namespace=\"app\","
      "destination_workload=\"server\",method=\"GET\",code_class=";
  EXPECT_NE(prom.find("smik_http_responses_total{" + labels + "\"2xx\"} 6"), std::string::npos) << prom;
  EXPECT_NE(prom.find("smik_http_responses_total{" + labels + "\"4xx\"} 1"), std::string::npos) << prom;
  EXPECT_NE(prom.find("smik_http_responses_total{" + labels + "\"5xx\"} 4"), std::string::npos) << prom;
  EXPECT_NE(prom.find("smik_http_response_seconds_count{source_namespace=\"app\",source_workload="
                      "\"client\",destination_namespace=\"app\",destination_workload=\"server\"} 11"),
            std::string::npos)
      << prom;
}

}  // namespace
}  // namespace smik::e2e
