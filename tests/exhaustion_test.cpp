// Resource exhaustion: /dev/shm full, a ring full for a long time, thousands of consumers
// attaching and leaving. Clear errors, no leaks (segments, descriptors, group slots),
// nothing lost. (A record larger than its ring: Fetcher.RecordTooLargeForTheRingStops-
// ItsPartition in fetcher_test.cpp.)
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/log_appender.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

#ifndef RINGFEED_BIN
#error "RINGFEED_BIN must name the ringfeed binary (tests/CMakeLists.txt)"
#endif

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Fetcher;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
namespace io = ringfeed::io;
namespace shm = ringfeed::shm;
namespace test = ringfeed::test;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kCycles = 1000;
#else
constexpr int kCycles = 5000;
#endif

// Appends `n` records to DIR/P.log; returns the offset of each.
std::vector<std::uint64_t> append(const std::string& log, std::size_t n, std::size_t from = 0) {
  std::vector<std::uint64_t> offsets;
  auto a = io::LogAppender::open(log);
  EXPECT_TRUE(a.ok()) << (a.ok() ? "" : a.error().message);
  if (!a) return offsets;
  for (std::size_t i = from; i < from + n; ++i) {
    const std::string value = "m" + std::to_string(i) + std::string(80, '.');
    io::RecordView r{.timestamp_ns = 1, .key = "k", .value = value};
    auto done = a->append({&r, 1});
    EXPECT_TRUE(done.ok()) << (done.ok() ? "" : done.error().message);
    if (done) offsets.push_back(done->offset);
  }
  return offsets;
}

// A fetcher running on a thread of this process.
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
  Fetcher* operator->() { return f_.get(); }

 private:
  std::unique_ptr<Fetcher> f_;
  std::atomic<bool> stop_{false};
  ringfeed::Status result_{ringfeed::Ok{}};
  std::thread thread_;
};

std::unique_ptr<Running> start_fetcher(const ringfeed::FetcherOptions& o) {
  auto f = Fetcher::start(o);
  EXPECT_TRUE(f.ok()) << (f.ok() ? "" : f.error().message);
  if (!f) return nullptr;
  return std::make_unique<Running>(std::move(f.value()));
}

// Pops and acks until every offset in `want` arrived (or 30 s passed); returns the
// offsets in the order they came.
std::vector<std::uint64_t> take(Consumer& c, const std::vector<std::uint64_t>& want) {
  std::vector<std::uint64_t> got;
  const std::set<std::uint64_t> wanted(want.begin(), want.end());
  std::set<std::uint64_t> seen;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (seen.size() < wanted.size() && std::chrono::steady_clock::now() < deadline) {
    const auto& b = c.pop(64, 10ms);
    for (const auto& m : b) {
      got.push_back(m.offset());
      if (wanted.count(m.offset()) != 0) seen.insert(m.offset());
    }
    if (!b.empty()) {
      EXPECT_EQ(c.ack(b), AckStatus::ok);
    }
  }
  return got;
}

std::vector<std::string> segments(const std::string& ns) {
  return shm::Segment::list("ringfeed." + ns + ".");
}

int open_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// ---- /dev/shm full ------------------------------------------------------------------

// Checks in a child process, which says what failed on stderr and in its exit status.
struct ChildChecks {
  int failures = 0;
  void expect(bool ok, const std::string& what) {
    if (!ok) {
      ++failures;
      std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    }
  }
};

bool names(const std::string& message, const std::string& what) {
  return message.find(what) != std::string::npos;
}

