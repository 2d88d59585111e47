// The Kafka source against librdkafka's mock cluster (tests/support/kafka_mock.hpp, 3
// brokers on loopback), with records produced by librdkafka: URIs; every record handed
// out in order per partition with its Kafka offset, key, value and timestamp, from
// uncompressed and compressed batches; commits, and a new source of the same group
// resuming at the committed offsets; reset=latest; an unknown topic and a partition the
// topic does not have; leaders moved and errors injected by the mock; a malformed
// response from a fake broker. End to end through the real
// `ringfeed fetch` and a shared group of worker processes: every record consumed, the fetcher
// SIGKILLed mid-stream and started again, and in the end the group's committed offsets at the end
// of every partition.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "io/kafka_messages.hpp"
#include "io/kafka_source.hpp"
#include "io/source.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/headers.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "source_test_support.hpp"
#include "test_support.hpp"
#include "tests/support/kafka_mock.hpp"

#ifndef RINGFEED_BIN
#error "RINGFEED_BIN must name the ringfeed binary (tests/CMakeLists.txt)"
#endif

using namespace std::chrono_literals;

namespace io = ringfeed::io;
namespace kafka = ringfeed::io::kafka;
namespace test = ringfeed::test;
using test::Collect;
using test::contains;
using test::Got;
using test::poll_until;

