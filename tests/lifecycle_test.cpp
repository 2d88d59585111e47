// Attach, detach, death and wake-up across processes: the exclusive refusal naming the
// holder, resuming after the holder leaves or is killed, broadcast slots of dead
// consumers, futex sleep and wake, and a writer that goes away.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
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

std::unique_ptr<Writer> make_writer(const std::string& ns, std::uint64_t capacity = 1 << 20) {
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = capacity});
  EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message);
  return w.ok() ? std::move(w.value()) : nullptr;
}

void publish_n(Writer& w, std::uint64_t from, std::uint64_t n) {
  for (std::uint64_t i = from; i < from + n; ++i) {
    const std::string v = "m" + std::to_string(i);
    ringfeed::OutMessage m{.value = v, .upstream_offset = i};
    ASSERT_EQ(w.publish({&m, 1}, 5s), 1u);
  }
}

// Maps a group's segment in the test process to watch its shared fields.
struct GroupWatch {
  ringfeed::shm::Segment seg;
  const ringfeed::shm::GroupControl* g = nullptr;
  GroupWatch(const std::string& ns, const std::string& group) {
    auto s = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns, 0, group),
                                          ringfeed::shm::Access::read_only);
    if (s) {
      seg = std::move(s.value());
      g = reinterpret_cast<const ringfeed::shm::GroupControl*>(seg.base());
    }
  }
};

// A process-shared flag block for parent/child hand-offs.
struct Shared {
  std::atomic<int> stage{0};
  std::atomic<std::uint64_t> value{0};
};
Shared* make_shared_block() {
  void* p =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Shared{};
}

TEST(Exclusive, SecondAttachIsRefusedNamingTheHolderPid) {
  const auto ns = unique_ns("refuse");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  Shared* sh = make_shared_block();
  pid_t holder = fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
    if (!c) return 2;
    sh->stage = 1;
    // Hold until told to leave; then detach cleanly.
    return wait_until([&] { return sh->stage.load() == 2; }, 60s) ? 0 : 3;
  });
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 1; }));
  auto second = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("held in exclusive mode by pid " + std::to_string(holder)),
            std::string::npos)
      << second.error().message;
  // Another group is independent.
  EXPECT_TRUE(Consumer::attach({.ns = ns, .group = "other", .mode = Mode::exclusive}).ok());
  // And the same group in another mode is refused with both modes named.
  auto wrong = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::broadcast});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message.find("exists in exclusive mode"), std::string::npos);
  sh->stage = 2;
  EXPECT_EQ(wait_child(holder), 0);
  // The holder left: the next attach succeeds.
  EXPECT_TRUE(Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive}).ok());
}

TEST(Exclusive, AttachAfterTheHolderIsKilledResumesFromTheLowWatermark) {
  const auto ns = unique_ns("resume");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  Shared* sh = make_shared_block();
  constexpr std::uint64_t kTotal = 100, kAcked = 37, kPopped = 60;
  pid_t holder = fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
    if (!c) return 2;
    sh->stage = 1;
    std::uint64_t got = 0;
    std::vector<ringfeed::Message> held;
    while (got < kPopped) {
      const auto& b = (*c)->pop(kPopped - got, 5s);
      if (b.status() != PopStatus::ok) return 3;
      for (const auto& m : b) {
        if (m.offset() != got++) return 4;
        if (m.offset() < kAcked) (*c)->ack(m);
      }
    }
    sh->stage = 2;
    for (;;) ::pause();  // hold the rest until killed
  });
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 1; }));
  publish_n(*w, 0, kTotal);
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 2; }));
  ::kill(holder, SIGKILL);
  // Wait until it has died, but do not reap it yet: a zombie holds nothing.
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(holder), &info, WEXITED | WNOWAIT), 0);
  auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(c.ok()) << c.error().message;
  wait_child(holder);
  std::uint64_t expect = kAcked;  // everything not acked comes again, in order
  while (expect < kTotal) {
    const auto& b = (*c)->pop(64, 1s);
    ASSERT_EQ(b.status(), PopStatus::ok) << "at " << expect;
    for (const auto& m : b) {
      ASSERT_EQ(m.offset(), expect);
      ASSERT_EQ(m.value(), "m" + std::to_string(expect));
      ++expect;
    }
    (*c)->ack(b);
  }
  EXPECT_EQ((*c)->try_pop(1).status(), PopStatus::timed_out);
}

