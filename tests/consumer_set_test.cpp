// ConsumerSet: one worker popping many partition rings. Which consumer a pop returns
// (whichever has messages, in turn so that none starves), a set asleep on every ring at
// once woken by a writer in another process, released rings, a writer that died, and
// wrong use.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "group_state.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/consumer_set.hpp"
#include "ringfeed/writer.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::ConsumerSet;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
namespace test = ringfeed::test;

namespace {

constexpr std::uint32_t kRings = 3;
// One mode per ring: the set takes consumers of any mode side by side.
constexpr Mode kModes[kRings] = {Mode::exclusive, Mode::shared, Mode::broadcast};

std::unique_ptr<Writer> make_writer(const std::string& ns, std::uint32_t partition) {
  auto w = Writer::create({.ns = ns, .partition = partition, .capacity = 1 << 16});
  EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message);
  return w.ok() ? std::move(w.value()) : nullptr;
}

ringfeed::Result<std::unique_ptr<Consumer>> attach(const std::string& ns, std::uint32_t partition,
                                                   std::chrono::nanoseconds spin = 50us) {
  return Consumer::attach(
      {.ns = ns, .partition = partition, .group = "set", .mode = kModes[partition], .spin = spin});
}

struct Attached {
  std::vector<std::unique_ptr<Consumer>> consumers;
  ConsumerSet set;
};

// Attaches one consumer per ring (waiting for the rings to exist) and adds them to a set.
std::unique_ptr<Attached> attach_all(const std::string& ns, std::chrono::nanoseconds spin = 50us) {
  auto a = std::make_unique<Attached>();
  for (std::uint32_t p = 0; p < kRings; ++p) {
    std::unique_ptr<Consumer> c;
    EXPECT_TRUE(test::wait_until(
        [&] {
          auto r = attach(ns, p, spin);
          if (r.ok()) c = std::move(r.value());
          return c != nullptr;
        },
        10s))
        << "ring " << p;
    if (c == nullptr) return nullptr;
    EXPECT_TRUE(a->set.add(*c).ok());
    a->consumers.push_back(std::move(c));
  }
  return a;
}

void publish(Writer& w, const std::string& value, std::uint64_t offset) {
  const ringfeed::OutMessage m{.value = value, .upstream_offset = offset};
  ASSERT_EQ(w.publish({&m, 1}, 0ns), 1u);
}

TEST(ConsumerSet, PopsWhicheverRingHasMessagesAndTakesTurns) {
  const auto ns = test::unique_ns("set-turns");
  std::vector<std::unique_ptr<Writer>> writers;
  for (std::uint32_t p = 0; p < kRings; ++p) writers.push_back(make_writer(ns, p));
  auto a = attach_all(ns);
  ASSERT_NE(a, nullptr);
  ConsumerSet& set = a->set;
  ASSERT_EQ(set.size(), kRings);

  // Nothing anywhere: the wait runs out, no consumer.
  auto none = set.pop(8, 20ms);
  EXPECT_EQ(none.consumer, nullptr);
  EXPECT_EQ(none.index, kRings);
  EXPECT_EQ(none.batch->status(), PopStatus::timed_out);

  // Only ring 1 has one: that is what comes.
  publish(*writers[1], "one", 0);
  auto got = set.pop(8, 1s);
  ASSERT_EQ(got.index, 1u);
  ASSERT_EQ(got.consumer, a->consumers[1].get());
  ASSERT_EQ(got.batch->status(), PopStatus::ok);
  ASSERT_EQ(got.batch->size(), 1u);
  EXPECT_EQ((*got.batch)[0].value(), "one");
  EXPECT_EQ(got.consumer->ack(*got.batch), AckStatus::ok);

  // Every ring busy: they take turns, starting after the last one returned, and every
  // message of every ring comes once, in order.
  constexpr std::uint32_t kEach = 12;
  for (std::uint32_t p = 0; p < kRings; ++p) {
    for (std::uint32_t i = 0; i < kEach; ++i) {
      publish(*writers[p], std::to_string(p) + "/" + std::to_string(i), 1 + i);
    }
  }
  std::vector<std::uint32_t> next(kRings, 0);
  std::vector<std::size_t> order;
  for (std::uint32_t n = 0; n < kRings * kEach / 4; ++n) {
    auto b = set.pop(4, 1s);
    ASSERT_NE(b.consumer, nullptr);
    ASSERT_EQ(b.batch->status(), PopStatus::ok);
    order.push_back(b.index);
    for (const ringfeed::Message& m : *b.batch) {
      EXPECT_EQ(m.value(), std::to_string(b.index) + "/" + std::to_string(next[b.index]));
      ++next[b.index];
    }
    EXPECT_EQ(b.consumer->ack(*b.batch), AckStatus::ok);
  }
  EXPECT_EQ(next, (std::vector<std::uint32_t>{kEach, kEach, kEach}));
  const std::vector<std::size_t> turns = {2, 0, 1, 2, 0, 1, 2, 0, 1};
  EXPECT_EQ(order, turns);
  EXPECT_EQ(set.pop(8, 0ns).consumer, nullptr);
}

