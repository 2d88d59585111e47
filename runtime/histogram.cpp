#include "ringfeed/histogram.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

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
  // The rank of the q-quantile, 1-based: at least one value is at or below it. A product
  // that is an integer but for rounding (0.99 * 100 = 99.000000000000014) counts as one.
  double exact = q * static_cast<double>(count_);
  if (std::abs(exact - std::round(exact)) < 1e-9 * std::max(1.0, exact)) exact = std::round(exact);
  const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(exact)));
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
                "p50 %llu %s  p90 %llu %s  p99 %llu %s  p99.9 %llu %s  p99.99 %llu %s  max %llu "
                "%s  (n=%llu)",
                static_cast<unsigned long long>(percentile(0.5)), unit,
                static_cast<unsigned long long>(percentile(0.9)), unit,
                static_cast<unsigned long long>(percentile(0.99)), unit,
                static_cast<unsigned long long>(percentile(0.999)), unit,
                static_cast<unsigned long long>(percentile(0.9999)), unit,
                static_cast<unsigned long long>(max()), unit,
                static_cast<unsigned long long>(count_));
  return buf;
}

std::vector<double> distribution_quantiles(std::uint64_t count, int per_decade) {
  std::vector<double> q{0.0};
  for (int k = 1;; ++k) {
    // 10^(k / per_decade) computed from k, not accumulated, so decades land on 0.99... exactly.
    const double inverse = std::pow(10.0, static_cast<double>(k) / per_decade);
    if (inverse > static_cast<double>(count) * (1 + 1e-9)) break;  // 10^(60/10) = 1e6 + ulp
    q.push_back(1.0 - 1.0 / inverse);
  }
  q.push_back(1.0);
  return q;
}

void write_distribution_csv(std::ostream& out, std::span<const NamedHistogram> columns) {
  std::uint64_t largest = 0;
  for (const auto& c : columns) largest = std::max(largest, c.histogram->count());
  out << "quantile,nines";
  for (const auto& c : columns) out << ',' << c.name;
  out << '\n';
  char buf[64];
  for (const double q : distribution_quantiles(largest)) {
    const double nines = q < 1.0 ? 1.0 / (1.0 - q) : 2.0 * static_cast<double>(largest);
    std::snprintf(buf, sizeof buf, "%.10g,%.6g", q, nines);
    out << buf;
    for (const auto& c : columns) out << ',' << c.histogram->percentile(q);
    out << '\n';
  }
}

}  // namespace ringfeed
