// The `ringfeed` command line, through the real binary: help, usage errors (exit 2, one
// line naming the flag), runtime errors (exit 1), produce into log files read back
// (generated messages, paced by --rate), consume from rings written in this process
// (count, timeout, JSON escaping, redelivery, every partition, signals, a closed ring,
// --output none, --latency), stat in its three formats with numbers checked, and, once
// the fetcher is built, a million lines end to end and latency through produce --rate.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "io/framed_record.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/headers.hpp"
#include "ringfeed/writer.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/group_layout.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

#ifndef RINGFEED_BIN
#error "RINGFEED_BIN must name the ringfeed binary (tests/CMakeLists.txt)"
#endif

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::Writer;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::int64_t realtime_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The records of a framed log file, copied out; a record that does not decode fails.
struct LogRecord {
  std::string key, value;
  std::int64_t timestamp_ns = 0;
  std::uint64_t offset = 0;
};
std::vector<LogRecord> read_log(const fs::path& p) {
  const std::string bytes = read_file(p);
  const auto span = std::as_bytes(std::span(bytes.data(), bytes.size()));
  std::vector<LogRecord> out;
  for (std::size_t pos = 0; pos < bytes.size();) {
    const auto r =
        ringfeed::io::decode(span.subspan(pos), pos, ringfeed::io::OffsetCheck::equals_position);
    EXPECT_EQ(r.status, ringfeed::io::DecodeStatus::ok)
        << "record " << out.size() << ": " << r.error;
    if (r.status != ringfeed::io::DecodeStatus::ok) break;
    out.push_back({std::string(r.record.key), std::string(r.record.value), r.record.timestamp_ns,
                   r.record.upstream_offset});
    pos += r.size;
  }
  return out;
}

// `i` zero-padded on the left to `size` characters: what produce --count generates.
std::string padded(std::uint64_t i, std::size_t size) {
  std::string digits = std::to_string(i);
  return std::string(size - digits.size(), '0') + digits;
}

