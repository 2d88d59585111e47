// Cross-process wait and wake on a 32-bit word in shared memory (Linux futex, shared
// variant: the key is the page, so it works across processes and on read-only maps).
// The one futex mechanism of the project.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace ringfeed::shm {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "futex words must be plain 32-bit words");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

enum class WaitResult { woken, value_changed, timed_out, interrupted };

// Sleeps while *word == expected, for at most `timeout`. The kernel checks the value
// atomically with queueing the waiter, so a wake between the caller's check and the
// sleep is never lost.
WaitResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      std::chrono::nanoseconds timeout);

// One word of a futex_wait_any: sleep while it holds `expected`.
struct FutexWaiter {
  const std::atomic<std::uint32_t>* word = nullptr;
  std::uint32_t expected = 0;
};
// The most words one futex_wait_any takes (the kernel's FUTEX_WAITV_MAX).
inline constexpr std::size_t kMaxFutexWaiters = 128;

// Sleeps while every word holds its expected value, for at most `timeout`: a wake of any
// of them, or any of them changed before the sleep, ends it (futex_waitv, Linux 5.16).
// A kernel without futex_waitv: it sleeps on the first word only, for at most 1 ms, so
// the caller looks at the others every millisecond instead. An empty or too long list
// (more than kMaxFutexWaiters) returns value_changed at once.
WaitResult futex_wait_any(std::span<const FutexWaiter> waiters, std::chrono::nanoseconds timeout);

// Wakes at most `count` of the processes sleeping on `word`. Returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count);

// Wakes every process sleeping on `word`. Returns how many were woken.
int futex_wake_all(const std::atomic<std::uint32_t>& word);

}  // namespace ringfeed::shm