TEST(ConsumerSet, ASetAsleepOnEveryRingIsWokenByAWriterInAnotherProcess) {
  const auto ns = test::unique_ns("set-wake");
  int to_child[2];
  ASSERT_EQ(::pipe(to_child), 0);
  // The writers live in a child. Once the set sleeps on all three rings (each group
  // counts a sleeper), it publishes on the last ring, then waits for the word to exit.
  const pid_t child = test::fork_child([&] {
    ::close(to_child[1]);
    std::vector<std::unique_ptr<Writer>> writers;
    for (std::uint32_t p = 0; p < kRings; ++p) writers.push_back(make_writer(ns, p));
    const bool all_asleep = test::wait_until(
        [&] {
          for (std::uint32_t p = 0; p < kRings; ++p) {
            if (test::group_sleepers(ns, "set", p) == 0) return false;
          }
          return true;
        },
        20s);
    if (!all_asleep) return 2;
    const ringfeed::OutMessage m{.value = "woken", .upstream_offset = 5};
    if (writers[2]->publish({&m, 1}, 0ns) != 1) return 3;
    pollfd pfd{.fd = to_child[0], .events = POLLIN, .revents = 0};
    if (::poll(&pfd, 1, 30'000) != 1) return 4;
    return 0;
  });
  ::close(to_child[0]);
  ASSERT_GT(child, 0);
  // No spin: the set goes to sleep at once, and only a wake (or a sleep slice) ends it.
  auto a = attach_all(ns, 0ns);
  ASSERT_NE(a, nullptr);
  auto got = a->set.pop(8, 30s);
  ASSERT_EQ(got.index, 2u);
  ASSERT_EQ(got.batch->status(), PopStatus::ok);
  ASSERT_EQ(got.batch->size(), 1u);
  EXPECT_EQ((*got.batch)[0].value(), "woken");
  EXPECT_EQ(got.consumer->ack(*got.batch), AckStatus::ok);
  for (std::uint32_t p = 0; p < kRings; ++p) {
    EXPECT_EQ(test::group_sleepers(ns, "set", p), 0u) << "a set awake counts as no sleeper";
  }
  ASSERT_EQ(::write(to_child[1], "x", 1), 1);
  ::close(to_child[1]);
  EXPECT_EQ(test::wait_child(child, 30s), 0) << "2: the set never slept on every ring";
}

TEST(ConsumerSet, AReleasedRingSaysEndOfPartitionOnlyWhenNothingElseCame) {
  const auto ns = test::unique_ns("set-released");
  std::vector<std::unique_ptr<Writer>> writers;
  for (std::uint32_t p = 0; p < kRings; ++p) writers.push_back(make_writer(ns, p));
  auto a = attach_all(ns);
  ASSERT_NE(a, nullptr);
  writers[0]->set_released(true);
  auto released = a->set.pop(8, 30ms);
  ASSERT_EQ(released.index, 0u);
  EXPECT_EQ(released.batch->status(), PopStatus::end_of_partition);
  // Messages elsewhere come first, at once.
  publish(*writers[2], "busy", 0);
  auto got = a->set.pop(8, 10s);
  ASSERT_EQ(got.index, 2u);
  ASSERT_EQ(got.batch->status(), PopStatus::ok);
  EXPECT_EQ(got.consumer->ack(*got.batch), AckStatus::ok);
}

TEST(ConsumerSet, AWriterThatDiedWithoutClosingIsSaidClosed) {
  const auto ns = test::unique_ns("set-dead");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = test::fork_child([&] {
    ::close(ready[0]);
    std::vector<std::unique_ptr<Writer>> writers;
    for (std::uint32_t p = 0; p < kRings; ++p) writers.push_back(make_writer(ns, p));
    if (::write(ready[1], "x", 1) != 1) return 2;
    ::pause();  // until killed
    return 0;
  });
  ::close(ready[1]);
  ASSERT_GT(child, 0);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  auto a = attach_all(ns);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->set.pop(8, 20ms).consumer, nullptr);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(test::wait_child(child, 10s), -1);
  auto got = a->set.pop(8, 10s);
  ASSERT_NE(got.consumer, nullptr);
  EXPECT_EQ(got.batch->status(), PopStatus::closed);
  // The dead writer left its segments.
  a.reset();
  for (const auto& name : ringfeed::shm::Segment::list("ringfeed." + ns + ".")) {
    ringfeed::shm::Segment::remove(name);
  }
}

TEST(ConsumerSet, AddRefusesTheSameConsumerTwice) {
  const auto ns = test::unique_ns("set-twice");
  auto w = make_writer(ns, 0);
  auto c = attach(ns, 0);
  ASSERT_TRUE(c.ok()) << c.error().message;
  ConsumerSet set;
  ASSERT_TRUE(set.add(**c).ok());
  auto again = set.add(**c);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("added already"), std::string::npos)
      << again.error().message;
  EXPECT_EQ(set.size(), 1u);
  EXPECT_EQ(set.pop(0, 1s).consumer, nullptr) << "max 0 takes nothing and does not wait";
}

}  // namespace
