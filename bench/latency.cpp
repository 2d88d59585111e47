// ringfeed-bench latency: one-way latency between two processes, from the writer's
// stamp to the reader's observation, for ringfeed in each consumer mode and for its
// baselines (a cache-line floor, message_queue, a Unix socket, a pipe) in the same run.
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "byte_stream.hpp"
#include "commands.hpp"
#include "fetcher_feed.hpp"
#include "harness.hpp"
#include "io/log_appender.hpp"
#include "mq.hpp"
#include "ringfeed/histogram.hpp"
#include "ringfeed_steps.hpp"
#include "stamp_line.hpp"
#include "wait.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench latency [flags]

One-way latency between two processes: the writer (this process) sends messages on a
schedule and stamps each with CLOCK_MONOTONIC; the reader (a forked child) takes its own
CLOCK_MONOTONIC stamp as soon as it holds the message. Latency = reader stamp - writer
stamp (one clock, no round trip halved). Each run forks fresh processes and measures,
between the same two, with messages of --size bytes sent --batch at a time:
  floor (cache line)  64-byte lines in a shared mapping, one per message (a circle of
                      4096): the writer stores stamp and sequence number, the reader
                      spins on the sequence number (no pause): one line transfer each;
                      always spins, whatever --wait says
  ringfeed MODE       Writer::publish of the batch into a bare ring (one per mode);
                      Consumer::pop in a group of that mode, then ack
  ringfeed MODE via fetcher
                      with --through fetcher, instead: the batch appended to the log of
                      its partition (io::LogAppender, one write; one partition per mode)
                      in a new directory under $TMPDIR or /tmp; a fetcher process (Fetcher
                      on file:DIR) wakes on the file's inotify event, reads the records
                      through its io_uring and publishes them into the partition's ring;
                      the reader pops them as above. Stamp: the record's timestamp
  message_queue       Boost.Interprocess message_queue (depth 1024), one send each
  unix socket         a Unix domain stream socket pair, one write per batch
  pipe                a pipe, one write per batch
The reader of every variant but the floor waits as --wait says:
  spin        polls without sleeping (ringfeed: ConsumerOptions::spin 1 s; message_queue:
              try_receive; socket, pipe: FIONREAD, then read)
  spin-sleep  polls for --spin-us, then sleeps in the kernel
  sleep       sleeps in the kernel at once (ringfeed: the futex; message_queue: receive;
              socket, pipe: a blocking read)
Load (--loop):
  open    fixed rate: send k of a slice is due at start + k * --interval-ns, whatever
          happened to the ones before; a writer that falls behind sends at once but
          stamps the time the send was due, so a stall's wait counts for every message
          it delayed (no coordinated omission)
  closed  the writer sends the next batch only after the reader holds the previous one
          (and at least --interval-ns after the previous send) and stamps the actual
          send: what a request-response client sees, blind to queueing
The variants take turns: each run is --rounds rounds, and every round sends a slice of
each variant's messages, so all of them sample the same stretch of time. Each slice
starts with --warmup unrecorded messages; each ring gets one unmeasured lap first.
Percentiles come from a log-linear histogram: exact below 64 ns, else at most 1/64
(1.6 %) above the true value, up to any length.

flags:
  --runs K                runs (default 5); medians are taken over them
  --rounds R              turns per run (default 20)
  --modes M,...           ringfeed consumer modes, each a variant of its own: exclusive,
                          shared, broadcast, key_shared, failover (default exclusive)
  --through P             how messages reach the ringfeed rings: ring (default: this
                          process writes into bare rings) or fetcher (appended to logs and
                          moved by a fetcher process, pinned to cpu 0 beside the writer,
                          which then yields the cpu while it waits); the baselines are the
                          same either way
  --size BYTES            message size, 16 to 65536 (default 64): ringfeed's value and
                          every baseline's message (key_shared messages also carry an
                          8-byte key, one of 16)
  --batch B               messages per send, 1 to 512 (default 1), all stamped alike
  --wait W                spin, spin-sleep or sleep (default spin)
  --spin-us US            spin-sleep: how long the reader polls (default 20)
  --loop L                open or closed (default open)
  --count N               recorded messages per variant and run (default 200000 with
                          --wait spin through bare rings, else 20000)
  --interval-ns NS        time between sends (default 3000 with --wait spin through bare
                          rings, 200000 through a fetcher, else 50000)
  --warmup N              unrecorded messages at the start of each slice (default 100)
  --ring-mb MB            ringfeed ring size in MiB, a power of two (default 64)
  --csv FILE              write the percentile distribution of every variant (all runs
                          merged) as CSV: quantile, nines, one column per variant, in ns
                          (bench/plot_latency.sh plots it)
  --wait-idle S           before each run, wait up to S seconds for a second of idle
                          cpus (default 0: do not wait)
  --no-pin                do not pin the writer to cpu 0 and the reader to cpu 1
  --help
)";

