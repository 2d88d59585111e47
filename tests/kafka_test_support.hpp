// For the Kafka wire tests: exact-size heap copies of inputs, so that
// AddressSanitizer flags any read past the end of what a decoder was given.
#pragma once

#include <cstring>
#include <memory>
#include <string_view>

namespace ringfeed::test {

// A copy of `s` in a heap block of exactly its size: one byte further is a redzone.
class ExactString {
 public:
  explicit ExactString(std::string_view s)
      : size_(s.size()), p_(new char[s.empty() ? 1 : s.size()]) {
    if (!s.empty()) std::memcpy(p_.get(), s.data(), s.size());
  }
  std::string_view view() const { return {p_.get(), size_}; }

 private:
  std::size_t size_;
  std::unique_ptr<char[]> p_;
};

}  // namespace ringfeed::test
