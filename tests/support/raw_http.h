// HTTP from raw sockets, for tests that play a hostile or unusual client: a
// chosen source address (a remote client, several clients on one machine),
// requests sent byte by byte or never finished, heads no library would send.
#pragma once

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>

#include "agent/base/unique_fd.h"
#include "tests/support/sockets.h"

namespace smik::testing {

// Takes the first whole response (status, body) off the front of what a
// keep-alive connection has received so far; nothing while it is
// incomplete. Interim 1xx responses are skipped; the body is framed by
// Content-Length or chunked (its data joined), 204 and 304 have none (the
// answer to HEAD is not told apart: not for HEAD requests).
inline std::optional<std::pair<int, std::string>> takeResponse(std::string& buf) {
  size_t from = 0;
  for (;;) {
    const size_t head_end = buf.find("\r\n\r\n", from);
    if (head_end == std::string::npos) return std::nullopt;
    std::string head = buf.substr(from, head_end - from);
    for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const int status = std::atoi(buf.c_str() + from + 9);
    size_t at = head_end + 4;
    if (status >= 100 && status < 200 && status != 101) {
      from = at;  // interim: the final response follows
      continue;
    }
    std::string body;
    const size_t te = head.find("transfer-encoding:");
    if (status == 204 || status == 304) {
    } else if (te != std::string::npos &&
               head.substr(te, head.find("\r\n", te) - te).find("chunked") != std::string::npos) {
      for (;;) {
        const size_t eol = buf.find("\r\n", at);
        if (eol == std::string::npos) return std::nullopt;
        const size_t size = std::stoul(buf.substr(at, eol - at), nullptr, 16);
        at = eol + 2;
        if (size == 0) {
          const size_t end = buf.find("\r\n\r\n", at - 2);
          if (end == std::string::npos) return std::nullopt;
          at = end + 4;
          break;
        }
        if (buf.size() < at + size + 2) return std::nullopt;
        body += buf.substr(at, size);
        at += size + 2;
      }
    } else {
      const size_t cl = head.find("content-length:");
      const size_t length = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15));
      if (buf.size() < at + length) return std::nullopt;
      body = buf.substr(at, length);
      at += length;
    }
    buf.erase(0, at);
    return std::make_pair(status, body);
  }
}

inline std::string lowerCase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Request {
  std::string method, target, body, upgrade;
};

// The server side of takeResponse: one complete request from the front of
// `buf` (its body framed by Content-Length or chunked): bytes used, 0 if
// incomplete. Throws (std::stoul) on a length that is no number.
inline size_t parseRequest(const std::string& buf, Request* r) {
  size_t start = 0;
  while (buf.compare(start, 2, "\r\n") == 0) start += 2;
  const size_t head_end = buf.find("\r\n\r\n", start);
  if (head_end == std::string::npos) return 0;
  const std::string head = buf.substr(start, head_end - start);
  const size_t line_end = head.find("\r\n");
  const std::string line = head.substr(0, line_end);
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  r->method = line.substr(0, sp1);
  r->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  r->body.clear();
  r->upgrade.clear();
  size_t content_length = 0;
  bool chunked = false;
  for (size_t p = line_end; p != std::string::npos && p < head.size();) {
    const size_t next = head.find("\r\n", p + 2);
    const std::string h = head.substr(p + 2, next == std::string::npos ? std::string::npos : next - p - 2);
    const size_t colon = h.find(':');
    const std::string name = lowerCase(h.substr(0, colon));
    const std::string value = colon == std::string::npos ? "" : h.substr(colon + 1);
    if (name == "content-length") content_length = std::stoul(value);
    if (name == "upgrade") r->upgrade = lowerCase(value);
    if (name == "transfer-encoding" && lowerCase(value).find("chunked") != std::string::npos)
      chunked = true;
    p = next;
  }
  size_t pos = head_end + 4;
  if (!chunked) {
    if (buf.size() < pos + content_length) return 0;
    r->body = buf.substr(pos, content_length);
    return pos + content_length;
  }
  for (;;) {
    const size_t eol = buf.find("\r\n", pos);
    if (eol == std::string::npos) return 0;
    const size_t size = std::stoul(buf.substr(pos, eol - pos), nullptr, 16);
    pos = eol + 2;
    if (size == 0) {
      if (buf.compare(pos, 2, "\r\n") == 0) return pos + 2;
      const size_t end = buf.find("\r\n\r\n", pos);
      return end == std::string::npos ? 0 : end + 4;
    }
    if (buf.size() < pos + size + 2) return 0;
    r->body += buf.substr(pos, size);
    pos += size + 2;
  }
}

inline bool sendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// What the server sends until it closes the connection or `within` passes.
inline std::string readUntilClosed(int fd, std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  std::string out;
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Whether the server closes the connection (end of stream or reset) within
// `within`, whatever it sends before.
inline bool closedBy(int fd, std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    if (::recv(fd, buf, sizeof buf, 0) <= 0) return true;
  }
}

// The status code of a response's first line; 0 for none.
inline int statusOf(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return 0;
  return std::atoi(response.substr(9, 3).c_str());
}

// One request on a new connection (closed after); the whole response, or
// what came of it within `within`.
inline std::string exchange(const std::string& source, const std::string& dest, int port,
                            const std::string& request,
                            std::chrono::milliseconds within = std::chrono::seconds(5)) {
  const UniqueFd fd = connectFrom(source, dest, port);
  if (!fd) return "";
  std::string out;
  if (sendAll(fd.get(), request)) out = readUntilClosed(fd.get(), within);
  return out;
}

inline int getStatus(const std::string& source, const std::string& dest, int port,
                     const std::string& path,
                     std::chrono::milliseconds within = std::chrono::seconds(5)) {
  return statusOf(exchange(source, dest, port,
                           "GET " + path + " HTTP/1.1\r\nHost: smik\r\nConnection: close\r\n\r\n",
                           within));
}

// An IPv4 address of this machine outside 127/8: a client connecting from
// it is not a loopback client, though it never leaves the machine.
inline std::optional<std::string> nonLoopbackIpv4() {
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return std::nullopt;
  std::optional<std::string> found;
  for (ifaddrs* i = all; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    const auto* a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if ((ntohl(a->sin_addr.s_addr) >> 24) == 127) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    found = buf;
  }
  freeifaddrs(all);
  return found;
}

}  // namespace smik::testing
