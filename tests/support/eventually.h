// Waiting in tests for what another thread or process makes true.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace smik::testing {

// Polls `done` until it holds or `limit` has passed; true if it held. Only
// for conditions something else makes true (a server answers, a counter
// reaches n). "Nothing happened" is never checked by waiting: give the code
// an explicit sync point (a counter of what it ignored, a fake clock).
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(5),
                       std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(poll);
  }
  return done();
}

// The same with the limit in milliseconds, as the end-to-end tests write it.
inline bool eventually(const std::function<bool()>& done, int limit_ms) {
  return eventually(done, std::chrono::milliseconds(limit_ms));
}

}  // namespace smik::testing