// /dev/shm is a tmpfs of 1 MiB here: a tmpfs mounted over it in a mount namespace of a
// child process (root only). A ring or a group that does not fit is refused at once,
// with an error naming the segment and ENOSPC, and leaves nothing behind, not even a
// temporary name; a writer that started anyway would die of SIGBUS at its first write
// to a page tmpfs cannot give. Once space is back, the same records all arrive.
TEST(Exhaustion, ShmFullIsAClearErrorNamingTheSegmentAndLeavesNothingBehind) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs over /dev/shm needs root";
  test::TempDir dir{"ringfeed-shmfull"};
  const std::string ns = test::unique_ns("shmfull");
  const std::vector<std::uint64_t> offsets = append(dir.log(0), 200);
  const pid_t child = test::fork_child([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::unshare(CLONE_NEWNS) != 0) return 77;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
    if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777") != 0) {
      return 77;
    }
    ChildChecks check;
    const std::string enospc = std::strerror(ENOSPC);
    const std::string ring = shm::ring_segment_name(ns, 0);

    // A writer whose ring needs 4 MiB.
    auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 4u << 20});
    check.expect(!w.ok(), "a 4 MiB ring was created in a 1 MiB /dev/shm");
    if (!w) {
      check.expect(w.error().code == ENOSPC, "writer: code " + std::to_string(w.error().code));
      check.expect(names(w.error().message, ring) && names(w.error().message, enospc),
                   "writer: " + w.error().message);
    }
    check.expect(shm::Segment::list("ringfeed.").empty(), "the writer left segments behind");

    // The fetcher: the same for its rings; it creates nothing and commits nothing.
    const ringfeed::FetcherOptions big{.ns = ns, .source = dir.uri(), .ring_bytes = 4u << 20};
    auto f = Fetcher::start(big);
    check.expect(!f.ok(), "a fetcher with 4 MiB rings started in a 1 MiB /dev/shm");
    if (!f) {
      check.expect(names(f.error().message, ring) && names(f.error().message, enospc),
                   "fetcher: " + f.error().message);
    }
    check.expect(shm::Segment::list("ringfeed.").empty(), "the fetcher left segments behind");

    // A ring that fits, and a consumer whose shared group (512 KiB of leases) does not.
    auto running = start_fetcher({.ns = ns, .source = dir.uri(), .ring_bytes = 512u << 10});
    if (!running) return 2;
    const std::string group = shm::group_segment_name(ns, 0, "g");
    auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::shared});
    check.expect(!c.ok(), "a 512 KiB group was created beside a 512 KiB ring in 1 MiB");
    if (!c) {
      check.expect(c.error().code == ENOSPC, "consumer: code " + std::to_string(c.error().code));
      check.expect(names(c.error().message, group) && names(c.error().message, enospc),
                   "consumer: " + c.error().message);
    }
    for (const std::string& s : shm::Segment::list("ringfeed.")) {
      check.expect(s.find(".g.") == std::string::npos, "left behind: " + s);
    }
    // A group that fits gets every record: nothing was lost meanwhile.
    auto small = Consumer::attach(
        {.ns = ns, .group = "g", .mode = Mode::shared, .group_settings = {.lease_window = 1024}});
    check.expect(small.ok(), small.ok() ? "" : "small group: " + small.error().message);
    if (small) check.expect(take(**small, offsets).size() == offsets.size(), "records lost");
    small = ringfeed::Error{"", 0};
    check.expect(running->end().ok(), "the fetcher did not stop cleanly");
    check.expect(shm::Segment::list("ringfeed.").empty(), "segments left after the stop");
    return check.failures == 0 ? 0 : 1;
  });
  const int rc = test::wait_child(child, 60s);
  if (rc == 77) GTEST_SKIP() << "no mount namespace with a tmpfs over /dev/shm here";
  EXPECT_EQ(rc, 0) << "see FAILED lines above";
  auto checkpoint = io::read_checkpoint(dir.path(), 0);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  EXPECT_EQ(*checkpoint, std::filesystem::file_size(dir.log(0)));  // the end of the log
}

// ---- A ring full for a long time ------------------------------------------------------

