// The peer API's decoding: another node's answer as it arrives (protobuf
// bytes), decoded, merged with this node's and rendered as the
// TrafficMetrics API renders it; and another node's question answered from
// this node's store. A peer has a certificate, not a guarantee of sanity:
// counts near 2^64, buckets out of range, any names.
#include <cstddef>
#include <cstdint>
#include <string>

#include "api/smi/smi_metrics.h"
#include "api/smi/merged_view.h"
#include "api/peer/wire.h"
#include "tests/fuzz/fixture.h"

namespace {

using smik::api::NodeAnswer;

class OnePeer : public smik::api::PeerFanout {
 public:
  explicit OnePeer(NodeAnswer answer) : answer_(std::move(answer)) {}
  std::vector<smik::api::PeerResult> query(const smik::api::MetricsQuery&) override {
    return {{"node-b", true, "", answer_}};
  }

 private:
  NodeAnswer answer_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& store = smik::fuzz::store();
  smik::v1::MetricsAnswer in;
  if (in.ParseFromArray(data, static_cast<int>(size))) {
    NodeAnswer answer;
    std::string err;
    if (smik::peer::fromProto(in, &answer, &err)) {
      OnePeer peers(std::move(answer));
      const std::string base = smik::api::kSmiMetricsBase;
      for (const char* path :
           {"/namespaces/shop/pods", "/namespaces/shop/pods/web-1a-x",
            "/namespaces/shop/pods/web-1a-x/edges", "/namespaces/shop/deployments/web/edges",
            "/namespaces/data/statefulsets/db", "/namespaces", "/namespaces/shop/edges",
            "/namespaces/shop/trafficsplits/web-split", "/pods"}) {
        smik::api::MergedView view(store, "node-a", peers, 60);
        (void)smik::api::handleSmiMetrics(view, base + path, "1m");
      }
    } else if (err.empty()) {
      __builtin_trap();  // refused without saying why
    }
  }
  smik::v1::MetricsQuery q;
  if (q.ParseFromArray(data, static_cast<int>(size))) {
    smik::v1::MetricsAnswer out;
    smik::peer::toProto(smik::api::answerQuery(store, "node-a", smik::peer::fromProto(q)), &out);
  }
  return 0;
}
