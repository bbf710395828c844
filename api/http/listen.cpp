#include "api/http/listen.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent/base/unique_fd.h"

namespace smik::api {
// A named namespace, not an anonymous one: Listener::Impl (which has
// linkage) holds these types, and GCC warns about that (-Wsubobject-linkage)
// when this file is compiled as part of a unity source.
namespace listen_impl {

using Clock = std::chrono::steady_clock;

// httplib's request handling without its accept loop and thread pool: what
// a worker runs on each request whose head the reactor has read. Every
// request goes to the router before httplib would read a body or match a
// pattern of its own (std::regex, on the request path).
class Engine : public httplib::Server {
 public:
  Engine(const Router& router, const ListenLimits& limits) {
    set_pre_routing_handler([&router](const httplib::Request& req, httplib::Response& res) {
      router.serve(req, isLoopbackAddress(req.remote_addr), res);
      return HandlerResponse::Handled;
    });
    // Only what httplib prints in Keep-Alive headers: the limits are the listener's.
    set_keep_alive_max_count(std::max<size_t>(1, limits.max_requests_per_connection));
    set_keep_alive_timeout(
        std::chrono::duration_cast<std::chrono::seconds>(limits.idle_timeout).count());
  }
  using httplib::Server::process_request;
};

enum class Phase {
  kHandshake,  // TLS handshake under way
  kHead,       // reading a request line and headers
  kIdle,       // kept alive, waiting for the next request
  kBusy,       // with a worker
  kDraining,   // answered and half-closed; what the client still sends is discarded
};

struct Conn {
  UniqueFd fd;
  SSL* ssl = nullptr;
  std::string peer_ip, local_ip;
  int peer_port = 0, local_port = 0;
  std::string in;       // read and not yet answered
  size_t head_end = 0;  // a complete head's length, blank line included
  Phase phase = Phase::kHead;
  uint64_t waiting_since = 0;  // order of starting to wait: the oldest waiter is displaced first
  Clock::time_point deadline;
  size_t requests = 0;
  bool close_after = false;  // the worker's verdict
  bool watched = false;      // in the epoll set
  bool want_write = false;   // the handshake waits to write
};

// What httplib reads a request from and writes its response to: the head
// the reactor already has (never more: bodies are refused, and a pipelined
// next request waits for its own turn) and the socket, with one deadline
// for the whole response.
class ConnStream : public httplib::Stream {
 public:
  // sink: the response goes there instead of the socket (answerHead).
  ConnStream(Conn& c, Clock::time_point deadline, std::string* sink = nullptr)
      : c_(c), deadline_(deadline), sink_(sink) {}

  bool is_readable() const override { return pos_ < c_.head_end; }
  bool is_writable() const override { return !failed_; }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, c_.head_end - pos_);
    std::memcpy(ptr, c_.in.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (sink_) {
      sink_->append(ptr, size);
      return static_cast<ssize_t>(size);
    }
    size_t done = 0;
    while (done < size && !failed_) {
      const size_t want = std::min(size - done, static_cast<size_t>(INT_MAX));
      if (c_.ssl) {
        ERR_clear_error();
        const int n = SSL_write(c_.ssl, ptr + done, static_cast<int>(want));
        if (n > 0) {
          done += static_cast<size_t>(n);
          continue;
        }
        const int e = SSL_get_error(c_.ssl, n);
        failed_ = !((e == SSL_ERROR_WANT_WRITE && waitFor(POLLOUT)) ||
                    (e == SSL_ERROR_WANT_READ && waitFor(POLLIN)));
      } else {
        const ssize_t n = ::send(c_.fd.get(), ptr + done, want, MSG_NOSIGNAL);
        if (n > 0) {
          done += static_cast<size_t>(n);
          continue;
        }
        failed_ = !(n < 0 && (errno == EINTR ||
                              ((errno == EAGAIN || errno == EWOULDBLOCK) && waitFor(POLLOUT))));
      }
    }
    return failed_ ? -1 : static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.peer_ip;
    port = c_.peer_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local_ip;
    port = c_.local_port;
  }
  // httplib answers 500 to any socket past select()'s FD_SETSIZE, a limit
  // of its own streams; this one polls.
  socket_t socket() const override { return c_.fd.get() < FD_SETSIZE ? c_.fd.get() : 0; }
  bool failed() const { return failed_; }

