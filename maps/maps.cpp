#include "maps/maps.h"

#include <cstring>

namespace smik::maps {

smik_ip_key ipKey(const compile::Addr& a) {
  smik_ip_key k{};
  k.family = a.family;
  std::memcpy(k.addr, a.bytes.data(), 16);
  return k;
}

compile::Addr addrOf(const smik_ip_key& k) {
  compile::Addr a;
  a.family = k.family;
  std::memcpy(a.bytes.data(), k.addr, 16);
  return a;
}

KernelState desiredState(const compile::Plan& plan,
                         const std::map<std::string, uint32_t>& ifindex_by_pod,
                         const std::map<std::string, uint8_t>& attach_by_pod) {
  KernelState s;
  s.ips = plan.ip_identity;
  s.policy = plan.policy;
  s.policy_installed = true;
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

namespace {
bool sameEndpoint(const smik_endpoint& a, const smik_endpoint& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}
}  // namespace

bool apply(Backend& backend, const KernelState& next, const KernelState& current,
           ApplyStats* stats, std::string* err) {
  ApplyStats local;
  ApplyStats& st = stats ? *stats : local;
  for (const auto& [addr, info] : next.ips) {
    auto it = current.ips.find(addr);
    if (it != current.ips.end() && it->second == info) continue;
    if (!backend.putIp(addr, info, err)) return false;
    st.ip_writes++;
  }
  for (const auto& [ifindex, ep] : next.endpoints) {
    auto it = current.endpoints.find(ifindex);
    if (it != current.endpoints.end() && sameEndpoint(it->second, ep)) continue;
    if (!backend.putEndpoint(ifindex, ep, err)) return false;
    st.endpoint_writes++;
  }
  if (next.policy != current.policy || !current.policy_installed) {
    if (!backend.swapPolicy(next.policy, err)) return false;
    st.policy_swapped = true;
  }
  for (const auto& [ifindex, ep] : current.endpoints) {
    if (next.endpoints.count(ifindex)) continue;
    if (!backend.deleteEndpoint(ifindex, err)) return false;
    st.endpoint_deletes++;
  }
  for (const auto& [addr, info] : current.ips) {
    if (next.ips.count(addr)) continue;
    if (!backend.deleteIp(addr, err)) return false;
    st.ip_deletes++;
  }
  return true;
}

}  // namespace smik::maps
