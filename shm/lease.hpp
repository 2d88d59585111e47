// A lease: the state of one delivered message of a group, in one 64-bit word, so every
// transition is one compare-and-swap and a stale hand (an ack after the lease expired
// and moved) fails the CAS instead of corrupting state.
//
//   bits 63..62  state: available (0), leased (1), acked (2), dead (3)
//   bit  61      lap parity: (sequence / window) & 1, tells this lap's entry from the last
//   bits 60..55  delivery count, 0..63
//   bits 54..49  owner: the consumer slot holding the lease
//   bits 48..32  generation: bumped by every hand-over (17 bits)
//   bits 31..0   deadline, milliseconds since the group's epoch, modulo 2^32: when the
//                lease expires (leased), or when the message may be taken again
//                (available after a nack with a delay); for a dead message, why (DeadReason)
//
// A dead message holds the group's low sequence until the writer has stored it in the
// dead-letter log; then it becomes acked.
#pragma once

#include <cstdint>

namespace ringfeed::shm {

enum class LeaseState : std::uint32_t { available = 0, leased = 1, acked = 2, dead = 3 };
enum class DeadReason : std::uint32_t { max_deliveries = 1, rejected = 2 };
const char* to_string(DeadReason reason);

inline constexpr std::uint32_t kMaxDeliveriesLimit = 63;
inline constexpr std::uint32_t kMaxConsumerSlots = 64;

struct Lease {
  LeaseState state = LeaseState::available;
  std::uint32_t parity = 0;
  std::uint32_t deliveries = 0;
  std::uint32_t owner = 0;
  std::uint32_t generation = 0;
  std::uint32_t deadline_ms = 0;

  static Lease unpack(std::uint64_t w) {
    Lease l;
    l.state = static_cast<LeaseState>(w >> 62);
    l.parity = static_cast<std::uint32_t>(w >> 61) & 1u;
    l.deliveries = static_cast<std::uint32_t>(w >> 55) & 63u;
    l.owner = static_cast<std::uint32_t>(w >> 49) & 63u;
    l.generation = static_cast<std::uint32_t>(w >> 32) & 0x1ffffu;
    l.deadline_ms = static_cast<std::uint32_t>(w);
    return l;
  }
  std::uint64_t pack() const {
    return (static_cast<std::uint64_t>(state) << 62) |
           (static_cast<std::uint64_t>(parity & 1u) << 61) |
           (static_cast<std::uint64_t>(deliveries & 63u) << 55) |
           (static_cast<std::uint64_t>(owner & 63u) << 49) |
           (static_cast<std::uint64_t>(generation & 0x1ffffu) << 32) | deadline_ms;
  }
};

// Deadlines wrap every 49.7 days; comparisons are modular, valid for spans under 24 days.
inline bool deadline_passed(std::uint32_t deadline_ms, std::uint32_t now_ms) {
  return static_cast<std::int32_t>(now_ms - deadline_ms) >= 0;
}

}  // namespace ringfeed::shm
