#include "agent/source/kube_http.h"

#include <curl/curl.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <thread>

#include "agent/base/host_port.h"

namespace smik::kube {

struct MuxStream;

namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;
// Replies to writes (an Event, a SubjectAccessReview) are small objects.
constexpr size_t kMaxSendReply = 1024 * 1024;

// A body that has arrived on the multiplexer's thread and waits for its
// caller's: the caller parses, the connection's other streams keep flowing.
// Past this much the stream is paused (HTTP/2 flow control then holds the
// server back on this stream alone) until the caller catches up.
constexpr size_t kMaxBuffered = 4 * 1024 * 1024;

struct Transfer;
size_t deliver(Transfer* t, const char* data, size_t len);

struct Transfer {
  CURL* easy = nullptr;
  const HttpClient::OnData* on_data = nullptr;
  HttpResponse* response = nullptr;
  // Set when the transfer runs on a Multiplexer: 2xx bodies go to the
  // stream's buffer instead of on_data.
  MuxStream* stream = nullptr;
};

long statusOf(CURL* easy) {
  long code = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
  return code;
}

size_t onHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  // A new status line (after a 100 Continue or a redirect) starts afresh.
  if (line.rfind("HTTP/", 0) == 0) {
    t->response->headers.clear();
    return size * n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front())))
    value.remove_prefix(1);
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back())))
    value.remove_suffix(1);
  t->response->headers[name] = std::string(value);
  return size * n;
}

size_t onBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  const long status = statusOf(t->easy);
  if (status < 200 || status > 299) {
    // Error bodies are small Status objects; keep enough to read the reason.
    auto& body = t->response->body;
    body.append(data, std::min(len, kMaxErrorBody - std::min(kMaxErrorBody, body.size())));
    return len;
  }
  if (t->stream) return deliver(t, data, len);
  if (!(*t->on_data)(std::string_view(data, len))) {
    t->response->stopped = true;
    return CURL_WRITEFUNC_ERROR;
  }
  return len;
}

void setBlob(CURL* easy, CURLoption opt, const std::string& bytes) {
  curl_blob blob{const_cast<char*>(bytes.data()), bytes.size(), CURL_BLOB_COPY};
  curl_easy_setopt(easy, opt, &blob);
}

// Go's proxy rules (and so client-go's) never proxy loopback; curl's would
// if *_proxy is set. Keep the user's no_proxy list and add loopback to it.
std::string noProxyList() {
  const char* env = std::getenv("NO_PROXY");
  if (!env) env = std::getenv("no_proxy");
  std::string list = env ? env : "";
  if (!list.empty()) list += ",";
  return list + "localhost,127.0.0.1,::1";
}

// setSocketHook's hook: set before the first request, read-only after.
std::function<void(int)>& socketHook() {
  static std::function<void(int)> hook;
  return hook;
}

int onSocket(void*, curl_socket_t fd, curlsocktype purpose) {
  if (purpose == CURLSOCKTYPE_IPCXN) socketHook()(fd);
  return CURL_SOCKOPT_OK;
}

void initCurlOnce() {
  static const bool done = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)done;
}

// One owner each for curl's handles and lists.
using CurlEasy = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using CurlMulti = std::unique_ptr<CURLM, decltype(&curl_multi_cleanup)>;
using CurlList = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

CurlList curlList() { return CurlList(nullptr, curl_slist_free_all); }
void append(CurlList& list, const std::string& item) {
  curl_slist* grown = curl_slist_append(list.get(), item.c_str());
  if (grown) {
    (void)list.release();  // the grown list includes the old nodes
    list.reset(grown);
  }
}

// The URL to ask, and the connect-to rule that goes with it. With
// tls-server-name the certificate (and SNI) is checked against that name
// while the connection still goes to the configured server, as Go's
// tls.Config.ServerName does. curl has no such option; connect-to does it:
// the URL names the certificate's host and connect-to maps it back.
Result<std::string> targetUrl(const KubeConfig& config, const std::string& path,
                              CurlList* connect_to) {
  if (config.tls_server_name.empty()) return config.server + path;
  const auto scheme_end = config.server.find("://");
  const auto host_start = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  // A server with a path ("https://host/prefix") keeps it after the new authority.
  const auto host_end = std::min(config.server.find('/', host_start), config.server.size());
  const Result<HostPort> server = parseHostPort(
      std::string_view(config.server).substr(host_start, host_end - host_start),
      {.default_port = 443});
  if (!server) return fail("server " + config.server + ": " + server.error());
  const std::string port = std::to_string(server->port);
  append(*connect_to,
         config.tls_server_name + ":" + port + ":" + joinHostPort(server->host, server->port));
  return config.server.substr(0, host_start) + config.tls_server_name + ":" + port +
         config.server.substr(host_end) + path;
}

