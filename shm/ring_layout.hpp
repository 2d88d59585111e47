// Layout of a partition ring segment: ringfeed.<ns>.p<P>.ring.
//
//   offset 0     SegmentHeader (kind = ring, data_capacity = bytes of the record area)
//   offset 64    RingControl hot words, one cache line each, then group defaults
//   offset 320   record area: data_capacity bytes, a power of two, used as a circle
//   then         message index: data_capacity / kRecordAlign 64-bit positions
//
// Only the writer (the fetcher) maps this segment read-write; consumers map it
// read-only, so no consumer can corrupt a record or the writer's positions.
//
// Positions are byte offsets that only grow (64-bit, they never wrap); the record area
// index of position p is p & (capacity - 1). Every record starts at a multiple of
// kRecordAlign and is contiguous in the area: one that would cross the end is preceded
// by a padding record that fills the rest of the lap.
//
// Record = RecordHeader, key bytes, value bytes, zero padding up to kRecordAlign. A
// record with headers (kind kTagMessageWithHeaders) has after its value a 32-bit
// headers_len (native order, unaligned) and that many bytes of headers in Kafka's record
// encoding (runtime/include/ringfeed/headers.hpp); records without keep the short form,
// so that readers of header-less streams do not pay for them.
//
// Publication protocol (the handoff costs one cache-line transfer: the reader polls the
// tag of the record it wants next, which shares its line with the record's fields):
//   writer: fills header fields and payload; stores 0 into the tag of the record that
//           will follow (so the next slot never shows stale bytes); then stores the tag
//           = position | kind with memory_order_release.
//   reader: loads the tag at its cursor with memory_order_acquire; a tag equal to
//           position | kind means every field and payload byte before it is visible.
//           0 means not yet written; anything else means the area was overrun or is
//           corrupt.
// Message index: messages are numbered 0, 1, 2, ... in publication order (the sequence).
// index[s % N] holds the position of message s, and index[published % N] the position
// where the next message will go, for the last N - 1 messages (N = one slot per
// kRecordAlign bytes of record area, so every message still in the ring is covered).
// Shared groups take messages by sequence and find them through it. Writer: relaxed
// stores before its store of `published`; readers: load after an acquire of `published`.
//
// Space: the writer reuses space only below `tail`, the minimum low watermark of all
// groups (see ring_writer.hpp for the reclaim protocol with joining consumers).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shm/segment.hpp"

namespace ringfeed::shm {

inline constexpr std::uint64_t kRecordAlign = 32;
inline constexpr std::uint64_t kTagMessage = 1;
inline constexpr std::uint64_t kTagPadding = 2;
inline constexpr std::uint64_t kTagMessageWithHeaders = 3;
inline constexpr std::uint64_t kTagKindMask = kRecordAlign - 1;

inline constexpr std::uint32_t kRingOpen = 1;
inline constexpr std::uint32_t kRingClosed = 2;
// Open, but the upstream gives the partition to another host now (a Kafka rebalance):
// nothing new comes until it is open again.
inline constexpr std::uint32_t kRingReleased = 3;

inline constexpr std::uint64_t kMinRingCapacity = 4096;
inline constexpr std::uint64_t kMaxRingCapacity = 1ull << 40;

struct RecordHeader {
  // position | kind. Writer: relaxed store of 0 ahead of time, release store when
  // published. Readers: acquire load, pairs with that release.
  std::atomic<std::uint64_t> tag;
  std::uint32_t key_len;          // bytes of key after the header
  std::uint32_t value_len;        // bytes of value after the key
  std::uint64_t upstream_offset;  // the record's offset in its upstream partition
  std::int64_t timestamp_ns;      // CLOCK_REALTIME or the upstream's time, nanoseconds
};
static_assert(std::is_standard_layout_v<RecordHeader>);
static_assert(sizeof(RecordHeader) == kRecordAlign, "a header is one alignment unit");
static_assert(offsetof(RecordHeader, tag) == 0);
static_assert(offsetof(RecordHeader, key_len) == 8);
static_assert(offsetof(RecordHeader, value_len) == 12);
static_assert(offsetof(RecordHeader, upstream_offset) == 16);
static_assert(offsetof(RecordHeader, timestamp_ns) == 24);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert((kRecordAlign & (kRecordAlign - 1)) == 0);

constexpr std::uint64_t align_record(std::uint64_t n) {
  return (n + kRecordAlign - 1) & ~(kRecordAlign - 1);
}
// Bytes that follow the value of a record with headers: their length, then the headers.
constexpr std::uint64_t headers_size(std::uint64_t headers_len) {
  return headers_len == 0 ? 0 : sizeof(std::uint32_t) + headers_len;
}
constexpr std::uint64_t record_size(std::uint64_t key_len, std::uint64_t value_len,
                                    std::uint64_t headers_len = 0) {
  return align_record(sizeof(RecordHeader) + key_len + value_len + headers_size(headers_len));
}
// The largest record a ring of `capacity` bytes accepts: a quarter of it, so padding
// at the end of a lap never wastes more than that.
constexpr std::uint64_t max_record_size(std::uint64_t capacity) {
  return capacity / 4;
}

struct RingControl {
  SegmentHeader header;  // [0, 64): written once by the creator

