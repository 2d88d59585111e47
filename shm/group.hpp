// Group segments: validation and the open-or-create step of the first attach.
#pragma once

#include <cstdint>
#include <string>

#include "shm/group_layout.hpp"
#include "shm/mode.hpp"
#include "shm/result.hpp"
#include "shm/segment.hpp"

namespace ringfeed::shm {

// Checks header, size, slot count and mode of a mapped group segment; returns the mode.
Result<Mode> validate_group_segment(const Segment& segment, std::uint32_t partition);

struct OpenedGroup {
  Segment segment;
  bool created = false;  // this call created it (its watermark has not joined the ring yet)
};

// Opens the group's segment, creating it in `mode` if it does not exist. Refuses a group
// that exists in another mode, naming both.
Result<OpenedGroup> open_or_create_group(const std::string& ns, std::uint32_t partition,
                                         const std::string& group, Mode mode);

}  // namespace ringfeed::shm
