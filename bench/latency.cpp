// ringfeed-bench latency: one-way latency between two processes, from the writer's
// stamp to the reader's observation, for ringfeed and its baselines in the same run.
#include <array>
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "harness.hpp"
#include "mq.hpp"
#include "ringfeed/histogram.hpp"
#include "ringfeed_steps.hpp"
#include "stamp_line.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench latency [flags]

One-way latency between two processes: the writer (this process) stamps
CLOCK_MONOTONIC into each message at a paced rate; the reader (a forked child) takes
its own CLOCK_MONOTONIC stamp as soon as it holds the message. Latency = reader stamp
- writer stamp (stamp to observe, one clock, no round trip halved). Each run forks
fresh processes and measures, between the same two:
  floor               64-byte lines in a shared mapping, one per message (a circle of
                      4096): the writer stores stamp and sequence number, the reader
                      spins on the sequence number (no pause); one line transfer each
  ringfeed spinning   Writer::publish of one 64-byte message; Consumer::pop (exclusive
                      group, spin 1 s) and ack
  message_queue       Boost.Interprocess message_queue of 64-byte messages, same pacing
  ringfeed sleeping   as ringfeed spinning with spin 0: the reader sleeps in the futex
                      before every message
  message_queue slow  message_queue at the sleeping variant's pacing
The variants take turns: each run is --rounds rounds, and every round sends a slice of
each variant's messages, so all of them sample the same stretch of time (on a virtual
machine the cost of a cache-line transfer moves as the host places the two cpus). Each
slice starts with --warmup unrecorded messages; the ringfeed rings get one unmeasured
lap first (page faults).

flags:
  --runs K                runs (default 5); medians are taken over them
  --rounds R              turns per run (default 20)
  --count N               recorded messages per run, spinning variants (default 200000)
  --interval-ns NS        pacing of the spinning variants (default 3000)
  --sleep-count N         recorded messages per run, sleeping variants (default 50000)
  --sleep-interval-ns NS  pacing of the sleeping variants (default 50000)
  --warmup N              unrecorded messages at the start of each slice (default 100)
  --ring-mb MB            ringfeed ring size in MiB, a power of two (default 64)
  --wait-idle S           before each run, wait up to S seconds for a second of idle
                          cpus (default 0: do not wait)
  --no-pin                do not pin the writer to cpu 0 and the reader to cpu 1
  --help
)";

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t rounds = 20;
  std::uint64_t count = 200'000;
  std::uint64_t interval_ns = 3'000;
  std::uint64_t sleep_count = 50'000;
  std::uint64_t sleep_interval_ns = 50'000;
  std::uint64_t warmup = 100;
  std::uint64_t ring_mb = 64;
  std::uint64_t wait_idle = 0;
  bool pin = true;
};

enum Variant : int { kFloor, kSpin, kMqFast, kSleep, kMqSlow, kVariants };
constexpr const char* kVariantNames[kVariants] = {"floor (cache line)", "ringfeed spinning",
                                                  "message_queue", "ringfeed sleeping",
                                                  "message_queue slow"};
constexpr std::uint32_t kSpinPartition = 0;
constexpr std::uint32_t kSleepPartition = 1;
constexpr std::size_t kMqDepth = 1024;

struct Shared {
  Rendezvous rv;
  StampLine lines[kStampLines];
  ringfeed::Histogram hist[kVariants];
  std::uint64_t missed[kVariants];  // floor: lines overwritten before the reader saw them
  // Observed before the stamp (the two cpus' clocks can differ by a few ns); recorded as 0.
  std::uint64_t negative[kVariants];
};

