// key_shared mode of ringfeed::Consumer: messages with equal keys go to one consumer at a
// time, in order, also across nack and redelivery (key_shared.hpp says why ranges that
// move never put a key on two consumers).
//
// A pop scans the group's lease table from its low sequence, oldest first. For each
// message not yet acked it learns the key (from the ring, remembered per sequence) and:
//   - a key already blocked in this scan: skip (a later message never overtakes);
//   - a key whose hash another consumer owns: skip;
//   - held by this consumer and not expired: skip, the key stays open to it;
//   - held by another consumer, waiting for a redelivery delay, or dead (waiting for the
//     dead-letter log): block the key;
//   - never handed out, or due again: take it (one CAS), or block the key if that fails.
// The last allowed delivery of a message travels alone, as in shared mode.
#include <algorithm>
#include <bit>

#include "key_shared.hpp"
#include "ringfeed/consumer.hpp"

namespace ringfeed {

namespace {

// Most sequences one pop looks at, from where the last one left off (Scan::from).
constexpr std::uint64_t kKeyedScan = 8192;
constexpr std::uint64_t kNoOpen = ~0ull;

}  // namespace

// Which hash range is ours: from the live slots, every millisecond; every 10 ms the
// slots of dead consumers are freed (and their leases returned) so their range moves.
void Consumer::refresh_key_ranges() {
  key_shared::Scan& scan = *keyed_;
  const std::int64_t now = now_ns();
  if (now < scan.next_refresh_ns) return;
  scan.next_refresh_ns = now + 1'000'000;
  if (now >= scan.next_liveness_ns) {
    scan.next_liveness_ns = now + 10'000'000;
    reap_dead_slots(~0ull);
  }
  std::uint64_t live = 1ull << slot_;
  for (std::uint32_t i = 0; i < shm::kGroupSlots; ++i) {
    if (group_->slots[i].owner.load(std::memory_order_acquire) != 0) live |= 1ull << i;
  }
  const key_shared::Ranges ranges{
      .rank = static_cast<std::uint32_t>(std::popcount(live & ((1ull << slot_) - 1))),
      .members = static_cast<std::uint32_t>(std::popcount(live))};
  if (ranges.rank != scan.ranges.rank || ranges.members != scan.ranges.members) {
    scan.ranges = ranges;
    scan.from = 0;  // messages passed over as another range's may be ours now
  }
}

std::size_t Consumer::collect_keyed(std::size_t max, PopStatus& status) {
  key_shared::Scan& scan = *keyed_;
  if (unacked_ >= options_.max_unacked) {
    status = PopStatus::in_flight_full;
    return 0;
  }
  max = std::min({max, options_.max_unacked - unacked_, taken_.size()});
  refresh_key_ranges();
  const std::uint32_t now = now_lease_ms();
  const std::uint32_t lease_deadline = now + lease_ms_;
  const std::uint64_t published = ring_.published();
  const std::uint64_t low = leases_.low_seq();
  if (low > published) return 0;  // not started, or garbage: nothing to scan
  // Nothing at or past low + window can be taken: its lease entry is still an earlier
  // sequence's. The scan starts where the last one left off (Scan::from).
  const std::uint64_t limit = std::min(published, low + leases_.window());
  const std::uint64_t start = std::min(std::max(scan.from, low), limit);
  const std::uint64_t end = std::min(limit, start + kKeyedScan);

  scan.blocked.clear();
  std::uint32_t n = 0;
  // Dispatch is raised past a sequence before its lease is written, never after: the
  // reaper looks at leases below dispatch only, and a consumer killed between the two
  // must not leave a lease it cannot see (its slot's next owner would take it for its own).
  std::uint64_t dispatch = leases_.dispatch();
  bool cut = end != limit;  // stopped before the end: more may be takeable
  // The first message of our range not acked: the next scan starts there at the latest.
  std::uint64_t open = kNoOpen;
  shm::RecordView rec;
  std::uint64_t seq = start;
  for (; seq < end; ++seq) {
    if (n >= max || scan.blocked.full()) {
      cut = true;
      break;
    }
    const std::uint64_t w = leases_.word(seq);
    if (seq < leases_.low_seq()) {  // fell behind the group: the entry may be a later lap's
      cut = true;
      break;
    }
    const shm::Lease l = shm::Lease::unpack(w);
    const bool current = leases_.current_lap(seq, l);
    if (current && l.state == shm::LeaseState::acked) continue;

    key_shared::Scan::Memo& memo = scan.memo[seq & (scan.memo.size() - 1)];
    if (memo.seq != seq) {
      if (ring_.read(ring_.position_of(seq), rec) != shm::ReadStatus::record) {
        // The group's watermark keeps every unacked message in the ring: unless the
        // group passed this one meanwhile (and its space was reused), it is damage.
        if (seq < leases_.low_seq()) {
          cut = true;
          break;
        }
        status = fenced() ? PopStatus::fenced : PopStatus::corrupt;
        break;
      }
      memo.keyed = rec.key_len > 0;
      memo.hash = memo.keyed
                      ? key_shared::key_hash({reinterpret_cast<const char*>(rec.key), rec.key_len})
                      : key_shared::keyless_hash(seq);
      memo.seq = seq;
    }
    const std::uint64_t h = memo.hash;
    if (!scan.ranges.owns(h)) continue;
    if (open == kNoOpen) open = seq;
    if (memo.keyed && scan.blocked.contains(h)) continue;

    bool last = false;  // this redelivery is the message's last allowed one
    if (current) {
      const bool due =
          (l.state == shm::LeaseState::available && shm::deadline_passed(l.deadline_ms, now)) ||
          (l.state == shm::LeaseState::leased && leases_.expired_and_due(l, now));
      if (!due) {
        // Held by us: the key stays open. Anything else makes later messages wait.
        const bool ours = l.state == shm::LeaseState::leased && l.owner == slot_;
        if (!ours && memo.keyed) scan.blocked.insert(h);
        continue;
      }
      last = l.deliveries + 1 >= max_deliveries_;
      if (last && n > 0) {  // it travels alone: in the next pop
        cut = true;
        break;
      }
    }
    if (seq >= dispatch) {
      leases_.raise_dispatch(seq + 1);
      dispatch = seq + 1;
    }
    switch (leases_.take_one(seq, w, slot_, lease_deadline, max_deliveries_, taken_[n])) {
      case shm::TakeOne::taken:
        ++n;
        break;
      case shm::TakeOne::dead:
        dead_.push_back(seq);
        if (memo.keyed) scan.blocked.insert(h);
        break;
      case shm::TakeOne::changed:
        if (memo.keyed) scan.blocked.insert(h);
        break;
    }
    if (last && n > 0) {
      cut = true;
      break;
    }
  }
  // Everything in [start, seq) was looked at; below `open` none of it is ours to wait for.
  scan.from = std::min(open, seq);
  scan.scanned = published;
  scan.idle = n == 0 && !cut;
  scan.window_full = limit != published;
  scan.low = low;
  if (!dead_.empty()) {
    dead_lettered_ += dead_.size();
    dead_.clear();
    after_settled();
  }
  return deliver_taken(n, now, status);
}

}  // namespace ringfeed
