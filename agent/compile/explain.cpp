#include "agent/compile/explain.h"

#include "agent/compile/verdict.h"

#include <algorithm>
#include <optional>
#include <set>

namespace smik::compile {

using model::Proto;

namespace {

// Why a TrafficTarget naming the destination did not grant the flow.
std::string whyNot(const model::ClusterState& state, const model::TrafficTarget& tt,
                   const std::string& src_sa, uint16_t port, Proto proto, const Plan& plan) {
  std::string name = "TrafficTarget " + namespacedName(tt.meta.ns, tt.meta.name) + ": ";
  for (const auto& d : plan.diagnostics) {
    if (d.object.kind == "TrafficTarget" && d.object.ns == tt.meta.ns &&
        d.object.name == tt.meta.name && d.level == Diagnostic::Level::kWarning)
      return name + d.message;
  }
  bool source_listed = std::any_of(tt.sources.begin(), tt.sources.end(), [&](const auto& s) {
    return namespacedName(s.ns, s.name) == src_sa;
  });
  if (!source_listed) return name + "source " + src_sa + " is not among its sources";
  if (tt.legacy_port && *tt.legacy_port != port)
    return name + "its destination.port " + std::to_string(*tt.legacy_port) +
           " excludes port " + std::to_string(port);
  const char* want = proto == Proto::kTcp ? "TCPRoute" : "UDPRoute";
  bool proto_rule = std::any_of(tt.rules.begin(), tt.rules.end(),
                                [&](const auto& r) { return r.kind == want; });
  if (!proto_rule) return name + std::string("no ") + want + " rule (" + protoName(proto) + ")";
  (void)state;
  return name + "no " + want + " of it lists port " + std::to_string(port);
}

// The diagnostic of an object the capacity check left out, if it was.
std::optional<std::string> overCapacity(const Plan& plan, const model::ObjectRef& ref) {
  for (const auto& r : plan.over_capacity)
    if (r.object == ref) return r.message;
  return std::nullopt;
}

unsigned methodIndex(const std::string& method) {
  for (unsigned m = 0; m < SMIK_HTTP_M_OTHER; ++m)
    if (method == httpMethodName(m)) return m;
  return SMIK_HTTP_M_OTHER;
}

std::string originName(const Plan& plan, const HttpGrantOrigin& o) {
  if (o.rule_id == 0) return "the node itself (--host-traffic=allow): every request";
  const RuleOrigin& r = plan.rules.at(o.rule_id - 1);
  return "TrafficTarget " + r.traffic_target + " rule " + r.rule +
         (o.match.empty() ? " (every request: the port is open to it at L4)" : " match " + o.match);
}

// Why header condition c does not hold for these header lines.
std::string headerMiss(const HttpPortPlan& hp, size_t c,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
  const auto& h = hp.headers.at(c);
  size_t lines = 0, matching = 0;
  for (const auto& [name, value] : headers) {
    const uint64_t m = http::matchAll(hp.header_dfa, http::headerLine(name, value)).w[0];
    if (!(m >> (http::kHeaderNameShift + c) & 1)) continue;
    ++lines;
    matching += m >> c & 1;
  }
  if (lines == 0) return "header " + h.name + " absent";
  return "header " + h.name + (lines > 1 ? ": not every one of its " + std::to_string(lines) + " lines" : "") +
         " does not match regex \"" + h.regex + "\" (the whole value)" +
         (lines > 1 ? " (" + std::to_string(matching) + " do)" : "");
}

}  // namespace

bool explainHttp(const Plan& plan, uint32_t src_id, uint32_t dst_id, uint16_t port,
                 const HttpRequest& request, Explanation* out) {
  auto it = plan.http.find({dst_id, port});
  if (it == plan.http.end()) return false;
  const HttpPortPlan& hp = it->second;
  const unsigned m = methodIndex(request.method);
  const std::string path = request.path.substr(0, request.path.find('?'));
  const http::PatternSet accepts = hp.dfa.states() ? http::matchAll(hp.dfa, path) : http::PatternSet{};
  const uint32_t held = http::headerConditionsHeld(hp.header_dfa, request.headers);
  out->allowed = false;
  out->details.clear();
  if (!hp.error.empty()) out->details.push_back("the port's regexes did not compile: " + hp.error);
  for (const auto& o : hp.origins) {
    if (o.src_id != src_id) continue;
    const bool method_ok = o.methods & (1u << m);
    const bool path_ok = abi::test(accepts, unsigned(o.pattern));
    const uint32_t missing = (o.pattern < hp.needs.size() ? hp.needs[o.pattern] : 0) & ~held;
    if (method_ok && path_ok && missing == 0) {
      out->allowed = true;
      if (o.rule_id) {
        out->traffic_target = plan.rules.at(o.rule_id - 1).traffic_target;
        out->rule = plan.rules.at(o.rule_id - 1).rule;
      }
      out->http_match = o.match;
      out->details.push_back("granted by " + originName(plan, o));
      return true;
    }
    std::string why;
    if (!method_ok) {
      why = std::string("method ") + httpMethodName(m) + " not granted";
    } else if (!path_ok) {
      why = "path " + path + " does not match regex \"" + hp.patterns.at(o.pattern).regex +
            "\" (anchored at the start)";
    } else {
      for (size_t c = 0; c < hp.headers.size(); ++c)
        if (missing >> c & 1) why += (why.empty() ? "" : "; ") + headerMiss(hp, c, request.headers);
    }
    out->details.push_back(originName(plan, o) + ": " + why);
  }
  if (out->details.empty()) out->details.push_back("no HTTP rule grants this source any request on this port");
  return true;
}

bool explain(const model::ClusterState& state, NodeConfig node, const std::string& from,
             const std::string& to, uint16_t port, Proto proto, Explanation* out,
             std::string* err, const Plan* applied, const HttpRequest* request) {
  auto src_pod = state.pods.find(from);
  auto dst_pod = state.pods.find(to);
  if (src_pod == state.pods.end()) return (*err = "no pod " + from), false;
  if (dst_pod == state.pods.end()) return (*err = "no pod " + to), false;
  const auto& dst = *dst_pod->second;
  const auto& src = *src_pod->second;

  // Judged where the destination's tc program runs.
  const bool here = applied && node.node_name == dst.node_name;
  node.node_name = dst.node_name;
  const Plan compiled = here ? Plan{} : compile(state, node);
  const Plan& plan = here ? *applied : compiled;
  std::string src_sa = namespacedName(src.meta.ns, src.service_account);
  std::string dst_sa = namespacedName(dst.meta.ns, dst.service_account);
  std::string flow = from + " (" + src_sa + ") -> " + to + " (" + dst_sa + ") " +
                     protoName(proto) + "/" + std::to_string(port);
  Explanation e;
  if (!isMeshed(state, dst, node)) {
    e.allowed = true;
    e.summary = "ALLOW " + flow + ": destination is not in the mesh (namespace " +
                dst.meta.ns + " lacks label " + kMeshLabel + "=" + kMeshLabelValue +
                " and is not in --mesh-namespaces)";
    *out = e;
    return true;
  }
  if (auto r = overCapacity(plan, {"Pod", dst.meta.ns, dst.meta.name}); r && !plan.endpoints.count(to)) {
    e.allowed = true;
    e.summary = "ALLOW " + flow + ": the destination pod is not enforced: " + *r;
    *out = e;
    return true;
  }
  if (!plan.endpoints.count(to)) {
    e.allowed = true;
    e.summary = "ALLOW " + flow + ": the destination pod is not enforced (" +
                (dst.host_network ? "host network" : "no pod IP, or not running") + ")";
    *out = e;
    return true;
  }
  uint32_t sid = plan.identities.at(src_sa);
  uint32_t did = plan.identities.at(dst_sa);
  // Step 7 of the lookup order (bpf/tc_policy.bpf.c), as the kernel takes it.
  PolicyVerdict v = judgePolicy(&plan.policy, sid, did, port, static_cast<uint8_t>(proto));
  if (v.match == PolicyMatch::kExactPort || v.match == PolicyMatch::kAllPorts) {
    const RuleOrigin& origin = plan.rules.at(v.rule_id - 1);
    e.allowed = true;
    e.traffic_target = origin.traffic_target;
    e.rule = origin.rule;
    e.summary = "ALLOW " + flow + ": TrafficTarget " + origin.traffic_target + " rule " +
                origin.rule + (v.match == PolicyMatch::kAllPorts ? " (all ports)" : "");
    if (proto == Proto::kTcp && plan.http.count({did, port})) {
      if (!request) {
        e.summary += "; each HTTP request on it is judged by the HTTP rules "
                     "(--method, --path and --header explain one)";
      } else {
        explainHttp(plan, sid, did, port, *request, &e);
        std::string req = request->method + " " + request->path;
        for (const auto& [name, value] : request->headers) req += " [" + name + ": " + value + "]";
        e.summary = std::string(e.allowed ? "ALLOW " : "DENY (403) ") + flow + " " + req + ": " +
                    (e.allowed ? e.details.back().substr(11)  // after "granted by "
                               : "no HTTP rule grants it");
      }
    } else if (request) {
      e.details.push_back("port " + std::to_string(port) +
                          " is not judged by HTTP rules: every request on the connection passes");
    }
    *out = e;
    return true;
  }
  if (v.allowed) {
    e.allowed = true;
    e.summary = "ALLOW " + flow + ": access mode " + accessModeName(node.access_mode) +
                " does not enforce " + dst_sa +
                (node.access_mode == AccessMode::kPerDestination
                     ? " (no valid TrafficTarget names it)"
                     : "");
    *out = e;
    return true;
  }
  for (const auto& [k, tt] : state.traffic_targets) {
    if (namespacedName(tt.destination.ns, tt.destination.name) == dst_sa)
      e.details.push_back(whyNot(state, tt, src_sa, port, proto, plan));
  }
  e.summary = "DENY " + flow + ": " +
              (e.details.empty() ? "no TrafficTarget names " + dst_sa + " as destination"
                                 : "no TrafficTarget rule allows it") +
              " (default deny, access mode " + accessModeName(node.access_mode) + ")";
  *out = e;
  return true;
}

bool explainService(const model::ClusterState& state, const NodeConfig& node,
                    const std::string& service, uint16_t port, Proto proto,
                    std::vector<ServiceExplanation>* out, std::vector<std::string>* notes,
                    std::string* err, const Plan* applied) {
  if (!state.services.count(service)) return (*err = "no Service " + service), false;
  const Plan compiled = applied ? Plan{} : compile(state, node);
  const Plan& plan = applied ? *applied : compiled;
  for (const auto& [k, t] : plan.services) {
    if (t.service != service || t.port != port || t.proto != proto) continue;
    ServiceExplanation e;
    e.vip = t.vip.str() + ":" + std::to_string(port) + "/" + protoName(proto);
    e.split = t.split;
    uint64_t total = 0;
    for (const auto& g : t.groups) total += g.weight;
    for (const auto& g : t.groups) {
      ServiceGroupExplained ge{g.service, g.weight, total ? double(g.weight) / total : 0, {}};
      for (const auto& ep : g.endpoints)
        ge.endpoints.push_back({ep.pod, ep.addr.str() + ":" + std::to_string(ep.port),
                                ge.share / g.endpoints.size()});
      e.groups.push_back(std::move(ge));
    }
    out->push_back(std::move(e));
  }
  std::string ns = service.substr(0, service.find('/'));
  std::string name = service.substr(service.find('/') + 1);
  if (out->empty()) {
    auto r = overCapacity(plan, {"Service", ns, name});
    *err = "Service " + service + (r ? ": " + *r
                                     : " has no ClusterIP port " + std::to_string(port) + "/" +
                                           protoName(proto));
    return false;
  }
  std::set<std::string> splits;  // those whose root is this Service
  for (const auto& [k, ts] : state.traffic_splits)
    if (ts.meta.ns == ns && ts.service == name) splits.insert(ts.meta.name);
  for (const auto& d : plan.diagnostics) {
    if (d.object.kind == "TrafficSplit" && d.object.ns == ns && splits.count(d.object.name))
      notes->push_back(d.str());
  }
  return true;
}

}  // namespace smik::compile
