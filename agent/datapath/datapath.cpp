#include "agent/datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>

#include "agent/datapath/system.h"
#include "smik_sock.skel.h"
#include "smik_tel.skel.h"
#include "smik_tc.skel.h"

namespace fs = std::filesystem;

namespace smik::datapath {
namespace {

// libbpf 1.1 predates the tcx names; the kernel (6.6+) has them.
constexpr int kTcxIngress = 46;
constexpr int kTcxEgress = 47;
constexpr uint32_t kClsactHandle = 0x5e1c;
constexpr uint32_t kClsactPriority = 1;

// bpffs refuses names with '.', which interface names may hold (eth0.100).
std::string linkPin(const std::string& pin_dir, std::string ifname, uint32_t ifindex,
                    const char* dir) {
  for (char& c : ifname)
    if (c == '.') c = '-';
  return pin_dir + "/links/" + ifname + "_" + std::to_string(ifindex) + "_" + dir;
}

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

bool tcAttachClsact(uint32_t ifindex, bpf_tc_attach_point where, int prog_fd, std::string* err) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex), .attach_point = where);
  int r = bpf_tc_hook_create(&hook);
  if (r && r != -EEXIST) return (*err = "clsact create: " + std::string(strerror(-r))), false;
  LIBBPF_OPTS(bpf_tc_opts, o, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE,
              .handle = kClsactHandle, .priority = kClsactPriority);
  r = bpf_tc_attach(&hook, &o);
  if (r) return (*err = "clsact attach: " + std::string(strerror(-r))), false;
  return true;
}

void tcDetachClsact(uint32_t ifindex, bpf_tc_attach_point where) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex), .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, o, .handle = kClsactHandle, .priority = kClsactPriority);
  bpf_tc_detach(&hook, &o);
}

// Maps that only count: a pin of another definition (left by another smik
// version) is replaced, and its counts restart, rather than refused. Maps
// that enforce are never replaced: their pins hold the policy in force.
bool countsOnly(const std::string& name) {
  for (const char* m : {maps::kConnMap, maps::kEdgesMap, maps::kReasonsMap, maps::kSockStatsMap,
                        maps::kEventsMap, "smik_denied", "smik_ev_limits"})
    if (name == m) return true;
  return false;
}

maps::MapDef defOf(const bpf_map* m) {
  return {bpf_map__name(m), bpf_map__type(m), bpf_map__key_size(m), bpf_map__value_size(m),
          bpf_map__max_entries(m), bpf_map__map_flags(m)};
}

bool sameShape(const maps::MapDef& a, const maps::MapDef& b) {
  return a.type == b.type && a.key_size == b.key_size && a.value_size == b.value_size &&
         a.max_entries == b.max_entries && a.flags == b.flags;
}

// The definition of the map pinned at path, if any.
std::optional<maps::MapDef> pinnedDef(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return std::nullopt;
  maps::MapDef def;
  bool ok = maps::mapDefOf(fd, &def);
  close(fd);
  return ok ? std::optional(def) : std::nullopt;
}

// Flow state the programs rebuild as flows continue (conntrack, fragment
// verdicts, their counters): a pin of another layout (an older smik's LRU
// conntrack) is replaced too; one of the same layout is kept, whatever its
// size (conntrackEntries).
bool flowState(const std::string& name) {
  return name == maps::kCtMap || name == maps::kFragsMap || name == maps::kCtStatsMap;
}

bool sameLayout(const maps::MapDef& a, const maps::MapDef& b) {
  return a.type == b.type && a.key_size == b.key_size && a.value_size == b.value_size &&
         a.flags == b.flags;
}

void replaceStaleCounterPins(bpf_object* obj) {
  bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    const char* pin = bpf_map__pin_path(m);
    if (!pin) continue;
    bool flow = flowState(bpf_map__name(m));
    if (!flow && !countsOnly(bpf_map__name(m))) continue;
    auto pinned = pinnedDef(pin);
    if (!pinned || (flow ? sameLayout(*pinned, defOf(m)) : sameShape(*pinned, defOf(m)))) continue;
    spdlog::warn("{} is pinned as a {} of {}-byte values, this smik wants a {} of {}: replaced, "
                 "its counts restart",
                 bpf_map__name(m), maps::mapTypeName(pinned->type), pinned->value_size,
                 maps::mapTypeName(bpf_map__type(m)), bpf_map__value_size(m));
    ::unlink(pin);
  }
}