// A consumer that never acks holds its ring full: the fetcher pauses that partition, for
// as long as it takes, and `ringfeed stat` says so; the other partition goes on. Nothing
// is dropped: once the consumer acks, every record of the paused partition arrives, in
// order, once, and both partitions are committed to the ends of their logs.
TEST(Exhaustion, RingFullForLongPausesItsPartitionOnlyAndLosesNothing) {
  test::TempDir dir{"ringfeed-full"};
  const std::string ns = test::unique_ns("full");
  constexpr std::size_t kN = 2000;  // about 200 KiB a partition, rings of 16 KiB
  std::vector<std::uint64_t> offsets[2] = {append(dir.log(0), kN), append(dir.log(1), kN / 2)};
  auto running =
      start_fetcher({.ns = ns, .source = dir.uri(), .partitions = 2, .ring_bytes = 16u << 10});
  ASSERT_TRUE(running);
  auto stuck = Consumer::attach({.ns = ns, .partition = 0, .group = "g", .mode = Mode::exclusive});
  auto other = Consumer::attach({.ns = ns, .partition = 1, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(stuck.ok() && other.ok());

  // The stuck one takes what fits and acks none of it.
  std::vector<ringfeed::Message> held;
  std::vector<std::uint64_t> got0;
  auto stats = [&](std::uint32_t p) { return (*running)->stats().at(p); };
  // Paused before a pop that finds nothing: the pop came after the last publish. (Paused
  // after it would miss a batch published between the two.)
  ASSERT_TRUE(test::wait_until([&] {
    const bool paused = stats(0).paused;
    const auto& b = (*stuck)->pop(64, 1ms);
    for (const auto& m : b) {
      held.push_back(m);
      got0.push_back(m.offset());
    }
    return paused && b.empty();
  }));
  // Meanwhile and afterwards partition 1 goes on, records appended later too.
  const auto more = append(dir.log(1), kN / 2, kN / 2);
  offsets[1].insert(offsets[1].end(), more.begin(), more.end());
  EXPECT_EQ(take(**other, offsets[1]), offsets[1]);
  // Two seconds on, partition 0 is still paused, as stat shows, and nothing was dropped:
  // the fetcher published nothing more and committed nothing. (Watched over time: the
  // point is that it lasts.)
  const auto hold_until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < hold_until) {
    const auto s = stats(0);
    ASSERT_TRUE(s.paused && !s.stopped && s.messages == held.size() && s.committed == 0);
    std::this_thread::sleep_for(50ms);
  }
  const std::string out = dir.file("stat.json");
  EXPECT_EQ(test::wait_child(
                test::spawn_program(RINGFEED_BIN, {"stat", "--namespace", ns, "--json"}, "", out)),
            0);
  std::ifstream in(out);
  const std::string json{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  EXPECT_NE(json.find("\"paused\":true"), std::string::npos) << json;
  const auto paused = stats(0);
  EXPECT_TRUE(paused.paused);
  EXPECT_FALSE(paused.stopped);
  EXPECT_EQ(paused.messages, held.size());
  EXPECT_LT(held.size(), kN);
  EXPECT_EQ(paused.committed, 0u);
  EXPECT_FALSE(stats(1).paused);

  // It acks: everything flows, in order, once.
  for (const auto& m : held) ASSERT_EQ((*stuck)->ack(m), AckStatus::ok);
  held.clear();
  const auto rest = take(
      **stuck, {offsets[0].begin() + static_cast<std::ptrdiff_t>(got0.size()), offsets[0].end()});
  got0.insert(got0.end(), rest.begin(), rest.end());
  EXPECT_EQ(got0, offsets[0]);
  EXPECT_TRUE(test::wait_until([&] {
    return stats(0).committed == std::filesystem::file_size(dir.log(0)) &&
           stats(1).committed == std::filesystem::file_size(dir.log(1));
  })) << "committed "
      << stats(0).committed << " and " << stats(1).committed
      << "; partition 0: " << stats(0).messages << " published, paused " << stats(0).paused
      << ", fetched " << stats(0).fetched << ", ring used " << stats(0).ring_used << ", warning '"
      << stats(0).warning << "', error '" << stats(0).error << "'";
  EXPECT_FALSE(stats(0).paused);
  stuck = ringfeed::Error{"", 0};
  other = ringfeed::Error{"", 0};
  EXPECT_TRUE(running->end().ok());
  EXPECT_EQ(segments(ns), std::vector<std::string>{});
}

// ---- Thousands of consumers -----------------------------------------------------------

struct Killed {
  std::atomic<int> popped;  // the child holds its messages and waits to be killed
};

// kCycles consumers attach, take and ack a message or two, and leave, across every mode,
// while the writer publishes; every 50th is a child process SIGKILLed while it holds
// leases. Afterwards: every message was acked by every leased and exclusive group (the
// killed ones' leases came back), every group slot is free, this process has the
// descriptors it had before, and the namespace has exactly the ring and its five group
// segments, then none once the writer is gone.
TEST(Exhaustion, ThousandsOfConsumersAttachAndLeaveLeakNothing) {
  const std::string ns = test::unique_ns("churn");
  const Mode modes[] = {Mode::exclusive, Mode::failover, Mode::shared, Mode::key_shared,
                        Mode::broadcast};
  const char* groups[] = {"ex", "fo", "sh", "ks", "bc"};
  const int fds_before = open_fds();
  {
    auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1u << 20});
    ASSERT_TRUE(w.ok()) << w.error().message;
    auto* killed = static_cast<Killed*>(
        ::mmap(nullptr, sizeof(Killed), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(killed, MAP_FAILED);
    std::uint64_t published = 0;
    std::vector<std::set<std::uint64_t>> acked(5);
    auto publish = [&](int n) {
      for (int k = 0; k < n; ++k) {
        const std::string v = std::to_string(published);
        const std::string key = "k" + std::to_string(published % 7);
        ringfeed::OutMessage m{.key = key, .value = v, .upstream_offset = published};
        ASSERT_EQ((*w)->publish({&m, 1}, 5s), 1u) << "message " << published;
        ++published;
      }
    };
    auto options = [&](int g) {
      return ringfeed::ConsumerOptions{
          .ns = ns, .group = groups[g], .mode = modes[g], .spin = std::chrono::microseconds(0)};
    };
    int kills = 0;
    for (int i = 0; i < kCycles; ++i) {
      const int g = i % 5;
      publish(2);
      (*w)->service();  // the reaper: dead consumers' slots and leases
      if (i % 50 == 49) {
        // A child attaches, takes what it can and is killed holding it.
        killed->popped = 0;
        const pid_t pid = test::fork_child([&] {
          auto c = Consumer::attach(options(g));
          if (!c) return 2;
          const auto& b = (*c)->pop(4, 1s);
          (void)b;
          killed->popped = 1;
          for (;;) std::this_thread::sleep_for(1s);
        });
        EXPECT_TRUE(test::wait_until([&] { return killed->popped.load() == 1; })) << "cycle " << i;
        ::kill(pid, SIGKILL);
        test::wait_child(pid);
        ++kills;
        continue;
      }
      auto c = Consumer::attach(options(g));
      ASSERT_TRUE(c.ok()) << "cycle " << i << ": " << c.error().message;
      const auto& b = (*c)->pop(3, 5ms);
      for (const auto& m : b) {
        ASSERT_EQ((*c)->ack(m), AckStatus::ok) << "cycle " << i;
        acked[g].insert(m.offset());
      }
    }
    // One last consumer per group (broadcast aside: its cursor leaves with its consumer)
    // takes what is left: every message, once the killed ones' leases came back.
    for (int g = 0; g < 4; ++g) {
      auto c = Consumer::attach(options(g));
      ASSERT_TRUE(c.ok()) << c.error().message;
      EXPECT_TRUE(test::wait_until([&] {
        (*w)->service();
        const auto& b = (*c)->pop(256, 1ms);
        for (const auto& m : b) {
          EXPECT_EQ((*c)->ack(m), AckStatus::ok);
          acked[g].insert(m.offset());
        }
        return acked[g].size() == published;
      })) << "group "
          << groups[g] << " acked " << acked[g].size() << " of " << published;
    }
    // Every slot free: the ones that left freed theirs, the reaper freed the killed ones'.
    ASSERT_TRUE(test::wait_until([&] {
      (*w)->service();
      for (const char* name : groups) {
        auto seg = shm::Segment::open(shm::group_segment_name(ns, 0, name), shm::Access::read_only);
        if (!seg) return false;
        const auto* gc = reinterpret_cast<const shm::GroupControl*>(seg->base());
        for (const auto& slot : gc->slots) {
          if (slot.owner.load() != 0) return false;
        }
        if (gc->holder.load() != 0) return false;
      }
      return true;
    })) << "group slots still taken";
    EXPECT_EQ(segments(ns).size(), 6u);
    std::printf("%d attach/detach cycles, %d consumers killed, %llu messages\n", kCycles, kills,
                static_cast<unsigned long long>(published));
    ::munmap(killed, sizeof(Killed));
  }
  EXPECT_EQ(segments(ns), std::vector<std::string>{});
  EXPECT_EQ(open_fds(), fds_before) << "descriptors leaked";
}

}  // namespace
