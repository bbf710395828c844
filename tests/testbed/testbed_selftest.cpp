// Self-test of the test bed: real namespaces, real sockets (needs root).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "agent/base/unique_fd.h"
#include "tests/testbed/testbed.h"

namespace fs = std::filesystem;
using namespace smik::testbed;
using smik::UniqueFd;

namespace {

const std::string kPeer = SMIK_TESTPEER;

#define REQUIRE_ROOT()                                                               \
  do {                                                                               \
    if (::geteuid() != 0)                                                            \
      GTEST_SKIP() << "\n*** SKIPPED: the test bed needs root (netns, veth, "     \
                      "cgroups). Run the kernel tests as root. ***\n";               \
  } while (0)

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool netnsExists(const std::string& name) { return fs::exists("/var/run/netns/" + name); }
bool linkExists(const std::string& name) { return fs::exists("/sys/class/net/" + name); }

// Names in the root netns / netns list / cgroup tree that start with p.
std::string leftovers(const std::string& p) {
  std::string found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/var/run/netns", ec))
    if (e.path().filename().string().rfind(p, 0) == 0)
      found += " netns:" + e.path().filename().string();
  for (const auto& e : fs::directory_iterator("/sys/class/net", ec))
    if (e.path().filename().string().rfind(p, 0) == 0)
      found += " link:" + e.path().filename().string();
  for (const auto& e : fs::directory_iterator(cgroup2Mount(), ec))
    if (e.path().filename().string().rfind(p, 0) == 0) found += " cgroup:" + e.path().string();
  return found;
}

class TestBedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_ROOT();
    ASSERT_EQ(::access(kPeer.c_str(), X_OK), 0) << "smik-testpeer not found at " << kPeer;
    bed.emplace();
    a = &bed->addPod("a", bed->nextIp());
    b = &bed->addPod("b", bed->nextIp());
    server.emplace(bed->spawn(*b, {kPeer, "serve", "--tcp", "8080", "--udp", "8081", "--id", "b"}));
    ASSERT_TRUE(server->waitFor("ready\n", 2000)) << server->output();
  }
  void TearDown() override {
    server.reset();
    bed.reset();
  }
  std::optional<TestBed> bed;
  Pod* a = nullptr;
  Pod* b = nullptr;
  std::optional<Proc> server;
};

TEST_F(TestBedTest, PodShape) {
  EXPECT_EQ(a->netns(), bed->prefix() + "-a");
  EXPECT_EQ(a->hostIf().rfind(runPrefix(), 0), 0u);
  EXPECT_LT(a->hostIf().size(), 16u);
  EXPECT_GT(a->hostIfIndex(), 0);
  EXPECT_TRUE(netnsExists(a->netns()));
  EXPECT_TRUE(linkExists(a->hostIf()));
  EXPECT_TRUE(fs::is_directory(a->cgroupPath()));
  EXPECT_EQ(a->cgroupPath(), cgroup2Mount() + "/" + bed->prefix() + "/a");
  EXPECT_EQ(slurp("/proc/sys/net/ipv4/ip_forward"), "1\n");
  EXPECT_EQ(slurp("/proc/sys/net/ipv4/conf/" + a->hostIf() + "/proxy_arp"), "1\n");
  // eth0 inside the pod carries the /32 address.
  RunResult r = bed->run(*a, {ipTool(), "-4", "-o", "addr", "show", "dev", "eth0"}, 2000);
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find(a->ip() + "/32"), std::string::npos) << r.output;
}

// Dual stack: the /128 twin of the /32 works at once (no DAD, no neighbour
// discovery to wait for), pod to pod and host to pod, TCP and UDP.
TEST_F(TestBedTest, DualStackPods) {
  if (bed->subnet6Cidr().empty()) GTEST_SKIP() << "no IPv6 on this machine";
  ASSERT_FALSE(a->ip6().empty());
  EXPECT_EQ(a->ip6(), bed->ip6Of(a->ip()));
  EXPECT_NE(a->ip6(), b->ip6());
  EXPECT_EQ(bed->ip6Of("192.0.2.1"), "") << "only the bed's own block has twins";
  RunResult r = bed->run(*a, {ipTool(), "-6", "-o", "addr", "show", "dev", "eth0"}, 2000);
  auto at = r.output.find(a->ip6() + "/128");
  ASSERT_NE(at, std::string::npos) << r.output;
  std::string line = r.output.substr(at, r.output.find('\n', at) - at);
  EXPECT_EQ(line.find("tentative"), std::string::npos) << line;
  RunResult t = bed->run(*a, {kPeer, "tcp", b->ip6(), "8080", "--count", "2"}, 3000);
  EXPECT_EQ(t.output, "ok b\nok b\n");
  RunResult u = bed->run(*a, {kPeer, "udp", b->ip6(), "8081"}, 3000);
  EXPECT_EQ(u.output, "ok b\n");
  RunResult h = bed->run({kPeer, "tcp", b->ip6(), "8080"}, 3000);
  EXPECT_EQ(h.output, "ok b\n");
}

