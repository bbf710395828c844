#include "tests/kernel/packet.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace smik::pkt {
namespace {

void put16(std::vector<uint8_t>& b, size_t off, uint16_t v) {
  b[off] = v >> 8;
  b[off + 1] = v & 0xff;
}

uint16_t checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum;
}

}  // namespace

std::vector<uint8_t> buildPacket(const PacketSpec& p) {
  bool v6 = p.src.find(':') != std::string::npos;
  size_t l4len = p.proto == 6 ? 20 : 8;
  size_t l3len = v6 ? 40 : 20;
  std::vector<uint8_t> b(14 + l3len + l4len + 4, 0);  // + 4 bytes payload
  for (int i = 0; i < 6; i++) b[i] = 0x02, b[6 + i] = 0x04;  // local MACs
  put16(b, 12, v6 ? 0x86DD : 0x0800);
  uint8_t* ip = &b[14];
  size_t total = l3len + l4len + 4;
  if (v6) {
    ip[0] = 0x60;
    put16(b, 14 + 4, l4len + 4);
    ip[6] = p.proto == 1 ? 58 : p.proto;
    ip[7] = 64;
    if (inet_pton(AF_INET6, p.src.c_str(), ip + 8) != 1 ||
        inet_pton(AF_INET6, p.dst.c_str(), ip + 24) != 1)
      throw std::invalid_argument("bad IPv6 address");
  } else {
    ip[0] = 0x45;
    put16(b, 14 + 2, total);
    ip[8] = 64;
    ip[9] = p.proto;
    if (inet_pton(AF_INET, p.src.c_str(), ip + 12) != 1 ||
        inet_pton(AF_INET, p.dst.c_str(), ip + 16) != 1)
      throw std::invalid_argument("bad IPv4 address");
    put16(b, 14 + 10, checksum(ip, 20));
  }
  size_t l4 = 14 + l3len;
  if (p.proto == 1) {
    b[l4] = p.icmp_type;
  } else {
    put16(b, l4, p.sport);
    put16(b, l4 + 2, p.dport);
    if (p.proto == 6) {
      b[l4 + 12] = 5 << 4;
      b[l4 + 13] = p.tcp_flags;
    } else {
      put16(b, l4 + 4, l4len + 4);
    }
  }
  return b;
}

std::vector<uint8_t> buildArp() {
  std::vector<uint8_t> b(42, 0);
  for (int i = 0; i < 6; i++) b[i] = 0xff, b[6 + i] = 0x04;
  put16(b, 12, 0x0806);
  return b;
}

int runTc(int prog_fd, const std::vector<uint8_t>& pkt, uint32_t ifindex, uint32_t repeat,
          uint32_t* ns_per_run) {
  __sk_buff ctx{};
  ctx.ifindex = ifindex;  // the kernel requires a real device with this index
  std::vector<uint8_t> out(pkt.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_out = out.data(),
              .data_size_in = static_cast<__u32>(pkt.size()),
              .data_size_out = static_cast<__u32>(out.size()), .ctx_in = &ctx,
              .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(repeat));
  if (bpf_prog_test_run_opts(prog_fd, &o) != 0) return -errno;
  if (ns_per_run) *ns_per_run = o.duration;
  return static_cast<int>(o.retval);
}

}  // namespace smik::pkt
