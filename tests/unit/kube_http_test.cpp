// The libcurl client against a fake API server on 127.0.0.1: watch streams
// framed into lines at every split point, bearer tokens, 401 and token
// files, cancellation, refused connections, and TLS both ways.
#include "agent/source/kube_reflector.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/source/kube_cache.h"
#include "agent/source/kube_http.h"
#include "tests/support/eventually.h"
#include "tests/support/host_port.h"
#include "tests/unit/kube_fake_api.h"

namespace smik::kube {
namespace {

// ---- LineFramer -------------------------------------------------------------

TEST(LineFramer, SameEventsAtEverySplitPoint) {
  const std::string body =
      event("ADDED", pod("a", "1")) + "\r\n" + event("MODIFIED", pod("a", "2")) + bookmark("3");
  Strings whole;
  LineFramer().feed(body, [&](std::string_view l) {
    whole.emplace_back(l);
    return true;
  });
  ASSERT_EQ(whole.size(), 3u);
  for (size_t a = 0; a <= body.size(); ++a) {
    for (size_t b = a; b <= body.size(); b += 7) {
      LineFramer f;
      Strings got;
      const auto collect = [&](std::string_view l) {
        got.emplace_back(l);
        return true;
      };
      f.feed(std::string_view(body).substr(0, a), collect);
      f.feed(std::string_view(body).substr(a, b - a), collect);
      f.feed(std::string_view(body).substr(b), collect);
      ASSERT_EQ(got, whole) << "split at " << a << "," << b;
      EXPECT_EQ(f.pending(), 0u);
    }
  }
}

TEST(LineFramer, KeepsIncompleteTailAndStopsOnRequest) {
  LineFramer f;
  Strings got;
  EXPECT_TRUE(f.feed("{\"a\":1}\n{\"b\":", [&](std::string_view l) {
    got.emplace_back(l);
    return true;
  }));
  EXPECT_EQ(got, Strings{"{\"a\":1}"});
  EXPECT_EQ(f.pending(), 5u);
  int calls = 0;
  EXPECT_FALSE(f.feed("2}\n{\"c\":3}\n", [&](std::string_view) { return ++calls > 5; }));
  EXPECT_EQ(calls, 1);
}

// ---- HttpClient -------------------------------------------------------------

TEST(HttpClient, SendsJsonAcceptAndBearerAndStreamsBody) {
  FakeApiServer server([&](const httplib::Request&, httplib::Response& res) {
    stream(res, std::string(1000, 'x') + "end", 13, End::kClean, server.stopping());
  });
  HttpClient http(Harness::configFor(server.url()));
  Cancel cancel;
  std::string body;
  int pieces = 0;
  auto r = http.get(
      "/api/v1/pods?limit=1",
      [&](std::string_view d) {
        body.append(d);
        ++pieces;
        return true;
      },
      cancel);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(body, std::string(1000, 'x') + "end");
  EXPECT_GT(pieces, 1);  // delivered as it arrived, not buffered whole
  auto req = server.requests().at(0);
  EXPECT_EQ(req.path, "/api/v1/pods");
  EXPECT_EQ(req.param("limit"), "1");
  EXPECT_EQ(req.headers["Accept"], "application/json");
  EXPECT_EQ(req.headers["Authorization"], "Bearer secret-token");
}

TEST(HttpClient, ErrorStatusBodyAndHeadersAreKeptNotStreamed) {
  FakeApiServer server([](const httplib::Request&, httplib::Response& res) {
    res.set_header("Retry-After", "3");
    replyStatus(res, 429, "TooManyRequests");
  });
  HttpClient http(Harness::configFor(server.url()));
  Cancel cancel;
  bool streamed = false;
  auto r = http.get(
      "/api/v1/pods", [&](std::string_view) { return streamed = true; }, cancel);
  EXPECT_EQ(r.status, 429);
  EXPECT_FALSE(streamed);
  EXPECT_EQ(r.headers["retry-after"], "3");
  EXPECT_EQ(json::parse(r.body)["reason"], "TooManyRequests");
}

TEST(HttpClient, RereadsTokenFileOnceOn401) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("smik-kube-token-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "token").string();
  std::ofstream(file) << "old";
  FakeApiServer server([](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != "Bearer new")
      return replyStatus(res, 401, "Unauthorized");
    res.set_content("{}", "application/json");
  });
  KubeConfig c;
  c.server = server.url();
  c.token_file = file;
  HttpClient http(c);
  Cancel cancel;
  const auto ignore = [](std::string_view) { return true; };
  EXPECT_EQ(http.get("/api", ignore, cancel).status, 401);  // retried once, still old
  EXPECT_EQ(server.requests().size(), 2u);
  std::ofstream(file) << "new";  // the kubelet rotated it
  EXPECT_EQ(http.get("/api", ignore, cancel).status, 200);
  EXPECT_EQ(server.requests().size(), 4u);
  std::filesystem::remove_all(dir);
}

TEST(HttpClient, CancelAbortsAHangingStreamPromptly) {
  FakeApiServer server([&](const httplib::Request&, httplib::Response& res) {
    stream(res, "{}\n", 3, End::kHang, server.stopping());
  });
  HttpClient http(Harness::configFor(server.url()));
  Cancel cancel;
  std::atomic<bool> got_data{false};
  HttpResponse r;
  std::thread t([&] {
    r = http.get(
        "/api/v1/pods?watch=1", [&](std::string_view) { return got_data = true; }, cancel);
  });
  ASSERT_TRUE(eventually([&] { return got_data.load(); }));
  const auto t0 = Clock::now();
  cancel.cancel();
  t.join();
  EXPECT_LT(Clock::now() - t0, 500ms);
  EXPECT_TRUE(r.cancelled);
  // A cancelled token stays cancelled: no new request starts.
  EXPECT_TRUE(http.get(
                      "/api", [](std::string_view) { return true; }, cancel)
                  .cancelled);
}

TEST(HttpClient, ConnectionRefusedIsATransportError) {
  int port = 0;
  {
    FakeApiServer gone([](const httplib::Request&, httplib::Response&) {});
    port = smik::testing::parseHostPort(gone.url()).value().port;
  }
  KubeConfig c;
  c.server = "http://127.0.0.1:" + std::to_string(port);
  HttpClient http(c);
  Cancel cancel;
  auto r = http.get(
      "/api", [](std::string_view) { return true; }, cancel);
  EXPECT_EQ(r.status, 0);
  EXPECT_FALSE(r.error.empty());
}

// ---- HttpClient over TLS ------------------------------------------------------

const std::string kTls = std::string(SMIK_KUBE_FIXTURES_DIR) + "/tls/";

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// An HTTPS fake; with `require_client_cert` it only talks to holders of a
// certificate signed by the test CA.
std::unique_ptr<FakeApiServer> httpsServer(bool require_client_cert) {
  auto ssl = std::make_unique<httplib::SSLServer>(
      (kTls + "server.crt").c_str(), (kTls + "server.key").c_str(),
      require_client_cert ? (kTls + "ca.crt").c_str() : nullptr);
  EXPECT_TRUE(ssl->is_valid());
  return std::make_unique<FakeApiServer>(
      [](const httplib::Request&, httplib::Response& res) {
        res.set_content("{}", "application/json");
      },
      std::move(ssl), "https");
}

HttpResponse getOver(const KubeConfig& c) {
  HttpClient http(c);
  Cancel cancel;
  return http.get(
      "/api", [](std::string_view) { return true; }, cancel);
}

TEST(HttpClientTls, VerifiesTheServerAgainstTheConfiguredCa) {
  auto server = httpsServer(false);
  KubeConfig c;
  c.server = server->url();
  c.ca_file = kTls + "ca.crt";
  auto by_file = getOver(c);
  EXPECT_EQ(by_file.status, 200) << by_file.error;

  c.ca_file.clear();
  c.ca_data = readAll(kTls + "ca.crt");
  auto by_data = getOver(c);
  EXPECT_EQ(by_data.status, 200) << by_data.error;
}

TEST(HttpClientTls, RefusesAServerTheCaDidNotSign) {
  auto server = httpsServer(false);
  KubeConfig c;
  c.server = server->url();
  c.ca_file = kTls + "other-ca.crt";
  auto wrong_ca = getOver(c);
  EXPECT_EQ(wrong_ca.status, 0);
  EXPECT_FALSE(wrong_ca.error.empty());
  EXPECT_TRUE(server->requests().empty());

  c.ca_file.clear();  // system trust store: does not know the test CA either
  EXPECT_EQ(getOver(c).status, 0);

  c.ca_file = kTls + "other-ca.crt";
  c.insecure_skip_tls_verify = true;  // the only way past verification
  auto insecure = getOver(c);
  EXPECT_EQ(insecure.status, 200) << insecure.error;
}

TEST(HttpClientTls, PresentsAClientCertificateFromFilesOrData) {
  auto server = httpsServer(true);
  KubeConfig c;
  c.server = server->url();
  c.ca_file = kTls + "ca.crt";
  EXPECT_EQ(getOver(c).status, 0);  // no certificate: handshake refused

  c.client_cert_file = kTls + "client.crt";
  c.client_key_file = kTls + "client.key";
  auto files = getOver(c);
  EXPECT_EQ(files.status, 200) << files.error;

  c.client_cert_file.clear();
  c.client_key_file.clear();
  c.client_cert_data = readAll(kTls + "client.crt");
  c.client_key_data = readAll(kTls + "client.key");
  auto data = getOver(c);
  EXPECT_EQ(data.status, 200) << data.error;
}

}  // namespace
}  // namespace smik::kube
