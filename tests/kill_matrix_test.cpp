// The kill matrix: a consumer of each mode (exclusive, failover, shared, key_shared,
// broadcast) SIGKILLs itself at each point of interest (mid-pop, holding leases, mid-ack)
// while a writer streams, again and again, and the others go on. Checked, from a ledger
// the consumer processes write in shared memory and from the group's own state:
//
//   - nothing is lost: the group acks everything (its low watermark reaches the end)
//     and every message was delivered at least once; a broadcast consumer that lives
//     gets every message once, in order, whatever its group-mates did;
//   - duplicates are bounded by what was in flight: deliveries beyond one per message
//     never exceed what the killed consumers had popped and not acked when they died;
//   - no ack is refused (leases are long; only the killed ones lose theirs), and the
//     consumers that live finish.
//
// Also a consumer hung with SIGSTOP past its lease (its leases go to another consumer,
// its late acks are refused cleanly, it goes on) and a checkpoint writer killed mid-write
// (the checkpoint is the old or the new one, never torn). The writer killed mid-publish
// is the fetcher's crash tests (FetcherFileSource.KilledFetcherRestartedLosesNothing,
// CliRestart.*, RedisFetcher.*): see tests/README.md.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

#include "io/checkpoint.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
using ringfeed::test::fork_child;
using ringfeed::test::unique_ns;
using ringfeed::test::wait_child;
using ringfeed::test::wait_until;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::uint64_t kMessages = 6'000;
#else
constexpr std::uint64_t kMessages = 30'000;
#endif
constexpr int kKills = 5;  // consumer lives that end in a SIGKILL, per cell
constexpr int kLives = kKills + 2;
constexpr std::size_t kPop = 16;

enum class Point { mid_pop, holding_leases, mid_ack };

const char* name_of(Point p) {
  switch (p) {
    case Point::mid_pop:
      return "MidPop";
    case Point::holding_leases:
      return "HoldingLeases";
    case Point::mid_ack:
      return "MidAck";
  }
  return "?";
}

// Written by the consumer processes, read by the test process.
struct Ledger {
  std::atomic<std::uint32_t> delivered[kMessages];  // pops of each offset, every life
  // Per life: popped and not acked. Raised before a pop's messages are counted, lowered
  // after each ack: never below what the life holds, whenever it dies.
  std::atomic<std::uint64_t> unacked[kLives];
  std::atomic<int> attached[kLives];
  std::atomic<std::uint64_t> first[kLives];     // broadcast: the first offset taken, + 1
  std::atomic<std::uint64_t> received[kLives];  // broadcast: the next offset expected
  std::atomic<int> stop;                        // the test saw the group finish
  // A life that is to die is slow to reach its point (it is given few messages beside
  // the one that lives): the one that lives holds back until it has died, so that the
  // messages left are not all taken before then.
  std::atomic<int> hold_living;
};

Ledger* make_ledger() {
  void* p =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Ledger{};
}

std::uint64_t offset_in(std::string_view value) {
  std::uint64_t v = UINT64_MAX;
  std::from_chars(value.data(), value.data() + value.size(), v);
  return v;
}

// How one consumer life ends: not at all (it runs until the test stops it), or by
// SIGKILLing itself at `point` once it has made `after_pops` pops that took messages.
struct Plan {
  bool dies = false;
  Point point = Point::holding_leases;
  std::uint32_t after_pops = 1;
  std::uint32_t delay_us = 0;  // mid_pop: how long after that pop, from another thread
};