// consume --latency's line, parsed: the measured count and p50 ... max in nanoseconds.
struct LatencyLine {
  std::uint64_t measured = 0;
  std::map<std::string, double> ns;  // "p50", "p90", "p99", "p99.9", "max"
  std::string also;                  // the bracketed "also taken: ..." part, if any
};
std::optional<LatencyLine> parse_latency(const std::string& line) {
  static const std::string kHead = "ringfeed consume: latency (publish to consume) of ";
  if (line.rfind(kHead, 0) != 0) return std::nullopt;
  std::istringstream in(line.substr(kHead.size()));
  LatencyLine l;
  std::string word;
  if (!(in >> l.measured >> word) || word != "messages:") return std::nullopt;
  for (const char* name : {"p50", "p90", "p99", "p99.9", "max"}) {
    double v = 0;
    std::string unit;
    if (!(in >> word >> v >> unit) || word != name) return std::nullopt;
    const std::map<std::string, double> scale{{"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}};
    if (!scale.count(unit)) return std::nullopt;
    l.ns[name] = v * scale.at(unit);
  }
  std::getline(in, l.also);
  const auto open = l.also.find('(');
  l.also = open == std::string::npos ? "" : l.also.substr(open);
  return l;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(text.substr(start, nl - start));
  }
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

// A fresh directory, removed with its contents at scope end.
class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "ringfeed-cli-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct Finished {
  int status = -1;  // exit status; -1 if killed or died by a signal
  std::string out;
  std::string err;
};

// Runs the binary with its standard streams in files (no pipe can fill up and stall a
// child while the test waits on something else).
class Cli {
 public:
  struct Child {
    pid_t pid = -1;
    fs::path out, err;
  };

  Child start(const std::vector<std::string>& args, const std::string& input = "") {
    const int n = ++runs_;
    const fs::path in = dir_.path() / ("in." + std::to_string(n));
    write_file(in, input);
    Child c{-1, dir_.path() / ("out." + std::to_string(n)),
            dir_.path() / ("err." + std::to_string(n))};
    std::vector<std::string> argv_store{RINGFEED_BIN};
    argv_store.insert(argv_store.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_store) argv.push_back(a.data());
    argv.push_back(nullptr);
    c.pid = ::fork();
    if (c.pid == 0) {
      const int fd_in = ::open(in.c_str(), O_RDONLY);
      const int fd_out = ::open(c.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int fd_err = ::open(c.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd_in < 0 || fd_out < 0 || fd_err < 0) std::_Exit(127);
      ::dup2(fd_in, 0);
      ::dup2(fd_out, 1);
      ::dup2(fd_err, 2);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
    return c;
  }

  Finished wait(const Child& c, std::chrono::milliseconds timeout = 60s) {
    Finished f;
    f.status = ringfeed::test::wait_child(c.pid, timeout);
    f.out = read_file(c.out);
    f.err = read_file(c.err);
    // A sanitizer build reports into the child's stderr; UBSan then carries on.
    for (const char* report : {"runtime error:", "AddressSanitizer", "LeakSanitizer"}) {
      EXPECT_EQ(f.err.find(report), std::string::npos) << f.err;
    }
    return f;
  }

  Finished run(const std::vector<std::string>& args, const std::string& input = "",
               std::chrono::milliseconds timeout = 60s) {
    return wait(start(args, input), timeout);
  }

  const fs::path& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  int runs_ = 0;
};

std::string describe(const std::vector<std::string>& args) {
  std::string s = "ringfeed";
  for (const auto& a : args) s += " " + a;
  return s;
}

// Exit status 2 and exactly one line on stderr that contains `reason`.
void expect_usage_error(Cli& cli, const std::vector<std::string>& args, const std::string& reason) {
  const Finished f = cli.run(args);
  EXPECT_EQ(f.status, 2) << describe(args) << "\nstderr: " << f.err;
  EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << describe(args) << ": " << f.err;
  EXPECT_NE(f.err.find(reason), std::string::npos)
      << describe(args) << "\nexpected: " << reason << "\nstderr: " << f.err;
  EXPECT_TRUE(f.out.empty()) << describe(args);
}

void expect_runtime_error(Cli& cli, const std::vector<std::string>& args, const std::string& reason,
                          const std::string& input = "") {
  const Finished f = cli.run(args, input);
  EXPECT_EQ(f.status, 1) << describe(args) << "\nstderr: " << f.err;
  EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << describe(args) << ": " << f.err;
  EXPECT_NE(f.err.find(reason), std::string::npos)
      << describe(args) << "\nexpected: " << reason << "\nstderr: " << f.err;
}

// Children started in the background are killed and reaped at scope end unless they were
// waited for: a failed assertion must not leave a fetcher running.
class ChildGuard {
 public:
  ChildGuard() = default;
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    for (pid_t pid : pids_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  const Cli::Child& watch(const Cli::Child& c) {
    pids_.push_back(c.pid);
    return c;
  }
  Finished wait(Cli& cli, const Cli::Child& c, std::chrono::milliseconds timeout) {
    Finished f = cli.wait(c, timeout);  // reaps it
    std::erase(pids_, c.pid);
    return f;
  }

 private:
  std::vector<pid_t> pids_;
};

// Every ringfeed.<ns>.* segment is removed at scope end (a failed test leaves none).
class NamespaceGuard {
 public:
  explicit NamespaceGuard(std::string ns) : ns_(std::move(ns)) {}
  ~NamespaceGuard() {
    for (const auto& name : ringfeed::shm::Segment::list("ringfeed." + ns_ + ".")) {
      ringfeed::shm::Segment::remove(name);
    }
  }
  const std::string& ns() const { return ns_; }

 private:
  std::string ns_;
};

// Live consumers in a group's slots (read-only, like stat).
int live_consumers(const std::string& ns, std::uint32_t partition, const std::string& group) {
  auto seg = ringfeed::shm::Segment::open(ringfeed::shm::group_segment_name(ns, partition, group),
                                          ringfeed::shm::Access::read_only);
  if (!seg || seg->size() < sizeof(ringfeed::shm::GroupControl)) return 0;
  const auto* g = reinterpret_cast<const ringfeed::shm::GroupControl*>(seg->base());
  int n = 0;
  for (const auto& slot : g->slots) {
    const std::uint64_t owner = slot.owner.load(std::memory_order_acquire);
    if (owner != 0 && ringfeed::shm::owner_alive(owner)) ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// help and usage errors

TEST(CliHelp, TopLevelAndEverySubcommandExitZeroAndNameTheirFlags) {
  Cli cli;
  {
    const Finished f = cli.run({"--help"});
    EXPECT_EQ(f.status, 0);
    for (const char* cmd : {"fetch", "produce", "consume", "stat"}) {
      EXPECT_NE(f.out.find(cmd), std::string::npos) << cmd;
    }
  }
  const std::map<std::string, std::vector<std::string>> flags{
      {"fetch",
       {"--namespace", "--source", "--partitions", "--ring-mb", "--lease-ms", "--max-deliveries",
        "--dead-letter", "--access-group"}},
      {"produce", {"--source", "--partition", "--format", "--key", "--count", "--size", "--rate"}},
      {"consume",
       {"--namespace", "--partition", "--group", "--mode", "--count", "--timeout-ms", "--output",
        "value|json|none", "--nack-every", "--latency", "p99.9"}},
      {"stat", {"--namespace", "--json", "--prometheus"}},
  };
  for (const auto& [cmd, names] : flags) {
    // --help wins even over missing required flags.
    const Finished f = cli.run({cmd, "--help"});
    EXPECT_EQ(f.status, 0) << cmd << ": " << f.err;
    EXPECT_EQ(f.out.rfind("usage: ringfeed " + cmd, 0), 0u) << f.out;
    for (const auto& flag : names) {
      EXPECT_NE(f.out.find(flag), std::string::npos) << cmd << " --help lacks " << flag;
    }
  }
}

TEST(CliUsage, WrongCommandLinesExitTwoWithOneLineNamingTheProblem) {
  Cli cli;
  const std::string src = "file:" + cli.dir().string();
  expect_usage_error(cli, {}, "no command");
  expect_usage_error(cli, {"frobnicate"}, "unknown command 'frobnicate'");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "0", "--bogus", "1"},
                     "unknown flag --bogus");
  expect_usage_error(cli, {"produce", "--source", src}, "missing required flag --partition");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "zero"},
                     "flag --partition: 'zero' is not a number");
  expect_usage_error(cli, {"produce", "--source=" + src, "--partition=1x"},
                     "flag --partition: '1x' is not a number");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "0", "--partition", "1"},
                     "--partition is given twice");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "0", "--format", "xml"},
                     "flag --format: 'xml' is not one of framed|lines");
  expect_usage_error(
      cli, {"produce", "--source", src, "--partition", "0", "--format", "lines", "--key", "k"},
      "flag --key");
  expect_usage_error(cli, {"produce", "--source", "not-a-uri", "--partition", "0"},
                     "flag --source: 'not-a-uri' is not a URI");
  const std::string redis = "redis://127.0.0.1:1?streams=a,b&group=g";
  expect_usage_error(cli,
                     {"produce", "--source", "redis://127.0.0.1:1?group=g", "--partition", "0"},
                     "no streams");
  expect_usage_error(cli, {"produce", "--source", redis, "--partition", "2"},
                     "flag --partition: 2 of a source with 2 streams");
  expect_usage_error(cli, {"produce", "--source", redis, "--partition", "0", "--format", "lines"},
                     "flag --format: only for file: sources");
  expect_usage_error(cli, {"produce", "--source", src, "--partition"},
                     "flag --partition needs a value");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "0", "--size", "8"},
                     "flag --size: only with --count");
  expect_usage_error(
      cli, {"produce", "--source", src, "--partition", "0", "--count", "101", "--size", "2"},
      "flag --size: 2 bytes cannot hold the sequence numbers up to 100");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "0", "--rate", "0"},
                     "flag --rate: 0 is out of range");
  expect_usage_error(cli, {"produce", "--source", src, "--partition", "0", "--count", "x"},
                     "flag --count: 'x' is not a number");
  expect_usage_error(
      cli,
      {"consume", "--namespace", "n", "--partition", "0", "--group", "g", "--mode", "sideways"},
      "flag --mode: 'sideways' is not one of");
  expect_usage_error(cli, {"consume", "--namespace", "n", "--partition", "0", "--group", "g"},
                     "missing required flag --mode");
  expect_usage_error(cli,
                     {"consume", "--namespace", "n", "--partition", "0", "--group", "g", "--mode",
                      "shared", "--count", "-5"},
                     "flag --count: '-5' is not a number");
  expect_usage_error(
      cli,
      {"consume", "--namespace", "n", "--partition", "some", "--group", "g", "--mode", "shared"},
      "flag --partition: 'some' is not a number");
  expect_usage_error(cli,
                     {"consume", "--namespace", "n", "--partition", "0", "--group", "g", "--mode",
                      "shared", "--output", "xml"},
                     "flag --output: 'xml' is not one of value|json");
  expect_usage_error(
      cli,
      {"consume", "--namespace", "n", "--partition", "0", "--group", "g.h", "--mode", "shared"},
      "flag --group");
  expect_usage_error(cli,
                     {"consume", "--namespace", "n", "--partition", "0", "--group", "g", "--mode",
                      "broadcast", "--nack-every", "2"},
                     "flag --nack-every");
  expect_usage_error(cli, {"stat", "--namespace", "n", "--json", "--prometheus"},
                     "--json and --prometheus");
  expect_usage_error(cli, {"stat", "--namespace", "n", "--json=yes"}, "flag --json takes no value");
  expect_usage_error(cli, {"stat", "--namespace", "n", "extra"}, "unexpected argument 'extra'");
  expect_usage_error(cli, {"fetch", "--namespace", "n", "--source", src, "--ring-mb", "3"},
                     "flag --ring-mb: 3 is not a power of two");
  expect_usage_error(cli,
                     {"fetch", "--namespace", "n", "--source", src, "--max-deliveries", "1000"},
                     "flag --max-deliveries: 1000 is out of range");
  expect_usage_error(cli, {"fetch", "--source", src}, "missing required flag --namespace");
  // A source URI that cannot be right is the command line's fault, before anything opens.
  expect_usage_error(cli, {"fetch", "--namespace", "n", "--source", "bogus://x"},
                     "flag --source: source URI 'bogus://x': unknown scheme 'bogus'");
  expect_usage_error(cli, {"fetch", "--namespace", "n", "--source", src + "?format=xml"},
                     "format 'xml' is not framed or lines");
  expect_usage_error(cli, {"fetch", "--namespace", "n", "--source", "kafka://a:1?topic=t"},
                     "no group");
  expect_usage_error(cli, {"fetch", "--namespace", "n", "--source", redis, "--partitions", "3"},
                     "2 streams for 3 partitions");
  expect_usage_error(
      cli, {"produce", "--source", src, "--partition", "99999999999999999999999"},
      "flag --partition: 99999999999999999999999 is out of range (must be in [0, 4095])");
  expect_usage_error(cli, {"produce", "--source", "bogus:x", "--partition", "0"},
                     "flag --source: unknown scheme 'bogus'");
}

