// Shared groups: leases, acks, nacks with delay, release, reject, extend, expiry,
// redelivery, delivery counts and dead letters; with a clock the test controls.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <atomic>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/lease_table.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Message;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;

namespace {

constexpr std::int64_t kMs = 1'000'000;

struct FakeClock {
  std::atomic<std::int64_t> now{1'000 * kMs};
  void advance(std::chrono::milliseconds d) { now += d.count() * kMs; }
};

class Shared : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = Writer::create({.ns = ns_, .partition = 0, .capacity = 1 << 16});
    ASSERT_TRUE(w.ok()) << w.error().message;
    writer_ = std::move(w.value());
  }
  std::unique_ptr<Consumer> consumer(std::uint32_t max_deliveries = 5) {
    auto c = Consumer::attach({.ns = ns_,
                               .group = "s",
                               .mode = Mode::shared,
                               .lease = 1000ms,
                               .group_settings = {.lease_window = 1024,
                                                  .max_deliveries = max_deliveries,
                                                  .lease_ms = 1000},
                               .clock = [this] { return clock_.now.load(); }});
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
  static std::vector<Message> take(Consumer& c, std::size_t max) {
    const auto& b = c.pop(max, 0ns);
    return {b.begin(), b.end()};
  }

  std::string ns_ = ringfeed::test::unique_ns("shared");
  FakeClock clock_;
  std::unique_ptr<Writer> writer_;
};

TEST_F(Shared, ConsumersSplitTheMessagesAndEachIsHandedOutOnce) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  publish(0, 10);
  auto from_a = take(*a, 4);
  auto from_b = take(*b, 100);
  ASSERT_EQ(from_a.size(), 4u);
  ASSERT_EQ(from_b.size(), 6u);
  for (std::uint64_t i = 0; i < 4; ++i) EXPECT_EQ(from_a[i].offset(), i);
  for (std::uint64_t i = 0; i < 6; ++i) EXPECT_EQ(from_b[i].offset(), 4 + i);
  EXPECT_EQ(from_a[0].delivery_count(), 1u);
  EXPECT_TRUE(take(*a, 10).empty());
  for (const auto& m : from_a) EXPECT_EQ(a->ack(m), AckStatus::ok);
  for (const auto& m : from_b) EXPECT_EQ(b->ack(m), AckStatus::ok);
  EXPECT_EQ(a->ack(from_a[0]), AckStatus::lease_lost);  // twice: refused
}

TEST_F(Shared, NackRedeliversAfterTheDelayAndCountsTheDelivery) {
  auto a = consumer();
  ASSERT_TRUE(a);
  publish(0, 3);
  auto got = take(*a, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(a->nack(got[1], 500ms), AckStatus::ok);
  EXPECT_EQ(a->ack(got[0]), AckStatus::ok);
  EXPECT_EQ(a->ack(got[2]), AckStatus::ok);
  EXPECT_TRUE(take(*a, 10).empty());  // not before 500 ms
  clock_.advance(499ms);
  EXPECT_TRUE(take(*a, 10).empty());
  clock_.advance(1ms);
  auto again = take(*a, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset(), 1u);
  EXPECT_EQ(again[0].delivery_count(), 2u);
  EXPECT_EQ(a->ack(got[1]), AckStatus::lease_lost);  // the old handle is fenced off
  EXPECT_EQ(a->ack(again[0]), AckStatus::ok);
}

TEST_F(Shared, ExpiredLeaseGoesToAnotherConsumerAndTheStaleAckIsRefused) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  publish(0, 1);
  auto held = take(*a, 1);
  ASSERT_EQ(held.size(), 1u);
  clock_.advance(999ms);
  EXPECT_TRUE(take(*b, 1).empty());  // still leased
  clock_.advance(1ms);
  writer_->service(clock_.now.load());  // the reaper makes it available
  auto moved = take(*b, 1);
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(moved[0].offset(), 0u);
  EXPECT_EQ(moved[0].delivery_count(), 2u);
  EXPECT_EQ(a->ack(held[0]), AckStatus::lease_lost);
  EXPECT_EQ(a->extend(held[0], 1000ms), AckStatus::lease_lost);
  EXPECT_EQ(b->ack(moved[0]), AckStatus::ok);
}

