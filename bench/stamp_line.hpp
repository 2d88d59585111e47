// The latency floor: a circle of 64-byte lines in a shared mapping, message i in line
// i % kStampLines. The writer stores a stamp and then the sequence number into the line;
// the reader spins on the sequence number of the line it expects next and takes its own
// stamp when it appears. A handoff is exactly one cache-line transfer, the least any
// shared-memory queue can cost. Several lines rather than one, so that a reader that
// is descheduled finds the messages queued (and records how late they are, as it does
// for ringfeed) instead of losing all but the newest.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "harness.hpp"

namespace ringfeed::bench {

struct alignas(kLine) StampLine {
  // 1 + the number of the message in this line. Writer: release store after `stamp`.
  // Reader: acquire load (pairs with that release), spinning.
  std::atomic<std::uint64_t> seq;
  // CLOCK_MONOTONIC when the message was sent. Writer: relaxed, before `seq`.
  // Reader: relaxed, after its acquire of `seq`.
  std::atomic<std::int64_t> stamp;
};
static_assert(sizeof(StampLine) == kLine, "one message moves exactly one line");
static_assert(std::is_standard_layout_v<StampLine>);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);

// 12 ms of messages at 3 us: a longer stall of the reader laps the writer (counted).
inline constexpr std::uint64_t kStampLines = 4096;

}  // namespace ringfeed::bench
