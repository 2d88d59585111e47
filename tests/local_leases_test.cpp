// Leases of exclusive and broadcast consumers, kept by the consumer itself: nack with a
// delay, expiry, extend, release, reject and max_deliveries redeliver to the same
// consumer or go to the dead-letter log; stale handles are refused; the watermark stays
// at the oldest unsettled message. With a clock the test controls.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "io/framed_record.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Message;
using ringfeed::Mode;
using ringfeed::Writer;

namespace {

constexpr std::int64_t kMs = 1'000'000;

class LocalLeases : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    auto w = Writer::create({.ns = ns_, .partition = 0, .capacity = 1 << 16});
    ASSERT_TRUE(w.ok()) << w.error().message;
    writer_ = std::move(w.value());
    char tmpl[] = "/tmp/ringfeed-local-dlq-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dlq_dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dlq_dir_); }

  std::unique_ptr<Consumer> consumer(const std::string& group = "g",
                                     std::uint32_t max_deliveries = 3) {
    auto c =
        Consumer::attach({.ns = ns_,
                          .group = group,
                          .mode = GetParam(),
                          .group_settings = {.max_deliveries = max_deliveries, .lease_ms = 1000},
                          .dead_letter_dir = dlq_dir_,
                          .clock = [this] { return now_.load(); }});
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c.value()) : nullptr;
  }
  void publish(std::uint64_t from, std::uint64_t n) {
    for (std::uint64_t i = from; i < from + n; ++i) {
      const std::string v = "m" + std::to_string(i);
      ringfeed::OutMessage m{.value = v, .upstream_offset = i};
      ASSERT_EQ(writer_->publish({&m, 1}, 1s), 1u);
    }
  }
  static std::vector<Message> take(Consumer& c, std::size_t max = 100) {
    const auto& b = c.pop(max, 0ns);
    return {b.begin(), b.end()};
  }
  void advance(std::chrono::milliseconds d) { now_ += d.count() * kMs; }
  // Dead letters in the log: (offset, reason, delivery count).
  std::vector<std::tuple<std::uint64_t, std::string, std::uint32_t>> dead_letters() const {
    std::ifstream in(dlq_dir_ + "/0.log", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::tuple<std::uint64_t, std::string, std::uint32_t>> out;
    for (std::size_t at = 0; at < bytes.size();) {
      const auto r =
          ringfeed::io::decode(std::as_bytes(std::span(bytes.data() + at, bytes.size() - at)), at);
      EXPECT_EQ(r.status, ringfeed::io::DecodeStatus::ok) << r.error;
      if (r.status != ringfeed::io::DecodeStatus::ok) break;
      out.emplace_back(r.record.upstream_offset, std::string(r.record.reason),
                       r.record.delivery_count);
      at += r.size;
    }
    return out;
  }

  std::string ns_ = ringfeed::test::unique_ns("local");
  std::atomic<std::int64_t> now_{1'000 * kMs};
  std::unique_ptr<Writer> writer_;
  std::string dlq_dir_;
};

TEST_P(LocalLeases, NackRedeliversToTheSameConsumerAfterTheDelay) {
  auto c = consumer();
  ASSERT_TRUE(c);
  publish(0, 3);
  auto got = take(*c);
  ASSERT_EQ(got.size(), 3u);
  const std::uint64_t held_at = got[1].position();
  EXPECT_EQ(c->ack(got[0]), AckStatus::ok);
  EXPECT_EQ(c->nack(got[1], 300ms), AckStatus::ok);
  EXPECT_EQ(c->ack(got[2]), AckStatus::ok);
  EXPECT_EQ(c->watermark(), held_at) << "the nacked message holds the watermark";
  EXPECT_TRUE(take(*c).empty());
  advance(299ms);
  EXPECT_TRUE(take(*c).empty());
  advance(1ms);
  auto again = take(*c);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset(), 1u);
  EXPECT_EQ(again[0].delivery_count(), 2u);
  EXPECT_EQ(c->ack(got[1]), AckStatus::lease_lost) << "the old handle is refused";
  EXPECT_EQ(c->ack(again[0]), AckStatus::ok);
  EXPECT_EQ(c->ack(again[0]), AckStatus::not_leased);
  EXPECT_EQ(c->watermark(), writer_->write_pos());
}

TEST_P(LocalLeases, AnExpiredLeaseComesBackAndExtendKeepsIt) {
  auto c = consumer();
  ASSERT_TRUE(c);
  publish(0, 2);
  auto got = take(*c);
  ASSERT_EQ(got.size(), 2u);
  advance(500ms);
  EXPECT_EQ(c->extend(got[1], 2000ms), AckStatus::ok);  // now ends at 2500 ms
  advance(500ms);                                       // got[0] expired at 1000 ms
  auto again = take(*c);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset(), 0u);
  EXPECT_EQ(again[0].delivery_count(), 2u);
  EXPECT_EQ(c->ack(got[0]), AckStatus::lease_lost);
  EXPECT_EQ(c->ack(got[1]), AckStatus::ok) << "the extended handle is still good";
  EXPECT_EQ(c->ack(again[0]), AckStatus::ok);
}

