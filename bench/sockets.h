// The small socket programs the data-path benchmarks run inside test-bed
// pods: a listener, a 64-byte echo server and its ping-pong client.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace smik::bench {

// A listening TCP socket on every address, port `port`; -1 on failure.
inline int listenTcp(int port, int backlog) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 || listen(fd, backlog) != 0) {
    std::perror("listen");
    close(fd);
    return -1;
  }
  std::printf("ready\n");  // the parent waits for this line
  std::fflush(stdout);
  return fd;
}

// Echoes 64-byte messages on one connection at a time, forever.
inline int echoServer(int port) {
  int fd = listenTcp(port, 16);
  if (fd < 0) return 1;
  int one = 1;
  while (true) {
    int c = accept(fd, nullptr, nullptr);
    if (c < 0) continue;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64];
    ssize_t r;
    while ((r = recv(c, buf, sizeof buf, 0)) > 0) send(c, buf, r, 0);
    close(c);
  }
}

// One connection, n round trips of 64 bytes; prints "p50 p99" in µs.
inline int pingpongClient(const char* ip, int port, int n) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    std::perror("connect");
    return 1;
  }
  char buf[64] = {};
  std::vector<double> rtt;
  rtt.reserve(n);
  for (int i = 0; i < n; i++) {
    auto t0 = std::chrono::steady_clock::now();
    if (send(fd, buf, sizeof buf, 0) != sizeof buf) return 1;
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
      if (r <= 0) return 1;
      got += r;
    }
    rtt.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(rtt.begin(), rtt.end());
  std::printf("%.3f %.3f\n", rtt[n / 2], rtt[n * 99 / 100]);
  return 0;
}

}  // namespace smik::bench
