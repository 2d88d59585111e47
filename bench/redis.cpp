// ringfeed-bench redis: consumers of a Redis stream. N local workers through ringfeed (a
// fetcher reading the stream with the Redis Streams source into a ring, the workers
// popping from it in a shared group) against N workers that each read the stream
// directly with hiredis, XREADGROUP ... COUNT c BLOCK ms and one XACK per batch, as users
// do today. Throughput from a backlog, XADD-to-worker latency at a fixed rate, and the
// redis-server CPU time each costs per million messages; a fresh redis-server per run.
#include <hiredis/hiredis.h>
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "children.hpp"
#include "commands.hpp"
#include "harness.hpp"
#include "io/source.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/histogram.hpp"
#include "ringfeed_steps.hpp"
#include "tests/support/redis_server.hpp"
#include "upstream_report.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench redis [flags]

Consumers of a Redis stream, on a fresh redis-server per run (/usr/bin/redis-server on
127.0.0.1, no persistence), N = each of --workers worker processes per variant:
  direct     N workers, each with its own hiredis connection and consumer name in one
             Redis consumer group, looping on XREADGROUP GROUP g wI COUNT c BLOCK
             --block-ms STREAMS s > and one XACK of the whole batch, for c = each of
             --read-counts: what users do today
  ringfeed   a fetcher process (ringfeed::Fetcher on
             redis://127.0.0.1:PORT?streams=s&group=g, one ring of --ring-mb MiB) and N
             workers attached to the ring as a shared group (ringfeed::Consumer, pop of
             up to --pop-batch messages, then ack of the batch). If io::open_source
             refuses the redis:// URI (the source is not in this build), the ringfeed
             variant is skipped with the reason and the direct variants go on.
Each run measures:
  throughput  one stream pre-filled with --count messages (a field 'value' of
              --value-bytes bytes; XADD pipelined through hiredis); each variant reads it
              from the start in a consumer group of its own until every message is acked
              or --seconds passed. messages/s = messages acked / (start signal to the
              last ack): for direct, the start signal is given once every worker has
              connected; for ringfeed, once Fetcher::start returned (connected, ring
              created; its time is printed apart).
  latency     a producer process XADDs --rate messages per second (one XADD at a time, on
              an absolute schedule: one that falls behind catches up at once) to a fresh
              stream; each value starts with the send time (CLOCK_REALTIME ns, just before
              the XADD) and a sequence number, in decimal. A worker records CLOCK_REALTIME
              as it holds the message minus the send time. Entries carry the one field
              'value' for every variant: the Redis source hands an entry with any other
              field over as a JSON object of its fields, so a separate time field would
              change what ringfeed's workers get. --latency-seconds of messages are
              recorded after --warmup unrecorded ones. The producer's achieved rate and
              its XADDs sent more than 100 us behind schedule are printed.
  redis CPU   used_cpu_sys + used_cpu_user from INFO cpu, before and after each variant
              (the workers' and fetcher's exits included), per million messages acked.
Nothing is pinned: redis-server, the producer, the fetcher and the workers share the
cpus. Figures per run, then medians of --runs runs and ratios of medians, ringfeed
against each direct variant with the same N.

flags:
  --runs K              runs (default 3); medians are taken over them
  --count N             backlog messages of the throughput part (default 1000000)
  --seconds S           throughput: most seconds per variant (default 2)
  --value-bytes B       value size, at least 32 (default 100)
  --workers LIST        worker counts N, comma-separated, each 1..16 (default 1,2,4)
  --read-counts LIST    direct: XREADGROUP COUNT values, comma-separated (default 1,10,100)
  --block-ms MS         direct: XREADGROUP BLOCK (default 100)
  --pop-batch B         ringfeed: most messages per pop (default 64)
  --ring-mb MB          ringfeed: ring size in MiB, a power of two (default 64)
  --spin-us U           ringfeed, latency part: ConsumerOptions::spin of the workers
                        (default 50)
  --throughput-spin-us U  ringfeed, throughput part: the same (default 0: N workers
                        that spin take the cpu the fetcher needs on a small machine; the
                        direct workers wait in the kernel too)
  --source-params P     ringfeed: more URI parameters, e.g. 'batch=500&block-ms=10'
  --rate R              latency: messages per second (default 5000)
  --latency-seconds S   latency: seconds of recorded messages per variant (default 2)
  --warmup W            latency: messages not recorded at the start (default 1000)
  --no-throughput       skip the throughput part
  --no-latency          skip the latency part
  --redis-server PATH   the redis-server binary (default /usr/bin/redis-server)
  --wait-idle S         before each run, wait up to S seconds for a second of idle cpus
  --help
)";

constexpr int kMaxWorkers = 16;
constexpr std::size_t kStampDigits = 20;  // the send time at the start of a latency value
constexpr std::size_t kSeqDigits = 12;    // then the sequence number
constexpr std::size_t kMinValueBytes = kStampDigits + kSeqDigits;
constexpr const char* kBacklogStream = "bench";

struct Options {
  std::uint64_t runs = 3;
  std::uint64_t count = 1'000'000;
  std::uint64_t seconds = 2;
  std::uint64_t value_bytes = 100;
  std::vector<std::uint64_t> workers{1, 2, 4};
  std::vector<std::uint64_t> read_counts{1, 10, 100};
  std::uint64_t block_ms = 100;
  std::uint64_t pop_batch = 64;
  std::uint64_t ring_mb = 64;
  std::uint64_t spin_us = 50;
  std::uint64_t throughput_spin_us = 0;
  std::string source_params;
  std::uint64_t rate = 5'000;
  std::uint64_t latency_seconds = 2;
  std::uint64_t warmup = 1'000;
  bool throughput = true;
  bool latency = true;
  std::string redis_binary = test::kRedisServerBinary;
  std::uint64_t wait_idle = 0;
};

