#include "shm/lease_table.hpp"

#include <algorithm>
#include <bit>

namespace ringfeed::shm {

LeaseTable::LeaseTable(GroupControl* group, std::uint32_t window)
    : group_(group),
      backoff_(group),
      epoch_ns_(group->epoch_ns),
      lease_ms_(std::clamp<std::uint32_t>(group->lease_ms, 1, 24u * 3600 * 1000)),
      entries_(lease_table(group)),
      mask_(window - 1),
      shift_(static_cast<std::uint32_t>(std::countr_zero(window))) {}

bool LeaseTable::keeps_leases(std::uint32_t owner, std::uint32_t now_ms) const {
  const GroupSlot& slot = group_->slots[owner % kGroupSlots];
  if ((slot.flags.load(std::memory_order_relaxed) & kSlotAutoExtend) == 0) return false;
  const std::uint32_t beat =
      to_lease_ms(slot.heartbeat_ns.load(std::memory_order_relaxed), epoch_ns_);
  // Modular: a beat "in the future" (garbage, or clocks a hair apart) counts as fresh.
  return static_cast<std::int32_t>(now_ms - beat) <= static_cast<std::int32_t>(kHeartbeatStaleMs);
}

void LeaseTable::prepare(std::uint64_t first) {
  for (std::uint64_t seq = first; seq < first + mask_ + 1; ++seq) {
    Lease l;
    l.state = LeaseState::acked;
    l.parity = parity(seq) ^ 1u;
    entry(seq).store(l.pack(), std::memory_order_relaxed);
  }
}

std::uint32_t LeaseTable::take_new(std::uint64_t published, std::uint32_t max, std::uint32_t owner,
                                   std::uint32_t lease_deadline_ms, TakenLease* out) {
  std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
  std::uint64_t n = 0;
  for (;;) {
    const std::uint64_t low = group_->low_seq.load(std::memory_order_acquire);
    // dispatch in [low, low + window] and not past what was published, or it is garbage.
    if (d < low || d > published || d - low > mask_ + 1ull) return 0;
    n = std::min<std::uint64_t>({max, published - d, low + mask_ + 1 - d});
    if (n == 0) return 0;
    if (group_->dispatch.compare_exchange_weak(d, d + n, std::memory_order_acq_rel)) break;
  }
  std::uint32_t taken = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t seq = d + i;
    // The entry's previous occupant (seq - window) is below low_seq: acked or dead. If
    // the reaper already took the entry over (we were stalled for long), leave it. If
    // we were stalled longer still, the group may have gone past `seq` (the reaper's
    // taker acked it) and the entry may hold seq + window's lease, whose parity is not
    // ours either: then low_seq is past `seq` when we look after the load (that lease's
    // taker saw it there before it took seq + window), and the entry is not ours.
    auto& e = entry(seq);
    std::uint64_t before = e.load(std::memory_order_acquire);
    const Lease old = Lease::unpack(before);
    if (old.parity == parity(seq) || passed(seq)) continue;
    Lease l;
    l.state = LeaseState::leased;
    l.parity = parity(seq);
    l.deliveries = 1;
    l.owner = owner;
    l.generation = old.generation + 1;
    l.deadline_ms = lease_deadline_ms;
    if (!e.compare_exchange_strong(before, l.pack(), std::memory_order_acq_rel)) continue;
    out[taken++] = {seq, l};
  }
  return taken;
}

