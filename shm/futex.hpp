// Cross-process wait and wake on a 32-bit word in shared memory (Linux futex, shared
// variant: the key is the page, so it works across processes and on read-only maps).
// The one futex mechanism of the project.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

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

// Wakes at most `count` of the processes sleeping on `word`. Returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count);

// Wakes every process sleeping on `word`. Returns how many were woken.
int futex_wake_all(const std::atomic<std::uint32_t>& word);

}  // namespace ringfeed::shm
