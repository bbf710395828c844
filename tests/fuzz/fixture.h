// What the HTTP and peer fuzz targets answer from: a small cluster in the
// metrics store (pods with owners in two namespaces, a split), so that
// requests for real objects reach the code that renders them.
#pragma once

#include <cstring>
#include <string>

#include "agent/compile/compile.h"
#include "agent/model/parse.h"
#include "agent/telemetry/store.h"

namespace smik::fuzz {

inline const telemetry::Store& store() {
  static const telemetry::Store* s = [] {
    auto* st = new telemetry::Store(600);
    const model::ParseResult r = model::parseManifests(R"(
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-1a, namespace: shop, ownerReferences: [{kind: Deployment, name: web, controller: true}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1a-x, namespace: shop, ownerReferences: [{kind: ReplicaSet, name: web-1a, controller: true}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, ownerReferences: [{kind: StatefulSet, name: db, controller: true}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web-split, namespace: shop}
spec: {service: web, backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 10}]}
)",
                                                       "fuzz-cluster.yaml");
    model::ClusterState state;
    for (const auto& o : r.objects) state.add(o);
    st->setTopology(state, compile::Plan{});
    return st;
  }();
  return *s;
}

// The status code of an HTTP response; 0 for none.
inline int statusOf(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return 0;
  return std::atoi(response.substr(9, 3).c_str());
}

inline std::string bodyOf(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

// Fuzzed bytes as a request head: the blank line that ends one is rarely
// found by mutation alone, so it is added when missing.
inline std::string headOf(const uint8_t* data, size_t size) {
  std::string head(reinterpret_cast<const char*>(data), size);
  if (head.find("\r\n\r\n") == std::string::npos) head += "\r\n\r\n";
  return head;
}

}  // namespace smik::fuzz
