// Kubernetes Events on the SMI objects smik rejects or cannot apply, so that
// `kubectl describe traffictarget X` says why. Written from a background
// thread, rate-limited, and named deterministically so that the agents of
// every node report one problem once rather than once per node.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "agent/source/kube_http.h"

namespace smik::kube {

struct InvolvedObject {
  std::string api_version, kind, ns, name, uid, resource_version;
};

struct EventRecorderOptions {
  std::string component = "smik-agent";
  std::string host;  // this node: Event.source.host / reportingInstance
  // The same problem on the same object version is written again (its count
  // bumped) no sooner than this.
  std::chrono::milliseconds repeat_after{10 * 60 * 1000};
  // A token bucket over all writes, as client-go's recorder has: a thousand
  // bad objects must not become a thousand requests a second.
  int burst = 25;
  std::chrono::milliseconds refill{3000};  // one more write per refill
  size_t queue_max = 1000;                 // beyond this, events are dropped (counted)
};

struct EventRecorderStats {
  uint64_t written = 0;    // created or patched
  uint64_t duplicate = 0;  // another agent had written it already (409)
  uint64_t dropped = 0;    // queue full
  uint64_t failed = 0;     // any other error
  uint64_t forbidden = 0;  // 403: RBAC does not let us write Events
  uint64_t repeats = 0;    // record()s of a problem written within repeat_after: ignored
  uint64_t throttled = 0;  // times the writer found the token bucket empty and waited
  size_t queued = 0;       // problems waiting to be written now
};

class EventRecorder {
 public:
  EventRecorder(HttpClient& http, EventRecorderOptions options);
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  void start();
  void stop();

  // Non-blocking. type: "Warning" or "Normal". Repeats of an event already
  // written within repeat_after are ignored here.
  void record(const InvolvedObject& object, const std::string& type, const std::string& reason,
              const std::string& message);

  EventRecorderStats stats() const;

  // "<object>.<hash of uid, reason and message>": the same for every agent.
  static std::string eventName(const InvolvedObject& object, const std::string& reason,
                               const std::string& message);

 private:
  struct Pending {
    InvolvedObject object;
    std::string type, reason, message, name;
  };
  struct Sent {
    std::chrono::steady_clock::time_point at;
    int count = 0;
    bool created = false;  // we (not another agent) hold it: PATCH to repeat
  };
  void loop();
  void write(const Pending& p);
  bool takeToken();
  void forgetOld();  // mu_ held

  HttpClient& http_;
  const EventRecorderOptions options_;
  Cancel cancel_;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<Pending> queue_;
  std::map<std::string, Sent> sent_;  // by event name
  EventRecorderStats stats_;
  bool forbidden_logged_ = false;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point refilled_at_{};
};

}  // namespace smik::kube