 private:
  bool waitFor(short events) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{c_.fd.get(), events, 0};
    return ::poll(&p, 1, static_cast<int>(left)) > 0;
  }

  Conn& c_;
  const Clock::time_point deadline_;
  std::string* sink_;
  size_t pos_ = 0;
  bool failed_ = false;
};

std::string addressOf(const sockaddr_storage& ss, int* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
    *port = ntohs(a.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf);
    *port = ntohs(a.sin6_port);
  }
  return buf;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// A head that announces a body (which the router refuses unread): the
// connection cannot carry another request after it.
bool announcesBody(std::string_view head) {
  size_t start = head.find("\r\n");
  while (start != std::string_view::npos && start + 2 < head.size()) {
    const size_t end = head.find("\r\n", start + 2);
    const std::string_view line = head.substr(start + 2, end - start - 2);
    const std::string_view name = line.substr(0, line.find(':'));
    if (equalsIgnoreCase(name, "content-length") || equalsIgnoreCase(name, "transfer-encoding"))
      return true;
    start = end;
  }
  return false;
}

// The target of "METHOD TARGET VERSION\r\n...".
std::string_view targetOf(std::string_view head) {
  const std::string_view line = head.substr(0, head.find("\r\n"));
  const size_t a = line.find(' ');
  if (a == std::string_view::npos) return {};
  const size_t b = line.find(' ', a + 1);
  return line.substr(a + 1, b == std::string_view::npos ? std::string_view::npos : b - a - 1);
}

// A whole response for the reactor to send on a plain connection it is
// about to close; a socket that will not take it at once does without.
void sendAndForget(int fd, const char* status) {
  const std::string r =
      std::string("HTTP/1.1 ") + status + "\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
  [[maybe_unused]] ssize_t n = ::send(fd, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

struct Lane {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Conn*> queue;
  std::vector<std::thread> threads;
};

}  // namespace listen_impl
using namespace listen_impl;

class Listener::Impl {
 public:
  Impl(Router router, ListenLimits limits)
      : router_(std::move(router)), limits_(limits), engine_(router_, limits_) {}
  ~Impl() { stop(); }

  bool start(const std::string& addr, std::string* err, TlsContextSource tls);
  void stop();
  int port() const { return port_; }

 private:
  void reactor();
  void acceptAll(Clock::time_point now);
  void admit(UniqueFd fd, const sockaddr_storage& peer, Clock::time_point now);
  bool displaceOldestWaiter();
  void onEvent(Conn* c, uint32_t events, Clock::time_point now);
  // Reads what is there; false when the connection is done for.
  bool readSome(Conn* c, Clock::time_point now);
  void afterRead(Conn* c);
  void dispatch(Conn* c);
  void takeBack(Clock::time_point now);
  Clock::time_point expire(Clock::time_point now);
  void watch(Conn* c, uint32_t events);
  void unwatch(Conn* c);
  // Ends a connection after a last answer: a plain one half-closes and
  // discards what the client still sends for a moment (a body it was
  // refused) before it closes, since closing with unread data resets the
  // connection and the client may lose the answer; TLS closes at once.
  void finish(Conn* c, Clock::time_point now);
  void drain(Conn* c);
  void close(Conn* c);
  void work(Lane& lane);
  void answer(Conn* c);

  Router router_;
  const ListenLimits limits_;
  Engine engine_;
  TlsContextSource tls_;
  // Their addresses are also the epoll tags of the listener and the wake-up.
  UniqueFd listen_fd_, epoll_fd_, wake_fd_;
  int port_ = 0;
  bool running_ = false;
  std::atomic<bool> stopping_{false};
  std::thread reactor_thread_;
  Lane probes_, requests_;
  Clock::time_point accept_paused_until_{};
  uint64_t waiting_order_ = 0;

  // The reactor's (and stop()'s, once every thread is gone).
  std::unordered_map<Conn*, std::unique_ptr<Conn>> conns_;
  std::map<std::string, size_t> per_client_;

  std::mutex back_mu_;
  std::vector<Conn*> back_;  // answered, for the reactor to keep or close
};

Result<HostPort> parseListenAddress(std::string_view addr) {
  return parseHostPort(addr, {.empty_host = true, .port_zero = true, .unbracketed_ipv6 = true});
}

bool Listener::Impl::start(const std::string& addr, std::string* err, TlsContextSource tls) {
  const Result<HostPort> where = parseListenAddress(addr);
  if (!where) return (*err = "wants host:port: " + where.error()), false;
  const std::string& host = where->host;
  const std::string port = std::to_string(where->port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found) != 0)
    return (*err = "cannot resolve " + addr), false;
  for (addrinfo* ai = found; ai && !listen_fd_; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) continue;
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd.get(), 1024) == 0)
      listen_fd_ = std::move(fd);
  }
  freeaddrinfo(found);
  if (!listen_fd_) return (*err = "cannot listen on " + addr), false;
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  addressOf(bound, &port_);

  tls_ = std::move(tls);
  epoll_fd_.reset(epoll_create1(EPOLL_CLOEXEC));
  wake_fd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &listen_fd_;
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_.get(), &ev);
  ev.data.ptr = &wake_fd_;
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev);
  running_ = true;
  reactor_thread_ = std::thread([this] { reactor(); });
  probes_.threads.emplace_back([this] { work(probes_); });
  for (size_t i = 0; i < std::max<size_t>(1, limits_.workers); ++i)
    requests_.threads.emplace_back([this] { work(requests_); });
  return true;
}

