// The fetcher: records of a source land in the partition rings and reach exclusive and
// shared consumers exactly once; a full ring pauses fetching without losing anything;
// only what every group acked is committed upstream; a live namespace is refused, a dead
// fetcher's one taken over; a clean stop removes every segment; an idle fetcher sleeps
// until something is due, and a dead consumer's leases still come back at once. The
// source is an in-memory one the test controls (MemorySource below).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fetcher_support.hpp"
#include "io/checkpoint.hpp"
#include "io/log_appender.hpp"
#include "io/source.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/writer.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Fetcher;
using ringfeed::FetcherOptions;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::test::fork_child;
using ringfeed::test::spawn_fetcher;
using ringfeed::test::unique_ns;
using ringfeed::test::wait_child;
using ringfeed::test::wait_until;
namespace io = ringfeed::io;
namespace shm = ringfeed::shm;

namespace {

// Upstream offsets of the in-memory source: record i of a partition sits at i * kStride.
constexpr std::uint64_t kStride = 100;

// An in-memory upstream. The test appends records and inspects commits, pauses and
// resumes through the shared State while the fetcher owns the Source.
class MemorySource final : public io::Source {
 public:
  struct Record {
    std::string key;
    std::string value;
  };
  struct Partition {
    std::vector<Record> records;
    std::size_t next = 0;  // index of the next record to hand out
    std::uint64_t committed = 0;
    std::vector<std::uint64_t> commits;
    bool paused = false;
    int pauses = 0;
    int resumes = 0;
    bool assigned = true;  // false: the upstream gives it to another host
    std::string error;     // what status() says holds it back
  };
  struct State {
    explicit State(std::uint32_t n, bool watch = true) : parts(n), watchable(watch) {}
    mutable std::mutex mutex;
    std::vector<Partition> parts;
    int status_calls = 0;  // the fetcher asks at every commit pass: counts the passes
    int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    bool watchable;              // watch_readable() accepts descriptors
    std::vector<int> watched;    // descriptors that end a poll while readable
    std::vector<long> timeouts;  // of every poll, in milliseconds

    void wake() const {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t r = ::write(efd, &one, sizeof one);
    }
    void append(std::uint32_t p, std::string key, std::string value) {
      {
        std::lock_guard lock(mutex);
        parts[p].records.push_back({std::move(key), std::move(value)});
      }
      wake();
    }
    void append_n(std::uint32_t p, std::size_t n, std::size_t value_size = 0) {
      for (std::size_t i = 0; i < n; ++i) {
        std::lock_guard lock(mutex);
        const std::size_t index = parts[p].records.size();
        std::string v = "p" + std::to_string(p) + "-" + std::to_string(index);
        if (v.size() < value_size) v.resize(value_size, '.');
        parts[p].records.push_back({"k" + std::to_string(p), std::move(v)});
      }
      wake();
    }
    template <typename F>
    auto with(F f) const {
      std::lock_guard lock(mutex);
      return f(*this);
    }
  };

  explicit MemorySource(std::shared_ptr<State> state) : state_(std::move(state)) {
    // A restart resumes at the committed position.
    for (Partition& p : state_->parts) {
      p.next = p.committed / kStride;
      p.paused = false;
    }
  }

  std::uint32_t partitions() const override {
    return static_cast<std::uint32_t>(state_->parts.size());
  }
  std::uint64_t committed(std::uint32_t p) const override {
    std::lock_guard lock(state_->mutex);
    return state_->parts[p].committed;
  }
  ringfeed::Result<std::size_t> poll(const io::RecordSink& sink,
                                     std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<pollfd> fds{{state_->efd, POLLIN, 0}};
    {
      std::lock_guard lock(state_->mutex);
      state_->timeouts.push_back(static_cast<long>(timeout.count()));
      for (const int fd : state_->watched) fds.push_back({fd, POLLIN, 0});
    }
    bool woken = false;
    for (;;) {
      std::size_t taken = 0;
      {
        std::lock_guard lock(state_->mutex);
        for (std::uint32_t i = 0; i < state_->parts.size(); ++i) {
          Partition& p = state_->parts[i];
          // At most 256 per partition and poll, so that partitions take turns.
          for (int k = 0; k < 256 && !p.paused && p.next < p.records.size(); ++k) {
            const Record& r = p.records[p.next];
            const io::SourceRecord rec{.partition = i,
                                       .upstream_offset = p.next * kStride,
                                       .next_offset = (p.next + 1) * kStride,
                                       .timestamp_ns = 1,
                                       .key = r.key,
                                       .value = r.value};
            if (!sink(rec)) {
              p.paused = true;
              ++p.pauses;
              break;
            }
            ++p.next;
            ++taken;
          }
        }
      }
      if (taken > 0 || woken) return taken;
      // Rounded up: the poll must not end before the time asked for.
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::size_t{0};
      if (::poll(fds.data(), fds.size(), static_cast<int>(left.count())) > 0) {
        // A watched descriptor: return, the caller reads it. wake() (or an append):
        // look at the records once more, then return.
        for (std::size_t i = 1; i < fds.size(); ++i) {
          if (fds[i].revents != 0) return std::size_t{0};
        }
        std::uint64_t drained = 0;
        [[maybe_unused]] const ssize_t r = ::read(state_->efd, &drained, sizeof drained);
        woken = true;
      }
    }
  }
  bool watch_readable(int fd) override {
    std::lock_guard lock(state_->mutex);
    if (!state_->watchable) return false;
    state_->watched.push_back(fd);
    return true;
  }
  void resume(std::uint32_t p) override {
    std::lock_guard lock(state_->mutex);
    if (state_->parts[p].paused) ++state_->parts[p].resumes;
    state_->parts[p].paused = false;
  }
  ringfeed::Status commit(std::uint32_t p, std::uint64_t position) override {
    std::lock_guard lock(state_->mutex);
    state_->parts[p].committed = position;
    state_->parts[p].commits.push_back(position);
    return ringfeed::Ok{};
  }
  io::PartitionStatus status(std::uint32_t p) const override {
    std::lock_guard lock(state_->mutex);
    ++state_->status_calls;
    const Partition& part = state_->parts[p];
    return {.committed = part.committed,
            .fetched = part.next * kStride,
            .paused = part.paused,
            .assigned = part.assigned,
            .error = part.error};
  }
  void wake() override { state_->wake(); }
  const std::string& uri() const override { return uri_; }

 private:
  std::shared_ptr<State> state_;
  std::string uri_ = "memory:test";
};

// The status of a namespace's fetcher as `ringfeed stat` would read it.
std::int32_t creator_pid(const std::string& segment_name) {
  auto seg = shm::Segment::open(segment_name, shm::Access::read_only);
  if (!seg) return -1;
  return reinterpret_cast<const shm::SegmentHeader*>(seg->base())->creator_pid;
}

std::vector<std::string> segments_of(const std::string& ns) {
  return shm::Segment::list("ringfeed." + ns + ".");
}

// A fetcher running on its own thread.
class Running {
 public:
  explicit Running(std::unique_ptr<Fetcher> f) : f_(std::move(f)) {
    thread_ = std::thread([this] { result_ = f_->run(stop_); });
  }
  ~Running() {
    if (thread_.joinable()) (void)end();
  }
  ringfeed::Status end() {
    stop_.store(true);
    f_->wake();
    thread_.join();
    return result_;
  }
  Fetcher& operator*() { return *f_; }
  Fetcher* operator->() { return f_.get(); }

