// The agent loop: source -> compile -> maps + attachments, once per change
// and once a second (pods' veths appear after the pods do).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/datapath/dataplane.h"
#include "agent/source/source.h"
#include "agent/telemetry/events.h"
#include "agent/telemetry/store.h"

namespace smik {

struct AgentConfig {
  compile::NodeConfig node;
  std::string http = "127.0.0.1:9464";
  std::string pin_dir = "/sys/fs/bpf/smik";
  std::string cgroup;  // cgroup2 root for the socket programs (split issue)
  bool force_clsact = false;
  int metrics_interval_ms = 1000;  // how often the kernel counters are read
  int metrics_window_s = 600;      // the longest ?t= window kept
  uint32_t ct_max = SMIK_MAX_CT;   // entries of a new conntrack map (--ct-max)
  uint8_t deny_response = SMIK_DENY_REJECT;  // SMIK_DENY_* (--deny-response)
  smik_http_config http_judge{};  // --http-max-*, --http-non-http1 (0: the defaults)
};

// What /status, /readyz and `smik status` report. Copied out under a lock.
struct AgentStatus {
  bool ready = false;
  std::string source;      // where objects come from
  std::string not_ready;   // why not ready (empty when ready)
  std::string degraded;    // ready, but the source cannot refresh its view
  std::vector<std::string> collections;  // the source's, one line each
  std::string node;
  std::string access_mode;
  std::string host_traffic;  // allow | policy
  std::string http_rules;    // deny | allow-tcp | enforce
  // enforce: "attached", "ready: ..." (loaded; no HTTP rule yet needs its
  // programs), or why the judge is not (its ports then stay closed).
  std::string http_judge;
  std::vector<uint64_t> http_stats;  // index = SMIK_HTTP_C_*
  std::string attach_mode;
  uint64_t rejected_objects_total = 0;
  uint64_t applies_total = 0;
  uint64_t apply_errors_total = 0;
  double last_apply_ms = 0;
  uint32_t policy_generation = 0;
  size_t policy_entries = 0;
  size_t identities = 0;
  size_t ip_entries = 0;
  size_t services = 0;        // service ports translated at connect()
  bool socket_programs = false;
  std::vector<uint64_t> sock_stats;  // index = SMIK_SOCK_*
  std::vector<std::string> endpoints;  // "ns/pod ifname(ifindex)"
  std::vector<std::string> rejected;   // current rejected objects
  std::vector<std::string> diagnostics;
  std::vector<std::string> errors;     // apply/attach errors of the last round
  // Local meshed pods without enforcement, "ns/pod: why" (no interface yet,
  // a failed write, a full endpoints map).
  std::vector<std::string> not_enforced;
  std::vector<maps::MapUsage> maps;  // every BPF map: entries, capacity, kernel memory
  uint32_t possible_cpus = 0;        // what the maps' per-CPU bytes are counted for
  std::vector<smik_counter> reasons;
  std::vector<uint64_t> ct_stats;  // index = SMIK_CT_*
  std::vector<uint64_t> answer_stats;  // index = SMIK_ANSWER_*
  uint64_t ct_swept_total = 0;     // expired conntrack entries the agent deleted
  struct Edge {
    std::string source, destination, proto;
    uint16_t port = 0;
    uint64_t flows_allowed = 0, packets_denied = 0;
  };
  // New-flow verdicts by identity pair, port, proto: the kStatusEdges most
  // active of edges_total (a flood of denied probes fills the map with
  // 65536 edges; listing them all made /status take seconds).
  std::vector<Edge> edges;
  uint64_t edges_total = 0;
  static constexpr size_t kStatusEdges = 256;
};

// What the agent put in force, for the APIs: published whole by the agent
// thread after each compile and never changed after, so an API thread reads
// the plan in force without compiling or asking the host anything itself.
struct AppliedView {
  std::shared_ptr<const model::ClusterState> state = std::make_shared<const model::ClusterState>();
  std::shared_ptr<const compile::Plan> plan = std::make_shared<const compile::Plan>();
  compile::NodeConfig node;  // as plan was compiled: host addresses included
  std::map<uint32_t, std::string> identity_names;  // plan.identities inverted: edges' names
  bool compiled = false;  // false until the first plan (the fields are empty)
};

class Agent {
 public:
  // On a dataplane: the kernel's (datapath::Datapath), or in tests an
  // in-memory one.
  static std::unique_ptr<Agent> create(const AgentConfig& cfg,
                                       std::unique_ptr<source::Source> source,
                                       std::unique_ptr<datapath::Dataplane> dataplane);
  // Runs until *stop becomes true. Leaves programs and pins in place.
  void run(const std::atomic<bool>& stop);
  // One round of run(): take in the source, compile, write, hook.
  void runOnce();