TEST_F(Shared, ExpiryIsFoundByConsumersEvenWithoutTheReaper) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  publish(0, 1);
  ASSERT_EQ(take(*a, 1).size(), 1u);
  clock_.advance(1000ms);
  // No service(): b looks for expired leases itself now and then.
  std::vector<Message> moved;
  for (int i = 0; i < 600 && moved.empty(); ++i) moved = take(*b, 1);
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(moved[0].delivery_count(), 2u);
}

TEST_F(Shared, ExtendKeepsTheSameHandleAlive) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  publish(0, 1);
  auto held = take(*a, 1);
  ASSERT_EQ(held.size(), 1u);
  clock_.advance(900ms);
  EXPECT_EQ(a->extend(held[0], 1000ms), AckStatus::ok);
  clock_.advance(900ms);  // past the first deadline, before the extended one
  writer_->service(clock_.now.load());
  EXPECT_TRUE(take(*b, 1).empty());
  EXPECT_EQ(a->ack(held[0]), AckStatus::ok);  // the same handle
}

TEST_F(Shared, ReleaseDoesNotCountRejectDeadLetters) {
  auto a = consumer();
  ASSERT_TRUE(a);
  publish(0, 2);
  auto got = take(*a, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(a->release(got[0]), AckStatus::ok);
  EXPECT_EQ(a->reject(got[1]), AckStatus::ok);
  EXPECT_EQ(a->dead_lettered(), 1u);
  auto again = take(*a, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset(), 0u);
  EXPECT_EQ(again[0].delivery_count(), 1u);  // the release did not count
  EXPECT_EQ(a->ack(again[0]), AckStatus::ok);
}

TEST_F(Shared, AtMaxDeliveriesTheMessageIsDeadLetteredAndTheLastTryGoesAlone) {
  auto a = consumer(3);
  ASSERT_TRUE(a);
  publish(0, 1);
  for (std::uint32_t attempt = 1; attempt <= 3; ++attempt) {
    if (attempt == 3) publish(1, 5);  // others are waiting when the last try comes
    auto got = take(*a, 10);
    ASSERT_FALSE(got.empty()) << "attempt " << attempt;
    EXPECT_EQ(got[0].offset(), 0u);
    EXPECT_EQ(got[0].delivery_count(), attempt);
    if (attempt == 3) {
      EXPECT_EQ(got.size(), 1u);  // alone
    }
    EXPECT_EQ(a->nack(got[0], 0ms), AckStatus::ok);
  }
  EXPECT_EQ(a->dead_lettered(), 1u);  // the third nack reached max_deliveries
  auto rest = take(*a, 10);
  ASSERT_EQ(rest.size(), 5u);
  EXPECT_EQ(rest[0].offset(), 1u);
  for (const auto& m : rest) EXPECT_EQ(a->ack(m), AckStatus::ok);
}

TEST_F(Shared, AcksOutOfOrderFreeRingSpaceOnlyBelowTheOldestUnacked) {
  auto a = consumer();
  auto b = consumer();
  ASSERT_TRUE(a && b);
  // Far more than the 64 KiB ring holds: the writer must reuse space as acks come.
  std::uint64_t published = 0, acked = 0;
  std::string value(200, 'x');
  std::set<std::uint64_t> seen;
  while (acked < 5000) {
    for (int k = 0; k < 8; ++k) {
      ringfeed::OutMessage m{.value = value, .upstream_offset = published};
      if (writer_->publish({&m, 1}, 0ns) == 1) ++published;
    }
    auto x = take(*a, 3);
    auto y = take(*b, 5);
    // Ack in reverse order, b's first.
    for (auto it = y.rbegin(); it != y.rend(); ++it) {
      ASSERT_TRUE(seen.insert(it->offset()).second) << "delivered twice: " << it->offset();
      ASSERT_EQ(b->ack(*it), AckStatus::ok);
      ++acked;
    }
    for (auto it = x.rbegin(); it != x.rend(); ++it) {
      ASSERT_TRUE(seen.insert(it->offset()).second) << "delivered twice: " << it->offset();
      ASSERT_EQ(a->ack(*it), AckStatus::ok);
      ++acked;
    }
    ASSERT_LT(published, 100'000u) << "the writer stopped getting space";
  }
  EXPECT_GT(writer_->write_pos(), 15u * (1 << 16));  // went round the ring many times
  EXPECT_EQ(*seen.begin(), 0u);
  EXPECT_EQ(*seen.rbegin(), seen.size() - 1);  // no gaps
}

TEST_F(Shared, LeasesOfAKilledConsumerComeBackAtOnce) {
  // Real clocks here: the reaper in the writer and the consumers must agree on time.
  auto attached = Consumer::attach({.ns = ns_, .group = "s", .mode = Mode::shared});
  ASSERT_TRUE(attached.ok());
  auto& a = attached.value();
  publish(0, 10);
  auto* stage = static_cast<std::atomic<int>*>(::mmap(nullptr, sizeof(std::atomic<int>),
                                                      PROT_READ | PROT_WRITE,
                                                      MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (stage) std::atomic<int>(0);
  const std::string ns = ns_;
  pid_t child = ringfeed::test::fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "s", .mode = Mode::shared});
    if (!c) return 2;
    if ((*c)->pop(4, 0ns).size() != 4) return 3;
    stage->store(1);
    for (;;) ::pause();
  });
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return stage->load() == 1; }));
  auto rest = take(*a, 100);
  EXPECT_EQ(rest.size(), 6u);
  ::kill(child, SIGKILL);
  ringfeed::test::wait_child(child);
  // The reaper notices the death (not the lease expiry, 30 s away by default).
  std::vector<Message> back;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        writer_->service();
        auto got = take(*a, 100);
        back.insert(back.end(), got.begin(), got.end());
        return back.size() >= 4;
      },
      5s));
  ASSERT_EQ(back.size(), 4u);
  for (std::uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(back[i].offset(), i);
    EXPECT_EQ(back[i].delivery_count(), 2u);
  }
}

}  // namespace

