#include "agent/compile/compile.h"

#include "agent/compile/capacity.h"
#include "agent/compile/services.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>
#include <tuple>

namespace smik::compile {

using model::ClusterState;
using model::ObjectRef;
using model::Pod;
using model::Proto;
using model::TrafficTarget;

const char* accessModeName(AccessMode m) {
  switch (m) {
    case AccessMode::kStrict: return "strict";
    case AccessMode::kPermissive: return "permissive";
    case AccessMode::kPerDestination: return "per-destination";
  }
  return "?";
}

bool parseAccessMode(const std::string& s, AccessMode* out) {
  for (auto m : {AccessMode::kStrict, AccessMode::kPermissive, AccessMode::kPerDestination}) {
    if (s == accessModeName(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

const char* httpRulesName(HttpRulesAtL4 h) {
  switch (h) {
    case HttpRulesAtL4::kGrantNothing: return "deny";
    case HttpRulesAtL4::kGrantAllTcp: return "allow-tcp";
    case HttpRulesAtL4::kEnforce: return "enforce";
  }
  return "?";
}

bool parseHttpRules(const std::string& s, HttpRulesAtL4* out) {
  for (auto h : {HttpRulesAtL4::kGrantNothing, HttpRulesAtL4::kGrantAllTcp, HttpRulesAtL4::kEnforce}) {
    if (s == httpRulesName(h)) {
      *out = h;
      return true;
    }
  }
  return false;
}

namespace {
constexpr const char* kMethodNames[SMIK_HTTP_METHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"};
constexpr uint16_t kAllMethods = (1u << SMIK_HTTP_METHODS) - 1;
}  // namespace

uint16_t httpMethodBits(const std::string& method) {
  if (method == "*") return kAllMethods;
  for (unsigned m = 0; m < SMIK_HTTP_M_OTHER; ++m)
    if (method == kMethodNames[m]) return uint16_t(1u << m);
  return 0;
}

const char* httpMethodName(unsigned m) { return m < SMIK_HTTP_METHODS ? kMethodNames[m] : "?"; }

const char* hostTrafficName(HostTraffic h) { return h == HostTraffic::kPolicy ? "policy" : "allow"; }

bool parseHostTraffic(const std::string& s, HostTraffic* out) {
  for (auto h : {HostTraffic::kAllow, HostTraffic::kPolicy}) {
    if (s == hostTrafficName(h)) {
      *out = h;
      return true;
    }
  }
  return false;
}

std::string Diagnostic::str() const {
  return std::string(level == Level::kInfo ? "info" : "warning") + ": " + object.str() + ": " +
         message;
}

std::string HttpPortPlan::meaning(size_t i) const {
  std::string m = patterns.at(i).regex;
  const uint32_t n = i < needs.size() ? needs[i] : 0;
  for (size_t c = 0; c < headers.size(); ++c)
    if (n & (uint32_t{1} << c)) m += std::string("\0", 1) + headers[c].name + ':' + headers[c].regex;
  return m;
}

bool HttpPortPlan::allows(const http::PatternSet& granted, const http::PatternSet& accepts,
                          uint32_t held) const {
  return http::someCandidateHolds(granted & accepts, needs, held);
}

std::string Plan::identityName(uint32_t id) const {
  switch (id) {
    case SMIK_ID_UNKNOWN: return "unknown";
    case SMIK_ID_HOST: return "host";
    case SMIK_ID_WORLD: return "world";
  }
  for (const auto& [name, v] : identities)
    if (v == id) return name;
  return "id:" + std::to_string(id);
}

std::map<std::string, uint32_t> assignIdentities(const std::set<std::string>& accounts) {
  constexpr uint32_t kSpan = 0x7fffffffu - SMIK_ID_FIRST_DYNAMIC;
  std::map<std::string, uint32_t> ids;
  std::set<uint32_t> used;
  for (const auto& name : accounts) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (unsigned char c : name) h = (h ^ c) * 16777619u;
    uint32_t id = SMIK_ID_FIRST_DYNAMIC + h % kSpan;
    while (used.count(id)) id = SMIK_ID_FIRST_DYNAMIC + (id - SMIK_ID_FIRST_DYNAMIC + 1) % kSpan;
    used.insert(id);
    ids[name] = id;
  }
  return ids;
}

bool isMeshed(const ClusterState& state, const Pod& pod, const NodeConfig& node) {
  if (node.mesh_all) return true;
  for (const auto& m : node.mesh_namespaces)
    if (m == pod.meta.ns) return true;
  auto ns = state.namespaces.find(pod.meta.ns);
  if (ns == state.namespaces.end()) return false;
  auto label = ns->second.meta.labels.find(kMeshLabel);
  return label != ns->second.meta.labels.end() && label->second == kMeshLabelValue;
}

namespace {

bool isLocal(const Pod& pod, const NodeConfig& node) {
  // An empty node name compiles the cluster view (CLI): every pod is local.
  return node.node_name.empty() || pod.node_name == node.node_name;
}

bool podHoldsIp(const Pod& pod) {
  return !pod.host_network && pod.phase != "Succeeded" && pod.phase != "Failed";
}

ObjectRef ttRef(const TrafficTarget& tt) { return {"TrafficTarget", tt.meta.ns, tt.meta.name}; }

struct Grant {
  Proto proto;
  uint16_t port;  // 0 = all ports
};

class Compiler {
 public:
  Compiler(const ClusterState& s, const NodeConfig& n) : state_(s), node_(n) {}

  Plan run() {
    assignAll();
    mapAddresses();
    collectEndpoints();
    if (node_.access_mode != AccessMode::kPermissive) {
      for (const auto& [name, tt] : state_.traffic_targets) grantTarget(tt);
    }
    markEnforced();
    fillPolicy(std::move(grants_), node_.capacity, &plan_);
    finishHttp();
    compileServices(state_, node_, &plan_);
    // The rest of the capacity check: nothing reaches a map it does not fit.
    fitEndpoints(state_, node_.capacity, &plan_);
    fitAddresses(state_, node_, &plan_);
    fitServices(state_, node_.capacity, &plan_);
    return std::move(plan_);
  }

 private:
  void diag(const ObjectRef& ref, std::string msg,
            Diagnostic::Level level = Diagnostic::Level::kWarning) {
    plan_.diagnostics.push_back({level, ref, std::move(msg)});
  }

  void assignAll() {
    std::set<std::string> accounts;
    for (const auto& [k, sa] : state_.service_accounts) accounts.insert(k);
    for (const auto& [k, pod] : state_.pods) accounts.insert(namespacedName(pod->meta.ns, pod->service_account));
    for (const auto& [k, tt] : state_.traffic_targets) {
      accounts.insert(namespacedName(tt.destination.ns, tt.destination.name));
      for (const auto& s : tt.sources)
        if (!s.isHost()) accounts.insert(namespacedName(s.ns, s.name));
    }
    plan_.identities = assignIdentities(accounts);
  }

  uint32_t idOf(const std::string& ns, const std::string& name) const {
    return plan_.identities.at(namespacedName(ns, name));
  }
  uint32_t idOf(const model::Subject& s) const { return s.isHost() ? SMIK_ID_HOST : idOf(s.ns, s.name); }

  // Every pod address, then the node's own, collected in that order and
  // sorted once (the plan's map is a sorted vector): of a shared address
  // the first pod by name keeps it, a node address overrides any pod's,
  // and the diagnostics come in pod order, as one insert at a time gave.
  void mapAddresses() {
    struct Claim {
      Addr addr;
      smik_ip_info info;
      const Pod* pod;         // null: a node address
      const std::string* ip;  // as the pod writes it
    };
    std::vector<Claim> claims;
    claims.reserve(state_.pods.size() + node_.host_addrs.size());
    for (const auto& [k, pod_ptr] : state_.pods) {
      const auto& pod = *pod_ptr;
      if (!podHoldsIp(pod)) continue;
      for (const auto& ip : pod.ips) {
        Addr a;
        if (!parseAddr(ip, &a)) continue;  // the parser already rejected it
        smik_ip_info info{idOf(pod.meta.ns, pod.service_account),
                          isLocal(pod, node_) ? uint32_t{SMIK_IP_F_LOCAL} : 0u};
        claims.push_back({a, info, &pod, &ip});
      }
    }
    for (const auto& ip : node_.host_addrs) {
      Addr a;
      if (parseAddr(ip, &a)) claims.push_back({a, smik_ip_info{SMIK_ID_HOST, 0}, nullptr, nullptr});
    }
    // Stable: equal addresses stay in claim order (pods by name, then the node's).
    std::vector<uint32_t> order(claims.size());
    for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return claims[a].addr < claims[b].addr; });
    std::vector<FlatMap<Addr, smik_ip_info>::value_type> entries;
    entries.reserve(order.size());
    std::vector<uint32_t> refused;  // claims of pods that lost their address, by claim index
    for (size_t i = 0; i < order.size();) {
      const Claim& first = claims[order[i]];
      smik_ip_info kept = first.info;
      size_t j = i + 1;
      for (; j < order.size() && claims[order[j]].addr == first.addr; j++) {
        const Claim& c = claims[order[j]];
        if (!c.pod) {
          kept = c.info;  // the node's own address
        } else if (first.pod && !(c.info == first.info)) {
          refused.push_back(order[j]);
        }
      }
      entries.emplace_back(first.addr, kept);
      i = j;
    }
    std::sort(refused.begin(), refused.end());
    for (uint32_t r : refused) {
      const Pod& pod = *claims[r].pod;
      diag({"Pod", pod.meta.ns, pod.meta.name},
           "IP " + *claims[r].ip + " is also claimed by another pod; the first (by name) keeps it");
    }
    // Already sorted and one per address: adopted as it is.
    plan_.ip_identity =
        FlatMap<Addr, smik_ip_info>::fromUnsorted(std::move(entries), FlatMap<Addr, smik_ip_info>::Keep::kFirst);
  }

  void collectEndpoints() {
    for (const auto& [k, pod_ptr] : state_.pods) {
      const auto& pod = *pod_ptr;
      if (!isLocal(pod, node_) || !podHoldsIp(pod) || !isMeshed(state_, pod, node_)) continue;
      LocalEndpoint ep{k, idOf(pod.meta.ns, pod.service_account), {}};
      for (const auto& ip : pod.ips) {
        Addr a;
        if (parseAddr(ip, &a)) ep.addrs.push_back(a);
      }
      if (ep.addrs.empty()) continue;  // no IP yet: nothing to hook
      if (ep.addrs.size() > SMIK_ENDPOINT_ADDRS) {
        diag({"Pod", pod.meta.ns, pod.meta.name}, "more than 4 IPs; only the first 4 may send");
      }
      local_identities_.insert(ep.identity);
      for (const auto& cp : pod.container_ports)
        if (cp.proto == Proto::kTcp) served_ports_[ep.identity].insert(cp.port);
      plan_.endpoints.emplace(k, std::move(ep));
    }
  }

  // Structural validity (README: SMI semantics): decides per-destination mode
  // too, so it runs for every TT, local or not.
  bool valid(const TrafficTarget& tt) {
    if (tt.destination.ns != tt.meta.ns) {
      diag(ttRef(tt), "destination namespace " + tt.destination.ns +
                          " differs from the TrafficTarget's namespace; ignored");
      return false;
    }
    if (tt.rules.empty()) {
      diag(ttRef(tt), "no rules: grants nothing");
      return false;
    }
    if (tt.sources.empty()) {
      diag(ttRef(tt), "no sources: grants nothing");
      return false;
    }
    return true;
  }

  // Ports a route grants after the legacy destination.port narrowing.
  std::vector<uint16_t> narrowed(const TrafficTarget& tt, const std::vector<uint16_t>& ports,
                                 const std::string& rule) {
    if (!tt.legacy_port) return ports.empty() ? std::vector<uint16_t>{0} : ports;
    for (uint16_t p : ports)
      if (p == *tt.legacy_port) return {p};
    if (ports.empty()) return {*tt.legacy_port};
    diag(ttRef(tt), rule + " has no port " + std::to_string(*tt.legacy_port) +
                        " (destination.port): grants nothing");
    return {};
  }

  void grantTarget(const TrafficTarget& tt) {
    if (!valid(tt)) return;
    bool names_host = std::any_of(tt.sources.begin(), tt.sources.end(),
                                  [](const auto& s) { return s.isHost(); });
    if (names_host && node_.host_traffic == HostTraffic::kAllow)
      diag(ttRef(tt), "source Host: host traffic passes anyway (--host-traffic=allow)",
           Diagnostic::Level::kInfo);
    uint32_t dst = idOf(tt.destination.ns, tt.destination.name);
    enforced_by_target_.insert(dst);
    if (!local_identities_.count(dst)) return;  // no pod of it here

    bool has_l4_rule = false;
    for (const auto& r : tt.rules) has_l4_rule |= r.kind != "HTTPRouteGroup";
    const bool enforce_http = node_.http_rules == HttpRulesAtL4::kEnforce;
    TargetGrants out{ttRef(tt), tt.meta.creation_timestamp, {}};

    for (const auto& rule : tt.rules) {
      std::string label = rule.kind + " " + rule.name;
      std::vector<Grant> grants;
      std::map<uint16_t, std::vector<L7Match>> l7;  // port -> what it grants there
      if (rule.kind == "TCPRoute" || rule.kind == "UDPRoute") {
        bool tcp = rule.kind == "TCPRoute";
        const auto& routes = tcp ? state_.tcp_routes : state_.udp_routes;
        auto it = routes.find(namespacedName(tt.meta.ns, rule.name));
        if (it == routes.end()) {
          diag(ttRef(tt), label + " not found in namespace " + tt.meta.ns + ": grants nothing");
          continue;
        }
        for (uint16_t p : narrowed(tt, it->second.ports, label))
          grants.push_back({tcp ? Proto::kTcp : Proto::kUdp, p});
      } else if (enforce_http) {
        l7 = httpMatches(tt, rule, label, dst);
        for (const auto& [port, matches] : l7) grants.push_back({Proto::kTcp, port});
      } else {
        if (!httpGrants(tt, rule, has_l4_rule, label, &grants)) continue;
      }
      if (grants.empty()) continue;
      plan_.rules.push_back({namespacedName(tt.meta.ns, tt.meta.name), label});
      uint32_t rule_id = plan_.rules.size();
      for (const auto& g : grants)
        if (g.proto == Proto::kTcp && rule.kind == "TCPRoute")
          for (const auto& src : tt.sources) tcp_grants_.push_back({idOf(src), dst, g.port, rule_id});
      for (const auto& [port, matches] : l7) {
        auto& hp = http_[{dst, port}];
        for (const auto& src : tt.sources)
          for (const auto& m : matches)
            hp.push_back({idOf(src), rule_id, m.name, m.methods, m.regex, m.headers});
      }
      for (const auto& src : tt.sources) {
        uint32_t sid = idOf(src);
        for (const auto& g : grants) {
          smik_policy_key k{sid, dst, g.port, static_cast<uint8_t>(g.proto), 0};
          out.entries.emplace_back(k, smik_policy_value{rule_id, 0});  // first rule keeps it
        }
      }
    }
    if (!out.entries.empty()) grants_.push_back(std::move(out));
  }

  // HTTPRouteGroup at L4 (README: SMI semantics): paths and methods are invisible here.
  bool httpGrants(const TrafficTarget& tt, const model::TrafficRule& rule, bool has_l4_rule,
                  const std::string& label, std::vector<Grant>* grants) {
    auto it = state_.http_route_groups.find(namespacedName(tt.meta.ns, rule.name));
    if (it == state_.http_route_groups.end()) {
      diag(ttRef(tt), label + " not found in namespace " + tt.meta.ns + ": grants nothing");
      return false;
    }
    for (const auto& m : rule.matches) {
      bool known = false;
      for (const auto& hm : it->second.matches) known |= hm.name == m;
      if (!known) diag(ttRef(tt), label + " has no match named " + m);
    }
    if (has_l4_rule) {
      diag(ttRef(tt), label + ": path/method restrictions are not enforced at L4; "
                      "the TCPRoute ports decide", Diagnostic::Level::kInfo);
      return false;
    }
    if (node_.http_rules == HttpRulesAtL4::kGrantNothing) {
      diag(ttRef(tt), label + ": HTTP rules are L7 and grant nothing at L4 "
                      "(--http-rules=allow-tcp grants all TCP ports)");
      return false;
    }
    diag(ttRef(tt), label + ": L7 rule enforced at L4 as all TCP ports",
         Diagnostic::Level::kInfo);
    for (uint16_t p : narrowed(tt, {}, label)) grants->push_back({Proto::kTcp, p});
    return true;
  }

  // One match a rule grants, before the port's patterns are numbered.
  struct L7Match {
    std::string name;
    uint16_t methods = 0;
    std::string regex;
    std::vector<http::HeaderCondition> headers;  // sorted; all must hold
  };
  struct L7Pending {
    uint32_t src_id, rule_id;
    std::string match;
    uint16_t methods;
    std::string regex;
    std::vector<http::HeaderCondition> headers = {};
  };

  // The ports an HTTP rule is judged on (README: SMI semantics):
  // destination.port when the TrafficTarget names one, else every TCP port
  // the destination's local pods declare (OSM likewise applies a
  // TrafficTarget's HTTP routes on every inbound port of the destination).
  std::vector<uint16_t> httpPorts(const TrafficTarget& tt, uint32_t dst, const std::string& label) {
    if (tt.legacy_port) return {*tt.legacy_port};
    auto it = served_ports_.find(dst);
    if (it == served_ports_.end() || it->second.empty()) {
      diag(ttRef(tt), label + ": the destination's pods declare no TCP containerPort, so no port "
                      "carries its requests: grants nothing");
      return {};
    }
    return {it->second.begin(), it->second.end()};
  }

  // HTTPRouteGroup under --http-rules=enforce: the matches it grants, per port.
  std::map<uint16_t, std::vector<L7Match>> httpMatches(const TrafficTarget& tt,
                                                      const model::TrafficRule& rule,
                                                      const std::string& label, uint32_t dst) {
    std::map<uint16_t, std::vector<L7Match>> out;
    auto it = state_.http_route_groups.find(namespacedName(tt.meta.ns, rule.name));
    if (it == state_.http_route_groups.end()) {
      diag(ttRef(tt), label + " not found in namespace " + tt.meta.ns + ": grants nothing");
      return out;
    }
    for (const auto& m : rule.matches) {
      bool known = false;
      for (const auto& hm : it->second.matches) known |= hm.name == m;
      if (!known) diag(ttRef(tt), label + " has no match named " + m);
    }
    std::vector<L7Match> matches;
    for (const auto& hm : it->second.matches) {
      if (!rule.matches.empty() &&
          std::find(rule.matches.begin(), rule.matches.end(), hm.name) == rule.matches.end())
        continue;
      uint16_t methods = 0;
      for (const auto& name : hm.methods) methods |= httpMethodBits(name);
      if (hm.methods.empty()) methods = kAllMethods;  // SMI: no methods = any method
      // Header names are case-insensitive: the kernel lowercases them as it reads.
      std::set<http::HeaderCondition> headers;
      for (const auto& [name, regex] : hm.headers) {
        std::string lower = name;
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        headers.insert({lower, regex});
      }
      matches.push_back({hm.name, methods, hm.path_regex, {headers.begin(), headers.end()}});
    }
    if (matches.empty()) return out;
    for (uint16_t port : httpPorts(tt, dst, label)) out[port] = matches;
    return out;
  }

  // Numbers each judged port's patterns, builds its DFA and its grants. A
  // source the port is open to at L4 by a TCPRoute (or the node itself, when
  // host traffic passes unjudged) may send it any request.
  void finishHttp() {
    if (http_.empty()) return;
    for (const auto& t : tcp_grants_)
      for (auto& [key, pending] : http_)
        if (key.first == t.dst && (t.port == 0 || t.port == key.second))
          pending.push_back({t.src, t.rule_id, "", kAllMethods, ""});
    for (auto& [key, pending] : http_) {
      if (node_.host_traffic == HostTraffic::kAllow)
        pending.push_back({SMIK_ID_HOST, 0, "", kAllMethods, ""});
      // A grant whose L4 entry did not fit the policy map is no grant.
      // (key by name: clang 14 cannot capture a structured binding.)
      std::erase_if(pending, [&, key = key](const L7Pending& p) {
        if (p.src_id == SMIK_ID_HOST && node_.host_traffic == HostTraffic::kAllow) return false;
        return !plan_.policy.count(smik_policy_key{p.src_id, key.first, key.second,
                                                   static_cast<uint8_t>(Proto::kTcp), 0}) &&
               !plan_.policy.count(smik_policy_key{p.src_id, key.first, 0,
                                                   static_cast<uint8_t>(Proto::kTcp), 0});
      });
      HttpPortPlan hp;
      // A bit per (path regex, header conditions): a rule's methods, path
      // and headers stay paired.
      using Shape = std::pair<std::string, std::vector<http::HeaderCondition>>;
      std::set<Shape> shapes;
      std::set<http::HeaderCondition> conditions;
      for (const auto& p : pending) {
        shapes.insert({p.regex, p.headers});
        conditions.insert(p.headers.begin(), p.headers.end());
      }
      hp.headers.assign(conditions.begin(), conditions.end());
      for (const auto& [regex, headers] : shapes) {
        hp.patterns.push_back({regex, http::Anchor::kPrefix});
        uint32_t needs = 0;
        for (const auto& h : headers)  // past 32 conditions the header DFA refuses them below
          if (auto c = size_t(std::distance(conditions.begin(), conditions.find(h)));
              c < http::kMaxHeaderConditions)
            needs |= uint32_t{1} << c;
        hp.needs.push_back(needs);
      }
      auto bit = [&](const L7Pending& p) {
        return size_t(std::distance(shapes.begin(), shapes.find({p.regex, p.headers})));
      };
      auto dfa = http::compileDfa(hp.patterns);
      if (std::holds_alternative<http::Dfa>(dfa) && !hp.headers.empty()) {
        auto header_dfa = http::compileHeaderDfa(hp.headers);
        if (auto* e = std::get_if<http::RegexError>(&header_dfa))
          hp.error = "header conditions: " + e->why;
        else
          hp.header_dfa = std::move(std::get<http::Dfa>(header_dfa));
      }
      if (auto* e = std::get_if<http::RegexError>(&dfa)) hp.error = e->describe(hp.patterns);
      if (!hp.error.empty()) {
        hp.dfa = {};
        hp.header_dfa = {};
        std::set<uint32_t> rules;
        for (const auto& p : pending) rules.insert(p.rule_id);
        for (uint32_t r : rules) {
          if (r == 0) continue;
          const auto& origin = plan_.rules[r - 1];
          diag({"TrafficTarget", nsOf(origin.traffic_target), nameOf(origin.traffic_target)},
               origin.rule + ": the regexes of port " + std::to_string(key.second) +
                   " cannot be judged together (" + hp.error +
                   "): every request to that port is denied");
        }
      } else {
        hp.dfa = std::move(std::get<http::Dfa>(dfa));
        for (const auto& p : pending) {
          size_t b = bit(p);
          auto& g = hp.grants[p.src_id];
          for (unsigned m = 0; m < SMIK_HTTP_METHODS; ++m)
            if (p.methods & (1u << m)) g.patterns[m] |= abi::httpBit(unsigned(b));
          hp.origins.push_back({p.src_id, p.rule_id, p.match, p.methods, b});
        }
      }
      plan_.http.emplace(key, std::move(hp));
    }
  }

  static std::string nsOf(const std::string& nn) { return nn.substr(0, nn.find('/')); }
  static std::string nameOf(const std::string& nn) { return nn.substr(nn.find('/') + 1); }

  void markEnforced() {
    for (uint32_t id : local_identities_) {
      bool enforced = node_.access_mode == AccessMode::kStrict ||
                      (node_.access_mode == AccessMode::kPerDestination &&
                       enforced_by_target_.count(id));
      if (!enforced) continue;
      smik_policy_key meta{SMIK_ID_META, id, 0, 0, 0};
      // In the policy itself, not a separate switch: a swap changes both at once.
      uint32_t flags = SMIK_POL_F_ENFORCED;
      if (node_.host_traffic == HostTraffic::kPolicy) flags |= SMIK_POL_F_HOST_JUDGED;
      plan_.policy[meta] = smik_policy_value{0, flags};
    }
  }

  const ClusterState& state_;
  const NodeConfig& node_;
  Plan plan_;
  std::set<uint32_t> local_identities_;
  std::set<uint32_t> enforced_by_target_;
  std::map<uint32_t, std::set<uint16_t>> served_ports_;  // local identity -> TCP container ports
  std::map<std::pair<uint32_t, uint16_t>, std::vector<L7Pending>> http_;
  struct TcpGrant {
    uint32_t src, dst;
    uint16_t port;  // 0 = all
    uint32_t rule_id;
  };
  std::vector<TcpGrant> tcp_grants_;  // TCPRoute grants: whole ports, also where HTTP is judged
  std::vector<TargetGrants> grants_;  // into plan_.policy once all are known (capacity)
};

}  // namespace

Plan compile(const ClusterState& state, const NodeConfig& node) {
  return Compiler(state, node).run();
}

}  // namespace smik::compile
