// The local-log source `file:DIR` through open_source: delivery in order across
// partitions (framed and lines), tailing woken by inotify, partial and oversized
// records, a corrupt record that stops only its partition, truncation, pause/resume,
// checkpoints (round trip, restart, damaged, past the end, off a boundary), URIs,
// wake(), and a file that appears after open; batches (poll_batches): partitions in
// turns, a partial take, damage in the middle of a batch reported as decode() reports
// it, a dead-letter record in a log; watch_readable().
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/framed_record.hpp"
#include "io/local_log_source.hpp"
#include "io/log_appender.hpp"
#include "io/source.hpp"
#include "test_support.hpp"

namespace io = ringfeed::io;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using ringfeed::test::TempDir;

namespace {

struct Got {
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;
  std::uint64_t next = 0;
  std::int64_t timestamp_ns = 0;
  std::string key;
  std::string value;
};

Got copy(const io::SourceRecord& r) {
  return {r.partition,    r.upstream_offset,  r.next_offset,
          r.timestamp_ns, std::string(r.key), std::string(r.value)};
}

std::unique_ptr<io::Source> open_ok(const std::string& uri, io::SourceOptions options = {}) {
  auto s = io::open_source(uri, options);
  EXPECT_TRUE(s.ok()) << s.error().message;
  return s.ok() ? std::move(s).value() : nullptr;
}

// Polls until `n` records arrived (or more), the deadline passes, or poll fails.
std::vector<Got> collect(io::Source& s, std::size_t n,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  std::vector<Got> got;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) break;
    auto r = s.poll(
        [&](const io::SourceRecord& rec) {
          got.push_back(copy(rec));
          return true;
        },
        left);
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok()) break;
  }
  return got;
}

// What arrives within a short poll: for checking that nothing (more) comes.
std::vector<Got> drain(io::Source& s, std::chrono::milliseconds timeout = 150ms) {
  std::vector<Got> got;
  auto r = s.poll(
      [&](const io::SourceRecord& rec) {
        got.push_back(copy(rec));
        return true;
      },
      timeout);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return got;
}

std::vector<Got> of_partition(const std::vector<Got>& all, std::uint32_t p) {
  std::vector<Got> out;
  for (const Got& g : all) {
    if (g.partition == p) out.push_back(g);
  }
  return out;
}

std::string value_of(std::uint32_t p, std::uint32_t i) {
  return "p" + std::to_string(p) + "-v" + std::to_string(i);
}

// Appends `count` records with values value_of(p, first..), keys "k<i>", timestamps i.
std::vector<io::Appended> append_records(const std::string& path, std::uint32_t p,
                                         std::uint32_t first, std::uint32_t count) {
  auto a = io::LogAppender::open(path);
  EXPECT_TRUE(a.ok()) << a.error().message;
  std::vector<io::Appended> out;
  for (std::uint32_t i = first; i < first + count; ++i) {
    const std::string key = "k" + std::to_string(i);
    const std::string value = value_of(p, i);
    const io::RecordView r{.timestamp_ns = i, .key = key, .value = value};
    auto w = a->append({&r, 1});
    EXPECT_TRUE(w.ok()) << w.error().message;
    if (w.ok()) out.push_back(*w);
  }
  return out;
}

void append_raw(const std::string& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

std::uint64_t file_size(const std::string& path) {
  return static_cast<std::uint64_t>(fs::file_size(path));
}

// An encoded log record meant to sit at byte `offset` of its file.
std::string encoded(std::uint64_t offset, std::string_view key, std::string_view value,
                    std::int64_t ts = 0) {
  const io::RecordView r{.timestamp_ns = ts, .upstream_offset = offset, .key = key, .value = value};
  std::string out(io::encoded_size(r), '\0');
  const auto e = io::encode(r, {reinterpret_cast<std::byte*>(out.data()), out.size()});
  EXPECT_EQ(e.status, io::EncodeStatus::ok);
  return out;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Whether thread `tid` of this process is asleep in the kernel (state S), e.g. blocked
// in io_uring_enter.
bool thread_sleeps(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(in, line);
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'S';
}

// Runs `action` on another thread once the calling thread has set `polling` and sleeps
// in the kernel, so that the action happens while poll() waits.
class WhilePolling {
 public:
  explicit WhilePolling(std::function<void()> action)
      : tid_(static_cast<pid_t>(::syscall(SYS_gettid))), thread_([this, a = std::move(action)] {
          ringfeed::test::wait_until([&] { return polling_.load(); });
          ringfeed::test::wait_until([&] { return thread_sleeps(tid_); }, 10s);
          a();
        }) {}
  ~WhilePolling() { thread_.join(); }
  void start() { polling_ = true; }

 private:
  pid_t tid_;
  std::atomic<bool> polling_{false};
  std::thread thread_;
};

void expect_in_order(const std::vector<Got>& got, std::uint32_t p, std::uint32_t first,
                     std::size_t count, std::uint64_t start_offset) {
  ASSERT_EQ(got.size(), count) << "partition " << p;
  std::uint64_t offset = start_offset;
  for (std::size_t i = 0; i < count; ++i) {
    const auto n = static_cast<std::uint32_t>(first + i);
    EXPECT_EQ(got[i].partition, p);
    EXPECT_EQ(got[i].value, value_of(p, n)) << "partition " << p << " record " << i;
    EXPECT_EQ(got[i].key, "k" + std::to_string(n));
    EXPECT_EQ(got[i].timestamp_ns, static_cast<std::int64_t>(n));
    EXPECT_EQ(got[i].offset, offset) << "partition " << p << " record " << i;
    EXPECT_GT(got[i].next, got[i].offset);
    offset = got[i].next;
  }
}

}  // namespace

TEST(LocalLogSource, FramedRecordsOfSeveralPartitionsArriveInOrder) {
  TempDir dir{"ringfeed-local-log"};
  for (std::uint32_t p = 0; p < 3; ++p) append_records(dir.log(p), p, 0, 50 + p);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->partitions(), 3u) << "the files 0.log..2.log present";
  EXPECT_EQ(s->uri(), dir.uri());
  const auto all = collect(*s, 50 + 51 + 52);
  for (std::uint32_t p = 0; p < 3; ++p) {
    expect_in_order(of_partition(all, p), p, 0, 50 + p, 0);
    const auto st = s->status(p);
    EXPECT_EQ(st.fetched, file_size(dir.log(p)));
    EXPECT_EQ(st.committed, 0u);
    EXPECT_FALSE(st.stopped) << st.error;
    EXPECT_FALSE(st.paused);
  }
  EXPECT_TRUE(drain(*s).empty());
}

