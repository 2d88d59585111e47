// Redis end to end through the real `ringfeed fetch` and shared groups of worker
// processes: workers SIGKILLed at random moments, the fetcher SIGKILLed mid-stream and
// started again, redis-server killed and restarted under it (append-only, so it keeps
// its streams): in the end every entry was consumed at least once and nothing is
// pending in Redis. Two fetchers (two namespaces standing in for two hosts) in one Redis
// group: one is SIGKILLed with entries in its ring, and the other claims them after
// claim-idle-ms.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "shm/segment.hpp"
#include "support/redis_server.hpp"
#include "test_support.hpp"

#ifndef RINGFEED_BIN
#error "RINGFEED_BIN must name the ringfeed binary (tests/CMakeLists.txt)"
#endif

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::io::RespType;
using ringfeed::test::RedisClient;
using ringfeed::test::RedisServer;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::uint32_t kPerStream = 4000;
#else
constexpr std::uint32_t kPerStream = 20000;
#endif
constexpr std::uint32_t kStreams = 2;

// Per entry: how many times a worker took it; in memory every process of the test shares.
struct Ledger {
  std::atomic<std::uint32_t> seen[kStreams][kPerStream];
  std::atomic<std::uint64_t> taken;
};

Ledger* make_ledger() {
  void* p =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Ledger{};
}

// Appends `count` entries `P:I` (I from `from`) to stream sP, pipelined.
void fill(RedisClient& c, std::uint32_t stream, std::uint32_t from, std::uint32_t count) {
  std::vector<std::vector<std::string>> cmds;
  for (std::uint32_t i = from; i < from + count; ++i) {
    cmds.push_back({"XADD", "s" + std::to_string(stream), "*", "value",
                    std::to_string(stream) + ":" + std::to_string(i)});
    if (cmds.size() == 1000 || i + 1 == from + count) {
      auto r = c.pipeline(cmds);
      ASSERT_TRUE(r.ok()) << r.error().message;
      cmds.clear();
    }
  }
}

std::int64_t pending(RedisClient& c, const std::string& stream, const std::string& group) {
  auto r = c.command({"XPENDING", stream, group});
  if (!r.ok() || r->type != RespType::array || r->elements.empty()) return -1;
  return r->elements[0].integer;
}

// A worker: a shared consumer of `partition` that records every entry it takes and acks.
// Runs until killed; waits for the fetcher (and its successors) by itself.
int worker(const std::string& ns, std::uint32_t partition, Ledger* ledger) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that fails must not leave workers behind
  std::unique_ptr<Consumer> c;
  for (const auto until = std::chrono::steady_clock::now() + 60s; !c;) {
    auto a =
        Consumer::attach({.ns = ns, .partition = partition, .group = "w", .mode = Mode::shared});
    if (a) {
      c = std::move(a.value());
    } else if (std::chrono::steady_clock::now() > until) {
      std::fprintf(stderr, "attach: %s\n", a.error().message.c_str());
      return 2;
    } else {
      ::usleep(2000);  // the fetcher is not up yet
    }
  }
  for (;;) {
    const auto& b = c->pop(64, 100ms);
    if (b.status() != PopStatus::ok) {
      if (b.status() == PopStatus::timed_out || b.status() == PopStatus::closed) continue;
      std::fprintf(stderr, "pop: %s\n", ringfeed::to_string(b.status()));
      return 3;
    }
    for (const auto& m : b) {
      const std::string_view v = m.value();
      const std::size_t colon = v.find(':');
      std::uint32_t s = 0;
      std::uint32_t i = 0;
      std::from_chars(v.data(), v.data() + colon, s);
      std::from_chars(v.data() + colon + 1, v.data() + v.size(), i);
      if (s >= kStreams || i >= kPerStream) return 4;
      ledger->seen[s][i].fetch_add(1);
      ledger->taken.fetch_add(1);
    }
    c->ack(b);
  }
}

