#include "cli_args.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>

#include "shm/fetcher_layout.hpp"
#include "shm/segment.hpp"

namespace ringfeed::cli {

namespace {

const Flag* find_flag(std::span<const Flag> flags, std::string_view name) {
  for (const Flag& f : flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

}  // namespace

Result<Args> Args::parse(std::span<char* const> args, std::span<const Flag> flags) {
  Args out;
  std::string first_error;
  auto fail = [&](std::string reason) {
    if (first_error.empty()) first_error = std::move(reason);
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    if (a == "--help" || a == "-h") {
      out.help_ = true;
      continue;
    }
    if (a.size() < 3 || a.substr(0, 2) != "--") {
      fail("unexpected argument '" + std::string(a) + "'");
      continue;
    }
    const std::size_t eq = a.find('=');
    const std::string_view name = a.substr(2, eq == std::string_view::npos ? a.npos : eq - 2);
    const Flag* flag = find_flag(flags, name);
    if (flag == nullptr) {
      fail("unknown flag --" + std::string(name));
      continue;
    }
    std::string value;
    if (flag->value_name.empty()) {
      if (eq != std::string_view::npos) {
        fail("flag --" + std::string(name) + " takes no value");
        continue;
      }
    } else if (eq != std::string_view::npos) {
      value = std::string(a.substr(eq + 1));
    } else if (i + 1 < args.size() && std::string_view(args[i + 1]).substr(0, 2) != "--") {
      // A value that starts with "--" must be given as --flag=VALUE: otherwise a
      // forgotten value would swallow the next flag.
      value = args[++i];
    } else {
      fail("flag --" + std::string(name) + " needs a value (" + std::string(flag->value_name) +
           ")");
      continue;
    }
    if (out.find(name) != nullptr) {
      fail("flag --" + std::string(name) + " is given twice");
      continue;
    }
    out.values_.emplace_back(std::string(name), std::move(value));
  }
  if (out.help_) return out;
  if (!first_error.empty()) return Error{first_error, EINVAL};
  for (const Flag& f : flags) {
    if (f.required && !out.has(f.name)) {
      return Error{
          "missing required flag --" + std::string(f.name) + " " + std::string(f.value_name),
          EINVAL};
    }
  }
  return out;
}

const std::string* Args::find(std::string_view name) const {
  for (const auto& [n, v] : values_) {
    if (n == name) return &v;
  }
  return nullptr;
}

std::string_view Args::get(std::string_view name, std::string_view fallback) const {
  const std::string* v = find(name);
  return v != nullptr ? std::string_view(*v) : fallback;
}

Result<std::uint64_t> Args::number(std::string_view name, std::uint64_t fallback, std::uint64_t min,
                                   std::uint64_t max) const {
  const std::string* v = find(name);
  if (v == nullptr) return fallback;
  const auto n = parse_u64(*v);
  // Digits only, too many for 64 bits: a number, out of any range.
  const bool digits = !v->empty() && v->find_first_not_of("0123456789") == std::string::npos;
  if (!n && !digits) {
    return Error{"flag --" + std::string(name) + ": '" + *v + "' is not a number", EINVAL};
  }
  if (!n || *n < min || *n > max) {
    const std::string range = n && max == UINT64_MAX
                                  ? "at least " + std::to_string(min)
                                  : "in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    return Error{
        "flag --" + std::string(name) + ": " + *v + " is out of range (must be " + range + ")",
        ERANGE};
  }
  return *n;
}

Result<std::string_view> Args::choice(std::string_view name, std::string_view fallback,
                                      std::span<const std::string_view> choices) const {
  const std::string_view v = get(name, fallback);
  if (std::find(choices.begin(), choices.end(), v) != choices.end()) return v;
  std::string list;
  for (std::string_view c : choices) list += (list.empty() ? "" : "|") + std::string(c);
  return Error{"flag --" + std::string(name) + ": '" + std::string(v) + "' is not one of " + list,
               EINVAL};
}

std::string usage(std::string_view synopsis, std::string_view description,
                  std::span<const Flag> flags) {
  std::string out = "usage: " + std::string(synopsis) + "\n\n" + std::string(description) + "\n";
  // Help texts line up in one column; a flag too long for it gets its help on the next line.
  constexpr std::size_t kColumn = 24;
  auto line = [&](std::string head, std::string_view help, bool required) {
    out += "  " + head;
    if (head.size() + 2 > kColumn) {
      out += "\n" + std::string(kColumn + 2, ' ');
    } else {
      out += std::string(kColumn - head.size(), ' ');
    }
    out += std::string(help) + (required ? " (required)" : "") + "\n";
  };
  out += "\nflags:\n";
  for (const Flag& f : flags) {
    std::string head = "--" + std::string(f.name);
    if (!f.value_name.empty()) head += " " + std::string(f.value_name);
    line(std::move(head), f.help, f.required);
  }
  line("--help", "show this help", false);
  return out;
}

int usage_error(std::string_view command, std::string_view reason) {
  std::fprintf(stderr, "ringfeed %.*s: %.*s (see ringfeed %.*s --help)\n",
               static_cast<int>(command.size()), command.data(), static_cast<int>(reason.size()),
               reason.data(), static_cast<int>(command.size()), command.data());
  return kExitUsage;
}

int runtime_error(std::string_view command, std::string_view message) {
  std::fprintf(stderr, "ringfeed %.*s: %.*s\n", static_cast<int>(command.size()), command.data(),
               static_cast<int>(message.size()), message.data());
  return kExitRuntime;
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

namespace {

// Length of the valid UTF-8 sequence at the start of `s`, 0 if it is not one
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
std::size_t utf8_sequence(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1fu;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0fu;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  for (std::size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xc0u) != 0x80u) return 0;
    cp = (cp << 6) | (b(i) & 0x3fu);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
    return 0;
  }
  return n;
}

}  // namespace

bool is_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
    } else if (const std::size_t n = utf8_sequence(text.substr(i)); n != 0) {
      i += n;
    } else {
      return false;
    }
  }
  return true;
}

