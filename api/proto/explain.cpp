#include "api/proto/explain.h"

namespace smik::api {

v1::ExplainReply explainReply(const compile::Explanation& e) {
  v1::ExplainReply r;
  r.set_allowed(e.allowed);
  r.set_summary(e.summary);
  r.set_traffic_target(e.traffic_target);
  r.set_rule(e.rule);
  r.mutable_details()->Assign(e.details.begin(), e.details.end());
  r.set_http_match(e.http_match);
  return r;
}

v1::ExplainReply explainReply(const std::vector<compile::ServiceExplanation>& routes,
                              const std::vector<std::string>& notes) {
  v1::ExplainReply r;
  for (const auto& t : routes) {
    auto* route = r.add_services();
    route->set_cluster_ip(t.vip);
    route->set_traffic_split(t.split);
    for (const auto& g : t.groups) {
      auto* group = route->add_groups();
      group->set_service(g.service);
      group->set_weight(g.weight);
      group->set_share(g.share);
      for (const auto& ep : g.endpoints) {
        auto* choice = group->add_endpoints();
        choice->set_pod(ep.pod);
        choice->set_address(ep.address);
        choice->set_probability(ep.probability);
      }
    }
  }
  r.mutable_notes()->Assign(notes.begin(), notes.end());
  return r;
}

}  // namespace smik::api