// A pinned conntrack keeps its size whatever --ct-max says: a new map would
// forget every flow in progress, and the replies to pods' own connections
// would be judged as new inbound flows and dropped. Its size as the kernel
// reports it is also the one libbpf must ask for to reuse it (the kernel
// rounds a per-CPU LRU up to a multiple of the CPU count).
uint32_t conntrackEntries(const Options& opts) {
  auto pinned = pinnedDef(opts.pin_dir + "/" + maps::kCtMap);
  if (!pinned) return opts.ct_max;
  if (pinned->max_entries < opts.ct_max ||
      pinned->max_entries >= opts.ct_max + libbpf_num_possible_cpus())
    spdlog::warn("{} is pinned with {} entries and stays so (replacing it would drop the flows in "
                 "progress); --ct-max {} applies after smik-agent --uninstall",
                 maps::kCtMap, pinned->max_entries, opts.ct_max);
  return pinned->max_entries;
}

}  // namespace

std::function<void(int fd)> ownSocketRegistrar(const std::string& pin_dir, std::string* err) {
  std::string pin = pin_dir + "/" + maps::kOwnSocketsMap;
  int map = bpf_obj_get(pin.c_str());
  if (map < 0) return (*err = errnoText("open " + pin)), nullptr;
  auto fd = std::shared_ptr<int>(new int(map), [](int* f) {
    close(*f);
    delete f;
  });
  return [fd](int sock) {
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    uint8_t one = 1;
    if (getsockopt(sock, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0 ||
        bpf_map_update_elem(*fd, &cookie, &one, BPF_ANY) != 0)
      spdlog::warn("socket {} stays subject to smik's socket programs: {}", sock, strerror(errno));
  };
}

std::unique_ptr<Datapath> Datapath::open(const Options& opts, std::string* err) {
  if (!ensurePinDir(opts.pin_dir, err)) return nullptr;
  std::error_code ec;
  fs::create_directories(opts.pin_dir + "/links", ec);

  std::unique_ptr<Datapath> d(new Datapath());
  d->opts_ = opts;
  // Maps pinned by name under pin_dir: a restarted agent reuses the maps the
  // running programs read, so enforcement never sees an empty map.
  LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = opts.pin_dir.c_str());
  d->skel_ = smik_tc__open_opts(&oo);
  if (!d->skel_) return (*err = errnoText("open BPF object")), nullptr;
  bpf_map__set_max_entries(d->skel_->maps.smik_ct, conntrackEntries(opts));
  replaceStaleCounterPins(d->skel_->obj);
  if (int r = smik_tc__load(d->skel_); r != 0) {
    *err = "load BPF programs (are the pinned maps from an incompatible smik? run "
           "smik-agent --uninstall): " + std::string(strerror(-r));
    return nullptr;
  }
  d->sock_ = smik_sock__open_opts(&oo);
  if (!d->sock_) return (*err = errnoText("open BPF socket object")), nullptr;
  replaceStaleCounterPins(d->sock_->obj);
  if (int r = smik_sock__load(d->sock_); r != 0) {
    *err = "load BPF socket programs: " + std::string(strerror(-r));
    return nullptr;
  }
  d->tel_ = smik_tel__open_opts(&oo);
  if (!d->tel_) return (*err = errnoText("open BPF telemetry object")), nullptr;
  replaceStaleCounterPins(d->tel_->obj);
  if (int r = smik_tel__load(d->tel_); r != 0) {
    *err = "load BPF telemetry (sockops): " + std::string(strerror(-r));
    return nullptr;
  }
  d->maps_ = maps::LibbpfBackend::open(opts.pin_dir, err);
  if (!d->maps_) return nullptr;
  if (size_t n = d->maps_->removeOrphanBackends())
    spdlog::warn("removed {} {} entries no service table points at (an agent stopped in the "
                 "middle of replacing tables)", n, maps::kBackendsMap);
  d->tcx_ = !opts.force_clsact;
  d->adoptPinnedLinks();
  return d;
}

Datapath::~Datapath() {
  for (auto& [ifindex, a] : attached_) {
    if (a.to_pod_link >= 0) close(a.to_pod_link);  // pins keep the links alive
    if (a.from_pod_link >= 0) close(a.from_pod_link);
  }
  for (auto& [path, fd] : adopted_) close(fd);
  for (int fd : sock_links_) close(fd);  // pinned: they stay attached
  if (skel_) smik_tc__destroy(skel_);
  if (sock_) smik_sock__destroy(sock_);
  if (tel_) smik_tel__destroy(tel_);
}

