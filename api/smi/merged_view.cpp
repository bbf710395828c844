#include "api/smi/merged_view.h"

#include <algorithm>
#include <spdlog/spdlog.h>
#include <tuple>

namespace smik::api {

using telemetry::Counts;
using telemetry::EdgeMetrics;
using telemetry::ResourceRef;
using telemetry::Side;
using telemetry::SplitBackendMetrics;

namespace {
constexpr const char* kSplitKind = "TrafficSplit";
}

NodeAnswer answerQuery(const telemetry::Store& store, const std::string& node,
                       const MetricsQuery& q) {
  NodeAnswer out;
  out.node = node;
  out.window_s = std::clamp(q.window_s, 1, std::max(1, store.maxWindow()));
  const bool split = q.kind == kSplitKind;
  auto numbers = [&](ResourceAnswer* a, bool with_edges) {
    if (split) {
      a->split = store.split(a->ref, out.window_s);
      return;
    }
    a->inbound = store.inbound(a->ref, out.window_s);
    if (with_edges) a->edges = store.edgeSamples(a->ref, out.window_s);
  };
  if (q.name.empty()) {
    for (auto& r : store.list(q.kind, q.ns)) {
      ResourceAnswer a{std::move(r), true, {}, {}, {}};
      numbers(&a, false);
      out.resources.push_back(std::move(a));
    }
    return out;
  }
  ResourceAnswer a{{q.kind, q.kind == "Namespace" ? "" : q.ns, q.name}, false, {}, {}, {}};
  // A resource this node does not know has no numbers here: its pods' IPs
  // were never attributed to it.
  a.exists = store.exists(a.ref);
  if (a.exists) numbers(&a, true);
  out.resources.push_back(std::move(a));
  return out;
}

MergedView::MergedView(const telemetry::Store& local, std::string node, PeerFanout& peers,
                       int window_s)
    : local_(local), node_(std::move(node)), peers_(peers), window_s_(window_s) {}

const MergedView::Answers& MergedView::fetch(const MetricsQuery& q) const {
  auto it = cache_.find(q);
  if (it != cache_.end()) return it->second;
  Answers answers;
  answers.push_back(answerQuery(local_, node_, q));
  std::set<std::string> seen = {node_};
  for (auto& p : peers_.query(q)) {
    if (!p.ok) {
      missing_.insert(p.node);
      continue;
    }
    // The same node twice (listed statically and discovered, or this agent
    // in its own --peers) would count its connections twice.
    if (!seen.insert(p.answer.node).second) {
      spdlog::debug("metrics fan-out: {} answered again as node {}: ignored", p.node,
                    p.answer.node);
      continue;
    }
    answers.push_back(std::move(p.answer));
  }
  return cache_.emplace(q, std::move(answers)).first->second;
}

std::vector<const ResourceAnswer*> MergedView::answersFor(const ResourceRef& r, int window_s,
                                                          bool need_edges) const {
  const MetricsQuery own{r.kind, r.ns, r.name, window_s};
  const Answers* answers = nullptr;
  if (auto it = cache_.find(own); it != cache_.end()) answers = &it->second;
  for (auto it = cache_.begin(); !answers && !need_edges && it != cache_.end(); ++it) {
    const MetricsQuery& q = it->first;
    if (q.name.empty() && q.kind == r.kind && q.window_s == window_s &&
        (q.ns.empty() || q.ns == r.ns))
      answers = &it->second;
  }
  if (!answers) answers = &fetch(own);
  std::vector<const ResourceAnswer*> out;
  for (const auto& node : *answers)
    for (const auto& a : node.resources)
      if (a.ref == r && a.exists) {
        out.push_back(&a);
        break;
      }
  return out;
}

std::vector<ResourceRef> MergedView::list(const std::string& kind, const std::string& ns) const {
  std::set<ResourceRef> out;
  for (const auto& node : fetch({kind, ns, "", window_s_}))
    for (const auto& a : node.resources) out.insert(a.ref);
  return {out.begin(), out.end()};
}

bool MergedView::exists(const ResourceRef& r) const {
  return !answersFor(r, window_s_, true).empty();
}

Counts MergedView::inbound(const ResourceRef& r, int window_s) const {
  Counts c;
  for (const ResourceAnswer* a : answersFor(r, window_s, false)) c.add(a->inbound);
  return c;
}

std::vector<EdgeMetrics> MergedView::edges(const ResourceRef& r, int window_s) const {
  std::map<std::pair<ResourceRef, Side>, Counts> by_peer;
  for (const ResourceAnswer* a : answersFor(r, window_s, true))
    for (const auto& e : a->edges) by_peer[{e.peer, e.side}].add(e.counts);
  std::vector<EdgeMetrics> out;
  // As Store::edges: an edge is a connection attempt somebody counted;
  // latency samples alone were the other half of one.
  for (auto& [k, c] : by_peer)
    if (!c.empty()) out.push_back({k.first, k.second, std::move(c)});
  return out;
}

std::vector<SplitBackendMetrics> MergedView::split(const ResourceRef& r, int window_s) const {
  // This node's order (the split's spec order) first; a backend only a peer
  // knows (its copy of the split is newer) after it.
  std::vector<SplitBackendMetrics> out;
  for (const ResourceAnswer* a : answersFor(r, window_s, false)) {
    for (const auto& b : a->split) {
      auto same = std::find_if(out.begin(), out.end(), [&](const SplitBackendMetrics& m) {
        return m.apex == b.apex && m.backend == b.backend;
      });
      if (same == out.end())
        out.push_back(b);
      else
        same->counts.add(b.counts);
    }
  }
  return out;
}

ViewForRequest mergedViews(PeerFanout& fanout, const telemetry::Store& local,
                                std::string node) {
  return [&fanout, &local, node = std::move(node)](int window_s) {
    return std::make_unique<MergedView>(local, node, fanout, window_s);
  };
}

}  // namespace smik::api
