#include "agent/source/kube_events.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace smik::kube {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// RFC 3339 in UTC, seconds: what Event timestamps (metav1.Time) carry.
std::string rfc3339Now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Event messages are capped by the API server (1 KiB in events.k8s.io).
std::string capMessage(std::string m) {
  constexpr size_t kMax = 1024;
  if (m.size() > kMax) m = m.substr(0, kMax - 3) + "...";
  return m;
}

}  // namespace

EventRecorder::EventRecorder(HttpClient& http, EventRecorderOptions options)
    : http_(http), options_(std::move(options)), tokens_(options_.burst) {}

EventRecorder::~EventRecorder() { stop(); }

void EventRecorder::start() {
  refilled_at_ = Clock::now();
  thread_ = std::thread([this] { loop(); });
}

void EventRecorder::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  cancel_.cancel();
  if (thread_.joinable()) thread_.join();
}

std::string EventRecorder::eventName(const InvolvedObject& o, const std::string& reason,
                                     const std::string& message) {
  // The uid pins the object's incarnation (a deleted and recreated object
  // gets fresh events); the message pins the problem.
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a(message, fnv1a(reason, fnv1a(o.uid)))));
  // Names are DNS subdomains (253 chars); object names are at most 253 too.
  std::string base = o.name.substr(0, 253 - 1 - 16 - 5);
  return base + ".smik." + hex;
}

void EventRecorder::record(const InvolvedObject& object, const std::string& type,
                           const std::string& reason, const std::string& message) {
  if (object.ns.empty() || object.name.empty()) return;  // SMI objects are namespaced
  Pending p{object, type, reason, capMessage(message), ""};
  p.name = eventName(object, reason, p.message);
  {
    std::lock_guard lock(mu_);
    auto it = sent_.find(p.name);
    if (it != sent_.end() && Clock::now() - it->second.at < options_.repeat_after) {
      ++stats_.repeats;
      return;
    }
    for (const auto& q : queue_)
      if (q.name == p.name) {
        ++stats_.repeats;
        return;
      }
    if (queue_.size() >= options_.queue_max) {
      ++stats_.dropped;
      return;
    }
    forgetOld();
    queue_.push_back(std::move(p));
  }
  cv_.notify_all();
}

void EventRecorder::forgetOld() {
  // Problems come and go with objects' versions; what was written longer
  // ago than repeat_after no longer suppresses anything.
  if (sent_.size() < options_.queue_max) return;
  const auto now = Clock::now();
  for (auto it = sent_.begin(); it != sent_.end();)
    it = now - it->second.at >= options_.repeat_after ? sent_.erase(it) : std::next(it);
}

EventRecorderStats EventRecorder::stats() const {
  std::lock_guard lock(mu_);
  EventRecorderStats s = stats_;
  s.queued = queue_.size();
  return s;
}

bool EventRecorder::takeToken() {
  const auto now = Clock::now();
  const double refills = std::chrono::duration<double>(now - refilled_at_) /
                         std::chrono::duration<double>(options_.refill);
  tokens_ = std::min<double>(options_.burst, tokens_ + refills);
  refilled_at_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

void EventRecorder::loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (queue_.empty()) {
      cv_.wait(lock);
      continue;
    }
    if (!takeToken()) {
      ++stats_.throttled;
      cv_.wait_for(lock, options_.refill);
      continue;
    }
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    // In flight counts as sent: a report arriving meanwhile is a repeat.
    sent_[p.name].at = Clock::now();
    lock.unlock();
    write(p);
    lock.lock();
  }
}

void EventRecorder::write(const Pending& p) {
  Sent prev;
  {
    std::lock_guard lock(mu_);
    auto it = sent_.find(p.name);
    if (it != sent_.end()) prev = it->second;
  }
  const std::string now = rfc3339Now();
  const std::string base = "/api/v1/namespaces/" + p.object.ns + "/events";
  HttpResponse r;
  int count = prev.count + 1;
  if (prev.created) {
    // Our own event, still true: bump it, as client-go's correlator does.
    json patch = {{"count", count}, {"lastTimestamp", now}, {"message", p.message}};
    r = http_.send("PATCH", base + "/" + p.name, patch.dump(), "application/merge-patch+json",
                   cancel_);
  }
  if (!prev.created || r.status == 404) {
    json involved = {{"apiVersion", p.object.api_version}, {"kind", p.object.kind},
                     {"namespace", p.object.ns},           {"name", p.object.name},
                     {"uid", p.object.uid},                {"resourceVersion", p.object.resource_version}};
    json event = {{"apiVersion", "v1"},
                  {"kind", "Event"},
                  {"metadata", {{"name", p.name}, {"namespace", p.object.ns}}},
                  {"involvedObject", involved},
                  {"type", p.type},
                  {"reason", p.reason},
                  {"message", p.message},
                  {"source", {{"component", options_.component}, {"host", options_.host}}},
                  {"reportingComponent", "smik.io/" + options_.component},
                  {"reportingInstance", options_.host},
                  {"firstTimestamp", now},
                  {"lastTimestamp", now},
                  {"count", count}};
    r = http_.send("POST", base, event.dump(), "application/json", cancel_);
  }
  std::lock_guard lock(mu_);
  if (r.cancelled) return;
  Sent& s = sent_[p.name];
  s.at = Clock::now();
  if (r.status >= 200 && r.status <= 299) {
    ++stats_.written;
    s.count = count;
    s.created = true;
  } else if (r.status == 409) {
    // Another node's agent reported this very problem: one event is enough.
    ++stats_.duplicate;
  } else if (r.status == 403) {
    ++stats_.forbidden;
    if (!forbidden_logged_) {
      forbidden_logged_ = true;
      spdlog::warn("events: not allowed to write Events in {} (403); rejected objects are "
                   "reported in the log and /status only. Grant create/patch on events.",
                   p.object.ns);
    }
  } else {
    ++stats_.failed;
    // Try again on the next report rather than after repeat_after.
    sent_.erase(p.name);
    spdlog::debug("events: {} {}/{}: HTTP {} {}", p.reason, p.object.ns, p.object.name,
                  r.status, r.error);
  }
}

}  // namespace smik::kube
