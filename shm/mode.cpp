#include "shm/mode.hpp"

namespace ringfeed {

std::string_view to_string(Mode mode) {
  switch (mode) {
    case Mode::exclusive:
      return "exclusive";
    case Mode::shared:
      return "shared";
    case Mode::broadcast:
      return "broadcast";
    case Mode::failover:
      return "failover";
    case Mode::key_shared:
      return "key_shared";
  }
  return "unknown";
}

std::optional<Mode> parse_mode(std::string_view text) {
  for (Mode m :
       {Mode::exclusive, Mode::shared, Mode::broadcast, Mode::failover, Mode::key_shared}) {
    if (text == to_string(m)) return m;
  }
  return std::nullopt;
}

bool is_valid_mode(std::uint32_t raw) {
  return raw >= 1 && raw <= 5;
}

}  // namespace ringfeed
