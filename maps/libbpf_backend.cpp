#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

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

int openPin(const std::string& dir, const char* name, std::string* err) {
  std::string path = dir + "/" + name;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) fail(err, "open pinned map " + path);
  return fd;
}

// Iterates a hash-like map: fn(key) for every key present.
template <typename K, typename Fn>
void forEachKey(int fd, Fn fn) {
  K key{}, next{};
  const K* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    fn(next);
    key = next;
    prev = &key;
  }
}

template <typename V>
std::vector<V> perCpu(int fd, const void* key, int ncpu) {
  std::vector<V> vals(ncpu);
  if (bpf_map_lookup_elem(fd, key, vals.data()) != 0) vals.clear();
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

std::unique_ptr<LibbpfBackend> LibbpfBackend::open(const std::string& pin_dir,
                                                   std::string* err) {
  std::unique_ptr<LibbpfBackend> b(new LibbpfBackend());
  struct {
    int* fd;
    const char* name;
  } maps[] = {{&b->ipcache_, kIpcacheMap}, {&b->endpoints_, kEndpointsMap},
              {&b->policy_, kPolicyMap},   {&b->state_, kStateMap},
              {&b->reasons_, kReasonsMap}, {&b->edges_, kEdgesMap},
              {&b->services_, kServicesMap}, {&b->backends_, kBackendsMap},
              {&b->sock_stats_, kSockStatsMap}, {&b->conn_, kConnMap},
              {&b->ct_, kCtMap}, {&b->ct_stats_, kCtStatsMap},
              {&b->answer_stats_, kAnswerStatsMap}};
  for (auto& m : maps) {
    *m.fd = openPin(pin_dir, m.name, err);
    if (*m.fd < 0) return nullptr;
  }
  return b;
}

size_t LibbpfBackend::removeOrphanBackends() {
  // Each table owns indices [0, count) of its generation; anything else was
  // written for a table that never went live, or retired and not freed.
  std::map<std::pair<uint32_t, uint8_t>, int> live;
  forEachKey<smik_svc_key>(services_, [&](const smik_svc_key& k) {
    smik_svc_value v{};
    if (bpf_map_lookup_elem(services_, &k, &v) == 0) live[{v.svc_id, v.gen}] = endpointCount(v);
  });
  std::vector<smik_backend_key> orphans;
  forEachKey<smik_backend_key>(backends_, [&](const smik_backend_key& k) {
    auto it = live.find({k.svc_id, k.gen});
    if (it == live.end() || k.index >= it->second) orphans.push_back(k);
  });
  size_t removed = 0;
  for (const auto& k : orphans) removed += bpf_map_delete_elem(backends_, &k) == 0;
  return removed;
}

LibbpfBackend::~LibbpfBackend() {
  for (int fd : {ipcache_, endpoints_, policy_, state_, reasons_, edges_, services_, backends_,
                 sock_stats_, conn_, ct_, ct_stats_, answer_stats_})
    if (fd >= 0) close(fd);
}

bool LibbpfBackend::putIp(const Addr& a, const smik_ip_info& v, std::string* err) {
  smik_ip_key k = ipKey(a);
  return bpf_map_update_elem(ipcache_, &k, &v, BPF_ANY) == 0 || fail(err, "ipcache update " + a.str());
}

bool LibbpfBackend::deleteIp(const Addr& a, std::string* err) {
  smik_ip_key k = ipKey(a);
  return bpf_map_delete_elem(ipcache_, &k) == 0 || errno == ENOENT ||
         fail(err, "ipcache delete " + a.str());
}

bool LibbpfBackend::putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) {
  return bpf_map_update_elem(endpoints_, &ifindex, &v, BPF_ANY) == 0 ||
         fail(err, "endpoint update ifindex " + std::to_string(ifindex));
}

bool LibbpfBackend::deleteEndpoint(uint32_t ifindex, std::string* err) {
  return bpf_map_delete_elem(endpoints_, &ifindex) == 0 || errno == ENOENT ||
         fail(err, "endpoint delete ifindex " + std::to_string(ifindex));
}

