// An address as the kernel ABI stores it: a family and 16 bytes. The
// compiler keys its plan by it, the maps write it, the data path routes to
// it and telemetry names it, so it lives below all of them.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace smik {

struct Addr {
  uint8_t family = 0;  // SMIK_AF_INET / SMIK_AF_INET6
  std::array<uint8_t, 16> bytes{};
  auto operator<=>(const Addr&) const = default;
  std::string str() const;
};

// An IPv4 or IPv6 address in text; false (out untouched) for anything else.
bool parseAddr(const std::string& text, Addr* out);
// An address as the kernel's maps and events carry it: family + 16 bytes.
Addr kernelAddr(uint8_t family, const uint8_t* bytes);

}  // namespace smik
