// ringfeed::Histogram against distributions whose percentiles are known exactly: every
// percentile is the true one (the value of rank ceil(q * n)) or at most
// Histogram::kRelativeError above it, from tens of nanoseconds to seconds; max is exact;
// and the percentile-distribution CSV says the same as percentile().
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ringfeed/histogram.hpp"

using ringfeed::Histogram;

namespace {

// The value of rank ceil(q * n) (1-based) of the values, sorted: what percentile(q)
// reports within the stated error.
std::uint64_t true_percentile(const std::vector<std::uint64_t>& sorted, double q) {
  double exact = q * static_cast<double>(sorted.size());
  if (std::abs(exact - std::round(exact)) < 1e-9 * std::max(1.0, exact)) exact = std::round(exact);
  const auto rank = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(exact)));
  return sorted[rank - 1];
}

void expect_within_error(const Histogram& h, const std::vector<std::uint64_t>& values, double q) {
  const std::uint64_t truth = true_percentile(values, q);
  const std::uint64_t got = h.percentile(q);
  EXPECT_GE(got, truth) << "q " << q;
  EXPECT_LE(static_cast<double>(got),
            static_cast<double>(truth) * (1.0 + Histogram::kRelativeError))
      << "q " << q << " true " << truth;
}

constexpr double kQuantiles[] = {0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0};

Histogram of(const std::vector<std::uint64_t>& values) {
  Histogram h;
  for (const std::uint64_t v : values) h.record(v);
  return h;
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::stringstream in(line);
  for (std::string field; std::getline(in, field, sep);) out.push_back(field);
  return out;
}

}  // namespace

TEST(Histogram, EmptyReportsZero) {
  const Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(0.5), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.min(), 0u);
}

TEST(Histogram, SmallValuesAreExact) {
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 0; v < 64; ++v) values.push_back(v);
  const Histogram h = of(values);
  for (const double q : kQuantiles) EXPECT_EQ(h.percentile(q), true_percentile(values, q));
}

// 1 .. 1 000 000 once each: percentile q is q * 10^6.
TEST(Histogram, UniformWithinStatedError) {
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 1; v <= 1'000'000; ++v) values.push_back(v);
  const Histogram h = of(values);
  EXPECT_EQ(h.count(), 1'000'000u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 1'000'000u);
  for (const double q : kQuantiles) expect_within_error(h, values, q);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.5)), 500'000, 500'000 / 64.0);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.99)), 990'000, 990'000 / 64.0);
}

// Latencies as they come: exponential around 200 ns with a log-uniform tail from 1 us to
// 2 s, so the percentiles cross every power of two from tens of nanoseconds to seconds.
TEST(Histogram, WideRangeWithinStatedError) {
  std::mt19937_64 rng(7);
  std::exponential_distribution<double> body(1.0 / 200);
  std::uniform_real_distribution<double> tail(std::log(1e3), std::log(2e9));
  std::vector<std::uint64_t> values;
  for (int i = 0; i < 200'000; ++i) {
    const double v = i % 100 == 0 ? std::exp(tail(rng)) : 20 + body(rng);
    values.push_back(static_cast<std::uint64_t>(v));
  }
  std::sort(values.begin(), values.end());
  const Histogram h = of(values);
  for (const double q : kQuantiles) expect_within_error(h, values, q);
  for (double q = 0.001; q < 1.0; q += 0.001) expect_within_error(h, values, q);
  EXPECT_EQ(h.max(), *std::max_element(values.begin(), values.end()));
  EXPECT_EQ(h.min(), *std::min_element(values.begin(), values.end()));
}

// The relative error bound holds at every bucket boundary up to 2^63.
TEST(Histogram, EveryPowerOfTwoWithinStatedError) {
  for (int bit = 6; bit < 64; ++bit) {
    for (const std::uint64_t v :
         {(std::uint64_t{1} << bit) - 1, std::uint64_t{1} << bit, (std::uint64_t{1} << bit) + 1}) {
      Histogram h;
      h.record(v);
      const std::uint64_t edge = Histogram::upper_edge(Histogram::index_of(v));
      EXPECT_GE(edge, v);
      // (edge - v) / v < 1/64 in integers (doubles round these values): (edge - v) * 64 < v.
      EXPECT_LE(edge - v, (v - 1) / Histogram::kSub);
      EXPECT_EQ(h.percentile(0.5), v);  // clamped to max, which is exact
    }
  }
}

