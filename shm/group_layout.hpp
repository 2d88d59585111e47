// Layout of a consumer group segment: ringfeed.<ns>.p<P>.g.<group>.
//
//   offset 0     SegmentHeader (kind = group, data_capacity = lease window, entries)
//   offset 64    name and mode, written once by the creator
//   offset 128   settings, written once by the creator
//   offset 192   holder, low_watermark, sleepers, fenced, dispatch, low_seq,
//                redeliveries: one cache line each
//   offset 640   kGroupSlots consumer slots, one cache line each
//   then         the lease table: `window` 64-bit lease words (lease.hpp), indexed by
//                message sequence modulo the window (shared mode)
//
// The segment is created by the first consumer that attaches to the group and is mapped
// read-write by every consumer of that group and by the writer. A group's segment is the
// only shared memory its consumers can write, so a consumer that writes garbage can
// damage its own group only. The writer reads the watermarks and sleepers count, checks
// every value against its own positions, and fences the group (stops honouring it) when
// a value cannot be right.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shm/lease.hpp"
#include "shm/segment.hpp"

namespace ringfeed::shm {

inline constexpr std::uint32_t kGroupSlots = kMaxConsumerSlots;
inline constexpr std::uint32_t kMaxLeaseWindow = 1u << 24;
inline constexpr std::size_t kGroupNameBytes = 64;

// One consumer of the group: its liveness, and in broadcast mode its private cursor. In
// shared mode the slot's index is the owner number in the leases it holds.
// The slots are the group's consumer registry: pid and start time (owner), a heartbeat,
// and what `ringfeed stat` shows per consumer.
struct GroupSlot {
  // Owner word (pack_owner), 0 when free. Consumers: CAS 0 -> self to claim, self -> 0 to
  // leave, dead owner -> 0 to reap (acq_rel). Writer: acquire load; CAS dead -> 0 to reap.
  // Awaited (broadcast, a writer that took the ring over kept the slot for a consumer of
  // the dead writer's ring): owner | kOwnerAwaited, cursor where the new ring starts,
  // heartbeat_ns when it was kept. That consumer claims it with one CAS to its plain
  // word; the writer frees it (CAS to 0) once the owner is dead or kAwaitedSlotGraceNs
  // passed. Either CAS fails once the other happened.
  std::atomic<std::uint64_t> owner;
  // First position this consumer has not acked (broadcast), or its attach time
  // (failover). Owner: release store after acks (pairs with the writer's acquire before
  // it reuses space), seq_cst while joining.
  std::atomic<std::uint64_t> cursor;
  // CLOCK_MONOTONIC nanoseconds of the owner's last pop. Owner: relaxed store; readers
  // (stat) relaxed: a report, never a decision.
  std::atomic<std::int64_t> heartbeat_ns;
  // Messages the owner holds unacked, and flags (kSlotAtUnackedLimit: its last pop found
  // max_unacked reached). Owner: relaxed stores; stat: relaxed loads, clamped.
  std::atomic<std::uint32_t> unacked;
  std::atomic<std::uint32_t> flags;
  std::uint8_t pad[kCacheLine - 32];
};
static_assert(std::is_standard_layout_v<GroupSlot>);
static_assert(sizeof(GroupSlot) == kCacheLine);
static_assert(offsetof(GroupSlot, owner) == 0);
static_assert(offsetof(GroupSlot, cursor) == 8);
static_assert(offsetof(GroupSlot, heartbeat_ns) == 16);
static_assert(offsetof(GroupSlot, unacked) == 24);
static_assert(offsetof(GroupSlot, flags) == 28);
inline constexpr std::uint32_t kSlotAtUnackedLimit = 1u << 0;
// The owner asked for auto-extend: while its heartbeat is fresh (a thread of its own
// beats every kHeartbeatMs, whatever its handler does), its expired leases are extended,
// not taken away. A consumer that stops beating for kHeartbeatStaleMs loses them.
inline constexpr std::uint32_t kSlotAutoExtend = 1u << 1;
inline constexpr std::uint32_t kHeartbeatMs = 100;
// How long an awaited broadcast slot holds the ring for a consumer that does not follow.
inline constexpr std::int64_t kAwaitedSlotGraceNs = 10'000'000'000;
inline constexpr std::uint32_t kHeartbeatStaleMs = 1000;
inline constexpr std::size_t kMaxBackoffSteps = 8;

struct GroupControl {
  SegmentHeader header;  // [0, 64)

  // [64, 128): written once by the creator before publication; never trusted by the
  // writer beyond its first read.
  char name[kGroupNameBytes - 8];  // NUL-padded group name
  std::uint32_t mode;              // ringfeed::Mode
  std::uint32_t reserved;

