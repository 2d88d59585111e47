// key_shared groups: equal keys go to one consumer at a time and in order, across nack,
// expiry, and ranges that move as consumers come and go; with a clock the test controls.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "runtime/key_shared.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Message;
using ringfeed::Mode;
using ringfeed::Writer;

namespace {

constexpr std::int64_t kMs = 1'000'000;

class KeyShared : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = Writer::create({.ns = ns_, .partition = 0, .capacity = 1 << 18});
    ASSERT_TRUE(w.ok()) << w.error().message;
    writer_ = std::move(w.value());
  }
  std::unique_ptr<Consumer> consumer(std::uint32_t max_deliveries = 5) {
    auto c = Consumer::attach({.ns = ns_,
                               .group = "k",
                               .mode = Mode::key_shared,
                               .lease = 1000ms,
                               .group_settings = {.lease_window = 1024,
                                                  .max_deliveries = max_deliveries,
                                                  .lease_ms = 1000},
                               .clock = [this] { return now_.load(); }});
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c.value()) : nullptr;
  }
  // Value "key/n": the n-th message of that key.
  void publish(const std::string& key, int n) {
    const std::string v = key + "/" + std::to_string(n);
    ringfeed::OutMessage m{.key = key, .value = v, .upstream_offset = next_offset_++};
    ASSERT_EQ(writer_->publish({&m, 1}, 1s), 1u);
  }
  std::vector<Message> take(Consumer& c, std::size_t max = 1000) {
    const auto& b = c.pop(max, 0ns);
    return {b.begin(), b.end()};
  }
  // Ranges are recomputed every millisecond of the consumer's clock.
  void tick(std::chrono::milliseconds d = 2ms) { now_ += d.count() * kMs; }
  // A key whose hash falls in range `rank` of `members`.
  static std::string key_in_range(std::uint32_t rank, std::uint32_t members, int skip = 0) {
    const ringfeed::key_shared::Ranges r{rank, members};
    for (int i = 0;; ++i) {
      std::string k = "key" + std::to_string(i);
      if (r.owns(ringfeed::key_shared::key_hash(k)) && skip-- == 0) return k;
    }
  }

  std::string ns_ = ringfeed::test::unique_ns("keyed");
  std::atomic<std::int64_t> now_{1'000 * kMs};
  std::unique_ptr<Writer> writer_;
  std::uint64_t next_offset_ = 0;
};

std::string key_of(const Message& m) {
  return std::string(m.key());
}
int number_of(const Message& m) {
  const std::string v(m.value());
  return std::stoi(v.substr(v.find('/') + 1));
}

TEST_F(KeyShared, EachKeyGoesToOneConsumerInOrder) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  tick();
  constexpr int kKeys = 20;
  constexpr int kPerKey = 10;
  for (int n = 0; n < kPerKey; ++n) {
    for (int k = 0; k < kKeys; ++k) publish("key" + std::to_string(k), n);
  }
  std::map<std::string, std::vector<int>> got_a, got_b;
  for (const Message& m : take(*a)) got_a[key_of(m)].push_back(number_of(m));
  for (const Message& m : take(*b)) got_b[key_of(m)].push_back(number_of(m));
  std::size_t total = 0;
  for (auto* got : {&got_a, &got_b}) {
    for (const auto& [key, numbers] : *got) {
      EXPECT_EQ(numbers.size(), static_cast<std::size_t>(kPerKey)) << key;
      for (int n = 0; n < static_cast<int>(numbers.size()); ++n) EXPECT_EQ(numbers[n], n) << key;
      total += numbers.size();
    }
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kKeys * kPerKey));
  for (const auto& [key, numbers] : got_a) EXPECT_EQ(got_b.count(key), 0u) << key << " on both";
  EXPECT_FALSE(got_a.empty());
  EXPECT_FALSE(got_b.empty());
  // Attach order decides the ranges: a (slot 0) has rank 0 of 2.
  for (const auto& [key, numbers] : got_a) {
    EXPECT_TRUE((ringfeed::key_shared::Ranges{0, 2}.owns(ringfeed::key_shared::key_hash(key))));
  }
}

