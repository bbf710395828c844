#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <linux/membarrier.h>
#include <sys/syscall.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "maps/maps.h"

namespace smik::maps {
namespace {

bool fail(std::string* err, const std::string& what) {
  if (err) *err = what + ": " + std::strerror(errno);
  return false;
}

Error errnoError(const std::string& what) { return Error{what + ": " + std::strerror(errno)}; }

// Walks a hash-like map: fn(key) for every key present. Fails if the walk
// stopped before the end (ENOENT from get_next_key is the end).
template <typename K, typename Fn>
Result<void> forEachKey(int fd, const char* map, Fn fn) {
  K key{}, next{};
  const K* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    fn(next);
    key = next;
    prev = &key;
  }
  if (errno != ENOENT) return errnoError(std::string("walk ") + map);
  return {};
}

// A lookup of a key the walk just returned: ENOENT means it was deleted in
// between (an LRU eviction, a concurrent delete), anything else is an error.
Result<bool> lookup(int fd, const void* key, void* value, const char* map) {
  if (bpf_map_lookup_elem(fd, key, value) == 0) return true;
  if (errno == ENOENT) return false;
  return errnoError(std::string("lookup in ") + map);
}

// sink(key, value) for each entry of a walked map; fails on the first
// error that is not an entry deleted while the walk passed it.
template <typename K, typename V, typename Sink>
Result<void> readAll(int fd, const char* map, Sink sink) {
  Result<void> failed;
  Result<void> walked = forEachKey<K>(fd, map, [&](const K& k) {
    V v{};
    if (!failed) return;
    Result<bool> found = lookup(fd, &k, &v, map);
    if (!found) failed = Error{found.error()};
    else if (*found) sink(k, v);
  });
  if (!failed) return failed;
  return walked;
}

template <typename Map>
auto into(Map* out) {
  return [out](const auto& k, const auto& v) { (*out)[k] = v; };
}

// The per-CPU values of one key; none (and one more error counted) if the
// lookup failed.
template <typename V>
std::vector<V> perCpu(int fd, const void* key, int ncpu, std::atomic<uint64_t>* errors) {
  std::vector<V> vals(ncpu);
  if (bpf_map_lookup_elem(fd, key, vals.data()) != 0) {
    vals.clear();
    ++*errors;
  }
  return vals;
}

// Waits until every BPF program that might have read a replaced value has
// finished: they run under RCU, and MEMBARRIER_CMD_GLOBAL is synchronize_rcu().
void waitForReaders() {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nohz_full: be generous
}

int endpointCount(const smik_svc_value& v) {
  int n = 0;
  for (int g = 0; g < v.ngroups && g < SMIK_MAX_GROUPS; g++) n += v.count[g];
  return n;
}

int possibleCpus() {
  static int n = libbpf_num_possible_cpus();
  return n;
}

}  // namespace

Result<size_t> LibbpfBackend::removeOrphanBackends() {
  // Each table owns indices [0, count) of its generation; anything else was
  // written for a table that never went live, or retired and not freed.
  std::map<std::pair<uint32_t, uint8_t>, int> live;
  Result<void> walked = forEachKey<smik_svc_key>(m_.services.get(), kServicesMap,
                                                 [&](const smik_svc_key& k) {
    smik_svc_value v{};
    if (bpf_map_lookup_elem(m_.services.get(), &k, &v) == 0)
      live[{v.svc_id, v.gen}] = endpointCount(v);
  });
  if (!walked) return Error{walked.error()};
  std::vector<smik_backend_key> orphans;
  walked = forEachKey<smik_backend_key>(m_.backends.get(), kBackendsMap,
                                        [&](const smik_backend_key& k) {
    auto it = live.find({k.svc_id, k.gen});
    if (it == live.end() || k.index >= it->second) orphans.push_back(k);
  });
  if (!walked) return Error{walked.error()};
  size_t removed = 0;
  for (const auto& k : orphans) removed += bpf_map_delete_elem(m_.backends.get(), &k) == 0;
  return removed;
}

bool LibbpfBackend::putIp(const Addr& a, const smik_ip_info& v, std::string* err) {
  smik_ip_key k = ipKey(a);
  return bpf_map_update_elem(m_.ipcache.get(), &k, &v, BPF_ANY) == 0 ||
         fail(err, "ipcache update " + a.str());
}

