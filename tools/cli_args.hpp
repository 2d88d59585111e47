// The command line's flag parser and conventions, shared by every subcommand.
//
// Flags are explicit: each subcommand lists the ones it knows. `--flag VALUE` and
// `--flag=VALUE` both work; `--help` anywhere asks for help. Every mistake comes back as
// one sentence naming the flag (and the value) that is wrong; the caller prints it and
// exits with kExitUsage. Scripts depend on the exit statuses, so they live here.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shm/result.hpp"

namespace ringfeed::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;  // something failed while running: what and where
inline constexpr int kExitUsage = 2;    // the command line is wrong: a one-line reason

struct Flag {
  std::string_view name;        // without the leading "--"
  std::string_view value_name;  // empty: a switch that takes no value
  bool required = false;
  std::string_view help;  // one line
};

class Args {
 public:
  // Parses the arguments after the subcommand's name. An Error's message is the reason
  // for a usage error. A --help anywhere wins over every other mistake except an
  // argument that cannot be parsed at all, so `cmd --help` always works.
  static Result<Args> parse(std::span<char* const> args, std::span<const Flag> flags);

  bool help() const { return help_; }
  bool has(std::string_view name) const { return find(name) != nullptr; }
  // The flag's value, or `fallback` when it was not given.
  std::string_view get(std::string_view name, std::string_view fallback = {}) const;
  // The flag's value as a decimal number in [min, max], or `fallback` when not given.
  // The error names the flag and the value.
  Result<std::uint64_t> number(std::string_view name, std::uint64_t fallback, std::uint64_t min = 0,
                               std::uint64_t max = UINT64_MAX) const;
  // The value if it is one of `choices`, else an error listing them.
  Result<std::string_view> choice(std::string_view name, std::string_view fallback,
                                  std::span<const std::string_view> choices) const;

 private:
  const std::string* find(std::string_view name) const;

  std::vector<std::pair<std::string, std::string>> values_;
  bool help_ = false;
};

// "usage: <synopsis>\n\n<description>\n\nflags:\n  --name VALUE  help\n..."
std::string usage(std::string_view synopsis, std::string_view description,
                  std::span<const Flag> flags);

// Prints "ringfeed <command>: <reason>" and a pointer to --help on stderr; returns kExitUsage.
int usage_error(std::string_view command, std::string_view reason);
// Prints "ringfeed <command>: <message>" on stderr; returns kExitRuntime.
int runtime_error(std::string_view command, std::string_view message);

// A decimal unsigned number, the whole of `text`.
std::optional<std::uint64_t> parse_u64(std::string_view text);

// Appends `text` to `out` as the inside of a JSON string: quotes, backslashes and control
// characters escaped, valid UTF-8 kept, every byte of invalid UTF-8 as \u00XX.
void append_json_string(std::string& out, std::string_view text);

// Whether `text` is valid UTF-8 (overlong forms, surrogates and code points past
// U+10FFFF are not).
bool is_utf8(std::string_view text);
// Appends `bytes` in base64 (RFC 4648, with padding).
void append_base64(std::string& out, std::string_view bytes);
// Appends the JSON member "NAME":"TEXT" for bytes that are valid UTF-8, else
// "NAME_base64":"BASE64", so that binary bytes survive a JSON parser.
void append_json_bytes(std::string& out, std::string_view name, std::string_view bytes);

// `text` for a terminal: printable ASCII and valid UTF-8 kept, every other byte '?'
// (text read from shared memory may be anything).
std::string printable_text(std::string_view text);

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. False on an error
// (errno says which).
bool write_all(int fd, std::string_view bytes);

// Partitions of namespace `ns` that have a ring segment (ringfeed.NS.pP.ring), sorted.
std::vector<std::uint32_t> ring_partitions(std::string_view ns);

// The subcommands: arguments after the subcommand's name; return the exit status.
int produce_main(std::span<char* const> args);
int consume_main(std::span<char* const> args);
int stat_main(std::span<char* const> args);
int fetch_main(std::span<char* const> args);

}  // namespace ringfeed::cli
