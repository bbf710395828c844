// The agent's HTTP endpoint: health, readiness, status and Prometheus text.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "agent/agent.h"

namespace httplib {
class Server;
}

namespace smik::peer {
class PeerFanout;
}

namespace smik::api {

class HttpServer {
 public:
  // Before start(): the SMI TrafficMetrics API merges every peer's answers
  // (?local=true: this node's alone) and /metrics adds the fan-out's
  // counters. fanout outlives the server; nullptr: this node answers alone.
  void setPeers(peer::PeerFanout* fanout) { fanout_ = fanout; }
  // addr is "host:port". Starts serving on a thread; false + err if it cannot bind.
  // serve_smi: also the TrafficMetrics API, unauthenticated (loopback use,
  // `kubectl get --raw` through a local kubeconfig, tests).
  bool start(const std::string& addr, Agent* agent, std::string* err, bool serve_smi = true);
  void stop();
  HttpServer();
  ~HttpServer();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  peer::PeerFanout* fanout_ = nullptr;
};

std::string statusJson(const AgentStatus& s);
std::string prometheusText(const AgentStatus& s);
// Per-workload-edge connection counters and handshake histograms.
std::string prometheusTelemetry(const telemetry::Store& store);

}  // namespace smik::api
