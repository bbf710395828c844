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

namespace fs = std::filesystem;

namespace smik::testbed {
namespace {

constexpr const char* kGateway = "169.254.1.1";  // link-local pod gateway
constexpr const char* kGateway6 = "fe80::1";      // the same for IPv6
constexpr const char* kBlock6 = "fd73:6d6b:240:";  // + X + "::n": IPv6 twins of 10.240.X.n
constexpr int kCommandTimeoutMs = 10000;           // `ip` must never hang a test

std::string joinArgv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string errnoText(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::string readFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void writeFile(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(errnoText("open " + path));
  ssize_t n = ::write(fd, value.data(), value.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    errno = err;
    throw std::runtime_error(errnoText("write '" + value + "' to " + path));
  }
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Reads what is available from a non-blocking fd into buf; closes the fd
// (sets it to -1) at EOF.
void drainFd(int& fd, std::string& buf) {
  char tmp[4096];
  while (fd >= 0) {
    ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n > 0) {
      buf.append(tmp, static_cast<size_t>(n));
    } else if (n == 0) {
      ::close(fd);
      fd = -1;
    } else if (errno != EINTR) {
      return;  // EAGAIN: nothing more for now
    }
  }
}

int decodeStatus(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

std::vector<char*> cArgv(const std::vector<std::string>& argv) {
  std::vector<char*> v;
  for (const auto& a : argv) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  return v;
}

std::vector<std::string> ipCmd(std::initializer_list<std::string> args) {
  std::vector<std::string> v{ipTool()};
  v.insert(v.end(), args);
  return v;
}

// Removes a cgroup directory; retries briefly because a just-reaped task can
// keep it "busy" for a moment.
void removeCgroup(const std::string& path) {
  if (!fs::exists(path)) return;
  // Safety net for grandchildren we never saw: everything in a pod cgroup
  // was started by us. cgroup.kill exists since Linux 5.14.
  if (fs::exists(path + "/cgroup.kill")) {
    try { writeFile(path + "/cgroup.kill", "1"); } catch (...) {}
  }
  for (int i = 0; i < 100; ++i) {
    if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return;
    if (errno != EBUSY) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

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
    fd_ = ::open(lock.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error(errnoText("open " + lock));
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {}
  }
  ~StateLock() { ::close(fd_); }
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  int fd_;
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
    if (startsWith(e.path().filename().string(), prefix)) names.push_back(e.path().filename().string());
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
    if (!pid.empty() && procStart(static_cast<pid_t>(std::atoi(pid.c_str()))) == start && !start.empty()) {
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

}  // namespace

// ---------------------------------------------------------------- helpers

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

std::string cgroup2Mount() {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    // "<id> <parent> <maj:min> <root> <mountpoint> <opts> [optional...] - <fstype> ..."
    std::istringstream ss(line);
    std::string id, parent, dev, root, mnt, tok;
    ss >> id >> parent >> dev >> root >> mnt;
    while (ss >> tok && tok != "-") {}
    std::string fstype;
    ss >> fstype;
    if (fstype == "cgroup2") return mnt;
  }
  throw std::runtime_error("cgroup2 is not mounted (see /proc/self/mountinfo)");
}

std::string ipTool() {
  static const std::string path = [] {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip"})
      if (::access(p, X_OK) == 0) return std::string(p);
    if (const char* env = ::getenv("PATH")) {
      std::istringstream ss(env);
      std::string dir;
      while (std::getline(ss, dir, ':')) {
        std::string p = dir + "/ip";
        if (!dir.empty() && ::access(p.c_str(), X_OK) == 0) return p;
      }
    }
    return std::string();
  }();
  if (path.empty()) throw std::runtime_error("iproute2 `ip` not found (/usr/sbin/ip, /sbin/ip, PATH)");
  return path;
}

namespace {
// fork/execvp argv with stdout and stderr captured; returns the exit status.
int runCaptured(const std::vector<std::string>& argv, std::string& out, std::string& err) {
  int po[2], pe[2];
  if (::pipe2(po, O_CLOEXEC) != 0) throw std::runtime_error(errnoText("pipe"));
  if (::pipe2(pe, O_CLOEXEC) != 0) {
    ::close(po[0]); ::close(po[1]);
    throw std::runtime_error(errnoText("pipe"));
  }
  auto args = cArgv(argv);
  pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {po[0], po[1], pe[0], pe[1]}) ::close(fd);
    throw std::runtime_error(errnoText("fork"));
  }
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(po[1], 1);
    ::dup2(pe[1], 2);
    ::execvp(args[0], args.data());
    const char msg[] = "execvp failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(po[1]);
  ::close(pe[1]);
  int fo = po[0], fe = pe[0];
  ::fcntl(fo, F_SETFL, O_NONBLOCK);
  ::fcntl(fe, F_SETFL, O_NONBLOCK);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kCommandTimeoutMs);
  while (fo >= 0 || fe >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    struct pollfd pfd[2] = {{fo, POLLIN, 0}, {fe, POLLIN, 0}};
    ::poll(pfd, 2, static_cast<int>(left));
    drainFd(fo, out);
    drainFd(fe, err);
  }
  if (fo >= 0) ::close(fo);
  if (fe >= 0) ::close(fe);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  return decodeStatus(st);
}
}  // namespace

std::string command(const std::vector<std::string>& argv) {
  std::string out, err;
  int st = runCaptured(argv, out, err);
  if (st != 0)
    throw std::runtime_error("command failed (status " + std::to_string(st) + "): " +
                             joinArgv(argv) + ": " + trim(err));
  return out;
}

bool tryCommand(const std::vector<std::string>& argv) {
  try {
    std::string out, err;
    return runCaptured(argv, out, err) == 0;
  } catch (...) {
    return false;
  }
}

// ---------------------------------------------------------------- Proc

struct Proc::State {
  pid_t pid = -1;
  std::string pod;  // empty: host netns
  int fd = -1;      // read end of the child's stdout, non-blocking
  std::string buf;
  std::atomic<bool> reaped{false};  // read by spawns on other threads (pruning procs_)
  int status = -1;