  // ---- read by the APIs, from their own threads: nothing here writes ----
  // The last round's status with the kernel's counters read now: not for probes.
  AgentStatus status() const;
  bool ready() const {
    std::lock_guard<std::mutex> l(mu_);
    return status_.ready;
  }
  // Why the agent is not ready; empty when it is.
  std::string notReadyReason() const {
    std::lock_guard<std::mutex> l(mu_);
    return status_.not_ready;
  }
  std::shared_ptr<const AppliedView> applied() const {
    std::lock_guard<std::mutex> l(mu_);
    return applied_;
  }
  const telemetry::Store& metrics() const { return store_; }
  telemetry::EventHub& events() { return events_; }
  const compile::NodeConfig& nodeConfig() const { return cfg_.node; }
  // The kernel's maps, to read (DumpMap); only the agent thread writes them.
  maps::Backend& maps() { return dp_->maps(); }

 private:
  Agent(const AgentConfig& cfg, std::unique_ptr<source::Source> source)
      : cfg_(cfg), source_(std::move(source)), store_(cfg.metrics_window_s) {}
  // Until the source has a complete view nothing is compiled: the kernel
  // keeps enforcing whatever it holds (a previous agent's policy, or none).
  void waitForSource();
  // The steps of one round, in order.
  void reconcile(bool source_changed);
  // True if it compiled a new plan. The host's addresses are read only
  // when the network changed.
  bool recompileIfNeeded(bool source_changed, bool net_changed);
  bool localAddressesChanged();
  void publish(std::shared_ptr<const model::ClusterState> state, const compile::NodeConfig& node);
  bool retryDue() const;
  void applyPlan(const std::map<std::string, uint32_t>& wanted);
  void scheduleRetry(bool in_force);
  void refreshStatus();
  // The loaded judge's status: "attached", or "ready" until a rule needs it.
  std::string httpJudgeState() const;
  // Hooks new pods, then writes the rest of `next`; what is not in force
  // goes to *errors and not_enforced_. True if a retry has nothing to fix.
  // `next` by value: once written it becomes current_ without a copy (at
  // 50k pods a copy is MiBs more heap at the peak, left fragmented after).
  bool enforce(maps::KernelState next, const std::map<std::string, uint32_t>& wanted,
               maps::ApplyStats* stats, std::vector<std::string>* errors);
  // Which local meshed pods run without their programs, and why.
  void findUnenforced(const std::map<std::string, uint32_t>& wanted,
                      const std::map<uint32_t, std::string>& unwritten);
  // Reads what the kernel holds into current_; false, with why in *errors
  // and current_known_ false, if it could not all be read.
  bool resync(std::vector<std::string>* errors);
  void updateReadiness(const std::vector<std::string>& errors);
  void sampleMetrics();
  void sampleMapUsage();  // counting entries walks every map: every few seconds
  void sweepConntrack();
  void readEvents(const std::atomic<bool>& stop);  // ring buffer -> events_
  // --http-rules=enforce on a kernel without the judge: what only the judge
  // could make safe is not opened at L4.
  void closeUnjudgedPorts(compile::Plan* plan) const;

  // Agent thread only.
  AgentConfig cfg_;
  std::unique_ptr<source::Source> source_;
  std::unique_ptr<datapath::Dataplane> dp_;
  std::shared_ptr<const compile::Plan> plan_;  // null until the first compile
  bool first_round_ = true;
  // Whether the last round put everything in force; if not, when to retry.
  bool in_force_ = false;
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds retry_delay_{0};
  std::map<std::string, std::string> not_enforced_;  // pod -> why: failures, over capacity
  std::map<std::string, std::string> pending_;       // pod -> why: its veth is not there yet
  std::vector<std::string> host_addrs_;
  std::map<std::string, uint32_t> wanted_;    // pod -> ifindex, as last applied
  std::map<std::string, uint32_t> resolved_;  // as last read (hostNetworkChanged)
  std::map<std::string, Addr> resolved_addrs_;  // the pods' addresses resolved_ was read for
  maps::KernelState current_;
  // Whether current_ is what the kernel holds; false until it was read
  // whole (at the first round, after a failed write, after an exception).
  bool current_known_ = false;
  uint64_t telemetry_read_errors_ = 0;  // the backend's count when last logged
  telemetry::Store store_;
  telemetry::EventHub events_;
  std::chrono::steady_clock::time_point next_sample_{};
  std::chrono::steady_clock::time_point next_usage_{};
  std::chrono::steady_clock::time_point next_sweep_{};

  // Written by the agent thread, read by the APIs: guarded by mu_.
  mutable std::mutex mu_;
  AgentStatus status_;
  std::shared_ptr<const AppliedView> applied_ = std::make_shared<const AppliedView>();
};

}  // namespace smik
