/* TrafficMetrics at L4: what the numbers mean.
 *
 * smik has no proxy and never parses HTTP, so it sees connections, not
 * requests. It keeps the SMI metric names (canary controllers and
 * `kubectl top`-style tools read names) and fills them from TCP:
 *
 * - success_count: connections that reached ESTABLISHED in the window.
 *   failure_count: attempts that never did: refused (RST answered the SYN),
 *   timed out (no answer, or the client gave up), or dropped by a smik
 *   TrafficTarget decision. A connection reset after it was established is
 *   neither. Counts are connections, not requests: a keep-alive connection
 *   that carries a thousand requests counts once.
 * - policy_denied_count (smik's own; SMI readers look metrics up by name and
 *   skip the ones they do not know): of failure_count, the attempts a smik
 *   TrafficTarget decision dropped, so a reader (`smik ui`) can tell a denial
 *   from a dead server without any other API.
 * - p50/p90/p99_response_latency (unit "ms"): TCP handshake time, connect()
 *   to ESTABLISHED, measured by the client's kernel.
 *   "to" edges (side client): the handshakes of connections the resource
 *   opened to the peer.
 *   Resource totals and "from" edges (side server): connections the resource
 *   accepted. smik sees both ends of a connection whose client runs on the
 *   same node, and reports the same client-measured handshake distribution;
 *   for a client on another node the server has no connect() time, and the
 *   value is the kernel's smoothed RTT (srtt) at establishment instead (a
 *   cluster-wide answer, api/smi/merged_view.h, has the client's node's
 *   handshakes: srtt only when that node did not answer). If the
 *   window holds any handshake sample the quantiles come from handshakes
 *   alone; only when it holds none do they come from srtt.
 *   Either way it is a network round trip, plus any SYN retransmission (lost
 *   packets, a full listen queue), NOT HTTP response time: the kernel
 *   completes the handshake before the application accept()s, so a slow
 *   request handler does not show up here. A value is the midpoint of the
 *   log-linear histogram bucket holding the quantile (within 6.25% of the
 *   true value, smik_abi.h SMIK_HIST_SUB), 0 when nothing was established
 *   in the window.
 * - TrafficSplit items: connections sent to the split's apex Service that
 *   went to each backend, observed at the clients (edge side "client").
 *
 * Except on ports the HTTP judge governs (--http-rules=enforce), where the
 * server's kernel frames the responses too: an edge or total whose window
 * holds HTTP responses reports requests instead (success: a final status
 * below 500, failure: 5xx) and response latency (request fully received to
 * the response's first byte, at the server), never a sum of both
 * (Counts::reportedSuccess, Counts::latency; README "Ports with HTTP rules
 * count requests").
 */
#include "api/smi/smi_metrics.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <vector>


