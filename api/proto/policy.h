// The one policy listing: the plan the compiler made for a node, as the
// smik.v1.GetPolicyReply the gRPC GetPolicy call returns and `smik policy`
// prints (offline from --manifests or online from the agent alike).
#pragma once

#include "agent/compile/compile.h"
#include "smik/v1/smik.pb.h"

namespace smik::api {

// Every kernel policy entry in key order, then the HTTP grants (one per
// source, port and match), the identities and the diagnostics.
v1::GetPolicyReply policyReply(const compile::Plan& plan, const compile::NodeConfig& node);

}  // namespace smik::api