namespace {

TEST_F(Shared, TheWriterStoresDeadLettersThenTheGroupMovesOn) {
  std::vector<std::tuple<std::uint64_t, std::uint32_t, std::string, std::string>> letters;
  writer_->set_dead_letter_sink([&](const ringfeed::shm::DeadLetter& d) {
    letters.emplace_back(d.upstream_offset, d.deliveries, ringfeed::shm::to_string(d.reason),
                         std::string(d.group) + "/" + std::string(d.value));
    return true;
  });
  auto a = consumer(2);
  ASSERT_TRUE(a);
  publish(0, 3);
  auto got = take(*a, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(a->reject(got[0]), AckStatus::ok);
  EXPECT_EQ(a->nack(got[1], 0ms), AckStatus::ok);
  EXPECT_EQ(a->ack(got[2]), AckStatus::ok);
  auto again = take(*a, 3);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(a->nack(again[0], 0ms), AckStatus::ok);  // second delivery of two: dead
  EXPECT_TRUE(letters.empty());  // dead, but not stored yet: the group still holds them
  writer_->service(clock_.now.load());
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_EQ(letters[0], std::make_tuple(0ull, 1u, std::string("rejected by the consumer"),
                                        std::string("s/m0")));
  EXPECT_EQ(letters[1],
            std::make_tuple(1ull, 2u, std::string("max deliveries reached"), std::string("s/m1")));
  EXPECT_EQ(writer_->dead_lettered(), 2u);
  // Everything settled: the ring space is free again (the group's watermark is the end).
  publish(3, 1);
  auto last = take(*a, 1);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(a->ack(last[0]), AckStatus::ok);
  writer_->service(clock_.now.load());
  EXPECT_TRUE(take(*a, 1).empty());
}

TEST_F(Shared, ASinkThatFailsKeepsTheDeadLetterUntilItSucceeds) {
  bool accept = false;
  int offered = 0;
  writer_->set_dead_letter_sink([&](const ringfeed::shm::DeadLetter&) {
    ++offered;
    return accept;
  });
  auto a = consumer();
  ASSERT_TRUE(a);
  publish(0, 1);
  auto got = take(*a, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(a->reject(got[0]), AckStatus::ok);
  writer_->service(clock_.now.load());
  writer_->service(clock_.now.load());
  EXPECT_EQ(offered, 2);
  EXPECT_EQ(writer_->dead_lettered(), 0u);
  accept = true;
  writer_->service(clock_.now.load());
  EXPECT_EQ(offered, 3);
  EXPECT_EQ(writer_->dead_lettered(), 1u);
  writer_->service(clock_.now.load());
  EXPECT_EQ(offered, 3);  // stored once
}

}  // namespace

namespace {

TEST_F(Shared, FailoverStandbyTakesOverWhenTheActiveLeavesInPartitionOrder) {
  auto attach_failover = [&] {
    auto c = Consumer::attach({.ns = ns_, .group = "f", .mode = Mode::failover});
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c.value()) : nullptr;
  };
  auto active = attach_failover();
  auto standby = attach_failover();
  ASSERT_TRUE(active && standby);
  publish(0, 10);
  EXPECT_TRUE(take(*standby, 10).empty());  // a standby takes nothing
  auto got = take(*active, 5);
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(active->ack(got[i]), AckStatus::ok);
  EXPECT_TRUE(take(*standby, 10).empty());
  active.reset();  // detaches; its two unacked leases go back to the group
  auto next = take(*standby, 10);
  ASSERT_EQ(next.size(), 7u);
  for (std::uint64_t i = 0; i < 7; ++i) EXPECT_EQ(next[i].offset(), 3 + i);  // in order
  EXPECT_EQ(next[0].delivery_count(), 2u);
  EXPECT_EQ(next[2].delivery_count(), 1u);
}

TEST_F(Shared, FailoverStandbyTakesEveryLeaseOfTheActiveBeforeAnythingNewer) {
  auto attach_failover = [&] {
    auto c = Consumer::attach({.ns = ns_, .group = "f", .mode = Mode::failover});
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c.value()) : nullptr;
  };
  auto active = attach_failover();
  auto standby = attach_failover();
  ASSERT_TRUE(active && standby);
  publish(0, 32);
  ASSERT_EQ(take(*active, 16).size(), 16u);
  active.reset();  // leaves holding all 16
  // A pop as large as what it held: all 16 come back first, none of 16..31 among them.
  auto next = take(*standby, 16);
  ASSERT_EQ(next.size(), 16u);
  for (std::uint64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(next[i].offset(), i);
    EXPECT_EQ(next[i].delivery_count(), 2u);
  }
  auto rest = take(*standby, 16);
  ASSERT_EQ(rest.size(), 16u);
  EXPECT_EQ(rest[0].offset(), 16u);
}

TEST_F(Shared, FailoverStandbyTakesOverFromAKilledActive) {
  auto* stage = static_cast<std::atomic<int>*>(::mmap(nullptr, sizeof(std::atomic<int>),
                                                      PROT_READ | PROT_WRITE,
                                                      MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (stage) std::atomic<int>(0);
  const std::string ns = ns_;
  publish(0, 10);
  pid_t child = ringfeed::test::fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "f", .mode = Mode::failover});
    if (!c) return 2;
    const auto& b = (*c)->pop(4, 0ns);
    if (b.size() != 4) return 3;
    (*c)->ack(b[0]);
    stage->store(1);
    for (;;) ::pause();
  });
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return stage->load() == 1; }));
  auto standby = Consumer::attach({.ns = ns_, .group = "f", .mode = Mode::failover});
  ASSERT_TRUE(standby.ok()) << standby.error().message;
  EXPECT_TRUE(take(**standby, 10).empty());
  ::kill(child, SIGKILL);
  ringfeed::test::wait_child(child);
  // The standby notices by itself (no reaper call here) and resumes after the ack.
  std::vector<Message> got;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        const auto& b = (*standby)->pop(10, 20ms);
        got.assign(b.begin(), b.end());
        return !got.empty();
      },
      5s));
  ASSERT_EQ(got.size(), 9u);
  for (std::uint64_t i = 0; i < 9; ++i) EXPECT_EQ(got[i].offset(), 1 + i);
}

