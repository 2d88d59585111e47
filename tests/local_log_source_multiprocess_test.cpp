// The local-log source tailing files that another process appends to: a forked child
// writes 200 000 records (two partitions, batches of random size, files created by the
// child) with LogAppender while the parent reads them through `file:DIR`, now and then
// refusing a record (backpressure) and committing; the writer stays at most 20 000 records
// ahead of the reader, so both run at once. Every record must arrive exactly once,
// in order, at the right offset; a reopen resumes exactly at the last commit.
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "io/framed_record.hpp"
#include "io/log_appender.hpp"
#include "io/source.hpp"
#include "test_support.hpp"

namespace io = ringfeed::io;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using ringfeed::test::TempDir;

namespace {

constexpr std::uint32_t kPartitions = 2;
constexpr std::uint32_t kPerPartition = 100'000;

// Values vary in length (a few span the default read buffer) and say what they are.
std::string value_of(std::uint32_t p, std::uint32_t seq) {
  std::string v = std::to_string(p) + ":" + std::to_string(seq) + ":";
  const std::size_t pad = seq % 997 == 0 ? 70'000 : seq % 61;
  v.append(pad, static_cast<char>('a' + seq % 26));
  return v;
}

// Shared between parent and child (MAP_SHARED before the fork): how far the reader got,
// so the writer stays at most kLead records ahead and the two really overlap.
struct Progress {
  std::atomic<std::uint64_t> received{0};  // written by the parent, read by the child
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared across processes");
constexpr std::uint64_t kLead = 20'000;

// The child: appends every record of both partitions, interleaved, in batches.
int produce(const TempDir& dir, const Progress& progress) {
  std::mt19937_64 rng(7);
  std::vector<io::LogAppender> logs;
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    auto a = io::LogAppender::open(dir.log(p));
    if (!a.ok()) return 2;
    logs.push_back(std::move(a).value());
  }
  std::uint32_t next[kPartitions] = {};
  std::vector<std::string> values;
  std::vector<io::RecordView> batch;
  while (next[0] < kPerPartition || next[1] < kPerPartition) {
    const auto p = static_cast<std::uint32_t>(rng() % kPartitions);
    const std::uint32_t n = std::min<std::uint32_t>(1 + static_cast<std::uint32_t>(rng() % 64),
                                                    kPerPartition - next[p]);
    values.clear();
    batch.clear();
    for (std::uint32_t i = 0; i < n; ++i) values.push_back(value_of(p, next[p] + i));
    for (std::uint32_t i = 0; i < n; ++i) {
      batch.push_back({.timestamp_ns = next[p] + i, .value = values[i]});
    }
    if (!logs[p].append(batch).ok()) return 3;
    next[p] += n;
    const std::uint64_t written = std::uint64_t{next[0]} + next[1];
    if (!ringfeed::test::wait_until(
            [&] { return written - progress.received.load(std::memory_order_acquire) < kLead; },
            120s)) {
      return 4;  // the reader stopped reading
    }
  }
  return 0;
}

}  // namespace