TEST(LocalLogSource, PartitionCountGivenOrFound) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 1);
  append_records(dir.log(1), 1, 0, 1);
  append_records(dir.log(3), 3, 0, 1);  // not consecutive: not counted
  auto found = open_ok(dir.uri());
  ASSERT_TRUE(found);
  EXPECT_EQ(found->partitions(), 2u);
  auto given = open_ok(dir.uri(), {.partitions = 5});
  ASSERT_TRUE(given);
  EXPECT_EQ(given->partitions(), 5u);
  TempDir empty;
  auto none = open_ok(empty.uri());
  ASSERT_TRUE(none);
  EXPECT_EQ(none->partitions(), 1u) << "at least one, waited for";
}

TEST(LocalLogSource, LinesFormat) {
  TempDir dir{"ringfeed-local-log"};
  append_raw(dir.log(0), "alpha\n\nthird line\npart");
  append_raw(dir.log(1), "x\n");
  auto s = open_ok(dir.uri() + "?format=lines");
  ASSERT_TRUE(s);
  auto got = collect(*s, 4);
  ASSERT_EQ(got.size(), 4u);
  const auto p0 = of_partition(got, 0);
  ASSERT_EQ(p0.size(), 3u);
  EXPECT_EQ(p0[0].value, "alpha");
  EXPECT_EQ(p0[0].offset, 0u);
  EXPECT_EQ(p0[0].next, 6u);
  EXPECT_EQ(p0[1].value, "") << "an empty line is an empty value";
  EXPECT_EQ(p0[1].offset, 6u);
  EXPECT_EQ(p0[2].value, "third line");
  EXPECT_EQ(p0[2].next, 18u);
  for (const Got& g : got) {
    EXPECT_TRUE(g.key.empty());
    EXPECT_EQ(g.timestamp_ns, 0);
  }
  EXPECT_EQ(of_partition(got, 1).at(0).value, "x");
  // The last line has no '\n' yet: waited for, not delivered, not an error.
  EXPECT_TRUE(drain(*s).empty());
  EXPECT_FALSE(s->status(0).stopped) << s->status(0).error;
  EXPECT_EQ(s->status(0).fetched, 18u);
  append_raw(dir.log(0), "ial\n");
  got = collect(*s, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, "partial");
  EXPECT_EQ(got[0].offset, 18u);
  EXPECT_EQ(got[0].next, 26u);
}

TEST(LocalLogSource, TailsAppendsWokenByInotify) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 3);
  append_records(dir.log(1), 1, 0, 1);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  ASSERT_EQ(collect(*s, 4).size(), 4u);

  // Each round: poll blocks (nothing to read), another thread appends, the poll returns
  // with the new records long before its generous timeout.
  std::uint32_t next[2] = {3, 1};
  for (int round = 0; round < 5; ++round) {
    const std::uint32_t p = round % 2;
    const std::uint32_t first = next[p];
    std::vector<Got> got;
    const auto t0 = std::chrono::steady_clock::now();
    {
      WhilePolling appender([&] { append_records(dir.log(p), p, first, 2); });
      appender.start();
      got = collect(*s, 2, 60s);
    }
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_EQ(got.size(), 2u) << "round " << round << ": the append did not wake the poll";
    EXPECT_LT(waited, 30s) << "woken by the timeout rather than by inotify";
    EXPECT_EQ(got[0].partition, p);
    EXPECT_EQ(got[0].value, value_of(p, first));
    EXPECT_EQ(got[1].value, value_of(p, first + 1));
    EXPECT_EQ(got[1].next, file_size(dir.log(p)));
    next[p] += 2;
  }
}