namespace {

constexpr const char* kTopic = "orders";
constexpr int kPartitions = 3;

std::string key_of(int partition, int i) {
  return "k" + std::to_string(partition) + "-" + std::to_string(i % 7);
}
std::string value_of(int partition, int i) {
  return "value " + std::to_string(i) + " of partition " + std::to_string(partition) +
         ", compressible compressible compressible";
}
constexpr std::int64_t kBaseTimestampMs = 1'700'000'000'000;
// Every third record has headers: "i" (its number) and "gone" (a null value).
bool has_headers(int i) {
  return i % 3 == 0;
}
std::string headers_of(int i) {
  if (!has_headers(i)) return "";
  const std::string n = std::to_string(i);
  const ringfeed::OutHeader h[] = {{.key = "i", .value = n},
                                   {.key = "gone", .value = std::nullopt}};
  return ringfeed::encode_headers(h);
}

// Produces records [from, to) of partition `partition` with librdkafka, compressed by
// `codec`; returns an error message, or "" once every record was acknowledged.
std::string produce(const std::string& bootstrap, int partition, int from, int to,
                    const char* codec = "none") {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, const char*>>{{"bootstrap.servers", bootstrap.c_str()},
                                                        {"compression.codec", codec},
                                                        {"linger.ms", "5"},
                                                        {"log_level", "3"}}) {
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return std::string(name) + ": " + err;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) return std::string("rd_kafka_new: ") + err;
  const std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> guard(rk, rd_kafka_destroy);
  for (int i = from; i < to; ++i) {
    const std::string key = key_of(partition, i);
    std::string value = value_of(partition, i);
    // Owned by the message once produced.
    rd_kafka_headers_t* headers = rd_kafka_headers_new(2);
    if (has_headers(i)) {
      const std::string n = std::to_string(i);
      rd_kafka_header_add(headers, "i", -1, n.data(), static_cast<ssize_t>(n.size()));
      rd_kafka_header_add(headers, "gone", -1, nullptr, 0);
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
    const rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(kTopic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(value.data(), value.size()), RD_KAFKA_V_TIMESTAMP(kBaseTimestampMs + i),
        RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
#pragma GCC diagnostic pop
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_destroy(headers);
      return std::string("rd_kafka_producev: ") + rd_kafka_err2str(e);
    }
    rd_kafka_poll(rk, 0);
  }
  if (rd_kafka_flush(rk, 30'000) != RD_KAFKA_RESP_ERR_NO_ERROR) return "rd_kafka_flush timed out";
  return "";
}

// Checks that `got` are records [from, to) of `partition`, in order.
void expect_records(const std::vector<Got>& got, int partition, int from, int to) {
  ASSERT_EQ(got.size(), static_cast<std::size_t>(to - from)) << "partition " << partition;
  for (int i = from; i < to; ++i) {
    const Got& g = got[static_cast<std::size_t>(i - from)];
    ASSERT_EQ(g.offset, static_cast<std::uint64_t>(i)) << "partition " << partition;
    EXPECT_EQ(g.next_offset, g.offset + 1);
    EXPECT_EQ(g.key, key_of(partition, i));
    EXPECT_EQ(g.value, value_of(partition, i));
    EXPECT_EQ(g.headers, headers_of(i)) << "record " << i;
    EXPECT_EQ(g.timestamp_ns, (kBaseTimestampMs + i) * 1'000'000);
  }
}

class KafkaSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = cluster_.start({.brokers = 3, .topics = {kTopic}, .partitions = kPartitions});
    ASSERT_TRUE(started) << started.error().message;
  }
  void TearDown() override {
    auto stopped = cluster_.stop();
    EXPECT_TRUE(stopped) << stopped.error().message;
  }
  std::string uri(const std::string& params) const {
    return "kafka://" + cluster_.bootstrap() + "?topic=" + kTopic + "&" + params;
  }
  std::unique_ptr<io::Source> open(const std::string& params) {
    return test::open_source_or_null(uri(params));
  }
  // Records [0, n) in each partition: partition 0 uncompressed, 1 lz4, 2 zstd.
  void produce_all(int n) {
    const char* codecs[kPartitions] = {"none", "lz4", "zstd"};
    for (int p = 0; p < kPartitions; ++p) {
      ASSERT_EQ(produce(cluster_.bootstrap(), p, 0, n, codecs[p]), "") << "partition " << p;
    }
  }

  test::KafkaMockCluster cluster_;
};

TEST(KafkaUri, ReadsEveryParameter) {
  auto o = io::parse_kafka_uri(
      "kafka://a:9092,[::1]:9093?topic=t&group=g&partitions=3,1&reset=latest&max-bytes=4096&"
      "fetch-max-wait-ms=25&client-id=me&connect-timeout-ms=50&session-timeout-ms=6000&heartbeat-"
      "interval-ms=1000&"
      "revoke-grace-ms=4000&metadata-max-age-ms=60000");
  ASSERT_TRUE(o.ok()) << o.error().message;
  ASSERT_EQ(o->bootstrap.size(), 2u);
  EXPECT_EQ(o->bootstrap[0].host, "a");
  EXPECT_EQ(o->bootstrap[0].port, 9092);
  EXPECT_EQ(o->bootstrap[1].host, "::1");
  EXPECT_EQ(o->bootstrap[1].port, 9093);
  EXPECT_EQ(o->topic, "t");
  EXPECT_EQ(o->group, "g");
  EXPECT_EQ(o->partitions, (std::vector<std::int32_t>{3, 1}));
  EXPECT_TRUE(o->reset_latest);
  EXPECT_EQ(o->max_bytes, 4096u);
  EXPECT_EQ(o->fetch_max_wait_ms, 25u);
  EXPECT_EQ(o->client_id, "me");
  EXPECT_EQ(o->connect_timeout_ms, 50u);
  EXPECT_EQ(o->session_timeout_ms, 6000u);
  EXPECT_EQ(o->heartbeat_interval_ms, 1000u);
  EXPECT_EQ(o->revoke_grace_ms, 4000u);
  EXPECT_EQ(o->metadata_max_age_ms, 60000u);
  auto d = io::parse_kafka_uri("kafka://a:1?topic=t&group=g");
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_TRUE(d->partitions.empty());
  EXPECT_FALSE(d->reset_latest);
  EXPECT_EQ(d->fetch_max_wait_ms, 200u);
  EXPECT_EQ(d->metadata_max_age_ms, 300000u);
}

TEST(KafkaUri, BadUrisAreRefusedNamingWhatIsWrong) {
  for (const auto& [bad, says] : std::vector<std::pair<std::string, std::string>>{
           {"kafka://?topic=t&group=g", "no broker"},
           {"kafka://a?topic=t&group=g", "no port"},
           {"kafka://a:0?topic=t&group=g", "port '0'"},
           {"kafka://a:1?group=g", "no topic"},
           {"kafka://a:1?topic=t", "no group"},
           {"kafka://a:1?topic=t&group=g&partitions=1,x", "partition 'x'"},
           {"kafka://a:1?topic=t&group=g&partitions=1,1", "listed twice"},
           {"kafka://a:1?topic=t&group=g&reset=middle", "reset 'middle'"},
           {"kafka://a:1?topic=t&group=g&max-bytes=1", "max-bytes '1'"},
           {"kafka://a:1?topic=t&group=g&fetch-max-wait-ms=0", "fetch-max-wait-ms '0'"},
           {"kafka://a:1?topic=t&group=g&fetch-max-wait-ms=60001", "fetch-max-wait-ms '60001'"},
           {"kafka://a:1?topic=t&group=g&metadata-max-age-ms=99", "metadata-max-age-ms '99'"},
           {"kafka://a:1?topic=t&group=g&topic=u", "given twice"},
           {"kafka://a:1?topic=t&group=g&session-timeout-ms=5000&revoke-grace-ms=3000",
            "heartbeat-interval-ms 3000 + revoke-grace-ms 3000 must be below session-timeout-ms "
            "5000"},
           {"kafka://a:1?topic=t&group=g&colour=red", "unknown parameter 'colour'"}}) {
    auto o = io::open_source(bad, {});
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_TRUE(contains(o.error().message, says)) << bad << ": " << o.error().message;
  }
}

TEST_F(KafkaSourceTest, HandsOutEveryRecordInOrderPerPartitionWithItsOffset) {
  produce_all(300);
  auto s = open("group=g1");
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->partitions(), static_cast<std::uint32_t>(kPartitions));
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 3 * 300)) << sink.total() << " records";
  for (int p = 0; p < kPartitions; ++p) {
    expect_records(sink.got[static_cast<std::uint32_t>(p)], p, 0, 300);
    EXPECT_EQ(s->status(static_cast<std::uint32_t>(p)).fetched, 300u);
    EXPECT_EQ(s->status(static_cast<std::uint32_t>(p)).error, "");
  }
  // Records produced while it runs come too.
  ASSERT_EQ(produce(cluster_.bootstrap(), 1, 300, 320, "lz4"), "");
  ASSERT_TRUE(poll_until(*s, sink, 3 * 300 + 20));
  expect_records(sink.got[1], 1, 0, 320);
}

TEST_F(KafkaSourceTest, ANewSourceOfTheGroupResumesAtTheCommittedOffsets) {
  produce_all(200);
  {
    // Pinned partitions: source partition 0 is Kafka partition 2, 1 is 0.
    auto s = open("group=g2&partitions=2,0&max-bytes=4096");
    ASSERT_NE(s, nullptr);
    ASSERT_EQ(s->partitions(), 2u);
    Collect sink;
    ASSERT_TRUE(poll_until(*s, sink, 400));
    expect_records(sink.got[0], 2, 0, 200);
    expect_records(sink.got[1], 0, 0, 200);
    ASSERT_TRUE(s->commit(0, 120).ok());
    ASSERT_TRUE(s->commit(1, 7).ok());
    auto flushed = s->flush(10s);
    ASSERT_TRUE(flushed.ok()) << flushed.error().message;
    EXPECT_EQ(s->committed(0), 120u);
    EXPECT_EQ(s->committed(1), 7u);
    auto refused = s->commit(1, 500);
    EXPECT_FALSE(refused.ok());
  }
  auto s = open("group=g2&partitions=2,0");
  ASSERT_NE(s, nullptr);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 80 + 193));
  expect_records(sink.got[0], 2, 120, 200);
  expect_records(sink.got[1], 0, 7, 200);
  EXPECT_EQ(s->committed(0), 120u);
  // A group of its own starts at the beginning.
  auto other = open("group=g3&partitions=1");
  ASSERT_NE(other, nullptr);
  Collect all;
  ASSERT_TRUE(poll_until(*other, all, 200));
  expect_records(all.got[0], 1, 0, 200);
}

