// Small helpers of the test bed: files, `ip`, cgroups, running commands.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/testbed/internal.h"

namespace fs = std::filesystem;

namespace smik::testbed {
namespace detail {

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
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw std::runtime_error(errnoText("open " + path));
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  int err = errno;
  if (n != static_cast<ssize_t>(value.size())) {
    errno = err;
    throw std::runtime_error(errnoText("write '" + value + "' to " + path));
  }
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void drainFd(UniqueFd& fd, std::string& buf) {
  char tmp[4096];
  while (fd) {
    ssize_t n = ::read(fd.get(), tmp, sizeof tmp);
    if (n > 0) {
      buf.append(tmp, static_cast<size_t>(n));
    } else if (n == 0) {
      fd.reset();
    } else if (errno != EINTR) {
      return;  // EAGAIN: nothing more for now
    }
  }
}

Pipe makePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(errnoText("pipe"));
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
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


}  // namespace detail

using namespace detail;

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
  if (path.empty())
    throw std::runtime_error("iproute2 `ip` not found (/usr/sbin/ip, /sbin/ip, PATH)");
  return path;
}

namespace {
// fork/execvp argv with stdout and stderr captured; returns the exit status.
int runCaptured(const std::vector<std::string>& argv, std::string& out, std::string& err) {
  Pipe po = makePipe(), pe = makePipe();
  auto args = cArgv(argv);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(errnoText("fork"));
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(po.write.get(), 1);
    ::dup2(pe.write.get(), 2);
    ::execvp(args[0], args.data());
    const char msg[] = "execvp failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  // Only the child writes now: EOF comes when it exits.
  po.write.reset();
  pe.write.reset();
  UniqueFd& fo = po.read;
  UniqueFd& fe = pe.read;
  ::fcntl(fo.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(fe.get(), F_SETFL, O_NONBLOCK);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kCommandTimeoutMs);
  while (fo || fe) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    struct pollfd pfd[2] = {{fo.get(), POLLIN, 0}, {fe.get(), POLLIN, 0}};
    ::poll(pfd, 2, static_cast<int>(left));
    drainFd(fo, out);
    drainFd(fe, err);
  }
  fo.reset();
  fe.reset();
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

}  // namespace smik::testbed