TEST(LocalLogSource, IdlePollSleepsInTheKernel) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 1);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  ASSERT_EQ(collect(*s, 1).size(), 1u);
  rusage before{}, after{};
  ASSERT_EQ(::getrusage(RUSAGE_THREAD, &before), 0);
  EXPECT_TRUE(drain(*s, 400ms).empty());
  ASSERT_EQ(::getrusage(RUSAGE_THREAD, &after), 0);
  const auto cpu_us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000L + r.ru_utime.tv_usec +
           r.ru_stime.tv_usec;
  };
  // A busy poll would burn the whole 400 ms; a sleeping one next to nothing.
  EXPECT_LT(cpu_us(after) - cpu_us(before), 200'000L);
}

TEST(LocalLogSource, ReadsThroughOneRingWithRegisteredBuffers) {
  TempDir dir{"ringfeed-local-log"};
  const auto rings = [] {
    std::vector<std::string> fdinfo;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      const auto target = fs::read_symlink(e.path(), ec);
      if (!ec && target.string() == "anon_inode:[io_uring]") {
        std::ifstream in("/proc/self/fdinfo/" + e.path().filename().string());
        std::stringstream ss;
        ss << in.rdbuf();
        fdinfo.push_back(ss.str());
      }
    }
    return fdinfo;
  };
  const auto before = rings().size();
  auto s = open_ok(dir.uri(), {.partitions = 3});
  ASSERT_TRUE(s);
  const auto after = rings();
  ASSERT_EQ(after.size(), before + 1) << "one io_uring per source";
  bool found = false;
  for (const auto& info : after) found = found || contains(info, "UserBufs:\t3");
  EXPECT_TRUE(found) << "expected 3 registered buffers in the ring's fdinfo";
}

TEST(LocalLogSource, PartialRecordWrittenInTwoSteps) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 1);
  const std::uint64_t at = file_size(dir.log(0));
  const std::string rec = encoded(at, "key", std::string(300, 'z'), 42);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  ASSERT_EQ(collect(*s, 1).size(), 1u);

  // Cut inside the header, then inside the value: each piece is waited for.
  append_raw(dir.log(0), rec.substr(0, 5));
  EXPECT_TRUE(drain(*s).empty());
  append_raw(dir.log(0), rec.substr(5, 100));
  EXPECT_TRUE(drain(*s).empty());
  auto st = s->status(0);
  EXPECT_FALSE(st.stopped) << st.error;
  EXPECT_EQ(st.fetched, at);

  WhilePolling appender([&] { append_raw(dir.log(0), rec.substr(105)); });
  appender.start();
  const auto got = collect(*s, 1, 60s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].offset, at);
  EXPECT_EQ(got[0].next, at + rec.size());
  EXPECT_EQ(got[0].key, "key");
  EXPECT_EQ(got[0].value, std::string(300, 'z'));
  EXPECT_EQ(got[0].timestamp_ns, 42);
}

TEST(LocalLogSource, RecordsLargerThanTheReadBuffer) {
  TempDir dir{"ringfeed-local-log"};
  auto a = io::LogAppender::open(dir.log(0));
  ASSERT_TRUE(a.ok());
  const std::string big(3 * io::kDefaultReadBufferBytes + 17, 'b');
  const std::string biggest(io::kMaxValueLength, 'm');  // the largest value there can be
  const std::string key(io::kMaxKeyLength, 'K');
  const io::RecordView recs[] = {{.value = "small-1"},
                                 {.value = big},
                                 {.value = "small-2"},
                                 {.key = key, .value = biggest},
                                 {.value = "small-3"}};
  for (const auto& r : recs) ASSERT_TRUE(a->append({&r, 1}).ok());

  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  const auto got = collect(*s, 5);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].value, "small-1");
  EXPECT_EQ(got[1].value, big);
  EXPECT_EQ(got[2].value, "small-2");
  EXPECT_EQ(got[3].key, key);
  EXPECT_TRUE(got[3].value == biggest);
  EXPECT_EQ(got[4].value, "small-3");
  EXPECT_EQ(got[4].next, file_size(dir.log(0)));

  TempDir ldir;
  append_raw(ldir.log(0), std::string(2 * io::kDefaultReadBufferBytes, 'L') + "\nshort\n");
  auto lines = open_ok(ldir.uri() + "?format=lines");
  ASSERT_TRUE(lines);
  const auto l = collect(*lines, 2);
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].value, std::string(2 * io::kDefaultReadBufferBytes, 'L'));
  EXPECT_EQ(l[1].value, "short");
}