void Listener::Impl::stop() {
  if (!running_) return;
  running_ = false;
  stopping_ = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  for (Lane* lane : {&probes_, &requests_}) {
    { std::lock_guard lock(lane->mu); }
    lane->cv.notify_all();
  }
  reactor_thread_.join();
  for (Lane* lane : {&probes_, &requests_})
    for (auto& t : lane->threads) t.join();
  // Every thread is gone: what is left, queued, answered or waiting, closes.
  while (!conns_.empty()) close(conns_.begin()->first);
  listen_fd_.reset();
  epoll_fd_.reset();
  wake_fd_.reset();
}

void Listener::Impl::reactor() {
  std::vector<epoll_event> events(64);
  Clock::time_point next_deadline = Clock::now() + std::chrono::seconds(1);
  while (!stopping_) {
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_deadline - Clock::now())
                    .count() +
                1;
    const int n = epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()),
                             static_cast<int>(std::clamp<int64_t>(wait, 0, 1000)));
    const auto now = Clock::now();
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &listen_fd_) {
        acceptAll(now);
      } else if (tag == &wake_fd_) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &v, sizeof v);
      } else {
        onEvent(static_cast<Conn*>(tag), events[i].events, now);
      }
    }
    takeBack(now);
    if (accept_paused_until_ != Clock::time_point{} && now >= accept_paused_until_) {
      accept_paused_until_ = {};
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = &listen_fd_;
      epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_.get(), &ev);
    }
    next_deadline = expire(now);
  }
}

void Listener::Impl::acceptAll(Clock::time_point now) {
  while (true) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    UniqueFd fd(accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                        SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd) {
      admit(std::move(fd), peer, now);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE) {
      // Out of descriptors: the pending connection keeps the socket
      // readable, so stop asking for a moment rather than spin.
      epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listen_fd_.get(), nullptr);
      accept_paused_until_ = now + std::chrono::milliseconds(100);
    }
    return;
  }
}

void Listener::Impl::admit(UniqueFd accepted, const sockaddr_storage& peer, Clock::time_point now) {
  auto c = std::make_unique<Conn>();
  c->fd = std::move(accepted);
  const int fd = c->fd.get();  // closed with c on every path
  c->peer_ip = addressOf(peer, &c->peer_port);
  const bool over_client = per_client_[c->peer_ip] >= limits_.max_connections_per_client;
  if (over_client || (conns_.size() >= limits_.max_connections && !displaceOldestWaiter())) {
    if (per_client_[c->peer_ip] == 0) per_client_.erase(c->peer_ip);
    if (!tls_) sendAndForget(fd, "503 Service Unavailable");
    return;
  }
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  c->local_ip = addressOf(local, &c->local_port);
  // Headers and body go out in two writes: without NODELAY, Nagle holds the
  // body until the client's delayed ACK (40 ms per request).
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->waiting_since = ++waiting_order_;
  c->deadline = now + limits_.head_timeout;
  if (tls_) {
    const std::shared_ptr<SSL_CTX> ctx = tls_();
    c->ssl = ctx ? SSL_new(ctx.get()) : nullptr;  // holds its own reference to ctx
    if (!c->ssl) return;
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->phase = Phase::kHandshake;
  }
  Conn* raw = c.get();
  ++per_client_[raw->peer_ip];
  conns_.emplace(raw, std::move(c));
  watch(raw, EPOLLIN);
}