// An active consumer killed inside a pop, after it moved `dispatch` over new messages
// and before it wrote their leases, leaves them unwritten. The standby that takes over
// hands them out first, then what is newer: partition order holds, and it does not wait
// for the writer's reaper (not run here) to find them.
TEST_F(Shared, FailoverStandbyTakesWhatTheKilledActiveTookButNeverWroteFirst) {
  auto* stage = static_cast<std::atomic<int>*>(::mmap(nullptr, sizeof(std::atomic<int>),
                                                      PROT_READ | PROT_WRITE,
                                                      MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (stage) std::atomic<int>(0);
  const std::string ns = ns_;
  publish(0, 10);
  pid_t child = ringfeed::test::fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "f", .mode = Mode::failover});
    if (!c) return 2;
    const auto& b = (*c)->pop(2, 0ns);
    if (b.size() != 2 || (*c)->ack(b[0]) != AckStatus::ok || (*c)->ack(b[1]) != AckStatus::ok)
      return 3;
    stage->store(1);
    for (;;) ::pause();
  });
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return stage->load() == 1; }));
  auto standby = Consumer::attach({.ns = ns_, .group = "f", .mode = Mode::failover});
  ASSERT_TRUE(standby.ok()) << standby.error().message;
  // What the active one's next pop did before it was killed: it took 2, 3 and 4 (one
  // CAS on dispatch) and wrote none of their leases.
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns_, 0, "f"),
                                          ringfeed::shm::Access::read_write);
  ASSERT_TRUE(seg.ok());
  auto* g = reinterpret_cast<ringfeed::shm::GroupControl*>(seg->base());
  std::uint64_t d = 2;
  ASSERT_TRUE(g->dispatch.compare_exchange_strong(d, 5));
  ::kill(child, SIGKILL);
  ringfeed::test::wait_child(child);
  std::vector<std::uint64_t> offsets;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        const auto& b = (*standby)->pop(10, 20ms);
        for (const auto& m : b) {
          offsets.push_back(m.offset());
          EXPECT_EQ(m.delivery_count(), 1u) << "offset " << m.offset();
          EXPECT_EQ((*standby)->ack(m), AckStatus::ok);
        }
        return offsets.size() >= 8;
      },
      5s))
      << offsets.size() << " taken";
  const std::vector<std::uint64_t> expected{2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(offsets, expected);
}