 private:
  std::unique_ptr<Fetcher> f_;
  std::atomic<bool> stop_{false};
  ringfeed::Status result_{ringfeed::Ok{}};
  std::thread thread_;
};

std::unique_ptr<Fetcher> start(const FetcherOptions& o,
                               const std::shared_ptr<MemorySource::State>& s) {
  auto f = Fetcher::start(o, std::make_unique<MemorySource>(s));
  EXPECT_TRUE(f.ok()) << (f.ok() ? "" : f.error().message);
  return f.ok() ? std::move(f.value()) : nullptr;
}

std::unique_ptr<Consumer> attach(const std::string& ns, std::uint32_t partition,
                                 const std::string& group, Mode mode) {
  auto c = Consumer::attach({.ns = ns, .partition = partition, .group = group, .mode = mode});
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? std::move(c.value()) : nullptr;
}

// Pops and acks until `n` messages arrived (or 30 s passed); returns their offsets. A
// slow consumer takes at most `per_pop` at a time and rests `rest` after each.
std::vector<std::uint64_t> consume(Consumer& c, std::size_t n, std::size_t per_pop = SIZE_MAX,
                                   std::chrono::milliseconds rest = 0ms) {
  std::vector<std::uint64_t> got;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (got.size() < n && std::chrono::steady_clock::now() < deadline) {
    if (rest > 0ms && !got.empty()) std::this_thread::sleep_for(rest);
    const auto& batch = c.pop(std::min(n - got.size(), per_pop), 10ms);
    for (const auto& m : batch) got.push_back(m.offset());
    if (!batch.empty()) {
      EXPECT_EQ(c.ack(batch), ringfeed::AckStatus::ok);
    }
  }
  return got;
}

std::vector<std::uint64_t> offsets(std::size_t from, std::size_t to) {
  std::vector<std::uint64_t> v;
  for (std::size_t i = from; i < to; ++i) v.push_back(i * kStride);
  return v;
}

ringfeed::PartitionStats stat(Fetcher& f, std::uint32_t p) {
  return f.stats().at(p);
}

// Waits for `passes` more commit passes of the fetcher (it asks the source for the
// status of every partition at each, and whenever a poll ended without records).
bool wait_commit_passes(const MemorySource::State& s, int passes) {
  const int base = s.with([](const auto& st) { return st.status_calls; });
  return wait_until([&] {
    return s.with([](const auto& st) { return st.status_calls; }) >=
           base + passes * static_cast<int>(s.parts.size());
  });
}

TEST(Fetcher, OptionsAreCheckedWithReasons) {
  auto state = std::make_shared<MemorySource::State>(1);
  auto refused = [&](FetcherOptions o, const std::string& says) {
    auto f = Fetcher::start(o, std::make_unique<MemorySource>(state));
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.error().message.find(says), std::string::npos) << f.error().message;
  };
  refused({.ns = "bad.name"}, "namespace name 'bad.name'");
  refused({.ns = unique_ns("opt"), .ring_bytes = 5000}, "ring size of 5000 bytes");
  refused({.ns = unique_ns("opt"), .ring_bytes = 1024}, "power of two");
  refused({.ns = unique_ns("opt"), .partitions = 3}, "serves 1 partitions, not the 3");
  refused({.ns = unique_ns("opt"), .group_defaults = {.lease_window = 1000}}, "lease window 1000");
  refused({.ns = unique_ns("opt"), .group_defaults = {.max_deliveries = 64}}, "max deliveries 64");
  auto none = Fetcher::start({.ns = unique_ns("opt")}, nullptr);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, EINVAL);
}

// Two partitions; per partition one exclusive consumer and two shared consumers (on
// threads) in another group. Each group gets every record exactly once, in order for the
// exclusive one; afterwards the whole stream is committed.
TEST(Fetcher, RecordsReachExclusiveAndSharedGroupsExactlyOnce) {
  const auto ns = unique_ns("once");
  constexpr std::uint32_t kParts = 2;
  constexpr std::size_t kN = 3000;
  auto state = std::make_shared<MemorySource::State>(kParts);
  Running f(start({.ns = ns, .ring_bytes = 1 << 20}, state));

  std::vector<std::unique_ptr<Consumer>> exclusive;
  std::vector<std::unique_ptr<Consumer>> shared;
  for (std::uint32_t p = 0; p < kParts; ++p) {
    exclusive.push_back(attach(ns, p, "ex", Mode::exclusive));
    shared.push_back(attach(ns, p, "sh", Mode::shared));
    shared.push_back(attach(ns, p, "sh", Mode::shared));
  }
  for (const auto& c : exclusive) ASSERT_TRUE(c);
  for (const auto& c : shared) ASSERT_TRUE(c);
  for (std::uint32_t p = 0; p < kParts; ++p) state->append_n(p, kN);

  std::atomic<std::size_t> shared_seen[kParts] = {};
  std::vector<std::vector<std::uint64_t>> shared_got(shared.size());
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < shared.size(); ++k) {
    threads.emplace_back([&, k] {
      const std::uint32_t p = shared[k]->options().partition;
      const auto deadline = std::chrono::steady_clock::now() + 30s;
      while (shared_seen[p].load() < kN && std::chrono::steady_clock::now() < deadline) {
        const auto& batch = shared[k]->pop(64, 5ms);
        for (const auto& m : batch) {
          shared_got[k].push_back(m.offset());
          EXPECT_EQ(m.value(),
                    "p" + std::to_string(p) + "-" + std::to_string(m.offset() / kStride));
        }
        if (!batch.empty()) {
          EXPECT_EQ(shared[k]->ack(batch), ringfeed::AckStatus::ok);
        }
        shared_seen[p] += batch.size();
      }
    });
  }
  for (std::uint32_t p = 0; p < kParts; ++p) {
    EXPECT_EQ(consume(*exclusive[p], kN), offsets(0, kN)) << "partition " << p;
  }
  for (auto& t : threads) t.join();
  for (std::uint32_t p = 0; p < kParts; ++p) {
    std::vector<std::uint64_t> all;
    for (std::size_t k = 0; k < shared.size(); ++k) {
      if (shared[k]->options().partition != p) continue;
      all.insert(all.end(), shared_got[k].begin(), shared_got[k].end());
    }
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, offsets(0, kN)) << "shared group, partition " << p;
  }
  for (std::uint32_t p = 0; p < kParts; ++p) {
    EXPECT_TRUE(wait_until([&] { return stat(*f, p).committed == kN * kStride; }))
        << "partition " << p << " committed " << stat(*f, p).committed;
    const auto s = stat(*f, p);
    EXPECT_EQ(s.messages, kN);
    EXPECT_EQ(s.fetched, kN * kStride);
    EXPECT_FALSE(s.stopped);
  }
  EXPECT_TRUE(f.end().ok());
}

// A ring of 4 KiB holds about 25 of these records. Nothing is consumed at first: the
// fetcher pauses the partition. Then the consumer takes all 400 in order, 10 at a time
// and slower than the fetcher: the fetcher resumed every time space came back and
// paused again, and nothing was lost or repeated.
TEST(Fetcher, FullRingPausesFetchingAndLosesNothing) {
  const auto ns = unique_ns("backpressure");
  constexpr std::size_t kN = 400;
  auto state = std::make_shared<MemorySource::State>(1);
  Running f(start({.ns = ns, .ring_bytes = 4096}, state));
  auto c = attach(ns, 0, "slow", Mode::exclusive);
  ASSERT_TRUE(c);
  state->append_n(0, kN, 100);

  ASSERT_TRUE(wait_until([&] { return stat(*f, 0).paused; }));
  const auto paused = stat(*f, 0);
  EXPECT_LT(paused.messages, kN);
  EXPECT_GT(paused.ring_used, 0u);
  EXPECT_EQ(paused.ring_capacity, 4096u);
  EXPECT_TRUE(state->with([](const auto& s) { return s.parts[0].paused; }));

  EXPECT_EQ(consume(*c, kN, 10, 1ms), offsets(0, kN));
  const auto [pauses, resumes] =
      state->with([](const auto& s) { return std::pair(s.parts[0].pauses, s.parts[0].resumes); });
  EXPECT_GT(pauses, 1);
  EXPECT_GT(resumes, 0);
  EXPECT_TRUE(wait_until([&] {
    const auto s = stat(*f, 0);
    return !s.paused && s.committed == kN * kStride;
  }));
  EXPECT_TRUE(f.end().ok());
}

