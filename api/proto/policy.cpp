#include "api/proto/policy.h"

#include "agent/base/names.h"

namespace smik::api {
namespace {

// Names the rule a grant came from; rule 0 is host traffic, which no
// TrafficTarget grants.
void setRule(const compile::Plan& plan, uint32_t rule_id, std::string* traffic_target,
             std::string* rule) {
  if (rule_id >= 1 && rule_id <= plan.rules.size()) {
    *traffic_target = plan.rules[rule_id - 1].traffic_target;
    *rule = plan.rules[rule_id - 1].rule;
  } else {
    *traffic_target = "-";
    *rule = "host traffic";
  }
}

void addHttpGrants(const compile::Plan& plan, v1::GetPolicyReply* out) {
  constexpr uint32_t kEveryMethod = (1u << SMIK_HTTP_METHODS) - 1;
  for (const auto& [key, hp] : plan.http) {
    for (const auto& o : hp.origins) {
      v1::HttpGrant* g = out->add_http();
      g->set_source(plan.identityName(o.src_id));
      g->set_destination(plan.identityName(key.first));
      g->set_port(key.second);
      if (o.methods != kEveryMethod)
        for (unsigned m = 0; m < SMIK_HTTP_METHODS; ++m)
          if (o.methods & (1u << m)) g->add_methods(compile::httpMethodName(m));
      g->set_path_regex(hp.patterns.at(o.pattern).regex);
      const uint32_t needs = o.pattern < hp.needs.size() ? hp.needs[o.pattern] : 0;
      for (size_t c = 0; c < hp.headers.size(); ++c)
        if (needs >> c & 1) (*g->mutable_headers())[hp.headers[c].name] = hp.headers[c].regex;
      setRule(plan, o.rule_id, g->mutable_traffic_target(), g->mutable_rule());
      g->set_match(o.match);
    }
  }
}

}  // namespace

v1::GetPolicyReply policyReply(const compile::Plan& plan, const compile::NodeConfig& node) {
  v1::GetPolicyReply out;
  out.set_node(node.node_name);
  out.set_access_mode(compile::accessModeName(node.access_mode));
  for (const auto& [k, v] : plan.policy) {
    v1::PolicyEntry* e = out.add_entries();
    e->set_destination(plan.identityName(k.dst_id));
    if (k.src_id == SMIK_ID_META) {
      e->set_enforced((v.flags & SMIK_POL_F_ENFORCED) != 0);
      continue;
    }
    e->set_source(plan.identityName(k.src_id));
    e->set_proto(kernelProtoName(k.proto));
    e->set_port(k.dport);
    setRule(plan, v.rule_id, e->mutable_traffic_target(), e->mutable_rule());
  }
  addHttpGrants(plan, &out);
  for (const auto& [name, id] : plan.identities) (*out.mutable_identities())[name] = id;
  for (const auto& d : plan.diagnostics) out.add_diagnostics(d.str());
  out.set_meshed_pods(plan.endpoints.size());
  return out;
}

}  // namespace smik::api