// A host process in a group cgroup: host netns, but under cgroupRoot().
TEST_F(TestBedTest, SpawnInGroupRunsOnTheHostInThatCgroup) {
  Proc p = bed->spawnInGroup("agent", {"sleep", "5"});
  EXPECT_NE(slurp(bed->groupCgroup("agent") + "/cgroup.procs").find(std::to_string(p.pid())),
            std::string::npos);
  RunResult t = bed->run({kPeer, "tcp", b->ip(), "8080"}, 3000);
  EXPECT_EQ(t.output, "ok b\n");
  EXPECT_THROW(bed->spawnInGroup("../x", {"true"}), std::invalid_argument);
}

TEST_F(TestBedTest, ProcessesRunInPodCgroup) {
  std::string procs = slurp(b->cgroupPath() + "/cgroup.procs");
  EXPECT_NE(procs.find(std::to_string(server->pid()) + "\n"), std::string::npos) << procs;
}

TEST_F(TestBedTest, PodToPodTcpAndUdp) {
  RunResult t = bed->run(*a, {kPeer, "tcp", b->ip(), "8080", "--count", "3"}, 3000);
  EXPECT_EQ(t.status, 0) << t.output;
  EXPECT_EQ(t.output, "ok b\nok b\nok b\n");
  RunResult u = bed->run(*a, {kPeer, "udp", b->ip(), "8081"}, 3000);
  EXPECT_EQ(u.status, 0) << u.output;
  EXPECT_EQ(u.output, "ok b\n");
}

TEST_F(TestBedTest, HostToPod) {
  RunResult t = bed->run({kPeer, "tcp", b->ip(), "8080"}, 3000);
  EXPECT_EQ(t.status, 0) << t.output;
  EXPECT_EQ(t.output, "ok b\n");
}

TEST_F(TestBedTest, ClosedPortIsRefused) {
  RunResult t = bed->run(*a, {kPeer, "tcp", b->ip(), "8099"}, 3000);
  EXPECT_EQ(t.status, 1);
  EXPECT_EQ(t.output, "refused\n");
  RunResult u = bed->run(*a, {kPeer, "udp", b->ip(), "8099"}, 3000);
  EXPECT_EQ(u.status, 1);
  EXPECT_EQ(u.output, "refused\n");
}

TEST_F(TestBedTest, HoldKeepsConnection) {
  RunResult h = bed->run(*a, {kPeer, "hold", b->ip(), "8080", "--seconds", "0.5"}, 3000);
  EXPECT_EQ(h.status, 0) << h.output;
  EXPECT_EQ(h.output.rfind("ok ", 0), 0u) << h.output;
  EXPECT_GE(std::stoi(h.output.substr(3)), 5) << h.output;
}

TEST_F(TestBedTest, HoldReportsBrokenConnection) {
  Proc h = bed->spawn(*a, {kPeer, "hold", b->ip(), "8080", "--seconds", "5"});
  ASSERT_EQ(h.wait(300), -1);  // still holding
  server->kill();              // the peer goes away: next exchange fails
  EXPECT_EQ(h.wait(3000), 1);
  EXPECT_EQ(h.output().rfind("broken after ", 0), 0u) << h.output();
}

TEST_F(TestBedTest, RunTimesOut) {
  RunResult r = bed->run(*a, {"sleep", "5"}, 100);
  EXPECT_EQ(r.status, -1);
}

TEST_F(TestBedTest, SpawnFailureThrows) {
  EXPECT_THROW(bed->spawn(*a, {"/nonexistent/smik-binary"}), std::runtime_error);
}

TEST_F(TestBedTest, RemovePodRemovesEverything) {
  std::string ns = b->netns(), hostIf = b->hostIf(), cg = b->cgroupPath(), ip = b->ip();
  pid_t pid = server->pid();
  bed->removePod("b");
  EXPECT_FALSE(netnsExists(ns));
  EXPECT_FALSE(linkExists(hostIf));
  EXPECT_FALSE(fs::exists(cg));
  EXPECT_NE(::kill(pid, 0), 0) << "server process survived removePod";
  EXPECT_EQ(command({ipTool(), "-4", "route", "show", ip + "/32"}), "");
  EXPECT_THROW(bed->pod("b"), std::out_of_range);
  // The removed address is unreachable (dropped by the bed's blackhole
  // route, never sent off the machine).
  RunResult t = bed->run(*a, {kPeer, "tcp", ip, "8080", "--timeout-ms", "200"}, 3000);
  EXPECT_EQ(t.output, "timeout\n");
}

