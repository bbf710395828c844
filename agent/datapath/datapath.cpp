#include "agent/datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <unistd.h>  // unlink

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>

#include "agent/base/result.h"
#include "agent/datapath/skeleton.h"
#include "agent/datapath/system.h"
#include "sock_lb.skel.h"
#include "sockops.skel.h"
#include "tc_policy.skel.h"

namespace fs = std::filesystem;

namespace smik::datapath {
namespace {

// tcx (Linux 6.6) attach types: libbpf 1.1 and Debian 12's kernel headers
// predate their names; the values are uapi (include/uapi/linux/bpf.h).
constexpr bpf_attach_type kTcxIngress = static_cast<bpf_attach_type>(46);  // BPF_TCX_INGRESS
constexpr bpf_attach_type kTcxEgress = static_cast<bpf_attach_type>(47);   // BPF_TCX_EGRESS
// The kernel's own "not supported" (include/linux/errno.h), which no
// userspace errno.h names: what a kernel without tcx answers for a link of
// those types, beside EINVAL and EOPNOTSUPP.
constexpr int kErrnoEnotsupp = 524;
// Our clsact filter, so that detach removes that one and no other.
constexpr uint32_t kClsactHandle = 0x5e1c;
constexpr uint32_t kClsactPriority = 1;

// bpffs refuses names with '.', which interface names may hold (eth0.100).
std::string linkPin(const std::string& pin_dir, std::string ifname, uint32_t ifindex,
                    const char* dir) {
  for (char& c : ifname)
    if (c == '.') c = '-';
  return pin_dir + "/links/" + ifname + "_" + std::to_string(ifindex) + "_" + dir;
}

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
                        maps::kEventsMap, maps::kAnswerStatsMap, "smik_denied", "smik_ev_limits",
                        "smik_answer_limits"})
    if (name == m) return true;
  return false;
}

bool sameShape(const maps::MapDef& a, const maps::MapDef& b) {
  return a.type == b.type && a.key_size == b.key_size && a.value_size == b.value_size &&
         a.max_entries == b.max_entries && a.flags == b.flags;
}

// The definition of the map pinned at path, if any.
std::optional<maps::MapDef> pinnedDef(const std::string& path) {
  UniqueFd fd(bpf_obj_get(path.c_str()));
  maps::MapDef def;
  if (!fd || !maps::mapDefOf(fd.get(), &def)) return std::nullopt;
  return def;
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
    const maps::MapDef wanted = maps::mapDefOf(m);
    if (!pinned || (flow ? sameLayout(*pinned, wanted) : sameShape(*pinned, wanted))) continue;
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

// Opens one object with its maps bound to the pins under pin_dir, lets
// stale counter pins go, and loads it. prepare() sizes maps before load.
template <typename T, typename Prepare>
Result<Skeleton<T>> loadObject(const std::string& pin_dir, Prepare prepare) {
  Result<Skeleton<T>> skel = Skeleton<T>::open(pin_dir);
  if (!skel) return skel;
  prepare(*skel);
  replaceStaleCounterPins(skel->object());
  if (Result<void> loaded = skel->load(); !loaded) return Error{loaded.error()};
  return skel;
}

// The maps the backend writes and reads, from the loaded objects; fails if
// a descriptor cannot be had (out of descriptors).
Result<maps::BackendMaps> backendMaps(const Skeleton<tc_policy>& tc, const Skeleton<sock_lb>& sock,
                              const Skeleton<sockops>& tel) {
  maps::BackendMaps m;
  m.ipcache = mapFd(tc->maps.smik_ipcache);
  m.endpoints = mapFd(tc->maps.smik_endpoints);
  m.policy = mapFd(tc->maps.smik_policy);
  m.state = mapFd(tc->maps.smik_state);
  m.reasons = mapFd(tc->maps.smik_reasons);
  m.edges = mapFd(tc->maps.smik_edges);
  m.ct = mapFd(tc->maps.smik_ct);
  m.ct_stats = mapFd(tc->maps.smik_ct_stats);
  m.services = mapFd(sock->maps.smik_services);
  m.backends = mapFd(sock->maps.smik_backends);
  m.sock_stats = mapFd(sock->maps.smik_sock_stats);
  m.conn = mapFd(tel->maps.smik_conn);
  m.answer_stats = mapFd(tc->maps.smik_answer_stats);
  for (const UniqueFd* fd : {&m.ipcache, &m.endpoints, &m.policy, &m.state, &m.reasons, &m.edges,
                             &m.ct, &m.ct_stats, &m.services, &m.backends, &m.sock_stats, &m.conn,
                             &m.answer_stats})
    if (!*fd) return Error{errnoText("duplicate a map descriptor")};
  return m;
}

}  // namespace