TEST(Broadcast, LateJoinerStartsWithTheSlowestPeerAndDeadSlotsAreReaped) {
  const auto ns = unique_ns("bslots");
  auto w = make_writer(ns, 4096);
  ASSERT_TRUE(w);
  auto a = Consumer::attach({.ns = ns, .group = "b", .mode = Mode::broadcast});
  ASSERT_TRUE(a.ok()) << a.error().message;
  publish_n(*w, 0, 10);
  auto b = Consumer::attach({.ns = ns, .group = "b", .mode = Mode::broadcast});
  ASSERT_TRUE(b.ok());
  const auto& from_b = (*b)->pop(100, 0ns);
  EXPECT_EQ(from_b.size(), 10u);  // a has acked nothing: b starts where a is
  (*b)->ack(from_b);
  const auto& from_a = (*a)->pop(100, 0ns);
  EXPECT_EQ(from_a.size(), 10u);
  (*a)->ack(from_a);

  // A broadcast consumer killed while holding data: the writer reaps its slot when it
  // needs the space, so the live consumers are not held up by the dead one.
  Shared* sh = make_shared_block();
  pid_t dead = fork_child([&] {
    auto c = Consumer::attach({.ns = ns, .group = "b", .mode = Mode::broadcast});
    if (!c) return 2;
    sh->stage = 1;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 1; }));
  ::kill(dead, SIGKILL);
  wait_child(dead);
  std::uint64_t published = 10;
  // Fill the small ring many times over; a and b keep up, the dead slot must not block.
  std::string v(100, 'x');
  for (int round = 0; round < 100; ++round) {
    ringfeed::OutMessage m{.value = v, .upstream_offset = published};
    ASSERT_EQ(w->publish({&m, 1}, 2s), 1u) << "writer blocked by a dead broadcast consumer";
    ++published;
    for (auto* c : {&*a, &*b}) {
      const auto& batch = (*c)->pop(1000, 0ns);
      (*c)->ack(batch);
    }
  }
}

TEST(Wakeup, SleepingConsumerIsWokenAndTheWriterWakesOnlyWhenSomeoneSleeps) {
  const auto ns = unique_ns("wake");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  publish_n(*w, 0, 3);
  EXPECT_EQ(w->wakes(), 0u);  // nobody sleeps: no futex call
  Shared* sh = make_shared_block();
  pid_t sleeper = fork_child([&] {
    auto c = Consumer::attach(
        {.ns = ns, .group = "s", .mode = Mode::exclusive, .spin = std::chrono::nanoseconds(0)});
    if (!c) return 2;
    // A new group starts with the oldest data the ring holds: the first 3.
    const auto& first = (*c)->pop(100, 0ns);
    if (first.size() != 3) return 3;
    (*c)->ack(first);
    sh->stage = 1;
    const auto& b = (*c)->pop(1, 20s);
    if (b.status() != PopStatus::ok || b[0].value() != "m3") return 4;
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 1; }));
  GroupWatch watch(ns, "s");
  ASSERT_NE(watch.g, nullptr);
  // Wait until the consumer has announced that it sleeps, and the writer knows its group.
  ASSERT_TRUE(wait_until([&] {
    w->poll_groups();
    return watch.g->sleepers.load() == 1 && w->group_count() == 1;
  }));
  publish_n(*w, 3, 1);
  EXPECT_EQ(w->wakes(), 1u);
  EXPECT_EQ(wait_child(sleeper), 0);
}

// True when the process sleeps in a system call (state S in /proc/PID/stat): a consumer
// that announced itself as a sleeper is then queued on its futex.
bool sleeping(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'S';
}

// Forks `n` consumers of group `group` that each pop one message (sleeping for it: no
// spin), check it, ack it and exit; waits until all of them sleep in the kernel and the
// writer tracks the group.
std::vector<pid_t> sleeping_consumers(Writer& w, const std::string& ns, const std::string& group,
                                      Mode mode, int n) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pids.push_back(fork_child([&] {
      auto c = Consumer::attach(
          {.ns = ns, .group = group, .mode = mode, .spin = std::chrono::nanoseconds(0)});
      if (!c) return 2;
      const auto& b = (*c)->pop(1, 20s);
      if (b.status() != PopStatus::ok || b.size() != 1 || b[0].value().substr(0, 1) != "m") {
        return 3;
      }
      (*c)->ack(b);
      return 0;
    }));
  }
  GroupWatch watch(ns, group);
  EXPECT_TRUE(wait_until([&] {
    if (watch.g == nullptr) watch = GroupWatch(ns, group);
    w.poll_groups();
    return watch.g != nullptr && watch.g->sleepers.load() == static_cast<std::uint32_t>(n) &&
           w.group_count() == 1 && std::ranges::all_of(pids, sleeping);
  }));
  return pids;
}

TEST(Wakeup, OneNewMessageWakesOneSleeperOfASharedGroup) {
  const auto ns = unique_ns("wake1");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  const auto pids = sleeping_consumers(*w, ns, "s", Mode::shared, 4);
  // Any of them can take it, and the other three would only go back to sleep.
  const std::uint64_t before = w->woken();
  publish_n(*w, 0, 1);
  EXPECT_EQ(w->woken() - before, 1u);
  // Each later message wakes one of those still asleep; every consumer gets one.
  publish_n(*w, 1, 3);
  for (pid_t pid : pids) EXPECT_EQ(wait_child(pid), 0);
}

