#include "agent/source/kube_http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace smik::kube {
namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;
// Replies to writes (an Event, a SubjectAccessReview) are small objects.
constexpr size_t kMaxSendReply = 1024 * 1024;

struct Transfer {
  CURL* easy = nullptr;
  const HttpClient::OnData* on_data = nullptr;
  HttpResponse* response = nullptr;
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

}  // namespace

void setSocketHook(std::function<void(int fd)> hook) { socketHook() = std::move(hook); }

void Cancel::cancel() {
  cancelled_.store(true);
  std::lock_guard lock(mu_);
  for (void* m : active_) curl_multi_wakeup(static_cast<CURLM*>(m));
}

void Cancel::attach(void* multi) {
  std::lock_guard lock(mu_);
  active_.push_back(multi);
}

void Cancel::detach(void* multi) {
  std::lock_guard lock(mu_);
  active_.erase(std::remove(active_.begin(), active_.end(), multi), active_.end());
}

HttpClient::HttpClient(KubeConfig config, HttpTimeouts timeouts)
    : config_(std::move(config)), timeouts_(timeouts), tokens_(config_) {
  initCurlOnce();
}

HttpClient::~HttpClient() = default;

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
  const std::string& path = req.path;
  HttpResponse r;
  if (cancel.cancelled()) {
    r.cancelled = true;
    r.error = "cancelled";
    return r;
  }
  CURL* easy = curl_easy_init();
  CURLM* multi = curl_multi_init();
  Transfer t{easy, &on_data, &r};
  char errbuf[CURL_ERROR_SIZE] = {0};
  // tls-server-name: the certificate (and SNI) is checked against that name
  // while the connection still goes to the configured server, as Go's
  // tls.Config.ServerName does. curl has no such option; connect-to does it:
  // the URL names the certificate's host and connect-to maps it back.
  std::string url = config_.server + path;
  curl_slist* connect_to = nullptr;
  if (!config_.tls_server_name.empty()) {
    const auto scheme_end = config_.server.find("://");
    const auto host_start = scheme_end == std::string::npos ? 0 : scheme_end + 3;
    const std::string authority = config_.server.substr(host_start);
    const auto colon = authority.rfind(':');
    const bool has_port = colon != std::string::npos && authority.find(']', colon) == std::string::npos;
    const std::string host = has_port ? authority.substr(0, colon) : authority;
    const std::string port = has_port ? authority.substr(colon + 1) : "443";
    url = config_.server.substr(0, host_start) + config_.tls_server_name + ":" + port + path;
    const std::string rule = config_.tls_server_name + ":" + port + ":" + host + ":" + port;
    connect_to = curl_slist_append(nullptr, rule.c_str());
    curl_easy_setopt(easy, CURLOPT_CONNECT_TO, connect_to);
  }
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  if (req.method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
  }
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, onHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeouts_.connect.count()));
  const auto total = timeout.count() > 0 ? timeout : timeouts_.request;
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(total.count()));
  // A watch may sit idle for minutes; keepalive notices a dead peer (a
  // rebooted API server, a dropped NAT entry) long before the deadline.
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 15L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "smik-agent");
  if (socketHook()) curl_easy_setopt(easy, CURLOPT_SOCKOPTFUNCTION, onSocket);
  const std::string no_proxy = noProxyList();
  curl_easy_setopt(easy, CURLOPT_NOPROXY, no_proxy.c_str());
  if (!config_.proxy_url.empty()) curl_easy_setopt(easy, CURLOPT_PROXY, config_.proxy_url.c_str());

  if (config_.insecure_skip_tls_verify) {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  }
  // Inline data wins over a file, as in client-go.
  if (!config_.ca_data.empty())
    setBlob(easy, CURLOPT_CAINFO_BLOB, config_.ca_data);
  else if (!config_.ca_file.empty())
    curl_easy_setopt(easy, CURLOPT_CAINFO, config_.ca_file.c_str());
  if (!config_.client_cert_data.empty())
    setBlob(easy, CURLOPT_SSLCERT_BLOB, config_.client_cert_data);
  else if (!config_.client_cert_file.empty())
    curl_easy_setopt(easy, CURLOPT_SSLCERT, config_.client_cert_file.c_str());
  if (!config_.client_key_data.empty())
    setBlob(easy, CURLOPT_SSLKEY_BLOB, config_.client_key_data);
  else if (!config_.client_key_file.empty())
    curl_easy_setopt(easy, CURLOPT_SSLKEY, config_.client_key_file.c_str());

  curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
  const std::string token = tokens_.token();
  const std::string auth = "Authorization: Bearer " + token;
  if (!token.empty()) headers = curl_slist_append(headers, auth.c_str());
  const std::string content_type = "Content-Type: " + req.content_type;
  if (!req.content_type.empty()) headers = curl_slist_append(headers, content_type.c_str());
  // curl would send "Expect: 100-continue" for larger bodies and wait a second.
  if (req.method != "GET") headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);

  curl_multi_add_handle(multi, easy);
  cancel.attach(multi);
  int running = 1;
  CURLcode result = CURLE_OK;
  while (running && !cancel.cancelled()) {
    if (curl_multi_perform(multi, &running) != CURLM_OK) break;
    if (running) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  cancel.detach(multi);
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi, &queued))
    if (msg->msg == CURLMSG_DONE) result = msg->data.result;

  if (running) {
    r.cancelled = true;
    r.error = "cancelled";
    r.status = 0;
  } else if (result != CURLE_OK && !r.stopped) {
    r.error = errbuf[0] ? errbuf : curl_easy_strerror(result);
    // Headers then a broken body: the status is real but the body is not
    // complete; callers treat any error as a failed request.
    r.status = statusOf(easy);
    if (r.status == 0 && r.error.empty()) r.error = "transfer failed";
  } else {
    r.status = statusOf(easy);
  }
  curl_multi_remove_handle(multi, easy);
  curl_easy_cleanup(easy);
  curl_multi_cleanup(multi);
  curl_slist_free_all(headers);
  curl_slist_free_all(connect_to);
  return r;
}

}  // namespace smik::kube
