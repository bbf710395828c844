// The Kubernetes API as the agent's source: discovery picks the served
// version of each SMI kind, one reflector per collection mirrors it, and the
// cache turns the objects into the model the compiler reads. Until every
// collection has been listed once the source says it is not synced, and the
// agent leaves the kernel's last policy alone.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/source/kube_cache.h"
#include "agent/source/kube_events.h"
#include "agent/source/kube_http.h"
#include "agent/source/kube_reflector.h"
#include "agent/source/source.h"

namespace smik::kube {

// The versions smik reads, best first; older ones go through the same
// normalisation as old manifests.
struct KindVersions {
  std::string group;  // "access.smi-spec.io"
  std::string kind;
  std::string plural;
  std::vector<std::string> versions;  // preference order
};
const std::vector<KindVersions>& smiKinds();

struct Discovery {
  std::vector<Resource> resources;  // every collection to mirror, versions chosen
  // Kinds whose group the server does not serve (CRDs not installed): their
  // reflector runs at the preferred version and waits for them, slowly.
  std::vector<std::string> not_served;
};

// Asks the server which SMI versions it serves. nullopt with *err when the
// server cannot be asked (unreachable, 5xx): the caller retries.
std::optional<Discovery> discover(HttpClient& http, Cancel& cancel, std::string* err);

struct KubeSourceOptions {
  ReflectorConfig reflector;
  std::chrono::milliseconds discovery_retry_initial{500};
  std::chrono::milliseconds discovery_retry_max{30'000};
  // How often served versions are checked again (an SMI CRD upgraded in place).
  std::chrono::milliseconds rediscover{300'000};
  EventRecorderOptions events;
  bool record_events = true;
  // Multiplexed: every list, watch and Event of this source on one HTTP/2
  // connection when the API server offers h2 (every real one does).
  HttpTransport transport = HttpTransport::kMultiplexed;
};

class KubeSource : public source::Source {
 public:
  KubeSource(KubeConfig config, KubeSourceOptions options = {});
  ~KubeSource() override;
  KubeSource(const KubeSource&) = delete;
  KubeSource& operator=(const KubeSource&) = delete;

  void start();  // spawns the discovery loop and the reflectors
  void stop();   // cancels every request in flight; joins

  bool refresh() override;
  void waitForChange(int timeout_ms) override;
  model::ClusterState state() const override { return cache_.state(); }
  std::vector<model::ParseError> errors() const override { return cache_.errors(); }
  uint64_t rejectedTotal() const override { return cache_.rejectedTotal(); }
  bool synced() const override;
  std::string problem() const override;
  std::string describe() const override { return "kubernetes " + http_.config().server; }
  void reportPlan(const compile::Plan& plan) override;
  std::vector<std::string> collections() const override;

  // For status pages and tests.
  std::vector<std::pair<Resource, ReflectorStatus>> reflectors() const;
  const EventRecorder* events() const { return events_.get(); }
  // The one client (one HTTP/2 connection) other users of the API server
  // share: the aggregated API's SubjectAccessReviews.
  HttpClient& http() { return http_; }

 private:
  struct Running {
    Resource resource;
    std::unique_ptr<Reflector> reflector;
    std::thread thread;
  };
  void loop();
  // Starts, keeps or replaces reflectors to match a discovery.
  void reconcileReflectors(const Discovery& d);
  void stopReflector(Running* r);
  void notify();
  void reportRejected();

  HttpClient http_;
  const KubeSourceOptions options_;
  KubeCache cache_;
  std::unique_ptr<EventRecorder> events_;

  std::thread loop_thread_;
  Cancel cancel_;  // discovery requests
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;

  mutable std::mutex mu_;
  std::vector<Running> running_;  // guarded by mu_
  bool discovered_ = false;
  std::string discovery_error_;
  std::vector<std::string> not_served_;

  std::mutex change_mu_;
  std::condition_variable change_cv_;
  uint64_t notified_ = 0;  // bumped on every cache event
  uint64_t waited_ = 0;    // notified_ as of the last refresh()

  // refresh()'s caller only.
  uint64_t seen_generation_ = ~0ull;
  bool was_synced_ = false;
};

}  // namespace smik::kube