TEST_P(LocalLeases, ReleaseDoesNotCountTheDelivery) {
  auto c = consumer();
  ASSERT_TRUE(c);
  publish(0, 1);
  auto got = take(*c);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(c->release(got[0]), AckStatus::ok);
  auto again = take(*c);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].delivery_count(), 1u);
  EXPECT_EQ(c->ack(again[0]), AckStatus::ok);
}

TEST_P(LocalLeases, RejectAndMaxDeliveriesGoToTheDeadLetterLog) {
  auto c = consumer("g", /*max_deliveries=*/2);
  ASSERT_TRUE(c);
  publish(0, 3);
  auto got = take(*c);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(c->reject(got[0]), AckStatus::ok);
  EXPECT_EQ(c->nack(got[1], 0ms), AckStatus::ok);
  EXPECT_EQ(c->ack(got[2]), AckStatus::ok);
  auto second = take(*c);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].delivery_count(), 2u);
  EXPECT_EQ(c->nack(second[0], 0ms), AckStatus::ok);  // its last delivery: dead
  EXPECT_TRUE(take(*c).empty());
  EXPECT_EQ(c->dead_lettered(), 2u);
  EXPECT_EQ(c->dead_letters_dropped(), 0u) << c->last_dead_letter_error();
  const auto letters = dead_letters();
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_EQ(letters[0], std::make_tuple(0ull, std::string("rejected by the consumer"), 1u));
  EXPECT_EQ(letters[1], std::make_tuple(1ull, std::string("max deliveries reached"), 2u));
  EXPECT_EQ(c->watermark(), writer_->write_pos()) << "dead letters count as settled";
}

TEST_P(LocalLeases, AnExpiredLeaseOnItsLastDeliveryIsDeadLettered) {
  auto c = consumer("g", /*max_deliveries=*/1);
  ASSERT_TRUE(c);
  publish(0, 1);
  auto got = take(*c);
  ASSERT_EQ(got.size(), 1u);
  advance(1000ms);
  EXPECT_TRUE(take(*c).empty());
  EXPECT_EQ(c->dead_lettered(), 1u);
  ASSERT_EQ(dead_letters().size(), 1u);
  EXPECT_EQ(c->ack(got[0]), AckStatus::not_leased);
}

TEST_P(LocalLeases, TheGroupsBackoffListDelaysARedelivery) {
  auto c = Consumer::attach({.ns = ns_,
                             .group = "bk",
                             .mode = GetParam(),
                             .group_settings = {.lease_ms = 1000, .backoff_ms = {200}},
                             .clock = [this] { return now_.load(); }});
  ASSERT_TRUE(c.ok()) << c.error().message;
  publish(0, 1);
  auto got = take(**c);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ((*c)->nack(got[0], 0ms), AckStatus::ok);
  advance(199ms);
  EXPECT_TRUE(take(**c).empty());
  advance(1ms);
  EXPECT_EQ(take(**c).size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(ExclusiveAndBroadcast, LocalLeases,
                         ::testing::Values(Mode::exclusive, Mode::broadcast),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST(LocalLeasesBroadcast, ANackRedeliversOnlyToItsOwnConsumer) {
  const auto ns = ringfeed::test::unique_ns("lbc");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto a = Consumer::attach({.ns = ns, .group = "b", .mode = Mode::broadcast});
  auto b = Consumer::attach({.ns = ns, .group = "b", .mode = Mode::broadcast});
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string v = "x";
  ringfeed::OutMessage m{.value = v};
  ASSERT_EQ((*w)->publish({&m, 1}, 1s), 1u);
  const auto& from_a = (*a)->pop(10, 0ns);
  ASSERT_EQ(from_a.size(), 1u);
  EXPECT_EQ((*a)->nack(from_a[0], 0ms), AckStatus::ok);
  const auto& from_b = (*b)->pop(10, 0ns);
  ASSERT_EQ(from_b.size(), 1u);
  EXPECT_EQ(from_b[0].delivery_count(), 1u);
  EXPECT_EQ((*b)->ack(from_b[0]), AckStatus::ok);
  EXPECT_TRUE((*b)->pop(10, 0ns).empty());
  const auto& again = (*a)->pop(10, 0ns);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].delivery_count(), 2u);
}

// Without a test clock, local leases are timed by the coarse clock: a fresh group's lease
// neither ends at once (the coarse clock may lag the group's epoch) nor early by more than
// a few of its ticks.
TEST(LocalLeasesRealClock, ALeaseRunsItsLengthOnTheCoarseClock) {
  const auto ns = ringfeed::test::unique_ns("lrc");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive, .lease = 200ms});
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::string v = "x";
  ringfeed::OutMessage m{.value = v};
  ASSERT_EQ((*w)->publish({&m, 1}, 1s), 1u);
  ASSERT_EQ((*c)->pop(10, 0ns).size(), 1u);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE((*c)->pop(10, 0ns).empty()) << "the lease ended as soon as it began";
  std::uint32_t deliveries = 0;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        const auto& b = (*c)->pop(10, 0ns);
        if (b.empty()) return false;
        deliveries = b[0].delivery_count();
        return true;
      },
      5s));
  EXPECT_EQ(deliveries, 2u);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
}

}  // namespace
