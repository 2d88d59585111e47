// The soak test (ctest label `soak`, not in the default run): for RINGFEED_SOAK_SECONDS
// (default 600) a producer appends to a local log of two partitions the whole time, a
// real fetcher (ringfeed::Fetcher on file:DIR, in a child process) feeds the rings, and
// groups of every mode read the same rings at once: exclusive (one consumer), failover,
// shared, key_shared and broadcast (two each), each consumer a process of its own on
// both partitions. At random moments one of them - or the fetcher - is SIGKILLed and
// started again (the fetcher from its checkpoints). One message in 1009 is a poison
// message that its consumers always nack: it must end in the dead-letter log.
//
// Then the producer stops, and the test waits until every group settled every message
// id, and accounts for each id per group from a ledger in shared memory that the
// consumer processes write and from the dead-letter logs: delivered, redelivered,
// dead-lettered, lost. It fails if any id is lost, if a consumer's own check failed
// (content, offsets, order in exclusive and failover groups, no gap in a broadcast
// consumer's stream), or if the fetcher does not end cleanly with the checkpoints at the
// ends of the logs and no segment left.
//
// A broadcast consumer that joins gets what the ring holds from the slowest live peer
// on: the test never kills the second broadcast consumer while the first is down, so
// that the group as a whole has every message.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <array>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fetcher_support.hpp"
#include "io/checkpoint.hpp"
#include "io/framed_record.hpp"
#include "io/log_appender.hpp"
#include "ringfeed/consumer.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
namespace io = ringfeed::io;
namespace test = ringfeed::test;

namespace {

constexpr std::uint32_t kPartitions = 2;
constexpr std::uint32_t kRatePerPartition = 500;  // messages per second
constexpr std::uint32_t kKeys = 50;
constexpr std::uint64_t kPoisonEvery = 1009;  // id % kPoisonEvery == 7: always nacked

struct Role {
  const char* group;
  Mode mode;
  int row;  // ledger row: one per group, one per broadcast consumer
};
// The consumer processes. Broadcast consumers keep a row each (each gets every message).
constexpr std::array<Role, 9> kRoles{{{"ex", Mode::exclusive, 0},
                                      {"fo", Mode::failover, 1},
                                      {"fo", Mode::failover, 1},
                                      {"sh", Mode::shared, 2},
                                      {"sh", Mode::shared, 2},
                                      {"ks", Mode::key_shared, 3},
                                      {"ks", Mode::key_shared, 3},
                                      {"bc", Mode::broadcast, 4},
                                      {"bc", Mode::broadcast, 5}}};
constexpr int kRows = 6;
constexpr int kBroadcastRows[] = {4, 5};
constexpr const char* kGroupNames[] = {"ex", "fo", "sh", "ks", "bc"};
constexpr int kGroupCount = 5;

bool poison(std::uint64_t id) {
  return id % kPoisonEvery == 7;
}

// Every record has the same size, so record `id` of a partition sits at id * size.
std::string key_of(std::uint64_t id) {
  char k[8];
  std::snprintf(k, sizeof k, "k%02u", static_cast<unsigned>(id % kKeys));
  return k;
}
std::string value_of(std::uint32_t p, std::uint64_t id) {
  char v[40];
  std::snprintf(v, sizeof v, "p%u-%012llu-soak", p, static_cast<unsigned long long>(id));
  return v;
}
std::size_t record_size() {
  const std::string k = key_of(0);
  const std::string v = value_of(0, 0);
  return io::encoded_size({.timestamp_ns = 1, .key = k, .value = v});
}

// Written by the producer and consumer processes, read by the test.
struct Header {
  std::atomic<std::uint64_t> produced[kPartitions];
  std::atomic<int> stop_producer;
  std::atomic<int> stop_consumers;
  std::atomic<int> attached[kRoles.size()];  // the role's life is attached to both rings
  std::atomic<std::uint64_t> refused_acks;   // after the fetcher moved: expected
  std::atomic<int> failed;
  char failure[512];  // the first consumer check that failed
};
struct Counts {
  std::atomic<std::uint16_t> delivered;
  std::atomic<std::uint16_t> acked;
};

class Ledger {
 public:
  explicit Ledger(std::uint64_t max_ids) : max_ids_(max_ids) {
    bytes_ = sizeof(Header) + sizeof(Counts) * kRows * kPartitions * max_ids;
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    header_ = new (p) Header{};
    counts_ = reinterpret_cast<Counts*>(static_cast<char*>(p) + sizeof(Header));
  }
  ~Ledger() { ::munmap(header_, bytes_); }
  Header& h() { return *header_; }
  std::uint64_t max_ids() const { return max_ids_; }
  Counts& at(int row, std::uint32_t p, std::uint64_t id) {
    return counts_[(static_cast<std::uint64_t>(row) * kPartitions + p) * max_ids_ + id];
  }
  // Records the first failure (later ones only count).
  void fail(const std::string& what) {
    if (header_->failed.fetch_add(1) == 0) {
      std::snprintf(header_->failure, sizeof header_->failure, "%s", what.c_str());
    }
    std::fprintf(stderr, "soak: %s\n", what.c_str());
  }

