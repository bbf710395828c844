// What the data-path benchmarks write into smik's maps: the pods under test
// enforced, and filler policy of other identities around their grants, so
// lookups run in tables of a realistic size; and smik's programs attached
// to those pods.
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/addr.h"
#include "agent/datapath/datapath.h"
#include "maps/maps.h"
#include "tests/testbed/testbed.h"

namespace smik::bench {

inline Addr addrOf(const std::string& s) {
  Addr a;
  parseAddr(s, &a);
  return a;
}

// Filler address i (never a pod's): 10.250.x.y.
inline std::string fillerIp(int i) {
  return "10.250." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
}

// Each pod local, hooked (its host veth's endpoint entry) and enforced under
// its identity.
inline void enforcePods(maps::KernelState& s, uint8_t attach,
                        const std::vector<std::pair<testbed::Pod*, uint32_t>>& pods) {
  for (auto [pod, id] : pods) {
    s.ips[addrOf(pod->ip())] = {id, SMIK_IP_F_LOCAL};
    smik_endpoint ep{};
    ep.identity = id;
    ep.naddrs = 1;
    ep.attach = attach;
    ep.families[0] = SMIK_AF_INET;
    std::memcpy(ep.addrs[0], addrOf(pod->ip()).bytes.data(), 16);
    s.endpoints[pod->hostIfIndex()] = ep;
    s.policy[{SMIK_ID_META, id, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED};
  }
}

// Other identities (their addresses in the ipcache) granted to identities a
// and b on other TCP ports, until the policy holds `entries`.
inline void fillPolicy(maps::KernelState& s, uint32_t a, uint32_t b, int entries) {
  for (int i = 0; int(s.policy.size()) < entries; i++) {
    uint32_t id = 10000 + i;
    s.ips[addrOf(fillerIp(i))] = {id, 0};
    s.policy[{id, i % 2 ? b : a, uint16_t(8000 + i % 100), SMIK_PROTO_TCP, 0}] = {1, 0};
  }
}

// Every smik program on the two pods (socket LB + sockops on the cgroup, tc
// on both host veths), or none of them.
inline void attachSmik(datapath::Datapath& dp, const testbed::Pod& client,
                       const testbed::Pod& server, bool on) {
  if (!on) {
    dp.detachSocketPrograms();
    dp.detachGone({});
    return;
  }
  std::string err;
  if (!dp.socketProgramsAttached() && !dp.attachSocketPrograms(&err)) throw std::runtime_error(err);
  std::vector<std::string> errors;
  dp.attachNew({{"client", client.hostIfIndex()}, {"server", server.hostIfIndex()}}, &errors);
  if (!errors.empty()) throw std::runtime_error(errors.front());
}

}  // namespace smik::bench
