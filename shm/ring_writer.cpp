#include "shm/ring_writer.hpp"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "shm/futex.hpp"
#include "shm/group.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"
#include "shm/ring_reader.hpp"

namespace ringfeed::shm {

namespace {

// How often commit() looks for new groups, so their sleepers get woken promptly.
constexpr auto kGroupPollInterval = std::chrono::milliseconds(1);

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A broadcast slot kept for a consumer of a dead writer's ring that did not follow within
// the grace period (group_layout.hpp). Its time comes from shared memory: one far in the
// future is as expired as one far in the past.
bool awaited_too_long(const GroupSlot& slot, std::uint64_t owner) {
  if ((owner & kOwnerAwaited) == 0) return false;
  const std::int64_t age = now_ns() - slot.heartbeat_ns.load(std::memory_order_relaxed);
  return age > kAwaitedSlotGraceNs || age < -kAwaitedSlotGraceNs;
}

void remove_partition_segments(const std::string& ns, std::uint32_t partition) {
  const std::string prefix = "ringfeed." + ns + ".p" + std::to_string(partition) + ".";
  for (const auto& name : Segment::list(prefix)) Segment::remove(name);
}

}  // namespace

Result<std::unique_ptr<RingWriter>> RingWriter::create(const RingWriterOptions& options) {
  if (auto ok = check_name("namespace", options.ns); !ok) return ok.error();
  const std::uint64_t cap = options.capacity;
  if (cap < kMinRingCapacity || cap > kMaxRingCapacity || (cap & (cap - 1)) != 0) {
    return Error{
        "ring capacity " + std::to_string(cap) + " must be a power of two between 4 KiB and 1 TiB",
        EINVAL};
  }
  std::unique_ptr<RingWriter> w(new RingWriter());
  w->options_ = options;
  w->capacity_ = cap;
  w->mask_ = cap - 1;
  w->max_record_ = max_record_size(cap);
  w->group_prefix_ = group_segment_prefix(options.ns, options.partition);
  w->pending_.reserve(1024);

  // Watch before anything can be created, so that no group is missed.
  w->inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->inotify_fd_ < 0 ||
      ::inotify_add_watch(w->inotify_fd_, std::string(kShmDir).c_str(),
                          IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM) < 0) {
    return Error{std::string("cannot watch ") + std::string(kShmDir) + " with inotify: " +
                     std::strerror(errno) + " (raise fs.inotify.max_user_instances?)",
                 errno};
  }

