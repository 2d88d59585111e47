// What the comparisons against a real upstream (redis, kafka) share: list flags of whole
// numbers, message rates with three digits, and the latency figures every report prints
// per variant (p50, p90, p99, p99.9, max).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringfeed/histogram.hpp"

namespace ringfeed::bench {

// A whole decimal number, all of `s`.
bool parse_decimal(std::string_view s, std::uint64_t& out);

// "1,2,4": the value of list flag `flag`, each item in [min, max]; throws UsageError
// naming the flag and the bad item.
std::vector<std::uint64_t> parse_list(std::string_view flag, std::string_view text,
                                      std::uint64_t min, std::uint64_t max);

// Messages per second, with three digits also below 1 M/s ("22.4 k/s", "1.23 M/s").
std::string rate_text(double per_second);

inline constexpr int kLatencyFigures = 5;
inline constexpr const char* kLatencyFigureNames[kLatencyFigures] = {"p50", "p90", "p99", "p99.9",
                                                                     "max"};
// Figure f (an index into kLatencyFigureNames) of a histogram, in nanoseconds.
double latency_figure(const Histogram& h, int f);

}  // namespace ringfeed::bench