std::uint32_t LeaseTable::take_due(std::uint32_t now_ms, std::uint32_t max, std::uint32_t owner,
                                   std::uint32_t lease_deadline_ms, std::uint32_t max_deliveries,
                                   std::uint32_t scan_limit, TakenLease* out,
                                   std::vector<std::uint64_t>& dead, std::uint32_t* waiting_out) {
  const std::uint64_t low = group_->low_seq.load(std::memory_order_acquire);
  const std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
  if (d < low || d - low > mask_ + 1ull) return 0;
  const std::uint64_t end = std::min<std::uint64_t>(d, low + scan_limit);
  std::uint32_t n = 0;
  std::uint32_t waiting = 0;  // available, but their delay has not passed
  bool stale = false;
  for (std::uint64_t seq = low; seq < end && n < max && !stale; ++seq) {
    auto& e = entry(seq);
    std::uint64_t w = e.load(std::memory_order_acquire);
    for (;;) {
      if (passed(seq)) {  // this scan fell behind the group: what it sees is not seq's
        stale = true;
        break;
      }
      const Lease l = Lease::unpack(w);
      if (l.parity != parity(seq)) break;  // being handed out for the first time
      const bool due =
          (l.state == LeaseState::available && deadline_passed(l.deadline_ms, now_ms)) ||
          (l.state == LeaseState::leased && expired_and_due(l, now_ms));
      if (!due) {
        waiting += l.state == LeaseState::available;
        break;
      }
      Lease next = l;
      next.generation = l.generation + 1;
      if (l.deliveries >= max_deliveries) {
        next.state = LeaseState::dead;
        next.deadline_ms = static_cast<std::uint32_t>(DeadReason::max_deliveries);
        if (e.compare_exchange_weak(w, next.pack(), std::memory_order_acq_rel)) {
          if (l.state == LeaseState::available)
            group_->redeliveries.fetch_sub(1, std::memory_order_relaxed);
          dead.push_back(seq);
          break;
        }
        continue;
      }
      // The last allowed delivery goes out alone, so a poison message fails by itself.
      const bool last = l.deliveries + 1 >= max_deliveries;
      if (last && n > 0) break;
      next.state = LeaseState::leased;
      next.deliveries = l.deliveries + 1;
      next.owner = owner;
      next.deadline_ms = lease_deadline_ms;
      if (e.compare_exchange_weak(w, next.pack(), std::memory_order_acq_rel)) {
        if (l.state == LeaseState::available)
          group_->redeliveries.fetch_sub(1, std::memory_order_relaxed);
        out[n++] = {seq, next};
        if (last) return n;
        break;
      }
    }
  }
  // The hint can drift (a consumer killed between a lease's change and the count's); a
  // scan of the whole table that found nothing available sets it right.
  if (n == 0 && waiting == 0 && end == d && !stale) {
    group_->redeliveries.store(0, std::memory_order_relaxed);
  }
  if (waiting_out != nullptr) *waiting_out = waiting;
  return n;
}

TakeOne LeaseTable::take_one(std::uint64_t seq, std::uint64_t seen, std::uint32_t owner,
                             std::uint32_t lease_deadline_ms, std::uint32_t max_deliveries,
                             TakenLease& out) {
  const Lease l = Lease::unpack(seen);
  const bool first = l.parity != parity(seq);
  Lease next = l;
  next.parity = parity(seq);
  next.generation = l.generation + 1;
  if (!first && l.deliveries >= max_deliveries) {
    next.state = LeaseState::dead;
    next.deadline_ms = static_cast<std::uint32_t>(DeadReason::max_deliveries);
    if (!entry(seq).compare_exchange_strong(seen, next.pack(), std::memory_order_acq_rel)) {
      return TakeOne::changed;
    }
    if (l.state == LeaseState::available) {
      group_->redeliveries.fetch_sub(1, std::memory_order_relaxed);
    }
    return TakeOne::dead;
  }
  next.state = LeaseState::leased;
  next.deliveries = first ? 1 : l.deliveries + 1;
  next.owner = owner;
  next.deadline_ms = lease_deadline_ms;
  if (!entry(seq).compare_exchange_strong(seen, next.pack(), std::memory_order_acq_rel)) {
    return TakeOne::changed;
  }
  if (!first && l.state == LeaseState::available) {
    group_->redeliveries.fetch_sub(1, std::memory_order_relaxed);
  }
  out = {seq, next};
  return TakeOne::taken;
}

void LeaseTable::raise_dispatch(std::uint64_t end) {
  std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
  while (end > d && !group_->dispatch.compare_exchange_weak(d, end, std::memory_order_acq_rel)) {
  }
}

template <typename Change>
LeaseResult LeaseTable::transition(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                                   Change change) {
  auto& e = entry(seq);
  std::uint64_t w = e.load(std::memory_order_acquire);
  for (;;) {
    if (passed(seq)) return LeaseResult::lease_lost;  // acked by another: a stale handle
    const Lease l = Lease::unpack(w);
    if (l.state != LeaseState::leased || l.owner != owner ||
        l.generation != (generation & 0x1ffffu) || l.parity != parity(seq)) {
      return LeaseResult::lease_lost;
    }
    const Lease next = change(l);
    // seq_cst: an acker's CAS then its loads in advance_low form a Dekker pair with
    // another acker's, so one of them always sees both acks and moves low_seq.
    if (e.compare_exchange_weak(w, next.pack(), std::memory_order_seq_cst)) return LeaseResult::ok;
  }
}