  const std::string name = ring_segment_name(options.ns, options.partition);
  const ProcessIdentity self = self_identity();
  auto init = [&](std::byte* base) {
    auto* c = new (base) RingControl{};
    c->header = SegmentHeader{kMagic,
                              kLayoutVersion,
                              static_cast<std::uint32_t>(SegmentKind::ring),
                              ring_segment_size(cap),
                              sizeof(RingControl),
                              cap,
                              self.pid,
                              options.partition,
                              self.start_time,
                              0};
    c->write_pos.store(0, std::memory_order_relaxed);
    c->tail.store(0, std::memory_order_relaxed);
    c->reusable.store(0, std::memory_order_relaxed);
    c->wake_word.store(0, std::memory_order_relaxed);
    c->state.store(kRingOpen, std::memory_order_relaxed);
    const GroupSettings d = resolve(options.group_defaults, kDefaultGroupSettings);
    c->default_lease_window = d.lease_window;
    c->default_max_deliveries = d.max_deliveries;
    c->default_lease_ms = d.lease_ms;
  };
  // The groups of a dead writer's ring: created again on the new ring (see below).
  std::vector<KeptGroup> kept = options.keep_groups;
  for (int attempt = 0;; ++attempt) {
    auto seg = Segment::create(name, ring_segment_size(cap), init, options.access);
    if (seg) {
      w->segment_ = std::move(seg.value());
      break;
    }
    if (seg.error().code != EEXIST || attempt > 0) return seg.error();
    // Someone's ring is there: refuse if its writer lives, take over if it died.
    if (auto old = Segment::open(name, Access::read_only)) {
      const auto h = *reinterpret_cast<const SegmentHeader*>(old->base());
      const bool valid = validate_ring_header(name, h, old->size(), options.partition).ok();
      if (valid && owner_alive(pack_owner({h.creator_pid, h.creator_start_time}))) {
        return Error{"partition " + std::to_string(options.partition) + " of namespace '" +
                         options.ns + "' is already served by pid " + std::to_string(h.creator_pid),
                     EBUSY};
      }
    }
    for (KeptGroup& g : find_groups(options.ns, options.partition)) kept.push_back(std::move(g));
    remove_partition_segments(options.ns, options.partition);
  }
  w->prefault();
  w->control_ = reinterpret_cast<RingControl*>(w->segment_.base());
  w->data_ = w->segment_.base() + kRingDataOffset;
  w->index_ = reinterpret_cast<std::atomic<std::uint64_t>*>(w->data_ + cap);
  w->index_mask_ = ring_index_slots(cap) - 1;
  // The dead writer committed upstream only what all of its groups acked: the new ring
  // starts there and must hold every record for each of them again, also for a group
  // whose consumers are gone for now (it would otherwise start wherever the others got
  // to when its first consumer came back, and never get what lay before).
  for (const KeptGroup& g : kept) {
    auto ok = create_started_group(options.ns, options.partition, g);
    if (!ok && ok.error().code != EEXIST) {
      return Error{"partition " + std::to_string(options.partition) + " of namespace '" +
                       options.ns + "': cannot keep group '" + g.name +
                       "' of the ring taken over: " + ok.error().message,
                   ok.error().code};
    }
  }
  w->scan_groups();
  w->next_group_poll_ = std::chrono::steady_clock::now() + kGroupPollInterval;
  return w;
}

// Every page of the segment now: a fresh ring would otherwise take a page fault (and the
// zeroing of a page) every 4 KiB of its first lap, in the middle of fetching. The pages
// are allocated in one go (fallocate, which tmpfs does faster than page by page), then
// mapped (MADV_POPULATE_WRITE, Linux 5.14). Either may fail (an older kernel, a full
// /dev/shm): the pages then come lazily, as they would have.
void RingWriter::prefault() {
  const std::string path = std::string(kShmDir) + segment_.name();
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    ::fallocate(fd, 0, 0, static_cast<off_t>(segment_.size()));
    ::close(fd);
  }
  ::madvise(segment_.base(), segment_.size(), MADV_POPULATE_WRITE);
}

RingWriter::~RingWriter() {
  try {
    close();
    if (segment_.mapped()) remove_partition_segments(options_.ns, options_.partition);
  } catch (...) {
    // Out of memory while listing names: the segments stay; the next writer on this
    // partition removes them when it takes over.
  }
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
}

void RingWriter::close() {
  if (closed_ || control_ == nullptr) return;
  commit();
  closed_ = true;
  control_->state.store(kRingClosed, std::memory_order_release);
  control_->wake_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(control_->wake_word);
  wake_all_groups();
}

