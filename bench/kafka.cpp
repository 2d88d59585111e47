// ringfeed-bench kafka: consumers of a Kafka topic. N local workers through ringfeed (a
// fetcher speaking Kafka into one ring per partition, the workers popping from every ring
// in a shared or broadcast group) against N librdkafka consumers reading the topic
// directly, as users do today. Throughput from a backlog, the bytes the cluster sent per
// message with every consumer taking everything, and produce-to-worker latency at a fixed
// rate; a fresh mock cluster (librdkafka's, tests/support/kafka_mock.hpp) per run.
#include <librdkafka/rdkafka.h>
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
#include <utility>
#include <vector>

#include "children.hpp"
#include "commands.hpp"
#include "fetcher_child.hpp"
#include "harness.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/consumer_set.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/histogram.hpp"
#include "ringfeed_steps.hpp"
#include "socket_bytes.hpp"
#include "tests/support/kafka_mock.hpp"
#include "upstream_report.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench kafka [flags]

Consumers of a Kafka topic, on a fresh mock cluster per run (librdkafka's mock cluster,
--brokers brokers on 127.0.0.1, topics of --partitions partitions, run by the tests'
kafka_mock_cluster program), 64-byte values, for two kinds of workers:
  direct     N worker processes, each a librdkafka consumer (rd_kafka_consumer_poll, one
             message at a time) subscribed to the topic; offsets committed as librdkafka
             does by default: enable.auto.commit=true every auto.commit.interval.ms
             (5000), and once more at close. auto.offset.reset=earliest.
  ringfeed   one fetcher process (ringfeed::Fetcher on kafka://BROKERS?topic=T&group=G&
             partitions=0,..,P-1: partitions pinned, no group membership to wait for; it
             commits what every local group acked every 50 ms) and N worker processes,
             each attached to every partition's ring (--ring-mb MiB each), the consumers
             in one ConsumerSet: up to --pop-batch messages from whichever ring has some
             (in turn), then an ack of the batch.
Each run measures:
  throughput  a backlog of --count messages, produced with librdkafka round robin over
              the partitions before any consumer starts, read from the start for N =
              each of --workers: direct, N consumers in one consumer group; ringfeed, N
              workers in one shared group. messages/s = messages taken / (first message
              any worker took to the last); the time from spawning the processes to the
              first message (connecting, joining the group, Fetcher::start) is printed
              apart, and "incl. start" = messages taken / (spawning to the last message):
              what a consumer group that starts to read a backlog gets, the group join
              included.
  broadcast   the same backlog, every message to each of --broadcast-workers B workers:
              direct, B consumers each in a consumer group of its own; ringfeed, B
              workers in one broadcast group. deliveries/s = messages taken by all workers
              / (first message to the last). Bytes the cluster sent per backlog message:
              tcpi_bytes_received of every TCP socket to a broker held by the fetcher
              (ringfeed) or by the B consumers (direct), read from the kernel once all is
              taken (socket layer: the Fetcher keeps no count of its own); for direct also
              librdkafka's statistics (rxbytes summed over brokers, statistics.interval.ms
              100) as a cross-check.
  latency     a producer process sends --rate messages per second (librdkafka, linger.ms
              0, one at a time on an absolute schedule: one that falls behind catches up
              at once) round robin to the partitions of a fresh topic; each value starts
              with CLOCK_REALTIME in ns just before rd_kafka_producev, then a sequence
              number. A worker records CLOCK_REALTIME as it holds the message minus that
              stamp. For N = each of --workers: direct, N consumers in one group; ringfeed,
              N shared workers that spin --spin-us over all rings, then sleep on all of
              them at once (ConsumerSet). The producer starts once every direct
              consumer has its first assignment, or every ringfeed worker attached;
              --latency-seconds of messages are recorded after --warmup unrecorded ones.
Nothing is pinned: the cluster, producer, fetcher and workers share the cpus. Figures per
run, then medians of --runs runs and ratios of medians ringfeed / direct.

flags:
  --runs K              runs (default 5); medians are taken over them
  --count N             backlog messages (default 200000: the mock cluster keeps about
                        5 MB per partition and drops the oldest beyond; checked)
  --seconds S           throughput and broadcast: most seconds per variant (default 60)
  --partitions P        partitions of each topic, 1..64 (default 4)
  --brokers B           brokers of the mock cluster, 1..16 (default 3)
  --workers LIST        worker counts N, comma-separated, each 1..16 (default 1,2,4)
  --broadcast-workers B broadcast: workers, 1..16 (default 4)
  --pop-batch B         ringfeed: most messages per pop (default 64)
  --ring-mb MB          ringfeed: ring size in MiB per partition, a power of two (default 64)
  --spin-us U           ringfeed, latency: how long a worker polls the rings before it
                        sleeps (default 50)
  --throughput-spin-us U  ringfeed, throughput and broadcast: the same (default 0)
  --poll-us U           ringfeed: longest wait of one ConsumerSet pop (default 1000)
  --source-params P     ringfeed: more URI parameters, e.g. 'max-bytes=4194304'
  --fetch-wait-ms W     both: the Fetch max wait, 1..60000 ms: direct fetch.wait.max.ms,
                        ringfeed fetch-max-wait-ms (default 200: the fetcher's default;
                        librdkafka's own default is 500). The mock
                        cluster holds a Fetch that finds no records for its whole max wait
                        and does not answer it when records arrive, so on the mock the
                        produce-to-worker latency of both is mostly this wait
  --rate R              latency: messages per second (default 5000)
  --latency-seconds S   latency: seconds of recorded messages per variant (default 3)
  --warmup W            latency: messages not recorded at the start (default 5000)
  --no-throughput       skip the throughput part
  --no-broadcast        skip the broadcast part
  --no-latency          skip the latency part
  --wait-idle S         before each run, wait up to S seconds for a second of idle cpus
  --help
)";

