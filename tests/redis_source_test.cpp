// The Redis Streams source against a real redis-server (tests/support/redis_server.hpp):
// URIs and entry ids; entries of every shape delivered in order per stream and XACKed
// exactly when committed; a refused record offered again after resume(); pending
// entries read back by a new source of the same consumer name; entries of a dead
// consumer claimed by another after claim-idle-ms; a server that is down at open, killed
// and restarted under the source; AUTH.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "io/redis_source.hpp"
#include "io/source.hpp"
#include "source_test_support.hpp"
#include "support/redis_server.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::io::RespType;
using ringfeed::io::RespValue;
using ringfeed::test::Collect;
using ringfeed::test::contains;
using ringfeed::test::Got;
using ringfeed::test::open_source_or_null;
using ringfeed::test::poll_until;
using ringfeed::test::RedisClient;
using ringfeed::test::RedisServer;

namespace io = ringfeed::io;

namespace {

std::string uri(const RedisServer& server, const std::string& params) {
  return "redis://127.0.0.1:" + std::to_string(server.port()) + "?" + params;
}

std::string xadd(RedisClient& c, std::initializer_list<std::string_view> args) {
  auto r = c.command(args);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? r->str : std::string();
}

// XPENDING STREAM GROUP: the number of entries delivered and not acknowledged.
std::int64_t pending(RedisClient& c, const std::string& stream, const std::string& group) {
  auto r = c.command({"XPENDING", stream, group});
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (!r.ok() || r->type != RespType::array || r->elements.empty()) return -1;
  return r->elements[0].integer;
}

RedisClient client_of(const RedisServer& server) {
  auto c = server.client();
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? std::move(c.value()) : RedisClient{};
}

TEST(RedisUri, ReadsEveryParameter) {
  auto o = io::parse_redis_uri(
      "redis://app:s%40cret@db.local:6380?streams=a,b,c&group=g&consumer=host1&batch=100&"
      "block-ms=50&claim-idle-ms=2000&connect-timeout-ms=300");
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->host, "db.local");
  EXPECT_EQ(o->port, 6380);
  EXPECT_EQ(o->user, "app");
  EXPECT_EQ(o->password, "s@cret");
  EXPECT_EQ(o->streams, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(o->group, "g");
  EXPECT_EQ(o->consumer, "host1");
  EXPECT_EQ(o->batch, 100u);
  EXPECT_EQ(o->block_ms, 50u);
  EXPECT_EQ(o->claim_idle_ms, 2000u);
  EXPECT_EQ(o->connect_timeout_ms, 300u);

  ::setenv("RINGFEED_REDIS_PASSWORD", "from-env", 1);
  auto d = io::parse_redis_uri("redis://[::1]?streams=s&group=g");
  ::unsetenv("RINGFEED_REDIS_PASSWORD");
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->host, "::1");
  EXPECT_EQ(d->port, 6379);
  EXPECT_EQ(d->password, "from-env");
  EXPECT_EQ(d->consumer.rfind("ringfeed-", 0), 0u) << d->consumer;
}

TEST(RedisUri, BadUrisAreRefusedNamingWhatIsWrong) {
  const auto refused = [](const std::string& u, const std::string& why) {
    auto s = io::open_source(u, {});
    ASSERT_FALSE(s.ok()) << u;
    EXPECT_TRUE(contains(s.error().message, why)) << u << ": " << s.error().message;
    EXPECT_EQ(s.error().code, EINVAL);
  };
  refused("redis://h:1?group=g", "no streams");
  refused("redis://h:1?streams=a", "no group");
  refused("redis://h:1?streams=a,,b&group=g", "empty stream name");
  refused("redis://h:1?streams=a,a&group=g", "listed twice");
  refused("redis://h:0?streams=a&group=g", "port '0'");
  refused("redis://h:99999?streams=a&group=g", "port '99999'");
  refused("redis://h:1?streams=a&group=g&batch=0", "batch '0'");
  refused("redis://h:1?streams=a&group=g&block-ms=x", "block-ms 'x'");
  refused("redis://h:1?streams=a&group=g&strams=b", "unknown parameter 'strams'");
  refused("redis://h:1?streams=a&group=g&group=h", "given twice");
  refused("redis://?streams=a&group=g", "no host");
  refused("redis://u:%zz@h:1?streams=a&group=g", "%-escape");
}

