// Result<T>: a value or an error message that says what went wrong and where.
// Used on set-up paths (create, attach); hot paths return small status enums instead.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace ringfeed {

struct Error {
  std::string message;
  int code = 0;  // an errno value when one applies (EEXIST, ENOENT, ...), else 0
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// For operations that return nothing on success.
struct Ok {};
using Status = Result<Ok>;

}  // namespace ringfeed