std::uint64_t consumed(const Ledger* ledger) {
  std::uint64_t n = 0;
  for (std::uint32_t s = 0; s < kStreams; ++s) {
    for (std::uint32_t i = 0; i < kPerStream; ++i) n += ledger->seen[s][i].load() != 0;
  }
  return n;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Its dead letters and group list go beside `err`, in the test's directory.
pid_t fetch(const std::string& ns, const std::string& uri, const std::string& err) {
  const std::string state = std::filesystem::path(err).parent_path() / (ns + ".dead-letters");
  return ringfeed::test::spawn_program(
      RINGFEED_BIN,
      {"fetch", "--namespace", ns, "--source", uri, "--ring-mb", "1", "--dead-letter", state}, "",
      "", err);
}

TEST(RedisFetcher, WorkersTheFetcherAndTheServerKilledMidStreamLoseNothing) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  ringfeed::test::TempDir dir{"ringfeed-redis-fetch"};
  RedisServer server;
  ASSERT_TRUE(server.start({.persistent = true}).ok());
  auto c = server.client();
  ASSERT_TRUE(c.ok()) << c.error().message;
  for (std::uint32_t s = 0; s < kStreams; ++s) fill(*c, s, 0, kPerStream / 2);

  const std::string ns = ringfeed::test::unique_ns("rfk");
  const std::string uri = "redis://127.0.0.1:" + std::to_string(server.port()) +
                          "?streams=s0,s1&group=g&consumer=host-a&batch=256";
  Ledger* ledger = make_ledger();
  pid_t fetcher = fetch(ns, uri, dir.file("fetch.err"));
  std::vector<pid_t> workers(4);
  auto start_worker = [&](std::size_t i) {
    workers[i] = ringfeed::test::fork_child(
        [&, i] { return worker(ns, static_cast<std::uint32_t>(i % kStreams), ledger); });
  };
  for (std::size_t i = 0; i < workers.size(); ++i) start_worker(i);

  std::mt19937 rng(2024);
  const std::uint64_t total = std::uint64_t{kStreams} * kPerStream;
  // Kills while the entries flow: a worker every eighth of the way, the fetcher at a
  // quarter, the server at a half (then the second half of the entries is added).
  for (int step = 1; step <= 8; ++step) {
    const std::uint64_t at = total * step / 16;
    ASSERT_TRUE(ringfeed::test::wait_until([&] { return ledger->taken.load() >= at; }, 60s))
        << "step " << step << ": " << ledger->taken.load()
        << " taken; fetcher: " << slurp(dir.file("fetch.err")) << slurp(dir.file("fetch2.err"));
    const std::size_t victim = rng() % workers.size();
    ::kill(workers[victim], SIGKILL);
    ringfeed::test::wait_child(workers[victim]);
    start_worker(victim);
    if (step == 4) {
      ::kill(fetcher, SIGKILL);
      ringfeed::test::wait_child(fetcher);
      fetcher = fetch(ns, uri, dir.file("fetch2.err"));
    }
    if (step == 7) {
      server.kill();
      ASSERT_TRUE(server.restart().ok());
      c = server.client();
      ASSERT_TRUE(c.ok()) << c.error().message;
      for (std::uint32_t s = 0; s < kStreams; ++s) fill(*c, s, kPerStream / 2, kPerStream / 2);
    }
  }
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        return consumed(ledger) == total && pending(*c, "s0", "g") == 0 &&
               pending(*c, "s1", "g") == 0;
      },
      120s))
      << consumed(ledger) << " of " << total << " consumed; pending " << pending(*c, "s0", "g")
      << " + " << pending(*c, "s1", "g");
  for (pid_t w : workers) ::kill(w, SIGKILL);
  for (pid_t w : workers) ringfeed::test::wait_child(w);
  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher, 30s), 0);
  std::printf("%llu taken for %llu entries\n",
              static_cast<unsigned long long>(ledger->taken.load()),
              static_cast<unsigned long long>(total));
}

