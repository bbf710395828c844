// Services and TrafficSplit (README: SMI semantics): what connect() to each
// ClusterIP:port becomes. Every ClusterIP Service is translated, split or not,
// so the tc policy always sees real pod addresses.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <tuple>

#include "agent/compile/compile.h"
#include "agent/compile/services.h"

namespace smik::compile {

using model::ClusterState;
using model::Proto;
using model::Service;
using model::ServicePort;
using model::TrafficSplit;

namespace {

bool matchesSelector(const model::Pod& pod, const std::map<std::string, std::string>& sel) {
  for (const auto& [k, v] : sel) {
    auto it = pod.meta.labels.find(k);
    if (it == pod.meta.labels.end() || it->second != v) return false;
  }
  return true;
}

// Oldest first (creationTimestamp, then name): the one that owns its root.
bool olderThan(const TrafficSplit* a, const TrafficSplit* b) {
  return std::tie(a->meta.creation_timestamp, a->meta.name) <
         std::tie(b->meta.creation_timestamp, b->meta.name);
}

class ServiceCompiler {
 public:
  ServiceCompiler(const ClusterState& s, const NodeConfig& node, Plan* plan)
      : state_(s), node_(node), plan_(*plan) {}

  void run() {
    indexSplits();
    std::set<std::string> names;
    for (const auto& [k, svc] : state_.services)
      for (const auto& p : svc.ports)
        for (const auto& ip : svc.cluster_ips) names.insert(tableName(svc, p, ip));
    ids_ = assignIdentities(names);  // stable, unique: they key the backend slots
    for (const auto& [k, svc] : state_.services) {
      for (const auto& ip : svc.cluster_ips) {
        Addr vip;
        if (!parseAddr(ip, &vip)) continue;  // the parser already rejected it
        for (const auto& port : svc.ports) addTable(svc, port, vip, ip);
      }
    }
  }

 private:
  static std::string tableName(const Service& svc, const ServicePort& p, const std::string& ip) {
    return namespacedName(svc.meta.ns, svc.meta.name) + "|" + ip + "|" + std::to_string(p.port) + "|" +
           protoName(p.proto);
  }

  void diag(const model::ObjectRef& ref, std::string msg,
            Diagnostic::Level level = Diagnostic::Level::kWarning) {
    plan_.diagnostics.push_back({level, ref, std::move(msg)});
  }

  // A name qualified with another cluster's domain resolves nowhere here:
  // the split is not applied, rather than applied to a Service that only
  // shares its first label.
  bool inThisCluster(const TrafficSplit& ts) {
    for (const auto& q : ts.qualified) {
      if (isClusterDomain(q.domain, node_.cluster_domain)) continue;
      diag({"TrafficSplit", ts.meta.ns, ts.meta.name},
           q.field + " \"" + q.written + "\" is in cluster domain " + q.domain + ", not " +
               node_.cluster_domain + " (--cluster-domain): not applied");
      return false;
    }
    return true;
  }

  void indexSplits() {
    std::map<std::string, std::vector<const TrafficSplit*>> by_root;
    for (const auto& [k, ts] : state_.traffic_splits)
      if (inThisCluster(ts)) by_root[namespacedName(ts.meta.ns, ts.service)].push_back(&ts);
    for (auto& [root, list] : by_root) {
      std::sort(list.begin(), list.end(), olderThan);
      split_of_[root] = list.front();
      for (size_t i = 1; i < list.size(); i++) {
        diag({"TrafficSplit", list[i]->meta.ns, list[i]->meta.name},
             "ignored: TrafficSplit " + list.front()->meta.name + " is older and owns root " +
                 list.front()->service);
      }
      auto svc = state_.services.find(root);
      if (svc == state_.services.end()) {
        diag({"TrafficSplit", list.front()->meta.ns, list.front()->meta.name},
             "root Service " + list.front()->service + " does not exist: nothing to split");
      } else if (svc->second.cluster_ips.empty()) {
        diag({"TrafficSplit", list.front()->meta.ns, list.front()->meta.name},
             "root Service " + list.front()->service +
                 " has no ClusterIP (headless): no address to split at connect()");
      }
    }
  }