bool Listener::Impl::displaceOldestWaiter() {
  // Connections already answered go first, then the longest waiting.
  const auto rank = [](const Conn* c) {
    return std::pair(c->phase != Phase::kDraining, c->waiting_since);
  };
  Conn* oldest = nullptr;
  for (const auto& [c, owned] : conns_)
    if (c->phase != Phase::kBusy && (!oldest || rank(c) < rank(oldest))) oldest = c;
  if (oldest) close(oldest);
  return oldest != nullptr;
}

void Listener::Impl::onEvent(Conn* c, uint32_t events, Clock::time_point now) {
  if (c->phase == Phase::kHandshake) {
    ERR_clear_error();
    const int r = SSL_accept(c->ssl);
    if (r != 1) {
      const int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        const bool want_write = e == SSL_ERROR_WANT_WRITE;
        if (want_write != c->want_write) {
          c->want_write = want_write;
          unwatch(c);
          watch(c, want_write ? EPOLLOUT : EPOLLIN);
        }
        return;
      }
      return close(c);  // refused certificate, not TLS, reset
    }
    if (c->want_write) {
      c->want_write = false;
      unwatch(c);
      watch(c, EPOLLIN);
    }
    c->phase = Phase::kHead;
  } else if (c->phase == Phase::kDraining) {
    return drain(c);
  } else if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
    return close(c);
  }
  if (!readSome(c, now)) return close(c);
  afterRead(c);
}

bool Listener::Impl::readSome(Conn* c, Clock::time_point now) {
  char buf[16 * 1024];
  // A little past the head limit at most: enough to tell a head that is too
  // long, and what follows a head (a body) is never read.
  while (c->in.size() <= limits_.max_head_bytes) {
    size_t got = 0;
    if (c->ssl) {
      ERR_clear_error();
      const int n = SSL_read(c->ssl, buf, sizeof buf);
      if (n <= 0) {
        const int e = SSL_get_error(c->ssl, n);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
      }
      got = static_cast<size_t>(n);
    } else {
      const ssize_t n = ::recv(c->fd.get(), buf, sizeof buf, 0);
      if (n == 0) return false;
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      got = static_cast<size_t>(n);
    }
    if (c->phase == Phase::kIdle) {
      c->phase = Phase::kHead;
      c->deadline = now + limits_.head_timeout;
    }
    const size_t from = c->in.size() > 3 ? c->in.size() - 3 : 0;
    c->in.append(buf, got);
    if (c->in.find("\r\n\r\n", from) != std::string::npos) break;  // the rest can wait
  }
  return true;
}

void Listener::Impl::afterRead(Conn* c) {
  if (c->phase != Phase::kHead) return;
  const size_t end = c->in.find("\r\n\r\n");
  if (end != std::string::npos && end + 4 <= limits_.max_head_bytes) {
    c->head_end = end + 4;
    return dispatch(c);
  }
  if (c->in.size() > limits_.max_head_bytes || end != std::string::npos) {
    if (!c->ssl) sendAndForget(c->fd.get(), "431 Request Header Fields Too Large");
    finish(c, Clock::now());
  }
}

void Listener::Impl::dispatch(Conn* c) {
  unwatch(c);
  c->phase = Phase::kBusy;
  const Route* route = routeOf(router_, targetOf(std::string_view(c->in).substr(0, c->head_end)));
  Lane& lane = route && route->probe ? probes_ : requests_;
  {
    std::lock_guard lock(lane.mu);
    lane.queue.push_back(c);
  }
  lane.cv.notify_one();
}

