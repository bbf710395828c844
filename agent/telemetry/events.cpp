#include "agent/telemetry/events.h"

namespace smik::telemetry {

namespace {
// A watcher that stops reading must not grow without bound.
constexpr size_t kMaxQueued = 10000;
}  // namespace

void EventHub::publish(Event e) {
  {
    std::lock_guard<std::mutex> l(mu_);
    published_++;
    for (auto& [id, q] : queues_) {
      if (q.size() >= kMaxQueued) q.pop_front();
      q.push_back(e);
    }
    recent_.push_back(std::move(e));
    if (recent_.size() > history_) recent_.pop_front();
  }
  cv_.notify_all();
}

int EventHub::subscribe() {
  std::lock_guard<std::mutex> l(mu_);
  int id = next_id_++;
  queues_[id];
  return id;
}

void EventHub::unsubscribe(int id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queues_.erase(id);
  }
  cv_.notify_all();
}

bool EventHub::next(int id, Event* out, int timeout_ms) {
  std::unique_lock<std::mutex> l(mu_);
  auto ready = [&] {
    auto it = queues_.find(id);
    return it == queues_.end() || !it->second.empty();
  };
  if (!cv_.wait_for(l, std::chrono::milliseconds(timeout_ms), ready)) return false;
  auto it = queues_.find(id);
  if (it == queues_.end()) return false;
  *out = std::move(it->second.front());
  it->second.pop_front();
  return true;
}

std::vector<Event> EventHub::recent(size_t n) const {
  std::lock_guard<std::mutex> l(mu_);
  size_t from = recent_.size() > n ? recent_.size() - n : 0;
  return {recent_.begin() + from, recent_.end()};
}

uint64_t EventHub::published() const {
  std::lock_guard<std::mutex> l(mu_);
  return published_;
}

void EventHub::countUnreadable() {
  std::lock_guard<std::mutex> l(mu_);
  unreadable_++;
}

uint64_t EventHub::unreadable() const {
  std::lock_guard<std::mutex> l(mu_);
  return unreadable_;
}

}  // namespace smik::telemetry