// Two groups; one acks everything, the other only the first 30 of 100. The committed
// position follows the lagging group, then moves on when it catches up.
TEST(Fetcher, CommitsOnlyWhatEveryGroupAcked) {
  const auto ns = unique_ns("commit");
  auto state = std::make_shared<MemorySource::State>(1);
  Running f(start({.ns = ns, .ring_bytes = 1 << 20, .commit_interval = 5ms}, state));
  auto fast = attach(ns, 0, "fast", Mode::exclusive);
  auto slow = attach(ns, 0, "slow", Mode::shared);
  ASSERT_TRUE(fast && slow);
  state->append_n(0, 100);

  EXPECT_EQ(consume(*fast, 100), offsets(0, 100));
  EXPECT_EQ(consume(*slow, 30), offsets(0, 30));
  ASSERT_TRUE(wait_until([&] { return stat(*f, 0).committed == 30 * kStride; }))
      << "committed " << stat(*f, 0).committed;
  ASSERT_TRUE(wait_commit_passes(*state, 3));
  EXPECT_EQ(stat(*f, 0).committed, 30 * kStride);
  const auto commits = state->with([](const auto& s) { return s.parts[0].commits; });
  ASSERT_FALSE(commits.empty());
  for (const std::uint64_t c : commits) EXPECT_LE(c, 30 * kStride);
  EXPECT_TRUE(std::is_sorted(commits.begin(), commits.end()));

  EXPECT_EQ(consume(*slow, 70), offsets(30, 100));
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).committed == 100 * kStride; }));
  EXPECT_EQ(state->with([](const auto& s) { return s.parts[0].committed; }), 100 * kStride);
  EXPECT_TRUE(f.end().ok());
}

// No group on the ring: nothing counts as acked, so nothing is committed, and once the
// ring is full the fetcher waits instead of reusing space nobody released. A group that
// comes later gets every record from the first.
TEST(Fetcher, WithoutGroupsNothingIsCommittedOrDropped) {
  const auto ns = unique_ns("nogroup");
  constexpr std::size_t kN = 200;
  // A source that cannot watch the rings' descriptors: the fetcher looks for the group
  // that comes later by itself.
  auto state = std::make_shared<MemorySource::State>(1, false);
  Running f(start({.ns = ns, .ring_bytes = 4096, .commit_interval = 5ms}, state));
  state->append_n(0, kN, 100);
  ASSERT_TRUE(wait_until([&] { return stat(*f, 0).paused; }));
  ASSERT_TRUE(wait_commit_passes(*state, 3));
  EXPECT_EQ(stat(*f, 0).committed, 0u);
  EXPECT_TRUE(state->with([](const auto& s) { return s.parts[0].commits.empty(); }));

  auto late = attach(ns, 0, "late", Mode::exclusive);
  ASSERT_TRUE(late);
  EXPECT_EQ(consume(*late, kN), offsets(0, kN));
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).committed == kN * kStride; }));
  EXPECT_TRUE(f.end().ok());
}

// A record larger than a quarter of the ring stops its partition with a reason naming
// the offset; the other partition goes on.
TEST(Fetcher, RecordTooLargeForTheRingStopsItsPartition) {
  const auto ns = unique_ns("large");
  auto state = std::make_shared<MemorySource::State>(2);
  Running f(start({.ns = ns, .ring_bytes = 4096}, state));
  auto c0 = attach(ns, 0, "g", Mode::exclusive);
  auto c1 = attach(ns, 1, "g", Mode::exclusive);
  ASSERT_TRUE(c0 && c1);
  state->append(0, "k", "small");
  state->append(0, "k", std::string(2000, 'x'));
  state->append(0, "k", "after");
  state->append_n(1, 50);

  ASSERT_TRUE(wait_until([&] { return stat(*f, 0).stopped; }));
  const auto s = stat(*f, 0);
  EXPECT_NE(s.error.find("partition 0 of memory:test: record at offset 100"), std::string::npos)
      << s.error;
  EXPECT_NE(s.error.find("does not fit in a ring of 4096 bytes"), std::string::npos) << s.error;
  EXPECT_EQ(s.messages, 1u);
  EXPECT_EQ(consume(*c0, 1), offsets(0, 1));
  EXPECT_EQ(consume(*c1, 50), offsets(0, 50));
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).committed == kStride; }));
  EXPECT_EQ(stat(*f, 1).error, "");
  EXPECT_FALSE(stat(*f, 1).stopped);
  EXPECT_TRUE(f.end().ok());
}

// A second fetcher on a live namespace is refused, naming the pid that serves it; the
// first one's segments are untouched.
TEST(Fetcher, SecondStartOnALiveNamespaceIsRefused) {
  const auto ns = unique_ns("live");
  auto state = std::make_shared<MemorySource::State>(1);
  auto first = start({.ns = ns, .ring_bytes = 1 << 16}, state);
  ASSERT_TRUE(first);
  const auto before = segments_of(ns);
  auto second =
      Fetcher::start({.ns = ns, .ring_bytes = 1 << 16}, std::make_unique<MemorySource>(state));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EBUSY);
  EXPECT_EQ(second.error().message,
            "namespace '" + ns + "' is served by fetcher pid " + std::to_string(::getpid()));
  EXPECT_EQ(segments_of(ns), before);
  EXPECT_EQ(creator_pid(shm::fetcher_segment_name(ns)), ::getpid());
}

// Consumers and groups in two partitions; stop. Every segment of the namespace is gone,
// consumers see the rings closed, and what they acked was committed on the way out
// (the periodic commit is an hour away).
TEST(Fetcher, CleanStopCommitsAndRemovesEverySegment) {
  const auto ns = unique_ns("stop");
  auto state = std::make_shared<MemorySource::State>(2);
  Running f(start({.ns = ns, .ring_bytes = 1 << 16, .commit_interval = 1h}, state));
  auto a0 = attach(ns, 0, "a", Mode::exclusive);
  auto b0 = attach(ns, 0, "b", Mode::broadcast);
  auto a1 = attach(ns, 1, "a", Mode::shared);
  ASSERT_TRUE(a0 && b0 && a1);
  state->append_n(0, 20);
  state->append_n(1, 20);
  EXPECT_EQ(consume(*a0, 20), offsets(0, 20));
  EXPECT_EQ(consume(*b0, 20), offsets(0, 20));
  EXPECT_EQ(consume(*a1, 10), offsets(0, 10));
  EXPECT_EQ(segments_of(ns).size(), 1u + 2 + 3);  // fetcher, 2 rings, 3 groups

  ASSERT_TRUE(f.end().ok());
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
  EXPECT_EQ(state->with([](const auto& s) { return s.parts[0].committed; }), 20 * kStride);
  EXPECT_EQ(state->with([](const auto& s) { return s.parts[1].committed; }), 10 * kStride);
  EXPECT_EQ(a0->pop(1, 1s).status(), PopStatus::closed);
  const auto& rest = a1->pop(64, 1s);
  EXPECT_EQ(rest.size(), 10u);  // published before the stop: still readable
  EXPECT_EQ(stat(*f, 0).committed, 20 * kStride);
}

