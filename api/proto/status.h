// The one status type: the agent's snapshot as smik.v1.StatusReply, which
// the gRPC Status call returns and /status prints (api/proto/json.h).
#pragma once

#include <google/protobuf/message.h>

#include <cstdint>
#include <vector>

#include "agent/agent.h"
#include "bpf/include/smik_abi.h"
#include "smik/v1/smik.pb.h"

namespace smik::api {

v1::StatusReply statusReply(const AgentStatus& s);

// The deprecated verdict_list (the verdicts in SMIK_REASONS order), for gRPC
// clients from before the map; JSON leaves it out (api/proto/json.h).
void addVerdictList(v1::StatusReply* r);

// Sets m's uint64 field named like each entry of table to counts[entry.id]
// (0 past the end). A table name without a field is skipped: the unit tests
// hold the proto messages and the tables of smik_abi.h together.
template <std::size_t N>
void fillByName(const abi::Fact (&table)[N], const std::vector<uint64_t>& counts,
                google::protobuf::Message* m) {
  const auto* desc = m->GetDescriptor();
  const auto* refl = m->GetReflection();
  for (const abi::Fact& f : table)
    if (const auto* field = desc->FindFieldByName(f.name))
      refl->SetUInt64(m, field, f.id < counts.size() ? counts[f.id] : 0);
}

}  // namespace smik::api
