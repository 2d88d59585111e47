// ringfeed produce: appends one message per stdin line to partition P of a source.
// For file:DIR that is the log file DIR/P.log, framed (with a key and a timestamp) or
// plain lines. Lines are appended in batches (one write per batch, under the
// appender's lock) and fsynced once at the end: a host crash may lose the tail of an
// unfinished run, never leave a torn batch for a live reader.
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli_args.hpp"
#include "io/framed_record.hpp"
#include "io/log_appender.hpp"
#include "shm/fetcher_layout.hpp"

namespace ringfeed::cli {

namespace {

constexpr std::string_view kCommand = "produce";

constexpr Flag kFlags[] = {
    {"source", "URI", true, "where to append: file:DIR (partition P is the log file DIR/P.log)"},
    {"partition", "P", true, "partition number"},
    {"format", "framed|lines", false,
     "framed records with key and timestamp (default), or plain lines"},
    {"key", "KEY", false, "key of every message (framed only; default none)"},
};

constexpr std::string_view kDescription =
    "Reads standard input and appends each line (without its newline) as one message to\n"
    "partition P. A last line without a newline is a message too. DIR must exist; the\n"
    "log file is created if missing. The file is fsynced before produce exits 0.";

constexpr std::string_view kFormats[] = {"framed", "lines"};

// Most lines, and bytes read, per write: big enough to amortise the lock and the
// system call, small enough that a reader tailing the file sees progress.
constexpr std::size_t kBatchLines = 4096;
constexpr std::size_t kReadBytes = std::size_t{1} << 20;

struct FileTarget {
  std::string dir;
  std::string format;  // from ?format=..., empty if not given
};

// Parses a `file:DIR[?format=framed|lines]` URI. Other schemes are a runtime error (the
// URI is fine, produce cannot write there yet); malformed URIs are usage errors.
int parse_source(std::string_view uri, FileTarget& out) {
  const std::size_t colon = uri.find(':');
  const std::string_view scheme = uri.substr(0, colon);
  const bool scheme_ok =
      colon != std::string_view::npos && !scheme.empty() &&
      scheme.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789+-.") == std::string_view::npos;
  if (!scheme_ok) {
    return usage_error(
        kCommand, "flag --source: '" + std::string(uri) + "' is not a URI (expected file:DIR)");
  }
  if (scheme != "file") {
    return runtime_error(kCommand, "source scheme '" + std::string(scheme) +
                                       "' is not supported yet by produce (source '" +
                                       std::string(uri) + "'; supported: file:DIR)");
  }
  std::string_view rest = uri.substr(colon + 1);
  const std::size_t q = rest.find('?');
  out.dir = std::string(rest.substr(0, q));
  if (out.dir.empty()) {
    return usage_error(kCommand, "flag --source: '" + std::string(uri) + "' names no directory");
  }
  if (q == std::string_view::npos) return kExitOk;
  std::string_view query = rest.substr(q + 1);
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (param == "format=framed" || param == "format=lines") {
      out.format = std::string(param.substr(7));
    } else {
      return usage_error(kCommand, "flag --source: unknown parameter '" + std::string(param) +
                                       "' in '" + std::string(uri) +
                                       "' (file: takes format=framed|lines)");
    }
  }
  return kExitOk;
}

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class Producer {
 public:
  Producer(io::LogAppender appender, bool framed, std::string key)
      : appender_(std::move(appender)), framed_(framed), key_(std::move(key)) {
    records_.reserve(kBatchLines);
  }

  // Appends the complete lines at the start of `bytes` (each ending in '\n'); the last
  // one may lack its '\n' only when `final`. Returns an error that names the line.
  Status append_lines(std::string_view bytes, bool final) {
    const std::int64_t now = realtime_ns();
    for (std::string_view rest = bytes; !rest.empty();) {
      const std::size_t nl = rest.find('\n');
      const std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      ++lines_;
      if (line.size() > io::kMaxValueLength) return too_long(lines_, line.size());
      if (!framed_) continue;
      records_.push_back({.kind = io::RecordKind::log,
                          .timestamp_ns = now,
                          .upstream_offset = 0,
                          .key = key_,
                          .value = line});
      if (records_.size() == kBatchLines) {
        if (auto ok = flush(); !ok) return ok;
      }
    }
    if (framed_) return flush();
    // Plain lines are already in the file's format, but a last line needs its '\n' (a
    // reader takes an unterminated line for one still being written).
    if (final && !bytes.empty() && bytes.back() != '\n') {
      std::string copy(bytes);
      copy += '\n';
      return append_raw(copy);
    }
    return append_raw(bytes);
  }

  static Status too_long(std::uint64_t line, std::size_t size) {
    return Error{"line " + std::to_string(line) + " of standard input has " +
                     (size > io::kMaxValueLength ? "more than " : "") + std::to_string(size) +
                     " bytes, more than a message may have (" +
                     std::to_string(io::kMaxValueLength) + ")",
                 EMSGSIZE};
  }

  Status sync() { return appender_.sync(); }
  std::uint64_t lines() const { return lines_; }

 private:
  Status flush() {
    if (records_.empty()) return Ok{};
    auto r = appender_.append(records_);
    records_.clear();
    if (!r) return r.error();
    return Ok{};
  }
  Status append_raw(std::string_view bytes) {
    if (bytes.empty()) return Ok{};
    auto r = appender_.append_encoded(std::as_bytes(std::span(bytes.data(), bytes.size())));
    if (!r) return r.error();
    return Ok{};
  }

  io::LogAppender appender_;
  bool framed_;
  std::string key_;
  std::vector<io::RecordView> records_;
  std::uint64_t lines_ = 0;
};

}  // namespace

