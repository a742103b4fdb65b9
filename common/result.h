// Result<T>: a value or a user-facing error message, the policy for expected failures in every layer.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace ab {

/// A value of type T, or an error message that names the file and says what failed and what to do.
/// Expected failures (bad audio, a busy or corrupt database, an infeasible alignment) travel as
/// Result; programmer errors are asserts.
template <class T>
class [[nodiscard]] Result {
 public:
  /// Success.
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  /// Failure with `message`.
  static Result failure(std::string message) { return Result(Tag{}, std::move(message)); }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  /// The value; only when ok().
  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  /// The error message; empty when ok().
  const std::string& error() const {
    static const std::string kNoError;
    return ok() ? kNoError : std::get<1>(v_);
  }

 private:
  struct Tag {};
  Result(Tag, std::string message) : v_(std::in_place_index<1>, std::move(message)) {}
  std::variant<T, std::string> v_;
};

/// The value of a Result for operations that return nothing but can fail: `Result<Done>`.
struct Done {};

}  // namespace ab