bool LibbpfBackend::swapPolicy(const PolicyEntries& entries, std::string* err) {
  // Same template as the BPF side's smik_policy_inner, or the outer map
  // refuses the new generation.
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
  int inner = bpf_map_create(BPF_MAP_TYPE_HASH, "smik_pol_gen", sizeof(smik_policy_key),
                             sizeof(smik_policy_value), SMIK_MAX_POLICY, &opts);
  if (inner < 0) return fail(err, "create policy generation");
  if (entries.size() > SMIK_MAX_POLICY) {
    close(inner);
    if (err) *err = "policy has " + std::to_string(entries.size()) + " entries, limit " +
                    std::to_string(SMIK_MAX_POLICY);
    return false;
  }
  std::vector<smik_policy_key> keys;
  std::vector<smik_policy_value> vals;
  keys.reserve(entries.size());
  vals.reserve(entries.size());
  for (const auto& [k, v] : entries) {
    keys.push_back(k);
    vals.push_back(v);
  }
  __u32 count = keys.size();
  if (count && bpf_map_update_batch(inner, keys.data(), vals.data(), &count, nullptr) != 0) {
    // Batch ops may be unavailable; one by one gives the same result.
    for (size_t i = 0; i < keys.size(); i++) {
      if (bpf_map_update_elem(inner, &keys[i], &vals[i], BPF_ANY) != 0) {
        close(inner);
        return fail(err, "fill policy generation");
      }
    }
  }
  __u32 zero = 0;
  if (bpf_map_update_elem(policy_, &zero, &inner, BPF_ANY) != 0) {
    close(inner);
    return fail(err, "swap policy generation");
  }
  close(inner);  // the outer map holds it now; the old one goes after readers drain
  smik_state st{};
  bpf_map_lookup_elem(state_, &zero, &st);
  st.policy_gen++;
  if (bpf_map_update_elem(state_, &zero, &st, BPF_ANY) != 0)
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
    if (bpf_map_lookup_elem(services_, &k, &old) != 0) continue;
    if (bpf_map_delete_elem(services_, &k) != 0 && errno != ENOENT)
      return fail(err, "delete service");
    retired.push_back({old.svc_id, old.gen, endpointCount(old)});
  }
  for (const auto& [k, t] : upserts) {
    smik_svc_value old{};
    bool had = bpf_map_lookup_elem(services_, &k, &old) == 0;
    // The other generation is free: its readers were waited out last time.
    uint8_t gen = had && old.svc_id == t.svc_id ? old.gen ^ 1 : 0;
    uint16_t index = 0;
    for (const auto& g : t.groups) {
      for (const auto& e : g.endpoints) {
        smik_backend_key bk{t.svc_id, index++, gen, 0};
        if (bpf_map_update_elem(backends_, &bk, &e, BPF_ANY) != 0)
          return fail(err, "write service backends");
      }
    }
    smik_svc_value v = svcValue(t, gen);
    if (bpf_map_update_elem(services_, &k, &v, BPF_ANY) != 0) return fail(err, "write service");
    if (had) retired.push_back({old.svc_id, old.gen, endpointCount(old)});
  }
  if (retired.empty()) return true;
  waitForReaders();
  for (const auto& r : retired) {
    for (int i = 0; i < r.count; i++) {
      smik_backend_key bk{r.svc_id, static_cast<uint16_t>(i), r.gen, 0};
      bpf_map_delete_elem(backends_, &bk);
    }
  }
  return true;
}

uint32_t LibbpfBackend::policyGeneration() {
  __u32 zero = 0;
  smik_state st{};
  bpf_map_lookup_elem(state_, &zero, &st);
  return st.policy_gen;
}

bool LibbpfBackend::bumpGeneration(std::string* err) {
  __u32 zero = 0;
  smik_state st{};
  bpf_map_lookup_elem(state_, &zero, &st);
  st.policy_gen++;
  return bpf_map_update_elem(state_, &zero, &st, BPF_ANY) == 0 || fail(err, "bump generation");
}

long LibbpfBackend::sweepConntrack(uint64_t now_ns, std::string* err) {
  // Collect first: deleting while walking restarts get_next_key's bucket.
  std::vector<smik_ct_key> expired;
  forEachKey<smik_ct_key>(ct_, [&](const smik_ct_key& k) {
    smik_ct_value v{};
    if (bpf_map_lookup_elem(ct_, &k, &v) == 0 && smik_ct_expired(&k, &v, now_ns))
      expired.push_back(k);
  });
  long n = 0;
  for (const auto& k : expired) {
    // Checked again: a packet may have refreshed it since.
    smik_ct_value v{};
    if (bpf_map_lookup_elem(ct_, &k, &v) != 0 || !smik_ct_expired(&k, &v, now_ns)) continue;
    if (bpf_map_delete_elem(ct_, &k) == 0) {
      n++;
    } else if (errno != ENOENT) {
      fail(err, "conntrack delete");
      return -1;
    }
  }
  return n;
}