// Method and body. The body is not copied: it must outlive the transfer.
void setMethod(CURL* easy, const std::string& method, const std::string& body) {
  if (method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    return;
  }
  curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
}

// Callbacks, deadlines, keepalive, proxies.
void setTransport(CURL* easy, const KubeConfig& config, Transfer* t, char* errbuf,
                  std::chrono::milliseconds connect, std::chrono::milliseconds total) {
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, onHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect.count()));
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(total.count()));
  // A watch may sit idle for minutes; keepalive notices a dead peer (a
  // rebooted API server, a dropped NAT entry) long before the deadline.
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 15L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "smik-agent");
  if (socketHook()) curl_easy_setopt(easy, CURLOPT_SOCKOPTFUNCTION, onSocket);
  curl_easy_setopt(easy, CURLOPT_NOPROXY, noProxyList().c_str());  // curl copies strings
  if (!config.proxy_url.empty()) curl_easy_setopt(easy, CURLOPT_PROXY, config.proxy_url.c_str());
}

// Server verification and the client's certificate. Inline data wins over
// a file, as in client-go.
void setTls(CURL* easy, const KubeConfig& config) {
  const bool verify = !config.insecure_skip_tls_verify;
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  auto dataOrFile = [&](const std::string& data, CURLoption blob, const std::string& file,
                        CURLoption path) {
    if (!data.empty())
      setBlob(easy, blob, data);
    else if (!file.empty())
      curl_easy_setopt(easy, path, file.c_str());
  };
  dataOrFile(config.ca_data, CURLOPT_CAINFO_BLOB, config.ca_file, CURLOPT_CAINFO);
  dataOrFile(config.client_cert_data, CURLOPT_SSLCERT_BLOB, config.client_cert_file,
             CURLOPT_SSLCERT);
  dataOrFile(config.client_key_data, CURLOPT_SSLKEY_BLOB, config.client_key_file,
             CURLOPT_SSLKEY);
}

CurlList requestHeaders(const std::string& method, const std::string& content_type,
                        const std::string& token) {
  CurlList headers = curlList();
  append(headers, "Accept: application/json");
  if (!token.empty()) append(headers, "Authorization: Bearer " + token);
  if (!content_type.empty()) append(headers, "Content-Type: " + content_type);
  // curl would send "Expect: 100-continue" for larger bodies and wait a second.
  if (method != "GET") append(headers, "Expect:");
  return headers;
}

struct Outcome {
  bool finished = false;  // false: cancelled before the transfer ended
  CURLcode result = CURLE_OK;
};

// Runs the transfer added to `multi` until it ends or `cancel` fires.
Outcome run(CURLM* multi, const Cancel& cancel) {
  int running = 1;
  while (running && !cancel.cancelled()) {
    if (curl_multi_perform(multi, &running) != CURLM_OK) break;
    if (running) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  Outcome out{running == 0};
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi, &queued))
    if (msg->msg == CURLMSG_DONE) out.result = msg->data.result;
  return out;
}

// The status and error of a finished (or cancelled) transfer into r.
void record(const Outcome& o, CURL* easy, const char* errbuf, HttpResponse* r) {
  if (!o.finished) {
    r->cancelled = true;
    r->error = "cancelled";
    r->status = 0;
    return;
  }
  r->status = statusOf(easy);
  if (o.result == CURLE_OK || r->stopped) return;
  // Headers then a broken body: the status is real but the body is not
  // complete; callers treat any error as a failed request.
  r->error = errbuf[0] ? errbuf : curl_easy_strerror(o.result);
  if (r->status == 0 && r->error.empty()) r->error = "transfer failed";
}

}  // namespace

void setSocketHook(std::function<void(int fd)> hook) { socketHook() = std::move(hook); }

void Cancel::cancel() {
  cancelled_.store(true);
  std::lock_guard lock(mu_);
  for (auto& [key, wake] : active_) wake();
}

void Cancel::attach(const void* key, std::function<void()> wake) {
  std::lock_guard lock(mu_);
  active_.emplace_back(key, std::move(wake));
}

void Cancel::detach(const void* key) {
  std::lock_guard lock(mu_);
  std::erase_if(active_, [key](const auto& a) { return a.first == key; });
}

bool curlHasHttp2() {
  initCurlOnce();
  const curl_version_info_data* v = curl_version_info(CURLVERSION_NOW);
  return v && (v->features & CURL_VERSION_HTTP2);
}

