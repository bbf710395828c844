// Sockets for tests, each held by a UniqueFd: a free loopback port, a
// connection to it, one from a chosen source address. One copy for the
// unit and end-to-end tests (raw_http.h speaks HTTP over them).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <mutex>
#include <set>
#include <string>

#include "agent/base/unique_fd.h"

namespace smik::testing {

inline sockaddr_in loopbackAddr(int port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sin;
}

// A loopback port nobody holds now: a fixed formula can land on a port some
// connection of this machine holds as its ephemeral port. Never one this
// process was given before: the kernel may hand a port just released out
// again at once (CI saw two of a test's five ports alike). 0 if none.
inline int freePort() {
  static std::mutex mu;
  static std::set<int> given;
  const std::lock_guard<std::mutex> lock(mu);
  for (int attempt = 0; attempt < 64; ++attempt) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin = loopbackAddr(0);
    socklen_t len = sizeof sin;
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
        getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len) != 0)
      return 0;
    const int port = ntohs(sin.sin_port);
    if (given.insert(port).second) return port;
  }
  return 0;
}

// A TCP connection to 127.0.0.1:port whose reads give up after timeout_s
// (0: never); invalid if nothing accepts it.
inline UniqueFd connectLoopback(int port, int timeout_s = 0) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  if (timeout_s > 0) {
    timeval tv{timeout_s, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  sockaddr_in sin = loopbackAddr(port);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) return {};
  return fd;
}

// A connected TCP socket from source (port chosen by the kernel) to
// dest:port; invalid if it cannot connect.
inline UniqueFd connectFrom(const std::string& source, const std::string& dest, int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &a.sin_addr);
  sockaddr_in b{};
  b.sin_family = AF_INET;
  b.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, dest.c_str(), &b.sin_addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&b), sizeof b) != 0)
    return {};
  return fd;
}

}  // namespace smik::testing