TEST_F(KeyShared, NackBlocksOnlyItsOwnKeyUntilItIsRedelivered) {
  auto a = consumer();
  ASSERT_TRUE(a);
  publish("x", 0);
  publish("y", 0);
  publish("x", 1);
  publish("y", 1);
  auto first = take(*a, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(std::string(first[0].value()), "x/0");
  EXPECT_EQ(a->nack(first[0], 500ms), AckStatus::ok);
  // y goes on; x/1 waits behind the nacked x/0.
  auto more = take(*a);
  ASSERT_EQ(more.size(), 2u);
  EXPECT_EQ(std::string(more[0].value()), "y/0");
  EXPECT_EQ(std::string(more[1].value()), "y/1");
  for (const auto& m : more) EXPECT_EQ(a->ack(m), AckStatus::ok);
  tick(499ms);
  EXPECT_TRUE(take(*a).empty());
  tick(1ms);
  auto again = take(*a);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(std::string(again[0].value()), "x/0");
  EXPECT_EQ(again[0].delivery_count(), 2u);
  EXPECT_EQ(std::string(again[1].value()), "x/1");
  EXPECT_EQ(again[1].delivery_count(), 1u);
}

TEST_F(KeyShared, AKeyInFlightOnAMovingRangeWaitsForItsHolder) {
  auto a = consumer();
  ASSERT_TRUE(a);
  // `moving` will belong to b (rank 1 of 2) once b attaches; `staying` stays with a.
  const std::string moving = key_in_range(1, 2);
  const std::string staying = key_in_range(0, 2);
  publish(moving, 0);
  publish(staying, 0);
  auto held = take(*a);
  ASSERT_EQ(held.size(), 2u);  // alone, a owns every range

  auto b = consumer();
  ASSERT_TRUE(b);
  tick();
  publish(moving, 1);
  publish(staying, 1);
  // b owns `moving` now, but a still holds moving/0: moving/1 waits.
  EXPECT_TRUE(take(*b).empty());
  auto a_more = take(*a);
  ASSERT_EQ(a_more.size(), 1u);  // staying/1; moving/1 is not a's any more
  EXPECT_EQ(std::string(a_more[0].value()), staying + "/1");
  for (const auto& m : held) EXPECT_EQ(a->ack(m), AckStatus::ok);
  auto b_now = take(*b);
  ASSERT_EQ(b_now.size(), 1u);
  EXPECT_EQ(std::string(b_now[0].value()), moving + "/1");
}

TEST_F(KeyShared, ALeavingConsumersKeysMoveWithItsLeasesFirst) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  tick();
  const std::string a_key = key_in_range(0, 2);
  for (int n = 0; n < 4; ++n) publish(a_key, n);
  auto held = take(*a, 2);  // a_key/0 and a_key/1 leased to a
  ASSERT_EQ(held.size(), 2u);
  EXPECT_TRUE(take(*b).empty());
  a.reset();  // detaching gives the leases back
  tick();
  auto moved = take(*b);
  ASSERT_EQ(moved.size(), 4u);
  for (int n = 0; n < 4; ++n) EXPECT_EQ(number_of(moved[n]), n);
  EXPECT_EQ(moved[0].delivery_count(), 2u);
  EXPECT_EQ(moved[2].delivery_count(), 1u);
}

TEST_F(KeyShared, AnExpiredLeaseIsRedeliveredBeforeTheKeysNextMessage) {
  auto a = consumer();
  ASSERT_TRUE(a);
  publish("k", 0);
  auto first = take(*a, 1);
  ASSERT_EQ(first.size(), 1u);
  publish("k", 1);
  tick(1000ms);  // the lease of k/0 expired
  auto next = take(*a);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(std::string(next[0].value()), "k/0");
  EXPECT_EQ(next[0].delivery_count(), 2u);
  EXPECT_EQ(std::string(next[1].value()), "k/1");
  EXPECT_EQ(a->ack(first[0]), AckStatus::lease_lost);
}

