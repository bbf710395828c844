#include "api/peer/wire.h"

#include <algorithm>

namespace smik::peer {

using telemetry::Counts;
using telemetry::Histogram;
using telemetry::ResourceRef;
using telemetry::Side;

namespace {

void toProto(const ResourceRef& r, v1::Resource* out) {
  out->set_kind(r.kind);
  out->set_namespace_(r.ns);
  out->set_name(r.name);
}

ResourceRef fromProto(const v1::Resource& r) { return {r.kind(), r.namespace_(), r.name()}; }

void toProto(const Histogram& h, google::protobuf::RepeatedPtrField<v1::HistogramBucket>* out) {
  for (uint32_t b = 0; b < h.buckets.size(); b++) {
    if (!h.buckets[b]) continue;
    auto* pb = out->Add();
    pb->set_index(b);
    pb->set_count(h.buckets[b]);
  }
}

bool fromProto(const google::protobuf::RepeatedPtrField<v1::HistogramBucket>& in, Histogram* out,
               std::string* err) {
  for (const auto& b : in) {
    if (b.index() >= out->buckets.size())
      return (*err = "histogram bucket " + std::to_string(b.index()) + " out of range"), false;
    out->buckets[b.index()] += b.count();
  }
  return true;
}

// An empty Counts is left unset: most resources of a list have none.
void toProto(const Counts& c, v1::RawCounts* out) {
  out->set_success(c.success);
  out->set_refused(c.refused);
  out->set_timeout(c.timeout);
  out->set_policy(c.policy);
  out->set_reset(c.reset);
  toProto(c.handshake_us, out->mutable_handshake_us());
  toProto(c.srtt_us, out->mutable_srtt_us());
  out->set_http_success(c.http_success);
  out->set_http_failure(c.http_failure);
  toProto(c.response_us, out->mutable_response_us());
}

bool hasAny(const Counts& c) {
  return !c.empty() || c.handshake_us.count() > 0 || c.srtt_us.count() > 0 ||
         c.response_us.count() > 0;
}

bool fromProto(const v1::RawCounts& in, Counts* out, std::string* err) {
  out->success = in.success();
  out->refused = in.refused();
  out->timeout = in.timeout();
  out->policy = in.policy();
  out->reset = in.reset();
  out->http_success = in.http_success();
  out->http_failure = in.http_failure();
  return fromProto(in.handshake_us(), &out->handshake_us, err) &&
         fromProto(in.srtt_us(), &out->srtt_us, err) &&
         fromProto(in.response_us(), &out->response_us, err);
}

}  // namespace

void toProto(const api::MetricsQuery& q, v1::MetricsQuery* out) {
  out->set_kind(q.kind);
  out->set_namespace_(q.ns);
  out->set_name(q.name);
  out->set_window_seconds(q.window_s > 0 ? static_cast<uint32_t>(q.window_s) : 0);
}

api::MetricsQuery fromProto(const v1::MetricsQuery& q) {
  // Bounded before the int conversion; answerQuery clamps to the store's window.
  const uint32_t w = std::min<uint32_t>(q.window_seconds(), 1u << 30);
  return {q.kind(), q.namespace_(), q.name(), static_cast<int>(w)};
}

void toProto(const api::NodeAnswer& a, v1::MetricsAnswer* out) {
  out->set_node(a.node);
  out->set_window_seconds(a.window_s);
  out->set_histogram_buckets(SMIK_HIST_BUCKETS);
  for (const auto& r : a.resources) {
    auto* pr = out->add_resources();
    toProto(r.ref, pr->mutable_resource());
    pr->set_exists(r.exists);
    if (hasAny(r.inbound)) toProto(r.inbound, pr->mutable_inbound());
    for (const auto& e : r.edges) {
      auto* pe = pr->add_edges();
      toProto(e.peer, pe->mutable_peer());
      pe->set_side(e.side == Side::kClient ? "client" : "server");
      toProto(e.counts, pe->mutable_counts());
    }
    for (const auto& b : r.split) {
      auto* pb = pr->add_split();
      pb->set_apex(b.apex);
      pb->set_backend(b.backend);
      pb->set_weight(b.weight);
      toProto(b.counts, pb->mutable_counts());
    }
  }
}

bool fromProto(const v1::MetricsAnswer& in, api::NodeAnswer* out, std::string* err) {
  if (in.histogram_buckets() != SMIK_HIST_BUCKETS) {
    *err = "histogram layout of " + std::to_string(in.histogram_buckets()) +
           " buckets, this agent has " + std::to_string(SMIK_HIST_BUCKETS);
    return false;
  }
  out->node = in.node();
  out->window_s = static_cast<int>(in.window_seconds());
  out->resources.clear();
  for (const auto& pr : in.resources()) {
    api::ResourceAnswer r;
    r.ref = fromProto(pr.resource());
    r.exists = pr.exists();
    if (!fromProto(pr.inbound(), &r.inbound, err)) return false;
    for (const auto& pe : pr.edges()) {
      telemetry::EdgeMetrics e;
      e.peer = fromProto(pe.peer());
      if (pe.side() != "client" && pe.side() != "server")
        return (*err = "edge side '" + pe.side() + "'"), false;
      e.side = pe.side() == "client" ? Side::kClient : Side::kServer;
      if (!fromProto(pe.counts(), &e.counts, err)) return false;
      r.edges.push_back(std::move(e));
    }
    for (const auto& pb : pr.split()) {
      telemetry::SplitBackendMetrics b{pb.apex(), pb.backend(), pb.weight(), {}};
      if (!fromProto(pb.counts(), &b.counts, err)) return false;
      r.split.push_back(std::move(b));
    }
    out->resources.push_back(std::move(r));
  }
  return true;
}

}  // namespace smik::peer
