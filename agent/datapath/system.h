// The few host facts the data path needs: bpffs, cgroup2, routes, addresses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/base/addr.h"
#include "agent/base/unique_fd.h"

namespace smik::datapath {

inline constexpr const char* kBpffsRoot = "/sys/fs/bpf";

// Mounts bpffs at /sys/fs/bpf when it is not mounted, then creates dir.
bool ensurePinDir(const std::string& dir, std::string* err);

// Where cgroup v2 is mounted (from /proc/self/mountinfo); empty if nowhere.
std::string cgroup2Mount();

// Output interface of the route to addr (the pod's host-side veth), 0 if none.
uint32_t routeIfindex(const Addr& addr);

// Whether the host's links, addresses or routes changed since the last ask:
// a netlink socket subscribed to their notifications, opened before anything
// is read so no change between the reading and the subscribing is missed.
// A node's 250 pods then cost one empty read per round instead of a route
// lookup and two ioctls each. Lost notifications (the socket's buffer ran
// over) and a socket that could not be opened both answer "changed".
class NetChanges {
 public:
  NetChanges();
  bool changedSinceLastAsk();

 private:
  UniqueFd fd_;
  bool pending_ = true;  // the first ask reads everything
};

// True if ifindex is a veth/netkit device: only those are pods' host sides.
bool isPodInterface(uint32_t ifindex);

// The ethtool driver name of an interface ("veth", "dummy", "virtio_net"),
// empty if it reports none.
std::string interfaceDriver(const std::string& ifname);

// Whether an address configured on this host is one of the node's own, the
// addresses the HOST identity stands for: those of its real interfaces
// (uplinks, bonds, VLANs, bridges, tunnels, and lo where a routed node keeps
// its InternalIP there). Not 127/8 or ::1, not link-local (169.254/16,
// fe80::/10): neither is ever the source of what reaches a pod. Not on
// veth/netkit (pods' host sides) nor on dummy devices (kube-ipvs0 holds every
// ClusterIP, nodelocaldns its VIP: addresses that stand for services, not for
// the node). `driver` as interfaceDriver() reports it.
bool isNodeAddress(const std::string& addr, const std::string& driver);

// This node's own addresses (isNodeAddress): the HOST identity.
std::vector<std::string> hostAddresses();

}  // namespace smik::datapath
