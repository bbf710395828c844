#include "agent/base/addr.h"

#include <arpa/inet.h>

#include <cstring>

#include "bpf/include/smik_abi.h"

namespace smik {

bool parseAddr(const std::string& text, Addr* out) {
  Addr a;
  if (inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
    a.family = SMIK_AF_INET;
  } else if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
    a.family = SMIK_AF_INET6;
  } else {
    return false;
  }
  *out = a;
  return true;
}

Addr kernelAddr(uint8_t family, const uint8_t* bytes) {
  Addr a;
  a.family = family;
  std::memcpy(a.bytes.data(), bytes, a.bytes.size());
  return a;
}

std::string Addr::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == SMIK_AF_INET ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf);
  return buf;
}

}  // namespace smik