constexpr int kMaxWorkers = 16;
constexpr const char* kBacklogTopic = "bench";

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t count = 200'000;
  std::uint64_t seconds = 60;
  std::uint64_t partitions = 4;
  std::uint64_t brokers = 3;
  std::vector<std::uint64_t> workers{1, 2, 4};
  std::uint64_t broadcast_workers = 4;
  std::uint64_t pop_batch = 64;
  std::uint64_t ring_mb = 64;
  std::uint64_t spin_us = 50;
  std::uint64_t throughput_spin_us = 0;
  std::uint64_t poll_us = 1000;
  std::uint64_t fetch_wait_ms = 200;
  std::string source_params;
  std::uint64_t rate = 5'000;
  std::uint64_t latency_seconds = 3;
  std::uint64_t warmup = 5'000;
  bool throughput = true;
  bool broadcast = true;
  bool latency = true;
  std::uint64_t wait_idle = 0;
};

enum class Kind { direct, ringfeed };
enum class Part { throughput, broadcast, latency };

struct Variant {
  Kind kind = Kind::direct;
  int workers = 1;
  bool broadcast = false;
  std::string name;
};

std::string variant_name(Kind kind, int workers, bool broadcast) {
  const std::string n = std::to_string(workers);
  if (kind == Kind::ringfeed) {
    return "ringfeed, " + n + (broadcast ? " broadcast" : " shared") +
           (workers == 1 ? " worker" : " workers");
  }
  return "direct, " + n + (workers == 1 ? " consumer" : " consumers") +
         (broadcast ? ", own groups" : ", one group");
}

Variant variant(Kind kind, int workers, bool broadcast) {
  return {kind, workers, broadcast, variant_name(kind, workers, broadcast)};
}

// --- shared state of one measurement ------------------------------------------------------

struct alignas(kLine) WorkerSlot {
  std::atomic<std::uint64_t> taken;     // messages this worker took (and acked)
  std::atomic<std::int64_t> first_ns;   // CLOCK_MONOTONIC as it held its first message
  std::atomic<std::int64_t> last_ns;    // ... and its last
  std::atomic<std::uint32_t> assigned;  // direct: its first assignment came
  std::atomic<std::uint64_t> rx_bytes;  // direct: librdkafka's rxbytes over all brokers
  std::atomic<std::int64_t> stats_ns;   // direct: when those statistics came
  Histogram hist;                       // latency: written by this worker only
};

struct Control {
  Rendezvous rv;                                     // only its failure slot is used
  alignas(kLine) std::atomic<std::uint32_t> ready;   // workers attached or assigned
  alignas(kLine) std::atomic<std::uint32_t> stop;    // workers: stop after this batch
  alignas(kLine) std::atomic<std::uint32_t> exited;  // workers out of their loop
  FetcherControl fetcher;
  alignas(kLine) std::atomic<std::uint64_t> late;  // latency: sends >100 us behind schedule
  std::atomic<std::int64_t> produce_ns;            // latency: first scheduled send to the last
  WorkerSlot w[kMaxWorkers];
};

bool failed(const Control& ctl) {
  return ctl.rv.failed.load(std::memory_order_acquire) != 0;
}

// What a latency value starts with: the send time and the sequence number.
struct Stamp {
  std::int64_t sent_ns;  // CLOCK_REALTIME
  std::uint64_t seq;
};
static_assert(sizeof(Stamp) <= kValueBytes);

// A worker's tally, kept locally and published to its slot after each batch.
class Tally {
 public:
  Tally(Control& ctl, const Options& o, WorkerSlot& me, bool latency, std::string who)
      : ctl_(ctl), o_(o), me_(me), latency_(latency), who_(std::move(who)) {}

  // One message held at CLOCK_REALTIME `now` (latency only); false after a failure.
  bool take(std::string_view value, std::int64_t now) {
    if (value.size() != kValueBytes) {
      ctl_.rv.fail(who_ + ": a value of " + std::to_string(value.size()) + " bytes, expected " +
                   std::to_string(kValueBytes));
      return false;
    }
    if (latency_) {
      Stamp s;
      std::memcpy(&s, value.data(), sizeof s);
      if (s.seq >= o_.warmup) me_.hist.record(now > s.sent_ns ? now - s.sent_ns : 0);
    }
    ++taken_;
    return true;
  }
  void publish() {
    const std::int64_t t = now_ns();
    if (me_.first_ns.load(std::memory_order_relaxed) == 0) {
      me_.first_ns.store(t, std::memory_order_release);
    }
    me_.last_ns.store(t, std::memory_order_release);
    me_.taken.store(taken_, std::memory_order_release);
  }
  std::uint64_t taken() const { return taken_; }
  const std::string& who() const { return who_; }

 private:
  Control& ctl_;
  const Options& o_;
  WorkerSlot& me_;
  bool latency_;
  std::string who_;
  std::uint64_t taken_ = 0;
};

// --- the direct workers: librdkafka consumers ---------------------------------------------