int produce_main(std::span<char* const> argv) {
  auto args = Args::parse(argv, kFlags);
  if (!args) return usage_error(kCommand, args.error().message);
  if (args->help()) {
    std::fputs(usage("ringfeed produce --source URI --partition P [--format framed|lines] "
                     "[--key KEY]",
                     kDescription, kFlags)
                   .c_str(),
               stdout);
    return kExitOk;
  }
  auto partition = args->number("partition", 0, 0, shm::kMaxPartitions - 1);
  if (!partition) return usage_error(kCommand, partition.error().message);
  FileTarget target;
  if (const int rc = parse_source(args->get("source"), target); rc != kExitOk) return rc;
  if (!target.format.empty() && args->has("format") && args->get("format") != target.format) {
    return usage_error(kCommand, "flag --format " + std::string(args->get("format")) +
                                     " contradicts format=" + target.format + " in --source");
  }
  // A view of target.format, which outlives `format`.
  const std::string_view default_format =
      target.format.empty() ? std::string_view("framed") : std::string_view(target.format);
  auto format = args->choice("format", default_format, kFormats);
  if (!format) return usage_error(kCommand, format.error().message);
  const bool framed = format.value() == "framed";
  if (!framed && args->has("key")) {
    return usage_error(kCommand, "flag --key: the lines format has no keys (use --format framed)");
  }
  const std::string key(args->get("key"));
  if (key.size() > io::kMaxKeyLength) {
    return usage_error(kCommand, "flag --key: " + std::to_string(key.size()) +
                                     " bytes, more than a key may have (" +
                                     std::to_string(io::kMaxKeyLength) + ")");
  }

  struct stat st {};
  if (::stat(target.dir.c_str(), &st) != 0) {
    return runtime_error(kCommand, "directory '" + target.dir + "' of source '" +
                                       std::string(args->get("source")) +
                                       "': " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return runtime_error(kCommand, "'" + target.dir + "' of source '" +
                                       std::string(args->get("source")) + "' is not a directory");
  }
  const std::string path = target.dir + "/" + std::to_string(partition.value()) + ".log";
  auto appender = io::LogAppender::open(path);
  if (!appender) return runtime_error(kCommand, appender.error().message);
  Producer producer(std::move(appender.value()), framed, key);

  // The buffer holds the unfinished last line between reads; it grows only for a line
  // longer than it (up to the longest a message may be).
  std::vector<char> buf(kReadBytes);
  std::size_t filled = 0;
  for (;;) {
    if (filled == buf.size()) {
      if (buf.size() > io::kMaxValueLength) {
        return runtime_error(kCommand,
                             Producer::too_long(producer.lines() + 1, filled).error().message);
      }
      buf.resize(buf.size() * 2);
    }
    const ssize_t n = ::read(STDIN_FILENO, buf.data() + filled, buf.size() - filled);
    if (n < 0) {
      if (errno == EINTR) continue;
      return runtime_error(kCommand,
                           std::string("cannot read standard input: ") + std::strerror(errno));
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
    const std::string_view data(buf.data(), filled);
    const std::size_t last_nl = data.rfind('\n');
    if (last_nl == std::string_view::npos) continue;
    if (auto ok = producer.append_lines(data.substr(0, last_nl + 1), false); !ok) {
      return runtime_error(kCommand, ok.error().message);
    }
    const std::size_t keep = filled - (last_nl + 1);
    std::memmove(buf.data(), buf.data() + last_nl + 1, keep);
    filled = keep;
  }
  if (filled > 0) {
    if (auto ok = producer.append_lines(std::string_view(buf.data(), filled), true); !ok) {
      return runtime_error(kCommand, ok.error().message);
    }
  }
  if (auto ok = producer.sync(); !ok) return runtime_error(kCommand, ok.error().message);
  return kExitOk;
}

}  // namespace ringfeed::cli
