#include "tests/testbed/testbed.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>
#include "tests/testbed/internal.h"

namespace fs = std::filesystem;

namespace smik::testbed {
namespace {

constexpr const char* kGateway = "169.254.1.1";  // link-local pod gateway
constexpr const char* kGateway6 = "fe80::1";      // the same for IPv6
constexpr const char* kBlock6 = "fd73:6d6b:240:";  // + X + "::n": IPv6 twins of 10.240.X.n

}  // namespace

using namespace detail;

// ---------------------------------------------------------------- TestBed

TestBed::TestBed() {
  static int instance = 0;
  // One letter g..z per bed: not a hex digit, so "<runPrefix><letter><n>"
  // can never equal another bed's name.
  prefix_ = runPrefix() + static_cast<char>('g' + instance++ % 20);
  cgroupRoot_ = cgroup2Mount() + "/" + prefix_;
  ipTool();  // fail early, before touching anything

  acquireForwarding(prefix_);

  // Claim a 10.240.X.0/24 no one routes yet with a blackhole route (as
  // Calico does for its IPAM blocks): the pods' /32 routes are more specific,
  // and traffic to a removed or never-created pod address is dropped here
  // instead of leaving the machine through the default route. "route add"
  // fails if a parallel run claimed the same block first.
  unsigned start = static_cast<unsigned>(std::hash<std::string>{}(prefix_) % 254);
  for (unsigned i = 0; i < 254 && subnet_ == 0; ++i) {
    int x = static_cast<int>((start + i) % 254) + 1;
    std::string net = "10.240." + std::to_string(x) + ".0/24";
    try {
      if (!trim(command(ipCmd({"-4", "route", "show", "root", net}))).empty()) continue;
      command(ipCmd({"route", "add", "blackhole", net}));
      subnet_ = x;
      recordRoute(prefix_, "route4", net);
    } catch (const std::exception&) {
    }
  }
  if (subnet_ == 0) {
    try { releaseForwarding(prefix_); } catch (...) {}
    throw std::runtime_error("TestBed: no free 10.240.X.0/24 block");
  }
  // The block's IPv6 twin, claimed the same way; no IPv6 (disabled, or the
  // /64 taken): v4-only pods, and IPv6 tests skip.
  forceForwarding_ = perInterfaceForwarding();
  ipv6_ = ipv6Available() &&
          trim(command(ipCmd({"-6", "route", "show", "root", subnet6Of()}))).empty() &&
          tryCommand(ipCmd({"-6", "route", "add", "blackhole", subnet6Of()}));
  if (ipv6_) recordRoute(prefix_, "route6", subnet6Of());
}

std::string TestBed::subnet6Of() const {
  return kBlock6 + std::to_string(subnet_) + "::/64";
}

TestBed::~TestBed() {
  // Never throws: every step is best effort and ignores "already gone".
  try {
    killProcs(nullptr);
    for (const auto& p : pods_) cleanupPod(*p);
    pods_.clear();
    for (const auto& g : groups_) removeCgroup(g);
    removeCgroup(cgroupRoot_);
    for (const auto& v : hostVeths_) tryCommand(ipCmd({"link", "del", v}));  // both ends
    tryCommand(ipCmd({"route", "del", "blackhole", subnetCidr()}));
    if (ipv6_) tryCommand(ipCmd({"-6", "route", "del", "blackhole", subnet6Of()}));
  } catch (...) {
  }
  try {
    releaseForwarding(prefix_);
  } catch (...) {
  }
}

std::string TestBed::subnetCidr() const {
  return "10.240." + std::to_string(subnet_) + ".0/24";
}

std::string TestBed::subnet6Cidr() const { return ipv6_ ? subnet6Of() : ""; }

std::string TestBed::ip6Of(const std::string& ip) const {
  std::string block = "10.240." + std::to_string(subnet_) + ".";
  if (!ipv6_ || ip.rfind(block, 0) != 0) return "";
  return kBlock6 + std::to_string(subnet_) + "::" + ip.substr(block.size());
}

std::string TestBed::nextIp() {
  if (nextHost_ >= 254) throw std::runtime_error("nextIp: subnet exhausted");
  return "10.240." + std::to_string(subnet_) + "." + std::to_string(++nextHost_);
}

Pod& TestBed::addPod(const std::string& name, const std::string& ip) {
  return addPod(name, ip, "");
}

Pod& TestBed::addPod(const std::string& name, const std::string& ip, const std::string& group) {
  if (name.empty() || name.find('/') != std::string::npos)
    throw std::invalid_argument("addPod: bad pod name '" + name + "'");
  if (group.find('/') != std::string::npos || group == "." || group == "..")
    throw std::invalid_argument("addPod: bad group name '" + group + "'");
  for (const auto& p : pods_)
    if (p->name_ == name) throw std::invalid_argument("addPod: pod '" + name + "' exists");

  auto pod = std::make_unique<Pod>();
  pod->name_ = name;
  pod->netns_ = prefix_ + "-" + name;
  pod->ip_ = ip;
  pod->ip6_ = ip6Of(ip);
  pod->hostIf_ = prefix_ + std::to_string(++nextIf_);
  const std::string parent = group.empty() ? cgroupRoot_ : groupCgroup(group);
  pod->cgroupPath_ = parent + "/" + name;
  if (pod->hostIf_.size() >= IFNAMSIZ)
    throw std::runtime_error("interface name too long: " + pod->hostIf_);

  try {
    // cgroup first: a test may attach to it before anything runs there.
    ::mkdir(cgroupRoot_.c_str(), 0755);  // may exist already
    if (!group.empty() && ::mkdir(parent.c_str(), 0755) == 0) groups_.push_back(parent);
    if (::mkdir(pod->cgroupPath_.c_str(), 0755) != 0)
      throw std::runtime_error(errnoText("mkdir " + pod->cgroupPath_));

    const std::string& ns = pod->netns_;
    const std::string& host = pod->hostIf_;
    command(ipCmd({"netns", "add", ns}));
    // The peer is created directly inside the netns as eth0.
    command(ipCmd({"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns}));
    command(ipCmd({"-n", ns, "link", "set", "lo", "up"}));
    command(ipCmd({"-n", ns, "addr", "add", ip + "/32", "dev", "eth0"}));
    command(ipCmd({"-n", ns, "link", "set", "eth0", "up"}));
    command(ipCmd({"-n", ns, "route", "add", "default", "via", kGateway, "dev", "eth0", "onlink"}));

    // Host end: answer ARP for the gateway (proxy_arp) without the default
    // ~0.8 s proxy delay, then route the pod's /32 to it.
    writeFile("/proc/sys/net/ipv4/conf/" + host + "/proxy_arp", "1");
    writeFile("/proc/sys/net/ipv4/neigh/" + host + "/proxy_delay", "0");
    command(ipCmd({"link", "set", host, "up"}));
    command(ipCmd({"route", "add", ip + "/32", "dev", host}));

    // proxy_arp only answers if the host has a route to 169.254.1.1 (its
    // default route); a permanent neighbour entry makes the pod independent
    // of the host's routing table (e.g. an isolated CI runner).
    std::string mac = trim(readFile("/sys/class/net/" + host + "/address"));
    command(ipCmd({"-n", ns, "neigh", "replace", kGateway, "lladdr", mac, "dev", "eth0",
                   "nud", "permanent"}));

    if (!pod->ip6_.empty()) addIpv6(*pod, mac);

    pod->hostIfIndex_ = static_cast<int>(if_nametoindex(host.c_str()));
    if (pod->hostIfIndex_ == 0) throw std::runtime_error(errnoText("if_nametoindex " + host));
  } catch (...) {
    cleanupPod(*pod);
    if (pods_.empty()) {
      for (const auto& g : groups_) removeCgroup(g);
      groups_.clear();
      removeCgroup(cgroupRoot_);
    }
    throw;
  }
  pods_.push_back(std::move(pod));
  return *pods_.back();
}

// The /128 beside the /32. No DAD (the address is usable at once) and
// permanent neighbours both ways: no neighbour discovery to wait for, as the
// permanent ARP entry does for IPv4. The host forwards IPv6 arriving on the
// pod's veth (per interface where the kernel can).
void TestBed::addIpv6(const Pod& pod, const std::string& hostMac) {
  const std::string& ns = pod.netns_;
  const std::string& host = pod.hostIf_;
  command(ipCmd({"-n", ns, "addr", "add", pod.ip6_ + "/128", "dev", "eth0", "nodad"}));
  command(ipCmd({"-n", ns, "-6", "route", "add", "default", "via", kGateway6, "dev", "eth0"}));
  command(ipCmd({"-n", ns, "-6", "neigh", "replace", kGateway6, "lladdr", hostMac, "dev", "eth0",
                 "nud", "permanent"}));
  if (forceForwarding_) writeFile("/proc/sys/net/ipv6/conf/" + host + "/force_forwarding", "1");
  std::string link = command(ipCmd({"-n", ns, "-o", "link", "show", "dev", "eth0"}));
  auto at = link.find("link/ether ");
  if (at == std::string::npos) throw std::runtime_error("no MAC address on eth0 of " + ns);
  std::string podMac = link.substr(at + 11, 17);
  command(ipCmd({"-6", "route", "add", pod.ip6_ + "/128", "dev", host}));
  command(ipCmd({"-6", "neigh", "replace", pod.ip6_, "lladdr", podMac, "dev", host, "nud",
                 "permanent"}));
}

std::string TestBed::makeGroup(const std::string& group) {
  if (group.empty() || group.find('/') != std::string::npos || group == "." || group == "..")
    throw std::invalid_argument("bad group name '" + group + "'");
  std::string path = groupCgroup(group);
  ::mkdir(cgroupRoot_.c_str(), 0755);  // may exist already
  if (::mkdir(path.c_str(), 0755) == 0) {
    groups_.push_back(path);
  } else if (errno != EEXIST) {
    throw std::runtime_error(errnoText("mkdir " + path));
  }
  return path;
}

std::string TestBed::addHostVeth(const std::string& cidr) {
  std::string n = std::to_string(hostVeths_.size() + 1);
  std::string name = prefix_ + "v" + n, peer = prefix_ + "w" + n;
  if (peer.size() >= IFNAMSIZ) throw std::runtime_error("interface name too long: " + peer);
  hostVeths_.push_back(name);  // before creating it: removed even if a later step fails
  command(ipCmd({"link", "add", name, "type", "veth", "peer", "name", peer}));
  std::vector<std::string> add = ipCmd({"addr", "add", cidr, "dev", name});
  if (cidr.find(':') != std::string::npos) add.push_back("nodad");  // usable at once
  command(add);
  command(ipCmd({"link", "set", name, "up"}));
  command(ipCmd({"link", "set", peer, "up"}));
  return name;
}

Pod& TestBed::pod(const std::string& name) {
  for (const auto& p : pods_)
    if (p->name_ == name) return *p;
  throw std::out_of_range("no pod '" + name + "'");
}

void TestBed::removePod(const std::string& name) {
  for (auto it = pods_.begin(); it != pods_.end(); ++it) {
    if ((*it)->name_ == name) {
      cleanupPod(**it);
      pods_.erase(it);
      return;
    }
  }
  throw std::out_of_range("no pod '" + name + "'");
}

void TestBed::cleanupPod(const Pod& pod) {
  killProcs(&pod);
  // Deleting the host end removes both veth ends and the /32 route at once;
  // deleting only the netns would tear the pair down asynchronously.
  tryCommand(ipCmd({"link", "del", pod.hostIf_}));
  tryCommand(ipCmd({"netns", "del", pod.netns_}));
  removeCgroup(pod.cgroupPath_);
}

void TestBed::killProcs(const Pod* pod) {
  std::lock_guard l(procs_mu_);
  for (auto& s : procs_)
    if (!pod || s->pod == pod->name_) s->killAndReap();
  std::erase_if(procs_, [](const auto& s) { return s->reaped.load(); });
}

Proc TestBed::start(Pod* pod, const std::string& cgroup, const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::invalid_argument("spawn: empty argv");
  // Everything the child needs is prepared before fork(): after fork only
  // async-signal-safe calls.
  UniqueFd ns, cg;
  if (pod) {
    std::string nsPath = "/var/run/netns/" + pod->netns_;
    ns.reset(::open(nsPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) throw std::runtime_error(errnoText("open " + nsPath));
  }
  if (!cgroup.empty()) {
    std::string procs = cgroup + "/cgroup.procs";
    cg.reset(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!cg) throw std::runtime_error(errnoText("open " + procs));
  }
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  // err: the child reports a failed setup step as {step, errno}; a clean
  // exec closes it (CLOEXEC) and the parent reads EOF.
  Pipe out = makePipe(), err = makePipe();
  auto args = cArgv(argv);
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(errnoText("fork"));
  if (pid == 0) {
    auto fail = [&](int step) {
      int msg[2] = {step, errno};
      (void)!::write(err.write.get(), msg, sizeof msg);
      ::_exit(127);
    };
    // If the test process is SIGKILLed no destructor runs: let the kernel
    // kill our children then, so a crashed run leaves no servers behind.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(5);
    if (::getppid() != parent) ::_exit(127);  // parent died before prctl
    if (cg) {
      char buf[16];
      int n = 0;
      char rev[16];
      for (unsigned v = static_cast<unsigned>(::getpid()); v; v /= 10)
        rev[n++] = char('0' + v % 10);
      for (int i = 0; i < n; ++i) buf[i] = rev[n - 1 - i];
      if (::write(cg.get(), buf, static_cast<size_t>(n)) != n) fail(1);
    }
    if (ns && ::setns(ns.get(), CLONE_NEWNET) != 0) fail(2);
    if (devnull) ::dup2(devnull.get(), 0);
    if (::dup2(out.write.get(), 1) < 0) fail(3);
    ::execvp(args[0], args.data());
    fail(4);
  }
  // Only the child holds the write ends now: EOF on err is its exec.
  out.write.reset();
  err.write.reset();
  int msg[2] = {0, 0};
  ssize_t n;
  while ((n = ::read(err.read.get(), msg, sizeof msg)) < 0 && errno == EINTR) {}
  if (n > 0) {
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    static const char* steps[] = {"", "join cgroup", "setns", "dup2", "execvp", "prctl"};
    int step = msg[0] >= 1 && msg[0] <= 5 ? msg[0] : 0;
    throw std::runtime_error("spawn " + joinArgv(argv) + ": " + steps[step] + ": " +
                             std::strerror(msg[1]));
  }

  auto s = std::make_shared<Proc::State>();
  s->pid = pid;
  s->pod = pod ? pod->name_ : "";
  s->fd = std::move(out.read);
  ::fcntl(s->fd.get(), F_SETFL, O_NONBLOCK);
  std::lock_guard l(procs_mu_);
  std::erase_if(procs_, [](const auto& p) { return p->reaped.load(); });
  procs_.push_back(s);
  return Proc(s);
}

Proc TestBed::spawn(Pod& pod, const std::vector<std::string>& argv) {
  return start(&pod, pod.cgroupPath_, argv);
}
Proc TestBed::spawn(const std::vector<std::string>& argv) { return start(nullptr, "", argv); }
Proc TestBed::spawnInGroup(const std::string& group, const std::vector<std::string>& argv) {
  return start(nullptr, makeGroup(group), argv);
}

RunResult TestBed::run(Pod& pod, const std::vector<std::string>& argv, int timeout_ms) {
  Proc p = spawn(pod, argv);
  RunResult r;
  r.status = p.wait(timeout_ms);
  if (r.status < 0) p.kill();
  r.output = p.output();
  return r;
}

RunResult TestBed::run(const std::vector<std::string>& argv, int timeout_ms) {
  Proc p = spawn(argv);
  RunResult r;
  r.status = p.wait(timeout_ms);
  if (r.status < 0) p.kill();
  r.output = p.output();
  return r;
}

}  // namespace smik::testbed