// What a standby in a child process saw (FailoverStandbySleepsWhileTheActiveIsBehind).
struct StandbyReport {
  std::atomic<int> stage;  // 1: attached, 2: measured, 3: the active one leaves
  std::atomic<std::int64_t> cpu_us;
  std::atomic<std::int64_t> wall_us;
  std::atomic<std::int64_t> wakes;  // voluntary context switches
  std::atomic<std::uint64_t> taken_as_standby;
  std::atomic<std::int64_t> takeover_us;  // stage 3 to its first message
  std::atomic<std::uint64_t> taken_after;
  std::atomic<std::uint64_t> first_offset;
};

TEST_F(Shared, FailoverStandbySleepsWhileTheActiveIsBehind) {
  auto* r = static_cast<StandbyReport*>(::mmap(
      nullptr, sizeof(StandbyReport), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(r, MAP_FAILED);
  new (r) StandbyReport{};
  auto active = Consumer::attach({.ns = ns_, .group = "f", .mode = Mode::failover});
  ASSERT_TRUE(active.ok()) << active.error().message;
  // The active consumer takes none of them: the group has work all along, for a standby
  // too, as far as the ring and the group's dispatch tell.
  publish(0, 10);
  const std::string ns = ns_;
  const pid_t child = ringfeed::test::fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "f", .mode = Mode::failover});
    if (!c) return 2;
    r->stage.store(1);
    auto usage = [] {
      rusage u{};
      ::getrusage(RUSAGE_SELF, &u);
      return u;
    };
    auto cpu_us = [](const rusage& u) {
      return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1'000'000ll + u.ru_utime.tv_usec +
             u.ru_stime.tv_usec;
    };
    const rusage before = usage();
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t taken = 0;
    for (int i = 0; i < 20; ++i) taken += (*c)->pop(64, 25ms).size();
    const auto t1 = std::chrono::steady_clock::now();
    const rusage after = usage();
    r->cpu_us.store(cpu_us(after) - cpu_us(before));
    r->wall_us.store(std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count());
    r->wakes.store(after.ru_nvcsw - before.ru_nvcsw);
    r->taken_as_standby.store(taken);
    r->stage.store(2);
    // Then it takes over once the active consumer detaches (right after stage 3).
    if (!ringfeed::test::wait_until([&] { return r->stage.load() == 3; })) return 3;
    const auto left = std::chrono::steady_clock::now();
    const auto deadline = left + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto& b = (*c)->pop(64, 20ms);
      if (b.empty()) continue;
      r->takeover_us.store(std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::steady_clock::now() - left)
                               .count());
      r->taken_after.store(b.size());
      r->first_offset.store(b[0].offset());
      return 0;
    }
    return 4;
  });
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return r->stage.load() == 2; }))
      << "the standby never finished its pops";
  r->stage.store(3);
  active->reset();  // detaches: the standby is next
  EXPECT_EQ(ringfeed::test::wait_child(child, 30s), 0);
  EXPECT_EQ(r->taken_as_standby.load(), 0u);
  // Twenty pops of 25 ms: a standby that spins uses the cpu all along; one that sleeps
  // until its next liveness check (every 10 ms) a small fraction of it.
  EXPECT_GE(r->wall_us.load(), 20 * 25'000);
  EXPECT_LT(r->cpu_us.load(), r->wall_us.load() / 4)
      << r->cpu_us.load() << " us of cpu in " << r->wall_us.load() << " us, " << r->wakes.load()
      << " wake-ups";
  // It notices within a liveness check period; 2 s is generous.
  EXPECT_EQ(r->taken_after.load(), 10u);
  EXPECT_EQ(r->first_offset.load(), 0u);
  EXPECT_LT(r->takeover_us.load(), 2'000'000);
  ::munmap(r, sizeof(StandbyReport));
}

}  // namespace

