// A tiny packet builder for BPF_PROG_TEST_RUN fixtures (Ethernet + IPv4/IPv6
// + TCP/UDP), and a runner for the tc programs. Shared by tests and bench.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smik::pkt {

inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kAck = 0x10;
inline constexpr uint8_t kWhole = 0, kFirst = 1, kLater = 2;

struct PacketSpec {
  std::string src = "10.1.0.1";
  std::string dst = "10.1.0.2";
  uint16_t sport = 40000;
  uint16_t dport = 8080;
  uint8_t proto = 6;  // 6 TCP, 17 UDP, 1 ICMP
  uint8_t tcp_flags = kSyn;
  uint8_t icmp_type = 8;
  uint16_t icmp_id = 0;  // echo identifier
  // An ICMP error's quoted packet (an IP packet, no Ethernet header); empty:
  // filler bytes.
  std::vector<uint8_t> icmp_quote = {};
  // IPv6 extension headers before the L4 header, in order: 0 hop-by-hop,
  // 43 routing, 60 destination options, 51 AH, 44 fragment.
  std::vector<uint8_t> v6_ext = {};
  uint8_t frag = kWhole;  // kFirst: offset 0 with more to come; kLater: offset > 0
  uint32_t frag_id = 1;
  uint16_t frag_offset = 3;  // of a later fragment, in 8-byte units
};

// Ethernet frame; IPv6 when src contains ':'. A later fragment has no L4
// header; an IPv6 fragment gets a fragment header after v6_ext.
std::vector<uint8_t> buildPacket(const PacketSpec& p);
std::vector<uint8_t> buildArp();
// The IP packet of buildPacket(p), without its Ethernet header: what an ICMP
// error quotes.
std::vector<uint8_t> ipPacket(const PacketSpec& p);

// Runs prog_fd on pkt as if it crossed interface ifindex; returns the tc
// verdict (0 pass, 2 drop) or -errno. repeat > 1 reports mean ns per run.
int runTc(int prog_fd, const std::vector<uint8_t>& pkt, uint32_t ifindex, uint32_t repeat = 1,
          uint32_t* ns_per_run = nullptr);
// Same, and *out is the packet as the program left it (an answer it built
// in place of the packet); `mark`: the skb's mark as it arrives.
int runTcOut(int prog_fd, const std::vector<uint8_t>& pkt, uint32_t ifindex,
             std::vector<uint8_t>* out, uint32_t mark = 0);

}  // namespace smik::pkt