struct Datapath::Objects {
  Skeleton<tc_policy> tc;
  Skeleton<sock_lb> sock;
  Skeleton<sockops> tel;
};

Datapath::Datapath() : net_(std::make_unique<NetChanges>()) {}
// Members go in reverse order: links and the backend's descriptors first,
// the objects last. Pinned links and maps outlive all of it: the programs
// keep enforcing while no agent runs.
Datapath::~Datapath() = default;

bool Datapath::loadObjects(std::string* err) {
  auto tc = loadObject<tc_policy>(opts_.pin_dir, [&](Skeleton<tc_policy>& s) {
    bpf_map__set_max_entries(s->maps.smik_ct, conntrackEntries(opts_));
  });
  if (!tc) {
    *err = "load BPF programs (are the pinned maps from an incompatible smik? run "
           "smik-agent --uninstall): " + tc.error();
    return false;
  }
  auto sock = loadObject<sock_lb>(opts_.pin_dir, [](auto&) {});
  if (!sock) return (*err = "load BPF socket programs: " + sock.error()), false;
  auto tel = loadObject<sockops>(opts_.pin_dir, [](auto&) {});
  if (!tel) return (*err = "load BPF telemetry (sockops): " + tel.error()), false;
  objs_.reset(new Objects{std::move(tc).value(), std::move(sock).value(), std::move(tel).value()});
  // Pinned: the programs a previous agent left attached read the new
  // setting at once.
  smik_tc_config cfg{};
  cfg.deny_response = opts_.deny_response;
  __u32 zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(objs_->tc->maps.smik_tc_config), &zero, &cfg, BPF_ANY) != 0)
    return (*err = errnoText("write smik_tc_config")), false;
  auto backend_maps = backendMaps(objs_->tc, objs_->sock, objs_->tel);
  if (!backend_maps) return (*err = backend_maps.error()), false;
  maps_ = std::make_unique<maps::LibbpfBackend>(std::move(backend_maps).value());
  return true;
}

std::unique_ptr<Datapath> Datapath::open(const Options& opts, std::string* err) {
  if (!ensurePinDir(opts.pin_dir, err)) return nullptr;
  std::error_code ec;
  fs::create_directories(opts.pin_dir + "/links", ec);

  std::unique_ptr<Datapath> d(new Datapath());
  d->opts_ = opts;
  // Maps pinned by name under pin_dir: a restarted agent reuses the maps the
  // running programs read, so enforcement never sees an empty map.
  if (!d->loadObjects(err)) return nullptr;
  Result<size_t> orphans = d->maps_->removeOrphanBackends();
  if (!orphans)
    spdlog::warn("orphaned {} entries stay: {}", maps::kBackendsMap, orphans.error());
  else if (*orphans)
    spdlog::warn("removed {} {} entries no service table points at (an agent stopped in the "
                 "middle of replacing tables)", *orphans, maps::kBackendsMap);
  d->tcx_ = !opts.force_clsact;
  d->adoptPinnedLinks();
  return d;
}

UniqueFd Datapath::eventsMap() const { return mapFd(objs_->tc->maps.smik_events); }

