// ringfeed-bench ingest: how fast the fetcher moves a local log (file:DIR) into the
// partition rings and on to consumers, against a plain sequential read of the same
// files in the same run; and how long a record takes from a producer's append to a
// consumer's pop, against a plain inotify tail of the same kind of file.
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "children.hpp"
#include "commands.hpp"
#include "fetcher_child.hpp"
#include "harness.hpp"
#include "io/framed_record.hpp"
#include "io/local_log_source.hpp"
#include "io/log_appender.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/histogram.hpp"
#include "ringfeed_steps.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench ingest [flags]

Ingest of the local log (file:DIR). Once per invocation, --count framed records with
--value-bytes values (no key) are written round-robin into --partitions files DIR/P.log
with io::LogAppender, fsynced, and read once: every run then reads them from a warm page
cache (nothing is dropped from it). Each run measures, on the same files:
  plain read      read(2) of each file from start to end into one 1 MiB buffer
  read + decode   the same, plus io::decode (CRC32C and offset check) of every record
  source alone    the local-log source of the fetcher (io::open_local_log, then
                  poll_batches until every record was handed out) into a sink that
                  takes each batch and keeps nothing: its io_uring reads into the
                  registered buffers, batch decode and CRC32C, no ring (clock after open)
  ringfeed        a fetcher process (Fetcher::start on file:DIR, then run) publishing
                  into one ring per partition, and one consumer process per partition
                  (exclusive group) that pops up to --batch messages, checks each value's
                  sequence number, and acks the batch. The clock runs from just before
                  Fetcher::start (the consumers are already waiting for their rings) to
                  the last ack of the last consumer.
Rates are file bytes (MB = 10^6 bytes) and records per second; ringfeed is also given as
a ratio to the plain read of the same run.
Then produce-to-consume latency: a producer process appends one record every
1/--rate s, stamped with CLOCK_REALTIME just before the append; measured is
CLOCK_REALTIME at the reader right after it holds the record, minus that stamp:
  plain tail      one process blocked in read(2) on an inotify descriptor watching the
                  file, then reading and decoding what was appended
  ringfeed        the fetcher tailing the file (inotify read through its io_uring, then
                  the file read, then the ring) and one consumer popping (exclusive
                  group, ConsumerOptions::spin --spin-us)
Both include the inotify wake-up path. The first --warmup records are not recorded.

flags:
  --runs K            runs (default 5); medians are taken over them
  --count N           records written (default 2000000)
  --value-bytes B     value size, at least 8 (default 100)
  --partitions P      partition files (default 4, at most 64)
  --batch B           most messages per pop (default 256)
  --ring-mb LIST      ring sizes in MiB, powers of two, comma-separated: one ringfeed
                      measurement per size (default 64,4: the fetcher's default, whose
                      pages are all touched for the first time during the measurement,
                      and a small one that is reused many times over); the latency part
                      uses the first
  --dir DIR           where to write the logs (default: a new directory under $TMPDIR or
                      /tmp, removed at the end)
  --rate R            latency: records per second (default 20000)
  --seconds S         latency: seconds of recorded records per variant (default 2)
  --warmup W          latency: records not recorded at the start (default 2000)
  --spin-us U         latency: the consumer's spin before it sleeps (default 50)
  --no-latency        skip the latency part
  --wait-idle S       before each run, wait up to S seconds for a second of idle cpus
  --no-pin            throughput part: do not pin (default: the fetcher and this process
                      on cpu 0, the consumers on cpu 1); the latency part is never pinned
  --help
)";

constexpr std::uint32_t kMaxParts = 64;
constexpr std::size_t kReadBuffer = std::size_t{1} << 20;

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t count = 2'000'000;
  std::uint64_t value_bytes = 100;
  std::uint64_t partitions = 4;
  std::uint64_t batch = 256;
  std::vector<std::uint64_t> ring_mb;  // one ringfeed measurement per size
  std::string dir;
  std::uint64_t rate = 20'000;
  std::uint64_t seconds = 2;
  std::uint64_t warmup = 2'000;
  std::uint64_t spin_us = 50;
  bool latency = true;
  std::uint64_t wait_idle = 0;
  bool pin = true;
};

struct alignas(kLine) Progress {
  std::atomic<std::uint64_t> taken;
  std::atomic<std::int64_t> last_ns;  // after the last ack
};

struct IngestControl {
  Rendezvous rv;  // only its failure slot is used
  FetcherControl fetcher;
  alignas(kLine) std::atomic<std::uint32_t> waiting;  // consumers in their attach loop
  std::atomic<std::uint32_t> ready;                   // latency: the reader is set up
  std::atomic<std::uint32_t> done;                    // latency: the reader took every record
  std::atomic<std::uint64_t> late;  // latency: records the producer appended >100 us late
  Progress c[kMaxParts];
  Histogram hist;  // latency: the reader's
};

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw std::runtime_error("cannot stat " + path + ": " + std::strerror(errno));
  }
  return static_cast<std::uint64_t>(st.st_size);
}

