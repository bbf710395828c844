// The libcurl client and the list/watch reflector against a fake API server
// on 127.0.0.1: paged lists, watch streams cut at awkward byte boundaries,
// bookmarks, both forms of 410, disconnects, 429, 404 and shutdown.
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

namespace smik::kube {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Recorded {
  std::string path;
  std::map<std::string, std::string> params;
  std::map<std::string, std::string> headers;
  Clock::time_point at;
  bool watch() const { return params.count("watch"); }
  std::string param(const std::string& k) const {
    auto it = params.find(k);
    return it == params.end() ? "<unset>" : it->second;
  }
};

// A scriptable API server. Every GET is recorded, then answered by the
// test's handler with whatever status or stream the case needs.
class FakeApiServer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  explicit FakeApiServer(
      Handler handler,
      std::unique_ptr<httplib::Server> server = std::make_unique<httplib::Server>(),
      std::string scheme = "http")
      : handler_(std::move(handler)), server_ptr_(std::move(server)), scheme_(std::move(scheme)) {
    server_.Get(".*", [this](const httplib::Request& req, httplib::Response& res) {
      Recorded r{req.path, {}, {}, Clock::now()};
      for (const auto& [k, v] : req.params) r.params.emplace(k, v);
      for (const auto& [k, v] : req.headers) r.headers.emplace(k, v);
      {
        std::lock_guard lock(mu_);
        requests_.push_back(r);
      }
      handler_(req, res);
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the accept loop runs would be lost and join() hang.
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~FakeApiServer() {
    stopping_ = true;
    server_.stop();
    thread_.join();
  }

  std::string url() const { return scheme_ + "://127.0.0.1:" + std::to_string(port_); }
  std::vector<Recorded> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::vector<Recorded> lists() const { return filter(false); }
  std::vector<Recorded> watches() const { return filter(true); }
  const std::atomic<bool>& stopping() const { return stopping_; }

 private:
  std::vector<Recorded> filter(bool watch) const {
    std::vector<Recorded> out;
    for (const auto& r : requests())
      if (r.watch() == watch) out.push_back(r);
    return out;
  }
  Handler handler_;
  std::unique_ptr<httplib::Server> server_ptr_;
  httplib::Server& server_ = *server_ptr_;
  std::string scheme_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<Recorded> requests_;
  std::atomic<bool> stopping_{false};
};

enum class End { kClean, kDrop, kHang };

// Streams `body` `piece` bytes at a time with a pause between writes, so
// the client really reads it in those pieces; then closes cleanly, drops
// the connection mid-stream, or keeps it open until the server stops.
void stream(httplib::Response& res, std::string body, size_t piece, End end,
            const std::atomic<bool>& stopping) {
  auto pos = std::make_shared<size_t>(0);
  res.set_chunked_content_provider(
      "application/json", [body, piece, end, pos, &stopping](size_t, httplib::DataSink& sink) {
        if (*pos < body.size()) {
          const size_t n = std::min(piece, body.size() - *pos);
          sink.write(body.data() + *pos, n);
          *pos += n;
          std::this_thread::sleep_for(2ms);
          return true;
        }
        if (end == End::kClean) {
          sink.done();
          return true;
        }
        if (end == End::kDrop || stopping.load()) return false;
        std::this_thread::sleep_for(5ms);
        return true;
      });
}

json pod(const std::string& name, const std::string& rv, const std::string& ip = "10.0.0.1") {
  return {{"metadata", {{"name", name}, {"namespace", "prod"}, {"resourceVersion", rv}}},
          {"status", {{"podIP", ip}}}};
}

std::string event(const std::string& type, json object) {
  object["kind"] = "Pod";
  object["apiVersion"] = "v1";
  return json{{"type", type}, {"object", object}}.dump() + "\n";
}

std::string bookmark(const std::string& rv) {
  return json{{"type", "BOOKMARK"},
              {"object",
               {{"kind", "Pod"}, {"apiVersion", "v1"}, {"metadata", {{"resourceVersion", rv}}}}}}
             .dump() +
         "\n";
}

json status(int code, const std::string& reason, const std::string& message) {
  return {{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Failure"},
          {"code", code},     {"reason", reason},   {"message", message}};
}

void replyStatus(httplib::Response& res, int code, const std::string& reason) {
  res.status = code;
  res.set_content(status(code, reason, reason + " from fake").dump(), "application/json");
}

// Pages `items` by the request's limit; continue tokens contain characters
// that must be URL-encoded, as real (base64) ones do.
void serveList(const httplib::Request& req, httplib::Response& res, const std::vector<json>& items,
               const std::string& rv) {
  const size_t limit = req.has_param("limit") ? std::stoul(req.get_param_value("limit")) : 1000;
  size_t start = 0;
  if (req.has_param("continue")) start = std::stoul(req.get_param_value("continue").substr(4));
  json list = {{"kind", "PodList"},
               {"apiVersion", "v1"},
               {"metadata", {{"resourceVersion", rv}}},
               {"items", json::array()}};
  const size_t end = std::min(items.size(), start + limit);
  for (size_t i = start; i < end; ++i) list["items"].push_back(items[i]);
  if (end < items.size()) list["metadata"]["continue"] = "t+/=" + std::to_string(end);
  res.set_content(list.dump(), "application/json");
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 3000ms) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

ReflectorConfig fastConfig() {
  ReflectorConfig c;
  c.page_size = 2;
  c.watch_timeout_min = 7s;
  c.watch_timeout_max = 7s;
  c.backoff_initial = 20ms;
  c.backoff_max = 200ms;
  c.jitter = 0.5;
  c.not_served_retry = 100ms;
  c.min_watch_duration = 50ms;
  c.retry_after_max = 5000ms;
  c.seed = 42;
  return c;
}

const Resource kPods{"v1", "Pod", "pods", ""};

// A fake clock for the reflector's waits between tries: a wait that ends
// within `horizon` of virtual time returns at once; the first one beyond it
// blocks until finish(). So "how many tries in 350 ms" is a count of the
// waits asked for, the same on a loaded machine as on an idle one.
class FakeClock {
 public:
  explicit FakeClock(std::chrono::milliseconds horizon) : horizon_(horizon) {}
  void wait(std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    waits_.push_back(d);
    if (now_ + d > horizon_) {
      blocked_ = true;
      cv_.wait(lock, [&] { return finished_; });
      blocked_ = false;
    }
    now_ += d;
  }
  // The reflector used up the horizon and waits for more time.
  bool blocked() const {
    std::lock_guard lock(mu_);
    return blocked_;
  }
  std::vector<std::chrono::milliseconds> waits() const {
    std::lock_guard lock(mu_);
    return waits_;
  }
  // Every wait from now on returns at once (and the blocked one ends).
  void finish() {
    std::lock_guard lock(mu_);
    finished_ = true;
    cv_.notify_all();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  const std::chrono::milliseconds horizon_;
  std::chrono::milliseconds now_{0};
  std::vector<std::chrono::milliseconds> waits_;
  bool blocked_ = false;
  bool finished_ = false;
};

// Installs a FakeClock in a config; finishes it when the test ends (declare
// after the Harness, so the reflector's thread is not left blocked in it).
struct ClockedConfig {
  explicit ClockedConfig(std::chrono::milliseconds horizon, ReflectorConfig c = fastConfig())
      : clock(std::make_shared<FakeClock>(horizon)), config(std::move(c)) {
    config.wait = [clock = clock](std::chrono::milliseconds d) { clock->wait(d); };
  }
  std::shared_ptr<FakeClock> clock;
  ReflectorConfig config;
};
struct FinishClock {
  std::shared_ptr<FakeClock> clock;
  ~FinishClock() { clock->finish(); }
};

// A reflector running on its own thread against a fake server; events are
// recorded as "upsert prod/a" / "delete prod/a".
class Harness {
 public:
  explicit Harness(FakeApiServer::Handler handler, ReflectorConfig config = fastConfig(),
                   Resource resource = kPods)
      : server(std::move(handler)), http(configFor(server.url())) {
    reflector = std::make_unique<Reflector>(
        http, resource, config,
        [this](Reflector::Event e, const std::string& key, const json& obj) {
          std::lock_guard lock(mu_);
          events_.push_back((e == Reflector::Event::kUpsert ? "upsert " : "delete ") + key);
          last_objects_[key] = obj;
        });
    thread_ = std::thread([this] { reflector->run(); });
  }
  ~Harness() { stop(); }
  void stop() {
    reflector->stop();
    if (thread_.joinable()) thread_.join();
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  json lastObject(const std::string& key) const {
    std::lock_guard lock(mu_);
    return last_objects_.at(key);
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : reflector->snapshot()) out.push_back(k);
    return out;
  }
  static KubeConfig configFor(const std::string& url) {
    KubeConfig c;
    c.server = url;
    c.token = "secret-token";
    return c;
  }

  FakeApiServer server;
  HttpClient http;
  std::unique_ptr<Reflector> reflector;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> events_;
  std::map<std::string, json> last_objects_;
  std::thread thread_;
};

using Strings = std::vector<std::string>;

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
    port = std::stoi(gone.url().substr(gone.url().rfind(':') + 1));
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

// ---- Reflector --------------------------------------------------------------

TEST(Reflector, PagedListThenWatchFromTheListsVersion) {
  // Items carry their own, older versions in key order: resuming from one
  // would replay history (or hit 410) instead of continuing from the list.
  const std::vector<json> items = {pod("a", "50"), pod("b", "7"), pod("c", "90"), pod("d", "3"),
                                   pod("e", "60")};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, items, "100");
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  const auto lists = h.server.lists();
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_EQ(lists[0].path, "/api/v1/pods");
  EXPECT_EQ(lists[0].param("limit"), "2");
  EXPECT_EQ(lists[0].param("resourceVersion"), "0");  // first list: from the watch cache
  EXPECT_EQ(lists[0].param("continue"), "<unset>");
  EXPECT_EQ(lists[1].param("continue"), "t+/=2");
  EXPECT_EQ(lists[1].param("resourceVersion"), "<unset>");  // the token carries it
  EXPECT_EQ(lists[2].param("continue"), "t+/=4");
  const auto w = h.server.watches()[0];
  EXPECT_EQ(w.param("resourceVersion"), "100");
  EXPECT_EQ(w.param("allowWatchBookmarks"), "true");
  EXPECT_EQ(w.param("timeoutSeconds"), "7");
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c", "prod/d", "prod/e"}));
  EXPECT_EQ(h.events().size(), 5u);
  // List items come without kind/apiVersion; the reflector fills them in.
  EXPECT_EQ(h.lastObject("prod/c")["kind"], "Pod");
  EXPECT_EQ(h.lastObject("prod/c")["apiVersion"], "v1");
  auto st = h.reflector->status();
  EXPECT_TRUE(st.synced);
  EXPECT_EQ(st.lists, 1u);
  EXPECT_EQ(st.resource_version, "100");
}

TEST(Reflector, ExpiredContinueTokenRestartsTheListConsistently) {
  const std::vector<json> items = {pod("a", "1"), pod("b", "2"), pod("c", "3")};
  std::atomic<bool> expired_once{false};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("watch")) return stream(res, "", 1, End::kHang, h.server.stopping());
    if (req.has_param("continue") && !expired_once.exchange(true))
      return replyStatus(res, 410, "Expired");
    serveList(req, res, items, "10");
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  Strings asked;  // resourceVersion/continue of every list request
  for (const auto& r : h.server.lists())
    asked.push_back(r.param("resourceVersion") + "|" + r.param("continue"));
  EXPECT_EQ(asked, (Strings{"0|<unset>", "<unset>|t+/=2", "<unset>|<unset>", "<unset>|t+/=2"}));
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c"}));
  EXPECT_EQ(h.reflector->status().lists, 1u);  // the broken list was never applied
  EXPECT_EQ(h.server.watches()[0].param("resourceVersion"), "10");
}

TEST(Reflector, WatchEventsAcrossAwkwardChunksThenRewatchFromBookmark) {
  const std::string first = event("ADDED", pod("b", "11")) +
                            event("MODIFIED", pod("a", "12", "10.0.0.9")) +
                            event("DELETED", pod("b", "13")) + bookmark("20");
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {pod("a", "5")}, "10");
    if (++watches == 1) return stream(res, first, 7, End::kClean, h.server.stopping());
    stream(res, event("ADDED", pod("c", "21")), 5, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.keys() == Strings{"prod/a", "prod/c"}; }));
  EXPECT_EQ(h.events(), (Strings{"upsert prod/a", "upsert prod/b", "upsert prod/a", "delete prod/b",
                                 "upsert prod/c"}));
  EXPECT_EQ(h.lastObject("prod/a")["status"]["podIP"], "10.0.0.9");
  const auto w = h.server.watches();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].param("resourceVersion"), "10");
  EXPECT_EQ(w[1].param("resourceVersion"), "20");  // the bookmark's, no relist
  EXPECT_EQ(h.server.lists().size(), 1u);
  EXPECT_EQ(h.reflector->status().resource_version, "21");
}