  // [128, 192): settings, written once by the creator before publication. Every reader
  // clamps them to the limits below before use.
  alignas(kCacheLine) std::uint32_t max_deliveries;  // 1..kMaxDeliveriesLimit
  std::uint32_t lease_ms;                            // default lease length
  std::int64_t epoch_ns;  // CLOCK_MONOTONIC origin of lease deadlines (lease.hpp)
  // Redelivery backoff: the message delivered k times waits backoff_ms[min(k, n) - 1]
  // after a nack or an expiry, n = the leading non-zero entries (none: no backoff).
  std::uint32_t backoff_ms[kMaxBackoffSteps];

  // [192, 256): exclusive mode: the holder's owner word, 0 when nobody holds the group.
  // Consumers: CAS 0 -> self, dead holder -> self (acq_rel); self -> 0 on detach.
  alignas(kCacheLine) std::atomic<std::uint64_t> holder;

  // [256, 320): first position not yet acked by the group (exclusive and shared mode).
  // Consumers: release store after acks (shared: a CAS that only raises it), seq_cst
  // while joining; writer: acquire / seq_cst loads.
  alignas(kCacheLine) std::atomic<std::uint64_t> low_watermark;

  // [320, 384): consumers of this group asleep in futex_wait on wake_word (or in a
  // futex_wait_any on it and other rings' words: runtime ConsumerSet).
  // sleepers: consumers: seq_cst fetch_add, then a seq_cst load of the ring's write_pos
  // (or, in shared mode, published), then sleep; fetch_sub after waking. Writer: seq_cst
  // load after its seq_cst stores of write_pos and published.
  // wake_word: the futex word they sleep on, one per group so that the writer wakes only
  // the groups that have something new, and in a shared group only as many sleepers as it
  // published messages. Sleepers: acquire load before announcing themselves, then
  // futex-wait on the value they loaded. Writer: fetch_add (release), then FUTEX_WAKE.
  // Any value is harmless: a wrong one costs a spurious wake or a sleep slice.
  alignas(kCacheLine) std::atomic<std::uint32_t> sleepers;
  std::atomic<std::uint32_t> wake_word;

  // [384, 448): 1 once the writer found a value in this segment that cannot be right and
  // stopped honouring the group. Writer: release store; consumers: acquire load.
  alignas(kCacheLine) std::atomic<std::uint32_t> fenced;

  // [448, 512): shared mode: sequence of the next message never handed out. Consumers:
  // CAS to take a batch of new messages (acq_rel), after they load `published`. Before
  // the group started: kNotStarted, or kStarting + the starter's slot (lease_table.hpp).
  alignas(kCacheLine) std::atomic<std::uint64_t> dispatch;

  // [512, 576): shared mode: every message below this sequence is acked or dead.
  // Consumers: CAS forward (acq_rel) over acked leases, then raise low_watermark.
  alignas(kCacheLine) std::atomic<std::uint64_t> low_seq;

  // [576, 640): shared mode: leases made available again (nack, expiry, release) and not
  // yet taken: a hint that tells pop to look for redeliveries. Wrong values cost scans.
  alignas(kCacheLine) std::atomic<std::uint32_t> redeliveries;

  // [640, 640 + 64 * 64): one slot per consumer.
  alignas(kCacheLine) GroupSlot slots[kGroupSlots];
};
static_assert(std::is_standard_layout_v<GroupControl>);
static_assert(alignof(GroupControl) == kCacheLine);
static_assert(offsetof(GroupControl, name) == 64);
static_assert(offsetof(GroupControl, mode) == 120);
static_assert(offsetof(GroupControl, max_deliveries) == 128);
static_assert(offsetof(GroupControl, lease_ms) == 132);
static_assert(offsetof(GroupControl, epoch_ns) == 136);
static_assert(offsetof(GroupControl, backoff_ms) == 144);
static_assert(offsetof(GroupControl, holder) == 192);
static_assert(offsetof(GroupControl, low_watermark) == 256);
static_assert(offsetof(GroupControl, sleepers) == 320);
static_assert(offsetof(GroupControl, wake_word) == 324);
static_assert(offsetof(GroupControl, fenced) == 384);
static_assert(offsetof(GroupControl, dispatch) == 448);
static_assert(offsetof(GroupControl, low_seq) == 512);
static_assert(offsetof(GroupControl, redeliveries) == 576);
static_assert(offsetof(GroupControl, slots) == 640);
static_assert(sizeof(GroupControl) == 640 + kGroupSlots * kCacheLine);

constexpr std::uint64_t group_segment_size(std::uint32_t window) {
  return sizeof(GroupControl) + std::uint64_t{window} * sizeof(std::uint64_t);
}
inline std::atomic<std::uint64_t>* lease_table(GroupControl* g) {
  return reinterpret_cast<std::atomic<std::uint64_t>*>(g + 1);
}

}  // namespace ringfeed::shm