  // [64, 128): end of the published records (position after the last commit).
  // Writer: seq_cst store after each commit, then it loads every group's sleepers count.
  // Consumers about to sleep: seq_cst load after incrementing sleepers (a Dekker pair);
  // otherwise acquire loads for bounds and stat. Consumers find records by their tags.
  alignas(kCacheLine) std::atomic<std::uint64_t> write_pos;
  // Messages published (the next message's sequence). Writer: seq_cst store after the
  // message index entries and write_pos, before it loads the sleepers counts (so shared
  // groups, which wait on it, form the same Dekker pair). Readers: acquire / seq_cst.
  std::atomic<std::uint64_t> published;

  // [128, 192): no group holds data below tail; the writer reuses space below it.
  // Writer: seq_cst store before reusing space. Joining consumers: seq_cst load after
  // their own seq_cst store of a watermark (a Dekker pair; see ring_writer.hpp).
  alignas(kCacheLine) std::atomic<std::uint64_t> tail;
  // Space below this position has been (or may now be) reused: it only grows, and no
  // group's data at or above it is touched. Writer: release store after each reclaim.
  // Consumers resuming an existing group's watermark: acquire load (raise to it).
  std::atomic<std::uint64_t> reusable;

  // [192, 256): futex word for failover standbys, which nap on it between their looks at
  // the consumers before them, and for everyone when the ring closes. Writer: fetch_add
  // (release) then FUTEX_WAKE of all, at close. Nappers: load (acquire), then futex-wait
  // on the value they loaded. (Other sleepers wait on their group's wake word.)
  alignas(kCacheLine) std::atomic<std::uint32_t> wake_word;
  // kRingOpen; kRingReleased while the upstream gives the partition to another host (it
  // may come back: open again); kRingClosed once the writer shut down, for good. Writer:
  // release store, then a wake of every sleeper; readers: acquire.
  std::atomic<std::uint32_t> state;

  // [256, 320): defaults for groups created on this ring (the fetcher's --lease-ms,
  // --max-deliveries), written once by the writer before publication. Consumers read
  // them when they create a group and clamp them like any shared value.
  alignas(kCacheLine) std::uint32_t default_lease_window;
  std::uint32_t default_max_deliveries;
  std::uint32_t default_lease_ms;
};
static_assert(std::is_standard_layout_v<RingControl>);
static_assert(sizeof(RingControl) == 5 * kCacheLine);
static_assert(alignof(RingControl) == kCacheLine);
static_assert(offsetof(RingControl, write_pos) == 64);
static_assert(offsetof(RingControl, published) == 72);
static_assert(offsetof(RingControl, tail) == 128);
static_assert(offsetof(RingControl, reusable) == 136);
static_assert(offsetof(RingControl, wake_word) == 192);
static_assert(offsetof(RingControl, state) == 196);
static_assert(offsetof(RingControl, default_lease_window) == 256);
static_assert(offsetof(RingControl, default_max_deliveries) == 260);
static_assert(offsetof(RingControl, default_lease_ms) == 264);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

inline constexpr std::uint64_t kRingDataOffset = sizeof(RingControl);

// Index slots for a record area of `capacity` bytes, and the whole segment's size.
constexpr std::uint64_t ring_index_slots(std::uint64_t capacity) {
  return capacity / kRecordAlign;
}
constexpr std::uint64_t ring_segment_size(std::uint64_t capacity) {
  return kRingDataOffset + capacity + ring_index_slots(capacity) * sizeof(std::uint64_t);
}

}  // namespace ringfeed::shm