// Records of partition p when record i goes to partition i % P.
std::uint64_t records_of(const Options& o, std::uint32_t p) {
  return o.count / o.partitions + (p < o.count % o.partitions ? 1 : 0);
}

void put_index(char* value, std::uint64_t i) {
  std::memcpy(value, &i, sizeof i);
}
std::uint64_t index_of(std::string_view value) {
  std::uint64_t i = 0;
  std::memcpy(&i, value.data(), sizeof i);
  return i;
}

// Writes the partition logs: record i (value: i in its first 8 bytes, then 'v's) goes
// to DIR/(i % P).log. Returns the bytes written.
std::uint64_t write_logs(const Options& o, const std::string& dir) {
  constexpr std::size_t kAppendBatch = 1024;
  std::vector<char> values(kAppendBatch * o.value_bytes, 'v');
  std::vector<io::RecordView> batch(kAppendBatch);
  std::uint64_t bytes = 0;
  for (std::uint32_t p = 0; p < o.partitions; ++p) {
    auto a = io::LogAppender::open(log_path(dir, p));
    if (!a) throw std::runtime_error(a.error().message);
    const std::uint64_t n = records_of(o, p);
    for (std::uint64_t j = 0; j < n;) {
      const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(kAppendBatch, n - j));
      const std::int64_t ts = realtime_ns();
      for (std::size_t r = 0; r < k; ++r) {
        char* v = values.data() + r * o.value_bytes;
        put_index(v, (j + r) * o.partitions + p);
        batch[r].timestamp_ns = ts;
        batch[r].value = {v, o.value_bytes};
      }
      auto done = a->append({batch.data(), k});
      if (!done) throw std::runtime_error(done.error().message);
      bytes += done->bytes;
      j += k;
    }
    // Written back now, so that no writeback runs during the measurements; the pages
    // stay in the page cache.
    if (auto ok = a->sync(); !ok) throw std::runtime_error(ok.error().message);
  }
  return bytes;
}

struct ReadResult {
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;
  double seconds = 0;
};

// Reads every log from start to end with read(2) into a 1 MiB buffer; with `decode`,
// also decodes every record as the local-log source does (CRC32C, offset check).
ReadResult read_logs(const Options& o, const std::string& dir, bool decode) {
  std::vector<std::byte> buf(kReadBuffer);
  ReadResult res;
  std::uint64_t value_bytes = 0;
  const std::int64_t start = now_ns();
  for (std::uint32_t p = 0; p < o.partitions; ++p) {
    const std::string path = log_path(dir, p);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    std::size_t len = 0;     // bytes in buf not decoded yet
    std::uint64_t base = 0;  // file position of buf[0]
    for (;;) {
      if (len == buf.size()) buf.resize(buf.size() * 2);  // a record larger than the buffer
      const ssize_t n = ::read(fd, buf.data() + len, buf.size() - len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        throw std::runtime_error("read of " + path + ": " + std::strerror(err));
      }
      if (n == 0) break;
      res.bytes += static_cast<std::uint64_t>(n);
      if (!decode) continue;
      len += static_cast<std::size_t>(n);
      std::size_t at = 0;
      for (;;) {
        const io::DecodeResult r =
            io::decode({buf.data() + at, len - at}, base + at, io::OffsetCheck::equals_position);
        if (r.status == io::DecodeStatus::need_more) break;
        if (r.status == io::DecodeStatus::corrupt) {
          ::close(fd);
          throw std::runtime_error(path + ": " + r.error);
        }
        ++res.records;
        value_bytes += r.record.value.size();
        at += r.size;
      }
      std::memmove(buf.data(), buf.data() + at, len - at);
      base += at;
      len -= at;
    }
    ::close(fd);
    if (decode && len != 0) {
      throw std::runtime_error(path + " ends in a partial record at byte offset " +
                               std::to_string(base));
    }
  }
  res.seconds = static_cast<double>(now_ns() - start) / 1e9;
  if (decode && (res.records != o.count || value_bytes != o.count * o.value_bytes)) {
    throw std::runtime_error("decoded " + std::to_string(res.records) + " records of " +
                             std::to_string(o.count) + " written");
  }
  return res;
}