bool LibbpfBackend::deleteIp(const Addr& a, std::string* err) {
  smik_ip_key k = ipKey(a);
  return bpf_map_delete_elem(m_.ipcache.get(), &k) == 0 || errno == ENOENT ||
         fail(err, "ipcache delete " + a.str());
}

bool LibbpfBackend::putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) {
  return bpf_map_update_elem(m_.endpoints.get(), &ifindex, &v, BPF_ANY) == 0 ||
         fail(err, "endpoint update ifindex " + std::to_string(ifindex));
}

bool LibbpfBackend::deleteEndpoint(uint32_t ifindex, std::string* err) {
  return bpf_map_delete_elem(m_.endpoints.get(), &ifindex) == 0 || errno == ENOENT ||
         fail(err, "endpoint delete ifindex " + std::to_string(ifindex));
}

bool LibbpfBackend::swapPolicy(const PolicyEntries& entries, std::string* err) {
  if (entries.size() > SMIK_MAX_POLICY) {
    if (err) *err = "policy has " + std::to_string(entries.size()) + " entries, limit " +
                    std::to_string(SMIK_MAX_POLICY);
    return false;
  }
  // Same template as the BPF side's smik_policy_inner, or the outer map
  // refuses the new generation.
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
  UniqueFd inner(bpf_map_create(BPF_MAP_TYPE_HASH, kPolicyGeneration, sizeof(smik_policy_key),
                                sizeof(smik_policy_value), SMIK_MAX_POLICY, &opts));
  if (!inner) return fail(err, "create policy generation");
  std::vector<smik_policy_key> keys;
  std::vector<smik_policy_value> vals;
  keys.reserve(entries.size());
  vals.reserve(entries.size());
  for (const auto& [k, v] : entries) {
    keys.push_back(k);
    vals.push_back(v);
  }
  __u32 count = keys.size();
  if (count && bpf_map_update_batch(inner.get(), keys.data(), vals.data(), &count, nullptr) != 0) {
    // Batch ops may be unavailable; one by one gives the same result.
    for (size_t i = 0; i < keys.size(); i++) {
      if (bpf_map_update_elem(inner.get(), &keys[i], &vals[i], BPF_ANY) != 0)
        return fail(err, "fill policy generation");
    }
  }
  // The outer map holds its own reference from here; the old generation
  // goes once its readers drain.
  __u32 zero = 0;
  int inner_fd = inner.get();
  if (bpf_map_update_elem(m_.policy.get(), &zero, &inner_fd, BPF_ANY) != 0)
    return fail(err, "swap policy generation");
  smik_state st{};
  bpf_map_lookup_elem(m_.state.get(), &zero, &st);
  st.policy_gen++;
  if (bpf_map_update_elem(m_.state.get(), &zero, &st, BPF_ANY) != 0)
    return fail(err, "bump policy generation");
  return true;
}

bool LibbpfBackend::applyServices(const std::map<smik_svc_key, SvcTable>& upserts,
                                  const std::vector<smik_svc_key>& deletes, std::string* err) {
  struct Retired {
    uint32_t svc_id;
    uint8_t gen;
    int count;
  };
  std::vector<Retired> retired;
  // Deletions first: they make room for new tables in a full map.
  for (const auto& k : deletes) {
    smik_svc_value old{};
    if (bpf_map_lookup_elem(m_.services.get(), &k, &old) != 0) continue;
    if (bpf_map_delete_elem(m_.services.get(), &k) != 0 && errno != ENOENT)
      return fail(err, "delete service");
    retired.push_back({old.svc_id, old.gen, endpointCount(old)});
  }
  for (const auto& [k, t] : upserts) {
    smik_svc_value old{};
    bool had = bpf_map_lookup_elem(m_.services.get(), &k, &old) == 0;
    // The other generation is free: its readers were waited out last time.
    uint8_t gen = had && old.svc_id == t.svc_id ? old.gen ^ 1 : 0;
    uint16_t index = 0;
    for (const auto& g : t.groups) {
      for (const auto& e : g.endpoints) {
        smik_backend_key bk{t.svc_id, index++, gen, 0};
        if (bpf_map_update_elem(m_.backends.get(), &bk, &e, BPF_ANY) != 0)
          return fail(err, "write service backends");
      }
    }
    smik_svc_value v = svcValue(t, gen);
    if (bpf_map_update_elem(m_.services.get(), &k, &v, BPF_ANY) != 0) return fail(err, "write service");
    if (had) retired.push_back({old.svc_id, old.gen, endpointCount(old)});
  }
  if (retired.empty()) return true;
  waitForReaders();
  for (const auto& r : retired) {
    for (int i = 0; i < r.count; i++) {
      smik_backend_key bk{r.svc_id, static_cast<uint16_t>(i), r.gen, 0};
      bpf_map_delete_elem(m_.backends.get(), &bk);
    }
  }
  return true;
}

