// Latency histogram with log-linear buckets (the HdrHistogram idea): each power of two
// is split into 64 linear sub-buckets, so any recorded value is reported within 1/64
// (about 1.6 %) of itself; max is exact. Fixed size, no allocation while recording.
// The one histogram of the project: the demo, the bench tools and stat use it.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <string>

namespace ringfeed {

class Histogram {
 public:
  static constexpr int kSubBits = 6;  // 64 sub-buckets per power of two
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  void record(std::uint64_t value) {
    ++counts_[index_of(value)];
    ++count_;
    if (value > max_) max_ = value;
    if (value < min_) min_ = value;
  }
  void merge(const Histogram& other);
  void reset() { *this = Histogram{}; }

  std::uint64_t count() const { return count_; }
  std::uint64_t max() const { return count_ == 0 ? 0 : max_; }
  std::uint64_t min() const { return count_ == 0 ? 0 : min_; }
  // The value at quantile q in [0, 1] (0.5 = median): the upper edge of its bucket,
  // never above max().
  std::uint64_t percentile(double q) const;

  // "p50 88 ns  p90 ...  p99 ...  p99.9 ...  max ... (n=...)"
  std::string summary(const char* unit = "ns") const;

  static int index_of(std::uint64_t v) {
    if (v < kSub) return static_cast<int>(v);
    const int top = 63 - std::countl_zero(v);  // position of the highest set bit, >= kSubBits
    const int shift = top - kSubBits;
    const int sub = static_cast<int>((v >> shift) & (kSub - 1));
    return (shift + 1) * kSub + sub;
  }
  // Largest value that falls in bucket i.
  static std::uint64_t upper_edge(int i) {
    if (i < kSub) return static_cast<std::uint64_t>(i);
    const int shift = i / kSub - 1;
    const std::uint64_t sub = static_cast<std::uint64_t>(i % kSub) + kSub;
    return ((sub + 1) << shift) - 1;
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = UINT64_MAX;
};

}  // namespace ringfeed
