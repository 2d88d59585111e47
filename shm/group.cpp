#include "shm/group.hpp"

#include <cerrno>
#include <cstring>
#include <new>

#include "shm/names.hpp"
#include "shm/process.hpp"

namespace ringfeed::shm {

Result<Mode> validate_group_segment(const Segment& segment, std::uint32_t partition) {
  const auto header = *reinterpret_cast<const SegmentHeader*>(segment.base());
  auto slots = validate_header(segment.name(), header, segment.size(),
                               {SegmentKind::group, sizeof(GroupControl), partition});
  if (!slots) return slots.error();
  if (segment.size() != sizeof(GroupControl)) {
    return Error{"segment " + segment.name() + ": group segment is " +
                     std::to_string(segment.size()) + " bytes, expected " +
                     std::to_string(sizeof(GroupControl)),
                 EPROTO};
  }
  if (slots.value() != kGroupSlots) {
    return Error{"segment " + segment.name() + ": " + std::to_string(slots.value()) +
                     " consumer slots, expected " + std::to_string(kGroupSlots),
                 EPROTO};
  }
  const std::uint32_t mode = reinterpret_cast<const GroupControl*>(segment.base())->mode;
  if (!is_valid_mode(mode)) {
    return Error{"segment " + segment.name() + ": unknown mode " + std::to_string(mode), EPROTO};
  }
  return static_cast<Mode>(mode);
}

Result<OpenedGroup> open_or_create_group(const std::string& ns, std::uint32_t partition,
                                         const std::string& group, Mode mode) {
  const std::string name = group_segment_name(ns, partition, group);
  const ProcessIdentity self = self_identity();
  auto init = [&](std::byte* base) {
    auto* g = new (base) GroupControl{};
    g->header = SegmentHeader{kMagic,
                              kLayoutVersion,
                              static_cast<std::uint32_t>(SegmentKind::group),
                              sizeof(GroupControl),
                              sizeof(GroupControl),
                              kGroupSlots,
                              self.pid,
                              partition,
                              self.start_time,
                              0};
    std::memset(g->name, 0, sizeof g->name);
    std::memcpy(g->name, group.data(), std::min(group.size(), sizeof g->name - 1));
    g->mode = static_cast<std::uint32_t>(mode);
  };
  // Two consumers may race to create the group; link() lets exactly one win.
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool created = false;
    auto seg = Segment::open(name, Access::read_write);
    if (!seg && seg.error().code == ENOENT) {
      seg = Segment::create(name, sizeof(GroupControl), init);
      if (!seg && seg.error().code == EEXIST) continue;
      created = seg.ok();
    }
    if (!seg) return seg.error();
    auto existing = validate_group_segment(seg.value(), partition);
    if (!existing) return existing.error();
    if (existing.value() != mode) {
      return Error{"group '" + group + "' of namespace '" + ns + "' partition " +
                       std::to_string(partition) + " exists in " +
                       std::string(to_string(existing.value())) + " mode; cannot attach in " +
                       std::string(to_string(mode)) + " mode",
                   EINVAL};
    }
    return OpenedGroup{std::move(seg.value()), created};
  }
  return Error{"group '" + group + "': segment " + name + " keeps appearing and vanishing", EAGAIN};
}

}  // namespace ringfeed::shm