 private:
  std::uint64_t max_ids_;
  std::size_t bytes_;
  Header* header_;
  Counts* counts_;
};

// Appends kRatePerPartition records a second to each partition's log until told to stop.
int producer(const test::TempDir& dir, Ledger& ledger) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::vector<io::LogAppender> logs;
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    auto a = io::LogAppender::open(dir.log(p));
    if (!a) return 2;
    logs.push_back(std::move(a.value()));
  }
  const std::uint64_t per_tick = kRatePerPartition / 100;  // every 10 ms
  auto next = std::chrono::steady_clock::now();
  while (ledger.h().stop_producer.load() == 0) {
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      const std::uint64_t first = ledger.h().produced[p].load();
      if (first + per_tick > ledger.max_ids()) return 3;  // the ledger is sized for the run
      std::vector<std::string> keys, values;
      std::vector<io::RecordView> batch;
      for (std::uint64_t id = first; id < first + per_tick; ++id) {
        keys.push_back(key_of(id));
        values.push_back(value_of(p, id));
      }
      for (std::size_t k = 0; k < keys.size(); ++k) {
        batch.push_back({.timestamp_ns = 1, .key = keys[k], .value = values[k]});
      }
      auto done = logs[p].append(batch);
      if (!done) {
        std::fprintf(stderr, "producer: %s\n", done.error().message.c_str());
        return 4;
      }
      ledger.h().produced[p].store(first + per_tick);
    }
    next += 10ms;
    std::this_thread::sleep_until(next);  // pacing, not synchronization
  }
  return 0;
}

// What one consumer process checks on its own, per partition.
struct Stream {
  std::uint64_t epoch = 0;          // Consumer::reattached() when `last` was set
  std::uint64_t last = UINT64_MAX;  // the last id first delivered in this epoch
};

