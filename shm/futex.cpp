#include "shm/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace ringfeed::shm {

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
