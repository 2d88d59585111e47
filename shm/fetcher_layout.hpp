// Layout of a namespace's fetcher segment: ringfeed.<ns>.fetcher. The fetcher creates it
// first and removes it last; it says who serves the namespace (the segment header's
// creator pid and start time), from which source, and per partition how far fetching
// and committing got. `ringfeed stat` reads it; a second fetcher reads it to refuse a
// live namespace or take over a dead one.
//
//   offset 0     SegmentHeader (kind = fetcher, data_capacity = partitions)
//   offset 64    FetcherControl: the source URI and the dead-letter directory, written
//                once before publication; the source's warning
//   offset 2176  `partitions` FetcherPartition entries, 640 bytes each
//
// Only the fetcher writes; every other process maps it read-only. Counters are atomics
// the fetcher stores with release and readers load with acquire; the error text of a
// partition is written before its `stopped` flag (release) and read after it (acquire),
// and never changes once stopped is set. Warnings change while the fetcher runs: each is
// a SeqText (seq_text.hpp), read whole or not at all. Readers bound every string by its
// array.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shm/segment.hpp"
#include "shm/seq_text.hpp"

namespace ringfeed::shm {

inline constexpr std::size_t kSourceUriBytes = 512;
inline constexpr std::size_t kDeadLetterDirBytes = 1024;
inline constexpr std::size_t kPartitionErrorBytes = 256;
inline constexpr std::size_t kSourceWarningBytes = 512;
inline constexpr std::size_t kPartitionWarningBytes = 312;
inline constexpr std::uint32_t kMaxPartitions = 4096;

struct FetcherControl {
  SegmentHeader header;          // [0, 64)
  char source[kSourceUriBytes];  // [64, 576): NUL-padded URI (credentials removed)
  // [576, 1600): NUL-padded directory of the dead-letter logs, where exclusive and
  // broadcast consumers store their own dead letters too.
  char dead_letter_dir[kDeadLetterDirBytes];
  // [1600, 2120): a problem of the whole source that stops nothing (a Kafka topic that
  // gained partitions this fetcher has no ring for); empty: none.
  SeqText<kSourceWarningBytes> source_warning;
  std::uint8_t pad[56];  // [2120, 2176)
};
static_assert(std::is_standard_layout_v<FetcherControl>);
static_assert(sizeof(FetcherControl) == 2176);
static_assert(offsetof(FetcherControl, source) == 64);
static_assert(offsetof(FetcherControl, dead_letter_dir) == 576);
static_assert(offsetof(FetcherControl, source_warning) == 1600);

struct FetcherPartition {
  std::atomic<std::uint64_t> fetched;       // upstream position fetched up to (next_offset)
  std::atomic<std::uint64_t> committed;     // upstream position committed
  std::atomic<std::uint64_t> messages;      // messages published into the ring
  std::atomic<std::uint32_t> stopped;       // 1: an error stopped the partition; see `error`
  std::atomic<std::uint32_t> paused;        // 1: the ring is full, fetching waits for space
  std::atomic<std::uint64_t> ring_used;     // bytes of the ring holding data not yet released
  std::uint64_t ring_capacity;              // bytes of the ring's record area; written once
                                            // before publication
  std::atomic<std::uint64_t> dead_letters;  // dead letters stored in the dead-letter log
  std::uint8_t pad[8];
  char error[kPartitionErrorBytes];  // NUL-padded; what and where
  // What holds the partition back without stopping it (an upstream server down, a
  // commit or a dead-letter write that fails and is tried again); empty: none.
  SeqText<kPartitionWarningBytes> warning;
};
static_assert(std::is_standard_layout_v<FetcherPartition>);
static_assert(sizeof(FetcherPartition) == 640);
static_assert(offsetof(FetcherPartition, fetched) == 0);
static_assert(offsetof(FetcherPartition, committed) == 8);
static_assert(offsetof(FetcherPartition, messages) == 16);
static_assert(offsetof(FetcherPartition, stopped) == 24);
static_assert(offsetof(FetcherPartition, paused) == 28);
static_assert(offsetof(FetcherPartition, ring_used) == 32);
static_assert(offsetof(FetcherPartition, ring_capacity) == 40);
static_assert(offsetof(FetcherPartition, dead_letters) == 48);
static_assert(offsetof(FetcherPartition, error) == 64);
static_assert(offsetof(FetcherPartition, warning) == 320);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

constexpr std::uint64_t fetcher_segment_size(std::uint32_t partitions) {
  return sizeof(FetcherControl) + std::uint64_t{partitions} * sizeof(FetcherPartition);
}
inline FetcherPartition* fetcher_partitions(FetcherControl* c) {
  return reinterpret_cast<FetcherPartition*>(c + 1);
}
inline const FetcherPartition* fetcher_partitions(const FetcherControl* c) {
  return reinterpret_cast<const FetcherPartition*>(c + 1);
}

}  // namespace ringfeed::shm
