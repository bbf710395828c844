// The TrafficMetrics API as an aggregated API server: what the
// `v1alpha1.metrics.smi-spec.io` APIService points at. The kube-apiserver
// authenticates the user and proxies the request with its front-proxy client
// certificate and X-Remote-* headers; we verify that certificate against the
// cluster's requestheader CA, then ask the API server whether that user may
// read that resource (SubjectAccessReview), as metrics-server does.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <openssl/ssl.h>

#include "agent/base/result.h"
#include "agent/source/kube_http.h"
#include "api/http/listen.h"
#include "api/http/router.h"
#include "api/smi/smi_metrics.h"

namespace smik::api {

// The extension-apiserver-authentication ConfigMap's requestheader part.
struct RequestHeaderConfig {
  std::string client_ca_pem;  // trust for the aggregator's client certificate
  std::vector<std::string> allowed_names;  // CNs allowed; empty: any the CA signed
  std::vector<std::string> username_headers = {"X-Remote-User"};
  std::vector<std::string> group_headers = {"X-Remote-Group"};
  std::vector<std::string> extra_prefixes = {"X-Remote-Extra-"};
};

// Reads kube-system/extension-apiserver-authentication. nullopt with *err
// when it cannot be read (yet).
std::optional<RequestHeaderConfig> loadRequestHeaderConfig(kube::HttpClient& http,
                                                           kube::Cancel& cancel, std::string* err);

struct UserInfo {
  std::string name;
  std::vector<std::string> groups;
  std::map<std::string, std::vector<std::string>> extra;
};

// What a request asks for, in RBAC terms.
struct ResourceAttributes {
  std::string verb;  // get | list
  std::string resource, subresource, ns, name;
};

// What a canonical path (api/http/router.h) asks for, read as the SMI API
// answers it (parseSmiPath). nullopt: discovery (the version), open to every
// authenticated user as the API server's own discovery is, or a path that
// is answered 404 and nothing else.
std::optional<ResourceAttributes> smiAttributes(const std::string& path);

class Authorizer {
 public:
  virtual ~Authorizer() = default;
  // False with *reason when denied or when the answer could not be had.
  virtual bool allowed(const UserInfo& user, const ResourceAttributes& attrs, std::string* reason) = 0;
};

// Delegated authorization: one SubjectAccessReview per distinct question,
// remembered for `ttl` (client-go's delegating authorizer caches the same way).
class SubjectAccessReviewer : public Authorizer {
 public:
  explicit SubjectAccessReviewer(kube::HttpClient& http,
                                 std::chrono::milliseconds ttl = std::chrono::seconds(10));
  bool allowed(const UserInfo& user, const ResourceAttributes& attrs, std::string* reason) override;

 private:
  struct Decision {
    bool allowed = false;
    std::string reason;
    std::chrono::steady_clock::time_point at;
  };
  kube::HttpClient& http_;
  const std::chrono::milliseconds ttl_;
  kube::Cancel cancel_;
  std::mutex mu_;
  std::map<std::string, Decision> cache_;
};

struct SecureApiConfig {
  std::string listen;  // "0.0.0.0:9443"
  // Serving certificate; both empty: a self-signed one is made at start
  // (the plain manifests' APIService skips verification, as metrics-server's do).
  std::string cert_file, key_file;
  RequestHeaderConfig requestheader;
  // Set: the requestheader client CA is read from this file instead of
  // requestheader.client_ca_pem.
  std::string client_ca_file;
  // How often the certificate, key and CA files are checked for changes; a
  // change applies to every new connection, without a restart (as
  // metrics-server's dynamic certificates). A pair that does not load (a
  // key written before its certificate) keeps the old one until it does.
  std::chrono::milliseconds reload_interval{std::chrono::seconds(10)};
  ListenLimits limits;
};

// Answers one SMI metrics GET (canonical path, ?t= value, ?local=true).
using SmiHandler =
    std::function<SmiResponse(const std::string& path, const std::string& t, bool local_only)>;

// The CN of the client certificate a request arrived with; nullopt without one.
std::optional<std::string> clientCertificateName(const httplib::Request& req);

// The aggregated API's routes: /healthz, and every path under
// /apis/metrics.smi-spec.io authenticated (a client certificate, among
// requestheader's allowed names when it has any, and a user in its
// headers), then authorized (unless discovery) for the very path the
// handler answers: the router's canonical one.
struct SecureRoutes {
  std::function<std::shared_ptr<const RequestHeaderConfig>()> requestheader;
  std::function<std::optional<std::string>(const httplib::Request&)> client_name =
      clientCertificateName;
  SmiHandler handler;
  Authorizer* authorizer = nullptr;
};
Router secureApiRoutes(SecureRoutes routes);

class SecureApiServer {
 public:
  SecureApiServer();
  ~SecureApiServer();
  bool start(const SecureApiConfig& config, SmiHandler handler, Authorizer* authorizer,
             std::string* err);
  void stop();
  int port() const { return listener_ ? listener_->port() : 0; }
  // The ConfigMap read again: its CA for new connections, its names and
  // headers for new requests.
  void setRequestHeader(const RequestHeaderConfig& requestheader);

 private:
  std::shared_ptr<SSL_CTX> context() const;
  std::shared_ptr<const RequestHeaderConfig> requestHeader() const;
  // A context from the files as they are now; false (and *err) if they do
  // not make one.
  bool reload(std::string* err);
  // start()'s steps.
  Result<void> loadCertificates();
  Result<void> listen(SmiHandler handler, Authorizer* authorizer);
  void watchFiles();

  SecureApiConfig config_;
  std::shared_ptr<X509> self_signed_cert_;
  std::shared_ptr<EVP_PKEY> self_signed_key_;
  mutable std::mutex mu_;
  std::shared_ptr<SSL_CTX> context_;
  std::shared_ptr<const RequestHeaderConfig> requestheader_;
  std::unique_ptr<Listener> listener_;
  std::thread watcher_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

// The agent's aggregated API: reads the requestheader CA (from a file, or
// the ConfigMap, retrying until the API server answers: enforcement must not
// wait for it) and then serves. For main().
class AggregatedApi {
 public:
  struct Options {
    SecureApiConfig server;              // requestheader filled in at start
    std::string requestheader_ca_file;   // instead of the ConfigMap's
    std::vector<std::string> allowed_names;
  };
  // Its requests (the requestheader ConfigMap, SubjectAccessReviews) are
  // streams on `http`, the source's client: an agent keeps one connection to
  // the API server, as client-go's processes do. `http` outlives this.
  AggregatedApi(kube::HttpClient& http, Options options, SmiHandler handler);
  ~AggregatedApi();
  void start();
  void stop();
  int port() const { return server_.port(); }

 private:
  void run();
  kube::HttpClient& http_;
  const Options options_;
  SmiHandler handler_;
  SubjectAccessReviewer reviewer_;
  SecureApiServer server_;
  kube::Cancel cancel_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace smik::api