TEST_F(KeyShared, AtMaxDeliveriesTheMessageIsDeadLetteredAndItsKeyGoesOn) {
  auto a = consumer(/*max_deliveries=*/2);
  ASSERT_TRUE(a);
  publish("p", 0);
  publish("p", 1);
  auto one = take(*a, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(a->nack(one[0], 0ms), AckStatus::ok);
  auto two = take(*a);
  // Its last allowed delivery travels alone.
  ASSERT_EQ(two.size(), 1u);
  EXPECT_EQ(std::string(two[0].value()), "p/0");
  EXPECT_EQ(two[0].delivery_count(), 2u);
  EXPECT_EQ(a->nack(two[0], 0ms), AckStatus::ok);
  EXPECT_EQ(a->dead_lettered(), 1u);
  // p/1 waits until the dead letter is stored (the writer's service), then goes.
  EXPECT_TRUE(take(*a).empty());
  writer_->service(now_.load());
  auto after = take(*a);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(std::string(after[0].value()), "p/1");
}

TEST_F(KeyShared, KeylessMessagesAreSpreadAndNeverWaitForEachOther) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  tick();
  for (int n = 0; n < 100; ++n) {
    const std::string v = "v" + std::to_string(n);
    ringfeed::OutMessage m{.value = v, .upstream_offset = next_offset_++};
    ASSERT_EQ(writer_->publish({&m, 1}, 1s), 1u);
  }
  const auto from_a = take(*a);
  const auto from_b = take(*b);
  EXPECT_EQ(from_a.size() + from_b.size(), 100u);
  EXPECT_GT(from_a.size(), 20u);
  EXPECT_GT(from_b.size(), 20u);
}

TEST_F(KeyShared, AConsumerTakesItsKeysFarPastMessagesAnotherHolds) {
  // A ring and group of their own: a lease window far larger than what one pop looks at
  // (8192 sequences), so that the consumers' scans, not the window, are what is tested.
  const std::string ns = ringfeed::test::unique_ns("keyed-far");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 8u << 20});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto attach = [&] {
    auto c = Consumer::attach({.ns = ns,
                               .group = "k",
                               .mode = Mode::key_shared,
                               .group_settings = {.lease_window = 1u << 16},
                               .clock = [this] { return now_.load(); }});
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c.value()) : nullptr;
  };
  auto a = attach();
  auto b = attach();
  ASSERT_TRUE(a && b);
  tick();
  // Two keys of each consumer's range, in turns; b takes its first message and holds it,
  // so the group's low sequence stays there while a goes on.
  const std::string a_keys[] = {key_in_range(0, 2), key_in_range(0, 2, 1)};
  const std::string b_keys[] = {key_in_range(1, 2), key_in_range(1, 2, 1)};
  constexpr int kRounds = 12'000;  // 48 000 messages, 24 000 of a's
  std::vector<ringfeed::OutMessage> batch;
  std::vector<std::string> values;
  values.reserve(4 * kRounds);
  for (int n = 0; n < kRounds; ++n) {
    for (const std::string* key : {&b_keys[0], &a_keys[0], &b_keys[1], &a_keys[1]}) {
      values.push_back(*key + "/" + std::to_string(n));
      batch.push_back({.key = *key, .value = values.back()});
    }
  }
  for (std::size_t i = 0; i < batch.size(); i += 256) {
    const std::size_t k = std::min<std::size_t>(256, batch.size() - i);
    ASSERT_EQ((*w)->publish({batch.data() + i, k}, 1s), k);
  }
  auto held = take(*b, 1);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(std::string(held[0].value()), b_keys[0] + "/0");

  std::map<std::string, int> next;  // per key, the number of the next message
  int taken = 0;
  for (int pops = 0; pops < 1000; ++pops) {
    const auto got = take(*a, 500);
    if (got.empty()) break;
    for (const Message& m : got) {
      const std::string key = key_of(m);
      ASSERT_TRUE(key == a_keys[0] || key == a_keys[1]) << key << " is not a's";
      ASSERT_EQ(number_of(m), next[key]++) << key;
      ASSERT_EQ(a->ack(m), AckStatus::ok);
    }
    taken += static_cast<int>(got.size());
  }
  EXPECT_EQ(taken, 2 * kRounds);
  // b's messages all wait for b: the one it holds, then the rest in order.
  EXPECT_EQ(b->ack(held[0]), AckStatus::ok);
  next.clear();
  taken = 0;
  for (int pops = 0; pops < 1000; ++pops) {
    const auto got = take(*b, 500);
    if (got.empty()) break;
    for (const Message& m : got) {
      const std::string key = key_of(m);
      ASSERT_TRUE(key == b_keys[0] || key == b_keys[1]) << key << " is not b's";
      ASSERT_EQ(number_of(m), (key == b_keys[0] ? 1 : 0) + next[key]++) << key;
      ASSERT_EQ(b->ack(m), AckStatus::ok);
    }
    taken += static_cast<int>(got.size());
  }
  EXPECT_EQ(taken, 2 * kRounds - 1);
}