// One consumer life. Exit codes say which check failed.
int consumer_life(const std::string& ns, Mode mode, Ledger* ledger, int life, Plan plan) {
  auto c = Consumer::attach(
      {.ns = ns, .group = "g", .mode = mode, .spin = std::chrono::microseconds(20)});
  if (!c) {
    std::fprintf(stderr, "life %d: attach: %s\n", life, c.error().message.c_str());
    return 2;
  }
  ledger->attached[life] = 1;
  const bool in_order = mode == Mode::exclusive || mode == Mode::failover;
  std::uint64_t last = UINT64_MAX;  // the last offset this life took (in-order modes)
  std::uint64_t next = UINT64_MAX;  // broadcast: the next offset expected
  std::uint32_t pops = 0;
  while (ledger->stop.load() == 0) {
    if (!plan.dies && ledger->hold_living.load() == 1) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    const auto& b = (*c)->pop(kPop, 20ms);
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      std::fprintf(stderr, "life %d: pop: %s\n", life, ringfeed::to_string(b.status()));
      return 3;
    }
    ledger->unacked[life].fetch_add(b.size());
    for (const auto& m : b) {
      const std::uint64_t off = m.offset();
      if (off >= kMessages || offset_in(m.value()) != off) return 4;
      if (mode == Mode::broadcast) {
        // A broadcast consumer starts with the oldest message the ring holds when it
        // joins; from there on it gets every one.
        if (next == UINT64_MAX) {
          next = off;
          ledger->first[life].store(off + 1);
        }
        if (off != next) {
          std::fprintf(stderr, "life %d: offset %llu, expected %llu\n", life,
                       static_cast<unsigned long long>(off), static_cast<unsigned long long>(next));
          return 5;
        }
        ++next;
        ledger->received[life].store(next);
      } else {
        if (in_order && last != UINT64_MAX && off <= last) return 6;
        last = off;
        ledger->delivered[off].fetch_add(1);
      }
    }
    ++pops;
    const bool due = plan.dies && pops == plan.after_pops;
    if (due && plan.point == Point::mid_pop) {
      // From another thread, a moment later: wherever this one is then, mostly in pop.
      std::thread([us = plan.delay_us] {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
        while (std::chrono::steady_clock::now() < until) {
        }
        ::raise(SIGKILL);
      }).detach();
    }
    if (due && plan.point == Point::holding_leases) ::raise(SIGKILL);
    for (std::size_t k = 0; k < b.size(); ++k) {
      if (due && plan.point == Point::mid_ack && k == b.size() / 2) ::raise(SIGKILL);
      const AckStatus st = (*c)->ack(b[k]);
      if (st != AckStatus::ok) {
        std::fprintf(stderr, "life %d: ack of %llu: %s\n", life,
                     static_cast<unsigned long long>(b[k].offset()), ringfeed::to_string(st));
        return 7;
      }
      ledger->unacked[life].fetch_sub(1);
    }
  }
  return 0;
}

// The group's low watermark: the first ring position it has not acked.
std::uint64_t group_low_watermark(const std::string& ns) {
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns, 0, "g"),
                                          ringfeed::shm::Access::read_only);
  if (!seg) return 0;
  return reinterpret_cast<const ringfeed::shm::GroupControl*>(seg->base())->low_watermark.load();
}

// The writer side of a cell: publishes the messages (key "k<i mod 64>", value "<i>") a
// few at a time between looks at the consumers, and runs the reaper.
class Stream {
 public:
  explicit Stream(Writer& w) : w_(w) {}
  bool done() const { return next_ == kMessages; }
  // Publishes no further than `limit` messages for now (so that messages are left for
  // every consumer life that is to die).
  void allow(std::uint64_t limit) { limit_ = std::clamp(limit, limit_, kMessages); }
  std::uint64_t allowed() const { return limit_; }
  void step() {
    for (int k = 0; k < 64 && next_ < limit_; ++k) {
      const std::string key = "k" + std::to_string(next_ % 64);
      const std::string value = std::to_string(next_);
      ringfeed::OutMessage m{.key = key, .value = value, .upstream_offset = next_};
      if (w_.publish({&m, 1}, 0ns) != 1) {
        // Full: what the groups acked frees space, and the cursors of dead broadcast
        // consumers stop holding it (as the fetcher's commit passes do).
        w_.reclaim(true);
        break;
      }
      ++next_;
    }
    w_.service();
    if (next_ == limit_) std::this_thread::sleep_for(100us);
  }

