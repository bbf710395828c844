#include "api/ui/graph.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <vector>

namespace smik::ui {

namespace {

using json = nlohmann::json;

constexpr const char* kBase = "/apis/metrics.smi-spec.io/v1alpha1";
constexpr const char* kMissingNodes = "metrics.smik.io/missing-nodes";

struct KindName {
  std::string_view kind, plural;
};
constexpr KindName kKinds[] = {{"pod", "pods"},
                               {"deployment", "deployments"},
                               {"daemonset", "daemonsets"},
                               {"statefulset", "statefulsets"},
                               {"namespace", "namespaces"}};

// A Kubernetes Quantity as the API prints counts and milliseconds ("150",
// "1007m", "1k", "12M"); 0 for anything else.
double quantity(const std::string& q) {
  if (q.empty()) return 0;
  char* end = nullptr;
  double v = std::strtod(q.c_str(), &end);
  std::string_view suffix(end);
  if (suffix.empty()) return v;
  if (suffix == "m") return v / 1000;
  if (suffix == "k") return v * 1e3;
  if (suffix == "M") return v * 1e6;
  if (suffix == "G") return v * 1e9;
  if (suffix == "T") return v * 1e12;
  return 0;
}

struct Counts {
  double success = 0, failure = 0, denied = 0, p50 = 0, p90 = 0, p99 = 0;
};

Counts countsOf(const json& item) {
  Counts c;
  const json* metrics = item.contains("metrics") ? &item["metrics"] : nullptr;
  if (!metrics || !metrics->is_array()) return c;
  for (const auto& m : *metrics) {
    if (!m.is_object() || !m.contains("name") || !m["name"].is_string() || !m.contains("value") ||
        !m["value"].is_string())
      continue;
    const std::string& name = m["name"].get_ref<const std::string&>();
    double v = quantity(m["value"].get<std::string>());
    if (name == "success_count") c.success = v;
    else if (name == "failure_count") c.failure = v;
    else if (name == "policy_denied_count") c.denied = v;
    else if (name == "p50_response_latency") c.p50 = v;
    else if (name == "p90_response_latency") c.p90 = v;
    else if (name == "p99_response_latency") c.p99 = v;
  }
  return c;
}

json countsJson(const Counts& c) {
  double attempts = c.success + c.failure;
  // Counts are whole; the API's Quantities ("1k") are only their spelling.
  auto whole = [](double v) { return static_cast<uint64_t>(std::llround(std::max(v, 0.0))); };
  return {{"success", whole(c.success)},
          {"failure", whole(c.failure)},
          {"denied", whole(c.denied)},
          {"successRate", attempts > 0 ? json(c.success / attempts) : json(nullptr)},
          {"p50Ms", c.p50},
          {"p90Ms", c.p90},
          {"p99Ms", c.p99}};
}

struct Ref {
  std::string kind, ns, name;
  std::string id() const { return kind + "/" + ns + "/" + name; }
};

bool refOf(const json& j, Ref* out) {
  if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string() || !j.contains("name") ||
      !j["name"].is_string())
    return false;
  out->kind = j["kind"].get<std::string>();
  out->name = j["name"].get<std::string>();
  out->ns = j.contains("namespace") && j["namespace"].is_string() ? j["namespace"].get<std::string>()
                                                                  : "";
  return true;
}

void collectMissing(const json& item, std::set<std::string>* missing) {
  if (!item.contains("metadata") || !item["metadata"].is_object()) return;
  const json& meta = item["metadata"];
  if (!meta.contains("annotations") || !meta["annotations"].is_object()) return;
  const json& a = meta["annotations"];
  if (!a.contains(kMissingNodes) || !a[kMissingNodes].is_string()) return;
  std::string nodes = a[kMissingNodes].get<std::string>();
  for (size_t at = 0; at <= nodes.size();) {
    size_t comma = nodes.find(',', at);
    if (comma == std::string::npos) comma = nodes.size();
    std::string n = nodes.substr(at, comma - at);
    n.erase(0, n.find_first_not_of(' '));
    if (!n.empty()) missing->insert(n);
    at = comma + 1;
  }
}

std::string statusMessage(const Fetched& f) {
  if (f.status == 0) return f.error.empty() ? "no answer" : f.error;
  json j = json::parse(f.body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string())
    return "HTTP " + std::to_string(f.status) + ": " + j["message"].get<std::string>();
  return "HTTP " + std::to_string(f.status);
}

std::string edgesPath(const Ref& r, const std::string& plural, const std::string& window) {
  std::string p = kBase;
  if (plural == "namespaces") return p + "/namespaces/" + r.name + "/edges?t=" + window;
  return p + "/namespaces/" + r.ns + "/" + plural + "/" + r.name + "/edges?t=" + window;
}

// Runs job(i) for i in [0, n) on at most `parallel` threads.
template <class Job>
void forEachParallel(size_t n, int parallel, const Job& job) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) job(i);
  };
  std::vector<std::thread> threads;
  size_t count = std::min<size_t>(n, static_cast<size_t>(std::max(parallel, 1)));
  for (size_t t = 1; t < count; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
}

struct EdgeAcc {
  Ref from, to;
  std::string side;  // "client" or "server": which end counted it
  Counts counts;
};

}  // namespace

std::string pluralOfKind(const std::string& kind) {
  for (const auto& k : kKinds)
    if (k.kind == kind) return std::string(k.plural);
  return "";
}

