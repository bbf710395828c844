// The agent's HTTP endpoint (--http): health, readiness, Prometheus text,
// and for loopback clients the status page and the TrafficMetrics API.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "agent/agent.h"
#include "api/http/listen.h"

namespace smik::api {

class PeerFanout;  // api/smi/merged_view.h

// What the endpoint reads: the agent's in main(), the tests' own.
struct HttpSources {
  std::function<bool()> ready;  // a probe: no map reads
  std::function<std::string()> not_ready_reason;
  std::function<AgentStatus()> status;
  const telemetry::Store* metrics = nullptr;  // outlives the server
  std::string node;
};
HttpSources sourcesOf(Agent& agent);

// /healthz, /readyz and /metrics for every client: what kubelet probes and
// Prometheus scrapes. /status and the TrafficMetrics API (every pod, edge
// and rejected object, unauthenticated) only for loopback clients, whatever
// address the listener is bound to; --secure-listen serves the API to the
// cluster, authorized. fanout: the API merges every peer's answers
// (?local=true: this node's alone) and /metrics adds the fan-out's own
// counters; nullptr: this node answers alone.
Router httpRoutes(const HttpSources& sources, PeerFanout* fanout);

class HttpServer {
 public:
  // Before start(); fanout outlives the server.
  void setPeers(PeerFanout* fanout) { fanout_ = fanout; }
  // addr is "host:port". Serves on its own threads; false + err if it cannot bind.
  bool start(const std::string& addr, Agent* agent, std::string* err);
  bool start(const std::string& addr, const HttpSources& sources, std::string* err,
             ListenLimits limits = {});
  void stop();
  int port() const { return listener_ ? listener_->port() : 0; }
  HttpServer();
  ~HttpServer();

 private:
  std::unique_ptr<Listener> listener_;
  PeerFanout* fanout_ = nullptr;
};

// /status: the StatusReply of s (api/proto/status.h) as JSON.
std::string statusJson(const AgentStatus& s);
// The agent's own series; counters by reason or event are labelled with the
// names of the tables in bpf/include/smik_abi.h.
std::string prometheusText(const AgentStatus& s);
// Per-workload-edge connection counters and handshake histograms.
std::string prometheusTelemetry(const telemetry::Store& store);
// The agent process's own memory and CPU (/proc/self), under the names every
// Prometheus client library gives them (process_resident_memory_bytes, ...).
std::string prometheusProcess();

}  // namespace smik::api
