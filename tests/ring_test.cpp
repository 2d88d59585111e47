// Unit tests of the partition ring within one process: publish, pop, ack, wrap-around,
// padding, backpressure, sizes.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::PublishStatus;
using ringfeed::Writer;

namespace {

std::unique_ptr<Writer> make_writer(const std::string& ns, std::uint64_t capacity = 1 << 16) {
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = capacity});
  EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message);
  return std::move(w.value());
}

std::unique_ptr<Consumer> attach(const std::string& ns, const std::string& group, Mode mode) {
  auto c = Consumer::attach({.ns = ns, .partition = 0, .group = group, .mode = mode});
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? std::move(c.value()) : nullptr;
}

TEST(Ring, PublishPopAckInOrder) {
  const auto ns = ringfeed::test::unique_ns("order");
  auto w = make_writer(ns);
  auto c = attach(ns, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  std::vector<std::string> values;
  std::vector<ringfeed::OutMessage> batch;
  for (int i = 0; i < 10; ++i) values.push_back("value-" + std::to_string(i));
  for (int i = 0; i < 10; ++i) {
    batch.push_back(
        {.key = "k", .value = values[i], .upstream_offset = 100u + i, .timestamp_ns = 7});
  }
  ASSERT_EQ(w->publish(batch, 0ns), 10u);
  const auto& b = c->pop(64, 0ns);
  ASSERT_EQ(b.status(), PopStatus::ok);
  ASSERT_EQ(b.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(b[i].value(), values[i]);
    EXPECT_EQ(b[i].key(), "k");
    EXPECT_EQ(b[i].offset(), 100u + i);
    EXPECT_EQ(b[i].timestamp_ns(), 7);
  }
  EXPECT_EQ(c->in_flight(), 10u);
  EXPECT_EQ(c->ack(b), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->in_flight(), 0u);
  EXPECT_EQ(c->watermark(), w->write_pos());
  EXPECT_EQ(c->try_pop(64).status(), PopStatus::timed_out);
}

TEST(Ring, DoubleAckIsRefused) {
  const auto ns = ringfeed::test::unique_ns("dack");
  auto w = make_writer(ns);
  auto c = attach(ns, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  ringfeed::OutMessage m{.value = "x"};
  ASSERT_EQ(w->publish({&m, 1}, 0ns), 1u);
  const auto& b = c->pop(1, 0ns);
  ASSERT_EQ(b.size(), 1u);
  const ringfeed::Message copy = b[0];
  EXPECT_EQ(c->ack(copy), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->ack(copy), ringfeed::AckStatus::not_leased);
}

TEST(Ring, OutOfOrderAcksHoldTheWatermarkAtTheOldestUnacked) {
  const auto ns = ringfeed::test::unique_ns("ooo");
  auto w = make_writer(ns);
  auto c = attach(ns, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  std::vector<ringfeed::OutMessage> batch(3, ringfeed::OutMessage{.value = "abc"});
  ASSERT_EQ(w->publish(batch, 0ns), 3u);
  const auto& b = c->pop(3, 0ns);
  ASSERT_EQ(b.size(), 3u);
  std::vector<ringfeed::Message> ms(b.begin(), b.end());
  const std::uint64_t start = c->watermark();
  EXPECT_EQ(c->ack(ms[2]), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->ack(ms[1]), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->watermark(), start);  // the first is still unacked
  EXPECT_EQ(c->ack(ms[0]), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->watermark(), w->write_pos());
}

TEST(Ring, WrapsAroundWithPaddingAndNeverOverwritesUnacked) {
  const auto ns = ringfeed::test::unique_ns("wrap");
  auto w = make_writer(ns, 4096);
  auto c = attach(ns, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  std::string value(300, 'v');
  std::uint64_t next_expected = 0;
  std::uint64_t published = 0;
  for (int round = 0; round < 200; ++round) {
    // Fill until full: the writer must report full, not overwrite.
    for (;;) {
      value[0] = static_cast<char>('a' + published % 26);
      ringfeed::OutMessage m{.value = value, .upstream_offset = published};
      if (w->publish({&m, 1}, 0ns) == 0) break;
      ++published;
    }
    const auto& b = c->pop(1000, 0ns);
    ASSERT_EQ(b.status(), PopStatus::ok);
    for (const auto& m : b) {
      ASSERT_EQ(m.offset(), next_expected);
      ASSERT_EQ(m.value()[0], static_cast<char>('a' + next_expected % 26));
      ASSERT_EQ(m.value().size(), 300u);
      ++next_expected;
    }
    c->ack(b);
  }
  EXPECT_EQ(next_expected, published);
  EXPECT_GT(w->write_pos(), 4096u * 20);  // it really went round many times
}

// A released ring (its partition went to another host) ends pops once everything was
// taken, in every mode (a pop waits out its wait first), and they go on as before once it
// is open again: a pop waiting then is woken by what comes.
class Released : public testing::TestWithParam<Mode> {};

TEST_P(Released, PopsSayEndOfPartitionUntilTheRingIsOpenAgain) {
  const auto ns = ringfeed::test::unique_ns("released");
  auto w = make_writer(ns);
  auto c = attach(ns, "g", GetParam());
  ASSERT_TRUE(c);
  const ringfeed::OutMessage before[] = {{.value = "a", .upstream_offset = 0},
                                         {.value = "b", .upstream_offset = 1}};
  ASSERT_EQ(w->publish(before, 0ns), 2u);
  w->set_released(true);
  // What was published first is taken first.
  const auto& b = c->pop(64, 1s);
  ASSERT_EQ(b.status(), PopStatus::ok);
  ASSERT_EQ(b.size(), 2u);
  ASSERT_EQ(c->ack(b), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->pop(64, 0ns).status(), PopStatus::end_of_partition);
  EXPECT_EQ(c->pop(64, 20ms).status(), PopStatus::end_of_partition);
  // Open again: a waiting pop gets what comes next.
  std::thread later([&] {
    std::this_thread::sleep_for(50ms);
    w->set_released(false);
    const ringfeed::OutMessage m{.value = "c", .upstream_offset = 2};
    w->publish({&m, 1}, 0ns);
  });
  const auto& again = c->pop(64, 10s);
  later.join();
  ASSERT_EQ(again.status(), PopStatus::ok);
  EXPECT_EQ(again[0].value(), "c");
  ASSERT_EQ(c->ack(again), ringfeed::AckStatus::ok);
  EXPECT_EQ(c->pop(64, 0ns).status(), PopStatus::timed_out) << "open: nothing yet, no end";
  // Closed wins over released.
  w->set_released(true);
  w->close();
  EXPECT_EQ(c->pop(64, 0ns).status(), PopStatus::closed);
}

INSTANTIATE_TEST_SUITE_P(Modes, Released,
                         testing::Values(Mode::exclusive, Mode::shared, Mode::broadcast,
                                         Mode::key_shared, Mode::failover),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST(Ring, TooLargeRecordIsRefused) {
  const auto ns = ringfeed::test::unique_ns("large");
  auto w = make_writer(ns, 4096);
  std::string big(2000, 'x');
  ringfeed::OutMessage m{.value = big};
  PublishStatus st = PublishStatus::ok;
  EXPECT_EQ(w->publish({&m, 1}, 0ns, &st), 0u);
  EXPECT_EQ(st, PublishStatus::too_large);
}

TEST(Ring, SecondWriterOnALiveNamespaceIsRefused) {
  const auto ns = ringfeed::test::unique_ns("twow");
  auto w = make_writer(ns);
  auto second = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("already served by pid " + std::to_string(getpid())),
            std::string::npos)
      << second.error().message;
}

TEST(Ring, GroupWithoutConsumersStillHoldsItsData) {
  const auto ns = ringfeed::test::unique_ns("hold");
  auto w = make_writer(ns, 4096);
  { auto c = attach(ns, "g", Mode::exclusive); }  // creates the group, then detaches
  std::string value(100, 'v');
  std::size_t n = 0;
  for (ringfeed::OutMessage m{.value = value}; w->publish({&m, 1}, 0ns) == 1;) ++n;
  EXPECT_GT(n, 10u);
  EXPECT_LT(n, 4096u / 128 + 1);  // stopped when full: the detached group holds the data
  auto c = attach(ns, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->pop(1000, 0ns).size(), n);  // resumes from the group's watermark
}

// Until some group holds a position, nothing is reusable: a ring with no group, or only a
// broadcast group no consumer has joined yet (a consumer between creating the group and
// taking its slot), stops when full, and the group that joins then gets every record.
TEST(Ring, NothingIsReusedBeforeAGroupHoldsAPosition) {
  for (const bool empty_broadcast_group : {false, true}) {
    SCOPED_TRACE(empty_broadcast_group ? "a broadcast group without consumers" : "no group");
    const auto ns = ringfeed::test::unique_ns("nohold");
    auto w = make_writer(ns, 4096);
    if (empty_broadcast_group) {
      auto b = attach(ns, "b", Mode::broadcast);  // creates the group, then detaches
    }
    std::string value(100, 'v');
    std::size_t n = 0;
    for (ringfeed::OutMessage m{.value = value, .upstream_offset = n};
         n < 1000 && w->publish({&m, 1}, 0ns) == 1; m.upstream_offset = ++n) {
      w->reclaim(true);
    }
    EXPECT_GT(n, 10u);
    EXPECT_LT(n, 4096u / 128 + 1) << "went round a ring that no group held";
    auto c = attach(ns, "late", Mode::exclusive);
    ASSERT_TRUE(c);
    const auto& batch = c->pop(1000, 0ns);
    ASSERT_EQ(batch.size(), n);
    EXPECT_EQ(batch[0].offset(), 0u);
  }
}

}  // namespace

namespace {

// A consumer may be a thread of the writer's own process, as long as it has its own
// Consumer. Run under ThreadSanitizer too.
TEST(Ring, ConsumerThreadsBesideTheWriterThread) {
  const auto ns = ringfeed::test::unique_ns("threads");
  auto w = make_writer(ns, 1 << 16);
  auto excl = attach(ns, "e", Mode::exclusive);
  auto b1 = attach(ns, "b", Mode::broadcast);
  auto b2 = attach(ns, "b", Mode::broadcast);
  ASSERT_TRUE(excl && b1 && b2);
  constexpr std::uint64_t kCount = 100'000;
  auto drain = [&](Consumer* c, std::uint64_t* bad) {
    for (std::uint64_t next = 0; next < kCount;) {
      const auto& batch = c->pop(32, 10s);
      if (batch.status() != PopStatus::ok) {
        ++*bad;
        return;
      }
      for (const auto& m : batch) *bad += m.offset() != next++;
      c->ack(batch);
    }
  };
  std::uint64_t bad[3] = {0, 0, 0};
  std::thread t0(drain, excl.get(), &bad[0]);
  std::thread t1(drain, b1.get(), &bad[1]);
  std::thread t2(drain, b2.get(), &bad[2]);
  for (std::uint64_t i = 0; i < kCount; ++i) {
    ringfeed::OutMessage m{.value = "0123456789", .upstream_offset = i};
    ASSERT_EQ(w->publish({&m, 1}, 10s), 1u);
  }
  t0.join();
  t1.join();
  t2.join();
  EXPECT_EQ(bad[0] + bad[1] + bad[2], 0u);
}

}  // namespace
