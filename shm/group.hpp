// Group segments: validation and the open-or-create step of the first attach.
#pragma once

#include <cstdint>
#include <string>

#include "shm/group_layout.hpp"
#include "shm/mode.hpp"
#include "shm/result.hpp"
#include "shm/segment.hpp"

namespace ringfeed::shm {

// What a group is made with; fixed for its life.
struct GroupSettings {
  std::uint32_t lease_window = 65536;  // most messages between the oldest unacked and the
                                       // newest handed out (shared mode); a power of two
  std::uint32_t max_deliveries = 5;    // deliveries before a message is dead-lettered
  std::uint32_t lease_ms = 30'000;     // default lease length
};

// What this process checked about a mapped group segment and keeps using.
struct GroupShape {
  Mode mode;
  std::uint32_t window;  // lease table entries, a power of two
};

// Checks header, size, window and mode of a mapped group segment.
Result<GroupShape> validate_group_segment(const Segment& segment, std::uint32_t partition);

struct OpenedGroup {
  Segment segment;
  GroupShape shape;
  bool created = false;  // this call created it (its watermark has not joined the ring yet)
};

// Opens the group's segment, creating it in `mode` with `settings` if it does not exist.
// Refuses a group that exists in another mode, naming both.
Result<OpenedGroup> open_or_create_group(const std::string& ns, std::uint32_t partition,
                                         const std::string& group, Mode mode,
                                         const GroupSettings& settings = {});

}  // namespace ringfeed::shm
