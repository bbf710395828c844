// What test beds share machine-wide, under /run/smik-testbed: who owns
// which prefix (pid and start time), net.ipv4.ip_forward, and the reaping of
// what beds of dead owners left behind (tests/testbed/README.md).
#include <net/if.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "tests/testbed/internal.h"

namespace fs = std::filesystem;

namespace smik::testbed {
namespace detail {

bool nameInUse(const std::string& prefix) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/var/run/netns", ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) return true;
  if (struct if_nameindex* ifs = if_nameindex()) {
    bool used = false;
    for (auto* i = ifs; i->if_index != 0; ++i)
      if (std::string(i->if_name).rfind(prefix, 0) == 0) used = true;
    if_freenameindex(ifs);
    if (used) return true;
  }
  try {
    return fs::exists(cgroup2Mount() + "/" + prefix);
  } catch (...) {
    return false;
  }
}

// ip_forward is machine-wide but test runs are parallel: the first live bed
// (in any process) saves the old value, the last one restores it. Each bed
// registers a marker "user.<pid>.<starttime>.<prefix>" in kStateDir under an
// flock; markers of dead processes (crashed runs) are dropped.
constexpr const char* kStateDir = "/run/smik-testbed";
constexpr const char* kIpForward = "/proc/sys/net/ipv4/ip_forward";
// IPv6 forwarding: per interface where the kernel has force_forwarding
// (6.17+), so nothing machine-wide changes; else the machine-wide switch,
// shared and restored like ip_forward.
constexpr const char* kIp6Forward = "/proc/sys/net/ipv6/conf/all/forwarding";
constexpr const char* kForceForwarding = "/proc/sys/net/ipv6/conf/all/force_forwarding";

bool ipv6Available() { return ::access(kIp6Forward, F_OK) == 0; }
bool perInterfaceForwarding() { return ::access(kForceForwarding, F_OK) == 0; }

// The machine-wide switches this bed turns on.
std::vector<std::string> forwardingSwitches() {
  std::vector<std::string> v{kIpForward};
  if (ipv6Available() && !perInterfaceForwarding()) v.push_back(kIp6Forward);
  return v;
}

// ".../ipv6/conf/all/forwarding" -> "<kStateDir>/ipv6.conf.all.forwarding.orig"
std::string origFile(const std::string& sysctl) {
  std::string name = sysctl.substr(std::string("/proc/sys/net/").size());
  std::replace(name.begin(), name.end(), '/', '.');
  return std::string(kStateDir) + "/" + (sysctl == kIpForward ? "ip_forward" : name) + ".orig";
}

// Start time of a process (field 22 of /proc/PID/stat): tells a live owner
// from a reused PID. Empty if the process is gone.
std::string procStart(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return "";
  std::istringstream ss(stat.substr(paren + 1));
  std::string tok;
  for (int i = 0; i < 20 && ss >> tok; ++i) {}  // fields 3..22
  return tok;
}

class StateLock {
 public:
  StateLock() {
    ::mkdir(kStateDir, 0755);
    std::string lock = std::string(kStateDir) + "/lock";
    fd_.reset(::open(lock.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    if (!fd_) throw std::runtime_error(errnoText("open " + lock));
    while (::flock(fd_.get(), LOCK_EX) != 0 && errno == EINTR) {}
  }

 private:
  UniqueFd fd_;  // the lock is held while it is open
};

// ---- reaping what a dead run left behind
//
// A run killed without its destructors (a CTest timeout, Ctrl-C, a crash)
// leaves its prefixed names behind. Its marker survives too and names the
// prefix; the marker's lines "route4 CIDR" / "route6 CIDR" name the blackhole
// routes it claimed, which carry no prefix.

bool startsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

std::vector<std::string> entriesStartingWith(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (startsWith(e.path().filename().string(), prefix))
      names.push_back(e.path().filename().string());
  return names;
}

// Kills every process in the cgroup tree at dir (children first), so the
// tree can be removed and no server of a dead run keeps answering.
void killCgroupTree(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec)) killCgroupTree(e.path());
  std::ifstream procs(dir / "cgroup.procs");
  for (pid_t pid; procs >> pid;) ::kill(pid, SIGKILL);
}

void removeCgroupTree(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec)) removeCgroupTree(e.path());
  removeCgroup(dir.string());
}

