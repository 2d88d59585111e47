// ringfeed-bench throughput: 64-byte messages per second from one process to another,
// for ringfeed (exclusive group, batched publish, pop and ack) and its baselines in the
// same run.
#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "byte_stream.hpp"
#include "commands.hpp"
#include "harness.hpp"
#include "mq.hpp"
#include "ringfeed_steps.hpp"
#include "spsc_ring.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench throughput [flags]

Messages of 64 bytes per second from a writer (this process) to a reader (a forked
child). The reader checks every message's sequence number, so nothing is lost or
reordered. Each run forks fresh processes and measures, between the same two:
  ringfeed        Writer::publish of --batch messages at a time; Consumer::pop of up to
                  --batch (one consumer in a group of --mode, spinning) and ack of the
                  whole batch
  message_queue   Boost.Interprocess message_queue (64-byte messages, depth 4096),
                  one send and one receive per message
  unix socket     a Unix domain stream socket pair: one write of --batch messages, reads
                  of up to 64 KiB (blocking)
  pipe            a pipe, the same way
  bare ring       a single-producer single-consumer ring of 64-byte slots in a shared
                  mapping, cached indices, each index published once per batch; run
                  twice: with --batch (like for like) and with --ceiling-batch (the
                  ceiling: a longer batch keeps the reader's prefetches off the lines
                  the writer is filling)
Each variant first moves one unmeasured lap (its whole ring) to fault pages in; the
clock runs from the writer's first send to the reader holding the last message.

flags:
  --runs K        runs (default 5); medians are taken over them
  --count N       messages for ringfeed and the bare ring (default 20000000)
  --mq-count N    messages for message_queue, the socket and the pipe (default 2000000)
  --mode M        the ringfeed consumer's group mode: exclusive, shared, broadcast,
                  key_shared or failover (default exclusive; several consumers per
                  group: ringfeed-bench shared)
  --batch B       messages per publish, pop and bare-ring index publication (default 64)
  --ceiling-batch C  bare-ring index publication for the ceiling (default 1024)
  --ring-mb MB    ringfeed ring and bare ring size in MiB, a power of two (default 64)
  --wait-idle S   before each run, wait up to S seconds for a second of idle cpus
                  (default 0: do not wait)
  --no-pin        do not pin the writer to cpu 0 and the reader to cpu 1
  --help
)";

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t count = 20'000'000;
  std::uint64_t mq_count = 2'000'000;
  std::uint64_t batch = 64;
  std::uint64_t ceiling_batch = 1024;
  std::uint64_t ring_mb = 64;
  std::uint64_t wait_idle = 0;
  Mode mode = Mode::exclusive;
  bool pin = true;
};

enum Variant : int { kRingfeed, kMq, kUnix, kPipe, kBare, kCeiling, kVariants };
constexpr std::size_t kMqDepth = 4096;

struct Shared {
  Rendezvous rv;
  std::int64_t start_ns[kVariants];  // writer: just before its first measured send
  std::int64_t end_ns[kVariants];    // reader: when it held the last message
};