void Listener::Impl::work(Lane& lane) {
  while (true) {
    Conn* c = nullptr;
    {
      std::unique_lock lock(lane.mu);
      lane.cv.wait(lock, [&] { return stopping_ || !lane.queue.empty(); });
      if (stopping_) return;
      c = lane.queue.front();
      lane.queue.pop_front();
    }
    answer(c);
    {
      std::lock_guard lock(back_mu_);
      back_.push_back(c);
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  }
}

void Listener::Impl::answer(Conn* c) {
  ConnStream stream(*c, Clock::now() + limits_.write_timeout);
  const std::string_view head(c->in.data(), c->head_end);
  const bool last =
      c->requests + 1 >= limits_.max_requests_per_connection || stopping_ || announcesBody(head);
  bool closed = false, ok = false;
  try {
    ok = engine_.process_request(stream, last, closed,
                                 [c](httplib::Request& req) { req.ssl = c->ssl; });
  } catch (...) {
  }
  ++c->requests;
  c->in.erase(0, c->head_end);
  c->head_end = 0;
  c->close_after = !ok || closed || last || stream.failed();
}

void Listener::Impl::takeBack(Clock::time_point now) {
  std::vector<Conn*> back;
  {
    std::lock_guard lock(back_mu_);
    back.swap(back_);
  }
  for (Conn* c : back) {
    if (c->close_after) {
      finish(c, now);
      continue;
    }
    c->phase = c->in.empty() ? Phase::kIdle : Phase::kHead;
    c->waiting_since = ++waiting_order_;
    c->deadline = now + (c->in.empty() ? limits_.idle_timeout : limits_.head_timeout);
    // TLS may hold records it decrypted while writing; epoll would not say.
    if (!readSome(c, now)) {
      close(c);
      continue;
    }
    watch(c, EPOLLIN);
    afterRead(c);
  }
}

Clock::time_point Listener::Impl::expire(Clock::time_point now) {
  Clock::time_point next = now + std::chrono::seconds(1);
  std::vector<Conn*> late;
  for (const auto& [c, owned] : conns_) {
    if (c->phase == Phase::kBusy) continue;
    if (c->deadline <= now)
      late.push_back(c);
    else
      next = std::min(next, c->deadline);
  }
  for (Conn* c : late) {
    if (c->phase == Phase::kHead && !c->in.empty() && !c->ssl) {
      sendAndForget(c->fd.get(), "408 Request Timeout");
      finish(c, now);
    } else {
      close(c);
    }
  }
  return next;
}

void Listener::Impl::finish(Conn* c, Clock::time_point now) {
  if (c->ssl) return close(c);
  ::shutdown(c->fd.get(), SHUT_WR);
  c->phase = Phase::kDraining;
  c->in = std::string();
  c->waiting_since = ++waiting_order_;
  c->deadline = now + std::chrono::seconds(1);
  if (!c->watched) watch(c, EPOLLIN);
}

void Listener::Impl::drain(Conn* c) {
  char buf[16 * 1024];
  size_t total = 0;
  while (total < (1u << 20)) {
    const ssize_t n = ::recv(c->fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      total += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // more may come
    break;                                                           // the client closed too
  }
  close(c);
}

void Listener::Impl::watch(Conn* c, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = c;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) == 0) c->watched = true;
}

void Listener::Impl::unwatch(Conn* c) {
  if (c->watched) epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
  c->watched = false;
}

void Listener::Impl::close(Conn* c) {
  unwatch(c);
  if (c->ssl) {
    if (c->phase != Phase::kHandshake) SSL_shutdown(c->ssl);  // best effort close_notify
    SSL_free(c->ssl);
  }
  c->fd.reset();
  auto it = per_client_.find(c->peer_ip);
  if (it != per_client_.end() && --it->second == 0) per_client_.erase(it);
  conns_.erase(c);
}

std::string answerHead(const Router& router, std::string_view head, bool local_client) {
  const ListenLimits limits;
  const size_t end = head.find("\r\n\r\n");
  if (end == std::string_view::npos || end + 4 > limits.max_head_bytes)
    return "HTTP/1.1 431 Request Header Fields Too Large\r\n";
  // The same steps as a worker's, on a connection that is only memory.
  Conn c;
  c.in = std::string(head.substr(0, end + 4));
  c.head_end = c.in.size();
  c.peer_ip = local_client ? "127.0.0.1" : "192.0.2.1";
  c.local_ip = "127.0.0.1";
  (void)routeOf(router, targetOf(c.in));  // the lane choice
  Engine engine(router, limits);
  std::string out;
  ConnStream stream(c, Clock::now() + std::chrono::seconds(1), &out);
  bool closed = false;
  engine.process_request(stream, announcesBody(c.in), closed, [](httplib::Request&) {});
  return out;
}

Listener::Listener(Router router, ListenLimits limits)
    : impl_(std::make_unique<Impl>(std::move(router), limits)) {}
Listener::~Listener() = default;

bool Listener::start(const std::string& addr, std::string* err, TlsContextSource tls) {
  return impl_->start(addr, err, std::move(tls));
}
void Listener::stop() { impl_->stop(); }
int Listener::port() const { return impl_->port(); }

}  // namespace smik::api