void append_base64(std::string& out, std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto b = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i]));
  };
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = b(i) << 16 | b(i + 1) << 8 | b(i + 2);
    for (int shift = 18; shift >= 0; shift -= 6) out += kAlphabet[(v >> shift) & 0x3fu];
  }
  if (const std::size_t left = bytes.size() - i; left != 0) {
    const std::uint32_t v = b(i) << 16 | (left == 2 ? b(i + 1) << 8 : 0);
    out += kAlphabet[(v >> 18) & 0x3fu];
    out += kAlphabet[(v >> 12) & 0x3fu];
    out += left == 2 ? kAlphabet[(v >> 6) & 0x3fu] : '=';
    out += '=';
  }
}

void append_json_bytes(std::string& out, std::string_view name, std::string_view bytes) {
  out += '"';
  out += name;
  if (is_utf8(bytes)) {
    out += "\":\"";
    append_json_string(out, bytes);
  } else {
    out += "_base64\":\"";
    append_base64(out, bytes);
  }
  out += '"';
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default:
        break;
    }
    if (c >= 0x80) {
      if (const std::size_t n = utf8_sequence(text.substr(i)); n != 0) {
        out.append(text.substr(i, n));
        i += n;
        continue;
      }
    }
    // Control characters, DEL, and bytes that are not UTF-8 (binary values).
    out += "\\u00";
    out += kHex[c >> 4];
    out += kHex[c & 0xfu];
    ++i;
  }
}

std::string printable_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
      ++i;
    } else if (const std::size_t n = c >= 0x80 ? utf8_sequence(text.substr(i)) : 0; n != 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::vector<std::uint32_t> ring_partitions(std::string_view ns) {
  const std::string prefix = "ringfeed." + std::string(ns) + ".p";
  constexpr std::string_view kSuffix = ".ring";
  std::vector<std::uint32_t> out;
  for (const std::string& name : shm::Segment::list(prefix)) {
    // ringfeed.NS.p<digits>.ring exactly: not a group segment, not a temporary name.
    std::string_view rest = std::string_view(name).substr(prefix.size());
    if (rest.size() <= kSuffix.size() || rest.substr(rest.size() - kSuffix.size()) != kSuffix) {
      continue;
    }
    rest.remove_suffix(kSuffix.size());
    const auto p = parse_u64(rest);
    if (!p || *p >= shm::kMaxPartitions || std::to_string(*p) != rest) continue;
    out.push_back(static_cast<std::uint32_t>(*p));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace ringfeed::cli
