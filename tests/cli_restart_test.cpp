// Faults through the real binaries: `ringfeed fetch` killed with SIGKILL mid-stream and
// started again under running `consume` processes (which move to the new fetcher by
// themselves) loses no line; a corrupt record stops its partition only, and `stat`
// names the file and the byte offset.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "io/framed_record.hpp"
#include "ringfeed/consumer.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

#ifndef RINGFEED_BIN
#error "RINGFEED_BIN must name the ringfeed binary (tests/CMakeLists.txt)"
#endif

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

// Starts the ringfeed binary with `args`; stdin, stdout and stderr from/to files
// (empty: /dev/null).
pid_t spawn(const std::vector<std::string>& args, const std::string& in = "",
            const std::string& out = "", const std::string& err = "") {
  return ringfeed::test::spawn_program(RINGFEED_BIN, args, in, out, err);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::size_t lines_in(const fs::path& p) {
  const std::string s = slurp(p);
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

bool no_segments_left(const std::string& ns) {
  return ringfeed::shm::Segment::list("ringfeed." + ns + ".").empty();
}

TEST(CliRestart, FetcherKilledMidStreamAndStartedAgainLosesNoLine) {
  ringfeed::test::TempDir dir{"ringfeed-restart"};
  const fs::path root = dir.path();
  const fs::path logs = root / "logs";
  fs::create_directory(logs);
  const std::string ns = ringfeed::test::unique_ns("clikill");
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr int kLines = 20'000;
#else
  constexpr int kLines = 100'000;
#endif
  constexpr int kPartitions = 2;
  std::set<std::string> expected;
  for (int p = 0; p < kPartitions; ++p) {
    const fs::path input = root / ("in" + std::to_string(p));
    {
      std::ofstream f(input);
      for (int i = 0; i < kLines; ++i) {
        const std::string line = "p" + std::to_string(p) + "-" + std::to_string(i);
        f << line << '\n';
        expected.insert(line);
      }
    }
    const pid_t producer =
        spawn({"produce", "--source", "file:" + logs.string(), "--partition", std::to_string(p)},
              input.string());
    ASSERT_EQ(ringfeed::test::wait_child(producer, 60s), 0);
  }

  const std::vector<std::string> fetch{"fetch",
                                       "--namespace",
                                       ns,
                                       "--source",
                                       "file:" + logs.string(),
                                       "--partitions",
                                       std::to_string(kPartitions),
                                       "--ring-mb",
                                       "1"};
  pid_t fetcher = spawn(fetch, "", "", (root / "fetch1.err").string());
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] { return ringfeed::shm::Segment::list("ringfeed." + ns + ".p1.ring").size() == 1; },
      10s));
  std::vector<pid_t> consumers;
  std::vector<fs::path> outputs;
  for (int i = 0; i < 2; ++i) {
    outputs.push_back(root / ("out" + std::to_string(i)));
    consumers.push_back(spawn({"consume", "--namespace", ns, "--partition", "all", "--group", "g",
                               "--mode", "shared", "--timeout-ms", "3000"},
                              "", outputs.back().string(),
                              (root / ("err" + std::to_string(i))).string()));
  }
  // Kill the fetcher once a quarter of the lines went through.
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] { return lines_in(outputs[0]) + lines_in(outputs[1]) >= kPartitions * kLines / 4; },
      60s));
  ::kill(fetcher, SIGKILL);
  ringfeed::test::wait_child(fetcher);
  fetcher = spawn(fetch, "", "", (root / "fetch2.err").string());

  for (std::size_t i = 0; i < consumers.size(); ++i) {
    EXPECT_EQ(ringfeed::test::wait_child(consumers[i], 120s), 0)
        << slurp(root / ("err" + std::to_string(i)));
  }
  std::multiset<std::string> got;
  for (const auto& out : outputs) {
    std::ifstream in(out);
    for (std::string line; std::getline(in, line);) got.insert(line);
  }
  std::size_t lost = 0;
  for (const auto& line : expected) lost += got.count(line) == 0 ? 1 : 0;
  EXPECT_EQ(lost, 0u) << "lines never printed by a consumer";
  for (const auto& line : got) EXPECT_EQ(expected.count(line), 1u) << "unknown line " << line;
  std::printf("%zu lines, %zu printed (%zu again after the restart)\n", expected.size(), got.size(),
              got.size() - expected.size());

  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher, 30s), 0) << slurp(root / "fetch2.err");
  EXPECT_TRUE(no_segments_left(ns));
}

// Whether partition 0's ring of `ns` exists and was made by process `writer`.
bool ring_written_by(const std::string& ns, pid_t writer) {
  auto r = ringfeed::shm::Segment::list("ringfeed." + ns + ".p0.ring");
  if (r.size() != 1) return false;
  auto seg = ringfeed::shm::Segment::open(r[0], ringfeed::shm::Access::read_only);
  if (!seg.ok() || seg->size() < sizeof(ringfeed::shm::SegmentHeader)) return false;
  const auto* h = reinterpret_cast<const ringfeed::shm::SegmentHeader*>(seg->base());
  return h->creator_pid == writer;
}

