#include <ifaddrs.h>
#include <linux/magic.h>
#include <netdb.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/datapath/system.h"

namespace smik::datapath {

bool ensurePinDir(const std::string& dir, std::string* err) {
  struct statfs fs {};
  if (statfs(kBpffsRoot, &fs) != 0 || fs.f_type != BPF_FS_MAGIC) {
    mkdir(kBpffsRoot, 0700);
    if (mount("bpf", kBpffsRoot, "bpf", 0, "mode=0700") != 0) {
      *err = std::string("mount bpffs at ") + kBpffsRoot + ": " + std::strerror(errno);
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    *err = "create pin dir " + dir + ": " + ec.message();
    return false;
  }
  if (statfs(dir.c_str(), &fs) != 0 || fs.f_type != BPF_FS_MAGIC) {
    *err = "pin dir " + dir + " is not on a bpf filesystem";
    return false;
  }
  return true;
}

std::string cgroup2Mount() {
  // mountinfo: id parent major:minor root mountpoint opts ... - fstype source superopts
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, dev, root, mountpoint;
    head >> id >> parent >> dev >> root >> mountpoint;
    return mountpoint;
  }
  return "";
}

std::vector<std::string> hostAddresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    int fam = i->ifa_addr->sa_family;
    if (fam != AF_INET && fam != AF_INET6) continue;
    char buf[NI_MAXHOST];
    socklen_t len = fam == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (getnameinfo(i->ifa_addr, len, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) == 0) {
      std::string a = buf;
      auto pct = a.find('%');  // fe80::1%eth0
      if (pct != std::string::npos) a.resize(pct);
      out.push_back(a);
    }
  }
  freeifaddrs(list);
  return out;
}

}  // namespace smik::datapath
