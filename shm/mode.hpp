// Consumption modes of a group. Stored in the group segment, so the values are fixed.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ringfeed {

enum class Mode : std::uint32_t {
  exclusive = 1,   // one consumer; a second attach is refused
  shared = 2,      // any number of consumers take the next available messages
  broadcast = 3,   // every consumer gets every message, each with its own cursor
  failover = 4,    // one active consumer, standbys in attach order
  key_shared = 5,  // equal keys go to the same consumer
};

std::string_view to_string(Mode mode);
std::optional<Mode> parse_mode(std::string_view text);
bool is_valid_mode(std::uint32_t raw);
// Modes whose messages are handed out under leases from the group's lease table.
constexpr bool uses_leases(Mode mode) {
  return mode == Mode::shared || mode == Mode::failover || mode == Mode::key_shared;
}

}  // namespace ringfeed
