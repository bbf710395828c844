// The aggregated-API listener: only clients with a certificate from the
// requestheader CA get in, the user comes from the X-Remote-* headers, and
// every resource request is authorized by a SubjectAccessReview against the
// (fake) API server.
#include "api/http/secure_api.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <sstream>

#include "tests/kube/fake_cluster.h"

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
             bool with_cert_files = false) {
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
  auto res = client()->Get("/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/pods/partial", kAlice);
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
