// The groups of a fetcher's rings, kept in a file when it stops cleanly (its segments go
// with it) so that the next fetcher of the namespace creates them again at the start of
// its rings, as a fetcher that takes over from a dead one does from the dead one's
// segments (shm::create_started_group). Without it, a group whose consumers came back
// after another group's would start where that one had acked to, and the fetcher would
// commit upstream what it never saw.
//
// A text file, one group per line after a first line "ringfeed-groups 1":
//
//   PARTITION MODE NAME WINDOW MAX_DELIVERIES LEASE_MS B0,B1,...,B7 [AWAITED...]
//
// B0..B7 the redelivery backoff in milliseconds; AWAITED (broadcast) the owner words, in
// hex, of the consumers that were attached. Replaced whole (io::replace_file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shm/group.hpp"
#include "shm/result.hpp"

namespace ringfeed {

// groups[p]: the groups of partition p.
using GroupList = std::vector<std::vector<shm::KeptGroup>>;

std::string encode_group_list(const GroupList& groups);

// The groups in `text` (the content of `path`, named in errors) of partitions below
// `partitions`; the others are left out. An error names the line and what is wrong.
Result<GroupList> decode_group_list(const std::string& text, const std::string& path,
                                    std::uint32_t partitions);

Status save_group_list(const std::string& path, const GroupList& groups);
// No file: no groups.
Result<GroupList> load_group_list(const std::string& path, std::uint32_t partitions);

}  // namespace ringfeed