TEST(RedisFetcher, ASurvivingHostClaimsTheEntriesOfOneThatDied) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  ringfeed::test::TempDir dir{"ringfeed-redis-hosts"};
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto c = server.client();
  ASSERT_TRUE(c.ok()) << c.error().message;
  fill(*c, 0, 0, kPerStream);
  const std::string base = "redis://127.0.0.1:" + std::to_string(server.port()) +
                           "?streams=s0&group=g&batch=256&claim-idle-ms=300&consumer=";
  const std::string ns_a = ringfeed::test::unique_ns("rha");
  const std::string ns_b = ringfeed::test::unique_ns("rhb");
  Ledger* ledger = make_ledger();
  // Host A: a fetcher whose one worker never acks, so its ring holds what it read.
  pid_t fetcher_a = fetch(ns_a, base + "host-a", dir.file("a.err"));
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        auto r = c->command({"XINFO", "CONSUMERS", "s0", "g"});
        return r.ok() && !r->elements.empty();
      },
      30s));
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return pending(*c, "s0", "g") > 0; }, 30s));
  // Host B: a fetcher and a worker that acks.
  pid_t fetcher_b = fetch(ns_b, base + "host-b", dir.file("b.err"));
  pid_t worker_b = ringfeed::test::fork_child([&] { return worker(ns_b, 0, ledger); });
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return ledger->taken.load() > 0; }, 30s));
  const std::int64_t held_by_a = pending(*c, "s0", "g");
  ::kill(fetcher_a, SIGKILL);
  ringfeed::test::wait_child(fetcher_a);
  // A killed fetcher leaves its segments for a successor to take over; none comes here.
  for (const auto& name : ringfeed::shm::Segment::list("ringfeed." + ns_a + ".")) {
    ringfeed::shm::Segment::remove(name);
  }
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] { return consumed(ledger) == kPerStream && pending(*c, "s0", "g") == 0; }, 60s))
      << consumed(ledger) << " of " << kPerStream << " consumed; pending " << pending(*c, "s0", "g")
      << " (host A held " << held_by_a << ")";
  EXPECT_GT(held_by_a, 0);
  std::printf("host A held %lld entries when it died; %llu taken for %u entries\n",
              static_cast<long long>(held_by_a),
              static_cast<unsigned long long>(ledger->taken.load()), kPerStream);
  ::kill(worker_b, SIGKILL);
  ringfeed::test::wait_child(worker_b);
  ::kill(fetcher_b, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher_b, 30s), 0);
}

TEST(RedisFetcher, StatsSayWhyAPartitionWaitsWhileTheServerIsDown) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  ASSERT_TRUE(server.stop().ok());
  const std::string ns = ringfeed::test::unique_ns("rfw");
  auto f = ringfeed::Fetcher::start(
      {.ns = ns,
       .source = "redis://127.0.0.1:" + std::to_string(server.port()) + "?streams=s&group=g",
       .ring_bytes = 1 << 20});
  ASSERT_TRUE(f.ok()) << f.error().message;
  std::atomic<bool> stop{false};
  ringfeed::Status result = ringfeed::Ok{};
  std::thread runner([&] { result = (*f)->run(stop); });
  EXPECT_TRUE(ringfeed::test::wait_until(
      [&] { return (*f)->stats()[0].warning.find("waiting for Redis") != std::string::npos; }, 30s))
      << (*f)->stats()[0].warning;
  EXPECT_FALSE((*f)->stats()[0].stopped);
  // ringfeed stat, another process, says so too.
  ringfeed::test::TempDir dir{"ringfeed-redis-stat"};
  const auto stat = [&](const std::string& flag) {
    const std::string out = dir.file("stat" + flag);
    std::vector<std::string> args{"stat", "--namespace", ns};
    if (!flag.empty()) args.push_back(flag);
    const pid_t p = ringfeed::test::spawn_program(RINGFEED_BIN, args, "", out, "");
    EXPECT_EQ(ringfeed::test::wait_child(p, 30s), 0);
    return slurp(out);
  };
  const std::string json = stat("--json");
  EXPECT_NE(
      json.find(",\"warning\":\"waiting for Redis at 127.0.0.1:" + std::to_string(server.port())),
      std::string::npos)
      << json;
  EXPECT_NE(stat("").find("held back: waiting for Redis"), std::string::npos);
  EXPECT_NE(stat("--prometheus")
                .find("ringfeed_partition_held_back{namespace=\"" + ns + "\",partition=\"0\"} 1"),
            std::string::npos);
  ASSERT_TRUE(server.restart().ok());
  EXPECT_TRUE(ringfeed::test::wait_until([&] { return (*f)->stats()[0].warning.empty(); }, 30s))
      << (*f)->stats()[0].warning;
  EXPECT_NE(stat("--json").find("\"paused\":false,\"error\":null,\"warning\":null"),
            std::string::npos);
  stop.store(true);
  (*f)->wake();
  runner.join();
  EXPECT_TRUE(result.ok()) << result.error().message;
}

