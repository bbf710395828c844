// The aggregated-API listener: only clients with a certificate from the
// requestheader CA get in, the user comes from the X-Remote-* headers, and
// every resource request is authorized by a SubjectAccessReview against the
// (fake) API server.
#include "api/http/secure_api.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "tests/kube/fake_cluster.h"
#include "tests/support/eventually.h"
#include "tests/testbed/certs.h"
#include "tests/support/raw_http.h"

namespace smik::api {
namespace {

using json = nlohmann::json;
using smik::testing::FakeCluster;

const std::string kTls = SMIK_KUBE_FIXTURES_DIR "/tls";

std::string readFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class SecureApi : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeCluster::Options o;
    o.tls = true;
    o.tls_dir = kTls;
    cluster_ = std::make_unique<FakeCluster>(o);
    kube::KubeConfig k;
    k.server = cluster_->url();
    k.ca_file = kTls + "/ca.crt";
    k.token = "smik-test-token";
    http_ = std::make_unique<kube::HttpClient>(k);
    reviewer_ = std::make_unique<SubjectAccessReviewer>(*http_);
  }

  // Starts the listener with the requestheader CA from the fake cluster's
  // extension-apiserver-authentication ConfigMap.
  void start(const std::string& client_ca_file, const std::string& allowed_names = "[]",
             bool with_cert_files = false,
             const std::function<void(SecureApiConfig&)>& tweak = nullptr) {
    cluster_->apply({{"apiVersion", "v1"},
                     {"kind", "ConfigMap"},
                     {"metadata", {{"name", "extension-apiserver-authentication"},
                                   {"namespace", "kube-system"}}},
                     {"data",
                      {{"requestheader-client-ca-file", readFile(client_ca_file)},
                       {"requestheader-allowed-names", allowed_names},
                       {"requestheader-username-headers", "[\"X-Remote-User\"]"},
                       {"requestheader-group-headers", "[\"X-Remote-Group\"]"},
                       {"requestheader-extra-headers-prefix", "[\"X-Remote-Extra-\"]"}}}});
    kube::Cancel cancel;
    std::string err;
    auto rh = loadRequestHeaderConfig(*http_, cancel, &err);
    ASSERT_TRUE(rh) << err;
    SecureApiConfig c;
    c.listen = "127.0.0.1:0";
    c.requestheader = *rh;
    if (with_cert_files) {
      c.cert_file = kTls + "/server.crt";
      c.key_file = kTls + "/server.key";
    }
    if (tweak) tweak(c);
    // A pod named "partial": a node did not answer (unless ?local=true).
    auto handler = [](const std::string& path, const std::string& t, bool local_only) {
      SmiResponse r{
          200,
          json{{"kind", "TrafficMetrics"}, {"path", path}, {"t", t}, {"local", local_only}}.dump(),
          {}};
      if (!local_only && path.ends_with("/partial")) r.missing_nodes = {"node-b"};
      return r;
    };
    ASSERT_TRUE(server_.start(c, handler, reviewer_.get(), &err)) << err;
  }

  std::unique_ptr<httplib::SSLClient> client(bool with_cert = true) {
    auto c = with_cert ? std::make_unique<httplib::SSLClient>("127.0.0.1", server_.port(),
                                                               kTls + "/client.crt",
                                                               kTls + "/client.key")
                       : std::make_unique<httplib::SSLClient>("127.0.0.1", server_.port());
    c->enable_server_certificate_verification(false);  // self-signed serving cert
    return c;
  }

  std::unique_ptr<FakeCluster> cluster_;
  std::unique_ptr<kube::HttpClient> http_;
  std::unique_ptr<SubjectAccessReviewer> reviewer_;
  SecureApiServer server_;
};

const httplib::Headers kAlice = {{"X-Remote-User", "alice"},
                                 {"X-Remote-Group", "devs"},
                                 {"X-Remote-Group", "system:authenticated"},
                                 {"X-Remote-Extra-Scopes", "read"}};

