// Shared groups across processes: four consumer processes take messages under leases
// from one writer process, with nacks, poison messages that end as dead letters, and
// consumers killed with SIGKILL at random moments. In the end every message was acked
// exactly once or dead-lettered exactly where max_deliveries was reached, and
// duplicates never exceed what the killed consumers held.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <span>
#include <thread>

#include "group_state.hpp"
#include "io/framed_record.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/dead_letter_log.hpp"
#include "ringfeed/writer.hpp"
#include "shm/lease_table.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::uint64_t kMessages = 300'000;
#else
constexpr std::uint64_t kMessages = 5'000'000;
#endif
constexpr std::uint32_t kMaxDeliveries = 5;

bool poison(std::uint64_t offset) {
  return offset % 10007 == 3;
}

// Counters per message, in memory shared by every process of the test.
struct Ledger {
  std::atomic<std::uint32_t> acked[kMessages];
  std::atomic<std::uint32_t> dead[kMessages];
  std::atomic<std::uint32_t> deliveries[kMessages];
  std::atomic<std::uint64_t> settled;  // acked + dead, as counted by the consumers
  std::atomic<std::uint32_t> held[8];  // per consumer: popped, not yet settled
  std::atomic<int> attached;
};

// Every message below the group's low sequence is acked or dead: the group's own word
// on when the work is done, independent of the test's counting.
std::uint64_t group_low_seq(const std::string& ns) {
  return ringfeed::test::group_low_seq(ns, "workers");
}

Ledger* make_ledger() {
  void* p =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Ledger{};
}

int run_consumer(const std::string& ns, Ledger* ledger, int index, std::uint64_t seed,
                 std::uint32_t max_deliveries, std::uint64_t count,
                 std::chrono::nanoseconds work = 0ns) {
  auto c = Consumer::attach({.ns = ns,
                             .group = "workers",
                             .mode = Mode::shared,
                             .group_settings = {.max_deliveries = max_deliveries}});
  if (!c) {
    std::fprintf(stderr, "attach: %s\n", c.error().message.c_str());
    return 2;
  }
  ledger->attached.fetch_add(1);
  std::mt19937_64 rng(seed);
  for (int polls = 0;; ++polls) {
    if ((polls & 63) == 0 && group_low_seq(ns) >= count) break;
    const auto& b = (*c)->pop(64, 100ms);
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      std::fprintf(stderr, "consumer %d: %s\n", index, ringfeed::to_string(b.status()));
      return 3;
    }
    ledger->held[index].fetch_add(static_cast<std::uint32_t>(b.size()));
    for (const auto& m : b) {
      const std::uint64_t off = m.offset();
      if (off >= count) return 4;
      ledger->deliveries[off].fetch_add(1);
      // Work per message, so that kills often land while leases are held.
      for (const auto until = std::chrono::steady_clock::now() + work;
           std::chrono::steady_clock::now() < until;) {
      }
      if (m.delivery_count() > max_deliveries) return 5;
      const bool nack = poison(off) || rng() % 100 == 0;
      if (nack) {
        // Counted before the call: a kill between the two over-counts, never hides.
        const bool last = m.delivery_count() >= max_deliveries;
        if (last) ledger->dead[off].fetch_add(1);
        if ((*c)->nack(m, 0ms) != AckStatus::ok) return 6;
        if (last) ledger->settled.fetch_add(1);
      } else {
        ledger->acked[off].fetch_add(1);
        if ((*c)->ack(m) != AckStatus::ok) return 7;
        ledger->settled.fetch_add(1);
      }
      ledger->held[index].fetch_sub(1);
    }
  }
  return 0;
}

void publish_all(Writer& w, std::uint64_t count, const std::function<void()>& between = {}) {
  char value[16];
  for (std::uint64_t i = 0; i < count;) {
    for (int k = 0; k < 64 && i < count; ++k, ++i) {
      const int len =
          std::snprintf(value, sizeof value, "%llu", static_cast<unsigned long long>(i));
      ringfeed::OutMessage m{.value = {value, static_cast<std::size_t>(len)}, .upstream_offset = i};
      for (;;) {
        if (w.publish({&m, 1}, 0ns) == 1) break;
        w.service();  // the reaper, while waiting for space
        if (between) between();
      }
    }
    if (between && i % 4096 == 0) between();
  }
}

