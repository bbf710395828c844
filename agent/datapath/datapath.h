// Loads the tc programs, pins their maps under the pin dir, attaches them to
// local pods' host-side veths, and adopts what a previous agent left pinned.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/unique_fd.h"
#include "agent/compile/compile.h"
#include "agent/datapath/cgroup_links.h"
#include "agent/datapath/dataplane.h"
#include "agent/datapath/http_apply.h"
#include "maps/maps.h"
#include "maps/memory.h"

// The bpftool skeletons, named after their sources in bpf/.
struct tc_policy;
struct sock_lb;
struct sockops;
struct bpf_program;

namespace smik::datapath {

struct Options {
  std::string pin_dir = "/sys/fs/bpf/smik";
  bool force_clsact = false;  // skip tcx (tests of the fallback)
  std::string cgroup;         // cgroup2 directory for the socket programs
  // Entries of a new smik_ct (--ct-max). A pinned one keeps its size: it
  // holds the flows in progress (see open()).
  uint32_t ct_max = SMIK_MAX_CT;
  // What a denied new flow gets (SMIK_DENY_*, --deny-response). The agent's
  // flag defaults to reject; here drop, so a Datapath opened for tests of
  // verdicts alone sees its denied packets dropped, as the kernel does
  // before any agent configured it.
  uint8_t deny_response = SMIK_DENY_DROP;
  // The HTTP judge's limits and flags (--http-max-*, --http-non-http1); a
  // zero limit is the kernel's default.
  smik_http_config http{};
};

// The maps of the BPF objects as built, before anything is loaded (no
// root needed), with the sizes open() would give them: what the memory
// table of README.md is computed from. Unpinned maps are per object
// ("smik_conn_zero (tc_policy)"); the policy generation is "smik_pol_gen".
std::vector<maps::MapDef> mapDefs(const Options& opts, std::string* err);

template <typename T>
class Skeleton;
class NetChanges;

class Datapath : public Dataplane {
 public:
  static std::unique_ptr<Datapath> open(const Options& opts, std::string* err);
  ~Datapath() override;
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  maps::Backend& maps() override { return *maps_; }
  bool tcxAvailable() const override { return tcx_; }
  int toPodProgFd() const;
  int fromPodProgFd() const;

  bool hostNetworkChanged() override;
  std::map<std::string, uint32_t> resolveInterfaces(const compile::Plan& plan) const override;
  void detachGone(const std::map<std::string, uint32_t>& wanted) override;
  void attachNew(const std::map<std::string, uint32_t>& wanted,
                 std::vector<std::string>* errors) override;
  const std::map<uint32_t, Attachment>& attachments() const override { return attached_; }
  bool attachSocketPrograms(std::string* err) override;
  bool socketProgramsAttached() const override { return sock_attached_; }
  void detachSocketPrograms();  // unpin and close: benchmarks' baseline runs
  uint8_t attachMode() const override;
  std::vector<std::string> hostAddresses() const override;
  std::vector<maps::MapUsage> mapUsage() override;
  UniqueFd eventsMap() const override;
  // Registers a socket, before it connects, as one of the agent's own: the
  // socket programs never translate it (smik_own_sockets in
  // bpf/sock_lb.bpf.c says why). Empty when there are no socket programs.
  std::function<void(int fd)> ownSocketRegistrar() const;
  bool openHttpJudge(std::string* err) override;
  bool httpJudgeOpen() const override { return http_ != nullptr; }
  bool httpJudgeAttached() const override { return http_ && http_->attached(); }
  bool stageHttp(const compile::Plan& plan, std::string* err) override;
  bool finishHttp(const compile::Plan& plan, std::string* err) override;
  std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> httpCounters() const override;
  std::vector<maps::HttpEdge> httpResponseEdges() const override;

  // Removes every program, link, tc hook and pin under pin_dir.
  static bool uninstall(const std::string& pin_dir, std::string* err);

 private:
  struct Objects;  // the three skeletons
  struct CgroupLinkOps;
  Datapath();
  bool loadObjects(std::string* err);
  bool attach(const std::string& pod, uint32_t ifindex, std::string* err);
  void detach(Attachment& a);
  std::vector<::bpf_program*> cgroupPrograms() const;  // sock_lb + sockops
  void adoptPinnedLinks();
  // The link a previous agent pinned at `pin`, switched to prog_fd in place
  // (no gap) if `fits` accepts it; invalid if there is none or it cannot be
  // (its pin is then removed).
  UniqueFd takeOver(const std::string& pin, int prog_fd,
                    const std::function<bool(int)>& fits = {});
  // Pins a new link (replacing a stale pin); on failure drops it, sets err.
  static bool pinLink(UniqueFd link, const std::string& pin, UniqueFd* out, std::string* err);

  Options opts_;
  // Declared before what they hand out: destroyed last.
  std::unique_ptr<Objects> objs_;
  std::unique_ptr<maps::LibbpfBackend> maps_;
  bool sock_attached_ = false;
  CgroupLinks sock_links_;  // retried after a partial failure: see cgroup_links.h
  bool tcx_ = false;
  std::map<uint32_t, Attachment> attached_;   // by ifindex
  std::map<std::string, UniqueFd> adopted_;  // pinned link path -> link, not yet claimed
  std::unique_ptr<HttpEnforcer> http_;        // --http-rules=enforce
  std::unique_ptr<NetChanges> net_;  // opened first: see hostNetworkChanged()
  std::chrono::steady_clock::time_point next_full_read_{};
};

}  // namespace smik::datapath