// A restart of the fetcher (same source state) resumes at the committed position: what
// was committed is not fetched again.
TEST(Fetcher, RestartResumesAtTheCommittedPosition) {
  const auto ns = unique_ns("restart");
  auto state = std::make_shared<MemorySource::State>(1);
  {
    Running f(start({.ns = ns, .ring_bytes = 1 << 16}, state));
    auto c = attach(ns, 0, "g", Mode::exclusive);
    ASSERT_TRUE(c);
    state->append_n(0, 40);
    EXPECT_EQ(consume(*c, 25), offsets(0, 25));
    ASSERT_TRUE(f.end().ok());
  }
  EXPECT_EQ(state->with([](const auto& s) { return s.parts[0].committed; }), 25 * kStride);
  Running f(start({.ns = ns, .ring_bytes = 1 << 16}, state));
  EXPECT_EQ(stat(*f, 0).committed, 25 * kStride);
  auto c = attach(ns, 0, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  EXPECT_EQ(consume(*c, 15), offsets(25, 40));
  EXPECT_TRUE(f.end().ok());
}

// A message a shared group rejects goes to the dead-letter log; it then counts as acked.
TEST(Fetcher, DeadLettersGoToTheLogAndCountAsAcked) {
  const auto ns = unique_ns("dead");
  char dir_template[] = "/tmp/ringfeed-fetcher-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = std::string(dir_template) + "/dead";
  auto state = std::make_shared<MemorySource::State>(1);
  Running f(start({.ns = ns, .ring_bytes = 1 << 16, .dead_letter_dir = dir, .commit_interval = 5ms},
                  state));
  auto c = attach(ns, 0, "s", Mode::shared);
  ASSERT_TRUE(c);
  state->append_n(0, 10);
  std::size_t got = 0;
  ASSERT_TRUE(wait_until([&] {
    for (const auto& m : c->pop(10, 5ms)) {
      ++got;
      EXPECT_EQ(m.offset() == 3 * kStride ? c->reject(m) : c->ack(m), ringfeed::AckStatus::ok);
    }
    return got == 10;
  }));
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).dead_letters == 1; }));
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).committed == 10 * kStride; }));
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/0.log").c_str(), &st), 0);
  EXPECT_GT(st.st_size, 0);
  EXPECT_EQ(stat(*f, 0).warning, "");
  EXPECT_TRUE(f.end().ok());
  std::filesystem::remove_all(dir_template);
}

// The dead-letter directory is checked at start, not made: a missing one is made when
// first needed, if its parent is there; a missing parent or a file is refused at once.
TEST(Fetcher, TheDeadLetterDirectoryIsCheckedAtStartAndMadeOnlyWhenNeeded) {
  char dir_template[] = "/tmp/ringfeed-fetcher-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string root = dir_template;
  auto state = std::make_shared<MemorySource::State>(1);
  const auto try_start = [&](const std::string& dir) {
    return Fetcher::start({.ns = unique_ns("dldir"), .ring_bytes = 1 << 16, .dead_letter_dir = dir},
                          std::make_unique<MemorySource>(state));
  };
  {
    auto f = try_start(root + "/later/");  // a trailing slash names the same directory
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_FALSE(std::filesystem::exists(root + "/later"));
  }
  auto missing = try_start(root + "/no-parent/dl");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, "dead-letter directory " + root +
                                         "/no-parent/dl: missing, and so is its parent directory " +
                                         root + "/no-parent");
  std::ofstream(root + "/file") << "x";
  auto file = try_start(root + "/file");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().message, "dead-letter directory " + root + "/file: not a directory");
  std::filesystem::remove_all(root);
}

// What the source says of a partition is the fetcher's warning (stats, stderr); ringfeed
// stat reads it from the segment, but not for a partition another host holds: that one
// is not held back, its ring is released.
TEST(Fetcher, ASourcesWordOnAPartitionIsInTheSegmentUnlessAnotherHostHoldsIt) {
  const auto ns = unique_ns("warn");
  auto state = std::make_shared<MemorySource::State>(1);
  Running f(start({.ns = ns, .ring_bytes = 1 << 16, .commit_interval = 5ms}, state));
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::fetcher_segment_name(ns),
                                          ringfeed::shm::Access::read_only);
  ASSERT_TRUE(seg.ok()) << seg.error().message;
  const auto* control = reinterpret_cast<const ringfeed::shm::FetcherControl*>(seg->base());
  const auto in_segment = [&] {
    return ringfeed::shm::fetcher_partitions(control)[0].warning.load().value_or("?");
  };
  const auto say = [&](bool assigned, std::string error) {
    {
      std::lock_guard lock(state->mutex);
      state->parts[0].assigned = assigned;
      state->parts[0].error = std::move(error);
    }
    f->wake();
  };
  say(true, "waiting for the upstream");
  EXPECT_TRUE(wait_until([&] { return in_segment() == "waiting for the upstream"; }));
  EXPECT_EQ(stat(*f, 0).warning, "waiting for the upstream");
  say(false, "not assigned to this host");
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).warning == "not assigned to this host"; }));
  EXPECT_EQ(in_segment(), "");
  say(true, "");
  EXPECT_TRUE(wait_until([&] { return stat(*f, 0).warning.empty(); }));
  EXPECT_EQ(in_segment(), "");
  EXPECT_TRUE(f.end().ok());
}

// The timeouts the fetcher asked its source for since poll number `from`.
std::vector<long> timeouts_since(const MemorySource::State& s, std::size_t from) {
  return s.with([&](const auto& st) {
    return std::vector<long>(
        st.timeouts.begin() + static_cast<std::ptrdiff_t>(std::min(from, st.timeouts.size())),
        st.timeouts.end());
  });
}
std::size_t polls(const MemorySource::State& s) {
  return s.with([](const auto& st) { return st.timeouts.size(); });
}
// Whether the last `n` polls since `from` all waited at most `ms` milliseconds.
bool last_waits_at_most(const MemorySource::State& s, std::size_t from, std::size_t n, long ms) {
  const auto t = timeouts_since(s, from);
  return t.size() >= n && std::all_of(t.end() - static_cast<std::ptrdiff_t>(n), t.end(),
                                      [&](long v) { return v <= ms; });
}
bool last_wait_at_least(const MemorySource::State& s, long ms) {
  return s.with([&](const auto& st) { return !st.timeouts.empty() && st.timeouts.back() >= ms; });
}

// With nothing to fetch and nobody consuming, the fetcher sleeps in its source's poll
// for as long as it may (a second); a consumer of a shared group brings the reaper's
// 10 ms liveness checks (not its 20 ms look for consumers), which end when it leaves
// after acking everything; a stop does not wait out a sleep. (Commits are an hour apart
// here, so that they do not shorten the sleeps.)
TEST(Fetcher, AnIdleFetcherSleepsUntilSomethingIsDue) {
  const auto ns = unique_ns("idle");
  auto state = std::make_shared<MemorySource::State>(1);
  Running f(start({.ns = ns, .ring_bytes = 1 << 16, .commit_interval = 1h}, state));
  ASSERT_TRUE(wait_until([&] { return last_wait_at_least(*state, 900); }))
      << "it never asked for a long sleep";

  auto c = attach(ns, 0, "s", Mode::shared);
  ASSERT_TRUE(c);
  state->append(0, "k", "v");  // records published: the reaper looks at the groups soon
  ASSERT_TRUE(wait_until([&] { return stat(*f, 0).messages == 1; }));
  const std::size_t published_at = polls(*state);
  ASSERT_TRUE(wait_until([&] { return last_waits_at_most(*state, published_at, 5, 10); }))
      << "timeouts since the record was published: "
      << ::testing::PrintToString(timeouts_since(*state, published_at));

  EXPECT_EQ(consume(*c, 1), offsets(0, 1));
  c.reset();
  ASSERT_TRUE(wait_until([&] { return last_wait_at_least(*state, 900); }))
      << "timeouts: " << ::testing::PrintToString(timeouts_since(*state, published_at));

  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(f.end().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms) << "stop waited for the sleep to end";
  EXPECT_EQ(state->with([](const auto& s) { return s.parts[0].committed; }), kStride);
}

