// Typed userspace view of smik's pinned maps. A small Backend seam (libbpf on
// pinned maps, or an in-memory fake) keeps compiler->maps tests rootless.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/abi.h"
#include "agent/base/addr.h"
#include "agent/base/flat_map.h"
#include "agent/base/shared_flat_map.h"
#include "agent/base/result.h"
#include "agent/base/unique_fd.h"

namespace smik::maps {

// Pin names under the pin directory (the BPF object's map names).
inline constexpr const char* kIpcacheMap = "smik_ipcache";
inline constexpr const char* kEndpointsMap = "smik_endpoints";
inline constexpr const char* kPolicyMap = "smik_policy";
inline constexpr const char* kStateMap = "smik_state";
inline constexpr const char* kCtMap = "smik_ct";
inline constexpr const char* kReasonsMap = "smik_reasons";
inline constexpr const char* kEdgesMap = "smik_edges";
inline constexpr const char* kServicesMap = "smik_services";
inline constexpr const char* kBackendsMap = "smik_backends";
inline constexpr const char* kRevnatMap = "smik_revnat";
inline constexpr const char* kOwnSocketsMap = "smik_own_sockets";
inline constexpr const char* kSockStatsMap = "smik_sock_stats";
inline constexpr const char* kConnMap = "smik_conn";
inline constexpr const char* kEventsMap = "smik_events";
inline constexpr const char* kCtStatsMap = "smik_ct_stats";
inline constexpr const char* kFragsMap = "smik_frags";
// Each policy generation (the inner maps of smik_policy) is created under
// this name.
inline constexpr const char* kPolicyGeneration = "smik_pol_gen";
inline constexpr const char* kTcConfigMap = "smik_tc_config";
inline constexpr const char* kAnswerStatsMap = "smik_answer_stats";

using PolicyEntries = std::map<smik_policy_key, smik_policy_value>;

// A service port's backend table as the kernel holds it (smik_svc_value +
// smik_backends): weighted groups of endpoints.
struct SvcTable {
  uint32_t svc_id = 0;
  struct Group {
    uint32_t weight = 0;
    std::vector<smik_backend> endpoints;
  };
  std::vector<Group> groups;
  bool operator==(const SvcTable& o) const;
};

// What the kernel holds (or should hold) for enforcement.
struct KernelState {
  // Sorted vector: an entry per pod address. Shared with the plan it was
  // made from (desiredState), copied only if written.
  SharedFlatMap<Addr, smik_ip_info> ips;
  std::map<uint32_t, smik_endpoint> endpoints;  // by host-side ifindex
  PolicyEntries policy;
  bool policy_installed = false;  // an empty generation still fails closed if absent
  std::map<smik_svc_key, SvcTable> services;
};

// Connection telemetry of one edge.
struct ConnEdge {
  smik_conn_key key{};
  smik_conn_stats stats{};
};

// HTTP responses of one server-side edge (the HTTP judge's smik_http_edges).
struct HttpEdge {
  smik_conn_key key{};
  smik_http_edge_stats stats{};
};

struct EdgeCounters {
  smik_edge_key key{};
  smik_edge_value value{};
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual bool putIp(const Addr& a, const smik_ip_info& v, std::string* err) = 0;
  virtual bool deleteIp(const Addr& a, std::string* err) = 0;
  virtual bool putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) = 0;
  virtual bool deleteEndpoint(uint32_t ifindex, std::string* err) = 0;
  // Builds a complete new policy generation and puts it in force with a single
  // update of the outer map slot, then moves the generation counter.
  virtual bool swapPolicy(const PolicyEntries& entries, std::string* err) = 0;
  virtual uint32_t policyGeneration() = 0;
  // Moves the generation without a new policy: every conntrack entry is
  // judged again (its identities compared) at its next packet. For an
  // address or endpoint that changed or lost its identity.
  virtual bool bumpGeneration(std::string* err) = 0;
  // Deletes conntrack entries past their lifetime (smik_ct_lifetime) at
  // CLOCK_MONOTONIC now_ns; returns how many, or -1 (err) on failure.
  virtual long sweepConntrack(uint64_t now_ns, std::string* err) = 0;
  // Replaces each upserted table in one update as seen by connect(), and
  // frees the endpoints of replaced and deleted tables once no reader can
  // still hold them.
  virtual bool applyServices(const std::map<smik_svc_key, SvcTable>& upserts,
                             const std::vector<smik_svc_key>& deletes, std::string* err) = 0;
  // Everything enforcement depends on, or why it could not all be read:
  // apply() diffs against this, so a partial read must not pass for a
  // whole one.
  virtual Result<KernelState> read() = 0;
  // Telemetry, best effort: what could be read (an LRU entry evicted while
  // it was walked is skipped); a walk that failed otherwise is counted in
  // telemetryReadErrors() and the reading goes on.
  virtual std::vector<smik_counter> reasons() = 0;  // summed, index = SMIK_REASON_*
  virtual std::vector<EdgeCounters> edges() = 0;
  virtual std::vector<uint64_t> sockStats() = 0;  // summed, index = SMIK_SOCK_*
  virtual std::vector<uint64_t> ctStats() = 0;    // summed, index = SMIK_CT_*
  virtual std::vector<uint64_t> answerStats() = 0;  // summed, index = SMIK_ANSWER_*
  virtual std::vector<ConnEdge> connEdges() = 0;
  virtual uint64_t telemetryReadErrors() const { return 0; }
};

