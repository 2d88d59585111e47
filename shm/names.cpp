#include "shm/names.hpp"

namespace ringfeed::shm {

Status check_name(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return Error{std::string(what) + " name '" + std::string(name) + "' must have 1 to " +
                 std::to_string(kMaxNameLength) + " characters"};
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) {
      return Error{std::string(what) + " name '" + std::string(name) +
                   "' may only contain letters, digits, '_' and '-'"};
    }
  }
  return Ok{};
}

std::string fetcher_segment_name(std::string_view ns) {
  return "ringfeed." + std::string(ns) + ".fetcher";
}

std::string ring_segment_name(std::string_view ns, std::uint32_t partition) {
  return "ringfeed." + std::string(ns) + ".p" + std::to_string(partition) + ".ring";
}

std::string group_segment_prefix(std::string_view ns, std::uint32_t partition) {
  return "ringfeed." + std::string(ns) + ".p" + std::to_string(partition) + ".g.";
}

std::string group_segment_name(std::string_view ns, std::uint32_t partition,
                               std::string_view group) {
  return group_segment_prefix(ns, partition) + std::string(group);
}

}  // namespace ringfeed::shm