// One consumer of the throughput part: takes every record of partition p, checking that
// each carries the next sequence number of its partition.
int ingest_consumer(IngestControl& ctl, const Options& o, const std::string& ns, std::uint32_t p) {
  ctl.waiting.fetch_add(1, std::memory_order_acq_rel);
  auto c = attach_when_ready(ctl.rv,
                             {.ns = ns, .partition = p, .group = kGroup, .mode = Mode::exclusive});
  if (!c) return 1;
  const std::uint64_t want = records_of(o, p);
  std::uint64_t expect = p;
  std::uint64_t taken = 0;
  int idle = 0;
  while (taken < want) {
    const Batch& b = c->pop(o.batch, std::chrono::seconds(1));
    if (b.status() == PopStatus::timed_out && ++idle < 10 &&
        ctl.rv.failed.load(std::memory_order_acquire) == 0) {
      continue;
    }
    if (b.status() != PopStatus::ok) {
      ctl.rv.fail("partition " + std::to_string(p) + ": pop: " + to_string(b.status()) + " after " +
                  std::to_string(taken) + " of " + std::to_string(want));
      return 1;
    }
    idle = 0;
    for (const Message& m : b) {
      if (m.value().size() != o.value_bytes || index_of(m.value()) != expect) {
        ctl.rv.fail("partition " + std::to_string(p) + ": message " + std::to_string(taken) +
                    " is record " + std::to_string(index_of(m.value())) + ", expected " +
                    std::to_string(expect));
        return 1;
      }
      expect += o.partitions;
    }
    if (c->ack(b) != AckStatus::ok) {
      ctl.rv.fail("partition " + std::to_string(p) + ": ack refused a batch just popped");
      return 1;
    }
    taken += b.size();
    ctl.c[p].taken.store(taken, std::memory_order_release);
  }
  ctl.c[p].last_ns.store(now_ns(), std::memory_order_release);
  return 0;
}

struct IngestRun {
  double seconds = 0;        // Fetcher::start to the last ack
  double start_seconds = 0;  // Fetcher::start itself
  double fetcher_cpu = 0;    // CPU seconds of the fetcher process, over its life
  double consumers_cpu = 0;  // of all consumer processes
};

void remove_checkpoints(const Options& o, const std::string& dir) {
  for (std::uint32_t p = 0; p < o.partitions; ++p) {
    ::unlink((dir + "/" + std::to_string(p) + ".checkpoint").c_str());
  }
}

// The fetcher's source alone, in this process: every record of the logs through
// io::Source::poll_batches into a sink that keeps nothing (from offset 0: no checkpoints).
ReadResult source_alone(const Options& o, const std::string& dir) {
  struct Drop final : io::BatchSink {
    std::uint64_t records = 0;
    std::uint64_t value_bytes = 0;
    std::size_t take(std::uint32_t, std::span<const io::SourceRecord> batch) override {
      records += batch.size();
      for (const io::SourceRecord& r : batch) value_bytes += r.value.size();
      return batch.size();
    }
  } sink;
  remove_checkpoints(o, dir);
  auto s = io::open_local_log(dir, {.partitions = static_cast<std::uint32_t>(o.partitions)},
                              "file:" + dir);
  if (!s) throw std::runtime_error("source alone: " + s.error().message);
  ReadResult res;
  const std::int64_t start = now_ns();
  while (sink.records < o.count) {
    auto polled = (*s)->poll_batches(sink, std::chrono::seconds(1));
    if (!polled) throw std::runtime_error("source alone: " + polled.error().message);
    if (*polled == 0 && now_ns() - start > 60'000'000'000) {
      throw std::runtime_error("source alone: " + std::to_string(sink.records) + " of " +
                               std::to_string(o.count) + " records in 60 s");
    }
  }
  res.seconds = static_cast<double>(now_ns() - start) / 1e9;
  res.records = sink.records;
  if (sink.records != o.count || sink.value_bytes != o.count * o.value_bytes) {
    throw std::runtime_error("source alone: " + std::to_string(sink.records) + " records of " +
                             std::to_string(o.count) + " written");
  }
  return res;
}

