// Test bed: real "pods" (network namespaces + veth + cgroup v2) on this
// machine, routed like Calico/Cilium. Why it is built so: tests/testbed/README.md.
//
// Everything a TestBed creates carries a per-run prefix and is removed again
// by name in the destructor, also when a test fails or a setup step throws.
// Not thread-safe: use one TestBed from one thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace smik::testbed {

// Short prefix unique to this process ("sk" + 4 hex chars from pid and time).
// Every TestBed of this process uses a prefix that starts with it, so
// "nothing named runPrefix()* exists" means this process left nothing behind.
std::string runPrefix();

// Mount point of cgroup2, read from /proc/self/mountinfo. Throws if absent.
std::string cgroup2Mount();

// Live TestBeds on this machine, all processes (registered in
// /run/smik-testbed to share net.ipv4.ip_forward between parallel runs).
int activeTestBeds();

// Path of the `ip` tool (/usr/sbin/ip, /sbin/ip or PATH). Throws if absent.
std::string ipTool();

// Runs argv (fork/execvp, no shell) and returns its stdout. Throws
// std::runtime_error naming the command and its stderr if it fails.
std::string command(const std::vector<std::string>& argv);
// Same, but returns false instead of throwing (for cleanup).
bool tryCommand(const std::vector<std::string>& argv);

// A running child process. Killed (SIGKILL by PID) and reaped when the Proc
// or the TestBed that started it goes away, whichever comes first.
class Proc {
 public:
  struct State;  // shared with the TestBed so it can kill leftovers
  explicit Proc(std::shared_ptr<State> s);
  Proc(Proc&&) noexcept;
  Proc& operator=(Proc&&) noexcept;
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  ~Proc();

  pid_t pid() const;
  // Exit code (128+signal if killed by a signal), or -1 on timeout.
  int wait(int timeout_ms);
  // Everything the process wrote to stdout so far (does not block).
  std::string output();
  // Waits until stdout contains `needle` (e.g. "ready\n"); false on timeout
  // or if the process exits first.
  bool waitFor(const std::string& needle, int timeout_ms);
  // SIGKILL + reap now; returns the status as wait() does.
  int kill();

 private:
  std::shared_ptr<State> s_;
};

struct RunResult {
  int status = -1;  // exit code, or -1 on timeout (the process was killed)
  std::string output;
  bool ok() const { return status == 0; }
};

class Pod {
 public:
  const std::string& name() const { return name_; }
  const std::string& netns() const { return netns_; }    // "<prefix>-<name>"
  const std::string& ip() const { return ip_; }
  // The pod's IPv6 address beside ip() (dual stack), empty when ip() is not
  // from its bed's block or the machine has no IPv6.
  const std::string& ip6() const { return ip6_; }
  const std::string& hostIf() const { return hostIf_; }  // "<prefix><n>"
  int hostIfIndex() const { return hostIfIndex_; }
  const std::string& cgroupPath() const { return cgroupPath_; }

 private:
  friend class TestBed;
  std::string name_, netns_, ip_, ip6_, hostIf_, cgroupPath_;
  int hostIfIndex_ = 0;
};

class TestBed {
 public:
  // Sets net.ipv4.ip_forward=1. The old value is restored when the last
  // live TestBed on the machine (in any process) is destroyed.
  TestBed();
  ~TestBed();
  TestBed(const TestBed&) = delete;
  TestBed& operator=(const TestBed&) = delete;

  // This bed's name prefix: runPrefix() + one letter (g..z) per TestBed.
  const std::string& prefix() const { return prefix_; }

  // A fresh pod address 10.240.X.n (n = 1, 2, ...) from this bed's block.
  // The block is claimed with a host blackhole route, so parallel runs never
  // share addresses and traffic to absent pods never leaves the machine.
  std::string nextIp();
  std::string subnetCidr() const;  // "10.240.X.0/24"
  // The IPv6 twin of an address of this bed's block: 10.240.X.n ->
  // fd73:6d6b:240:X::n, in a /64 claimed (blackholed) the same way. Empty for
  // any other address, or when the machine has no IPv6.
  std::string ip6Of(const std::string& ip) const;
  std::string subnet6Cidr() const;  // "fd73:6d6b:240:X::/64", empty without IPv6
  // "<cgroup2 mount>/<prefix>": the parent of every pod's cgroup (exists once
  // a pod does). Socket programs attached here see exactly this bed's pods.
  const std::string& cgroupRoot() const { return cgroupRoot_; }

  // Creates the pod (netns, veth, addresses, routes, cgroup). A pod whose ip
  // is from this bed's block is dual stack: ip6Of(ip) as a /128 beside the
  // /32 (no DAD, static neighbours both ways, so it is usable at once). On
  // failure the half-made pod is removed again before the exception
  // propagates.
  Pod& addPod(const std::string& name, const std::string& ip);
  // Same, with the pod's cgroup under groupCgroup(group) instead of directly
  // under cgroupRoot(): several "nodes" on one machine, each agent's socket
  // programs attached to its node's group, see only that node's pods.
  Pod& addPod(const std::string& name, const std::string& ip, const std::string& group);
  // "<cgroupRoot()>/<group>": exists once a pod of the group does.
  std::string groupCgroup(const std::string& group) const { return cgroupRoot_ + "/" + group; }
  Pod& pod(const std::string& name);
  // Kills the pod's processes and removes its netns, veth and cgroup.
  void removePod(const std::string& name);

  // Starts argv inside the pod's netns and cgroup; stdout is captured.
  Proc spawn(Pod& pod, const std::vector<std::string>& argv);
  // Starts argv in the host (root) netns.
  Proc spawn(const std::vector<std::string>& argv);
  // Starts argv in the host netns inside groupCgroup(group) (made if
  // missing): a host process that socket programs attached at cgroupRoot()
  // see, as they see a node agent under the cgroup2 root.
  Proc spawnInGroup(const std::string& group, const std::vector<std::string>& argv);

  // A veth pair "<prefix>v<n>" / "<prefix>w<n>" in the host netns, the first
  // holding `cidr` and up: an address of the node that is not on a real
  // interface (as a pod's host side or kube-ipvs0 may hold one; not every
  // kernel has dummy devices). Removed with the bed. Returns its name.
  std::string addHostVeth(const std::string& cidr);
  RunResult run(Pod& pod, const std::vector<std::string>& argv, int timeout_ms);
  RunResult run(const std::vector<std::string>& argv, int timeout_ms);

 private:
  Proc start(Pod* pod, const std::string& cgroup, const std::vector<std::string>& argv);
  std::string makeGroup(const std::string& group);  // groupCgroup(group), created
  std::string subnet6Of() const;
  void addIpv6(const Pod& pod, const std::string& hostMac);
  void cleanupPod(const Pod& pod);  // best effort, ignores "already gone"
  void killProcs(const Pod* pod);   // nullptr = all

  std::string prefix_;
  std::string cgroupRoot_;  // "<cgroup2 mount>/<prefix>"
  int subnet_ = 0;
  int nextHost_ = 0;
  int nextIf_ = 0;
  bool ipv6_ = false;                  // the /64 twin of the block is claimed
  bool forceForwarding_ = false;       // per-interface IPv6 forwarding (Linux 6.17+)
  std::vector<std::string> hostVeths_;
  std::vector<std::unique_ptr<Pod>> pods_;
  std::vector<std::string> groups_;  // cgroup directories made by addPod(..., group)
  // Tests spawn from background threads too (probes while the agent restarts).
  std::mutex procs_mu_;
  std::vector<std::shared_ptr<Proc::State>> procs_;
};

}  // namespace smik::testbed
