// MetricsQuery / NodeAnswer <-> smik.v1 Peer messages. Counts travel raw:
// every counter and every non-empty histogram bucket, so a merge is exact.
#pragma once

#include <string>

#include "api/smi/merged_view.h"
#include "smik/v1/smik.pb.h"

namespace smik::peer {

void toProto(const api::MetricsQuery& q, v1::MetricsQuery* out);
api::MetricsQuery fromProto(const v1::MetricsQuery& q);

void toProto(const api::NodeAnswer& a, v1::MetricsAnswer* out);
// False, with err, when the answer cannot be merged exactly: another
// histogram layout (a peer built with other SMIK_HIST_* constants), a bucket
// out of range, an unknown edge side.
bool fromProto(const v1::MetricsAnswer& in, api::NodeAnswer* out, std::string* err);

}  // namespace smik::peer
