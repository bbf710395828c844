// Where the Kubernetes API is and how to authenticate to it: from a kubeconfig
// file (developer use) or from the pod's service account (in-cluster).
// Loading never throws; a problem is an error string naming the file/field.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace smik::kube {

struct KubeConfig {
  std::string server;  // "https://host:port", no trailing slash
  // Trust: a PEM file (re-read for every connection, so CA rotation works)
  // and/or PEM bytes. Both empty: the system trust store.
  std::string ca_file;
  std::string ca_data;
  bool insecure_skip_tls_verify = false;
  std::string tls_server_name;  // the name the server's certificate is checked against
  // kubeconfig proxy-url. Empty: the *_proxy environment, as client-go does.
  std::string proxy_url;
  // Bearer token: a literal, or a file re-read by TokenSource (bound
  // service-account tokens rotate; a token cached for life expires).
  std::string token;
  std::string token_file;
  // Client certificate and key: a PEM file or PEM bytes each.
  std::string client_cert_file;
  std::string client_cert_data;
  std::string client_key_file;
  std::string client_key_data;
  std::string ns;  // the context's (or service account's) namespace; may be empty
};

struct ConfigResult {
  std::optional<KubeConfig> config;
  std::string error;
};

// One kubeconfig file. `context` empty: current-context. Relative paths in
// the file are resolved against the file's directory, as kubectl does.
ConfigResult loadKubeconfigFile(const std::string& path, const std::string& context = "");

// `paths` as in KUBECONFIG (':'-separated). Files are merged like kubectl:
// the first file that defines a named cluster/user/context or
// current-context wins; missing files are skipped.
ConfigResult loadKubeconfig(const std::string& paths, const std::string& context = "");

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

// The pod's own service account. `getenv` is injectable so tests need not
// touch the process environment; `sa_dir` so they need not be in a pod.
ConfigResult loadInCluster(const std::function<const char*(const char*)>& getenv,
                           const std::string& sa_dir = kServiceAccountDir);

// RFC 4648 with padding optional; whitespace ignored. nullopt on bad input.
std::optional<std::string> base64Decode(const std::string& in);

// The bearer token to send now. A file token is re-read once `refresh` has
// passed (client-go: one minute) and at once after invalidate() (a 401).
// Thread-safe: reflectors share one.
class TokenSource {
 public:
  using Clock = std::chrono::steady_clock;
  TokenSource(std::string token, std::string token_file,
              std::chrono::milliseconds refresh = std::chrono::minutes(1));
  explicit TokenSource(const KubeConfig& c) : TokenSource(c.token, c.token_file) {}

  std::string token();
  // The server refused the token: the next token() re-reads the file.
  void invalidate();
  // A file token can change by re-reading; a literal one cannot.
  bool refreshable() const { return !token_file_.empty(); }

 private:
  std::mutex mu_;
  std::string token_;
  const std::string token_file_;
  const std::chrono::milliseconds refresh_;
  std::optional<Clock::time_point> read_at_;
};

}  // namespace smik::kube