// Random record sizes through buffers of many sizes, down to 64 bytes, appended in
// random pieces while being read: every window move, growth and return is exercised.
TEST(LocalLogSource, AnyBufferSizeAnyPieceSize) {
  std::mt19937_64 rng(20261125);
  for (const std::size_t buffer : {64u, 100u, 1000u, 4096u}) {
    TempDir dir{"ringfeed-local-log"};
    std::string file;
    std::vector<std::string> values;
    for (int i = 0; i < 300; ++i) {
      const std::size_t len = rng() % 10 == 0 ? rng() % 20000 : rng() % 200;
      std::string v(len, '\0');
      for (auto& c : v) c = static_cast<char>('a' + rng() % 26);
      file += encoded(file.size(), "", v);
      values.push_back(std::move(v));
    }
    append_raw(dir.log(0), "");
    auto opened = io::open_local_log(dir.path(), {.read_buffer_bytes = buffer}, dir.uri());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    auto& s = **opened;
    std::vector<Got> got;
    std::size_t written = 0;
    while (written < file.size()) {
      const std::size_t piece = std::min<std::size_t>(1 + rng() % 5000, file.size() - written);
      append_raw(dir.log(0), std::string_view(file).substr(written, piece));
      written += piece;
      const auto more = drain(s, 0ms);
      got.insert(got.end(), more.begin(), more.end());
    }
    const auto rest = collect(s, values.size() - got.size());
    got.insert(got.end(), rest.begin(), rest.end());
    ASSERT_EQ(got.size(), values.size()) << "buffer " << buffer << ": " << s.status(0).error;
    for (std::size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(got[i].value, values[i]) << "buffer " << buffer << " record " << i;
    }
    EXPECT_EQ(got.back().next, file.size());
  }
}

TEST(LocalLogSource, CorruptRecordStopsOnlyItsPartition) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 3);
  const auto w = append_records(dir.log(1), 1, 0, 3);
  ASSERT_EQ(w.size(), 3u);
  // Damage the value of the second record of partition 1: its CRC no longer matches.
  const std::uint64_t bad_at = w[1].offset;
  {
    const int fd = ::open(dir.log(1).c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "X", 1, static_cast<off_t>(bad_at + io::kLogHeaderSize + 3)), 1);
    ::close(fd);
  }
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  auto got = collect(*s, 4);
  const auto late = drain(*s);
  got.insert(got.end(), late.begin(), late.end());
  const auto p0 = of_partition(got, 0);
  const auto p1 = of_partition(got, 1);
  expect_in_order(p0, 0, 0, 3, 0);
  ASSERT_EQ(p1.size(), 1u) << "only the record before the damage";
  const auto st = s->status(1);
  EXPECT_TRUE(st.stopped);
  EXPECT_EQ(st.fetched, bad_at);
  EXPECT_TRUE(contains(st.error, dir.log(1))) << st.error;
  EXPECT_TRUE(contains(st.error, "byte offset " + std::to_string(bad_at))) << st.error;
  EXPECT_TRUE(contains(st.error, "CRC32C")) << st.error;
  EXPECT_FALSE(s->status(0).stopped);

  // Partition 0 goes on; partition 1 stays stopped even as it grows.
  append_records(dir.log(0), 0, 3, 2);
  append_records(dir.log(1), 1, 3, 2);
  got = collect(*s, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].value, value_of(0, 3));
  EXPECT_EQ(got[1].value, value_of(0, 4));
  EXPECT_TRUE(drain(*s).empty());
  EXPECT_TRUE(s->status(1).stopped);
}

TEST(LocalLogSource, MisplacedRecordIsCorrupt) {
  TempDir dir{"ringfeed-local-log"};
  append_raw(dir.log(0), encoded(0, "", "first"));
  const std::uint64_t at = file_size(dir.log(0));
  append_raw(dir.log(0), encoded(at + 1000, "", "spliced"));  // valid CRC, wrong place
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  EXPECT_EQ(collect(*s, 1).size(), 1u);
  EXPECT_TRUE(drain(*s).empty());
  const auto st = s->status(0);
  EXPECT_TRUE(st.stopped);
  EXPECT_TRUE(contains(st.error, "byte offset " + std::to_string(at))) << st.error;
  EXPECT_TRUE(contains(st.error, dir.log(0))) << st.error;
}

TEST(LocalLogSource, TruncationBelowTheFetchedPositionIsReported) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 4);
  append_records(dir.log(1), 1, 0, 1);
  const std::uint64_t size = file_size(dir.log(0));
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  ASSERT_EQ(collect(*s, 5).size(), 5u);
  ASSERT_EQ(::truncate(dir.log(0).c_str(), 10), 0);
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        EXPECT_TRUE(drain(*s, 50ms).empty());
        return s->status(0).stopped;
      },
      30s));
  const auto st = s->status(0);
  EXPECT_TRUE(contains(st.error, dir.log(0))) << st.error;
  EXPECT_TRUE(contains(st.error, "truncated to 10 bytes")) << st.error;
  EXPECT_TRUE(contains(st.error, std::to_string(size))) << st.error;
  // The other partition is not affected.
  append_records(dir.log(1), 1, 1, 1);
  const auto got = collect(*s, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, value_of(1, 1));
}