TEST_F(SecureApi, AuthorizedUserGetsTheMetricsAndTheReviewAsksTheRightQuestion) {
  start(kTls + "/ca.crt");
  cluster_->setAuthorizer([](const json& spec) { return spec["user"] == "alice"; });
  auto res = client()->Get(
      "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/deployments/web/edges?t=1m", kAlice);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["t"], "1m");
  ASSERT_EQ(cluster_->reviews().size(), 1u);
  json spec = cluster_->reviews()[0];
  EXPECT_EQ(spec["user"], "alice");
  EXPECT_EQ(spec["groups"], json({"devs", "system:authenticated"}));
  EXPECT_EQ(spec["extra"]["scopes"], json({"read"}));
  EXPECT_EQ(spec["resourceAttributes"]["group"], "metrics.smi-spec.io");
  EXPECT_EQ(spec["resourceAttributes"]["resource"], "deployments");
  EXPECT_EQ(spec["resourceAttributes"]["subresource"], "edges");
  EXPECT_EQ(spec["resourceAttributes"]["namespace"], "shop");
  EXPECT_EQ(spec["resourceAttributes"]["name"], "web");
  EXPECT_EQ(spec["resourceAttributes"]["verb"], "get");

  // The same question again is answered from the cache.
  res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/deployments/web/edges",
                      kAlice);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(cluster_->reviews().size(), 1u);
}

// What the API server's aggregator proxies back: ?local=true reaches the
// handler, and a partial answer's Warning header reaches kubectl.
TEST_F(SecureApi, LocalOnlyAndThePartialWarningPassThrough) {
  start(kTls + "/ca.crt");
  cluster_->setAuthorizer([](const json&) { return true; });
  auto res =
      client()->Get("/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/pods/partial", kAlice);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["local"], false);
  EXPECT_EQ(res->get_header_value("Warning"),
            "299 - \"partial TrafficMetrics: no answer from node(s) node-b\"");
  res = client()->Get(
      "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/pods/partial?local=true", kAlice);
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["local"], true);
  EXPECT_FALSE(res->has_header("Warning"));
}

TEST_F(SecureApi, DeniedUserGetsForbiddenAndDiscoveryNeedsNoReview) {
  start(kTls + "/ca.crt");
  auto res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1/pods", kAlice);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403);
  json status = json::parse(res->body);
  EXPECT_EQ(status["kind"], "Status");
  EXPECT_EQ(status["reason"], "Forbidden");
  EXPECT_EQ(cluster_->reviews().at(0)["resourceAttributes"]["verb"], "list");

  res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1", kAlice);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(cluster_->reviews().size(), 1u);
}

TEST_F(SecureApi, NoUserHeaderIsUnauthorized) {
  start(kTls + "/ca.crt");
  auto res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1/pods");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
}

TEST_F(SecureApi, ClientWithoutCertificateIsRefusedAtTheHandshake) {
  start(kTls + "/ca.crt");
  auto res = client(false)->Get("/apis/metrics.smi-spec.io/v1alpha1", kAlice);
  EXPECT_FALSE(res && res->status == 200);
}

TEST_F(SecureApi, CertificateFromAnotherCaIsRefused) {
  start(kTls + "/other-ca.crt");
  auto res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1", kAlice);
  EXPECT_FALSE(res && res->status == 200);
}

TEST_F(SecureApi, CertificateNotAmongTheAllowedNamesIsUnauthorized) {
  start(kTls + "/ca.crt", "[\"front-proxy-client\"]");
  cluster_->setAuthorizer([](const json&) { return true; });
  auto res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1/pods", kAlice);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401) << res->body;
  EXPECT_TRUE(cluster_->reviews().empty());
}

TEST_F(SecureApi, ServesWithTheGivenCertificate) {
  start(kTls + "/ca.crt", "[\"smik-agent\"]", true);
  cluster_->setAuthorizer([](const json&) { return true; });
  httplib::SSLClient c("127.0.0.1", server_.port(), kTls + "/client.crt", kTls + "/client.key");
  c.set_ca_cert_path((kTls + "/ca.crt").c_str());
  c.enable_server_certificate_verification(true);
  auto res = c.Get("/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/pods", kAlice);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
}

