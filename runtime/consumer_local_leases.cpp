// Leases of exclusive and broadcast consumers. No other process can take their messages
// (the exclusive holder is alone; a broadcast consumer's cursor is its own), so their
// leases live in the consumer's memory, in the circle of messages it popped and has not
// acked: a nack or an expired lease hands the message to the same consumer again, with
// its delivery count raised; at max_deliveries, or on reject, it goes to the dead-letter
// log, which the consumer appends to itself (the log takes appends from any number of
// processes). The group's watermark stays at the oldest unacked message, so all of them
// stay in the ring; when the consumer dies they come back to the next exclusive holder
// (a broadcast consumer's private state is dropped, as in DESIGN.md), counted from 1.
#include <algorithm>

#include "ringfeed/consumer.hpp"
#include "ringfeed/dead_letter_log.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"

namespace ringfeed {

namespace {

constexpr std::uint32_t kMaxDelayMs = 24u * 3600 * 1000;

std::uint32_t clamp_ms(std::chrono::milliseconds d) {
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(d.count(), 0, kMaxDelayMs));
}

// The dead-letter directory of the namespace's fetcher, if one serves it.
std::string fetcher_dead_letter_dir(const std::string& ns) {
  auto seg = shm::Segment::open(shm::fetcher_segment_name(ns), shm::Access::read_only);
  if (!seg || seg->size() < sizeof(shm::FetcherControl)) return {};
  const auto* c = reinterpret_cast<const shm::FetcherControl*>(seg->base());
  return std::string(c->dead_letter_dir, strnlen(c->dead_letter_dir, sizeof c->dead_letter_dir));
}

}  // namespace

// The in-flight entry of a message this consumer holds under a live lease, or null with
// the reason: not_leased (not ours, or settled), lease_lost (expired and handed out again,
// or waiting for that).
Consumer::InFlight* Consumer::held_local(const Message& m, AckStatus& why) {
  const std::uint64_t seq = m.sequence_;
  why = AckStatus::not_leased;
  if (seq < head_seq_ || seq >= next_seq_) return nullptr;
  InFlight& e = in_flight_[seq & in_flight_mask_];
  if (e.position != m.position_ || e.state == Held::acked) return nullptr;
  if (e.state != Held::leased || e.generation != m.lease_generation_) {
    why = AckStatus::lease_lost;
    return nullptr;
  }
  return &e;
}

void Consumer::settle_local(std::uint64_t seq) {
  in_flight_[seq & in_flight_mask_].state = Held::acked;
  if (seq == head_seq_) {
    while (head_seq_ != next_seq_ && in_flight_[head_seq_ & in_flight_mask_].state == Held::acked) {
      ++head_seq_;
    }
    publish_watermark();
  }
}

// Leases whose deadline passed come back for redelivery (or die at max_deliveries).
void Consumer::expire_local(std::uint32_t now) {
  bool any = false;
  std::uint32_t next = 0;
  for (std::uint64_t seq = head_seq_; seq != next_seq_; ++seq) {
    InFlight& e = in_flight_[seq & in_flight_mask_];
    if (e.state != Held::leased) continue;
    // Auto-extend: this process lives (it is running this), so its leases do too.
    if (options_.auto_extend && shm::deadline_passed(e.deadline_ms, now)) {
      e.deadline_ms = now + lease_ms_;
    }
    if (!shm::deadline_passed(e.deadline_ms, now)) {
      if (!any || static_cast<std::int32_t>(e.deadline_ms - next) < 0) next = e.deadline_ms;
      any = true;
      continue;
    }
    if (e.deliveries >= max_deliveries_) {
      dead_letter_local(seq, shm::DeadReason::max_deliveries);
      continue;
    }
    e.state = Held::waiting;
    e.generation += 1;  // the expired handle is refused from now on
    e.deadline_ms = now + backoff_.after(e.deliveries);
    redeliver_.push_back(seq);
  }
  leases_held_ = any;
  next_expiry_ms_ = next;
}