enum class Loop { open, closed };
enum class Through { ring, fetcher };

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t rounds = 20;
  std::vector<Mode> modes{Mode::exclusive};
  Through through = Through::ring;
  std::uint64_t size = 64;
  std::uint64_t batch = 1;
  Wait wait = Wait::spin;
  std::uint64_t spin_us = 20;
  bool spin_us_given = false;
  Loop loop = Loop::open;
  std::uint64_t count = 0;        // 0: by --wait
  std::uint64_t interval_ns = 0;  // 0: by --wait
  std::uint64_t warmup = 100;
  std::uint64_t ring_mb = 64;
  std::string csv;
  std::uint64_t wait_idle = 0;
  bool pin = true;
};

enum class Kind { floor, ringfeed, mq, unix_socket, pipe };

struct Variant {
  Kind kind;
  Mode mode = Mode::exclusive;  // ringfeed
  std::uint32_t partition = 0;  // ringfeed: its own ring
  std::string name;
};

std::vector<Variant> variants_of(const Options& o) {
  std::vector<Variant> v{{Kind::floor, Mode::exclusive, 0, "floor (cache line)"}};
  std::uint32_t partition = 0;
  for (Mode m : o.modes) {
    const char* path = o.through == Through::fetcher ? " via fetcher" : "";
    v.push_back({Kind::ringfeed, m, partition++, "ringfeed " + std::string(to_string(m)) + path});
  }
  v.push_back({Kind::mq, Mode::exclusive, 0, "message_queue"});
  v.push_back({Kind::unix_socket, Mode::exclusive, 0, "unix socket"});
  v.push_back({Kind::pipe, Mode::exclusive, 0, "pipe"});
  return v;
}

constexpr std::size_t kMaxVariants = 9;  // floor, 5 modes, 3 baselines
constexpr std::size_t kMqDepth = 1024;
constexpr std::uint64_t kKeys = 16;  // key_shared: distinct keys, round robin

// Closed loop: how many messages of a variant the reader holds, for the writer to wait
// on. Written by the reader only, each on its own line.
struct alignas(kLine) Progress {
  std::atomic<std::uint64_t> received;
};

struct Shared {
  Rendezvous rv;
  StampLine lines[kStampLines];
  Histogram hist[kMaxVariants];
  Progress progress[kMaxVariants];
  std::uint64_t missed[kMaxVariants];  // floor: lines overwritten before the reader saw them
  // Observed before the stamp (the two cpus' clocks can differ by a few ns); recorded as 0.
  std::uint64_t negative[kMaxVariants];
  // Open loop: sends made more than one interval after they were due (writer side).
  std::uint64_t late_sends[kMaxVariants];
};

// A message on the wire (every variant but the floor): sequence number, stamp, padding
// up to --size. ringfeed carries the stamp in the record's timestamp too.
void put_header(std::byte* p, std::uint64_t seq, std::int64_t stamp) {
  std::memcpy(p, &seq, sizeof seq);
  std::memcpy(p + sizeof seq, &stamp, sizeof stamp);
}
void get_header(const std::byte* p, std::uint64_t& seq, std::int64_t& stamp) {
  std::memcpy(&seq, p, sizeof seq);
  std::memcpy(&stamp, p + sizeof seq, sizeof stamp);
}
constexpr std::size_t kHeaderBytes = 16;

// When the writer sends. Open loop: send k is due at start + k * interval; returns the
// due time after waiting for it, even when it is already past (a late writer catches up
// and the delay counts). Closed loop: waits until `interval` after the previous send, or
// not at all if that passed, and returns the actual time. With `yield`, the wait gives
// the cpu to whatever else is ready to run on it (see yield_while_waiting).
class Schedule {
 public:
  Schedule(Loop loop, std::uint64_t interval, bool yield)
      : loop_(loop),
        interval_(static_cast<std::int64_t>(interval)),
        due_(now_ns() + interval_),
        yield_(yield) {}

  std::int64_t next(std::uint64_t& late) {
    std::int64_t t = now_ns();
    while (t < due_) {
      if (yield_) ::sched_yield();
      t = now_ns();
    }
    const std::int64_t due = due_;
    if (loop_ == Loop::closed) {
      due_ = t + interval_;
      return t;
    }
    if (t - due > interval_) ++late;
    due_ += interval_;
    return due;
  }

 private:
  Loop loop_;
  std::int64_t interval_;
  std::int64_t due_;
  bool yield_;
};