TEST(LocalLogSource, RefusedRecordIsOfferedFirstAfterResume) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 5);
  append_records(dir.log(1), 1, 0, 5);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);

  // Partition 0 takes two records, then has no room.
  std::vector<Got> got;
  std::size_t p0_taken = 0;
  std::size_t p0_offers = 0;
  const io::RecordSink sink = [&](const io::SourceRecord& r) {
    if (r.partition == 0) {
      ++p0_offers;
      if (p0_taken == 2) return false;
      ++p0_taken;
    }
    got.push_back(copy(r));
    return true;
  };
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    auto r = s->poll(sink, 50ms);
    EXPECT_TRUE(r.ok());
    return of_partition(got, 1).size() == 5 && s->status(0).paused;
  }));
  EXPECT_EQ(of_partition(got, 0).size(), 2u);
  EXPECT_EQ(p0_offers, 3u) << "the third record was offered once, then the partition paused";
  EXPECT_EQ(s->status(0).fetched, of_partition(got, 0).back().next);

  // Paused: nothing of partition 0, not even when it grows; partition 1 goes on.
  append_records(dir.log(0), 0, 5, 1);
  append_records(dir.log(1), 1, 5, 1);
  const auto more = collect(*s, 1);
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].partition, 1u);
  EXPECT_TRUE(drain(*s).empty());
  EXPECT_EQ(p0_offers, 3u);

  s->resume(0);
  EXPECT_FALSE(s->status(0).paused);
  const auto rest = collect(*s, 4);
  expect_in_order(rest, 0, 2, 4, of_partition(got, 0).back().next);
}

TEST(LocalLogSource, CommitAndRestartResumeAtTheCommittedRecord) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 10);
  append_records(dir.log(1), 1, 0, 10);
  std::uint64_t pos0 = 0;
  {
    auto s = open_ok(dir.uri());
    ASSERT_TRUE(s);
    const auto got = collect(*s, 20);
    ASSERT_EQ(got.size(), 20u);
    const auto p0 = of_partition(got, 0);
    pos0 = p0[3].next;  // records 0..3 acked
    ASSERT_TRUE(s->commit(0, pos0).ok());
    EXPECT_EQ(s->committed(0), pos0);
    EXPECT_EQ(s->status(0).committed, pos0);
    // Beyond what was handed out, or backwards: refused.
    const auto ahead = s->commit(1, file_size(dir.log(1)) + 40);
    ASSERT_FALSE(ahead.ok());
    EXPECT_TRUE(contains(ahead.error().message, dir.log(1))) << ahead.error().message;
    EXPECT_FALSE(s->commit(0, p0[1].next).ok());
    EXPECT_EQ(s->committed(0), pos0);
    EXPECT_FALSE(s->commit(9, 0).ok());
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/0.checkpoint").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->committed(0), pos0);
  EXPECT_EQ(s->committed(1), 0u);
  EXPECT_EQ(s->status(0).fetched, pos0);
  const auto got = collect(*s, 6 + 10);
  expect_in_order(of_partition(got, 0), 0, 4, 6, pos0);
  expect_in_order(of_partition(got, 1), 1, 0, 10, 0);

  // Committing the end and reopening delivers nothing old, then only what is new.
  ASSERT_TRUE(s->commit(0, file_size(dir.log(0))).ok());
  s.reset();
  s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  append_records(dir.log(0), 0, 10, 1);
  const auto after = of_partition(collect(*s, 11), 0);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].value, value_of(0, 10));
}

TEST(LocalLogSource, LinesCheckpointRestart) {
  TempDir dir{"ringfeed-local-log"};
  append_raw(dir.log(0), "one\ntwo\nthree\n");
  {
    auto s = open_ok(dir.uri() + "?format=lines");
    ASSERT_TRUE(s);
    const auto got = collect(*s, 3);
    ASSERT_EQ(got.size(), 3u);
    ASSERT_TRUE(s->commit(0, got[0].next).ok());
  }
  auto s = open_ok(dir.uri() + "?format=lines");
  ASSERT_TRUE(s);
  const auto got = collect(*s, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].value, "two");
  EXPECT_EQ(got[0].offset, 4u);
  EXPECT_EQ(got[1].value, "three");
}

TEST(LocalLogSource, DamagedCheckpointIsRefusedAtOpen) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 3);
  const std::string ck = dir.path() + "/0.checkpoint";
  append_raw(ck, "garbage");
  auto s = io::open_source(dir.uri(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, ck)) << s.error().message;

  // Torn: the first half of a valid checkpoint.
  const auto good = io::encode_checkpoint(0, 0);
  fs::remove(ck);
  append_raw(ck, std::string_view(reinterpret_cast<const char*>(good.data()), 12));
  s = io::open_source(dir.uri(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, ck)) << s.error().message;
  EXPECT_TRUE(contains(s.error().message, "torn")) << s.error().message;
}