  void addTable(const Service& svc, const ServicePort& port, const Addr& vip,
                const std::string& ip) {
    ServiceTable t;
    t.service = namespacedName(svc.meta.ns, svc.meta.name);
    t.vip = vip;
    t.port = port.port;
    t.proto = port.proto;
    t.svc_id = ids_.at(tableName(svc, port, ip));

    auto split = split_of_.find(t.service);
    if (split != split_of_.end()) applySplit(*split->second, svc, port, vip.family, &t);
    if (t.groups.empty()) {
      ServiceGroup own{t.service, 1, endpointsOf(svc, port, vip.family)};
      if (!own.endpoints.empty()) t.groups.push_back(std::move(own));
    }
    capEndpoints(&t);
    smik_svc_key k{};
    std::memcpy(k.addr, vip.bytes.data(), 16);
    k.port = port.port;
    k.proto = static_cast<uint8_t>(port.proto);
    k.family = vip.family;
    plan_.services[k] = std::move(t);
  }

  // The kernel indexes a table's endpoints with 16 bits.
  void capEndpoints(ServiceTable* t) {
    size_t room = 0xffff;
    for (auto& g : t->groups) {
      if (g.endpoints.size() > room) {
        diag({"Service", t->service.substr(0, t->service.find('/')),
              t->service.substr(t->service.find('/') + 1)},
             "more than 65535 endpoints on port " + std::to_string(t->port) +
                 ": the rest are not used");
        g.endpoints.resize(room);
      }
      room -= g.endpoints.size();
    }
    std::erase_if(t->groups, [](const ServiceGroup& g) { return g.endpoints.empty(); });
  }

  void applySplit(const TrafficSplit& ts, const Service& root, const ServicePort& port,
                  uint8_t family, ServiceTable* t) {
    model::ObjectRef ref{"TrafficSplit", ts.meta.ns, ts.meta.name};
    std::string where = " (port " + std::to_string(port.port) + "/" + protoName(port.proto) + ")";
    if (ts.has_matches) {
      diag(ref, "has HTTP matches: not applied at L4, traffic goes to the root Service");
      return;
    }
    std::vector<ServiceGroup> groups;
    std::vector<int64_t> weights;
    for (const auto& b : ts.backends) {
      if (b.weight == 0) continue;  // exactly no new connections
      if (b.service == root.meta.name) {
        // The root as its own backend: its endpoints, never the split again.
        groups.push_back({namespacedName(root.meta.ns, root.meta.name), 0, endpointsOf(root, port, family)});
      } else {
        auto it = state_.services.find(namespacedName(ts.meta.ns, b.service));
        if (it == state_.services.end()) {
          diag(ref, "backend Service " + b.service + " does not exist: skipped" + where);
          continue;
        }
        const ServicePort* bp = nullptr;
        for (const auto& p : it->second.ports)
          if (p.port == port.port && p.proto == port.proto) bp = &p;
        if (!bp) {
          diag(ref, "backend Service " + b.service + " has no port " +
                        std::to_string(port.port) + "/" + protoName(port.proto) + ": skipped");
          continue;
        }
        groups.push_back({it->first, 0, endpointsOf(it->second, *bp, family)});
      }
      if (groups.back().endpoints.empty()) {
        diag(ref, "backend Service " + b.service + " has no ready endpoint: skipped" + where);
        groups.pop_back();
        continue;
      }
      weights.push_back(b.weight);
    }
    if (groups.empty()) {
      diag(ref, "no backend can take traffic (all weights zero, or all skipped): the root "
                "Service's own endpoints serve it" + where);
      return;
    }
    if (groups.size() > SMIK_MAX_GROUPS) {
      diag(ref, "more than " + std::to_string(SMIK_MAX_GROUPS) +
                    " backends can take traffic: only the first ones are used" + where);
      groups.resize(SMIK_MAX_GROUPS);
      weights.resize(SMIK_MAX_GROUPS);
    }
    // Relative weights, scaled into 31 bits if they must be (in long double:
    // int64 weights may sum past int64); a non-zero weight never becomes zero.
    constexpr long double kLimit = 2147483648.0L;
    long double sum = 0;
    for (int64_t w : weights) sum += w;
    for (size_t i = 0; i < groups.size(); i++) {
      long double w = weights[i];
      if (sum > kLimit) w = std::max<long double>(1, std::llround(w * kLimit / sum));
      groups[i].weight = static_cast<uint32_t>(w);
    }
    t->split = namespacedName(ts.meta.ns, ts.meta.name);
    t->groups = std::move(groups);
  }

