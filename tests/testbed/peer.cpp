// smik-testpeer: the servers and clients of the kernel tests. Reports what
// happened on the wire in one line per attempt so tests can assert on it.
//
//   smik-testpeer serve --tcp PORT[,PORT...] --udp PORT[,PORT...] [--http PORT[,PORT...]]
//                 [--id NAME]
//   smik-testpeer tcp IP PORT [--timeout-ms N] [--count N]
//   smik-testpeer udp IP PORT [--timeout-ms N] [--count N]
//   smik-testpeer hold IP PORT --seconds S [--interval-ms N]
//   smik-testpeer spray IP --count N [--cpu C]
//   smik-testpeer raw IP PORT --kind syn|rst|ack|icmp-error|fragment --count N
//                 [--listen-ms M]   (IPv4)
//
// serve: TCP and UDP servers on 0.0.0.0 and [::]; each TCP line and each datagram is
//   answered with "NAME\n" (with --id; lets a test see which backend
//   answered) or echoed. --http: HTTP/1.1 servers (keep-alive, pipelining,
//   Content-Length and chunked bodies): every request is answered 200 with "NAME METHOD
//   TARGET\n" and logged on stdout as "served METHOD TARGET", so that one
//   sees which requests reached the application. Prints "ready" once every
//   socket listens.
// tcp:   per attempt "ok <reply>" | "refused" | "unreachable" | "prohibited" |
//        "timeout" | "error <text>".
// udp:   the same.
// raw:   N crafted packets of one kind from the pod's own address (a new
//   source port each), as fast as they go, then "answers K": the TCP RSTs
//   from IP and the ICMP destination-unreachable messages quoting a packet
//   to IP that arrived within M ms (default 500).
// hold:  one connection, a round trip every 50 ms for S seconds (500 ms
//   limit each); "ok N" or "broken after N".
// Exit code: 0 = all attempts ok, 1 = some failed, 2 = usage/setup error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/base/unique_fd.h"
#include "tests/support/raw_http.h"

namespace {

using smik::UniqueFd;

using Clock = std::chrono::steady_clock;

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "smik-testpeer: %s\n"
               "usage: smik-testpeer serve --tcp P[,P..] --udp P[,P..] [--http P[,P..]] [--id NAME]\n"
               "       smik-testpeer tcp|udp IP PORT [--timeout-ms N] [--count N] [--src IP]\n"
               "                 [--show-peer 1] [--unconnected 1] [--one-socket 1] (udp)\n"
               "       smik-testpeer hold IP PORT --seconds S\n"
               "       smik-testpeer spray IP --count N [--cpu C]\n"
               "       smik-testpeer raw IP PORT --kind syn|rst|ack|icmp-error|fragment --count N\n"
               "                 [--listen-ms M]\n"
               "       (udp: --size N sends N bytes; serve: --echo 1 answers with the datagram)\n",
               why.c_str());
  std::exit(2);
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "smik-testpeer: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(2);
}

std::vector<int> parsePorts(const std::string& list) {
  std::vector<int> ports;
  std::istringstream ss(list);
  std::string p;
  while (std::getline(ss, p, ',')) {
    int v = std::atoi(p.c_str());
    if (v <= 0 || v > 65535 || p.find_first_not_of("0123456789") != std::string::npos) usage("bad port '" + p + "'");
    ports.push_back(v);
  }
  return ports;
}

int msLeft(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms > 0 ? static_cast<int>(ms) : 0;
}

// ------------------------------------------------------------------ serve

UniqueFd listenOn(int type, int port) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) die("socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    die("bind port " + std::to_string(port));
  if (type == SOCK_STREAM && ::listen(fd.get(), 128) != 0) die("listen");
  return fd;
}

