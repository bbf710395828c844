#include "agent/base/names.h"

namespace smik {

const char* protoName(Proto p) { return p == Proto::kUdp ? "UDP" : "TCP"; }

std::string kernelProtoName(uint8_t proto) {
  switch (proto) {
    case uint8_t(Proto::kTcp): return protoName(Proto::kTcp);
    case uint8_t(Proto::kUdp): return protoName(Proto::kUdp);
  }
  return std::to_string(proto);
}

std::string namespacedName(const std::string& ns, const std::string& name) { return ns + "/" + name; }

}  // namespace smik