void reapPrefix(const std::string& prefix, const std::string& record) {
  fs::path cgroup;
  try {
    cgroup = fs::path(cgroup2Mount()) / prefix;
  } catch (const std::exception&) {
  }
  if (!cgroup.empty()) killCgroupTree(cgroup);
  // Unpinning the last reference to a pinned cgroup link detaches it.
  for (const auto& pin : entriesStartingWith("/sys/fs/bpf", prefix)) {
    std::error_code ec;
    fs::remove_all(fs::path("/sys/fs/bpf") / pin, ec);
  }
  for (const auto& ns : entriesStartingWith("/var/run/netns", prefix + "-"))
    tryCommand(ipCmd({"netns", "del", ns}));
  if (struct if_nameindex* ifs = if_nameindex()) {
    std::vector<std::string> links;
    for (auto* i = ifs; i->if_index != 0; ++i)
      if (startsWith(i->if_name, prefix)) links.push_back(i->if_name);
    if_freenameindex(ifs);
    for (const auto& link : links) tryCommand(ipCmd({"link", "del", link}));
  }
  if (!cgroup.empty()) removeCgroupTree(cgroup);
  std::istringstream lines(record);
  for (std::string kind, cidr; lines >> kind >> cidr;)
    tryCommand(ipCmd({kind == "route6" ? "-6" : "-4", "route", "del", "blackhole", cidr}));
}

// Removes markers of dead processes, and what their beds left behind;
// returns the number of live ones.
int pruneUsers() {
  int live = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kStateDir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("user.", 0) != 0) continue;
    std::istringstream ss(n.substr(5));
    std::string pid, start, prefix;
    std::getline(ss, pid, '.');
    std::getline(ss, start, '.');
    std::getline(ss, prefix);
    if (!pid.empty() && procStart(static_cast<pid_t>(std::atoi(pid.c_str()))) == start &&
        !start.empty()) {
      ++live;
      continue;
    }
    if (!prefix.empty()) {
      std::ifstream record(e.path());
      reapPrefix(prefix, std::string(std::istreambuf_iterator<char>(record), {}));
    }
    fs::remove(e.path(), ec);
  }
  return live;
}

std::string userMarker(const std::string& prefix) {
  return std::string(kStateDir) + "/user." + std::to_string(::getpid()) + "." +
         procStart(::getpid()) + "." + prefix;
}

void acquireForwarding(const std::string& prefix) {
  StateLock lock;
  bool first = pruneUsers() == 0;
  for (const auto& sw : forwardingSwitches()) {
    std::string orig = origFile(sw);
    // An orig file without live users was left by a crashed run: it still
    // holds the value from before that run, so keep it.
    if (first && !fs::exists(orig)) std::ofstream(orig) << trim(readFile(sw));
  }
  std::ofstream(userMarker(prefix)).flush();
  // Pods reach each other through the host's routing (as with Calico).
  for (const auto& sw : forwardingSwitches()) writeFile(sw, "1");
}

// Adds a blackhole route this bed claimed to its marker, for reapPrefix().
void recordRoute(const std::string& prefix, const std::string& kind, const std::string& cidr) {
  std::ofstream(userMarker(prefix), std::ios::app) << kind << " " << cidr << "\n";
}

void releaseForwarding(const std::string& prefix) {
  StateLock lock;
  std::error_code ec;
  fs::remove(userMarker(prefix), ec);
  if (pruneUsers() != 0) return;
  for (const auto& sw : forwardingSwitches()) {
    std::string orig = origFile(sw);
    if (fs::exists(orig)) {
      std::string v = trim(readFile(orig));
      if (!v.empty()) writeFile(sw, v);
      fs::remove(orig, ec);
    }
  }
}

}  // namespace detail

using namespace detail;

int activeTestBeds() {
  StateLock lock;
  return pruneUsers();
}

std::string runPrefix() {
  static const std::string prefix = [] {
    struct timespec ts {};
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned h = static_cast<unsigned>(getpid()) * 2654435761u ^
                 static_cast<unsigned>(ts.tv_nsec) ^ static_cast<unsigned>(ts.tv_sec);
    // Re-roll if a crashed earlier run left something with this prefix.
    for (int i = 0; i < 64; ++i) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "sk%04x", (h >> 8 ^ h) & 0xffff);
      if (!nameInUse(buf)) return std::string(buf);
      h = h * 1103515245u + 12345u;
    }
    throw std::runtime_error("runPrefix: no unused prefix found");
  }();
  return prefix;
}


}  // namespace smik::testbed