TEST(CliErrors, RuntimeErrorsExitOneSayingWhatAndWhere) {
  Cli cli;
  const std::string missing = (cli.dir() / "no-such-dir").string();
  expect_runtime_error(cli, {"produce", "--source", "file:" + missing, "--partition", "0"}, missing,
                       "x\n");
  expect_runtime_error(
      cli, {"produce", "--source", "kafka://localhost:9092?topic=t&group=g", "--partition", "0"},
      "scheme 'kafka' is not supported yet by produce", "x\n");
  expect_runtime_error(
      cli, {"produce", "--source", "redis://127.0.0.1:1?streams=a&group=g", "--partition", "0"},
      "cannot connect to Redis at 127.0.0.1:1", "x\n");
  const std::string ns = ringfeed::test::unique_ns("cli-missing");
  expect_runtime_error(cli, {"stat", "--namespace", ns},
                       "namespace '" + ns + "' has no fetcher and no rings");
  expect_runtime_error(cli,
                       {"consume", "--namespace", ns, "--partition", "3", "--group", "g", "--mode",
                        "shared", "--timeout-ms", "0"},
                       "partition 3");
  expect_runtime_error(cli,
                       {"consume", "--namespace", ns, "--partition", "all", "--group", "g",
                        "--mode", "shared", "--timeout-ms", "0"},
                       "namespace '" + ns + "' has no partition rings");
  // A dead-letter directory that cannot be made is refused at start, nothing created.
  const std::string logs = "file:" + cli.dir().string();
  const std::string dl = (cli.dir() / "no-such-dir" / "dl").string();
  expect_runtime_error(cli, {"fetch", "--namespace", ns, "--source", logs, "--dead-letter", dl},
                       "dead-letter directory " + dl + ": missing, and so is its parent directory");
  EXPECT_TRUE(ringfeed::shm::Segment::list("ringfeed." + ns + ".").empty());
}

// ---------------------------------------------------------------------------------------
// produce