// Sends at a fixed interval. A writer that falls behind (preempted) resumes the schedule
// from now rather than sending a burst that would measure queueing.
class Pacer {
 public:
  explicit Pacer(std::uint64_t interval)
      : interval_(static_cast<std::int64_t>(interval)), next_(now_ns() + interval_) {}
  // Returns the time it let the caller go: the stamp of the message sent next.
  std::int64_t wait() {
    std::int64_t t = now_ns();
    while (t < next_) t = now_ns();
    next_ += interval_;
    if (next_ < t) next_ = t + interval_;
    return t;
  }

 private:
  std::int64_t interval_;
  std::int64_t next_;
};

// One variant's slice of a round: how many messages, how far apart.
struct Slice {
  std::uint64_t interval;
  std::uint64_t recorded;
  std::uint64_t total;  // warm-up included
};

Slice slice_of(const Options& o, Variant v) {
  const bool sleeping = v == kSleep || v == kMqSlow;
  const std::uint64_t recorded = (sleeping ? o.sleep_count : o.count) / o.rounds;
  return {sleeping ? o.sleep_interval_ns : o.interval_ns, recorded, o.warmup + recorded};
}

void record(Shared& s, Variant v, std::int64_t observed, std::int64_t stamp) {
  if (observed < stamp) {
    ++s.negative[v];
    s.hist[v].record(0);
  } else {
    s.hist[v].record(static_cast<std::uint64_t>(observed - stamp));
  }
}

std::uint32_t partition_of(Variant v) {
  return v == kSpin ? kSpinPartition : kSleepPartition;
}

// Both sides make the same sync calls, in the same order: three while setting up, then
// two per slice (start, done).
class WriterSide {
 public:
  WriterSide(Shared& s, const Options& o, std::string ns, std::string mq)
      : s_(s), o_(o), ns_(std::move(ns)), mq_(std::move(mq)) {}

  int run() {
    if (!setup()) return 1;
    for (std::uint64_t r = 0; r < o_.rounds; ++r) {
      for (int v = 0; v < kVariants; ++v) {
        if (!sync() || !send(static_cast<Variant>(v)) || !sync()) return 1;
      }
    }
    rings_[0].reset();
    rings_[1].reset();
    unwatch_segments();
    return 0;
  }

 private:
  bool sync() { return s_.rv.sync(0, step_); }

  bool setup() {
    for (Variant v : {kSpin, kSleep}) {
      auto& w = rings_[partition_of(v)];
      w = create_ring(s_.rv, ns_, partition_of(v), o_.ring_mb << 20);
      if (!w) return false;
    }
    queues_[0] = std::make_unique<OwnedQueue>(mq_ + "f", kMqDepth);
    queues_[1] = std::make_unique<OwnedQueue>(mq_ + "s", kMqDepth);
    if (!sync()) return false;  // rings and queues exist
    if (!sync()) return false;  // the reader attached and opened them
    for (auto& w : rings_) {
      if (!wait_for_group(s_.rv, *w) || !publish_lap(s_.rv, *w)) return false;
    }
    return sync();  // the reader took both laps
  }

  bool send(Variant v) {
    const Slice sl = slice_of(o_, v);
    Pacer pacer(sl.interval);
    switch (v) {
      case kFloor:
        for (std::uint64_t i = 0; i < sl.total; ++i, ++floor_sent_) {
          StampLine& line = s_.lines[floor_sent_ % kStampLines];
          const std::int64_t t = pacer.wait();
          line.stamp.store(t, std::memory_order_relaxed);
          line.seq.store(floor_sent_ + 1, std::memory_order_release);
        }
        return true;
      case kSpin:
      case kSleep: {
        Writer& w = *rings_[partition_of(v)];
        std::array<char, kValueBytes> value{};
        OutMessage m{.value = {value.data(), value.size()}};
        for (std::uint64_t i = 0; i < sl.total; ++i) {
          m.upstream_offset = i;
          m.timestamp_ns = pacer.wait();
          if (w.publish({&m, 1}, std::chrono::seconds(1)) != 1) {
            s_.rv.fail("publish on " + w.segment_name() + ": ring full for 1 s");
            return false;
          }
        }
        return true;
      }
      case kMqFast:
      case kMqSlow: {
        auto& q = queues_[v == kMqFast ? 0 : 1]->queue();
        MqMessage m{};
        for (std::uint64_t i = 0; i < sl.total; ++i) {
          m.seq = i;
          m.timestamp_ns = pacer.wait();
          q.send(&m, sizeof m, 0);
        }
        return true;
      }
      case kVariants:
        break;
    }
    return false;
  }

