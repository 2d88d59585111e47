// Shared mode of ringfeed::Consumer: any number of consumers take the next available
// messages of the group under leases (shm/lease_table.hpp); acks, nacks, releases,
// rejects and extends change one lease word each; expired leases and leases of dead
// consumers come back. Also the mode-dependent helpers of pop and ack.
#include <time.h>

#include <algorithm>
#include <thread>

#include "key_shared.hpp"
#include "ringfeed/consumer.hpp"
#include "shm/process.hpp"

namespace ringfeed {

namespace {

// Most lease words one pop looks at for redeliveries.
constexpr std::uint32_t kRedeliveryScan = 4096;
// How often a failover standby looks whether the consumers before it still live.
constexpr std::int64_t kFailoverCheckNs = 10'000'000;

}  // namespace

std::int64_t Consumer::now_ns() const {
  if (options_.clock) return options_.clock();
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::uint32_t Consumer::now_lease_ms() const {
  return shm::LeaseTable::to_lease_ms(now_ns(), epoch_ns_);
}

// Exclusive and broadcast leases live in this process only, so they need not share the
// group's clock: they are timed with the coarse clock (milliseconds since boot, the time
// of the kernel's last tick, a few ns from the vDSO where the precise clock costs some
// 30 ns on these VMs), which a pop reads to start the deadlines it hands out. Deadlines
// are thus judged at the tick's resolution (4 ms here): a lease may end a tick early or
// late. A test clock, when set, times them as it times the group's leases.
std::uint32_t Consumer::local_lease_ms() const {
  if (options_.clock) return now_lease_ms();
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return shm::LeaseTable::to_lease_ms(
      static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec, 0);
}

bool Consumer::has_work() const {
  if (!uses_leases(options_.mode)) return !ring_.is_empty_at(read_pos_);
  if (keyed_) return keyed_->may_find(ring_.published(), leases_.low_seq());
  return ring_.published() > group_->dispatch.load(std::memory_order_acquire) ||
         (group_->redeliveries.load(std::memory_order_acquire) != 0 && !redeliveries_waiting_);
}

bool Consumer::nothing_published_seq_cst() const {
  const auto& control = ring_.control();
  if (!uses_leases(options_.mode)) {
    return control.write_pos.load(std::memory_order_seq_cst) == read_pos_;
  }
  if (keyed_) {
    // A move of the low sequence wakes nobody: a consumer whose window is full sees it
    // at the next publish or sleep slice.
    return !keyed_->may_find(control.published.load(std::memory_order_seq_cst), leases_.low_seq());
  }
  // Redeliveries whose delay runs do not keep pop awake: it looks again every sleep slice.
  return control.published.load(std::memory_order_seq_cst) <=
             group_->dispatch.load(std::memory_order_seq_cst) &&
         (group_->redeliveries.load(std::memory_order_seq_cst) == 0 || redeliveries_waiting_);
}

// The smallest sequence whose message starts at or after `position`, among those the
// message index still covers. Positions grow with sequences, so a binary search.
std::uint64_t Consumer::first_seq_at_or_after(std::uint64_t position) const {
  const std::uint64_t published = ring_.published();
  std::uint64_t lo =
      published >= ring_.index_slots() - 1 ? published - (ring_.index_slots() - 1) : 0;
  std::uint64_t hi = published;  // position_of(published) is where the next one goes
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    if (ring_.position_of(mid) >= position) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// The group's creator finds where it starts: at the oldest data the ring holds (the
// joining protocol of ring_writer.hpp on the group's watermark), then the sequence of
// the first message there. Others wait for it; if the creator died first, they do it;
// if the one starting it dies (its slot in `dispatch`), they start it again (a second
// start only redoes what the first did: nothing was handed out yet).
Status Consumer::start_shared(bool created) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    std::uint64_t d = group_->dispatch.load(std::memory_order_acquire);
    if (shm::group_started(d)) break;
    if (d != shm::kNotStarted) {
      // Being started by the consumer of slot s: gone, or the slot is ours now (we are
      // not starting it), so that consumer died.
      const std::uint64_t s = d - shm::kStarting;
      const bool starter_gone =
          s >= shm::kGroupSlots || s == slot_ ||
          !shm::owner_alive(group_->slots[s].owner.load(std::memory_order_acquire));
      if (starter_gone) {
        group_->dispatch.compare_exchange_strong(d, shm::kNotStarted, std::memory_order_acq_rel);
        continue;
      }
    }
    const bool creator_gone = !shm::owner_alive(
        shm::pack_owner({group_->header.creator_pid, group_->header.creator_start_time}));
    // One process starts the group: the creator, or anyone once the creator is gone.
    if (d == shm::kNotStarted && (created || creator_gone) &&
        group_->dispatch.compare_exchange_strong(d, shm::kStarting + slot_,
                                                 std::memory_order_acq_rel)) {
      watermark_ = &group_->low_watermark;
      if (auto ok = join(ring_.control().tail.load(std::memory_order_acquire)); !ok) return ok;
      const std::uint64_t seq = first_seq_at_or_after(read_pos_);
      leases_.prepare(seq);
      group_->low_seq.store(seq, std::memory_order_release);
      group_->dispatch.store(seq, std::memory_order_release);  // started
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error{describe_group(options_) + ": the group was never started (its creator, pid " +
                       std::to_string(group_->header.creator_pid) + ", died while starting it)",
                   ETIMEDOUT};
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  watermark_ = nullptr;  // shared groups raise the watermark with a CAS (after_settled)
  taken_.resize(256);
  batch_.messages_.reserve(256);
  return Ok{};
}

// Failover: the consumer attached earliest among the live ones is active; the others
// take nothing. A standby next in line checks now and then whether the consumers before
// it still live, and takes over from a dead one at once (its leases come back first),
// without waiting for the writer's reaper.
bool Consumer::failover_active() {
  auto earlier = [&](std::uint32_t i) {
    const std::uint64_t t = group_->slots[i].cursor.load(std::memory_order_acquire);
    return t < ticket_ || (t == ticket_ && i < slot_);
  };
  std::uint64_t before_me = 0;  // bit i: slot i is taken and attached before us
  for (std::uint32_t i = 0; i < shm::kGroupSlots; ++i) {
    if (i == slot_ || group_->slots[i].owner.load(std::memory_order_acquire) == 0) continue;
    if (earlier(i)) before_me |= 1ull << i;
  }
  if (before_me == 0) return true;
  const std::int64_t now = now_ns();
  if (now < next_liveness_check_ns_) return false;
  next_liveness_check_ns_ = now + kFailoverCheckNs;
  before_me &= ~reap_dead_slots(before_me);
  return before_me == 0;
}

// A standby's sleep in pop: until its next liveness check (failover_active), so that it
// takes over from a dead active consumer as soon as it would by polling, or a consumer
// before it that detached within one check period.
std::chrono::nanoseconds Consumer::standby_nap() const {
  const std::int64_t left = next_liveness_check_ns_ - now_ns();
  return std::chrono::nanoseconds(std::clamp<std::int64_t>(left, 100'000, kFailoverCheckNs));
}

// Slots in `candidates` (bit i = slot i) whose owner died: their leases come back (or go
// to the dead letters) and the slot is freed at once, without waiting for the writer's
// reaper. Returns the slots found free or freed.
std::uint64_t Consumer::reap_dead_slots(std::uint64_t candidates) {
  std::uint64_t gone = 0;
  for (std::uint32_t i = 0; i < shm::kGroupSlots; ++i) {
    if (((candidates >> i) & 1u) == 0 || i == slot_) continue;
    std::uint64_t owner = group_->slots[i].owner.load(std::memory_order_acquire);
    if (owner == 0) {
      gone |= 1ull << i;
    } else if (!shm::owner_alive(owner)) {
      std::uint64_t words[shm::kGroupSlots] = {};
      words[i] = owner;
      leases_.reap(now_lease_ms(), 1ull << i, max_deliveries_, dead_, nullptr, words);
      dead_lettered_ += dead_.size();
      dead_.clear();
      group_->slots[i].owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel);
      gone |= 1ull << i;
    }
  }
  return gone;
}

std::size_t Consumer::collect_shared(std::size_t max, PopStatus& status) {
  if (options_.mode == Mode::failover) {
    standby_ = !failover_active();
    if (standby_) return 0;
    if (!was_active_) {
      was_active_ = true;
      leases_.reclaim_unwritten(now_lease_ms());
    }
  }
  if (unacked_ >= options_.max_unacked) {
    status = PopStatus::in_flight_full;
    return 0;
  }
  max = std::min({max, options_.max_unacked - unacked_, taken_.size()});
  const std::uint32_t now = now_lease_ms();
  const std::uint32_t lease_deadline = now + lease_ms_;
  std::uint32_t n = 0;
  // Redeliveries first, up to three quarters of the batch so new messages keep flowing;
  // now and then look even without a hint, for leases that expired unannounced. A
  // failover consumer takes every redelivery that is due before anything new: one that
  // took over from a dead one gets its leases first, and then the next new ones, in
  // partition order.
  const bool failover = options_.mode == Mode::failover;
  if (group_->redeliveries.load(std::memory_order_acquire) != 0 || (++pops_ & 255) == 0) {
    const auto cap =
        static_cast<std::uint32_t>(failover ? max : std::max<std::size_t>(1, max - max / 4));
    std::uint32_t waiting = 0;
    n = leases_.take_due(now, cap, slot_, lease_deadline, max_deliveries_, kRedeliveryScan,
                         taken_.data(), dead_, &waiting);
    redeliveries_waiting_ = n == 0 && waiting > 0;
  }
  // A message on its last allowed delivery travels alone.
  const bool alone = n == 1 && taken_[0].lease.deliveries >= max_deliveries_;
  if (!alone && n < max) {
    n += leases_.take_new(ring_.published(), static_cast<std::uint32_t>(max - n), slot_,
                          lease_deadline, taken_.data() + n);
  }
  if (!dead_.empty()) {
    dead_lettered_ += dead_.size();
    dead_.clear();
    after_settled();
  }
  return deliver_taken(n, now, status);
}

std::size_t Consumer::deliver_taken(std::uint32_t n, std::uint32_t now, PopStatus& status) {
  std::size_t out = 0;
  shm::RecordView rec;
  for (std::uint32_t i = 0; i < n; ++i) {
    const shm::TakenLease& t = taken_[i];
    const std::uint64_t position = ring_.position_of(t.seq);
    if (ring_.read(position, rec) != shm::ReadStatus::record) {
      // The group's watermark keeps this message in the ring; if it is not there, the
      // group's state is damaged. Give the lease back and say so.
      leases_.release(t.seq, slot_, t.lease.generation, now);
      status = fenced() ? PopStatus::fenced : PopStatus::corrupt;
      continue;
    }
    Message& m = emit(rec);
    m.sequence_ = t.seq;
    m.lease_generation_ = t.lease.generation;
    m.delivery_count_ = t.lease.deliveries;
    ++unacked_;
    ++out;
  }
  return out;
}

// After leases were acked or dead-lettered: move the group's low sequence and, with it,
// the ring position below which the writer may reuse space.
void Consumer::after_settled() {
  const std::uint64_t low = leases_.advance_low();
  if (low > ring_.published()) return;  // garbage in low_seq: leave the watermark alone
  const std::uint64_t position = ring_.position_of(low);
  // If low_seq moved on meanwhile, the index slot we read may already hold a much newer
  // message's position (a consumer stalled while the writer went round): whoever moved
  // low_seq raises the watermark. If it did not move, the slot was intact: the group's
  // watermark, at or below it, kept the writer from going round.
  if (group_->low_seq.load(std::memory_order_acquire) != low) return;
  shm::raise_low_watermark(group_, position);
}

AckStatus Consumer::nack_message(const Message& m, std::chrono::milliseconds delay) {
  if (m.attach_epoch_ != attach_epoch_) return AckStatus::lease_lost;
  if (!uses_leases(options_.mode)) return nack_local(m, delay);
  // The group's backoff is the least a nack waits.
  const auto ms = std::max(
      static_cast<std::uint32_t>(std::clamp<std::int64_t>(delay.count(), 0, 24ll * 3600 * 1000)),
      leases_.backoff().after(m.delivery_count_));
  bool dead = false;
  const auto r = leases_.nack(m.sequence_, slot_, m.lease_generation_, now_lease_ms() + ms,
                              max_deliveries_, dead);
  if (r != shm::LeaseResult::ok) {
    lost_lease();
    return AckStatus::lease_lost;
  }
  --unacked_;
  if (dead) {
    ++dead_lettered_;
    after_settled();
  }
  return AckStatus::ok;
}

AckStatus Consumer::release_message(const Message& m) {
  if (m.attach_epoch_ != attach_epoch_) return AckStatus::lease_lost;
  if (!uses_leases(options_.mode)) return release_local(m);
  if (leases_.release(m.sequence_, slot_, m.lease_generation_, now_lease_ms()) !=
      shm::LeaseResult::ok) {
    lost_lease();
    return AckStatus::lease_lost;
  }
  --unacked_;
  return AckStatus::ok;
}

AckStatus Consumer::reject_message(const Message& m) {
  if (m.attach_epoch_ != attach_epoch_) return AckStatus::lease_lost;
  if (!uses_leases(options_.mode)) return reject_local(m);
  if (leases_.reject(m.sequence_, slot_, m.lease_generation_) != shm::LeaseResult::ok) {
    return AckStatus::lease_lost;
  }
  --unacked_;
  ++dead_lettered_;
  after_settled();
  return AckStatus::ok;
}

AckStatus Consumer::extend(const Message& m, std::chrono::milliseconds by) {
  if (m.attach_epoch_ != attach_epoch_) return AckStatus::lease_lost;
  if (!uses_leases(options_.mode)) return extend_local(m, by);
  const auto ms =
      static_cast<std::uint32_t>(std::clamp<std::int64_t>(by.count(), 0, 24ll * 3600 * 1000));
  if (leases_.extend(m.sequence_, slot_, m.lease_generation_, now_lease_ms() + ms) !=
      shm::LeaseResult::ok) {
    lost_lease();
    return AckStatus::lease_lost;
  }
  return AckStatus::ok;
}

}  // namespace ringfeed
