// From the compiler's Plan to what the kernel should hold: the one place the
// maps layer reads the compiler's types (maps.h itself needs only the ABI).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "agent/compile/compile.h"
#include "maps/maps.h"

namespace smik::maps {

SvcTable svcTable(const compile::ServiceTable& t);

// Desired kernel state for a plan, given where each local pod's veth is.
KernelState desiredState(const compile::Plan& plan,
                         const std::map<std::string, uint32_t>& ifindex_by_pod,
                         const std::map<std::string, uint8_t>& attach_by_pod);

}  // namespace smik::maps