// Every spelling of a path that one reader could take one way and another
// reader another (the authorizer, the router, the handler): refused before
// any of them, never answered without a review. The authorizer here says no
// to everything, and the handler answers 200 to whatever reaches it.
TEST_F(SecureApi, PathTricksAreRefusedNeverServedUnreviewed) {
  start(kTls + "/ca.crt");
  auto c = client();
  c->set_url_encode(false);  // sent as written
  const std::string base = "/apis/metrics.smi-spec.io/v1alpha1";
  for (const std::string& path :
       {base + "/namespaces/shop/pods//", base + "/namespaces/shop//pods",
        base + "//namespaces/shop/pods", base + "/namespaces/shop/pods/.",
        base + "/namespaces/shop/pods/./web", base + "/namespaces/other/../shop/pods",
        base + "/./namespaces/shop/pods", base + "/namespaces/shop/pods/%2e%2e",
        base + "/namespaces%2Fshop/pods", base + "/namespaces/shop/pods%2Fweb",
        base + "/%6eamespaces/shop/pods", base + "/namespaces/shop/pods/web%00",
        base + "/namespaces/shop/pods\\..\\web", "/" + base + "/pods",
        base + "/pods/", base + "/namespaces/shop/edges", base + "/namespaces/shop/pods/web/edges/",
        base + "/namespaces/shop/pods?x=/../"}) {
    auto res = c->Get(path, kAlice);
    ASSERT_TRUE(res) << path << ": " << httplib::to_string(res.error());
    EXPECT_TRUE(res->status == 400 || res->status == 403 || res->status == 404)
        << path << ": " << res->status << " " << res->body;
  }
}

// What is reviewed is what is answered: the canonical path, read once
// (parseSmiPath) for both.
TEST_F(SecureApi, TheReviewedResourceIsTheServedOne) {
  start(kTls + "/ca.crt");
  cluster_->setAuthorizer([](const json&) { return true; });
  auto c = client();
  const std::string base = "/apis/metrics.smi-spec.io/v1alpha1";
  struct Case {
    std::string path, served, resource, ns, name, subresource, verb;
  };
  for (const Case& k : std::vector<Case>{
           {base + "/namespaces/shop/pods/", base + "/namespaces/shop/pods", "pods", "shop", "",
            "", "list"},
           {base + "/namespaces/shop/edges", base + "/namespaces/shop/edges", "namespaces", "",
            "shop", "edges", "get"},
           {base + "/namespaces/shop", base + "/namespaces/shop", "namespaces", "", "shop", "",
            "get"},
           {base + "/pods", base + "/pods", "pods", "", "", "", "list"},
           {base + "/namespaces/shop/deployments/web/edges/",
            base + "/namespaces/shop/deployments/web/edges", "deployments", "shop", "web", "edges",
            "get"}}) {
    const size_t reviews = cluster_->reviews().size();
    auto res = c->Get(k.path, kAlice);
    ASSERT_TRUE(res) << k.path;
    ASSERT_EQ(res->status, 200) << k.path << ": " << res->body;
    EXPECT_EQ(json::parse(res->body)["path"], k.served);
    ASSERT_EQ(cluster_->reviews().size(), reviews + 1) << k.path;
    const json a = cluster_->reviews().back()["resourceAttributes"];
    EXPECT_EQ(a["resource"], k.resource) << k.path;
    EXPECT_EQ(a["namespace"], k.ns) << k.path;
    EXPECT_EQ(a["name"], k.name) << k.path;
    EXPECT_EQ(a["subresource"], k.subresource) << k.path;
    EXPECT_EQ(a["verb"], k.verb) << k.path;
  }
}

// The issuer CN of the certificate the listener presents (the client
// authenticating with `cert`), or "" when the handshake fails.
std::string servedIssuer(int port, const std::string& cert, const std::string& key) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                         SSL_CTX_free);
  if (SSL_CTX_use_certificate_file(ctx.get(), cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
    return "";
  const UniqueFd conn = smik::testing::connectFrom("127.0.0.1", "127.0.0.1", port);
  const int fd = conn.get();
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), fd);
  std::string issuer;
  if (SSL_connect(ssl.get()) == 1) {
    // TLS 1.3 reports a refused client certificate only on the first read.
    const std::string get = "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
    SSL_write(ssl.get(), get.data(), static_cast<int>(get.size()));
    char buf[64];
    std::unique_ptr<X509, decltype(&X509_free)> peer(SSL_get1_peer_certificate(ssl.get()),
                                                     X509_free);
    if (peer && SSL_read(ssl.get(), buf, 64) > 0) {
      char cn[256] = {};
      X509_NAME_get_text_by_NID(X509_get_issuer_name(peer.get()), NID_commonName, cn,
                                sizeof cn - 1);
      issuer = cn;
    }
  }
  ERR_clear_error();
  return issuer;
}

