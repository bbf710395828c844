// Events from the kernel's ring buffer (policy denials, failed connections,
// new edges), fanned out to live watchers (`smik events`, gRPC WatchEvents)
// and kept in a short history.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace smik::telemetry {

struct Event {
  std::chrono::system_clock::time_point time;
  std::string kind;    // a name of SMIK_EVENT_KINDS (bpf/include/smik_abi.h)
  std::string reason;  // connect-failed: SMIK_FAIL_REASONS; http-deny: SMIK_HTTP_COUNTER_FACTS
  std::string client;  // ns/pod, or the address when no pod has it
  std::string server;
  uint16_t port = 0;
  std::string proto;   // "TCP" | "UDP" | number
  uint32_t suppressed = 0;  // like events dropped by the kernel's rate limit before this one
  // http-deny: the refused request, as far as the judge had it (KernelEvent)
  std::string method;
  std::string path;
  bool path_truncated = false;
};

class EventHub {
 public:
  explicit EventHub(size_t history = 1000) : history_(history) {}
  void publish(Event e);
  // A watcher sees every event published after it subscribed.
  int subscribe();
  void unsubscribe(int id);
  // Next event for a watcher; false on timeout (or once unsubscribed).
  bool next(int id, Event* out, int timeout_ms);
  std::vector<Event> recent(size_t n) const;
  uint64_t published() const;
  // Ring buffer records too short for their kind, dropped unread.
  void countUnreadable();
  uint64_t unreadable() const;

 private:
  size_t history_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> recent_;
  std::map<int, std::deque<Event>> queues_;
  int next_id_ = 1;
  uint64_t published_ = 0;
  uint64_t unreadable_ = 0;
};

}  // namespace smik::telemetry
