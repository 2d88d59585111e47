// Helpers shared by the tests of the networked sources (redis_source_test.cpp,
// kafka_source_test.cpp): a sink that keeps what it is handed, opening a source by URI,
// and polling it until enough records came.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/source.hpp"
#include "test_support.hpp"

namespace ringfeed::test {

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A record as a sink was handed it, with copies of its key and value.
struct Got {
  std::uint64_t offset;
  std::uint64_t next_offset;
  std::int64_t timestamp_ns;
  std::string key;
  std::string value;
  std::string headers;  // encoded (SourceRecord::headers)
};

// Keeps what it is given, per partition; refuses everything once `limit` is reached.
class Collect final : public io::BatchSink {
 public:
  std::size_t take(std::uint32_t partition, std::span<const io::SourceRecord> records) override {
    std::size_t n = 0;
    for (const auto& r : records) {
      if (total_ >= limit) break;
      got[partition].push_back({r.upstream_offset, r.next_offset, r.timestamp_ns,
                                std::string(r.key), std::string(r.value), std::string(r.headers)});
      ++total_;
      ++n;
    }
    return n;
  }
  std::size_t total() const { return total_; }
  std::map<std::uint32_t, std::vector<Got>> got;
  std::size_t limit = SIZE_MAX;

 private:
  std::size_t total_ = 0;
};

// The source `uri` opened with default options; nullptr, and a test failure, if it
// could not be.
inline std::unique_ptr<io::Source> open_source_or_null(const std::string& uri) {
  auto s = io::open_source(uri, {});
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(s.value()) : nullptr;
}

// Polls until `count` records arrived in all, or 20 s passed.
inline bool poll_until(io::Source& s, Collect& sink, std::size_t count) {
  using namespace std::chrono_literals;
  return wait_until(
      [&] {
        auto n = s.poll_batches(sink, 20ms);
        EXPECT_TRUE(n.ok()) << (n.ok() ? "" : n.error().message);
        return sink.total() >= count;
      },
      20s);
}

}  // namespace ringfeed::test
