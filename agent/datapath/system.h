// The few host facts the data path needs: bpffs, cgroup2, routes, addresses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/compile/compile.h"

namespace smik::datapath {

inline constexpr const char* kBpffsRoot = "/sys/fs/bpf";

// Mounts bpffs at /sys/fs/bpf when it is not mounted, then creates dir.
bool ensurePinDir(const std::string& dir, std::string* err);

// Where cgroup v2 is mounted (from /proc/self/mountinfo); empty if nowhere.
std::string cgroup2Mount();

// Output interface of the route to addr (the pod's host-side veth), 0 if none.
uint32_t routeIfindex(const compile::Addr& addr);

// True if ifindex is a veth/netkit device: only those are pods' host sides.
bool isPodInterface(uint32_t ifindex);

// Every address configured on this host (the HOST identity).
std::vector<std::string> hostAddresses();

}  // namespace smik::datapath
