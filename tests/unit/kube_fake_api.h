// A fake Kubernetes API server on 127.0.0.1 for the client and reflector
// tests (tests/unit/kube_http_test.cpp, kube_reflector_test.cpp): it records
// every request and answers with a handler per test; watch streams are cut
// at chosen byte boundaries. Also a fake clock for the reflector's waits.
#pragma once

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

namespace smik::kube {

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
inline void stream(httplib::Response& res, std::string body, size_t piece, End end,
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

inline json pod(const std::string& name, const std::string& rv,
                const std::string& ip = "10.0.0.1") {
  return {{"metadata", {{"name", name}, {"namespace", "prod"}, {"resourceVersion", rv}}},
          {"status", {{"podIP", ip}}}};
}

inline std::string event(const std::string& type, json object) {
  object["kind"] = "Pod";
  object["apiVersion"] = "v1";
  return json{{"type", type}, {"object", object}}.dump() + "\n";
}

inline std::string bookmark(const std::string& rv) {
  return json{{"type", "BOOKMARK"},
              {"object",
               {{"kind", "Pod"}, {"apiVersion", "v1"}, {"metadata", {{"resourceVersion", rv}}}}}}
             .dump() +
         "\n";
}

inline json status(int code, const std::string& reason, const std::string& message) {
  return {{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Failure"},
          {"code", code},     {"reason", reason},   {"message", message}};
}

inline void replyStatus(httplib::Response& res, int code, const std::string& reason) {
  res.status = code;
  res.set_content(status(code, reason, reason + " from fake").dump(), "application/json");
}

// Pages `items` by the request's limit; continue tokens contain characters
// that must be URL-encoded, as real (base64) ones do.
inline void serveList(const httplib::Request& req, httplib::Response& res,
                      const std::vector<json>& items, const std::string& rv) {
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

using smik::testing::eventually;

inline ReflectorConfig fastConfig() {
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

}  // namespace smik::kube
