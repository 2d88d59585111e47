// Reads a group's shared state the way an outside observer (ringfeed stat) does: for
// tests that wait until a group has settled everything.
#pragma once

#include <cstdint>
#include <string>

#include "shm/group_layout.hpp"
#include "shm/lease_table.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"

namespace ringfeed::test {

// The group's low sequence (every message below it is acked or dead-lettered); 0 while
// the group does not exist or has not started.
inline std::uint64_t group_low_seq(const std::string& ns, const std::string& group,
                                   std::uint32_t partition = 0) {
  auto seg =
      shm::Segment::open(shm::group_segment_name(ns, partition, group), shm::Access::read_only);
  if (!seg) return 0;
  const std::uint64_t low = reinterpret_cast<const shm::GroupControl*>(seg->base())->low_seq.load();
  return low == shm::kNotStarted ? 0 : low;
}

// How many pops sleep now waiting for the group's next message (0 if it does not exist).
inline std::uint32_t group_sleepers(const std::string& ns, const std::string& group,
                                    std::uint32_t partition = 0) {
  auto seg =
      shm::Segment::open(shm::group_segment_name(ns, partition, group), shm::Access::read_only);
  if (!seg) return 0;
  return reinterpret_cast<const shm::GroupControl*>(seg->base())->sleepers.load();
}

}  // namespace ringfeed::test
