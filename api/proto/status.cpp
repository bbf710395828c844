#include "api/proto/status.h"

namespace smik::api {

namespace {

void fillCounters(const AgentStatus& s, v1::StatusReply* r) {
  for (const abi::Fact& f : abi::kReasons) {
    if (f.id >= s.reasons.size()) continue;
    const smik_counter& c = s.reasons[f.id];
    auto& t = (*r->mutable_verdicts())[f.name];
    t.set_packets(c.packets);
    t.set_bytes(c.bytes);
  }
  fillByName(abi::kSockCounters, s.sock_stats, r->mutable_connect());
  fillByName(abi::kCtCounters, s.ct_stats, r->mutable_conntrack());
  r->mutable_conntrack()->set_swept(s.ct_swept_total);
  fillByName(abi::kAnswerCounters, s.answer_stats, r->mutable_deny_answers());
}

void fillMaps(const AgentStatus& s, v1::StatusReply* r) {
  for (const auto& u : s.maps) {
    auto* m = r->add_maps();
    m->set_name(u.def.name);
    m->set_type(maps::mapTypeName(u.def.type));
    m->set_entries(u.entries);
    m->set_max_entries(u.def.max_entries);
    m->set_bytes(u.bytes);
  }
  r->set_possible_cpus(s.possible_cpus);
}

void fillEdges(const AgentStatus& s, v1::StatusReply* r) {
  r->set_edges_total(s.edges_total);
  for (const auto& e : s.edges) {
    auto* pe = r->add_edges();
    pe->set_source(e.source);
    pe->set_destination(e.destination);
    pe->set_proto(e.proto);
    pe->set_port(e.port);
    pe->set_flows_allowed(e.flows_allowed);
    pe->set_packets_denied(e.packets_denied);
  }
}

}  // namespace

v1::StatusReply statusReply(const AgentStatus& s) {
  v1::StatusReply r;
  r.set_ready(s.ready);
  r.set_source(s.source);
  if (!s.not_ready.empty()) r.set_not_ready(s.not_ready);
  if (!s.degraded.empty()) r.set_degraded(s.degraded);
  r.mutable_collections()->Assign(s.collections.begin(), s.collections.end());
  r.set_node(s.node);
  r.set_access_mode(s.access_mode);
  r.set_host_traffic(s.host_traffic);
  r.set_attach_mode(s.attach_mode);
  r.set_rejected_objects_total(s.rejected_objects_total);
  r.set_applies_total(s.applies_total);
  r.set_apply_errors_total(s.apply_errors_total);
  r.set_last_apply_ms(s.last_apply_ms);
  r.set_policy_generation(s.policy_generation);
  r.set_policy_entries(s.policy_entries);
  r.set_identities(s.identities);
  r.set_ip_entries(s.ip_entries);
  r.set_services(s.services);
  r.set_socket_programs(s.socket_programs);
  r.mutable_endpoints()->Assign(s.endpoints.begin(), s.endpoints.end());
  r.mutable_rejected()->Assign(s.rejected.begin(), s.rejected.end());
  r.mutable_diagnostics()->Assign(s.diagnostics.begin(), s.diagnostics.end());
  r.mutable_errors()->Assign(s.errors.begin(), s.errors.end());
  r.mutable_not_enforced()->Assign(s.not_enforced.begin(), s.not_enforced.end());
  fillCounters(s, &r);
  fillMaps(s, &r);
  fillEdges(s, &r);
  return r;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // kept for older clients
void addVerdictList(v1::StatusReply* r) {
  for (const abi::Fact& f : abi::kReasons) {
    auto it = r->verdicts().find(f.name);
    if (it == r->verdicts().end()) continue;
    auto* v = r->add_verdict_list();
    v->set_reason(f.name);
    v->set_packets(it->second.packets());
    v->set_bytes(it->second.bytes());
  }
}
#pragma GCC diagnostic pop

}  // namespace smik::api
