#include "api/http/secure_api.h"

#include "api/http/smi_routes.h"

#include <httplib.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace smik::api {
namespace {

using json = nlohmann::json;

std::vector<std::string> jsonStrings(const std::string& text) {
  std::vector<std::string> out;
  json j = json::parse(text, nullptr, false);
  if (j.is_array())
    for (const auto& s : j)
      if (s.is_string()) out.push_back(s.get<std::string>());
  return out;
}

void statusReply(httplib::Response& res, int code, const std::string& reason,
                 const std::string& message) {
  res.status = code;
  res.set_content(json{{"kind", "Status"},
                       {"apiVersion", "v1"},
                       {"metadata", json::object()},
                       {"status", "Failure"},
                       {"message", message},
                       {"reason", reason},
                       {"code", code}}
                      .dump(),
                  "application/json");
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string commonName(X509* cert) {
  char cn[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn - 1);
  return cn;
}

// Every certificate of a PEM bundle into the context's trust store.
bool addCaBundle(SSL_CTX* ctx, const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
  int n = 0;
  while (X509* c = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, c);
    sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(c)));
    X509_free(c);
    ++n;
  }
  ERR_clear_error();  // the end of the bundle reads as an error
  BIO_free(bio);
  SSL_CTX_set_client_CA_list(ctx, names);
  return n > 0;
}

// A self-signed serving certificate (P-256, one year): enough for an
// APIService with insecureSkipTLSVerify, and for tests.
bool makeSelfSigned(std::shared_ptr<X509>* cert_out, std::shared_ptr<EVP_PKEY>* key_out) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (!key) return false;
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), static_cast<long>(time(nullptr)));
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 365L * 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("smik-api"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  if (X509_EXTENSION* san = X509V3_EXT_conf_nid(
          nullptr, &v3, NID_subject_alt_name,
          "DNS:smik-api.smik-system.svc,DNS:smik-api.smik-system.svc.cluster.local,DNS:localhost,"
          "IP:127.0.0.1")) {
    X509_add_ext(cert, san, -1);
    X509_EXTENSION_free(san);
  }
  cert_out->reset(cert, X509_free);
  key_out->reset(key, EVP_PKEY_free);
  return X509_sign(cert, key, EVP_sha256()) > 0;
}

std::string readWhole(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return f ? s.str() : "";
}

// What changes when a file is replaced, also through the symlink swap a
// Kubernetes Secret volume makes; "" for a file that is not there.
std::string fileSignature(const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

std::vector<std::string> headerValues(const httplib::Request& req, const std::string& name) {
  std::vector<std::string> out;
  const size_t n = req.get_header_value_count(name);
  for (size_t i = 0; i < n; ++i) out.push_back(req.get_header_value(name, i));
  return out;
}

}  // namespace