// Both forms of "your version is gone": the HTTP status, and an ERROR event
// after a 200. Either way: relist (consistently) and delete what vanished.
void expectRelistAfterGone(bool in_stream) {
  std::atomic<bool> gone{false};  // the server has compacted past version 10
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) {
      if (!gone) return serveList(req, res, {pod("a", "1"), pod("b", "2"), pod("c", "3")}, "10");
      return serveList(req, res, {pod("a", "1"), pod("c", "30"), pod("d", "31")}, "40");
    }
    if (++watches == 1) {
      gone = true;
      if (!in_stream) return replyStatus(res, 410, "Expired");
      const std::string err =
          json{{"type", "ERROR"},
               {"object", status(410, "Expired", "too old resource version: 10 (35)")}}
              .dump() +
          "\n";
      return stream(res, event("ADDED", pod("x", "11")) + err, 9, End::kHang, h.server.stopping());
    }
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 2; }));
  Strings first_pages;  // one per list; later pages carry continue
  for (const auto& r : h.server.lists())
    if (r.param("continue") == "<unset>") first_pages.push_back(r.param("resourceVersion"));
  // The relist is consistent ("latest"), not from the possibly stale cache.
  EXPECT_EQ(first_pages, (Strings{"0", "<unset>"}));
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "40");
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/c", "prod/d"}));
  Strings expected = {"upsert prod/a", "upsert prod/b", "upsert prod/c"};
  if (in_stream) expected.push_back("upsert prod/x");
  // a is unchanged: no event. c changed, d is new; pages are handed on as
  // they arrive, the vanished are deleted once the list is whole.
  expected.insert(expected.end(), {"upsert prod/c", "upsert prod/d"});
  expected.push_back("delete prod/b");
  if (in_stream) expected.push_back("delete prod/x");
  EXPECT_EQ(h.events(), expected);
}

