// The lease table of a shared group: one lease word (lease.hpp) per message between the
// group's low sequence (everything below is acked or dead) and its dispatch sequence
// (nothing at or above was handed out yet), indexed by sequence modulo the window.
//
// Every operation is lock-free: taking a batch of new messages is one CAS on `dispatch`;
// each change of a lease is one CAS on its word, which carries a generation, so an ack,
// nack or extend from a consumer that lost the lease fails instead of being applied.
// Values read from shared memory are bounds-checked; garbage makes operations fail or
// find nothing, never index outside the table.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "shm/group.hpp"
#include "shm/group_layout.hpp"
#include "shm/lease.hpp"

namespace ringfeed::shm {

enum class LeaseResult {
  ok,
  lease_lost,  // the lease expired or moved to another consumer: nothing was changed
};

struct TakenLease {
  std::uint64_t seq;
  Lease lease;  // as taken: generation and delivery count
};

enum class TakeOne {
  taken,    // `out` holds the lease
  dead,     // it had reached max_deliveries: marked dead for the dead-letter log instead
  changed,  // the entry is no longer what the caller saw (someone else moved it)
};

class LeaseTable {
 public:
  LeaseTable() = default;
  // `window` is the one this process validated (group.hpp), not re-read from the segment.
  LeaseTable(GroupControl* group, std::uint32_t window);

  // Before the group starts at `first`: marks the entries of [first, first + window) as
  // settled in the previous lap, so take_new can tell them from entries it must leave.
  void prepare(std::uint64_t first);

  // Takes up to `max` messages never handed out, below `published` and within the window
  // above low_seq, with one CAS. Returns how many were written to `out`.
  std::uint32_t take_new(std::uint64_t published, std::uint32_t max, std::uint32_t owner,
                         std::uint32_t lease_deadline_ms, TakenLease* out);

  // Takes up to `max` messages that are due again (nacked and their delay passed,
  // released, or leased with an expired deadline), oldest first, looking at no more than
  // `scan_limit` sequences. One that would reach `max_deliveries` with this delivery is
  // handed out alone; one that already reached it is marked dead and its sequence added
  // to `dead` instead. `waiting` (optional): how many were seen whose delay has not passed.
  std::uint32_t take_due(std::uint32_t now_ms, std::uint32_t max, std::uint32_t owner,
                         std::uint32_t lease_deadline_ms, std::uint32_t max_deliveries,
                         std::uint32_t scan_limit, TakenLease* out,
                         std::vector<std::uint64_t>& dead, std::uint32_t* waiting = nullptr);

  // key_shared groups, whose consumers choose messages by key rather than in order: takes
  // the entry of `seq` as the caller saw it (`seen`, an acquire load of word(seq)) for
  // `owner`, whether it was never handed out (an entry of the previous lap) or is due
  // again. One CAS; the caller has checked that it may take it.
  TakeOne take_one(std::uint64_t seq, std::uint64_t seen, std::uint32_t owner,
                   std::uint32_t lease_deadline_ms, std::uint32_t max_deliveries, TakenLease& out);
  // key_shared: raises `dispatch` to `end` (never lowers it), so that every sequence
  // below it is looked at by the reaper, the dead-letter pass and advance_low.
  void raise_dispatch(std::uint64_t end);
  std::uint64_t word(std::uint64_t seq) { return entry(seq).load(std::memory_order_acquire); }
  // Whether a lease word belongs to this lap of `seq` (else: never handed out yet).
  bool current_lap(std::uint64_t seq, const Lease& l) const { return l.parity == parity(seq); }

  LeaseResult ack(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation);
  // Available again after `not_before_ms`; dead (added to `dead`) if its deliveries
  // reached max_deliveries.
  LeaseResult nack(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                   std::uint32_t not_before_ms, std::uint32_t max_deliveries, bool& dead);
  // Available again at once, and this delivery does not count.
  LeaseResult release(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                      std::uint32_t now_ms);
  LeaseResult reject(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation);
  LeaseResult extend(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                     std::uint32_t new_deadline_ms);

  // Dead messages from low_seq on (at most `max`), for the dead-letter log; and the step
  // after storing one: dead -> acked (false if the entry changed meanwhile).
  std::uint32_t find_dead(std::uint32_t max, std::vector<TakenLease>& out);
  bool settle_dead(const TakenLease& dead);

  // Moves low_seq forward over acked leases (a dead one waits until the dead-letter log
  // has it); returns the new low sequence.
  std::uint64_t advance_low();