TEST_F(TestBedTest, FailedAddPodLeavesNothing) {
  // Same IP twice: the host /32 route fails, after netns/veth/cgroup exist.
  EXPECT_THROW(bed->addPod("dup", b->ip()), std::runtime_error);
  EXPECT_FALSE(netnsExists(bed->prefix() + "-dup"));
  EXPECT_FALSE(fs::exists(cgroup2Mount() + "/" + bed->prefix() + "/dup"));
  EXPECT_EQ(leftovers(bed->prefix() + "3"), "");  // the third veth
  EXPECT_THROW(bed->addPod("a", bed->nextIp()), std::invalid_argument);
}

// Two "nodes" on one machine: each group's pods share a parent cgroup (what
// one agent's socket programs attach to), and the bed removes the groups too.
TEST(TestBedGroups, PodsOfAGroupShareAParentCgroup) {
  REQUIRE_ROOT();
  std::string prefix, group_a;
  {
    TestBed bed;
    prefix = bed.prefix();
    Pod& x = bed.addPod("x", bed.nextIp(), "node-a");
    Pod& y = bed.addPod("y", bed.nextIp(), "node-a");
    Pod& z = bed.addPod("z", bed.nextIp(), "node-b");
    group_a = bed.groupCgroup("node-a");
    EXPECT_EQ(group_a, bed.cgroupRoot() + "/node-a");
    EXPECT_EQ(x.cgroupPath(), group_a + "/x");
    EXPECT_EQ(y.cgroupPath(), group_a + "/y");
    EXPECT_EQ(z.cgroupPath(), bed.groupCgroup("node-b") + "/z");
    Proc server = bed.spawn(z, {kPeer, "serve", "--tcp", "8080", "--id", "z"});
    ASSERT_TRUE(server.waitFor("ready\n", 2000));
    EXPECT_NE(slurp(z.cgroupPath() + "/cgroup.procs").find(std::to_string(server.pid())),
              std::string::npos);
    RunResult t = bed.run(x, {kPeer, "tcp", z.ip(), "8080"}, 3000);
    EXPECT_EQ(t.output, "ok z\n");
    EXPECT_THROW(bed.addPod("w", bed.nextIp(), "../escape"), std::invalid_argument);
    // A failed pod keeps its group while the group has other pods.
    EXPECT_THROW(bed.addPod("dup", x.ip(), "node-a"), std::runtime_error);
    EXPECT_TRUE(fs::is_directory(group_a));
    EXPECT_TRUE(fs::is_directory(x.cgroupPath()));
  }
  EXPECT_FALSE(fs::exists(group_a));
  EXPECT_EQ(leftovers(prefix), "");
}

TEST(TestBedCleanup, DestroyedBedLeavesNothing) {
  REQUIRE_ROOT();
  // ip_forward is restored by the last bed on the machine; only check it
  // when no parallel run holds a bed before or after ours.
  bool alone = activeTestBeds() == 0;
  std::string fwdBefore = slurp("/proc/sys/net/ipv4/ip_forward");
  std::string prefix;
  pid_t pid;
  std::optional<Proc> outlives;  // a Proc the test forgot to stop in time
  std::string subnet, subnet6;
  {
    TestBed bed;
    prefix = bed.prefix();
    subnet = bed.subnetCidr();
    subnet6 = bed.subnet6Cidr();
    Pod& p = bed.addPod("x", bed.nextIp());
    EXPECT_EQ(bed.addHostVeth(bed.nextIp() + "/32"), prefix + "v1");
    bed.spawnInGroup("host", {"sleep", "30"});
    bed.addPod("y", bed.nextIp());
    Proc server = bed.spawn(p, {kPeer, "serve", "--tcp", "8080"});
    ASSERT_TRUE(server.waitFor("ready\n", 2000));
    pid = server.pid();
    outlives.emplace(bed.spawn(p, {"sleep", "30"}));
    EXPECT_NE(leftovers(prefix), "");
  }
  // The bed killed and reaped the process although its Proc still exists.
  EXPECT_NE(::kill(outlives->pid(), 0), 0);
  EXPECT_EQ(outlives->wait(0), 128 + SIGKILL);
  EXPECT_EQ(command({ipTool(), "-4", "route", "show", "root", subnet}), "");
  if (!subnet6.empty()) {
    EXPECT_EQ(command({ipTool(), "-6", "route", "show", "root", subnet6}), "");
  }
  EXPECT_EQ(leftovers(prefix), "");
  EXPECT_EQ(leftovers(runPrefix()), "");
  EXPECT_NE(::kill(pid, 0), 0);
  if (alone && activeTestBeds() == 0) {
    EXPECT_EQ(slurp("/proc/sys/net/ipv4/ip_forward"), fwdBefore);
  }
}