TEST(SharedMultiProcess, FourConsumersWithNacksSettleEveryMessageOnce) {
  const auto ns = ringfeed::test::unique_ns("smp");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 4u << 20});
  ASSERT_TRUE(w.ok()) << w.error().message;
  Ledger* ledger = make_ledger();
  char dir_template[] = "/tmp/ringfeed-dlq-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  auto dlq = ringfeed::DeadLetterLog::open(dir_template, 0);
  ASSERT_TRUE(dlq.ok()) << dlq.error().message;
  (*w)->set_dead_letter_sink([&](const ringfeed::shm::DeadLetter& d) { return dlq->append(d); });
  std::vector<pid_t> kids;
  for (int i = 0; i < 4; ++i) {
    kids.push_back(ringfeed::test::fork_child(
        [&, i] { return run_consumer(ns, ledger, i, 1000 + i, kMaxDeliveries, kMessages); }));
  }
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ledger->attached.load() == 4; }));
  publish_all(**w, kMessages);
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        (*w)->service();
        return group_low_seq(ns) >= kMessages;
      },
      300s));
  for (pid_t p : kids) EXPECT_EQ(ringfeed::test::wait_child(p, 30s), 0);
  std::uint64_t dead = 0;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    if (poison(i)) {
      ASSERT_EQ(ledger->dead[i].load(), 1u) << "poison message " << i;
      ASSERT_EQ(ledger->acked[i].load(), 0u) << i;
      ASSERT_EQ(ledger->deliveries[i].load(), kMaxDeliveries) << i;
      ++dead;
    } else {
      // Random nacks may hit one message up to max_deliveries times, rarely; then it is
      // a dead letter too, which is right.
      ASSERT_EQ(ledger->acked[i].load() + ledger->dead[i].load(), 1u) << "message " << i;
      if (ledger->dead[i].load() == 1) {
        ASSERT_EQ(ledger->deliveries[i].load(), kMaxDeliveries) << i;
      }
    }
  }
  EXPECT_GT(dead, 0u);

  // The dead-letter log holds exactly the messages that died, once each.
  std::ifstream in(dlq->path(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::set<std::uint64_t> logged;
  for (std::size_t at = 0; at < bytes.size();) {
    const auto r =
        ringfeed::io::decode(std::as_bytes(std::span(bytes.data() + at, bytes.size() - at)), at);
    ASSERT_EQ(r.status, ringfeed::io::DecodeStatus::ok) << r.error;
    EXPECT_EQ(r.record.kind, ringfeed::io::RecordKind::dead_letter);
    EXPECT_EQ(r.record.group, "workers");
    EXPECT_EQ(r.record.delivery_count, kMaxDeliveries);
    EXPECT_EQ(r.record.reason, "max deliveries reached");
    EXPECT_EQ(r.record.value, std::to_string(r.record.upstream_offset));
    EXPECT_TRUE(logged.insert(r.record.upstream_offset).second) << "logged twice";
    at += r.size;
  }
  std::set<std::uint64_t> died;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    if (ledger->dead[i].load() != 0) died.insert(i);
  }
  EXPECT_EQ(logged, died);
  std::filesystem::remove_all(dir_template);
}