// The ringfeed throughput measurement of one run; false after a failure (in ctl.rv).
bool ingest_run(const Options& o, const std::string& dir, const std::string& ns,
                std::uint64_t ring_mb, IngestControl& ctl, IngestRun& out) {
  remove_checkpoints(o, dir);  // a fetcher resumes at its checkpoints: start from 0
  const auto parts = static_cast<std::uint32_t>(o.partitions);
  watch_fetcher_segments(ns, parts);
  bool ok = true;
  {
    Children kids(ctl.rv);
    std::vector<pid_t> consumers;
    for (std::uint32_t p = 0; p < parts && ok; ++p) {
      consumers.push_back(kids.spawn("consumer of partition " + std::to_string(p),
                                     o.pin ? 1 : kAnyCpu,
                                     [&, p] { return ingest_consumer(ctl, o, ns, p); }));
      ok = consumers.back() > 0;
    }
    ok = ok && wait_until(ctl.rv, kids, 10, "the consumers to start",
                          [&] { return ctl.waiting.load() == parts; });
    const FetcherOptions fetcher_options{
        .ns = ns, .source = "file:" + dir, .partitions = parts, .ring_bytes = ring_mb << 20};
    const pid_t fetcher =
        ok ? kids.spawn("fetcher", o.pin ? 0 : kAnyCpu,
                        [&] { return fetcher_process(ctl.rv, ctl.fetcher, fetcher_options); })
           : -1;
    ok = ok && fetcher > 0;
    // Generous: below 0.1 M records a second something is wrong.
    const double limit = 30 + static_cast<double>(o.count) / 1e5;
    ok = ok && wait_until(ctl.rv, kids, limit, "the consumers to take every record", [&] {
           std::uint64_t sum = 0;
           for (std::uint32_t p = 0; p < parts; ++p) sum += ctl.c[p].last_ns.load() != 0 ? 1 : 0;
           return sum == parts;
         });
    ctl.fetcher.stop.store(true, std::memory_order_release);
    if (!ok) kids.kill_all();
    ok = kids.wait_all(10) && ok;
    out.fetcher_cpu = kids.cpu_seconds(fetcher);
    for (const pid_t pid : consumers) out.consumers_cpu += kids.cpu_seconds(pid);
  }
  remove_namespace(ns);
  unwatch_segments();
  if (!ok) return false;
  if (ctl.fetcher.fetched.load() != o.count) {
    ctl.rv.fail("the fetcher published " + std::to_string(ctl.fetcher.fetched.load()) +
                " messages of " + std::to_string(o.count));
    return false;
  }
  std::int64_t end = 0;
  for (std::uint32_t p = 0; p < parts; ++p) end = std::max(end, ctl.c[p].last_ns.load());
  out.seconds = static_cast<double>(end - ctl.fetcher.start_ns.load()) / 1e9;
  out.start_seconds =
      static_cast<double>(ctl.fetcher.started_ns.load() - ctl.fetcher.start_ns.load()) / 1e9;
  return true;
}

// --- latency --------------------------------------------------------------------------

std::uint64_t latency_records(const Options& o) {
  return o.warmup + o.rate * o.seconds;
}

