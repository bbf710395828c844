#include "agent/telemetry/store.h"

#include <algorithm>

#include "agent/compile/compile.h"

#include <cstring>
#include <set>
#include <tuple>

namespace smik::telemetry {

namespace {

std::vector<uint8_t> rawKey(const smik_conn_key& k) {
  const auto* p = reinterpret_cast<const uint8_t*>(&k);
  return {p, p + sizeof k};
}

// cur - prev, or cur when the kernel's entry restarted from zero.
uint64_t diff(uint64_t cur, uint64_t prev) { return cur >= prev ? cur - prev : cur; }

void sparseDiff(const uint32_t* cur, const uint32_t* prev, std::vector<std::pair<uint16_t, uint32_t>>* out) {
  for (uint16_t b = 0; b < SMIK_HIST_BUCKETS; b++) {
    uint32_t d = cur[b] >= prev[b] ? cur[b] - prev[b] : cur[b];
    if (d) out->emplace_back(b, d);
  }
}

std::string nsOf(const std::string& key) { return key.substr(0, key.find('/')); }
std::string podName(const std::string& key) { return key.substr(key.find('/') + 1); }

}  // namespace

bool Store::SideDelta::empty() const {
  return success == 0 && refused == 0 && timeout == 0 && policy == 0 && reset == 0 &&
         handshake.empty() && srtt.empty() && http_success == 0 && http_failure == 0 &&
         response.empty();
}

void Store::setTopology(std::shared_ptr<const model::ClusterState> shared,
                        const compile::Plan& plan) {
  setTopology(std::move(shared), std::make_shared<const compile::Plan>(plan));
}

void Store::setTopology(std::shared_ptr<const model::ClusterState> shared,
                        std::shared_ptr<const compile::Plan> plan_ptr) {
  const model::ClusterState& state = *shared;
  const compile::Plan& plan = *plan_ptr;
  std::lock_guard<std::mutex> l(mu_);
  routes_.clear();
  for (const auto& [k, t] : plan.services) {
    ServiceRoute& r = routes_[t.svc_id];
    r.service = t.service;
    for (const auto& g : t.groups)
      for (const auto& e : g.endpoints) r.group_of[{e.addr, e.port}] = g.service;
  }
  state_ = shared;
  namespaces_.clear();
  for (const auto& [name, ns] : state.namespaces) namespaces_[name] = name;
  std::vector<std::pair<Addr, uint32_t>> by_ip;
  by_ip.reserve(state.pods.size());
  uint32_t index = 0;
  for (auto it = state.pods.begin(); it != state.pods.end(); ++it, ++index) {
    const auto& pod = *it->second;
    namespaces_[pod.meta.ns] = pod.meta.ns;
    if (pod.host_network) continue;  // the node's address is nobody's pod
    for (const auto& ip : pod.ips) {
      Addr a;
      if (parseAddr(ip, &a)) by_ip.emplace_back(a, index);
    }
  }
  pod_by_ip_.assign(std::move(shared), std::move(plan_ptr), std::move(by_ip));
}

void Store::PodsByIp::assign(std::shared_ptr<const model::ClusterState> state,
                             std::shared_ptr<const compile::Plan> plan,
                             std::vector<std::pair<Addr, uint32_t>> entries) {
  // Of pods that share an address the last in key order names it.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  const auto& addrs = plan->ip_identity;
  std::vector<uint32_t> named(addrs.size(), kNone);
  std::vector<std::pair<Addr, uint32_t>> aside;
  // Both sorted by address: one merge.
  auto at = addrs.begin();
  for (size_t i = 0; i < entries.size(); i++) {
    if (i + 1 < entries.size() && entries[i + 1].first == entries[i].first) continue;
    const auto& [addr, pod] = entries[i];
    while (at != addrs.end() && at->first < addr) ++at;
    if (at != addrs.end() && at->first == addr)
      named[at - addrs.begin()] = pod;
    else
      aside.emplace_back(addr, pod);
  }
  aside.shrink_to_fit();
  state_ = std::move(state);
  plan_ = std::move(plan);
  named_ = std::move(named);
  aside_ = std::move(aside);
}

const std::string& Store::PodsByIp::keyAt(uint32_t i) const {
  return (state_->pods.begin() + i)->first;
}

const std::string& Store::PodsByIp::find(const Addr& a) const {
  static const std::string kNoPod;
  if (plan_) {
    const auto& addrs = plan_->ip_identity;
    auto it = addrs.lower_bound(a);
    if (it != addrs.end() && it->first == a) {
      const uint32_t pod = named_[it - addrs.begin()];
      return pod == kNone ? kNoPod : keyAt(pod);
    }
  }
  auto it = std::lower_bound(aside_.begin(), aside_.end(), a,
                             [](const auto& e, const Addr& x) { return e.first < x; });
  return it != aside_.end() && it->first == a ? keyAt(it->second) : kNoPod;
}

void Store::sample(const std::vector<maps::ConnEdge>& edges, const std::vector<maps::HttpEdge>& http,
                   Clock::time_point now) {
  std::lock_guard<std::mutex> l(mu_);
  Interval iv{now, {}};
  static const smik_conn_stats kZero{};
  // An edge missing from this reading was evicted from the kernel's LRU map:
  // if it comes back, it counts from zero again.
  std::map<std::vector<uint8_t>, smik_conn_stats> seen;
  for (const auto& e : edges) {
    auto key = rawKey(e.key);
    const smik_conn_stats& prev = last_.count(key) ? last_[key] : kZero;
    const smik_conn_stats& cur = e.stats;
    EdgeDelta d;
    d.client_pod = pod_by_ip_.find(kernelAddr(e.key.family, e.key.client));
    d.server_pod = pod_by_ip_.find(kernelAddr(e.key.family, e.key.server));
    if (auto via = routes_.find(e.key.svc_id); e.key.svc_id && via != routes_.end()) {
      d.via_service = via->second.service;
      auto g = via->second.group_of.find({kernelAddr(e.key.family, e.key.server), e.key.port});
      if (g != via->second.group_of.end()) d.via_backend = g->second;
    }
    d.client.success = diff(cur.client_success, prev.client_success);
    d.client.refused = diff(cur.client_refused, prev.client_refused);
    d.client.timeout = diff(cur.client_timeout, prev.client_timeout);
    d.client.policy = diff(cur.client_policy, prev.client_policy);
    d.client.reset = diff(cur.client_reset, prev.client_reset);
    d.server.success = diff(cur.server_success, prev.server_success);
    d.server.policy = diff(cur.server_policy, prev.server_policy);
    // A refusal is the server's own answer: when the client is on this node
    // its sockops saw it, and it belongs on the server's edge too.
    d.server.refused = d.client.refused;
    sparseDiff(cur.handshake_us, prev.handshake_us, &d.client.handshake);
    sparseDiff(cur.srtt_us, prev.srtt_us, &d.client.srtt);
    d.server.handshake = d.client.handshake;
    d.server.srtt = d.client.srtt;
    seen[key] = cur;
    if (d.client.empty() && d.server.empty()) continue;
    uint32_t index = iv.edges.size();
    if (!d.client_pod.empty()) iv.by_client[d.client_pod].push_back(index);
    if (!d.server_pod.empty()) iv.by_server[d.server_pod].push_back(index);
    iv.edges.push_back(std::move(d));
  }
  // HTTP responses, counted at the server: one delta that both ends of the
  // edge report (its client's "to" edge and its server's "from" edge, and
  // the server's totals), so a cluster-wide sum has it once, from the
  // server's node.
  static const smik_http_edge_stats kZeroHttp{};
  std::map<std::vector<uint8_t>, smik_http_edge_stats> seen_http;
  for (const auto& e : http) {
    auto key = rawKey(e.key);
    auto was = last_http_.find(key);
    const smik_http_edge_stats& prev = was == last_http_.end() ? kZeroHttp : was->second;
    const smik_http_edge_stats& cur = e.stats;
    SideDelta d;
    for (int m = 0; m < SMIK_HTTP_METHODS; m++)
      for (int c = 0; c < SMIK_HTTP_CLASSES; c++)
        (c == 5 ? d.http_failure : d.http_success) += diff(cur.answers[m][c], prev.answers[m][c]);
    sparseDiff(cur.response_us, prev.response_us, &d.response);
    seen_http[key] = cur;
    if (d.empty()) continue;
    EdgeDelta ed;
    ed.client_pod = pod_by_ip_.find(kernelAddr(e.key.family, e.key.client));
    ed.server_pod = pod_by_ip_.find(kernelAddr(e.key.family, e.key.server));
    ed.client = d;
    ed.server = std::move(d);
    uint32_t index = iv.edges.size();
    if (!ed.client_pod.empty()) iv.by_client[ed.client_pod].push_back(index);
    if (!ed.server_pod.empty()) iv.by_server[ed.server_pod].push_back(index);
    iv.edges.push_back(std::move(ed));
  }
  // Prometheus counters must not fall when the kernel evicts an edge: what
  // it had counted stays in the totals of its workloads.
  for (const auto& [raw, s] : last_)
    if (!seen.count(raw)) addTotals(raw, s, &evicted_);
  last_ = std::move(seen);
  for (const auto& [raw, s] : last_http_)
    if (!seen_http.count(raw)) addHttpTotals(raw, s, &evicted_http_);
  last_http_ = std::move(seen_http);
  intervals_.push_back(std::move(iv));
  last_sample_ = now;
  while (!intervals_.empty() &&
         intervals_.front().t < now - std::chrono::seconds(max_window_s_ + 1))
    intervals_.pop_front();
}

Store::Clock::time_point Store::now() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_sample_ == Clock::time_point{} ? Clock::now() : last_sample_;
}