struct KafkaFree {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaFree>;

// A producer or consumer with `settings`; conf_setup adds callbacks before it is made.
template <typename Setup>
KafkaHandle kafka_new(rd_kafka_type_t type,
                      const std::vector<std::pair<std::string, std::string>>& settings,
                      Setup&& conf_setup) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::runtime_error("librdkafka " + name + "=" + value + ": " + err);
    }
  }
  conf_setup(conf);
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);  // takes conf on success
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("rd_kafka_new: ") + err);
  }
  return KafkaHandle(rk);
}

// librdkafka's statistics: the sum of "rxbytes" over its brokers.
int on_statistics(rd_kafka_t*, char* json, std::size_t len, void* opaque) {
  auto& me = *static_cast<WorkerSlot*>(opaque);
  const std::string_view text(json, len);
  constexpr std::string_view kKey = "\"rxbytes\":";
  std::uint64_t sum = 0;
  for (std::size_t at = text.find(kKey); at != std::string_view::npos;
       at = text.find(kKey, at + 1)) {
    sum += std::strtoull(json + at + kKey.size(), nullptr, 10);
  }
  me.rx_bytes.store(sum, std::memory_order_release);
  me.stats_ns.store(now_ns(), std::memory_order_release);
  return 0;  // librdkafka frees json
}

void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                  rd_kafka_topic_partition_list_t* partitions, void* opaque) {
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    rd_kafka_assign(rk, partitions);
    static_cast<WorkerSlot*>(opaque)->assigned.store(1, std::memory_order_release);
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

// One direct worker: a consumer in `group` subscribed to `topic`, polling until ctl.stop.
int direct_worker(Control& ctl, const Options& o, const std::string& bootstrap,
                  const std::string& topic, const std::string& group, int index, Part part) {
  WorkerSlot& me = ctl.w[index];
  Tally tally(ctl, o, me, part == Part::latency, "direct worker " + std::to_string(index));
  std::vector<std::pair<std::string, std::string>> settings = {
      {"bootstrap.servers", bootstrap},
      {"group.id", group},
      {"client.id", "w" + std::to_string(index)},
      {"auto.offset.reset", "earliest"},
      {"fetch.wait.max.ms", std::to_string(o.fetch_wait_ms)}};
  if (part != Part::latency) settings.push_back({"statistics.interval.ms", "100"});
  KafkaHandle rk = kafka_new(RD_KAFKA_CONSUMER, settings, [&](rd_kafka_conf_t* conf) {
    rd_kafka_conf_set_opaque(conf, &me);
    rd_kafka_conf_set_stats_cb(conf, on_statistics);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
  });
  rd_kafka_poll_set_consumer(rk.get());
  rd_kafka_topic_partition_list_t* subscription = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subscription, topic.c_str(), RD_KAFKA_PARTITION_UA);
  const rd_kafka_resp_err_t subscribed = rd_kafka_subscribe(rk.get(), subscription);
  rd_kafka_topic_partition_list_destroy(subscription);
  if (subscribed != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ctl.rv.fail(tally.who() + ": subscribe: " + rd_kafka_err2str(subscribed));
    return 1;
  }
  bool ready = false;
  while (ctl.stop.load(std::memory_order_acquire) == 0 && !failed(ctl)) {
    if (!ready && me.assigned.load(std::memory_order_acquire) != 0) {
      ctl.ready.fetch_add(1, std::memory_order_acq_rel);
      ready = true;
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 100);
    const std::int64_t now = part == Part::latency ? realtime_ns() : 0;
    if (m == nullptr) continue;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      const std::string why = rd_kafka_message_errstr(m);
      rd_kafka_message_destroy(m);
      ctl.rv.fail(tally.who() + ": consumer_poll: " + why);
      return 1;
    }
    const bool ok = tally.take({static_cast<const char*>(m->payload), m->len}, now);
    rd_kafka_message_destroy(m);
    if (!ok) return 1;
    tally.publish();
  }
  ctl.exited.fetch_add(1, std::memory_order_acq_rel);
  rd_kafka_consumer_close(rk.get());  // the last auto commit, LeaveGroup
  return failed(ctl) ? 1 : 0;
}

// --- the ringfeed side ---------------------------------------------------------------------

std::string source_uri(const Options& o, const std::string& bootstrap, const std::string& topic,
                       const std::string& group) {
  std::string uri = "kafka://" + bootstrap + "?topic=" + topic + "&group=" + group +
                    "&fetch-max-wait-ms=" + std::to_string(o.fetch_wait_ms) + "&partitions=";
  for (std::uint64_t p = 0; p < o.partitions; ++p) uri += (p == 0 ? "" : ",") + std::to_string(p);
  if (!o.source_params.empty()) uri += "&" + o.source_params;
  return uri;
}