// What a run that died without its destructors left behind, as its child
// process reported it before it SIGKILLed itself.
struct DeadRun {
  std::string prefix, subnet, subnet6, pin;
  pid_t orphan = 0;  // a pod process that outlived its parent
};

// Forks a child that builds a bed (a pod with a process that escaped
// PR_SET_PDEATHSIG, a host veth, a pin directory under the bed's prefix)
// and dies by SIGKILL, as a run killed by a CTest timeout does.
DeadRun killRunMidway() {
  int fds[2];
  // CLOEXEC: the processes the child's bed starts must not hold the write
  // end, or the read below waits for the escaped sleep to end.
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pid_t child = ::fork();
  if (child == 0) {
    read_end.reset();
    std::ostringstream report;
    try {
      auto* bed = new TestBed();  // never destroyed: the run dies
      Pod& pod = bed->addPod("dead", bed->nextIp());
      bed->addHostVeth(bed->nextIp() + "/32");
      const std::string pin = "/sys/fs/bpf/" + bed->prefix() + "-e2e";
      fs::create_directories(pin + "/links");
      // setsid: the sleep is no child of the Proc, so nothing kills it when
      // this process dies; only its cgroup still says whose it is.
      Proc sh =
          bed->spawn(pod, {"sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!"});
      sh.wait(2000);
      report << bed->prefix() << " " << bed->subnetCidr() << " " << pin << " " << sh.output() << " "
             << (bed->subnet6Cidr().empty() ? "-" : bed->subnet6Cidr());
    } catch (const std::exception& e) {
      report << "error " << e.what();
    }
    const std::string text = report.str();
    (void)!::write(write_end.get(), text.data(), text.size());
    ::kill(::getpid(), SIGKILL);
  }
  write_end.reset();  // EOF below once the child is gone
  std::string text;
  char buf[512];
  for (ssize_t n; (n = ::read(read_end.get(), buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(n));
  int status = 0;
  ::waitpid(child, &status, 0);
  DeadRun run;
  std::istringstream in(text);
  in >> run.prefix >> run.subnet >> run.pin >> run.orphan >> run.subnet6;
  if (run.prefix == "error" || !WIFSIGNALED(status)) throw std::runtime_error("dead run: " + text);
  if (run.subnet6 == "-") run.subnet6.clear();
  return run;
}

TEST(TestBedCleanup, ReapsWhatADeadRunLeft) {
  REQUIRE_ROOT();
  const DeadRun dead = killRunMidway();
  // The simulation is real: the dead run's objects are all still here.
  ASSERT_NE(leftovers(dead.prefix), "");
  ASSERT_TRUE(fs::exists(dead.pin));
  ASSERT_GT(dead.orphan, 0);
  ASSERT_EQ(::kill(dead.orphan, 0), 0) << "the escaped pod process is gone already";
  ASSERT_NE(command({ipTool(), "-4", "route", "show", "root", dead.subnet}), "");

  TestBed next;  // starting a bed reaps the dead run's leftovers
  EXPECT_EQ(leftovers(dead.prefix), "");
  EXPECT_FALSE(fs::exists(dead.pin));
  EXPECT_EQ(command({ipTool(), "-4", "route", "show", "root", dead.subnet}), "");
  if (!dead.subnet6.empty()) {
    EXPECT_EQ(command({ipTool(), "-6", "route", "show", "root", dead.subnet6}), "");
  }
  // SIGKILLed by the reaper: gone, or a zombie until its new parent reaps it.
  const std::string stat = "/proc/" + std::to_string(dead.orphan) + "/stat";
  auto dead_or_zombie = [&] {
    const std::string s = slurp(stat);
    return s.empty() || s.find(") Z ") != std::string::npos;
  };
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = dead_or_zombie();
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone) << "pid " << dead.orphan << " of the dead run still runs";
  bool marker = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/run/smik-testbed", ec))
    marker |= e.path().filename().string().ends_with("." + dead.prefix);
  EXPECT_FALSE(marker) << "the dead run's record was kept";
}

}  // namespace
