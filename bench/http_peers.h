// The HTTP/1.1 peers of the HTTP benchmark, run inside test-bed pods: a
// keep-alive server answering every request with a small 200, its
// busy-polling client, a many-connection load, and a one-request probe that
// reports the status.
// Requests carry no body (the benchmark sends none): a request ends at its
// head's empty line.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "agent/base/unique_fd.h"
#include "bench/sockets.h"

namespace smik::bench {

// As a small API client writes one (curl sends these three headers).
inline std::string httpRequest(const std::string& method, const std::string& path) {
  return method + " " + path + " HTTP/1.1\r\nHost: server\r\nUser-Agent: smik-bench\r\nAccept: */*\r\n\r\n";
}

// Length of the response at the front of `buf` (head + Content-Length body),
// 0 while it is incomplete.
inline size_t responseLength(std::string_view buf) {
  const size_t head = buf.find("\r\n\r\n");
  if (head == std::string_view::npos) return 0;
  size_t body = 0;
  for (size_t line = buf.find("\r\n") + 2; line < head;) {
    size_t end = buf.find("\r\n", line);
    constexpr std::string_view kName = "content-length:";
    if (end - line > kName.size()) {
      bool is = true;
      for (size_t i = 0; i < kName.size() && is; i++)
        is = std::tolower(static_cast<unsigned char>(buf[line + i])) == kName[i];
      if (is) body = std::strtoul(std::string(buf.substr(line + kName.size(), end - line - kName.size())).c_str(), nullptr, 10);
    }
    line = end + 2;
  }
  return buf.size() >= head + 4 + body ? head + 4 + body : 0;
}

// "HTTP/1.1 403 ..." -> 403; 0 when it is no status line.
inline int httpStatus(std::string_view buf) {
  if (buf.size() < 12 || buf.substr(0, 5) != "HTTP/") return 0;
  return std::atoi(std::string(buf.substr(9, 3)).c_str());
}

// One connection's requests, answered in order, until the peer closes.
inline void serveHttpConnection(UniqueFd c) {
  static constexpr std::string_view kAnswer =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  std::string buf;
  char chunk[4096];
  while (true) {
    ssize_t r = recv(c.get(), chunk, sizeof chunk, 0);
    // The HTTP judge's verdict wakes the reader also when it redirected the
    // skb (a 403 on its way back): a blocking read then sees EAGAIN.
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (r <= 0) return;
    buf.append(chunk, r);
    for (size_t end; (end = buf.find("\r\n\r\n")) != std::string::npos;) {
      buf.erase(0, end + 4);
      if (send(c.get(), kAnswer.data(), kAnswer.size(), MSG_NOSIGNAL) != ssize_t(kAnswer.size())) return;
    }
  }
}

// Keep-alive HTTP/1.1 server on `port`, a thread per connection: a reverse
// proxy keeps idle upstream connections open beside the one in use.
inline int httpServer(int port) {
  UniqueFd fd = listenTcp(port, 64);
  if (!fd) return 1;
  const int one = 1;
  while (true) {
    UniqueFd c(accept(fd.get(), nullptr, nullptr));
    if (!c) continue;
    setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(serveHttpConnection, std::move(c)).detach();
  }
}

// Sends `request` on fd and reads its answer into *buf: whether it was one
// whole 200 (a benchmark of refusals would measure nothing). Busy-polls on a
// non-blocking socket, blocks on a blocking one.
inline bool roundTrip(int fd, const std::string& request, std::string* buf) {
  if (send(fd, request.data(), request.size(), 0) != ssize_t(request.size())) return false;
  buf->clear();
  char chunk[4096];
  size_t len = 0;
  while ((len = responseLength(*buf)) == 0) {
    ssize_t r = recv(fd, chunk, sizeof chunk, 0);
    if (r > 0)
      buf->append(chunk, r);
    else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return false;
  }
  return httpStatus(*buf) == 200 && len == buf->size();
}

// `warmup` requests, then n timed ones, on one keep-alive connection; every
// answer must be a 200. Prints "p50 p99 requests-per-second" (µs).
// Busy-polls, as pingpongClient.
inline int httpClient(const char* ip, int port, const std::string& request, int n, int warmup) {
  UniqueFd sock = dialTcp(ip, port, true);
  if (!sock) return 1;
  const int fd = sock.get();
  std::string buf;
  auto one = [&]() -> bool {
    if (roundTrip(fd, request, &buf)) return true;
    std::fprintf(stderr, "unexpected answer: %s\n", buf.c_str());
    return false;
  };
  for (int i = 0; i < warmup; i++)
    if (!one()) return 1;
  std::vector<double> rtt;
  rtt.reserve(n);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; i++) {
    auto t0 = std::chrono::steady_clock::now();
    if (!one()) return 1;
    rtt.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  printLatencies(std::move(rtt),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

// A busy server: `conns` keep-alive connections, a thread each with
// blocking reads (busy-polling threads would take turns on the client's CPU,
// not overlap), each sending n / conns requests one after another. The
// server's CPU then always has a request to serve and never idles between
// two. Every answer must be a 200. Prints requests per second.
inline int httpLoad(const char* ip, int port, const std::string& request, int conns, int n) {
  std::vector<UniqueFd> socks;
  for (int i = 0; i < conns; i++) {
    socks.push_back(dialTcp(ip, port, false));
    if (!socks.back()) return 1;
  }
  std::vector<int> failed(conns, 0);
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < conns; i++)
    threads.emplace_back([&, i] {
      std::string buf;
      for (int k = 0; k < n / conns && !failed[i]; k++)
        failed[i] = !roundTrip(socks[i].get(), request, &buf);
    });
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int f : failed)
    if (f) {
      std::fprintf(stderr, "a load connection failed or got an answer other than 200\n");
      return 1;
    }
  std::printf("%.0f\n", double(n / conns * conns) / secs);
  return 0;
}

// One request on a fresh connection; prints the answer's status (0: the
// connection ended without one).
inline int httpProbe(const char* ip, int port, const std::string& method, const std::string& path) {
  UniqueFd sock = dialTcp(ip, port, false);
  if (!sock) return 1;
  timeval tv{5, 0};  // a bound on waiting, never a measurement
  setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string req = httpRequest(method, path);
  if (send(sock.get(), req.data(), req.size(), 0) != ssize_t(req.size())) return 1;
  std::string buf;
  char chunk[4096];
  while (responseLength(buf) == 0) {
    ssize_t r = recv(sock.get(), chunk, sizeof chunk, 0);
    if (r <= 0) break;
    buf.append(chunk, r);
  }
  std::printf("%d\n", responseLength(buf) ? httpStatus(buf) : 0);
  return 0;
}

}  // namespace smik::bench