TEST_F(KafkaSourceTest, ResetLatestStartsAtTheEnd) {
  produce_all(50);
  auto s = open("group=g4&partitions=0&reset=latest");
  ASSERT_NE(s, nullptr);
  Collect sink;
  // It starts at the end (fetched says where), and nothing old comes.
  ASSERT_TRUE(test::wait_until(
      [&] {
        EXPECT_TRUE(s->poll_batches(sink, 20ms).ok());
        return s->status(0).fetched == 50;
      },
      10s))
      << s->status(0).error;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s->poll_batches(sink, 20ms).ok());
  EXPECT_EQ(sink.total(), 0u);
  ASSERT_EQ(produce(cluster_.bootstrap(), 0, 50, 60), "");
  ASSERT_TRUE(poll_until(*s, sink, 10));
  expect_records(sink.got[0], 0, 50, 60);
}

// The mock cluster holds a Fetch that finds nothing for its whole max wait, even when
// records arrive meanwhile (a real broker answers then), so the wait shows in how late
// a record produced into an idle partition comes.
TEST_F(KafkaSourceTest, FetchMaxWaitIsHowLongTheBrokerHoldsAnEmptyFetch) {
  auto late_by = [&](const std::string& group, const std::string& max_wait_ms, int record) {
    auto s = open("group=" + group + "&partitions=0&fetch-max-wait-ms=" + max_wait_ms);
    EXPECT_NE(s, nullptr);
    if (s == nullptr) return std::chrono::steady_clock::duration::max();
    Collect sink;
    // The record before comes first: the Fetch sent after its answer finds nothing.
    EXPECT_TRUE(poll_until(*s, sink, static_cast<std::size_t>(record)));
    const auto fetched_before = std::chrono::steady_clock::now();
    EXPECT_EQ(produce(cluster_.bootstrap(), 0, record, record + 1), "");
    const auto produced = std::chrono::steady_clock::now();
    EXPECT_TRUE(poll_until(*s, sink, static_cast<std::size_t>(record) + 1));
    expect_records(sink.got[0], 0, 0, record + 1);
    const auto came = std::chrono::steady_clock::now();
    // Held: from the Fetch sent before the record was produced; short: from the produce.
    return max_wait_ms == "20" ? came - produced : came - fetched_before;
  };
  ASSERT_EQ(produce(cluster_.bootstrap(), 0, 0, 1), "");
  const auto held = late_by("held", "2500", 1);
  EXPECT_GE(held, 1500ms) << "a Fetch held 2.5 s answered after "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(held).count()
                          << " ms";
  const auto short_wait = late_by("short", "20", 2);
  EXPECT_LT(short_wait, 1500ms);
}

TEST_F(KafkaSourceTest, AnUnknownTopicOrPartitionIsAClearError) {
  auto o = io::open_source(
      "kafka://" + cluster_.bootstrap() + "?topic=no-such-topic&group=g&connect-timeout-ms=500",
      {});
  ASSERT_FALSE(o.ok());
  EXPECT_TRUE(contains(o.error().message, "no-such-topic")) << o.error().message;
  EXPECT_TRUE(contains(o.error().message, "does not exist")) << o.error().message;

  // A pinned partition the topic does not have: the source opens, the partition says why.
  auto s = open("group=g&partitions=0,9");
  ASSERT_NE(s, nullptr);
  Collect sink;
  EXPECT_TRUE(test::wait_until(
      [&] {
        EXPECT_TRUE(s->poll_batches(sink, 20ms).ok());
        return contains(s->status(1).error, "partition 9 of topic 'orders' does not exist");
      },
      10s))
      << s->status(1).error;
}

TEST_F(KafkaSourceTest, LeadersMovedAndInjectedErrorsLoseAndRepeatNothing) {
  produce_all(200);
  auto s = open("group=g5&max-bytes=4096");
  ASSERT_NE(s, nullptr);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 3 * 200));
  // Every partition's leader moves: fetches from the old one are refused
  // (NOT_LEADER_OR_FOLLOWER), the source asks for the metadata again and goes on.
  auto moved = cluster_.move_leaders();
  ASSERT_TRUE(moved) << moved.error().message;
  for (int p = 0; p < kPartitions; ++p) ASSERT_EQ(produce(cluster_.bootstrap(), p, 200, 400), "");
  ASSERT_TRUE(poll_until(*s, sink, 3 * 400)) << sink.total() << "; " << s->status(0).error;
  // Fetch errors and a dropped connection; a commit refused once (NOT_COORDINATOR).
  auto pushed = cluster_.push_errors();
  ASSERT_TRUE(pushed) << pushed.error().message;
  for (int p = 0; p < kPartitions; ++p) ASSERT_EQ(produce(cluster_.bootstrap(), p, 400, 500), "");
  ASSERT_TRUE(poll_until(*s, sink, 3 * 500)) << sink.total() << "; " << s->status(0).error;
  for (int p = 0; p < kPartitions; ++p) {
    expect_records(sink.got[static_cast<std::uint32_t>(p)], p, 0, 500);
  }
  ASSERT_TRUE(test::wait_until(
      [&] {
        for (std::uint32_t p = 0; p < kPartitions; ++p) static_cast<void>(s->commit(p, 500));
        static_cast<void>(s->flush(100ms));
        return s->committed(0) == 500 && s->committed(1) == 500 && s->committed(2) == 500;
      },
      20s))
      << s->status(0).error;
  s.reset();
  auto again = open("group=g5");
  ASSERT_NE(again, nullptr);
  Collect none;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(again->poll_batches(none, 10ms).ok());
  EXPECT_EQ(none.total(), 0u);
}