PublishStatus RingWriter::try_reserve(std::uint32_t key_len, std::uint32_t value_len,
                                      std::uint64_t upstream_offset, std::int64_t timestamp_ns,
                                      Reservation& out, std::uint32_t headers_len) {
  const std::uint64_t size = record_size(key_len, value_len, headers_len);
  if (size > max_record_) return PublishStatus::too_large;
  const std::uint64_t idx = reserved_ & mask_;
  const std::uint64_t pad = idx + size > capacity_ ? capacity_ - idx : 0;
  // Room for the padding, the record, and the header after it (zeroed ahead of time).
  const std::uint64_t need = pad + size + sizeof(RecordHeader);
  if (reserved_ + need > limit_ + capacity_) {
    reclaim(false);
    if (reserved_ + need > limit_ + capacity_) return PublishStatus::full;
  }
  if (pad != 0) {
    // The padding header's tag was zeroed when the record before it was reserved; the
    // record after it starts the next lap, where stale bytes of an older lap lie.
    pending_.push_back({reserved_ | kTagPadding, 0, 0, 0, 0});
    reserved_ += pad;
    header_at(reserved_)->tag.store(0, std::memory_order_relaxed);
  }
  // The header fields are written at commit, right before the tag: the line a reader
  // polls is then written in one go instead of twice.
  const std::uint64_t kind = headers_len == 0 ? kTagMessage : kTagMessageWithHeaders;
  pending_.push_back({reserved_ | kind, key_len, value_len, upstream_offset, timestamp_ns});
  out.position = reserved_;
  out.key = reinterpret_cast<std::byte*>(header_at(reserved_)) + sizeof(RecordHeader);
  out.value = out.key + key_len;
  out.headers = nullptr;
  if (headers_len != 0) {
    std::memcpy(out.value + value_len, &headers_len, sizeof headers_len);
    out.headers = out.value + value_len + sizeof headers_len;
  }
  reserved_ += size;
  // A reader that reaches the next position must see 0 there, not stale bytes of an
  // older lap; this store is ordered before the release of this record's tag.
  header_at(reserved_)->tag.store(0, std::memory_order_relaxed);
  return PublishStatus::ok;
}

PublishStatus RingWriter::reserve(std::uint32_t key_len, std::uint32_t value_len,
                                  std::uint64_t upstream_offset, std::int64_t timestamp_ns,
                                  Reservation& out, std::chrono::nanoseconds wait,
                                  std::uint32_t headers_len) {
  PublishStatus st =
      try_reserve(key_len, value_len, upstream_offset, timestamp_ns, out, headers_len);
  if (st != PublishStatus::full || wait.count() <= 0) return st;
  commit();  // consumers can only release space for what they can see
  const std::int64_t deadline = now_ns() + wait.count();
  std::int64_t next_reap = 0;
  for (unsigned spins = 0;; ++spins) {
    const std::int64_t now = now_ns();
    const bool reap = now >= next_reap;
    if (reap) next_reap = now + 1'000'000;
    reclaim(reap);
    st = try_reserve(key_len, value_len, upstream_offset, timestamp_ns, out, headers_len);
    if (st != PublishStatus::full || now >= deadline) return st;
    if (spins < 64) {
      // busy: consumers usually free space within microseconds
    } else if (spins < 256) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

void RingWriter::commit() {
  if (pending_.empty()) return;
  const std::uint64_t published_before = published_;
  for (const PendingRecord& p : pending_) {
    RecordHeader* h = header_at(p.tag & ~kTagKindMask);
    if ((p.tag & kTagKindMask) != kTagPadding) {
      h->key_len = p.key_len;
      h->value_len = p.value_len;
      h->upstream_offset = p.upstream_offset;
      h->timestamp_ns = p.timestamp_ns;
      index_[published_ & index_mask_].store(p.tag & ~kTagKindMask, std::memory_order_relaxed);
      ++published_;
    }
    h->tag.store(p.tag, std::memory_order_release);
  }
  pending_.clear();
  committed_ = reserved_;
  index_[published_ & index_mask_].store(committed_, std::memory_order_relaxed);
  // seq_cst: one half of the Dekker pairs with sleeping consumers (see wake_sleepers).
  control_->write_pos.store(committed_, std::memory_order_seq_cst);
  control_->published.store(published_, std::memory_order_seq_cst);
  wake_sleepers(published_ - published_before);
}

void RingWriter::wake_sleepers(std::uint64_t new_messages) {
  // New groups are looked for at most every millisecond; the clock itself is read only
  // every 16th commit (it costs as much as the rest of a small commit).
  if ((++commits_ & 15) == 0) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_group_poll_) {
      next_group_poll_ = now + kGroupPollInterval;
      service(std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count());
    }
  }
  // Dekker pair: we store write_pos then load sleepers; a sleeper increments sleepers then
  // loads write_pos (all seq_cst). Either it sees our new write_pos and does not sleep,
  // or we see its increment and wake it.
  for (const TrackedGroup& g : groups_) {
    const std::uint32_t sleepers = g.control->sleepers.load(std::memory_order_seq_cst);
    if (sleepers == 0) continue;
    // Any consumer of a shared group can take any new message, and one that wakes takes
    // all it can: waking more of them than there are new messages only makes the rest
    // go back to sleep, on cpus the others need. In the other modes each sleeper waits
    // for messages of its own (its cursor, its keys), so all of them are woken.
    int count = INT_MAX;
    if (g.mode == Mode::shared) {
      count = static_cast<int>(std::min<std::uint64_t>({new_messages, sleepers, INT_MAX}));
    }
    g.control->wake_word.fetch_add(1, std::memory_order_release);
    woken_ += static_cast<std::uint64_t>(futex_wake(g.control->wake_word, count));
    ++wakes_;
  }
}