// One life of a consumer role: attached to both partitions, pops, checks and acks (nacks
// poison messages) until the test says stop or kills it. 0 when every check held.
int consumer_life(const std::string& ns, Ledger& ledger, std::size_t role_index) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const Role role = kRoles[role_index];
  const std::size_t rsize = record_size();
  std::unique_ptr<Consumer> c[kPartitions];
  Stream streams[kPartitions];
  auto fail = [&](std::uint32_t p, const std::string& what) {
    ledger.fail(std::string(role.group) + " consumer " + std::to_string(role_index) +
                " partition " + std::to_string(p) + ": " + what);
    return 1;
  };
  // Attach to both rings (the fetcher may be down, an exclusive holder not yet gone).
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    while (!c[p]) {
      if (ledger.h().stop_consumers.load() != 0) return 0;
      auto a = Consumer::attach(
          {.ns = ns, .partition = p, .group = role.group, .mode = role.mode, .spin = 10us});
      if (a) {
        c[p] = std::move(a.value());
      } else {
        std::this_thread::sleep_for(5ms);
      }
    }
  }
  ledger.h().attached[role_index].store(1);
  while (ledger.h().stop_consumers.load() == 0) {
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      Consumer& con = *c[p];
      const auto& b = con.pop(32, 2ms);
      const PopStatus st = b.status();
      if (st == PopStatus::fenced || st == PopStatus::corrupt) {
        return fail(p, std::string("pop: ") + ringfeed::to_string(st));
      }
      const std::uint64_t epoch = con.reattached();
      Stream& s = streams[p];
      if (epoch != s.epoch) s = Stream{.epoch = epoch};  // a new fetcher: a new stream
      for (const auto& m : b) {
        // The value names the id; the offset and key follow from it.
        const std::string_view v = m.value();
        std::uint64_t id = UINT64_MAX;
        if (v.size() > 3) std::from_chars(v.data() + 3, v.data() + v.size(), id);
        if (id >= ledger.max_ids() || v != value_of(p, id)) {
          return fail(p, "bad value '" + std::string(v) + "'");
        }
        if (m.offset() != id * rsize) {
          return fail(p, "id " + std::to_string(id) + " at offset " + std::to_string(m.offset()));
        }
        if (m.key() != key_of(id)) return fail(p, "id " + std::to_string(id) + ": bad key");
        ledger.at(role.row, p, id).delivered.fetch_add(1);
        if (m.delivery_count() == 1) {
          const bool ordered = role.mode == Mode::exclusive || role.mode == Mode::failover;
          if (ordered && s.last != UINT64_MAX && id <= s.last) {
            return fail(p, "id " + std::to_string(id) + " after " + std::to_string(s.last));
          }
          if (role.mode == Mode::broadcast && s.last != UINT64_MAX && id != s.last + 1) {
            return fail(
                p, "broadcast gap: id " + std::to_string(id) + " after " + std::to_string(s.last));
          }
          s.last = id;
        }
        const AckStatus a = poison(id) ? con.nack(m, std::chrono::milliseconds(0)) : con.ack(m);
        if (a == AckStatus::ok) {
          if (!poison(id)) ledger.at(role.row, p, id).acked.fetch_add(1);
        } else if (con.reattached() != epoch) {
          ledger.h().refused_acks.fetch_add(1);  // the handle was the old fetcher's
        } else {
          return fail(p, "ack of id " + std::to_string(id) + ": " + ringfeed::to_string(a));
        }
      }
    }
  }
  return 0;
}

