#include "tests/kube/h2_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <stdexcept>

namespace smik::testing {
namespace {

// The handler's side of one stream: what it has produced and not yet sent.
// Guarded by mu; `closed` is read by the handler's thread without it.
struct H2Stream {
  int32_t id = 0;
  std::string method, path;
  httplib::Headers headers;
  std::string body;  // the request's

  std::mutex mu;
  bool ready = false;  // status and content type known: headers may go
  int status = 200;
  std::string content_type;
  std::string out;       // response bytes; those from out_pos on not yet framed
  size_t out_pos = 0;    // framed so far: erasing each frame's bytes was quadratic
  bool eof = false;      // the handler is done
  bool aborted = false;  // the handler gave up mid-body: reset the stream
  bool submitted = false;
  bool deferred = false;  // the read callback ran dry; resume on new output

  std::atomic<bool> closed{false};
  std::atomic<bool> finished{false};  // worker returned: join() will not block
  std::thread worker;
};

int selectH2(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
             unsigned int inlen, void*) {
  for (unsigned int i = 0; i < inlen; i += in[i] + 1u) {
    if (in[i] == 2 && i + 3 <= inlen && std::memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;  // h2 only: this server has no HTTP/1.1
}

void wakeFd(int fd) {
  const uint64_t one = 1;
  (void)!write(fd, &one, sizeof one);
}

}  // namespace

// One TLS connection: its nghttp2 session, driven by the connection's thread.
struct H2Server::Connection {
  H2Server* server = nullptr;
  std::string peer_addr;
  int peer_port = 0;
  int wake_fd = -1;  // eventfd: a handler has output
  nghttp2_session* session = nullptr;
  std::map<int32_t, std::shared_ptr<H2Stream>> streams;
  std::vector<std::shared_ptr<H2Stream>> graveyard;  // closed, worker maybe running

  void start(const std::shared_ptr<H2Stream>& st);
  void work(H2Stream& st);
  void submitReady();
  void reap(bool all);
};

void H2Server::Connection::start(const std::shared_ptr<H2Stream>& st) {
  st->worker = std::thread([this, st] {
    work(*st);
    st->finished = true;
  });
}

void H2Server::Connection::work(H2Stream& st) {
  httplib::Request req;
  req.method = st.method;
  const auto q = st.path.find('?');
  req.path = httplib::detail::decode_url(st.path.substr(0, q), false);
  if (q != std::string::npos) httplib::detail::parse_query_text(st.path.substr(q + 1), req.params);
  req.headers = st.headers;
  req.body = st.body;
  req.remote_addr = peer_addr;
  req.remote_port = peer_port;
  httplib::Response res;
  server->handler_(req, res);
  {
    std::lock_guard lock(st.mu);
    st.status = res.status < 0 ? 200 : res.status;
    st.content_type = res.get_header_value("Content-Type");
    st.ready = true;
    if (!res.content_provider_) {
      st.out = std::move(res.body);
      st.eof = true;
    }
  }
  wakeFd(wake_fd);
  if (!res.content_provider_) return;
  bool done = false;
  httplib::DataSink sink;
  sink.write = [&](const char* data, size_t len) {
    if (st.closed || server->stopping_) return false;
    {
      std::lock_guard lock(st.mu);
      st.out.append(data, len);
    }
    wakeFd(wake_fd);
    return true;
  };
  sink.done = [&] { done = true; };
  sink.is_writable = [&] { return !st.closed && !server->stopping_; };
  size_t offset = 0;
  // Chunked providers ignore offset and length, as httplib calls them.
  while (!done && !st.closed && !server->stopping_)
    if (!res.content_provider_(offset, 0, sink)) break;
  {
    std::lock_guard lock(st.mu);
    st.eof = true;
    st.aborted = !done;
  }
  wakeFd(wake_fd);
}

namespace {

ssize_t readBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                 nghttp2_data_source* source, void*) {
  auto* st = static_cast<H2Stream*>(source->ptr);
  std::lock_guard lock(st->mu);
  const size_t n = std::min(length, st->out.size() - st->out_pos);
  std::memcpy(buf, st->out.data() + st->out_pos, n);
  st->out_pos += n;
  if (st->out_pos == st->out.size()) {
    st->out.clear();
    st->out_pos = 0;
  } else if (st->out_pos > (1u << 20) && st->out_pos > st->out.size() / 2) {
    st->out.erase(0, st->out_pos);  // a long stream: drop what went, now and then
    st->out_pos = 0;
  }
  if (st->out.empty() && st->eof) {
    if (st->aborted) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // RST_STREAM
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

}  // namespace

void H2Server::Connection::submitReady() {
  for (auto& [id, st] : streams) {
    bool submit = false, resume = false;
    std::string status, type;
    {
      std::lock_guard lock(st->mu);
      if (st->ready && !st->submitted) {
        submit = st->submitted = true;
        status = std::to_string(st->status);
        type = st->content_type;
      } else if (st->submitted && st->deferred && (!st->out.empty() || st->eof)) {
        st->deferred = false;
        resume = true;
      }
    }
    if (submit) {
      std::vector<nghttp2_nv> nv;
      auto add = [&nv](const char* name, const std::string& value) {
        nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                      std::strlen(name), value.size(), NGHTTP2_NV_FLAG_NONE});
      };
      add(":status", status);
      if (!type.empty()) add("content-type", type);
      nghttp2_data_provider provider;
      provider.source.ptr = st.get();
      provider.read_callback = readBody;
      nghttp2_submit_response(session, id, nv.data(), nv.size(), &provider);
    }
    if (resume) nghttp2_session_resume_data(session, id);
  }
}

void H2Server::Connection::reap(bool all) {
  std::erase_if(graveyard, [all](const std::shared_ptr<H2Stream>& st) {
    if (!all && !st->finished) return false;
    st->closed = true;
    if (st->worker.joinable()) st->worker.join();
    return true;
  });
}

namespace {

H2Server::Connection* conn(void* user) { return static_cast<H2Server::Connection*>(user); }

}  // namespace

H2Server::H2Server(const std::string& address, int port, const std::string& cert_file,
                   const std::string& key_file, Handler handler)
    : handler_(std::move(handler)) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error("h2 server: cannot load " + cert_file);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_alpn_select_cb(ctx, selectH2, nullptr);
  ssl_ctx_ = ctx;

  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int on = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1 ||
      bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      listen(listen_fd_, 1024) != 0)
    throw std::runtime_error("h2 server: cannot listen on " + address);
  socklen_t len = sizeof sa;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  accept_thread_ = std::thread([this] { acceptLoop(); });
}