  // Ready endpoints of one service port, of one address family: from the
  // Service's EndpointSlices when it has any, else from its selector.
  std::vector<ServiceBackend> endpointsOf(const Service& svc, const ServicePort& port,
                                          uint8_t family) {
    std::vector<ServiceBackend> out;
    bool have_slices = false;
    for (const auto& [k, slice] : state_.endpoint_slices) {
      if (slice.meta.ns != svc.meta.ns || slice.service_name != svc.meta.name) continue;
      have_slices = true;
      const model::EndpointSlice::Port* sp = nullptr;
      for (const auto& p : slice.ports)
        if (p.name == port.name && p.proto == port.proto && p.port != 0) sp = &p;
      if (!sp) continue;
      for (const auto& ep : slice.endpoints) {
        if (!ep.ready) continue;
        for (const auto& a : ep.addresses) {
          Addr addr;
          if (parseAddr(a, &addr) && addr.family == family)
            out.push_back({addr, sp->port, ep.target_pod.empty() ? "" : namespacedName(slice.meta.ns, ep.target_pod)});
        }
      }
    }
    if (!have_slices && svc.has_selector) {
      for (const auto& [k, pod_ptr] : state_.pods) {
        const auto& pod = *pod_ptr;
        if (pod.meta.ns != svc.meta.ns || pod.host_network || pod.phase != "Running" ||
            !matchesSelector(pod, svc.selector))
          continue;
        uint16_t target = port.target_port_number;
        if (!port.target_port_name.empty()) {
          target = 0;
          for (const auto& cp : pod.container_ports)
            if (cp.name == port.target_port_name && cp.proto == port.proto) target = cp.port;
          if (!target) continue;  // this pod does not name that port
        }
        if (!target) target = port.port;
        for (const auto& ip : pod.ips) {
          Addr addr;
          if (parseAddr(ip, &addr) && addr.family == family) out.push_back({addr, target, k});
        }
      }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end(),
                          [](const auto& a, const auto& b) {
                            return a.addr == b.addr && a.port == b.port;
                          }),
              out.end());
    return out;
  }

  const ClusterState& state_;
  const NodeConfig& node_;
  Plan& plan_;
  std::map<std::string, uint32_t> ids_;
  std::map<std::string, const TrafficSplit*> split_of_;  // root ns/name -> owning split
};

}  // namespace

void compileServices(const ClusterState& state, const NodeConfig& node, Plan* plan) {
  size_t before = plan->diagnostics.size();
  ServiceCompiler(state, node, plan).run();
  // One split is resolved per ClusterIP and port: say each thing once.
  std::set<std::string> seen;
  auto first = plan->diagnostics.begin() + before;
  plan->diagnostics.erase(std::remove_if(first, plan->diagnostics.end(),
                                         [&](const Diagnostic& d) { return !seen.insert(d.str()).second; }),
                          plan->diagnostics.end());
}

}  // namespace smik::compile