TEST(CliProduce, LinesAreAppendedByteForByteAndTheLastLineGetsItsNewline) {
  Cli cli;
  const fs::path dir = cli.dir() / "log";
  fs::create_directory(dir);
  const std::string src = "file:" + dir.string();
  // Binary bytes, an empty line, and more than one read buffer of input in total.
  std::string input = "first\n\nbin\x01\xff\x7f end\n";
  for (int i = 0; i < 20000; ++i)
    input += "line-" + std::to_string(i) + std::string(60, 'x') + "\n";
  input += "no newline at the end";
  Finished f =
      cli.run({"produce", "--source", src, "--partition", "2", "--format", "lines"}, input);
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(read_file(dir / "2.log"), input + "\n");
  // A second run appends; ?format=lines in the URI does the same as the flag.
  f = cli.run({"produce", "--source", src + "?format=lines", "--partition", "2"}, "more\n");
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(read_file(dir / "2.log"), input + "\nmore\n");
  struct stat st {};
  ASSERT_EQ(::stat((dir / "2.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(CliProduce, FramedRecordsDecodeToTheLinesWithKeyOffsetsAndTimestamps) {
  Cli cli;
  const fs::path dir = cli.dir() / "log";
  fs::create_directory(dir);
  std::vector<std::string> lines{"alpha", "", "with \"quotes\" and \\", "\x01\x02\xfe"};
  for (int i = 0; i < 9000; ++i) lines.push_back("value-" + std::to_string(i));  // > 1 batch
  std::string input;
  for (const auto& l : lines) input += l + "\n";
  input += "tail";  // no newline: still a message
  lines.push_back("tail");
  const auto before = std::chrono::system_clock::now().time_since_epoch();
  Finished f = cli.run(
      {"produce", "--source=file:" + dir.string(), "--partition=7", "--key=order-1"}, input);
  ASSERT_EQ(f.status, 0) << f.err;

  const std::string bytes = read_file(dir / "7.log");
  const auto span = std::as_bytes(std::span(bytes.data(), bytes.size()));
  std::size_t pos = 0, n = 0;
  while (pos < bytes.size()) {
    const auto r =
        ringfeed::io::decode(span.subspan(pos), pos, ringfeed::io::OffsetCheck::equals_position);
    ASSERT_EQ(r.status, ringfeed::io::DecodeStatus::ok) << "record " << n << ": " << r.error;
    ASSERT_LT(n, lines.size());
    EXPECT_EQ(r.record.value, lines[n]) << "record " << n;
    EXPECT_EQ(r.record.key, "order-1");
    EXPECT_EQ(r.record.upstream_offset, pos);
    EXPECT_GE(r.record.timestamp_ns, std::chrono::nanoseconds(before).count());
    pos += r.size;
    ++n;
  }
  EXPECT_EQ(n, lines.size());
}

TEST(CliProduce, CountAndSizeWriteExactlyThatManyRecordsOfThatSizeAndReadNoInput) {
  Cli cli;
  const fs::path dir = cli.dir() / "log";
  fs::create_directory(dir);
  const std::string src = "file:" + dir.string();
  const std::int64_t before = realtime_ns();
  // Standard input is not read: its line must not show up.
  Finished f = cli.run({"produce", "--source", src, "--partition", "0", "--count", "5000", "--size",
                        "100", "--key", "k"},
                       "not a message\n");
  ASSERT_EQ(f.status, 0) << f.err;
  const std::int64_t after = realtime_ns();
  const auto records = read_log(dir / "0.log");
  ASSERT_EQ(records.size(), 5000u);
  for (std::size_t i = 0; i < records.size(); ++i) {
    ASSERT_EQ(records[i].value, padded(i, 100)) << "record " << i;
    EXPECT_EQ(records[i].key, "k");
    // Stamped when appended: within the run, and never going back.
    EXPECT_GE(records[i].timestamp_ns, before);
    EXPECT_LE(records[i].timestamp_ns, after);
    if (i > 0) {
      EXPECT_GE(records[i].timestamp_ns, records[i - 1].timestamp_ns);
    }
  }

  // The default size is 64 bytes; the lines format gets one line per message.
  f = cli.run({"produce", "--source", src, "--partition", "1", "--count", "3"});
  ASSERT_EQ(f.status, 0) << f.err;
  const auto defaults = read_log(dir / "1.log");
  ASSERT_EQ(defaults.size(), 3u);
  EXPECT_EQ(defaults[2].value, padded(2, 64));
  f = cli.run({"produce", "--source", src, "--partition", "2", "--format", "lines", "--count", "12",
               "--size", "2"});
  ASSERT_EQ(f.status, 0) << f.err;
  std::string expected;
  for (int i = 0; i < 12; ++i) expected += padded(i, 2) + "\n";
  EXPECT_EQ(read_file(dir / "2.log"), expected);
  // --count 0 appends nothing but creates the log, as an empty standard input does.
  f = cli.run({"produce", "--source", src, "--partition", "3", "--count", "0"}, "x\n");
  ASSERT_EQ(f.status, 0) << f.err;
  ASSERT_TRUE(fs::exists(dir / "3.log"));
  EXPECT_EQ(fs::file_size(dir / "3.log"), 0u);
}

// N messages at R per second: message i is due i/R seconds after message 0, so a run
// takes at least (N-1)/R seconds and the timestamps of the first and last message are
// that far apart. Lower bounds only: a loaded machine may take longer.
TEST(CliProduce, RatePacesGeneratedAndStandardInputMessages) {
  Cli cli;
  const fs::path dir = cli.dir() / "log";
  fs::create_directory(dir);
  const std::string src = "file:" + dir.string();
  constexpr int kMessages = 31;
  constexpr int kRate = 100;
  const auto at_least = std::chrono::milliseconds((kMessages - 1) * 1000 / kRate);

  auto start = std::chrono::steady_clock::now();
  Finished f = cli.run({"produce", "--source", src, "--partition", "0", "--count",
                        std::to_string(kMessages), "--size", "8", "--rate", std::to_string(kRate)});
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_GE(took, at_least);
  const auto records = read_log(dir / "0.log");
  ASSERT_EQ(records.size(), std::size_t{kMessages});
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(records[i].value, padded(i, 8));
  EXPECT_GE(records.back().timestamp_ns - records.front().timestamp_ns,
            std::chrono::nanoseconds(at_least).count());

  std::string input;
  for (int i = 0; i < kMessages; ++i) input += "line " + std::to_string(i) + "\n";
  start = std::chrono::steady_clock::now();
  f = cli.run({"produce", "--source", src, "--partition", "1", "--rate", std::to_string(kRate)},
              input);
  took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_GE(took, at_least);
  const auto lines = read_log(dir / "1.log");
  ASSERT_EQ(lines.size(), std::size_t{kMessages});
  EXPECT_EQ(lines.back().value, "line " + std::to_string(kMessages - 1));
  EXPECT_GE(lines.back().timestamp_ns - lines.front().timestamp_ns,
            std::chrono::nanoseconds(at_least).count());
}

// ---------------------------------------------------------------------------------------
// consume

class CliConsume : public ::testing::Test {
 protected:
  void SetUp() override { writers_.push_back(make_writer(0)); }

  std::unique_ptr<Writer> make_writer(std::uint32_t partition) {
    // Groups made on these rings allow many deliveries: the redelivery test nacks a lot.
    auto w = Writer::create({.ns = ns_.ns(),
                             .partition = partition,
                             .capacity = 1 << 20,
                             .group_defaults = {.max_deliveries = 60}});
    EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message);
    return w.ok() ? std::move(w.value()) : nullptr;
  }

  // Creates the group before anything is published, so it holds every message.
  void create_group(const std::string& group, Mode mode, std::uint32_t partition = 0) {
    auto c =
        Consumer::attach({.ns = ns_.ns(), .partition = partition, .group = group, .mode = mode});
    ASSERT_TRUE(c.ok()) << c.error().message;
  }

  void publish(Writer& w, const std::vector<std::pair<std::string, std::string>>& kv) {
    for (std::size_t i = 0; i < kv.size(); ++i) {
      ringfeed::OutMessage m{
          .key = kv[i].first,
          .value = kv[i].second,
          .upstream_offset = 100 + i,
          .timestamp_ns = 1'700'000'000'000'000'000 + static_cast<std::int64_t>(i)};
      ASSERT_EQ(w.publish({&m, 1}, 1s), 1u);
    }
  }

  std::vector<std::string> consume_args(const std::string& group, const std::string& mode,
                                        std::vector<std::string> extra) {
    std::vector<std::string> args{"consume", "--namespace", ns_.ns(), "--partition", "0",
                                  "--group", group,         "--mode", mode};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  NamespaceGuard ns_{ringfeed::test::unique_ns("cli")};
  std::vector<std::unique_ptr<Writer>> writers_;
  Cli cli_;
};

TEST_F(CliConsume, CountPrintsThatManyValuesInOrderAndAcksThem) {
  create_group("g", Mode::exclusive);
  std::vector<std::pair<std::string, std::string>> kv;
  for (int i = 0; i < 50; ++i) kv.emplace_back("k", "value " + std::to_string(i));
  publish(*writers_[0], kv);

  Finished f = cli_.run(consume_args("g", "exclusive", {"--count", "20"}));
  ASSERT_EQ(f.status, 0) << f.err;
  std::string expected;
  for (int i = 0; i < 20; ++i) expected += "value " + std::to_string(i) + "\n";
  EXPECT_EQ(f.out, expected);
  // Acked: the next run resumes after them and, with a timeout, stops when it runs dry.
  f = cli_.run(consume_args("g", "exclusive", {"--timeout-ms", "300"}));
  ASSERT_EQ(f.status, 0) << f.err;
  expected.clear();
  for (int i = 20; i < 50; ++i) expected += "value " + std::to_string(i) + "\n";
  EXPECT_EQ(f.out, expected);
}

// --count 0 attaches and leaves: the group exists from then on and holds every message
// for the consumers that come later, even when another group consumed them first.
TEST_F(CliConsume, CountZeroCreatesTheGroupAndTakesNothing) {
  create_group("first", Mode::exclusive);
  publish(*writers_[0], {{"", "a"}, {"", "b"}});
  Finished f = cli_.run(consume_args("late", "shared", {"--count", "0"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_TRUE(f.out.empty()) << f.out;
  EXPECT_EQ(live_consumers(ns_.ns(), 0, "late"), 0) << "it left the group";
  EXPECT_EQ(ringfeed::shm::Segment::list(ringfeed::shm::group_segment_name(ns_.ns(), 0, "late")),
            std::vector<std::string>{ringfeed::shm::group_segment_name(ns_.ns(), 0, "late")});
  // The other group takes both and the ring lets go of them for it; "late" still has them.
  f = cli_.run(consume_args("first", "exclusive", {"--count", "2"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.out, "a\nb\n");
  writers_[0]->reclaim(true);
  publish(*writers_[0], {{"", "c"}});
  f = cli_.run(consume_args("late", "shared", {"--timeout-ms", "300"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.out, "a\nb\nc\n");
}

TEST_F(CliConsume, OutputNonePrintsNothingButAcksEveryMessage) {
  create_group("g", Mode::shared);
  std::vector<std::pair<std::string, std::string>> kv;
  for (int i = 0; i < 200; ++i) kv.emplace_back("k", "value " + std::to_string(i));
  publish(*writers_[0], kv);
  Finished f = cli_.run(consume_args("g", "shared", {"--count", "200", "--output", "none"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_TRUE(f.out.empty()) << f.out;
  EXPECT_TRUE(f.err.empty()) << f.err;
  // All 200 were acked: the next consume gets only what is published after them.
  publish(*writers_[0], {{"k", "after"}});
  f = cli_.run(consume_args("g", "shared", {"--timeout-ms", "300"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.out, "after\n");
}

// Messages published after consume attached are measured; a backlog and messages
// without a timestamp are counted apart. Every measured message here was stamped at
// least 200 ms before it was published, so every percentile is at least that.
TEST_F(CliConsume, LatencyPrintsOneLineWithTheCountAndThePercentilesAtExit) {
  create_group("g", Mode::shared);
  // The backlog (timestamps of 2023) and two messages without a timestamp.
  publish(*writers_[0], {{"", "old 1"}, {"", "old 2"}, {"", "old 3"}});
  for (int i = 0; i < 2; ++i) {
    ringfeed::OutMessage m{.value = "untimed", .upstream_offset = 200, .timestamp_ns = 0};
    ASSERT_EQ(writers_[0]->publish({&m, 1}, 1s), 1u);
  }
  constexpr int kMeasured = 40;
  const Cli::Child c = cli_.start(consume_args(
      "g", "shared", {"--latency", "--count", std::to_string(5 + kMeasured), "--output", "json"}));
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return live_consumers(ns_.ns(), 0, "g") == 1; }))
      << "the consume process never attached";
  // Consume took its start time before it attached, so it was before `attached`.
  const std::int64_t attached = realtime_ns();
  constexpr std::int64_t kAge = 200'000'000;
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return realtime_ns() >= attached + kAge; }));
  for (int i = 0; i < kMeasured; ++i) {
    const std::string value = "new " + std::to_string(i);  // outlives the view in m
    ringfeed::OutMessage m{.value = value,
                           .upstream_offset = 300 + static_cast<std::uint64_t>(i),
                           .timestamp_ns = attached};
    ASSERT_EQ(writers_[0]->publish({&m, 1}, 1s), 1u);
  }
  const Finished f = cli_.wait(c, 30s);
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(split_lines(f.out).size(), 5u + kMeasured) << "the messages are still printed";
  const auto err = split_lines(f.err);
  ASSERT_EQ(err.size(), 1u) << f.err;
  const auto line = parse_latency(err[0]);
  ASSERT_TRUE(line) << "not a latency line: " << err[0];
  EXPECT_EQ(line->measured, std::uint64_t{kMeasured}) << err[0];
  EXPECT_EQ(line->also, "(also taken: 3 published before consume attached, 2 without a timestamp)")
      << err[0];
  double previous = static_cast<double>(kAge);
  for (const char* name : {"p50", "p90", "p99", "p99.9", "max"}) {
    // Printed to three significant digits: a value is off by at most half a unit of the
    // last one, 0.5 % of it.
    EXPECT_GE(line->ns.at(name) * 1.005, previous) << name << " in " << err[0];
    previous = std::max(previous, line->ns.at(name));
  }
}

TEST_F(CliConsume, LatencyWithNothingToMeasureSaysSo) {
  create_group("g", Mode::exclusive);
  publish(*writers_[0], {{"", "old"}});  // a backlog only
  Finished f = cli_.run(
      consume_args("g", "exclusive", {"--latency", "--output", "none", "--timeout-ms", "200"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.err,
            "ringfeed consume: latency: no message to measure: 1 taken (1 published before "
            "consume attached)\n");
  f = cli_.run(consume_args("g", "exclusive", {"--latency", "--timeout-ms", "100"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.err, "ringfeed consume: latency: no message to measure: 0 taken\n");
}

TEST_F(CliConsume, TimeoutWithNothingToTakeExitsZeroAfterAboutThatLong) {
  create_group("g", Mode::shared);
  const auto start = std::chrono::steady_clock::now();
  const Finished f = cli_.run(consume_args("g", "shared", {"--timeout-ms", "300"}));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_TRUE(f.out.empty());
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 20s);
}

TEST_F(CliConsume, JsonEscapesQuotesAndControlKeepsUtf8AndGivesBinaryInBase64) {
  create_group("g", Mode::exclusive);
  publish(*writers_[0], {{"key\t1", "say \"hi\"\\ \n\x01\x1f\x7f \xc3\xa9"},
                         {"", ""},
                         {"k\xff", std::string("\xff\xc3\x00", 3)},
                         {"\xed\xa0\x80", "ab"},  // a surrogate is not UTF-8
                         {"", "\x80"}});
  const Finished f = cli_.run(consume_args("g", "exclusive", {"--count", "5", "--output", "json"}));
  ASSERT_EQ(f.status, 0) << f.err;
  const std::vector<std::string> lines = split_lines(f.out);
  ASSERT_EQ(lines.size(), 5u) << f.out;
  EXPECT_EQ(lines[0],
            "{\"partition\":0,\"offset\":100,\"key\":\"key\\t1\","
            "\"value\":\"say \\\"hi\\\"\\\\ \\n\\u0001\\u001f\\u007f \xc3\xa9\","
            "\"deliveries\":1,\"timestamp\":1700000000000000000}");
  EXPECT_EQ(lines[1],
            "{\"partition\":0,\"offset\":101,\"key\":\"\",\"value\":\"\",\"deliveries\":1,"
            "\"timestamp\":1700000000000000001}");
  EXPECT_EQ(lines[2],
            "{\"partition\":0,\"offset\":102,\"key_base64\":\"a/8=\",\"value_base64\":\"/8MA\","
            "\"deliveries\":1,\"timestamp\":1700000000000000002}");
  EXPECT_EQ(lines[3],
            "{\"partition\":0,\"offset\":103,\"key_base64\":\"7aCA\",\"value\":\"ab\","
            "\"deliveries\":1,\"timestamp\":1700000000000000003}");
  EXPECT_EQ(lines[4],
            "{\"partition\":0,\"offset\":104,\"key\":\"\",\"value_base64\":\"gA==\","
            "\"deliveries\":1,\"timestamp\":1700000000000000004}");
}

// A partition that went to another host is not an error: consume says so once, and goes
// on waiting (here until its timeout).
TEST_F(CliConsume, EndOfPartitionIsSaidOnceAndIsNoError) {
  create_group("g", Mode::shared);
  publish(*writers_[0], {{"", "a"}});
  writers_[0]->set_released(true);
  const Finished f = cli_.run(consume_args("g", "shared", {"--timeout-ms", "300"}));
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.out, "a\n");
  const std::string said = "partition 0: end of partition";
  EXPECT_NE(f.err.find(said), std::string::npos) << f.err;
  EXPECT_EQ(f.err.find(said), f.err.rfind(said)) << "said once: " << f.err;
}

// Headers (a Kafka record's) are printed after the other fields, null values as null;
// headers that do not decode are named, and the message still printed and acked.
TEST_F(CliConsume, JsonShowsHeaders) {
  create_group("g", Mode::exclusive);
  const ringfeed::OutHeader headers[] = {{.key = "trace", .value = "a\"b"},
                                         {.key = "gone", .value = std::nullopt}};
  const std::string encoded = ringfeed::encode_headers(headers);
  const std::string bad = encoded.substr(0, encoded.size() - 1);
  const ringfeed::OutMessage out[] = {
      {.key = "k", .value = "v", .headers = encoded, .upstream_offset = 7, .timestamp_ns = 9},
      {.value = "w", .headers = bad, .upstream_offset = 8, .timestamp_ns = 9}};
  ASSERT_EQ(writers_[0]->publish(out, 1s), 2u);
  const Finished f = cli_.run(consume_args("g", "exclusive", {"--count", "2", "--output", "json"}));
  ASSERT_EQ(f.status, 0) << f.err;
  const std::vector<std::string> lines = split_lines(f.out);
  ASSERT_EQ(lines.size(), 2u) << f.out;
  EXPECT_EQ(lines[0],
            "{\"partition\":0,\"offset\":7,\"key\":\"k\",\"value\":\"v\",\"deliveries\":1,"
            "\"timestamp\":9,\"headers\":[{\"key\":\"trace\",\"value\":\"a\\\"b\"},"
            "{\"key\":\"gone\",\"value\":null}]}");
  EXPECT_NE(lines[1].find("\"value\":\"w\""), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"headers_error\":\"record headers: headers[1].value"),
            std::string::npos)
      << lines[1];
}

TEST_F(CliConsume, NackEveryKRedeliversInSharedModeAndEveryValueIsPrintedOnce) {
  create_group("s", Mode::shared);
  std::vector<std::pair<std::string, std::string>> kv;
  for (int i = 0; i < 60; ++i) kv.emplace_back("", "m" + std::to_string(i));
  publish(*writers_[0], kv);
  const Finished f = cli_.run(
      consume_args("s", "shared", {"--count", "60", "--nack-every", "3", "--output", "json"}));
  ASSERT_EQ(f.status, 0) << f.err;
  const auto lines = split_lines(f.out);
  ASSERT_EQ(lines.size(), 60u) << f.out;
  std::set<std::string> values;
  int redelivered = 0;
  for (const auto& l : lines) {
    const auto v = l.find("\"value\":\"");
    ASSERT_NE(v, std::string::npos) << l;
    values.insert(l.substr(v + 9, l.find('"', v + 9) - (v + 9)));
    if (l.find("\"deliveries\":1,") == std::string::npos) ++redelivered;
  }
  EXPECT_EQ(values.size(), 60u) << "each value exactly once";
  // Every third message taken was nacked, so at least 20 came a second time.
  EXPECT_GE(redelivered, 20);
  // Nothing left: all of them were acked in the end.
  const Finished again = cli_.run(consume_args("s", "shared", {"--timeout-ms", "200"}));
  EXPECT_EQ(again.status, 0) << again.err;
  EXPECT_TRUE(again.out.empty()) << again.out;
}

TEST_F(CliConsume, PartitionAllTakesFromEveryRingOfTheNamespace) {
  writers_.push_back(make_writer(1));
  writers_.push_back(make_writer(3));  // partitions need not be contiguous
  for (std::uint32_t p : {0u, 1u, 3u}) create_group("all", Mode::shared, p);
  std::set<std::string> expected;
  for (std::size_t w = 0; w < writers_.size(); ++w) {
    std::vector<std::pair<std::string, std::string>> kv;
    for (int i = 0; i < 40; ++i)
      kv.emplace_back("", "w" + std::to_string(w) + "-" + std::to_string(i));
    for (const auto& e : kv) expected.insert(e.second);
    publish(*writers_[w], kv);
  }
  std::vector<std::string> args{"consume", "--namespace", ns_.ns(), "--partition", "all",
                                "--group", "all",         "--mode", "shared",      "--count",
                                "120",     "--output",    "json"};
  const Finished f = cli_.run(args);
  ASSERT_EQ(f.status, 0) << f.err;
  std::set<std::string> got;
  std::map<std::string, int> per_partition;
  for (const auto& l : split_lines(f.out)) {
    const auto v = l.find("\"value\":\"");
    got.insert(l.substr(v + 9, l.find('"', v + 9) - (v + 9)));
    ++per_partition[l.substr(0, l.find(','))];
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(per_partition["{\"partition\":0"], 40);
  EXPECT_EQ(per_partition["{\"partition\":1"], 40);
  EXPECT_EQ(per_partition["{\"partition\":3"], 40);
}

TEST_F(CliConsume, SigtermLeavesTheGroupAndExitsZero) {
  create_group("s", Mode::shared);
  const Cli::Child c = cli_.start(consume_args("s", "shared", {}));
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return live_consumers(ns_.ns(), 0, "s") == 1; }))
      << "the consume process never attached";
  publish(*writers_[0], {{"", "one"}, {"", "two"}});
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return read_file(c.out) == "one\ntwo\n"; }));
  ASSERT_EQ(::kill(c.pid, SIGTERM), 0);
  const Finished f = cli_.wait(c, 30s);
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(live_consumers(ns_.ns(), 0, "s"), 0) << "its slot was not given back";
}

TEST_F(CliConsume, APartitionWithoutARingIsNamedWithThePartitionsThatHaveOne) {
  writers_.push_back(make_writer(1));
  std::vector<std::string> args = consume_args("g", "shared", {"--timeout-ms", "0"});
  args[4] = "2";
  const Finished f = cli_.run(args);
  EXPECT_EQ(f.status, 1) << f.err;
  EXPECT_EQ(f.err, "ringfeed consume: namespace '" + ns_.ns() +
                       "' has no partition 2 (its rings are partitions 0, 1)\n");
}

TEST_F(CliConsume, AClosedRingEndsConsumeWithExitOneAfterItTookEverything) {
  create_group("g", Mode::exclusive);
  publish(*writers_[0], {{"", "a"}, {"", "b"}});
  writers_[0]->close();
  const Finished f = cli_.run(consume_args("g", "exclusive", {"--count", "10"}));
  EXPECT_EQ(f.status, 1);
  EXPECT_EQ(f.out, "a\nb\n");
  EXPECT_NE(f.err.find("stopped"), std::string::npos) << f.err;
  EXPECT_NE(f.err.find(ns_.ns()), std::string::npos) << f.err;
}

// ---------------------------------------------------------------------------------------
// stat

class CliStat : public CliConsume {
 protected:
  // A shared group with 10 messages: 4 taken, the first acked, 3 still leased.
  void make_state() {
    auto c = Consumer::attach({.ns = ns_.ns(), .group = "work", .mode = Mode::shared});
    ASSERT_TRUE(c.ok()) << c.error().message;
    shared_ = std::move(c.value());
    std::vector<std::pair<std::string, std::string>> kv;
    for (int i = 0; i < 10; ++i) kv.emplace_back("k", "v" + std::to_string(i));
    publish(*writers_[0], kv);
    const auto& batch = shared_->pop(4, 1s);
    ASSERT_EQ(batch.size(), 4u);
    ASSERT_EQ(shared_->ack(batch[0]), ringfeed::AckStatus::ok);
  }
  std::vector<std::string> stat_args(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"stat", "--namespace", ns_.ns()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  std::unique_ptr<Consumer> shared_;
};

TEST_F(CliStat, JsonHasTheRingAndTheSharedGroupsNumbers) {
  make_state();
  const Finished f = cli_.run(stat_args({"--json"}));
  ASSERT_EQ(f.status, 0) << f.err;
  const std::string& j = f.out;
  EXPECT_EQ(j.rfind("{\"namespace\":\"" + ns_.ns() + "\",\"fetcher\":null,", 0), 0u) << j;
  EXPECT_EQ(std::count(j.begin(), j.end(), '\n'), 1) << "one JSON object on one line";
  EXPECT_NE(j.find("\"capacity\":1048576"), std::string::npos) << j;
  EXPECT_NE(j.find("\"write_pos\":" + std::to_string(writers_[0]->write_pos())), std::string::npos)
      << j;
  EXPECT_NE(j.find("\"published\":10"), std::string::npos) << j;
  EXPECT_NE(j.find("\"writer_pid\":" + std::to_string(::getpid()) + ",\"writer_alive\":true"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("{\"group\":\"work\",\"mode\":\"shared\",\"fenced\":false,\"started\":true,"
                   "\"consumers\":[{\"pid\":" +
                   std::to_string(::getpid()) +
                   ",\"alive\":true,\"unacked\":3,\"at_unacked_limit\":false}],\"lag\":9,"
                   "\"lag_unit\":\"messages\",\"leases_in_flight\":3,\"redeliveries\":0,"
                   "\"dead_letters_pending\":0}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("{\"open\":true,\"released\":false,"), std::string::npos) << j;
}

// Failover: stat says which consumer takes the messages (the first to attach).
TEST_F(CliStat, AFailoverGroupSaysWhichConsumerIsActive) {
  auto first = Consumer::attach({.ns = ns_.ns(), .group = "fo", .mode = Mode::failover});
  ASSERT_TRUE(first.ok()) << first.error().message;
  const Cli::Child standby = cli_.start(consume_args("fo", "failover", {}));
  const std::string self = std::to_string(::getpid());
  const std::string other = std::to_string(standby.pid);
  Finished f;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        f = cli_.run(stat_args({"--json"}));
        return f.out.find("{\"pid\":" + other) != std::string::npos;
      },
      10s))
      << f.out << f.err;
  EXPECT_NE(
      f.out.find("\"consumers\":[{\"pid\":" + self +
                 ",\"alive\":true,\"unacked\":0,\"at_unacked_limit\":false,\"active\":true},"
                 "{\"pid\":" +
                 other +
                 ",\"alive\":true,\"unacked\":0,\"at_unacked_limit\":false,\"active\":false}]"),
      std::string::npos)
      << f.out;
  const Finished human = cli_.run(stat_args());
  EXPECT_NE(human.out.find(self + "(active)," + other), std::string::npos) << human.out;
  ::kill(standby.pid, SIGTERM);
  EXPECT_EQ(cli_.wait(standby, 30s).status, 0);
}

// A ring whose partition went to another host (a Kafka rebalance) is open and released.
TEST_F(CliStat, AReleasedRingSaysSo) {
  make_state();
  writers_[0]->set_released(true);
  Finished f = cli_.run(stat_args({"--json"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_NE(f.out.find("{\"open\":true,\"released\":true,"), std::string::npos) << f.out;
  f = cli_.run(stat_args({"--prometheus"}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_NE(f.out.find("ringfeed_ring_released{namespace=\"" + ns_.ns() + "\",partition=\"0\"} 1"),
            std::string::npos)
      << f.out;
  f = cli_.run(stat_args({}));
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_NE(f.out.find("released"), std::string::npos) << f.out;
}

TEST_F(CliStat, PrometheusHasOneHelpAndTypePerMetricAndLabelledSamples) {
  make_state();
  const Finished f = cli_.run(stat_args({"--prometheus"}));
  ASSERT_EQ(f.status, 0) << f.err;
  const std::string labels = "{namespace=\"" + ns_.ns() + "\",partition=\"0\",group=\"work\"}";
  const auto lines = split_lines(f.out);
  auto has = [&](const std::string& line) {
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  };
  EXPECT_TRUE(has("ringfeed_group_leases_in_flight" + labels + " 3")) << f.out;
  EXPECT_TRUE(has("ringfeed_group_lag_messages" + labels + " 9")) << f.out;
  EXPECT_TRUE(has("ringfeed_group_consumers" + labels + " 1")) << f.out;
  EXPECT_TRUE(has("ringfeed_ring_published_messages_total{namespace=\"" + ns_.ns() +
                  "\",partition=\"0\"} 10"))
      << f.out;
  EXPECT_TRUE(has("ringfeed_fetcher_up{namespace=\"" + ns_.ns() + "\"} 0")) << f.out;
  // Every sample's metric was introduced by # HELP then # TYPE, each exactly once.
  std::set<std::string> helped, typed;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind("# HELP ", 0) == 0) {
      const std::string name = l.substr(7, l.find(' ', 7) - 7);
      EXPECT_TRUE(helped.insert(name).second) << "second HELP for " << name;
      ASSERT_LT(i + 1, lines.size());
      EXPECT_EQ(lines[i + 1].rfind("# TYPE " + name + " ", 0), 0u) << lines[i + 1];
    } else if (l.rfind("# TYPE ", 0) == 0) {
      EXPECT_TRUE(typed.insert(l.substr(7, l.find(' ', 7) - 7)).second) << l;
    } else {
      const std::string name = l.substr(0, l.find('{'));
      EXPECT_EQ(name.rfind("ringfeed_", 0), 0u) << l;
      EXPECT_TRUE(helped.count(name)) << "sample before its HELP: " << l;
    }
  }
}

TEST_F(CliStat, HumanTablesShowThePartitionAndTheGroup) {
  make_state();
  create_group("audit", Mode::broadcast);
  const Finished f = cli_.run(stat_args());
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_NE(f.out.find("namespace " + ns_.ns() + ": no fetcher segment"), std::string::npos)
      << f.out;
  EXPECT_NE(f.out.find("PARTITION"), std::string::npos) << f.out;
  const auto lines = split_lines(f.out);
  auto row = [&](const std::string& group) {
    for (const auto& l : lines) {
      std::istringstream in(l);
      std::vector<std::string> cells{std::istream_iterator<std::string>(in), {}};
      if (cells.size() > 2 && cells[1] == group) return cells;
    }
    return std::vector<std::string>{};
  };
  // The partition table: a cell under every heading.
  auto cells = [](const std::string& l) {
    std::istringstream in(l);
    return std::vector<std::string>{std::istream_iterator<std::string>(in), {}};
  };
  const auto heading = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.rfind("PARTITION  RING", 0) == 0;
  });
  ASSERT_NE(heading, lines.end()) << f.out;
  ASSERT_NE(heading + 1, lines.end());
  const auto ring = cells(*(heading + 1));
  ASSERT_EQ(ring.size(), cells(*heading).size()) << f.out;
  EXPECT_EQ(ring[0], "0");
  EXPECT_EQ(ring[1], "open");
  EXPECT_EQ(ring[2], "-");  // no fetcher: no upstream positions
  EXPECT_EQ(ring[5], "1048576");
  EXPECT_EQ(ring[7], "10");
  const auto work = row("work");
  ASSERT_EQ(work.size(), 10u) << f.out;  // the lag is "9 msgs": two cells
  EXPECT_EQ(work[2], "shared");
  EXPECT_EQ(work[3], std::to_string(::getpid()) + ":3") << "pid:unacked";
  EXPECT_EQ(work[4], "9");
  EXPECT_EQ(work[6], "3");  // leased
  EXPECT_EQ(work[9], "ok");
  const auto audit = row("audit");
  ASSERT_FALSE(audit.empty()) << f.out;
  EXPECT_EQ(audit[2], "broadcast");
}

TEST_F(CliStat, GarbageInEverySegmentIsShownNeverACrash) {
  make_state();
  shared_.reset();  // its detach must not run over the garbage written below
  create_group("audit", Mode::broadcast);
  create_group("solo", Mode::exclusive);
  namespace shm = ringfeed::shm;
  std::mt19937_64 rng(20240611);
  auto scribble = [&](std::byte* from, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) from[i] = static_cast<std::byte>(rng());
  };
  for (int round = 0; round < 6; ++round) {
    // Groups: everything after the header, and in odd rounds the header's sizes too.
    for (const auto& name : shm::Segment::list(shm::group_segment_prefix(ns_.ns(), 0))) {
      auto seg = shm::Segment::open(name, shm::Access::read_write);
      ASSERT_TRUE(seg.ok()) << seg.error().message;
      scribble(seg->base() + sizeof(shm::SegmentHeader), seg->size() - sizeof(shm::SegmentHeader));
      if (round % 2 == 1) scribble(seg->base() + 16, 24);
    }
    // The ring's positions and state (the writer here is idle).
    {
      auto seg = shm::Segment::open(shm::ring_segment_name(ns_.ns(), 0), shm::Access::read_write);
      ASSERT_TRUE(seg.ok()) << seg.error().message;
      scribble(seg->base() + 64, 256);
    }
    // A fetcher segment: a valid header (in even rounds) over random counters and text.
    const std::string fetcher = shm::fetcher_segment_name(ns_.ns());
    shm::Segment::remove(fetcher);
    const std::uint32_t parts = 3;
    const auto self = shm::self_identity();
    auto created =
        shm::Segment::create(fetcher, shm::fetcher_segment_size(parts), [&](std::byte* base) {
          scribble(base, shm::fetcher_segment_size(parts));
          shm::SegmentHeader h{shm::kMagic,
                               shm::kLayoutVersion,
                               static_cast<std::uint32_t>(shm::SegmentKind::fetcher),
                               shm::fetcher_segment_size(parts),
                               sizeof(shm::FetcherControl),
                               round % 2 == 0 ? parts : parts + 1000,
                               self.pid,
                               0,
                               self.start_time,
                               0};
          std::memcpy(base, &h, sizeof h);
        });
    ASSERT_TRUE(created.ok()) << created.error().message;
    for (const std::vector<std::string>& extra :
         {std::vector<std::string>{}, {"--json"}, {"--prometheus"}}) {
      const Finished f = cli_.run(stat_args(extra));
      EXPECT_EQ(f.status, 0) << "round " << round << " " << describe(stat_args(extra)) << "\n"
                             << f.err;
      EXPECT_NE(f.out.find(ns_.ns()), std::string::npos) << f.out;
    }
  }
}

// ---------------------------------------------------------------------------------------
// end to end, through the fetcher

// A build without the fetcher says so when asked to fetch from a directory that does
// not exist (one with the fetcher refuses that directory).
bool fetcher_built(Cli& cli) {
  const NamespaceGuard ns(ringfeed::test::unique_ns("probe"));
  const Finished f = cli.run(
      {"fetch", "--namespace", ns.ns(), "--source", "file:/nonexistent-ringfeed-dir"}, "", 20s);
  return f.err.find("has no fetcher") == std::string::npos;
}

TEST(CliEndToEnd, AMillionLinesThroughFetchAndThreeSharedConsumersEachExactlyOnce) {
  Cli cli;
  if (!fetcher_built(cli)) GTEST_SKIP() << "this build of ringfeed has no fetcher yet";
  constexpr int kPartitions = 4;
  constexpr int kPerPartition = 250'000;
  const NamespaceGuard ns(ringfeed::test::unique_ns("e2e"));
  const fs::path dir = cli.dir() / "logs";
  fs::create_directory(dir);
  const std::string src = "file:" + dir.string();
  // Empty logs first: the fetcher serves them, consumers join, then the lines arrive.
  for (int p = 0; p < kPartitions; ++p) {
    const Finished f = cli.run({"produce", "--source", src, "--partition", std::to_string(p)});
    ASSERT_EQ(f.status, 0) << f.err;
  }
  // Long leases: a slow machine must not turn into expiries and duplicates.
  const Cli::Child fetch =
      cli.start({"fetch", "--namespace", ns.ns(), "--source", src, "--partitions",
                 std::to_string(kPartitions), "--lease-ms", "600000"});
  auto rings = [&] {
    int n = 0;
    for (const auto& name : ringfeed::shm::Segment::list("ringfeed." + ns.ns() + ".p")) {
      n += name.size() > 5 && name.substr(name.size() - 5) == ".ring";
    }
    return n;
  };
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return rings() == kPartitions; }))
      << "fetch never created its rings: " << read_file(fetch.err);
  std::vector<Cli::Child> consumers;
  for (int i = 0; i < 3; ++i) {
    consumers.push_back(cli.start({"consume", "--namespace", ns.ns(), "--partition", "all",
                                   "--group", "e2e", "--mode", "shared"}));
  }
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      if (live_consumers(ns.ns(), p, "e2e") != 3) return false;
    }
    return true;
  })) << "the consumers never attached";

  for (int p = 0; p < kPartitions; ++p) {
    std::string input;
    input.reserve(kPerPartition * 12);
    for (int i = 0; i < kPerPartition; ++i) {
      input += std::to_string(p) + "-" + std::to_string(i) + "\n";
    }
    const Finished f =
        cli.run({"produce", "--source", src, "--partition", std::to_string(p)}, input);
    ASSERT_EQ(f.status, 0) << f.err;
  }
  constexpr std::size_t kTotal = std::size_t{kPartitions} * kPerPartition;
  auto printed = [&] {
    std::size_t n = 0;
    for (const auto& c : consumers) {
      const std::string out = read_file(c.out);
      n += static_cast<std::size_t>(std::count(out.begin(), out.end(), '\n'));
    }
    return n;
  };
  EXPECT_TRUE(ringfeed::test::wait_until([&] { return printed() >= kTotal; }, 300s))
      << printed() << " of " << kTotal << " lines printed";
  for (const auto& c : consumers) ::kill(c.pid, SIGTERM);
  std::vector<std::vector<bool>> seen(kPartitions, std::vector<bool>(kPerPartition, false));
  std::size_t lines = 0, duplicates = 0;
  for (const auto& c : consumers) {
    const Finished f = cli.wait(c, 60s);
    EXPECT_EQ(f.status, 0) << f.err;
    for (const auto& l : split_lines(f.out)) {
      ++lines;
      const auto dash = l.find('-');
      ASSERT_NE(dash, std::string::npos) << l;
      const int p = std::stoi(l.substr(0, dash));
      const int i = std::stoi(l.substr(dash + 1));
      ASSERT_TRUE(p >= 0 && p < kPartitions && i >= 0 && i < kPerPartition) << l;
      if (seen[p][i]) ++duplicates;
      seen[p][i] = true;
    }
  }
  EXPECT_EQ(lines, kTotal);
  EXPECT_EQ(duplicates, 0u);
  std::size_t missing = 0;
  for (const auto& part : seen)
    missing += static_cast<std::size_t>(std::count(part.begin(), part.end(), false));
  EXPECT_EQ(missing, 0u);

  // stat sees the live fetcher and, once it committed what the group acked, every
  // partition fetched and committed up to the end of its log.
  std::string expected_positions;
  for (int p = 0; p < kPartitions; ++p) {
    const auto size = std::to_string(fs::file_size(dir / (std::to_string(p) + ".log")));
    expected_positions +=
        "{\"partition\":" + std::to_string(p) + ",\"fetched\":" + size + ",\"committed\":" + size;
  }
  Finished st;
  auto positions_reached = [&] {
    st = cli.run({"stat", "--namespace", ns.ns(), "--json"});
    std::string found;
    for (int p = 0; p < kPartitions; ++p) {
      const auto at = st.out.find("{\"partition\":" + std::to_string(p) + ",");
      if (at == std::string::npos) return false;
      const auto end = st.out.find(",\"dead_letters\"", at);
      found += st.out.substr(at, end - at);
    }
    return found == expected_positions;
  };
  EXPECT_TRUE(ringfeed::test::wait_until(positions_reached, 30s))
      << "expected " << expected_positions << "\nstat: " << st.out;
  EXPECT_EQ(st.status, 0) << st.err;
  EXPECT_NE(st.out.find("\"fetcher\":{\"pid\":" + std::to_string(fetch.pid) + ",\"alive\":true"),
            std::string::npos)
      << st.out;
  // A second fetcher on the live namespace is refused.
  const Finished second = cli.run({"fetch", "--namespace", ns.ns(), "--source", src});
  EXPECT_EQ(second.status, 1) << second.err;
  EXPECT_NE(second.err.find(std::to_string(fetch.pid)), std::string::npos) << second.err;

  ASSERT_EQ(::kill(fetch.pid, SIGTERM), 0);
  const Finished f = cli.wait(fetch, 60s);
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_NE(f.err.find("namespace " + ns.ns()), std::string::npos) << f.err;
  EXPECT_TRUE(ringfeed::shm::Segment::list("ringfeed." + ns.ns() + ".").empty())
      << "fetch left segments behind";
}