void RingWriter::set_released(bool released) {
  const std::uint32_t want = released ? kRingReleased : kRingOpen;
  const std::uint32_t now = control_->state.load(std::memory_order_relaxed);
  if (now == kRingClosed || now == want) return;
  control_->state.store(want, std::memory_order_release);
  control_->wake_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(control_->wake_word);
  wake_all_groups();
}

void RingWriter::wake_all_groups() {
  for (const TrackedGroup& g : groups_) {
    g.control->wake_word.fetch_add(1, std::memory_order_release);
    futex_wake_all(g.control->wake_word);
  }
}

std::size_t RingWriter::publish(std::span<const OutMessage> batch, std::chrono::nanoseconds wait,
                                PublishStatus* status) {
  std::size_t n = 0;
  PublishStatus st = PublishStatus::ok;
  std::int64_t deadline = 0;  // read the clock only if the ring fills up
  for (const OutMessage& m : batch) {
    if (m.key.size() > UINT32_MAX || m.value.size() > UINT32_MAX || m.headers.size() > UINT32_MAX) {
      st = PublishStatus::too_large;
      break;
    }
    const auto key_len = static_cast<std::uint32_t>(m.key.size());
    const auto value_len = static_cast<std::uint32_t>(m.value.size());
    const auto headers_len = static_cast<std::uint32_t>(m.headers.size());
    Reservation r;
    st = try_reserve(key_len, value_len, m.upstream_offset, m.timestamp_ns, r, headers_len);
    if (st == PublishStatus::full && wait.count() > 0) {
      if (deadline == 0) deadline = now_ns() + wait.count();
      const auto left = std::chrono::nanoseconds(std::max<std::int64_t>(0, deadline - now_ns()));
      st = reserve(key_len, value_len, m.upstream_offset, m.timestamp_ns, r, left, headers_len);
    }
    if (st != PublishStatus::ok) break;
    if (key_len != 0) std::memcpy(r.key, m.key.data(), key_len);
    if (value_len != 0) std::memcpy(r.value, m.value.data(), value_len);
    if (headers_len != 0) std::memcpy(r.headers, m.headers.data(), headers_len);
    ++n;
  }
  commit();
  if (status != nullptr) *status = st;
  return n;
}

void RingWriter::fence(TrackedGroup& g, std::string reason) {
  g.fenced = true;
  g.fence_reason = std::move(reason);
  g.control->fenced.store(1, std::memory_order_release);
}

void RingWriter::consider(TrackedGroup& g, std::uint64_t value, std::uint64_t& min,
                          const char* field) {
  if (value > committed_ || (value & (kRecordAlign - 1)) != 0) {
    fence(g, std::string(field) + " " + std::to_string(value) + " is past the ring's end " +
                 std::to_string(committed_) + " or misaligned");
    return;
  }
  min = std::min(min, std::max(value, limit_));
}

