// Manifests and plan views of the compiler tests (tests/unit/compile_*_test.cpp):
// the YAML of pods, routes and TrafficTargets, and the policy a Plan holds
// as readable strings.
#pragma once

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/datapath/system.h"
#include "agent/model/parse.h"
#include "tests/unit/plan_diagnostics.h"
#include "tests/unit/state_of.h"

namespace smik::compile {

using model::ClusterState;
using model::Proto;

// ---- manifests ----------------------------------------------------------------

using smik::testing::stateFrom;
using smik::testing::stateOf;

inline std::string meshedNs(const std::string& name) {
  return "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: " + name +
         ", labels: {smik.io/mesh: enabled}}\n";
}

inline std::string plainNs(const std::string& name, const std::string& labels = "{}") {
  return "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + ", labels: " + labels +
         "}\n";
}

inline std::string serviceAccount(const std::string& ns, const std::string& name) {
  return "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: " + name +
         ", namespace: " + ns + "}\n";
}

// A running pod; an empty `sa` leaves serviceAccountName out, an empty `node`
// leaves nodeName out. `status` replaces the default status map.
inline std::string pod(const std::string& ns, const std::string& name, const std::string& sa,
                const std::string& node, const std::string& ip, const std::string& extra_spec = "",
                const std::string& status = "") {
  std::string spec;
  if (!sa.empty()) spec += "serviceAccountName: " + sa;
  if (!node.empty()) spec += (spec.empty() ? "" : ", ") + std::string("nodeName: ") + node;
  if (!extra_spec.empty()) spec += (spec.empty() ? "" : ", ") + extra_spec;
  return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: " + ns +
         "}\nspec: {" + spec +
         "}\nstatus: " + (status.empty() ? "{phase: Running, podIP: " + ip + "}" : status) + "\n";
}

// specs v1alpha4 routes; `ports` is a YAML list such as "[80, 8080]" or "[]".
inline std::string l4Route(const std::string& kind, const std::string& ns, const std::string& name,
                    const std::string& ports) {
  return "---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: " + kind +
         "\nmetadata: {name: " + name + ", namespace: " + ns +
         "}\nspec: {matches: {ports: " + ports + "}}\n";
}
inline std::string tcpRoute(const std::string& ns, const std::string& name,
                            const std::string& ports) {
  return l4Route("TCPRoute", ns, name, ports);
}
inline std::string udpRoute(const std::string& ns, const std::string& name,
                            const std::string& ports) {
  return l4Route("UDPRoute", ns, name, ports);
}

inline std::string httpGroup(const std::string& ns, const std::string& name) {
  return "---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: " +
         name + ", namespace: " + ns +
         "}\nspec:\n  matches:\n  - {name: everything, pathRegex: '.*', methods: ['*']}\n";
}

inline std::string rule(const std::string& kind, const std::string& name) {
  return "{kind: " + kind + ", name: " + name + "}";
}
inline std::string source(const std::string& name, const std::string& ns = "") {
  return "{kind: ServiceAccount, name: " + name + (ns.empty() ? "" : ", namespace: " + ns) + "}";
}

// access v1alpha3 TrafficTarget in `ns`; `rules`/`sources` are YAML lists.
inline std::string trafficTarget(const std::string& ns, const std::string& name,
                                 const std::string& dst, const std::string& rules,
                                 const std::string& sources, const std::string& dst_ns = "") {
  return "---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: " +
         name + ", namespace: " + ns +
         "}\nspec:\n  destination: {kind: ServiceAccount, name: " + dst +
         ", namespace: " + (dst_ns.empty() ? ns : dst_ns) + "}\n  rules: " + rules +
         "\n  sources: " + sources + "\n";
}

// The common TrafficTarget: in prod, to ServiceAccount dst, one rule (kind,
// route), one source ServiceAccount.
inline std::string grant(const std::string& name, const std::string& dst, const std::string& kind,
                         const std::string& route, const std::string& src) {
  return trafficTarget("prod", name, dst, "[" + rule(kind, route) + "]", "[" + source(src) + "]");
}

// access v1alpha2 TrafficTarget with destination.port (`port` empty: none).
inline std::string legacyTarget(const std::string& route, const std::string& port) {
  return "---\napiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\n"
         "metadata: {name: legacy, namespace: prod}\nspec:\n"
         "  destination: {kind: ServiceAccount, name: server" +
         (port.empty() ? "" : ", port: " + port) + "}\n  rules: [" + rule("TCPRoute", route) +
         "]\n  sources: [" + source("client") + "]\n";
}

// Meshed namespace prod with a server and a client pod on node n1.
inline std::string base() {
  return meshedNs("prod") + pod("prod", "server-0", "server", "n1", "10.0.0.10") +
         pod("prod", "client-0", "client", "n1", "10.0.0.20");
}

// client -> server on TCPRoute web (`ports`).
inline std::string clientToServerTcp(const std::string& ports) {
  return tcpRoute("prod", "web", ports) + grant("allow-web", "server", "TCPRoute", "web", "client");
}

inline NodeConfig node(AccessMode mode = AccessMode::kStrict, const std::string& name = "n1") {
  NodeConfig n;
  n.node_name = name;
  n.access_mode = mode;
  return n;
}

// ---- plan views ---------------------------------------------------------------

// Allow entries as "src -> dst PROTO/port" ("*" = all ports of PROTO).
inline std::set<std::string> grants(const Plan& p) {
  std::set<std::string> out;
  for (const auto& [k, v] : p.policy) {
    if (k.src_id == SMIK_ID_META) continue;
    const std::string proto = k.proto == SMIK_PROTO_TCP   ? "TCP"
                              : k.proto == SMIK_PROTO_UDP ? "UDP"
                                                          : "proto" + std::to_string(k.proto);
    out.insert(p.identityName(k.src_id) + " -> " + p.identityName(k.dst_id) + " " + proto + "/" +
               (k.dport == 0 ? "*" : std::to_string(k.dport)));
  }
  return out;
}

// Destinations with a meta entry; fails the test on a malformed one.
inline std::set<std::string> enforced(const Plan& p) {
  std::set<std::string> out;
  for (const auto& [k, v] : p.policy) {
    if (k.src_id != SMIK_ID_META) continue;
    EXPECT_EQ(k.dport, 0);
    EXPECT_EQ(k.proto, 0);
    EXPECT_EQ(v.rule_id, 0u);
    EXPECT_EQ(v.flags, uint32_t{SMIK_POL_F_ENFORCED});
    out.insert(p.identityName(k.dst_id));
  }
  return out;
}

inline std::set<std::string> endpointsOf(const Plan& p) {
  std::set<std::string> out;
  for (const auto& [name, ep] : p.endpoints) out.insert(name);
  return out;
}

inline model::ObjectRef ttRef(const std::string& ns, const std::string& name) {
  return {"TrafficTarget", ns, name};
}

inline Addr addr(const std::string& text) {
  Addr a;
  EXPECT_TRUE(parseAddr(text, &a)) << text;
  return a;
}

const std::set<std::string> kNone;

}  // namespace smik::compile
