#include "group_list.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/checkpoint.hpp"
#include "shm/mode.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"

namespace ringfeed {

namespace {

constexpr std::string_view kFirstLine = "ringfeed-groups 1";

template <typename T>
bool parse_number(std::string_view text, T& out, int base = 10) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
  return ec == std::errc{} && end == text.data() + text.size();
}

}  // namespace

std::string encode_group_list(const GroupList& groups) {
  std::ostringstream out;
  out << kFirstLine << '\n';
  for (std::size_t p = 0; p < groups.size(); ++p) {
    for (const shm::KeptGroup& g : groups[p]) {
      out << p << ' ' << to_string(g.mode) << ' ' << g.name << ' ' << g.settings.lease_window << ' '
          << g.settings.max_deliveries << ' ' << g.settings.lease_ms << ' ';
      for (std::size_t i = 0; i < g.settings.backoff_ms.size(); ++i) {
        out << (i == 0 ? "" : ",") << g.settings.backoff_ms[i];
      }
      for (const std::uint64_t owner : g.awaited) out << ' ' << std::hex << owner << std::dec;
      out << '\n';
    }
  }
  return out.str();
}

Result<GroupList> decode_group_list(const std::string& text, const std::string& path,
                                    std::uint32_t partitions) {
  GroupList groups(partitions);
  std::istringstream in(text);
  std::string line;
  std::size_t number = 0;
  auto bad = [&](const std::string& why) {
    return Error{"group list " + path + ", line " + std::to_string(number) + ": " + why +
                     " (remove the file to start without the groups it names)",
                 EPROTO};
  };
  while (std::getline(in, line)) {
    ++number;
    if (number == 1) {
      if (line != kFirstLine) return bad("not a ringfeed group list");
      continue;
    }
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string partition, mode, name, window, max_deliveries, lease_ms, backoff;
    if (!(fields >> partition >> mode >> name >> window >> max_deliveries >> lease_ms >> backoff)) {
      return bad("too few fields");
    }
    shm::KeptGroup g{.name = name, .mode = Mode::exclusive, .settings = {}, .awaited = {}};
    std::uint32_t p = 0;
    if (!parse_number(partition, p)) return bad("partition '" + partition + "'");
    const auto parsed_mode = parse_mode(mode);
    if (!parsed_mode) return bad("mode '" + mode + "'");
    g.mode = *parsed_mode;
    if (auto ok = shm::check_name("group", name); !ok) return bad(ok.error().message);
    if (!parse_number(window, g.settings.lease_window) ||
        !parse_number(max_deliveries, g.settings.max_deliveries) ||
        !parse_number(lease_ms, g.settings.lease_ms)) {
      return bad("settings '" + window + " " + max_deliveries + " " + lease_ms + "'");
    }
    const std::uint32_t w = g.settings.lease_window;
    if (w == 0 || w > shm::kMaxLeaseWindow || (w & (w - 1)) != 0 || g.settings.max_deliveries < 1 ||
        g.settings.max_deliveries > shm::kMaxDeliveriesLimit || g.settings.lease_ms < 1 ||
        g.settings.lease_ms > 24u * 3600 * 1000) {
      return bad("settings out of range");
    }
    std::size_t step = 0;
    for (std::string_view rest = backoff;; ++step) {
      const std::size_t comma = rest.find(',');
      if (step >= g.settings.backoff_ms.size() ||
          !parse_number(rest.substr(0, comma), g.settings.backoff_ms[step]) ||
          g.settings.backoff_ms[step] > 24u * 3600 * 1000) {
        return bad("backoff '" + backoff + "'");
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    for (std::string owner; fields >> owner;) {
      std::uint64_t word = 0;
      if (g.mode != Mode::broadcast || !parse_number(owner, word, 16) || word == 0 ||
          g.awaited.size() >= shm::kGroupSlots) {
        return bad("awaited consumer '" + owner + "'");
      }
      g.awaited.push_back(word & ~shm::kOwnerAwaited);
    }
    if (p < partitions) groups[p].push_back(std::move(g));
  }
  if (number == 0) return bad("empty");
  return groups;
}

Status save_group_list(const std::string& path, const GroupList& groups) {
  const std::filesystem::path file(path);
  const std::string dir = file.has_parent_path() ? file.parent_path().string() : ".";
  // The fetcher's state directory (its dead letters' too), private as they are.
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error{"group list directory " + dir + ": " + std::strerror(errno), errno};
  }
  const std::string text = encode_group_list(groups);
  return io::replace_file(dir, path, std::as_bytes(std::span(text.data(), text.size())),
                          "group list");
}

Result<GroupList> load_group_list(const std::string& path, std::uint32_t partitions) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return GroupList(partitions);
    return Error{"cannot open group list " + path + ": " + std::strerror(errno), errno};
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Error{"cannot read group list " + path, EIO};
  return decode_group_list(text.str(), path, partitions);
}

}  // namespace ringfeed
