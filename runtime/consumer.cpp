#include "ringfeed/consumer.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <thread>

#include "key_shared.hpp"
#include "ringfeed/dead_letter_log.hpp"
#include "shm/futex.hpp"
#include "shm/group.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"

namespace ringfeed {

namespace {

// A sleeping pop wakes at least this often to check that the writer lives, so a lost
// wake (say, a group-mate that zeroed the sleepers count) costs latency, never a hang.
constexpr auto kSleepSlice = std::chrono::milliseconds(10);

}  // namespace

std::string describe_group(const ConsumerOptions& o) {
  return "group '" + o.group + "' of namespace '" + o.ns + "' partition " +
         std::to_string(o.partition);
}

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
    case PopStatus::end_of_partition:
      return "end of partition: the upstream gives it to another host now";
  }
  return "unknown";
}

const char* to_string(AckStatus status) {
  switch (status) {
    case AckStatus::ok:
      return "ok";
    case AckStatus::not_leased:
      return "not a message this consumer holds";
    case AckStatus::lease_lost:
      return "the lease expired and the message moved on";
    case AckStatus::not_supported:
      return "only shared and failover groups nack, release, reject or extend";
  }
  return "unknown";
}

Result<std::unique_ptr<Consumer>> Consumer::attach(const ConsumerOptions& options) {
  if (auto ok = shm::check_name("namespace", options.ns); !ok) return ok.error();
  if (auto ok = shm::check_name("group", options.group); !ok) return ok.error();
  if (options.mode != Mode::exclusive && options.mode != Mode::broadcast &&
      !uses_leases(options.mode)) {
    return Error{"mode " + std::string(to_string(options.mode)) +
                     " is not a mode (exclusive, failover, shared, key_shared, broadcast)",
                 ENOTSUP};
  }
  if (options.max_unacked == 0 || options.max_unacked > (1u << 24)) {
    return Error{"max_unacked must be between 1 and 16777216", EINVAL};
  }
  std::unique_ptr<Consumer> c(new Consumer());
  c->options_ = options;
  if (auto ok = c->connect(); !ok) return ok.error();
  const shm::SegmentHeader& h = c->ring_.control().header;
  c->writer_ = shm::pack_owner({h.creator_pid, h.creator_start_time});
  if (options.auto_extend) c->start_heartbeat();
  return c;
}

