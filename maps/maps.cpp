#include "maps/maps.h"

#include <cstring>
#include <set>

namespace smik::maps {

smik_ip_key ipKey(const Addr& a) {
  smik_ip_key k{};
  k.family = a.family;
  std::memcpy(k.addr, a.bytes.data(), 16);
  return k;
}

Addr addrOf(const smik_ip_key& k) {
  Addr a;
  a.family = k.family;
  std::memcpy(a.bytes.data(), k.addr, 16);
  return a;
}

smik_svc_value svcValue(const SvcTable& t, uint8_t gen) {
  smik_svc_value v{};
  v.svc_id = t.svc_id;
  v.gen = gen;
  uint32_t cum = 0, offset = 0;
  for (const auto& g : t.groups) {
    if (v.ngroups == SMIK_MAX_GROUPS) break;  // the compiler already capped it
    cum += g.weight;
    v.cum[v.ngroups] = cum;
    v.offset[v.ngroups] = offset;
    v.count[v.ngroups] = g.endpoints.size();
    offset += g.endpoints.size();
    v.ngroups++;
  }
  v.total = cum;
  return v;
}

bool SvcTable::operator==(const SvcTable& o) const {
  if (svc_id != o.svc_id || groups.size() != o.groups.size()) return false;
  for (size_t i = 0; i < groups.size(); i++) {
    const auto &a = groups[i], &b = o.groups[i];
    if (a.weight != b.weight || a.endpoints.size() != b.endpoints.size()) return false;
    for (size_t j = 0; j < a.endpoints.size(); j++)
      if (std::memcmp(&a.endpoints[j], &b.endpoints[j], sizeof(smik_backend)) != 0) return false;
  }
  return true;
}

namespace {
bool sameEndpoint(const smik_endpoint& a, const smik_endpoint& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

bool isNewEndpoint(const KernelState& current, uint32_t ifindex, const smik_endpoint& ep) {
  auto it = current.endpoints.find(ifindex);
  return it == current.endpoints.end() || !sameEndpoint(it->second, ep);
}
}  // namespace

PolicyEntries hookPolicy(const KernelState& next, const KernelState& current) {
  std::set<uint32_t> ids;
  for (const auto& [ifindex, ep] : next.endpoints)
    if (isNewEndpoint(current, ifindex, ep)) ids.insert(ep.identity);
  PolicyEntries out = current.policy_installed ? current.policy : PolicyEntries{};
  std::erase_if(out, [&](const auto& e) { return ids.count(e.first.dst_id) > 0; });
  for (const auto& [k, v] : next.policy)
    if (ids.count(k.dst_id)) out.emplace(k, v);
  return out;
}

bool hook(Backend& backend, const KernelState& next, KernelState* current,
          std::map<uint32_t, std::string>* failed, ApplyStats* stats, std::string* err) {
  ApplyStats local;
  ApplyStats& st = stats ? *stats : local;
  PolicyEntries policy = hookPolicy(next, *current);
  if (policy != current->policy || !current->policy_installed) {
    if (!backend.swapPolicy(policy, err)) {
      for (const auto& [ifindex, ep] : next.endpoints)
        if (isNewEndpoint(*current, ifindex, ep)) (*failed)[ifindex] = "policy swap: " + *err;
      return false;
    }
    current->policy = std::move(policy);
    current->policy_installed = true;
    st.policy_swapped = true;
  }
  for (const auto& [ifindex, ep] : next.endpoints) {
    if (!isNewEndpoint(*current, ifindex, ep)) continue;
    std::string why;
    if (backend.putEndpoint(ifindex, ep, &why)) {
      current->endpoints[ifindex] = ep;
      st.endpoint_writes++;
    } else {
      (*failed)[ifindex] = why;
    }
  }
  return true;
}

bool apply(Backend& backend, const KernelState& next, const KernelState& current,
           ApplyStats* stats, std::string* err) {
  ApplyStats local;
  ApplyStats& st = stats ? *stats : local;
  // An address or endpoint whose identity changes or goes (a pod IP reused
  // by another ServiceAccount, an ifindex reused) must not keep the flows it
  // had: once the change is written, the generation moves and each flow's
  // identities are compared at its next packet.
  bool identity_moved = false;
  // Both address maps are sorted: one merge of the two, no lookups.
  auto held = current.ips.begin();
  for (const auto& [addr, info] : next.ips) {
    while (held != current.ips.end() && held->first < addr) ++held;
    bool known = held != current.ips.end() && held->first == addr;
    if (known && held->second == info) continue;
    if (known && held->second.identity != info.identity) identity_moved = true;
    if (!backend.putIp(addr, info, err)) return false;
    st.ip_writes++;
  }
  for (const auto& [ifindex, ep] : next.endpoints) {
    auto it = current.endpoints.find(ifindex);
    if (it != current.endpoints.end() && sameEndpoint(it->second, ep)) continue;
    if (it != current.endpoints.end() && it->second.identity != ep.identity) identity_moved = true;
    if (!backend.putEndpoint(ifindex, ep, err)) return false;
    st.endpoint_writes++;
  }
  // Now, not at the end: a later failure must not leave the change unjudged.
  if (identity_moved) {
    if (!backend.bumpGeneration(err)) return false;
    st.generation_bumped = true;
    identity_moved = false;
  }
  if (next.policy != current.policy || !current.policy_installed) {
    if (!backend.swapPolicy(next.policy, err)) return false;
    st.policy_swapped = true;
  }
  std::map<smik_svc_key, SvcTable> upserts;
  std::vector<smik_svc_key> deletes;
  for (const auto& [k, t] : next.services) {
    auto it = current.services.find(k);
    if (it == current.services.end() || !(it->second == t)) upserts.emplace(k, t);
  }
  for (const auto& [k, t] : current.services)
    if (!next.services.count(k)) deletes.push_back(k);
  if (!upserts.empty() || !deletes.empty()) {
    if (!backend.applyServices(upserts, deletes, err)) return false;
    st.service_writes = upserts.size();
    st.service_deletes = deletes.size();
  }
  for (const auto& [ifindex, ep] : current.endpoints) {
    if (next.endpoints.count(ifindex)) continue;
    if (!backend.deleteEndpoint(ifindex, err)) return false;
    st.endpoint_deletes++;
    identity_moved = true;
  }
  auto wanted = next.ips.begin();
  for (const auto& [addr, info] : current.ips) {
    while (wanted != next.ips.end() && wanted->first < addr) ++wanted;
    if (wanted != next.ips.end() && wanted->first == addr) continue;
    if (!backend.deleteIp(addr, err)) return false;
    st.ip_deletes++;
    identity_moved = true;
  }
  if (identity_moved) {
    if (!backend.bumpGeneration(err)) return false;
    st.generation_bumped = true;
  }
  return true;
}

}  // namespace smik::maps