TEST(RedisFetcher, ProduceFetchAndConsumeThroughTheBinaries) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  ringfeed::test::TempDir dir{"ringfeed-redis-cli"};
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto c = server.client();
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::string uri =
      "redis://127.0.0.1:" + std::to_string(server.port()) + "?streams=s0,s1&group=g";
  {
    std::ofstream lines(dir.file("lines"));
    lines << "first\nsecond\nthird";  // the last line without its newline
  }
  // A producer needs no group.
  const std::string streams =
      "redis://127.0.0.1:" + std::to_string(server.port()) + "?streams=s0,s1";
  const pid_t gen = ringfeed::test::spawn_program(
      RINGFEED_BIN,
      {"produce", "--source", streams, "--partition", "0", "--count", "500", "--size", "3"}, "", "",
      dir.file("gen.err"));
  ASSERT_EQ(ringfeed::test::wait_child(gen, 30s), 0) << slurp(dir.file("gen.err"));
  const pid_t stdin_producer = ringfeed::test::spawn_program(
      RINGFEED_BIN, {"produce", "--source", uri, "--partition", "1", "--key", "k7"},
      dir.file("lines"), "", dir.file("lines.err"));
  ASSERT_EQ(ringfeed::test::wait_child(stdin_producer, 30s), 0) << slurp(dir.file("lines.err"));

  const std::string ns = ringfeed::test::unique_ns("rfc");
  const pid_t fetcher = fetch(ns, uri, dir.file("fetch.err"));
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] { return ringfeed::shm::Segment::list("ringfeed." + ns + ".p1.ring").size() == 1; },
      30s));
  const pid_t consumer = ringfeed::test::spawn_program(
      RINGFEED_BIN,
      {"consume", "--namespace", ns, "--partition", "all", "--group", "w", "--mode", "shared",
       "--count", "503", "--output", "json", "--timeout-ms", "20000"},
      "", dir.file("out"), dir.file("consume.err"));
  ASSERT_EQ(ringfeed::test::wait_child(consumer, 60s), 0) << slurp(dir.file("consume.err"));
  const std::string out = slurp(dir.file("out"));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 503);
  EXPECT_NE(out.find(R"("key":"k7","value":"third")"), std::string::npos) << out.substr(0, 300);
  EXPECT_NE(out.find(R"("partition":0,)"), std::string::npos);
  EXPECT_NE(out.find(R"("value":"499")"), std::string::npos);
  EXPECT_TRUE(ringfeed::test::wait_until(
      [&] { return pending(*c, "s0", "g") == 0 && pending(*c, "s1", "g") == 0; }, 30s));
  ::kill(fetcher, SIGTERM);
  EXPECT_EQ(ringfeed::test::wait_child(fetcher, 30s), 0) << slurp(dir.file("fetch.err"));
}

}  // namespace