uint32_t LibbpfBackend::policyGeneration() {
  __u32 zero = 0;
  smik_state st{};
  bpf_map_lookup_elem(m_.state.get(), &zero, &st);
  return st.policy_gen;
}

bool LibbpfBackend::bumpGeneration(std::string* err) {
  __u32 zero = 0;
  smik_state st{};
  bpf_map_lookup_elem(m_.state.get(), &zero, &st);
  st.policy_gen++;
  return bpf_map_update_elem(m_.state.get(), &zero, &st, BPF_ANY) == 0 ||
         fail(err, "bump generation");
}

long LibbpfBackend::sweepConntrack(uint64_t now_ns, std::string* err) {
  // Collect first: deleting while walking restarts get_next_key's bucket.
  std::vector<smik_ct_key> expired;
  Result<void> walked = forEachKey<smik_ct_key>(m_.ct.get(), kCtMap, [&](const smik_ct_key& k) {
    smik_ct_value v{};
    if (bpf_map_lookup_elem(m_.ct.get(), &k, &v) == 0 && smik_ct_expired(&k, &v, now_ns))
      expired.push_back(k);
  });
  // What was found is still swept; the next sweep walks again.
  if (!walked && err) *err = walked.error();
  long n = 0;
  for (const auto& k : expired) {
    // Checked again: a packet may have refreshed it since.
    smik_ct_value v{};
    if (bpf_map_lookup_elem(m_.ct.get(), &k, &v) != 0 || !smik_ct_expired(&k, &v, now_ns))
      continue;
    if (bpf_map_delete_elem(m_.ct.get(), &k) == 0) {
      n++;
    } else if (errno != ENOENT) {
      fail(err, "conntrack delete");
      return -1;
    }
  }
  return n;
}

Result<void> LibbpfBackend::readPolicy(KernelState* s) {
  __u32 zero = 0, inner_id = 0;
  Result<bool> slot = lookup(m_.policy.get(), &zero, &inner_id, kPolicyMap);
  if (!slot) return Error{slot.error()};
  if (!*slot) return {};  // no generation yet: nothing installed
  UniqueFd inner(bpf_map_get_fd_by_id(inner_id));
  if (!inner) {
    // Swapped out between the two calls: the caller reads again.
    return errnoError("open policy generation " + std::to_string(inner_id));
  }
  s->policy_installed = true;
  return readAll<smik_policy_key, smik_policy_value>(inner.get(), kPolicyGeneration,
                                                    into(&s->policy));
}

Result<void> LibbpfBackend::readServices(KernelState* s) {
  std::map<smik_svc_key, smik_svc_value> values;
  if (auto r = readAll<smik_svc_key, smik_svc_value>(m_.services.get(), kServicesMap,
                                                     into(&values));
      !r)
    return r;
  for (const auto& [k, v] : values) {
    SvcTable t;
    t.svc_id = v.svc_id;
    uint32_t prev = 0;
    for (int g = 0; g < v.ngroups && g < SMIK_MAX_GROUPS; g++) {
      SvcTable::Group group;
      group.weight = v.cum[g] - prev;
      prev = v.cum[g];
      for (int i = 0; i < v.count[g]; i++) {
        smik_backend_key bk{v.svc_id, static_cast<uint16_t>(v.offset[g] + i), v.gen, 0};
        smik_backend b{};
        // A live table's endpoints are all written before it goes live: a
        // missing one is a table in the middle of a change, not a shorter one.
        if (bpf_map_lookup_elem(m_.backends.get(), &bk, &b) != 0)
          return errnoError(std::string("lookup in ") + kBackendsMap);
        group.endpoints.push_back(b);
      }
      t.groups.push_back(std::move(group));
    }
    s->services[k] = std::move(t);
  }
  return {};
}