TEST(Reflector, Http410RelistsAndDeletesVanished) { expectRelistAfterGone(false); }
TEST(Reflector, InStream410ErrorRelistsAndDeletesVanished) { expectRelistAfterGone(true); }

TEST(Reflector, DisconnectRewatchesFromLastVersionWithoutRelist) {
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    if (++watches == 1)
      // A cut in the middle of the second event: the half event is dropped.
      return stream(res,
                    event("ADDED", pod("a", "11")) + event("ADDED", pod("b", "12")).substr(0, 30),
                    11, End::kDrop, h.server.stopping());
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 2; }));
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "11");
  EXPECT_EQ(h.server.lists().size(), 1u);
  EXPECT_EQ(h.keys(), Strings{"prod/a"});
  EXPECT_EQ(h.reflector->status().failures, 1u);
  EXPECT_FALSE(h.reflector->status().last_error.empty());
}

// The failure is reported while it lasts: once the new watch delivers
// (here a bookmark), the error is gone, although that watch is still open.
TEST(Reflector, ErrorClearsWhenTheNextWatchDeliversNotWhenItEnds) {
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    if (++watches == 1) return stream(res, event("ADDED", pod("a", "11")), 11, End::kDrop,
                                      h.server.stopping());
    stream(res, bookmark("20"), 7, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.reflector->status().resource_version == "20"; }));
  EXPECT_EQ(h.reflector->status().failures, 1u);
  EXPECT_EQ(h.reflector->status().last_error, "");
  EXPECT_EQ(h.server.watches().size(), 2u);  // the second one still open
}