// Maps the ring and the group and takes a place in it (attach, and again after the
// fetcher was replaced).
Status Consumer::connect() {
  auto ring = shm::RingReader::open(options_.ns, options_.partition);
  if (!ring) return ring.error();
  ring_ = std::move(ring.value());
  const auto& rc = ring_.control();
  const shm::GroupSettings settings =
      shm::resolve(options_.group_settings,
                   {rc.default_lease_window, rc.default_max_deliveries, rc.default_lease_ms});
  auto seg = shm::open_or_create_group(options_.ns, options_.partition, options_.group,
                                       options_.mode, settings);
  if (!seg) return seg.error();
  group_segment_ = std::move(seg->segment);
  const bool created = seg->created;
  group_ = reinterpret_cast<shm::GroupControl*>(group_segment_.base());
  if (fenced()) {
    return Error{
        describe_group(options_) + " was fenced by the writer (its shared state was corrupt)", EIO};
  }
  owner_ = shm::pack_owner(shm::self_identity());

  // Settings are written once by the creator; clamp them anyway (another process wrote them).
  epoch_ns_ = group_->epoch_ns;
  backoff_ = shm::Backoff(group_);
  max_deliveries_ = std::clamp<std::uint32_t>(group_->max_deliveries, 1, shm::kMaxDeliveriesLimit);
  const auto group_lease = std::clamp<std::uint32_t>(group_->lease_ms, 1, 24u * 3600 * 1000);
  lease_ms_ = options_.lease.count() > 0 ? static_cast<std::uint32_t>(std::min<std::int64_t>(
                                               options_.lease.count(), 24ll * 3600 * 1000))
                                         : group_lease;
  if (uses_leases(options_.mode)) {
    leases_ = shm::LeaseTable(group_, seg->shape.window);
    if (auto ok = claim_slot(); !ok) return ok.error();
    if (auto ok = start_shared(created); !ok) return ok.error();
    if (options_.mode == Mode::key_shared) keyed_ = std::make_unique<key_shared::Scan>();
    return Ok{};
  }

  std::uint64_t start = 0;
  if (options_.mode == Mode::exclusive) {
    auto& holder = group_->holder;
    std::uint64_t seen = holder.load(std::memory_order_acquire);
    for (;;) {
      if (seen != 0 && shm::owner_alive(seen)) {
        return Error{describe_group(options_) + " is held in exclusive mode by pid " +
                         std::to_string(shm::owner_pid(seen)),
                     EBUSY};
      }
      // Free, or its holder died: take it. A failed CAS reloads `seen` and re-checks.
      if (holder.compare_exchange_weak(seen, owner_, std::memory_order_acq_rel)) break;
    }
    holder_word_ = &holder;
    // A slot too, as the group's registry entry (pid, heartbeat, unacked: for stat).
    if (auto ok = claim_slot(); !ok) return ok.error();
    watermark_ = &group_->low_watermark;
    start = watermark_->load(std::memory_order_acquire);
    if (!created) {
      // The writer honours this group's watermark already: resume there, unless that
      // space was reused before the group ever joined (its creator died mid-attach).
      const auto reusable = ring_.control().reusable.load(std::memory_order_acquire);
      if (auto ok = resume(std::max(start, reusable)); !ok) return ok.error();
      return Ok{};
    }
  } else {
    if (claim_awaited_slot()) {
      // Kept for this process by a writer that took the ring over: the ring is held from
      // its cursor on, so it resumes there without a gap.
      watermark_ = &group_->slots[slot_].cursor;
      return join(watermark_->load(std::memory_order_acquire));
    }
    if (auto ok = claim_slot(); !ok) return ok.error();
    shm::GroupSlot* mine = &group_->slots[slot_];
    watermark_ = &mine->cursor;
    // Start with the slowest live peer, or (alone) with the oldest data the ring holds.
    start = ring_.control().tail.load(std::memory_order_acquire);
    std::uint64_t slowest = UINT64_MAX;
    for (shm::GroupSlot& slot : group_->slots) {
      if (&slot == mine || slot.owner.load(std::memory_order_acquire) == 0) continue;
      slowest = std::min(slowest, slot.cursor.load(std::memory_order_acquire));
    }
    if (slowest != UINT64_MAX) start = std::max(start, slowest);
  }
  if (auto ok = join(start); !ok) return ok.error();
  return Ok{};
}

// Broadcast: takes a slot that a writer which took the ring over keeps for this process
// (group_layout.hpp, awaited slots). One CAS; it fails if the writer gave the slot up.
bool Consumer::claim_awaited_slot() {
  for (std::uint32_t i = 0; i < shm::kGroupSlots; ++i) {
    shm::GroupSlot& slot = group_->slots[i];
    std::uint64_t awaited = owner_ | shm::kOwnerAwaited;
    if (slot.owner.load(std::memory_order_acquire) != awaited) continue;
    if (slot.owner.compare_exchange_strong(awaited, owner_, std::memory_order_acq_rel)) {
      owner_word_ = &slot.owner;
      slot_ = i;
      return true;
    }
  }
  return false;
}

