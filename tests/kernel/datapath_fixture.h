// The fixture of the tc program tests (tests/kernel/datapath_*_test.cpp):
// a fresh Datapath under its own pin dir per test (test runs change real
// maps), a server pod on lo and a client elsewhere, and the packets run
// through the programs with BPF_PROG_TEST_RUN.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "agent/datapath/datapath.h"
#include "agent/datapath/system.h"
#include "tests/kernel/packet.h"

namespace smik::kernel_test {

using smik::pkt::buildPacket;
using smik::pkt::kAck;
using smik::pkt::kFin;
using smik::pkt::kFirst;
using smik::pkt::kLater;
using smik::pkt::kRst;
using smik::pkt::kSyn;
using smik::pkt::PacketSpec;

constexpr int kPass = 0, kDrop = 2, kRedirect = 7;  // TC_ACT_*
constexpr uint32_t kLo = 1;  // test runs need a real device; the endpoint sits on lo
constexpr uint32_t kClient = 1000, kServer = 2000, kOther = 3000;

inline smik::Addr addr(const std::string& s) {
  smik::Addr a;
  EXPECT_TRUE(smik::parseAddr(s, &a)) << s;
  return a;
}

class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "KERNEL TEST SKIPPED: needs root for BPF";
    static int n = 0;
    pin_ = "/sys/fs/bpf/smik-dpt-" + std::to_string(getpid()) + "-" + std::to_string(n++);
    options_.pin_dir = pin_;
    std::string err;
    dp_ = datapath::Datapath::open(options_, &err);
    ASSERT_TRUE(dp_) << err;
    // server pod 10.1.0.2 on "lo", client pod 10.1.0.1 elsewhere
    state_.ips[addr("10.1.0.1")] = {kClient, 0};
    state_.ips[addr("10.1.0.2")] = {kServer, SMIK_IP_F_LOCAL};
    state_.ips[addr("10.1.0.3")] = {kOther, 0};
    state_.ips[addr("192.168.77.1")] = {SMIK_ID_HOST, 0};
    state_.ips[addr("fd00::1")] = {kClient, 0};
    smik_endpoint ep{};
    ep.identity = kServer;
    ep.naddrs = 2;
    ep.families[0] = SMIK_AF_INET;
    std::memcpy(ep.addrs[0], addr("10.1.0.2").bytes.data(), 16);
    ep.families[1] = SMIK_AF_INET6;
    std::memcpy(ep.addrs[1], addr("fd00::2").bytes.data(), 16);
    state_.endpoints[kLo] = ep;
    enforce(kServer);
  }
  void TearDown() override {
    ct_fd_.reset();
    dp_.reset();
    std::string err;
    if (!pin_.empty()) {
      EXPECT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
    }
  }

  void allow(uint32_t src, uint32_t dst, uint16_t port, uint8_t proto, uint32_t rule = 1) {
    state_.policy[{src, dst, port, proto, 0}] = {rule, 0};
  }
  void enforce(uint32_t dst) { state_.policy[{SMIK_ID_META, dst, 0, 0, 0}] = {0, SMIK_POL_F_ENFORCED}; }
  void apply() {
    state_.policy_installed = true;
    std::string err;
    ASSERT_TRUE(maps::apply(dp_->maps(), state_, dp_->maps().read().value(), nullptr, &err)) << err;
  }
  int toPod(const PacketSpec& p) { return pkt::runTc(dp_->toPodProgFd(), buildPacket(p), kLo); }
  int fromPod(const PacketSpec& p) { return pkt::runTc(dp_->fromPodProgFd(), buildPacket(p), kLo); }
  uint64_t reason(int r) { return dp_->maps().reasons()[r].packets; }
  uint64_t ctStat(int i) { return dp_->maps().ctStats()[i]; }
  int ctFd() {
    if (!ct_fd_) ct_fd_ = pinned(maps::kCtMap);
    return ct_fd_.get();
  }
  size_t ctEntries() {
    size_t n = 0;
    smik_ct_key k{}, next{};
    const smik_ct_key* prev = nullptr;
    while (bpf_map_get_next_key(ctFd(), prev, &next) == 0) {
      n++;
      k = next;
      prev = &k;
    }
    return n;
  }
  static uint64_t nowNs() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  }
  smik_edge_value edge(uint32_t src, uint32_t dst, uint16_t port, uint8_t proto) {
    for (const auto& e : dp_->maps().edges())
      if (e.key.src_id == src && e.key.dst_id == dst && e.key.dport == port && e.key.proto == proto)
        return e.value;
    return {};
  }

  // What the next agent does: open the pins the last one left.
  void reopen() {
    dp_.reset();
    std::string err;
    dp_ = datapath::Datapath::open(options_, &err);
    ASSERT_TRUE(dp_) << err;
  }
  // From scratch: no pins, as after --uninstall.
  void reinstall() {
    dp_.reset();
    std::string err;
    ASSERT_TRUE(datapath::Datapath::uninstall(pin_, &err)) << err;
    reopen();
  }
  maps::MapDef pinnedDef(const std::string& name) {
    maps::MapDef def;
    UniqueFd fd = pinned(name);
    EXPECT_TRUE(fd) << name;
    EXPECT_TRUE(maps::mapDefOf(fd.get(), &def)) << name;
    return def;
  }
  // The map pinned under this test's pin dir; invalid if there is none.
  UniqueFd pinned(const std::string& name) const {
    return UniqueFd(bpf_obj_get((pin_ + "/" + name).c_str()));
  }

  std::string pin_;
  UniqueFd ct_fd_;
  datapath::Options options_;
  std::unique_ptr<datapath::Datapath> dp_;
  maps::KernelState state_;
};

}  // namespace smik::kernel_test