 private:
  Writer& w_;
  std::uint64_t next_ = 0;
  std::uint64_t limit_ = 0;
};

struct Cell {
  Mode mode;
  Point point;
};

class KillMatrix : public ::testing::TestWithParam<Cell> {};

// Waits for `pid` to end while the stream goes on; true if it killed itself. A life that
// takes long to reach its point of death gets more messages, and after a few hundred of
// them the stream to itself (`hold_living`, cleared again once it has died).
bool died_of_sigkill(pid_t pid, Stream& stream, std::atomic<int>& hold_living, std::string& why) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  auto more_at = std::chrono::steady_clock::now() + 100ms;
  int more = 0;
  struct Release {
    std::atomic<int>& hold;
    ~Release() { hold = 0; }
  } release{hold_living};
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::chrono::steady_clock::now() >= more_at) {
      stream.allow(stream.allowed() + 256);
      if (++more == 2) hold_living = 1;
      more_at += 100ms;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return true;
      why = WIFEXITED(status) ? "exited with " + std::to_string(WEXITSTATUS(status))
                              : "died of signal " + std::to_string(WTERMSIG(status));
      return false;
    }
    stream.step();
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  why = "never reached its point of death";
  return false;
}

TEST_P(KillMatrix, NothingLostDuplicatesBoundedTheRestGoesOn) {
  const Cell cell = GetParam();
  const auto ns = unique_ns("kill");
  // A small ring: it is reused many times over, so acks (and kills) gate the writer.
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 256u << 10});
  ASSERT_TRUE(w.ok()) << w.error().message;
  Ledger* ledger = make_ledger();
  Stream stream(**w);
  std::mt19937_64 rng(static_cast<std::uint64_t>(cell.mode) * 31 +
                      static_cast<std::uint64_t>(cell.point));
  int lives = 0;
  auto spawn = [&](bool dies) {
    Plan plan{.dies = dies,
              .point = cell.point,
              .after_pops = 1 + static_cast<std::uint32_t>(rng() % 20),
              .delay_us = static_cast<std::uint32_t>(rng() % 300)};
    const int life = lives++;
    const pid_t pid =
        fork_child([&, life, plan] { return consumer_life(ns, cell.mode, ledger, life, plan); });
    EXPECT_TRUE(wait_until([&] {
      (*w)->service();
      return ledger->attached[life].load() == 1;
    }));
    return std::pair{pid, life};
  };
  std::uint64_t in_flight_at_kills = 0;
  std::vector<std::pair<pid_t, int>> living;
  int round = 0;
  auto kill_round = [&](std::pair<pid_t, int> victim) {
    // A share of the messages per round; the last share is for after the kills.
    stream.allow(kMessages * static_cast<std::uint64_t>(++round) / (kKills + 2));
    std::string why;
    EXPECT_TRUE(died_of_sigkill(victim.first, stream, ledger->hold_living, why))
        << "life " << victim.second << ": " << why;
    in_flight_at_kills += ledger->unacked[victim.second].load();
  };
  if (cell.mode == Mode::exclusive) {
    // One at a time: each life resumes where the acks of the one before left off.
    for (int k = 0; k < kKills; ++k) kill_round(spawn(true));
    living.push_back(spawn(false));
  } else if (cell.mode == Mode::failover) {
    // The active one dies; the standby behind it takes over, and a new standby comes.
    auto active = spawn(true);
    for (int k = 0; k < kKills; ++k) {
      auto standby = spawn(k + 1 < kKills);
      kill_round(active);
      active = standby;
    }
    living.push_back(active);
  } else {
    // One that lives beside a line of ones that die.
    living.push_back(spawn(false));
    for (int k = 0; k < kKills; ++k) kill_round(spawn(true));
  }
  // The rest goes on to the end.
  stream.allow(kMessages);
  const bool finished = wait_until(
      [&] {
        stream.step();
        if (!stream.done()) return false;
        if (cell.mode == Mode::broadcast)
          return ledger->received[living[0].second].load() == kMessages;
        return group_low_watermark(ns) == (*w)->write_pos();
      },
      120s);
  ledger->stop = 1;
  for (auto [pid, life] : living) EXPECT_EQ(wait_child(pid, 30s), 0) << "life " << life;
  ASSERT_TRUE(finished) << "the group did not finish";
  if (cell.mode == Mode::broadcast) {
    // The one that lived joined first: it got every offset from 0, in order.
    EXPECT_EQ(ledger->first[living[0].second].load(), 1u);
    return;
  }
  std::uint64_t deliveries = 0;
  std::uint64_t lost = 0;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    const std::uint32_t d = ledger->delivered[i].load();
    if (d == 0 && ++lost <= 5) ADD_FAILURE() << "message " << i << " was never delivered";
    deliveries += d;
  }
  EXPECT_EQ(lost, 0u);
  EXPECT_LE(deliveries - kMessages, in_flight_at_kills)
      << "more duplicates than the killed consumers held";
  std::printf("%s: %d kills, %llu in flight at the kills, %llu delivered twice\n",
              ::testing::UnitTest::GetInstance()->current_test_info()->name(), kKills,
              static_cast<unsigned long long>(in_flight_at_kills),
              static_cast<unsigned long long>(deliveries - kMessages));
}

