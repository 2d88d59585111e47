// shm::futex_wait_any: sleeping on several shared words at once (futex_waitv), woken by
// a wake of any of them from another process.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "shm/futex.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
namespace shm = ringfeed::shm;

namespace {

// Words in a shared anonymous mapping, as the rings' words are shared between processes.
struct SharedWords {
  std::atomic<std::uint32_t> words[3];
  std::atomic<int> result;  // the child's WaitResult, -1 until it returns
};

SharedWords* map_words() {
  void* p = ::mmap(nullptr, sizeof(SharedWords), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
  if (p == MAP_FAILED) return nullptr;
  auto* w = new (p) SharedWords{};
  w->result.store(-1);
  return w;
}

// The scheduler state of a process ('S': asleep), from /proc/PID/stat.
char process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? '?' : stat[paren + 2];
}

TEST(FutexWaitAny, TimesOutWhileNoWordChanges) {
  SharedWords* w = map_words();
  ASSERT_NE(w, nullptr);
  const shm::FutexWaiter list[] = {{&w->words[0], 0}, {&w->words[1], 0}};
  EXPECT_EQ(shm::futex_wait_any(list, 20ms), shm::WaitResult::timed_out);
  EXPECT_EQ(shm::futex_wait_any(list, 0ns), shm::WaitResult::timed_out);
  ::munmap(w, sizeof(SharedWords));
}

TEST(FutexWaitAny, ReturnsAtOnceWhenAnyWordIsNotWhatTheCallerSaw) {
  SharedWords* w = map_words();
  ASSERT_NE(w, nullptr);
  w->words[1].store(7);
  const shm::FutexWaiter list[] = {{&w->words[0], 0}, {&w->words[1], 6}};
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(shm::futex_wait_any(list, 30s), shm::WaitResult::value_changed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  // Nothing to wait on, or more words than the kernel takes: at once.
  EXPECT_EQ(shm::futex_wait_any({}, 30s), shm::WaitResult::value_changed);
  std::vector<shm::FutexWaiter> too_many(shm::kMaxFutexWaiters + 1, {&w->words[0], 0});
  EXPECT_EQ(shm::futex_wait_any(too_many, 30s), shm::WaitResult::value_changed);
  ::munmap(w, sizeof(SharedWords));
}

TEST(FutexWaitAny, AWakeOfAnyWordFromAnotherProcessEndsTheSleep) {
  SharedWords* w = map_words();
  ASSERT_NE(w, nullptr);
  const pid_t child = ringfeed::test::fork_child([&] {
    const shm::FutexWaiter list[] = {{&w->words[0], 0}, {&w->words[1], 0}, {&w->words[2], 0}};
    w->result.store(static_cast<int>(shm::futex_wait_any(list, 30s)));
    return 0;
  });
  ASSERT_GT(child, 0);
  // Once the child sleeps (in the futex wait: it does nothing else), wake the middle word.
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return process_state(child) == 'S'; }, 10s));
  w->words[1].store(1, std::memory_order_release);
  shm::futex_wake_all(w->words[1]);
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return w->result.load() != -1; }, 20s))
      << "the wake did not end the sleep";
  EXPECT_EQ(w->result.load(), static_cast<int>(shm::WaitResult::woken));
  EXPECT_EQ(ringfeed::test::wait_child(child, 10s), 0);
  ::munmap(w, sizeof(SharedWords));
}

}  // namespace