TEST_F(KeyShared, MessagesPassedOverAsAnothersAreTakenWhenItsRangeMoves) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  tick();
  const std::string a_key = key_in_range(0, 2);
  const std::string b_key = key_in_range(1, 2);
  for (int n = 0; n < 50; ++n) {
    publish(b_key, n);
    publish(a_key, n);
  }
  // a takes and acks all of its own, passing over b's fifty (which b never takes).
  auto mine = take(*a);
  ASSERT_EQ(mine.size(), 50u);
  for (const auto& m : mine) EXPECT_EQ(a->ack(m), AckStatus::ok);
  EXPECT_TRUE(take(*a).empty());
  b.reset();
  tick();  // a owns every range now: b's messages, all of them below where a got to
  auto moved = take(*a);
  ASSERT_EQ(moved.size(), 50u);
  for (int n = 0; n < 50; ++n) {
    EXPECT_EQ(key_of(moved[n]), b_key);
    EXPECT_EQ(number_of(moved[n]), n);
  }
}

TEST_F(KeyShared, AnExpiredLeaseComesBackBeforeItsKeysNextOnceTheConsumerWentPastIt) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  tick();
  const std::string a_key = key_in_range(0, 2);
  const std::string a_other = key_in_range(0, 2, 1);
  const std::string b_key = key_in_range(1, 2);
  publish(a_key, 0);
  for (int n = 0; n < 20; ++n) {
    publish(b_key, n);
    publish(a_other, n);
  }
  auto first = take(*a, 1);  // a_key/0, held until its lease expires
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(std::string(first[0].value()), a_key + "/0");
  auto rest = take(*a);
  ASSERT_EQ(rest.size(), 20u);
  for (const auto& m : rest) EXPECT_EQ(a->ack(m), AckStatus::ok);
  publish(a_key, 1);
  const auto bs = take(*b);
  EXPECT_EQ(bs.size(), 20u);
  for (const auto& m : bs) EXPECT_EQ(b->ack(m), AckStatus::ok);
  tick(1000ms);  // the lease of a_key/0 expired
  auto again = take(*a);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(std::string(again[0].value()), a_key + "/0");
  EXPECT_EQ(again[0].delivery_count(), 2u);
  EXPECT_EQ(std::string(again[1].value()), a_key + "/1");
}

TEST_F(KeyShared, AConsumerAtTheEndOfTheWindowGoesOnWhenTheLowSequenceMoves) {
  auto a = consumer();  // lease window 1024
  auto b = consumer();
  ASSERT_TRUE(a && b);
  tick();
  const std::string a_key = key_in_range(0, 2);
  const std::string b_key = key_in_range(1, 2);
  for (int n = 0; n < 1000; ++n) {
    publish(b_key, n);
    publish(a_key, n);
  }
  auto held = take(*b, 1);  // b_key/0: the low sequence stays at it
  ASSERT_EQ(held.size(), 1u);
  int next = 0;
  for (int pops = 0; pops < 10; ++pops) {
    const auto got = take(*a);
    if (got.empty()) break;
    for (const auto& m : got) {
      EXPECT_EQ(number_of(m), next++);
      EXPECT_EQ(a->ack(m), AckStatus::ok);
    }
  }
  EXPECT_EQ(next, 512);  // the window's half that is a's
  EXPECT_TRUE(take(*a).empty());
  EXPECT_EQ(b->ack(held[0]), AckStatus::ok);
  // b_key/1 holds the low sequence now, one message on: a gets one more.
  auto one = take(*a);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(number_of(one[0]), 512);
  EXPECT_EQ(a->ack(one[0]), AckStatus::ok);
  // b takes and acks its messages: a goes on to its last.
  for (int pops = 0; pops < 100; ++pops) {
    const auto got = take(*b);
    if (got.empty()) break;
    for (const auto& m : got) EXPECT_EQ(b->ack(m), AckStatus::ok);
    for (const auto& m : take(*a)) {
      EXPECT_EQ(number_of(m), ++next);
      EXPECT_EQ(a->ack(m), AckStatus::ok);
    }
  }
  EXPECT_EQ(next, 999);
}

}  // namespace