std::vector<Cell> all_cells() {
  std::vector<Cell> cells;
  for (Mode m :
       {Mode::exclusive, Mode::failover, Mode::shared, Mode::key_shared, Mode::broadcast}) {
    for (Point p : {Point::mid_pop, Point::holding_leases, Point::mid_ack}) cells.push_back({m, p});
  }
  return cells;
}

std::string cell_name(const ::testing::TestParamInfo<Cell>& cell) {
  std::string mode(ringfeed::to_string(cell.param.mode));
  std::erase(mode, '_');
  mode[0] = static_cast<char>(std::toupper(mode[0]));
  return mode + name_of(cell.param.point);
}

INSTANTIATE_TEST_SUITE_P(EveryModeAndPoint, KillMatrix, ::testing::ValuesIn(all_cells()),
                         cell_name);

// A consumer hung (SIGSTOP) past its lease is not dead: its leases expire and go to
// another consumer; once it runs again, its acks of them are refused, and it goes on.
TEST(KillMatrixHung, StoppedPastItsLeaseItsLeasesMoveOnAndItsLateAcksAreRefused) {
  const auto ns = unique_ns("hung");
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1u << 20});
  ASSERT_TRUE(w.ok()) << w.error().message;
  struct Shared {
    std::atomic<int> a_popped{0};
    std::atomic<int> a_may_ack{0};
    std::atomic<int> a_refused{0};
    std::atomic<int> a_refusal{0};  // the AckStatus of the first refusal
    std::atomic<int> b_acked[64];
    std::atomic<int> stop{0};
  };
  void* mem =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* sh = new (mem) Shared{};
  const ringfeed::ConsumerOptions options{
      .ns = ns, .group = "g", .mode = Mode::shared, .lease = 300ms};
  for (std::uint64_t i = 0; i < 16; ++i) {
    const std::string v = std::to_string(i);
    ringfeed::OutMessage m{.value = v, .upstream_offset = i};
    ASSERT_EQ((*w)->publish({&m, 1}, 1s), 1u);
  }
  const pid_t a = fork_child([&] {
    auto c = Consumer::attach(options);
    if (!c) return 2;
    const auto& b = (*c)->pop(16, 5s);
    if (b.status() != PopStatus::ok || b.size() != 16) return 3;
    sh->a_popped = 1;
    while (sh->a_may_ack.load() == 0) std::this_thread::sleep_for(1ms);
    for (const auto& m : b) {
      const AckStatus st = (*c)->ack(m);
      if (st == AckStatus::ok) return 4;  // accepted: the lease did not move on
      if (sh->a_refused++ == 0) sh->a_refusal = static_cast<int>(st);
    }
    // It goes on: the next message is its own to ack.
    const auto& next = (*c)->pop(1, 10s);
    if (next.status() != PopStatus::ok || (*c)->ack(next[0]) != AckStatus::ok) return 5;
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return sh->a_popped.load() == 1; }));
  ASSERT_EQ(::kill(a, SIGSTOP), 0);
  const pid_t b = fork_child([&] {
    auto c = Consumer::attach(options);
    if (!c) return 2;
    int got = 0;
    while (got < 16) {
      const auto& batch = (*c)->pop(16, 10s);  // the 16 come back once A's leases expire
      if (batch.status() != PopStatus::ok) return 3;
      for (const auto& m : batch) {
        if (m.offset() >= 16 || m.delivery_count() != 2) return 4;
        if ((*c)->ack(m) != AckStatus::ok) return 5;
        ++sh->b_acked[m.offset()];
        ++got;
      }
    }
    return 0;
  });
  int b_status = -1;
  ASSERT_TRUE(wait_until([&] {
    (*w)->service();  // the reaper, which finds the expired leases too
    return ::waitpid(b, &b_status, WNOHANG) == b;
  }));
  EXPECT_TRUE(WIFEXITED(b_status) && WEXITSTATUS(b_status) == 0) << "status " << b_status;
  ASSERT_EQ(::kill(a, SIGCONT), 0);
  sh->a_may_ack = 1;
  const std::string v = "16";
  ringfeed::OutMessage m{.value = v, .upstream_offset = 16};
  ASSERT_EQ((*w)->publish({&m, 1}, 1s), 1u);
  EXPECT_EQ(wait_child(a), 0);
  EXPECT_EQ(sh->a_refused.load(), 16);
  EXPECT_EQ(static_cast<AckStatus>(sh->a_refusal.load()), AckStatus::lease_lost)
      << ringfeed::to_string(static_cast<AckStatus>(sh->a_refusal.load()));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(sh->b_acked[i].load(), 1) << "message " << i;
}

