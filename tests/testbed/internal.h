// What the test bed's own files share (testbed.cpp, process.cpp,
// run_record.cpp, util.cpp); tests include testbed.h only.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "agent/base/unique_fd.h"
#include "tests/testbed/testbed.h"

namespace smik::testbed::detail {

constexpr int kCommandTimeoutMs = 10000;           // `ip` must never hang a test

std::string joinArgv(const std::vector<std::string>& argv);
std::string errnoText(const std::string& what);
std::string readFile(const std::string& path);
void writeFile(const std::string& path, const std::string& value);
std::string trim(std::string s);
// Reads what is available from a non-blocking fd into buf; closes the fd
// at EOF.
void drainFd(UniqueFd& fd, std::string& buf);
// A pipe (O_CLOEXEC); throws if none can be made.
struct Pipe {
  UniqueFd read, write;
};
Pipe makePipe();
int decodeStatus(int st);
std::vector<char*> cArgv(const std::vector<std::string>& argv);
std::vector<std::string> ipCmd(std::initializer_list<std::string> args);
// Removes a cgroup directory; retries briefly because a just-reaped task can
// keep it "busy" for a moment.
void removeCgroup(const std::string& path);

// run_record.cpp: what beds share machine-wide, and what dead runs left.
bool ipv6Available();
bool perInterfaceForwarding();
// Registers the bed (its owner's pid and start time) and turns forwarding on;
// first reaps what beds of dead owners left behind.
void acquireForwarding(const std::string& prefix);
void releaseForwarding(const std::string& prefix);
// Adds a blackhole route the bed claimed to its record, for the reaper.
void recordRoute(const std::string& prefix, const std::string& kind, const std::string& cidr);

}  // namespace smik::testbed::detail

namespace smik::testbed {

struct Proc::State {
  pid_t pid = -1;
  std::string pod;  // empty: host netns
  UniqueFd fd;      // read end of the child's stdout, non-blocking
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
      status = r == pid ? detail::decodeStatus(st) : -1;
      detail::drainFd(fd, buf);  // the child is gone: what it wrote is in the pipe
      fd.reset();
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
    if (fd) {
      struct pollfd p{fd.get(), POLLIN, 0};
      ::poll(&p, 1, ms);
      detail::drainFd(fd, buf);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
  }
  ~State() { killAndReap(); }
};

}  // namespace smik::testbed
