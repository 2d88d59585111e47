#include "upstream_report.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "cli.hpp"
#include "harness.hpp"

namespace ringfeed::bench {

bool parse_decimal(std::string_view s, std::uint64_t& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::uint64_t> parse_list(std::string_view flag, std::string_view text,
                                      std::uint64_t min, std::uint64_t max) {
  std::vector<std::uint64_t> out;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string_view item = text.substr(at, comma - at);
    std::uint64_t v = 0;
    if (!parse_decimal(item, v) || v < min || v > max) {
      throw UsageError(std::string(flag) + ": '" + std::string(item) +
                       "' is not a whole number in [" + std::to_string(min) + ", " +
                       std::to_string(max) + "]");
    }
    out.push_back(v);
    at = comma + 1;
  }
  return out;
}

std::string rate_text(double per_second) {
  if (per_second >= 1e6) return format_rate(per_second);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f k/s", per_second / 1e3);
  return buf;
}

double latency_figure(const Histogram& h, int f) {
  constexpr double kQuantiles[] = {0.5, 0.9, 0.99, 0.999};
  return static_cast<double>(f < 4 ? h.percentile(kQuantiles[f]) : h.max());
}

}  // namespace ringfeed::bench
