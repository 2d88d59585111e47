// Group segments: validation and the open-or-create step of the first attach.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "shm/group_layout.hpp"
#include "shm/mode.hpp"
#include "shm/result.hpp"
#include "shm/segment.hpp"

namespace ringfeed::shm {

// What a group is made with; fixed for its life.
// A field left 0 takes the ring's default (set by its writer: the fetcher's flags), and
// kDefaultGroupSettings where the ring has none.
struct GroupSettings {
  std::uint32_t lease_window = 0;    // most messages between the oldest unacked and the
                                     // newest handed out (leased modes); a power of two
  std::uint32_t max_deliveries = 0;  // deliveries before a message is dead-lettered
  std::uint32_t lease_ms = 0;        // default lease length
  // Redelivery backoff after a nack or an expiry, by delivery count (group_layout.hpp);
  // all zero: none. Not taken from the ring's defaults.
  std::array<std::uint32_t, kMaxBackoffSteps> backoff_ms{};
};
inline constexpr GroupSettings kDefaultGroupSettings{65536, 5, 30'000, {}};

// A group's backoff list as read (and bounded) from its segment.
class Backoff {
 public:
  Backoff() = default;
  explicit Backoff(const GroupControl* group);
  // How long a message delivered `deliveries` times waits before it is due again.
  std::uint32_t after(std::uint32_t deliveries) const {
    if (steps_ == 0 || deliveries == 0) return 0;
    return ms_[std::min<std::uint32_t>(deliveries, steps_) - 1];
  }

 private:
  std::array<std::uint32_t, kMaxBackoffSteps> ms_{};
  std::uint32_t steps_ = 0;
};

// `settings` with every 0 field taken from `defaults`, then from kDefaultGroupSettings.
GroupSettings resolve(GroupSettings settings, const GroupSettings& defaults);

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
// `settings` should be resolved (no 0 fields).
Result<OpenedGroup> open_or_create_group(const std::string& ns, std::uint32_t partition,
                                         const std::string& group, Mode mode,
                                         const GroupSettings& settings = kDefaultGroupSettings);

// A group of a ring, as a writer that takes the ring over from a dead one finds it.
struct KeptGroup {
  std::string name;
  Mode mode;
  GroupSettings settings;  // window, max deliveries, lease and backoff as the group had
  // Broadcast: the owner words of the consumers that lived when it was found.
  std::vector<std::uint64_t> awaited;
};

// The groups on partition `partition` of namespace `ns` whose segments are valid.
std::vector<KeptGroup> find_groups(const std::string& ns, std::uint32_t partition);

// Creates `group` on a ring that has published nothing yet, started at its beginning
// (leased modes: dispatch and low sequence 0). A writer that takes a ring over creates
// the dead writer's groups again this way, so that what one group acks is neither
// reused nor committed upstream before the others acked it too, even those whose
// consumers come back late. A broadcast group, which holds data only for its consumers,
// gets an awaited slot (group_layout.hpp) for each of `group.awaited`: until that
// consumer follows, dies, or kAwaitedSlotGraceNs passes, the ring is held for it from
// its start, so it resumes without a gap. Error code EEXIST if a consumer created it first.
Status create_started_group(const std::string& ns, std::uint32_t partition, const KeptGroup& group);

}  // namespace ringfeed::shm
