// ringfeed-bench failover: how long a failover group goes without a consumer when its
// active consumer is SIGKILLed: from the kill to the first message the standby pops,
// under a writer that publishes all the time. In the same run, for comparison, the
// shared-group takeover of `ringfeed-bench shared` (leases of a killed consumer popped
// again by another).
#include <signal.h>
#include <sys/prctl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "children.hpp"
#include "commands.hpp"
#include "harness.hpp"
#include "ringfeed_steps.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench failover [flags]

Failover takeover time. The writer is this process: it publishes --publish-batch
64-byte messages every --interval-us and calls the ring's service() every 2 ms (a
fetcher's reaper cadence). Per kill, on a fresh ring: an active consumer (Mode::failover)
in a child process pops up to 64 messages (pop(64, 10 ms), spin --spin-us) and acks them;
once it has taken messages, a standby (Mode::failover, attached after it) starts in
another child process and pops the same way; at a moment drawn uniformly from
[--settle-ms, --settle-ms + --spread-ms] after the standby attached (so at a random phase
of the periodic liveness checks), the writer SIGKILLs the active consumer (t0 just before
kill(2)) and keeps publishing. Measured: t0 to the
standby's first pop that returned messages (CLOCK_MONOTONIC in both processes). The
standby must take nothing before the kill. --kills per run.
Same run, for comparison: the shared-group takeover of 'ringfeed-bench shared' (a
consumer holding --leases leases is SIGKILLed; t0 to the last of them popped again by a
second consumer in the writer's process, which calls service() while it polls).
The writer is pinned to cpu 0 and both consumers to cpu 1.

flags:
  --runs K            runs (default 5); medians are taken over them
  --kills N           kills per run (default 20)
  --publish-batch P   messages per publish (default 16)
  --interval-us U     time between publishes (default 100)
  --settle-ms S       least time from the standby's attach to the kill (default 20)
  --spread-ms S       width of the window the kill is drawn from (default 20)
  --spin-us U         ConsumerOptions::spin of both consumers (default 50)
  --leases N          shared comparison: leases the killed consumer holds (default 64)
  --no-shared         skip the shared comparison
  --wait-idle S       before each run, wait up to S seconds for a second of idle cpus
  --no-pin            do not pin
  --help
)";

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t kills = 20;
  std::uint64_t publish_batch = 16;
  std::uint64_t interval_us = 100;
  std::uint64_t settle_ms = 20;
  std::uint64_t spread_ms = 20;
  std::uint64_t spin_us = 50;
  std::uint64_t leases = 64;
  bool shared = true;
  std::uint64_t wait_idle = 0;
  bool pin = true;
};

enum Role { kActive = 0, kStandby = 1 };

struct FailoverControl {
  Rendezvous rv;  // only its failure slot is used
  alignas(kLine) std::atomic<std::uint32_t> stop;
  alignas(kLine) std::atomic<std::uint32_t> attached[2];
  alignas(kLine) std::atomic<std::uint64_t> taken[2];
  alignas(kLine) std::atomic<std::int64_t> first_ns;  // the standby's first pop with messages
  std::atomic<std::uint32_t> first_delivery;          // delivery_count of its first message
};

int failover_consumer(FailoverControl& ctl, const Options& o, const std::string& ns, Role role) {
  auto c = Consumer::attach({.ns = ns,
                             .partition = 0,
                             .group = kGroup,
                             .mode = Mode::failover,
                             .spin = std::chrono::microseconds(o.spin_us)});
  if (!c) {
    ctl.rv.fail(std::string(role == kActive ? "active" : "standby") +
                " consumer: attach: " + c.error().message);
    return 1;
  }
  ctl.attached[role].store(1, std::memory_order_release);
  std::uint64_t taken = 0;
  while (ctl.stop.load(std::memory_order_acquire) == 0) {
    const Batch& b = (*c)->pop(64, std::chrono::milliseconds(10));
    const std::int64_t t = now_ns();
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      ctl.rv.fail(ns + ": pop of the " + (role == kActive ? "active" : "standby") +
                  " consumer: " + to_string(b.status()));
      return 1;
    }
    if (role == kStandby && taken == 0) {
      ctl.first_delivery.store(b[0].delivery_count(), std::memory_order_relaxed);
      ctl.first_ns.store(t, std::memory_order_release);
    }
    if ((*c)->ack(b) != AckStatus::ok) {
      ctl.rv.fail(ns + ": ack refused a batch just popped");
      return 1;
    }
    taken += b.size();
    ctl.taken[role].store(taken, std::memory_order_release);
  }
  return 0;
}

struct Takeover {
  double ns = -1;
  std::uint32_t first_delivery = 0;
};

