// Names every layer prints the same way: protocols and namespaced objects.
#pragma once

#include <cstdint>
#include <string>

namespace smik {

// The L4 protocols SMI routes name; the values are the kernel's.
enum class Proto : uint8_t { kTcp = 6, kUdp = 17 };
const char* protoName(Proto p);  // "TCP", "UDP"
// A kernel protocol number as smik prints it: "TCP", "UDP", else the number.
std::string kernelProtoName(uint8_t proto);

// "ns/name": how plans, status and explanations key a namespaced object.
std::string namespacedName(const std::string& ns, const std::string& name);

}  // namespace smik