TEST(Reflector, HonoursRetryAfterOn429) {
  std::atomic<int> lists{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) {
      if (++lists == 1) {
        res.set_header("Retry-After", "1");
        return replyStatus(res, 429, "TooManyRequests");
      }
      return serveList(req, res, {pod("a", "1")}, "10");
    }
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.reflector->status().synced; }, 4000ms));
  const auto l = h.server.lists();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_GE(l[1].at - l[0].at, 950ms);  // not the 20 ms backoff
}

TEST(Reflector, ServerErrorsBackOffExponentiallyWithCap) {
  ReflectorConfig c = fastConfig();
  c.backoff_initial = 40ms;
  c.backoff_max = 160ms;
  c.jitter = 0.25;
  Harness h([&](const httplib::Request&,
                httplib::Response& res) { replyStatus(res, 500, "InternalError"); },
            c);
  ASSERT_TRUE(eventually([&] { return h.server.lists().size() >= 6; }));
  const auto l = h.server.lists();
  const std::chrono::milliseconds floor[] = {40ms, 80ms, 160ms, 160ms, 160ms};
  for (size_t i = 1; i < 6; ++i) {
    const auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(l[i].at - l[i - 1].at);
    EXPECT_GE(gap, floor[i - 1]) << "retry " << i;
    EXPECT_LT(gap, floor[i - 1] * 1.25 + 100ms) << "retry " << i;  // capped, jitter bounded
  }
  EXPECT_FALSE(h.reflector->status().synced);
  EXPECT_NE(h.reflector->status().last_error.find("HTTP 500"), std::string::npos);
}