enum class Kind { direct, ringfeed };

struct Variant {
  Kind kind = Kind::direct;
  int workers = 1;
  std::uint64_t read_count = 0;  // direct: XREADGROUP COUNT
  std::string name;
};

std::string variant_name(Kind kind, int workers, std::uint64_t read_count) {
  std::string n = (kind == Kind::direct ? "direct hiredis, " : "ringfeed, ") +
                  std::to_string(workers) + (workers == 1 ? " worker" : " workers");
  if (kind == Kind::direct) n += ", COUNT " + std::to_string(read_count);
  return n;
}

std::vector<Variant> variants_of(const Options& o) {
  std::vector<Variant> v;
  for (const std::uint64_t n : o.workers) {
    const int w = static_cast<int>(n);
    for (const std::uint64_t c : o.read_counts) {
      v.push_back({Kind::direct, w, c, variant_name(Kind::direct, w, c)});
    }
    v.push_back({Kind::ringfeed, w, 0, variant_name(Kind::ringfeed, w, 0)});
  }
  return v;
}

// --- shared state of one measurement ------------------------------------------------------

struct alignas(kLine) WorkerSlot {
  std::atomic<std::uint64_t> acked;        // messages this worker acked
  std::atomic<std::uint64_t> redelivered;  // ringfeed: messages popped with delivery_count > 1
  std::atomic<std::int64_t> last_ack_ns;   // CLOCK_MONOTONIC after its last ack
  Histogram hist;                          // latency: written by this worker only
};

struct Control {
  Rendezvous rv;                                     // only its failure slot is used
  alignas(kLine) std::atomic<std::uint32_t> ready;   // workers connected or attached
  alignas(kLine) std::atomic<std::uint32_t> go;      // direct throughput: start
  alignas(kLine) std::atomic<std::uint32_t> stop;    // workers: stop after this batch
  alignas(kLine) std::atomic<std::uint32_t> exited;  // workers out of their loop
  alignas(kLine) std::atomic<bool> stop_fetcher;     // the fetcher's run() flag
  alignas(kLine) std::atomic<std::uint64_t> acked;   // all workers
  alignas(kLine) std::atomic<std::int64_t> start_ns;
  std::atomic<std::int64_t> fetcher_start_ns;  // before Fetcher::start
  std::atomic<std::uint32_t> fetcher_started;  // Fetcher::start returned
  std::atomic<std::uint64_t> fetched;          // messages the fetcher published, at its end
  std::atomic<std::uint64_t> late;             // latency: XADDs sent >100 us behind schedule
  std::atomic<std::int64_t> produce_ns;        // latency: first scheduled XADD to the last reply
  WorkerSlot w[kMaxWorkers];
};

bool failed(const Control& ctl) {
  return ctl.rv.failed.load(std::memory_order_acquire) != 0;
}

// --- hiredis ---------------------------------------------------------------------------

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextFree>;
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

timeval timeval_of_ms(std::uint64_t ms) {
  return {static_cast<time_t>(ms / 1000), static_cast<suseconds_t>(ms % 1000 * 1000)};
}

Context hiredis_connect(std::uint16_t port, std::uint64_t timeout_ms) {
  Context c(redisConnectWithTimeout("127.0.0.1", port, timeval_of_ms(5000)));
  if (!c) throw std::runtime_error("hiredis: cannot allocate a context");
  if (c->err != 0) {
    throw std::runtime_error("hiredis: cannot connect to 127.0.0.1:" + std::to_string(port) + ": " +
                             c->errstr);
  }
  if (redisSetTimeout(c.get(), timeval_of_ms(timeout_ms)) != REDIS_OK) {
    throw std::runtime_error(std::string("hiredis: cannot set the timeout: ") + c->errstr);
  }
  return c;
}

std::string_view text_of(const redisReply* r) {
  return {r->str, r->len};
}

// Records the latency of one message of the latency part, whose value starts with its
// send time (ns) and sequence number in decimal; the first o.warmup are not recorded.
bool record_latency(Control& ctl, const Options& o, WorkerSlot& me, std::string_view value,
                    std::int64_t now, const char* who) {
  std::uint64_t ts = 0;
  std::uint64_t seq = 0;
  if (value.size() != o.value_bytes || !parse_decimal(value.substr(0, kStampDigits), ts) ||
      !parse_decimal(value.substr(kStampDigits, kSeqDigits), seq)) {
    ctl.rv.fail(std::string(who) + ": a message without a valid send time or sequence number");
    return false;
  }
  if (seq >= o.warmup) {
    const auto sent = static_cast<std::int64_t>(ts);
    me.hist.record(now > sent ? static_cast<std::uint64_t>(now - sent) : 0);
  }
  return true;
}

// --- the direct workers ------------------------------------------------------------------