TEST(RedisId, PacksIntoOffsetsThatGrowWithIds) {
  auto a = io::redis_id_to_offset("1700000000000-0");
  auto b = io::redis_id_to_offset("1700000000000-1");
  auto c = io::redis_id_to_offset("1700000000001-0");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_LT(*a, *b);
  EXPECT_LT(*b, *c);
  EXPECT_EQ(io::redis_offset_to_id(*b), "1700000000000-1");
  auto small = io::redis_id_to_offset("0-1");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(io::redis_offset_to_id(*small), "0-1");
  EXPECT_FALSE(io::redis_id_to_offset("1-1048576").ok());
  EXPECT_FALSE(io::redis_id_to_offset("17592186044416-0").ok());
  EXPECT_FALSE(io::redis_id_to_offset("12").ok());
  EXPECT_FALSE(io::redis_id_to_offset("-1").ok());
  EXPECT_FALSE(io::redis_id_to_offset("1-").ok());
  EXPECT_FALSE(io::redis_id_to_offset("a-1").ok());
}

TEST(RedisSource, DeliversEveryShapeInOrderAndAcksExactlyWhatIsCommitted) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    ids.push_back(xadd(c, {"XADD", "s0", "*", "value", "v" + std::to_string(i)}));
  }
  xadd(c, {"XADD", "s1", "*", "key", "k1", "value", "with key"});
  xadd(c, {"XADD", "s1", "*", "value", "only", "key", "k2"});
  xadd(c, {"XADD", "s1", "*", "a", "1", "b", "q\"\\\n"});
  xadd(c, {"XADD", "s1", "*", "key", "k3", "other", "x"});

  auto s = open_source_or_null(uri(server, "streams=s0,s1&group=g&consumer=c1&batch=64"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->partitions(), 2u);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 304));
  ASSERT_EQ(sink.got[0].size(), 300u);
  for (std::size_t i = 0; i < 300; ++i) {
    const Got& g = sink.got[0][i];
    EXPECT_EQ(g.value, "v" + std::to_string(i));
    EXPECT_EQ(io::redis_offset_to_id(g.offset), ids[i]);
    EXPECT_EQ(g.next_offset, i + 1);
    const auto ms = std::stoll(ids[i].substr(0, ids[i].find('-')));
    EXPECT_EQ(g.timestamp_ns, ms * 1'000'000);
  }
  ASSERT_EQ(sink.got[1].size(), 4u);
  EXPECT_EQ(sink.got[1][0].key, "k1");
  EXPECT_EQ(sink.got[1][0].value, "with key");
  EXPECT_EQ(sink.got[1][1].key, "k2");
  EXPECT_EQ(sink.got[1][1].value, "only");
  EXPECT_EQ(sink.got[1][2].key, "");
  EXPECT_EQ(sink.got[1][2].value, R"({"a":"1","b":"q\"\\\u000a"})");
  EXPECT_EQ(sink.got[1][3].key, "k3");
  EXPECT_EQ(sink.got[1][3].value, R"({"key":"k3","other":"x"})");

  EXPECT_EQ(pending(c, "s0", "g"), 300);
  ASSERT_TRUE(s->commit(0, 120).ok());
  ASSERT_TRUE(s->flush(5s).ok());
  EXPECT_EQ(pending(c, "s0", "g"), 180) << "exactly the first 120 acknowledged";
  EXPECT_EQ(s->status(0).committed, 120u);
  EXPECT_EQ(s->status(0).fetched, 300u);
  ASSERT_TRUE(s->commit(0, 300).ok());
  ASSERT_TRUE(s->commit(1, 4).ok());
  ASSERT_TRUE(s->flush(5s).ok());
  EXPECT_EQ(s->status(0).committed, 300u);
  EXPECT_EQ(s->status(1).committed, 4u);
  EXPECT_EQ(pending(c, "s0", "g"), 0);
  EXPECT_EQ(pending(c, "s1", "g"), 0);
}

TEST(RedisSource, ACommitDoesNotWaitForItsXackAndFlushDoes) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  for (int i = 0; i < 20; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  auto s = open_source_or_null(uri(server, "streams=s&group=g"));
  ASSERT_TRUE(s);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 20));
  // Redis holds every write command (XACK is one) until unpaused.
  auto paused = c.command({"CLIENT", "PAUSE", "30000", "WRITE"});
  ASSERT_TRUE(paused.ok() && paused->type != ringfeed::io::RespType::error);
  ASSERT_TRUE(s->commit(0, 20).ok()) << "a commit returns with its XACK in flight";
  EXPECT_EQ(s->status(0).committed, 0u) << "not durable before Redis answered";
  EXPECT_EQ(pending(c, "s", "g"), 20);
  auto early = s->flush(100ms);
  ASSERT_FALSE(early.ok());
  EXPECT_TRUE(contains(early.error().message, "not acknowledged in time")) << early.error().message;
  ASSERT_TRUE(c.command({"CLIENT", "UNPAUSE"}).ok());
  ASSERT_TRUE(s->flush(5s).ok());
  EXPECT_EQ(s->status(0).committed, 20u);
  EXPECT_EQ(pending(c, "s", "g"), 0);
}

