#include "maps/memory.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <fstream>

namespace smik::maps {
namespace {

// The kernel's own structures, per map (Linux 6.18, x86-64, measured from
// fdinfo): they differ by a few bytes between kernel builds, which the
// kernel test allows for. Everything else below is the kernel's formula.
constexpr uint64_t kHtabHeader = 832;     // struct bpf_htab
constexpr uint64_t kArrayHeader = 312;    // struct bpf_array
constexpr uint64_t kRingbufHeader = 304;  // struct bpf_ringbuf_map
constexpr uint64_t kHtabElem = 48;        // struct htab_elem, before its key
constexpr uint64_t kBucket = 16;          // struct bucket
constexpr uint64_t kLockCounters = 8;     // HASHTAB_MAP_LOCK_COUNT ints per CPU
constexpr uint64_t kPointer = 8;
constexpr uint64_t kLlistNode = 8;        // what a non-preallocated element adds
constexpr uint64_t kPage = 4096;
constexpr uint64_t kRingbufMetaPages = 3;  // header page + consumer and producer pages

uint64_t round8(uint64_t x) { return (x + 7) & ~uint64_t{7}; }
uint64_t pageAlign(uint64_t x) { return (x + kPage - 1) & ~(kPage - 1); }
uint64_t pow2AtLeast(uint64_t x) {
  uint64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

bool isLru(const MapDef& d) {
  return d.type == BPF_MAP_TYPE_LRU_HASH || d.type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

// Hash maps: a bucket array, per-CPU lock counters, and elements (key and
// value inline, or a pointer to per-CPU values). Preallocated maps hold
// max_entries elements from the start (plain hashes one spare per CPU);
// the others allocate each element, plus a free-list node, as it comes.
uint64_t hashBytes(const MapDef& d, uint64_t cpus, uint64_t entries) {
  const bool percpu = perCpu(d), lru = isLru(d);
  uint64_t max = d.max_entries;
  if (lru && (d.flags & BPF_F_NO_COMMON_LRU) && cpus) {
    max = (max + cpus - 1) / cpus * cpus;  // the same number of elements on each CPU's list
    if (max > UINT32_MAX) max = d.max_entries / cpus * cpus;
  }
  const uint64_t value = round8(d.value_size);
  const uint64_t elem = kHtabElem + round8(d.key_size) + (percpu ? kPointer : value);
  uint64_t bytes = kHtabHeader + kBucket * pow2AtLeast(max) + sizeof(int) * cpus * kLockCounters;
  if (preallocated(d)) {
    uint64_t n = max + (!percpu && !lru ? cpus : 0);
    bytes += elem * n;
    if (percpu)
      bytes += value * cpus * n;
    else if (!lru)
      bytes += kPointer * cpus;  // each CPU's spare element
  } else {
    bytes += (elem + kLlistNode) * entries;
    if (percpu) bytes += (kLlistNode + kPointer + value * cpus) * entries;
  }
  return bytes;
}

// Socket hashes (the HTTP judge's sockets): a bucket array, and an element
// (rcu head, socket pointer, list node, key) allocated per socket.
uint64_t sockhashBytes(const MapDef& d, uint64_t entries) {
  constexpr uint64_t kShtabElem = 40;
  return kHtabHeader + kBucket * pow2AtLeast(d.max_entries) + (kShtabElem + round8(d.key_size)) * entries;
}

uint64_t arrayBytes(const MapDef& d, uint64_t cpus) {
  const uint64_t elem = round8(d.value_size), n = d.max_entries;
  if (perCpu(d)) return kArrayHeader + kPointer * n + elem * n * cpus;
  if (d.flags & BPF_F_MMAPABLE) return pageAlign(kArrayHeader) + pageAlign(elem * n);
  return kArrayHeader + elem * n;
}

uint64_t ringbufBytes(const MapDef& d) {
  const uint64_t data_pages = d.max_entries / kPage;
  return kRingbufHeader + (kRingbufMetaPages + data_pages) * kPage +
         (kRingbufMetaPages + 2 * data_pages) * kPointer;  // the data pages are mapped twice
}

}  // namespace

bool perCpu(const MapDef& d) {
  return d.type == BPF_MAP_TYPE_PERCPU_HASH || d.type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
         d.type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

bool isHash(const MapDef& d) {
  return d.type == BPF_MAP_TYPE_HASH || d.type == BPF_MAP_TYPE_PERCPU_HASH || isLru(d);
}

bool preallocated(const MapDef& d) {
  if (isLru(d)) return true;  // the kernel refuses BPF_F_NO_PREALLOC for LRU maps
  if (isHash(d)) return !(d.flags & BPF_F_NO_PREALLOC);
  return true;
}

uint64_t mapBytes(const MapDef& d, uint32_t cpus, uint64_t entries) {
  if (d.type == BPF_MAP_TYPE_SOCKHASH) return sockhashBytes(d, entries);
  if (isHash(d)) return hashBytes(d, cpus, entries);
  if (d.type == BPF_MAP_TYPE_RINGBUF) return ringbufBytes(d);
  return arrayBytes(d, cpus);  // arrays, and the array of maps (a pointer each)
}

bool mapDefOf(int fd, MapDef* out) {
  bpf_map_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return false;
  *out = {info.name, info.type, info.key_size, info.value_size, info.max_entries, info.map_flags};
  return true;
}

MapDef mapDefOf(const bpf_map* m) {
  return {bpf_map__name(m), bpf_map__type(m), bpf_map__key_size(m), bpf_map__value_size(m),
          bpf_map__max_entries(m), bpf_map__map_flags(m)};
}

uint64_t countEntries(int fd, const MapDef& def) {
  if (def.type == BPF_MAP_TYPE_RINGBUF) return 0;
  if (!isHash(def) && def.type != BPF_MAP_TYPE_SOCKHASH) return def.max_entries;
  constexpr uint32_t kChunk = 1024;
  static const uint32_t cpus = libbpf_num_possible_cpus();
  std::vector<uint8_t> keys(size_t{kChunk} * def.key_size);
  std::vector<uint8_t> values(size_t{kChunk} * round8(def.value_size) * (perCpu(def) ? cpus : 1));
  uint64_t n = 0, batch = 0, next = 0;  // the hash batch token is a bucket index
  for (bool first = true;; first = false) {
    uint32_t count = kChunk;
    int r = bpf_map_lookup_batch(fd, first ? nullptr : &batch, &next, keys.data(), values.data(),
                                 &count, nullptr);
    n += count;
    if (r != 0) {
      if (errno == ENOENT) return n;  // the last batch
      break;                          // batches unsupported: walk the keys
    }
    batch = next;
  }
  n = 0;
  std::vector<uint8_t> key(def.key_size), prev(def.key_size);
  for (bool first = true; bpf_map_get_next_key(fd, first ? nullptr : prev.data(), key.data()) == 0;
       first = false) {
    n++;
    prev.swap(key);
  }
  return n;
}

uint64_t kernelMemlock(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::string field;
  uint64_t value = 0;
  while (in >> field) {
    if (field == "memlock:" && in >> value) return value;
  }
  return 0;
}

std::string mapTypeName(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_HASH: return "hash";
    case BPF_MAP_TYPE_ARRAY: return "array";
    case BPF_MAP_TYPE_PERCPU_HASH: return "percpu_hash";
    case BPF_MAP_TYPE_PERCPU_ARRAY: return "percpu_array";
    case BPF_MAP_TYPE_LRU_HASH: return "lru_hash";
    case BPF_MAP_TYPE_LRU_PERCPU_HASH: return "lru_percpu_hash";
    case BPF_MAP_TYPE_ARRAY_OF_MAPS: return "array_of_maps";
    case BPF_MAP_TYPE_RINGBUF: return "ringbuf";
    case BPF_MAP_TYPE_SOCKHASH: return "sockhash";
  }
  return "type " + std::to_string(type);
}

}  // namespace smik::maps