// One direct worker: XREADGROUP GROUP `group` w<index> COUNT c BLOCK ms STREAMS `stream` >,
// then one XACK of every id it got, until ctl.stop. Throughput workers wait for ctl.go
// after connecting.
int direct_worker(Control& ctl, const Options& o, std::uint16_t port, const std::string& stream,
                  const std::string& group, int index, std::uint64_t read_count, bool latency) {
  const std::string who = "direct worker " + std::to_string(index);
  Context c = hiredis_connect(port, o.block_ms + 10'000);
  const std::string name = "w" + std::to_string(index);
  const std::string count = std::to_string(read_count);
  const std::string block = std::to_string(o.block_ms);
  const std::string_view args[] = {"XREADGROUP", "GROUP", group,     name,   "COUNT", count,
                                   "BLOCK",      block,   "STREAMS", stream, ">"};
  constexpr int kArgs = sizeof args / sizeof args[0];
  const char* argv[kArgs];
  std::size_t argl[kArgs];
  for (int i = 0; i < kArgs; ++i) {
    argv[i] = args[i].data();
    argl[i] = args[i].size();
  }
  std::vector<const char*> ack{"XACK", stream.c_str(), group.c_str()};
  std::vector<std::size_t> ackl{4, stream.size(), group.size()};
  WorkerSlot& me = ctl.w[index];
  ctl.ready.fetch_add(1, std::memory_order_acq_rel);
  if (!latency) {
    while (ctl.go.load(std::memory_order_acquire) == 0) {
      if (failed(ctl) || ctl.stop.load(std::memory_order_acquire) != 0) return 1;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  auto bad = [&](const std::string& what) {
    ctl.rv.fail(who + ": " + what);
    return 1;
  };
  std::uint64_t acked = 0;
  while (ctl.stop.load(std::memory_order_acquire) == 0 && !failed(ctl)) {
    Reply r(static_cast<redisReply*>(redisCommandArgv(c.get(), kArgs, argv, argl)));
    const std::int64_t now = latency ? realtime_ns() : 0;
    if (!r) return bad(std::string("XREADGROUP: ") + c->errstr);
    if (r->type == REDIS_REPLY_NIL) continue;  // BLOCK timed out
    if (r->type == REDIS_REPLY_ERROR) return bad("XREADGROUP: " + std::string(text_of(r.get())));
    // [[stream, [[id, [field, value, ...]], ...]]]
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2 ||
        r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
      return bad("XREADGROUP: a reply not shaped [[stream, [entries]]]");
    }
    const redisReply* entries = r->element[0]->element[1];
    ack.resize(3);
    ackl.resize(3);
    for (std::size_t i = 0; i < entries->elements; ++i) {
      const redisReply* e = entries->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
          e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY ||
          e->element[1]->elements % 2 != 0) {
        return bad("XREADGROUP: an entry not shaped [id, [field, value, ...]]");
      }
      std::string_view value;
      const redisReply* fields = e->element[1];
      for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
        if (text_of(fields->element[f]) == "value") value = text_of(fields->element[f + 1]);
      }
      if (value.size() != o.value_bytes) {
        return bad("entry " + std::string(text_of(e->element[0])) + " has a value of " +
                   std::to_string(value.size()) + " bytes, expected " +
                   std::to_string(o.value_bytes));
      }
      if (latency && !record_latency(ctl, o, me, value, now, who.c_str())) return 1;
      ack.push_back(e->element[0]->str);
      ackl.push_back(e->element[0]->len);
    }
    const std::size_t n = entries->elements;
    if (n == 0) continue;
    Reply a(static_cast<redisReply*>(
        redisCommandArgv(c.get(), static_cast<int>(ack.size()), ack.data(), ackl.data())));
    if (!a) return bad(std::string("XACK: ") + c->errstr);
    if (a->type != REDIS_REPLY_INTEGER || a->integer != static_cast<long long>(n)) {
      return bad("XACK of " + std::to_string(n) + " ids did not reply with " + std::to_string(n));
    }
    acked += n;
    me.acked.store(acked, std::memory_order_release);
    me.last_ack_ns.store(now_ns(), std::memory_order_release);
    ctl.acked.fetch_add(n, std::memory_order_acq_rel);
  }
  ctl.exited.fetch_add(1, std::memory_order_acq_rel);
  return failed(ctl) ? 1 : 0;
}

// --- the ringfeed side ---------------------------------------------------------------------

std::string source_uri(const Options& o, std::uint16_t port, const std::string& stream,
                       const std::string& group) {
  std::string uri =
      "redis://127.0.0.1:" + std::to_string(port) + "?streams=" + stream + "&group=" + group;
  if (!o.source_params.empty()) uri += "&" + o.source_params;
  return uri;
}

// The fetcher process: Fetcher::start on the Redis source, then run until stop_fetcher.
int fetcher_process(Control& ctl, const Options& o, const std::string& ns, const std::string& uri,
                    const std::string& dead_letters) {
  ctl.fetcher_start_ns.store(now_ns(), std::memory_order_release);
  auto f = Fetcher::start({.ns = ns,
                           .source = uri,
                           .partitions = 1,
                           .ring_bytes = o.ring_mb << 20,
                           .dead_letter_dir = dead_letters});
  if (!f) {
    ctl.rv.fail("Fetcher::start on " + uri + ": " + f.error().message);
    return 1;
  }
  ctl.start_ns.store(now_ns(), std::memory_order_release);
  ctl.fetcher_started.store(1, std::memory_order_release);
  return run_fetcher(ctl.rv, **f, ctl.stop_fetcher, ctl.fetched);
}