int windowSecondsOf(const std::string& window) {
  if (window.size() < 2 || window.size() > 6) return -1;
  char unit = window.back();
  long mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : 0;
  if (mult == 0) return -1;
  long n = 0;
  for (size_t i = 0; i + 1 < window.size(); ++i) {
    if (window[i] < '0' || window[i] > '9') return -1;
    n = n * 10 + (window[i] - '0');
  }
  long s = n * mult;
  return s >= 1 && s <= 24 * 3600 ? static_cast<int>(s) : -1;
}

json buildGraph(const Fetch& fetch, const GraphRequest& req, int* status) {
  *status = 200;
  const std::string plural = pluralOfKind(req.kind);
  const int window_s = windowSecondsOf(req.window);
  if (plural.empty() || window_s < 0) {
    *status = 400;
    return {{"error", plural.empty() ? "unknown kind " + req.kind : "bad window " + req.window}};
  }
  std::string list_path = std::string(kBase) +
                          (req.ns.empty() || plural == "namespaces" ? "" : "/namespaces/" + req.ns) +
                          "/" + plural + "?t=" + req.window;
  Fetched listed = fetch(list_path);
  json list = listed.status == 200 ? json::parse(listed.body, nullptr, false) : json();
  if (listed.status != 200 || !list.is_object() || !list.contains("items") ||
      !list["items"].is_array()) {
    *status = listed.status == 0 || listed.status == 200 ? 502 : listed.status;
    return {{"error", "GET " + list_path + ": " +
                          (listed.status == 200 ? "not a TrafficMetricsList" : statusMessage(listed))}};
  }

  std::map<std::string, json> nodes;  // by id, sorted: a stable order for the layout
  std::vector<Ref> resources;
  std::set<std::string> missing;
  auto addNode = [&](const Ref& r, const json& inbound) {
    json& n = nodes[r.id()];
    if (n.is_null())
      n = {{"id", r.id()}, {"kind", r.kind}, {"namespace", r.ns}, {"name", r.name},
           {"inbound", inbound}};
    else if (!inbound.is_null())
      n["inbound"] = inbound;
  };
  for (const auto& item : list["items"]) {
    Ref r;
    if (!item.is_object() || !item.contains("resource") || !refOf(item["resource"], &r)) continue;
    if (plural == "namespaces" && !req.ns.empty() && r.name != req.ns) continue;
    addNode(r, countsJson(countsOf(item)));
    resources.push_back(r);
    collectMissing(item, &missing);
  }

  // Each resource's edges; the lists are independent, so several at once.
  std::vector<Fetched> answers(resources.size());
  forEachParallel(resources.size(), req.parallel, [&](size_t i) {
    answers[i] = fetch(edgesPath(resources[i], plural, req.window));
  });

  std::map<std::pair<std::string, std::string>, EdgeAcc> edges;
  json errors = json::array();
  for (size_t i = 0; i < resources.size(); ++i) {
    const Ref& r = resources[i];
    json l = answers[i].status == 200 ? json::parse(answers[i].body, nullptr, false) : json();
    if (answers[i].status != 200 || !l.is_object() || !l.contains("items") ||
        !l["items"].is_array()) {
      errors.push_back("edges of " + r.id() + ": " +
                       (answers[i].status == 200 ? "not a TrafficMetricsList"
                                                 : statusMessage(answers[i])));
      continue;
    }
    for (const auto& item : l["items"]) {
      if (!item.is_object() || !item.contains("edge") || !item["edge"].is_object()) continue;
      const json& e = item["edge"];
      Ref peer;
      if (!e.contains("resource") || !refOf(e["resource"], &peer)) continue;
      collectMissing(item, &missing);
      const bool client = e.value("side", "") == "client";
      EdgeAcc acc{client ? r : peer, client ? peer : r, client ? "client" : "server",
                  countsOf(item)};
      auto key = std::make_pair(acc.from.id(), acc.to.id());
      auto it = edges.find(key);
      // The client's end counts every attempt it made, denied ones too; the
      // server's only stands in where no client end answered.
      if (it == edges.end() || (client && it->second.side == "server")) edges[key] = acc;
      addNode(peer, nullptr);
    }
  }

  json out = {{"kind", req.kind}, {"window", req.window}, {"windowSeconds", window_s}};
  json node_list = json::array();
  std::set<std::string> namespaces;
  for (auto& [id, n] : nodes) {
    if (n["inbound"].is_null()) n["inbound"] = countsJson({});
    namespaces.insert(n["kind"] == "Namespace" ? n["name"].get<std::string>()
                                               : n["namespace"].get<std::string>());
    node_list.push_back(std::move(n));
  }
  json edge_list = json::array();
  for (const auto& [key, acc] : edges) {
    json e = countsJson(acc.counts);
    e["id"] = key.first + ">" + key.second;
    e["from"] = key.first;
    e["to"] = key.second;
    e["side"] = acc.side;
    e["perSecond"] = (acc.counts.success + acc.counts.failure) / window_s;
    edge_list.push_back(std::move(e));
  }
  out["nodes"] = std::move(node_list);
  out["edges"] = std::move(edge_list);
  out["namespaces"] = namespaces;
  out["missingNodes"] = missing;
  out["errors"] = std::move(errors);
  return out;
}

}  // namespace smik::ui
