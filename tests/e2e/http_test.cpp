// The agent's --http listener, bound as the DaemonSet binds it, against the
// clients a network may hold: remote ones asking for what only loopback
// clients get, and many idle or slow ones with a huge POST among them.
// Black box: the agent binary and raw sockets.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "tests/e2e/fixture.h"
#include "tests/support/raw_http.h"

namespace smik::e2e {
namespace {

using namespace std::chrono_literals;
using smik::testing::connectFrom;
using smik::testing::getStatus;
using smik::testing::sendAll;

long peakRssKiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);  // peak
  return 0;
}

class HttpListener : public E2E {};

TEST_F(HttpListener, RemoteClientsGetProbesAndMetricsOnly) {
  const std::optional<std::string> remote = smik::testing::nonLoopbackIpv4();
  if (!remote) GTEST_SKIP() << "no IPv4 address outside 127/8 to play a remote client from";
  http_host_ = "0.0.0.0";
  startAgent();
  const std::string smi = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/pods";
  for (const char* path : {"/healthz", "/readyz", "/metrics"})
    EXPECT_EQ(getStatus(*remote, *remote, http_port_, path), 200) << path;
  for (const std::string& path : {std::string("/status"), smi}) {
    EXPECT_EQ(getStatus(*remote, *remote, http_port_, path), 404) << path << " from " << *remote;
    EXPECT_EQ(getStatus("127.0.0.1", "127.0.0.1", http_port_, path), 200) << path;
  }
}

TEST_F(HttpListener, ProbesAnswerUnderIdleAndSlowClientsAndAHugePost) {
  startAgent();
  const pid_t agent = agent_->pid();
  const long rss_before = peakRssKiB(agent);
  std::vector<UniqueFd> held;
  // First the POST: a body of gigabytes, streamed as fast as it is taken.
  std::atomic<bool> done{false};
  std::atomic<size_t> sent{0};
  std::thread post([&] {
    const UniqueFd conn = connectFrom("127.0.0.4", "127.0.0.1", http_port_);
    const int fd = conn.get();
    if (fd < 0 || !sendAll(fd, "POST /status HTTP/1.1\r\nContent-Length: 8589934592\r\n\r\n"))
      return;
    const std::string chunk(1 << 16, 'x');
    while (!done && sent < (size_t{512} << 20) && sendAll(fd, chunk)) sent += chunk.size();
  });
  std::this_thread::sleep_for(200ms);
  // Then clients that connect and say nothing, or never finish their request,
  // from other addresses of this host.
  for (int i = 0; i < 300; ++i) held.push_back(connectFrom("127.0.0.2", "127.0.0.1", http_port_));
  for (int i = 0; i < 50; ++i) {
    UniqueFd fd = connectFrom("127.0.0.3", "127.0.0.1", http_port_);
    sendAll(fd.get(), "GET /metrics HTTP/1.1\r\nX-Slow: ");
    held.push_back(std::move(fd));
  }
  std::this_thread::sleep_for(500ms);
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(getStatus("127.0.0.1", "127.0.0.1", http_port_, "/healthz", 5s), 200) << i;
    EXPECT_EQ(getStatus("127.0.0.1", "127.0.0.1", http_port_, "/readyz", 5s), 200) << i;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "probe " << i;
  }
  done = true;
  post.join();
  held.clear();
  EXPECT_LT(peakRssKiB(agent) - rss_before, 64 * 1024)
      << "KiB more after " << (sent >> 20) << " MiB of body";
}

}  // namespace
}  // namespace smik::e2e