namespace {

TEST_F(Shared, RunHandsEveryMessageToTheHandlerAndAppliesItsVerdict) {
  auto a = Consumer::attach({.ns = ns_, .group = "push", .mode = Mode::shared});
  ASSERT_TRUE(a.ok());
  publish(0, 20);
  std::map<std::uint64_t, int> calls;
  std::set<std::uint64_t> acked;
  const auto status = (*a)->run(
      [&](const Message& m) {
        const int n = ++calls[m.offset()];
        if (m.offset() == 5 && n == 1) throw std::runtime_error("handler failure");
        if (m.offset() % 2 == 1 && n == 1) return ringfeed::Verdict::nack(0ms);
        if (m.offset() == 8) return ringfeed::Verdict::reject();
        acked.insert(m.offset());
        if (acked.size() == 19) (*a)->stop();
        return ringfeed::Verdict::ack();
      },
      {.batch = 4, .poll = 10ms, .nack_on_exception = 0ms});
  EXPECT_EQ(status, ringfeed::RunStatus::stopped);
  EXPECT_EQ(acked.size(), 19u);  // all but the rejected one
  EXPECT_EQ(acked.count(8), 0u);
  EXPECT_EQ(calls[5], 2);  // threw once, then acked
  EXPECT_EQ(calls[7], 2);  // nacked once, then acked
  EXPECT_EQ(calls[4], 1);
  EXPECT_EQ((*a)->dead_lettered(), 1u);
}

// A group's backoff list delays redelivery by delivery count, after a nack (at least
// the nack's own delay) and after an expiry alike.
TEST_F(Shared, BackoffListDelaysRedeliveriesByDeliveryCount) {
  auto c = Consumer::attach({.ns = ns_,
                             .group = "b",
                             .mode = Mode::shared,
                             .group_settings = {.lease_window = 1024,
                                                .max_deliveries = 9,
                                                .lease_ms = 1000,
                                                .backoff_ms = {100, 400}},
                             .clock = [this] { return clock_.now.load(); }});
  ASSERT_TRUE(c.ok()) << c.error().message;
  publish(0, 1);
  auto first = take(**c, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ((*c)->nack(first[0], 0ms), AckStatus::ok);  // delivered once: waits 100 ms
  clock_.advance(99ms);
  EXPECT_TRUE(take(**c, 1).empty());
  clock_.advance(1ms);
  auto second = take(**c, 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ((*c)->nack(second[0], 50ms), AckStatus::ok);  // twice: 400 ms, more than 50
  clock_.advance(399ms);
  EXPECT_TRUE(take(**c, 1).empty());
  clock_.advance(1ms);
  auto third = take(**c, 1);
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0].delivery_count(), 3u);
  // Its lease expires at 1000 ms; then the last step of the list (400 ms) applies.
  clock_.advance(1000ms);
  writer_->service(clock_.now.load());
  EXPECT_TRUE(take(**c, 1).empty());
  clock_.advance(400ms);
  auto fourth = take(**c, 1);
  ASSERT_EQ(fourth.size(), 1u);
  EXPECT_EQ(fourth[0].delivery_count(), 4u);
}

// The consumer registry (group slots) shows what each consumer holds and whether it
// reached its max_unacked limit, for `ringfeed stat`.
TEST_F(Shared, RegistryShowsUnackedCountAndTheLimit) {
  auto c = Consumer::attach(
      {.ns = ns_, .group = "r", .mode = Mode::shared, .max_unacked = 2, .clock = [this] {
         return clock_.now.load();
       }});
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns_, 0, "r"),
                                          ringfeed::shm::Access::read_only);
  ASSERT_TRUE(seg.ok());
  const auto* g = reinterpret_cast<const ringfeed::shm::GroupControl*>(seg->base());
  const auto& slot = g->slots[0];
  EXPECT_EQ(slot.owner.load(), ringfeed::shm::pack_owner(ringfeed::shm::self_identity()));
  publish(0, 3);
  auto got = take(**c, 10);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(slot.unacked.load(), 2u);
  EXPECT_EQ((*c)->pop(10, 0ns).status(), PopStatus::in_flight_full);
  EXPECT_EQ(slot.flags.load() & ringfeed::shm::kSlotAtUnackedLimit,
            ringfeed::shm::kSlotAtUnackedLimit);
  EXPECT_EQ(slot.heartbeat_ns.load(), clock_.now.load());
  EXPECT_EQ((*c)->ack(got[0]), AckStatus::ok);
  EXPECT_EQ(take(**c, 10).size(), 1u);
  EXPECT_EQ(slot.flags.load() & ringfeed::shm::kSlotAtUnackedLimit, 0u);
  EXPECT_EQ(slot.unacked.load(), 2u);
}