// The README's main command in small: a backlog in the log, the fetcher, a shared and a
// broadcast consumer attached, messages produced at a rate while they are; each
// consumer measures exactly the messages produced after it attached, and counts the
// backlog apart.
//
// A new group starts at the oldest message the ring still holds for the groups there
// are, so every group must exist before any consumer takes the backlog: the shared group
// is made (in this process) while the ring is still empty, and holds the backlog; the
// broadcast consumer, whose cursor lives only as long as it does, attaches before the
// shared consumer starts taking.
TEST(CliEndToEnd, LatencyOfMessagesProducedAtARateWhileConsumersAreAttached) {
  Cli cli;
  if (!fetcher_built(cli)) GTEST_SKIP() << "this build of ringfeed has no fetcher yet";
  constexpr int kBacklog = 100;
  constexpr int kLive = 500;
  const NamespaceGuard ns(ringfeed::test::unique_ns("lat"));
  ChildGuard children;
  const fs::path dir = cli.dir() / "logs";
  fs::create_directory(dir);
  const std::string src = "file:" + dir.string();
  Finished f = cli.run({"produce", "--source", src, "--partition", "0", "--count", "0"});
  ASSERT_EQ(f.status, 0) << f.err;
  const Cli::Child fetch = children.watch(
      cli.start({"fetch", "--namespace", ns.ns(), "--source", src, "--partitions", "1"}));
  // The exact name: a ring being created has a temporary name that starts the same.
  const std::string ring = ringfeed::shm::ring_segment_name(ns.ns(), 0);
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    const auto names = ringfeed::shm::Segment::list(ring);
    return std::find(names.begin(), names.end(), ring) != names.end();
  })) << "fetch never created its ring: "
      << read_file(fetch.err);
  {
    auto c = Consumer::attach({.ns = ns.ns(), .group = "shared", .mode = Mode::shared});
    ASSERT_TRUE(c.ok()) << c.error().message;
  }
  f = cli.run({"produce", "--source", src, "--partition", "0", "--count", std::to_string(kBacklog),
               "--size", "32"});
  ASSERT_EQ(f.status, 0) << f.err;

  const std::string total = std::to_string(kBacklog + kLive);
  std::vector<Cli::Child> consumers;
  for (const char* mode : {"broadcast", "shared"}) {
    consumers.push_back(children.watch(
        cli.start({"consume", "--namespace", ns.ns(), "--partition", "0", "--group", mode, "--mode",
                   mode, "--count", total, "--latency", "--output", "none"})));
    ASSERT_TRUE(ringfeed::test::wait_until([&] { return live_consumers(ns.ns(), 0, mode) == 1; }))
        << "the " << mode << " consumer never attached: " << read_file(consumers.back().err);
  }
  f = cli.run({"produce", "--source", src, "--partition", "0", "--count", std::to_string(kLive),
               "--size", "32", "--rate", "5000"});
  ASSERT_EQ(f.status, 0) << f.err;
  for (const auto& c : consumers) {
    const Finished done = children.wait(cli, c, 60s);
    EXPECT_EQ(done.status, 0) << done.err;
    EXPECT_TRUE(done.out.empty()) << done.out;
    const auto line = parse_latency(done.err.substr(0, done.err.find('\n')));
    ASSERT_TRUE(line) << "no latency line: " << done.err;
    EXPECT_EQ(line->measured, std::uint64_t{kLive}) << done.err;
    EXPECT_EQ(line->also,
              "(also taken: " + std::to_string(kBacklog) + " published before consume attached)")
        << done.err;
    EXPECT_LE(line->ns.at("p50"), line->ns.at("max") * 1.005) << done.err;
  }
  ASSERT_EQ(::kill(fetch.pid, SIGTERM), 0);
  f = children.wait(cli, fetch, 60s);
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_TRUE(ringfeed::shm::Segment::list("ringfeed." + ns.ns() + ".").empty())
      << "fetch left segments behind";
}

}  // namespace