std::optional<RequestHeaderConfig> loadRequestHeaderConfig(kube::HttpClient& http,
                                                           kube::Cancel& cancel, std::string* err) {
  const std::string path =
      "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
  std::string body;
  kube::HttpResponse r = http.get(
      path,
      [&body](std::string_view piece) {
        body.append(piece);
        return true;
      },
      cancel);
  if (!r.error.empty() || r.status != 200) {
    *err = path + ": " + (r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error);
    return std::nullopt;
  }
  const json cm = json::parse(body, nullptr, false);
  const auto data_it = cm.is_object() ? cm.find("data") : cm.end();
  const json data = data_it != cm.end() && data_it->is_object() ? *data_it : json::object();
  const auto entry = [&](const char* key) {
    const auto it = data.find(key);
    return it != data.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  RequestHeaderConfig c;
  c.client_ca_pem = entry("requestheader-client-ca-file");
  if (c.client_ca_pem.empty()) {
    *err = path + ": no requestheader-client-ca-file (is the aggregation layer enabled?)";
    return std::nullopt;
  }
  c.allowed_names = jsonStrings(entry("requestheader-allowed-names"));
  if (auto h = jsonStrings(entry("requestheader-username-headers")); !h.empty())
    c.username_headers = h;
  if (auto h = jsonStrings(entry("requestheader-group-headers")); !h.empty()) c.group_headers = h;
  if (auto h = jsonStrings(entry("requestheader-extra-headers-prefix")); !h.empty())
    c.extra_prefixes = h;
  return c;
}

std::optional<ResourceAttributes> smiAttributes(const std::string& path) {
  const SmiTarget t = parseSmiPath(path);
  using Kind = SmiTarget::Kind;
  if (t.kind == Kind::kNotFound || t.kind == Kind::kDiscovery) return std::nullopt;
  ResourceAttributes a;
  a.verb = t.kind == Kind::kList ? "list" : "get";
  a.resource = t.resource;
  a.ns = t.ns;
  a.name = t.name;
  if (t.kind == Kind::kEdges) a.subresource = "edges";
  return a;
}

SubjectAccessReviewer::SubjectAccessReviewer(kube::HttpClient& http, std::chrono::milliseconds ttl)
    : http_(http), ttl_(ttl) {}

bool SubjectAccessReviewer::allowed(const UserInfo& user, const ResourceAttributes& a,
                                    std::string* reason) {
  json extra = json::object();
  for (const auto& [k, v] : user.extra) extra[k] = v;
  json spec = {{"user", user.name},
               {"groups", user.groups},
               {"extra", extra},
               {"resourceAttributes",
                {{"group", "metrics.smi-spec.io"},
                 {"version", "v1alpha1"},
                 {"resource", a.resource},
                 {"subresource", a.subresource},
                 {"namespace", a.ns},
                 {"name", a.name},
                 {"verb", a.verb}}}};
  const std::string key = spec.dump();
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && now - it->second.at < ttl_) {
      *reason = it->second.reason;
      return it->second.allowed;
    }
    // Bounded: distinct questions are few (users x resources), but a
    // client can make them many.
    if (cache_.size() > 4096) cache_.clear();
  }
  json review = {{"apiVersion", "authorization.k8s.io/v1"},
                 {"kind", "SubjectAccessReview"},
                 {"spec", spec}};
  kube::HttpResponse r = http_.send("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                    review.dump(), "application/json", cancel_);
  json reply = json::parse(r.body, nullptr, false);
  if (!r.error.empty() || r.status < 200 || r.status > 299 || !reply.is_object()) {
    // Not cached: the next request asks again.
    *reason = "authorization check failed: " +
              (r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error);
    return false;
  }
  const json st = reply.value("status", json::object());
  Decision d{st.value("allowed", false), st.value("reason", ""), now};
  if (!d.allowed && d.reason.empty())
    d.reason = "user \"" + user.name + "\" cannot " + a.verb + " " + a.resource +
               ".metrics.smi-spec.io" + (a.ns.empty() ? "" : " in namespace " + a.ns);
  std::lock_guard lock(mu_);
  cache_[key] = d;
  *reason = d.reason;
  return d.allowed;
}

std::optional<std::string> clientCertificateName(const httplib::Request& req) {
  X509* cert = req.ssl ? SSL_get1_peer_certificate(req.ssl) : nullptr;
  if (!cert) return std::nullopt;
  std::string cn = commonName(cert);
  X509_free(cert);
  return cn;
}

Router secureApiRoutes(SecureRoutes s) {
  Router router;
  router.add({"/healthz",
              [](const RoutedRequest&, httplib::Response& res) {
                res.set_content("ok\n", "text/plain");
              },
              /*prefix=*/false, /*local_only=*/false, /*probe=*/true});
  router.add({"/apis/metrics.smi-spec.io",
              [s](const RoutedRequest& rr, httplib::Response& res) {
                const httplib::Request& req = rr.http;
                const std::shared_ptr<const RequestHeaderConfig> rh = s.requestheader();
                const std::optional<std::string> cn = s.client_name(req);
                if (!cn) return statusReply(res, 401, "Unauthorized", "no client certificate");
                if (!rh->allowed_names.empty() &&
                    std::find(rh->allowed_names.begin(), rh->allowed_names.end(), *cn) ==
                        rh->allowed_names.end())
                  return statusReply(
                      res, 401, "Unauthorized",
                      "client certificate " + *cn + " is not an allowed request-header client");
                UserInfo user;
                for (const auto& h : rh->username_headers)
                  if (req.has_header(h)) {
                    user.name = req.get_header_value(h);
                    break;
                  }
                if (user.name.empty())
                  return statusReply(res, 401, "Unauthorized", "no user in the request");
                for (const auto& h : rh->group_headers)
                  for (auto& g : headerValues(req, h)) user.groups.push_back(std::move(g));
                for (const auto& [name, value] : req.headers)
                  for (const auto& prefix : rh->extra_prefixes)
                    if (lower(name).rfind(lower(prefix), 0) == 0)
                      user.extra[lower(name.substr(prefix.size()))].push_back(value);

                // The canonical path, authorized and then answered: one reading.
                if (auto attrs = smiAttributes(rr.path)) {
                  std::string reason;
                  if (!s.authorizer || !s.authorizer->allowed(user, *attrs, &reason))
                    return statusReply(res, 403, "Forbidden",
                                       reason.empty() ? "forbidden" : reason);
                }
                writeSmiResponse(s.handler(rr.path, req.get_param_value("t"),
                                           req.get_param_value("local") == "true"),
                                 res);
              },
              /*prefix=*/true});
  return router;
}