std::uint64_t read_seq(const void* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Both sides of each variant make the same sync calls, in the same order.
class WriterSide {
 public:
  WriterSide(Shared& s, const Options& o, std::string ns, std::string mq, SpscRing bare,
             ByteStream& socket, ByteStream& pipe)
      : s_(s),
        o_(o),
        ns_(std::move(ns)),
        mq_(std::move(mq)),
        bare_(bare),
        socket_(socket),
        pipe_(pipe) {}

  int run() {
    socket_.keep_write_end();
    pipe_.keep_write_end();
    return ringfeed() && mq() && stream(kUnix, socket_) && stream(kPipe, pipe_) &&
                   bare(kBare, o_.batch) && bare(kCeiling, o_.ceiling_batch)
               ? 0
               : 1;
  }

 private:
  bool sync() { return s_.rv.sync(0, step_); }

  bool ringfeed() {
    auto w = create_ring(s_.rv, ns_, 0, o_.ring_mb << 20);
    if (!w) return false;
    if (!sync()) return false;  // the ring exists
    if (!sync()) return false;  // the reader attached
    if (!wait_for_group(s_.rv, *w) || !publish_lap(s_.rv, *w)) return false;
    if (!sync()) return false;  // the reader took the lap
    std::vector<std::array<char, kValueBytes>> values(o_.batch);
    std::vector<OutMessage> batch(o_.batch);
    for (std::size_t j = 0; j < batch.size(); ++j) {
      values[j].fill('v');
      batch[j].value = {values[j].data(), kValueBytes};
    }
    s_.start_ns[kRingfeed] = now_ns();
    for (std::uint64_t seq = 0; seq < o_.count;) {
      const auto k = static_cast<std::size_t>(std::min(o_.batch, o_.count - seq));
      for (std::size_t j = 0; j < k; ++j) {
        const std::uint64_t v = seq + j;
        std::memcpy(values[j].data(), &v, sizeof v);
      }
      const std::size_t n = w->publish({batch.data(), k}, std::chrono::seconds(10));
      if (n == 0) {
        s_.rv.fail("publish on " + w->segment_name() + ": ring full for 10 s at message " +
                   std::to_string(seq));
        return false;
      }
      seq += n;
    }
    const bool ok = sync();  // the reader has them all
    w.reset();
    unwatch_segments();
    return ok;
  }

  bool mq() {
    OwnedQueue q(mq_, kMqDepth);
    if (!sync()) return false;  // the queue exists
    if (!sync()) return false;  // the reader opened it
    MqMessage m{};
    for (std::uint64_t i = 0; i < kMqDepth; ++i) q.queue().send(&m, sizeof m, 0);
    if (!sync()) return false;  // the reader took the warm-up
    s_.start_ns[kMq] = now_ns();
    for (std::uint64_t i = 0; i < o_.mq_count; ++i) {
      m.seq = i;
      q.queue().send(&m, sizeof m, 0);
    }
    const bool ok = sync();
    unwatch_segments();
    return ok;
  }

  // The kernel baselines: --batch messages per write, each with its sequence number.
  bool write_messages(ByteStream& bs, std::uint64_t total) {
    std::vector<MqMessage> batch(o_.batch, MqMessage{});
    for (std::uint64_t seq = 0; seq < total;) {
      const std::uint64_t k = std::min(o_.batch, total - seq);
      for (std::uint64_t j = 0; j < k; ++j) batch[j].seq = seq + j;
      if (!bs.write_all(s_.rv, reinterpret_cast<const std::byte*>(batch.data()),
                        k * sizeof(MqMessage))) {
        return false;
      }
      seq += k;
    }
    return true;
  }

  bool stream(Variant v, ByteStream& bs) {
    if (!sync()) return false;                                   // both ready
    if (!write_messages(bs, kMqDepth) || !sync()) return false;  // the warm-up
    s_.start_ns[v] = now_ns();
    return write_messages(bs, o_.mq_count) && sync();
  }

  void produce(std::uint64_t total, std::uint64_t batch) {
    std::array<std::byte, sizeof(SpscSlot)> msg{};
    for (std::uint64_t seq = 0; seq < total;) {
      const std::uint64_t k = std::min(batch, total - seq);
      bare_.wait_room(k);
      for (std::uint64_t j = 0; j < k; ++j) {
        const std::uint64_t v = seq + j;
        std::memcpy(msg.data(), &v, sizeof v);
        std::memcpy(bare_.producer_slot(j), msg.data(), msg.size());
      }
      bare_.publish(k);
      seq += k;
    }
  }

  bool bare(Variant v, std::uint64_t batch) {
    if (!sync()) return false;         // both ready
    produce(bare_.capacity(), batch);  // the warm-up lap
    if (!sync()) return false;         // the reader took it
    s_.start_ns[v] = now_ns();
    produce(o_.count, batch);
    return sync();
  }

  Shared& s_;
  const Options& o_;
  std::string ns_;
  std::string mq_;  // the message_queue's name
  SpscRing bare_;
  ByteStream& socket_;
  ByteStream& pipe_;
  std::uint32_t step_ = 0;
};

class ReaderSide {
 public:
  ReaderSide(Shared& s, const Options& o, std::string ns, std::string mq, SpscRing bare,
             ByteStream& socket, ByteStream& pipe)
      : s_(s),
        o_(o),
        ns_(std::move(ns)),
        mq_(std::move(mq)),
        bare_(bare),
        socket_(socket),
        pipe_(pipe) {}

  int run() {
    socket_.keep_read_end();
    pipe_.keep_read_end();
    return ringfeed() && mq() && stream(kUnix, socket_) && stream(kPipe, pipe_) &&
                   bare(kBare, o_.batch) && bare(kCeiling, o_.ceiling_batch)
               ? 0
               : 1;
  }

 private:
  bool sync() { return s_.rv.sync(1, step_); }

  bool out_of_order(const char* what, std::uint64_t got, std::uint64_t want) {
    s_.rv.fail(std::string(what) + ": message " + std::to_string(want) + " arrived as " +
               std::to_string(got));
    return false;
  }

  bool ringfeed() {
    if (!sync()) return false;
    auto c = attach_reader(s_.rv, ns_, 0, std::chrono::seconds(1), o_.mode);
    if (!c) return false;
    if (!sync()) return false;
    auto ignore = [](const Batch&, std::int64_t) { return true; };
    if (!pop_messages(s_.rv, *c, o_.batch, lap_messages(o_.ring_mb << 20), ignore)) return false;
    if (!sync()) return false;
    std::uint64_t next = 0;
    auto check = [&](const Batch& b, std::int64_t) {
      for (const Message& m : b) {
        const std::uint64_t seq =
            m.value().size() == kValueBytes ? read_seq(m.value().data()) : ~0ull;
        if (seq != next) return out_of_order("ringfeed", seq, next);
        ++next;
      }
      return true;
    };
    if (!pop_messages(s_.rv, *c, o_.batch, o_.count, check)) return false;
    s_.end_ns[kRingfeed] = now_ns();
    return sync();
  }

  bool mq() {
    if (!sync()) return false;
    const auto queue = open_queue(s_.rv, mq_);
    if (!queue) return false;
    auto& q = *queue;
    if (!sync()) return false;
    MqMessage m{};
    for (std::uint64_t i = 0; i < kMqDepth; ++i) mq_receive(q, m);
    if (!sync()) return false;
    for (std::uint64_t i = 0; i < o_.mq_count; ++i) {
      if (!mq_receive(q, m) || m.seq != i) return out_of_order("message_queue", m.seq, i);
    }
    s_.end_ns[kMq] = now_ns();
    return sync();
  }

  bool read_messages(StreamReader& r, const char* what, std::uint64_t total, bool check) {
    std::uint64_t next = 0;
    bool in_order = true;
    auto on_message = [&](const std::byte* p, std::int64_t) {
      if (check && read_seq(p) != next) in_order = out_of_order(what, read_seq(p), next);
      ++next;
      return in_order;
    };
    while (next < total) {
      if (!r.next(s_.rv, on_message)) return false;
    }
    return true;
  }

  bool stream(Variant v, ByteStream& bs) {
    const char* what = to_string(bs.kind());
    StreamReader r(bs.read_fd(), sizeof(MqMessage), Wait::sleep, std::chrono::nanoseconds(0));
    if (!sync()) return false;
    if (!read_messages(r, what, kMqDepth, false) || !sync()) return false;
    if (!read_messages(r, what, o_.mq_count, true)) return false;
    s_.end_ns[v] = now_ns();
    return sync();
  }

  bool consume(std::uint64_t total, std::uint64_t batch, bool check) {
    for (std::uint64_t next = 0; next < total;) {
      const std::uint64_t n = bare_.available(batch);
      if (n == 0) {
        cpu_relax();
        continue;
      }
      for (std::uint64_t j = 0; j < n; ++j) {
        const std::uint64_t seq = read_seq(bare_.consumer_slot(j));
        if (check && seq != next + j) return out_of_order("bare ring", seq, next + j);
      }
      bare_.release(n);
      next += n;
    }
    return true;
  }

  bool bare(Variant v, std::uint64_t batch) {
    if (!sync()) return false;
    if (!consume(bare_.capacity(), batch, false)) return false;
    if (!sync()) return false;
    if (!consume(o_.count, batch, true)) return false;
    s_.end_ns[v] = now_ns();
    return sync();
  }

  Shared& s_;
  const Options& o_;
  std::string ns_;
  std::string mq_;  // the message_queue's name
  SpscRing bare_;
  ByteStream& socket_;
  ByteStream& pipe_;
  std::uint32_t step_ = 0;
};

Options parse(ArgReader& args) {
  Options o;
  constexpr std::uint64_t kBig = 100'000'000'000;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    std::string_view mode;
    if (args.flag("--no-pin")) {
      o.pin = false;
    } else if (args.text("--mode", mode)) {
      const auto m = parse_mode(mode);
      if (!m) {
        throw UsageError("--mode: '" + std::string(mode) +
                         "' is not exclusive, shared, broadcast, key_shared or failover");
      }
      o.mode = *m;
    } else if (args.number("--runs", 1, 1000, o.runs) || args.number("--count", 1, kBig, o.count) ||
               args.number("--mq-count", 1, kBig, o.mq_count) ||
               args.number("--batch", 1, 4096, o.batch) ||
               args.number("--ceiling-batch", 1, 65536, o.ceiling_batch) ||
               args.number("--ring-mb", 1, 1 << 20, o.ring_mb) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  if ((o.ring_mb & (o.ring_mb - 1)) != 0) {
    throw UsageError("--ring-mb " + std::to_string(o.ring_mb) + " is not a power of two");
  }
  return o;
}

double rate(const Shared& s, Variant v, std::uint64_t count) {
  const double seconds = static_cast<double>(s.end_ns[v] - s.start_ns[v]) / 1e9;
  return seconds > 0 ? static_cast<double>(count) / seconds : 0;
}

}  // namespace

int throughput_main(ArgReader& args) {
  const Options o = parse(args);
  std::printf("ringfeed-bench throughput on %s\n", machine_description().c_str());
  std::printf(
      "64-byte messages; ringfeed (a consumer in a %s group) and bare ring %llu messages, "
      "message_queue, unix socket and pipe %llu; batch %llu; rings %llu MiB\n",
      std::string(to_string(o.mode)).c_str(), static_cast<unsigned long long>(o.count),
      static_cast<unsigned long long>(o.mq_count), static_cast<unsigned long long>(o.batch),
      static_cast<unsigned long long>(o.ring_mb));
  // Generous: a run that moves fewer than 0.2 M messages a second has hung.
  const auto watchdog = static_cast<unsigned>(60 + (o.count * 3 + o.mq_count * 3) / 200'000);
  const std::uint64_t bare_slots = (o.ring_mb << 20) / sizeof(SpscSlot);
  const std::size_t bare_bytes = SpscRing::bytes_for(bare_slots);
  const std::string names[kVariants] = {"ringfeed " + std::string(to_string(o.mode)),
                                        "message_queue",
                                        "unix socket",
                                        "pipe",
                                        "bare ring, batch " + std::to_string(o.batch),
                                        "bare ring, batch " + std::to_string(o.ceiling_batch)};
  const std::uint64_t counts[kVariants] = {o.count,    o.mq_count, o.mq_count,
                                           o.mq_count, o.count,    o.count};
  // A figure in messages/s and in bytes/s of payload (64 bytes a message).
  auto rates = [](double per_second) {
    return format_rate(per_second) + "  " + format_bytes_rate(per_second * kValueBytes);
  };

  Figures fig;
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    SharedObject<Shared> s;
    void* bare_memory = map_shared_bytes(bare_bytes);
    const std::string ns = run_namespace("tput", run);
    const std::string mq = mq_name("tput", run);
    ByteStream socket(ByteStream::Kind::unix_socket);
    ByteStream pipe(ByteStream::Kind::pipe);
    WriterSide writer(*s, o, ns, mq, SpscRing(bare_memory, bare_slots), socket, pipe);
    ReaderSide reader(*s, o, ns, mq, SpscRing(bare_memory, bare_slots), socket, pipe);
    PinReport pin;
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    const int rc = run_pair(
        s->rv, o.pin, [&] { return writer.run(); }, [&] { return reader.run(); }, &pin);
    disarm_watchdog();
    const double others = others_share(before, sample_cpu());
    unmap_shared_bytes(bare_memory, bare_bytes);
    if (rc != 0) {
      std::fprintf(stderr, "ringfeed-bench throughput: run %llu: %s\n",
                   static_cast<unsigned long long>(run), s->rv.error_message().c_str());
      return 1;
    }
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs), run_note(pin.text, idle, others).c_str());
    double r[kVariants];
    for (int v = 0; v < kVariants; ++v) {
      r[v] = rate(*s, static_cast<Variant>(v), counts[v]);
      std::printf("  %-24s %24s\n", names[v].c_str(), rates(r[v]).c_str());
      fig.add(names[v], r[v]);
    }
    std::printf(
        "  ringfeed / message_queue %.2f, / unix socket %.2f, / pipe %.2f, / bare ring "
        "batch %llu %.3f, / ceiling %.3f\n",
        r[kRingfeed] / r[kMq], r[kRingfeed] / r[kUnix], r[kRingfeed] / r[kPipe],
        static_cast<unsigned long long>(o.batch), r[kRingfeed] / r[kBare],
        r[kRingfeed] / r[kCeiling]);
    std::fflush(stdout);
  }

  std::printf("\nmedians of %llu runs\n", static_cast<unsigned long long>(o.runs));
  for (const auto& name : names) {
    std::printf("  %-24s %24s\n", name.c_str(), rates(fig.median(name)).c_str());
  }
  const double rf = fig.median(names[kRingfeed]);
  const double mq = fig.median(names[kMq]);
  const double ceiling = fig.median(names[kCeiling]);
  std::printf("\nratios of the medians\n");
  for (int v = kMq; v < kVariants; ++v) {
    std::printf("  %-46s %8.3f\n", ("ringfeed / " + names[v]).c_str(), rf / fig.median(names[v]));
  }
  std::printf("\ntargets (medians)\n");
  std::printf("  %-44s %7.2fx  %s\n", "ringfeed at least 10x message_queue", rf / mq,
              rf >= 10 * mq ? "met" : "NOT met");
  std::printf("  %-44s %7.1f%%  %s\n", "ringfeed at least 20% of the ceiling", 100 * rf / ceiling,
              rf >= 0.2 * ceiling ? "met" : "NOT met");
  return 0;
}

}  // namespace ringfeed::bench