// auto_extend: a beating consumer keeps an expired lease (same handle); one whose beats
// stopped (here: its clock stands still while the group's runs on) loses it.
TEST_F(Shared, AutoExtendKeepsTheLeasesOfABeatingConsumer) {
  auto keeper = Consumer::attach({.ns = ns_,
                                  .group = "s",
                                  .mode = Mode::shared,
                                  .lease = 1000ms,
                                  .auto_extend = true,
                                  .group_settings = {.lease_window = 1024, .lease_ms = 1000},
                                  .clock = [this] { return clock_.now.load(); }});
  ASSERT_TRUE(keeper.ok()) << keeper.error().message;
  auto other = consumer();
  ASSERT_TRUE(other);
  publish(0, 1);
  auto held = take(**keeper, 1);
  ASSERT_EQ(held.size(), 1u);
  clock_.advance(5000ms);
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns_, 0, "s"),
                                          ringfeed::shm::Access::read_only);
  ASSERT_TRUE(seg.ok());
  const auto& slot = reinterpret_cast<const ringfeed::shm::GroupControl*>(seg->base())->slots[0];
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    return slot.heartbeat_ns.load() == clock_.now.load();
  })) << "the heartbeat thread never beat";
  EXPECT_TRUE(take(*other, 10).empty()) << "a beating consumer's lease was taken";
  writer_->service(clock_.now.load());  // the reaper extends it
  EXPECT_TRUE(take(*other, 10).empty());
  EXPECT_EQ((*keeper)->ack(held[0]), AckStatus::ok) << "the same handle stays valid";
}

TEST_F(Shared, AutoExtendEndsWhenTheHeartbeatStops) {
  std::atomic<std::int64_t> frozen{clock_.now.load()};
  auto hung = Consumer::attach({.ns = ns_,
                                .group = "s",
                                .mode = Mode::shared,
                                .lease = 1000ms,
                                .auto_extend = true,
                                .group_settings = {.lease_window = 1024, .lease_ms = 1000},
                                .clock = [&] { return frozen.load(); }});
  ASSERT_TRUE(hung.ok()) << hung.error().message;
  auto other = consumer();
  ASSERT_TRUE(other);
  publish(0, 1);
  auto held = take(**hung, 1);
  ASSERT_EQ(held.size(), 1u);
  clock_.advance(1000ms);  // the lease ran out, but the last beat is only 1 s old: kept
  writer_->service(clock_.now.load());
  EXPECT_TRUE(take(*other, 10).empty());
  clock_.advance(1100ms);  // the last beat is 2.1 s old: the reaper takes the lease away
  writer_->service(clock_.now.load());
  auto moved = take(*other, 10);
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(moved[0].delivery_count(), 2u);
  EXPECT_EQ((*hung)->ack(held[0]), AckStatus::lease_lost);
}