SecureApiServer::SecureApiServer() = default;
SecureApiServer::~SecureApiServer() { stop(); }

std::shared_ptr<SSL_CTX> SecureApiServer::context() const {
  std::lock_guard lock(mu_);
  return context_;
}

std::shared_ptr<const RequestHeaderConfig> SecureApiServer::requestHeader() const {
  std::lock_guard lock(mu_);
  return requestheader_;
}

bool SecureApiServer::reload(std::string* err) {
  std::string ca_pem;
  if (!config_.client_ca_file.empty()) {
    ca_pem = readWhole(config_.client_ca_file);
    if (ca_pem.empty()) return (*err = "cannot read " + config_.client_ca_file), false;
  } else {
    ca_pem = requestHeader()->client_ca_pem;
  }
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) return (*err = "cannot make a TLS context"), false;
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (config_.cert_file.empty()) {
    if (SSL_CTX_use_certificate(ctx.get(), self_signed_cert_.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx.get(), self_signed_key_.get()) != 1)
      return (*err = "cannot use the self-signed certificate"), false;
  } else if (SSL_CTX_use_certificate_chain_file(ctx.get(), config_.cert_file.c_str()) != 1 ||
             SSL_CTX_use_PrivateKey_file(ctx.get(), config_.key_file.c_str(), SSL_FILETYPE_PEM) !=
                 1 ||
             SSL_CTX_check_private_key(ctx.get()) != 1) {
    ERR_clear_error();
    return (*err = "cannot load " + config_.cert_file + " / " + config_.key_file), false;
  }
  // Only the aggregator (a client certificate from the requestheader CA)
  // may talk to us: nothing else has authenticated the user.
  if (!addCaBundle(ctx.get(), ca_pem))
    return (*err = "no certificate in the requestheader client CA"), false;
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  std::lock_guard lock(mu_);
  context_ = std::move(ctx);
  return true;
}

namespace {

// What start() refuses before it touches anything.
Result<void> checkConfig(const SecureApiConfig& config) {
  if (Result<HostPort> where = parseListenAddress(config.listen); !where)
    return fail("--secure-listen wants host:port: " + where.error());
  if (config.cert_file.empty() != config.key_file.empty())
    return fail("--tls-cert-file and --tls-private-key-file go together");
  return {};
}

}  // namespace

// The first TLS context: from the files, or a self-signed certificate made
// now when there are none.
Result<void> SecureApiServer::loadCertificates() {
  if (config_.cert_file.empty() && !makeSelfSigned(&self_signed_cert_, &self_signed_key_))
    return fail("secure API: cannot make a self-signed certificate");
  if (std::string why; !reload(&why)) return fail("secure API: " + why);
  return {};
}

Result<void> SecureApiServer::listen(SmiHandler handler, Authorizer* authorizer) {
  auto listener = std::make_unique<Listener>(
      secureApiRoutes({[this] { return requestHeader(); }, clientCertificateName,
                       std::move(handler), authorizer}),
      config_.limits);
  if (std::string why; !listener->start(config_.listen, &why, [this] { return context(); }))
    return fail("secure API: " + why);
  listener_ = std::move(listener);
  return {};
}