TEST(RedisSource, ARefusedXackIsSaidByTheNextCommitAndSentAgain) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  for (int i = 0; i < 10; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  auto s = open_source_or_null(uri(server, "streams=s&group=g"));
  ASSERT_TRUE(s);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 10));
  // The group's user may not run XACK for a while.
  ASSERT_TRUE(c.command({"ACL", "SETUSER", "default", "-xack"}).ok());
  ASSERT_TRUE(s->commit(0, 10).ok());
  ringfeed::Status refused = ringfeed::Ok{};
  ASSERT_TRUE(ringfeed::test::wait_until([&] {
    EXPECT_TRUE(s->poll_batches(sink, 10ms).ok());
    refused = s->commit(0, 10);
    return !refused.ok();
  }));
  EXPECT_TRUE(contains(refused.error().message, "XACK")) << refused.error().message;
  EXPECT_EQ(s->status(0).committed, 0u);
  EXPECT_EQ(pending(c, "s", "g"), 10);
  ASSERT_TRUE(c.command({"ACL", "SETUSER", "default", "+xack"}).ok());
  ASSERT_TRUE(s->flush(5s).ok()) << "sent again by itself";
  EXPECT_EQ(s->status(0).committed, 10u);
  EXPECT_EQ(pending(c, "s", "g"), 0);
}

// INFO commandstats: how often Redis ran `command` (lower case) since it started.
std::int64_t calls_of(RedisClient& c, const std::string& command) {
  auto r = c.command({"INFO", "commandstats"});
  EXPECT_TRUE(r.ok());
  if (!r.ok()) return -1;
  const std::string key = "cmdstat_" + command + ":calls=";
  const auto at = r->str.find(key);
  return at == std::string::npos ? 0 : std::stoll(r->str.substr(at + key.size()));
}

TEST(RedisSource, AnEntryThatComesAloneTakesOneRead) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  // A long BLOCK: no read comes back empty while the test runs.
  auto s = open_source_or_null(uri(server, "streams=s&group=g&block-ms=60000"));
  ASSERT_TRUE(s);
  Collect sink;
  xadd(c, {"XADD", "s", "*", "value", "first"});
  ASSERT_TRUE(poll_until(*s, sink, 1));  // set up, reading new entries
  const std::int64_t before = calls_of(c, "xreadgroup");
  constexpr int kEntries = 20;
  for (int i = 0; i < kEntries; ++i) {
    xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
    ASSERT_TRUE(poll_until(*s, sink, 2 + static_cast<std::size_t>(i)));
  }
  // One read answered per entry, and the reads kept in flight behind it (at most 2).
  EXPECT_LE(calls_of(c, "xreadgroup") - before, kEntries + 2);
}

TEST(RedisSource, ARefusedRecordComesFirstAfterResume) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  for (int i = 0; i < 10; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  auto s = open_source_or_null(uri(server, "streams=s&group=g"));
  ASSERT_TRUE(s);
  Collect sink;
  sink.limit = 4;
  ASSERT_TRUE(poll_until(*s, sink, 4));
  EXPECT_TRUE(s->status(0).paused);
  auto none = s->poll_batches(sink, 50ms);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u) << "a paused partition hands out nothing";
  sink.limit = SIZE_MAX;
  s->resume(0);
  ASSERT_TRUE(poll_until(*s, sink, 10));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sink.got[0][i].value, std::to_string(i));
}

TEST(RedisSource, ANewSourceOfTheSameConsumerReadsBackWhatWasNotAcknowledged) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  for (int i = 0; i < 50; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  const std::string u = uri(server, "streams=s&group=g&consumer=host-a&batch=16");
  {
    auto s = open_source_or_null(u);
    ASSERT_TRUE(s);
    Collect sink;
    ASSERT_TRUE(poll_until(*s, sink, 50));
    ASSERT_TRUE(s->commit(0, 20).ok());
    ASSERT_TRUE(s->flush(5s).ok());
  }  // gone without acknowledging 20..49, as a crashed fetcher
  for (int i = 50; i < 60; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  auto s = open_source_or_null(u);
  ASSERT_TRUE(s);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 40));
  ASSERT_EQ(sink.got[0].size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(sink.got[0][i].value, std::to_string(20 + i));
  ASSERT_TRUE(s->commit(0, 40).ok());
  ASSERT_TRUE(s->flush(5s).ok());
  EXPECT_EQ(pending(c, "s", "g"), 0);
}