std::uint64_t RingWriter::min_watermark(bool reap_dead) {
  std::uint64_t min = committed_;
  bool held = false;  // some group holds a position (a broadcast group only through a consumer)
  for (TrackedGroup& g : groups_) {
    if (g.fenced) continue;
    if (g.mode == Mode::broadcast) {
      for (GroupSlot& slot : g.control->slots) {
        std::uint64_t owner = slot.owner.load(std::memory_order_seq_cst);
        if (owner == 0) continue;
        if (reap_dead && (!owner_alive(owner) || awaited_too_long(slot, owner))) {
          // Its private state is dropped; the CAS fails if someone reaped it already.
          slot.owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel);
          continue;
        }
        consider(g, slot.cursor.load(std::memory_order_seq_cst), min, "broadcast cursor");
        if (g.fenced) break;
        held = true;
      }
    } else {
      consider(g, g.control->low_watermark.load(std::memory_order_seq_cst), min, "low watermark");
      held = held || !g.fenced;
    }
  }
  // Held by nobody (no group yet, only broadcast groups without a consumer, or only fenced
  // ones): nothing more is reusable. Were it all reusable, a group that joins next (or a
  // broadcast consumer a moment after its group was created) would start past records no
  // group took, and the fetcher would count them acked and commit them upstream.
  return held ? min : limit_;
}

void RingWriter::reclaim(bool reap_dead) {
  const std::uint64_t m1 = min_watermark(reap_dead);
  control_->tail.store(m1, std::memory_order_seq_cst);
  poll_groups();
  const std::uint64_t m2 = min_watermark(false);
  limit_ = std::max(limit_, std::min(m1, m2));
  control_->reusable.store(limit_, std::memory_order_release);
  // A group found by the second pass holds data below m1: say so to later joiners.
  if (limit_ < m1) control_->tail.store(limit_, std::memory_order_seq_cst);
}

void RingWriter::poll_groups() {
  alignas(inotify_event) char buf[4096];
  for (;;) {
    const ssize_t n = ::read(inotify_fd_, buf, sizeof buf);
    if (n <= 0) return;  // EAGAIN: nothing new
    for (ssize_t off = 0; off < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      if ((e->mask & IN_Q_OVERFLOW) != 0) {
        scan_groups();
        continue;
      }
      if (e->len == 0) continue;
      const std::string_view name(e->name);
      if (name.substr(0, group_prefix_.size()) != group_prefix_ ||
          name.find(".tmp.") != std::string_view::npos) {
        continue;
      }
      if ((e->mask & (IN_DELETE | IN_MOVED_FROM)) != 0) {
        forget_group(name);
      } else {
        register_group(std::string(name));
      }
    }
  }
}

void RingWriter::scan_groups() {
  for (const auto& name : Segment::list(group_prefix_)) {
    if (name.find(".tmp.") == std::string::npos) register_group(name);
  }
}

void RingWriter::register_group(const std::string& segment_name) {
  for (const TrackedGroup& g : groups_) {
    if (g.name == segment_name) return;
  }
  auto reject = [&](const std::string& why) {
    if (rejected_.size() < 64) rejected_.push_back(why);
  };
  auto seg = Segment::open(segment_name, Access::read_write);
  if (!seg) return reject(seg.error().message);
  auto mode = validate_group_segment(seg.value(), options_.partition);  // read once, kept
  if (!mode) return reject(mode.error().message);
  auto* control = reinterpret_cast<GroupControl*>(seg->base());
  TrackedGroup g;
  g.name = segment_name;
  g.segment = std::move(seg.value());
  g.control = control;
  g.mode = mode->mode;
  if (uses_leases(g.mode)) {
    g.leases = LeaseTable(control, mode->window);
    g.epoch_ns = control->epoch_ns;
    g.max_deliveries = std::clamp<std::uint32_t>(control->max_deliveries, 1, kMaxDeliveriesLimit);
  }
  groups_.push_back(std::move(g));
}