// One ringfeed worker: attaches to the ring once the fetcher created it, then pops and
// acks until ctl.stop.
int ringfeed_worker(Control& ctl, const Options& o, const std::string& ns, int index,
                    bool latency) {
  const std::string who = "ringfeed worker " + std::to_string(index);
  const ConsumerOptions options{
      .ns = ns,
      .partition = 0,
      .group = kGroup,
      .mode = Mode::shared,
      .spin = std::chrono::microseconds(latency ? o.spin_us : o.throughput_spin_us)};
  std::unique_ptr<Consumer> c;
  const std::int64_t deadline = now_ns() + 30'000'000'000;
  for (;;) {
    auto a = Consumer::attach(options);
    if (a) {
      c = std::move(a.value());
      break;
    }
    if (failed(ctl)) return 1;
    if (now_ns() > deadline) {
      ctl.rv.fail(who + ": attaching for 30 s: " + a.error().message);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  WorkerSlot& me = ctl.w[index];
  ctl.ready.fetch_add(1, std::memory_order_acq_rel);
  std::uint64_t acked = 0;
  std::uint64_t redelivered = 0;
  while (ctl.stop.load(std::memory_order_acquire) == 0 && !failed(ctl)) {
    const Batch& b = c->pop(o.pop_batch, std::chrono::milliseconds(100));
    const std::int64_t now = latency ? realtime_ns() : 0;
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      ctl.rv.fail(who + ": pop: " + to_string(b.status()) + " after " + std::to_string(acked) +
                  " messages");
      return 1;
    }
    for (const Message& m : b) {
      if (m.value().size() != o.value_bytes) {
        ctl.rv.fail(who + ": the message at offset " + std::to_string(m.offset()) + " has " +
                    std::to_string(m.value().size()) + " bytes, expected " +
                    std::to_string(o.value_bytes));
        return 1;
      }
      if (m.delivery_count() > 1) ++redelivered;
      if (latency && !record_latency(ctl, o, me, m.value(), now, who.c_str())) return 1;
    }
    if (c->ack(b) != AckStatus::ok) {
      ctl.rv.fail(who + ": ack refused a batch just popped");
      return 1;
    }
    acked += b.size();
    me.acked.store(acked, std::memory_order_release);
    me.redelivered.store(redelivered, std::memory_order_release);
    me.last_ack_ns.store(now_ns(), std::memory_order_release);
    ctl.acked.fetch_add(b.size(), std::memory_order_acq_rel);
  }
  ctl.exited.fetch_add(1, std::memory_order_acq_rel);
  return failed(ctl) ? 1 : 0;
}

// --- the parent's side ---------------------------------------------------------------------

io::RespValue must(Result<io::RespValue> r) {
  if (!r) throw std::runtime_error(r.error().message);
  return std::move(r.value());
}

// used_cpu_sys + used_cpu_user of the server, in seconds.
double redis_cpu_seconds(test::RedisClient& admin) {
  const io::RespValue info = must(admin.command({"INFO", "cpu"}));
  double sum = 0;
  int found = 0;
  for (const char* name : {"used_cpu_sys:", "used_cpu_user:"}) {
    const std::size_t at = info.str.find(name);
    if (at == std::string::npos) continue;
    sum += std::strtod(info.str.c_str() + at + std::strlen(name), nullptr);
    ++found;
  }
  if (found != 2) throw std::runtime_error("INFO cpu has no used_cpu_sys or used_cpu_user");
  return sum;
}

// Fills `stream` with o.count entries "value" => o.value_bytes bytes, XADD pipelined 1000
// at a time through hiredis. Returns the seconds it took.
double prefill(const Options& o, std::uint16_t port, test::RedisClient& admin) {
  Context c = hiredis_connect(port, 30'000);
  const std::string value(o.value_bytes, 'v');
  const char* argv[] = {"XADD", kBacklogStream, "*", "value", value.data()};
  const std::size_t argl[] = {4, std::strlen(kBacklogStream), 1, 5, value.size()};
  constexpr std::uint64_t kChunk = 1000;
  const std::int64_t t0 = now_ns();
  for (std::uint64_t sent = 0; sent < o.count;) {
    const std::uint64_t k = std::min(kChunk, o.count - sent);
    for (std::uint64_t i = 0; i < k; ++i) {
      if (redisAppendCommandArgv(c.get(), 5, argv, argl) != REDIS_OK) {
        throw std::runtime_error(std::string("pre-fill: XADD: ") + c->errstr);
      }
    }
    for (std::uint64_t i = 0; i < k; ++i) {
      void* p = nullptr;
      if (redisGetReply(c.get(), &p) != REDIS_OK) {
        throw std::runtime_error(std::string("pre-fill: XADD: ") + c->errstr);
      }
      Reply r(static_cast<redisReply*>(p));
      if (r->type != REDIS_REPLY_STRING) {
        throw std::runtime_error("pre-fill: XADD did not reply with an id: " +
                                 std::string(text_of(r.get())));
      }
    }
    sent += k;
  }
  const double seconds = static_cast<double>(now_ns() - t0) / 1e9;
  const io::RespValue len = must(admin.command({"XLEN", kBacklogStream}));
  if (len.integer != static_cast<std::int64_t>(o.count)) {
    throw std::runtime_error("pre-fill: XLEN " + std::to_string(len.integer) + " after " +
                             std::to_string(o.count) + " XADDs");
  }
  return seconds;
}

// The producer of the latency part: n XADDs to `stream`, one every 1/rate s on an absolute
// schedule (one that falls behind catches up at once), each stamped just before it is sent.
int producer_process(Control& ctl, const Options& o, std::uint16_t port, const std::string& stream,
                     std::uint64_t n) {
  ::prctl(PR_SET_TIMERSLACK, 1UL);
  Context c = hiredis_connect(port, 10'000);
  std::string value(o.value_bytes, 'v');
  const char* argv[] = {"XADD", stream.c_str(), "*", "value", value.data()};
  const std::size_t argl[] = {4, stream.size(), 1, 5, value.size()};
  const std::int64_t interval = 1'000'000'000 / static_cast<std::int64_t>(o.rate);
  const std::int64_t start = now_ns() + 1'000'000;
  std::uint64_t late = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::int64_t at = start + static_cast<std::int64_t>(i) * interval;
    const timespec t{static_cast<time_t>(at / 1'000'000'000),
                     static_cast<long>(at % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, nullptr) == EINTR) {
    }
    if (now_ns() - at > 100'000) ++late;
    char prefix[64];
    std::snprintf(prefix, sizeof prefix, "%0*lld%0*llu", static_cast<int>(kStampDigits),
                  static_cast<long long>(realtime_ns()), static_cast<int>(kSeqDigits),
                  static_cast<unsigned long long>(i));
    std::memcpy(value.data(), prefix, kMinValueBytes);
    Reply r(static_cast<redisReply*>(redisCommandArgv(c.get(), 5, argv, argl)));
    if (!r || r->type != REDIS_REPLY_STRING) {
      ctl.rv.fail("producer: XADD: " +
                  (r ? std::string(text_of(r.get())) : std::string(c->errstr)));
      return 1;
    }
    if (failed(ctl)) return 1;
  }
  ctl.late.store(late, std::memory_order_release);
  ctl.produce_ns.store(now_ns() - start, std::memory_order_release);
  return 0;
}

// Waits until pred(), a failure, or `seconds`; false unless pred() came true.
template <typename Pred>
bool wait_for(Control& ctl, Children& kids, double seconds, const std::string& what, Pred&& pred) {
  const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(seconds * 1e9);
  while (!pred()) {
    if (!kids.check()) return false;
    if (now_ns() > deadline) {
      ctl.rv.fail("waited " + std::to_string(static_cast<int>(seconds)) + " s for " + what);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

struct Measurement {
  std::uint64_t acked = 0;
  double seconds = 0;        // start signal to the last ack
  double redis_cpu = 0;      // seconds
  double start_seconds = 0;  // ringfeed: Fetcher::start
  std::uint64_t fetched = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t pending = 0;  // entries of the group still pending in redis at the end
  std::uint64_t late = 0;     // latency: XADDs behind schedule
  double produced_rate = 0;   // latency: XADDs per second achieved
  Histogram hist;             // latency
};

// Stops the workers, waits for them to leave their loops, then stops the fetcher and reaps
// everything.
bool finish(Control& ctl, Children& kids, int workers, bool ok) {
  ctl.stop.store(1, std::memory_order_release);
  ok = ok && wait_for(ctl, kids, 30, "the workers to stop", [&] {
         return ctl.exited.load(std::memory_order_acquire) == static_cast<std::uint32_t>(workers);
       });
  ctl.stop_fetcher.store(true, std::memory_order_release);
  if (!ok) kids.kill_all();
  return kids.wait_all(30) && ok;
}

std::uint64_t pending_of(test::RedisClient& admin, const std::string& stream,
                         const std::string& group) {
  const io::RespValue p = must(admin.command({"XPENDING", stream, group}));
  if (p.type != io::RespType::array || p.elements.empty()) {
    throw std::runtime_error("XPENDING " + stream + " " + group + ": " + io::describe(p));
  }
  return static_cast<std::uint64_t>(p.elements[0].integer);
}

// Spawns the workers (and the fetcher) of `v` reading `stream` through `group`.
bool spawn_side(Control& ctl, Children& kids, const Options& o, const Variant& v,
                std::uint16_t port, const std::string& stream, const std::string& group,
                const std::string& ns, const std::string& dead_letters, bool latency) {
  for (int i = 0; i < v.workers; ++i) {
    const pid_t pid = v.kind == Kind::direct
                          ? kids.spawn("direct worker " + std::to_string(i), kAnyCpu,
                                       [&, i] {
                                         return direct_worker(ctl, o, port, stream, group, i,
                                                              v.read_count, latency);
                                       })
                          : kids.spawn("ringfeed worker " + std::to_string(i), kAnyCpu,
                                       [&, i] { return ringfeed_worker(ctl, o, ns, i, latency); });
    if (pid <= 0) return false;
  }
  if (v.kind == Kind::ringfeed) {
    const std::string uri = source_uri(o, port, stream, group);
    if (kids.spawn("fetcher", kAnyCpu,
                   [&] { return fetcher_process(ctl, o, ns, uri, dead_letters); }) <= 0) {
      return false;
    }
  }
  return true;
}

void collect(Control& ctl, const Variant& v, Measurement& m) {
  std::int64_t last = 0;
  for (int i = 0; i < v.workers; ++i) {
    last = std::max(last, ctl.w[i].last_ack_ns.load());
    m.redelivered += ctl.w[i].redelivered.load();
    m.hist.merge(ctl.w[i].hist);
  }
  m.acked = ctl.acked.load();
  m.seconds = static_cast<double>(last - ctl.start_ns.load()) / 1e9;
  m.fetched = ctl.fetched.load();
  if (v.kind == Kind::ringfeed) {
    m.start_seconds = static_cast<double>(ctl.start_ns.load() - ctl.fetcher_start_ns.load()) / 1e9;
  }
}

// One throughput measurement: `v` reads the backlog from its start in group `group`.
bool throughput_variant(const Options& o, test::RedisServer& server, test::RedisClient& admin,
                        const Variant& v, const std::string& group, const std::string& ns,
                        Control& ctl, Measurement& m) {
  must(admin.command({"XGROUP", "CREATE", kBacklogStream, group, "0"}));
  const double cpu0 = redis_cpu_seconds(admin);
  if (v.kind == Kind::ringfeed) watch_fetcher_segments(ns, 1);
  bool ok = true;
  {
    Children kids(ctl.rv);
    ok = spawn_side(ctl, kids, o, v, server.port(), kBacklogStream, group, ns,
                    server.dir() + "/dead-letters", false);
    if (ok && v.kind == Kind::direct) {
      ok = wait_for(ctl, kids, 30, "the workers to connect",
                    [&] { return ctl.ready.load() == static_cast<std::uint32_t>(v.workers); });
      ctl.start_ns.store(now_ns(), std::memory_order_release);
      ctl.go.store(1, std::memory_order_release);
    } else if (ok) {
      ok = wait_for(ctl, kids, 60, "Fetcher::start",
                    [&] { return ctl.fetcher_started.load() != 0; });
    }
    const std::int64_t deadline =
        ctl.start_ns.load() + static_cast<std::int64_t>(o.seconds) * 1'000'000'000;
    ok = ok &&
         wait_for(ctl, kids, static_cast<double>(o.seconds) + 60, "the workers to take the backlog",
                  [&] { return ctl.acked.load() >= o.count || now_ns() >= deadline; });
    ok = finish(ctl, kids, v.workers, ok);
  }
  if (v.kind == Kind::ringfeed) {
    remove_namespace(ns);
    unwatch_segments();
  }
  if (!ok) return false;
  m.redis_cpu = redis_cpu_seconds(admin) - cpu0;
  collect(ctl, v, m);
  m.pending = pending_of(admin, kBacklogStream, group);
  must(admin.command({"XGROUP", "DESTROY", kBacklogStream, group}));
  return true;
}

// One latency measurement: `v` reads a fresh stream that a producer fills at o.rate.
bool latency_variant(const Options& o, test::RedisServer& server, test::RedisClient& admin,
                     const Variant& v, const std::string& stream, const std::string& ns,
                     Control& ctl, Measurement& m) {
  const std::string group = "g";
  must(admin.command({"XGROUP", "CREATE", stream, group, "$", "MKSTREAM"}));
  const std::uint64_t n = o.warmup + o.rate * o.latency_seconds;
  if (v.kind == Kind::ringfeed) watch_fetcher_segments(ns, 1);
  bool ok = true;
  double cpu0 = 0;
  {
    Children kids(ctl.rv);
    ok = spawn_side(ctl, kids, o, v, server.port(), stream, group, ns,
                    server.dir() + "/dead-letters", true);
    ok = ok && wait_for(ctl, kids, 60, "the workers to connect or attach", [&] {
           return ctl.ready.load() == static_cast<std::uint32_t>(v.workers) &&
                  (v.kind == Kind::direct || ctl.fetcher_started.load() != 0);
         });
    cpu0 = ok ? redis_cpu_seconds(admin) : 0;
    ok = ok && kids.spawn("producer", kAnyCpu,
                          [&] { return producer_process(ctl, o, server.port(), stream, n); }) > 0;
    const double limit = 30 + 3.0 * static_cast<double>(n) / static_cast<double>(o.rate);
    ok = ok && wait_for(ctl, kids, limit, "the workers to take every message",
                        [&] { return ctl.acked.load() >= n; });
    ok = finish(ctl, kids, v.workers, ok);
  }
  if (v.kind == Kind::ringfeed) {
    remove_namespace(ns);
    unwatch_segments();
  }
  if (!ok) return false;
  m.redis_cpu = redis_cpu_seconds(admin) - cpu0;
  collect(ctl, v, m);
  m.late = ctl.late.load();
  m.produced_rate = static_cast<double>(n) * 1e9 / static_cast<double>(ctl.produce_ns.load());
  if (m.acked != n) {
    ctl.rv.fail("took " + std::to_string(m.acked) + " messages of " + std::to_string(n) +
                " produced");
    return false;
  }
  m.pending = pending_of(admin, stream, group);
  must(admin.command({"DEL", stream}));
  return true;
}

// --- report --------------------------------------------------------------------------------

double per_million(double cpu, std::uint64_t messages) {
  return messages == 0 ? 0 : cpu / static_cast<double>(messages) * 1e6;
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
    if (args.text("--workers", text)) {
      o.workers = parse_list("--workers", text, 1, kMaxWorkers);
    } else if (args.text("--read-counts", text)) {
      o.read_counts = parse_list("--read-counts", text, 1, 100'000);
    } else if (args.text("--source-params", text)) {
      o.source_params = std::string(text);
    } else if (args.text("--redis-server", text)) {
      o.redis_binary = std::string(text);
    } else if (args.flag("--no-latency")) {
      o.latency = false;
    } else if (args.flag("--no-throughput")) {
      o.throughput = false;
    } else if (args.number("--runs", 1, 1000, o.runs) || args.number("--count", 1, kBig, o.count) ||
               args.number("--seconds", 1, 3600, o.seconds) ||
               args.number("--value-bytes", kMinValueBytes, 1 << 20, o.value_bytes) ||
               args.number("--block-ms", 1, 60'000, o.block_ms) ||
               args.number("--pop-batch", 1, 1000, o.pop_batch) ||
               args.number("--ring-mb", 1, 1 << 16, o.ring_mb) ||
               args.number("--spin-us", 0, 10'000'000, o.spin_us) ||
               args.number("--throughput-spin-us", 0, 10'000'000, o.throughput_spin_us) ||
               args.number("--rate", 1, 1'000'000, o.rate) ||
               args.number("--latency-seconds", 1, 600, o.latency_seconds) ||
               args.number("--warmup", 0, kBig, o.warmup) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  if ((o.ring_mb & (o.ring_mb - 1)) != 0) {
    throw UsageError("--ring-mb " + std::to_string(o.ring_mb) + " is not a power of two");
  }
  if (!o.throughput && !o.latency)
    throw UsageError("--no-throughput and --no-latency: nothing to do");
  return o;
}

std::string cpu_text(double seconds_per_million) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s/M", seconds_per_million);
  return buf;
}

}  // namespace

int redis_main(ArgReader& args) {
  const Options o = parse(args);
  const std::vector<Variant> variants = variants_of(o);
  std::printf("ringfeed-bench redis on %s\n", machine_description().c_str());
  std::printf(
      "a fresh redis-server (%s) per run on 127.0.0.1, no persistence; nothing pinned; "
      "%llu-byte values\n",
      o.redis_binary.c_str(), static_cast<unsigned long long>(o.value_bytes));
  if (o.throughput) {
    std::printf(
        "throughput: a backlog of %llu messages; each variant reads it from the start in its "
        "own group until all are acked or %llu s passed\n",
        static_cast<unsigned long long>(o.count), static_cast<unsigned long long>(o.seconds));
  }
  if (o.latency) {
    std::printf(
        "latency: %llu XADDs/s, %llu s recorded per variant after %llu unrecorded; "
        "CLOCK_REALTIME at the worker - the producer's CLOCK_REALTIME just before its XADD\n",
        static_cast<unsigned long long>(o.rate), static_cast<unsigned long long>(o.latency_seconds),
        static_cast<unsigned long long>(o.warmup));
  }
  std::printf(
      "direct: XREADGROUP COUNT c BLOCK %llu + one XACK per batch; ringfeed: fetcher on "
      "redis://127.0.0.1:PORT?streams=S&group=G%s, shared group, pop(%llu) + ack, %llu MiB "
      "ring, workers spin %llu us (throughput) / %llu us (latency)\n",
      static_cast<unsigned long long>(o.block_ms),
      o.source_params.empty() ? "" : ("&" + o.source_params).c_str(),
      static_cast<unsigned long long>(o.pop_batch), static_cast<unsigned long long>(o.ring_mb),
      static_cast<unsigned long long>(o.throughput_spin_us),
      static_cast<unsigned long long>(o.spin_us));
  std::fflush(stdout);

  std::string skipped;  // why the ringfeed variant cannot run, once known
  bool probed = false;
  Figures fig;
  const auto watchdog = static_cast<unsigned>(
      300 + o.count / 20'000 +
      variants.size() * ((o.throughput ? o.seconds + 30 : 0) +
                         (o.latency ? 4 * (o.latency_seconds + o.warmup / o.rate) + 30 : 0)));
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    test::RedisServer server;
    if (auto started = server.start({.binary = o.redis_binary}); !started) {
      throw std::runtime_error("starting redis-server: " + started.error().message);
    }
    auto admin_client = server.client(std::chrono::seconds(30));
    if (!admin_client) throw std::runtime_error(admin_client.error().message);
    test::RedisClient& admin = *admin_client;

    if (!probed) {
      // Whether this build has the Redis source: open it once on a stream of its own.
      must(admin.command({"XGROUP", "CREATE", "probe", "probe", "$", "MKSTREAM"}));
      auto source =
          io::open_source(source_uri(o, server.port(), "probe", "probe"), {.partitions = 1});
      if (!source) skipped = source.error().message;
      probed = true;
      if (!skipped.empty()) std::printf("ringfeed variant skipped: %s\n", skipped.c_str());
    }

    std::printf("\nrun %llu/%llu: redis-server pid %d, port %u\n",
                static_cast<unsigned long long>(run), static_cast<unsigned long long>(o.runs),
                static_cast<int>(server.pid()), static_cast<unsigned>(server.port()));
    if (o.throughput) {
      const double fill = prefill(o, server.port(), admin);
      std::printf("  pre-fill: %llu XADDs pipelined in %.2f s (%s)\n",
                  static_cast<unsigned long long>(o.count), fill,
                  rate_text(static_cast<double>(o.count) / fill).c_str());
      std::printf("  %-38s %10s %9s %13s\n", "throughput", "msgs/s", "acked", "redis cpu");
      for (std::size_t i = 0; i < variants.size(); ++i) {
        const Variant& v = variants[i];
        if (v.kind == Kind::ringfeed && !skipped.empty()) continue;
        SharedObject<Control> ctl;
        Measurement m;
        if (!throughput_variant(o, server, admin, v, "t" + std::to_string(i),
                                run_namespace("rdt", run * 100 + i), *ctl, m)) {
          std::fprintf(stderr, "ringfeed-bench redis: run %llu, throughput of %s: %s\n",
                       static_cast<unsigned long long>(run), v.name.c_str(),
                       ctl->rv.error_message().c_str());
          return 1;
        }
        const double rate = static_cast<double>(m.acked) / m.seconds;
        const double cpu = per_million(m.redis_cpu, m.acked);
        std::printf("  %-38s %10s %9llu %13s%s", v.name.c_str(), rate_text(rate).c_str(),
                    static_cast<unsigned long long>(m.acked), cpu_text(cpu).c_str(),
                    m.acked < o.count ? "  (time limit)" : "");
        if (v.kind == Kind::ringfeed) {
          std::printf("  start() %.1f ms, fetched %llu, redelivered %llu, pending %llu",
                      m.start_seconds * 1e3, static_cast<unsigned long long>(m.fetched),
                      static_cast<unsigned long long>(m.redelivered),
                      static_cast<unsigned long long>(m.pending));
        } else if (m.pending != 0) {
          std::printf("  %llu left pending", static_cast<unsigned long long>(m.pending));
        }
        std::printf("\n");
        std::fflush(stdout);
        fig.add(v.name + "|rate", rate);
        fig.add(v.name + "|cpu", cpu);
      }
    }
    if (o.latency) {
      std::printf("  latency at %llu/s\n", static_cast<unsigned long long>(o.rate));
      for (std::size_t i = 0; i < variants.size(); ++i) {
        const Variant& v = variants[i];
        if (v.kind == Kind::ringfeed && !skipped.empty()) continue;
        SharedObject<Control> ctl;
        Measurement m;
        if (!latency_variant(o, server, admin, v, "lat" + std::to_string(i),
                             run_namespace("rdl", run * 100 + i), *ctl, m)) {
          std::fprintf(stderr, "ringfeed-bench redis: run %llu, latency of %s: %s\n",
                       static_cast<unsigned long long>(run), v.name.c_str(),
                       ctl->rv.error_message().c_str());
          return 1;
        }
        const double cpu = per_million(m.redis_cpu, m.acked);
        std::printf("  %-38s", v.name.c_str());
        for (int f = 0; f < kLatencyFigures; ++f) {
          std::printf(" %s %s", kLatencyFigureNames[f],
                      format_ns(latency_figure(m.hist, f)).c_str());
        }
        std::printf(" (n=%llu)  redis cpu %s", static_cast<unsigned long long>(m.hist.count()),
                    cpu_text(cpu).c_str());
        if (m.pending != 0) {
          std::printf("  %llu left pending", static_cast<unsigned long long>(m.pending));
        }
        std::printf("  producer %.0f/s", m.produced_rate);
        if (m.late != 0) {
          std::printf(", %llu XADDs >100 us late", static_cast<unsigned long long>(m.late));
        }
        std::printf("\n");
        std::fflush(stdout);
        for (int f = 0; f < kLatencyFigures; ++f) {
          fig.add(v.name + "|" + kLatencyFigureNames[f], latency_figure(m.hist, f));
        }
        fig.add(v.name + "|latcpu", cpu);
      }
    }
    disarm_watchdog();
    static_cast<void>(server.stop());
    std::printf("  (%s)\n",
                run_note("not pinned", idle, others_share(before, sample_cpu())).c_str());
    std::fflush(stdout);
  }

  std::printf("\nmedians of %llu runs\n", static_cast<unsigned long long>(o.runs));
  std::printf("  %-38s", "variant");
  if (o.throughput) std::printf(" %10s %10s", "msgs/s", "redis cpu");
  if (o.latency) {
    for (const char* name : kLatencyFigureNames) std::printf(" %9s", name);
    std::printf(" %10s", "cpu @rate");
  }
  std::printf("\n");
  for (const Variant& v : variants) {
    if (v.kind == Kind::ringfeed && !skipped.empty()) continue;
    std::printf("  %-38s", v.name.c_str());
    if (o.throughput) {
      std::printf(" %10s %10s", rate_text(fig.median(v.name + "|rate")).c_str(),
                  cpu_text(fig.median(v.name + "|cpu")).c_str());
    }
    if (o.latency) {
      for (const char* name : kLatencyFigureNames) {
        std::printf(" %9s", format_ns(fig.median(v.name + "|" + name)).c_str());
      }
      std::printf(" %10s", cpu_text(fig.median(v.name + "|latcpu")).c_str());
    }
    std::printf("\n");
  }
  std::printf(
      "  (redis cpu: redis-server CPU seconds per million messages acked, from INFO cpu, in the "
      "throughput part; cpu @rate: the same in the latency part, the producer's XADDs "
      "included)\n");
  if (!skipped.empty()) {
    std::printf("\nringfeed variant skipped: %s\nno ringfeed / direct ratios\n", skipped.c_str());
    return 0;
  }
  std::printf(
      "\nringfeed / direct, ratios of medians (msgs/s: above 1 is faster; cpu and "
      "latency: below 1 is less)\n");
  std::printf("  %-38s", "against");
  if (o.throughput) std::printf(" %10s %10s", "msgs/s", "redis cpu");
  if (o.latency) {
    for (const char* name : kLatencyFigureNames) std::printf(" %9s", name);
    std::printf(" %10s", "cpu @rate");
  }
  std::printf("\n");
  auto ratio = [&](const std::string& a, const std::string& b) {
    const double den = fig.median(b);
    return den > 0 ? fig.median(a) / den : 0.0;
  };
  for (const Variant& d : variants) {
    if (d.kind != Kind::direct) continue;
    const std::string r = variant_name(Kind::ringfeed, d.workers, 0);
    std::printf("  %-38s", d.name.c_str());
    if (o.throughput) {
      std::printf(" %10.3f %10.3f", ratio(r + "|rate", d.name + "|rate"),
                  ratio(r + "|cpu", d.name + "|cpu"));
    }
    if (o.latency) {
      for (const char* name : kLatencyFigureNames) {
        std::printf(" %9.3f", ratio(r + "|" + name, d.name + "|" + name));
      }
      std::printf(" %10.3f", ratio(r + "|latcpu", d.name + "|latcpu"));
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace ringfeed::bench
