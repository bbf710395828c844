// The agent's HTTP endpoint: health, readiness, status and Prometheus text.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "agent/agent.h"

namespace httplib {
class Server;
}

namespace smik::api {

class HttpServer {
 public:
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
};

std::string statusJson(const AgentStatus& s);
std::string prometheusText(const AgentStatus& s);
// Per-workload-edge connection counters and handshake histograms.
std::string prometheusTelemetry(const telemetry::Store& store);

}  // namespace smik::api
