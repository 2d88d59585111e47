// ringfeed-bench jitter: how often the machine takes the cpu away from a process that
// never yields it. Both processes, pinned as in the other commands, read the clock in a
// tight loop; every gap between two reads longer than a normal iteration is time the
// process did not run (interrupts, the hypervisor, other tasks). No latency figure can
// have a tail below what this shows.
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "harness.hpp"
#include "ringfeed/histogram.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench jitter [flags]

Both processes (pinned to cpu 0 and cpu 1 unless --no-pin) read CLOCK_MONOTONIC in a
tight loop for --seconds and record the gaps between consecutive reads above 1 us:
the time each was not running. Reports, per process, how many gaps exceeded 10 us,
100 us and 1 ms per second, the longest, and the share of time lost.

flags:
  --seconds S   how long to spin (default 5)
  --no-pin      do not pin the processes
  --help
)";

struct Side {
  ringfeed::Histogram gaps;  // ns, gaps above kGapNs only
  std::uint64_t over_10us;
  std::uint64_t over_100us;
  std::uint64_t over_1ms;
  std::int64_t lost_ns;
  std::int64_t spun_ns;
};

struct Shared {
  Rendezvous rv;
  Side side[2];
};

constexpr std::int64_t kGapNs = 1'000;

void spin(Side& out, std::int64_t seconds) {
  const std::int64_t start = now_ns();
  const std::int64_t end = start + seconds * 1'000'000'000;
  std::int64_t last = start;
  for (std::int64_t t = now_ns(); t < end; t = now_ns()) {
    const std::int64_t gap = t - last;
    last = t;
    if (gap < kGapNs) continue;
    out.gaps.record(static_cast<std::uint64_t>(gap));
    out.lost_ns += gap;
    out.over_10us += gap > 10'000;
    out.over_100us += gap > 100'000;
    out.over_1ms += gap > 1'000'000;
  }
  out.spun_ns = last - start;
}

}  // namespace

int jitter_main(ArgReader& args) {
  std::uint64_t seconds = 5;
  bool pin = true;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    if (args.flag("--no-pin")) {
      pin = false;
    } else if (!args.number("--seconds", 1, 600, seconds)) {
      args.unknown();
    }
  }
  std::printf("ringfeed-bench jitter on %s\n", machine_description().c_str());
  SharedObject<Shared> s;
  const auto secs = static_cast<std::int64_t>(seconds);
  auto body = [&](int side) {
    std::uint32_t step = 0;
    if (!s->rv.sync(side, step)) return 1;
    spin(s->side[side], secs);
    return s->rv.sync(side, step) ? 0 : 1;
  };
  PinReport report;
  const CpuSample before = sample_cpu();
  arm_watchdog(static_cast<unsigned>(seconds + 60));
  const int rc = run_pair(
      s->rv, pin, [&] { return body(0); }, [&] { return body(1); }, &report);
  disarm_watchdog();
  const double others = others_share(before, sample_cpu());
  if (rc != 0) {
    std::fprintf(stderr, "ringfeed-bench jitter: %s\n", s->rv.error_message().c_str());
    return 1;
  }
  std::printf("%s\n", run_note(report.text, "", others).c_str());
  const char* who[2] = {"writer process", "reader process"};
  for (int i = 0; i < 2; ++i) {
    const Side& d = s->side[i];
    const double secs_spun = static_cast<double>(d.spun_ns) / 1e9;
    std::printf(
        "  %s: per second %.1f gaps > 10 us, %.1f > 100 us, %.2f > 1 ms; longest %s; "
        "%.2f%% of the time lost\n",
        who[i], static_cast<double>(d.over_10us) / secs_spun,
        static_cast<double>(d.over_100us) / secs_spun, static_cast<double>(d.over_1ms) / secs_spun,
        format_ns(static_cast<double>(d.gaps.max())).c_str(),
        100.0 * static_cast<double>(d.lost_ns) / static_cast<double>(d.spun_ns));
    std::printf("    gaps above 1 us: %s\n", d.gaps.summary().c_str());
  }
  return 0;
}

}  // namespace ringfeed::bench