TEST(Reflector, NotServedIsRetriedSlowlyThenPickedUp) {
  std::atomic<bool> installed{false};
  ClockedConfig clocked(350ms);
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!installed) return replyStatus(res, 404, "NotFound");
        if (!req.has_param("watch")) return serveList(req, res, {pod("a", "1")}, "10");
        stream(res, "", 1, End::kHang, h.server.stopping());
      },
      clocked.config, Resource{"split.smi-spec.io/v1alpha4", "TrafficSplit", "trafficsplits", ""});
  FinishClock finish{clocked.clock};
  // 350 ms of (fake) time: tries at 0, 100, 200 and 300 ms, each 404 followed
  // by a wait of not_served_retry (100 ms), not the short backoff.
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  EXPECT_EQ(h.server.requests().size(), 4u);
  EXPECT_EQ(clocked.clock->waits(), std::vector<std::chrono::milliseconds>(4, 100ms));
  EXPECT_EQ(h.server.requests()[0].path, "/apis/split.smi-spec.io/v1alpha4/trafficsplits");
  auto st = h.reflector->status();
  EXPECT_TRUE(st.not_served);
  EXPECT_FALSE(st.synced);
  installed = true;
  clocked.clock->finish();
  ASSERT_TRUE(eventually([&] { return h.reflector->status().synced; }));
  EXPECT_FALSE(h.reflector->status().not_served);
  EXPECT_EQ(h.lastObject("prod/a")["kind"], "TrafficSplit");
}

// Each wait a fake clock saw, as a multiple of the one before (backoff
// doubles; jitter stretches each by at most 1 + jitter).
void expectDoublingBackoff(const std::vector<std::chrono::milliseconds>& waits,
                           const ReflectorConfig& c) {
  ASSERT_GE(waits.size(), 3u);
  std::chrono::milliseconds base = c.backoff_initial;
  for (size_t i = 0; i < waits.size(); ++i, base = std::min(base * 2, c.backoff_max)) {
    EXPECT_GE(waits[i], base) << "wait " << i;
    EXPECT_LE(waits[i], base * (1 + c.jitter)) << "wait " << i;
  }
}