LeaseResult LeaseTable::ack(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation) {
  return transition(seq, owner, generation, [](Lease l) {
    l.state = LeaseState::acked;
    return l;
  });
}

LeaseResult LeaseTable::nack(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                             std::uint32_t not_before_ms, std::uint32_t max_deliveries,
                             bool& dead) {
  bool to_dead = false;
  const LeaseResult r = transition(seq, owner, generation, [&](Lease l) {
    to_dead = l.deliveries >= max_deliveries;
    l.state = to_dead ? LeaseState::dead : LeaseState::available;
    l.generation += 1;
    l.deadline_ms =
        to_dead ? static_cast<std::uint32_t>(DeadReason::max_deliveries) : not_before_ms;
    return l;
  });
  dead = r == LeaseResult::ok && to_dead;
  if (r == LeaseResult::ok && !to_dead)
    group_->redeliveries.fetch_add(1, std::memory_order_release);
  return r;
}

LeaseResult LeaseTable::release(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                                std::uint32_t now_ms) {
  const LeaseResult r = transition(seq, owner, generation, [&](Lease l) {
    l.state = LeaseState::available;
    l.deliveries = l.deliveries > 0 ? l.deliveries - 1 : 0;
    l.generation += 1;
    l.deadline_ms = now_ms;
    return l;
  });
  if (r == LeaseResult::ok) group_->redeliveries.fetch_add(1, std::memory_order_release);
  return r;
}

LeaseResult LeaseTable::reject(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation) {
  return transition(seq, owner, generation, [](Lease l) {
    l.state = LeaseState::dead;
    l.generation += 1;
    l.deadline_ms = static_cast<std::uint32_t>(DeadReason::rejected);
    return l;
  });
}

LeaseResult LeaseTable::extend(std::uint64_t seq, std::uint32_t owner, std::uint32_t generation,
                               std::uint32_t new_deadline_ms) {
  return transition(seq, owner, generation, [&](Lease l) {
    l.deadline_ms = new_deadline_ms;
    return l;
  });
}

std::uint64_t LeaseTable::advance_low() {
  std::uint64_t low = group_->low_seq.load(std::memory_order_seq_cst);
  for (;;) {
    const std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
    if (d < low || d - low > mask_ + 1ull) return low;  // garbage: leave it
    std::uint64_t seq = low;
    while (seq < d) {
      const Lease l = Lease::unpack(entry(seq).load(std::memory_order_seq_cst));
      if (l.parity != parity(seq) ||
          l.state != LeaseState::acked) {  // dead waits for the dead-letter log
        break;
      }
      ++seq;
    }
    if (seq == low) return low;
    // A failed CAS means someone else moved it; start again from where it is now.
    if (group_->low_seq.compare_exchange_weak(low, seq, std::memory_order_acq_rel)) return seq;
  }
}