// The same port on IPv6 (::, IPv6 only: IPv4 clients keep meeting a plain
// AF_INET socket); invalid where the netns has no IPv6.
UniqueFd listenOn6(int type, int port) {
  UniqueFd fd(::socket(AF_INET6, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(static_cast<uint16_t>(port));
  a.sin6_addr = in6addr_any;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (errno != EADDRNOTAVAIL && errno != EAFNOSUPPORT) die("bind [::] port " + std::to_string(port));
    return {};
  }
  if (type == SOCK_STREAM && ::listen(fd.get(), 128) != 0) die("listen");
  return fd;
}

// --echo 1: a UDP server answers with the datagram itself (large ones come
// back fragmented), not with its id.
bool g_echo = false;

// The HTTP requests complete in `b` (a connection's bytes so far), each
// answered on fd and logged; what remains of an unfinished one stays in b.
// False when the bytes are no HTTP/1.1 this server follows, or more than a
// request it takes (a MiB of body, 64 KiB of head) is waiting (close).
bool serveHttp(int fd, std::string& b, const std::string& id) {
  for (;;) {
    smik::testing::Request r;
    size_t used = 0;
    try {
      used = smik::testing::parseRequest(b, &r);
    } catch (const std::exception&) {
      return false;
    }
    if (used == 0) return b.size() <= (1u << 20) + 65536;
    b.erase(0, used);
    const std::string request = r.method + " " + r.target;
    const std::string text = (id.empty() ? "" : id + " ") + request + "\n";
    const std::string reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                              std::to_string(text.size()) + "\r\n\r\n" + text;
    ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);  // small: fits the socket buffer
    std::printf("served %s\n", request.c_str());
    std::fflush(stdout);
  }
}

int serve(const std::vector<int>& tcp, const std::vector<int>& udp, const std::vector<int>& http,
          const std::string& id) {
  enum Kind { kListen, kUdp, kConn, kHttpListen, kHttpConn };
  // Three parallel vectors, one entry per socket: what poll() reads, the
  // socket's owner, its kind.
  std::vector<pollfd> fds;
  std::vector<UniqueFd> held;
  std::vector<Kind> kinds;
  std::map<int, std::string> bufs;  // per TCP connection: unfinished line
  auto add = [&](UniqueFd fd, Kind kind) {
    if (!fd) return;
    fds.push_back({fd.get(), POLLIN, 0});
    held.push_back(std::move(fd));
    kinds.push_back(kind);
  };
  for (int p : tcp) { add(listenOn(SOCK_STREAM, p), kListen); add(listenOn6(SOCK_STREAM, p), kListen); }
  for (int p : udp) { add(listenOn(SOCK_DGRAM, p), kUdp); add(listenOn6(SOCK_DGRAM, p), kUdp); }
  for (int p : http) {
    add(listenOn(SOCK_STREAM, p), kHttpListen);
    add(listenOn6(SOCK_STREAM, p), kHttpListen);
  }
  std::printf("ready\n");
  std::fflush(stdout);

  auto answer = [&](const std::string& msg) { return id.empty() ? msg : id + "\n"; };
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    size_t n = fds.size();  // new connections are polled from the next round
    std::vector<size_t> closed;
    for (size_t i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      int fd = fds[i].fd;
      if (kinds[i] == kListen || kinds[i] == kHttpListen) {
        UniqueFd c(::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (c) {
          bufs[c.get()].clear();
          add(std::move(c), kinds[i] == kListen ? kConn : kHttpConn);
        }
      } else if (kinds[i] == kUdp) {
        char buf[65536];
        sockaddr_storage from{};
        socklen_t len = sizeof from;
        ssize_t r = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (r >= 0) {
          std::string msg(buf, static_cast<size_t>(r));
          std::string reply = g_echo ? msg : answer(msg);
          ::sendto(fd, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
        }
      } else {
        char buf[4096];
        ssize_t r = ::recv(fd, buf, sizeof buf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) { closed.push_back(i); continue; }
        std::string& b = bufs[fd];
        b.append(buf, static_cast<size_t>(r));
        if (kinds[i] == kHttpConn) {
          if (!serveHttp(fd, b, id)) closed.push_back(i);
          continue;
        }
        for (size_t nl; (nl = b.find('\n')) != std::string::npos; b.erase(0, nl + 1)) {
          std::string reply = answer(b.substr(0, nl + 1));
          ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);  // small: fits the socket buffer
        }
        if (b.size() > 65536) b.clear();  // no newline in sight: drop, keep serving
      }
    }
    for (auto it = closed.rbegin(); it != closed.rend(); ++it) {
      bufs.erase(fds[*it].fd);
      fds.erase(fds.begin() + static_cast<long>(*it));
      held.erase(held.begin() + static_cast<long>(*it));
      kinds.erase(kinds.begin() + static_cast<long>(*it));
    }
  }
}

// ------------------------------------------------------------------ clients

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = 0;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
};