TEST(Reflector, WatchThatEndsAtOnceIsNotAHotLoop) {
  ReflectorConfig c = fastConfig();
  c.min_watch_duration = 60s;  // every watch here is "too short", however slow the machine
  ClockedConfig clocked(400ms, c);
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("watch")) return serveList(req, res, {}, "10");
        stream(res, "", 1, End::kClean, h.server.stopping());
      },
      clocked.config);
  FinishClock finish{clocked.clock};
  // Every watch that ends at once is followed by a backoff (20, 40, 80,
  // 160 ms...): within 400 ms a handful of watches, and one list.
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  const auto waits = clocked.clock->waits();
  EXPECT_EQ(h.server.watches().size(), waits.size());
  EXPECT_EQ(h.server.lists().size(), 1u);
  expectDoublingBackoff(waits, clocked.config);
}

TEST(Reflector, RepeatedGoneBacksOffInsteadOfSpinning) {
  ClockedConfig clocked(400ms);
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("watch")) return serveList(req, res, {}, "10");
        replyStatus(res, 410, "Expired");
      },
      clocked.config);
  FinishClock finish{clocked.clock};
  // list, watch, 410, list at once; then each further 410 relists only
  // after a doubling backoff.
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  const auto waits = clocked.clock->waits();
  EXPECT_EQ(h.server.lists().size(), waits.size() + 1);
  expectDoublingBackoff(waits, clocked.config);
}

TEST(Reflector, BadEventJsonIsAFailureNotACrash) {
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    if (++watches == 1) return stream(res, "{not json\n", 4, End::kHang, h.server.stopping());
    stream(res, event("ADDED", pod("a", "11")), 64, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.keys() == Strings{"prod/a"}; }));
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "10");
}

TEST(Reflector, StopEndsAHangingWatchPromptly) {
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  const auto t0 = Clock::now();
  h.stop();
  EXPECT_LT(Clock::now() - t0, 1000ms);
}

// The whole chain: list + watch into KubeCache, rejected objects reported
// by ns/name, deletes reaching the model.
TEST(Reflector, FeedsTheClusterStateThroughKubeCache) {
  KubeCache cache;
  std::atomic<int> watches{0};
  FakeApiServer server([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch"))
      return serveList(req, res, {pod("a", "1"), pod("bad", "2", "10.0.0.256"), pod("c", "3")},
                       "10");
    if (++watches > 1) return stream(res, "", 1, End::kHang, server.stopping());
    stream(res, event("DELETED", pod("a", "11")) + event("ADDED", pod("d", "12", "10.0.0.4")), 17,
           End::kHang, server.stopping());
  });
  HttpClient http(Harness::configFor(server.url()));
  Reflector reflector(http, kPods, fastConfig(), cache.sink());
  std::thread t([&] { reflector.run(); });
  const bool ok = eventually([&] { return cache.state().pods.count("prod/d") == 1; });
  reflector.stop();
  t.join();
  ASSERT_TRUE(ok);
  const auto pods = cache.state().pods;
  EXPECT_EQ(pods.size(), 2u);
  EXPECT_EQ(pods.count("prod/c"), 1u);
  EXPECT_EQ(pods.at("prod/d")->ips, std::vector<std::string>{"10.0.0.4"});
  const auto errors = cache.errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].object.str(), "Pod prod/bad");
}

// JSON nested `depth` arrays deep, as text: a json value that deep would
// recurse when the fake server printed it.
std::string nestedText(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string podText(const std::string& name, const std::string& rv, const std::string& x) {
  return R"({"kind":"Pod","apiVersion":"v1","metadata":{"name":")" + name +
         R"(","namespace":"prod","resourceVersion":")" + rv +
         R"("},"status":{"podIP":"10.0.0.9"},"spec":{"x":)" + x + "}}";
}