// A consumer of a shared group takes messages under 30 s leases and is killed. Its
// leases come back within the reaper's liveness checks, not at their expiry, though the
// fetcher has nothing else to do.
TEST(Fetcher, ADeadConsumersLeasesComeBackWithoutWaitingForTheirExpiry) {
  const auto ns = unique_ns("deadlease");
  int go[2];
  int took[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(took), 0);
  // Forked before the fetcher's thread starts.
  const pid_t child = fork_child([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    char b = 0;
    if (::read(go[0], &b, 1) != 1) return 2;
    auto c = Consumer::attach({.ns = ns, .partition = 0, .group = "s", .mode = Mode::shared});
    if (!c) return 3;
    std::size_t n = 0;
    for (int i = 0; i < 100 && n < 10; ++i) n += (*c)->pop(10 - n, 100ms).size();
    if (n != 10) return 4;
    const char one = 1;
    if (::write(took[1], &one, 1) != 1) return 5;
    ::pause();  // holds the leases until killed
    return 6;
  });
  ASSERT_GT(child, 0);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        wait_child(pid, 0ms);
      }
    }
  } reaper{child};
  auto state = std::make_shared<MemorySource::State>(1);
  Running f(start({.ns = ns, .ring_bytes = 1 << 16}, state));
  auto keep = attach(ns, 0, "s", Mode::shared);
  ASSERT_TRUE(keep);
  state->append_n(0, 10);
  ASSERT_TRUE(wait_until([&] { return stat(*f, 0).messages == 10; }));
  const char one = 1;
  ASSERT_EQ(::write(go[1], &one, 1), 1);
  char byte = 0;
  ASSERT_EQ(::read(took[0], &byte, 1), 1) << "the child did not take the messages";

  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(wait_child(child), -1);
  reaper.pid = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::uint64_t> got;
  ASSERT_TRUE(wait_until(
      [&] {
        const auto& batch = keep->pop(10, 5ms);
        for (const auto& m : batch) {
          EXPECT_EQ(m.delivery_count(), 2u);
          got.push_back(m.offset());
        }
        if (!batch.empty()) {
          EXPECT_EQ(keep->ack(batch), ringfeed::AckStatus::ok);
        }
        return got.size() == 10;
      },
      20s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "came back by expiry, not the reaper";
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, offsets(0, 10));
  EXPECT_TRUE(f.end().ok());
  for (int fd : {go[0], go[1], took[0], took[1]}) ::close(fd);
}

// RingWriter::next_service_ns, which the fetcher sleeps by, with a clock the test
// controls: nothing due without leased groups or consumers; the 10 ms liveness checks
// while a shared group has a consumer; a lease deadline sooner than that; a look every
// 20 ms for consumers while messages wait in a group nobody consumes; nothing once all
// is acked and nobody is attached.
TEST(FetcherReaper, NextServiceFollowsConsumersLeasesAndDeadlines) {
  const auto ns = unique_ns("reaper");
  constexpr std::int64_t kMs = 1'000'000;
  std::atomic<std::int64_t> now{1'000 * kMs};
  auto w = ringfeed::Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
  ASSERT_TRUE(w.ok()) << w.error().message;
  ringfeed::Writer& writer = *w.value();
  constexpr std::int64_t kNone = ringfeed::Writer::kNoServiceDue;
  auto next = [&] {
    writer.service(now.load());
    return writer.next_service_ns(now.load());
  };
  EXPECT_EQ(next(), kNone);
  auto ex = Consumer::attach({.ns = ns, .group = "ex", .mode = Mode::exclusive});
  ASSERT_TRUE(ex.ok()) << ex.error().message;
  EXPECT_EQ(next(), kNone) << "an exclusive group gives the reaper nothing to do";

  auto shared = [&](std::chrono::milliseconds lease) {
    auto c = Consumer::attach({.ns = ns,
                               .group = "s",
                               .mode = Mode::shared,
                               .lease = lease,
                               .group_settings = {.lease_window = 1024, .lease_ms = 1000},
                               .clock = [&] { return now.load(); }});
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c.value()) : nullptr;
  };
  auto a = shared(1000ms);
  ASSERT_TRUE(a);
  EXPECT_EQ(next(), now.load() + 10 * kMs) << "the liveness checks of a consumer";

  for (int i = 0; i < 3; ++i) {
    const std::string v = "m" + std::to_string(i);
    ringfeed::OutMessage m{.value = v, .upstream_offset = static_cast<std::uint64_t>(i)};
    ASSERT_EQ(writer.publish({&m, 1}, 1s), 1u);
  }
  auto b = shared(3ms);
  ASSERT_TRUE(b);
  const auto& held = b->pop(1, 0ns);
  ASSERT_EQ(held.size(), 1u);
  now += 1 * kMs;
  EXPECT_EQ(next(), now.load() + 2 * kMs) << "the deadline of a lease, sooner than liveness";
  now += 2 * kMs;
  EXPECT_LE(next(), now.load() + 10 * kMs);  // expired: available again, liveness remains

  b.reset();
  a.reset();
  now += 20 * kMs;
  EXPECT_EQ(next(), now.load() + 20 * kMs) << "messages wait in a group nobody consumes";
  auto c = shared(1000ms);
  ASSERT_TRUE(c);
  std::size_t acked = 0;
  for (int i = 0; i < 10 && acked < 3; ++i) {
    const auto& batch = c->pop(3, 0ns);
    acked += batch.size();
    if (!batch.empty()) {
      EXPECT_EQ(c->ack(batch), ringfeed::AckStatus::ok);
    }
  }
  ASSERT_EQ(acked, 3u);
  c.reset();
  now += 20 * kMs;
  EXPECT_EQ(next(), kNone) << "everything acked, nobody attached";
}

// The first fetcher runs in a child process with a consumer group attached, and is
// killed with SIGKILL. A new fetcher takes the namespace over: the dead one's segments
// (fetcher, ring, group) are replaced by new ones that name the new process.
TEST(Fetcher, TakesOverTheNamespaceOfAKilledFetcher) {
  const auto ns = unique_ns("takeover");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = fork_child([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto state = std::make_shared<MemorySource::State>(1);
    state->append_n(0, 50);
    auto f =
        Fetcher::start({.ns = ns, .ring_bytes = 1 << 16}, std::make_unique<MemorySource>(state));
    if (!f) return 2;
    const char one = 1;
    if (::write(ready[1], &one, 1) != 1) return 3;
    std::atomic<bool> stop{false};
    (void)(*f)->run(stop);
    return 4;
  });
  // Whatever fails below, the child does not outlive the test.
  struct Reaper {
    pid_t pid;
    bool reaped = false;
    ~Reaper() {
      if (!reaped) wait_child(pid, 0ms);
    }
  } reaper{child};
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the first fetcher did not start";
  {
    auto c = attach(ns, 0, "g", Mode::exclusive);
    ASSERT_TRUE(c);
    EXPECT_EQ(consume(*c, 5), offsets(0, 5));
  }
  const std::string group = shm::group_segment_name(ns, 0, "g");
  ASSERT_EQ(creator_pid(group), ::getpid());  // created by the consumer above
  struct stat old_group {};
  ASSERT_EQ(::stat((std::string(shm::kShmDir) + group).c_str(), &old_group), 0);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(wait_child(child), -1);  // killed, as meant
  reaper.reaped = true;
  EXPECT_EQ(creator_pid(shm::fetcher_segment_name(ns)), child);
  EXPECT_EQ(creator_pid(shm::ring_segment_name(ns, 0)), child);

  auto state = std::make_shared<MemorySource::State>(1);
  auto f = Fetcher::start({.ns = ns, .ring_bytes = 1 << 16}, std::make_unique<MemorySource>(state));
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(creator_pid(shm::fetcher_segment_name(ns)), ::getpid());
  EXPECT_EQ(creator_pid(shm::ring_segment_name(ns, 0)), ::getpid());
  // The dead fetcher's group is gone; the new fetcher created it anew on its ring.
  struct stat new_group {};
  ASSERT_EQ(::stat((std::string(shm::kShmDir) + group).c_str(), &new_group), 0);
  EXPECT_NE(new_group.st_ino, old_group.st_ino) << "the dead fetcher's group was not removed";
  Running running(std::move(f.value()));
  auto c = attach(ns, 0, "g", Mode::exclusive);
  ASSERT_TRUE(c);
  state->append_n(0, 3);
  EXPECT_EQ(consume(*c, 3), offsets(0, 3));
  EXPECT_TRUE(running.end().ok());
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
  ::close(ready[0]);
  ::close(ready[1]);
}