struct Plan {
  std::uint64_t count;     // recorded per variant and run
  std::uint64_t interval;  // between sends
  std::uint64_t recorded;  // per slice
  std::uint64_t total;     // per slice, warm-up included
};

Plan plan_of(const Options& o) {
  // A sleeping reader needs a wake-up per message: 20 000 messages a second. A fetcher
  // fed one record at a time spends tens of microseconds of cpu on each (a file event
  // read by an io_uring worker thread, its own wake-up, the file read): 5 000 a second,
  // or it falls behind on the cpu it shares with the writer and the open loop measures
  // its queue.
  Plan p{};
  if (o.through == Through::fetcher) {
    p.count = 20'000;
    p.interval = 200'000;
  } else if (o.wait == Wait::spin) {
    p.count = 200'000;
    p.interval = 3'000;
  } else {
    p.count = 20'000;
    p.interval = 50'000;
  }
  if (o.count != 0) p.count = o.count;
  if (o.interval_ns != 0) p.interval = o.interval_ns;
  p.recorded = p.count / o.rounds;
  p.total = o.warmup + p.recorded;
  return p;
}

void record(Shared& s, std::size_t v, std::int64_t observed, std::int64_t stamp) {
  if (observed < stamp) {
    ++s.negative[v];
    s.hist[v].record(0);
  } else {
    s.hist[v].record(static_cast<std::uint64_t>(observed - stamp));
  }
}

std::string key_of(std::uint64_t seq) {
  char k[9];
  std::snprintf(k, sizeof k, "key%05llu", static_cast<unsigned long long>(seq % kKeys));
  return k;
}

// The transports both sides share, made before the fork.
struct Channels {
  std::string ns;
  std::string mq;
  ByteStream socket{ByteStream::Kind::unix_socket};
  ByteStream pipe{ByteStream::Kind::pipe};
};

// Both sides make the same sync calls, in the same order: three while setting up, then
// two per slice (start, done).
class WriterSide {
 public:
  // `feed`: the fetcher namespace of --through fetcher; null for bare rings.
  WriterSide(Shared& s, const Options& o, const std::vector<Variant>& variants, Channels& ch,
             FetcherFeed* feed)
      : s_(s), o_(o), plan_(plan_of(o)), variants_(variants), ch_(ch), feed_(feed) {}

  int run() {
    ch_.socket.keep_write_end();
    ch_.pipe.keep_write_end();
    if (!setup()) return 1;
    for (std::uint64_t r = 0; r < o_.rounds; ++r) {
      for (std::size_t v = 0; v < variants_.size(); ++v) {
        // A fetcher that died would otherwise show only as the reader's timed-out pop.
        if (feed_ != nullptr && !feed_->alive()) return 1;
        if (!sync() || !send_slice(v) || !sync()) return 1;
      }
    }
    rings_.clear();
    logs_.clear();
    return 0;
  }

 private:
  bool sync() { return s_.rv.sync(0, step_); }

  bool setup() {
    for (const Variant& v : variants_) {
      if (v.kind != Kind::ringfeed) continue;
      if (feed_ != nullptr) {
        // The fetcher made the rings; this process appends to their logs.
        auto log = io::LogAppender::open(log_path(feed_->dir(), v.partition));
        if (!log) {
          s_.rv.fail(log.error().message);
          return false;
        }
        logs_.push_back(std::move(log.value()));
        continue;
      }
      auto w = create_ring(s_.rv, ch_.ns, v.partition, o_.ring_mb << 20);
      if (!w) return false;
      rings_.push_back(std::move(w));
    }
    queue_ = std::make_unique<OwnedQueue>(ch_.mq, kMqDepth, o_.size);
    payload_.resize(o_.batch * o_.size);
    keys_.resize(o_.batch);
    out_.resize(o_.batch);
    records_.resize(o_.batch);
    if (!sync()) return false;  // rings and queue exist
    if (!sync()) return false;  // the reader attached and opened them
    for (auto& w : rings_) {
      if (!wait_for_group(s_.rv, *w) || !publish_lap(s_.rv, *w)) return false;
    }
    for (auto& log : logs_) {
      if (!append_lap(s_.rv, log, o_.ring_mb << 20)) return false;
    }
    return sync();  // the reader took the laps
  }

  bool send_slice(std::size_t v) {
    Schedule schedule(o_.loop, plan_.interval, yield_while_waiting());
    for (std::uint64_t i = 0; i < plan_.total; i += o_.batch) {
      const std::size_t n = static_cast<std::size_t>(std::min(o_.batch, plan_.total - i));
      if (o_.loop == Loop::closed && !wait_received(v)) return false;
      const std::int64_t stamp = schedule.next(s_.late_sends[v]);
      if (!send(v, n, stamp)) return false;
      sent_[v] += n;
    }
    return true;
  }

