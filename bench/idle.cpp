// ringfeed-bench idle: the CPU a fetcher uses when there is nothing to fetch (empty
// logs, no consumers), against a process that only sleeps 2 ms at a time (the longest a
// fetcher's poll waits), measured the same way in the same run.
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include "children.hpp"
#include "commands.hpp"
#include "harness.hpp"
#include "io/log_appender.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed_steps.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench idle [flags]

CPU time of an idle fetcher. Per run, in a child process: Fetcher::start on file:DIR
with --partitions empty log files (framed), default options (64 MiB rings), then run();
no consumer attaches and nothing is appended. After --settle-ms, its CPU time (user +
system, from clock_getcpuclockid) and its context switches (/proc/PID/status) are read
over --seconds. Reported as % of one cpu and wake-ups per second.
Same run, the reference: a child that loops on a 2 ms sleep and does nothing else, which
is how often the fetcher's loop wakes when its source has no records (its poll waits at
most 2 ms), measured the same way.

flags:
  --runs K          runs (default 5); medians are taken over them
  --seconds S       measured seconds per process (default 2)
  --settle-ms M     time after start before measuring (default 200)
  --partitions P    empty partition logs (default 4)
  --help
)";

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t seconds = 2;
  std::uint64_t settle_ms = 200;
  std::uint64_t partitions = 4;
};

struct IdleControl {
  Rendezvous rv;  // only its failure slot is used
  alignas(kLine) std::atomic<bool> stop;
  std::atomic<std::uint32_t> ready;
};

struct Usage {
  double cpu_seconds = 0;
  std::uint64_t switches = 0;  // voluntary + involuntary
};

Usage usage_of(pid_t pid) {
  Usage u;
  clockid_t clock{};
  if (const int err = ::clock_getcpuclockid(pid, &clock); err != 0) {
    throw std::runtime_error("clock_getcpuclockid(" + std::to_string(pid) +
                             "): " + std::strerror(err));
  }
  timespec ts{};
  if (::clock_gettime(clock, &ts) != 0) {
    throw std::runtime_error("CPU clock of pid " + std::to_string(pid) + ": " +
                             std::strerror(errno));
  }
  u.cpu_seconds = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
        line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
      u.switches += std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10);
    }
  }
  return u;
}

struct Measured {
  double cpu_percent = 0;  // of one cpu
  double wakeups = 0;      // context switches per second
};