// A consume without --timeout-ms waits for the fetcher that takes a killed one's
// namespace over (and moves to it), but exits 1 when the fetcher stops cleanly.
TEST(CliRestart, ConsumeWaitsForTheSuccessorOfAKilledFetcherAndEndsWithAStoppedOne) {
  ringfeed::test::TempDir dir{"ringfeed-successor"};
  const fs::path root = dir.path();
  const fs::path logs = root / "logs";
  fs::create_directory(logs);
  const std::string ns = ringfeed::test::unique_ns("clisucc");
  const auto produce = [&](const std::string& line) {
    const fs::path input = root / "line";
    std::ofstream(input) << line << '\n';
    return ringfeed::test::wait_child(
        spawn({"produce", "--source", "file:" + logs.string(), "--partition", "0"}, input.string()),
        30s);
  };
  const std::vector<std::string> fetch{
      "fetch",        "--namespace", ns,          "--source", "file:" + logs.string(),
      "--partitions", "1",           "--ring-mb", "1"};
  const auto ring_of = [&](pid_t writer) { return ring_written_by(ns, writer); };
  pid_t fetcher = spawn(fetch, "", "", (root / "fetch1.err").string());
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ring_of(fetcher); }, 10s));
  ::kill(fetcher, SIGKILL);
  ringfeed::test::wait_child(fetcher);
  // Appended after the kill: the dead fetcher's ring holds nothing the consumer could take
  // (and take again from the successor, which starts at what was committed).
  ASSERT_EQ(produce("first"), 0);

  const fs::path out = root / "out";
  const fs::path err = root / "err";
  const pid_t consumer = spawn({"consume", "--namespace", ns, "--partition", "0", "--group", "g",
                                "--mode", "shared", "--count", "2"},
                               "", out.string(), err.string());
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        return slurp(err).find("died; waiting for one that takes it over") != std::string::npos;
      },
      10s))
      << slurp(err);
  int status = 0;
  EXPECT_EQ(::waitpid(consumer, &status, WNOHANG), 0) << "consume gave up";
  fetcher = spawn(fetch, "", "", (root / "fetch2.err").string());
  ASSERT_EQ(produce("second"), 0);
  EXPECT_EQ(ringfeed::test::wait_child(consumer, 30s), 0) << slurp(err);
  const std::string printed = slurp(out);
  EXPECT_NE(printed.find("first\n"), std::string::npos) << printed;
  EXPECT_NE(printed.find("second\n"), std::string::npos) << printed;

  // A fetcher that stops (SIGTERM) ends the consumers that wait without a timeout.
  const fs::path out2 = root / "out2";
  const fs::path err2 = root / "err2";
  const pid_t waiting =
      spawn({"consume", "--namespace", ns, "--partition", "0", "--group", "g", "--mode", "shared"},
            "", out2.string(), err2.string());
  ASSERT_EQ(produce("third"), 0);
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return slurp(out2) == "third\n"; }, 10s))
      << slurp(out2) << slurp(err2);
  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher, 30s), 0) << slurp(root / "fetch2.err");
  EXPECT_EQ(ringfeed::test::wait_child(waiting, 30s), 1) << slurp(err2);
  EXPECT_NE(slurp(err2).find("the fetcher of namespace '" + ns +
                             "' stopped: the ring of partition 0 is closed"),
            std::string::npos)
      << slurp(err2);
  EXPECT_TRUE(no_segments_left(ns));
}