std::function<void(int fd)> Datapath::ownSocketRegistrar() const {
  auto map = std::make_shared<UniqueFd>(mapFd(objs_->sock->maps.smik_own_sockets));
  if (!*map) return {};
  return [map](int sock) {
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    uint8_t one = 1;
    if (getsockopt(sock, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0 ||
        bpf_map_update_elem(map->get(), &cookie, &one, BPF_ANY) != 0)
      spdlog::warn("socket {} stays subject to smik's socket programs: {}", sock, strerror(errno));
  };
}

int Datapath::toPodProgFd() const { return bpf_program__fd(objs_->tc->progs.smik_to_pod); }
int Datapath::fromPodProgFd() const { return bpf_program__fd(objs_->tc->progs.smik_from_pod); }
uint8_t Datapath::attachMode() const { return tcx_ ? SMIK_EP_ATTACH_TCX : SMIK_EP_ATTACH_CLSACT; }

std::vector<std::string> Datapath::hostAddresses() const { return datapath::hostAddresses(); }

void Datapath::adoptPinnedLinks() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opts_.pin_dir + "/links", ec)) {
    UniqueFd link(bpf_obj_get(e.path().c_str()));
    if (link) adopted_[e.path()] = std::move(link);
  }
  if (!adopted_.empty()) spdlog::info("adopting {} pinned tc links", adopted_.size());
}

// Netlink tells of every change; a full reading every 30 s all the same, as
// a controller resyncs, in case a change ever slips by (a pod whose veth is
// missed would go unhooked).
bool Datapath::hostNetworkChanged() {
  auto now = std::chrono::steady_clock::now();
  bool due = now >= next_full_read_;
  bool changed = net_->changedSinceLastAsk() || due;
  if (changed) next_full_read_ = now + std::chrono::seconds(30);
  return changed;
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
  // Unpinned and closed, a tcx link detaches.
  for (const char* dir : {"to", "from"})
    ::unlink(linkPin(opts_.pin_dir, a.ifname, a.ifindex, dir).c_str());
  a.to_pod_link.reset();
  a.from_pod_link.reset();
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

UniqueFd Datapath::takeOver(const std::string& pin, int prog_fd,
                            const std::function<bool(int)>& fits) {
  auto old = adopted_.find(pin);
  if (old == adopted_.end()) return {};
  UniqueFd link = std::move(old->second);
  adopted_.erase(old);
  // A previous agent's link: swap the program in place, no gap.
  if ((!fits || fits(link.get())) && bpf_link_update(link.get(), prog_fd, nullptr) == 0)
    return link;
  ::unlink(pin.c_str());
  return {};
}

bool Datapath::pinLink(UniqueFd link, const std::string& pin, UniqueFd* out, std::string* err) {
  ::unlink(pin.c_str());  // a stale pin of a link that is gone
  if (bpf_obj_pin(link.get(), pin.c_str()) != 0) return (*err = errnoText("pin " + pin)), false;
  *out = std::move(link);
  return true;
}

bool Datapath::attach(const std::string& pod, uint32_t ifindex, std::string* err) {
  char name[IF_NAMESIZE] = {};
  if (!if_indextoname(ifindex, name)) return (*err = errnoText("interface name")), false;
  Attachment a{pod, name, ifindex, attachMode()};
  struct Hook {
    const char* dir;
    int prog_fd;
    bpf_attach_type tcx_type;
    bpf_tc_attach_point tc_point;
    UniqueFd* link;
  } hooks[] = {{"to", toPodProgFd(), kTcxEgress, BPF_TC_EGRESS, &a.to_pod_link},
               {"from", fromPodProgFd(), kTcxIngress, BPF_TC_INGRESS, &a.from_pod_link}};
  for (auto& h : hooks) {
    std::string pin = linkPin(opts_.pin_dir, a.ifname, ifindex, h.dir);
    if ((*h.link = takeOver(pin, h.prog_fd))) continue;
    if (tcx_) {
      UniqueFd link(bpf_link_create(h.prog_fd, ifindex, h.tcx_type, nullptr));
      if (link) {
        if (!pinLink(std::move(link), pin, h.link, err)) return false;
        continue;
      }
      if (errno != EINVAL && errno != EOPNOTSUPP && errno != kErrnoEnotsupp)
        return (*err = errnoText(std::string("tcx attach ") + h.dir + " " + name)), false;
      spdlog::warn("tcx unavailable ({}), falling back to clsact", strerror(errno));
      tcx_ = false;
      a.mode = SMIK_EP_ATTACH_CLSACT;
    }
    if (!tcAttachClsact(ifindex, h.tc_point, h.prog_fd, err)) return false;
  }
  attached_[ifindex] = std::move(a);
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
    ::unlink(it->first.c_str());
    it = adopted_.erase(it);
  }
}

