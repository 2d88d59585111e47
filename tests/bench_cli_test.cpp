// The `ringfeed-bench` command line, through the real binary: a bad flag exits 2 with
// exactly one line on stderr naming the flag and why, nothing on stdout; a short
// latency run writes the percentile distribution of every variant as CSV; one through
// a fetcher prints its percentiles and leaves neither segment nor directory; and a tiny
// kafka run prints every variant and its ratios.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.hpp"

#ifndef RINGFEED_BENCH_BIN
#error "RINGFEED_BENCH_BIN must name the ringfeed-bench binary (tests/CMakeLists.txt)"
#endif

namespace {

using ringfeed::test::spawn_program;
using ringfeed::test::TempDir;
using ringfeed::test::wait_child;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Finished {
  pid_t pid = -1;
  int status = -1;
  std::string out, err;
};

Finished run_bench(const TempDir& dir, const std::vector<std::string>& args,
                   std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  Finished f;
  const pid_t pid = spawn_program(RINGFEED_BENCH_BIN, args, "", dir.file("out"), dir.file("err"));
  f.pid = pid;
  f.status = wait_child(pid, timeout);
  f.out = read_text(dir.file("out"));
  f.err = read_text(dir.file("err"));
  return f;
}

std::string describe(const std::vector<std::string>& args) {
  std::string s = "ringfeed-bench";
  for (const auto& a : args) s += " " + a;
  return s;
}

void expect_usage_error(const std::vector<std::string>& args, const std::string& reason) {
  TempDir dir("ringfeed-bench-cli");
  const Finished f = run_bench(dir, args);
  EXPECT_EQ(f.status, 2) << describe(args) << "\nstderr: " << f.err;
  EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << describe(args) << ": " << f.err;
  EXPECT_NE(f.err.find(reason), std::string::npos)
      << describe(args) << "\nexpected: " << reason << "\nstderr: " << f.err;
  EXPECT_TRUE(f.out.empty()) << describe(args) << "\nstdout: " << f.out;
}

}  // namespace

TEST(BenchCli, UnknownOrMissingCommand) {
  expect_usage_error({}, "missing command");
  expect_usage_error({"frobnicate"}, "unknown command 'frobnicate'");
}

TEST(BenchCli, LatencyBadFlags) {
  expect_usage_error({"latency", "--bogus"}, "unknown argument '--bogus'");
  expect_usage_error({"latency", "--runs"}, "--runs needs a value");
  expect_usage_error({"latency", "--runs", "0"}, "--runs 0 is out of range");
  expect_usage_error({"latency", "--runs=five"}, "--runs: 'five' is not a whole number");
  expect_usage_error({"latency", "--modes", "exclusive,bogus"}, "--modes: 'bogus' is not");
  expect_usage_error({"latency", "--modes", "shared,shared"}, "'shared' is given twice");
  expect_usage_error({"latency", "--modes", ""}, "--modes needs a non-empty value");
  expect_usage_error({"latency", "--wait", "nap"},
                     "--wait: 'nap' is not spin, spin-sleep or sleep");
  expect_usage_error({"latency", "--spin-us", "5"}, "--spin-us is for --wait spin-sleep only");
  expect_usage_error({"latency", "--loop", "half"}, "--loop: 'half' is not open or closed");
  expect_usage_error({"latency", "--size", "8"}, "--size 8 is out of range [16, 65536]");
  expect_usage_error({"latency", "--batch", "513"}, "--batch 513 is out of range [1, 512]");
  expect_usage_error({"latency", "--ring-mb", "3"}, "--ring-mb 3 is not a power of two");
  expect_usage_error({"latency", "--count", "5", "--rounds", "10"}, "--count must be at least");
  expect_usage_error({"latency", "--csv", "/nonexistent-dir/x.csv"},
                     "--csv: cannot write /nonexistent-dir/x.csv");
}

TEST(BenchCli, LatencyThroughTakesRingOrFetcherOnly) {
  expect_usage_error({"latency", "--through", "kafka"},
                     "--through: 'kafka' is not ring or fetcher");
  expect_usage_error({"latency", "--through"}, "--through needs a value");
  expect_usage_error({"latency", "--through="}, "--through needs a non-empty value");
}

TEST(BenchCli, OtherCommandsBadFlags) {
  for (const char* command :
       {"throughput", "jitter", "shared", "ingest", "failover", "idle", "redis"}) {
    expect_usage_error({command, "--bogus"}, "unknown argument '--bogus'");
  }
  for (const char* command : {"throughput", "shared", "ingest", "failover", "idle", "redis"}) {
    expect_usage_error({command, "--runs", "x"}, "is not a whole number");
  }
  expect_usage_error({"jitter", "--seconds", "x"}, "--seconds: 'x' is not a whole number");
  expect_usage_error({"throughput", "--mode", "x"}, "--mode: 'x' is not exclusive, shared");
}