// One ringfeed worker: a consumer on every partition's ring in one group, popped as one
// ConsumerSet: a batch from whichever ring has messages (in turn); when none has, it spins
// over them for `spin`, then sleeps on all of them at once for up to o.poll_us, until
// ctl.stop.
int ringfeed_worker(Control& ctl, const Options& o, const std::string& ns, int index, Part part) {
  WorkerSlot& me = ctl.w[index];
  Tally tally(ctl, o, me, part == Part::latency, "ringfeed worker " + std::to_string(index));
  const auto spin =
      std::chrono::microseconds(part == Part::latency ? o.spin_us : o.throughput_spin_us);
  std::vector<std::unique_ptr<Consumer>> rings;
  ConsumerSet set;
  for (std::uint32_t p = 0; p < o.partitions; ++p) {
    auto c =
        attach_when_ready(ctl.rv, {.ns = ns,
                                   .partition = p,
                                   .group = kGroup,
                                   .mode = part == Part::broadcast ? Mode::broadcast : Mode::shared,
                                   .spin = spin});
    if (!c) return 1;
    if (Status added = set.add(*c); !added) {
      ctl.rv.fail(tally.who() + ": " + added.error().message);
      return 1;
    }
    rings.push_back(std::move(c));
  }
  const auto poll = std::chrono::microseconds(o.poll_us);
  ctl.ready.fetch_add(1, std::memory_order_acq_rel);
  while (ctl.stop.load(std::memory_order_acquire) == 0 && !failed(ctl)) {
    const ConsumerSet::Popped popped = set.pop(o.pop_batch, poll);
    if (popped.consumer == nullptr) continue;
    Consumer& c = *popped.consumer;
    const Batch& b = *popped.batch;
    if (b.status() != PopStatus::ok) {
      ctl.rv.fail(tally.who() + ": pop on partition " + std::to_string(c.options().partition) +
                  ": " + to_string(b.status()) + " after " + std::to_string(tally.taken()) +
                  " messages");
      return 1;
    }
    const std::int64_t now = part == Part::latency ? realtime_ns() : 0;
    for (const Message& m : b) {
      if (!tally.take(m.value(), now)) return 1;
    }
    if (c.ack(b) != AckStatus::ok) {
      ctl.rv.fail(tally.who() + ": ack refused a batch just popped");
      return 1;
    }
    tally.publish();
  }
  ctl.exited.fetch_add(1, std::memory_order_acq_rel);
  return failed(ctl) ? 1 : 0;
}

// --- producing ---------------------------------------------------------------------------

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) ++*static_cast<std::uint64_t*>(opaque);
}

// Sends one value (copied); waits while librdkafka's queue is full.
void produce_one(rd_kafka_t* rk, const std::string& topic, std::int32_t partition,
                 const char* value) {
  rd_kafka_vu_t vu[4] = {};
  vu[0].vtype = RD_KAFKA_VTYPE_TOPIC;
  vu[0].u.cstr = topic.c_str();
  vu[1].vtype = RD_KAFKA_VTYPE_PARTITION;
  vu[1].u.i32 = partition;
  vu[2].vtype = RD_KAFKA_VTYPE_VALUE;
  vu[2].u.mem.ptr = const_cast<char*>(value);
  vu[2].u.mem.size = kValueBytes;
  vu[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
  vu[3].u.i = RD_KAFKA_MSG_F_COPY;
  for (;;) {
    rd_kafka_error_t* error = rd_kafka_produceva(rk, vu, 4);
    if (error == nullptr) return;
    const rd_kafka_resp_err_t e = rd_kafka_error_code(error);
    rd_kafka_error_destroy(error);
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      throw std::runtime_error("rd_kafka_produceva to " + topic + ": " + rd_kafka_err2str(e));
    }
    rd_kafka_poll(rk, 10);
  }
}

// The backlog: o.count values round robin over the partitions, sequence numbers in them;
// returns the seconds until every one was acknowledged.
double produce_backlog(const Options& o, const std::string& bootstrap) {
  std::uint64_t errors = 0;
  const std::int64_t t0 = now_ns();
  {
    KafkaHandle rk = kafka_new(RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap}},
                               [&](rd_kafka_conf_t* conf) {
                                 rd_kafka_conf_set_opaque(conf, &errors);
                                 rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
                               });
    char value[kValueBytes];
    std::memset(value, 'v', sizeof value);
    for (std::uint64_t i = 0; i < o.count; ++i) {
      const Stamp s{0, i};
      std::memcpy(value, &s, sizeof s);
      produce_one(rk.get(), kBacklogTopic, static_cast<std::int32_t>(i % o.partitions), value);
      rd_kafka_poll(rk.get(), 0);
    }
    if (rd_kafka_flush(rk.get(), 120'000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("producing the backlog: flush timed out");
    }
    // The mock cluster drops a partition's oldest records beyond its size limit: every
    // partition must still start at offset 0 and hold its share.
    for (std::uint64_t p = 0; p < o.partitions; ++p) {
      std::int64_t low = -1;
      std::int64_t high = -1;
      const rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
          rk.get(), kBacklogTopic, static_cast<std::int32_t>(p), &low, &high, 10'000);
      const auto share =
          static_cast<std::int64_t>(o.count / o.partitions + (p < o.count % o.partitions ? 1 : 0));
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR || low != 0 || high != share) {
        throw std::runtime_error(
            "the backlog's partition " + std::to_string(p) + " holds offsets " +
            std::to_string(low) + ".." + std::to_string(high) + ", expected 0.." +
            std::to_string(share) + " (" + rd_kafka_err2str(e) +
            "); the mock cluster keeps about 5 MB per partition: lower --count");
      }
    }
  }
  if (errors != 0) {
    throw std::runtime_error("producing the backlog: " + std::to_string(errors) + " of " +
                             std::to_string(o.count) + " messages failed");
  }
  return static_cast<double>(now_ns() - t0) / 1e9;
}