// The fetcher of a namespace dies; four processes start fetchers on it at once. Exactly
// one takes it over; the others are refused, naming the winner's pid.
TEST(Fetcher, ConcurrentTakeoversLeaveOneWinner) {
  const auto ns = unique_ns("race");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t dead = fork_child([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto state = std::make_shared<MemorySource::State>(2);
    auto f =
        Fetcher::start({.ns = ns, .ring_bytes = 1 << 16}, std::make_unique<MemorySource>(state));
    if (!f) return 2;
    const char one = 1;
    if (::write(ready[1], &one, 1) != 1) return 3;
    ::pause();
    return 4;
  });
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the first fetcher did not start";
  ASSERT_EQ(::kill(dead, SIGKILL), 0);
  EXPECT_EQ(wait_child(dead), -1);

  struct Outcome {
    char kind;  // 'W' took over, 'R' refused, 'E' anything else
    pid_t pid;
    char message[200];
  };
  int go[2];
  int results[2];
  int release[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(results), 0);
  ASSERT_EQ(::pipe(release), 0);
  std::vector<pid_t> racers;
  for (int k = 0; k < 4; ++k) {
    racers.push_back(fork_child([&] {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(go[1]);
      ::close(release[1]);
      char b = 0;
      (void)::read(go[0], &b, 1);  // EOF once the parent closes: all start together
      auto state = std::make_shared<MemorySource::State>(2);
      auto f =
          Fetcher::start({.ns = ns, .ring_bytes = 1 << 16}, std::make_unique<MemorySource>(state));
      Outcome o{};
      o.pid = ::getpid();
      o.kind = f.ok() ? 'W' : f.error().code == EBUSY ? 'R' : 'E';
      if (!f.ok()) std::snprintf(o.message, sizeof o.message, "%s", f.error().message.c_str());
      if (::write(results[1], &o, sizeof o) != sizeof o) return 3;
      (void)::read(release[0], &b, 1);  // the winner serves until the parent is done
      return 0;
    }));
  }
  ::close(go[0]);
  ::close(go[1]);
  ::close(release[0]);
  std::vector<Outcome> outcomes(racers.size());
  for (Outcome& o : outcomes) ASSERT_EQ(::read(results[0], &o, sizeof o), sizeof o);
  const auto winner = std::find_if(outcomes.begin(), outcomes.end(),
                                   [](const Outcome& o) { return o.kind == 'W'; });
  ASSERT_NE(winner, outcomes.end());
  EXPECT_EQ(creator_pid(shm::fetcher_segment_name(ns)), winner->pid);
  EXPECT_EQ(creator_pid(shm::ring_segment_name(ns, 0)), winner->pid);
  EXPECT_EQ(creator_pid(shm::ring_segment_name(ns, 1)), winner->pid);
  for (const Outcome& o : outcomes) {
    if (&o == &*winner) continue;
    EXPECT_EQ(o.kind, 'R') << o.message;
    EXPECT_EQ(std::string(o.message),
              "namespace '" + ns + "' is served by fetcher pid " + std::to_string(winner->pid));
  }
  ::close(release[1]);
  for (const pid_t pid : racers) EXPECT_EQ(wait_child(pid), 0);
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
  for (int fd : {ready[0], ready[1], results[0], results[1]}) ::close(fd);
}

// ---- Through the local-log source, file:DIR ---------------------------------------

// A temporary directory for logs and checkpoints, removed at the end.
struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/ringfeed-fetcher-XXXXXX";
    path = ::mkdtemp(t) != nullptr ? t : "";
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string log(std::uint32_t p) const { return path + "/" + std::to_string(p) + ".log"; }
};

// Appends records one at a time to DIR/P.log, remembering where each landed.
struct Producer {
  std::vector<io::LogAppender> logs;
  std::vector<std::vector<std::uint64_t>> offsets;  // per partition, in order
  Producer(const TempDir& dir, std::uint32_t partitions) : offsets(partitions) {
    for (std::uint32_t p = 0; p < partitions; ++p) {
      auto a = io::LogAppender::open(dir.log(p));
      EXPECT_TRUE(a.ok()) << (a.ok() ? "" : a.error().message);
      if (a) logs.push_back(std::move(a.value()));
    }
  }
  void append(std::uint32_t p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const std::string value = "p" + std::to_string(p) + "-" + std::to_string(offsets[p].size());
      io::RecordView r;
      r.timestamp_ns = 1;
      r.key = "k";
      r.value = value;
      auto done = logs.at(p).append({&r, 1});
      ASSERT_TRUE(done.ok()) << done.error().message;
      offsets[p].push_back(done->offset);
    }
  }
  std::size_t total() const {
    std::size_t n = 0;
    for (const auto& o : offsets) n += o.size();
    return n;
  }
};

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

TEST(FetcherFileSource, BadSourceUriIsRefusedBeforeAnythingIsCreated) {
  const auto ns = unique_ns("baduri");
  auto f = Fetcher::start({.ns = ns, .source = "nosuch:thing"});
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("nosuch:thing"), std::string::npos) << f.error().message;
  auto g = Fetcher::start({.ns = "bad name", .source = "file:/nonexistent"});
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message.find("namespace name 'bad name'"), std::string::npos)
      << g.error().message;
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
}

// Records appended to DIR/0.log reach a consumer; what it acked is checkpointed, and a
// clean stop leaves the checkpoint at the end of the log.
TEST(FetcherFileSource, FetchesTheLogAndCheckpointsWhatWasAcked) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("file");
  Producer produce(dir, 1);
  produce.append(0, 100);
  auto f = Fetcher::start({.ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16});
  ASSERT_TRUE(f.ok()) << f.error().message;
  Running running(std::move(f.value()));
  auto c = attach(ns, 0, "g", Mode::shared);
  ASSERT_TRUE(c);
  EXPECT_EQ(consume(*c, 100), produce.offsets[0]);
  produce.append(0, 50);
  EXPECT_EQ(consume(*c, 50),
            std::vector<std::uint64_t>(produce.offsets[0].begin() + 100, produce.offsets[0].end()));
  const std::uint64_t end = file_size(dir.log(0));
  EXPECT_TRUE(wait_until([&] { return stat(*running, 0).committed == end; }))
      << "committed " << stat(*running, 0).committed << " of " << end;
  ASSERT_TRUE(running.end().ok());
  auto checkpoint = io::read_checkpoint(dir.path, 0);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  EXPECT_EQ(checkpoint.value(), end);
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
}

// A corrupt record in DIR/0.log stops partition 0 with the source's reason (file and
// offset) in the fetcher's status; what came before it is delivered, partition 1 goes on.
TEST(FetcherFileSource, CorruptLogStopsOnlyItsPartition) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("corrupt");
  Producer produce(dir, 2);
  produce.append(0, 5);
  produce.append(1, 5);
  const std::uint64_t bad_at = file_size(dir.log(0));
  {
    const std::string garbage(64, 'G');
    auto raw = io::LogAppender::open(dir.log(0));
    ASSERT_TRUE(raw.ok());
    ASSERT_TRUE(raw->append_encoded(std::as_bytes(std::span(garbage))).ok());
  }
  auto f = Fetcher::start({.ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16});
  ASSERT_TRUE(f.ok()) << f.error().message;
  Running running(std::move(f.value()));
  auto c0 = attach(ns, 0, "g", Mode::exclusive);
  auto c1 = attach(ns, 1, "g", Mode::exclusive);
  ASSERT_TRUE(c0 && c1);
  EXPECT_EQ(consume(*c0, 5), produce.offsets[0]);
  ASSERT_TRUE(wait_until([&] { return stat(*running, 0).stopped; }));
  const std::string error = stat(*running, 0).error;
  EXPECT_NE(error.find("partition 0 of file:" + dir.path), std::string::npos) << error;
  EXPECT_NE(error.find(dir.log(0)), std::string::npos) << error;
  EXPECT_NE(error.find(std::to_string(bad_at)), std::string::npos) << error;
  produce.append(1, 5);
  EXPECT_EQ(consume(*c1, 10), produce.offsets[1]);
  EXPECT_FALSE(stat(*running, 1).stopped);
  EXPECT_TRUE(wait_until([&] { return stat(*running, 0).committed == bad_at; }));
  EXPECT_TRUE(running.end().ok());
}