// `kafka` is left out of builds without librdkafka (ThreadSanitizer).
#ifdef RINGFEED_BENCH_KAFKA
TEST(BenchCli, KafkaBadFlagsAndHelp) {
  expect_usage_error({"kafka", "--bogus"}, "unknown argument '--bogus'");
  expect_usage_error({"kafka", "--runs", "x"}, "--runs: 'x' is not a whole number");
  expect_usage_error({"kafka", "--workers", "1,0"},
                     "--workers: '0' is not a whole number in [1, 16]");
  expect_usage_error({"kafka", "--workers", "4,"}, "--workers: '' is not a whole number");
  expect_usage_error({"kafka", "--partitions", "65"}, "--partitions 65 is out of range [1, 64]");
  expect_usage_error({"kafka", "--broadcast-workers", "17"},
                     "--broadcast-workers 17 is out of range [1, 16]");
  expect_usage_error({"kafka", "--ring-mb", "3"}, "--ring-mb 3 is not a power of two");
  expect_usage_error({"kafka", "--source-params="}, "--source-params needs a non-empty value");
  expect_usage_error({"kafka", "--no-throughput", "--no-broadcast", "--no-latency"},
                     "nothing to do");
  TempDir dir("ringfeed-bench-cli");
  const Finished help = run_bench(dir, {"kafka", "--help"});
  EXPECT_EQ(help.status, 0) << help.err;
  EXPECT_EQ(help.out.rfind("usage: ringfeed-bench kafka", 0), 0u) << help.out;
}

// A tiny run against a mock cluster: every variant's line, the ratios, and no segment of
// the run's namespaces left.
TEST(BenchCli, KafkaPrintsEveryVariantAndTheRatios) {
  TempDir dir("ringfeed-bench-cli");
  const std::vector<std::string> args = {"kafka", "--runs",    "1",    "--count",
                                         "2000",  "--workers", "1",    "--broadcast-workers",
                                         "2",     "--rate",    "1000", "--latency-seconds",
                                         "1",     "--warmup",  "100",  "--ring-mb",
                                         "1"};
  const Finished f = run_bench(dir, args, std::chrono::seconds(240));
  ASSERT_EQ(f.status, 0) << describe(args) << "\nstdout: " << f.out << "\nstderr: " << f.err;
  for (const char* line : {"direct, 1 consumer, one group", "ringfeed, 1 shared worker",
                           "direct, 2 consumers, own groups", "ringfeed, 2 broadcast workers",
                           "ringfeed, 1 shared worker / direct",
                           "ringfeed, 2 broadcast workers / direct", "medians of 1 runs"}) {
    EXPECT_NE(f.out.find(line), std::string::npos) << line << "\n" << f.out;
  }
  EXPECT_EQ(f.out.find("(time limit)"), std::string::npos) << f.out;
  const std::string ns_prefix = "ringfeed.kf" + std::to_string(f.pid) + "r";
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    EXPECT_NE(e.path().filename().string().rfind(ns_prefix, 0), 0u) << e.path();
  }
}
#endif

TEST(BenchCli, HelpExitsZero) {
  TempDir dir("ringfeed-bench-cli");
  for (const char* command : {"latency", "throughput"}) {
    const Finished f = run_bench(dir, {command, "--help"});
    EXPECT_EQ(f.status, 0) << command << ": " << f.err;
    EXPECT_EQ(f.out.rfind(std::string("usage: ringfeed-bench ") + command, 0), 0u) << f.out;
  }
}