TEST(LocalLogSource, CheckpointThatDoesNotFitItsLogIsRefused) {
  TempDir dir{"ringfeed-local-log"};
  const auto w = append_records(dir.log(0), 0, 0, 3);
  const std::uint64_t size = file_size(dir.log(0));
  const std::string ck = dir.path() + "/0.checkpoint";

  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, size + 1).ok());
  auto s = io::open_source(dir.uri(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, ck)) << s.error().message;
  EXPECT_TRUE(contains(s.error().message, dir.log(0))) << s.error().message;
  EXPECT_TRUE(contains(s.error().message, "beyond the end")) << s.error().message;

  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, w[1].offset + 1).ok());
  s = io::open_source(dir.uri(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, "not a record boundary")) << s.error().message;
  EXPECT_TRUE(contains(s.error().message, dir.log(0))) << s.error().message;

  // A checkpoint for a log that does not exist.
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, 0).ok());
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 1, 100).ok());
  s = io::open_source(dir.uri(), {.partitions = 2});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, dir.log(1))) << s.error().message;

  // Lines: a position not just after a '\n'.
  TempDir ldir;
  append_raw(ldir.log(0), "abc\ndef\n");
  ASSERT_TRUE(io::write_checkpoint(ldir.path(), 0, 2).ok());
  s = io::open_source(ldir.uri() + "?format=lines", {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, "not a record boundary")) << s.error().message;

  // On a boundary (including the very end) is fine.
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, w[2].offset).ok());
  EXPECT_TRUE(io::open_source(dir.uri(), {}).ok());
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, size).ok());
  EXPECT_TRUE(io::open_source(dir.uri(), {}).ok());
}

TEST(LocalLogSource, MissingDirectoryIsNamed) {
  auto s = io::open_source("file:/nonexistent-ringfeed-source", {});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ENOENT);
  EXPECT_TRUE(contains(s.error().message, "/nonexistent-ringfeed-source")) << s.error().message;
  TempDir dir{"ringfeed-local-log"};
  append_raw(dir.log(0), "");
  s = io::open_source("file:" + dir.log(0), {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.error().message, "not a directory")) << s.error().message;
}

TEST(LocalLogSource, BadUrisAreRefusedNamingWhatIsWrong) {
  TempDir dir{"ringfeed-local-log"};
  const auto refused = [](const std::string& uri, const std::string& why) {
    auto s = io::open_source(uri, {});
    ASSERT_FALSE(s.ok()) << uri;
    EXPECT_TRUE(contains(s.error().message, why)) << uri << ": " << s.error().message;
  };
  refused(dir.uri() + "?format=xml", "'xml'");
  refused(dir.uri() + "?fromat=lines", "unknown parameter 'fromat'");
  refused(dir.uri() + "?format=lines&partitions=3", "unknown parameter 'partitions'");
  refused(dir.uri() + "?format=lines&format=framed", "given twice");
  refused(dir.uri() + "?", "empty parameter");
  refused("nats://localhost:4222?stream=a", "unknown scheme 'nats'");
  refused("kafka://localhost:9092?topic=a", "no group");
  refused("redis://localhost:6379?streams=a", "no group");
  refused("/var/log/orders", "no scheme");
  refused("file:", "no directory");
  refused("file:?format=lines", "no directory");
  EXPECT_TRUE(io::open_source(dir.uri() + "?format=framed", {}).ok());
}

TEST(LocalLogSource, WakeReturnsABlockedPoll) {
  TempDir dir{"ringfeed-local-log"};
  auto s = open_ok(dir.uri(), {.partitions = 2});
  ASSERT_TRUE(s);
  std::size_t n = 1;
  const auto t0 = std::chrono::steady_clock::now();
  {
    WhilePolling waker([&] { s->wake(); });
    waker.start();
    auto r = s->poll([](const io::SourceRecord&) { return true; }, 60s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    n = *r;
  }
  EXPECT_EQ(n, 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s) << "returned by its timeout, not wake()";

  // A wake() before the poll makes the next poll return at once, once.
  s->wake();
  auto r = s->poll([](const io::SourceRecord&) { return true; }, 60s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0u);
}

TEST(LocalLogSource, FileCreatedAfterOpenIsPickedUp) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 1);
  auto s = open_ok(dir.uri(), {.partitions = 3});
  ASSERT_TRUE(s);
  ASSERT_EQ(collect(*s, 1).size(), 1u);
  EXPECT_FALSE(s->status(2).stopped);
  {
    WhilePolling producer([&] { append_records(dir.log(2), 2, 0, 3); });
    producer.start();
    const auto got = collect(*s, 3, 60s);
    expect_in_order(got, 2, 0, 3, 0);
  }
  // Lines too, and a file created empty that grows later.
  TempDir ldir;
  auto l = open_ok(ldir.uri() + "?format=lines");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->partitions(), 1u);
  append_raw(ldir.log(0), "");
  EXPECT_TRUE(drain(*l).empty());
  append_raw(ldir.log(0), "hello\n");
  const auto got = collect(*l, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, "hello");
}

TEST(LocalLogSource, ReplacedFileStopsItsPartition) {
  TempDir dir{"ringfeed-local-log"};
  append_records(dir.log(0), 0, 0, 2);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  ASSERT_EQ(collect(*s, 2).size(), 2u);
  fs::remove(dir.log(0));
  append_records(dir.log(0), 0, 0, 1);  // a new file under the old name
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        EXPECT_TRUE(drain(*s, 50ms).empty());
        return s->status(0).stopped;
      },
      30s));
  EXPECT_TRUE(contains(s->status(0).error, dir.log(0))) << s->status(0).error;
}

