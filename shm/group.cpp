#include "shm/group.hpp"

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "shm/lease_table.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"

namespace ringfeed::shm {

namespace {

// Fills a new group segment: header, name, mode and settings; not started (leased modes).
void init_group(std::byte* base, std::uint32_t partition, const std::string& group, Mode mode,
                const GroupSettings& settings, std::uint32_t window) {
  const ProcessIdentity self = self_identity();
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  auto* g = new (base) GroupControl{};
  g->header = SegmentHeader{kMagic,
                            kLayoutVersion,
                            static_cast<std::uint32_t>(SegmentKind::group),
                            group_segment_size(window),
                            sizeof(GroupControl),
                            window,
                            self.pid,
                            partition,
                            self.start_time,
                            0};
  std::memset(g->name, 0, sizeof g->name);
  std::memcpy(g->name, group.data(), std::min(group.size(), sizeof g->name - 1));
  g->mode = static_cast<std::uint32_t>(mode);
  g->max_deliveries = settings.max_deliveries;
  g->lease_ms = settings.lease_ms;
  std::copy(settings.backoff_ms.begin(), settings.backoff_ms.end(), g->backoff_ms);
  g->epoch_ns = static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  // A shared group starts once its creator has found its first sequence (consumer.cpp).
  g->dispatch.store(kNotStarted, std::memory_order_relaxed);
  g->low_seq.store(kNotStarted, std::memory_order_relaxed);
}

}  // namespace

Result<GroupShape> validate_group_segment(const Segment& segment, std::uint32_t partition) {
  const auto header = *reinterpret_cast<const SegmentHeader*>(segment.base());
  auto window = validate_header(segment.name(), header, segment.size(),
                                {SegmentKind::group, sizeof(GroupControl), partition});
  if (!window) return window.error();
  const std::uint64_t w = window.value();
  if (w == 0 || w > kMaxLeaseWindow || (w & (w - 1)) != 0) {
    return Error{"segment " + segment.name() + ": lease window of " + std::to_string(w) +
                     " entries is not a power of two in [1, " + std::to_string(kMaxLeaseWindow) +
                     "]",
                 EPROTO};
  }
  const auto window32 = static_cast<std::uint32_t>(w);
  if (segment.size() != group_segment_size(window32)) {
    return Error{"segment " + segment.name() + ": group segment is " +
                     std::to_string(segment.size()) + " bytes, expected " +
                     std::to_string(group_segment_size(window32)),
                 EPROTO};
  }
  const std::uint32_t mode = reinterpret_cast<const GroupControl*>(segment.base())->mode;
  if (!is_valid_mode(mode)) {
    return Error{"segment " + segment.name() + ": unknown mode " + std::to_string(mode), EPROTO};
  }
  return GroupShape{static_cast<Mode>(mode), window32};
}

Backoff::Backoff(const GroupControl* group) {
  // Another process wrote them: at most a day each.
  for (std::size_t i = 0; i < kMaxBackoffSteps && group->backoff_ms[i] != 0; ++i) {
    ms_[i] = std::min<std::uint32_t>(group->backoff_ms[i], 24u * 3600 * 1000);
    steps_ = static_cast<std::uint32_t>(i + 1);
  }
}

GroupSettings resolve(GroupSettings s, const GroupSettings& defaults) {
  auto pick = [](std::uint32_t v, std::uint32_t d, std::uint32_t fallback) {
    return v != 0 ? v : d != 0 ? d : fallback;
  };
  s.lease_window = pick(s.lease_window, defaults.lease_window, kDefaultGroupSettings.lease_window);
  s.max_deliveries =
      pick(s.max_deliveries, defaults.max_deliveries, kDefaultGroupSettings.max_deliveries);
  s.lease_ms = pick(s.lease_ms, defaults.lease_ms, kDefaultGroupSettings.lease_ms);
  return s;
}

Result<OpenedGroup> open_or_create_group(const std::string& ns, std::uint32_t partition,
                                         const std::string& group, Mode mode,
                                         const GroupSettings& settings) {
  const std::uint32_t window = uses_leases(mode) ? settings.lease_window : 1;
  if (window == 0 || window > kMaxLeaseWindow || (window & (window - 1)) != 0) {
    return Error{"lease window " + std::to_string(window) + " must be a power of two in [1, " +
                     std::to_string(kMaxLeaseWindow) + "]",
                 EINVAL};
  }
  if (settings.max_deliveries < 1 || settings.max_deliveries > kMaxDeliveriesLimit) {
    return Error{"max_deliveries " + std::to_string(settings.max_deliveries) +
                     " must be between 1 and " + std::to_string(kMaxDeliveriesLimit),
                 EINVAL};
  }
  for (const std::uint32_t ms : settings.backoff_ms) {
    if (ms > 24u * 3600 * 1000) {
      return Error{"backoff " + std::to_string(ms) + " ms is longer than a day", EINVAL};
    }
  }
  const std::string name = group_segment_name(ns, partition, group);
  auto init = [&](std::byte* base) { init_group(base, partition, group, mode, settings, window); };
  // Two consumers may race to create the group; link() lets exactly one win.
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool created = false;
    auto seg = Segment::open(name, Access::read_write);
    if (!seg && seg.error().code == ENOENT) {
      // Consumers of another user read the ring through its group: they must be able
      // to write this group's segment too, and so must the writer.
      seg = Segment::create(name, group_segment_size(window), init,
                            group_access_of_ring(ring_segment_name(ns, partition)));
      if (!seg && seg.error().code == EEXIST) continue;
      created = seg.ok();
    }
    if (!seg) return seg.error();
    auto shape = validate_group_segment(seg.value(), partition);
    if (!shape) return shape.error();
    if (shape->mode != mode) {
      return Error{"group '" + group + "' of namespace '" + ns + "' partition " +
                       std::to_string(partition) + " exists in " +
                       std::string(to_string(shape->mode)) + " mode; cannot attach in " +
                       std::string(to_string(mode)) + " mode",
                   EINVAL};
    }
    return OpenedGroup{std::move(seg.value()), shape.value(), created};
  }
  return Error{"group '" + group + "': segment " + name + " keeps appearing and vanishing", EAGAIN};
}