int Datapath::toPodProgFd() const { return bpf_program__fd(skel_->progs.smik_to_pod); }
int Datapath::fromPodProgFd() const { return bpf_program__fd(skel_->progs.smik_from_pod); }
uint8_t Datapath::attachMode() const { return tcx_ ? SMIK_EP_ATTACH_TCX : SMIK_EP_ATTACH_CLSACT; }

std::vector<std::string> Datapath::hostAddresses() const { return datapath::hostAddresses(); }

void Datapath::adoptPinnedLinks() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opts_.pin_dir + "/links", ec)) {
    int fd = bpf_obj_get(e.path().c_str());
    if (fd >= 0) adopted_[e.path()] = fd;
  }
  if (!adopted_.empty()) spdlog::info("adopting {} pinned tc links", adopted_.size());
}

std::map<std::string, uint32_t> Datapath::resolveInterfaces(const compile::Plan& plan) const {
  std::map<std::string, uint32_t> out;
  for (const auto& [pod, ep] : plan.endpoints) {
    uint32_t ifindex = routeIfindex(ep.addrs.front());
    if (ifindex && isPodInterface(ifindex)) out[pod] = ifindex;
  }
  return out;
}

void Datapath::detach(Attachment& a) {
  if (a.mode == SMIK_EP_ATTACH_CLSACT) {
    tcDetachClsact(a.ifindex, BPF_TC_EGRESS);
    tcDetachClsact(a.ifindex, BPF_TC_INGRESS);
  }
  for (const char* dir : {"to", "from"}) ::unlink(linkPin(opts_.pin_dir, a.ifname, a.ifindex, dir).c_str());
  if (a.to_pod_link >= 0) close(a.to_pod_link);
  if (a.from_pod_link >= 0) close(a.from_pod_link);
  a.to_pod_link = a.from_pod_link = -1;
}

void Datapath::detachGone(const std::map<std::string, uint32_t>& wanted) {
  std::map<uint32_t, std::string> by_ifindex;
  for (const auto& [pod, ifindex] : wanted) by_ifindex[ifindex] = pod;
  for (auto it = attached_.begin(); it != attached_.end();) {
    auto w = by_ifindex.find(it->first);
    if (w != by_ifindex.end() && w->second == it->second.pod) {
      ++it;
      continue;
    }
    spdlog::info("detaching from {} ({}): pod {} gone", it->second.ifname, it->first, it->second.pod);
    detach(it->second);
    it = attached_.erase(it);
  }
}

int Datapath::takeOver(const std::string& pin, int prog_fd, const std::function<bool(int)>& fits) {
  auto old = adopted_.find(pin);
  if (old == adopted_.end()) return -1;
  int fd = old->second;
  adopted_.erase(old);
  // A previous agent's link: swap the program in place, no gap.
  if ((!fits || fits(fd)) && bpf_link_update(fd, prog_fd, nullptr) == 0) return fd;
  close(fd);
  ::unlink(pin.c_str());
  return -1;
}

bool Datapath::pinLink(int fd, const std::string& pin, std::string* err) {
  ::unlink(pin.c_str());  // a stale pin of a link that is gone
  if (bpf_obj_pin(fd, pin.c_str()) == 0) return true;
  *err = errnoText("pin " + pin);
  close(fd);
  return false;
}

bool Datapath::attach(const std::string& pod, uint32_t ifindex, std::string* err) {
  char name[IF_NAMESIZE] = {};
  if (!if_indextoname(ifindex, name)) return (*err = errnoText("interface name")), false;
  Attachment a{pod, name, ifindex, attachMode(), -1, -1};
  struct Hook {
    const char* dir;
    int prog_fd;
    int tcx_type;
    bpf_tc_attach_point tc_point;
    int* link;
  } hooks[] = {{"to", toPodProgFd(), kTcxEgress, BPF_TC_EGRESS, &a.to_pod_link},
               {"from", fromPodProgFd(), kTcxIngress, BPF_TC_INGRESS, &a.from_pod_link}};
  for (auto& h : hooks) {
    std::string pin = linkPin(opts_.pin_dir, a.ifname, ifindex, h.dir);
    if ((*h.link = takeOver(pin, h.prog_fd)) >= 0) continue;
    if (tcx_) {
      int fd = bpf_link_create(h.prog_fd, ifindex, static_cast<bpf_attach_type>(h.tcx_type), nullptr);
      if (fd >= 0) {
        if (!pinLink(fd, pin, err)) return false;
        *h.link = fd;
        continue;
      }
      if (errno != EINVAL && errno != EOPNOTSUPP && errno != 524 /* ENOTSUPP */)
        return (*err = errnoText(std::string("tcx attach ") + h.dir + " " + name)), false;
      spdlog::warn("tcx unavailable ({}), falling back to clsact", strerror(errno));
      tcx_ = false;
      a.mode = SMIK_EP_ATTACH_CLSACT;
    }
    if (!tcAttachClsact(ifindex, h.tc_point, h.prog_fd, err)) return false;
  }
  attached_[ifindex] = a;
  return true;
}

