// Latency histogram with log-linear buckets (the HdrHistogram idea): each power of two
// is split into 64 linear sub-buckets, so any recorded value is reported within 1/64
// (about 1.6 %) of itself; max is exact. Fixed size, no allocation while recording.
// The one histogram of the project: the demo, the bench tools and stat use it.
//
// Range and error: every value from 0 to 2^64 - 1 has a bucket; values below 64 are
// exact, and any other value v is reported as the top of its bucket, in
// [v, v * (1 + 1/64)). So from tens of nanoseconds to seconds (and beyond) a percentile
// is at most 1.6 % above the true one, never below it.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <vector>

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
  // The largest relative error of percentile(): (reported - true) / true < this.
  static constexpr double kRelativeError = 1.0 / kSub;

  // "p50 88 ns  p90 ...  p99 ...  p99.9 ...  p99.99 ...  max ... (n=...)"
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

// The quantiles of a percentile-distribution table for `count` values: 0, then
// 1 - 10^(-k / per_decade) for k = 1, 2, ... ("nines": 0.9, 0.99, 0.999 at k = per_decade,
// 2 per_decade, ...) while 1 / (1 - q) stays at most `count` (beyond that a percentile is
// the max), then 1 (the max).
std::vector<double> distribution_quantiles(std::uint64_t count, int per_decade = 10);

// Writes the percentile distribution of one or more histograms as CSV, one row per
// quantile of distribution_quantiles(largest count), one column per histogram:
//   quantile,nines,<name 1>,<name 2>,...
//   0.9,10,182,6719
// `nines` is 1 / (1 - quantile), the x axis of a log-scale percentile plot; the last row
// (quantile 1, the max) gives it as twice the largest count so that it stays finite.
struct NamedHistogram {
  std::string name;
  const Histogram* histogram;
};
void write_distribution_csv(std::ostream& out, std::span<const NamedHistogram> columns);

}  // namespace ringfeed