// A successor that cannot take the consumer (its exclusive group is held by another
// consumer by then) ends a consume without --timeout-ms with the reason, rather than a
// wait for a fetcher that already runs.
TEST(CliRestart, ConsumeThatTheSuccessorCannotTakeExitsOneSayingWhy) {
  ringfeed::test::TempDir dir{"ringfeed-successor-held"};
  const fs::path root = dir.path();
  const fs::path logs = root / "logs";
  fs::create_directory(logs);
  const std::string ns = ringfeed::test::unique_ns("cliheld");
  {
    const fs::path input = root / "line";
    std::ofstream(input) << "m\n";
    ASSERT_EQ(ringfeed::test::wait_child(
                  spawn({"produce", "--source", "file:" + logs.string(), "--partition", "0"},
                        input.string()),
                  30s),
              0);
  }
  const std::vector<std::string> fetch{
      "fetch",        "--namespace", ns,          "--source", "file:" + logs.string(),
      "--partitions", "1",           "--ring-mb", "1"};
  pid_t fetcher = spawn(fetch, "", "", (root / "fetch1.err").string());
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ring_written_by(ns, fetcher); }, 10s));
  const fs::path out = root / "out";
  const fs::path err = root / "err";
  const pid_t consumer = spawn(
      {"consume", "--namespace", ns, "--partition", "0", "--group", "e", "--mode", "exclusive"}, "",
      out.string(), err.string());
  // It printed the line: attached, and holding the group.
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return slurp(out) == "m\n"; }, 10s)) << slurp(err);
  // Stopped while the fetcher is replaced and the group taken, so that it looks only then.
  ASSERT_EQ(::kill(consumer, SIGSTOP), 0);
  ::kill(fetcher, SIGKILL);
  ringfeed::test::wait_child(fetcher);
  fetcher = spawn(fetch, "", "", (root / "fetch2.err").string());
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ring_written_by(ns, fetcher); }, 10s));
  auto holder = ringfeed::Consumer::attach(
      {.ns = ns, .partition = 0, .group = "e", .mode = ringfeed::Mode::exclusive});
  ASSERT_TRUE(holder.ok()) << holder.error().message;
  ASSERT_EQ(::kill(consumer, SIGCONT), 0);
  EXPECT_EQ(ringfeed::test::wait_child(consumer, 30s), 1) << slurp(err);
  EXPECT_NE(slurp(err).find("cannot move to the fetcher that took namespace '" + ns + "' over: "),
            std::string::npos)
      << slurp(err);
  holder->reset();
  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher, 30s), 0) << slurp(root / "fetch2.err");
}

TEST(CliRestart, CorruptRecordStopsOnlyItsPartitionAndStatNamesFileAndOffset) {
  ringfeed::test::TempDir dir{"ringfeed-restart"};
  const fs::path root = dir.path();
  const fs::path logs = root / "logs";
  fs::create_directory(logs);
  const std::string ns = ringfeed::test::unique_ns("clicorrupt");
  const fs::path input = root / "in";
  {
    std::ofstream f(input);
    for (int i = 0; i < 10; ++i) f << "line-" << i << '\n';
  }
  for (int p = 0; p < 2; ++p) {
    const pid_t producer =
        spawn({"produce", "--source", "file:" + logs.string(), "--partition", std::to_string(p)},
              input.string());
    ASSERT_EQ(ringfeed::test::wait_child(producer, 30s), 0);
  }
  // Find the 6th record of partition 1 and damage one byte of its value.
  const fs::path bad = logs / "1.log";
  std::string bytes = slurp(bad);
  std::size_t at = 0;
  for (int i = 0; i < 5; ++i) {
    const auto r =
        ringfeed::io::decode(std::as_bytes(std::span(bytes.data() + at, bytes.size() - at)), at);
    ASSERT_EQ(r.status, ringfeed::io::DecodeStatus::ok) << r.error;
    at += r.size;
  }
  const std::size_t corrupt_at = at;
  bytes[corrupt_at + 45] ^= 0x20;
  {
    std::ofstream f(bad, std::ios::binary | std::ios::trunc);
    f << bytes;
  }

  const pid_t fetcher =
      spawn({"fetch", "--namespace", ns, "--source", "file:" + logs.string(), "--partitions", "2"},
            "", "", (root / "fetch.err").string());
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] { return ringfeed::shm::Segment::list("ringfeed." + ns + ".p1.ring").size() == 1; },
      10s));
  // Partition 0 goes on: all ten lines.
  const fs::path out0 = root / "out0";
  const pid_t c0 = spawn({"consume", "--namespace", ns, "--partition", "0", "--group", "g",
                          "--mode", "exclusive", "--count", "10", "--timeout-ms", "10000"},
                         "", out0.string());
  EXPECT_EQ(ringfeed::test::wait_child(c0, 30s), 0);
  EXPECT_EQ(lines_in(out0), 10u);
  // Partition 1 delivers the five records before the damage, nothing after it.
  const fs::path out1 = root / "out1";
  const pid_t c1 = spawn({"consume", "--namespace", ns, "--partition", "1", "--group", "g",
                          "--mode", "exclusive", "--timeout-ms", "500"},
                         "", out1.string());
  EXPECT_EQ(ringfeed::test::wait_child(c1, 30s), 0);
  EXPECT_EQ(slurp(out1), "line-0\nline-1\nline-2\nline-3\nline-4\n");

  const fs::path stat_out = root / "stat";
  bool named = false;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        const pid_t s = spawn({"stat", "--namespace", ns, "--json"}, "", stat_out.string());
        if (ringfeed::test::wait_child(s, 10s) != 0) return false;
        const std::string j = slurp(stat_out);
        named = j.find(bad.string()) != std::string::npos &&
                j.find(std::to_string(corrupt_at)) != std::string::npos;
        return named;
      },
      10s))
      << "stat never named " << bad << " and offset " << corrupt_at << ": " << slurp(stat_out);

  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher, 30s), 0) << slurp(root / "fetch.err");
  EXPECT_TRUE(no_segments_left(ns));
}

}  // namespace