// Kafka partitions each source holds now (status().assigned), in order.
std::vector<std::uint32_t> held(const io::Source& s) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t p = 0; p < s.partitions(); ++p) {
    if (s.status(p).assigned) out.push_back(p);
  }
  return out;
}

// Whether `a` and `b` hold disjoint, non-empty sets of partitions that cover them all.
bool split(const io::Source& a, const io::Source& b) {
  const auto ha = held(a);
  const auto hb = held(b);
  if (ha.empty() || hb.empty() || ha.size() + hb.size() != a.partitions()) return false;
  for (const std::uint32_t p : ha) {
    if (std::find(hb.begin(), hb.end(), p) != hb.end()) return false;
  }
  return true;
}

// Offsets of partition `p` in `sink` strictly grow.
bool only_grow(const Collect& sink, std::uint32_t p) {
  const auto it = sink.got.find(p);
  if (it == sink.got.end()) return true;
  for (std::size_t i = 1; i < it->second.size(); ++i) {
    if (it->second[i].offset <= it->second[i - 1].offset) return false;
  }
  return true;
}

// Whether records [0, n) of every partition are among those of `a` and `b`.
bool covered(const Collect& a, const Collect& b, int n) {
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    std::vector<bool> seen(static_cast<std::size_t>(n), false);
    for (const Collect* c : {&a, &b}) {
      const auto it = c->got.find(p);
      if (it == c->got.end()) continue;
      for (const Got& g : it->second) {
        if (g.offset < static_cast<std::uint64_t>(n)) seen[g.offset] = true;
      }
    }
    if (std::find(seen.begin(), seen.end(), false) != seen.end()) return false;
  }
  return true;
}

// Group membership between two sources of one group: the cluster splits the partitions
// between them (each holds a non-empty, disjoint part; the others say they are not
// assigned), and when one leaves, the other holds them all again. A source that gave a
// partition up and gets it back resumes after what it handed out before, or after what
// the other committed: its offsets only grow, as a ring's must. Nothing is lost.
TEST_F(KafkaSourceTest, TwoMembersSplitThePartitionsAndALeavingOneHandsThemBack) {
  produce_all(100);
  const std::string params =
      "group=gm&session-timeout-ms=3000&heartbeat-interval-ms=200&revoke-grace-ms=300";
  auto s1 = open(params);
  ASSERT_NE(s1, nullptr);
  Collect got1;
  // Alone, it gets every partition (after the coordinator's first wait).
  ASSERT_TRUE(poll_until(*s1, got1, 3 * 100)) << got1.total();
  EXPECT_EQ(held(*s1).size(), static_cast<std::size_t>(kPartitions));

  auto s2 = open(params);
  ASSERT_NE(s2, nullptr);
  Collect got2;
  const auto poll_both = [&] {
    for (const auto& [s, sink] : {std::pair{s1.get(), &got1}, std::pair{s2.get(), &got2}}) {
      auto n = s->poll_batches(*sink, 10ms);
      EXPECT_TRUE(n.ok()) << (n.ok() ? "" : n.error().message);
    }
    // The second member commits what it takes; the first never does.
    for (const auto& [p, records] : got2.got) {
      if (!records.empty() && s2->status(p).assigned) {
        static_cast<void>(s2->commit(p, records.back().next_offset));
      }
    }
  };
  ASSERT_TRUE(test::wait_until(
      [&] {
        poll_both();
        return split(*s1, *s2);
      },
      30s))
      << held(*s1).size() << " and " << held(*s2).size() << " held";
  for (const auto* s : {s1.get(), s2.get()}) {
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      const io::PartitionStatus st = s->status(p);
      if (!st.assigned) {
        EXPECT_TRUE(contains(st.error, "not assigned to this host: group 'gm'")) << st.error;
      }
    }
  }
  ASSERT_EQ(produce(cluster_.bootstrap(), 0, 100, 200), "");
  ASSERT_EQ(produce(cluster_.bootstrap(), 1, 100, 200), "");
  ASSERT_EQ(produce(cluster_.bootstrap(), 2, 100, 200), "");
  ASSERT_TRUE(test::wait_until(
      [&] {
        poll_both();
        return covered(got1, got2, 200);
      },
      30s));
  ASSERT_TRUE(s2->flush(10s).ok());
  s2.reset();  // LeaveGroup: the first takes everything back
  ASSERT_TRUE(test::wait_until(
      [&] {
        auto n = s1->poll_batches(got1, 10ms);
        return n.ok() && held(*s1).size() == static_cast<std::size_t>(kPartitions);
      },
      30s));
  for (int p = 0; p < kPartitions; ++p) ASSERT_EQ(produce(cluster_.bootstrap(), p, 200, 300), "");
  ASSERT_TRUE(test::wait_until(
      [&] {
        auto n = s1->poll_batches(got1, 10ms);
        if (!n.ok()) return false;
        for (std::uint32_t p = 0; p < kPartitions; ++p) {
          if (got1.got[p].empty() || got1.got[p].back().offset != 299) return false;
        }
        return true;
      },
      30s));
  Collect none;
  EXPECT_TRUE(covered(got1, none, 300) || covered(got1, got2, 300));
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    EXPECT_TRUE(only_grow(got1, p)) << "partition " << p;
    EXPECT_TRUE(only_grow(got2, p)) << "partition " << p;
  }
}

