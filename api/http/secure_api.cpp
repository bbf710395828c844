#include "api/http/secure_api.h"

#include <httplib.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "api/http/listen.h"

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
bool useSelfSigned(SSL_CTX* ctx) {
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
  const bool ok = X509_sign(cert, key, EVP_sha256()) > 0 &&
                  SSL_CTX_use_certificate(ctx, cert) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1;
  X509_free(cert);
  EVP_PKEY_free(key);
  return ok;
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
  json cm = json::parse(body, nullptr, false);
  const json data = cm.is_object() ? cm.value("data", json::object()) : json::object();
  RequestHeaderConfig c;
  c.client_ca_pem = data.value("requestheader-client-ca-file", "");
  if (c.client_ca_pem.empty()) {
    *err = path + ": no requestheader-client-ca-file (is the aggregation layer enabled?)";
    return std::nullopt;
  }
  c.allowed_names = jsonStrings(data.value("requestheader-allowed-names", "[]"));
  if (auto h = jsonStrings(data.value("requestheader-username-headers", "[]")); !h.empty())
    c.username_headers = h;
  if (auto h = jsonStrings(data.value("requestheader-group-headers", "[]")); !h.empty())
    c.group_headers = h;
  if (auto h = jsonStrings(data.value("requestheader-extra-headers-prefix", "[]")); !h.empty())
    c.extra_prefixes = h;
  return c;
}

std::optional<ResourceAttributes> smiAttributes(const std::string& path) {
  // /apis/metrics.smi-spec.io/v1alpha1/[namespaces/NS/]RESOURCE[/NAME[/edges]]
  static const std::regex kNamespaced(
      R"(/apis/metrics\.smi-spec\.io/v1alpha1/namespaces/([^/]+)/([^/]+)(/([^/]+)(/([^/]+))?)?/?)");
  static const std::regex kCluster(
      R"(/apis/metrics\.smi-spec\.io/v1alpha1/([^/]+)(/([^/]+)(/([^/]+))?)?/?)");
  std::smatch m;
  ResourceAttributes a;
  if (std::regex_match(path, m, kNamespaced)) {
    a.ns = m[1];
    a.resource = m[2];
    a.name = m[4];
    a.subresource = m[6];
  } else if (std::regex_match(path, m, kCluster)) {
    a.resource = m[1];
    a.name = m[3];
    a.subresource = m[5];
  } else {
    return std::nullopt;
  }
  a.verb = a.name.empty() ? "list" : "get";
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

SecureApiServer::SecureApiServer() = default;
SecureApiServer::~SecureApiServer() { stop(); }

bool SecureApiServer::start(const SecureApiConfig& config, SmiHandler handler,
                            Authorizer* authorizer, std::string* err) {
  const auto colon = config.listen.rfind(':');
  if (colon == std::string::npos) return (*err = "--secure-listen wants host:port"), false;
  if (config.cert_file.empty() != config.key_file.empty())
    return (*err = "--tls-cert-file and --tls-private-key-file go together"), false;
  const std::string host = config.listen.substr(0, colon);
  const int port = std::atoi(config.listen.substr(colon + 1).c_str());
  std::string setup_error;
  auto server = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    if (config.cert_file.empty()) {
      if (!useSelfSigned(&ctx)) return (setup_error = "cannot make a self-signed certificate"), false;
    } else if (SSL_CTX_use_certificate_chain_file(&ctx, config.cert_file.c_str()) != 1 ||
               SSL_CTX_use_PrivateKey_file(&ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return (setup_error = "cannot load " + config.cert_file + " / " + config.key_file), false;
    }
    // Only the aggregator (a client certificate from the requestheader CA)
    // may talk to us: nothing else has authenticated the user.
    if (!addCaBundle(&ctx, config.requestheader.client_ca_pem))
      return (setup_error = "no certificate in the requestheader client CA"), false;
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    return true;
  });
  if (!server->is_valid()) {
    *err = "secure API: " + (setup_error.empty() ? "TLS setup failed" : setup_error);
    return false;
  }
  server->set_tcp_nodelay(true);  // see http_server.cpp
  const RequestHeaderConfig rh = config.requestheader;
  server->Get(R"(/apis/metrics\.smi-spec\.io(/.*)?)", [rh, handler, authorizer](
                                                           const httplib::Request& req,
                                                           httplib::Response& res) {
    X509* cert = req.ssl ? SSL_get1_peer_certificate(req.ssl) : nullptr;
    if (!cert) return statusReply(res, 401, "Unauthorized", "no client certificate");
    const std::string cn = commonName(cert);
    X509_free(cert);
    if (!rh.allowed_names.empty() &&
        std::find(rh.allowed_names.begin(), rh.allowed_names.end(), cn) == rh.allowed_names.end())
      return statusReply(res, 401, "Unauthorized",
                         "client certificate " + cn + " is not an allowed request-header client");
    UserInfo user;
    for (const auto& h : rh.username_headers)
      if (req.has_header(h)) {
        user.name = req.get_header_value(h);
        break;
      }
    if (user.name.empty()) return statusReply(res, 401, "Unauthorized", "no user in the request");
    for (const auto& h : rh.group_headers)
      for (auto& g : headerValues(req, h)) user.groups.push_back(std::move(g));
    for (const auto& [name, value] : req.headers)
      for (const auto& prefix : rh.extra_prefixes)
        if (lower(name).rfind(lower(prefix), 0) == 0)
          user.extra[lower(name.substr(prefix.size()))].push_back(value);

    if (auto attrs = smiAttributes(req.path)) {
      std::string reason;
      if (!authorizer || !authorizer->allowed(user, *attrs, &reason))
        return statusReply(res, 403, "Forbidden", reason.empty() ? "forbidden" : reason);
    }
    const SmiResponse r =
        handler(req.path, req.get_param_value("t"), req.get_param_value("local") == "true");
    res.status = r.status;
    if (const std::string warning = partialWarning(r); !warning.empty())
      res.set_header("Warning", warning);
    res.set_content(r.body, "application/json");
  });
  server->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  int listen_fd = -1;
  rememberListenSocket(*server, &listen_fd);
  port_ = port == 0 ? server->bind_to_any_port(host) : (server->bind_to_port(host, port) ? port : -1);
  listenWide(listen_fd);
  if (port_ <= 0) {
    *err = "secure API: cannot listen on " + config.listen;
    return false;
  }
  server_ = std::move(server);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return true;
}