H2Server::~H2Server() {
  stopping_ = true;
  wakeFd(stop_fd_);  // never read: every poll sees it from now on
  accept_thread_.join();
  for (auto& t : connections_) t.join();
  close(listen_fd_);
  close(stop_fd_);
  SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
}

void H2Server::acceptLoop() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, 1000) <= 0 || (fds[1].revents & POLLIN)) continue;
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ++accepted_;
    char addr[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &peer.sin_addr, addr, sizeof addr);
    std::lock_guard lock(mu_);
    connections_.emplace_back(
        [this, fd, a = std::string(addr), p = ntohs(peer.sin_port)] { serve(fd, a, p); });
  }
}

void H2Server::serve(int fd, const std::string& peer_addr, int peer_port) {
  ++open_;
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  timeval handshake_timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &handshake_timeout, sizeof handshake_timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &handshake_timeout, sizeof handshake_timeout);
  SSL* ssl = SSL_new(static_cast<SSL_CTX*>(ssl_ctx_));
  SSL_set_fd(ssl, fd);
  Connection c;
  c.server = this;
  c.peer_addr = peer_addr;
  c.peer_port = peer_port;
  c.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(
      cbs, [](nghttp2_session*, const nghttp2_frame* f, void* user) {
        if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
        auto st = std::make_shared<H2Stream>();
        st->id = f->hd.stream_id;
        conn(user)->streams[st->id] = st;
        ++conn(user)->server->streams_;
        return 0;
      });
  nghttp2_session_callbacks_set_on_header_callback(
      cbs, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
              const uint8_t* value, size_t valuelen, uint8_t, void* user) {
        auto it = conn(user)->streams.find(f->hd.stream_id);
        if (it == conn(user)->streams.end()) return 0;
        const std::string n(reinterpret_cast<const char*>(name), namelen);
        std::string v(reinterpret_cast<const char*>(value), valuelen);
        if (n == ":method")
          it->second->method = std::move(v);
        else if (n == ":path")
          it->second->path = std::move(v);
        else if (!n.empty() && n[0] != ':')
          it->second->headers.emplace(n, std::move(v));
        return 0;
      });
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
      cbs, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
        auto it = conn(user)->streams.find(id);
        if (it != conn(user)->streams.end())
          it->second->body.append(reinterpret_cast<const char*>(data), len);
        return 0;
      });
  nghttp2_session_callbacks_set_on_frame_recv_callback(
      cbs, [](nghttp2_session*, const nghttp2_frame* f, void* user) {
        if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
            (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
          auto it = conn(user)->streams.find(f->hd.stream_id);
          if (it != conn(user)->streams.end() && !it->second->worker.joinable())
            conn(user)->start(it->second);
        }
        return 0;
      });
  nghttp2_session_callbacks_set_on_stream_close_callback(
      cbs, [](nghttp2_session*, int32_t id, uint32_t, void* user) {
        auto it = conn(user)->streams.find(id);
        if (it == conn(user)->streams.end()) return 0;
        it->second->closed = true;
        conn(user)->graveyard.push_back(it->second);
        conn(user)->streams.erase(it);
        return 0;
      });
  nghttp2_session_server_new(&c.session, cbs, &c);
  nghttp2_session_callbacks_del(cbs);

  if (SSL_accept(ssl) == 1) {
    const unsigned char* proto = nullptr;
    unsigned int proto_len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &proto_len);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 250}};
    nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, settings, 1);
    std::string out;
    char buf[16384];
    bool alive = proto_len == 2;
    while (alive && !stopping_) {
      // Frame what the handlers produced, then write as much as TLS takes.
      c.submitReady();
      c.reap(false);
      for (;;) {
        if (out.empty()) {
          const uint8_t* data = nullptr;
          ssize_t n;
          while (out.size() < 65536 && (n = nghttp2_session_mem_send(c.session, &data)) > 0)
            out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
          if (out.empty()) break;
        }
        const int w = SSL_write(ssl, out.data(), static_cast<int>(out.size()));
        if (w <= 0) {
          const int e = SSL_get_error(ssl, w);
          alive = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ;
          break;
        }
        bytes_out_ += static_cast<uint64_t>(w);
        out.erase(0, static_cast<size_t>(w));
      }
      if (!alive) break;
      if (out.empty() && !nghttp2_session_want_read(c.session) &&
          !nghttp2_session_want_write(c.session))
        break;
      pollfd fds[3] = {{fd, static_cast<short>(POLLIN | (out.empty() ? 0 : POLLOUT)), 0},
                       {c.wake_fd, POLLIN, 0},
                       {stop_fd_, POLLIN, 0}};
      if (SSL_pending(ssl) == 0) poll(fds, 3, 1000);
      if (fds[1].revents & POLLIN) {
        uint64_t n;
        (void)!read(c.wake_fd, &n, sizeof n);
      }
      for (;;) {
        const int r = SSL_read(ssl, buf, sizeof buf);
        if (r > 0) {
          bytes_in_ += static_cast<uint64_t>(r);
          if (nghttp2_session_mem_recv(c.session, reinterpret_cast<uint8_t*>(buf),
                                       static_cast<size_t>(r)) < 0)
            alive = false;
          if (!alive) break;
          continue;
        }
        const int e = SSL_get_error(ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) alive = false;
        break;
      }
    }
  }
  for (auto& [id, st] : c.streams) c.graveyard.push_back(st);
  c.streams.clear();
  c.reap(true);
  nghttp2_session_del(c.session);
  SSL_free(ssl);
  close(fd);
  close(c.wake_fd);
  --open_;
}

}  // namespace smik::testing
