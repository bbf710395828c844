// The agent's HTTP listeners under hostile clients: huge bodies, endless or
// oversized heads, many idle and slow connections, and remote clients
// asking for what only loopback clients get. Whatever they do, /healthz
// answers and memory stays bounded.
#include "api/http/listen.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/telemetry/store.h"
#include "api/http/http_server.h"
#include "api/http/router.h"
#include "tests/support/raw_http.h"

namespace smik::api {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using smik::testing::closedBy;
using smik::testing::connectFrom;
using smik::testing::exchange;
using smik::testing::getStatus;
using smik::testing::readUntilClosed;
using smik::testing::sendAll;
using smik::testing::statusOf;

// Sources for HttpServer: ready, an empty status and store.
HttpSources fakeSources(const telemetry::Store& store) {
  return {[] { return true; }, [] { return std::string(); }, [] { return AgentStatus{}; }, &store,
          "node-a"};
}

// A listener on 127.0.0.1 with the agent's own routes.
class Listen : public ::testing::Test {
 protected:
  void start(ListenLimits limits = {}, const std::string& addr = "127.0.0.1:0") {
    std::string err;
    ASSERT_TRUE(server_.start(addr, fakeSources(store_), &err, limits)) << err;
  }
  void TearDown() override { server_.stop(); }
  int port() const { return server_.port(); }
  int get(const std::string& path, const std::string& from = "127.0.0.1") {
    return getStatus(from, "127.0.0.1", port(), path);
  }

  telemetry::Store store_;
  HttpServer server_;
};

// Open sockets, closed when the test ends.
struct Sockets {
  std::vector<UniqueFd> fds;
  void add(UniqueFd fd) {
    if (fd) fds.push_back(std::move(fd));
  }
};

long peakRssKiB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);  // peak
  return 0;
}

TEST_F(Listen, ProbesAnswerWhileIdleAndSlowClientsHoldConnectionsAndAHugePostStreams) {
  start();
  Sockets held;
  // Slow clients on other addresses of this host (127/8 is all ours): a
  // client elsewhere, as kubelet's probes come from the node itself.
  for (int i = 0; i < 300; ++i) held.add(connectFrom("127.0.0.2", "127.0.0.1", port()));
  for (int i = 0; i < 50; ++i) {
    UniqueFd fd = connectFrom("127.0.0.3", "127.0.0.1", port());
    sendAll(fd.get(), "GET /metrics HTTP/1.1\r\nX-Slow: ");  // and never the rest
    held.add(std::move(fd));
  }
  // A few of the prober's own: under its per-client share, idle.
  for (int i = 0; i < 20; ++i) held.add(connectFrom("127.0.0.1", "127.0.0.1", port()));
  // A body of gigabytes, streamed for as long as the server takes it.
  const long rss_before = peakRssKiB();
  std::atomic<bool> done{false};
  std::atomic<size_t> sent{0};
  std::thread post([&] {
    const UniqueFd conn = connectFrom("127.0.0.4", "127.0.0.1", port());
    const int fd = conn.get();
    if (!sendAll(fd, "POST /healthz HTTP/1.1\r\nContent-Length: 4294967296\r\n\r\n")) return;
    const std::string chunk(1 << 16, 'x');
    while (!done && sendAll(fd, chunk)) sent += chunk.size();
  });
  std::this_thread::sleep_for(300ms);
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    EXPECT_EQ(get("/healthz"), 200);
    EXPECT_EQ(get("/readyz"), 200);
    EXPECT_LT(Clock::now() - t0, 5s) << "probe " << i;
  }
  EXPECT_EQ(get("/metrics"), 200) << "and a worker is free for other requests";
  done = true;
  post.join();
  EXPECT_LT(sent.load(), size_t{64} << 20) << "the body was refused, not read";
  EXPECT_LT(peakRssKiB() - rss_before, 64 * 1024) << "KiB";
}