// One request on the Multiplexer: the caller's thread waits on cv; the
// multiplexer's thread fills `pending` and sets done/removed. Guarded by
// the multiplexer's mutex.
struct MuxStream {
  CURL* easy = nullptr;
  Multiplexer* mux = nullptr;
  std::condition_variable cv;
  std::string pending;
  bool paused = false;   // the write callback said CURL_WRITEFUNC_PAUSE
  bool done = false;     // curl finished the transfer (result is set)
  bool removed = false;  // out of the multi handle: the caller may return
  CURLcode result = CURLE_OK;
};

// One multi handle, and so one connection cache, for every request of an
// HttpClient, driven by one thread. Callers block in run() as they did on a
// multi of their own; their bodies cross over through a buffer so a caller
// that is slow to parse never holds up the other streams on the connection.
class Multiplexer {
 public:
  Multiplexer() : multi_(curl_multi_init()) {
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    thread_ = std::thread([this] { loop(); });
  }
  ~Multiplexer() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    curl_multi_wakeup(multi_);
    thread_.join();
    curl_multi_cleanup(multi_);
  }

  Outcome run(Transfer& t, Cancel& cancel);
  size_t deliver(MuxStream& s, const char* data, size_t len);

 private:
  void loop();
  void finish(MuxStream* s, bool done, CURLcode result);

  CURLM* multi_;
  std::thread thread_;
  std::mutex mu_;
  bool stopping_ = false;
  std::vector<MuxStream*> to_add_, to_remove_, to_resume_;
};


size_t Multiplexer::deliver(MuxStream& s, const char* data, size_t len) {
  std::lock_guard lock(mu_);
  if (s.pending.size() >= kMaxBuffered) {
    s.paused = true;
    return CURL_WRITEFUNC_PAUSE;  // curl keeps this piece and offers it again on resume
  }
  s.pending.append(data, len);
  s.cv.notify_all();
  return len;
}

void Multiplexer::finish(MuxStream* s, bool done, CURLcode result) {
  curl_multi_remove_handle(multi_, s->easy);
  std::lock_guard lock(mu_);
  if (done) {
    s->done = true;
    s->result = result;
  }
  s->removed = true;
  // The caller may return (and free s) as soon as it sees `removed`.
  std::erase(to_remove_, s);
  std::erase(to_resume_, s);
  s->cv.notify_all();
}

void Multiplexer::loop() {
  for (;;) {
    std::vector<MuxStream*> resume, remove, add;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      resume.swap(to_resume_);
    }
    // Unpausing may call the write callback at once: no lock held here.
    for (MuxStream* s : resume) curl_easy_pause(s->easy, CURLPAUSE_CONT);
    int running = 0;
    curl_multi_perform(multi_, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      MuxStream* s = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&s));
      finish(s, true, msg->data.result);
    }
    // Removals right after the messages are read: a removed stream can
    // have no message left behind pointing at freed memory. Adds first: a
    // request cancelled before it was ever added is added, then removed,
    // never added after its caller has gone.
    {
      std::lock_guard lock(mu_);
      remove.swap(to_remove_);
      add.swap(to_add_);
    }
    for (MuxStream* s : add) curl_multi_add_handle(multi_, s->easy);
    for (MuxStream* s : remove) finish(s, false, CURLE_OK);
    if (add.empty()) curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
  }
}

namespace {
size_t deliver(Transfer* t, const char* data, size_t len) {
  return t->stream->mux->deliver(*t->stream, data, len);
}

}  // namespace

Outcome Multiplexer::run(Transfer& t, Cancel& cancel) {
  MuxStream s;
  s.easy = t.easy;
  s.mux = this;
  t.stream = &s;
  curl_easy_setopt(t.easy, CURLOPT_PRIVATE, reinterpret_cast<char*>(&s));
  {
    std::lock_guard lock(mu_);
    to_add_.push_back(&s);
  }
  curl_multi_wakeup(multi_);
  cancel.attach(&s, [this, &s] {
    std::lock_guard lock(mu_);
    s.cv.notify_all();
  });
  bool cancelled = false;
  std::unique_lock lock(mu_);
  for (;;) {
    s.cv.wait(lock, [&] { return !s.pending.empty() || s.done || cancel.cancelled(); });
    if (cancel.cancelled()) {
      cancelled = true;
      break;
    }
    if (!s.pending.empty()) {
      std::string piece;
      piece.swap(s.pending);
      const bool resume = s.paused;
      if (resume) {
        s.paused = false;
        to_resume_.push_back(&s);
      }
      lock.unlock();
      if (resume) curl_multi_wakeup(multi_);
      const bool more = (*t.on_data)(piece);
      lock.lock();
      if (!more) {
        t.response->stopped = true;
        break;
      }
      continue;
    }
    if (s.done) break;
  }
  if (!s.removed) {
    to_remove_.push_back(&s);
    curl_multi_wakeup(multi_);
    s.cv.wait(lock, [&] { return s.removed; });
  }
  lock.unlock();
  cancel.detach(&s);
  t.stream = nullptr;
  return Outcome{!cancelled, s.done ? s.result : CURLE_OK};
}