// What an API server sends is not trusted to be sane: an object nested
// deeper than the parser takes is rejected by name, one deeper than any API
// server stores fails its watch (retried, like any bad event), fields of the
// wrong type are an error; none of it stops the rest or the agent.
TEST(Reflector, DeepAndMistypedObjectsAreRejectedNotACrash) {
  KubeCache cache;
  std::atomic<int> watches{0};
  FakeApiServer server([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) {
      res.set_content(R"({"kind":"PodList","metadata":{"resourceVersion":"10"},"items":[)" +
                          podText("a", "1", "1") + "," + podText("deep", "2", nestedText(5000)) +
                          R"(,{"apiVersion":1,"kind":["Pod"],"metadata":{"name":"typed",)"
                          R"("namespace":"prod","resourceVersion":"3"}}]})",
                      "application/json");
      return;
    }
    if (++watches == 1)
      return stream(res,
                    R"({"type":"ADDED","object":)" + podText("deeper", "11", nestedText(100'000)) +
                        "}\n",
                    1 << 16, End::kHang, server.stopping());
    stream(res, R"({"type":"ADDED","object":)" + podText("b", "12", "1") + "}\n", 4096,
           End::kHang, server.stopping());
  });
  HttpClient http(Harness::configFor(server.url()));
  Reflector reflector(http, kPods, fastConfig(), cache.sink());
  std::thread t([&] { reflector.run(); });
  const bool ok = eventually([&] { return cache.state().pods.count("prod/b") == 1; });
  const ReflectorStatus st = reflector.status();
  reflector.stop();
  t.join();
  ASSERT_TRUE(ok);
  EXPECT_EQ(cache.state().pods.size(), 2u);  // a and b
  EXPECT_GE(st.failures, 1u) << "the 100000-deep event failed its watch";
  std::set<std::string> errors;
  for (const auto& e : cache.errors()) errors.insert(e.str());
  EXPECT_EQ(errors.count("kubernetes: Pod prod/deep: nested deeper than 100 levels"), 1u);
  EXPECT_EQ(errors.size(), 2u);  // and "typed": apiVersion is not a string
}

TEST(Reflector, DecodesOnlyBoundedJsonObjects) {
  std::string err;
  EXPECT_FALSE(decodeWatchEvent(R"({"type":"ADDED","object":)" + nestedText(10'001) + "}", kPods,
                                &err));
  EXPECT_EQ(err, "event nests deeper than 10000 levels");
  EXPECT_FALSE(decodeWatchEvent(R"({"type":"ADDED","object":[]})", kPods, &err));
  EXPECT_EQ(err, "event without object");
  // Brackets inside strings are text, not nesting.
  const auto ev = decodeWatchEvent(
      R"({"type":"ADDED","object":{"metadata":{"name":")" + std::string(20'000, '[') + R"("}}})",
      kPods, &err);
  ASSERT_TRUE(ev) << err;
  EXPECT_EQ(ev->object["kind"], "Pod");
  EXPECT_FALSE(decodeListPage(R"({"items":[1]})", kPods, &err));
  EXPECT_EQ(err, "a list item is not a JSON object");
  EXPECT_FALSE(decodeListPage("[" + nestedText(10'000) + "]", kPods, &err));
  EXPECT_EQ(err, "response nests deeper than 10000 levels");
  const auto page = decodeListPage(
      R"({"metadata":{"resourceVersion":"5","continue":"c"},"items":[{"metadata":{"name":"x"}}]})",
      kPods, &err);
  ASSERT_TRUE(page) << err;
  EXPECT_EQ(page->resource_version, "5");
  EXPECT_EQ(page->next, "c");
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].first, "x");
  EXPECT_EQ(page->items[0].second["apiVersion"], "v1");
}

TEST(Reflector, ResourcePaths) {
  EXPECT_EQ((Resource{"v1", "Pod", "pods", ""}).path(), "/api/v1/pods");
  EXPECT_EQ((Resource{"discovery.k8s.io/v1", "EndpointSlice", "endpointslices", ""}).path(),
            "/apis/discovery.k8s.io/v1/endpointslices");
}

}  // namespace
}  // namespace smik::kube