  // The reaper: leases whose deadline passed or whose owner is in `dead_owners` (bit i =
  // slot i) become available (or dead, past max_deliveries); expired leases of a live
  // owner that auto-extends (keeps_leases) get a new deadline instead. Returns how many
  // changed.
  //
  // A consumer that dies between moving `dispatch` and writing the leases of what it
  // took leaves entries of the previous lap behind. Such entries are remembered in
  // `abandoned` (sequence and word); one found unchanged by the next pass (the caller
  // waits a few milliseconds between passes, far longer than a live consumer needs to
  // write them) is made available, its delivery not counted. If its consumer was only
  // slow after all, its own CAS fails and it does not deliver the message: nothing is
  // lost or delivered twice either way.
  //
  // `dead_words` (optional): the owner word each slot of `dead_owners` had when it was
  // found dead. A lease counts as a dead owner's only while its slot still holds that
  // word (checked after the lease was read): a slot reclaimed meanwhile by a live
  // consumer keeps that consumer's leases.
  std::uint32_t reap(std::uint32_t now_ms, std::uint64_t dead_owners, std::uint32_t max_deliveries,
                     std::vector<std::uint64_t>& dead,
                     std::vector<std::pair<std::uint64_t, std::uint64_t>>* abandoned = nullptr,
                     const std::uint64_t* dead_words = nullptr);

  // Failover: entries of [low_seq, dispatch) still of the previous lap, made available
  // at once (their delivery not counted) without waiting for the reaper's second pass.
  // Only for a consumer that just became the one that takes: the active consumer before
  // it is gone, so such an entry is one it died before writing, and handing it out
  // before anything newer keeps the partition's order. (Were that consumer only slow
  // after all, its own CAS fails and it does not deliver the message.) Returns how many.
  std::uint32_t reclaim_unwritten(std::uint32_t now_ms);

  // Milliseconds since the group's epoch (lease deadlines are kept in that unit).
  // Unsigned arithmetic: the epoch comes from shared memory and may be anything; every
  // process computes the same value from the same epoch, without overflow.
  static std::uint32_t to_lease_ms(std::int64_t clock_ns, std::int64_t epoch_ns) {
    return static_cast<std::uint32_t>(
        (static_cast<std::uint64_t>(clock_ns) - static_cast<std::uint64_t>(epoch_ns)) / 1'000'000);
  }

  std::uint64_t low_seq() const { return group_->low_seq.load(std::memory_order_acquire); }
  std::uint64_t dispatch() const { return group_->dispatch.load(std::memory_order_acquire); }
  std::uint32_t window() const { return mask_ + 1; }
  const Backoff& backoff() const { return backoff_; }
  // A leased entry whose deadline passed is due again once its backoff ran out too,
  // unless its owner auto-extends and still beats.
  bool expired_and_due(const Lease& l, std::uint32_t now_ms) const {
    return deadline_passed(l.deadline_ms + backoff_.after(l.deliveries), now_ms) &&
           !keeps_leases(l.owner, now_ms);
  }
  // Whether the consumer in slot `owner` asked for auto-extend and its heartbeat is fresh.
  bool keeps_leases(std::uint32_t owner, std::uint32_t now_ms) const;

 private:
  std::atomic<std::uint64_t>& entry(std::uint64_t seq) { return entries_[seq & mask_]; }
  // An entry is `seq`'s only while the group's low sequence has not passed `seq`: after
  // that it may belong to seq + window, or seq + 2 * window with the same lap parity. A
  // scan that was descheduled checks this after each load (acquire: ordered after it).
  bool passed(std::uint64_t seq) const {
    return seq < group_->low_seq.load(std::memory_order_acquire);
  }
  std::uint32_t parity(std::uint64_t seq) const {
    return static_cast<std::uint32_t>(seq >> shift_) & 1u;
  }
  // CAS from the lease the caller holds to `next` (built by `change` from the current).
  template <typename Change>
  LeaseResult transition(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                         Change change);

  GroupControl* group_ = nullptr;
  Backoff backoff_;
  std::int64_t epoch_ns_ = 0;
  std::uint32_t lease_ms_ = 0;  // how far auto-extend moves an expired deadline
  std::atomic<std::uint64_t>* entries_ = nullptr;
  std::uint32_t mask_ = 0;
  std::uint32_t shift_ = 0;
};

// Raises the group's low watermark (a ring position) to `position`, never lowering it:
// several consumers advance low_seq and may store their positions out of order.
void raise_low_watermark(GroupControl* group, std::uint64_t position);

// Values of `dispatch` (and `low_seq`) in a shared group that has not yet found where it
// starts in the ring (kNotStarted), and while the consumer of registry slot s is finding
// it (`dispatch` = kStarting + s): a consumer that dies there is seen dead through its
// slot, and another starts the group. Every value from kStarting up means "not started".
inline constexpr std::uint64_t kNotStarted = ~0ull;
inline constexpr std::uint64_t kStarting = kNotStarted - 1 - kMaxConsumerSlots;
inline constexpr bool group_started(std::uint64_t dispatch) {
  return dispatch < kStarting;
}

}  // namespace ringfeed::shm
