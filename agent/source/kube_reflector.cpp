#include "agent/source/kube_reflector.h"

#include <algorithm>
#include <cstdlib>

namespace smik::kube {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

std::string urlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::string stringAt(const json& j, const char* a, const char* b) {
  if (!j.is_object()) return "";
  auto ia = j.find(a);
  if (ia == j.end() || !ia->is_object()) return "";
  auto ib = ia->find(b);
  return ib != ia->end() && ib->is_string() ? ib->get<std::string>() : "";
}

std::string resourceVersionOf(const json& object) {
  return stringAt(object, "metadata", "resourceVersion");
}

// "HTTP 500: etcdserver: leader changed" from a Status body, if it is one.
std::string describeStatus(long code, const json& status) {
  std::string out = "HTTP " + std::to_string(code);
  if (status.is_object() && status.contains("message") && status["message"].is_string())
    out += ": " + status["message"].get<std::string>();
  return out;
}

// client-go's isTooLargeResourceVersionError: this API server is behind the
// version we ask for (HA skew after a failover); only a relist helps.
bool isTooLargeResourceVersion(const json& status) {
  if (!status.is_object()) return false;
  auto details = status.find("details");
  if (details == status.end() || !details->is_object()) return false;
  auto causes = details->find("causes");
  if (causes == details->end() || !causes->is_array()) return false;
  return std::any_of(causes->begin(), causes->end(), [](const json& c) {
    if (!c.is_object()) return false;
    const auto reason = c.find("reason");
    return reason != c.end() && *reason == "ResourceVersionTooLarge";
  });
}

std::optional<milliseconds> parseRetryAfter(const std::map<std::string, std::string>& headers) {
  auto it = headers.find("retry-after");
  if (it == headers.end() || it->second.empty()) return std::nullopt;
  // The HTTP-date form is legal but the API server only sends seconds;
  // anything else falls back to the ordinary backoff.
  if (!std::all_of(it->second.begin(), it->second.end(), ::isdigit)) return std::nullopt;
  return milliseconds(std::strtoll(it->second.c_str(), nullptr, 10) * 1000);
}

// Deeper than `limit` brackets, strings skipped: one pass over the text,
// before anything is built from it.
bool jsonNestedDeeperThan(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// Built-in kinds' list items carry no kind and apiVersion.
void normalise(json* object, const Resource& resource) {
  if (!object->is_object()) return;
  const auto missing = [&](const char* k) {
    const auto it = object->find(k);
    return it == object->end() || *it == "";
  };
  if (missing("kind")) (*object)["kind"] = resource.kind;
  if (missing("apiVersion")) (*object)["apiVersion"] = resource.api_version;
}

}  // namespace

json parseApiJson(std::string_view text, std::string* why) {
  if (jsonNestedDeeperThan(text, kMaxApiJsonDepth)) {
    *why = "nests deeper than " + std::to_string(kMaxApiJsonDepth) + " levels";
    return json(json::value_t::discarded);
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) *why = "is not JSON";
  return j;
}

std::optional<ListPage> decodeListPage(std::string_view body, const Resource& resource,
                                       std::string* err) {
  std::string why = "is not a JSON object";
  json doc = parseApiJson(body, &why);
  if (doc.is_discarded() || !doc.is_object()) {
    *err = "response " + why;
    return std::nullopt;
  }
  ListPage page;
  // The list's own version, never an item's: items come in key order,
  // not version order, so an item's version can be older than the list.
  page.resource_version = stringAt(doc, "metadata", "resourceVersion");
  page.next = stringAt(doc, "metadata", "continue");
  const auto items = doc.find("items");
  if (items == doc.end() || !items->is_array()) return page;
  for (json& item : *items) {
    if (!item.is_object()) {
      *err = "a list item is not a JSON object";
      return std::nullopt;
    }
    normalise(&item, resource);
    std::string key = Reflector::keyOf(item);
    page.items.emplace_back(std::move(key), std::move(item));
  }
  return page;
}

std::optional<WatchEvent> decodeWatchEvent(std::string_view line, const Resource& resource,
                                           std::string* err) {
  std::string why = "is not a JSON object";
  json ev = parseApiJson(line, &why);
  if (ev.is_discarded() || !ev.is_object()) {
    *err = "event " + why;
    return std::nullopt;
  }
  const auto obj = ev.find("object");
  if (obj == ev.end() || !obj->is_object()) {
    *err = "event without object";
    return std::nullopt;
  }
  const auto type = ev.find("type");
  WatchEvent out;
  out.type = type != ev.end() && type->is_string() ? type->get<std::string>() : "";
  out.object = std::move(*obj);
  // An ERROR's object is a Status, not one of the collection's.
  if (out.type != "ERROR") normalise(&out.object, resource);
  out.key = Reflector::keyOf(out.object);
  return out;
}

std::string Resource::path() const {
  const bool core = api_version.find('/') == std::string::npos;
  return (core ? "/api/" : "/apis/") + api_version + "/" + plural;
}

bool LineFramer::feed(std::string_view chunk,
                      const std::function<bool(std::string_view)>& on_line) {
  buf_.append(chunk);
  size_t start = 0;
  bool keep_going = true;
  for (size_t nl; keep_going && (nl = buf_.find('\n', start)) != std::string::npos;
       start = nl + 1) {
    std::string_view line(buf_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") != std::string_view::npos) keep_going = on_line(line);
  }
  buf_.erase(0, start);
  return keep_going;
}

Reflector::Reflector(HttpClient& http, Resource resource, ReflectorConfig config, OnEvent on_event,
                     OnSynced on_synced)
    : http_(http),
      resource_(std::move(resource)),
      config_(config),
      on_event_(std::move(on_event)),
      on_synced_(std::move(on_synced)),
      rng_(config.seed ? config.seed : std::random_device{}()) {}

std::string Reflector::keyOf(const json& object) {
  const std::string ns = stringAt(object, "metadata", "namespace");
  const std::string name = stringAt(object, "metadata", "name");
  return ns.empty() ? name : ns + "/" + name;
}

void Reflector::run() {
  bool need_list = true;
  // Consecutive relists forced by 410 with no watch progress in between:
  // the first is immediate, later ones back off, so a server that keeps
  // expiring us cannot make us spin list after list.
  int forced_relists = 0;
  while (!stopping()) {
    const bool listing = need_list;
    const Failure f = listing ? list() : watch();
    if (progressed_) forced_relists = 0;
    progressed_ = false;
    switch (f.outcome) {
      case Outcome::kOk:
        // A list forced by 410 keeps its backoff: list, watch, 410, list...
        // succeeds at every step yet must still slow down.
        if (listing && forced_relists == 0) backoff_ = milliseconds(0);
        need_list = false;
        break;
      case Outcome::kStopped:
        return;
      case Outcome::kRelist:
        setError(f.error);
        need_list = true;
        consistent_relist_ = true;
        if (++forced_relists > 1 && !sleepFor(nextBackoff())) return;
        break;
      case Outcome::kNotServed:
        recordFailure(f.error, true);
        // List again when it is back: a CRD installed later starts empty.
        need_list = true;
        if (!sleepFor(config_.not_served_retry)) return;
        break;
      case Outcome::kFailed:
        recordFailure(f.error, false);
        if (!sleepFor(f.retry_after ? std::min(*f.retry_after, config_.retry_after_max)
                                    : nextBackoff()))
          return;
        break;
    }
  }
}

bool Reflector::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

void Reflector::recordFailure(const std::string& error, bool not_served) {
  std::lock_guard lock(mu_);
  status_.last_error = error;
  status_.not_served = not_served;
  ++status_.failures;
}

void Reflector::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  cancel_.cancel();
}

ReflectorStatus Reflector::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

std::map<std::string, std::string> Reflector::snapshot() const {
  std::lock_guard lock(mu_);
  return store_;
}

std::string Reflector::fingerprint(const json& object) {
  // resourceVersion changes with every write; a server that omits it still
  // gets change detection, at the price of a hash.
  std::string rv = stringAt(object, "metadata", "resourceVersion");
  if (!rv.empty()) return rv;
  return "#" + std::to_string(std::hash<std::string>{}(object.dump()));
}

json Reflector::stubFor(const std::string& key) const {
  json stub = {{"kind", resource_.kind}, {"apiVersion", resource_.api_version}};
  const auto slash = key.find('/');
  if (slash == std::string::npos) {
    stub["metadata"] = {{"name", key}};
  } else {
    stub["metadata"] = {{"namespace", key.substr(0, slash)}, {"name", key.substr(slash + 1)}};
  }
  return stub;
}

Reflector::Failure Reflector::list() {
  // Pages are handed on as they arrive and only keys and versions are kept:
  // holding a 50k-pod list as JSON until its last page costs hundreds of MiB.
  // The store is replaced, and vanished objects deleted, once the list is whole.
  std::map<std::string, std::string> next;
  std::map<std::string, std::string> old;
  {
    std::lock_guard lock(mu_);
    old = store_;
  }
  std::string cont;
  std::string list_rv;
  do {
    std::string query = "?limit=" + std::to_string(config_.page_size);
    // A continue token carries its own version; the first page reads from
    // the watch cache ("0", cheap for N agents) unless a 410 told us that
    // cache is behind, then from etcd ("" = latest, consistent).
    if (!cont.empty())
      query += "&continue=" + urlEncode(cont);
    else if (!consistent_relist_)
      query += "&resourceVersion=0";
    if (!resource_.field_selector.empty())
      query += "&fieldSelector=" + urlEncode(resource_.field_selector);
    std::string body;
    const HttpResponse r = http_.get(
        resource_.path() + query,
        [&](std::string_view d) {
          body.append(d);
          return true;
        },
        cancel_);
    if (r.cancelled) return {Outcome::kStopped, "", std::nullopt};
    if (r.status != 200 || !r.error.empty()) return classify(r, "list");
    std::string why;
    std::optional<ListPage> page = decodeListPage(body, resource_, &why);
    body = std::string();
    if (!page) return {Outcome::kFailed, "list " + resource_.path() + ": " + why, std::nullopt};
    list_rv = std::move(page->resource_version);
    cont = std::move(page->next);
    for (auto& [key, item] : page->items) {
      std::string fp = fingerprint(item);
      auto was = old.find(key);
      if (was == old.end() || was->second != fp) on_event_(Event::kUpsert, key, item);
      next[std::move(key)] = std::move(fp);
    }
  } while (!cont.empty());
  applyList(std::move(next), old, list_rv);
  consistent_relist_ = false;
  return {};
}

void Reflector::applyList(std::map<std::string, std::string> next,
                          const std::map<std::string, std::string>& old, const std::string& rv) {
  // Objects deleted while we were not watching have no DELETED event: the
  // diff against the old store is the only way to learn of them.
  for (const auto& [key, fp] : old)
    if (!next.count(key)) on_event_(Event::kDelete, key, stubFor(key));
  {
    std::lock_guard lock(mu_);
    store_ = std::move(next);
    status_.synced = true;
    status_.not_served = false;
    status_.last_error.clear();
    status_.resource_version = rv;
    ++status_.lists;
  }
  rv_ = rv;
  if (on_synced_) on_synced_();
}

Reflector::Failure Reflector::watch() {
  std::uniform_int_distribution<int64_t> pick(
      config_.watch_timeout_min.count(),
      std::max(config_.watch_timeout_min.count(), config_.watch_timeout_max.count()));
  const std::chrono::seconds timeout(pick(rng_));
  std::string query = "?watch=1&allowWatchBookmarks=true&resourceVersion=" + urlEncode(rv_) +
                      "&timeoutSeconds=" + std::to_string(timeout.count());
  if (!resource_.field_selector.empty())
    query += "&fieldSelector=" + urlEncode(resource_.field_selector);
  {
    std::lock_guard lock(mu_);
    ++status_.watches;
  }
  LineFramer framer;
  Failure stream_failure;
  bool saw_event = false, healed = false;
  const auto started = std::chrono::steady_clock::now();
  const HttpResponse r = http_.get(
      resource_.path() + query,
      [&](std::string_view chunk) {
        const bool more = framer.feed(chunk, [&](std::string_view line) {
          return handleEvent(line, &stream_failure, &saw_event);
        });
        // The stream works again (an event or a bookmark arrived): the last
        // failure is over now, not when this watch ends minutes later.
        if (saw_event && !healed && stream_failure.outcome == Outcome::kOk) {
          healed = true;
          std::lock_guard lock(mu_);
          status_.last_error.clear();
        }
        return more;
      },
      cancel_, timeout + config_.watch_slack);
  // Progress resets the backoff: a watch that delivered events and then
  // broke is a normal reconnect, not a failing server.
  if (saw_event) {
    backoff_ = milliseconds(0);
    progressed_ = true;
  }
  if (r.cancelled) return {Outcome::kStopped, "", std::nullopt};
  if (stream_failure.outcome != Outcome::kOk) return stream_failure;
  if (r.status != 200 || !r.error.empty()) return classify(r, "watch");
  if (!saw_event && std::chrono::steady_clock::now() - started < config_.min_watch_duration)
    return {Outcome::kFailed, "watch " + resource_.path() + ": closed at once with no events",
            std::nullopt};
  {
    std::lock_guard lock(mu_);
    status_.last_error.clear();
  }
  return {};
}

bool Reflector::handleEvent(std::string_view line, Failure* out, bool* saw_event) {
  const auto fail = [&](std::string why) {
    *out = {Outcome::kFailed, "watch " + resource_.path() + ": " + why, std::nullopt};
    return false;
  };
  std::string why;
  std::optional<WatchEvent> ev = decodeWatchEvent(line, resource_, &why);
  if (!ev) return fail(why);
  const std::string& type = ev->type;
  json& object = ev->object;
  if (type == "ERROR") {
    const auto code_it = object.find("code");
    const long code = code_it != object.end() && code_it->is_number_integer()
                          ? code_it->get<long>()
                          : 0;
    const std::string why = describeStatus(code, object);
    // The 410 form that arrives after a 200: our version was compacted away.
    if (code == 410 || isTooLargeResourceVersion(object)) {
      *out = {Outcome::kRelist, "watch " + resource_.path() + ": " + why, std::nullopt};
      return false;
    }
    return fail(why);
  }
  const std::string rv = resourceVersionOf(object);
  if (type == "BOOKMARK") {
    // Not an object: only a newer version to resume from.
  } else if (type == "ADDED" || type == "MODIFIED") {
    upsert(ev->key, std::move(object));
  } else if (type == "DELETED") {
    remove(ev->key, object);
  } else {
    return fail("unknown event type \"" + type + "\"");
  }
  *saw_event = true;
  if (!rv.empty()) {
    rv_ = rv;
    std::lock_guard lock(mu_);
    status_.resource_version = rv;
  }
  return true;
}

void Reflector::upsert(const std::string& key, json object) {
  {
    std::lock_guard lock(mu_);
    store_[key] = fingerprint(object);
  }
  on_event_(Event::kUpsert, key, object);
}

void Reflector::remove(const std::string& key, const json& last) {
  {
    std::lock_guard lock(mu_);
    store_.erase(key);
  }
  on_event_(Event::kDelete, key, last);
}

Reflector::Failure Reflector::classify(const HttpResponse& r, const char* what) {
  const std::string where = std::string(what) + " " + resource_.path();
  if (r.status == 0 || (r.status >= 200 && r.status < 300))
    return {Outcome::kFailed, where + ": " + (r.error.empty() ? "no response" : r.error),
            std::nullopt};
  std::string ignored;
  const json status = parseApiJson(r.body, &ignored);
  const std::string why = where + ": " + describeStatus(r.status, status);
  if (r.status == 404) return {Outcome::kNotServed, why, std::nullopt};
  // 410 on a list is an expired continue token; on a watch, a compacted
  // version. Either way only a fresh, consistent list recovers.
  if (r.status == 410 || isTooLargeResourceVersion(status))
    return {Outcome::kRelist, why, std::nullopt};
  if (r.status == 429 || r.status == 503)
    return {Outcome::kFailed, why, parseRetryAfter(r.headers)};
  return {Outcome::kFailed, why, std::nullopt};
}

milliseconds Reflector::nextBackoff() {
  backoff_ =
      backoff_.count() == 0 ? config_.backoff_initial : std::min(backoff_ * 2, config_.backoff_max);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double stretch = 1.0 + config_.jitter * unit(rng_);
  return milliseconds(static_cast<int64_t>(backoff_.count() * stretch));
}

bool Reflector::sleepFor(milliseconds d) {
  if (config_.wait) {
    config_.wait(d);
    std::lock_guard lock(mu_);
    return !stopping_;
  }
  std::unique_lock lock(mu_);
  stop_cv_.wait_for(lock, d, [&] { return stopping_; });
  return !stopping_;
}

void Reflector::setError(const std::string& e) {
  std::lock_guard lock(mu_);
  status_.last_error = e;
}

}  // namespace smik::kube