// Strict numeric parsing (inet_pton): "1.2.3" must be an error, not the
// inet_aton reading 1.2.0.3, which would send traffic off the machine.
Addr parseAddr(const std::string& ip, const std::string& port) {
  int p = std::atoi(port.c_str());
  if (p <= 0 || p > 65535 || port.find_first_not_of("0123456789") != std::string::npos)
    usage("bad port '" + port + "'");
  Addr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (::inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = a.family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(p));
    a.len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = a.family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(p));
    a.len = sizeof *v6;
  } else {
    usage("bad IP address '" + ip + "'");
  }
  return a;
}

// Outcome of one step: empty = success, else the line to print.
std::string errnoLine(int err) {
  if (err == ECONNREFUSED) return "refused";
  if (err == ETIMEDOUT) return "timeout";
  // ICMP administratively prohibited (smik's --deny-response reject): IPv4's
  // code 13 reads as EHOSTUNREACH, ICMPv6's code 1 as EACCES
  if (err == EHOSTUNREACH) return "unreachable";
  if (err == EACCES) return "prohibited";
  return std::string("error ") + std::strerror(err);
}

// --src: send from this (IPv4) address, e.g. one the pod does not own, to
// test anti-spoofing. A foreign source needs IP_TRANSPARENT (CAP_NET_ADMIN):
// FREEBIND alone still fails the output route lookup.
std::string g_src;

std::string bindSource(int fd) {
  if (g_src.empty()) return "";
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  if (::inet_pton(AF_INET, g_src.c_str(), &sin.sin_addr) != 1) usage("bad --src " + g_src);
  int one = 1;
  ::setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) return errnoLine(errno);
  return "";
}