// The kernel's LinkOps: links on the cgroup, taking over the pins of a
// previous agent whose link is on the same cgroup.
struct Datapath::CgroupLinkOps final : LinkOps {
  Datapath& dp;
  int cgroup_fd;
  uint64_t cgroup_id;  // a cgroup2 directory's inode is its cgroup id
  CgroupLinkOps(Datapath& d, int fd, uint64_t id) : dp(d), cgroup_fd(fd), cgroup_id(id) {}

  UniqueFd takeOver(const CgroupProgram& p) override {
    // A link on another cgroup (--cgroup changed) is not ours to keep.
    auto onOurCgroup = [&](int link) {
      bpf_link_info info{};
      __u32 len = sizeof info;
      return bpf_obj_get_info_by_fd(link, &info, &len) == 0 &&
             info.cgroup.cgroup_id == cgroup_id;
    };
    return dp.takeOver(p.pin, p.prog_fd, onOurCgroup);
  }
  UniqueFd create(const CgroupProgram& p, std::string* err) override {
    UniqueFd link(bpf_link_create(p.prog_fd, cgroup_fd, bpf_attach_type(p.attach_type), nullptr));
    if (!link) *err = errnoText("attach " + p.name + " to " + dp.opts_.cgroup);
    return link;
  }
  bool pin(UniqueFd link, const CgroupProgram& p, UniqueFd* out, std::string* err) override {
    return pinLink(std::move(link), p.pin, out, err);
  }
};

bool Datapath::attachSocketPrograms(std::string* err) {
  if (sock_attached_) return true;
  if (opts_.cgroup.empty()) return (*err = "no cgroup2 directory to attach socket programs"), false;
  UniqueFd cg(::open(opts_.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg) return (*err = errnoText("open cgroup " + opts_.cgroup)), false;
  struct stat cg_stat {};
  fstat(cg.get(), &cg_stat);
  std::vector<CgroupProgram> programs;
  for (bpf_program* prog : cgroupPrograms())
    programs.push_back({bpf_program__name(prog),
                        opts_.pin_dir + "/links/cgroup_" + bpf_program__name(prog),
                        bpf_program__fd(prog), bpf_program__expected_attach_type(prog)});
  CgroupLinkOps ops(*this, cg.get(), cg_stat.st_ino);
  if (!sock_links_.attach(programs, ops, err)) return false;
  sock_attached_ = true;
  spdlog::info("socket and sockops programs attached at {}", opts_.cgroup);
  return true;
}

std::vector<bpf_program*> Datapath::cgroupPrograms() const {
  std::vector<bpf_program*> out;
  auto add = [&](bpf_program* p) { out.push_back(p); };
  objs_->sock.forEachProgram(add);
  objs_->tel.forEachProgram(add);
  return out;
}

void Datapath::detachSocketPrograms() {
  for (bpf_program* prog : cgroupPrograms()) {
    ::unlink((opts_.pin_dir + "/links/cgroup_" + bpf_program__name(prog)).c_str());
  }
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

// Every map of the three objects, each once, fn(map, name).
template <typename Fn>
void forEachMap(const Skeleton<tc_policy>& tc, const Skeleton<sock_lb>& sock,
                const Skeleton<sockops>& tel, Fn fn) {
  std::set<std::string> seen;
  auto each = [&](const char* object) {
    return [&, object](bpf_map* m) {
      std::string name = reportName(m, object);
      if (seen.insert(name).second) fn(m, name);
    };
  };
  tc.forEachMap(each("tc_policy"));
  sock.forEachMap(each("sock_lb"));
  tel.forEachMap(each("sockops"));
}

}  // namespace

std::vector<maps::MapDef> mapDefs(const Options& opts, std::string* err) {
  auto tc = Skeleton<tc_policy>::open(opts.pin_dir);
  auto sock = Skeleton<sock_lb>::open(opts.pin_dir);
  auto tel = Skeleton<sockops>::open(opts.pin_dir);
  for (const std::string* e : {tc ? nullptr : &tc.error(), sock ? nullptr : &sock.error(),
                               tel ? nullptr : &tel.error()})
    if (e) return (*err = *e), std::vector<maps::MapDef>{};
  std::vector<maps::MapDef> out;
  bpf_map__set_max_entries((*tc)->maps.smik_ct, opts.ct_max);
  forEachMap(*tc, *sock, *tel, [&](bpf_map* m, const std::string& name) {
    out.push_back(maps::mapDefOf(m));
    out.back().name = name;
  });
  out.push_back(maps::mapDefOf(bpf_map__inner_map((*tc)->maps.smik_policy)));
  out.back().name = maps::kPolicyGeneration;
  // The HTTP judge loads on every node whose pods have HTTP rules.
  auto http = HttpJudge::mapDefs(err);
  if (http.empty()) return {};
  out.insert(out.end(), http.begin(), http.end());
  return out;
}

std::vector<maps::MapUsage> Datapath::mapUsage() {
  static const uint32_t cpus = libbpf_num_possible_cpus();
  std::vector<maps::MapUsage> out;
  auto add = [&](int fd, const std::string& name, std::optional<uint64_t> taken = std::nullopt) {
    maps::MapUsage u;
    if (!maps::mapDefOf(fd, &u.def)) return;
    u.def.name = name;
    u.entries = taken ? *taken : maps::countEntries(fd, u.def);
    u.bytes = maps::mapBytesFull(u.def, cpus);
    out.push_back(std::move(u));
  };
  forEachMap(objs_->tc, objs_->sock, objs_->tel,
             [&](bpf_map* m, const std::string& name) { add(bpf_map__fd(m), name); });
  // The generation in force; while the agent swaps, a second one exists.
  __u32 zero = 0, id = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(objs_->tc->maps.smik_policy), &zero, &id) == 0) {
    if (UniqueFd gen{bpf_map_get_fd_by_id(id)}) add(gen.get(), maps::kPolicyGeneration);
  }
  if (http_)
    for (const auto& m : http_->maps()) add(m.fd, m.name, m.taken);
  return out;
}