// Hands out up to `max` messages waiting for redelivery whose delay passed, oldest
// first; one on its last allowed delivery goes alone.
std::size_t Consumer::redeliver_local(std::size_t max, std::uint32_t now, PopStatus& status) {
  std::sort(redeliver_.begin(), redeliver_.end());
  std::size_t n = 0;
  std::size_t kept = 0;
  shm::RecordView rec;
  for (std::size_t i = 0; i < redeliver_.size(); ++i) {
    const std::uint64_t seq = redeliver_[i];
    InFlight& e = in_flight_[seq & in_flight_mask_];
    const bool last = e.deliveries + 1 >= max_deliveries_;
    if (n >= max || !shm::deadline_passed(e.deadline_ms, now) || (last && n > 0)) {
      redeliver_[kept++] = seq;
      continue;
    }
    if (ring_.read(e.position, rec) != shm::ReadStatus::record) {
      // The watermark keeps it in the ring; if it is not there, the group is damaged.
      redeliver_[kept++] = seq;
      status = fenced() ? PopStatus::fenced : PopStatus::corrupt;
      continue;
    }
    e.state = Held::leased;
    e.generation += 1;
    e.deliveries += 1;
    e.deadline_ms = now + lease_ms_;
    if (!leases_held_) {
      leases_held_ = true;
      next_expiry_ms_ = e.deadline_ms;
    }
    Message& m = emit(rec);
    m.sequence_ = seq;
    m.lease_generation_ = e.generation;
    m.delivery_count_ = e.deliveries;
    ++n;
    if (last) max = n;  // nothing joins it
  }
  redeliver_.resize(kept);
  return n;
}

void Consumer::dead_letter_local(std::uint64_t seq, shm::DeadReason reason) {
  InFlight& e = in_flight_[seq & in_flight_mask_];
  ++dead_lettered_;
  shm::RecordView rec;
  bool stored = false;
  if (ring_.read(e.position, rec) == shm::ReadStatus::record) {
    if (!dead_letter_log_) {
      std::string dir = options_.dead_letter_dir;
      if (dir.empty()) dir = fetcher_dead_letter_dir(options_.ns);
      if (!dir.empty()) {
        auto log = DeadLetterLog::open(dir, options_.partition);
        if (log) {
          dead_letter_log_ = std::make_unique<DeadLetterLog>(std::move(log.value()));
        } else {
          dead_letter_error_ = log.error().message;
        }
      } else {
        dead_letter_error_ =
            "no dead-letter directory (ConsumerOptions::dead_letter_dir, or a "
            "fetcher serving namespace '" +
            options_.ns + "')";
      }
    }
    if (dead_letter_log_) {
      const shm::DeadLetter letter{
          .group = options_.group,
          .sequence = seq,
          .key = {reinterpret_cast<const char*>(rec.key), rec.key_len},
          .value = {reinterpret_cast<const char*>(rec.value), rec.value_len},
          .upstream_offset = rec.upstream_offset,
          .timestamp_ns = rec.timestamp_ns,
          .deliveries = e.deliveries,
          .reason = reason,
      };
      stored = dead_letter_log_->append(letter);
      if (!stored) dead_letter_error_ = dead_letter_log_->last_error();
    }
  }
  if (!stored) ++dead_letters_dropped_;
  settle_local(seq);
}

AckStatus Consumer::nack_local(const Message& m, std::chrono::milliseconds delay) {
  AckStatus why = AckStatus::ok;
  InFlight* e = held_local(m, why);
  if (e == nullptr) return why;
  if (e->deliveries >= max_deliveries_) {
    dead_letter_local(m.sequence_, shm::DeadReason::max_deliveries);
    return AckStatus::ok;
  }
  e->state = Held::waiting;
  e->generation += 1;
  e->deadline_ms = local_lease_ms() + std::max(clamp_ms(delay), backoff_.after(e->deliveries));
  redeliver_.push_back(m.sequence_);
  return AckStatus::ok;
}

AckStatus Consumer::release_local(const Message& m) {
  AckStatus why = AckStatus::ok;
  InFlight* e = held_local(m, why);
  if (e == nullptr) return why;
  e->state = Held::waiting;
  e->generation += 1;
  e->deliveries = e->deliveries > 0 ? e->deliveries - 1 : 0;
  e->deadline_ms = local_lease_ms();
  redeliver_.push_back(m.sequence_);
  return AckStatus::ok;
}

AckStatus Consumer::reject_local(const Message& m) {
  AckStatus why = AckStatus::ok;
  if (held_local(m, why) == nullptr) return why;
  dead_letter_local(m.sequence_, shm::DeadReason::rejected);
  return AckStatus::ok;
}

AckStatus Consumer::extend_local(const Message& m, std::chrono::milliseconds by) {
  AckStatus why = AckStatus::ok;
  InFlight* e = held_local(m, why);
  if (e == nullptr) return why;
  e->deadline_ms = local_lease_ms() + clamp_ms(by);
  // A shorter lease may now expire before the earliest one known.
  if (static_cast<std::int32_t>(e->deadline_ms - next_expiry_ms_) < 0) {
    next_expiry_ms_ = e->deadline_ms;
  }
  return AckStatus::ok;
}

}  // namespace ringfeed