std::vector<const Store::Interval*> Store::window(int window_s) const {
  std::vector<const Interval*> out;
  auto from = last_sample_ - std::chrono::seconds(window_s);
  for (const auto& iv : intervals_)
    if (iv.t > from) out.push_back(&iv);
  return out;
}

void Store::addTo(Counts* c, const SideDelta& d) {
  c->success += d.success;
  c->refused += d.refused;
  c->timeout += d.timeout;
  c->policy += d.policy;
  c->reset += d.reset;
  for (const auto& [b, n] : d.handshake) c->handshake_us.buckets[b] += n;
  for (const auto& [b, n] : d.srtt) c->srtt_us.buckets[b] += n;
  c->http_success += d.http_success;
  c->http_failure += d.http_failure;
  for (const auto& [b, n] : d.response) c->response_us.buckets[b] += n;
}

ResourceRef Store::ownerOf(const std::string& pod, const std::string& kind) const {
  if (pod.empty()) return {};
  std::string ns = nsOf(pod), name = podName(pod);
  if (kind == "Pod") return {"Pod", ns, name};
  if (kind == "Namespace") return {"Namespace", "", ns};
  auto p = state_->pods.find(pod);
  if (p == state_->pods.end()) return {};
  const auto& meta = p->second->meta;
  if (kind == "DaemonSet" || kind == "StatefulSet")
    return meta.owner_kind == kind ? ResourceRef{kind, ns, meta.owner_name} : ResourceRef{};
  if (kind != "Deployment" || meta.owner_kind != "ReplicaSet") return {};
  auto rs = state_->workloads.find("ReplicaSet/" + ns + "/" + meta.owner_name);
  if (rs != state_->workloads.end())
    return rs->second.meta.owner_kind == "Deployment"
               ? ResourceRef{"Deployment", ns, rs->second.meta.owner_name}
               : ResourceRef{};
  // No ReplicaSet object known: a Deployment names its ReplicaSets
  // <deployment>-<pod-template-hash>, and the hash is on the pod.
  auto hash = meta.labels.find("pod-template-hash");
  std::string suffix = hash == meta.labels.end() ? "" : "-" + hash->second;
  const std::string& rs_name = meta.owner_name;
  if (!suffix.empty() && rs_name.size() > suffix.size() &&
      rs_name.compare(rs_name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return {"Deployment", ns, rs_name.substr(0, rs_name.size() - suffix.size())};
  return {};
}

std::string Store::nameOf(const Addr& a) const {
  std::lock_guard<std::mutex> l(mu_);
  const std::string& pod = pod_by_ip_.find(a);
  return pod.empty() ? a.str() : pod;
}

std::pair<std::string, std::string> Store::workloadOf(const std::string& pod) const {
  if (pod.empty()) return {"", ""};
  for (const char* kind : {"Deployment", "DaemonSet", "StatefulSet"}) {
    ResourceRef r = ownerOf(pod, kind);
    if (!r.name.empty()) return {r.ns, r.name};
  }
  return {nsOf(pod), podName(pod)};
}

void Store::addHttpTotals(const std::vector<uint8_t>& raw, const smik_http_edge_stats& s,
                          std::map<HttpWorkloadKey, HttpWorkloadEdge>* agg) const {
  smik_conn_key k;
  std::memcpy(&k, raw.data(), sizeof k);
  auto [cns, cw] = workloadOf(pod_by_ip_.find(kernelAddr(k.family, k.client)));
  auto [sns, sw] = workloadOf(pod_by_ip_.find(kernelAddr(k.family, k.server)));
  HttpWorkloadEdge& e = (*agg)[{cns, cw, sns, sw}];
  e.src_ns = cns;
  e.src_workload = cw;
  e.dst_ns = sns;
  e.dst_workload = sw;
  for (int m = 0; m < SMIK_HTTP_METHODS; m++)
    for (int c = 0; c < SMIK_HTTP_CLASSES; c++) e.answers[m][c] += s.answers[m][c];
  for (int b = 0; b < SMIK_HIST_BUCKETS; b++) e.response_us.buckets[b] += s.response_us[b];
}

std::vector<Store::HttpWorkloadEdge> Store::httpTotals() const {
  std::lock_guard<std::mutex> l(mu_);
  std::map<HttpWorkloadKey, HttpWorkloadEdge> agg = evicted_http_;
  for (const auto& [raw, s] : last_http_) addHttpTotals(raw, s, &agg);
  std::vector<HttpWorkloadEdge> out;
  for (auto& [k, e] : agg) out.push_back(std::move(e));
  return out;
}

void Store::addTotals(const std::vector<uint8_t>& raw, const smik_conn_stats& s,
                      std::map<WorkloadKey, Counts>* agg) const {
  auto workload = [&](const std::string& pod) { return workloadOf(pod); };
  smik_conn_key k;
  std::memcpy(&k, raw.data(), sizeof k);
  auto [cns, cw] = workload(pod_by_ip_.find(kernelAddr(k.family, k.client)));
  auto [sns, sw] = workload(pod_by_ip_.find(kernelAddr(k.family, k.server)));
  Counts c, srv;
  c.success = s.client_success;
  c.refused = s.client_refused;
  c.timeout = s.client_timeout;
  c.policy = s.client_policy;
  c.reset = s.client_reset;
  srv.success = s.server_success;
  srv.policy = s.server_policy;
  srv.refused = s.client_refused;
  for (int b = 0; b < SMIK_HIST_BUCKETS; b++) {
    c.handshake_us.buckets[b] = srv.handshake_us.buckets[b] = s.handshake_us[b];
    c.srtt_us.buckets[b] = srv.srtt_us.buckets[b] = s.srtt_us[b];
  }
  if (!cw.empty() && !c.empty()) (*agg)[{cns, cw, sns, sw, Side::kClient}].add(c);
  if (!sw.empty() && !srv.empty()) (*agg)[{sns, sw, cns, cw, Side::kServer}].add(srv);
}

std::vector<Store::WorkloadEdge> Store::totals() const {
  std::lock_guard<std::mutex> l(mu_);
  std::map<WorkloadKey, Counts> agg = evicted_;
  for (const auto& [raw, s] : last_) addTotals(raw, s, &agg);
  std::vector<WorkloadEdge> out;
  for (auto& [k, c] : agg)
    out.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k), std::get<4>(k),
                   std::move(c)});
  return out;
}