// p99.99: 999 900 values of 100 ns and 100 of one second. Rank 999 900 is the last
// 100 ns value; one rank more is a second.
TEST(Histogram, FourNines) {
  Histogram h;
  for (int i = 0; i < 999'900; ++i) h.record(100);
  for (int i = 0; i < 100; ++i) h.record(1'000'000'000);
  EXPECT_EQ(h.percentile(0.9999), 100u);
  const std::uint64_t next = h.percentile(0.99991);
  EXPECT_GE(next, 1'000'000'000u);
  EXPECT_EQ(h.max(), 1'000'000'000u);
  EXPECT_NE(h.summary().find("p99.99 100 ns"), std::string::npos) << h.summary();
}

// Quantiles such as 0.99 * 100 that are whole ranks but for floating-point rounding.
TEST(Histogram, WholeRanksAreNotRoundedUp) {
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 1; v <= 100; ++v) values.push_back(v * 1000);
  const Histogram h = of(values);
  for (int k = 1; k <= 100; ++k) {
    const double q = 1.0 - (100.0 - k) / 100.0;  // 0.01 .. 1, computed, not literal
    // The true percentile is value k (rank k), not k + 1.
    EXPECT_GE(h.percentile(q), static_cast<std::uint64_t>(k) * 1000) << "q " << q;
    EXPECT_LE(static_cast<double>(h.percentile(q)), k * 1000 * (1 + Histogram::kRelativeError))
        << "q " << q;
  }
}

TEST(Histogram, MergeIsTheSameAsRecordingBoth) {
  Histogram a, b, both;
  for (std::uint64_t v = 1; v < 5000; v += 3) {
    (v % 2 ? a : b).record(v * 7);
    both.record(v * 7);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), both.count());
  EXPECT_EQ(a.max(), both.max());
  EXPECT_EQ(a.min(), both.min());
  for (const double q : kQuantiles) EXPECT_EQ(a.percentile(q), both.percentile(q));
}

TEST(Histogram, DistributionQuantilesRunToTheCountThenTheMax) {
  const std::vector<double> q = ringfeed::distribution_quantiles(1000, 1);
  ASSERT_EQ(q.size(), 5u);  // 0, 0.9, 0.99, 0.999, max
  EXPECT_EQ(q[0], 0.0);
  EXPECT_NEAR(q[1], 0.9, 1e-12);
  EXPECT_NEAR(q[2], 0.99, 1e-12);
  EXPECT_NEAR(q[3], 0.999, 1e-12);
  EXPECT_EQ(q[4], 1.0);
  const std::vector<double> fine = ringfeed::distribution_quantiles(1'000'000);
  EXPECT_EQ(fine.size(), 62u);  // 0, 60 steps of a tenth of a decade, max
  EXPECT_TRUE(std::is_sorted(fine.begin(), fine.end()));
}

// The CSV: a header naming each histogram, then one row per quantile whose columns are
// exactly percentile() of each; the last row is the max.
TEST(Histogram, DistributionCsv) {
  std::vector<std::uint64_t> fast_values, slow_values;
  for (std::uint64_t v = 1; v <= 100'000; ++v) {
    fast_values.push_back(50 + v % 1000);
    slow_values.push_back(v * 100);
  }
  std::sort(fast_values.begin(), fast_values.end());
  const Histogram fast = of(fast_values);
  const Histogram slow =
      of(std::vector<std::uint64_t>(slow_values.begin(), slow_values.begin() + 1000));
  const ringfeed::NamedHistogram columns[] = {{"fast", &fast}, {"slow one", &slow}};
  std::ostringstream out;
  ringfeed::write_distribution_csv(out, columns);

  std::istringstream in(out.str());
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "quantile,nines,fast,slow one");
  const std::vector<double> quantiles = ringfeed::distribution_quantiles(100'000);
  std::size_t rows = 0;
  double last_nines = 0;
  while (std::getline(in, line)) {
    const auto f = split(line, ',');
    ASSERT_EQ(f.size(), 4u) << line;
    ASSERT_LT(rows, quantiles.size());
    const double q = std::stod(f[0]);
    EXPECT_NEAR(q, quantiles[rows], 1e-9) << line;
    const double nines = std::stod(f[1]);
    EXPECT_GT(nines, last_nines) << line;  // increasing: a log-scale x axis
    if (q < 1.0) {
      EXPECT_NEAR(nines, 1.0 / (1.0 - q), nines * 1e-5) << line;
    }
    last_nines = nines;
    EXPECT_EQ(std::stoull(f[2]), fast.percentile(q)) << line;
    EXPECT_EQ(std::stoull(f[3]), slow.percentile(q)) << line;
    if (std::abs(q - 0.99) < 1e-12) {
      expect_within_error(fast, fast_values, q);
    }
    ++rows;
  }
  EXPECT_EQ(rows, quantiles.size());
  const auto last = split(out.str().substr(out.str().rfind('\n', out.str().size() - 2) + 1), ',');
  ASSERT_EQ(last.size(), 4u);
  EXPECT_EQ(std::stod(last[0]), 1.0);
  EXPECT_EQ(std::stoull(last[2]), fast.max());
  EXPECT_EQ(std::stoull(last[3]), slow.max());
}