// The producer of the latency part: n values to `topic`, one every 1/rate s on an
// absolute schedule, each stamped just before it is handed to librdkafka.
int producer_process(Control& ctl, const Options& o, const std::string& bootstrap,
                     const std::string& topic, std::uint64_t n) {
  ::prctl(PR_SET_TIMERSLACK, 1UL);
  std::uint64_t errors = 0;
  KafkaHandle rk =
      kafka_new(RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap}, {"linger.ms", "0"}},
                [&](rd_kafka_conf_t* conf) {
                  rd_kafka_conf_set_opaque(conf, &errors);
                  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
                });
  char value[kValueBytes];
  std::memset(value, 'v', sizeof value);
  const std::int64_t interval = 1'000'000'000 / static_cast<std::int64_t>(o.rate);
  const std::int64_t start = now_ns() + 1'000'000;
  std::uint64_t late = 0;
  for (std::uint64_t i = 0; i < n && !failed(ctl); ++i) {
    const std::int64_t at = start + static_cast<std::int64_t>(i) * interval;
    const timespec t{static_cast<time_t>(at / 1'000'000'000),
                     static_cast<long>(at % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, nullptr) == EINTR) {
    }
    if (now_ns() - at > 100'000) ++late;
    const Stamp s{realtime_ns(), i};
    std::memcpy(value, &s, sizeof s);
    produce_one(rk.get(), topic, static_cast<std::int32_t>(i % o.partitions), value);
    rd_kafka_poll(rk.get(), 0);
  }
  ctl.produce_ns.store(now_ns() - start, std::memory_order_release);
  ctl.late.store(late, std::memory_order_release);
  if (rd_kafka_flush(rk.get(), 30'000) != RD_KAFKA_RESP_ERR_NO_ERROR || errors != 0) {
    ctl.rv.fail("producer: " + std::to_string(errors) + " messages failed or flush timed out");
    return 1;
  }
  return failed(ctl) ? 1 : 0;
}

// --- one measurement ------------------------------------------------------------------------

struct Cluster {
  std::string bootstrap;
  std::vector<std::uint16_t> ports;
};

struct Measurement {
  std::uint64_t taken = 0;     // by all workers
  std::uint64_t least = 0;     // by the worker that took fewest
  double seconds = 0;          // first message any worker held to the last
  double first_seconds = 0;    // spawning the processes to the first message
  SocketBytes socket;          // what the fetcher or the consumers received from brokers
  std::uint64_t rx_bytes = 0;  // direct: librdkafka's statistics
  bool statistics = false;     // direct: statistics came after the last message
  std::uint64_t late = 0;      // latency: sends behind schedule
  double produced_rate = 0;    // latency: sends per second achieved
  Histogram hist;              // latency
};

std::uint64_t total_taken(const Control& ctl, int workers) {
  std::uint64_t n = 0;
  for (int i = 0; i < workers; ++i) n += ctl.w[i].taken.load(std::memory_order_acquire);
  return n;
}

std::uint64_t least_taken(const Control& ctl, int workers) {
  std::uint64_t n = UINT64_MAX;
  for (int i = 0; i < workers; ++i) n = std::min(n, ctl.w[i].taken.load(std::memory_order_acquire));
  return n;
}

// Runs variant `v` of `part` on `topic`: spawns its processes, waits until every message
// was taken (or the time limit), reads the bytes received while they still run, stops
// them. Direct consumers share `group` (throughput, latency) or each have group<i>.
bool measure(const Options& o, const Cluster& cluster, const Variant& v, Part part,
             const std::string& topic, const std::string& group, const std::string& ns,
             const std::string& dead_letters, Control& ctl, Measurement& m) {
  const std::uint64_t n = part == Part::latency ? o.warmup + o.rate * o.latency_seconds : o.count;
  const auto workers = static_cast<std::uint32_t>(v.workers);
  if (v.kind == Kind::ringfeed)
    watch_fetcher_segments(ns, static_cast<std::uint32_t>(o.partitions));
  const std::int64_t spawned = now_ns();
  bool ok = true;
  {
    Children kids(ctl.rv);
    std::vector<pid_t> readers;  // the processes whose sockets are counted
    for (int i = 0; ok && i < v.workers; ++i) {
      const std::string g = v.broadcast ? group + std::to_string(i) : group;
      const pid_t pid =
          v.kind == Kind::direct
              ? kids.spawn("direct worker " + std::to_string(i), kAnyCpu,
                           [&, i, g] {
                             return direct_worker(ctl, o, cluster.bootstrap, topic, g, i, part);
                           })
              : kids.spawn("ringfeed worker " + std::to_string(i), kAnyCpu,
                           [&, i] { return ringfeed_worker(ctl, o, ns, i, part); });
      ok = pid > 0;
      if (v.kind == Kind::direct) readers.push_back(pid);
    }
    const std::string uri = source_uri(o, cluster.bootstrap, topic, group);
    const FetcherOptions fetcher{
        .ns = ns, .source = uri, .ring_bytes = o.ring_mb << 20, .dead_letter_dir = dead_letters};
    if (ok && v.kind == Kind::ringfeed) {
      const pid_t pid = kids.spawn("fetcher", kAnyCpu,
                                   [&] { return fetcher_process(ctl.rv, ctl.fetcher, fetcher); });
      ok = pid > 0;
      readers.push_back(pid);
    }
    if (ok && part == Part::latency) {
      ok = wait_until(ctl.rv, kids, 60, "the workers to attach or be assigned partitions", [&] {
        return ctl.ready.load() == workers &&
               (v.kind == Kind::direct || ctl.fetcher.started_ns.load() != 0);
      });
      ok = ok && kids.spawn("producer", kAnyCpu, [&] {
        return producer_process(ctl, o, cluster.bootstrap, topic, n);
      }) > 0;
    }
    const double limit = part == Part::latency
                             ? 60 + 3.0 * static_cast<double>(n) / static_cast<double>(o.rate)
                             : static_cast<double>(o.seconds);
    const std::int64_t deadline = spawned + static_cast<std::int64_t>(limit * 1e9);
    ok = ok && wait_until(ctl.rv, kids, limit + 10, "the workers to take every message", [&] {
           const bool done =
               v.broadcast ? least_taken(ctl, v.workers) >= n : total_taken(ctl, v.workers) >= n;
           return done || (part != Part::latency && now_ns() >= deadline);
         });
    const std::int64_t done_ns = now_ns();
    if (ok && part != Part::latency) {
      for (const pid_t pid : readers) {
        const SocketBytes s = tcp_bytes_received(pid, cluster.ports);
        m.socket.bytes += s.bytes;
        m.socket.sockets += s.sockets;
      }
      if (v.kind == Kind::direct) {
        // librdkafka's statistics from after the last message (they come every 100 ms).
        const std::int64_t until = now_ns() + 3'000'000'000;
        auto fresh = [&] {
          for (int i = 0; i < v.workers; ++i) {
            if (ctl.w[i].stats_ns.load() <= done_ns) return false;
          }
          return true;
        };
        while (!fresh() && now_ns() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        m.statistics = fresh();
        for (int i = 0; i < v.workers; ++i) m.rx_bytes += ctl.w[i].rx_bytes.load();
      }
    }
    ctl.stop.store(1, std::memory_order_release);
    ok = ok && wait_until(ctl.rv, kids, 30, "the workers to stop",
                          [&] { return ctl.exited.load() == workers; });
    ctl.fetcher.stop.store(true, std::memory_order_release);
    if (!ok) kids.kill_all();
    ok = kids.wait_all(30) && ok;
  }
  if (v.kind == Kind::ringfeed) {
    remove_namespace(ns);
    unwatch_segments();
  }
  if (!ok) return false;
  std::int64_t first = INT64_MAX;
  std::int64_t last = 0;
  for (int i = 0; i < v.workers; ++i) {
    const WorkerSlot& w = ctl.w[i];
    if (w.first_ns.load() != 0) first = std::min(first, w.first_ns.load());
    last = std::max(last, w.last_ns.load());
    m.hist.merge(w.hist);
  }
  m.taken = total_taken(ctl, v.workers);
  m.least = least_taken(ctl, v.workers);
  if (m.taken == 0) {
    ctl.rv.fail("no worker took a message within " + std::to_string(o.seconds) + " s");
    return false;
  }
  m.seconds = static_cast<double>(last - first) / 1e9;
  m.first_seconds = static_cast<double>(first - spawned) / 1e9;
  if (part == Part::latency) {
    m.late = ctl.late.load();
    m.produced_rate = static_cast<double>(n) * 1e9 / static_cast<double>(ctl.produce_ns.load());
  }
  return true;
}

// --- report --------------------------------------------------------------------------------

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
    } else if (args.text("--source-params", text)) {
      o.source_params = std::string(text);
    } else if (args.flag("--no-throughput")) {
      o.throughput = false;
    } else if (args.flag("--no-broadcast")) {
      o.broadcast = false;
    } else if (args.flag("--no-latency")) {
      o.latency = false;
    } else if (args.number("--runs", 1, 1000, o.runs) || args.number("--count", 1, kBig, o.count) ||
               args.number("--seconds", 1, 3600, o.seconds) ||
               args.number("--partitions", 1, 64, o.partitions) ||
               args.number("--brokers", 1, 16, o.brokers) ||
               args.number("--broadcast-workers", 1, kMaxWorkers, o.broadcast_workers) ||
               args.number("--pop-batch", 1, 1000, o.pop_batch) ||
               args.number("--ring-mb", 1, 1 << 16, o.ring_mb) ||
               args.number("--spin-us", 0, 10'000'000, o.spin_us) ||
               args.number("--throughput-spin-us", 0, 10'000'000, o.throughput_spin_us) ||
               args.number("--poll-us", 1, 10'000'000, o.poll_us) ||
               args.number("--fetch-wait-ms", 1, 60'000, o.fetch_wait_ms) ||
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
  if (!o.throughput && !o.broadcast && !o.latency) {
    throw UsageError("--no-throughput, --no-broadcast and --no-latency: nothing to do");
  }
  return o;
}

std::string bytes_text(double bytes_per_message) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f B", bytes_per_message);
  return buf;
}

// The variants of a part, direct then ringfeed for each worker count.
std::vector<Variant> variants_of(const Options& o, Part part) {
  std::vector<Variant> v;
  if (part == Part::broadcast) {
    const int b = static_cast<int>(o.broadcast_workers);
    return {variant(Kind::direct, b, true), variant(Kind::ringfeed, b, true)};
  }
  for (const std::uint64_t n : o.workers) {
    v.push_back(variant(Kind::direct, static_cast<int>(n), false));
    v.push_back(variant(Kind::ringfeed, static_cast<int>(n), false));
  }
  return v;
}

}  // namespace

int kafka_main(ArgReader& args) {
  const Options o = parse(args);
  const std::vector<Variant> throughput =
      o.throughput ? variants_of(o, Part::throughput) : std::vector<Variant>{};
  const std::vector<Variant> broadcast =
      o.broadcast ? variants_of(o, Part::broadcast) : std::vector<Variant>{};
  const std::vector<Variant> latency =
      o.latency ? variants_of(o, Part::latency) : std::vector<Variant>{};
  std::printf("ringfeed-bench kafka on %s, librdkafka %s\n", machine_description().c_str(),
              rd_kafka_version_str());
  std::printf(
      "a fresh mock cluster per run: %llu brokers on 127.0.0.1, %llu partitions per topic; "
      "nothing pinned; %zu-byte values\n",
      static_cast<unsigned long long>(o.brokers), static_cast<unsigned long long>(o.partitions),
      kValueBytes);
  std::printf(
      "direct: rd_kafka_consumer_poll, enable.auto.commit=true (every 5 s and at close), "
      "fetch.wait.max.ms %llu; "
      "ringfeed: fetcher on kafka://BROKERS?topic=T&group=G&fetch-max-wait-ms=%llu&"
      "partitions=0..%llu%s, pop(%llu) + "
      "ack, %llu MiB rings, workers spin %llu us (throughput) / %llu us (latency), then "
      "sleep in a pop up to %llu us\n",
      static_cast<unsigned long long>(o.fetch_wait_ms),
      static_cast<unsigned long long>(o.fetch_wait_ms),
      static_cast<unsigned long long>(o.partitions - 1),
      o.source_params.empty() ? "" : ("&" + o.source_params).c_str(),
      static_cast<unsigned long long>(o.pop_batch), static_cast<unsigned long long>(o.ring_mb),
      static_cast<unsigned long long>(o.throughput_spin_us),
      static_cast<unsigned long long>(o.spin_us), static_cast<unsigned long long>(o.poll_us));
  if (o.throughput || o.broadcast) {
    std::printf("backlog: %llu messages, read from the start by each variant (at most %llu s)\n",
                static_cast<unsigned long long>(o.count),
                static_cast<unsigned long long>(o.seconds));
  }
  if (o.latency) {
    std::printf(
        "latency: %llu messages/s, %llu s recorded per variant after %llu unrecorded; "
        "CLOCK_REALTIME at the worker - the producer's just before rd_kafka_producev\n",
        static_cast<unsigned long long>(o.rate), static_cast<unsigned long long>(o.latency_seconds),
        static_cast<unsigned long long>(o.warmup));
  }
  std::fflush(stdout);

  std::vector<std::string> topics = {kBacklogTopic};
  for (std::size_t i = 0; i < latency.size(); ++i) topics.push_back("lat" + std::to_string(i));
  const auto per_variant = static_cast<unsigned>(o.seconds + 60);
  const auto watchdog = static_cast<unsigned>(
      300 + o.count / 20'000 + (throughput.size() + broadcast.size()) * per_variant +
      latency.size() * (3 * (o.latency_seconds + o.warmup / o.rate) + 120));
  Figures fig;
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    arm_watchdog(watchdog);
    test::KafkaMockCluster mock;
    if (auto started = mock.start({.brokers = static_cast<int>(o.brokers),
                                   .topics = topics,
                                   .partitions = static_cast<int>(o.partitions)});
        !started) {
      throw std::runtime_error("starting the mock cluster: " + started.error().message);
    }
    // The fetchers' dead-letter directories (none expected), removed after the run.
    const WorkDir work("", "ringfeed-bench-kafka");
    Cluster cluster{mock.bootstrap(), {}};
    for (const auto& b : mock.brokers()) cluster.ports.push_back(b.port);
    std::printf("\nrun %llu/%llu: mock cluster pid %d at %s\n",
                static_cast<unsigned long long>(run), static_cast<unsigned long long>(o.runs),
                static_cast<int>(mock.pid()), cluster.bootstrap.c_str());
    if (o.throughput || o.broadcast) {
      const double fill = produce_backlog(o, cluster.bootstrap);
      std::printf("  backlog: %llu messages produced in %.2f s (%s)\n",
                  static_cast<unsigned long long>(o.count), fill,
                  rate_text(static_cast<double>(o.count) / fill).c_str());
    }
    int index = 0;  // names each measurement's groups and namespace
    auto run_one = [&](const Variant& v, Part part, const std::string& topic, Measurement& m) {
      SharedObject<Control> ctl;
      const std::string group = (v.kind == Kind::direct ? "d" : "rf") + std::to_string(index);
      const std::string ns = run_namespace("kf", run * 100 + static_cast<std::uint64_t>(index));
      ++index;
      if (!measure(o, cluster, v, part, topic, group, ns, work.path() + "/" + ns, *ctl, m)) {
        throw std::runtime_error("run " + std::to_string(run) + ", " + v.name + ": " +
                                 ctl->rv.error_message());
      }
    };
    if (o.throughput) {
      std::printf("  %-36s %10s %9s %10s %9s %12s\n", "throughput", "msgs/s", "taken", "bytes/msg",
                  "first", "incl. start");
      for (const Variant& v : throughput) {
        Measurement m;
        run_one(v, Part::throughput, kBacklogTopic, m);
        const double rate = static_cast<double>(m.taken) / m.seconds;
        const double with_start = static_cast<double>(m.taken) / (m.first_seconds + m.seconds);
        const double bytes = static_cast<double>(m.socket.bytes) / static_cast<double>(o.count);
        std::printf("  %-36s %10s %9llu %10s %7.0f ms %12s%s\n", v.name.c_str(),
                    rate_text(rate).c_str(), static_cast<unsigned long long>(m.taken),
                    bytes_text(bytes).c_str(), m.first_seconds * 1e3, rate_text(with_start).c_str(),
                    m.taken < o.count ? "  (time limit)" : "");
        std::fflush(stdout);
        fig.add(v.name + "|rate", rate);
        fig.add(v.name + "|start", with_start);
        fig.add(v.name + "|bytes", bytes);
      }
    }
    if (o.broadcast) {
      std::printf("  %-36s %10s %9s %10s %9s\n", "broadcast", "deliv/s", "taken", "bytes/msg",
                  "first");
      for (const Variant& v : broadcast) {
        Measurement m;
        run_one(v, Part::broadcast, kBacklogTopic, m);
        const double rate = static_cast<double>(m.taken) / m.seconds;
        const double bytes = static_cast<double>(m.socket.bytes) / static_cast<double>(o.count);
        std::printf("  %-36s %10s %9llu %10s %7.0f ms  (%d sockets", v.name.c_str(),
                    rate_text(rate).c_str(), static_cast<unsigned long long>(m.taken),
                    bytes_text(bytes).c_str(), m.first_seconds * 1e3, m.socket.sockets);
        if (v.kind == Kind::direct) {
          std::printf(
              "; librdkafka rxbytes %s/msg%s",
              bytes_text(static_cast<double>(m.rx_bytes) / static_cast<double>(o.count)).c_str(),
              m.statistics ? "" : ", statistics older than the last message");
        }
        std::printf(")%s\n", m.least < o.count ? "  (time limit)" : "");
        std::fflush(stdout);
        fig.add(v.name + "|rate", rate);
        fig.add(v.name + "|bytes", bytes);
      }
    }
    if (o.latency) {
      std::printf("  latency at %llu/s\n", static_cast<unsigned long long>(o.rate));
      for (std::size_t i = 0; i < latency.size(); ++i) {
        const Variant& v = latency[i];
        Measurement m;
        run_one(v, Part::latency, "lat" + std::to_string(i), m);
        std::printf("  %-36s", v.name.c_str());
        for (int f = 0; f < kLatencyFigures; ++f) {
          std::printf(" %s %s", kLatencyFigureNames[f],
                      format_ns(latency_figure(m.hist, f)).c_str());
        }
        std::printf(" (n=%llu)  producer %.0f/s", static_cast<unsigned long long>(m.hist.count()),
                    m.produced_rate);
        if (m.late != 0)
          std::printf(", %llu sends >100 us late", static_cast<unsigned long long>(m.late));
        if (m.taken != o.warmup + o.rate * o.latency_seconds) {
          std::printf(", %llu taken (redelivered after a rebalance)",
                      static_cast<unsigned long long>(m.taken));
        }
        std::printf("\n");
        std::fflush(stdout);
        for (int f = 0; f < kLatencyFigures; ++f) {
          fig.add(v.name + "|" + kLatencyFigureNames[f], latency_figure(m.hist, f));
        }
      }
    }
    disarm_watchdog();
    if (auto stopped = mock.stop(); !stopped) {
      throw std::runtime_error("stopping the mock cluster: " + stopped.error().message);
    }
    std::printf("  (%s)\n",
                run_note("not pinned", idle, others_share(before, sample_cpu())).c_str());
    std::fflush(stdout);
  }

  auto ratio = [&](const std::string& a, const std::string& b) {
    const double den = fig.median(b);
    return den > 0 ? fig.median(a) / den : 0.0;
  };
  std::printf("\nmedians of %llu runs, and ringfeed / direct (ratios of medians)\n",
              static_cast<unsigned long long>(o.runs));
  for (const auto* part : {&throughput, &broadcast}) {
    if (part->empty()) continue;
    const bool b = part == &broadcast;
    std::printf("  %-36s %10s %10s%s\n", b ? "broadcast" : "throughput", b ? "deliv/s" : "msgs/s",
                "bytes/msg", b ? "" : "  incl. start");
    for (const Variant& v : *part) {
      std::printf("  %-36s %10s %10s", v.name.c_str(),
                  rate_text(fig.median(v.name + "|rate")).c_str(),
                  bytes_text(fig.median(v.name + "|bytes")).c_str());
      if (!b) std::printf(" %12s", rate_text(fig.median(v.name + "|start")).c_str());
      std::printf("\n");
    }
    for (std::size_t i = 0; i + 1 < part->size(); i += 2) {
      const std::string& d = (*part)[i].name;
      const std::string& r = (*part)[i + 1].name;
      std::printf("  %-36s %10.3f %10.3f", (r + " / direct").c_str(),
                  ratio(r + "|rate", d + "|rate"), ratio(r + "|bytes", d + "|bytes"));
      if (!b) std::printf(" %12.3f", ratio(r + "|start", d + "|start"));
      std::printf("\n");
    }
  }
  if (!latency.empty()) {
    std::printf("  %-36s", "latency");
    for (const char* name : kLatencyFigureNames) std::printf(" %9s", name);
    std::printf("\n");
    for (const Variant& v : latency) {
      std::printf("  %-36s", v.name.c_str());
      for (const char* name : kLatencyFigureNames) {
        std::printf(" %9s", format_ns(fig.median(v.name + "|" + name)).c_str());
      }
      std::printf("\n");
    }
    for (std::size_t i = 0; i + 1 < latency.size(); i += 2) {
      const std::string& d = latency[i].name;
      const std::string& r = latency[i + 1].name;
      std::printf("  %-36s", (r + " / direct").c_str());
      for (const char* name : kLatencyFigureNames) {
        std::printf(" %9.3f", ratio(r + "|" + name, d + "|" + name));
      }
      std::printf("\n");
    }
  }
  std::printf(
      "  (bytes/msg: bytes the cluster sent to the fetcher, or to all direct consumers, per "
      "backlog message, at the socket layer)\n");
  return 0;
}

}  // namespace ringfeed::bench