TEST(Wakeup, OneNewMessageWakesEveryConsumerOfABroadcastGroup) {
  const auto ns = unique_ns("wakeall");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  const auto pids = sleeping_consumers(*w, ns, "b", Mode::broadcast, 3);
  const std::uint64_t before = w->woken();
  publish_n(*w, 0, 1);  // every consumer of a broadcast group gets every message
  EXPECT_EQ(w->woken() - before, 3u);
  for (pid_t pid : pids) EXPECT_EQ(wait_child(pid), 0);
}

TEST(Wakeup, ConsumerLearnsThatTheWriterClosed) {
  const auto ns = unique_ns("close");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(c.ok());
  publish_n(*w, 0, 2);
  w->close();
  // What was published is still delivered; then the consumer is told.
  EXPECT_EQ((*c)->pop(10, 1s).size(), 2u);
  EXPECT_EQ((*c)->pop(10, 1s).status(), PopStatus::closed);
}

TEST(Wakeup, ConsumerLearnsThatTheWriterWasKilled) {
  const auto ns = unique_ns("wdead");
  Shared* sh = make_shared_block();
  pid_t writer = fork_child([&] {
    auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
    if (!w) return 2;
    sh->stage = 1;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 1; }));
  auto c = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(c.ok()) << c.error().message;
  ::kill(writer, SIGKILL);
  wait_child(writer);
  EXPECT_EQ((*c)->pop(10, 5s).status(), PopStatus::closed);
  // A new writer takes the dead one's namespace over.
  auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
  EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message);
}

// A writer (fetcher) killed and replaced: its consumers move to the new instance by
// themselves; handles from the old one are refused; the new one's messages arrive.
class Follow : public ::testing::TestWithParam<Mode> {};

TEST_P(Follow, ConsumersMoveToTheWriterThatTookTheNamespaceOver) {
  const auto ns = unique_ns("follow");
  Shared* sh = make_shared_block();
  pid_t writer = fork_child([&] {
    auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 1 << 16});
    if (!w) return 2;
    sh->stage = 1;
    if (!wait_until([&] { return sh->stage.load() == 2; })) return 3;
    publish_n(**w, 0, 3);
    sh->stage = 3;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 1; }));
  auto c = Consumer::attach({.ns = ns, .group = "g", .mode = GetParam()});
  ASSERT_TRUE(c.ok()) << c.error().message;
  sh->stage = 2;
  ASSERT_TRUE(wait_until([&] { return sh->stage.load() == 3; }));
  std::vector<ringfeed::Message> old;
  for (const auto& m : (*c)->pop(10, 1s)) old.push_back(m);
  ASSERT_EQ(old.size(), 3u);
  ASSERT_EQ((*c)->ack(old[0]), ringfeed::AckStatus::ok);
  ::kill(writer, SIGKILL);
  wait_child(writer);
  EXPECT_EQ((*c)->pop(10, 2s).status(), PopStatus::closed) << "no successor yet";

  auto w = make_writer(ns, 1 << 16);  // takes over: the old ring and groups are removed
  ASSERT_TRUE(w);
  publish_n(*w, 100, 2);
  const auto& b = (*c)->pop(10, 2s);
  ASSERT_EQ(b.status(), PopStatus::ok);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].offset(), 100u);
  EXPECT_EQ((*c)->reattached(), 1u);
  EXPECT_EQ((*c)->ack(old[1]), ringfeed::AckStatus::lease_lost) << "a handle of the old instance";
  EXPECT_EQ((*c)->ack(b), ringfeed::AckStatus::ok);
}

INSTANTIATE_TEST_SUITE_P(EveryMode, Follow,
                         ::testing::Values(Mode::exclusive, Mode::shared, Mode::failover,
                                           Mode::key_shared, Mode::broadcast),
                         [](const auto& p) { return std::string(to_string(p.param)); });

}  // namespace

namespace {

TEST(Groups, RemovedGroupSegmentIsFencedAndANewOneUnderTheNameIsANewGroup) {
  const auto ns = unique_ns("regroup");
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  auto old = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(old.ok());
  publish_n(*w, 0, 5);
  ASSERT_TRUE(wait_until([&] {
    w->poll_groups();
    return w->group_count() == 1;
  }));
  ringfeed::shm::Segment::remove(ringfeed::shm::group_segment_name(ns, 0, "g"));
  ASSERT_TRUE(wait_until([&] {
    w->poll_groups();
    return w->group_count() == 0;
  }));
  // Its consumer is told that the writer no longer holds data for it.
  EXPECT_EQ((*old)->pop(10, 0ns).status(), PopStatus::fenced);
  // The name is free for a new group, which the writer honours.
  auto fresh = Consumer::attach({.ns = ns, .group = "g", .mode = Mode::broadcast});
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  ASSERT_TRUE(wait_until([&] {
    w->poll_groups();
    return w->group_count() == 1;
  }));
  publish_n(*w, 5, 1);
  const auto& b = (*fresh)->pop(10, 1s);
  ASSERT_EQ(b.status(), PopStatus::ok);
  EXPECT_EQ(b[b.size() - 1].offset(), 5u);
}

}  // namespace
