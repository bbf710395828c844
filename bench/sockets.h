// The small socket programs the data-path benchmarks run inside test-bed
// pods: a listener, a 64-byte echo server and its ping-pong client.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <utility>
#include <vector>

#include "agent/base/unique_fd.h"

namespace smik::bench {

// Ping-pong client on CPU 0, servers on CPU 1, when there are two: cross-CPU
// wakeups every time, instead of a run-to-run lottery between same-CPU
// (~15 µs here) and cross-CPU (~55 µs) round trips that otherwise dominates
// the spread.
inline bool canPin() { return sysconf(_SC_NPROCESSORS_ONLN) >= 2; }
inline void pinTo(int cpu) {
  if (!canPin()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

// A listening TCP socket on every address, port `port`; invalid on failure.
inline UniqueFd listenTcp(int port, int backlog) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM, 0));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
      listen(fd.get(), backlog) != 0) {
    std::perror("listen");
    return {};
  }
  std::printf("ready\n");  // the parent waits for this line
  std::fflush(stdout);
  return fd;
}

// Echoes 64-byte messages on one connection at a time, forever.
inline int echoServer(int port) {
  UniqueFd fd = listenTcp(port, 16);
  if (!fd) return 1;
  int one = 1;
  while (true) {
    UniqueFd c(accept(fd.get(), nullptr, nullptr));
    if (!c) continue;
    setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64];
    ssize_t r;
    while ((r = recv(c.get(), buf, sizeof buf, 0)) > 0) send(c.get(), buf, r, 0);
  }
}

// A TCP connection to ip:port with Nagle off (request/response peers);
// invalid on failure. `nonblocking`: for the busy-polling clients.
inline UniqueFd dialTcp(const char* ip, int port, bool nonblocking) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin.sin_addr);
  UniqueFd sock(socket(AF_INET, SOCK_STREAM, 0));
  int one = 1;
  setsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    std::perror("connect");
    return {};
  }
  if (nonblocking) fcntl(sock.get(), F_SETFL, fcntl(sock.get(), F_GETFL) | O_NONBLOCK);
  return sock;
}

// Prints "p50 p99" of the round trips (µs), the line the parent parses;
// with `seconds` (the whole run's) a third column, round trips per second.
inline void printLatencies(std::vector<double> rtt, double seconds = 0) {
  std::sort(rtt.begin(), rtt.end());
  const size_t n = rtt.size();
  if (seconds > 0)
    std::printf("%.3f %.3f %.1f\n", rtt[n / 2], rtt[n * 99 / 100], double(n) / seconds);
  else
    std::printf("%.3f %.3f\n", rtt[n / 2], rtt[n * 99 / 100]);
}

// One connection, n round trips of 64 bytes; prints "p50 p99" in µs. The
// client busy-polls a non-blocking socket, as latency-sensitive clients do:
// with blocking reads the p50 is the scheduler's wake-up latency, whose
// spread hides a 2% effect of the path being measured.
inline int pingpongClient(const char* ip, int port, int n) {
  UniqueFd sock = dialTcp(ip, port, true);
  if (!sock) return 1;
  const int fd = sock.get();
  char buf[64] = {};
  std::vector<double> rtt;
  rtt.reserve(n);
  for (int i = 0; i < n; i++) {
    auto t0 = std::chrono::steady_clock::now();
    if (send(fd, buf, sizeof buf, 0) != sizeof buf) return 1;  // 64 B always fit the buffer
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
      if (r > 0)
        got += r;
      else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        return 1;
    }
    rtt.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  printLatencies(std::move(rtt));
  return 0;
}

}  // namespace smik::bench