KernelState LibbpfBackend::read() {
  KernelState s;
  forEachKey<smik_ip_key>(ipcache_, [&](const smik_ip_key& k) {
    smik_ip_info v{};
    if (bpf_map_lookup_elem(ipcache_, &k, &v) == 0) s.ips[addrOf(k)] = v;
  });
  forEachKey<__u32>(endpoints_, [&](const __u32& k) {
    smik_endpoint v{};
    if (bpf_map_lookup_elem(endpoints_, &k, &v) == 0) s.endpoints[k] = v;
  });
  __u32 zero = 0, inner_id = 0;
  if (bpf_map_lookup_elem(policy_, &zero, &inner_id) == 0) {
    int inner = bpf_map_get_fd_by_id(inner_id);
    if (inner >= 0) {
      s.policy_installed = true;
      forEachKey<smik_policy_key>(inner, [&](const smik_policy_key& k) {
        smik_policy_value v{};
        if (bpf_map_lookup_elem(inner, &k, &v) == 0) s.policy[k] = v;
      });
      close(inner);
    }
  }
  forEachKey<smik_svc_key>(services_, [&](const smik_svc_key& k) {
    smik_svc_value v{};
    if (bpf_map_lookup_elem(services_, &k, &v) != 0) return;
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
        if (bpf_map_lookup_elem(backends_, &bk, &b) == 0) group.endpoints.push_back(b);
      }
      t.groups.push_back(std::move(group));
    }
    s.services[k] = std::move(t);
  });
  return s;
}

std::vector<smik_counter> LibbpfBackend::reasons() {
  std::vector<smik_counter> out(SMIK_REASON_MAX);
  for (__u32 i = 0; i < SMIK_REASON_MAX; i++) {
    for (const auto& c : perCpu<smik_counter>(reasons_, &i, possibleCpus())) {
      out[i].packets += c.packets;
      out[i].bytes += c.bytes;
    }
  }
  return out;
}

std::vector<uint64_t> LibbpfBackend::sockStats() {
  std::vector<uint64_t> out(SMIK_SOCK_MAX);
  for (__u32 i = 0; i < SMIK_SOCK_MAX; i++)
    for (uint64_t c : perCpu<uint64_t>(sock_stats_, &i, possibleCpus())) out[i] += c;
  return out;
}

std::vector<uint64_t> LibbpfBackend::ctStats() {
  std::vector<uint64_t> out(SMIK_CT_COUNTER_MAX);
  for (__u32 i = 0; i < SMIK_CT_COUNTER_MAX; i++)
    for (uint64_t c : perCpu<uint64_t>(ct_stats_, &i, possibleCpus())) out[i] += c;
  return out;
}

std::vector<uint64_t> LibbpfBackend::answerStats() {
  std::vector<uint64_t> out(SMIK_ANSWER_COUNTER_MAX);
  for (__u32 i = 0; i < SMIK_ANSWER_COUNTER_MAX; i++)
    for (uint64_t c : perCpu<uint64_t>(answer_stats_, &i, possibleCpus())) out[i] += c;
  return out;
}

// One value for all CPUs (the programs add atomically); an edge evicted
// between finding its key and reading it is skipped.
std::vector<ConnEdge> LibbpfBackend::connEdges() {
  std::vector<ConnEdge> out;
  forEachKey<smik_conn_key>(conn_, [&](const smik_conn_key& k) {
    ConnEdge e;
    e.key = k;
    if (bpf_map_lookup_elem(conn_, &k, &e.stats) == 0) out.push_back(e);
  });
  return out;
}

std::vector<EdgeCounters> LibbpfBackend::edges() {
  std::vector<EdgeCounters> out;
  forEachKey<smik_edge_key>(edges_, [&](const smik_edge_key& k) {
    EdgeCounters e;
    e.key = k;
    if (bpf_map_lookup_elem(edges_, &k, &e.value) == 0) out.push_back(e);
  });
  return out;
}

}  // namespace smik::maps
