// What the agent drives on a node, as an interface: the maps and the pods'
// hooks (attach, detach, list). The agent and its tests see only this; the
// kernel's implementation (datapath.h) needs the BPF skeletons and root.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent/base/unique_fd.h"
#include "maps/maps.h"
#include "maps/memory.h"

namespace smik::compile {
struct Plan;
}

namespace smik::datapath {

// One pod's hook, as the agent holds it: it owns the tcx links (none with
// clsact, whose filters have no descriptor). Moves, never copies. Closing a
// link leaves it attached: its pin holds it.
struct Attachment {
  std::string pod;
  std::string ifname;
  uint32_t ifindex = 0;
  uint8_t mode = 0;  // SMIK_EP_ATTACH_*
  UniqueFd to_pod_link, from_pod_link;
};

// What the agent drives on a node: the maps and the pods' hooks. Datapath
// is the kernel's; agent tests put an in-memory one in its place.
class Dataplane {
 public:
  virtual ~Dataplane() = default;
  virtual maps::Backend& maps() = 0;
  virtual bool tcxAvailable() const = 0;
  virtual uint8_t attachMode() const = 0;
  // This node's own addresses, the HOST identity (system.h says which).
  virtual std::vector<std::string> hostAddresses() const = 0;
  // Whether hostAddresses() and resolveInterfaces() may answer otherwise
  // than last time (links, addresses or routes changed); asking consumes
  // the change. A dataplane that cannot tell says true.
  virtual bool hostNetworkChanged() { return true; }
  // Resolves each local endpoint's host-side interface (0 = not there yet).
  virtual std::map<std::string, uint32_t> resolveInterfaces(const compile::Plan& plan) const = 0;
  // Hooks every pod in `wanted` (pod -> ifindex) and unhooks every other one.
  // Unhooking happens in detachGone (before the maps drop the endpoint),
  // hooking in attachNew (after the maps hold it).
  virtual void detachGone(const std::map<std::string, uint32_t>& wanted) = 0;
  virtual void attachNew(const std::map<std::string, uint32_t>& wanted,
                         std::vector<std::string>* errors) = 0;
  virtual const std::map<uint32_t, Attachment>& attachments() const = 0;
  // Hooks connect/sendmsg/recvmsg/getpeername (v4 and v6) at opts.cgroup,
  // taking over links a previous agent pinned. Idempotent.
  virtual bool attachSocketPrograms(std::string* err) = 0;
  virtual bool socketProgramsAttached() const = 0;
  // Every map: its definition, entries now, and bytes at full size here.
  virtual std::vector<maps::MapUsage> mapUsage() = 0;
  // The events ring buffer (smik_events); invalid when there is none.
  virtual UniqueFd eventsMap() const { return {}; }

  // The HTTP request judge (--http-rules=enforce), loaded and attached at
  // the socket programs' cgroup. False (and why) if this kernel cannot run
  // it (no sk_skb verdict or sockhash): then no port may be opened for HTTP rules.
  virtual bool openHttpJudge(std::string* err) {
    *err = "this dataplane has no HTTP judge";
    return false;
  }
  virtual bool httpJudgeOpen() const { return false; }
  // Its cgroup programs run on the pods' packets: from the first port an
  // HTTP rule governs on (HttpEnforcer::open).
  virtual bool httpJudgeAttached() const { return false; }
  // Plan::http written before the L4 policy opens its ports (stage), and
  // what it no longer judges removed after (finish).
  virtual bool stageHttp(const compile::Plan&, std::string*) { return true; }
  virtual bool finishHttp(const compile::Plan&, std::string*) { return true; }
  // SMIK_HTTP_C_*; zeros without a judge.
  virtual std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> httpCounters() const { return {}; }
  // HTTP responses per server-side edge (cumulative); none without a judge.
  virtual std::vector<maps::HttpEdge> httpResponseEdges() const { return {}; }
};

}  // namespace smik::datapath