std::vector<ResourceRef> Store::list(const std::string& kind, const std::string& ns) const {
  std::lock_guard<std::mutex> l(mu_);
  std::set<ResourceRef> out;
  if (kind == "Namespace") {
    for (const auto& [name, n] : namespaces_) out.insert({"Namespace", "", name});
  } else if (kind == "TrafficSplit") {
    for (const auto& [key, ts] : state_->traffic_splits)
      if (ns.empty() || ts.meta.ns == ns) out.insert({"TrafficSplit", ts.meta.ns, ts.meta.name});
  } else {
    for (const auto& [key, pod_ptr] : state_->pods) {
      const auto& pod = *pod_ptr;
      if (!ns.empty() && pod.meta.ns != ns) continue;
      ResourceRef r = ownerOf(key, kind);
      if (!r.name.empty()) out.insert(r);
    }
  }
  return {out.begin(), out.end()};
}

bool Store::exists(const ResourceRef& r) const {
  for (const auto& x : list(r.kind, r.ns))
    if (x == r) return true;
  return false;
}

std::vector<std::string> Store::podsOf(const ResourceRef& r) const {
  if (r.kind == "Pod") return {namespacedName(r.ns, r.name)};
  std::vector<std::string> out;
  for (const auto& [key, pod] : state_->pods)
    if (ownerOf(key, r.kind) == r) out.push_back(key);
  return out;
}