// Appends latency_records() records to DIR/0.log, one every 1/rate s on an absolute
// schedule (one that falls behind catches up at once), each stamped just before its
// append.
int producer_process(IngestControl& ctl, const Options& o, const std::string& dir) {
  ::prctl(PR_SET_TIMERSLACK, 1UL);
  auto a = io::LogAppender::open(log_path(dir, 0));
  if (!a) {
    ctl.rv.fail("producer: " + a.error().message);
    return 1;
  }
  std::vector<char> value(o.value_bytes, 'v');
  const std::uint64_t n = latency_records(o);
  const std::int64_t interval = 1'000'000'000 / static_cast<std::int64_t>(o.rate);
  const std::int64_t start = now_ns() + 1'000'000;
  std::uint64_t late = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::int64_t at = start + static_cast<std::int64_t>(i) * interval;
    const timespec ts{static_cast<time_t>(at / 1'000'000'000),
                      static_cast<long>(at % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
    if (now_ns() - at > 100'000) ++late;
    put_index(value.data(), i);
    io::RecordView r;
    r.value = {value.data(), value.size()};
    r.timestamp_ns = realtime_ns();
    auto done = a->append({&r, 1});
    if (!done) {
      ctl.rv.fail("producer: " + done.error().message);
      return 1;
    }
    if (ctl.rv.failed.load(std::memory_order_relaxed) != 0) return 1;
  }
  ctl.late.store(late, std::memory_order_release);
  return 0;
}

// Records the latency of record i (its index in the value) at reader time `now`.
bool record_latency(IngestControl& ctl, const Options& o, std::string_view value, std::int64_t ts,
                    std::int64_t now, std::uint64_t& expect) {
  if (value.size() != o.value_bytes || index_of(value) != expect) {
    ctl.rv.fail("latency: got record " + std::to_string(index_of(value)) + ", expected " +
                std::to_string(expect));
    return false;
  }
  if (expect++ >= o.warmup) ctl.hist.record(now > ts ? static_cast<std::uint64_t>(now - ts) : 0);
  return true;
}

// The plain tail: blocked in read(2) on an inotify descriptor that watches DIR/0.log;
// after each wake-up reads the file to its end and decodes what is whole.
int plain_tail_process(IngestControl& ctl, const Options& o, const std::string& dir) {
  const std::string path = log_path(dir, 0);
  const int in = ::inotify_init1(IN_CLOEXEC);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0 || fd < 0 || ::inotify_add_watch(in, path.c_str(), IN_MODIFY) < 0) {
    ctl.rv.fail("plain tail: inotify or open of " + path + ": " + std::strerror(errno));
    return 1;
  }
  ctl.ready.store(1, std::memory_order_release);
  const std::uint64_t want = latency_records(o);
  std::vector<std::byte> buf(kReadBuffer);
  alignas(inotify_event) char events[4096];
  std::size_t len = 0;
  std::uint64_t base = 0;
  std::uint64_t expect = 0;
  while (expect < want) {
    pollfd pfd{in, POLLIN, 0};
    const int pr = ::poll(&pfd, 1, 1000);
    if (pr == 0) {
      if (ctl.rv.failed.load() != 0) return 1;
      continue;
    }
    if (::read(in, events, sizeof events) < 0 && errno != EINTR) {
      ctl.rv.fail(std::string("plain tail: read of the inotify descriptor: ") +
                  std::strerror(errno));
      return 1;
    }
    for (;;) {
      if (len == buf.size()) buf.resize(buf.size() * 2);
      const ssize_t n = ::read(fd, buf.data() + len, buf.size() - len);
      const std::int64_t now = realtime_ns();
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ctl.rv.fail("plain tail: read of " + path + ": " + std::strerror(errno));
        return 1;
      }
      if (n == 0) break;
      len += static_cast<std::size_t>(n);
      std::size_t at = 0;
      for (;;) {
        const io::DecodeResult r =
            io::decode({buf.data() + at, len - at}, base + at, io::OffsetCheck::equals_position);
        if (r.status == io::DecodeStatus::need_more) break;
        if (r.status == io::DecodeStatus::corrupt) {
          ctl.rv.fail("plain tail: " + r.error);
          return 1;
        }
        if (!record_latency(ctl, o, r.record.value, r.record.timestamp_ns, now, expect)) return 1;
        at += r.size;
      }
      std::memmove(buf.data(), buf.data() + at, len - at);
      base += at;
      len -= at;
    }
  }
  ::close(fd);
  ::close(in);
  ctl.done.store(1, std::memory_order_release);
  return 0;
}

// The ringfeed reader: one exclusive consumer on partition 0.
int latency_consumer(IngestControl& ctl, const Options& o, const std::string& ns) {
  auto c = attach_when_ready(ctl.rv, {.ns = ns,
                                      .partition = 0,
                                      .group = kGroup,
                                      .mode = Mode::exclusive,
                                      .spin = std::chrono::microseconds(o.spin_us)});
  if (!c) return 1;
  ctl.ready.store(1, std::memory_order_release);
  const std::uint64_t want = latency_records(o);
  std::uint64_t expect = 0;
  int idle = 0;
  while (expect < want) {
    const Batch& b = c->pop(64, std::chrono::seconds(1));
    const std::int64_t now = realtime_ns();
    if (b.status() == PopStatus::timed_out && ++idle < 10 && ctl.rv.failed.load() == 0) continue;
    if (b.status() != PopStatus::ok) {
      ctl.rv.fail("latency consumer: pop: " + std::string(to_string(b.status())) + " after " +
                  std::to_string(expect) + " records");
      return 1;
    }
    idle = 0;
    for (const Message& m : b) {
      if (!record_latency(ctl, o, m.value(), m.timestamp_ns(), now, expect)) return 1;
    }
    if (c->ack(b) != AckStatus::ok) {
      ctl.rv.fail("latency consumer: ack refused a batch just popped");
      return 1;
    }
  }
  ctl.done.store(1, std::memory_order_release);
  return 0;
}

enum LatencyVariant { kPlainTail, kRingfeed, kLatencyVariants };
constexpr const char* kLatencyNames[kLatencyVariants] = {"plain tail (inotify + read)",
                                                         "ringfeed (fetcher + consumer)"};

// One latency variant in a fresh directory; false after a failure (in ctl.rv).
bool latency_run(const Options& o, const std::string& dir, const std::string& ns, LatencyVariant v,
                 IngestControl& ctl) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    ctl.rv.fail("cannot create " + dir + ": " + ec.message());
    return false;
  }
  {
    auto a = io::LogAppender::open(log_path(dir, 0));  // the file exists before any reader
    if (!a) {
      ctl.rv.fail(a.error().message);
      return false;
    }
  }
  if (v == kRingfeed) watch_fetcher_segments(ns, 1);
  bool ok = true;
  {
    Children kids(ctl.rv);
    if (v == kPlainTail) {
      ok = kids.spawn("plain tail", kAnyCpu, [&] { return plain_tail_process(ctl, o, dir); }) > 0;
    } else {
      ok = kids.spawn("latency consumer", kAnyCpu, [&] { return latency_consumer(ctl, o, ns); }) >
               0 &&
           kids.spawn("fetcher", kAnyCpu, [&] {
             return fetcher_process(ctl.rv, ctl.fetcher,
                                    {.ns = ns,
                                     .source = "file:" + dir,
                                     .partitions = 1,
                                     .ring_bytes = o.ring_mb.front() << 20});
           }) > 0;
    }
    ok = ok && wait_until(ctl.rv, kids, 10, "the reader to be ready",
                          [&] { return ctl.ready.load() != 0; });
    ok = ok && kids.spawn("producer", kAnyCpu, [&] { return producer_process(ctl, o, dir); }) > 0;
    const double limit =
        30 + 3.0 * static_cast<double>(latency_records(o)) / static_cast<double>(o.rate);
    ok = ok && wait_until(ctl.rv, kids, limit, "every record to reach the reader",
                          [&] { return ctl.done.load() != 0; });
    ctl.fetcher.stop.store(true, std::memory_order_release);
    if (!ok) kids.kill_all();
    ok = kids.wait_all(10) && ok;
  }
  if (v == kRingfeed) {
    remove_namespace(ns);
    unwatch_segments();
  }
  std::filesystem::remove_all(dir, ec);
  return ok;
}

