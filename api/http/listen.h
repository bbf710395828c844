// The agent's HTTP listeners (--http, --secure-listen) face whatever can
// reach the node. cpp-httplib on its own buffers any request body, gives
// each connection a worker thread from a small pool for as long as the
// client trickles bytes, and so a large POST or a few slow connections take
// the agent's memory or every worker (and with them /healthz). Listener
// keeps httplib for parsing requests and writing responses and does the
// rest itself: one thread (epoll) holds every connection until its request
// head is complete, within a deadline and a size; only then does a worker
// answer it, and health/readiness have a worker of their own.
#pragma once

#include <httplib.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/base/host_port.h"
#include "agent/base/result.h"
#include "api/http/router.h"

namespace smik::api {

struct ListenLimits {
  // Connections open at once. At the limit a new connection displaces the
  // oldest one still waiting for its request (idle or slow); one client
  // address gets at most max_connections_per_client, the rest are refused.
  size_t max_connections = 512;
  size_t max_connections_per_client = 64;
  size_t workers = 4;  // answer requests other than probes
  // From accept (or the end of the previous request) to a complete request
  // line and headers, TLS handshake included.
  std::chrono::milliseconds head_timeout{10'000};
  // A kept-alive connection with no new request is closed after this.
  std::chrono::milliseconds idle_timeout{30'000};
  // Writing one whole response; a client that reads slower is dropped.
  std::chrono::milliseconds write_timeout{10'000};
  size_t max_head_bytes = 16 * 1024;  // request line and headers
  size_t max_requests_per_connection = 1000;
};

// The TLS context for each new connection: asked once per accept, so a
// new one (certificates reloaded) applies to every later connection.
using TlsContextSource = std::function<std::shared_ptr<SSL_CTX>()>;

// A listen address as Listener::start takes it: "host:port", "[v6]:port",
// ":port" (every address), port 0 (any free one), and "::1:9464" as the
// listeners always took it (the last colon ends the host).
Result<HostPort> parseListenAddress(std::string_view addr);

class Listener {
 public:
  explicit Listener(Router router, ListenLimits limits = {});
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // addr is "host:port" ("[::1]:9464"; port 0: any free one). With tls,
  // HTTPS. False, with *err, when it cannot listen.
  bool start(const std::string& addr, std::string* err, TlsContextSource tls = nullptr);
  void stop();
  int port() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// One request head (request line, headers, blank line) answered as a
// listener's worker answers it, from a client on loopback or not, with no
// socket: the whole response. For fuzzing the path from bytes to handler.
std::string answerHead(const Router& router, std::string_view head, bool local_client);

// cpp-httplib (Debian's build) listens with a backlog of 5; a burst of
// connections beyond it (kubelet probes, a Prometheus scrape and the
// aggregator at once) loses SYNs and costs each a 1 s retransmit. Linux
// takes a second listen() on the same socket as a new backlog. For servers
// still on httplib's own loop (the tests' fake API server).
// Call before bind_to_port(); then listenWide(*fd) after it.
inline void rememberListenSocket(httplib::Server& server, int* fd) {
  server.set_socket_options([fd](socket_t s) {
    httplib::default_socket_options(s);
    *fd = s;
  });
}

inline void listenWide(int fd) {
  if (fd >= 0) ::listen(fd, 1024);
}

}  // namespace smik::api