TEST(LocalLogSourceMultiprocess, TailsAnotherProcessExactlyOnceInOrder) {
  TempDir dir{"ringfeed-local-log-mp"};
  void* shared =
      ::mmap(nullptr, sizeof(Progress), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* progress = new (shared) Progress;
  const pid_t child = ringfeed::test::fork_child([&] { return produce(dir, *progress); });
  ASSERT_GT(child, 0);

  auto opened = io::open_source("file:" + dir.path(), {.partitions = kPartitions});
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  auto& s = **opened;

  std::uint32_t expected[kPartitions] = {};
  std::uint64_t expected_offset[kPartitions] = {};
  std::uint64_t committed[kPartitions] = {};
  std::size_t offers = 0;
  std::size_t refusals = 0;
  std::size_t bad = 0;
  const io::RecordSink sink = [&](const io::SourceRecord& r) {
    if (++offers % 5000 == 0) {
      ++refusals;
      return false;  // no room: offered again first after resume
    }
    const std::uint32_t p = r.partition;
    if (p >= kPartitions || r.value != value_of(p, expected[p]) ||
        r.timestamp_ns != static_cast<std::int64_t>(expected[p]) ||
        r.upstream_offset != expected_offset[p]) {
      if (++bad < 5) {
        ADD_FAILURE() << "partition " << p << ": expected record " << expected[p] << " at offset "
                      << expected_offset[p] << ", got one at " << r.upstream_offset;
      }
      return true;
    }
    ++expected[p];
    expected_offset[p] = r.next_offset;
    progress->received.fetch_add(1, std::memory_order_release);
    return true;
  };

  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while ((expected[0] < kPerPartition || expected[1] < kPerPartition) && bad == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    auto r = s.poll(sink, 1s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      const auto st = s.status(p);
      ASSERT_FALSE(st.stopped) << st.error;
      if (st.paused) s.resume(p);
      // Commit now and then, as a fetcher would once everything before was acked.
      // Never at the very end, so the restart below has a record to start with.
      if (expected[p] < kPerPartition && st.fetched - committed[p] > 1'000'000) {
        ASSERT_TRUE(s.commit(p, st.fetched).ok());
        committed[p] = st.fetched;
      }
    }
  }
  EXPECT_EQ(ringfeed::test::wait_child(child), 0);
  ::munmap(shared, sizeof(Progress));
  EXPECT_EQ(bad, 0u);
  ASSERT_EQ(expected[0], kPerPartition);
  ASSERT_EQ(expected[1], kPerPartition);
  EXPECT_GT(refusals, 0u);
  // Nothing more, and everything up to the end of each file was handed out.
  auto r = s.poll(sink, 200ms);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0u);
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    EXPECT_EQ(s.status(p).fetched, fs::file_size(dir.log(p)));
    EXPECT_GT(committed[p], 0u);
  }

  // A restart resumes exactly at the last commit of each partition.
  opened->reset();
  auto again = io::open_source("file:" + dir.path(), {.partitions = kPartitions});
  ASSERT_TRUE(again.ok()) << again.error().message;
  std::uint64_t first_offset[kPartitions] = {UINT64_MAX, UINT64_MAX};
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    auto p = (*again)->poll(
        [&](const io::SourceRecord& rec) {
          if (first_offset[rec.partition] == UINT64_MAX) {
            first_offset[rec.partition] = rec.upstream_offset;
          }
          return true;
        },
        100ms);
    EXPECT_TRUE(p.ok());
    return first_offset[0] != UINT64_MAX && first_offset[1] != UINT64_MAX;
  }));
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    EXPECT_EQ(first_offset[p], committed[p]) << "partition " << p;
    EXPECT_EQ((*again)->committed(p), committed[p]);
  }
}

// The registered read buffers are locked memory. A process without CAP_IPC_LOCK (here: a
// child that drops root) under a small RLIMIT_MEMLOCK still opens many partitions, with
// smaller buffers, and still reads a record larger than them.
TEST(LocalLogSourceMultiprocess, SmallLockedMemoryLimitMeansSmallerBuffers) {
  TempDir dir{"ringfeed-local-log-mp"};
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
  const pid_t child = ringfeed::test::fork_child([&] {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 2;
    const rlimit lim{.rlim_cur = 4u << 20, .rlim_max = 4u << 20};
    if (::setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return 3;
    constexpr std::uint32_t kMany = 100;  // 100 x 64 KiB would need 6.25 MiB
    auto a = io::LogAppender::open(dir.log(0));
    if (!a.ok()) return 4;
    const std::string big(200'000, 'B');
    const io::RecordView recs[] = {{.value = "first"}, {.value = big}, {.value = "last"}};
    if (!a->append(recs).ok()) return 5;
    auto s = io::open_source("file:" + dir.path(), {.partitions = kMany});
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.error().message.c_str());
      return 6;
    }
    std::vector<std::string> got;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (got.size() < 3 && std::chrono::steady_clock::now() < deadline) {
      auto r = (*s)->poll(
          [&](const io::SourceRecord& rec) {
            got.emplace_back(rec.value);
            return true;
          },
          1s);
      if (!r.ok()) return 7;
    }
    if (got.size() != 3 || got[0] != "first" || got[1] != big || got[2] != "last") return 8;
    return 0;
  });
  ASSERT_GT(child, 0);
  EXPECT_EQ(ringfeed::test::wait_child(child), 0)
      << "2: cannot drop root, 3: setrlimit, 4/5: append, 6: open refused, 7: poll, 8: records";
}