// Ids of partition `p` in group `group`'s dead-letter records, from every dead-letter log
// under `dir` (the fetcher's, which the consumers of exclusive and broadcast groups use
// too).
std::set<std::uint64_t> dead_letters(const std::string& dir, const std::string& ns, std::uint32_t p,
                                     const std::string& group) {
  std::set<std::uint64_t> ids;
  const std::string path = dir + "/" + ns + ".dead-letters/" + std::to_string(p) + ".log";
  std::ifstream in(path, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::size_t rsize = record_size();
  for (std::size_t at = 0; at < bytes.size();) {
    const auto r = io::decode(std::as_bytes(std::span(bytes)).subspan(at), at);
    if (r.status != io::DecodeStatus::ok) break;
    if (r.record.group == group) ids.insert(r.record.upstream_offset / rsize);
    at += r.size;
  }
  return ids;
}

std::uint64_t soak_seconds() {
  const char* s = std::getenv("RINGFEED_SOAK_SECONDS");
  if (s == nullptr || *s == '\0') return 600;
  return std::max<std::uint64_t>(1, std::strtoull(s, nullptr, 10));
}

struct Accounting {
  std::uint64_t delivered = 0;    // ids delivered at least once
  std::uint64_t redelivered = 0;  // deliveries beyond the first, per consumer row
  std::uint64_t dead = 0;         // ids in the group's dead-letter log
  std::uint64_t lost = 0;         // ids neither acked nor dead-lettered
  std::uint64_t first_lost = UINT64_MAX;
  std::uint32_t first_lost_partition = 0;
};

TEST(Soak, MixedModesRandomKillsOfEveryRoleNothingLost) {
  const std::uint64_t seconds = soak_seconds();
  test::TempDir dir{"ringfeed-soak"};
  const std::string ns = test::unique_ns("soak");
  // Room for the whole run at the producer's rate, with a margin for a slow clock.
  Ledger ledger(kRatePerPartition * (seconds + 60) + 10'000);
  const ringfeed::FetcherOptions options{.ns = ns,
                                         .source = dir.uri(),
                                         .partitions = kPartitions,
                                         .ring_bytes = 256u << 10,
                                         .commit_interval = 20ms};
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    ASSERT_TRUE(io::LogAppender::open(dir.log(p)).ok());  // the fetcher finds both logs
  }

  pid_t fetcher = test::spawn_fetcher(options);
  ASSERT_GT(fetcher, 0);
  std::array<pid_t, kRoles.size()> lives{};
  auto start_role = [&](std::size_t r) {
    ledger.h().attached[r].store(0);
    lives[r] = test::fork_child([&, r] { return consumer_life(ns, ledger, r); });
  };
  for (std::size_t r = 0; r < kRoles.size(); ++r) start_role(r);
  // Every group exists before the first message: a group created later starts with what
  // the ring still holds, and the others may have acked the first messages by then.
  ASSERT_TRUE(test::wait_until(
      [&] {
        for (std::size_t r = 0; r < kRoles.size(); ++r) {
          if (ledger.h().attached[r].load() == 0) return false;
        }
        return true;
      },
      60s))
      << "the consumers did not all attach";
  const pid_t producer_pid = test::fork_child([&] { return producer(dir, ledger); });

  // Kills and restarts, at random moments, until the time is up.
  std::mt19937_64 rng(std::random_device{}());
  std::array<int, kRoles.size()> kills{};
  int fetcher_kills = 0;
  int exits = 0;  // consumer lives that ended by themselves (a failed check)
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until && ledger.h().failed.load() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 450));
    // A life that ended by itself failed a check (the ledger says which): start anew.
    for (std::size_t r = 0; r < kRoles.size(); ++r) {
      int status = 0;
      if (::waitpid(lives[r], &status, WNOHANG) == lives[r]) {
        ++exits;
        start_role(r);
      }
    }
    const std::size_t pick = rng() % (kRoles.size() + 2);  // the fetcher twice as often
    if (pick >= kRoles.size()) {
      ::kill(fetcher, SIGKILL);
      test::wait_child(fetcher);
      ++fetcher_kills;
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));  // records pile up
      fetcher = test::spawn_fetcher(options);
      ASSERT_GT(fetcher, 0) << "the fetcher did not start again";
      continue;
    }
    // The other broadcast consumer must be attached: the group keeps every message.
    if (kRoles[pick].mode == Mode::broadcast) {
      const std::size_t other = pick == 7 ? 8 : 7;
      if (ledger.h().attached[other].load() == 0) continue;
    }
    ::kill(lives[pick], SIGKILL);
    test::wait_child(lives[pick]);
    ++kills[pick];
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
    start_role(pick);
  }

  // The producer stops; every group settles every id it wrote.
  ledger.h().stop_producer.store(1);
  EXPECT_EQ(test::wait_child(producer_pid, 30s), 0) << "the producer failed";
  std::uint64_t produced[kPartitions];
  for (std::uint32_t p = 0; p < kPartitions; ++p) produced[p] = ledger.h().produced[p].load();
  auto account = [&](int g) {
    Accounting a;
    std::vector<int> rows;
    if (g == 4) {
      rows.assign(std::begin(kBroadcastRows), std::end(kBroadcastRows));
    } else {
      rows.push_back(g);
    }
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      const auto dead = dead_letters(dir.path(), ns, p, kGroupNames[g]);
      for (std::uint64_t id = 0; id < produced[p]; ++id) {
        bool delivered = false;
        bool acked = false;
        for (int row : rows) {
          const std::uint32_t d = ledger.at(row, p, id).delivered.load();
          delivered = delivered || d > 0;
          a.redelivered += d > 1 ? d - 1 : 0;
          acked = acked || ledger.at(row, p, id).acked.load() > 0;
        }
        const bool is_dead = dead.count(id) != 0;
        a.delivered += delivered;
        a.dead += is_dead;
        if (!acked && !is_dead && a.lost++ == 0) {
          a.first_lost = id;
          a.first_lost_partition = p;
        }
      }
    }
    return a;
  };
  auto all_settled = [&] {
    for (int g = 0; g < kGroupCount; ++g) {
      if (account(g).lost != 0) return false;
    }
    return true;
  };
  const auto settle_deadline = std::chrono::steady_clock::now() + 180s;
  bool settled = false;
  while (!(settled = all_settled()) && std::chrono::steady_clock::now() < settle_deadline &&
         ledger.h().failed.load() == 0) {
    std::this_thread::sleep_for(100ms);  // the condition is a scan of the whole ledger
  }
  ledger.h().stop_consumers.store(1);
  for (std::size_t r = 0; r < kRoles.size(); ++r) {
    EXPECT_EQ(test::wait_child(lives[r], 30s), 0)
        << "consumer " << r << " (" << kRoles[r].group << ")";
  }
  ASSERT_EQ(::kill(fetcher, SIGTERM), 0);
  EXPECT_EQ(test::wait_child(fetcher, 30s), 0) << "the fetcher did not stop cleanly";

  std::printf("soak: %llu s, %llu + %llu messages produced, fetcher killed %d times\n",
              static_cast<unsigned long long>(seconds),
              static_cast<unsigned long long>(produced[0]),
              static_cast<unsigned long long>(produced[1]), fetcher_kills);
  std::printf("soak: consumer kills:");
  for (std::size_t r = 0; r < kRoles.size(); ++r)
    std::printf(" %s%zu=%d", kRoles[r].group, r, kills[r]);
  std::printf("; acks refused after a fetcher restart: %llu\n",
              static_cast<unsigned long long>(ledger.h().refused_acks.load()));
  std::printf("%-6s %-11s %10s %12s %14s %6s\n", "GROUP", "MODE", "DELIVERED", "REDELIVERED",
              "DEAD-LETTERED", "LOST");
  const Mode modes[] = {Mode::exclusive, Mode::failover, Mode::shared, Mode::key_shared,
                        Mode::broadcast};
  for (int g = 0; g < kGroupCount; ++g) {
    const Accounting a = account(g);
    std::printf("%-6s %-11s %10llu %12llu %14llu %6llu\n", kGroupNames[g],
                std::string(ringfeed::to_string(modes[g])).c_str(),
                static_cast<unsigned long long>(a.delivered),
                static_cast<unsigned long long>(a.redelivered),
                static_cast<unsigned long long>(a.dead), static_cast<unsigned long long>(a.lost));
    EXPECT_EQ(a.lost, 0u) << "group " << kGroupNames[g] << " lost " << a.lost
                          << " ids, the first: id " << a.first_lost << " of partition "
                          << a.first_lost_partition;
  }
  std::fflush(stdout);
  EXPECT_TRUE(settled) << "the groups did not settle every message within 180 s";
  EXPECT_EQ(ledger.h().failed.load(), 0) << ledger.h().failure;
  EXPECT_EQ(exits, 0) << "consumer lives that ended by themselves";

  // Everything was acked or dead-lettered: the clean stop left the checkpoints at the
  // ends of the logs, and no segment behind.
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    auto checkpoint = io::read_checkpoint(dir.path(), p);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
    EXPECT_EQ(checkpoint.value(), produced[p] * record_size()) << "partition " << p;
  }
  EXPECT_EQ(ringfeed::shm::Segment::list("ringfeed." + ns + "."), std::vector<std::string>{});
}

}  // namespace