  // Closed loop: until the reader holds everything sent so far.
  bool wait_received(std::size_t v) {
    while (s_.progress[v].received.load(std::memory_order_acquire) < sent_[v]) {
      if (s_.rv.failed.load(std::memory_order_relaxed) != 0) return false;
      if (yield_while_waiting()) ::sched_yield();
    }
    return true;
  }

  // Through a fetcher there are three processes on two cpus, and the fetcher shares the
  // writer's. A writer that spins while it waits keeps it from the cpu until the
  // scheduler's time slice ends (milliseconds); one that yields lets it run at once.
  bool yield_while_waiting() const { return feed_ != nullptr; }

  bool send(std::size_t v, std::size_t n, std::int64_t stamp) {
    const Variant& var = variants_[v];
    const std::uint64_t first = sent_[v];
    if (var.kind == Kind::floor) {
      for (std::uint64_t seq = first; seq < first + n; ++seq) {
        StampLine& line = s_.lines[seq % kStampLines];
        line.stamp.store(stamp, std::memory_order_relaxed);
        line.seq.store(seq + 1, std::memory_order_release);
      }
      return true;
    }
    for (std::size_t j = 0; j < n; ++j) put_header(&payload_[j * o_.size], first + j, stamp);
    switch (var.kind) {
      case Kind::ringfeed:
        if (feed_ != nullptr) return append(logs_[var.partition], var.mode, first, n, stamp);
        return publish(*rings_[var.partition], var.mode, first, n, stamp);
      case Kind::mq:
        for (std::size_t j = 0; j < n; ++j)
          queue_->queue().send(&payload_[j * o_.size], o_.size, 0);
        return true;
      case Kind::unix_socket:
        return ch_.socket.write_all(s_.rv, payload_.data(), n * o_.size);
      case Kind::pipe:
        return ch_.pipe.write_all(s_.rv, payload_.data(), n * o_.size);
      case Kind::floor:
        break;
    }
    return false;
  }

  bool publish(Writer& w, Mode mode, std::uint64_t first, std::size_t n, std::int64_t stamp) {
    for (std::size_t j = 0; j < n; ++j) {
      OutMessage& m = out_[j];
      m.value = {reinterpret_cast<const char*>(&payload_[j * o_.size]), o_.size};
      m.upstream_offset = first + j;
      m.timestamp_ns = stamp;
      if (mode == Mode::key_shared) {
        keys_[j] = key_of(first + j);
        m.key = keys_[j];
      }
    }
    for (std::size_t done = 0; done < n;) {
      const std::size_t k = w.publish({out_.data() + done, n - done}, std::chrono::seconds(1));
      if (k == 0) {
        s_.rv.fail("publish on " + w.segment_name() + ": ring full for 1 s");
        return false;
      }
      done += k;
    }
    return true;
  }

  // --through fetcher: the batch as records of the partition's log, stamped alike (the
  // fetcher copies the record's timestamp into the message's), in one write.
  bool append(io::LogAppender& log, Mode mode, std::uint64_t first, std::size_t n,
              std::int64_t stamp) {
    for (std::size_t j = 0; j < n; ++j) {
      io::RecordView& r = records_[j];
      r.value = {reinterpret_cast<const char*>(&payload_[j * o_.size]), o_.size};
      r.timestamp_ns = stamp;
      if (mode == Mode::key_shared) {
        keys_[j] = key_of(first + j);
        r.key = keys_[j];
      }
    }
    auto done = log.append({records_.data(), n});
    if (!done) {
      s_.rv.fail("append to " + log.path() + ": " + done.error().message);
      return false;
    }
    return true;
  }

  Shared& s_;
  const Options& o_;
  const Plan plan_;
  const std::vector<Variant>& variants_;
  Channels& ch_;
  FetcherFeed* feed_;
  std::vector<std::unique_ptr<Writer>> rings_;  // by partition
  std::vector<io::LogAppender> logs_;           // by partition, --through fetcher
  std::unique_ptr<OwnedQueue> queue_;
  std::vector<std::byte> payload_;  // one batch of messages
  std::vector<std::string> keys_;
  std::vector<OutMessage> out_;
  std::vector<io::RecordView> records_;
  std::uint64_t sent_[kMaxVariants] = {};
  std::uint32_t step_ = 0;
};

class ReaderSide {
 public:
  ReaderSide(Shared& s, const Options& o, const std::vector<Variant>& variants, Channels& ch)
      : s_(s), o_(o), plan_(plan_of(o)), variants_(variants), ch_(ch) {}

