// Kernel memory of a BPF map, worked out from its definition: the kernel's
// own accounting (the "memlock" of /proc/PID/fdinfo, Linux >= 6.4) for any
// CPU count, so that a node can say what it holds and a table can say what
// a 192-CPU node would. The formula is in README.md ("Capacity and kernel
// memory"); a kernel test checks it against the running kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct bpf_map;

namespace smik::maps {

struct MapDef {
  std::string name;
  uint32_t type = 0;  // BPF_MAP_TYPE_*
  uint32_t key_size = 0, value_size = 0, max_entries = 0, flags = 0;
};

// Bytes the kernel charges for `def` holding `entries` entries with `cpus`
// possible CPUs. A preallocated map costs its full size whatever it holds.
uint64_t mapBytes(const MapDef& def, uint32_t cpus, uint64_t entries);
// The most the map can ever take: at max_entries.
inline uint64_t mapBytesFull(const MapDef& def, uint32_t cpus) {
  return mapBytes(def, cpus, def.max_entries);
}
bool preallocated(const MapDef& def);
bool perCpu(const MapDef& def);  // a value per CPU
bool isHash(const MapDef& def);  // entries come and go (arrays are always full)
std::string mapTypeName(uint32_t type);  // "lru_hash", as bpftool says

// The definition of the map behind fd, as the kernel holds it.
bool mapDefOf(int fd, MapDef* out);
// The definition of a map of an opened BPF object, as it will be created
// (loaded or not: no root needed).
MapDef mapDefOf(const bpf_map* m);
// Entries the map behind fd holds now (batched lookups: a full 256k-entry
// map in a few hundred syscalls). Arrays: max_entries; ring buffer: 0.
uint64_t countEntries(int fd, const MapDef& def);
// What /proc/self/fdinfo says the kernel charges for the map behind fd.
uint64_t kernelMemlock(int fd);

// What `smik status` and Prometheus report for one map.
struct MapUsage {
  MapDef def;
  uint64_t entries = 0;  // held now (arrays: max_entries; ring buffer: 0)
  uint64_t bytes = 0;    // mapBytesFull at this node's CPU count
};

}  // namespace smik::maps