// --- report ---------------------------------------------------------------------------

constexpr double kQuantiles[] = {0.5, 0.9, 0.99, 0.999};
constexpr const char* kFigureNames[] = {"p50", "p90", "p99", "p99.9", "max"};
constexpr int kFigures = 5;

double value_of(const Histogram& h, int f) {
  return static_cast<double>(f < 4 ? h.percentile(kQuantiles[f]) : h.max());
}
std::string figure(int v, int f) {
  return std::string(kLatencyNames[v]) + " " + kFigureNames[f];
}

std::string mb_rate(double bytes, double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MB/s", bytes / seconds / 1e6);
  return buf;
}

Options parse(ArgReader& args) {
  Options o;
  constexpr std::uint64_t kBig = 1'000'000'000;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    std::string_view dir;
    std::string_view rings;
    if (args.text("--ring-mb", rings)) {
      o.ring_mb.clear();
      std::size_t at = 0;
      while (at <= rings.size()) {
        const std::size_t comma = std::min(rings.find(',', at), rings.size());
        const std::string_view item = rings.substr(at, comma - at);
        std::uint64_t mb = 0;
        const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), mb);
        if (ec != std::errc() || end != item.data() + item.size() || mb == 0 || mb > (1 << 16) ||
            (mb & (mb - 1)) != 0) {
          throw UsageError("--ring-mb: '" + std::string(item) +
                           "' is not a power of two between 1 and 65536");
        }
        o.ring_mb.push_back(mb);
        at = comma + 1;
      }
    } else if (args.flag("--no-pin")) {
      o.pin = false;
    } else if (args.flag("--no-latency")) {
      o.latency = false;
    } else if (args.text("--dir", dir)) {
      o.dir = std::string(dir);
    } else if (args.number("--runs", 1, 1000, o.runs) || args.number("--count", 1, kBig, o.count) ||
               args.number("--value-bytes", 8, 1 << 20, o.value_bytes) ||
               args.number("--partitions", 1, kMaxParts, o.partitions) ||
               args.number("--batch", 1, 1000, o.batch) ||
               args.number("--rate", 1, 1'000'000, o.rate) ||
               args.number("--seconds", 1, 600, o.seconds) ||
               args.number("--warmup", 0, kBig, o.warmup) ||
               args.number("--spin-us", 0, 10'000'000, o.spin_us) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  if (o.ring_mb.empty()) o.ring_mb = {64, 4};
  return o;
}

}  // namespace

