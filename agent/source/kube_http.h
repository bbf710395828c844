// GET against the Kubernetes API over libcurl: JSON only, bearer token or
// client certificate, CA verification on unless the config says otherwise,
// bodies streamed to a callback in whatever pieces the network delivers.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/source/kube_config.h"

namespace smik::kube {

// Aborts the requests it is passed to, now and later: for clean shutdown of
// a watch that may otherwise wait minutes for its next byte.
class Cancel {
 public:
  void cancel();
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class HttpClient;
  friend class Multiplexer;
  // `wake` is called on cancel() until detach(key): it must not call back
  // into this Cancel.
  void attach(const void* key, std::function<void()> wake);
  void detach(const void* key);
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::vector<std::pair<const void*, std::function<void()>>> active_;
};

struct HttpTimeouts {
  // Generous on purpose: an API server under load answers slowly, and a
  // tight deadline turns slowness into a retry storm.
  std::chrono::milliseconds connect{10'000};
  std::chrono::milliseconds request{30'000};  // a whole non-watch request
};

struct HttpResponse {
  long status = 0;  // 0: no HTTP response arrived
  // Non-empty: the request failed, even if a status arrived first (a watch
  // whose connection broke mid-body).
  std::string error;
  bool cancelled = false;
  bool stopped = false;                        // the body callback asked to stop reading
  std::map<std::string, std::string> headers;  // names lower-cased
  // get(): non-2xx bodies only (a Status), capped at 64 KiB; send(): any reply.
  std::string body;
};

// Every socket any HttpClient of this process opens is handed to `hook`
// before it connects: the agent keeps its own API connections out of its own
// socket programs (see agent/main.cpp). Set it before the first request.
void setSocketHook(std::function<void(int fd)> hook);

// How requests reach the API server.
enum class HttpTransport {
  // Every request of one HttpClient a stream of one HTTP/2 connection, as
  // client-go does: 14 watches cost the API server one TLS connection, not
  // 14. Servers that do not offer h2 (ALPN) get HTTP/1.1, one connection
  // per concurrent request; so does a libcurl built without HTTP/2.
  kMultiplexed,
  // One connection per request, HTTP/1.1, nothing shared: how smik spoke
  // before, kept to measure against and as a way out.
  kPerRequest,
};

// Whether this process's libcurl can speak HTTP/2.
bool curlHasHttp2();

class Multiplexer;

class HttpClient {
 public:
  HttpClient(KubeConfig config, HttpTimeouts timeouts = {},
             HttpTransport transport = HttpTransport::kMultiplexed);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Receives the 2xx body in arbitrary pieces; false stops the transfer.
  using OnData = std::function<bool(std::string_view)>;

  // `path` starts with '/' and carries its query. `timeout` bounds the whole
  // request (a watch passes its timeoutSeconds plus slack); zero: the
  // configured request timeout. A 401 with a file token re-reads the token
  // and retries once (bound tokens rotate under a long-running agent).
  HttpResponse get(const std::string& path, const OnData& on_data, Cancel& cancel,
                   std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  // A write (POST, PATCH, PUT, DELETE) with a JSON body; the reply body is
  // returned whole in HttpResponse::body, whatever the status.
  HttpResponse send(const std::string& method, const std::string& path, const std::string& body,
                    const std::string& content_type, Cancel& cancel);

  const KubeConfig& config() const { return config_; }
  // What this client actually does: kPerRequest when libcurl lacks HTTP/2.
  HttpTransport transport() const { return mux_ ? HttpTransport::kMultiplexed : HttpTransport::kPerRequest; }

 private:
  struct Request {
    std::string method, path, body, content_type;
  };
  HttpResponse perform(const Request& req, const OnData& on_data, Cancel& cancel,
                       std::chrono::milliseconds timeout);
  HttpResponse performOnce(const Request& req, const OnData& on_data, Cancel& cancel,
                           std::chrono::milliseconds timeout);
  KubeConfig config_;
  HttpTimeouts timeouts_;
  TokenSource tokens_;
  std::unique_ptr<Multiplexer> mux_;  // null: a multi handle per request
};

}  // namespace smik::kube