// Non-blocking connect with a timeout; on failure fd is invalid and the
// result is the line to print.
std::string connectTcp(const Addr& a, int timeout_ms, UniqueFd& fd) {
  fd.reset(::socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return errnoLine(errno);
  if (std::string e = bindSource(fd.get()); !e.empty()) {
    fd.reset();
    return e;
  }
  std::string res;
  if (::connect(fd.get(), a.sa(), a.len) != 0) {
    if (errno != EINPROGRESS) {
      res = errnoLine(errno);
    } else {
      pollfd p{fd.get(), POLLOUT, 0};
      int r;
      while ((r = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {}
      if (r == 0) {
        res = "timeout";
      } else {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) res = errnoLine(err);
      }
    }
  }
  if (!res.empty()) fd.reset();
  return res;
}

// Reads one line (without '\n') within timeout_ms.
std::string readLine(int fd, int timeout_ms, std::string& line) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  line.clear();
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, msLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return "timeout";
    char c[512];
    ssize_t n = ::recv(fd, c, sizeof c, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return errnoLine(errno);
    if (n == 0) return "error connection closed";
    line.append(c, static_cast<size_t>(n));
    if (size_t nl = line.find('\n'); nl != std::string::npos) {
      line.resize(nl);
      return "";
    }
  }
}

std::string sendAll(int fd, const std::string& msg) {
  if (::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
    return errnoLine(errno);
  return "";
}

// --show-peer: append " peer=IP:PORT", the address the socket reports for its
// peer (getpeername, or recvfrom's source): with a Service, what the app sees.
bool g_show_peer = false;
// --unconnected (udp): sendto/recvfrom on an unconnected socket (sendmsg and
// recvmsg hooks) instead of connect/send/recv (the connect hook).
bool g_unconnected = false;
// --one-socket (udp): every attempt uses the same socket.
bool g_one_socket = false;

std::string addrText(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    port = ntohs(v4->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    port = ntohs(v6->sin6_port);
  }
  return std::string(buf) + ":" + std::to_string(port);
}

std::string peerOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return addrText(ss);
}

// One connection, one line there and back; the connection is closed when
// it returns, before its line is printed.
std::string tcpAttempt(const Addr& a, int timeout_ms, std::string& line, std::string& peer) {
  UniqueFd fd;
  std::string res = connectTcp(a, timeout_ms, fd);
  if (res.empty() && g_show_peer) peer = " peer=" + peerOf(fd.get());
  if (res.empty()) res = sendAll(fd.get(), "hi\n");
  if (res.empty()) res = readLine(fd.get(), timeout_ms, line);
  return res;
}

int tcpClient(const Addr& a, int timeout_ms, int count) {
  bool allOk = true;
  for (int i = 0; i < count; ++i) {
    std::string line, peer, res = tcpAttempt(a, timeout_ms, line, peer);
    allOk = allOk && res.empty();
    std::printf("%s\n", res.empty() ? ("ok " + line + peer).c_str() : res.c_str());
    std::fflush(stdout);
  }
  return allOk ? 0 : 1;
}

// One datagram out, one back: "" and the reply (and its source) on success.
// --size: bytes per datagram (past the MTU, the kernel sends fragments).
size_t g_size = 3;

std::string udpExchange(int fd, const Addr& a, int timeout_ms, std::string& reply,
                        std::string& peer) {
  std::string msg(g_size > 1 ? g_size - 1 : 0, 'x');
  msg = (g_size >= 3 ? "hi" + msg.substr(2) : msg) + "\n";
  ssize_t sent = g_unconnected ? ::sendto(fd, msg.data(), msg.size(), 0, a.sa(), a.len)
                               : ::send(fd, msg.data(), msg.size(), 0);
  if (sent < 0) return errnoLine(errno);
  pollfd p{fd, POLLIN, 0};
  int r;
  while ((r = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {}
  if (r == 0) return "timeout";
  char buf[65536];
  sockaddr_storage from{};
  socklen_t len = sizeof from;
  ssize_t n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
  if (n < 0) return errnoLine(errno);
  reply.assign(buf, static_cast<size_t>(n));
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  if (g_echo && reply.size() + 1 != msg.size()) return "error short echo " + std::to_string(n);
  if (g_echo) reply = std::to_string(n) + "B";
  if (g_show_peer) peer = " peer=" + (g_unconnected ? addrText(from) : peerOf(fd));
  return "";
}

int udpClient(const Addr& a, int timeout_ms, int count) {
  bool allOk = true;
  UniqueFd fd;
  for (int i = 0; i < count; ++i) {
    std::string res, reply, peer;
    if (!fd) {
      fd.reset(::socket(a.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      // connect() so an ICMP port-unreachable is reported as ECONNREFUSED.
      if (!fd || (!g_unconnected && ::connect(fd.get(), a.sa(), a.len) != 0)) res = errnoLine(errno);
    }
    if (res.empty()) res = udpExchange(fd.get(), a, timeout_ms, reply, peer);
    if (!g_one_socket) fd.reset();  // a new socket (a new source port) per attempt
    allOk = allOk && res.empty();
    std::printf("%s\n", res.empty() ? ("ok " + reply + peer).c_str() : res.c_str());
    std::fflush(stdout);
  }
  return allOk ? 0 : 1;
}

// Datagrams to count distinct (source port, destination port) pairs: each
// opens a flow of its own. 60000 destination ports per socket.
int spray(const std::string& ip, long count, int cpu) {
  if (cpu >= 0) {  // per-CPU tables fill per CPU: spray from the one asked for
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
  }
  long sent = 0;
  while (sent < count) {
    Addr a = parseAddr(ip, "1");
    UniqueFd fd(::socket(a.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) die("socket");
    for (int port = 1; port <= 60000 && sent < count; port++, sent++) {
      Addr to = parseAddr(ip, std::to_string(port));
      ::sendto(fd.get(), "x", 1, 0, to.sa(), to.len);  // a full queue drops it: counted anyway
    }
  }
  std::printf("sent %ld\n", sent);
  return 0;
}

// --interval-ms: pause between round trips (an idle connection in between).
int g_interval_ms = 50;

// Round trips on one connection until seconds pass or one fails (res says
// why); the connection is closed when it returns.
long roundTrips(const Addr& a, double seconds, std::string& res) {
  constexpr int kLimitMs = 500;
  auto end = Clock::now() + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
  UniqueFd fd;
  long n = 0;
  res = connectTcp(a, kLimitMs, fd);
  while (res.empty() && Clock::now() < end) {
    std::string line;
    res = sendAll(fd.get(), "ping " + std::to_string(n) + "\n");
    if (res.empty()) res = readLine(fd.get(), kLimitMs, line);
    if (res.empty()) {
      ++n;
      std::this_thread::sleep_for(std::chrono::milliseconds(g_interval_ms));
    }
  }
  return n;
}

int hold(const Addr& a, double seconds) {
  std::string res;
  long n = roundTrips(a, seconds, res);
  if (res.empty()) {
    std::printf("ok %ld\n", n);
    return 0;
  }
  std::printf("broken after %ld\n", n);
  std::fprintf(stderr, "smik-testpeer hold: %s\n", res.c_str());
  return 1;
}

}  // namespace

uint16_t inetChecksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

void put16(uint8_t* p, uint16_t v) {
  p[0] = v >> 8;
  p[1] = v & 0xff;
}

// One crafted IPv4 packet from src to dst:port (the IP header included).
std::vector<uint8_t> rawPacket(const std::string& kind, in_addr src, in_addr dst, uint16_t sport,
                               uint16_t port) {
  std::vector<uint8_t> b(20, 0);
  b[0] = 0x45;
  b[8] = 64;
  put16(&b[4], sport);  // IP id
  std::memcpy(&b[12], &src, 4);
  std::memcpy(&b[16], &dst, 4);
  if (kind == "icmp-error") {
    // port unreachable, quoting a made-up datagram from dst to src
    b[9] = 1;
    std::vector<uint8_t> icmp(8 + 28, 0);
    icmp[0] = 3;
    icmp[1] = 3;
    icmp[8] = 0x45;
    put16(&icmp[8 + 2], 28);
    icmp[8 + 8] = 64;
    icmp[8 + 9] = 17;
    std::memcpy(&icmp[8 + 12], &dst, 4);
    std::memcpy(&icmp[8 + 16], &src, 4);
    put16(&icmp[28], port);
    put16(&icmp[30], sport);
    put16(&icmp[2], inetChecksum(icmp.data(), icmp.size()));
    b.insert(b.end(), icmp.begin(), icmp.end());
  } else if (kind == "fragment") {
    b[9] = 17;
    put16(&b[6], 0x0000 | 3);  // offset 24 bytes, the last fragment: no UDP header
    b.resize(20 + 16, 0xab);
  } else {
    b[9] = 6;
    std::vector<uint8_t> tcp(20, 0);
    put16(&tcp[0], sport);
    put16(&tcp[2], port);
    put16(&tcp[4], 0x1234);
    tcp[12] = 5 << 4;
    tcp[13] = kind == "syn" ? 0x02 : kind == "rst" ? 0x04 : 0x10;
    put16(&tcp[14], 1024);
    // the pseudo-header, then the segment
    std::vector<uint8_t> ps(12 + 20, 0);
    std::memcpy(&ps[0], &src, 4);
    std::memcpy(&ps[4], &dst, 4);
    ps[9] = 6;
    put16(&ps[10], 20);
    std::memcpy(&ps[12], tcp.data(), 20);
    put16(&tcp[16], inetChecksum(ps.data(), ps.size()));
    b.insert(b.end(), tcp.begin(), tcp.end());
  }
  put16(&b[2], static_cast<uint16_t>(b.size()));
  put16(&b[10], inetChecksum(b.data(), 20));
  return b;
}

int raw(const std::string& ip, int port, const std::string& kind, long count, int listen_ms) {
  if (kind != "syn" && kind != "rst" && kind != "ack" && kind != "icmp-error" && kind != "fragment")
    usage("bad --kind " + kind);
  in_addr dst{};
  if (inet_pton(AF_INET, ip.c_str(), &dst) != 1) usage("raw is IPv4 only: " + ip);
  // The pod's own address towards ip: what its kernel would send from.
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = dst;
  to.sin_port = htons(static_cast<uint16_t>(port));
  sockaddr_in me{};
  socklen_t len = sizeof me;
  {
    UniqueFd probe(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!probe || ::connect(probe.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 ||
        getsockname(probe.get(), reinterpret_cast<sockaddr*>(&me), &len) != 0)
      die("source address");
  }
  UniqueFd icmp_fd(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
  UniqueFd tcp_fd(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP));
  UniqueFd out_fd(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!icmp_fd || !tcp_fd || !out_fd) die("raw socket");
  const int icmp = icmp_fd.get(), tcp = tcp_fd.get(), out = out_fd.get();
  for (long i = 0; i < count; i++) {
    auto pkt = rawPacket(kind, me.sin_addr, dst, static_cast<uint16_t>(20000 + i % 40000), port);
    if (::sendto(out, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
      die("sendto");
  }
  long answers = 0;
  auto deadline = Clock::now() + std::chrono::milliseconds(listen_ms);
  uint8_t buf[2048];
  for (int left; (left = msLeft(deadline)) > 0;) {
    pollfd p[2] = {{icmp, POLLIN, 0}, {tcp, POLLIN, 0}};
    if (::poll(p, 2, left) <= 0) continue;
    for (const pollfd& ready : p) {
      if (!(ready.revents & POLLIN)) continue;
      ssize_t n = ::recv(ready.fd, buf, sizeof buf, 0);
      if (n < 20) continue;
      size_t ihl = (buf[0] & 0xf) * 4;
      if (ready.fd == icmp) {
        // type 3 (unreachable) quoting a packet of ours to ip
        if (n >= static_cast<ssize_t>(ihl + 8 + 20) && buf[ihl] == 3 &&
            std::memcmp(&buf[ihl + 8 + 16], &dst, 4) == 0)
          answers++;
      } else if (n >= static_cast<ssize_t>(ihl + 20) && std::memcmp(&buf[12], &dst, 4) == 0 &&
                 (buf[ihl + 13] & 0x04)) {
        answers++;  // a RST from ip
      }
    }
  }
  std::printf("answers %ld\n", answers);
  return 0;
}

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);  // a peer's reset must be reported, not kill us
  if (argc < 2) usage("missing mode");
  std::string mode = argv[1];
  std::vector<std::string> pos;
  std::map<std::string, std::string> opt;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      if (i + 1 >= argc) usage("missing value for " + a);
      opt[a] = argv[++i];
    } else {
      pos.push_back(a);
    }
  }
  auto get = [&](const std::string& k, const std::string& def) {
    auto it = opt.find(k);
    return it == opt.end() ? def : it->second;
  };

  if (mode == "serve") {
    if (!pos.empty()) usage("serve takes no positional arguments");
    std::vector<int> tcp, udp;
    if (opt.count("--tcp")) tcp = parsePorts(opt["--tcp"]);
    if (opt.count("--udp")) udp = parsePorts(opt["--udp"]);
    std::vector<int> http;
    if (opt.count("--http")) http = parsePorts(opt["--http"]);
    if (tcp.empty() && udp.empty() && http.empty()) usage("serve needs --tcp, --udp and/or --http");
    g_echo = get("--echo", "0") == "1";
    return serve(tcp, udp, http, get("--id", ""));
  }
  if (mode == "spray") {
    if (pos.size() != 1 || !opt.count("--count")) usage("spray needs IP --count N");
    return spray(pos[0], std::atol(opt["--count"].c_str()), std::atoi(get("--cpu", "-1").c_str()));
  }
  if (mode == "raw") {
    if (pos.size() != 2 || !opt.count("--count") || !opt.count("--kind"))
      usage("raw needs IP PORT --kind K --count N");
    return raw(pos[0], std::atoi(pos[1].c_str()), opt["--kind"], std::atol(opt["--count"].c_str()),
               std::atoi(get("--listen-ms", "500").c_str()));
  }
  if (mode != "tcp" && mode != "udp" && mode != "hold") usage("unknown mode " + mode);
  if (pos.size() != 2) usage(mode + " needs IP PORT");
  Addr a = parseAddr(pos[0], pos[1]);
  g_src = get("--src", "");
  g_show_peer = opt.count("--show-peer") && opt["--show-peer"] == "1";
  g_unconnected = opt.count("--unconnected") && opt["--unconnected"] == "1";
  g_one_socket = opt.count("--one-socket") && opt["--one-socket"] == "1";
  g_echo = get("--echo", "0") == "1";
  g_size = static_cast<size_t>(std::atol(get("--size", "3").c_str()));
  if (g_size < 1 || g_size > 65000) usage("bad --size");
  int rc;
  if (mode == "hold") {
    if (!opt.count("--seconds")) usage("hold needs --seconds");
    g_interval_ms = std::atoi(get("--interval-ms", "50").c_str());
    rc = hold(a, std::atof(opt["--seconds"].c_str()));
  } else {
    int timeout = std::atoi(get("--timeout-ms", "300").c_str());
    int count = std::atoi(get("--count", "1").c_str());
    if (timeout <= 0 || count <= 0) usage("bad --timeout-ms or --count");
    rc = mode == "tcp" ? tcpClient(a, timeout, count) : udpClient(a, timeout, count);
  }
  return rc;
}