HttpClient::HttpClient(KubeConfig config, HttpTimeouts timeouts, HttpTransport transport)
    : config_(std::move(config)), timeouts_(timeouts), tokens_(config_) {
  initCurlOnce();
  if (transport != HttpTransport::kMultiplexed) return;
  if (!curlHasHttp2()) {
    static std::once_flag warned;
    std::call_once(warned, [] {
      spdlog::warn(
          "kubernetes: libcurl has no HTTP/2: one API server connection per request "
          "(HTTP/1.1), not one multiplexed connection");
    });
    return;
  }
  mux_ = std::make_unique<Multiplexer>();
}

HttpClient::~HttpClient() = default;  // after every request: the multiplexer stops last

HttpResponse HttpClient::get(const std::string& path, const OnData& on_data, Cancel& cancel,
                             std::chrono::milliseconds timeout) {
  return perform({"GET", path, "", ""}, on_data, cancel, timeout);
}

HttpResponse HttpClient::send(const std::string& method, const std::string& path,
                              const std::string& body, const std::string& content_type,
                              Cancel& cancel) {
  std::string out;
  OnData collect = [&out](std::string_view piece) {
    if (out.size() + piece.size() > kMaxSendReply) return false;
    out.append(piece);
    return true;
  };
  HttpResponse r = perform({method, path, body, content_type}, collect, cancel,
                           std::chrono::milliseconds(0));
  if (r.status >= 200 && r.status <= 299) r.body = std::move(out);
  return r;
}

HttpResponse HttpClient::perform(const Request& req, const OnData& on_data, Cancel& cancel,
                                 std::chrono::milliseconds timeout) {
  HttpResponse r = performOnce(req, on_data, cancel, timeout);
  if (r.status == 401 && tokens_.refreshable()) {
    tokens_.invalidate();
    r = performOnce(req, on_data, cancel, timeout);
  }
  return r;
}

HttpResponse HttpClient::performOnce(const Request& req, const OnData& on_data, Cancel& cancel,
                                     std::chrono::milliseconds timeout) {
  HttpResponse r;
  if (cancel.cancelled()) {
    r.cancelled = true;
    r.error = "cancelled";
    return r;
  }
  // Declared first, freed last: the handles point at them until cleanup.
  CurlList connect_to = curlList(), headers = curlList();
  char errbuf[CURL_ERROR_SIZE] = {0};
  CurlEasy easy(curl_easy_init(), curl_easy_cleanup);
  Transfer t{easy.get(), &on_data, &r};
  const Result<std::string> url = targetUrl(config_, req.path, &connect_to);
  if (!url) {
    r.error = url.error();
    return r;
  }
  curl_easy_setopt(easy.get(), CURLOPT_URL, url->c_str());
  if (connect_to) curl_easy_setopt(easy.get(), CURLOPT_CONNECT_TO, connect_to.get());
  setMethod(easy.get(), req.method, req.body);
  setTransport(easy.get(), config_, &t, errbuf, timeouts_.connect,
               timeout.count() > 0 ? timeout : timeouts_.request);
  setTls(easy.get(), config_);
  headers = requestHeaders(req.method, req.content_type, tokens_.token());
  curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, headers.get());
  if (mux_) {
    // h2 where the server offers it (ALPN), and every request of this
    // client on the one connection: PIPEWAIT makes requests started
    // together wait for the first connection to say whether it multiplexes
    // instead of each opening its own.
    curl_easy_setopt(easy.get(), CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    curl_easy_setopt(easy.get(), CURLOPT_PIPEWAIT, 1L);
    record(mux_->run(t, cancel), easy.get(), errbuf, &r);
    return r;
  }
  CurlMulti multi(curl_multi_init(), curl_multi_cleanup);
  curl_multi_add_handle(multi.get(), easy.get());
  CURLM* m = multi.get();
  cancel.attach(m, [m] { curl_multi_wakeup(m); });  // cancel() wakes the poll
  const Outcome outcome = run(m, cancel);
  cancel.detach(m);
  curl_multi_remove_handle(m, easy.get());
  record(outcome, easy.get(), errbuf, &r);
  return r;
}

}  // namespace smik::kube
