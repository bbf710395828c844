// Proc: a child process of a test, killed and reaped by PID when its Proc
// or its TestBed goes away.
#include <poll.h>

#include <chrono>
#include <string>

#include "tests/testbed/internal.h"

namespace smik::testbed {

using namespace detail;

Proc::Proc(std::shared_ptr<State> s) : s_(std::move(s)) {}
Proc::Proc(Proc&&) noexcept = default;
Proc& Proc::operator=(Proc&& o) noexcept {
  if (this != &o) {
    if (s_) s_->killAndReap();
    s_ = std::move(o.s_);
  }
  return *this;
}
Proc::~Proc() {
  if (s_) s_->killAndReap();
}

pid_t Proc::pid() const { return s_ ? s_->pid : -1; }

int Proc::wait(int timeout_ms) {
  if (!s_) return -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!s_->tryReap(false)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return -1;
    s_->pollOnce(static_cast<int>(std::min<long long>(left, 10)));
  }
  return s_->status;
}

std::string Proc::output() {
  if (!s_) return {};
  drainFd(s_->fd, s_->buf);
  return s_->buf;
}

bool Proc::waitFor(const std::string& needle, int timeout_ms) {
  if (!s_) return false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    drainFd(s_->fd, s_->buf);
    if (s_->buf.find(needle) != std::string::npos) return true;
    if (s_->tryReap(false)) return s_->buf.find(needle) != std::string::npos;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    s_->pollOnce(static_cast<int>(std::min<long long>(left, 10)));
  }
}

int Proc::kill() {
  if (!s_) return -1;
  s_->killAndReap();
  return s_->status;
}


}  // namespace smik::testbed