void SecureApiServer::stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

AggregatedApi::AggregatedApi(kube::KubeConfig kube, Options options, SmiHandler handler)
    : http_(std::move(kube)),
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
  while (true) {
    std::string err;
    std::optional<RequestHeaderConfig> rh;
    if (!options_.requestheader_ca_file.empty()) {
      std::ifstream f(options_.requestheader_ca_file);
      std::stringstream pem;
      pem << f.rdbuf();
      if (f && !pem.str().empty()) {
        rh = RequestHeaderConfig{};
        rh->client_ca_pem = pem.str();
      } else {
        err = "cannot read " + options_.requestheader_ca_file;
      }
    } else {
      rh = loadRequestHeaderConfig(http_, cancel_, &err);
    }
    if (rh) {
      if (!options_.allowed_names.empty()) rh->allowed_names = options_.allowed_names;
      SecureApiConfig c = options_.server;
      c.requestheader = *rh;
      if (server_.start(c, handler_, &reviewer_, &err)) {
        spdlog::info("TrafficMetrics API (APIService) on https://{} ({} certificate)", c.listen,
                     c.cert_file.empty() ? "self-signed" : c.cert_file);
        return;
      }
    }
    if (err != last_error) spdlog::warn("aggregated API not served yet, retrying: {}", err);
    last_error = err;
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, backoff, [this] { return stopping_; })) return;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30'000));
  }
}

}  // namespace smik::api