TEST(LocalLogSource, RemovedDirectoryFailsTheWholeSource) {
  auto dir = std::make_unique<TempDir>();
  auto s = open_ok(dir->uri());
  ASSERT_TRUE(s);
  const std::string path = dir->path();
  dir.reset();
  bool failed = false;
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    auto r = s->poll([](const io::SourceRecord&) { return true; }, 50ms);
    failed = !r.ok();
    if (failed) {
      EXPECT_TRUE(contains(r.error().message, path)) << r.error().message;
    }
    return failed;
  }));
}

// ---- Batches (poll_batches) -------------------------------------------------------

// A BatchSink that keeps every call, and takes all of each batch unless `limit` says
// how many to take of the next batch of a partition.
struct BatchLog final : io::BatchSink {
  struct Call {
    std::uint32_t partition;
    std::vector<Got> records;
  };
  std::vector<Call> calls;
  std::map<std::uint32_t, std::size_t> limit;
  std::size_t take(std::uint32_t partition, std::span<const io::SourceRecord> records) override {
    Call c{partition, {}};
    std::size_t n = records.size();
    if (auto it = limit.find(partition); it != limit.end()) {
      n = std::min(n, it->second);
      limit.erase(it);
    }
    for (std::size_t i = 0; i < n; ++i) c.records.push_back(copy(records[i]));
    // What was offered, taken or not.
    offered += records.size();
    calls.push_back(std::move(c));
    return n;
  }
  std::vector<Got> of(std::uint32_t p) const {
    std::vector<Got> out;
    for (const Call& c : calls) {
      if (c.partition == p) out.insert(out.end(), c.records.begin(), c.records.end());
    }
    return out;
  }
  std::size_t offered = 0;
};

// Polls with `sink` until `done` or 30 s.
bool poll_until(io::Source& s, io::BatchSink& sink, const std::function<bool()>& done) {
  return ringfeed::test::wait_until([&] {
    auto r = s.poll_batches(sink, 50ms);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return done();
  });
}

// Records come in batches of one partition, consecutive, the partitions taking turns
// batch by batch; a sink that takes part of a batch pauses the partition at the first
// record it left, which is offered first after resume.
TEST(LocalLogSource, BatchesComeInTurnsAndAPartialTakePauses) {
  TempDir dir{"ringfeed-local-log"};
  constexpr std::uint32_t kN = 1000;
  const auto w0 = append_records(dir.log(0), 0, 0, kN);
  append_records(dir.log(1), 1, 0, kN);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  BatchLog sink;
  ASSERT_TRUE(
      poll_until(*s, sink, [&] { return sink.of(0).size() + sink.of(1).size() == 2 * kN; }));
  for (std::uint32_t p = 0; p < 2; ++p) expect_in_order(sink.of(p), p, 0, kN, 0);
  std::size_t largest = 0;
  for (const auto& c : sink.calls) {
    largest = std::max(largest, c.records.size());
    for (const Got& g : c.records) EXPECT_EQ(g.partition, c.partition);
  }
  EXPECT_GT(largest, 1u) << "one record per call is no batch";
  // While both have records, neither gets two batches in a row.
  const auto first_of_1 = std::find_if(sink.calls.begin(), sink.calls.end(),
                                       [](const auto& c) { return c.partition == 1; });
  ASSERT_NE(first_of_1, sink.calls.end());
  EXPECT_LE(first_of_1 - sink.calls.begin(), 1) << "partition 1 waited for partition 0's batches";

  // A partial take: 10 of the next batch of partition 0.
  TempDir more;
  const auto m0 = append_records(more.log(0), 0, 0, 300);
  append_records(more.log(1), 1, 0, 300);
  auto t = open_ok(more.uri());
  ASSERT_TRUE(t);
  BatchLog part;
  part.limit[0] = 10;
  ASSERT_TRUE(poll_until(*t, part, [&] { return part.of(1).size() == 300; }));
  EXPECT_EQ(part.of(0).size(), 10u);
  EXPECT_TRUE(t->status(0).paused);
  EXPECT_EQ(t->status(0).fetched, m0[10].offset);
  const std::size_t offered = part.offered;
  EXPECT_TRUE(drain(*t).empty());
  EXPECT_EQ(part.offered, offered) << "a paused partition is offered nothing";
  t->resume(0);
  BatchLog rest;
  ASSERT_TRUE(poll_until(*t, rest, [&] { return rest.of(0).size() == 290; }));
  ASSERT_FALSE(rest.calls.empty());
  EXPECT_EQ(rest.calls.front().records.front().offset, m0[10].offset);
  expect_in_order(rest.of(0), 0, 10, 290, m0[10].offset);
}

// What decode() says of the record at `offset` of `path` (the source's error is this,
// after the file's name).
std::string decode_error_at(const std::string& path, std::uint64_t offset) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto d = io::decode(std::as_bytes(std::span(bytes)).subspan(offset), offset,
                            io::OffsetCheck::equals_position);
  EXPECT_EQ(d.status, io::DecodeStatus::corrupt);
  return d.error;
}

