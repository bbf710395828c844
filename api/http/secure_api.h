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

#include "agent/source/kube_http.h"
#include "api/http/smi_metrics.h"

namespace httplib {
class Server;
}

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

// nullopt: a discovery path (the group or version), open to every
// authenticated user as the API server's own discovery is.
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
};

// Answers one SMI metrics GET (path without query, ?t= value, ?local=true).
using SmiHandler =
    std::function<SmiResponse(const std::string& path, const std::string& t, bool local_only)>;

class SecureApiServer {
 public:
  SecureApiServer();
  ~SecureApiServer();
  bool start(const SecureApiConfig& config, SmiHandler handler, Authorizer* authorizer,
             std::string* err);
  void stop();
  int port() const { return port_; }

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
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
  AggregatedApi(kube::KubeConfig kube, Options options, SmiHandler handler);
  ~AggregatedApi();
  void start();
  void stop();
  int port() const { return server_.port(); }

 private:
  void run();
  kube::HttpClient http_;
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