  int run() {
    ch_.socket.keep_read_end();
    ch_.pipe.keep_read_end();
    if (!setup()) return 1;
    for (std::uint64_t r = 0; r < o_.rounds; ++r) {
      for (std::size_t v = 0; v < variants_.size(); ++v) {
        if (!sync() || !receive_slice(v) || !sync()) return 1;
      }
    }
    return 0;
  }

 private:
  bool sync() { return s_.rv.sync(1, step_); }

  std::chrono::nanoseconds spin() const {
    return spin_time(o_.wait, std::chrono::microseconds(o_.spin_us));
  }

  bool setup() {
    if (!sync()) return false;
    for (const Variant& v : variants_) {
      if (v.kind != Kind::ringfeed) continue;
      auto c = attach_reader(s_.rv, ch_.ns, v.partition, spin(), v.mode);
      if (!c) return false;
      consumers_.push_back(std::move(c));
    }
    queue_ = open_queue(s_.rv, ch_.mq);
    if (!queue_) return false;
    socket_.emplace(ch_.socket.read_fd(), o_.size, o_.wait, spin());
    pipe_.emplace(ch_.pipe.read_fd(), o_.size, o_.wait, spin());
    message_.resize(o_.size);
    if (!sync()) return false;
    auto ignore = [](const Batch&, std::int64_t) { return true; };
    for (auto& c : consumers_) {
      if (!pop_messages(s_.rv, *c, 64, lap_messages(o_.ring_mb << 20), ignore)) return false;
    }
    return sync();
  }

  // Checks the order, records after the warm-up.
  bool observe(std::size_t v, std::uint64_t seq, std::int64_t stamp, std::int64_t t) {
    if (seq != expected_[v]) {
      s_.rv.fail(variants_[v].name + ": message " + std::to_string(seq) + " arrived where " +
                 std::to_string(expected_[v]) + " was due");
      return false;
    }
    ++expected_[v];
    if (in_slice_++ >= o_.warmup) record(s_, v, t, stamp);
    return true;
  }

  void report_progress(std::size_t v) {
    if (o_.loop == Loop::closed)
      s_.progress[v].received.store(expected_[v], std::memory_order_release);
  }

  bool receive_slice(std::size_t v) {
    in_slice_ = 0;
    const Variant& var = variants_[v];
    switch (var.kind) {
      case Kind::floor:
        return receive_floor(v);
      case Kind::ringfeed: {
        auto on_batch = [&](const Batch& b, std::int64_t t) {
          for (const Message& m : b) {
            std::uint64_t seq;
            std::int64_t stamp;
            if (m.value().size() != o_.size) {
              s_.rv.fail(var.name + ": a value of " + std::to_string(m.value().size()) + " bytes");
              return false;
            }
            get_header(reinterpret_cast<const std::byte*>(m.value().data()), seq, stamp);
            if (!observe(v, seq, m.timestamp_ns(), t)) return false;
          }
          report_progress(v);
          return true;
        };
        return pop_messages(s_.rv, *consumers_[var.partition], std::max<std::size_t>(64, o_.batch),
                            plan_.total, on_batch);
      }
      case Kind::mq:
        for (std::uint64_t i = 0; i < plan_.total; ++i) {
          if (!mq_receive_bytes(*queue_, message_.data(), o_.size, spin())) {
            s_.rv.fail("message_queue: a short message");
            return false;
          }
          const std::int64_t t = now_ns();
          if (!observe_bytes(v, message_.data(), t)) return false;
          report_progress(v);
        }
        return true;
      case Kind::unix_socket:
      case Kind::pipe: {
        StreamReader& r = var.kind == Kind::pipe ? *pipe_ : *socket_;
        const std::uint64_t end = expected_[v] + plan_.total;
        while (expected_[v] < end) {
          if (!r.next(s_.rv,
                      [&](const std::byte* p, std::int64_t t) { return observe_bytes(v, p, t); })) {
            return false;
          }
          report_progress(v);
        }
        return true;
      }
    }
    return false;
  }

  bool observe_bytes(std::size_t v, const std::byte* p, std::int64_t t) {
    std::uint64_t seq;
    std::int64_t stamp;
    get_header(p, seq, stamp);
    return observe(v, seq, stamp, t);
  }

  bool receive_floor(std::size_t v) {
    const std::uint64_t first = expected_[v];
    const std::uint64_t end = first + plan_.total;
    for (std::uint64_t i = first; i < end;) {
      const StampLine& line = s_.lines[i % kStampLines];
      std::uint64_t seq;
      while ((seq = line.seq.load(std::memory_order_acquire)) <= i) {
      }
      const std::int64_t t = now_ns();
      const std::int64_t stamp = line.stamp.load(std::memory_order_relaxed);
      if (seq != i + 1 || line.seq.load(std::memory_order_acquire) != seq) {
        // Lapped: the writer went round the circle while this reader was away.
        s_.missed[v] += seq - i;
        i = seq;
        continue;
      }
      if (i - first >= o_.warmup) record(s_, v, t, stamp);
      ++i;
      expected_[v] = i;
      report_progress(v);
    }
    expected_[v] = end;
    return true;
  }

