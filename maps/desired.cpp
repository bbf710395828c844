#include "maps/desired.h"

#include <cstring>

namespace smik::maps {

SvcTable svcTable(const compile::ServiceTable& t) {
  SvcTable out;
  out.svc_id = t.svc_id;
  for (const auto& g : t.groups) {
    SvcTable::Group kg;
    kg.weight = g.weight;
    for (const auto& e : g.endpoints) {
      smik_backend b{};
      std::memcpy(b.addr, e.addr.bytes.data(), 16);
      b.port = e.port;
      b.family = e.addr.family;
      kg.endpoints.push_back(b);
    }
    out.groups.push_back(std::move(kg));
  }
  return out;
}

KernelState desiredState(const compile::Plan& plan,
                         const std::map<std::string, uint32_t>& ifindex_by_pod,
                         const std::map<std::string, uint8_t>& attach_by_pod) {
  KernelState s;
  s.ips = plan.ip_identity;
  s.policy = plan.policy;
  s.policy_installed = true;
  for (const auto& [k, t] : plan.services) s.services[k] = svcTable(t);
  for (const auto& [pod, ep] : plan.endpoints) {
    auto it = ifindex_by_pod.find(pod);
    if (it == ifindex_by_pod.end()) continue;  // veth not there yet
    smik_endpoint v{};
    v.identity = ep.identity;
    auto at = attach_by_pod.find(pod);
    v.attach = at == attach_by_pod.end() ? 0 : at->second;
    for (const auto& a : ep.addrs) {
      if (v.naddrs == SMIK_ENDPOINT_ADDRS) break;
      v.families[v.naddrs] = a.family;
      std::memcpy(v.addrs[v.naddrs], a.bytes.data(), 16);
      v.naddrs++;
    }
    s.endpoints[it->second] = v;
  }
  return s;
}

}  // namespace smik::maps