// Damage at byte 0 of a log without a checkpoint is not a checkpoint off a boundary: the
// source opens, the other partitions go on, and the damaged one stops with decode()'s
// error for its first record.
TEST(LocalLogSource, DamagedFirstRecordStopsOnlyItsPartition) {
  TempDir dir{"ringfeed-local-log"};
  append_raw(dir.log(0), "garbage that is not a record at all, 40 bytes or more\n");
  append_records(dir.log(1), 1, 0, 3);
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  const auto got = collect(*s, 3);
  expect_in_order(of_partition(got, 1), 1, 0, 3, 0);
  EXPECT_TRUE(of_partition(got, 0).empty());
  const auto st = s->status(0);
  EXPECT_TRUE(st.stopped);
  EXPECT_EQ(st.fetched, 0u);
  EXPECT_EQ(st.error, dir.log(0) + ": " + decode_error_at(dir.log(0), 0));
  EXPECT_FALSE(s->status(1).stopped);
}

// Damage in the middle of what one read brings in: the records before it are handed
// out, and the partition stops with the error decode() gives for that record: a CRC
// that does not match (partition 0), a record with a good CRC in the wrong place
// (partition 1). A dead-letter record in a log is a record like any other (partition 2).
TEST(LocalLogSource, DamageInTheMiddleOfABatchIsReportedAsDecodeReportsIt) {
  TempDir dir{"ringfeed-local-log"};
  const auto w0 = append_records(dir.log(0), 0, 0, 40);
  {
    const int fd = ::open(dir.log(0).c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "X", 1, static_cast<off_t>(w0[17].offset + io::kLogHeaderSize + 2)), 1);
    ::close(fd);
  }
  append_records(dir.log(1), 1, 0, 25);
  const std::uint64_t spliced_at = file_size(dir.log(1));
  append_raw(dir.log(1), encoded(spliced_at + 64, "k", "spliced"));
  append_records(dir.log(1), 1, 25, 5);
  append_records(dir.log(2), 2, 0, 5);
  const std::uint64_t letter_at = file_size(dir.log(2));
  {
    io::RecordView dl{.kind = io::RecordKind::dead_letter,
                      .timestamp_ns = 7,
                      .upstream_offset = letter_at,
                      .key = "dk",
                      .value = "dead",
                      .delivery_count = 3,
                      .group = "g",
                      .reason = "rejected"};
    std::string out(io::encoded_size(dl), '\0');
    ASSERT_EQ(io::encode(dl, {reinterpret_cast<std::byte*>(out.data()), out.size()}).status,
              io::EncodeStatus::ok);
    append_raw(dir.log(2), out);
  }
  append_records(dir.log(2), 2, 5, 5);

  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  BatchLog sink;
  ASSERT_TRUE(poll_until(*s, sink, [&] {
    return s->status(0).stopped && s->status(1).stopped && sink.of(2).size() == 11;
  }));
  EXPECT_TRUE(drain(*s).empty());
  expect_in_order(sink.of(0), 0, 0, 17, 0);
  EXPECT_EQ(s->status(0).fetched, w0[17].offset);
  EXPECT_EQ(s->status(0).error, dir.log(0) + ": " + decode_error_at(dir.log(0), w0[17].offset));
  EXPECT_TRUE(contains(s->status(0).error, "CRC32C")) << s->status(0).error;
  expect_in_order(sink.of(1), 1, 0, 25, 0);
  EXPECT_EQ(s->status(1).error, dir.log(1) + ": " + decode_error_at(dir.log(1), spliced_at));
  EXPECT_TRUE(contains(s->status(1).error, "spliced")) << s->status(1).error;

  const auto p2 = sink.of(2);
  ASSERT_EQ(p2.size(), 11u);
  EXPECT_EQ(p2[5].offset, letter_at);
  EXPECT_EQ(p2[5].key, "dk");
  EXPECT_EQ(p2[5].value, "dead");
  EXPECT_EQ(p2[5].timestamp_ns, 7);
  EXPECT_EQ(p2[6].offset, p2[5].next);
  EXPECT_EQ(p2[10].value, value_of(2, 9));
  EXPECT_FALSE(s->status(2).stopped);
}

// A descriptor given to watch_readable() ends a poll while it is readable, until the
// caller reads it; a descriptor that cannot be watched is refused.
TEST(LocalLogSource, WatchedDescriptorEndsAPoll) {
  TempDir dir{"ringfeed-local-log"};
  auto s = open_ok(dir.uri());
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->watch_readable(-1));
  const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  ASSERT_TRUE(s->watch_readable(efd));
  auto nothing = [](const io::SourceRecord&) { return true; };
  const auto t0 = std::chrono::steady_clock::now();
  {
    WhilePolling writer([&] {
      const std::uint64_t one = 1;
      ASSERT_EQ(::write(efd, &one, sizeof one), 8);
    });
    writer.start();
    auto r = s->poll(nothing, 60s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, 0u);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s) << "returned by its timeout";
  // Still readable: the next poll returns at once.
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s->poll(nothing, 60s).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 30s);
  // Read: a poll waits its time again.
  std::uint64_t value = 0;
  ASSERT_EQ(::read(efd, &value, sizeof value), 8);
  const auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s->poll(nothing, 100ms).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - t2, 90ms);
  // Records still come while a watch is armed.
  append_records(dir.log(0), 0, 0, 3);
  EXPECT_EQ(collect(*s, 3).size(), 3u);
  s.reset();
  ::close(efd);
}