// Someone removed a group's name. Its data is no longer held for it, so its consumers
// (still mapped) are told, and a group created again under the name is a new group.
void RingWriter::forget_group(std::string_view segment_name) {
  for (auto it = groups_.begin(); it != groups_.end(); ++it) {
    if (it->name == segment_name) {
      fence(*it, "its segment was removed");
      groups_.erase(it);
      return;
    }
  }
}

void RingWriter::service() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  service(static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec);
}

void RingWriter::service(std::int64_t now_ns) {
  poll_groups();
  // Liveness costs a /proc read per consumer: every 10 ms is enough.
  const bool check_liveness = now_ns >= next_liveness_check_ns_;
  if (check_liveness) next_liveness_check_ns_ = now_ns + kLivenessIntervalNs;
  for (TrackedGroup& g : groups_) {
    if (g.fenced) continue;
    if (!uses_leases(g.mode)) {
      // Exclusive and broadcast consumers keep their leases themselves: a dead one's slot
      // only needs freeing (a broadcast one's cursor goes with it, as in reclaim).
      if (check_liveness) free_dead_slots(g);
      continue;
    }
    std::uint64_t dead_owners = 0;
    std::uint64_t dead_words[kGroupSlots] = {};
    if (check_liveness) {
      for (std::uint32_t i = 0; i < kGroupSlots; ++i) {
        const std::uint64_t owner = g.control->slots[i].owner.load(std::memory_order_acquire);
        if (owner != 0 && !owner_alive(owner)) {
          dead_owners |= 1ull << i;
          dead_words[i] = owner;
        }
      }
    }
    const std::uint32_t now_ms = LeaseTable::to_lease_ms(now_ns, g.epoch_ns);
    dead_.clear();
    // Abandoned entries are judged only on liveness passes, 10 ms apart. key_shared
    // groups take messages out of order: entries below dispatch not handed out yet are
    // normal there, not abandoned.
    const bool judge_abandoned = check_liveness && g.mode != Mode::key_shared;
    g.leases.reap(now_ms, dead_owners, g.max_deliveries, dead_,
                  judge_abandoned ? &g.abandoned : nullptr, dead_words);
    // Slots of dead consumers are free once their leases are back.
    for (std::uint32_t i = 0; i < kGroupSlots; ++i) {
      if (((dead_owners >> i) & 1u) == 0) continue;
      std::uint64_t owner = g.control->slots[i].owner.load(std::memory_order_acquire);
      if (owner != 0 && !owner_alive(owner)) {
        g.control->slots[i].owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel);
      }
    }
    store_dead_letters(g);
  }
}

void RingWriter::free_dead_slots(TrackedGroup& g) {
  for (GroupSlot& slot : g.control->slots) {
    std::uint64_t owner = slot.owner.load(std::memory_order_acquire);
    if (owner != 0 && (!owner_alive(owner) || awaited_too_long(slot, owner))) {
      slot.owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel);
    }
  }
}