std::uint32_t LeaseTable::reap(std::uint32_t now_ms, std::uint64_t dead_owners,
                               std::uint32_t max_deliveries, std::vector<std::uint64_t>& dead,
                               std::vector<std::pair<std::uint64_t, std::uint64_t>>* abandoned,
                               const std::uint64_t* dead_words) {
  const std::uint64_t low = group_->low_seq.load(std::memory_order_acquire);
  const std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
  if (d < low || d - low > mask_ + 1ull) return 0;
  std::uint32_t changed = 0;
  if (abandoned != nullptr) {
    // Entries still unwritten since the last pass: their taker died.
    for (auto [seq, word] : *abandoned) {
      if (seq < low || seq >= d) continue;
      Lease l = Lease::unpack(word);
      l.state = LeaseState::available;
      l.parity = parity(seq);
      l.deliveries = 0;  // its taker never handed it out (or was only slow: no harm)
      l.generation += 1;
      l.deadline_ms = now_ms;
      if (entry(seq).compare_exchange_strong(word, l.pack(), std::memory_order_acq_rel)) {
        group_->redeliveries.fetch_add(1, std::memory_order_release);
        ++changed;
      }
    }
    abandoned->clear();
  }
  for (std::uint64_t seq = low; seq < d; ++seq) {
    auto& e = entry(seq);
    std::uint64_t w = e.load(std::memory_order_acquire);
    for (;;) {
      if (passed(seq)) return changed;  // fell behind the group: the rest is not ours to judge
      const Lease l = Lease::unpack(w);
      if (l.parity != parity(seq)) {
        if (abandoned != nullptr) abandoned->emplace_back(seq, w);
        break;
      }
      if (l.state != LeaseState::leased) break;
      const bool owner_dead =
          ((dead_owners >> l.owner) & 1u) != 0 &&
          (dead_words == nullptr ||
           group_->slots[l.owner].owner.load(std::memory_order_acquire) == dead_words[l.owner]);
      if (!owner_dead && !deadline_passed(l.deadline_ms, now_ms)) break;
      Lease next = l;
      if (!owner_dead && keeps_leases(l.owner, now_ms)) {
        // Auto-extend: same lease, same handle, a new deadline.
        next.deadline_ms = now_ms + lease_ms_;
        if (e.compare_exchange_weak(w, next.pack(), std::memory_order_acq_rel)) break;
        continue;
      }
      next.generation = l.generation + 1;
      const bool to_dead = l.deliveries >= max_deliveries;
      next.state = to_dead ? LeaseState::dead : LeaseState::available;
      // Back after its backoff; a dead owner's leases at once (it did not fail them).
      const std::uint32_t wait = owner_dead ? 0 : backoff_.after(l.deliveries);
      next.deadline_ms =
          to_dead ? static_cast<std::uint32_t>(DeadReason::max_deliveries) : now_ms + wait;
      if (e.compare_exchange_weak(w, next.pack(), std::memory_order_acq_rel)) {
        if (to_dead) {
          dead.push_back(seq);
        } else {
          group_->redeliveries.fetch_add(1, std::memory_order_release);
        }
        ++changed;
        break;
      }
    }
  }
  return changed;
}

std::uint32_t LeaseTable::reclaim_unwritten(std::uint32_t now_ms) {
  const std::uint64_t low = group_->low_seq.load(std::memory_order_acquire);
  const std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
  if (d < low || d - low > mask_ + 1ull) return 0;
  std::uint32_t changed = 0;
  for (std::uint64_t seq = low; seq < d; ++seq) {
    auto& e = entry(seq);
    std::uint64_t w = e.load(std::memory_order_acquire);
    if (passed(seq)) break;
    Lease l = Lease::unpack(w);
    if (l.parity == parity(seq)) continue;
    l.state = LeaseState::available;
    l.parity = parity(seq);
    l.deliveries = 0;
    l.generation += 1;
    l.deadline_ms = now_ms;
    if (e.compare_exchange_strong(w, l.pack(), std::memory_order_acq_rel)) {
      group_->redeliveries.fetch_add(1, std::memory_order_release);
      ++changed;
    }
  }
  return changed;
}

std::uint32_t LeaseTable::find_dead(std::uint32_t max, std::vector<TakenLease>& out) {
  const std::uint64_t low = group_->low_seq.load(std::memory_order_acquire);
  const std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
  if (d < low || d - low > mask_ + 1ull) return 0;
  std::uint32_t n = 0;
  for (std::uint64_t seq = low; seq < d && n < max; ++seq) {
    const Lease l = Lease::unpack(entry(seq).load(std::memory_order_acquire));
    if (passed(seq)) break;
    if (l.parity == parity(seq) && l.state == LeaseState::dead) {
      out.push_back({seq, l});
      ++n;
    }
  }
  return n;
}

bool LeaseTable::settle_dead(const TakenLease& dead) {
  std::uint64_t expected = dead.lease.pack();
  Lease acked = dead.lease;
  acked.state = LeaseState::acked;
  return entry(dead.seq).compare_exchange_strong(expected, acked.pack(), std::memory_order_seq_cst);
}

const char* to_string(DeadReason reason) {
  switch (reason) {
    case DeadReason::max_deliveries:
      return "max deliveries reached";
    case DeadReason::rejected:
      return "rejected by the consumer";
  }
  return "unknown";
}

void raise_low_watermark(GroupControl* group, std::uint64_t position) {
  std::uint64_t cur = group->low_watermark.load(std::memory_order_relaxed);
  while (position > cur &&
         !group->low_watermark.compare_exchange_weak(cur, position, std::memory_order_release)) {
  }
}

}  // namespace ringfeed::shm
