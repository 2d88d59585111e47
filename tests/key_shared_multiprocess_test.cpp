// key_shared groups across processes, under churn: three consumer processes take keyed
// messages from one writer process, nack some, and are killed with SIGKILL and replaced
// again and again, so hash ranges keep moving. Every consumer checks at each pop that
// the key's previous message is acked or held by itself (never on another consumer,
// never overtaken after a nack); in the end every message was acked.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <random>
#include <vector>

#include "group_state.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
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
constexpr std::uint64_t kMessages = 40'000;
#else
constexpr std::uint64_t kMessages = 200'000;
#endif
constexpr std::uint32_t kKeys = 97;
constexpr std::uint64_t kNone = ~0ull;

// Shared by every process of the test. `previous` is fixed before the consumers fork.
struct Ledger {
  std::uint64_t previous[kMessages];             // the same key's message before, or kNone
  std::atomic<std::uint32_t> acked[kMessages];   // counted before the ack call
  std::atomic<std::uint64_t> holder[kMessages];  // incarnation holding it, 0: none
  std::atomic<std::uint64_t> settled;
  std::atomic<std::uint64_t> violations;
  std::atomic<std::uint64_t> first_violation;  // offset + 1
  std::atomic<int> attached;
};

std::uint32_t key_of(std::uint64_t i) {
  return static_cast<std::uint32_t>((i * 2654435761u) >> 7) % kKeys;
}

std::uint64_t group_low_seq(const std::string& ns) {
  return ringfeed::test::group_low_seq(ns, "ordered");
}

int run_consumer(const std::string& ns, Ledger* ledger, std::uint64_t incarnation) {
  auto c = Consumer::attach({.ns = ns, .group = "ordered", .mode = Mode::key_shared});
  if (!c) {
    std::fprintf(stderr, "attach: %s\n", c.error().message.c_str());
    return 2;
  }
  ledger->attached.fetch_add(1);
  std::mt19937_64 rng(incarnation);
  for (int polls = 0;; ++polls) {
    if ((polls & 63) == 0 && group_low_seq(ns) >= kMessages) break;
    const auto& b = (*c)->pop(32, 50ms);
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      std::fprintf(stderr, "consumer %llu: %s\n", static_cast<unsigned long long>(incarnation),
                   ringfeed::to_string(b.status()));
      return 3;
    }
    for (const auto& m : b) {
      const std::uint64_t off = m.offset();
      if (off >= kMessages || m.key() != "k" + std::to_string(key_of(off))) return 4;
      const std::uint64_t prev = ledger->previous[off];
      if (prev != kNone && ledger->acked[prev].load() == 0 &&
          ledger->holder[prev].load() != incarnation) {
        if (ledger->violations.fetch_add(1) == 0) ledger->first_violation.store(off + 1);
      }
      ledger->holder[off].store(incarnation);
    }
    for (const auto& m : b) {
      const std::uint64_t off = m.offset();
      if (rng() % 50 == 0) {
        ledger->holder[off].store(0);
        if ((*c)->nack(m, std::chrono::milliseconds(rng() % 3)) != AckStatus::ok) return 6;
      } else {
        ledger->acked[off].fetch_add(1);
        if ((*c)->ack(m) != AckStatus::ok) return 7;
        ledger->settled.fetch_add(1);
      }
    }
  }
  return 0;
}

TEST(KeySharedMultiProcess, OrderPerKeyHoldsUnderConsumerChurn) {
  const auto ns = ringfeed::test::unique_ns("kmp");
  auto w = Writer::create(
      {.ns = ns, .partition = 0, .capacity = 4u << 20, .group_defaults = {.max_deliveries = 63}});
  ASSERT_TRUE(w.ok()) << w.error().message;
  void* mem =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* ledger = new (mem) Ledger{};
  std::vector<std::uint64_t> last(kKeys, kNone);
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    ledger->previous[i] = last[key_of(i)];
    last[key_of(i)] = i;
  }

  constexpr int kConsumers = 3;
  std::vector<pid_t> kids(kConsumers);
  std::uint64_t incarnation = 0;
  auto spawn = [&](int i) {
    kids[i] = ringfeed::test::fork_child(
        [&, inc = ++incarnation] { return run_consumer(ns, ledger, inc); });
  };
  for (int i = 0; i < kConsumers; ++i) spawn(i);
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ledger->attached.load() == kConsumers; }));

  std::mt19937_64 rng(5);
  constexpr std::uint64_t kRounds = 20;
  constexpr std::uint64_t kSlice = kMessages / kRounds;
  std::string key;
  for (std::uint64_t round = 0; round < kRounds; ++round) {
    for (std::uint64_t i = round * kSlice; i < (round + 1) * kSlice; ++i) {
      key = "k" + std::to_string(key_of(i));
      ringfeed::OutMessage m{.key = key, .value = key, .upstream_offset = i};
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
    const int victim = static_cast<int>(rng() % kConsumers);
    ::kill(kids[victim], SIGKILL);
    ringfeed::test::wait_child(kids[victim]);
    spawn(victim);
  }
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        (*w)->service();
        return group_low_seq(ns) >= kMessages;
      },
      120s));
  for (pid_t p : kids) EXPECT_EQ(ringfeed::test::wait_child(p, 30s), 0);
  EXPECT_EQ(ledger->violations.load(), 0u)
      << "first at offset " << static_cast<std::int64_t>(ledger->first_violation.load()) - 1;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_GE(ledger->acked[i].load(), 1u) << "message " << i << " was lost";
  }
  ::munmap(mem, sizeof(Ledger));
}

}  // namespace