// In-memory backend: what the kernel would hold, for rootless tests.
class FakeBackend : public Backend {
 public:
  bool putIp(const Addr& a, const smik_ip_info& v, std::string* err) override;
  bool deleteIp(const Addr& a, std::string* err) override;
  bool putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) override;
  bool deleteEndpoint(uint32_t ifindex, std::string* err) override;
  bool swapPolicy(const PolicyEntries& entries, std::string* err) override;
  uint32_t policyGeneration() override { return generation_; }
  bool bumpGeneration(std::string* err) override;
  long sweepConntrack(uint64_t, std::string*) override { return 0; }
  bool applyServices(const std::map<smik_svc_key, SvcTable>& upserts,
                     const std::vector<smik_svc_key>& deletes, std::string* err) override;
  Result<KernelState> read() override;
  // What it holds, never failing: for a test to look at, fail_reads or not.
  const KernelState& held() const { return state_; }
  std::vector<smik_counter> reasons() override { return {}; }
  std::vector<EdgeCounters> edges() override { return {}; }
  std::vector<uint64_t> sockStats() override { return {}; }
  std::vector<uint64_t> ctStats() override { return {}; }
  std::vector<uint64_t> answerStats() override { return {}; }
  std::vector<ConnEdge> connEdges() override { return conn_edges; }
  std::vector<ConnEdge> conn_edges;  // what connEdges() reports, set by tests

  int writes = 0;  // single-entry writes, to check that apply only writes diffs
  int swaps = 0;
  int fail_after_writes = -1;  // >= 0: fail once this many writes succeeded
  int fail_reads = 0;          // > 0: so many read()s fail, then they succeed

 private:
  bool countWrite(std::string* err);
  KernelState state_;
  uint32_t generation_ = 0;
};

// The loaded maps LibbpfBackend reads and writes, one descriptor each,
// taken from the BPF objects' skeletons (datapath::Datapath::open).
struct BackendMaps {
  UniqueFd ipcache, endpoints, policy, state, reasons, edges;
  UniqueFd services, backends, sock_stats, conn, ct, ct_stats;
  UniqueFd answer_stats;
};

// The kernel's maps, through libbpf. Owns its descriptors; moves, never
// copies.
class LibbpfBackend final : public Backend {
 public:
  explicit LibbpfBackend(BackendMaps maps) : m_(std::move(maps)) {}
  LibbpfBackend(LibbpfBackend&& o) noexcept
      : m_(std::move(o.m_)), telemetry_read_errors_(o.telemetry_read_errors_.load()) {}
  LibbpfBackend& operator=(LibbpfBackend&& o) noexcept {
    m_ = std::move(o.m_);
    telemetry_read_errors_ = o.telemetry_read_errors_.load();
    return *this;
  }
  LibbpfBackend(const LibbpfBackend&) = delete;
  LibbpfBackend& operator=(const LibbpfBackend&) = delete;

  bool putIp(const Addr& a, const smik_ip_info& v, std::string* err) override;
  bool deleteIp(const Addr& a, std::string* err) override;
  bool putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) override;
  bool deleteEndpoint(uint32_t ifindex, std::string* err) override;
  bool swapPolicy(const PolicyEntries& entries, std::string* err) override;
  uint32_t policyGeneration() override;
  bool bumpGeneration(std::string* err) override;
  long sweepConntrack(uint64_t now_ns, std::string* err) override;
  bool applyServices(const std::map<smik_svc_key, SvcTable>& upserts,
                     const std::vector<smik_svc_key>& deletes, std::string* err) override;
  Result<KernelState> read() override;
  std::vector<smik_counter> reasons() override;
  std::vector<EdgeCounters> edges() override;
  std::vector<uint64_t> sockStats() override;
  std::vector<uint64_t> ctStats() override;
  std::vector<uint64_t> answerStats() override;
  std::vector<ConnEdge> connEdges() override;
  uint64_t telemetryReadErrors() const override { return telemetry_read_errors_; }
  // Deletes smik_backends entries no smik_services value points at: an agent
  // that died while replacing tables leaves some. Returns how many.
  Result<size_t> removeOrphanBackends();

 private:
  Result<void> readServices(KernelState* s);
  Result<void> readPolicy(KernelState* s);
  BackendMaps m_;
  std::atomic<uint64_t> telemetry_read_errors_{0};  // the API threads read too
};

smik_ip_key ipKey(const Addr& a);
// The kernel value of a table whose endpoints sit at indices 0.. of `gen`.
smik_svc_value svcValue(const SvcTable& t, uint8_t gen);
Addr addrOf(const smik_ip_key& k);

struct ApplyStats {
  int ip_writes = 0, ip_deletes = 0, endpoint_writes = 0, endpoint_deletes = 0;
  int service_writes = 0, service_deletes = 0;
  bool policy_swapped = false;
  bool generation_bumped = false;  // an identity moved: established flows judged again
};

// Hooks first: puts the new local endpoints of `next` (those `current`
// lacks or holds otherwise) under enforcement before anything else is
// written. Their identities' policy from `next` (the meta entry that denies
// by default, and their grants) goes in force with one swap, then their
// endpoint entries are written, each on its own: their tc programs can be
// attached whatever the rest of the change does. `current` becomes what the
// kernel holds afterwards; endpoints not written are in `failed` (ifindex ->
// why). False, writing no endpoint, if the swap failed.
bool hook(Backend& backend, const KernelState& next, KernelState* current,
          std::map<uint32_t, std::string>* failed, ApplyStats* stats, std::string* err);
// The policy hook() puts in force: `current`'s, with the policy of each new
// endpoint's identity taken from `next`.
PolicyEntries hookPolicy(const KernelState& next, const KernelState& current);

// Writes only the difference between `current` and `next`, in an order that
// never judges a packet with half the change: new identities and endpoints
// first, then the policy swap, then removals. On failure the kernel holds a
// prefix of that sequence; the caller re-reads and retries.
bool apply(Backend& backend, const KernelState& next, const KernelState& current,
           ApplyStats* stats, std::string* err);

}  // namespace smik::maps