// A broker on loopback that answers ApiVersions properly and, by default, Metadata
// with a body cut short (the source must say which API and field, and keep trying); or
// every request with what `answer` gives for its API and this broker's port (nothing
// for std::nullopt).
class FakeBroker {
 public:
  using Answer = std::function<std::optional<std::string>(std::int16_t api, std::uint16_t port)>;
  explicit FakeBroker(Answer answer = {}) : answer_(std::move(answer)) {
    if (!answer_) answer_ = [](std::int16_t api, std::uint16_t port) { return body_of(api, port); };
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeBroker() { close(); }
  // Stops serving and closes the listening socket.
  void close() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::uint16_t port() const { return port_; }
  int metadata_requests() const { return metadata_requests_; }

  // Metadata v2 up to the partitions of its one topic: this broker as node 1, the topic.
  static void metadata_head(kafka::Writer& w, std::uint16_t port) {
    w.array_count(1);
    w.int32(1);
    w.string("127.0.0.1");
    w.int32(port);
    w.nullable_string(std::nullopt);
    w.nullable_string("fake");
    w.int32(1);
    w.array_count(1);
    w.int16(0);
    w.string(kTopic);
    w.boolean(false);
  }

  // ApiVersions: Metadata v1-2, FindCoordinator v1-2 and the fetch path; with
  // `membership` also the group membership APIs, at the versions ringfeed speaks.
  static std::string api_versions_body(bool membership = false) {
    std::vector<std::array<std::int16_t, 3>> ranges = {{1, 4, 11}, {2, 1, 3},  {3, 1, 2}, {8, 2, 7},
                                                       {9, 1, 5},  {10, 1, 2}, {18, 0, 2}};
    if (membership) {
      for (const kafka::ApiKey api : {kafka::ApiKey::join_group, kafka::ApiKey::sync_group,
                                      kafka::ApiKey::heartbeat, kafka::ApiKey::leave_group}) {
        const kafka::VersionRange v = kafka::supported_versions(api);
        ranges.push_back({static_cast<std::int16_t>(api), v.min, v.max});
      }
    }
    std::string out;
    kafka::Writer w(out);
    w.int16(0);
    w.array_count(ranges.size());
    for (const auto& r : ranges) {
      w.int16(r[0]);
      w.int16(r[1]);
      w.int16(r[2]);
    }
    w.int32(0);
    return out;
  }

 private:
  static std::string body_of(std::int16_t api, std::uint16_t port) {
    std::string out;
    kafka::Writer w(out);
    if (api == static_cast<std::int16_t>(kafka::ApiKey::api_versions)) {
      return api_versions_body();
    } else {  // Metadata v2, cut inside the first partition
      metadata_head(w, port);
      w.array_count(1);
      w.int16(0);
      w.int32(0);
    }
    return out;
  }

  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string in;
      char buf[4096];
      while (!stop_) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 50) <= 0) continue;
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
        while (in.size() >= 12) {
          const auto be = [&](std::size_t at, int bytes) {
            std::uint32_t v = 0;
            for (int b = 0; b < bytes; ++b) v = v << 8 | static_cast<unsigned char>(in[at + b]);
            return v;
          };
          const std::size_t size = be(0, 4);
          if (in.size() < 4 + size) break;
          const auto api = static_cast<std::int16_t>(be(4, 2));
          const std::uint32_t correlation = be(8, 4);
          if (api == static_cast<std::int16_t>(kafka::ApiKey::metadata)) ++metadata_requests_;
          in.erase(0, 4 + size);
          const std::optional<std::string> body = answer_(api, port_);
          if (!body) continue;
          std::string frame;
          kafka::Writer w(frame);
          w.int32(static_cast<std::int32_t>(4 + body->size()));
          w.int32(static_cast<std::int32_t>(correlation));
          frame += *body;
          if (::send(c, frame.data(), frame.size(), MSG_NOSIGNAL) < 0) break;
        }
      }
      ::close(c);
    }
  }

  Answer answer_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> metadata_requests_{0};
  std::thread thread_;
};

