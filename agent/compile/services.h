// Part of compile(): Service/EndpointSlice/TrafficSplit -> Plan::services.
#pragma once

#include "agent/compile/compile.h"

namespace smik::compile {

void compileServices(const model::ClusterState& state, const NodeConfig& node, Plan* plan);

}  // namespace smik::compile
