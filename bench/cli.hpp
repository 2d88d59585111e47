// Flag parsing for ringfeed-bench: "--name VALUE" or "--name=VALUE". A bad flag throws
// UsageError with a one-line reason; main prints it and exits 2.
#pragma once

#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ringfeed::bench {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ArgReader {
 public:
  explicit ArgReader(std::vector<std::string_view> args) : args_(std::move(args)) {}

  bool done() const { return i_ >= args_.size(); }
  std::string_view peek() const { return args_[i_]; }
  // Consumes the current argument if it is exactly `flag` (a flag without a value).
  bool flag(std::string_view name) {
    if (done() || args_[i_] != name) return false;
    ++i_;
    return true;
  }
  // Consumes "--name VALUE" or "--name=VALUE" and parses VALUE as a whole number in
  // [min, max].
  bool number(std::string_view name, std::uint64_t min, std::uint64_t max, std::uint64_t& out) {
    std::string_view value;
    if (!valued(name, value)) return false;
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size()) {
      throw UsageError(std::string(name) + ": '" + std::string(value) + "' is not a whole number");
    }
    if (v < min || v > max) {
      throw UsageError(std::string(name) + " " + std::string(value) + " is out of range [" +
                       std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    out = v;
    return true;
  }
  // Consumes "--name VALUE" or "--name=VALUE"; VALUE must not be empty.
  bool text(std::string_view name, std::string_view& out) {
    if (!valued(name, out)) return false;
    if (out.empty()) throw UsageError(std::string(name) + " needs a non-empty value");
    return true;
  }
  [[noreturn]] void unknown() const {
    throw UsageError("unknown argument '" + std::string(args_[i_]) + "' (see --help)");
  }

 private:
  bool valued(std::string_view name, std::string_view& value) {
    const std::string_view a = args_[i_];
    if (a == name) {
      if (i_ + 1 >= args_.size()) throw UsageError(std::string(name) + " needs a value");
      value = args_[i_ + 1];
      i_ += 2;
      return true;
    }
    if (a.size() > name.size() && a.substr(0, name.size()) == name && a[name.size()] == '=') {
      value = a.substr(name.size() + 1);
      ++i_;
      return true;
    }
    return false;
  }

  std::vector<std::string_view> args_;
  std::size_t i_ = 0;
};

}  // namespace ringfeed::bench