// Runs `fn` in a child, waits until it says it is ready and --settle-ms more, then
// measures it over --seconds; stops it through ctl.stop.
bool measure(const Options& o, IdleControl& ctl, const char* name, const std::function<int()>& fn,
             Measured& out) {
  Children kids(ctl.rv);
  const pid_t pid = kids.spawn(name, kAnyCpu, fn);
  bool ok = pid > 0;
  const std::int64_t deadline = now_ns() + 10'000'000'000;
  while (ok && ctl.ready.load() == 0) {
    ok = kids.check();
    if (ok && now_ns() > deadline) {
      ctl.rv.fail(std::string("the ") + name + " was not ready within 10 s");
      ok = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (ok) {
    std::this_thread::sleep_for(std::chrono::milliseconds(o.settle_ms));
    ok = kids.check();
  }
  if (ok) {
    const Usage a = usage_of(pid);
    const std::int64_t t0 = now_ns();
    std::this_thread::sleep_for(std::chrono::seconds(o.seconds));
    const Usage b = usage_of(pid);
    const double wall = static_cast<double>(now_ns() - t0) / 1e9;
    ok = kids.check();
    out.cpu_percent = 100 * (b.cpu_seconds - a.cpu_seconds) / wall;
    out.wakeups = static_cast<double>(b.switches - a.switches) / wall;
  }
  ctl.stop.store(true, std::memory_order_release);
  if (!ok) kids.kill_all();
  return kids.wait_all(10) && ok;
}

int idle_fetcher(IdleControl& ctl, const std::string& ns, const std::string& dir) {
  auto f = Fetcher::start({.ns = ns, .source = "file:" + dir});
  if (!f) {
    ctl.rv.fail("Fetcher::start: " + f.error().message);
    return 1;
  }
  ctl.ready.store(1, std::memory_order_release);
  const Status done = (*f)->run(ctl.stop);
  if (!done) {
    ctl.rv.fail("Fetcher::run: " + done.error().message);
    return 1;
  }
  return 0;
}

int sleeper(IdleControl& ctl) {
  ::prctl(PR_SET_TIMERSLACK, 1UL);
  ctl.ready.store(1, std::memory_order_release);
  while (!ctl.stop.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return 0;
}

Options parse(ArgReader& args) {
  Options o;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    if (args.number("--runs", 1, 1000, o.runs) || args.number("--seconds", 1, 600, o.seconds) ||
        args.number("--settle-ms", 0, 60'000, o.settle_ms) ||
        args.number("--partitions", 1, 4096, o.partitions)) {
    } else {
      args.unknown();
    }
  }
  return o;
}

}  // namespace

int idle_main(ArgReader& args) {
  const Options o = parse(args);
  std::printf("ringfeed-bench idle on %s\n", machine_description().c_str());
  std::printf(
      "fetcher on file:DIR with %llu empty partition logs, no consumers; measured %llu s after "
      "%llu ms; not pinned\n",
      static_cast<unsigned long long>(o.partitions), static_cast<unsigned long long>(o.seconds),
      static_cast<unsigned long long>(o.settle_ms));
  const char* tmp = std::getenv("TMPDIR");
  std::string dir =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/ringfeed-bench-idle-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + dir + ": " + std::strerror(errno));
  }
  struct Remove {
    std::string path;
    ~Remove() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } remove{dir};
  for (std::uint64_t p = 0; p < o.partitions; ++p) {
    auto a = io::LogAppender::open(dir + "/" + std::to_string(p) + ".log");
    if (!a) throw std::runtime_error(a.error().message);
  }

  const auto watchdog = static_cast<unsigned>(60 + 2 * (o.seconds + o.settle_ms / 1000));
  Figures fig;
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    Measured fetcher;
    Measured reference;
    const std::string ns = run_namespace("idle", run);
    watch_fetcher_segments(ns,
                           static_cast<std::uint32_t>(std::min<std::uint64_t>(o.partitions, 4)));
    bool ok;
    {
      SharedObject<IdleControl> ctl;
      ok = measure(
          o, *ctl, "fetcher", [&] { return idle_fetcher(*ctl, ns, dir); }, fetcher);
      if (!ok) std::fprintf(stderr, "ringfeed-bench idle: %s\n", ctl->rv.error_message().c_str());
    }
    remove_namespace(ns);
    unwatch_segments();
    if (ok) {
      SharedObject<IdleControl> ctl;
      ok = measure(
          o, *ctl, "2 ms sleeper", [&] { return sleeper(*ctl); }, reference);
      if (!ok) std::fprintf(stderr, "ringfeed-bench idle: %s\n", ctl->rv.error_message().c_str());
    }
    disarm_watchdog();
    if (!ok) return 1;
    const double others = others_share(before, sample_cpu());
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs),
                run_note("not pinned", "", others).c_str());
    std::printf("  %-32s %6.3f %% of one cpu  %7.0f wake-ups/s\n", "idle fetcher",
                fetcher.cpu_percent, fetcher.wakeups);
    std::printf("  %-32s %6.3f %% of one cpu  %7.0f wake-ups/s\n", "2 ms sleeper (reference)",
                reference.cpu_percent, reference.wakeups);
    fig.add("fetcher %", fetcher.cpu_percent);
    fig.add("fetcher wakeups", fetcher.wakeups);
    fig.add("sleeper %", reference.cpu_percent);
    fig.add("sleeper wakeups", reference.wakeups);
    fig.add("ratio", reference.cpu_percent > 0 ? fetcher.cpu_percent / reference.cpu_percent : 0);
    std::fflush(stdout);
  }
  std::printf("\nmedians of %llu runs\n", static_cast<unsigned long long>(o.runs));
  std::printf("  %-32s %6.3f %% of one cpu  %7.0f wake-ups/s\n", "idle fetcher",
              fig.median("fetcher %"), fig.median("fetcher wakeups"));
  std::printf("  %-32s %6.3f %% of one cpu  %7.0f wake-ups/s\n", "2 ms sleeper (reference)",
              fig.median("sleeper %"), fig.median("sleeper wakeups"));
  std::printf("  fetcher / sleeper: %.2f (median of the per-run ratios)\n", fig.median("ratio"));
  const double f = fig.median("fetcher %");
  std::printf(
      "\ntarget (median)\n  idle fetcher about 0%% of a cpu (here: under 0.5%%): %.3f%% %s\n", f,
      f < 0.5 ? "met" : "NOT met");
  return 0;
}

}  // namespace ringfeed::bench