Result<KernelState> LibbpfBackend::read() {
  KernelState s;
  // In the hash map's order: sorted once, at the end.
  std::vector<std::pair<Addr, smik_ip_info>> ips;
  auto ip = [&](const smik_ip_key& k, const smik_ip_info& v) { ips.emplace_back(addrOf(k), v); };
  if (auto r = readAll<smik_ip_key, smik_ip_info>(m_.ipcache.get(), kIpcacheMap, ip); !r)
    return Error{r.error()};
  s.ips = FlatMap<Addr, smik_ip_info>::fromUnsorted(std::move(ips), FlatMap<Addr, smik_ip_info>::Keep::kLast);
  if (auto r = readAll<__u32, smik_endpoint>(m_.endpoints.get(), kEndpointsMap,
                                             into(&s.endpoints));
      !r)
    return Error{r.error()};
  if (auto r = readPolicy(&s); !r) return Error{r.error()};
  if (auto r = readServices(&s); !r) return Error{r.error()};
  return s;
}

std::vector<smik_counter> LibbpfBackend::reasons() {
  std::vector<smik_counter> out(SMIK_REASON_MAX);
  for (__u32 i = 0; i < SMIK_REASON_MAX; i++) {
    for (const auto& c :
         perCpu<smik_counter>(m_.reasons.get(), &i, possibleCpus(), &telemetry_read_errors_)) {
      out[i].packets += c.packets;
      out[i].bytes += c.bytes;
    }
  }
  return out;
}

std::vector<uint64_t> LibbpfBackend::sockStats() {
  std::vector<uint64_t> out(SMIK_SOCK_MAX);
  for (__u32 i = 0; i < SMIK_SOCK_MAX; i++)
    for (uint64_t c :
         perCpu<uint64_t>(m_.sock_stats.get(), &i, possibleCpus(), &telemetry_read_errors_))
      out[i] += c;
  return out;
}

std::vector<uint64_t> LibbpfBackend::ctStats() {
  std::vector<uint64_t> out(SMIK_CT_COUNTER_MAX);
  for (__u32 i = 0; i < SMIK_CT_COUNTER_MAX; i++)
    for (uint64_t c :
         perCpu<uint64_t>(m_.ct_stats.get(), &i, possibleCpus(), &telemetry_read_errors_))
      out[i] += c;
  return out;
}

std::vector<uint64_t> LibbpfBackend::answerStats() {
  std::vector<uint64_t> out(SMIK_ANSWER_COUNTER_MAX);
  for (__u32 i = 0; i < SMIK_ANSWER_COUNTER_MAX; i++)
    for (uint64_t c : perCpu<uint64_t>(m_.answer_stats.get(), &i, possibleCpus(),
                                      &telemetry_read_errors_))
      out[i] += c;
  return out;
}

// One value for all CPUs (the programs add atomically); an edge evicted
// between finding its key and reading it is skipped.
std::vector<ConnEdge> LibbpfBackend::connEdges() {
  std::vector<ConnEdge> out;
  auto edge = [&](const smik_conn_key& k, const smik_conn_stats& v) { out.push_back({k, v}); };
  if (!readAll<smik_conn_key, smik_conn_stats>(m_.conn.get(), kConnMap, edge))
    telemetry_read_errors_++;
  return out;
}

std::vector<EdgeCounters> LibbpfBackend::edges() {
  std::vector<EdgeCounters> out;
  auto edge = [&](const smik_edge_key& k, const smik_edge_value& v) { out.push_back({k, v}); };
  if (!readAll<smik_edge_key, smik_edge_value>(m_.edges.get(), kEdgesMap, edge))
    telemetry_read_errors_++;
  return out;
}

}  // namespace smik::maps