// A short run end to end: every variant's line, the ratios, and a CSV whose header names
// every variant and whose last row (the max) has a positive value for each.
TEST(BenchCli, LatencyWritesTheDistribution) {
  TempDir dir("ringfeed-bench-cli");
  const std::string csv = dir.file("latency.csv");
  const std::vector<std::string> args = {
      "latency",  "--runs", "1",         "--rounds", "2",       "--count",          "400",
      "--warmup", "10",     "--ring-mb", "1",        "--modes", "exclusive,shared", "--no-pin",
      "--csv",    csv};
  const Finished f = run_bench(dir, args, std::chrono::seconds(120));
  ASSERT_EQ(f.status, 0) << describe(args) << "\nstdout: " << f.out << "\nstderr: " << f.err;
  for (const char* line :
       {"ringfeed exclusive / floor (cache line)", "ringfeed shared / message_queue",
        "ringfeed exclusive / unix socket", "ringfeed shared / pipe", "p99.99"}) {
    EXPECT_NE(f.out.find(line), std::string::npos) << line << "\n" << f.out;
  }
  std::istringstream in(read_text(csv));
  std::string header, row, last;
  ASSERT_TRUE(std::getline(in, header));
  EXPECT_EQ(header,
            "quantile,nines,floor (cache line),ringfeed exclusive,ringfeed shared,message_queue,"
            "unix socket,pipe");
  int rows = 0;
  while (std::getline(in, row)) {
    last = row;
    ++rows;
  }
  EXPECT_GT(rows, 20);  // 400 values: quantiles up to 1 - 1/400, then the max
  ASSERT_EQ(last.rfind("1,", 0), 0u) << last;
  std::istringstream fields(last);
  std::vector<std::string> values;
  for (std::string v; std::getline(fields, v, ',');) values.push_back(v);
  ASSERT_EQ(values.size(), 8u) << last;
  for (std::size_t i = 2; i < values.size(); ++i) EXPECT_GT(std::stoull(values[i]), 0u) << last;
}

// Through a real fetcher namespace: every mode's line and ratios, the fetcher stopped by
// SIGTERM with status 0, and afterwards no segment of the run's namespace and no log
// directory left.
TEST(BenchCli, LatencyThroughAFetcherPrintsThePercentilesAndLeavesNothing) {
  TempDir dir("ringfeed-bench-cli");
  const std::vector<std::string> args = {
      "latency",          "--through", "fetcher",  "--runs", "1",         "--rounds", "2",
      "--count",          "400",       "--warmup", "10",     "--ring-mb", "1",        "--modes",
      "exclusive,shared", "--no-pin"};
  const Finished f = run_bench(dir, args, std::chrono::seconds(120));
  ASSERT_EQ(f.status, 0) << describe(args) << "\nstdout: " << f.out << "\nstderr: " << f.err;
  // Each run prints one line per variant with its percentiles.
  for (const char* variant : {"ringfeed exclusive via fetcher ", "ringfeed shared via fetcher "}) {
    std::istringstream lines(f.out);
    bool found = false;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(std::string("  ") + variant, 0) != 0) continue;
      found = line.find(" p50 ") != std::string::npos && line.find(" p99.99 ") != std::string::npos;
      break;
    }
    EXPECT_TRUE(found) << variant << "\n" << f.out;
  }
  for (const char* line : {"ringfeed exclusive via fetcher / floor (cache line)",
                           "ringfeed shared via fetcher / message_queue",
                           "stopped by SIGTERM, exit status 0, no segment left"}) {
    EXPECT_NE(f.out.find(line), std::string::npos) << line << "\n" << f.out;
  }
  const std::string logs_in = "logs in ";
  const std::size_t at = f.out.find(logs_in);
  ASSERT_NE(at, std::string::npos) << f.out;
  const std::size_t from = at + logs_in.size();
  const std::string logs = f.out.substr(from, f.out.find(' ', from) - from);
  ASSERT_NE(logs.find("/ringfeed-bench-latency-"), std::string::npos) << f.out;
  EXPECT_FALSE(std::filesystem::exists(logs)) << logs;
  const std::string ns_prefix = "ringfeed.lat" + std::to_string(f.pid) + "r";
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    EXPECT_NE(e.path().filename().string().rfind(ns_prefix, 0), 0u) << e.path();
  }
}

TEST(BenchCli, SharedMeasuresBroadcastGroupsWhereEveryConsumerTakesEverything) {
  TempDir dir("ringfeed-bench-cli");
  const std::vector<std::string> args = {"shared", "--runs",    "1",         "--count",
                                         "20000",  "--ring-mb", "1",         "--takeovers",
                                         "1",      "--only",    "broadcast", "--no-pin"};
  const Finished f = run_bench(dir, args, std::chrono::seconds(120));
  ASSERT_EQ(f.status, 0) << describe(args) << "\nstdout: " << f.out << "\nstderr: " << f.err;
  for (const char* line : {"broadcast, 2 consumers, batch 64", "broadcast, 4 consumers, batch 1",
                           "messages redelivered or taken twice (no consumer died): 0"}) {
    EXPECT_NE(f.out.find(line), std::string::npos) << line << "\n" << f.out;
  }
  EXPECT_EQ(f.err.find("messages taken of"), std::string::npos) << f.err;
}
