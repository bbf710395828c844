#include "tests/kernel/packet.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <algorithm>
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
  uint8_t l4proto = (v6 && p.proto == 1) ? 58 : p.proto;
  std::vector<uint8_t> ext = p.v6_ext;
  if (v6 && p.frag != kWhole && std::find(ext.begin(), ext.end(), 44) == ext.end()) ext.push_back(44);
  // L4 header (absent from a later fragment) and a little payload.
  std::vector<uint8_t> l4;
  if (p.frag != kLater) {
    l4.assign(p.proto == 6 ? 20 : 8, 0);
    if (p.proto == 1) {
      l4[0] = p.icmp_type;
      l4[4] = p.icmp_id >> 8;
      l4[5] = p.icmp_id & 0xff;
    } else {
      put16(l4, 0, p.sport);
      put16(l4, 2, p.dport);
      if (p.proto == 6) {
        l4[12] = 5 << 4;
        l4[13] = p.tcp_flags;
      } else {
        put16(l4, 4, l4.size() + 16);
      }
    }
  }
  if (p.proto == 1 && !p.icmp_quote.empty() && p.frag != kLater)
    l4.insert(l4.end(), p.icmp_quote.begin(), p.icmp_quote.end());
  else
    l4.resize(l4.size() + 16, 0xab);

  std::vector<uint8_t> l3;
  if (v6) {
    l3.assign(40, 0);
    l3[0] = 0x60;
    l3[7] = 64;
    if (inet_pton(AF_INET6, p.src.c_str(), &l3[8]) != 1 ||
        inet_pton(AF_INET6, p.dst.c_str(), &l3[24]) != 1)
      throw std::invalid_argument("bad IPv6 address");
    uint8_t* next = &l3[6];
    for (uint8_t type : ext) {
      *next = type;
      size_t at = l3.size();
      l3.resize(at + 8, 0);
      if (type == 44) {
        uint16_t off = p.frag == kLater ? p.frag_offset : 0;
        put16(l3, at + 2, uint16_t(off << 3) | (p.frag == kFirst ? 1 : 0));
        l3[at + 4] = p.frag_id >> 24;
        l3[at + 5] = p.frag_id >> 16;
        l3[at + 6] = p.frag_id >> 8;
        l3[at + 7] = p.frag_id;
      } else if (type == 51) {
        l3[at + 1] = 0;  // AH length in 4-byte units minus 2: 8 bytes
      } else {
        l3[at + 1] = 0;  // length in 8-byte units minus 1
        l3[at + 2] = 1;  // PadN filling the rest
        l3[at + 3] = 4;
      }
      next = &l3[at];
    }
    *next = l4proto;
    put16(l3, 4, l3.size() - 40 + l4.size());
  } else {
    l3.assign(20, 0);
    l3[0] = 0x45;
    put16(l3, 2, 20 + l4.size());
    put16(l3, 4, p.frag_id & 0xffff);
    uint16_t frag = p.frag == kFirst ? 0x2000 : p.frag == kLater ? (p.frag_offset & 0x1fff) : 0;
    put16(l3, 6, frag);
    l3[8] = 64;
    l3[9] = p.proto;
    if (inet_pton(AF_INET, p.src.c_str(), &l3[12]) != 1 ||
        inet_pton(AF_INET, p.dst.c_str(), &l3[16]) != 1)
      throw std::invalid_argument("bad IPv4 address");
    put16(l3, 10, checksum(l3.data(), 20));
  }
  std::vector<uint8_t> b(14, 0);
  for (int i = 0; i < 6; i++) b[i] = 0x02, b[6 + i] = 0x04;  // local MACs
  put16(b, 12, v6 ? 0x86DD : 0x0800);
  b.insert(b.end(), l3.begin(), l3.end());
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

std::vector<uint8_t> ipPacket(const PacketSpec& p) {
  auto b = buildPacket(p);
  return {b.begin() + 14, b.end()};
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

int runTcOut(int prog_fd, const std::vector<uint8_t>& pkt, uint32_t ifindex,
             std::vector<uint8_t>* out, uint32_t mark) {
  __sk_buff ctx{};
  ctx.ifindex = ifindex;
  ctx.mark = mark;
  out->assign(pkt.size() + 256, 0);
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_out = out->data(),
              .data_size_in = static_cast<__u32>(pkt.size()),
              .data_size_out = static_cast<__u32>(out->size()), .ctx_in = &ctx,
              .ctx_size_in = sizeof(ctx));
  if (bpf_prog_test_run_opts(prog_fd, &o) != 0) return -errno;
  out->resize(o.data_size_out);
  return static_cast<int>(o.retval);
}

}  // namespace smik::pkt