// The writer's side: publishes on schedule and runs service() every 2 ms.
class Pacer {
 public:
  Pacer(const Options& o, Writer& w)
      : w_(w), interval_(static_cast<std::int64_t>(o.interval_us) * 1000), batch_(o.publish_batch) {
    for (std::size_t i = 0; i < batch_.size(); ++i) {
      batch_[i].value = {value_.data(), value_.size()};
    }
  }
  // Publishes and services until pred() or the deadline; false on a failure or timeout.
  template <typename Pred>
  bool until(FailoverControl& ctl, Children& kids, double seconds, const char* what, Pred&& pred) {
    const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(seconds * 1e9);
    for (;;) {
      if (pred()) return true;
      const std::int64_t now = now_ns();
      if (now >= next_publish_) {
        // A full ring (consumers gone) is not an error here: the next turn tries again.
        w_.publish(batch_, std::chrono::nanoseconds(0));
        next_publish_ = std::max(next_publish_ + interval_, now);
      }
      if (now >= next_service_) {
        w_.service(now);
        next_service_ = now + 2'000'000;
      }
      if (!kids.check()) return false;
      if (now > deadline) {
        ctl.rv.fail(std::string("waited ") + std::to_string(seconds) + " s for " + what);
        return false;
      }
      const std::int64_t wake = std::min(next_publish_, next_service_);
      if (wake > now_ns() + 20'000) {
        std::this_thread::sleep_for(std::chrono::nanoseconds(wake - now_ns()));
      }
    }
  }

 private:
  Writer& w_;
  std::int64_t interval_;
  std::int64_t next_publish_ = 0;
  std::int64_t next_service_ = 0;
  std::array<char, kValueBytes> value_{};
  std::vector<OutMessage> batch_;
};

Takeover failover_takeover(const Options& o, const std::string& ns, std::mt19937_64& rng) {
  SharedObject<FailoverControl> ctl;
  Takeover res;
  auto w = create_ring(ctl->rv, ns, 0, 4 << 20);
  bool ok = w != nullptr;
  if (ok) {
    Children kids(ctl->rv);
    const int cpu = o.pin ? 1 : kAnyCpu;
    const pid_t active =
        kids.spawn("active consumer", cpu, [&] { return failover_consumer(*ctl, o, ns, kActive); });
    ok = active > 0;
    Pacer pace(o, *w);
    ok = ok && pace.until(*ctl, kids, 10, "the active consumer to attach",
                          [&] { return ctl->attached[kActive].load() != 0; });
    ok = ok && wait_for_group(ctl->rv, *w);
    ok = ok && pace.until(*ctl, kids, 10, "the active consumer to take messages",
                          [&] { return ctl->taken[kActive].load() != 0; });
    ok = ok && kids.spawn("standby consumer", cpu,
                          [&] { return failover_consumer(*ctl, o, ns, kStandby); }) > 0;
    ok = ok && pace.until(*ctl, kids, 10, "the standby to attach",
                          [&] { return ctl->attached[kStandby].load() != 0; });
    // The kill falls at a random moment of a --spread-ms window, so at a random phase of
    // whatever periodic checks the consumers and the writer make.
    const std::int64_t settle = now_ns() + static_cast<std::int64_t>(o.settle_ms) * 1'000'000 +
                                static_cast<std::int64_t>(rng() % (o.spread_ms * 1000 + 1)) * 1000;
    ok = ok &&
         pace.until(*ctl, kids, 10, "the standby to settle", [&] { return now_ns() >= settle; });
    if (ok && ctl->taken[kStandby].load() != 0) {
      ctl->rv.fail(ns + ": the standby took " + std::to_string(ctl->taken[kStandby].load()) +
                   " messages while the active consumer lived");
      ok = false;
    }
    if (ok) {
      const std::int64_t t0 = now_ns();
      kids.kill_now(active);
      ok = pace.until(*ctl, kids, 5, "the standby's first message after the kill",
                      [&] { return ctl->first_ns.load(std::memory_order_acquire) != 0; });
      if (ok) {
        res.ns = static_cast<double>(ctl->first_ns.load() - t0);
        res.first_delivery = ctl->first_delivery.load();
      }
    }
    ctl->stop.store(1, std::memory_order_release);
    if (!ok) kids.kill_all();
    ok = kids.wait_all(5) && ok;
  }
  w.reset();
  remove_namespace(ns);
  unwatch_segments();
  if (!ok) {
    if (ctl->rv.failed.load() == 0) ctl->rv.fail(ns + ": the takeover stopped early");
    std::fprintf(stderr, "ringfeed-bench failover: %s\n", ctl->rv.error_message().c_str());
    res.ns = -1;
  }
  return res;
}