  bool tryReap(bool block) {
    if (reaped) return true;
    int st = 0;
    pid_t r;
    while ((r = ::waitpid(pid, &st, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {}
    if (r == pid || (r < 0 && errno == ECHILD)) {
      reaped = true;
      status = r == pid ? decodeStatus(st) : -1;
      drainFd(fd, buf);  // the child is gone: what it wrote is in the pipe
      if (fd >= 0) { ::close(fd); fd = -1; }
    }
    return reaped;
  }
  void killAndReap() {
    if (reaped) return;
    ::kill(pid, SIGKILL);  // by PID; not reaped yet, so the PID is still ours
    tryReap(true);
  }
  // Waits up to ms for output or exit.
  void pollOnce(int ms) {
    if (fd >= 0) {
      struct pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, ms);
      drainFd(fd, buf);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
  }
  ~State() {
    killAndReap();
    if (fd >= 0) ::close(fd);
  }
};

Proc::Proc(std::shared_ptr<State> s) : s_(std::move(s)) {}
Proc::Proc(Proc&&) noexcept = default;
Proc& Proc::operator=(Proc&& o) noexcept {
  if (this != &o) {
    if (s_) s_->killAndReap();
    s_ = std::move(o.s_);
  }
  return *this;
}
Proc::~Proc() {
  if (s_) s_->killAndReap();
}

pid_t Proc::pid() const { return s_ ? s_->pid : -1; }

int Proc::wait(int timeout_ms) {
  if (!s_) return -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!s_->tryReap(false)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return -1;
    s_->pollOnce(static_cast<int>(std::min<long long>(left, 10)));
  }
  return s_->status;
}

std::string Proc::output() {
  if (!s_) return {};
  drainFd(s_->fd, s_->buf);
  return s_->buf;
}

bool Proc::waitFor(const std::string& needle, int timeout_ms) {
  if (!s_) return false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    drainFd(s_->fd, s_->buf);
    if (s_->buf.find(needle) != std::string::npos) return true;
    if (s_->tryReap(false)) return s_->buf.find(needle) != std::string::npos;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    s_->pollOnce(static_cast<int>(std::min<long long>(left, 10)));
  }
}

int Proc::kill() {
  if (!s_) return -1;
  s_->killAndReap();
  return s_->status;
}

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
  ipv6_ = ipv6Available() && trim(command(ipCmd({"-6", "route", "show", "root", subnet6Of()}))).empty() &&
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
  struct Fds {
    int ns = -1, cg = -1, devnull = -1, out[2] = {-1, -1}, err[2] = {-1, -1};
    ~Fds() {
      for (int fd : {ns, cg, devnull, out[0], out[1], err[0], err[1]})
        if (fd >= 0) ::close(fd);
    }
  } f;
  if (pod) {
    std::string nsPath = "/var/run/netns/" + pod->netns_;
    f.ns = ::open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.ns < 0) throw std::runtime_error(errnoText("open " + nsPath));
  }
  if (!cgroup.empty()) {
    std::string procs = cgroup + "/cgroup.procs";
    f.cg = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (f.cg < 0) throw std::runtime_error(errnoText("open " + procs));
  }
  f.devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  // err: the child reports a failed setup step as {step, errno}; a clean
  // exec closes it (CLOEXEC) and the parent reads EOF.
  if (::pipe2(f.out, O_CLOEXEC) != 0 || ::pipe2(f.err, O_CLOEXEC) != 0)
    throw std::runtime_error(errnoText("pipe"));
  auto args = cArgv(argv);
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(errnoText("fork"));
  if (pid == 0) {
    auto fail = [&](int step) {
      int msg[2] = {step, errno};
      (void)!::write(f.err[1], msg, sizeof msg);
      ::_exit(127);
    };
    // If the test process is SIGKILLed no destructor runs: let the kernel
    // kill our children then, so a crashed run leaves no servers behind.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(5);
    if (::getppid() != parent) ::_exit(127);  // parent died before prctl
    if (f.cg >= 0) {
      char buf[16];
      int n = 0;
      char rev[16];
      for (unsigned v = static_cast<unsigned>(::getpid()); v; v /= 10) rev[n++] = char('0' + v % 10);
      for (int i = 0; i < n; ++i) buf[i] = rev[n - 1 - i];
      if (::write(f.cg, buf, static_cast<size_t>(n)) != n) fail(1);
    }
    if (f.ns >= 0 && ::setns(f.ns, CLONE_NEWNET) != 0) fail(2);
    if (f.devnull >= 0) ::dup2(f.devnull, 0);
    if (::dup2(f.out[1], 1) < 0) fail(3);
    ::execvp(args[0], args.data());
    fail(4);
  }
  ::close(f.out[1]);
  f.out[1] = -1;
  ::close(f.err[1]);
  f.err[1] = -1;
  int msg[2] = {0, 0};
  ssize_t n;
  while ((n = ::read(f.err[0], msg, sizeof msg)) < 0 && errno == EINTR) {}
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
  s->fd = f.out[0];
  f.out[0] = -1;
  ::fcntl(s->fd, F_SETFL, O_NONBLOCK);
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
