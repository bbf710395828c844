// `smik ui`'s local web server: the page (assets embedded in the binary at
// build time), the graph JSON (api/ui/graph.h) and an explanation of one
// edge, on 127.0.0.1 only. It holds no credentials of its own: what it
// reads, it reads through the Fetch and Explain it is given, with the
// user's own.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "agent/base/result.h"
#include "api/ui/graph.h"

namespace smik::ui {

// The page's files: path ("/", "/app.js"...), type, bytes
// (generated from api/ui/assets/ by CMake, api/ui/CMakeLists.txt).
struct Asset {
  std::string_view path;
  std::string_view content_type;
  std::string_view body;
};
const Asset* findAsset(std::string_view path);

struct ExplainQuery {
  std::string from, to;  // "ns/pod"
  int port = 0;
  std::string proto = "tcp";
};
// available false: nothing could judge it (no agent socket, no manifests);
// reason says why, and the page says so instead of guessing.
struct ExplainAnswer {
  bool available = false;
  std::string reason;
  std::string source;   // who judged: "agent at unix:...", "manifests in DIR"
  nlohmann::json reply;  // smik.v1.ExplainReply's JSON (as `smik explain -o json`)
};
using Explain = std::function<ExplainAnswer(const ExplainQuery&)>;

struct UiConfig {
  Fetch fetch;          // TrafficMetrics
  Explain explain;      // may be empty: never available
  std::string source;   // where the metrics come from, for the page's header
  std::string kind = "deployment";  // what the page opens with
  std::string window = "5m";
};

struct UiRequest {
  std::string path;  // without the query
  std::multimap<std::string, std::string> params;
  std::string host;  // the Host header
};
struct UiResponse {
  int status = 200;
  std::string content_type, body;
};

class UiServer {
 public:
  explicit UiServer(UiConfig config);
  ~UiServer();
  UiServer(const UiServer&) = delete;
  UiServer& operator=(const UiServer&) = delete;

  // Binds 127.0.0.1:port (0: any free port) and returns the port bound.
  Result<int> bind(int port);
  // Serves until stop(); false if the listener failed.
  bool run();
  void stop();

  // One GET, as run() answers it (the tests call it without a socket).
  // Only Host 127.0.0.1:PORT or localhost:PORT is answered (403 otherwise):
  // a page on another site that rebinds its DNS name to 127.0.0.1 must not
  // read the cluster's graph through the user's browser.
  UiResponse answer(const UiRequest& req) const;

 private:
  UiResponse graph(const UiRequest& req) const;
  UiResponse explainEdge(const UiRequest& req) const;
  struct Impl;
  UiConfig config_;
  int port_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace smik::ui