std::int64_t RingWriter::next_service_ns(std::int64_t now_ns) {
  // Lease words looked at per group; more in flight than this: no later than the next
  // liveness check (the reaper's own pass looks at all of them).
  constexpr std::uint64_t kDeadlineScan = 4096;
  std::int64_t next = kNoServiceDue;
  // The next liveness check, not earlier than now (a pass at once does it).
  const std::int64_t liveness = std::max(now_ns, next_liveness_check_ns_);
  for (TrackedGroup& g : groups_) {
    if (g.fenced || !uses_leases(g.mode)) continue;
    bool attached = false;
    for (const GroupSlot& slot : g.control->slots) {
      attached |= slot.owner.load(std::memory_order_acquire) != 0;
    }
    if (attached || !g.abandoned.empty()) next = std::min(next, liveness);
    const std::uint64_t low = g.leases.low_seq();
    const std::uint64_t d = g.leases.dispatch();
    // Not started yet (kNotStarted, kStarting), or garbage: nothing in flight to look at.
    const bool started = d < kStarting && low <= d && d - low <= g.leases.window();
    // Messages a consumer may take (or leases it may hold) the moment it attaches.
    if (!attached && (started ? low < published_ : published_ > 0)) {
      next = std::min(next, now_ns + kAttachLookNs);
    }
    if (!started) continue;
    const std::uint32_t now_ms = LeaseTable::to_lease_ms(now_ns, g.epoch_ns);
    const std::uint64_t end = std::min(d, low + kDeadlineScan);
    if (end < d) next = std::min(next, liveness);
    for (std::uint64_t seq = low; seq < end; ++seq) {
      const Lease l = Lease::unpack(g.leases.word(seq));
      if (!g.leases.current_lap(seq, l)) {
        // Taken but not written yet: abandoned if still so at a liveness pass. In a
        // key_shared group it may just not have been handed out yet.
        if (g.mode != Mode::key_shared) next = std::min(next, liveness);
        continue;
      }
      if (l.state == LeaseState::leased) {
        // At least a millisecond on: a pass finds a lease expired once the millisecond of
        // its deadline began, and one it left leased must not make the caller spin.
        const auto left = static_cast<std::int32_t>(l.deadline_ms - now_ms);
        next = std::min(next, now_ns + std::max<std::int64_t>(1, left) * 1'000'000);
      } else if (l.state == LeaseState::dead) {
        next = std::min(next, liveness);  // the dead-letter sink refused it: try again
      }
    }
  }
  return next;
}

// Dead messages of a shared group go to the sink, then count as acked, so the group's
// low watermark can pass them. The message is still in the ring: the group holds it.
void RingWriter::store_dead_letters(TrackedGroup& g) {
  dead_found_.clear();
  g.leases.find_dead(1024, dead_found_);
  const std::string_view group = std::string_view(g.name).substr(group_prefix_.size());
  for (const TakenLease& d : dead_found_) {
    if (d.seq >= published_) continue;  // garbage: no such message
    const std::uint64_t position = index_[d.seq & index_mask_].load(std::memory_order_relaxed);
    const RecordHeader* h = header_at(position);
    const std::uint64_t tag = h->tag.load(std::memory_order_relaxed);
    if (tag != (position | kTagMessage) && tag != (position | kTagMessageWithHeaders)) continue;
    // Key and value (the headers are not kept in dead letters).
    const std::uint64_t size = record_size(h->key_len, h->value_len);
    if (size > max_record_ || (position & mask_) + size > capacity_) continue;
    const char* key = reinterpret_cast<const char*>(h) + sizeof(RecordHeader);
    const DeadLetter letter{group,
                            d.seq,
                            {key, h->key_len},
                            {key + h->key_len, h->value_len},
                            h->upstream_offset,
                            h->timestamp_ns,
                            d.lease.deliveries,
                            static_cast<DeadReason>(d.lease.deadline_ms)};
    if (dead_letter_sink_) {
      if (!dead_letter_sink_(letter)) break;  // try again at the next pass
      if (g.leases.settle_dead(d)) ++dead_lettered_;
    } else if (g.leases.settle_dead(d)) {
      ++dead_letters_dropped_;
    }
  }
  // Also when nothing died: a consumer killed between moving low_seq and raising the
  // watermark leaves the watermark behind, and this catches it up.
  const std::uint64_t low = g.leases.advance_low();
  if (low <= published_) {
    raise_low_watermark(g.control, index_[low & index_mask_].load(std::memory_order_relaxed));
  }
}

std::vector<GroupInfo> RingWriter::groups() const {
  std::vector<GroupInfo> out;
  for (const TrackedGroup& g : groups_) {
    out.push_back({g.name.substr(group_prefix_.size()), g.mode, g.fenced, g.fence_reason});
  }
  return out;
}

}  // namespace ringfeed::shm
