// The one explanation type: what the compiler's explain() answers, as the
// smik.v1.ExplainReply the gRPC Explain call returns and the CLI prints
// (offline from --manifests or online from the agent alike).
#pragma once

#include <string>
#include <vector>

#include "agent/compile/explain.h"
#include "smik/v1/smik.pb.h"

namespace smik::api {

v1::ExplainReply explainReply(const compile::Explanation& e);
v1::ExplainReply explainReply(const std::vector<compile::ServiceExplanation>& routes,
                              const std::vector<std::string>& notes);

}  // namespace smik::api