namespace smik::api {

namespace {

using json = nlohmann::ordered_json;
using telemetry::Counts;
using telemetry::EdgeMetrics;
using telemetry::Histogram;
using telemetry::MetricsView;
using telemetry::ResourceRef;
using telemetry::Side;
using telemetry::SplitBackendMetrics;

constexpr int kDefaultWindowS = 30;
constexpr const char* kGroupVersion = "metrics.smi-spec.io/v1alpha1";

// ---- resource kinds -------------------------------------------------------------

struct KindInfo {
  std::string_view plural;  // in URLs
  std::string_view kind;    // in ObjectReferences and MetricsView
  bool namespaced;
};

// Discovery order. The SDK's map keys spell "Daemonset"/"Statefulset"; we use
// the real Kubernetes kinds, which is what MetricsView and kubectl know.
constexpr KindInfo kKinds[] = {
    {"pods", "Pod", true},
    {"deployments", "Deployment", true},
    {"daemonsets", "DaemonSet", true},
    {"statefulsets", "StatefulSet", true},
    {"namespaces", "Namespace", false},
    {"trafficsplits", "TrafficSplit", true},
};

const KindInfo* kindByPlural(std::string_view plural) {
  for (const auto& k : kKinds)
    if (k.plural == plural) return &k;
  return nullptr;
}

const KindInfo* kindByKind(std::string_view kind) {
  for (const auto& k : kKinds)
    if (k.kind == kind) return &k;
  return nullptr;
}

bool isSplit(const KindInfo& k) { return k.kind == "TrafficSplit"; }

// ---- what every answer of one request shares ----------------------------------

struct Ctx {
  const MetricsView& view;
  int window_s;
  std::string timestamp;  // RFC3339, also each item's creationTimestamp
  std::string window;     // Go duration
};

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---- JSON pieces -----------------------------------------------------------------

json objectRef(const ResourceRef& r) {
  json j = {{"kind", r.kind}};
  if (!r.ns.empty()) j["namespace"] = r.ns;
  j["name"] = r.name;
  return j;
}

std::string pluralOf(const ResourceRef& r) {
  const KindInfo* k = kindByKind(r.kind);
  return k ? std::string(k->plural) : r.kind;
}

std::string selfLink(const ResourceRef& r) {
  std::string link = kSmiMetricsBase;
  if (!r.ns.empty()) link += "/namespaces/" + r.ns;
  return link + "/" + pluralOf(r) + "/" + r.name;
}

// Histogram values are µs, and a millisecond Quantity counts in µs (milli-ms):
// no conversion, and the truncation matches the SDK's int64(val*1000).
std::string latencyQuantity(const Histogram& h, double q) {
  return quantityFromMilli(static_cast<int64_t>(h.quantile(q)));
}

std::string countQuantity(uint64_t n) {
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max() / 1000;
  return quantityFromMilli(static_cast<int64_t>(std::min(n, kMax)) * 1000);
}

json metricsOf(const Counts& c) {
  const Histogram& lat = c.latency();  // see the comment at the top
  return json::array({
      {{"name", "p99_response_latency"}, {"unit", "ms"}, {"value", latencyQuantity(lat, 0.99)}},
      {{"name", "p90_response_latency"}, {"unit", "ms"}, {"value", latencyQuantity(lat, 0.90)}},
      {{"name", "p50_response_latency"}, {"unit", "ms"}, {"value", latencyQuantity(lat, 0.50)}},
      {{"name", "success_count"}, {"value", countQuantity(c.reportedSuccess())}},
      {{"name", "failure_count"}, {"value", countQuantity(c.reportedFailure())}},
      {{"name", "policy_denied_count"}, {"value", countQuantity(c.policy)}},
  });
}

json edgeJson(std::string_view direction, std::string_view side, json resource) {
  return {{"direction", direction}, {"side", side}, {"resource", std::move(resource)}};
}

// Resource-level numbers: everything the resource accepted, from anyone.
json inboundEdge() { return edgeJson("from", "server", nullptr); }

json peerEdge(const EdgeMetrics& e) {
  return e.side == Side::kClient ? edgeJson("to", "client", objectRef(e.peer))
                                 : edgeJson("from", "server", objectRef(e.peer));
}

// backend: only for TrafficSplit items, null otherwise.
json trafficMetrics(const Ctx& ctx, const ResourceRef& r, const std::string& self_link, json edge,
                    const Counts& c, json backend = nullptr) {
  json meta = {{"name", r.name}};
  if (!r.ns.empty()) meta["namespace"] = r.ns;
  meta["selfLink"] = self_link;
  meta["creationTimestamp"] = ctx.timestamp;
  json j = {{"kind", "TrafficMetrics"},    {"apiVersion", kGroupVersion},
            {"metadata", std::move(meta)}, {"timestamp", ctx.timestamp},
            {"window", ctx.window},        {"resource", objectRef(r)},
            {"edge", std::move(edge)}};
  if (!backend.is_null()) j["backend"] = std::move(backend);
  j["metrics"] = metricsOf(c);
  return j;
}

json resourceItem(const Ctx& ctx, const ResourceRef& r) {
  return trafficMetrics(ctx, r, selfLink(r), inboundEdge(), ctx.view.inbound(r, ctx.window_s));
}

json splitBackendItem(const Ctx& ctx, const ResourceRef& split, const SplitBackendMetrics& b) {
  return trafficMetrics(ctx, split, selfLink(split), edgeJson("from", "client", json::object()),
                        b.counts, {{"apex", b.apex}, {"name", b.backend}, {"weight", b.weight}});
}

json splitItems(const Ctx& ctx, const ResourceRef& split) {
  json items = json::array();
  for (const auto& b : ctx.view.split(split, ctx.window_s))
    items.push_back(splitBackendItem(ctx, split, b));
  return items;
}

json metricsList(const std::string& self_link, json resource, json items) {
  return {{"kind", "TrafficMetricsList"},
          {"apiVersion", kGroupVersion},
          {"metadata", {{"selfLink", self_link}}},
          {"resource", std::move(resource)},
          {"items", std::move(items)}};
}

// ---- responses ---------------------------------------------------------------------

// Kept as JSON until handleSmiMetrics returns: whether the answer is partial
// is known only once every view call has been made.
struct Reply {
  int status = 200;
  json body;
};

Reply ok(json j) { return {200, std::move(j)}; }

// A Kubernetes Status, what kubectl and client-go expect from an API error.
Reply statusError(int code, std::string_view reason, const std::string& message,
                  json details = nullptr) {
  json j = {{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", json::object()},
            {"status", "Failure"}, {"message", message}, {"reason", reason}};
  if (!details.is_null()) j["details"] = std::move(details);
  j["code"] = code;
  return {code, std::move(j)};
}

Reply pathNotFound() {
  return statusError(404, "NotFound", "the server could not find the requested resource");
}

Reply unsupportedResource(std::string_view plural) {
  return statusError(404, "NotFound", "Unsupported resource: " + std::string(plural));
}

Reply objectNotFound(const KindInfo& k, const std::string& name) {
  return statusError(404, "NotFound", std::string(k.plural) + " \"" + name + "\" not found",
                     {{"name", name}, {"kind", k.plural}});
}

// ---- endpoints ---------------------------------------------------------------------

Reply discovery() {
  json resources = json::array();
  for (const auto& k : kKinds)
    resources.push_back({{"name", k.plural},
                         {"namespaced", k.namespaced},
                         {"kind", "TrafficMetrics"},
                         {"verbs", {"get", "list"}}});
  return ok({{"kind", "APIResourceList"},
             {"apiVersion", "v1"},
             {"groupVersion", kGroupVersion},
             {"resources", std::move(resources)}});
}

// ns empty: every namespace. A list of splits has one item per backend, as a
// single split does, so the item shape does not depend on how it was asked.
Reply listKind(const Ctx& ctx, const KindInfo& k, const std::string& ns) {
  std::string link = kSmiMetricsBase;
  json resource = {{"kind", k.kind}};
  if (!ns.empty()) {
    link += "/namespaces/" + ns;
    resource["namespace"] = ns;
  }
  link += "/" + std::string(k.plural);
  json items = json::array();
  for (const auto& r : ctx.view.list(std::string(k.kind), ns)) {
    if (!isSplit(k)) {
      items.push_back(resourceItem(ctx, r));
      continue;
    }
    for (auto& item : splitItems(ctx, r)) items.push_back(std::move(item));
  }
  return ok(metricsList(link, std::move(resource), std::move(items)));
}

Reply getObject(const Ctx& ctx, const KindInfo& k, const ResourceRef& r) {
  if (!ctx.view.exists(r)) return objectNotFound(k, r.name);
  if (isSplit(k)) return ok(metricsList(selfLink(r), objectRef(r), splitItems(ctx, r)));
  return ok(resourceItem(ctx, r));
}

Reply getEdges(const Ctx& ctx, const KindInfo& k, const ResourceRef& r) {
  if (isSplit(k))
    return statusError(404, "NotFound", "trafficsplits have no edges: query the split itself");
  if (!ctx.view.exists(r)) return objectNotFound(k, r.name);
  const std::string link = selfLink(r) + "/edges";
  json items = json::array();
  for (const auto& e : ctx.view.edges(r, ctx.window_s))
    items.push_back(trafficMetrics(ctx, r, link, peerEdge(e), e.counts));
  return ok(metricsList(link, objectRef(r), std::move(items)));
}

ResourceRef refOf(const KindInfo& k, const std::string& ns, const std::string& name) {
  return {std::string(k.kind), k.namespaced ? ns : "", name};
}

// The segments after the base, or nullopt when the path is not under it.
std::optional<std::vector<std::string>> segmentsUnderBase(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const std::string_view base = kSmiMetricsBase;
  if (path.compare(0, base.size(), base) != 0) return std::nullopt;
  std::string_view rest = std::string_view(path).substr(base.size());
  if (rest.empty()) return std::vector<std::string>{};
  if (rest.front() != '/') return std::nullopt;  // e.g. .../v1alpha10
  std::vector<std::string> segs;
  size_t start = 1;
  while (start <= rest.size()) {
    const size_t end = std::min(rest.find('/', start), rest.size());
    segs.emplace_back(rest.substr(start, end - start));
    start = end + 1;
  }
  return segs;
}

// /{resource}
Reply routeKindList(const Ctx& ctx, const std::string& plural) {
  const KindInfo* k = kindByPlural(plural);
  return k ? listKind(ctx, *k, "") : unsupportedResource(plural);
}

// /namespaces/{name} and /namespaces/{name}/edges
Reply routeNamespace(const Ctx& ctx, const std::string& name, bool edges) {
  const KindInfo& ns_kind = *kindByPlural("namespaces");
  const ResourceRef r = refOf(ns_kind, "", name);
  return edges ? getEdges(ctx, ns_kind, r) : getObject(ctx, ns_kind, r);
}

// /namespaces/{ns}/{resource}[/{name}[/edges]]
Reply routeNamespaced(const Ctx& ctx, const SmiTarget& t) {
  const KindInfo* k = kindByPlural(t.resource);
  if (!k) return unsupportedResource(t.resource);
  if (!k->namespaced) return pathNotFound();
  if (t.kind == SmiTarget::Kind::kList) return listKind(ctx, *k, t.ns);
  const ResourceRef r = refOf(*k, t.ns, t.name);
  return t.kind == SmiTarget::Kind::kObject ? getObject(ctx, *k, r) : getEdges(ctx, *k, r);
}

Reply route(const Ctx& ctx, const SmiTarget& t) {
  using Kind = SmiTarget::Kind;
  switch (t.kind) {
    case Kind::kDiscovery:
      return discovery();
    case Kind::kNotFound:
      return pathNotFound();
    case Kind::kList:
      return t.ns.empty() ? routeKindList(ctx, t.resource) : routeNamespaced(ctx, t);
    case Kind::kObject:
    case Kind::kEdges:
      if (t.ns.empty()) return routeNamespace(ctx, t.name, t.kind == Kind::kEdges);
      return routeNamespaced(ctx, t);
  }
  return pathNotFound();
}

// ---- Go durations --------------------------------------------------------------------

constexpr uint64_t kNsPerS = 1'000'000'000;

std::optional<uint64_t> unitNs(std::string_view u) {
  if (u == "ns") return 1;
  if (u == "us" || u == "\u00b5s" || u == "\u03bcs") return 1'000;  // micro sign, Greek mu
  if (u == "ms") return 1'000'000;
  if (u == "s") return kNsPerS;
  if (u == "m") return 60 * kNsPerS;
  if (u == "h") return 3600 * kNsPerS;
  return std::nullopt;
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

constexpr uint64_t kDurationLimit = uint64_t{1} << 63;  // |time.Duration| in ns

// One number+unit of a Go duration ("90", "1.5", ".5" then "ms"), consumed
// from the front of s, in nanoseconds; nullopt when malformed or too large.
// Fractions are scaled in double and truncated, as Go does.
std::optional<uint64_t> takeComponentNs(std::string_view& s) {
  uint64_t whole = 0;
  size_t i = 0;
  for (; i < s.size() && isDigit(s[i]); i++) {
    if (whole > (kDurationLimit - 1) / 10) return std::nullopt;
    whole = whole * 10 + static_cast<uint64_t>(s[i] - '0');
  }
  const bool had_whole = i > 0;
  uint64_t frac = 0;
  double scale = 1;
  bool had_frac = false;
  if (i < s.size() && s[i] == '.') {
    for (i++; i < s.size() && isDigit(s[i]); i++) {
      had_frac = true;
      if (frac > (kDurationLimit - 1) / 10) continue;  // digits past ns precision
      frac = frac * 10 + static_cast<uint64_t>(s[i] - '0');
      scale *= 10;
    }
  }
  if (!had_whole && !had_frac) return std::nullopt;
  size_t u = i;
  while (u < s.size() && s[u] != '.' && !isDigit(s[u])) u++;
  const auto unit = unitNs(s.substr(i, u - i));
  if (!unit || whole > kDurationLimit / *unit) return std::nullopt;
  s.remove_prefix(u);
  return whole * *unit +
         static_cast<uint64_t>(static_cast<double>(frac) * (static_cast<double>(*unit) / scale));
}

// time.ParseDuration, to nanoseconds: [-+]? then one or more number+unit
// ("1h30m", "1.5s", ".5m"); a bare "0" is allowed.
std::optional<int64_t> parseGoDurationNs(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return 0;
  if (s.empty()) return std::nullopt;
  uint64_t total = 0;
  while (!s.empty()) {
    const auto v = takeComponentNs(s);
    if (!v || *v > kDurationLimit || total > kDurationLimit - *v) return std::nullopt;
    total += *v;
  }
  if (total == kDurationLimit && !negative) return std::nullopt;
  return negative ? static_cast<int64_t>(0 - total) : static_cast<int64_t>(total);
}

}  // namespace

// ---- public ------------------------------------------------------------------------------

std::string quantityFromMilli(int64_t milli) {
  if (milli == 0) return "0";
  const bool negative = milli < 0;
  uint64_t mantissa = negative ? 0 - static_cast<uint64_t>(milli) : static_cast<uint64_t>(milli);
  int exponent = -3;
  while (mantissa % 10 == 0) {
    mantissa /= 10;
    exponent++;
  }
  // Go's canonical form keeps the exponent a multiple of 3 and the mantissa an
  // integer: 1500 stays "1500" (not "1.5k"), 1000 becomes "1k". Scaling back
  // never overflows: it only restores zeros just removed.
  while (exponent % 3 != 0) {
    mantissa *= 10;
    exponent--;
  }
  static const char* const kSuffixes[] = {"m", "", "k", "M", "G", "T", "P", "E"};
  return (negative ? "-" : "") + std::to_string(mantissa) + kSuffixes[(exponent + 3) / 3];
}

int windowSeconds(const std::string& query_t, int max_window_s) {
  const int upper = std::max(1, max_window_s);
  const auto ns = query_t.empty() ? std::nullopt : parseGoDurationNs(query_t);
  if (!ns) return std::clamp(kDefaultWindowS, 1, upper);
  if (*ns <= 0) return 1;
  constexpr auto kNs = static_cast<int64_t>(kNsPerS);
  const int64_t secs = *ns / kNs + (*ns % kNs != 0 ? 1 : 0);  // 500ms is 1s, never 0
  return static_cast<int>(std::min<int64_t>(secs, upper));
}

std::string goDuration(int seconds) {
  if (seconds == 0) return "0s";
  const bool negative = seconds < 0;
  int64_t s = std::llabs(static_cast<int64_t>(seconds));
  const int64_t h = s / 3600, m = s / 60 % 60;
  s %= 60;
  std::string out = negative ? "-" : "";
  if (h > 0) out += std::to_string(h) + "h";
  if (h > 0 || m > 0) out += std::to_string(m) + "m";
  return out + std::to_string(s) + "s";
}

namespace {

// An answer some nodes' numbers are missing from is still served, marked the
// way Kubernetes users read objects: annotations on every TrafficMetrics
// (a list's ListMeta has no annotations), and a Warning header, which
// kubectl prints, for the response as a whole (also an empty list).
void markPartial(json& body, const std::string& missing) {
  auto mark = [&](json& item) {
    json& annotations = item["metadata"]["annotations"];
    annotations[kPartialAnnotation] = "true";
    annotations[kMissingNodesAnnotation] = missing;
  };
  if (body.value("kind", "") == "TrafficMetrics") mark(body);
  if (body.value("kind", "") == "TrafficMetricsList")
    for (auto& item : body["items"]) mark(item);
}

}  // namespace

SmiTarget parseSmiPath(std::string_view path) {
  using Kind = SmiTarget::Kind;
  const auto segs = segmentsUnderBase(std::string(path));
  if (!segs || std::any_of(segs->begin(), segs->end(), [](const auto& x) { return x.empty(); }))
    return {};
  const std::vector<std::string>& s = *segs;
  if (s.empty()) return {Kind::kDiscovery};
  if (s.size() == 1) return {Kind::kList, s[0]};
  if (s[0] != "namespaces") return {};
  if (s.size() == 2) return {Kind::kObject, "namespaces", "", s[1]};
  if (s.size() == 3 && s[2] == "edges") return {Kind::kEdges, "namespaces", "", s[1]};
  if (s.size() == 3) return {Kind::kList, s[2], s[1]};
  if (s.size() == 4) return {Kind::kObject, s[2], s[1], s[3]};
  if (s.size() == 5 && s[4] == "edges") return {Kind::kEdges, s[2], s[1], s[3]};
  return {};
}

SmiResponse handleSmiMetrics(const telemetry::MetricsView& view, const std::string& path,
                             const std::string& query_t) {
  const SmiTarget target = parseSmiPath(path);
  Reply r = pathNotFound();
  if (target.kind != SmiTarget::Kind::kNotFound) {
    const int window_s = windowSeconds(query_t, view.maxWindow());
    const Ctx ctx{view, window_s, rfc3339(view.now()), goDuration(window_s)};
    r = route(ctx, target);
  }
  SmiResponse out;
  out.missing_nodes = view.missingNodes();
  if (!out.missing_nodes.empty()) {
    std::sort(out.missing_nodes.begin(), out.missing_nodes.end());
    std::string missing;
    for (const auto& n : out.missing_nodes) missing += (missing.empty() ? "" : ",") + n;
    markPartial(r.body, missing);
  }
  out.status = r.status;
  out.body = r.body.dump(2) + "\n";
  return out;
}

SmiResponse answerSmiRequest(const telemetry::MetricsView& local, const ViewForRequest& per_request,
                             const std::string& path, const std::string& query_t,
                             bool local_only) {
  if (local_only || !per_request) return handleSmiMetrics(local, path, query_t);
  const std::unique_ptr<telemetry::MetricsView> view =
      per_request(windowSeconds(query_t, local.maxWindow()));
  return handleSmiMetrics(*view, path, query_t);
}

}  // namespace smik::api