  Shared& s_;
  const Options& o_;
  const Plan plan_;
  const std::vector<Variant>& variants_;
  Channels& ch_;
  std::vector<std::unique_ptr<Consumer>> consumers_;  // by partition
  std::unique_ptr<boost::interprocess::message_queue> queue_;
  std::optional<StreamReader> socket_;
  std::optional<StreamReader> pipe_;
  std::vector<std::byte> message_;
  std::uint64_t expected_[kMaxVariants] = {};  // next sequence number, over the whole run
  std::uint64_t in_slice_ = 0;
  std::uint32_t step_ = 0;
};

std::vector<Mode> parse_modes(std::string_view text) {
  std::vector<Mode> modes;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view name = text.substr(0, comma);
    const auto m = parse_mode(name);
    if (!m) {
      throw UsageError("--modes: '" + std::string(name) +
                       "' is not exclusive, shared, broadcast, key_shared or failover");
    }
    if (std::find(modes.begin(), modes.end(), *m) != modes.end()) {
      throw UsageError("--modes: '" + std::string(name) + "' is given twice");
    }
    modes.push_back(*m);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  if (modes.empty()) throw UsageError("--modes needs at least one mode");
  return modes;
}

Options parse(ArgReader& args) {
  Options o;
  constexpr std::uint64_t kBig = 1'000'000'000;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    std::string_view text;
    if (args.flag("--no-pin")) {
      o.pin = false;
    } else if (args.text("--modes", text)) {
      o.modes = parse_modes(text);
    } else if (args.text("--through", text)) {
      if (text != "ring" && text != "fetcher") {
        throw UsageError("--through: '" + std::string(text) + "' is not ring or fetcher");
      }
      o.through = text == "ring" ? Through::ring : Through::fetcher;
    } else if (args.text("--wait", text)) {
      o.wait = parse_wait(text);
    } else if (args.text("--loop", text)) {
      if (text != "open" && text != "closed") {
        throw UsageError("--loop: '" + std::string(text) + "' is not open or closed");
      }
      o.loop = text == "open" ? Loop::open : Loop::closed;
    } else if (args.text("--csv", text)) {
      o.csv = text;
    } else if (args.number("--runs", 1, 1000, o.runs) ||
               args.number("--rounds", 1, 10'000, o.rounds) ||
               args.number("--size", kHeaderBytes, 65536, o.size) ||
               args.number("--batch", 1, 512, o.batch) ||
               (args.number("--spin-us", 0, 1'000'000, o.spin_us) && (o.spin_us_given = true)) ||
               args.number("--count", 1, kBig, o.count) ||
               args.number("--interval-ns", 100, 1'000'000'000, o.interval_ns) ||
               args.number("--warmup", 0, kBig, o.warmup) ||
               args.number("--ring-mb", 1, 1 << 20, o.ring_mb) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  if (!o.csv.empty() && !std::ofstream(o.csv, std::ios::trunc)) {
    throw UsageError("--csv: cannot write " + o.csv + ": " + std::strerror(errno));
  }
  if ((o.ring_mb & (o.ring_mb - 1)) != 0) {
    throw UsageError("--ring-mb " + std::to_string(o.ring_mb) + " is not a power of two");
  }
  if (plan_of(o).count < o.rounds) {
    throw UsageError("--count must be at least --rounds (" + std::to_string(o.rounds) + ")");
  }
  if (o.spin_us_given && o.wait != Wait::spin_sleep) {
    throw UsageError("--spin-us is for --wait spin-sleep only");
  }
  return o;
}

constexpr double kQuantiles[] = {0.5, 0.9, 0.99, 0.999, 0.9999};
constexpr const char* kFigureNames[] = {"p50", "p90", "p99", "p99.9", "p99.99", "max"};
constexpr int kFigures = 6;
constexpr int kP999 = 3;

std::string figure(const Variant& v, int f) {
  return v.name + " " + kFigureNames[f];
}

double value_of(const ringfeed::Histogram& h, int f) {
  return static_cast<double>(f < kFigures - 1 ? h.percentile(kQuantiles[f]) : h.max());
}

double ratio(const Figures& fig, const Variant& a, const Variant& b, int f) {
  const double den = fig.median(figure(b, f));
  return den > 0 ? fig.median(figure(a, f)) / den : 0.0;
}

void print_header(const char* title, int width) {
  std::printf("\n%-*s", width + 2, title);
  for (const char* name : kFigureNames) std::printf(" %9s", name);
  std::printf("\n");
}

void print_target(const std::string& what, double value, bool met) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3gx", value);
  std::printf("  %-64s %-9s %s\n", what.c_str(), buf, met ? "met" : "NOT met");
}

// The project's targets for ringfeed against the floor and the baselines.
void print_targets(const Options& o, const std::vector<Variant>& variants, const Figures& fig) {
  std::printf("\ntargets (ratios of the medians)\n");
  const Variant* floor = &variants.front();
  auto find = [&](Kind k) {
    return &*std::find_if(variants.begin(), variants.end(),
                          [&](const Variant& v) { return v.kind == k; });
  };
  for (const Variant& a : variants) {
    if (a.kind != Kind::ringfeed) continue;
    // The floor always spins: against a reader that sleeps it is no floor.
    const double to_floor = ratio(fig, a, *floor, 0);
    if (o.wait == Wait::spin) {
      print_target(a.name + " p50 within 2x of the floor's", to_floor, to_floor <= 2.0);
    }
    for (Kind k : {Kind::mq, Kind::unix_socket}) {
      const Variant& b = *find(k);
      const double r = ratio(fig, a, b, kP999);
      print_target(a.name + " p99.9 at most 0.1x " + b.name + "'s", r, r > 0 && r <= 0.1);
    }
  }
}

bool write_csv(const std::string& path, const std::vector<Variant>& variants,
               const std::vector<ringfeed::Histogram>& merged) {
  std::vector<ringfeed::NamedHistogram> columns;
  for (std::size_t v = 0; v < variants.size(); ++v)
    columns.push_back({variants[v].name, &merged[v]});
  std::ofstream out(path, std::ios::trunc);
  ringfeed::write_distribution_csv(out, columns);
  out.close();
  return static_cast<bool>(out);
}

}  // namespace

int latency_main(ArgReader& args) {
  const Options o = parse(args);
  const Plan plan = plan_of(o);
  const std::vector<Variant> variants = variants_of(o);
  // A pipe whose reader died must fail the writer's write, not kill the process.
  ::signal(SIGPIPE, SIG_IGN);

  std::printf("ringfeed-bench latency on %s\n", machine_description().c_str());
  std::printf(
      "one-way latency = reader's CLOCK_MONOTONIC stamp when it holds the message - writer's\n"
      "stamp (%s); same clock, not a round trip / 2\n",
      o.loop == Loop::open ? "open loop: the time the send was due, fixed rate"
                           : "closed loop: the actual send, after the reader held the previous");
  std::printf(
      "%llu-byte messages, %llu per send, one send every %llu ns; %llu recorded per variant and "
      "run; reader waits: %s%s; %llu rounds, %llu warm-up messages per slice; rings %llu MiB\n",
      static_cast<unsigned long long>(o.size), static_cast<unsigned long long>(o.batch),
      static_cast<unsigned long long>(plan.interval), static_cast<unsigned long long>(plan.count),
      to_string(o.wait),
      o.wait == Wait::spin_sleep ? (" (" + std::to_string(o.spin_us) + " us, then sleeps)").c_str()
                                 : "",
      static_cast<unsigned long long>(o.rounds), static_cast<unsigned long long>(o.warmup),
      static_cast<unsigned long long>(o.ring_mb));
  if (o.through == Through::fetcher) {
    std::printf(
        "ringfeed variants via a fetcher: this process appends each batch to DIR/P.log (one "
        "partition per mode, a new DIR each run), a fetcher process (%s) moves the records into "
        "ring P, the reader pops them; the record's timestamp is the stamp; the writer yields "
        "the cpu while it waits\n",
        o.pin ? "pinned to cpu 0, beside the writer" : "not pinned");
  }
  const double sends =
      static_cast<double>(o.warmup * o.rounds + plan.count) / static_cast<double>(o.batch);
  const double paced_seconds =
      static_cast<double>(variants.size()) * sends * static_cast<double>(plan.interval) / 1e9;
  // Through a fetcher, its start (which allocates the rings) and the laps take longer.
  const unsigned ring_seconds = static_cast<unsigned>(o.ring_mb / 4 * o.modes.size() *
                                                      (o.through == Through::fetcher ? 4 : 1));
  const auto watchdog = static_cast<unsigned>(120 + 4 * paced_seconds + ring_seconds);
  std::size_t width = 42;      // of the names in the medians, and of "A / B" in the ratios
  std::size_t run_width = 20;  // of the names in each run's figures
  for (const Variant& a : variants) {
    run_width = std::max(run_width, a.name.size());
    for (const Variant& b : variants) {
      if (a.kind == Kind::ringfeed && b.kind != Kind::ringfeed) {
        width = std::max(width, a.name.size() + 3 + b.name.size());
      }
    }
  }
  const int name_width = static_cast<int>(width);

  Figures fig;
  std::vector<ringfeed::Histogram> merged(variants.size());
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    SharedObject<Shared> s;
    Channels ch{.ns = run_namespace("lat", run), .mq = mq_name("lat", run)};
    PinReport pin;
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    // Its directory is made once the watchdog's handler is there to remove it.
    std::optional<FetcherFeed> feed;
    if (o.through == Through::fetcher) {
      feed.emplace(s->rv,
                   FetcherFeed::Options{.ns = ch.ns,
                                        .partitions = static_cast<std::uint32_t>(o.modes.size()),
                                        .ring_bytes = o.ring_mb << 20,
                                        .cpu = o.pin ? 0 : kAnyCpu});
    }
    WriterSide writer(*s, o, variants, ch, feed ? &*feed : nullptr);
    ReaderSide reader(*s, o, variants, ch);
    int rc = 1;
    if (!feed || feed->start()) {
      rc = run_pair(
          s->rv, o.pin, [&] { return writer.run(); }, [&] { return reader.run(); }, &pin);
    }
    // The reader has exited: the fetcher stops with no consumer attached.
    if (rc == 0 && feed && !feed->stop()) rc = 1;
    disarm_watchdog();
    unwatch_segments();
    const double others = others_share(before, sample_cpu());
    if (rc != 0) {
      std::fprintf(stderr, "ringfeed-bench latency: run %llu: %s\n",
                   static_cast<unsigned long long>(run), s->rv.error_message().c_str());
      return 1;
    }
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs), run_note(pin.text, idle, others).c_str());
    if (feed) {
      std::printf(
          "  fetcher: logs in %s (removed), stopped by SIGTERM, exit status 0, no segment "
          "left; it used %.2f s of cpu\n",
          feed->dir().c_str(), feed->cpu_seconds());
    }
    for (std::size_t v = 0; v < variants.size(); ++v) {
      const auto& h = s->hist[v];
      std::printf("  %-*s", static_cast<int>(run_width), variants[v].name.c_str());
      for (int f = 0; f < kFigures; ++f) {
        std::printf("  %s %s", kFigureNames[f], format_ns(value_of(h, f)).c_str());
      }
      std::printf("  (n=%llu)", static_cast<unsigned long long>(h.count()));
      if (s->missed[v] != 0)
        std::printf("  missed %llu", static_cast<unsigned long long>(s->missed[v]));
      if (s->negative[v] != 0) {
        std::printf("  negative %llu", static_cast<unsigned long long>(s->negative[v]));
      }
      if (s->late_sends[v] != 0) {
        std::printf("  sends late by over an interval %llu",
                    static_cast<unsigned long long>(s->late_sends[v]));
      }
      std::printf("\n");
      for (int f = 0; f < kFigures; ++f) fig.add(figure(variants[v], f), value_of(h, f));
      merged[v].merge(h);
    }
    std::fflush(stdout);
  }

  char title[64];
  std::snprintf(title, sizeof title, "medians of %llu runs",
                static_cast<unsigned long long>(o.runs));
  print_header(title, name_width);
  for (const Variant& v : variants) {
    std::printf("  %-*s", name_width, v.name.c_str());
    for (int f = 0; f < kFigures; ++f)
      std::printf(" %9s", format_ns(fig.median(figure(v, f))).c_str());
    std::printf("\n");
  }
  print_header("ringfeed / baseline, ratios of the medians", name_width);
  for (const Variant& a : variants) {
    if (a.kind != Kind::ringfeed) continue;
    for (const Variant& b : variants) {
      if (b.kind == Kind::ringfeed) continue;
      std::printf("  %-*s", name_width, (a.name + " / " + b.name).c_str());
      for (int f = 0; f < kFigures; ++f) std::printf(" %9.3f", ratio(fig, a, b, f));
      std::printf("\n");
    }
  }

  if (o.through == Through::fetcher) {
    std::printf("\ntargets: judged on bare rings only (--through ring)\n");
  } else {
    print_targets(o, variants, fig);
  }
  if (!o.csv.empty()) {
    if (!write_csv(o.csv, variants, merged)) {
      std::fprintf(stderr, "ringfeed-bench latency: cannot write %s\n", o.csv.c_str());
      return 1;
    }
    std::printf("\npercentile distribution of every variant, all %llu runs merged: %s\n",
                static_cast<unsigned long long>(o.runs), o.csv.c_str());
  }
  return 0;
}

}  // namespace ringfeed::bench