// The fetcher's checkpoint, SIGKILLed while it is being replaced again and again: what a
// restart reads is always a whole checkpoint, the last one written or the one after it.
TEST(KillMatrixCheckpoint, KilledMidWriteTheCheckpointIsTheOldOrTheNewOne) {
  const auto dir = std::filesystem::temp_directory_path() / unique_ns("ckpt");
  std::filesystem::create_directories(dir);
  auto* written = static_cast<std::atomic<std::uint64_t>*>(
      ::mmap(nullptr, sizeof(std::atomic<std::uint64_t>), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (written) std::atomic<std::uint64_t>{0};
  std::mt19937_64 rng(5);
  std::uint64_t position = 0;
  for (int kill = 0; kill < 20; ++kill) {
    const std::uint64_t start = position;
    const pid_t writer = fork_child([&] {
      for (std::uint64_t p = start + 1;; ++p) {
        if (!ringfeed::io::write_checkpoint(dir.string(), 0, p).ok()) return 2;
        written->store(p);
      }
    });
    // Let it replace the checkpoint a few times, then kill it at a random moment.
    ASSERT_TRUE(wait_until([&] { return written->load() >= start + 1 + rng() % 5; }));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    const std::uint64_t before = written->load();
    ::kill(writer, SIGKILL);
    wait_child(writer);
    const std::uint64_t after = written->load();
    auto read = ringfeed::io::read_checkpoint(dir.string(), 0);
    ASSERT_TRUE(read.ok()) << "after kill " << kill << ": " << read.error().message;
    EXPECT_GE(*read, before);
    EXPECT_LE(*read, after + 1);
    position = *read;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