TEST(RedisSource, EntriesOfADeadConsumerAreClaimedAfterTheIdleTime) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start().ok());
  RedisClient c = client_of(server);
  for (int i = 0; i < 30; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  {
    auto dead = open_source_or_null(uri(server, "streams=s&group=g&consumer=host-a"));
    ASSERT_TRUE(dead);
    Collect sink;
    ASSERT_TRUE(poll_until(*dead, sink, 30));
  }
  auto s = open_source_or_null(uri(server, "streams=s&group=g&consumer=host-b&claim-idle-ms=200"));
  ASSERT_TRUE(s);
  Collect sink;
  ASSERT_TRUE(poll_until(*s, sink, 30));
  std::vector<std::string> values;
  for (const Got& g : sink.got[0]) values.push_back(g.value);
  std::sort(values.begin(), values.end());
  std::vector<std::string> want;
  for (int i = 0; i < 30; ++i) want.push_back(std::to_string(i));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(values, want);
  ASSERT_TRUE(s->commit(0, 30).ok());
  ASSERT_TRUE(s->flush(5s).ok());
  EXPECT_EQ(pending(c, "s", "g"), 0);
}

TEST(RedisSource, ReconnectsToAServerThatWasDownOrRestartedAndLosesNothing) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start({.persistent = true}).ok());
  ASSERT_TRUE(server.stop().ok());
  // Down at open: the source opens and says why it waits.
  auto s = open_source_or_null(uri(server, "streams=s&group=g&connect-timeout-ms=500"));
  ASSERT_TRUE(s);
  Collect sink;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        EXPECT_TRUE(s->poll_batches(sink, 20ms).ok());
        return contains(s->status(0).error, "waiting for Redis");
      },
      10s));
  EXPECT_FALSE(s->status(0).stopped);
  ASSERT_TRUE(server.restart().ok());
  RedisClient c = client_of(server);
  for (int i = 0; i < 20; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  ASSERT_TRUE(poll_until(*s, sink, 20));
  EXPECT_TRUE(s->status(0).error.empty()) << s->status(0).error;
  ASSERT_TRUE(s->commit(0, 10).ok());
  ASSERT_TRUE(s->flush(5s).ok());

  // Killed under the source: it reconnects, reads back what it held, goes on.
  server.kill();
  ASSERT_TRUE(server.restart().ok());
  c = client_of(server);
  for (int i = 20; i < 30; ++i) xadd(c, {"XADD", "s", "*", "value", std::to_string(i)});
  ASSERT_TRUE(poll_until(*s, sink, 30));
  std::vector<std::string> values;
  for (const Got& g : sink.got[0]) values.push_back(g.value);
  for (int i = 0; i < 30; ++i) {
    EXPECT_NE(std::find(values.begin(), values.end(), std::to_string(i)), values.end()) << i;
  }
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        EXPECT_TRUE(s->poll_batches(sink, 20ms).ok());
        return s->commit(0, s->status(0).fetched).ok() && s->flush(1s).ok();
      },
      10s));
  EXPECT_EQ(pending(c, "s", "g"), 0);
}

TEST(RedisSource, AuthWithThePasswordAndAClearErrorWithoutIt) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start({.requirepass = "hunter2"}).ok());
  RedisClient c = client_of(server);
  xadd(c, {"XADD", "s", "*", "value", "x"});
  const std::string at = "127.0.0.1:" + std::to_string(server.port());
  {
    auto s = open_source_or_null("redis://:hunter2@" + at + "?streams=s&group=g");
    ASSERT_TRUE(s);
    Collect sink;
    ASSERT_TRUE(poll_until(*s, sink, 1));
  }
  auto wrong = open_source_or_null("redis://:nope@" + at + "?streams=s&group=g2");
  ASSERT_TRUE(wrong);
  Collect sink;
  std::string error;
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        auto n = wrong->poll_batches(sink, 20ms);
        if (n.ok()) return false;
        error = n.error().message;
        return true;
      },
      10s));
  EXPECT_TRUE(contains(error, "AUTH")) << error;
  auto none = open_source_or_null("redis://" + at + "?streams=s&group=g3");
  ASSERT_TRUE(none);
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        auto n = none->poll_batches(sink, 20ms);
        if (n.ok()) return false;
        error = n.error().message;
        return true;
      },
      10s));
  EXPECT_TRUE(contains(error, "RINGFEED_REDIS_PASSWORD")) << error;
  EXPECT_EQ(sink.total(), 0u);
}

}  // namespace