bool SecureApiServer::start(const SecureApiConfig& config, SmiHandler handler,
                            Authorizer* authorizer, std::string* err) {
  Result<void> started = checkConfig(config);
  if (started) {
    config_ = config;
    requestheader_ = std::make_shared<const RequestHeaderConfig>(config.requestheader);
    started = loadCertificates();
  }
  if (started) started = listen(std::move(handler), authorizer);
  if (!started) return (*err = started.error()), false;
  stopping_ = false;
  watcher_ = std::thread([this] { watchFiles(); });  // certificates rotate
  return true;
}

void SecureApiServer::watchFiles() {
  const auto signature = [this] {
    return fileSignature(config_.cert_file) + "|" + fileSignature(config_.key_file) + "|" +
           fileSignature(config_.client_ca_file);
  };
  std::string applied = signature(), failed;
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, config_.reload_interval, [this] { return stopping_; })) {
    lock.unlock();
    const std::string now = signature();
    if (now != applied && now != failed) {
      std::string err;
      if (reload(&err)) {
        applied = now;
        failed.clear();
        spdlog::info("secure API: certificates reloaded ({})",
                     config_.cert_file.empty() ? config_.client_ca_file : config_.cert_file);
      } else {
        failed = now;  // tried once per change: the next write may complete it
        spdlog::warn("secure API: keeping the certificates in use: {}", err);
      }
    }
    lock.lock();
  }
}

void SecureApiServer::setRequestHeader(const RequestHeaderConfig& requestheader) {
  const bool new_ca = requestHeader()->client_ca_pem != requestheader.client_ca_pem;
  {
    std::lock_guard lock(mu_);
    requestheader_ = std::make_shared<const RequestHeaderConfig>(requestheader);
  }
  std::string err;
  if (new_ca && config_.client_ca_file.empty() && !reload(&err))
    spdlog::warn("secure API: keeping the requestheader CA in use: {}", err);
}

void SecureApiServer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (listener_) listener_->stop();
  listener_.reset();
}

AggregatedApi::AggregatedApi(kube::HttpClient& http, Options options, SmiHandler handler)
    : http_(http),
      options_(std::move(options)),
      handler_(std::move(handler)),
      reviewer_(http_) {}

AggregatedApi::~AggregatedApi() { stop(); }

void AggregatedApi::start() { thread_ = std::thread([this] { run(); }); }

void AggregatedApi::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  cancel_.cancel();
  if (thread_.joinable()) thread_.join();
  server_.stop();
}

void AggregatedApi::run() {
  auto backoff = std::chrono::milliseconds(500);
  std::string last_error;
  const bool from_configmap = options_.requestheader_ca_file.empty();
  const auto wait = [this](std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, d, [this] { return stopping_; });
  };
  // The ConfigMap's headers and names, or defaults with the CA file's CA
  // (the server reads that file, and again when it changes).
  const auto requestHeader = [&](std::string* err) -> std::optional<RequestHeaderConfig> {
    std::optional<RequestHeaderConfig> rh =
        from_configmap ? loadRequestHeaderConfig(http_, cancel_, err) : RequestHeaderConfig{};
    if (rh && !options_.allowed_names.empty()) rh->allowed_names = options_.allowed_names;
    return rh;
  };
  while (true) {
    std::string err;
    if (std::optional<RequestHeaderConfig> rh = requestHeader(&err)) {
      SecureApiConfig c = options_.server;
      c.requestheader = *rh;
      c.client_ca_file = options_.requestheader_ca_file;
      if (server_.start(c, handler_, &reviewer_, &err)) {
        spdlog::info("TrafficMetrics API (APIService) on https://{} ({} certificate)", c.listen,
                     c.cert_file.empty() ? "self-signed" : c.cert_file);
        break;
      }
    }
    if (err != last_error) spdlog::warn("aggregated API not served yet, retrying: {}", err);
    last_error = err;
    if (!wait(backoff)) return;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30'000));
  }
  // The cluster's front-proxy CA rotates: the ConfigMap is read again now
  // and then, as the files are (SecureApiServer).
  while (from_configmap && wait(std::chrono::minutes(1))) {
    std::string err;
    if (std::optional<RequestHeaderConfig> rh = requestHeader(&err))
      server_.setRequestHeader(*rh);
    else
      spdlog::debug("requestheader ConfigMap not re-read: {}", err);
  }
}

}  // namespace smik::api
