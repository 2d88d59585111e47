#include "ringfeed/histogram.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ringfeed {

void Histogram::merge(const Histogram& other) {
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
  min_ = std::min(min_, other.min_);
}

std::uint64_t Histogram::percentile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The rank of the q-quantile, 1-based: at least one value is at or below it.
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(upper_edge(i), max_);
  }
  return max_;
}

std::string Histogram::summary(const char* unit) const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "p50 %llu %s  p90 %llu %s  p99 %llu %s  p99.9 %llu %s  max %llu %s  (n=%llu)",
                static_cast<unsigned long long>(percentile(0.5)), unit,
                static_cast<unsigned long long>(percentile(0.9)), unit,
                static_cast<unsigned long long>(percentile(0.99)), unit,
                static_cast<unsigned long long>(percentile(0.999)), unit,
                static_cast<unsigned long long>(max()), unit,
                static_cast<unsigned long long>(count_));
  return buf;
}

}  // namespace ringfeed
