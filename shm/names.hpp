// Segment names: ringfeed.<namespace>.p<partition>.ring for a partition ring and
// ringfeed.<namespace>.p<partition>.g.<group> for a consumer group's state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shm/result.hpp"

namespace ringfeed::shm {

inline constexpr std::size_t kMaxNameLength = 48;

// Namespaces and groups: 1..48 characters of [A-Za-z0-9_-]. Returns what is wrong.
Status check_name(std::string_view what, std::string_view name);

// ringfeed.<namespace>.fetcher: who serves the namespace (fetcher_layout.hpp).
std::string fetcher_segment_name(std::string_view ns);
std::string ring_segment_name(std::string_view ns, std::uint32_t partition);
std::string group_segment_prefix(std::string_view ns, std::uint32_t partition);
std::string group_segment_name(std::string_view ns, std::uint32_t partition,
                               std::string_view group);

}  // namespace ringfeed::shm