  Shared& s_;
  const Options& o_;
  std::string ns_;
  std::string mq_;  // prefix of the two message_queues' names
  std::unique_ptr<Writer> rings_[2];
  std::unique_ptr<OwnedQueue> queues_[2];
  std::uint64_t floor_sent_ = 0;
  std::uint32_t step_ = 0;
};

class ReaderSide {
 public:
  ReaderSide(Shared& s, const Options& o, std::string ns, std::string mq)
      : s_(s), o_(o), ns_(std::move(ns)), mq_(std::move(mq)) {}

  int run() {
    if (!setup()) return 1;
    for (std::uint64_t r = 0; r < o_.rounds; ++r) {
      for (int v = 0; v < kVariants; ++v) {
        if (!sync() || !receive(static_cast<Variant>(v)) || !sync()) return 1;
      }
    }
    return 0;
  }

 private:
  bool sync() { return s_.rv.sync(1, step_); }

  bool setup() {
    if (!sync()) return false;
    for (Variant v : {kSpin, kSleep}) {
      const auto spin = v == kSpin ? std::chrono::nanoseconds(std::chrono::seconds(1))
                                   : std::chrono::nanoseconds(0);
      auto& c = consumers_[partition_of(v)];
      c = attach_reader(s_.rv, ns_, partition_of(v), spin);
      if (!c) return false;
    }
    queues_[0] = open_queue(s_.rv, mq_ + "f");
    queues_[1] = open_queue(s_.rv, mq_ + "s");
    if (!queues_[0] || !queues_[1]) return false;
    if (!sync()) return false;
    auto ignore = [](const Batch&, std::int64_t) { return true; };
    for (auto& c : consumers_) {
      if (!pop_messages(s_.rv, *c, 64, lap_messages(o_.ring_mb << 20), ignore)) return false;
    }
    return sync();
  }

  bool receive(Variant v) {
    const Slice sl = slice_of(o_, v);
    switch (v) {
      case kFloor:
        return receive_floor(sl);
      case kSpin:
      case kSleep: {
        std::uint64_t k = 0;  // index in the slice
        auto observe = [&](const Batch& b, std::int64_t t) {
          for (const Message& m : b) {
            if (k++ >= o_.warmup) record(s_, v, t, m.timestamp_ns());
          }
          return true;
        };
        return pop_messages(s_.rv, *consumers_[partition_of(v)], 64, sl.total, observe);
      }
      case kMqFast:
      case kMqSlow: {
        auto& q = *queues_[v == kMqFast ? 0 : 1];
        MqMessage m{};
        for (std::uint64_t i = 0; i < sl.total; ++i) {
          if (!mq_receive(q, m) || m.seq != i) {
            s_.rv.fail("message_queue: message " + std::to_string(i) + " is short or out of order");
            return false;
          }
          const std::int64_t t = now_ns();
          if (i >= o_.warmup) record(s_, v, t, m.timestamp_ns);
        }
        return true;
      }
      case kVariants:
        break;
    }
    return false;
  }

