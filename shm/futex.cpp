#include "shm/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>
#include <limits>

namespace ringfeed::shm {

static_assert(kMaxFutexWaiters == FUTEX_WAITV_MAX);

WaitResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return WaitResult::timed_out;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // Not FUTEX_PRIVATE_FLAG: waiters and wakers live in different processes.
  long rc = ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAIT,
                      expected, &ts, nullptr, 0);
  if (rc == 0) return WaitResult::woken;
  switch (errno) {
    case EAGAIN:
      return WaitResult::value_changed;
    case ETIMEDOUT:
      return WaitResult::timed_out;
    default:
      return WaitResult::interrupted;
  }
}

WaitResult futex_wait_any(std::span<const FutexWaiter> waiters, std::chrono::nanoseconds timeout) {
  if (waiters.empty() || waiters.size() > kMaxFutexWaiters) return WaitResult::value_changed;
  if (timeout.count() <= 0) return WaitResult::timed_out;
  // Not FUTEX_PRIVATE_FLAG: the words are in shared memory, woken by other processes.
  struct futex_waitv list[kMaxFutexWaiters] = {};
  for (std::size_t i = 0; i < waiters.size(); ++i) {
    list[i].val = waiters[i].expected;
    list[i].uaddr = reinterpret_cast<std::uintptr_t>(waiters[i].word);
    list[i].flags = FUTEX_32;
  }
  // futex_waitv takes an absolute deadline on the clock it is given.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const std::int64_t max_ns = std::numeric_limits<std::int64_t>::max() / 2;
  const std::int64_t until = static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec +
                             std::min<std::int64_t>(timeout.count(), max_ns);
  timespec deadline{};
  deadline.tv_sec = static_cast<time_t>(until / 1'000'000'000);
  deadline.tv_nsec = static_cast<long>(until % 1'000'000'000);
  const long rc = ::syscall(SYS_futex_waitv, list, static_cast<unsigned>(waiters.size()), 0u,
                            &deadline, CLOCK_MONOTONIC);
  if (rc >= 0) return WaitResult::woken;
  switch (errno) {
    case EAGAIN:
      return WaitResult::value_changed;
    case ETIMEDOUT:
      return WaitResult::timed_out;
    case ENOSYS:
      return futex_wait(*waiters[0].word, waiters[0].expected,
                        std::min<std::chrono::nanoseconds>(timeout, std::chrono::milliseconds(1)));
    default:
      return WaitResult::interrupted;
  }
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) {
  if (count <= 0) return 0;
  long rc = ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAKE, count,
                      nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

int futex_wake_all(const std::atomic<std::uint32_t>& word) {
  return futex_wake(word, INT_MAX);
}

}  // namespace ringfeed::shm
