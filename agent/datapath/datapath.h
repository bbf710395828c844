// Loads the tc programs, pins their maps under the pin dir, attaches them to
// local pods' host-side veths, and adopts what a previous agent left pinned.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/datapath/dataplane.h"
#include "agent/datapath/http_apply.h"
#include "maps/maps.h"
#include "maps/memory.h"

struct smik_tc;
struct smik_sock;
struct smik_tel;
struct bpf_program;

namespace smik::datapath {

struct Options {
  std::string pin_dir = "/sys/fs/bpf/smik";
  bool force_clsact = false;  // skip tcx (tests of the fallback)
  std::string cgroup;         // cgroup2 directory for the socket programs
  // Entries of a new smik_ct (--ct-max). A pinned one keeps its size: it
  // holds the flows in progress (see open()).
  uint32_t ct_max = SMIK_MAX_CT;
};

// Registers a socket, before it connects, as one of the agent's own: the
// socket programs never translate it (smik_own_sockets in bpf/sock_lb.bpf.c
// says why). Opens the pinned map under pin_dir (which Datapath::open
// creates); an empty function and *err when it cannot.
std::function<void(int fd)> ownSocketRegistrar(const std::string& pin_dir, std::string* err);

// The maps of the BPF objects as built, before anything is loaded (no
// root needed), with the sizes open() would give them: what the memory
// table of README.md is computed from. Unpinned maps are per object
// ("smik_conn_zero (smik_tc)"); the policy generation is "smik_pol_gen".
std::vector<maps::MapDef> mapDefs(const Options& opts, std::string* err);

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
  bool openHttpJudge(std::string* err) override;
  bool httpJudgeOpen() const override { return http_ != nullptr; }
  bool stageHttp(const compile::Plan& plan, std::string* err) override;
  bool finishHttp(const compile::Plan& plan, std::string* err) override;
  std::array<uint64_t, SMIK_HTTP_COUNTER_MAX> httpCounters() const override;

  // Removes every program, link, tc hook and pin under pin_dir.
  static bool uninstall(const std::string& pin_dir, std::string* err);

 private:
  Datapath() = default;
  bool attach(const std::string& pod, uint32_t ifindex, std::string* err);
  void detach(Attachment& a);
  std::vector<::bpf_program*> cgroupPrograms() const;  // sock_lb + sockops
  void adoptPinnedLinks();
  // The link a previous agent pinned at `pin`, switched to prog_fd in place
  // (no gap) if `fits` accepts it; -1 if there is none or it cannot be (its
  // pin is then removed).
  int takeOver(const std::string& pin, int prog_fd, const std::function<bool(int)>& fits = {});
  // Pins a new link (replacing a stale pin); on failure closes it, sets err.
  static bool pinLink(int fd, const std::string& pin, std::string* err);

  Options opts_;
  smik_tc* skel_ = nullptr;
  smik_sock* sock_ = nullptr;
  smik_tel* tel_ = nullptr;
  bool sock_attached_ = false;
  std::vector<int> sock_links_;
  std::unique_ptr<maps::LibbpfBackend> maps_;
  bool tcx_ = false;
  std::map<uint32_t, Attachment> attached_;  // by ifindex
  std::map<std::string, int> adopted_;        // pinned link path -> fd, not yet claimed
  std::unique_ptr<HttpEnforcer> http_;         // --http-rules=enforce
};

}  // namespace smik::datapath
