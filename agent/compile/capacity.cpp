#include "agent/compile/capacity.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace smik::compile {
namespace {

// One object's share of a map.
struct Share {
  model::ObjectRef object;
  std::string created;  // creationTimestamp, RFC3339: compares as a string
  size_t entries = 0;
};

// The order objects are rejected in: the largest first (one object must not
// crowd out many), then the newest (what was in force stays in force), then
// by name, last first (the same answer on every node).
std::vector<size_t> rejectionOrder(const std::vector<Share>& shares) {
  std::vector<size_t> order(shares.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const Share &x = shares[a], &y = shares[b];
    return std::tie(y.entries, y.created, y.object) < std::tie(x.entries, x.created, x.object);
  });
  return order;
}

void reject(Plan* plan, const Share& s, const std::string& map, size_t limit,
            const std::string& message) {
  plan->over_capacity.push_back({s.object, map, s.entries, limit, message});
  plan->diagnostics.push_back({Diagnostic::Level::kWarning, s.object, message});
}

std::string n(size_t v) { return std::to_string(v); }

}  // namespace

void fillPolicy(std::vector<TargetGrants> grants, const Capacity& cap, Plan* plan) {
  const auto metas = plan->policy;
  for (const auto& g : grants)
    for (const auto& [k, v] : g.entries) plan->policy.emplace(k, v);
  const size_t needed = plan->policy.size();
  if (needed <= cap.policy) return;

  // Two TrafficTargets may grant the same entry: it leaves the map only
  // with the last of them.
  std::map<smik_policy_key, uint32_t> refs;
  std::vector<Share> shares;
  for (const auto& g : grants) {
    for (const auto& [k, v] : g.entries) refs[k]++;
    shares.push_back({g.target, g.created, g.entries.size()});
  }
  size_t total = needed;
  std::vector<bool> rejected(grants.size());
  for (size_t i : rejectionOrder(shares)) {
    if (total <= cap.policy) break;
    rejected[i] = true;
    for (const auto& [k, v] : grants[i].entries)
      if (--refs[k] == 0) total--;
    reject(plan, shares[i], "smik_policy", cap.policy,
           "rejected: the policy map holds " + n(cap.policy) + " entries and the policy needs " +
               n(needed) + "; this TrafficTarget's " + n(shares[i].entries) +
               " (sources x ports; the largest go first) are left out: it grants nothing");
  }
  plan->policy = metas;
  for (size_t i = 0; i < grants.size(); i++)
    if (!rejected[i])
      for (const auto& [k, v] : grants[i].entries) plan->policy.emplace(k, v);
}

void fitEndpoints(const model::ClusterState& state, const Capacity& cap, Plan* plan) {
  const size_t needed = plan->endpoints.size();
  if (needed <= cap.endpoints) return;
  std::vector<Share> shares;
  for (const auto& [pod, ep] : plan->endpoints) {
    const auto& meta = state.pods.at(pod)->meta;
    shares.push_back({{"Pod", meta.ns, meta.name}, meta.creation_timestamp, 1});
  }
  size_t total = needed;
  for (size_t i : rejectionOrder(shares)) {
    if (total <= cap.endpoints) break;
    total--;
    plan->endpoints.erase(namespacedName(shares[i].object.ns, shares[i].object.name));
    reject(plan, shares[i], "smik_endpoints", cap.endpoints,
           "not enforced: the endpoints map holds " + n(cap.endpoints) +
               " local meshed pods and this node has " + n(needed) +
               "; this pod (the newest go first) gets no tc programs");
  }
}