using smik::testing::eventually;

// Replaced as a Secret volume replaces it: written aside, renamed over.
void replaceFile(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to + ".new", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(to + ".new", to);
}

TEST_F(SecureApi, ServingCertificateIsReloadedWhenItsFilesChange) {
  smik::testbed::CertDir certs("smik-secure-reload-" + std::to_string(getpid()));
  certs.makeCa("ca-one");
  certs.makeCa("ca-two");
  certs.makeCert("serving-one", "ca-one", "localhost");
  certs.makeCert("serving-two", "ca-two", "localhost");
  const std::string crt = certs.dir() + "/tls.crt", key = certs.dir() + "/tls.key";
  replaceFile(certs.crt("serving-one"), crt);
  replaceFile(certs.key("serving-one"), key);
  start(kTls + "/ca.crt", "[]", false, [&](SecureApiConfig& c) {
    c.cert_file = crt;
    c.key_file = key;
    c.reload_interval = std::chrono::milliseconds(50);
  });
  const auto issuer = [&] {
    return servedIssuer(server_.port(), kTls + "/client.crt", kTls + "/client.key");
  };
  EXPECT_EQ(issuer(), "ca-one");
  // Half a pair (the key of one, the certificate of the other) is not
  // taken: the old pair serves on.
  replaceFile(certs.crt("serving-two"), crt);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(issuer(), "ca-one");
  replaceFile(certs.key("serving-two"), key);
  EXPECT_TRUE(eventually([&] { return issuer() == "ca-two"; })) << issuer();
}

TEST_F(SecureApi, RequestHeaderCaIsReloadedWhenItsFileChanges) {
  smik::testbed::CertDir certs("smik-secure-ca-" + std::to_string(getpid()));
  certs.makeCa("front-one");
  certs.makeCa("front-two");
  certs.makeCert("proxy-one", "front-one", "front-proxy-client");
  certs.makeCert("proxy-two", "front-two", "front-proxy-client");
  const std::string ca = certs.dir() + "/client-ca.crt";
  replaceFile(certs.crt("front-one"), ca);
  cluster_->setAuthorizer([](const json&) { return true; });
  start(kTls + "/ca.crt", "[]", false, [&](SecureApiConfig& c) {
    c.client_ca_file = ca;
    c.reload_interval = std::chrono::milliseconds(50);
  });
  const auto admitted = [&](const std::string& proxy) {
    return !servedIssuer(server_.port(), certs.crt(proxy), certs.key(proxy)).empty();
  };
  EXPECT_TRUE(admitted("proxy-one"));
  EXPECT_FALSE(admitted("proxy-two"));
  replaceFile(certs.crt("front-two"), ca);
  EXPECT_TRUE(eventually([&] { return admitted("proxy-two"); }));
  EXPECT_FALSE(admitted("proxy-one"));
}

TEST(SmiAttributes, MapsPathsToRbacAttributes) {
  auto a = smiAttributes("/apis/metrics.smi-spec.io/v1alpha1/namespaces/n/pods/p");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->verb, "get");
  EXPECT_EQ(a->resource, "pods");
  EXPECT_EQ(a->ns, "n");
  EXPECT_EQ(a->name, "p");
  a = smiAttributes("/apis/metrics.smi-spec.io/v1alpha1/namespaces/n/trafficsplits");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->verb, "list");
  a = smiAttributes("/apis/metrics.smi-spec.io/v1alpha1/namespaces/n");
  ASSERT_TRUE(a);  // the namespace object itself
  EXPECT_EQ(a->resource, "namespaces");
  EXPECT_EQ(a->name, "n");
  EXPECT_FALSE(smiAttributes("/apis/metrics.smi-spec.io/v1alpha1"));
  EXPECT_FALSE(smiAttributes("/apis/metrics.smi-spec.io"));
}

}  // namespace
}  // namespace smik::api
