#include "ringfeed/consumer.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <thread>

#include "shm/futex.hpp"
#include "shm/group.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"

namespace ringfeed {

namespace {

// A sleeping pop wakes at least this often to check that the writer lives, so a lost
// wake (say, a group-mate that zeroed the sleepers count) costs latency, never a hang.
constexpr auto kSleepSlice = std::chrono::milliseconds(10);

std::string where(const ConsumerOptions& o) {
  return "group '" + o.group + "' of namespace '" + o.ns + "' partition " +
         std::to_string(o.partition);
}

}  // namespace

const char* to_string(PopStatus status) {
  switch (status) {
    case PopStatus::ok:
      return "ok";
    case PopStatus::timed_out:
      return "timed out";
    case PopStatus::in_flight_full:
      return "too many unacked messages";
    case PopStatus::closed:
      return "the writer is gone and everything was taken";
    case PopStatus::fenced:
      return "the writer stopped serving this group (corrupt group state)";
    case PopStatus::corrupt:
      return "a record in the ring failed validation";
  }
  return "unknown";
}

Result<std::unique_ptr<Consumer>> Consumer::attach(const ConsumerOptions& options) {
  if (auto ok = shm::check_name("namespace", options.ns); !ok) return ok.error();
  if (auto ok = shm::check_name("group", options.group); !ok) return ok.error();
  if (options.mode != Mode::exclusive && options.mode != Mode::broadcast) {
    return Error{"mode " + std::string(to_string(options.mode)) +
                     " is not supported yet (supported: exclusive, broadcast)",
                 ENOTSUP};
  }
  if (options.max_in_flight == 0 || options.max_in_flight > (1u << 24)) {
    return Error{"max_in_flight must be between 1 and 16777216", EINVAL};
  }
  std::unique_ptr<Consumer> c(new Consumer());
  c->options_ = options;
  auto ring = shm::RingReader::open(options.ns, options.partition);
  if (!ring) return ring.error();
  c->ring_ = std::move(ring.value());
  auto seg = shm::open_or_create_group(options.ns, options.partition, options.group, options.mode);
  if (!seg) return seg.error();
  c->group_segment_ = std::move(seg->segment);
  const bool created = seg->created;
  c->group_ = reinterpret_cast<shm::GroupControl*>(c->group_segment_.base());
  if (c->fenced()) {
    return Error{where(options) + " was fenced by the writer (its shared state was corrupt)", EIO};
  }
  c->owner_ = shm::pack_owner(shm::self_identity());

  std::uint64_t start = 0;
  if (options.mode == Mode::exclusive) {
    auto& holder = c->group_->holder;
    std::uint64_t seen = holder.load(std::memory_order_acquire);
    for (;;) {
      if (seen != 0 && shm::owner_alive(seen)) {
        return Error{where(options) + " is held in exclusive mode by pid " +
                         std::to_string(shm::owner_pid(seen)),
                     EBUSY};
      }
      // Free, or its holder died: take it. A failed CAS reloads `seen` and re-checks.
      if (holder.compare_exchange_weak(seen, c->owner_, std::memory_order_acq_rel)) break;
    }
    c->owner_word_ = &holder;
    c->watermark_ = &c->group_->low_watermark;
    start = c->watermark_->load(std::memory_order_acquire);
    if (!created) {
      // The writer honours this group's watermark already: resume there, unless that
      // space was reused before the group ever joined (its creator died mid-attach).
      const auto reusable = c->ring_.control().reusable.load(std::memory_order_acquire);
      if (auto ok = c->resume(std::max(start, reusable)); !ok) return ok.error();
      return c;
    }
  } else {
    shm::GroupSlot* mine = nullptr;
    for (int pass = 0; pass < 2 && mine == nullptr; ++pass) {
      for (shm::GroupSlot& slot : c->group_->slots) {
        std::uint64_t owner = slot.owner.load(std::memory_order_acquire);
        // First pass takes free slots; the second also reaps slots of dead consumers.
        if (owner != 0 && (pass == 0 || shm::owner_alive(owner))) continue;
        if (slot.owner.compare_exchange_strong(owner, c->owner_, std::memory_order_acq_rel)) {
          mine = &slot;
          break;
        }
      }
    }
    if (mine == nullptr) {
      return Error{where(options) + " already has " + std::to_string(shm::kGroupSlots) +
                       " live broadcast consumers",
                   EBUSY};
    }
    c->owner_word_ = &mine->owner;
    c->watermark_ = &mine->cursor;
    // Start with the slowest live peer, or (alone) with the oldest data the ring holds.
    start = c->ring_.control().tail.load(std::memory_order_acquire);
    std::uint64_t slowest = UINT64_MAX;
    for (shm::GroupSlot& slot : c->group_->slots) {
      if (&slot == mine || slot.owner.load(std::memory_order_acquire) == 0) continue;
      slowest = std::min(slowest, slot.cursor.load(std::memory_order_acquire));
    }
    if (slowest != UINT64_MAX) start = std::max(start, slowest);
  }
  if (auto ok = c->join(start); !ok) return ok.error();
  return c;
}

// The joining half of the reclaim protocol (ring_writer.hpp): publish a watermark, then
// check that the writer has not started reusing space above it.
Status Consumer::join(std::uint64_t start) {
  const auto& control = ring_.control();
  std::uint64_t w = start;
  for (;;) {
    watermark_->store(w, std::memory_order_seq_cst);
    const std::uint64_t tail = control.tail.load(std::memory_order_seq_cst);
    if (tail <= w) break;
    w = tail;
  }
  return resume(w);
}

// Starts reading at `w`, a watermark the writer honours.
Status Consumer::resume(std::uint64_t w) {
  in_flight_.resize(std::bit_ceil(options_.max_in_flight));
  in_flight_mask_ = in_flight_.size() - 1;
  batch_.messages_.reserve(256);
  const auto& control = ring_.control();
  const std::uint64_t end = control.write_pos.load(std::memory_order_acquire);
  if (w > end || (w & (shm::kRecordAlign - 1)) != 0) {
    return Error{where(options_) + ": stored position " + std::to_string(w) +
                     " is past the ring's end " + std::to_string(end) +
                     " or misaligned (corrupt group state)",
                 EPROTO};
  }
  read_pos_ = w;
  if (watermark_->load(std::memory_order_relaxed) != w) {
    watermark_->store(w, std::memory_order_release);
  }
  published_watermark_ = w;
  return Ok{};
}

Consumer::~Consumer() {
  if (owner_word_ != nullptr) {
    std::uint64_t me = owner_;
    owner_word_->compare_exchange_strong(me, 0, std::memory_order_acq_rel);
  }
}

bool Consumer::fenced() const {
  return group_->fenced.load(std::memory_order_acquire) != 0;
}

std::size_t Consumer::collect(std::size_t max, PopStatus& status) {
  std::size_t n = 0;
  shm::RecordView rec;
  while (n < max) {
    if (next_seq_ - head_seq_ > in_flight_mask_) {
      if (n == 0) status = PopStatus::in_flight_full;
      break;
    }
    const shm::ReadStatus st = ring_.read(read_pos_, rec);
    if (st == shm::ReadStatus::padding) {
      read_pos_ = rec.next;
      if (next_seq_ == head_seq_) publish_watermark();
      continue;
    }
    if (st == shm::ReadStatus::empty) break;
    if (st == shm::ReadStatus::corrupt) {
      if (n == 0) status = fenced() ? PopStatus::fenced : PopStatus::corrupt;
      break;
    }
    InFlight& slot = in_flight_[next_seq_ & in_flight_mask_];
    slot.position = rec.position;
    slot.acked = false;
    // Filled in place: building it on the stack and copying it in stalls on the stores.
    Message& m = batch_.messages_.emplace_back();
    m.key_ = reinterpret_cast<const char*>(rec.key);
    m.value_ = reinterpret_cast<const char*>(rec.value);
    m.key_len_ = rec.key_len;
    m.value_len_ = rec.value_len;
    m.upstream_offset_ = rec.upstream_offset;
    m.timestamp_ns_ = rec.timestamp_ns;
    m.position_ = rec.position;
    m.sequence_ = next_seq_++;
    read_pos_ = rec.next;
    ++n;
  }
  return n;
}

const Batch& Consumer::pop(std::size_t max, std::chrono::nanoseconds wait) {
  batch_.messages_.clear();
  batch_.status_ = PopStatus::timed_out;
  if (max == 0) return batch_;
  if (fenced()) {
    batch_.status_ = PopStatus::fenced;
    return batch_;
  }
  PopStatus status = PopStatus::timed_out;
  if (collect(max, status) > 0) {
    batch_.status_ = PopStatus::ok;
    return batch_;
  }
  if (status != PopStatus::timed_out) {
    batch_.status_ = status;
    return batch_;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + wait;
  // Spin: the record we want next announces itself in its own tag.
  if (wait.count() > 0 && options_.spin.count() > 0) {
    const auto spin_until = start + std::min(wait, options_.spin);
    for (unsigned i = 1;; ++i) {
      if (!ring_.is_empty_at(read_pos_)) {
        if (collect(max, status) > 0) {
          batch_.status_ = PopStatus::ok;
          return batch_;
        }
        if (status != PopStatus::timed_out) break;
      }
      if ((i & 63) == 0 && std::chrono::steady_clock::now() >= spin_until) break;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }
  // Sleep in the kernel until the writer wakes us (it does only if we announce ourselves).
  const auto& control = ring_.control();
  for (;;) {
    if (status != PopStatus::timed_out) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    const std::uint32_t seen = control.wake_word.load(std::memory_order_acquire);
    group_->sleepers.fetch_add(1, std::memory_order_seq_cst);
    shm::WaitResult slept = shm::WaitResult::value_changed;
    // Dekker pair with the writer's commit (ring_writer.cpp, wake_sleepers).
    if (control.write_pos.load(std::memory_order_seq_cst) == read_pos_ &&
        control.state.load(std::memory_order_acquire) == shm::kRingOpen) {
      slept = shm::futex_wait(control.wake_word, seen,
                              std::min<std::chrono::nanoseconds>(deadline - now, kSleepSlice));
    }
    group_->sleepers.fetch_sub(1, std::memory_order_release);
    if (collect(max, status) > 0) {
      batch_.status_ = PopStatus::ok;
      return batch_;
    }
    if (status != PopStatus::timed_out) break;
    if (fenced()) {
      status = PopStatus::fenced;
      break;
    }
    // Closed rings say so at once; a writer that died without closing is noticed when a
    // sleep slice runs out (reading /proc is too slow to do on every wake).
    const bool closed = control.state.load(std::memory_order_acquire) != shm::kRingOpen;
    if ((closed || (slept == shm::WaitResult::timed_out && !ring_.writer_alive())) &&
        ring_.is_empty_at(read_pos_)) {
      status = PopStatus::closed;
      break;
    }
  }
  if (status == PopStatus::timed_out && ring_.is_empty_at(read_pos_) &&
      control.state.load(std::memory_order_acquire) != shm::kRingOpen) {
    status = PopStatus::closed;
  }
  batch_.status_ = status;
  return batch_;
}

void Consumer::publish_watermark() {
  const std::uint64_t w =
      head_seq_ == next_seq_ ? read_pos_ : in_flight_[head_seq_ & in_flight_mask_].position;
  if (w != published_watermark_) {
    published_watermark_ = w;
    watermark_->store(w, std::memory_order_release);
  }
}

AckStatus Consumer::ack(const Message& m) {
  const std::uint64_t seq = m.sequence_;
  if (seq < head_seq_ || seq >= next_seq_) return AckStatus::not_leased;
  InFlight& slot = in_flight_[seq & in_flight_mask_];
  if (slot.acked || slot.position != m.position_) return AckStatus::not_leased;
  slot.acked = true;
  if (seq == head_seq_) {
    while (head_seq_ != next_seq_ && in_flight_[head_seq_ & in_flight_mask_].acked) ++head_seq_;
    publish_watermark();
  }
  return AckStatus::ok;
}

AckStatus Consumer::ack(const Batch& batch) {
  AckStatus result = AckStatus::ok;
  for (const Message& m : batch) {
    if (ack(m) != AckStatus::ok) result = AckStatus::not_leased;
  }
  return result;
}

}  // namespace ringfeed
