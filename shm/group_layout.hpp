// Layout of a consumer group segment: ringfeed.<ns>.p<P>.g.<group>.
//
//   offset 0     SegmentHeader (kind = group, data_capacity = kGroupSlots)
//   offset 64    name and mode, written once by the creator
//   offset 128   holder, low_watermark, sleepers, fenced: one cache line each
//   offset 384   kGroupSlots broadcast slots, one cache line each
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

#include "shm/segment.hpp"

namespace ringfeed::shm {

inline constexpr std::uint32_t kGroupSlots = 16;
inline constexpr std::size_t kGroupNameBytes = 64;

// One broadcast consumer's private cursor.
struct GroupSlot {
  // Owner word (pack_owner), 0 when free. Consumers: CAS 0 -> self to claim, self -> 0 to
  // leave, dead owner -> 0 to reap (acq_rel). Writer: acquire load; CAS dead -> 0 to reap.
  std::atomic<std::uint64_t> owner;
  // First position this consumer has not acked. Owner: release store after acks
  // (pairs with the writer's acquire before it reuses space), seq_cst while joining.
  std::atomic<std::uint64_t> cursor;
  std::uint8_t pad[kCacheLine - 16];
};
static_assert(std::is_standard_layout_v<GroupSlot>);
static_assert(sizeof(GroupSlot) == kCacheLine);
static_assert(offsetof(GroupSlot, owner) == 0);
static_assert(offsetof(GroupSlot, cursor) == 8);

struct GroupControl {
  SegmentHeader header;  // [0, 64)

  // [64, 128): written once by the creator before publication; never trusted by the
  // writer beyond its first read.
  char name[kGroupNameBytes - 8];  // NUL-padded group name
  std::uint32_t mode;              // ringfeed::Mode
  std::uint32_t reserved;

  // [128, 192): exclusive mode: the holder's owner word, 0 when nobody holds the group.
  // Consumers: CAS 0 -> self, dead holder -> self (acq_rel); self -> 0 on detach.
  alignas(kCacheLine) std::atomic<std::uint64_t> holder;

  // [192, 256): exclusive mode: first position not yet acked by the group. Holder:
  // release store after acks, seq_cst while joining; writer: acquire / seq_cst loads.
  alignas(kCacheLine) std::atomic<std::uint64_t> low_watermark;

  // [256, 320): consumers of this group asleep in futex_wait on the ring's wake word.
  // Consumers: seq_cst fetch_add, then a seq_cst load of the ring's write_pos, then sleep;
  // fetch_sub after waking. Writer: seq_cst load after its seq_cst store of write_pos.
  alignas(kCacheLine) std::atomic<std::uint32_t> sleepers;

  // [320, 384): 1 once the writer found a value in this segment that cannot be right and
  // stopped honouring the group. Writer: release store; consumers: acquire load.
  alignas(kCacheLine) std::atomic<std::uint32_t> fenced;

  // [384, 384 + 16 * 64): broadcast mode, one slot per consumer.
  alignas(kCacheLine) GroupSlot slots[kGroupSlots];
};
static_assert(std::is_standard_layout_v<GroupControl>);
static_assert(alignof(GroupControl) == kCacheLine);
static_assert(offsetof(GroupControl, name) == 64);
static_assert(offsetof(GroupControl, mode) == 120);
static_assert(offsetof(GroupControl, holder) == 128);
static_assert(offsetof(GroupControl, low_watermark) == 192);
static_assert(offsetof(GroupControl, sleepers) == 256);
static_assert(offsetof(GroupControl, fenced) == 320);
static_assert(offsetof(GroupControl, slots) == 384);
static_assert(sizeof(GroupControl) == 384 + kGroupSlots * kCacheLine);

}  // namespace ringfeed::shm