TEST(SharedMultiProcess, ConsumersKilledAtRandomMomentsLoseNothing) {
  const auto ns = ringfeed::test::unique_ns("skill");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 4u << 20});
  ASSERT_TRUE(w.ok()) << w.error().message;
  Ledger* ledger = make_ledger();
  // What the writer dead-lettered, by offset: a consumer killed while it holds a poison
  // message's last delivery never counts it dead itself; the reaper dead-letters it.
  std::vector<std::uint32_t> logged;
  (*w)->set_dead_letter_sink([&](const ringfeed::shm::DeadLetter& d) {
    if (d.upstream_offset >= logged.size()) logged.resize(d.upstream_offset + 1);
    ++logged[d.upstream_offset];
    return true;
  });
  // Kills redeliver; a message must not run out of deliveries because of them.
  constexpr std::uint32_t kGenerous = 63;
  constexpr std::uint64_t kRounds = 64;
  constexpr std::uint64_t kCount = kMessages / 10 / kRounds * kRounds;
  std::vector<pid_t> kids(4);
  std::uint64_t seed = 7;
  auto spawn = [&](int i) {
    kids[i] = ringfeed::test::fork_child(
        [&, i, s = seed++] { return run_consumer(ns, ledger, i, s, kGenerous, kCount, 1us); });
  };
  for (int i = 0; i < 4; ++i) spawn(i);
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ledger->attached.load() == 4; }));
  std::mt19937_64 rng(99);
  // 64 rounds: publish a slice, and kill one consumer somewhere in the middle of it.
  constexpr std::uint64_t kSlice = kCount / kRounds;
  int kills = 0;
  std::uint64_t held_at_kills = 0;
  char value[16];
  for (std::uint64_t round = 0; round < kRounds; ++round) {
    for (std::uint64_t i = round * kSlice; i < (round + 1) * kSlice; ++i) {
      const int len =
          std::snprintf(value, sizeof value, "%llu", static_cast<unsigned long long>(i));
      ringfeed::OutMessage m{.value = {value, static_cast<std::size_t>(len)}, .upstream_offset = i};
      while ((*w)->publish({&m, 1}, 0ns) != 1) (*w)->service();
    }
    const std::uint64_t kill_at = round * kSlice + rng() % kSlice;
    ASSERT_TRUE(ringfeed::test::wait_until(
        [&] {
          (*w)->service();
          return ledger->settled.load() >= kill_at;
        },
        60s))
        << "round " << round;
    const int victim = static_cast<int>(rng() % 4);
    ::kill(kids[victim], SIGKILL);
    ringfeed::test::wait_child(kids[victim]);
    held_at_kills += ledger->held[victim].exchange(0);
    ++kills;
    spawn(victim);
  }
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        (*w)->service();
        return group_low_seq(ns) >= kCount;
      },
      300s));
  for (pid_t p : kids) EXPECT_EQ(ringfeed::test::wait_child(p, 30s), 0);
  EXPECT_GE(kills, 50);
  std::uint64_t duplicates = 0;
  std::uint64_t lost = 0;
  logged.resize(kCount);
  for (std::uint64_t i = 0; i < kCount; ++i) {
    // Every message a consumer counted dead went to the dead-letter log, once.
    if (ledger->dead[i].load() != 0) {
      EXPECT_EQ(logged[i], 1u) << "dead message " << i;
    }
    EXPECT_LE(logged[i], 1u) << "message " << i << " dead-lettered twice";
    const auto settled = ledger->acked[i].load() + logged[i];
    if (settled == 0) {
      if (++lost <= 5) {
        ADD_FAILURE() << "message " << i << " was lost (delivered " << ledger->deliveries[i].load()
                      << " times)";
      }
      continue;
    }
    duplicates += settled - 1;
  }
  EXPECT_EQ(lost, 0u);
  EXPECT_LE(duplicates, held_at_kills);
  std::printf("%d kills, %llu leases held at the kills, %llu settled twice, %llu dead letters\n",
              kills, static_cast<unsigned long long>(held_at_kills),
              static_cast<unsigned long long>(duplicates),
              static_cast<unsigned long long>(std::count(logged.begin(), logged.end(), 1u)));
}

// Four consumers share one cpu (as on a 2-cpu host under load), pop one message at a time
// from a small lease window (1024: the window laps every 1024 messages, so stale-lap and
// abandoned-entry judgements run constantly), and ack at once: with 30 s leases and no
// consumer dying, no ack may ever be refused, and every message is acked exactly once.
TEST(SharedMultiProcess, ConsumersSharingACpuNeverLoseALeaseTheyJustTook) {
  const auto ns = ringfeed::test::unique_ns("sone");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1u << 20});
  ASSERT_TRUE(w.ok()) << w.error().message;
  Ledger* ledger = make_ledger();
  constexpr std::uint64_t kCount = kMessages / 5;
  std::vector<pid_t> kids;
  for (int i = 0; i < 4; ++i) {
    kids.push_back(ringfeed::test::fork_child([&, i] {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(static_cast<int>(std::thread::hardware_concurrency()) - 1, &one);
      ::sched_setaffinity(0, sizeof one, &one);  // best effort
      auto c = Consumer::attach({.ns = ns,
                                 .group = "workers",
                                 .mode = Mode::shared,
                                 .group_settings = {.lease_window = 1024}});
      if (!c) return 2;
      ledger->attached.fetch_add(1);
      for (int polls = 0;; ++polls) {
        if ((polls & 63) == 0 && group_low_seq(ns) >= kCount) return 0;
        const auto& b = (*c)->pop(1, 10ms);
        if (b.status() == PopStatus::timed_out) continue;
        if (b.status() != PopStatus::ok) {
          std::fprintf(stderr, "consumer %d: pop %s\n", i, ringfeed::to_string(b.status()));
          return 3;
        }
        for (const auto& m : b) {
          if (m.offset() >= kCount) return 4;
          ledger->acked[m.offset()].fetch_add(1);
        }
        if (const auto st = (*c)->ack(b); st != AckStatus::ok) {
          std::fprintf(stderr, "consumer %d: ack of offset %llu (delivery %u) refused: %s\n", i,
                       static_cast<unsigned long long>(b[0].offset()), b[0].delivery_count(),
                       ringfeed::to_string(st));
          return 5;
        }
      }
    }));
  }
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ledger->attached.load() == 4; }));
  publish_all(**w, kCount);
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        (*w)->service();
        return group_low_seq(ns) >= kCount;
      },
      300s));
  for (pid_t p : kids) EXPECT_EQ(ringfeed::test::wait_child(p, 30s), 0);
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < kCount; ++i) wrong += ledger->acked[i].load() != 1;
  EXPECT_EQ(wrong, 0u) << "messages not acked exactly once";
}

}  // namespace
