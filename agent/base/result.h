// What a fallible operation returns: its value, or why not (agent/README.md,
// "Errors", says which functions return one). The shape of std::expected
// (C++23) and tl::expected, neither of which smik's compilers and Debian 12
// offer, reduced to what smik uses; [[nodiscard]] so that no caller can
// drop an error without saying so.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace smik {

// Why an operation failed, in words for a log line or an API answer.
struct Error {
  std::string message;
};

inline Error fail(std::string message) { return Error{std::move(message)}; }

// Reading the value of a failed Result: a bug in the caller (which had to
// check), never an error path. Not caught anywhere.
struct BadResultAccess : std::logic_error {
  using std::logic_error::logic_error;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit, as std::expected
  Result(Error e) : v_(std::move(e)) {}      // NOLINT

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return check(), std::get<0>(v_); }
  const T& value() const& { return check(), std::get<0>(v_); }
  T&& value() && { return check(), std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const std::string& error() const {
    if (ok()) throw BadResultAccess("error() of a Result that holds a value");
    return std::get<1>(v_).message;
  }

 private:
  void check() const {
    if (!ok()) throw BadResultAccess("value() of a failed Result: " + std::get<1>(v_).message);
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;  // success
  Result(Error e) : error_(std::move(e.message)), failed_(true) {}  // NOLINT

  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const std::string& error() const {
    if (ok()) throw BadResultAccess("error() of a Result that succeeded");
    return error_;
  }

 private:
  std::string error_;
  bool failed_ = false;
};

// "what: <strerror>" of errno, or of a libbpf-style negative error code.
inline std::string errnoText(const std::string& what, int e = errno) {
  return what + ": " + std::strerror(e < 0 ? -e : e);
}

}  // namespace smik
