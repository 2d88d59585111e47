// ringfeed produce: appends one message per stdin line (or N generated messages) to
// partition P of a source. For file:DIR that is the log file DIR/P.log, framed (with a
// key and a timestamp) or plain lines. Messages are appended in batches (one write per
// batch, under the appender's lock) and fsynced once at the end: a host crash may lose
// the tail of an unfinished run, never leave a torn batch for a live reader. For
// redis://... it is stream SP: one XADD per message, a batch pipelined. --rate paces the
// appends with absolute deadlines.
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli_args.hpp"
#include "io/framed_record.hpp"
#include "io/log_appender.hpp"
#include "io/redis_client.hpp"
#include "io/redis_source.hpp"
#include "shm/fetcher_layout.hpp"

namespace ringfeed::cli {

namespace {

constexpr std::string_view kCommand = "produce";

constexpr Flag kFlags[] = {
    {"source", "URI", true,
     "where to append: file:DIR (partition P is the log file DIR/P.log) or "
     "redis://HOST:PORT?streams=S0,S1,... (partition P is stream SP)"},
    {"partition", "P", true, "partition number"},
    {"format", "framed|lines", false,
     "framed records with key and timestamp (default), or plain lines"},
    {"key", "KEY", false, "key of every message (framed only; default none)"},
    {"count", "N", false, "append N generated messages instead of reading standard input"},
    {"size", "BYTES", false, "with --count: bytes of each value (default 64)"},
    {"rate", "N", false, "messages per second (default: as fast as it can)"},
};

constexpr std::string_view kDescription =
    "Reads standard input and appends each line (without its newline) as one message to\n"
    "partition P. A last line without a newline is a message too. With --count N it\n"
    "reads nothing and appends N messages of --size bytes: 00..00, 00..01, and so on.\n"
    "DIR must exist; the log file is created if missing. The file is fsynced before\n"
    "produce exits 0. To a redis:// source each message is one XADD (field value, and\n"
    "key with --key), a batch pipelined; produce exits 0 once Redis took them all.\n"
    "\n"
    "A framed record's timestamp is the time it was appended (CLOCK_REALTIME), which\n"
    "consume --latency measures from. --rate R appends message i when i/R seconds have\n"
    "passed since message 0 (absolute deadlines: a late one does not delay the rest),\n"
    "each as soon as it is due; messages are batched only while produce catches up.";

constexpr std::string_view kFormats[] = {"framed", "lines"};

// Most lines, and bytes read, per write: big enough to amortise the lock and the
// system call, small enough that a reader tailing the file sees progress.
constexpr std::size_t kBatchLines = 4096;
constexpr std::size_t kBatchBytes = std::size_t{1} << 20;
constexpr std::size_t kReadBytes = std::size_t{1} << 20;
// Paced, a batch holds only messages already due: this bounds one that catches up.
constexpr std::size_t kPacedBatchLines = 64;
constexpr std::uint64_t kDefaultSize = 64;

struct FileTarget {
  std::string dir;
  std::string format;                           // from ?format=..., empty if not given
  std::optional<io::RedisSourceOptions> redis;  // a redis:// source instead
};

// Parses a `file:DIR[?format=framed|lines]` or `redis://...` URI. Other schemes are a
// runtime error (the URI is fine, produce cannot write there yet); malformed URIs are
// usage errors.
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
  if (scheme == "redis") {
    auto redis = io::parse_redis_uri(uri, /*for_source=*/false);
    if (!redis) return usage_error(kCommand, "flag --source: " + redis.error().message);
    out.redis = std::move(redis.value());
    return kExitOk;
  }
  if (scheme != "file" && scheme != "kafka") {
    return usage_error(kCommand,
                       "flag --source: unknown scheme '" + std::string(scheme) +
                           "' (produce writes to file:DIR and redis://HOST:PORT?streams=...)");
  }
  if (scheme != "file") {
    return runtime_error(kCommand, "source scheme '" + std::string(scheme) +
                                       "' is not supported yet by produce (source '" +
                                       std::string(uri) +
                                       "'; supported: file:DIR, redis://HOST:PORT?streams=...)");
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

std::int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Message i (from 0) is due `i / rate` seconds after message 0 was stamped: absolute
// deadlines on CLOCK_MONOTONIC, so time lost in one wait is made up by the next, never
// carried on. So the timestamps of messages i and 0 are at least i / rate apart.
class Pacer {
 public:
  explicit Pacer(std::uint64_t rate) : rate_(rate) {}

  bool paced() const { return rate_ != 0; }
  bool started() const { return started_; }
  // Whether message i may be appended now. Message 0 always may; the others only once
  // message 0 was stamped, which starts the clock.
  bool due(std::uint64_t i) const {
    return !paced() || i == 0 || (started_ && clock_ns(CLOCK_MONOTONIC) >= deadline(i));
  }
  // Sleeps until message i is due (the clock has started).
  void wait_for(std::uint64_t i) const {
    if (!paced() || i == 0 || !started_) return;
    const std::int64_t d = deadline(i);
    const timespec at{static_cast<time_t>(d / 1'000'000'000), static_cast<long>(d % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) == EINTR) {
    }
  }
  // Called right after message 0 was stamped.
  void start() {
    start_ns_ = clock_ns(CLOCK_MONOTONIC);
    started_ = true;
  }

 private:
  std::int64_t deadline(std::uint64_t i) const {
    // i / rate seconds without overflow: whole seconds, then the remainder (< rate, so
    // the product stays below 10^18).
    const std::uint64_t ns = i / rate_ * 1'000'000'000 + i % rate_ * 1'000'000'000 / rate_;
    return start_ns_ + static_cast<std::int64_t>(ns);
  }

  std::uint64_t rate_;
  std::int64_t start_ns_ = 0;
  bool started_ = false;
};

// Where a batch goes: the log file of a file: source, or a Redis stream.
class Target {
 public:
  virtual ~Target() = default;
  // `bytes` holds the batch's values at `at` (offset, size); `now` is their timestamp.
  virtual Status append(const std::string& bytes,
                        std::span<const std::pair<std::size_t, std::size_t>> at,
                        std::int64_t now) = 0;
  // Makes what was appended durable (the log file is fsynced; Redis replied already).
  virtual Status sync() = 0;
};

// DIR/P.log: framed records (one write per batch, under the appender's lock), or the
// lines as they are.
class LogTarget final : public Target {
 public:
  LogTarget(io::LogAppender appender, bool framed, std::string key)
      : appender_(std::move(appender)), framed_(framed), key_(std::move(key)) {}
  Status append(const std::string& bytes, std::span<const std::pair<std::size_t, std::size_t>> at,
                std::int64_t now) override {
    if (!framed_) {
      auto r = appender_.append_encoded(std::as_bytes(std::span(bytes.data(), bytes.size())));
      if (!r) return r.error();
      return Ok{};
    }
    records_.clear();
    for (const auto& [offset, size] : at) {
      records_.push_back({.kind = io::RecordKind::log,
                          .timestamp_ns = now,
                          .upstream_offset = 0,
                          .key = key_,
                          .value = std::string_view(bytes).substr(offset, size)});
    }
    auto r = appender_.append(records_);
    if (!r) return r.error();
    return Ok{};
  }
  Status sync() override { return appender_.sync(); }

 private:
  io::LogAppender appender_;
  bool framed_;
  std::string key_;
  std::vector<io::RecordView> records_;
};

// A Redis stream: one XADD STREAM * [key KEY] value V per message, a batch pipelined in
// one write; every reply is checked. Redis stamps each entry (its id's time).
class RedisTarget final : public Target {
 public:
  RedisTarget(io::RedisClient client, std::string stream, std::string key)
      : client_(std::move(client)), stream_(std::move(stream)), key_(std::move(key)) {}
  Status append(const std::string& bytes, std::span<const std::pair<std::size_t, std::size_t>> at,
                std::int64_t) override {
    commands_.clear();
    for (const auto& [offset, size] : at) {
      std::vector<std::string> c = {"XADD", stream_, "*"};
      if (!key_.empty()) {
        c.emplace_back("key");
        c.push_back(key_);
      }
      c.emplace_back("value");
      c.emplace_back(bytes, offset, size);
      commands_.push_back(std::move(c));
    }
    auto replies = client_.pipeline(commands_);
    if (!replies) return replies.error();
    for (const io::RespValue& r : *replies) {
      if (r.type == io::RespType::error) {
        return Error{"XADD " + stream_ + ": " + r.str, EREMOTEIO};
      }
    }
    return Ok{};
  }
  Status sync() override { return Ok{}; }

 private:
  io::RedisClient client_;
  std::string stream_;
  std::string key_;
  std::vector<std::vector<std::string>> commands_;
};

// Collects messages and appends them in batches. A framed record is stamped when its
// batch is appended, so its timestamp is when it became readable. Paced, a message is
// appended as soon as it is due, and batches form only from messages that are all due
// already (catching up).
class Producer {
 public:
  Producer(std::unique_ptr<Target> target, bool newlines, std::uint64_t rate)
      : target_(std::move(target)), newlines_(newlines), pacer_(rate) {
    pending_.reserve(kBatchLines);
  }

  // Appends one message (in its batch). An error names the message.
  Status add(std::string_view value) {
    if (value.size() > io::kMaxValueLength) return too_long(messages_ + 1, value.size());
    if (!pacer_.due(messages_)) {
      // What is collected becomes readable before the wait, not after it.
      if (auto ok = flush(); !ok) return ok;
      pacer_.wait_for(messages_);
    }
    pending_.emplace_back(bytes_.size(), value.size());
    bytes_.append(value);
    if (newlines_) bytes_ += '\n';
    ++messages_;
    const std::size_t most = pacer_.paced() ? kPacedBatchLines : kBatchLines;
    if (pending_.size() >= most || bytes_.size() >= kBatchBytes || !pacer_.due(messages_)) {
      return flush();
    }
    return Ok{};
  }

  // Appends what was collected.
  Status flush() {
    if (pending_.empty()) return Ok{};
    const std::int64_t now = clock_ns(CLOCK_REALTIME);
    if (!pacer_.started()) pacer_.start();  // after the stamp: message 1 is due 1/rate later
    Status r = target_->append(bytes_, pending_, now);
    pending_.clear();
    bytes_.clear();
    return r;
  }

  static Status too_long(std::uint64_t line, std::size_t size) {
    return Error{"line " + std::to_string(line) + " of standard input has " +
                     (size > io::kMaxValueLength ? "more than " : "") + std::to_string(size) +
                     " bytes, more than a message may have (" +
                     std::to_string(io::kMaxValueLength) + ")",
                 EMSGSIZE};
  }

  Status sync() { return target_->sync(); }
  std::uint64_t messages() const { return messages_; }

 private:
  std::unique_ptr<Target> target_;
  bool newlines_;
  Pacer pacer_;
  // The batch: values (each followed by '\n' in the lines format) and where each is.
  std::string bytes_;
  std::vector<std::pair<std::size_t, std::size_t>> pending_;
  std::uint64_t messages_ = 0;
};

// Appends every line of standard input; the last one may lack its '\n'.
Status produce_stdin(Producer& producer) {
  // The buffer holds the unfinished last line between reads; it grows only for a line
  // longer than it (up to the longest a message may be).
  std::vector<char> buf(kReadBytes);
  std::size_t filled = 0;
  for (;;) {
    if (filled == buf.size()) {
      if (buf.size() > io::kMaxValueLength)
        return Producer::too_long(producer.messages() + 1, filled);
      buf.resize(buf.size() * 2);
    }
    const ssize_t n = ::read(STDIN_FILENO, buf.data() + filled, buf.size() - filled);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{std::string("cannot read standard input: ") + std::strerror(errno), errno};
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
    std::string_view rest(buf.data(), filled);
    for (std::size_t nl; (nl = rest.find('\n')) != std::string_view::npos;) {
      if (auto ok = producer.add(rest.substr(0, nl)); !ok) return ok;
      rest.remove_prefix(nl + 1);
    }
    // What this read completed is readable before the next read, which may block.
    if (auto ok = producer.flush(); !ok) return ok;
    std::memmove(buf.data(), rest.data(), rest.size());
    filled = rest.size();
  }
  if (filled > 0) {
    if (auto ok = producer.add(std::string_view(buf.data(), filled)); !ok) return ok;
  }
  return producer.flush();
}

// Appends `count` messages of `size` bytes: the sequence number, zero-padded on the left.
Status produce_generated(Producer& producer, std::uint64_t count, std::size_t size) {
  std::string value(size, '0');
  for (std::uint64_t i = 0; i < count; ++i) {
    char digits[24];
    const auto end = std::to_chars(std::begin(digits), std::end(digits), i).ptr;
    const auto n = static_cast<std::size_t>(end - digits);
    std::fill(value.begin(), value.end() - static_cast<std::ptrdiff_t>(n), '0');
    std::copy(digits, end, value.end() - static_cast<std::ptrdiff_t>(n));
    if (auto ok = producer.add(value); !ok) return ok;
  }
  return producer.flush();
}

std::size_t decimal_digits(std::uint64_t n) {
  std::size_t d = 1;
  for (; n >= 10; n /= 10) ++d;
  return d;
}

// The log file DIR/P.log of a file: source, opened for appending (created if missing).
int open_log(const FileTarget& target, std::string_view source, std::uint64_t partition,
             bool framed, const std::string& key, std::unique_ptr<Target>& out) {
  struct stat st {};
  if (::stat(target.dir.c_str(), &st) != 0) {
    return runtime_error(kCommand, "directory '" + target.dir + "' of source '" +
                                       std::string(source) + "': " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return runtime_error(kCommand, "'" + target.dir + "' of source '" + std::string(source) +
                                       "' is not a directory");
  }
  const std::string path = target.dir + "/" + std::to_string(partition) + ".log";
  auto appender = io::LogAppender::open(path);
  if (!appender) return runtime_error(kCommand, appender.error().message);
  out = std::make_unique<LogTarget>(std::move(appender.value()), framed, key);
  return kExitOk;
}

}  // namespace

int produce_main(std::span<char* const> argv) {
  auto args = Args::parse(argv, kFlags);
  if (!args) return usage_error(kCommand, args.error().message);
  if (args->help()) {
    std::fputs(usage("ringfeed produce --source URI --partition P [--format framed|lines] "
                     "[--key KEY]\n"
                     "                        [--count N [--size BYTES]] [--rate N]",
                     kDescription, kFlags)
                   .c_str(),
               stdout);
    return kExitOk;
  }
  auto partition = args->number("partition", 0, 0, shm::kMaxPartitions - 1);
  if (!partition) return usage_error(kCommand, partition.error().message);
  FileTarget target;
  if (const int rc = parse_source(args->get("source"), target); rc != kExitOk) return rc;
  if (target.redis && args->has("format")) {
    return usage_error(kCommand,
                       "flag --format: only for file: sources (a Redis entry has "
                       "a value field, and a key field with --key)");
  }
  if (target.redis && partition.value() >= target.redis->streams.size()) {
    return usage_error(kCommand, "flag --partition: " + std::to_string(partition.value()) +
                                     " of a source with " +
                                     std::to_string(target.redis->streams.size()) +
                                     " streams (partition P is the P-th of streams=)");
  }
  if (!target.format.empty() && args->has("format") && args->get("format") != target.format) {
    return usage_error(kCommand, "flag --format " + std::string(args->get("format")) +
                                     " contradicts format=" + target.format + " in --source");
  }
  // A view of target.format, which outlives `format`.
  const std::string_view default_format =
      target.format.empty() ? std::string_view("framed") : std::string_view(target.format);
  auto format = args->choice("format", default_format, kFormats);
  if (!format) return usage_error(kCommand, format.error().message);
  const bool framed = target.redis || format.value() == "framed";
  if (!framed && args->has("key")) {
    return usage_error(kCommand, "flag --key: the lines format has no keys (use --format framed)");
  }
  const std::string key(args->get("key"));
  auto count = args->number("count", 0);
  if (!count) return usage_error(kCommand, count.error().message);
  auto size = args->number("size", kDefaultSize, 0, io::kMaxValueLength);
  if (!size) return usage_error(kCommand, size.error().message);
  if (args->has("size") && !args->has("count")) {
    return usage_error(kCommand,
                       "flag --size: only with --count (lines of standard input keep "
                       "their own size)");
  }
  if (count.value() > 0 && decimal_digits(count.value() - 1) > size.value()) {
    return usage_error(kCommand, "flag --size: " + std::to_string(size.value()) +
                                     " bytes cannot hold the sequence numbers up to " +
                                     std::to_string(count.value() - 1));
  }
  auto rate = args->number("rate", 0, 1, 1'000'000'000);
  if (!rate) return usage_error(kCommand, rate.error().message);
  if (key.size() > io::kMaxKeyLength) {
    return usage_error(kCommand, "flag --key: " + std::to_string(key.size()) +
                                     " bytes, more than a key may have (" +
                                     std::to_string(io::kMaxKeyLength) + ")");
  }

  std::unique_ptr<Target> sink;
  if (target.redis) {
    const io::RedisSourceOptions& r = *target.redis;
    auto client =
        io::RedisClient::connect(r.port, {.host = r.host, .user = r.user, .password = r.password});
    if (!client) return runtime_error(kCommand, client.error().message);
    sink =
        std::make_unique<RedisTarget>(std::move(client.value()), r.streams[partition.value()], key);
  } else if (auto rc = open_log(target, args->get("source"), partition.value(), framed, key, sink);
             rc != kExitOk) {
    return rc;
  }
  Producer producer(std::move(sink), !framed, rate.value());
  const Status produced = args->has("count")
                              ? produce_generated(producer, count.value(), size.value())
                              : produce_stdin(producer);
  if (!produced) return runtime_error(kCommand, produced.error().message);
  if (auto ok = producer.sync(); !ok) return runtime_error(kCommand, ok.error().message);
  return kExitOk;
}

}  // namespace ringfeed::cli