// A consumer that notes every offset it is given. It moves to a new fetcher by itself
// (ConsumerOptions::follow_fetcher); if it is told `closed` all the same, it attaches anew.
struct Collector {
  std::string ns;
  std::uint32_t partition;
  Mode mode;
  std::unique_ptr<Consumer> c;
  std::set<std::uint64_t> seen;
  std::size_t duplicates = 0;
  int attaches = 0;

  void step() {
    if (!c) {
      auto a = Consumer::attach({.ns = ns, .partition = partition, .group = "g", .mode = mode});
      if (!a) return;  // no ring yet: the next step tries again
      c = std::move(a.value());
      ++attaches;
    }
    const auto& batch = c->pop(64, 2ms);
    for (const auto& m : batch) {
      if (!seen.insert(m.offset()).second) ++duplicates;
    }
    if (!batch.empty()) (void)c->ack(batch);
    if (batch.status() == PopStatus::closed || batch.status() == PopStatus::fenced) {
      attaches += static_cast<int>(c->reattached());
      c.reset();
    }
  }
};

// The crash test. Two partitions, one read by an exclusive group, one by a shared group.
// While records are being appended, the fetcher (a child process) is killed with SIGKILL
// once about a third of them were consumed; more records are appended while no fetcher
// runs; a new fetcher takes the namespace over and resumes from the checkpoints. Checked:
// every record written to the log reached its group at least once (duplicates are
// allowed: what was in flight when the fetcher died), and after a clean stop the
// checkpoints stand at the ends of the logs and no segment is left.
TEST(FetcherFileSource, KilledFetcherRestartedLosesNothing) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("crash");
  constexpr std::size_t kPerPartition = 3000;
  Producer produce(dir, 2);
  produce.append(0, 200);
  produce.append(1, 200);
  const FetcherOptions options{
      .ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16, .commit_interval = 5ms};
  const pid_t first = spawn_fetcher(options);
  ASSERT_GT(first, 0);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0) wait_child(pid, 0ms);
    }
  } reaper{first};

  Collector groups[2] = {{.ns = ns, .partition = 0, .mode = Mode::exclusive},
                         {.ns = ns, .partition = 1, .mode = Mode::shared}};
  auto consumed = [&] { return groups[0].seen.size() + groups[1].seen.size(); };
  auto produce_some = [&](std::size_t up_to) {
    for (std::uint32_t p = 0; p < 2; ++p) {
      const std::size_t n =
          std::min<std::size_t>(20, up_to - std::min(up_to, produce.offsets[p].size()));
      produce.append(p, n);
    }
  };
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (consumed() < kPerPartition * 2 / 3 && std::chrono::steady_clock::now() < deadline) {
    produce_some(kPerPartition * 2 / 3);
    for (Collector& g : groups) g.step();
  }
  ASSERT_GE(consumed(), kPerPartition * 2 / 3);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  EXPECT_EQ(wait_child(first), -1);
  reaper.pid = 0;
  // The checkpoint a SIGKILL left behind is whole (old or new), never torn.
  for (std::uint32_t p = 0; p < 2; ++p) {
    auto checkpoint = io::read_checkpoint(dir.path, p);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
    EXPECT_LE(checkpoint.value(), file_size(dir.log(p)));
  }
  produce_some(kPerPartition * 5 / 6);  // written while no fetcher runs

  const pid_t second = spawn_fetcher(options);
  ASSERT_GT(second, 0);
  reaper.pid = second;
  deadline = std::chrono::steady_clock::now() + 60s;
  while (consumed() < produce.total() || produce.total() < 2 * kPerPartition) {
    if (std::chrono::steady_clock::now() >= deadline) break;
    produce_some(kPerPartition);
    for (Collector& g : groups) g.step();
  }
  for (std::uint32_t p = 0; p < 2; ++p) {
    const std::set<std::uint64_t> written(produce.offsets[p].begin(), produce.offsets[p].end());
    std::vector<std::uint64_t> lost;
    std::set_difference(written.begin(), written.end(), groups[p].seen.begin(),
                        groups[p].seen.end(), std::back_inserter(lost));
    EXPECT_EQ(written.size(), kPerPartition);
    EXPECT_EQ(lost.size(), 0u) << "partition " << p << ": " << lost.size()
                               << " records never delivered, the first at offset "
                               << (lost.empty() ? 0 : lost.front());
    const int instances =
        groups[p].attaches + (groups[p].c ? static_cast<int>(groups[p].c->reattached()) : 0);
    EXPECT_GE(instances, 2) << "partition " << p << " never saw the second fetcher";
    std::printf(
        "partition %u: %zu records, %zu delivered again after the kill, %d fetcher instances "
        "seen\n",
        p, written.size(), groups[p].duplicates, instances);
  }

  // Everything was acked: a clean stop leaves the checkpoints at the ends of the logs.
  ASSERT_EQ(::kill(second, SIGTERM), 0);
  EXPECT_EQ(wait_child(second), 0);
  reaper.pid = 0;
  for (std::uint32_t p = 0; p < 2; ++p) {
    auto checkpoint = io::read_checkpoint(dir.path, p);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
    EXPECT_EQ(checkpoint.value(), file_size(dir.log(p))) << "partition " << p;
  }
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
}

// A group with no consumer attached when the fetcher dies is still a group of the ring
// the next fetcher creates: what the other groups ack is neither committed nor reused
// before that group acked it too, so its consumer, coming back late, gets all of it.
// The fetcher ends (by `signal`) while group b has acked 40 of 100 records and none of
// its consumers is attached; a new fetcher starts. Group a comes back first and acks
// everything; b, once back, still gets every record it had not acked.
void restarted_fetcher_keeps_the_groups(int signal) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("keepgroups");
  Producer produce(dir, 1);
  produce.append(0, 100);
  const FetcherOptions options{
      .ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16, .commit_interval = 5ms};
  const pid_t first = spawn_fetcher(options);
  ASSERT_GT(first, 0);
  {
    auto a = attach(ns, 0, "a", Mode::exclusive);
    auto b = attach(ns, 0, "b", Mode::shared);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(consume(*a, 100), produce.offsets[0]);
    EXPECT_EQ(consume(*b, 40), std::vector<std::uint64_t>(produce.offsets[0].begin(),
                                                          produce.offsets[0].begin() + 40));
  }  // both leave; b has acked 40 of the 100
  ASSERT_EQ(::kill(first, signal), 0);
  wait_child(first);
  if (signal == SIGTERM) {
    EXPECT_EQ(segments_of(ns), std::vector<std::string>{}) << "a clean stop removes them all";
  }
  produce.append(0, 100);

  const pid_t second = spawn_fetcher(options);
  ASSERT_GT(second, 0);
  {
    // Group a comes back first and acks everything the new fetcher has.
    auto a = attach(ns, 0, "a", Mode::exclusive);
    ASSERT_TRUE(a);
    std::set<std::uint64_t> got;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (got.count(produce.offsets[0].back()) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      const auto& batch = a->pop(64, 10ms);
      for (const auto& m : batch) got.insert(m.offset());
      if (!batch.empty()) {
        EXPECT_EQ(a->ack(batch), ringfeed::AckStatus::ok);
      }
    }
    ASSERT_EQ(got.count(produce.offsets[0].back()), 1u);
  }
  // The new fetcher commits a's acks only if it forgot group b (give it the time to).
  const std::uint64_t end = file_size(dir.log(0));
  wait_until(
      [&] {
        auto c = io::read_checkpoint(dir.path, 0);
        return c.ok() && c.value() == end;
      },
      500ms);
  auto b = attach(ns, 0, "b", Mode::shared);
  ASSERT_TRUE(b);
  std::set<std::uint64_t> got;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (got.count(produce.offsets[0].back()) == 0 && std::chrono::steady_clock::now() < deadline) {
    const auto& batch = b->pop(64, 10ms);
    for (const auto& m : batch) got.insert(m.offset());
    if (!batch.empty()) {
      EXPECT_EQ(b->ack(batch), ringfeed::AckStatus::ok);
    }
  }
  std::vector<std::uint64_t> missed;
  for (std::size_t i = 40; i < 200; ++i) {
    if (got.count(produce.offsets[0][i]) == 0) missed.push_back(produce.offsets[0][i]);
  }
  EXPECT_EQ(missed.size(), 0u) << "group b never got " << missed.size()
                               << " records it had not acked, the first at offset "
                               << (missed.empty() ? 0 : missed.front());
  b.reset();
  ASSERT_EQ(::kill(second, SIGTERM), 0);
  EXPECT_EQ(wait_child(second), 0);
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
}