int ingest_main(ArgReader& args) {
  const Options o = parse(args);
  std::printf("ringfeed-bench ingest on %s\n", machine_description().c_str());
  WorkDir dir(o.dir, "ringfeed-bench-ingest");
  const std::string logs = dir.path() + "/logs";
  std::filesystem::create_directories(logs);

  std::int64_t t = now_ns();
  const std::uint64_t bytes = write_logs(o, logs);
  const double write_s = static_cast<double>(now_ns() - t) / 1e9;
  std::uint64_t on_disk = 0;
  for (std::uint32_t p = 0; p < o.partitions; ++p) on_disk += file_size(log_path(logs, p));
  if (on_disk != bytes) {
    throw std::runtime_error("the logs hold " + std::to_string(on_disk) + " bytes, " +
                             std::to_string(bytes) + " written");
  }
  read_logs(o, logs, false);  // unmeasured: every page is in the page cache
  std::printf(
      "%llu records, %llu-byte values, %llu partitions: %.1f MB of log in %s, written in %.2f s "
      "(with fsync)\n",
      static_cast<unsigned long long>(o.count), static_cast<unsigned long long>(o.value_bytes),
      static_cast<unsigned long long>(o.partitions), static_cast<double>(bytes) / 1e6, logs.c_str(),
      write_s);
  std::string rings;
  for (const std::uint64_t mb : o.ring_mb) {
    rings += (rings.empty() ? "" : ", ") + std::to_string(mb) + " MiB";
  }
  std::printf(
      "warm page cache (nothing is dropped from it between runs); a fresh fetcher and fresh "
      "rings of %s each run; pop batch %llu\n",
      rings.c_str(), static_cast<unsigned long long>(o.batch));
  std::printf("%s\n", o.pin ? "throughput: this process and the fetcher pinned to cpu 0, the "
                              "consumers to cpu 1"
                            : "throughput: not pinned (--no-pin)");
  if (o.latency) {
    std::printf(
        "latency: %llu records/s, %llu s recorded per variant after %llu warm-up records, "
        "consumer spin %llu us, rings %llu MiB, not pinned; CLOCK_REALTIME at the reader - the "
        "producer's CLOCK_REALTIME stamp just before its append (includes the inotify wake-up "
        "path)\n",
        static_cast<unsigned long long>(o.rate), static_cast<unsigned long long>(o.seconds),
        static_cast<unsigned long long>(o.warmup), static_cast<unsigned long long>(o.spin_us),
        static_cast<unsigned long long>(o.ring_mb.front()));
  }
  if (o.pin) pin_to_cpu(0, 0);

  auto ringfeed_name = [](std::uint64_t mb) {
    return "ringfeed, " + std::to_string(mb) + " MiB rings";
  };
  const auto watchdog = static_cast<unsigned>(120 + 4 * o.ring_mb.size() * o.count / 100'000 +
                                              (o.latency ? 6 * latency_records(o) / o.rate : 0));
  Figures fig;
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    const ReadResult plain = read_logs(o, logs, false);
    const ReadResult decoded = read_logs(o, logs, true);
    const ReadResult source = source_alone(o, logs);
    std::vector<IngestRun> ing(o.ring_mb.size());
    for (std::size_t r = 0; r < o.ring_mb.size(); ++r) {
      SharedObject<IngestControl> ctl;
      if (!ingest_run(o, logs, run_namespace("ing", run * 10 + r), o.ring_mb[r], *ctl, ing[r])) {
        std::fprintf(stderr, "ringfeed-bench ingest: run %llu, %s: %s\n",
                     static_cast<unsigned long long>(run), ringfeed_name(o.ring_mb[r]).c_str(),
                     ctl->rv.error_message().c_str());
        return 1;
      }
    }
    Histogram hist[kLatencyVariants];
    std::uint64_t late[kLatencyVariants] = {};
    if (o.latency) {
      for (int v = 0; v < kLatencyVariants; ++v) {
        SharedObject<IngestControl> ctl;
        if (!latency_run(o, dir.path() + "/lat", run_namespace("inl", run * 10 + v),
                         static_cast<LatencyVariant>(v), *ctl)) {
          std::fprintf(stderr, "ringfeed-bench ingest: run %llu, latency of %s: %s\n",
                       static_cast<unsigned long long>(run), kLatencyNames[v],
                       ctl->rv.error_message().c_str());
          return 1;
        }
        hist[v] = ctl->hist;
        late[v] = ctl->late.load();
      }
    }
    disarm_watchdog();
    const double others = others_share(before, sample_cpu());

    const double b = static_cast<double>(bytes);
    const double n = static_cast<double>(o.count);
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs),
                run_note(o.pin ? "pinned" : "not pinned", idle, others).c_str());
    std::printf("  %-34s %11s %12s\n", "plain read (read(2), 1 MiB)",
                mb_rate(b, plain.seconds).c_str(), format_rate(n / plain.seconds).c_str());
    std::printf("  %-34s %11s %12s  / plain read %.3f\n", "read + io::decode",
                mb_rate(b, decoded.seconds).c_str(), format_rate(n / decoded.seconds).c_str(),
                plain.seconds / decoded.seconds);
    std::printf("  %-34s %11s %12s  / plain read %.3f\n", "local-log source alone",
                mb_rate(b, source.seconds).c_str(), format_rate(n / source.seconds).c_str(),
                plain.seconds / source.seconds);
    fig.add("plain MB/s", b / plain.seconds / 1e6);
    fig.add("decode MB/s", b / decoded.seconds / 1e6);
    fig.add("decode / plain", plain.seconds / decoded.seconds);
    fig.add("source MB/s", b / source.seconds / 1e6);
    fig.add("source / plain", plain.seconds / source.seconds);
    for (std::size_t r = 0; r < o.ring_mb.size(); ++r) {
      const IngestRun& g = ing[r];
      const std::string name = ringfeed_name(o.ring_mb[r]);
      std::printf("  %-34s %11s %12s  / plain read %.3f  / read + decode %.3f\n", name.c_str(),
                  mb_rate(b, g.seconds).c_str(), format_rate(n / g.seconds).c_str(),
                  plain.seconds / g.seconds, decoded.seconds / g.seconds);
      std::printf("  %-34s start() %.1f ms; cpu: fetcher %.2f s, consumers %.2f s, in %.2f s\n", "",
                  g.start_seconds * 1e3, g.fetcher_cpu, g.consumers_cpu, g.seconds);
      fig.add(name + " MB/s", b / g.seconds / 1e6);
      fig.add(name + " / plain", plain.seconds / g.seconds);
      fig.add(name + " / decode", decoded.seconds / g.seconds);
      fig.add(name + " start ms", g.start_seconds * 1e3);
      fig.add(name + " fetcher cpu", g.fetcher_cpu / g.seconds);
      fig.add(name + " consumers cpu", g.consumers_cpu / g.seconds);
    }
    if (o.latency) {
      for (int v = 0; v < kLatencyVariants; ++v) {
        std::printf("  latency, %-29s %s\n", kLatencyNames[v], hist[v].summary().c_str());
        if (late[v] != 0) {
          std::printf("  %-38s (the producer appended %llu records more than 100 us late)\n", "",
                      static_cast<unsigned long long>(late[v]));
        }
        for (int f = 0; f < kFigures; ++f) fig.add(figure(v, f), value_of(hist[v], f));
      }
    }
    std::fflush(stdout);
  }

  const double per_record = static_cast<double>(bytes) / static_cast<double>(o.count);
  auto records_per_s = [&](double mb_per_s) { return format_rate(mb_per_s * 1e6 / per_record); };
  std::printf("\nmedians of %llu runs (ratios: median of the per-run ratios)\n",
              static_cast<unsigned long long>(o.runs));
  std::printf("  %-34s %8.0f MB/s %12s\n", "plain read (read(2), 1 MiB)", fig.median("plain MB/s"),
              records_per_s(fig.median("plain MB/s")).c_str());
  std::printf("  %-34s %8.0f MB/s %12s  / plain read %.3f\n", "read + io::decode",
              fig.median("decode MB/s"), records_per_s(fig.median("decode MB/s")).c_str(),
              fig.median("decode / plain"));
  std::printf("  %-34s %8.0f MB/s %12s  / plain read %.3f\n", "local-log source alone",
              fig.median("source MB/s"), records_per_s(fig.median("source MB/s")).c_str(),
              fig.median("source / plain"));
  for (const std::uint64_t mb : o.ring_mb) {
    const std::string name = ringfeed_name(mb);
    std::printf("  %-34s %8.0f MB/s %12s  / plain read %.3f  / read + decode %.3f\n", name.c_str(),
                fig.median(name + " MB/s"), records_per_s(fig.median(name + " MB/s")).c_str(),
                fig.median(name + " / plain"), fig.median(name + " / decode"));
    std::printf(
        "  %-34s start() %.1f ms (inside the time); cpu over the time: fetcher %.0f%%, "
        "consumers %.0f%% of one cpu\n",
        "", fig.median(name + " start ms"), 100 * fig.median(name + " fetcher cpu"),
        100 * fig.median(name + " consumers cpu"));
  }
  if (o.latency) {
    std::printf("\nlatency, medians of %llu runs %9s", static_cast<unsigned long long>(o.runs), "");
    for (const char* name : kFigureNames) std::printf(" %9s", name);
    std::printf("\n");
    for (int v = 0; v < kLatencyVariants; ++v) {
      std::printf("  %-36s", kLatencyNames[v]);
      for (int f = 0; f < kFigures; ++f) {
        std::printf(" %9s", format_ns(fig.median(figure(v, f))).c_str());
      }
      std::printf("\n");
    }
    std::printf("  %-36s", "ringfeed / plain tail");
    for (int f = 0; f < kFigures; ++f) {
      const double den = fig.median(figure(kPlainTail, f));
      std::printf(" %9.2f", den > 0 ? fig.median(figure(kRingfeed, f)) / den : 0.0);
    }
    std::printf("\n");
  }
  std::printf("\ntarget (medians)\n");
  for (const std::uint64_t mb : o.ring_mb) {
    const double ratio = fig.median(ringfeed_name(mb) + " / plain");
    std::printf("  ingest at least 50%% of the plain sequential read, %llu MiB rings: %.1f%% %s\n",
                static_cast<unsigned long long>(mb), 100 * ratio, ratio >= 0.5 ? "met" : "NOT met");
  }
  return 0;
}

}  // namespace ringfeed::bench
