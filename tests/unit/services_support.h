// Manifests and plan views of the Services and TrafficSplit tests
// (tests/unit/services_*_test.cpp): apps with pods and a ClusterIP, splits,
// and the service tables a Plan holds, down to the kernel's slot arithmetic.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/compile/compile.h"
#include "agent/model/parse.h"
#include "maps/desired.h"
#include "maps/maps.h"
#include "tests/unit/plan_diagnostics.h"
#include "tests/unit/state_of.h"

namespace smik::compile {

using model::ClusterState;
using model::ObjectRef;
using model::Proto;

// ---- manifests ----------------------------------------------------------------

using smik::testing::stateOf;

// A Service in `ns`. `ip` is a clusterIP ("None" = headless) or, when it
// starts with '[', a clusterIPs list. `selector` is a YAML map; "" leaves the
// selector out. `ports` is a YAML list.
inline std::string serviceIn(const std::string& ns, const std::string& name, const std::string& ip,
                      const std::string& ports, const std::string& selector,
                      const std::string& extra_spec = "") {
  std::string s = "---\napiVersion: v1\nkind: Service\nmetadata: {name: " + name +
                  ", namespace: " + ns + "}\nspec:\n";
  s += ip.front() == '[' ? "  clusterIPs: " + ip + "\n" : "  clusterIP: " + ip + "\n";
  if (!selector.empty()) s += "  selector: " + selector + "\n";
  s += "  ports: " + ports + "\n";
  if (!extra_spec.empty()) s += "  " + extra_spec + "\n";
  return s;
}

constexpr const char* kHttp = "[{name: http, port: 80}]";

// A Service in prod selecting app=<name>.
inline std::string service(const std::string& name, const std::string& ip,
                    const std::string& ports = kHttp) {
  return serviceIn("prod", name, ip, ports, "{app: " + name + "}");
}

// A pod; `ips` is one IP or, when it starts with '[', a podIPs list of IPs.
inline std::string podIn(const std::string& ns, const std::string& name, const std::string& app,
                  const std::string& ips, const std::string& extra_spec = "",
                  const std::string& phase = "Running") {
  std::string status = "{phase: " + phase + ", ";
  if (ips.front() == '[') {
    std::string list;
    std::string rest = ips.substr(1, ips.size() - 2);
    size_t start = 0;
    while (start <= rest.size()) {
      size_t comma = rest.find(',', start);
      std::string ip = rest.substr(start, comma == std::string::npos ? std::string::npos
                                                                      : comma - start);
      while (!ip.empty() && ip.front() == ' ') ip.erase(0, 1);
      list += (list.empty() ? "" : ", ") + std::string("{ip: \"") + ip + "\"}";
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    status += "podIPs: [" + list + "]}";
  } else {
    status += "podIP: \"" + ips + "\"}";
  }
  return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: " + ns +
         ", labels: {app: " + app + "}}\nspec: {nodeName: n1" +
         (extra_spec.empty() ? "" : ", " + extra_spec) + "}\nstatus: " + status + "\n";
}

inline std::string pod(const std::string& name, const std::string& app, const std::string& ips,
                const std::string& extra_spec = "") {
  return podIn("prod", name, app, ips, extra_spec);
}

// A Service `name` (selector app=name, port 80) with one running pod per IP.
inline std::string app(const std::string& name, const std::string& vip,
                const std::vector<std::string>& pod_ips, const std::string& ports = kHttp) {
  std::string s = service(name, vip, ports);
  for (size_t i = 0; i < pod_ips.size(); i++)
    s += pod(name + "-" + std::to_string(i), name, pod_ips[i]);
  return s;
}

// An EndpointSlice of Service `svc` in prod; `endpoints` and `ports` are YAML lists.
inline std::string slice(const std::string& name, const std::string& svc, const std::string& type,
                  const std::string& endpoints, const std::string& ports) {
  return "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: " + name +
         ", namespace: prod, labels: {kubernetes.io/service-name: " + svc +
         "}}\naddressType: " + type + "\nendpoints: " + endpoints + "\nports: " + ports + "\n";
}

using Backends = std::vector<std::pair<std::string, std::string>>;  // service, weight

// A TrafficSplit in prod. `meta_extra` is added to metadata ("creationTimestamp: ..."),
// `spec_extra` to spec ("matches: [...]").
inline std::string split(const std::string& name, const std::string& root, const Backends& backends,
                  const std::string& version = "v1alpha4", const std::string& meta_extra = "",
                  const std::string& spec_extra = "") {
  std::string s = "---\napiVersion: split.smi-spec.io/" + version +
                  "\nkind: TrafficSplit\nmetadata: {name: " + name + ", namespace: prod" +
                  (meta_extra.empty() ? "" : ", " + meta_extra) + "}\nspec:\n  service: " + root +
                  "\n";
  if (!spec_extra.empty()) s += "  " + spec_extra + "\n";
  s += "  backends:\n";
  for (const auto& [svc, w] : backends) s += "  - {service: " + svc + ", weight: " + w + "}\n";
  if (backends.empty()) s = s.substr(0, s.size() - 1) + " []\n";
  return s;
}

inline NodeConfig node() {
  NodeConfig n;
  n.node_name = "n1";
  return n;
}

inline Plan compiled(const std::string& yaml) { return compile(stateOf(yaml), node()); }

// ---- plan views ---------------------------------------------------------------

inline std::vector<ServiceTable> tablesFor(const Plan& p, const std::string& svc, uint16_t port,
                                    Proto proto = Proto::kTcp) {
  std::vector<ServiceTable> out;
  for (const auto& [k, t] : p.services) {
    EXPECT_EQ(k.port, t.port);
    EXPECT_EQ(k.proto, static_cast<uint8_t>(t.proto));
    EXPECT_EQ(k.family, t.vip.family);
    if (t.service == svc && t.port == port && t.proto == proto) out.push_back(t);
  }
  return out;
}

// The one table of svc:port/proto (fails the test when there is not exactly one).
inline ServiceTable tableOf(const Plan& p, const std::string& svc, uint16_t port,
                     Proto proto = Proto::kTcp) {
  auto ts = tablesFor(p, svc, port, proto);
  EXPECT_EQ(ts.size(), 1u) << "tables of " << svc << " " << port;
  return ts.empty() ? ServiceTable{} : ts.front();
}

inline std::vector<std::string> groupServices(const ServiceTable& t) {
  std::vector<std::string> out;
  for (const auto& g : t.groups) out.push_back(g.service);
  return out;
}

inline std::set<std::string> addrsOf(const ServiceGroup& g) {
  std::set<std::string> out;
  for (const auto& e : g.endpoints) out.insert(e.addr.str() + ":" + std::to_string(e.port));
  return out;
}

inline std::set<std::string> allAddrs(const ServiceTable& t) {
  std::set<std::string> out;
  for (const auto& g : t.groups)
    for (const auto& a : addrsOf(g)) out.insert(a);
  return out;
}

// Probability of each endpoint ("ip:port") as the kernel's pick() computes it
// from the smik_svc_value: group g for r < cum[g] (r uniform in [0, total)),
// then one of its count[g] endpoints from offset[g] uniformly.
inline std::map<std::string, double> kernelProbabilities(const ServiceTable& t) {
  const maps::SvcTable kt = maps::svcTable(t);
  const smik_svc_value v = maps::svcValue(kt, 0);
  std::vector<smik_backend> flat;
  for (const auto& g : kt.groups) flat.insert(flat.end(), g.endpoints.begin(), g.endpoints.end());
  std::map<std::string, double> out;
  if (v.total == 0) return out;
  uint32_t prev = 0;
  for (int g = 0; g < v.ngroups; g++) {
    const double share = double(v.cum[g] - prev) / v.total;
    prev = v.cum[g];
    EXPECT_GT(v.count[g], 0);
    for (int i = 0; i < v.count[g]; i++) {
      EXPECT_LT(size_t(v.offset[g] + i), flat.size());
      if (size_t(v.offset[g] + i) >= flat.size()) continue;
      const smik_backend& b = flat[v.offset[g] + i];
      Addr a;
      a.family = b.family;
      std::memcpy(a.bytes.data(), b.addr, 16);
      out[a.str() + ":" + std::to_string(b.port)] += share / v.count[g];
    }
  }
  return out;
}

// Share of each group's Service as the kernel's cumulative weights give it.
inline std::map<std::string, double> kernelShares(const ServiceTable& t) {
  const smik_svc_value v = maps::svcValue(maps::svcTable(t), 0);
  std::map<std::string, double> out;
  uint32_t prev = 0;
  for (int g = 0; g < v.ngroups; g++) {
    out[t.groups[g].service] += v.total ? double(v.cum[g] - prev) / v.total : 0;
    prev = v.cum[g];
  }
  return out;
}

// The messages of the diagnostics about one object (no level).
inline std::vector<std::string> messagesFor(const Plan& p, const ObjectRef& ref) {
  std::vector<std::string> out;
  for (const auto& d : p.diagnostics)
    if (d.object == ref) out.push_back(d.message);
  return out;
}

inline ObjectRef splitRef(const std::string& name) { return {"TrafficSplit", "prod", name}; }

// Root "web" (10.96.0.1, two pods) and backends v1 (one pod), v2 (three pods).
inline std::string canary() {
  return app("web", "10.96.0.1", {"10.0.0.1", "10.0.0.2"}) +
         app("web-v1", "10.96.0.11", {"10.0.1.1"}) +
         app("web-v2", "10.96.0.12", {"10.0.2.1", "10.0.2.2", "10.0.2.3"});
}

}  // namespace smik::compile
