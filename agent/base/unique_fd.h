// The one owner of a file descriptor. Every descriptor smik opens (maps,
// links, sockets, cgroups, inotify, netlink) is held by a UniqueFd or by a
// type built on one, so a descriptor is closed exactly once, on every path,
// and nowhere else: code outside this file never calls close().
#pragma once

#include <unistd.h>

#include <fcntl.h>

#include <utility>

namespace smik {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives the descriptor up to a new owner (one that closes it itself, like
  // the kernel after a successful pin-and-close or a library handle).
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  // Closes what is held (errors of close() are not actionable: the
  // descriptor is gone either way) and takes fd.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

  // A second owner of the same open file: for a descriptor another object
  // (a libbpf skeleton) owns and this one must outlive. Invalid if dup fails.
  static UniqueFd duplicate(int fd) noexcept {
    return UniqueFd(fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1);
  }

 private:
  int fd_ = -1;
};

}  // namespace smik
