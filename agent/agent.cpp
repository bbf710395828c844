#include "agent/agent.h"

#include <bpf/libbpf.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "agent/base/names.h"
#include "agent/telemetry/kernel_event.h"
#include "maps/desired.h"

namespace smik {

std::unique_ptr<Agent> Agent::create(const AgentConfig& cfg,
                                     std::unique_ptr<source::Source> source,
                                     std::unique_ptr<datapath::Dataplane> dataplane) {
  std::unique_ptr<Agent> a(new Agent(cfg, std::move(source)));
  a->dp_ = std::move(dataplane);
  // The first round reads what the kernel holds before it writes (after a
  // restart: the previous agent's policy, still enforcing): current_known_.
  a->status_.node = cfg.node.node_name;
  a->status_.access_mode = compile::accessModeName(cfg.node.access_mode);
  a->status_.host_traffic = compile::hostTrafficName(cfg.node.host_traffic);
  a->status_.http_rules = compile::httpRulesName(cfg.node.http_rules);
  if (cfg.node.http_rules == compile::HttpRulesAtL4::kEnforce) {
    std::string err;
    if (a->dp_->openHttpJudge(&err)) {
      a->status_.http_judge = a->httpJudgeState();
    } else {
      a->status_.http_judge = "unavailable: " + err;
      spdlog::error("--http-rules=enforce: the kernel's HTTP judge cannot run here ({}); ports "
                    "governed by HTTPRouteGroup rules stay CLOSED (fail closed)", err);
    }
  }
  a->status_.source = a->source_->describe();
  // Until the first round, why not: the HTTP server answers probes before it.
  a->status_.not_ready = a->source_->synced() ? "no policy applied yet" : a->source_->problem();
  return a;
}

void Agent::run(const std::atomic<bool>& stop) {
  std::thread events([&] { readEvents(stop); });
  while (!stop) {
    runOnce();
    int wait_ms = std::min<int>(250, cfg_.metrics_interval_ms);
    source_->waitForChange(wait_ms);
  }
  events.join();
}

void Agent::runOnce() {
  // Whatever goes wrong in one round, the kernel keeps the last good policy
  // and the next round starts over from what the kernel holds.
  try {
    bool changed = source_->refresh();
    if (!source_->synced()) {
      waitForSource();
    } else {
      reconcile(changed || first_round_);
      first_round_ = false;
      sampleMetrics();
      sweepConntrack();
    }
  } catch (const std::exception& e) {
    spdlog::error("reconcile failed, last good policy stays enforced: {}", e.what());
    current_known_ = false;  // the next round reads what the kernel holds
    first_round_ = true;
    resolved_addrs_.clear();  // and resolves every pod's interface again
  }
}

namespace {

struct EventSink {
  telemetry::EventHub* hub;
  const telemetry::Store* store;
};

int onRingEvent(void* ctx, void* data, size_t size) {
  auto* sink = static_cast<EventSink*>(ctx);
  std::optional<telemetry::KernelEvent> ev = telemetry::decodeKernelEvent(data, size);
  if (!ev) {
    if (sink->hub->unreadable() == 0)
      spdlog::warn("events: a ring buffer record of {} bytes is short for its kind: dropped", size);
    sink->hub->countUnreadable();
    return 0;
  }
  auto addr = [&](const uint8_t* bytes) { return kernelAddr(ev->edge.family, bytes); };
  telemetry::Event e;
  e.time = std::chrono::system_clock::now();
  e.kind = std::move(ev->kind);
  e.reason = std::move(ev->reason);
  e.client = sink->store->nameOf(addr(ev->edge.client));
  e.server = sink->store->nameOf(addr(ev->edge.server));
  e.port = ev->edge.port;
  e.proto = kernelProtoName(ev->edge.proto);
  e.suppressed = ev->suppressed;
  e.method = std::move(ev->method);
  e.path = std::move(ev->path);
  e.path_truncated = ev->path_truncated;
  sink->hub->publish(std::move(e));
  return 0;
}

}  // namespace

void Agent::readEvents(const std::atomic<bool>& stop) {
  UniqueFd events = dp_->eventsMap();
  if (!events) return;  // an in-memory dataplane: no ring buffer
  EventSink sink{&events_, &store_};
  std::unique_ptr<ring_buffer, void (*)(ring_buffer*)> rb(
      ring_buffer__new(events.get(), onRingEvent, &sink, nullptr), ring_buffer__free);
  if (!rb) {
    spdlog::error("events: cannot read the ring buffer {}: {}", maps::kEventsMap, strerror(errno));
    return;
  }
  while (!stop) ring_buffer__poll(rb.get(), 200);
}

void Agent::waitForSource() {
  std::string why = source_->problem();
  std::lock_guard<std::mutex> l(mu_);
  // Once a policy is in force a source that loses its view (it never does
  // today: reflectors keep their last list) would not unready the node.
  if (status_.ready) return;
  if (why != status_.not_ready) spdlog::warn("not ready: {}", why);
  status_.not_ready = why;
  status_.collections = source_->collections();
}

void Agent::sampleMetrics() {
  auto now = std::chrono::steady_clock::now();
  if (now < next_sample_) return;
  next_sample_ = now + std::chrono::milliseconds(cfg_.metrics_interval_ms);
  store_.sample(dp_->maps().connEdges(), dp_->httpResponseEdges(), std::chrono::system_clock::now());
  // Telemetry degrades rather than fails: say so when a reading was short.
  uint64_t read_errors = dp_->maps().telemetryReadErrors();
  if (read_errors != telemetry_read_errors_)
    spdlog::warn("{} map reads for metrics failed so far: counters may be low",
                 read_errors);
  telemetry_read_errors_ = read_errors;
  sampleMapUsage();
}

// Status pages are polled (tests: every few ms) while counting walks every
// map: a count a few seconds old is as good, and counting here keeps status()
// a reader.
void Agent::sampleMapUsage() {
  auto now = std::chrono::steady_clock::now();
  if (now < next_usage_) return;
  next_usage_ = now + std::chrono::seconds(5);
  auto usage = dp_->mapUsage();
  std::lock_guard<std::mutex> l(mu_);
  status_.maps = std::move(usage);
}

// Expired flows are already absent to the programs; deleting them keeps the
// table (a hash: nothing else evicts) free for new flows.
void Agent::sweepConntrack() {
  auto now = std::chrono::steady_clock::now();
  if (now < next_sweep_) return;
  next_sweep_ = now + std::chrono::seconds(10);
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  std::string err;
  long n = dp_->maps().sweepConntrack(uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec, &err);
  if (!err.empty()) spdlog::warn("conntrack sweep: {}", err);
  if (n < 0) return;
  std::lock_guard<std::mutex> l(mu_);
  status_.ct_swept_total += n;
}

// One round: compile if anything compiled from changed, then write and hook
// if the plan, the pods' interfaces or a due retry asks for it, then report.
void Agent::reconcile(bool source_changed) {
  // The host's addresses and the pods' interfaces are read again only when
  // netlink reports a change (or a new plan names other pods): an idle node
  // with 250 pods costs one empty read per round.
  bool net_changed = dp_->hostNetworkChanged();
  bool recompiled = recompileIfNeeded(source_changed, net_changed);
  if (net_changed || (recompiled && localAddressesChanged()))
    resolved_ = dp_->resolveInterfaces(*plan_);
  if (recompiled || resolved_ != wanted_ || retryDue()) applyPlan(resolved_);
  // A recompile and its apply free the previous state's, plan's and kernel
  // view's many small objects: hand the heap back to the system so RSS
  // follows the cluster's size. After the apply, not before: the apply
  // frees as much again (the old kernel view, the desired state).
  if (recompiled) malloc_trim(0);
  sampleMapUsage();
  refreshStatus();
}

// Whether the new plan's local pods or their addresses differ from those
// last resolved: a policy change alone moves no pod to another interface.
bool Agent::localAddressesChanged() {
  std::map<std::string, Addr> now;
  for (const auto& [pod, ep] : plan_->endpoints)
    if (!ep.addrs.empty()) now[pod] = ep.addrs.front();
  if (now == resolved_addrs_) return false;
  resolved_addrs_ = std::move(now);
  return true;
}

// The objects or this node's addresses changed (or nothing is compiled yet).
bool Agent::recompileIfNeeded(bool source_changed, bool net_changed) {
  if (!source_changed && !net_changed && plan_) return false;
  std::vector<std::string> addrs = dp_->hostAddresses();
  if (!source_changed && plan_ && addrs == host_addrs_) return false;
  compile::NodeConfig node = cfg_.node;
  node.host_addrs = addrs;
  host_addrs_ = addrs;
  auto state = std::make_shared<const model::ClusterState>(source_->state());
  auto plan = compile::compile(*state, node);
  closeUnjudgedPorts(&plan);
  plan_ = std::make_shared<const compile::Plan>(std::move(plan));
  source_->reportPlan(*plan_);
  store_.setTopology(state, plan_);
  publish(std::move(state), node);
  return true;
}

// The new plan, for the APIs (AppliedView), and what status lists of it.
void Agent::publish(std::shared_ptr<const model::ClusterState> state,
                    const compile::NodeConfig& node) {
  auto view = std::make_shared<AppliedView>();
  view->state = std::move(state);
  view->plan = plan_;
  view->node = node;
  for (const auto& [name, id] : plan_->identities) view->identity_names[id] = name;
  view->compiled = true;
  std::vector<std::string> diagnostics;
  for (const auto& d : plan_->diagnostics) diagnostics.push_back(d.str());
  std::lock_guard<std::mutex> l(mu_);
  applied_ = std::move(view);
  status_.diagnostics = std::move(diagnostics);
  status_.identities = plan_->identities.size();
}

void Agent::closeUnjudgedPorts(compile::Plan* plan) const {
  if (plan->http.empty() || dp_->httpJudgeOpen()) return;
  // Keep only what a TCPRoute grants on those ports; the HTTP rules' own
  // grants are dropped with the ports they needed judged.
  for (const auto& [key, hp] : plan->http) {
    std::set<uint32_t> whole_port;
    for (const auto& o : hp.origins)
      if (o.rule_id && o.match.empty()) whole_port.insert(o.src_id);
    for (auto it = plan->policy.begin(); it != plan->policy.end();) {
      const auto& [k, v] = *it;
      bool http_rule = v.rule_id && v.rule_id <= plan->rules.size() &&
                       plan->rules[v.rule_id - 1].rule.rfind("HTTPRouteGroup ", 0) == 0;
      if (http_rule && k.dst_id == key.first && k.dport == key.second &&
          k.proto == SMIK_PROTO_TCP && !whole_port.count(k.src_id))
        it = plan->policy.erase(it);
      else
        ++it;
    }
    plan->diagnostics.push_back({compile::Diagnostic::Level::kWarning,
                                 {"Node", "", cfg_.node.node_name},
                                 "port " + std::to_string(key.second) + " of " +
                                     plan->identityName(key.first) +
                                     ": HTTP rules cannot be judged on this kernel; closed"});
  }
  plan->http.clear();
}

bool Agent::retryDue() const {
  return !in_force_ && std::chrono::steady_clock::now() >= retry_at_;
}

// Writes the plan for the pods whose interfaces are `wanted`: unhooks the
// gone, hooks the new, fills the maps; a failure is retried with back-off.
void Agent::applyPlan(const std::map<std::string, uint32_t>& wanted) {
  auto t0 = std::chrono::steady_clock::now();
  std::map<std::string, uint8_t> modes;
  for (const auto& [pod, ifindex] : wanted) modes[pod] = dp_->attachMode();
  maps::KernelState next = maps::desiredState(*plan_, wanted, modes);
  dp_->detachGone(wanted);
  std::vector<std::string> errors;
  maps::ApplyStats st;
  bool in_force = enforce(std::move(next), wanted, &st, &errors);
  scheduleRetry(in_force);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("applied: {} ip writes, {} ip deletes, {} endpoints (+{} -{}), policy {}, "
               "services +{} -{} in {:.1f} ms",
               st.ip_writes, st.ip_deletes, wanted.size(), st.endpoint_writes,
               st.endpoint_deletes, st.policy_swapped ? "swapped" : "unchanged",
               st.service_writes, st.service_deletes, ms);
  for (const auto& e : errors) spdlog::error("{}", e);
  // What status() reports of the hooks and maps, before readiness says this
  // apply is in force: a reader who saw /readyz turn 200 must not then read a
  // /status from before it (socket programs not attached, no maps yet).
  next_usage_ = {};  // status shows the maps of what was just applied
  sampleMapUsage();
  refreshStatus();
  std::lock_guard<std::mutex> l(mu_);
  status_.applies_total++;
  status_.last_apply_ms = ms;
  if (!errors.empty()) status_.apply_errors_total++;
  status_.errors = errors;
  updateReadiness(errors);
}

// A write that failed once tends to fail again at once: back off, doubling
// from 250 ms to 8 s; a round that puts everything in force resets it.
void Agent::scheduleRetry(bool in_force) {
  in_force_ = in_force;
  if (in_force) {
    retry_delay_ = std::chrono::milliseconds(0);
    return;
  }
  retry_delay_ = std::clamp(retry_delay_ * 2, std::chrono::milliseconds(250),
                            std::chrono::milliseconds(8000));
  retry_at_ = std::chrono::steady_clock::now() + retry_delay_;
}

std::string Agent::httpJudgeState() const {
  return dp_->httpJudgeAttached() ? "attached"
                                  : "ready: attaches to the pods' cgroup with the first port an HTTP rule governs";
}

// What status() reports of the source, the kernel's maps and the hooks.
void Agent::refreshStatus() {
  std::vector<std::string> rejected;
  for (const auto& e : source_->errors()) rejected.push_back(e.str());
  std::vector<std::string> endpoints;
  for (const auto& [ifindex, a] : dp_->attachments())
    endpoints.push_back(a.pod + " " + a.ifname + "(" + std::to_string(ifindex) + ")");
  std::vector<std::string> not_enforced;
  for (const auto* m : {&not_enforced_, &pending_})
    for (const auto& [pod, why] : *m) not_enforced.push_back(pod + ": " + why);
  std::lock_guard<std::mutex> l(mu_);
  status_.attach_mode = dp_->tcxAvailable() ? "tcx" : "clsact";
  status_.rejected_objects_total = source_->rejectedTotal();
  status_.rejected = std::move(rejected);
  status_.degraded = source_->problem();
  status_.collections = source_->collections();
  status_.policy_entries = current_.policy.size();
  status_.services = current_.services.size();
  status_.socket_programs = dp_->socketProgramsAttached();
  if (dp_->httpJudgeOpen()) status_.http_judge = httpJudgeState();
  status_.ip_entries = current_.ips.size();
  status_.endpoints = std::move(endpoints);
  status_.not_enforced = std::move(not_enforced);
}

bool Agent::enforce(maps::KernelState next, const std::map<std::string, uint32_t>& wanted,
                    maps::ApplyStats* st, std::vector<std::string>* errors) {
  maps::Backend& backend = dp_->maps();
  wanted_ = wanted;
  std::string err;
  // Writes are diffs against current_: never against a partial reading.
  if (!current_known_ && !resync(errors)) return false;
  // 1. Hook: each new pod's endpoint entry and its identity's policy (deny
  // by default), then its tc programs. No other write can fail first.
  std::map<uint32_t, std::string> unwritten;
  if (!maps::hook(backend, next, &current_, &unwritten, st, &err)) {
    errors->push_back("hook: " + err);
    if (!resync(errors)) return false;
  }
  // A pod whose entry names its identity is enforced as itself, even if
  // the entry could not be updated (its addresses, say): keep it hooked.
  std::map<std::string, uint32_t> hookable;
  for (const auto& [pod, ifindex] : wanted) {
    auto held = current_.endpoints.find(ifindex);
    if (held != current_.endpoints.end() &&
        held->second.identity == next.endpoints.at(ifindex).identity)
      hookable[pod] = ifindex;
  }
  dp_->attachNew(hookable, errors);
  // 2. The HTTP judge governs its ports before the L4 policy opens them:
  // a socket accepted first would never be judged.
  if (!dp_->stageHttp(*plan_, &err)) {
    errors->push_back("http judge: " + err + " (the previous policy stays in force)");
    findUnenforced(wanted, unwritten);
    return false;
  }
  // 3. Fill: identities, everyone's policy, services, removals.
  bool filled = maps::apply(backend, next, current_, st, &err);
  if (filled) {
    current_ = std::move(next);
    if (!dp_->finishHttp(*plan_, &err)) errors->push_back("http judge: " + err);
    // Services are in the maps now: only then may connect() be translated.
    if (!dp_->socketProgramsAttached() && !dp_->attachSocketPrograms(&err))
      errors->push_back("socket programs: " + err);
  } else {
    errors->push_back("apply: " + err);
    resync(errors);  // retry from what the kernel really holds
  }
  findUnenforced(wanted, unwritten);
  bool in_force = filled && not_enforced_.empty() && dp_->socketProgramsAttached();
  // Pods the endpoints map cannot hold: no retry helps, only fewer pods.
  for (const auto& r : plan_->over_capacity)
    if (r.map == "smik_endpoints")
      not_enforced_[namespacedName(r.object.ns, r.object.name)] = r.message;
  return in_force;
}

void Agent::findUnenforced(const std::map<std::string, uint32_t>& wanted,
                           const std::map<uint32_t, std::string>& unwritten) {
  not_enforced_.clear();
  pending_.clear();
  std::map<std::string, uint32_t> attached;
  for (const auto& [ifindex, a] : dp_->attachments()) attached[a.pod] = ifindex;
  for (const auto& [pod, ep] : plan_->endpoints) {
    auto w = wanted.find(pod);
    if (w == wanted.end()) {
      pending_[pod] = "no host-side interface for its address yet";
    } else if (auto a = attached.find(pod); a == attached.end() || a->second != w->second) {
      auto u = unwritten.find(w->second);
      not_enforced_[pod] = u != unwritten.end() ? "endpoint entry not written: " + u->second
                                                : "tc programs not attached (see errors)";
    }
  }
}

bool Agent::resync(std::vector<std::string>* errors) {
  Result<maps::KernelState> held = dp_->maps().read();
  current_known_ = held.ok();
  if (!held) {
    errors->push_back("read maps: " + held.error());
    return false;
  }
  current_ = std::move(held).value();
  return true;
}

// Ready once everything compiled is in force. A failed write, or a local
// pod left without its programs, makes the node unready until a retry (or
// a change of the objects) fixes it. A socket hook that failed does not:
// it is Service translation, not policy, and is retried all the same.
// Called with mu_ held.
void Agent::updateReadiness(const std::vector<std::string>& errors) {
  std::string why;
  for (const auto& e : errors)
    if (why.empty() && e.rfind("socket programs: ", 0) != 0) why = e + " (retrying)";
  if (why.empty() && !not_enforced_.empty()) {
    const auto& [pod, reason] = *not_enforced_.begin();
    why = std::to_string(not_enforced_.size()) + " local meshed pod(s) not enforced: " + pod +
          " (" + reason + ")" + (not_enforced_.size() > 1 ? ", ..." : "");
  }
  if (why.empty()) {
    if (!status_.ready)
      spdlog::info("ready: policy enforced ({} entries, {} local endpoints)",
                   current_.policy.size(), current_.endpoints.size());
    status_.ready = true;
    status_.not_ready.clear();
    return;
  }
  if (status_.ready || status_.not_ready != why) spdlog::warn("not ready: {}", why);
  status_.ready = false;
  status_.not_ready = why;
}

AgentStatus Agent::status() const {
  AgentStatus out;
  std::shared_ptr<const AppliedView> view;
  {
    std::lock_guard<std::mutex> l(mu_);
    out = status_;
    view = applied_;
  }
  maps::Backend& m = dp_->maps();
  out.possible_cpus = libbpf_num_possible_cpus();
  out.reasons = m.reasons();
  out.sock_stats = m.sockStats();
  out.ct_stats = m.ctStats();
  out.answer_stats = m.answerStats();
  out.policy_generation = m.policyGeneration();
  auto http = dp_->httpCounters();
  out.http_stats.assign(http.begin(), http.end());
  auto edges = m.edges();
  auto name = [&](uint32_t id) {
    auto it = view->identity_names.find(id);
    if (it != view->identity_names.end()) return it->second;
    return compile::Plan{}.identityName(id);  // reserved ("host", "world") or a bare id
  };
  out.edges_total = edges.size();
  auto activity = [](const maps::EdgeCounters& e) { return e.value.flows_allowed + e.value.packets_denied; };
  size_t shown = std::min(edges.size(), AgentStatus::kStatusEdges);
  std::partial_sort(edges.begin(), edges.begin() + shown, edges.end(),
                    [&](const auto& a, const auto& b) { return activity(a) > activity(b); });
  edges.resize(shown);
  for (const auto& e : edges) {
    out.edges.push_back({name(e.key.src_id), name(e.key.dst_id), kernelProtoName(e.key.proto),
                         e.key.dport, e.value.flows_allowed, e.value.packets_denied});
  }
  return out;
}

}  // namespace smik