  bool receive_floor(const Slice& sl) {
    const std::uint64_t first = floor_seen_;
    const std::uint64_t end = first + sl.total;
    for (std::uint64_t i = first; i < end;) {
      const StampLine& line = s_.lines[i % kStampLines];
      std::uint64_t seq;
      while ((seq = line.seq.load(std::memory_order_acquire)) <= i) {
      }
      const std::int64_t t = now_ns();
      const std::int64_t stamp = line.stamp.load(std::memory_order_relaxed);
      if (seq != i + 1 || line.seq.load(std::memory_order_acquire) != seq) {
        // Lapped: the writer went round the circle while this reader was away.
        s_.missed[kFloor] += seq - i;
        i = seq;
        continue;
      }
      if (i - first >= o_.warmup) record(s_, kFloor, t, stamp);
      ++i;
    }
    floor_seen_ = end;
    return true;
  }

  Shared& s_;
  const Options& o_;
  std::string ns_;
  std::string mq_;
  std::unique_ptr<Consumer> consumers_[2];
  std::unique_ptr<boost::interprocess::message_queue> queues_[2];
  std::uint64_t floor_seen_ = 0;
  std::uint32_t step_ = 0;
};

Options parse(ArgReader& args) {
  Options o;
  constexpr std::uint64_t kBig = 1'000'000'000;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    if (args.flag("--no-pin")) {
      o.pin = false;
    } else if (args.number("--runs", 1, 1000, o.runs) ||
               args.number("--rounds", 1, 10'000, o.rounds) ||
               args.number("--count", 1, kBig, o.count) ||
               args.number("--interval-ns", 1000, 1'000'000'000, o.interval_ns) ||
               args.number("--sleep-count", 1, kBig, o.sleep_count) ||
               args.number("--sleep-interval-ns", 1000, 1'000'000'000, o.sleep_interval_ns) ||
               args.number("--warmup", 0, kBig, o.warmup) ||
               args.number("--ring-mb", 1, 1 << 20, o.ring_mb) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  if ((o.ring_mb & (o.ring_mb - 1)) != 0) {
    throw UsageError("--ring-mb " + std::to_string(o.ring_mb) + " is not a power of two");
  }
  if (o.count < o.rounds || o.sleep_count < o.rounds) {
    throw UsageError("--count and --sleep-count must be at least --rounds (" +
                     std::to_string(o.rounds) + ")");
  }
  return o;
}

constexpr double kQuantiles[] = {0.5, 0.9, 0.99, 0.999};
constexpr const char* kFigureNames[] = {"p50", "p90", "p99", "p99.9", "max"};
constexpr int kFigures = 5;

std::string figure(Variant v, int f) {
  return std::string(kVariantNames[v]) + " " + kFigureNames[f];
}

double value_of(const ringfeed::Histogram& h, int f) {
  return static_cast<double>(f < 4 ? h.percentile(kQuantiles[f]) : h.max());
}

void print_ratio(const Figures& fig, Variant a, Variant b, const char* label) {
  std::printf("  %-42s", label);
  for (int f = 0; f < kFigures; ++f) {
    const double den = fig.median(figure(b, f));
    std::printf(" %9.3f", den > 0 ? fig.median(figure(a, f)) / den : 0.0);
  }
  std::printf("\n");
}

void print_target(const char* what, const std::string& value, bool met) {
  std::printf("  %-52s %-10s %s\n", what, value.c_str(), met ? "met" : "NOT met");
}

}  // namespace

int latency_main(ArgReader& args) {
  const Options o = parse(args);
  std::printf("ringfeed-bench latency on %s\n", machine_description().c_str());
  std::printf(
      "one-way latency = reader's CLOCK_MONOTONIC stamp when it holds the message - writer's\n"
      "stamp just before sending it (stamp to observe, same clock; not a round trip / 2)\n");
  std::printf(
      "spinning variants: one message every %llu ns, %llu recorded per run; sleeping "
      "variants: every %llu ns, %llu recorded; %llu rounds, %llu warm-up messages per "
      "slice; ring %llu MiB\n",
      static_cast<unsigned long long>(o.interval_ns), static_cast<unsigned long long>(o.count),
      static_cast<unsigned long long>(o.sleep_interval_ns),
      static_cast<unsigned long long>(o.sleep_count), static_cast<unsigned long long>(o.rounds),
      static_cast<unsigned long long>(o.warmup), static_cast<unsigned long long>(o.ring_mb));
  const double paced_seconds =
      3.0 * static_cast<double>((o.warmup * o.rounds + o.count) * o.interval_ns) / 1e9 +
      2.0 * static_cast<double>((o.warmup * o.rounds + o.sleep_count) * o.sleep_interval_ns) / 1e9;
  const auto watchdog = static_cast<unsigned>(120 + 2 * paced_seconds + o.ring_mb / 4);

  Figures fig;
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    SharedObject<Shared> s;
    const std::string ns = run_namespace("lat", run);
    const std::string mq = mq_name("lat", run);
    WriterSide writer(*s, o, ns, mq);
    ReaderSide reader(*s, o, ns, mq);
    PinReport pin;
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    const int rc = run_pair(
        s->rv, o.pin, [&] { return writer.run(); }, [&] { return reader.run(); }, &pin);
    disarm_watchdog();
    const double others = others_share(before, sample_cpu());
    if (rc != 0) {
      std::fprintf(stderr, "ringfeed-bench latency: run %llu: %s\n",
                   static_cast<unsigned long long>(run), s->rv.error_message().c_str());
      return 1;
    }
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs), run_note(pin.text, idle, others).c_str());
    for (int v = 0; v < kVariants; ++v) {
      const auto& h = s->hist[v];
      std::printf("  %-20s %s", kVariantNames[v], h.summary().c_str());
      if (s->missed[v] != 0)
        std::printf("  missed %llu", static_cast<unsigned long long>(s->missed[v]));
      if (s->negative[v] != 0) {
        std::printf("  negative %llu", static_cast<unsigned long long>(s->negative[v]));
      }
      std::printf("\n");
      for (int f = 0; f < kFigures; ++f)
        fig.add(figure(static_cast<Variant>(v), f), value_of(h, f));
    }
    std::fflush(stdout);
  }

  std::printf("\nmedians of %llu runs %24s", static_cast<unsigned long long>(o.runs), "");
  for (const char* name : kFigureNames) std::printf(" %9s", name);
  std::printf("\n");
  for (int v = 0; v < kVariants; ++v) {
    std::printf("  %-42s", kVariantNames[v]);
    for (int f = 0; f < kFigures; ++f) {
      std::printf(" %9s", format_ns(fig.median(figure(static_cast<Variant>(v), f))).c_str());
    }
    std::printf("\n");
  }
  std::printf("\nratios of the medians %21s", "");
  for (const char* name : kFigureNames) std::printf(" %9s", name);
  std::printf("\n");
  print_ratio(fig, kSpin, kFloor, "ringfeed spinning / floor");
  print_ratio(fig, kSpin, kMqFast, "ringfeed spinning / message_queue");
  print_ratio(fig, kSleep, kFloor, "ringfeed sleeping / floor");
  print_ratio(fig, kSleep, kMqSlow, "ringfeed sleeping / message_queue slow");

  const double spin_p50 = fig.median(figure(kSpin, 0));
  const double floor_p50 = fig.median(figure(kFloor, 0));
  const double spin_p999 = fig.median(figure(kSpin, 3));
  const double sleep_p99 = fig.median(figure(kSleep, 2));
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.2fx", floor_p50 > 0 ? spin_p50 / floor_p50 : 0.0);
  std::printf("\ntargets (medians)\n");
  print_target("ringfeed spinning p50 within 2x of the floor p50", ratio,
               spin_p50 <= 2 * floor_p50);
  print_target("ringfeed spinning p99.9 under 10 us", format_ns(spin_p999), spin_p999 < 10'000);
  print_target("ringfeed sleeping p99 under 50 us", format_ns(sleep_p99), sleep_p99 < 50'000);
  return 0;
}

}  // namespace ringfeed::bench