Options parse(ArgReader& args) {
  Options o;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    if (args.flag("--no-pin")) {
      o.pin = false;
    } else if (args.flag("--no-shared")) {
      o.shared = false;
    } else if (args.number("--runs", 1, 1000, o.runs) ||
               args.number("--kills", 1, 10'000, o.kills) ||
               args.number("--publish-batch", 1, 4096, o.publish_batch) ||
               args.number("--interval-us", 1, 1'000'000, o.interval_us) ||
               args.number("--settle-ms", 0, 10'000, o.settle_ms) ||
               args.number("--spread-ms", 0, 10'000, o.spread_ms) ||
               args.number("--spin-us", 0, 10'000'000, o.spin_us) ||
               args.number("--leases", 1, 1000, o.leases) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  return o;
}

}  // namespace

int failover_main(ArgReader& args) {
  const Options o = parse(args);
  std::printf("ringfeed-bench failover on %s\n", machine_description().c_str());
  std::printf(
      "writer: %llu messages of 64 bytes every %llu us (%.0f k/s), service() every 2 ms; "
      "consumers pop(64, 10 ms) + ack, spin %llu us; kill %llu-%llu ms after the standby "
      "attached (uniform); %llu kills per run; %s\n",
      static_cast<unsigned long long>(o.publish_batch),
      static_cast<unsigned long long>(o.interval_us),
      static_cast<double>(o.publish_batch) * 1e3 / static_cast<double>(o.interval_us),
      static_cast<unsigned long long>(o.spin_us), static_cast<unsigned long long>(o.settle_ms),
      static_cast<unsigned long long>(o.settle_ms + o.spread_ms),
      static_cast<unsigned long long>(o.kills),
      o.pin ? "writer pinned to cpu 0, both consumers to cpu 1" : "not pinned (--no-pin)");
  ::prctl(PR_SET_TIMERSLACK, 1UL);  // the writer's pacing sleeps
  if (o.pin) pin_to_cpu(0, 0);

  const auto watchdog =
      static_cast<unsigned>(60 + o.kills * (8 + (o.settle_ms + o.spread_ms) / 1000));
  std::mt19937_64 rng(static_cast<std::uint64_t>(now_ns()));
  Figures fig;
  std::vector<double> all;
  std::vector<double> all_shared;
  std::uint64_t redelivered_first = 0;
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    std::vector<double> times;
    std::vector<double> shared_times;
    std::uint64_t redelivered = 0;
    for (std::uint64_t k = 0; k < o.kills; ++k) {
      const Takeover t = failover_takeover(o, run_namespace("fo", run * 10'000 + k), rng);
      if (t.ns < 0) return 1;
      times.push_back(t.ns);
      redelivered += t.first_delivery > 1 ? 1 : 0;
      if (o.shared) {
        const double s =
            shared_takeover_ns(o.leases, o.pin, run_namespace("fos", run * 10'000 + k));
        if (s < 0) return 1;
        shared_times.push_back(s);
      }
    }
    disarm_watchdog();
    const double others = others_share(before, sample_cpu());
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs),
                run_note(o.pin ? "pinned" : "not pinned", idle, others).c_str());
    const double med = median_of(times);
    const double mx = *std::max_element(times.begin(), times.end());
    std::printf(
        "  failover, kill -> standby's first pop: median %s, max %s (first message a "
        "redelivery in %llu of %zu)\n",
        format_ns(med).c_str(), format_ns(mx).c_str(), static_cast<unsigned long long>(redelivered),
        times.size());
    fig.add("failover median", med);
    fig.add("failover max", mx);
    all.insert(all.end(), times.begin(), times.end());
    redelivered_first += redelivered;
    if (o.shared) {
      const double smed = median_of(shared_times);
      const double smax = *std::max_element(shared_times.begin(), shared_times.end());
      std::printf("  shared, kill -> last of %llu leases popped again: median %s, max %s\n",
                  static_cast<unsigned long long>(o.leases), format_ns(smed).c_str(),
                  format_ns(smax).c_str());
      std::printf("  failover / shared (medians of this run): %.2f\n", med / smed);
      fig.add("shared median", smed);
      fig.add("shared max", smax);
      fig.add("failover / shared", med / smed);
      all_shared.insert(all_shared.end(), shared_times.begin(), shared_times.end());
    }
    std::fflush(stdout);
  }

  std::printf("\nmedians of %llu runs\n", static_cast<unsigned long long>(o.runs));
  std::printf(
      "  failover takeover: median %s (median of all %zu: %s), max %s (max of all: %s); first "
      "message a redelivery in %llu of %zu\n",
      format_ns(fig.median("failover median")).c_str(), all.size(),
      format_ns(median_of(all)).c_str(), format_ns(fig.median("failover max")).c_str(),
      format_ns(*std::max_element(all.begin(), all.end())).c_str(),
      static_cast<unsigned long long>(redelivered_first), all.size());
  if (o.shared) {
    std::printf(
        "  shared takeover (leases back): median %s (median of all %zu: %s), max %s (max of "
        "all: %s)\n",
        format_ns(fig.median("shared median")).c_str(), all_shared.size(),
        format_ns(median_of(all_shared)).c_str(), format_ns(fig.median("shared max")).c_str(),
        format_ns(*std::max_element(all_shared.begin(), all_shared.end())).c_str());
    std::printf("  failover / shared: %.2f (median of the per-run ratios)\n",
                fig.median("failover / shared"));
  }
  const double m = fig.median("failover median");
  std::printf("\ntarget (median)\n  failover takeover within 100 ms: %s %s\n", format_ns(m).c_str(),
              m <= 100e6 ? "met" : "NOT met");
  return 0;
}

}  // namespace ringfeed::bench
