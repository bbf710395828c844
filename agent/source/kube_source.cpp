#include "agent/source/kube_source.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "agent/compile/compile.h"

namespace smik::kube {
namespace {

using json = nlohmann::json;

struct JsonReply {
  long status = 0;
  std::string error;
  json body;
};

JsonReply getJson(HttpClient& http, const std::string& path, Cancel& cancel) {
  std::string body;
  HttpResponse r = http.get(
      path,
      [&body](std::string_view piece) {
        body.append(piece);
        return true;
      },
      cancel);
  JsonReply out{r.status, r.error, nullptr};
  if (r.error.empty() && r.status >= 200 && r.status <= 299) {
    std::string why;
    out.body = parseApiJson(body, &why);
    if (out.body.is_discarded()) out.error = path + ": reply " + why;
  }
  return out;
}

// Members of what an API server sent, of the type expected or empty.
const json& arrayAt(const json& j, const char* key) {
  static const json kEmpty = json::array();
  if (!j.is_object()) return kEmpty;
  const auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : kEmpty;
}

std::string stringAt(const json& j, const char* key) {
  if (!j.is_object()) return "";
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool isSmi(const std::string& api_version) {
  return api_version.find(".smi-spec.io/") != std::string::npos;
}

}  // namespace

const std::vector<KindVersions>& smiKinds() {
  static const std::vector<KindVersions> kinds = {
      {"access.smi-spec.io", "TrafficTarget", "traffictargets", {"v1alpha3", "v1alpha2", "v1alpha1"}},
      {"specs.smi-spec.io", "HTTPRouteGroup", "httproutegroups",
       {"v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"}},
      {"specs.smi-spec.io", "TCPRoute", "tcproutes", {"v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"}},
      {"specs.smi-spec.io", "UDPRoute", "udproutes", {"v1alpha4"}},
      {"split.smi-spec.io", "TrafficSplit", "trafficsplits",
       {"v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"}},
  };
  return kinds;
}

std::optional<Discovery> discover(HttpClient& http, Cancel& cancel, std::string* err) {
  Discovery d;
  for (const auto& r : smikResources())
    if (!isSmi(r.api_version)) d.resources.push_back(r);

  std::map<std::string, std::set<std::string>> served;  // group -> versions
  std::map<std::string, std::set<std::string>> plurals;  // group/version -> resources
  auto fail = [&](const std::string& path, const JsonReply& r) {
    *err = path + ": " + (r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error);
    return std::nullopt;
  };
  for (const auto& k : smiKinds()) {
    if (!served.count(k.group)) {
      const std::string path = "/apis/" + k.group;
      JsonReply r = getJson(http, path, cancel);
      auto& versions = served[k.group];
      if (r.status == 404) {
        // The group's CRDs are not installed: not an error to retry fast.
      } else if (!r.error.empty() || r.status < 200 || r.status > 299) {
        return fail(path, r);
      } else {
        for (const auto& v : arrayAt(r.body, "versions"))
          if (const std::string version = stringAt(v, "version"); !version.empty())
            versions.insert(version);
      }
    }
    std::string chosen;
    for (const auto& v : k.versions) {
      if (!served[k.group].count(v)) continue;
      const std::string gv = k.group + "/" + v;
      if (!plurals.count(gv)) {
        const std::string path = "/apis/" + gv;
        JsonReply r = getJson(http, path, cancel);
        auto& names = plurals[gv];
        if (r.status != 404) {
          if (!r.error.empty() || r.status < 200 || r.status > 299) return fail(path, r);
          for (const auto& res : arrayAt(r.body, "resources"))
            if (const std::string name = stringAt(res, "name"); !name.empty()) names.insert(name);
        }
      }
      if (plurals[gv].count(k.plural)) {
        chosen = v;
        break;
      }
    }
    if (chosen.empty()) {
      // Watch the preferred version anyway: the reflector notices, slowly,
      // when the CRD is installed.
      chosen = k.versions.front();
      d.not_served.push_back(k.kind + "." + k.group);
    }
    d.resources.push_back({k.group + "/" + chosen, k.kind, k.plural, ""});
  }
  return d;
}

KubeSource::KubeSource(KubeConfig config, KubeSourceOptions options)
    : http_(std::move(config), HttpTimeouts{}, options.transport), options_(std::move(options)) {
  if (options_.record_events) events_ = std::make_unique<EventRecorder>(http_, options_.events);
}

KubeSource::~KubeSource() { stop(); }

void KubeSource::start() {
  if (events_) events_->start();
  loop_thread_ = std::thread([this] { loop(); });
}

void KubeSource::stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_ && !loop_thread_.joinable()) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  cancel_.cancel();
  if (loop_thread_.joinable()) loop_thread_.join();
  std::vector<Running> running;
  {
    std::lock_guard lock(mu_);
    running.swap(running_);
  }
  for (auto& r : running) r.reflector->stop();
  for (auto& r : running)
    if (r.thread.joinable()) r.thread.join();
  if (events_) events_->stop();
}

void KubeSource::notify() {
  {
    std::lock_guard lock(change_mu_);
    ++notified_;
  }
  change_cv_.notify_all();
}