bool Datapath::openHttpJudge(std::string* err) {
  if (http_) return true;
  if (opts_.cgroup.empty()) return (*err = "no cgroup2 directory to attach the HTTP judge"), false;
  http_ = HttpEnforcer::open(bpf_map__fd(objs_->tc->maps.smik_ipcache),
                             {bpf_map__fd(objs_->tc->maps.smik_ct),
                              bpf_map__fd(objs_->tc->maps.smik_ct_answers)},
                             {bpf_map__fd(objs_->tc->maps.smik_events),
                              bpf_map__fd(objs_->tc->maps.smik_ev_limits)},
                             opts_.cgroup, opts_.pin_dir, err);
  if (http_ && !http_->setLimits(opts_.http, err)) http_.reset();
  // HttpEnforcer logs its attachment, at once or with the first HTTP rule.
  if (http_) spdlog::info("HTTP request judge (sockops + sk_skb verdict) loaded for {}", opts_.cgroup);
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

std::vector<maps::HttpEdge> Datapath::httpResponseEdges() const {
  return http_ ? http_->responseEdges() : std::vector<maps::HttpEdge>{};
}

bool Datapath::uninstall(const std::string& pin_dir, std::string* err) {
  // By pin: uninstall loads nothing, and finds what a previous agent left.
  std::string ep_pin = pin_dir + "/" + maps::kEndpointsMap;
  if (UniqueFd endpoints{bpf_obj_get(ep_pin.c_str())}) {
    __u32 key = 0, next = 0;
    const __u32* prev = nullptr;
    while (bpf_map_get_next_key(endpoints.get(), prev, &next) == 0) {
      smik_endpoint ep{};
      if (bpf_map_lookup_elem(endpoints.get(), &next, &ep) == 0 &&
          ep.attach == SMIK_EP_ATTACH_CLSACT) {
        tcDetachClsact(next, BPF_TC_EGRESS);
        tcDetachClsact(next, BPF_TC_INGRESS);
      }
      key = next;
      prev = &key;
    }
  }
  // Unpinning a link detaches it; unpinning a map frees it once unused.
  std::error_code ec;
  fs::remove_all(pin_dir, ec);
  if (ec) return (*err = "remove " + pin_dir + ": " + ec.message()), false;
  return true;
}

}  // namespace smik::datapath