TEST_F(Listen, RequestBodiesAreRefusedUnread) {
  start();
  for (const std::string head :
       {"POST /healthz HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "PUT /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n"}) {
    const std::string r = exchange("127.0.0.1", "127.0.0.1", port(), head, 2s);
    EXPECT_EQ(statusOf(r), head.rfind("GET", 0) == 0 ? 413 : 405) << head;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  }
  EXPECT_EQ(statusOf(exchange("127.0.0.1", "127.0.0.1", port(),
                              "DELETE /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")),
            405);
}

TEST_F(Listen, HeadsBeyondTheLimitAreRefused) {
  start();
  std::string many = "GET /healthz HTTP/1.1\r\n";
  while (many.size() < 24 * 1024) many += "X-Filler: " + std::string(100, 'a') + "\r\n";
  EXPECT_EQ(statusOf(exchange("127.0.0.1", "127.0.0.1", port(), many + "\r\n")), 431);
  // One long header line, no end in sight.
  EXPECT_EQ(statusOf(exchange("127.0.0.1", "127.0.0.1", port(),
                              "GET /healthz HTTP/1.1\r\nX: " + std::string(1 << 20, 'a'))),
            431);
}

TEST_F(Listen, AHeadTrickledSlowerThanItsDeadlineIsCut) {
  ListenLimits limits;
  limits.head_timeout = 400ms;
  start(limits);
  const UniqueFd conn = connectFrom("127.0.0.1", "127.0.0.1", port());
  const int fd = conn.get();
  ASSERT_GE(fd, 0);
  const auto t0 = Clock::now();
  std::string got;
  // One byte every 100 ms: each read is quick, the head never completes.
  for (char c : std::string("GET /healthz HTTP/1.1\r\nX-Slow: abcdefghijklmnopqrstuvwxyz")) {
    if (!sendAll(fd, std::string(1, c))) break;
    got += readUntilClosed(fd, 100ms);
    if (!got.empty()) break;
  }
  got += readUntilClosed(fd, 2s);
  EXPECT_EQ(statusOf(got), 408);
  EXPECT_LT(Clock::now() - t0, 2s);
}

TEST_F(Listen, IdleConnectionsAreClosedAfterTheirTimeout) {
  ListenLimits limits;
  limits.head_timeout = 300ms;
  limits.idle_timeout = 300ms;
  start(limits);
  const UniqueFd conn = connectFrom("127.0.0.1", "127.0.0.1", port());
  const int fd = conn.get();
  ASSERT_GE(fd, 0);
  const auto t0 = Clock::now();
  EXPECT_TRUE(closedBy(fd, 3s));
  EXPECT_LT(Clock::now() - t0, 2s);
}

TEST_F(Listen, OneClientGetsItsShareAndTheOldestWaiterMakesRoom) {
  ListenLimits limits;
  limits.max_connections_per_client = 5;
  limits.max_connections = 8;
  start(limits);
  Sockets held;
  for (int i = 0; i < 5; ++i) held.add(connectFrom("127.0.0.2", "127.0.0.1", port()));
  std::this_thread::sleep_for(100ms);
  // The sixth from that address is refused outright.
  EXPECT_EQ(getStatus("127.0.0.2", "127.0.0.1", port(), "/healthz"), 503);
  // Another client still gets in; at the total limit the oldest idle
  // connection is closed to make room.
  for (int i = 0; i < 3; ++i) held.add(connectFrom("127.0.0.3", "127.0.0.1", port()));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(get("/healthz"), 200);
  EXPECT_TRUE(closedBy(held.fds[0].get(), 1s)) << "the oldest was displaced";
}

TEST_F(Listen, KeepAliveAndPipelinedRequestsAnswerInOrder) {
  start();
  const UniqueFd conn = connectFrom("127.0.0.1", "127.0.0.1", port());
  const int fd = conn.get();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(sendAll(fd,
                      "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  const std::string r = readUntilClosed(fd, 3s);
  const size_t first = r.find("HTTP/1.1 200");
  const size_t second = r.find("HTTP/1.1 404", first);
  const size_t third = r.find("ready\n", second);
  EXPECT_TRUE(first != std::string::npos && second != std::string::npos &&
              third != std::string::npos)
      << r;
}

TEST_F(Listen, ProbesAnswerWhileEveryWorkerIsBusy) {
  // A handler that takes long (a peer fan-out waiting out its timeout) on
  // every worker: probes have a worker of their own.
  std::atomic<bool> release{false};
  Router router;
  router.add({"/slow", [&](const RoutedRequest&, httplib::Response& r) {
                while (!release) std::this_thread::sleep_for(5ms);
                r.set_content("done", "text/plain");
              }});
  router.add({"/healthz",
              [](const RoutedRequest&, httplib::Response& r) { r.set_content("ok", "text/plain"); },
              false, false, /*probe=*/true});
  ListenLimits limits;
  limits.workers = 2;
  Listener listener(std::move(router), limits);
  std::string err;
  ASSERT_TRUE(listener.start("127.0.0.1:0", &err)) << err;
  std::vector<std::thread> slow;
  for (int i = 0; i < 4; ++i)
    slow.emplace_back([&] { getStatus("127.0.0.2", "127.0.0.1", listener.port(), "/slow", 10s); });
  std::this_thread::sleep_for(200ms);
  const auto t0 = Clock::now();
  EXPECT_EQ(getStatus("127.0.0.1", "127.0.0.1", listener.port(), "/healthz"), 200);
  EXPECT_LT(Clock::now() - t0, 5s);
  release = true;
  for (auto& t : slow) t.join();
  listener.stop();
}

// A DaemonSet binds --http to 0.0.0.0: a client from another host gets the
// probes and /metrics; /status and the TrafficMetrics API name every pod
// and stay with loopback clients (and the authorized --secure-listen).
TEST_F(Listen, RemoteClientsGetProbesAndMetricsOnly) {
  const std::optional<std::string> remote = smik::testing::nonLoopbackIpv4();
  if (!remote) GTEST_SKIP() << "no IPv4 address outside 127/8 to play a remote client from";
  start({}, "0.0.0.0:0");
  const auto from = [&](const std::string& source, const std::string& path) {
    return getStatus(source, source == "127.0.0.1" ? "127.0.0.1" : *remote, port(), path);
  };
  const std::string smi = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/pods";
  for (const char* path : {"/healthz", "/readyz", "/metrics"}) {
    EXPECT_EQ(from(*remote, path), 200) << path;
    EXPECT_EQ(from("127.0.0.1", path), 200) << path;
  }
  for (const std::string& path : {std::string("/status"), smi}) {
    EXPECT_EQ(from(*remote, path), 404) << path;
    EXPECT_EQ(from("127.0.0.1", path), 200) << path;
  }
}

TEST(Router, CanonicalPathsAndWhatIsRefused) {
  std::string why;
  const auto canon = [&](const std::string& target) {
    return canonicalPath(target, &why).value_or("<refused: " + why + ">");
  };
  EXPECT_EQ(canon("/"), "/");
  EXPECT_EQ(canon("/healthz"), "/healthz");
  EXPECT_EQ(canon("/apis/x/"), "/apis/x");
  EXPECT_EQ(canon("/apis/x?t=5m&y=/../"), "/apis/x");
  EXPECT_EQ(canon("/a/b-c.d_e~f:g@h"), "/a/b-c.d_e~f:g@h");
  for (const char* bad : {"", "healthz", "//healthz", "/a//b", "/a/b//", "/./a", "/a/.", "/a/../b",
                          "/a/..", "/a%2Fb", "/%2e%2e/a", "/a%00", "/a\\..\\b", "/a b", "/a\tb",
                          "/\x7f", "/caf\xc3\xa9", "http://host/healthz", "*"}) {
    EXPECT_FALSE(canonicalPath(bad, &why)) << bad;
    EXPECT_FALSE(why.empty());
  }
}

TEST(Router, LoopbackAddresses) {
  for (const char* ip : {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"})
    EXPECT_TRUE(isLoopbackAddress(ip)) << ip;
  for (const char* ip : {"10.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "128.0.0.1", "", "x"})
    EXPECT_FALSE(isLoopbackAddress(ip)) << ip;
}

TEST(Router, ExactRoutesBeforePrefixesAndPrefixesOnSegmentBoundaries) {
  Router r;
  r.add({"/apis/a", nullptr, /*prefix=*/true});
  r.add({"/apis/a/b", nullptr, /*prefix=*/true});
  r.add({"/apis/a/exact", nullptr});
  EXPECT_EQ(r.find("/apis/a")->path, "/apis/a");
  EXPECT_EQ(r.find("/apis/a/x")->path, "/apis/a");
  EXPECT_EQ(r.find("/apis/a/b/c")->path, "/apis/a/b");
  EXPECT_EQ(r.find("/apis/a/exact")->path, "/apis/a/exact");
  EXPECT_EQ(r.find("/apis/ab"), nullptr);
  EXPECT_EQ(r.find("/apis"), nullptr);
}

}  // namespace
}  // namespace smik::api