// Takes a consumer slot: a free one, else one whose owner died (in shared mode after
// handing the dead owner's leases back).
Status Consumer::claim_slot() {
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < shm::kGroupSlots; ++i) {
      shm::GroupSlot& slot = group_->slots[i];
      std::uint64_t owner = slot.owner.load(std::memory_order_acquire);
      if (owner != 0 && (pass == 0 || shm::owner_alive(owner))) continue;
      if (owner != 0 && uses_leases(options_.mode)) {
        std::uint64_t words[shm::kGroupSlots] = {};
        words[i] = owner;
        leases_.reap(now_lease_ms(), 1ull << i, max_deliveries_, dead_, nullptr, words);
      }
      if (slot.owner.compare_exchange_strong(owner, owner_, std::memory_order_acq_rel)) {
        owner_word_ = &slot.owner;
        slot_ = i;
        if (options_.mode == Mode::failover) {
          // Failover slots keep the attach time in `cursor`: the earliest live one is active.
          ticket_ = static_cast<std::uint64_t>(now_ns());
          slot.cursor.store(ticket_, std::memory_order_release);
        }
        return Ok{};
      }
    }
  }
  return Error{describe_group(options_) + " already has " + std::to_string(shm::kGroupSlots) +
                   " live consumers",
               EBUSY};
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
  in_flight_.resize(std::bit_ceil(options_.max_unacked));
  in_flight_mask_ = in_flight_.size() - 1;
  batch_.messages_.reserve(256);
  const auto& control = ring_.control();
  const std::uint64_t end = control.write_pos.load(std::memory_order_acquire);
  if (w > end || (w & (shm::kRecordAlign - 1)) != 0) {
    return Error{describe_group(options_) + ": stored position " + std::to_string(w) +
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
  detach();
}

void Consumer::start_heartbeat() {
  shm::GroupSlot& slot = group_->slots[slot_];
  slot.heartbeat_ns.store(now_ns(), std::memory_order_relaxed);
  slot.flags.fetch_or(shm::kSlotAutoExtend, std::memory_order_relaxed);
  heartbeat_stop_ = false;
  heartbeat_ = std::thread([this, &slot] {
    std::unique_lock lock(heartbeat_mutex_);
    while (!heartbeat_stop_cv_.wait_for(lock, std::chrono::milliseconds(shm::kHeartbeatMs),
                                        [this] { return heartbeat_stop_; })) {
      slot.heartbeat_ns.store(now_ns(), std::memory_order_relaxed);
    }
  });
}

void Consumer::stop_heartbeat() {
  if (!heartbeat_.joinable()) return;
  {
    std::lock_guard lock(heartbeat_mutex_);
    heartbeat_stop_ = true;
  }
  heartbeat_stop_cv_.notify_all();
  heartbeat_.join();
}

void Consumer::detach() {
  stop_heartbeat();
  if (uses_leases(options_.mode) && owner_word_ != nullptr) {
    // Leases still held go back to the group before the slot can be taken again.
    try {
      leases_.reap(now_lease_ms(), 1ull << slot_, max_deliveries_, dead_);
      if (!dead_.empty()) after_settled();
    } catch (...) {
      // Out of memory or a throwing test clock: the leases expire instead.
    }
  }
  if (owner_word_ != nullptr) {
    std::uint64_t me = owner_;
    owner_word_->compare_exchange_strong(me, 0, std::memory_order_acq_rel);
  }
  owner_word_ = nullptr;
  if (holder_word_ != nullptr) {
    std::uint64_t me = owner_;
    holder_word_->compare_exchange_strong(me, 0, std::memory_order_acq_rel);
  }
  holder_word_ = nullptr;
}

// A fetcher that died is replaced by a new one (a new instance of the ring, its creator
// named in the segment header), which starts every partition afresh from what was
// committed upstream. A consumer of the old ring moves over: it leaves the old group
// (the new fetcher removed it), forgets every lease of the old instance (handles from
// before are refused: attach_epoch_), and attaches again with the same options.
bool Consumer::reattach_to_new_writer() {
  reattach_error_.clear();
  auto probe = shm::RingReader::open(options_.ns, options_.partition);
  if (!probe) return false;
  const shm::SegmentHeader now = probe->control().header;
  if (shm::pack_owner({now.creator_pid, now.creator_start_time}) == writer_) {
    return false;  // the same instance: closed, or its writer died and none took over yet
  }
  if (!probe->writer_alive()) return false;
  if (group_ != nullptr) detach();
  group_segment_ = {};
  group_ = nullptr;
  watermark_ = nullptr;
  leases_ = {};
  slot_ = 0;
  unacked_ = 0;
  pops_ = 0;
  ticket_ = 0;
  next_liveness_check_ns_ = 0;
  taken_.clear();
  dead_.clear();
  redeliveries_waiting_ = false;
  keyed_.reset();
  read_pos_ = 0;
  published_watermark_ = 0;
  in_flight_.clear();
  redeliver_.clear();
  leases_held_ = false;
  next_expiry_ms_ = 0;
  head_seq_ = 0;
  next_seq_ = 0;
  ++attach_epoch_;
  ++reattached_;
  if (Status connected = connect(); !connected) {
    // Not usable yet (say, another consumer holds the exclusive group): pops report
    // closed and try again.
    reattach_error_ = connected.error().message;
    detach();
    group_segment_ = {};
    group_ = nullptr;
    return false;
  }
  writer_ = shm::pack_owner({now.creator_pid, now.creator_start_time});
  if (options_.auto_extend) start_heartbeat();
  return true;
}

bool Consumer::fenced() const {
  return group_->fenced.load(std::memory_order_acquire) != 0;
}

std::size_t Consumer::collect(std::size_t max, PopStatus& status) {
  std::size_t n = 0;
  // Leases of this consumer's own: redeliveries first (nacked, expired), then new ones.
  // The clock is read only when a pop has something to hand out or leases are held.
  std::uint32_t now = 0;
  bool have_now = false;
  if (!redeliver_.empty() || leases_held_) {
    now = local_lease_ms();
    have_now = true;
    if (leases_held_ && shm::deadline_passed(next_expiry_ms_, now)) expire_local(now);
    if (!redeliver_.empty()) {
      n = redeliver_local(std::max<std::size_t>(1, max - max / 4), now, status);
      if (n > 0 && batch_.messages_.back().delivery_count() >= max_deliveries_) return n;
    }
  }
  shm::RecordView rec;
  while (n < max) {
    if (next_seq_ - head_seq_ >= options_.max_unacked) {
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
    if (!have_now) {
      now = local_lease_ms();
      have_now = true;
    }
    InFlight& slot = in_flight_[next_seq_ & in_flight_mask_];
    slot.position = rec.position;
    slot.state = Held::leased;
    slot.generation += 1;
    slot.deliveries = 1;
    slot.deadline_ms = now + lease_ms_;
    if (!leases_held_) {
      leases_held_ = true;
      next_expiry_ms_ = slot.deadline_ms;
    }
    Message& m = emit(rec);
    m.sequence_ = next_seq_++;
    m.lease_generation_ = slot.generation;
    m.delivery_count_ = 1;
    read_pos_ = rec.next;
    ++n;
  }
  return n;
}

// Adds the record to the batch as a message. Filled in place: building it on the stack
// and copying it in stalls on the stores.
Message& Consumer::emit(const shm::RecordView& rec) {
  Message& m = batch_.messages_.emplace_back();
  m.key_ = reinterpret_cast<const char*>(rec.key);
  m.value_ = reinterpret_cast<const char*>(rec.value);
  m.key_len_ = rec.key_len;
  m.value_len_ = rec.value_len;
  m.headers_ = reinterpret_cast<const char*>(rec.headers);
  m.headers_len_ = rec.headers_len;
  m.upstream_offset_ = rec.upstream_offset;
  m.timestamp_ns_ = rec.timestamp_ns;
  m.position_ = rec.position;
  m.attach_epoch_ = attach_epoch_;
  return m;
}

bool Consumer::writer_shut_down() const {
  return ring_.control().state.load(std::memory_order_acquire) == shm::kRingClosed;
}

const Batch& Consumer::pop(std::size_t max, std::chrono::nanoseconds wait) {
  // Attached to a fetcher that is gone: move to its successor if one runs.
  if (group_ == nullptr && !reattach_to_new_writer()) {
    batch_.messages_.clear();
    batch_.status_ = PopStatus::closed;
    return batch_;
  }
  const Batch* b = &pop_attached(max, wait);
  if (b->status() == PopStatus::closed && options_.follow_fetcher && reattach_to_new_writer()) {
    b = &pop_attached(max, wait);
  }
  if (group_ != nullptr && owner_word_ != nullptr) note_presence(b->status());
  return *b;
}

// The registry entry that `ringfeed stat` shows: unacked count, whether the limit was
// reached, and a heartbeat (every 64th pop, and whenever a pop comes back empty).
void Consumer::note_presence(PopStatus status) {
  shm::GroupSlot& slot = group_->slots[slot_];
  const auto unacked = static_cast<std::uint32_t>(in_flight());
  if (slot.unacked.load(std::memory_order_relaxed) != unacked) {
    slot.unacked.store(unacked, std::memory_order_relaxed);
  }
  const std::uint32_t flags = (status == PopStatus::in_flight_full ? shm::kSlotAtUnackedLimit : 0) |
                              (options_.auto_extend ? shm::kSlotAutoExtend : 0);
  if (slot.flags.load(std::memory_order_relaxed) != flags) {
    slot.flags.store(flags, std::memory_order_relaxed);
  }
  if ((++presence_pops_ & 63) == 0 || status != PopStatus::ok) {
    slot.heartbeat_ns.store(now_ns(), std::memory_order_relaxed);
  }
}

const Batch& Consumer::pop_attached(std::size_t max, std::chrono::nanoseconds wait) {
  batch_.messages_.clear();
  batch_.status_ = PopStatus::timed_out;
  if (max == 0) return batch_;
  if (fenced()) {
    batch_.status_ = PopStatus::fenced;
    return batch_;
  }
  PopStatus status = PopStatus::timed_out;
  if (take(max, status) > 0) {
    batch_.status_ = PopStatus::ok;
    return batch_;
  }
  if (status != PopStatus::timed_out) {
    batch_.status_ = status;
    return batch_;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + wait;
  // Spin: the record we want next announces itself in its own tag. (Not a failover
  // standby: it has nothing to take until the consumer before it goes.)
  if (wait.count() > 0 && options_.spin.count() > 0 && !standby_) {
    const auto spin_until = start + std::min(wait, options_.spin);
    for (unsigned i = 1;; ++i) {
      if (has_work()) {
        if (take(max, status) > 0) {
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
    shm::WaitResult slept = shm::WaitResult::value_changed;
    if (standby_) {
      // A failover standby sleeps until its next look at the consumers before it
      // (failover_active), whatever is published: it naps on the ring's word, which the
      // writer wakes only when it closes, and does not count itself among the sleepers.
      const std::uint32_t seen = control.wake_word.load(std::memory_order_acquire);
      slept = shm::futex_wait(control.wake_word, seen,
                              std::min<std::chrono::nanoseconds>(deadline - now, standby_nap()));
    } else {
      const std::uint32_t seen = group_->wake_word.load(std::memory_order_acquire);
      group_->sleepers.fetch_add(1, std::memory_order_seq_cst);
      // Dekker pair with the writer's commit (ring_writer.cpp, wake_sleepers).
      if (nothing_published_seq_cst() &&
          control.state.load(std::memory_order_acquire) != shm::kRingClosed) {
        slept = shm::futex_wait(group_->wake_word, seen,
                                std::min<std::chrono::nanoseconds>(deadline - now, kSleepSlice));
      }
      group_->sleepers.fetch_sub(1, std::memory_order_release);
    }
    if (take(max, status) > 0) {
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
    const bool closed = control.state.load(std::memory_order_acquire) == shm::kRingClosed;
    if ((closed || (slept == shm::WaitResult::timed_out && !ring_.writer_alive())) && !has_work()) {
      status = PopStatus::closed;
      break;
    }
  }
  if (status == PopStatus::timed_out && !has_work()) {
    const std::uint32_t state = control.state.load(std::memory_order_acquire);
    if (state == shm::kRingClosed) status = PopStatus::closed;
    if (state == shm::kRingReleased) status = PopStatus::end_of_partition;
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

AckStatus Consumer::ack_message(const Message& m) {
  if (m.attach_epoch_ != attach_epoch_) return AckStatus::lease_lost;
  if (uses_leases(options_.mode)) {
    if (leases_.ack(m.sequence_, slot_, m.lease_generation_) != shm::LeaseResult::ok) {
      lost_lease();
      return AckStatus::lease_lost;
    }
    --unacked_;
    after_settled();
    return AckStatus::ok;
  }
  AckStatus why = AckStatus::ok;
  if (held_local(m, why) == nullptr) return why;
  settle_local(m.sequence_);
  return AckStatus::ok;
}

AckStatus Consumer::ack_batch(const Batch& batch) {
  AckStatus result = AckStatus::ok;
  if (!batch.empty() && batch[0].attach_epoch_ != attach_epoch_) return AckStatus::lease_lost;
  if (uses_leases(options_.mode)) {
    // One low-sequence advance for the whole batch.
    for (const Message& m : batch) {
      if (leases_.ack(m.sequence_, slot_, m.lease_generation_) == shm::LeaseResult::ok) {
        --unacked_;
      } else {
        lost_lease();
        result = AckStatus::lease_lost;
      }
    }
    after_settled();
    return result;
  }
  for (const Message& m : batch) {
    const AckStatus r = ack_message(m);
    if (r != AckStatus::ok && result == AckStatus::ok) result = r;
  }
  return result;
}

// The public settling calls keep the registry's unacked count current for stat.
AckStatus Consumer::ack(const Message& m) {
  const AckStatus r = ack_message(m);
  note_unacked();
  return r;
}

AckStatus Consumer::ack(const Batch& batch) {
  const AckStatus r = ack_batch(batch);
  note_unacked();
  return r;
}

AckStatus Consumer::nack(const Message& m, std::chrono::milliseconds delay) {
  const AckStatus r = nack_message(m, delay);
  note_unacked();
  return r;
}

AckStatus Consumer::release(const Message& m) {
  const AckStatus r = release_message(m);
  note_unacked();
  return r;
}

AckStatus Consumer::reject(const Message& m) {
  const AckStatus r = reject_message(m);
  note_unacked();
  return r;
}

}  // namespace ringfeed