void KubeSource::loop() {
  auto backoff = options_.discovery_retry_initial;
  while (true) {
    std::string err;
    std::optional<Discovery> d = discover(http_, cancel_, &err);
    if (cancel_.cancelled()) return;
    std::chrono::milliseconds wait = options_.rediscover;
    if (!d) {
      bool first;
      {
        std::lock_guard lock(mu_);
        first = discovery_error_ != err;
        discovery_error_ = err;
      }
      if (first) spdlog::warn("kubernetes: discovery failed, retrying: {}", err);
      wait = backoff;
      backoff = std::min(backoff * 2, options_.discovery_retry_max);
    } else {
      backoff = options_.discovery_retry_initial;
      {
        std::lock_guard lock(mu_);
        discovery_error_.clear();
        if (d->not_served != not_served_ && !d->not_served.empty())
          spdlog::warn("kubernetes: not served (SMI CRDs not installed?): {}",
                       fmt::join(d->not_served, ", "));
        not_served_ = d->not_served;
      }
      reconcileReflectors(*d);
      {
        std::lock_guard lock(mu_);
        discovered_ = true;
      }
    }
    notify();
    std::unique_lock lock(stop_mu_);
    if (stop_cv_.wait_for(lock, wait, [this] { return stopping_; })) return;
  }
}

void KubeSource::stopReflector(Running* r) {
  r->reflector->stop();
  if (r->thread.joinable()) r->thread.join();
}

void KubeSource::reconcileReflectors(const Discovery& d) {
  std::lock_guard lock(mu_);
  for (const auto& want : d.resources) {
    auto same_kind = std::find_if(running_.begin(), running_.end(), [&](const Running& r) {
      return r.resource.kind == want.kind && r.resource.plural == want.plural;
    });
    if (same_kind != running_.end()) {
      if (same_kind->resource.api_version == want.api_version) continue;
      spdlog::info("kubernetes: {} now read at {} (was {})", want.kind, want.api_version,
                   same_kind->resource.api_version);
      stopReflector(&*same_kind);
      cache_.dropResource(same_kind->resource);
      running_.erase(same_kind);
    }
    Running r;
    r.resource = want;
    r.reflector = std::make_unique<Reflector>(
        http_, want, options_.reflector,
        [this](Reflector::Event e, const std::string& key, const json& object) {
          cache_.apply(e, key, object);
          notify();
        },
        [this] { notify(); });
    Reflector* raw = r.reflector.get();
    r.thread = std::thread([raw] { raw->run(); });
    running_.push_back(std::move(r));
  }
}

bool KubeSource::synced() const {
  std::lock_guard lock(mu_);
  if (!discovered_) return false;
  for (const auto& r : running_) {
    ReflectorStatus st = r.reflector->status();
    // A collection the server does not serve is complete: it is empty.
    if (!st.synced && !st.not_served) return false;
  }
  return true;
}

std::string KubeSource::problem() const {
  std::lock_guard lock(mu_);
  if (!discovered_)
    return "waiting for the Kubernetes API at " + http_.config().server + ": " +
           (discovery_error_.empty() ? "discovering served versions" : discovery_error_);
  std::vector<std::string> waiting, failing;
  for (const auto& r : running_) {
    ReflectorStatus st = r.reflector->status();
    if (!st.synced && !st.not_served)
      waiting.push_back(r.resource.plural + (st.last_error.empty() ? "" : " (" + st.last_error + ")"));
    else if (st.synced && !st.last_error.empty())
      failing.push_back(r.resource.plural + ": " + st.last_error);
  }
  if (!waiting.empty()) return "not listed yet: " + fmt::format("{}", fmt::join(waiting, ", "));
  if (!failing.empty())
    return "serving the last view; " + fmt::format("{}", fmt::join(failing, "; "));
  return "";
}

std::vector<std::string> KubeSource::collections() const {
  std::vector<std::string> out;
  for (const auto& [r, st] : reflectors()) {
    std::string line = r.plural + " (" + r.api_version + "): ";
    if (st.synced)
      line += "synced, resourceVersion " + st.resource_version;
    else if (st.not_served)
      line += "not served (CRD not installed?)";
    else
      line += "listing";
    line += ", " + std::to_string(st.lists) + (st.lists == 1 ? " list, " : " lists, ") +
            std::to_string(st.watches) + (st.watches == 1 ? " watch" : " watches");
    if (st.failures) line += ", " + std::to_string(st.failures) + " failed";
    if (!st.last_error.empty()) line += "; " + st.last_error;
    out.push_back(std::move(line));
  }
  return out;
}

std::vector<std::pair<Resource, ReflectorStatus>> KubeSource::reflectors() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<Resource, ReflectorStatus>> out;
  for (const auto& r : running_) out.emplace_back(r.resource, r.reflector->status());
  return out;
}

bool KubeSource::refresh() {
  // Taken before reading the cache: an event after this point wakes the
  // next waitForChange() even if this call already saw it.
  {
    std::lock_guard lock(change_mu_);
    waited_ = notified_;
  }
  if (!synced()) {
    was_synced_ = false;
    return false;
  }
  const uint64_t gen = cache_.generation();
  const bool changed = !was_synced_ || gen != seen_generation_;
  was_synced_ = true;
  seen_generation_ = gen;
  if (changed && events_) reportRejected();
  return changed;
}

void KubeSource::waitForChange(int timeout_ms) {
  // Against what refresh() last took in: an event that landed in between
  // ends the wait at once.
  std::unique_lock lock(change_mu_);
  change_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return notified_ != waited_; });
}

void KubeSource::reportRejected() {
  for (const auto& [involved, error] : cache_.rejected())
    if (isSmi(involved.api_version)) events_->record(involved, "Warning", "Rejected", error.reason);
}

void KubeSource::reportPlan(const compile::Plan& plan) {
  if (!events_) return;
  for (const auto& d : plan.diagnostics) {
    if (d.level != compile::Diagnostic::Level::kWarning) continue;
    std::optional<InvolvedObject> involved = cache_.find(d.object);
    if (involved && (isSmi(involved->api_version) || involved->kind == "Service"))
      events_->record(*involved, "Warning", "NotApplied", d.message);
  }
}

}  // namespace smik::kube