void Datapath::attachNew(const std::map<std::string, uint32_t>& wanted,
                         std::vector<std::string>* errors) {
  for (const auto& [pod, ifindex] : wanted) {
    if (attached_.count(ifindex)) continue;
    std::string err;
    if (attach(pod, ifindex, &err)) {
      spdlog::info("attached to {} ({}) for pod {} via {}", attached_[ifindex].ifname, ifindex,
                   pod, tcx_ ? "tcx" : "clsact");
    } else {
      errors->push_back("pod " + pod + ": " + err);
    }
  }
  // Pinned tc links nobody claimed belong to pods that are gone.
  for (auto it = adopted_.begin(); it != adopted_.end();) {
    if (fs::path(it->first).filename().string().rfind("cgroup_", 0) == 0) {
      ++it;
      continue;
    }
    close(it->second);
    ::unlink(it->first.c_str());
    it = adopted_.erase(it);
  }
}

bool Datapath::attachSocketPrograms(std::string* err) {
  if (sock_attached_) return true;
  if (opts_.cgroup.empty()) return (*err = "no cgroup2 directory to attach socket programs"), false;
  int cg = ::open(opts_.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) return (*err = errnoText("open cgroup " + opts_.cgroup)), false;
  struct stat cg_stat {};
  fstat(cg, &cg_stat);  // a cgroup2 directory's inode is its cgroup id
  bool ok = true;
  for (bpf_program* prog : cgroupPrograms()) {
    std::string pin = opts_.pin_dir + "/links/cgroup_" + bpf_program__name(prog);
    int prog_fd = bpf_program__fd(prog);
    // A link on another cgroup (--cgroup changed) is not ours to keep.
    int fd = takeOver(pin, prog_fd, [&](int link) {
      bpf_link_info info{};
      __u32 len = sizeof info;
      return bpf_obj_get_info_by_fd(link, &info, &len) == 0 &&
             info.cgroup.cgroup_id == cg_stat.st_ino;
    });
    if (fd >= 0) {
      sock_links_.push_back(fd);
      continue;
    }
    fd = bpf_link_create(prog_fd, cg, bpf_program__expected_attach_type(prog), nullptr);
    if (fd < 0) {
      *err = errnoText(std::string("attach ") + bpf_program__name(prog) + " to " + opts_.cgroup);
      ok = false;
      break;
    }
    if (!pinLink(fd, pin, err)) {
      ok = false;
      break;
    }
    sock_links_.push_back(fd);
  }
  close(cg);
  sock_attached_ = ok;
  if (ok) spdlog::info("socket and sockops programs attached at {}", opts_.cgroup);
  return ok;
}

std::vector<bpf_program*> Datapath::cgroupPrograms() const {
  std::vector<bpf_program*> out;
  bpf_program* prog;
  bpf_object__for_each_program(prog, sock_->obj) out.push_back(prog);
  bpf_object__for_each_program(prog, tel_->obj) out.push_back(prog);
  return out;
}

void Datapath::detachSocketPrograms() {
  for (bpf_program* prog : cgroupPrograms()) {
    ::unlink((opts_.pin_dir + "/links/cgroup_" + bpf_program__name(prog)).c_str());
  }
  for (int fd : sock_links_) close(fd);
  sock_links_.clear();
  sock_attached_ = false;
}

namespace {

// The name a map is reported under: a pinned map is one map whichever
// object opened it; an unpinned one exists once per object.
std::string reportName(const bpf_map* m, const char* object) {
  if (bpf_map__pin_path(m)) return bpf_map__name(m);
  return std::string(bpf_map__name(m)) + " (" + object + ")";
}

struct Objects {
  bpf_object* objs[3];
  const char* names[3] = {"smik_tc", "smik_sock", "smik_tel"};
};

// Every map of the three objects, each once.
template <typename Fn>
void forEachMap(const Objects& o, Fn fn) {
  std::set<std::string> seen;
  for (int i = 0; i < 3; i++) {
    bpf_map* m;
    bpf_object__for_each_map(m, o.objs[i]) {
      std::string name = reportName(m, o.names[i]);
      if (seen.insert(name).second) fn(m, name);
    }
  }
}

constexpr const char* kPolicyGeneration = "smik_pol_gen";  // what swapPolicy names them

}  // namespace