std::vector<KeptGroup> find_groups(const std::string& ns, std::uint32_t partition) {
  std::vector<KeptGroup> out;
  const std::string prefix = group_segment_prefix(ns, partition);
  for (const std::string& name : Segment::list(prefix)) {
    if (name.find(".tmp.") != std::string::npos) continue;  // one that was never published
    auto seg = Segment::open(name, Access::read_only);
    if (!seg) continue;
    auto shape = validate_group_segment(seg.value(), partition);
    if (!shape) continue;  // not a group a consumer could use: nothing to keep
    const auto* g = reinterpret_cast<const GroupControl*>(seg->base());
    KeptGroup k{name.substr(prefix.size()), shape->mode, {}};
    // Written by a consumer: bounded as every reader bounds them.
    k.settings.lease_window = shape->window;
    k.settings.max_deliveries =
        std::clamp<std::uint32_t>(g->max_deliveries, 1, kMaxDeliveriesLimit);
    k.settings.lease_ms = std::clamp<std::uint32_t>(g->lease_ms, 1, 24u * 3600 * 1000);
    for (std::size_t i = 0; i < kMaxBackoffSteps; ++i) {
      k.settings.backoff_ms[i] = std::min<std::uint32_t>(g->backoff_ms[i], 24u * 3600 * 1000);
    }
    if (shape->mode == Mode::broadcast) {
      for (const GroupSlot& slot : g->slots) {
        const std::uint64_t owner = slot.owner.load(std::memory_order_acquire) & ~kOwnerAwaited;
        if (owner != 0 && owner_alive(owner) && k.awaited.size() < kGroupSlots) {
          k.awaited.push_back(owner);
        }
      }
    }
    if (check_name("group", k.name).ok()) out.push_back(std::move(k));
  }
  return out;
}

Status create_started_group(const std::string& ns, std::uint32_t partition,
                            const KeptGroup& group) {
  const std::uint32_t window = uses_leases(group.mode) ? group.settings.lease_window : 1;
  auto init = [&](std::byte* base) {
    init_group(base, partition, group.name, group.mode, group.settings, window);
    auto* g = reinterpret_cast<GroupControl*>(base);
    // Started at sequence 0, position 0: where the empty ring begins. Its low watermark
    // (0) holds the ring from there until the group's consumers ack.
    if (uses_leases(group.mode)) {
      LeaseTable(g, window).prepare(0);
      g->low_seq.store(0, std::memory_order_relaxed);
      g->dispatch.store(0, std::memory_order_relaxed);
    }
    if (group.mode == Mode::broadcast) {
      timespec now{};
      ::clock_gettime(CLOCK_MONOTONIC, &now);
      const std::size_t n = std::min<std::size_t>(group.awaited.size(), kGroupSlots);
      for (std::size_t i = 0; i < n; ++i) {
        GroupSlot& slot = g->slots[i];
        slot.cursor.store(0, std::memory_order_relaxed);
        slot.heartbeat_ns.store(static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec,
                                std::memory_order_relaxed);
        slot.owner.store(group.awaited[i] | kOwnerAwaited, std::memory_order_relaxed);
      }
    }
  };
  auto seg =
      Segment::create(group_segment_name(ns, partition, group.name), group_segment_size(window),
                      init, group_access_of_ring(ring_segment_name(ns, partition)));
  if (!seg) return seg.error();
  return Ok{};
}

}  // namespace ringfeed::shm