// The reaper found slot 0's owner dead, but by the time it reaps, a live consumer holds
// the slot: that consumer's leases stay. Only leases whose slot still holds the dead
// owner's word are returned.
TEST_F(Shared, AReclaimedSlotKeepsItsNewOwnersLeases) {
  auto a = consumer();
  ASSERT_TRUE(a);
  publish(0, 1);
  auto held = take(*a, 1);
  ASSERT_EQ(held.size(), 1u);
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns_, 0, "s"),
                                          ringfeed::shm::Access::read_write);
  ASSERT_TRUE(seg.ok());
  auto* g = reinterpret_cast<ringfeed::shm::GroupControl*>(seg->base());
  ringfeed::shm::LeaseTable table(g, 1024);
  const std::uint32_t now_ms =
      ringfeed::shm::LeaseTable::to_lease_ms(clock_.now.load(), g->epoch_ns);
  std::vector<std::uint64_t> dead;
  std::uint64_t words[ringfeed::shm::kGroupSlots] = {};
  words[0] = ringfeed::shm::pack_owner({1, 12345});  // the dead process that had slot 0
  EXPECT_EQ(table.reap(now_ms, 1, 5, dead, nullptr, words), 0u);
  EXPECT_EQ(a->ack(held[0]), AckStatus::ok) << "the live owner's lease was kept";

  publish(1, 1);
  auto next = take(*a, 1);
  ASSERT_EQ(next.size(), 1u);
  words[0] = g->slots[0].owner.load();  // now the slot's word itself was found dead
  EXPECT_EQ(table.reap(now_ms, 1, 5, dead, nullptr, words), 1u);
  EXPECT_EQ(a->ack(next[0]), AckStatus::lease_lost);
}

// A consumer that dies while it starts the group (between claiming the start and
// storing where the group begins) leaves `dispatch` at kStarting + its slot: the next
// consumer sees that slot's owner dead and starts the group itself.
TEST_F(Shared, AGroupWhoseStarterDiedIsStartedByTheNextConsumer) {
  publish(0, 3);
  { ASSERT_TRUE(consumer()); }  // creates the group, then leaves
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns_, 0, "s"),
                                          ringfeed::shm::Access::read_write);
  ASSERT_TRUE(seg.ok());
  auto* g = reinterpret_cast<ringfeed::shm::GroupControl*>(seg->base());
  const auto dead = ringfeed::shm::pack_owner({1, 12345});  // not pid 1's start time
  g->header.creator_pid = 1;
  g->header.creator_start_time = 12345;
  g->slots[7].owner.store(dead);
  g->low_seq.store(ringfeed::shm::kNotStarted);
  g->dispatch.store(ringfeed::shm::kStarting + 7);
  const auto t0 = std::chrono::steady_clock::now();
  auto b = consumer();
  ASSERT_TRUE(b);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "did not wait for the dead starter";
  EXPECT_TRUE(ringfeed::shm::group_started(g->dispatch.load()));
  EXPECT_EQ(take(*b, 10).size(), 3u);
}

TEST_F(Shared, RunInExclusiveModeRedeliversANackToTheSameConsumer) {
  auto a = Consumer::attach({.ns = ns_, .group = "x", .mode = Mode::exclusive});
  ASSERT_TRUE(a.ok());
  publish(0, 3);
  std::vector<std::pair<std::uint64_t, std::uint32_t>> seen;  // offset, delivery
  const auto status = (*a)->run([&](const Message& m) {
    seen.emplace_back(m.offset(), m.delivery_count());
    if (seen.size() == 4) (*a)->stop();
    return m.offset() == 1 && m.delivery_count() == 1 ? ringfeed::Verdict::nack(0ms)
                                                      : ringfeed::Verdict::ack();
  });
  EXPECT_EQ(status, ringfeed::RunStatus::stopped);
  const std::vector<std::pair<std::uint64_t, std::uint32_t>> expected{
      {0, 1}, {1, 1}, {2, 1}, {1, 2}};
  EXPECT_EQ(seen, expected);
}

}  // namespace