TEST(KafkaSourceFake, AMalformedResponseDropsTheConnectionAndSaysWhichApiAndField) {
  FakeBroker broker;
  ASSERT_NE(broker.port(), 0);
  auto s = io::open_source(
      "kafka://127.0.0.1:" + std::to_string(broker.port()) + "?topic=orders&group=g&partitions=0",
      {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  Collect sink;
  // Said, and asked again on a new connection after the backoff.
  EXPECT_TRUE(test::wait_until(
      [&] {
        EXPECT_TRUE((*s)->poll_batches(sink, 20ms).ok());
        return contains((*s)->status(0).error, "Metadata v2: topics[0].partitions") &&
               broker.metadata_requests() >= 2;
      },
      10s))
      << (*s)->status(0).error;
  EXPECT_EQ(sink.total(), 0u);
}

// A topic that gains partitions after the source opened: a group member reads the
// metadata again (metadata-max-age-ms) and says which partitions it has no ring for.
TEST(KafkaSourceFake, PartitionsAddedToTheTopicLaterAreReportedAsNotServedHere) {
  std::atomic<int> partitions{2};
  FakeBroker broker([&](std::int16_t api, std::uint16_t port) -> std::optional<std::string> {
    std::string out;
    kafka::Writer w(out);
    switch (static_cast<kafka::ApiKey>(api)) {
      case kafka::ApiKey::api_versions:
        return FakeBroker::api_versions_body(true);
      case kafka::ApiKey::metadata: {  // v2
        FakeBroker::metadata_head(w, port);
        const int n = partitions.load();
        w.array_count(static_cast<std::size_t>(n));
        for (int p = 0; p < n; ++p) {
          w.int16(0);
          w.int32(p);
          w.int32(1);
          w.array_count(1);
          w.int32(1);
          w.array_count(1);
          w.int32(1);
        }
        return out;
      }
      case kafka::ApiKey::find_coordinator:  // v1-2: COORDINATOR_NOT_AVAILABLE, asked again
        w.int32(0);
        w.int16(15);
        w.nullable_string(std::nullopt);
        w.int32(-1);
        w.string("");
        w.int32(-1);
        return out;
      default:
        return std::nullopt;
    }
  });
  ASSERT_NE(broker.port(), 0);
  auto s = io::open_source("kafka://127.0.0.1:" + std::to_string(broker.port()) +
                               "?topic=" + std::string(kTopic) + "&group=g&metadata-max-age-ms=100",
                           {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ((*s)->partitions(), 2u);
  // Through a fetcher, which says it as the source's warning.
  const std::string ns = test::unique_ns("kfg");
  auto f = ringfeed::Fetcher::start({.ns = ns, .ring_bytes = 1 << 20}, std::move(*s));
  ASSERT_TRUE(f.ok()) << f.error().message;
  std::atomic<bool> stop{false};
  ringfeed::Status result = ringfeed::Ok{};
  std::thread runner([&] { result = (*f)->run(stop); });
  // Read again unasked, and nothing to say while the topic has the partitions it had.
  const int asked = broker.metadata_requests();
  EXPECT_TRUE(test::wait_until([&] { return broker.metadata_requests() >= asked + 2; }, 10s));
  EXPECT_EQ((*f)->source_warning(), "");

  partitions = 4;
  EXPECT_TRUE(test::wait_until([&] { return !(*f)->source_warning().empty(); }, 10s));
  EXPECT_EQ((*f)->source_warning(),
            "topic '" + std::string(kTopic) +
                "' has 4 partitions now and this fetcher has rings for the 2 it had when it "
                "started: partitions 2, 3 cannot be fetched on this host until its fetcher is "
                "restarted");
  EXPECT_EQ((*f)->stats().size(), 2u);
  // In the fetcher's segment too, for ringfeed stat.
  {
    auto seg = ringfeed::shm::Segment::open(ringfeed::shm::fetcher_segment_name(ns),
                                            ringfeed::shm::Access::read_only);
    ASSERT_TRUE(seg.ok()) << seg.error().message;
    const auto* control = reinterpret_cast<const ringfeed::shm::FetcherControl*>(seg->base());
    EXPECT_EQ(control->source_warning.load(), (*f)->source_warning());
  }
  stop.store(true);
  (*f)->wake();
  runner.join();
  EXPECT_TRUE(result.ok()) << result.error().message;
}

TEST(KafkaSourceDown, AClusterThatIsDownIsWaitedForWithoutSpinning) {
  // Nothing listens on the port of a socket that was bound and closed.
  FakeBroker gone;
  const std::uint16_t port = gone.port();
  gone.close();
  auto s = io::open_source(
      "kafka://127.0.0.1:" + std::to_string(port) + "?topic=orders&group=g&partitions=0,1", {});
  ASSERT_TRUE(s.ok()) << s.error().message;  // pinned partitions: opened lazily
  Collect sink;
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < 1s) {
    ASSERT_TRUE((*s)->poll_batches(sink, 100ms).ok());
  }
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  const auto cpu_us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000 + r.ru_utime.tv_usec +
           r.ru_stime.tv_usec;
  };
  EXPECT_LT(cpu_us(after) - cpu_us(before), 300'000);
  EXPECT_TRUE(contains((*s)->status(1).error, "waiting for the Kafka cluster: 127.0.0.1:" +
                                                  std::to_string(port) + ": connect"))
      << (*s)->status(1).error;
}

// --- through the fetcher ------------------------------------------------------------

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kPerPartition = 1000;
#else
constexpr int kPerPartition = 4000;
#endif

// Per record: how many times a worker took it; in memory every process of the test shares.
struct Ledger {
  std::atomic<std::uint32_t> seen[kPartitions][kPerPartition];
  std::atomic<std::uint64_t> taken;
  std::atomic<std::uint64_t> by_host[2][kPartitions];  // records taken through each namespace
  // Pops that said end_of_partition, through each namespace.
  std::atomic<std::uint64_t> ended[2][kPartitions];
};

Ledger* make_ledger() {
  void* p =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Ledger{};
}

// A shared consumer of `partition` that records every record it takes (by its value) and
// acks it. Runs until killed; waits for the fetcher (and its successor) by itself.
int worker(const std::string& ns, std::uint32_t partition, Ledger* ledger, int host = 0) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::unique_ptr<ringfeed::Consumer> c;
  for (const auto until = std::chrono::steady_clock::now() + 60s; !c;) {
    auto a = ringfeed::Consumer::attach(
        {.ns = ns, .partition = partition, .group = "w", .mode = ringfeed::Mode::shared});
    if (a) {
      c = std::move(a.value());
    } else if (std::chrono::steady_clock::now() > until) {
      std::fprintf(stderr, "attach: %s\n", a.error().message.c_str());
      return 2;
    } else {
      ::usleep(2000);  // the fetcher is not up yet
    }
  }
  for (;;) {
    const auto& b = c->pop(64, 100ms);
    if (b.status() == ringfeed::PopStatus::end_of_partition) {
      ledger->ended[host][partition].fetch_add(1);
      continue;
    }
    if (b.status() != ringfeed::PopStatus::ok) {
      if (b.status() == ringfeed::PopStatus::timed_out || b.status() == ringfeed::PopStatus::closed)
        continue;
      std::fprintf(stderr, "pop: %s\n", ringfeed::to_string(b.status()));
      return 3;
    }
    for (const auto& m : b) {
      int i = -1;
      int p = -1;
      const std::string v(m.value());
      if (std::sscanf(v.c_str(), "value %d of partition %d", &i, &p) != 2 || p < 0 ||
          p >= kPartitions || i < 0 || i >= kPerPartition ||
          m.offset() != static_cast<std::uint64_t>(i)) {
        std::fprintf(stderr, "unexpected record at offset %llu: %s\n",
                     static_cast<unsigned long long>(m.offset()), v.c_str());
        return 4;
      }
      if (m.headers() != headers_of(i)) {
        std::fprintf(stderr, "record %d of partition %d: %zu bytes of headers, not %zu\n", i, p,
                     m.headers().size(), headers_of(i).size());
        return 5;
      }
      ledger->seen[p][i].fetch_add(1);
      ledger->taken.fetch_add(1);
      ledger->by_host[host][p].fetch_add(1);
    }
    c->ack(b);
  }
}

std::uint64_t consumed(const Ledger* ledger) {
  std::uint64_t n = 0;
  for (int p = 0; p < kPartitions; ++p) {
    for (int i = 0; i < kPerPartition; ++i) n += ledger->seen[p][i].load() != 0;
  }
  return n;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The offsets group `group` committed, per partition (-1: none), asked at its coordinator.
std::vector<std::int64_t> committed_offsets(const test::KafkaMockCluster& cluster,
                                            const std::string& group) {
  std::vector<std::int64_t> out(kPartitions, -1);
  auto any = test::KafkaClient::connect(cluster.brokers()[0]);
  if (!any) return out;
  kafka::FindCoordinatorResponse where;
  if (!any->call(kafka::FindCoordinatorRequest{.key = group}, 2, where) || where.error_code != 0)
    return out;
  auto c = test::KafkaClient::connect({where.host, static_cast<std::uint16_t>(where.port)});
  if (!c) return out;
  kafka::OffsetFetchResponse r;
  if (!c->call(
          kafka::OffsetFetchRequest{
              .group_id = group,
              .topics = std::vector<kafka::OffsetFetchTopicRequest>{{kTopic, {0, 1, 2}}}},
          5, r)) {
    return out;
  }
  for (const auto& t : r.topics) {
    for (const auto& p : t.partitions) {
      if (p.partition_index >= 0 && p.partition_index < kPartitions)
        out[static_cast<std::size_t>(p.partition_index)] = p.committed_offset;
    }
  }
  return out;
}

TEST_F(KafkaSourceTest, ThroughTheFetcherEveryRecordIsConsumedAndAKilledFetcherLosesNothing) {
  produce_all(kPerPartition / 2);
  test::TempDir dir{"ringfeed-kafka-fetch"};
  const std::string ns = test::unique_ns("rkf");
  // A killed fetcher stays a member of the group until its session times out.
  const std::string source =
      uri("group=ringfeed&session-timeout-ms=3000&heartbeat-interval-ms=300&revoke-grace-ms=500");
  Ledger* ledger = make_ledger();
  const auto fetch = [&](const std::string& err) {
    return test::spawn_program(RINGFEED_BIN,
                               {"fetch", "--namespace", ns, "--source", source, "--ring-mb", "1",
                                "--dead-letter", dir.file("dead-letters")},
                               "", "", dir.file(err));
  };
  pid_t fetcher = fetch("fetch.err");
  std::vector<pid_t> workers;
  for (std::uint32_t i = 0; i < 2 * kPartitions; ++i) {
    workers.push_back(test::fork_child([&, i] { return worker(ns, i % kPartitions, ledger); }));
  }
  const std::uint64_t total = std::uint64_t{kPartitions} * kPerPartition;
  ASSERT_TRUE(test::wait_until([&] { return ledger->taken.load() >= total / 4; }, 60s))
      << ledger->taken.load() << " taken; fetcher: " << slurp(dir.file("fetch.err"));
  // Until something dies, the shared group takes every record once.
  std::uint64_t twice = 0;
  for (int p = 0; p < kPartitions; ++p) {
    for (int i = 0; i < kPerPartition; ++i) twice += ledger->seen[p][i].load() > 1;
  }
  EXPECT_EQ(twice, 0u);
  ::kill(fetcher, SIGKILL);
  test::wait_child(fetcher);
  fetcher = fetch("fetch2.err");
  // Once the first half is consumed and committed, a fetcher killed again re-reads none
  // of it: every record of the second half comes once, nothing else.
  const std::vector<std::int64_t> half(kPartitions, kPerPartition / 2);
  ASSERT_TRUE(test::wait_until(
      [&] {
        return consumed(ledger) == total / 2 && committed_offsets(cluster_, "ringfeed") == half;
      },
      60s))
      << consumed(ledger) << " of " << total / 2
      << " consumed; fetcher: " << slurp(dir.file("fetch2.err"));
  const std::uint64_t taken_before = ledger->taken.load();
  ::kill(fetcher, SIGKILL);
  test::wait_child(fetcher);
  fetcher = fetch("fetch3.err");
  const char* codecs[kPartitions] = {"none", "lz4", "zstd"};
  for (int p = 0; p < kPartitions; ++p) {
    ASSERT_EQ(produce(cluster_.bootstrap(), p, kPerPartition / 2, kPerPartition, codecs[p]), "");
  }
  const std::vector<std::int64_t> end(kPartitions, kPerPartition);
  ASSERT_TRUE(test::wait_until(
      [&] { return consumed(ledger) == total && committed_offsets(cluster_, "ringfeed") == end; },
      120s))
      << consumed(ledger) << " of " << total
      << " consumed; fetcher: " << slurp(dir.file("fetch3.err"));
  EXPECT_EQ(ledger->taken.load(), taken_before + total / 2);
  for (pid_t w : workers) ::kill(w, SIGKILL);
  for (pid_t w : workers) test::wait_child(w);
  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(test::wait_child(fetcher, 30s), 0) << slurp(dir.file("fetch3.err"));
  // Taken twice: what the first killed fetcher had handed out and not committed.
  std::printf("%llu taken for %llu records\n",
              static_cast<unsigned long long>(ledger->taken.load()),
              static_cast<unsigned long long>(total));
}

// The partitions a `ringfeed fetch` holds by what it last said on stderr of each: one
// that it said is not assigned to it (or is being given up) is not held.
std::vector<bool> held_by_log(const std::string& log) {
  std::vector<bool> held(kPartitions, true);
  std::size_t at = 0;
  const std::string text = slurp(log);
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    unsigned p = 0;
    if (std::sscanf(line.c_str(), "ringfeed fetch: partition %u", &p) != 1 || p >= kPartitions) {
      continue;
    }
    held[p] = !contains(line, "not assigned to this host") && !contains(line, "being given up");
  }
  return held;
}

// Two fetchers (two namespaces standing for two hosts) of one Kafka group: the cluster
// splits the partitions between them, each taking a non-empty part, none taken by both;
// one is SIGKILLed, and once its session timed out the other holds every partition; every
// record is consumed at least once, and in the end the group committed every partition to
// its end.
TEST_F(KafkaSourceTest, TwoFetchersSplitThePartitionsAndTheSurvivorTakesAllOfAKilledOne) {
  const int third = kPerPartition / 3;
  for (int p = 0; p < kPartitions; ++p) ASSERT_EQ(produce(cluster_.bootstrap(), p, 0, third), "");
  test::TempDir dir{"ringfeed-kafka-split"};
  const std::string ns[2] = {test::unique_ns("rks"), test::unique_ns("rks")};
  const std::string source =
      uri("group=split&session-timeout-ms=3000&heartbeat-interval-ms=300&revoke-grace-ms=500");
  Ledger* ledger = make_ledger();
  const auto fetch = [&](int host) {
    return test::spawn_program(
        RINGFEED_BIN,
        {"fetch", "--namespace", ns[host], "--source", source, "--ring-mb", "1", "--dead-letter",
         dir.file("dead-letters" + std::to_string(host))},
        "", "", dir.file("fetch" + std::to_string(host) + ".err"));
  };
  pid_t fetchers[2] = {fetch(0), fetch(1)};
  std::vector<pid_t> workers;
  for (int host = 0; host < 2; ++host) {
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      workers.push_back(
          test::fork_child([&, host, p] { return worker(ns[host], p, ledger, host); }));
    }
  }
  const auto logs = [&] {
    return "\nfetcher 0: " + slurp(dir.file("fetch0.err")) +
           "\nfetcher 1: " + slurp(dir.file("fetch1.err"));
  };
  const auto split = [&] {
    const std::vector<bool> a = held_by_log(dir.file("fetch0.err"));
    const std::vector<bool> b = held_by_log(dir.file("fetch1.err"));
    int in_a = 0;
    int in_b = 0;
    for (int p = 0; p < kPartitions; ++p) {
      if (a[p] == b[p]) return false;
      in_a += a[p];
      in_b += b[p];
    }
    return in_a > 0 && in_b > 0;
  };
  ASSERT_TRUE(test::wait_until(split, 60s)) << logs();
  const std::vector<bool> held_by_0 = held_by_log(dir.file("fetch0.err"));
  // The workers of a partition the other host holds are told so: end of partition.
  for (int p = 0; p < kPartitions; ++p) {
    const int other = held_by_0[p] ? 1 : 0;
    EXPECT_TRUE(test::wait_until([&] { return ledger->ended[other][p].load() > 0; }, 30s))
        << "partition " << p << " on host " << other << logs();
  }
  std::uint64_t before[2][kPartitions];
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < kPartitions; ++p) before[h][p] = ledger->by_host[h][p].load();
  }
  // Records produced now go to the fetcher that holds their partition.
  for (int p = 0; p < kPartitions; ++p) {
    ASSERT_EQ(produce(cluster_.bootstrap(), p, third, 2 * third), "");
  }
  ASSERT_TRUE(test::wait_until(
      [&] { return consumed(ledger) == std::uint64_t{kPartitions} * 2 * third; }, 60s))
      << consumed(ledger) << " consumed" << logs();
  std::uint64_t took[2] = {0, 0};
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < kPartitions; ++p) took[h] += ledger->by_host[h][p].load() - before[h][p];
  }
  EXPECT_GT(took[0], 0u);
  EXPECT_GT(took[1], 0u);
  for (int p = 0; p < kPartitions; ++p) {
    // Unless the group rebalanced meanwhile, only the holder took them.
    if (split()) {
      EXPECT_EQ(ledger->by_host[held_by_0[p] ? 1 : 0][p].load(), before[held_by_0[p] ? 1 : 0][p])
          << "partition " << p;
    }
  }

  // Fetcher 1 dies without leaving the group: once the coordinator dropped it, fetcher 0
  // holds everything.
  ::kill(fetchers[1], SIGKILL);
  test::wait_child(fetchers[1]);
  const auto killed_at = std::chrono::steady_clock::now();
  for (int p = 0; p < kPartitions; ++p) {
    ASSERT_EQ(produce(cluster_.bootstrap(), p, 2 * third, kPerPartition), "");
  }
  ASSERT_TRUE(test::wait_until(
      [&] {
        const std::vector<bool> a = held_by_log(dir.file("fetch0.err"));
        return std::find(a.begin(), a.end(), false) == a.end();
      },
      60s))
      << logs();
  const auto takeover = std::chrono::steady_clock::now() - killed_at;
  const std::uint64_t total = std::uint64_t{kPartitions} * kPerPartition;
  const std::vector<std::int64_t> end(kPartitions, kPerPartition);
  ASSERT_TRUE(test::wait_until(
      [&] { return consumed(ledger) == total && committed_offsets(cluster_, "split") == end; },
      120s))
      << consumed(ledger) << " of " << total << " consumed" << logs();
  for (pid_t w : workers) ::kill(w, SIGKILL);
  for (pid_t w : workers) test::wait_child(w);
  ::kill(fetchers[0], SIGTERM);
  EXPECT_EQ(test::wait_child(fetchers[0], 30s), 0) << logs();
  // What the killed fetcher left (a fetcher taking its namespace over would remove it).
  for (const auto& name : ringfeed::shm::Segment::list("ringfeed." + ns[1] + ".")) {
    ringfeed::shm::Segment::remove(name);
  }
  std::printf("took all partitions %lld ms after the kill; %llu taken for %llu records\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(takeover).count()),
              static_cast<unsigned long long>(ledger->taken.load()),
              static_cast<unsigned long long>(total));
}

}  // namespace