namespace {
const std::vector<uint32_t>& indexOf(const std::unordered_map<std::string, std::vector<uint32_t>>& m,
                                     const std::string& pod) {
  static const std::vector<uint32_t> kNone;
  auto it = m.find(pod);
  return it == m.end() ? kNone : it->second;
}
}  // namespace

Counts Store::inbound(const ResourceRef& r, int window_s) const {
  std::lock_guard<std::mutex> l(mu_);
  Counts c;
  auto pods = podsOf(r);
  for (const Interval* iv : window(window_s))
    for (const auto& pod : pods)
      for (uint32_t i : indexOf(iv->by_server, pod)) addTo(&c, iv->edges[i].server);
  return c;
}

std::vector<EdgeMetrics> Store::edges(const ResourceRef& r, int window_s) const {
  return edgesOf(r, window_s, false);
}

std::vector<EdgeMetrics> Store::edgeSamples(const ResourceRef& r, int window_s) const {
  return edgesOf(r, window_s, true);
}

std::vector<EdgeMetrics> Store::edgesOf(const ResourceRef& r, int window_s,
                                        bool samples_only_too) const {
  std::lock_guard<std::mutex> l(mu_);
  std::map<std::pair<ResourceRef, Side>, Counts> by_peer;
  auto pods = podsOf(r);
  for (const Interval* iv : window(window_s)) {
    for (const auto& pod : pods) {
      // Only peers that can be named: traffic from the node or the world is
      // in the resource's totals, not in an edge.
      for (uint32_t i : indexOf(iv->by_client, pod)) {
        const auto& e = iv->edges[i];
        ResourceRef server = ownerOf(e.server_pod, r.kind);
        if (!server.name.empty() && !e.client.empty())
          addTo(&by_peer[{server, Side::kClient}], e.client);
      }
      for (uint32_t i : indexOf(iv->by_server, pod)) {
        const auto& e = iv->edges[i];
        ResourceRef client = ownerOf(e.client_pod, r.kind);
        if (!client.name.empty() && !e.server.empty())
          addTo(&by_peer[{client, Side::kServer}], e.server);
      }
    }
  }
  std::vector<EdgeMetrics> out;
  for (auto& [k, c] : by_peer)
    if (!c.empty() || (samples_only_too && (c.handshake_us.count() || c.srtt_us.count())))
      out.push_back({k.first, k.second, std::move(c)});
  return out;
}

std::vector<SplitBackendMetrics> Store::split(const ResourceRef& r, int window_s) const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<SplitBackendMetrics> out;
  auto ts = state_->traffic_splits.find(namespacedName(r.ns, r.name));
  if (ts == state_->traffic_splits.end()) return out;
  const std::string apex = namespacedName(r.ns, ts->second.service);
  for (const auto& b : ts->second.backends) {
    SplitBackendMetrics m{ts->second.service, b.service, static_cast<uint32_t>(b.weight), {}};
    // Connections to the apex's ClusterIP that the socket program sent to
    // this backend, as their clients saw them.
    for (const Interval* iv : window(window_s))
      for (const auto& e : iv->edges)
        if (e.via_service == apex && e.via_backend == namespacedName(r.ns, b.service)) addTo(&m.counts, e.client);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace smik::telemetry