// A clean stop with no group keeps nothing: no directory made for an empty list, and an
// old list (here one that names no group) removed.
TEST(FetcherFileSource, AFetcherThatStopsWithoutGroupsLeavesNoGroupList) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("nolist");
  Producer produce(dir, 1);
  produce.append(0, 10);
  const FetcherOptions options{.ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16};
  const std::string state = dir.path + "/" + ns + ".dead-letters";
  for (const bool old_list : {false, true}) {
    if (old_list) {
      ASSERT_EQ(::mkdir(state.c_str(), 0700), 0);
      std::ofstream(state + "/groups") << "ringfeed-groups 1\n";
    }
    const pid_t fetcher = spawn_fetcher(options);
    ASSERT_GT(fetcher, 0);
    ASSERT_EQ(::kill(fetcher, SIGTERM), 0);
    EXPECT_EQ(wait_child(fetcher), 0);
    EXPECT_FALSE(std::filesystem::exists(state + "/groups"));
    EXPECT_EQ(std::filesystem::exists(state), old_list);
  }
}

// From the dead fetcher's segments.
TEST(FetcherFileSource, RestartedFetcherKeepsTheGroupsOfTheOneThatDied) {
  restarted_fetcher_keeps_the_groups(SIGKILL);
}

// From the group list the fetcher that stopped cleanly left (runtime/group_list.hpp).
TEST(FetcherFileSource, RestartedFetcherKeepsTheGroupsOfTheOneThatStopped) {
  restarted_fetcher_keeps_the_groups(SIGTERM);
}

// A broadcast group holds data only for its consumers. The consumer that was attached
// when the fetcher died is awaited on the new ring: while it has not followed, another
// group acking everything neither lets the ring reuse the space nor commits past it, and
// once it follows it resumes where the new ring starts, without a gap.
TEST(FetcherFileSource, RestartedFetcherHoldsTheRingForABroadcastConsumerThatFollowsLate) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("awaitbc");
  Producer produce(dir, 1);
  produce.append(0, 100);
  const FetcherOptions options{
      .ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16, .commit_interval = 5ms};
  const pid_t first = spawn_fetcher(options);
  ASSERT_GT(first, 0);
  auto c = attach(ns, 0, "c", Mode::broadcast);
  ASSERT_TRUE(c);
  {
    auto a = attach(ns, 0, "a", Mode::exclusive);
    ASSERT_TRUE(a);
    EXPECT_EQ(consume(*a, 100), produce.offsets[0]);
  }
  EXPECT_EQ(consume(*c, 40), std::vector<std::uint64_t>(produce.offsets[0].begin(),
                                                        produce.offsets[0].begin() + 40));
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  wait_child(first);
  produce.append(0, 100);

  const pid_t second = spawn_fetcher(options);
  ASSERT_GT(second, 0);
  {
    // Group a comes back first and acks everything the new fetcher has.
    auto a = attach(ns, 0, "a", Mode::exclusive);
    ASSERT_TRUE(a);
    std::set<std::uint64_t> got;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (got.count(produce.offsets[0].back()) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      const auto& batch = a->pop(64, 10ms);
      for (const auto& m : batch) got.insert(m.offset());
      if (!batch.empty()) {
        EXPECT_EQ(a->ack(batch), ringfeed::AckStatus::ok);
      }
    }
    ASSERT_EQ(got.count(produce.offsets[0].back()), 1u);
  }
  // Give the new fetcher the time to commit a's acks, which it may not.
  const std::uint64_t end = file_size(dir.log(0));
  EXPECT_FALSE(wait_until(
      [&] {
        auto cp = io::read_checkpoint(dir.path, 0);
        return cp.ok() && cp.value() == end;
      },
      500ms))
      << "committed past what the awaited broadcast consumer has";
  // c takes the rest of the old ring, then follows: every record from 40 on, in order
  // within each ring.
  std::vector<std::uint64_t> got;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((got.empty() || got.back() != produce.offsets[0].back()) &&
         std::chrono::steady_clock::now() < deadline) {
    const auto& batch = c->pop(64, 10ms);
    for (const auto& m : batch) got.push_back(m.offset());
    if (!batch.empty()) {
      EXPECT_EQ(c->ack(batch), ringfeed::AckStatus::ok);
    }
  }
  EXPECT_EQ(c->reattached(), 1u);
  std::set<std::uint64_t> seen(got.begin(), got.end());
  std::vector<std::uint64_t> missed;
  for (std::size_t i = 40; i < 200; ++i) {
    if (seen.count(produce.offsets[0][i]) == 0) missed.push_back(produce.offsets[0][i]);
  }
  EXPECT_EQ(missed.size(), 0u) << "the broadcast consumer never got " << missed.size()
                               << " records, the first at offset "
                               << (missed.empty() ? 0 : missed.front());
  // Once it acked the end, the fetcher commits it.
  EXPECT_TRUE(wait_until([&] {
    auto cp = io::read_checkpoint(dir.path, 0);
    return cp.ok() && cp.value() == end;
  }));
  c.reset();
  ASSERT_EQ(::kill(second, SIGTERM), 0);
  EXPECT_EQ(wait_child(second), 0);
  EXPECT_EQ(segments_of(ns), std::vector<std::string>{});
}

// An awaited broadcast consumer that dies before it follows holds nothing: what the other
// groups acked is committed.
TEST(FetcherFileSource, RestartedFetcherStopsAwaitingABroadcastConsumerThatDied) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const auto ns = unique_ns("awaitdead");
  Producer produce(dir, 1);
  produce.append(0, 100);
  const FetcherOptions options{
      .ns = ns, .source = "file:" + dir.path, .ring_bytes = 1 << 16, .commit_interval = 5ms};
  const pid_t first = spawn_fetcher(options);
  ASSERT_GT(first, 0);
  int attached[2];
  ASSERT_EQ(::pipe(attached), 0);
  const pid_t broadcast = fork_child([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto c = Consumer::attach({.ns = ns, .group = "c", .mode = Mode::broadcast});
    if (!c) return 2;
    const char one = 1;
    if (::write(attached[1], &one, 1) != 1) return 3;
    for (;;) ::pause();  // holds everything from the start, takes nothing
  });
  char byte = 0;
  ASSERT_EQ(::read(attached[0], &byte, 1), 1) << "the broadcast consumer did not attach";
  {
    auto a = attach(ns, 0, "a", Mode::exclusive);
    ASSERT_TRUE(a);
    EXPECT_EQ(consume(*a, 100), produce.offsets[0]);
  }
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  wait_child(first);
  produce.append(0, 100);
  const pid_t second = spawn_fetcher(options);
  ASSERT_GT(second, 0);
  ASSERT_EQ(::kill(broadcast, SIGKILL), 0);
  wait_child(broadcast);
  auto a = attach(ns, 0, "a", Mode::exclusive);
  ASSERT_TRUE(a);
  EXPECT_EQ(consume(*a, 200), produce.offsets[0]) << "the new fetcher starts at the checkpoint, 0";
  const std::uint64_t end = file_size(dir.log(0));
  EXPECT_TRUE(wait_until([&] {
    auto cp = io::read_checkpoint(dir.path, 0);
    return cp.ok() && cp.value() == end;
  })) << "a dead broadcast consumer still held the commit";
  a.reset();
  ASSERT_EQ(::kill(second, SIGTERM), 0);
  EXPECT_EQ(wait_child(second), 0);
}

}  // namespace