std::vector<maps::MapDef> mapDefs(const Options& opts, std::string* err) {
  LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = opts.pin_dir.c_str());
  smik_tc* tc = smik_tc__open_opts(&oo);
  smik_sock* sock = smik_sock__open_opts(&oo);
  smik_tel* tel = smik_tel__open_opts(&oo);
  std::vector<maps::MapDef> out;
  if (!tc || !sock || !tel) {
    *err = errnoText("open BPF objects");
  } else {
    bpf_map__set_max_entries(tc->maps.smik_ct, opts.ct_max);
    forEachMap(Objects{{tc->obj, sock->obj, tel->obj}}, [&](bpf_map* m, const std::string& name) {
      out.push_back(defOf(m));
      out.back().name = name;
    });
    out.push_back(defOf(bpf_map__inner_map(tc->maps.smik_policy)));
    out.back().name = kPolicyGeneration;
  }
  smik_tc__destroy(tc);
  smik_sock__destroy(sock);
  smik_tel__destroy(tel);
  return out;
}

std::vector<maps::MapUsage> Datapath::mapUsage() {
  static const uint32_t cpus = libbpf_num_possible_cpus();
  std::vector<maps::MapUsage> out;
  auto add = [&](int fd, const std::string& name) {
    maps::MapUsage u;
    if (!maps::mapDefOf(fd, &u.def)) return;
    u.def.name = name;
    u.entries = maps::countEntries(fd, u.def);
    u.bytes = maps::mapBytesFull(u.def, cpus);
    out.push_back(std::move(u));
  };
  forEachMap(Objects{{skel_->obj, sock_->obj, tel_->obj}},
             [&](bpf_map* m, const std::string& name) { add(bpf_map__fd(m), name); });
  // The generation in force; while the agent swaps, a second one exists.
  __u32 zero = 0, id = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.smik_policy), &zero, &id) == 0) {
    int fd = bpf_map_get_fd_by_id(id);
    if (fd >= 0) {
      add(fd, kPolicyGeneration);
      close(fd);
    }
  }
  return out;
}

bool Datapath::openHttpJudge(std::string* err) {
  if (http_) return true;
  if (opts_.cgroup.empty()) return (*err = "no cgroup2 directory to attach the HTTP judge"), false;
  http_ = HttpEnforcer::open(bpf_map__fd(skel_->maps.smik_ipcache), opts_.cgroup, opts_.pin_dir, err);
  if (http_) spdlog::info("HTTP request judge (sockops + sk_skb verdict) attached at {}", opts_.cgroup);
  return http_ != nullptr;
}

bool Datapath::stageHttp(const compile::Plan& plan, std::string* err) {
  return !http_ || http_->stage(plan, err);
}

bool Datapath::finishHttp(const compile::Plan& plan, std::string* err) {
  return !http_ || http_->finish(plan, err);
}

std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> Datapath::httpCounters() const {
  return http_ ? http_->counters() : std::array<uint64_t, SMIK_HTTP_COUNTER_MAX>{};
}

bool Datapath::uninstall(const std::string& pin_dir, std::string* err) {
  std::string ep_pin = pin_dir + "/" + maps::kEndpointsMap;
  int fd = bpf_obj_get(ep_pin.c_str());
  if (fd >= 0) {
    __u32 key = 0, next = 0;
    const __u32* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      smik_endpoint ep{};
      if (bpf_map_lookup_elem(fd, &next, &ep) == 0 && ep.attach == SMIK_EP_ATTACH_CLSACT) {
        tcDetachClsact(next, BPF_TC_EGRESS);
        tcDetachClsact(next, BPF_TC_INGRESS);
      }
      key = next;
      prev = &key;
    }
    close(fd);
  }
  // Unpinning a link detaches it; unpinning a map frees it once unused.
  std::error_code ec;
  fs::remove_all(pin_dir, ec);
  if (ec) return (*err = "remove " + pin_dir + ": " + ec.message()), false;
  return true;
}

}  // namespace smik::datapath
