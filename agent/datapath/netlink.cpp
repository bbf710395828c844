// One rtnetlink question: which interface routes to a pod IP.
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/base/unique_fd.h"
#include "agent/datapath/system.h"
#include "bpf/include/smik_abi.h"

namespace smik::datapath {

uint32_t routeIfindex(const Addr& addr) {
  UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return 0;
  struct {
    nlmsghdr nh;
    rtmsg rt;
    char attrs[64];
  } req{};
  size_t alen = addr.family == SMIK_AF_INET ? 4 : 16;
  req.nh.nlmsg_type = RTM_GETROUTE;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nh.nlmsg_seq = 1;
  req.rt.rtm_family = addr.family == SMIK_AF_INET ? AF_INET : AF_INET6;
  req.rt.rtm_dst_len = alen * 8;
  auto* rta = reinterpret_cast<rtattr*>(req.attrs);
  rta->rta_type = RTA_DST;
  rta->rta_len = RTA_LENGTH(alen);
  std::memcpy(RTA_DATA(rta), addr.bytes.data(), alen);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg)) + RTA_ALIGN(rta->rta_len);

  uint32_t ifindex = 0;
  char buf[8192];
  if (send(fd.get(), &req, req.nh.nlmsg_len, 0) >= 0) {
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); n > 0 && NLMSG_OK(nh, n);
         nh = NLMSG_NEXT(nh, n)) {
      if (nh->nlmsg_type != RTM_NEWROUTE) continue;
      auto* rt = static_cast<rtmsg*>(NLMSG_DATA(nh));
      int len = RTM_PAYLOAD(nh);
      for (auto* a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == RTA_OIF) ifindex = *static_cast<uint32_t*>(RTA_DATA(a));
      }
    }
  }
  return ifindex;
}

NetChanges::NetChanges()
    : fd_(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE)) {
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE |
                 RTMGRP_IPV6_ROUTE;
  if (fd_ && bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) fd_.reset();
  // A burst of new pods (each a link, addresses, routes) between two rounds.
  int size = 1 << 20;
  if (fd_) setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

bool NetChanges::changedSinceLastAsk() {
  if (!fd_) return true;
  bool changed = pending_;
  pending_ = false;
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0 || (n < 0 && errno == ENOBUFS)) {
      changed = true;  // what changed does not matter: everything is read again
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return changed;  // EAGAIN: drained
  }
}

}  // namespace smik::datapath

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>

namespace smik::datapath {

std::string interfaceDriver(const std::string& ifname) {
  if (ifname.size() >= IF_NAMESIZE) return "";
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return "";
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, ifname.c_str(), ifname.size() + 1);
  ifr.ifr_data = reinterpret_cast<char*>(&info);
  bool ok = ioctl(fd.get(), SIOCETHTOOL, &ifr) == 0;
  return ok ? std::string(info.driver, strnlen(info.driver, sizeof info.driver)) : "";
}

// A pod's host side is a veth (or netkit); a route that resolves to anything
// else (the default route, before the CNI made the pod's) is not a pod.
bool isPodInterface(uint32_t ifindex) {
  char name[IF_NAMESIZE] = {};
  if (!if_indextoname(ifindex, name)) return false;
  std::string driver = interfaceDriver(name);
  return driver == "veth" || driver == "netkit";
}

}  // namespace smik::datapath