void fitAddresses(const model::ClusterState& state, const NodeConfig& node, Plan* plan) {
  const size_t limit = node.capacity.ips, needed = plan->ip_identity.size();
  if (needed <= limit) return;
  // Who holds each address in the plan: the first pod by name (the
  // compiler's rule for a shared IP), unless it is one of the node's own.
  std::map<Addr, std::string> holder;
  for (const auto& [k, pod] : state.pods) {
    for (const auto& ip : pod->ips) {
      Addr a;
      if (parseAddr(ip, &a) && plan->ip_identity.count(a)) holder.emplace(a, k);
    }
  }
  for (const auto& ip : node.host_addrs) {
    Addr a;
    if (parseAddr(ip, &a)) holder.erase(a);
  }
  std::map<std::string, std::vector<Addr>> addrs_of;
  for (const auto& [a, pod] : holder) addrs_of[pod].push_back(a);
  std::vector<Share> shares;
  std::vector<const std::vector<Addr>*> addrs;
  for (const auto& [pod, list] : addrs_of) {
    if (plan->endpoints.count(pod)) continue;  // hooked with these addresses: they stay
    const auto& meta = state.pods.at(pod)->meta;
    shares.push_back({{"Pod", meta.ns, meta.name}, meta.creation_timestamp, list.size()});
    addrs.push_back(&list);
  }
  size_t total = needed;
  std::set<Addr> dropped;  // erased in one pass: each erase from a sorted vector moves its tail
  for (size_t i : rejectionOrder(shares)) {
    if (total <= limit) break;
    dropped.insert(addrs[i]->begin(), addrs[i]->end());
    total -= addrs[i]->size();
    reject(plan, shares[i], "smik_ipcache", limit,
           "rejected: the ipcache holds " + n(limit) + " addresses and the cluster has " +
               n(needed) + "; this pod's " + n(shares[i].entries) +
               " (the newest pods go first) are left out: its traffic is judged as from "
               "outside the cluster");
  }
  erase_if(plan->ip_identity, [&](const auto& e) { return dropped.count(e.first) > 0; });
  plan->ip_identity.shrink_to_fit();
}

void fitServices(const model::ClusterState& state, const Capacity& cap, Plan* plan) {
  struct Use {
    size_t tables = 0, backends = 0;
    std::vector<smik_svc_key> keys;
  };
  std::map<std::string, Use> by_service;
  size_t tables = 0, backends = 0;
  for (const auto& [k, t] : plan->services) {
    Use& u = by_service[t.service];
    u.tables++;
    u.keys.push_back(k);
    for (const auto& g : t.groups) {
      u.backends += g.endpoints.size();
      backends += g.endpoints.size();
    }
    tables++;
  }
  if (tables <= cap.services && backends <= cap.backends) return;

  const size_t tables_needed = tables, backends_needed = backends;
  std::vector<Share> by_tables, by_backends;
  std::vector<const Use*> uses;
  for (const auto& [name, u] : by_service) {
    const auto& meta = state.services.at(name).meta;
    model::ObjectRef ref{"Service", meta.ns, meta.name};
    by_tables.push_back({ref, meta.creation_timestamp, u.tables});
    by_backends.push_back({ref, meta.creation_timestamp, u.backends});
    uses.push_back(&u);
  }
  // Whichever map overflows picks the next Service to go, by its share of it.
  std::vector<bool> gone(uses.size());
  const auto table_order = rejectionOrder(by_tables), backend_order = rejectionOrder(by_backends);
  size_t ti = 0, bi = 0;
  while (tables > cap.services || backends > cap.backends) {
    const bool tables_over = tables > cap.services;
    const auto& order = tables_over ? table_order : backend_order;
    size_t& cursor = tables_over ? ti : bi;
    while (gone[order[cursor]]) cursor++;
    const size_t i = order[cursor];
    gone[i] = true;
    tables -= uses[i]->tables;
    backends -= uses[i]->backends;
    for (const auto& k : uses[i]->keys) plan->services.erase(k);
    if (tables_over) {
      reject(plan, by_tables[i], "smik_services", cap.services,
             "rejected: the services map holds " + n(cap.services) +
                 " service ports and the Services need " + n(tables_needed) + "; this one's " +
                 n(by_tables[i].entries) +
                 " (ClusterIPs x ports; the largest go first) are left out: connect() to it is "
                 "not translated");
    } else {
      reject(plan, by_backends[i], "smik_backends", cap.backends,
             "rejected: the backends map takes " + n(cap.backends) +
                 " endpoints (half its size: a table being replaced holds two generations) and "
                 "the Services need " + n(backends_needed) + "; this one's " +
                 n(by_backends[i].entries) +
                 " (the largest go first) are left out: connect() to it is not translated");
    }
  }
}

}  // namespace smik::compile
