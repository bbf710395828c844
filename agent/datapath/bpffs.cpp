#include <ifaddrs.h>
#include <linux/magic.h>
#include <netdb.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "agent/datapath/system.h"
#include "bpf/include/smik_abi.h"

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

namespace {

// Loopback (127/8, ::1) and link-local (169.254/16, fe80::/10) addresses:
// never the source of a packet that reaches a pod's veth from the node.
bool isHostOrLinkScope(const Addr& a) {
  static const std::array<uint8_t, 16> kLoopback6 = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (a.family == SMIK_AF_INET) return a.bytes[0] == 127 || (a.bytes[0] == 169 && a.bytes[1] == 254);
  return a.bytes == kLoopback6 || (a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80);
}

}  // namespace

bool isNodeAddress(const std::string& addr, const std::string& driver) {
  Addr a;
  if (!parseAddr(addr, &a) || isHostOrLinkScope(a)) return false;
  return driver != "veth" && driver != "netkit" && driver != "dummy";
}

std::vector<std::string> hostAddresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  std::map<std::string, std::string> drivers;  // one ioctl per interface, not per address
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    int fam = i->ifa_addr->sa_family;
    if (fam != AF_INET && fam != AF_INET6) continue;
    char buf[NI_MAXHOST];
    socklen_t len = fam == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (getnameinfo(i->ifa_addr, len, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0) continue;
    std::string a = buf;
    auto pct = a.find('%');  // fe80::1%eth0
    if (pct != std::string::npos) a.resize(pct);
    Addr parsed;
    // Before the ioctl: a node's many veths hold link-local addresses only.
    if (!parseAddr(a, &parsed) || isHostOrLinkScope(parsed)) continue;
    auto d = drivers.find(i->ifa_name);
    if (d == drivers.end()) d = drivers.emplace(i->ifa_name, interfaceDriver(i->ifa_name)).first;
    if (isNodeAddress(a, d->second)) out.push_back(a);
  }
  freeifaddrs(list);
  return out;
}

}  // namespace smik::datapath
