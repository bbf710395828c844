// A tiny packet builder for BPF_PROG_TEST_RUN fixtures (Ethernet + IPv4/IPv6
// + TCP/UDP), and a runner for the tc programs. Shared by tests and bench.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smik::pkt {

inline constexpr uint8_t kSyn = 0x02, kAck = 0x10;

struct PacketSpec {
  std::string src = "10.1.0.1";
  std::string dst = "10.1.0.2";
  uint16_t sport = 40000;
  uint16_t dport = 8080;
  uint8_t proto = 6;  // 6 TCP, 17 UDP, 1 ICMP
  uint8_t tcp_flags = kSyn;
  uint8_t icmp_type = 8;
};

// Ethernet frame; IPv6 when src contains ':'.
std::vector<uint8_t> buildPacket(const PacketSpec& p);
std::vector<uint8_t> buildArp();

// Runs prog_fd on pkt as if it crossed interface ifindex; returns the tc
// verdict (0 pass, 2 drop) or -errno. repeat > 1 reports mean ns per run.
int runTc(int prog_fd, const std::vector<uint8_t>& pkt, uint32_t ifindex, uint32_t repeat = 1,
          uint32_t* ns_per_run = nullptr);

}  // namespace smik::pkt
