// The redis-server fixture of the tests and the bench (tests/support/redis_server.hpp):
// a server started on a free port answers as itself, XADD and XRANGE round trip through
// RedisClient, a pipeline keeps its replies in order, error replies and blocking reads
// come back as they should, a persistent server keeps a stream, its group and the
// pending entries across restart() and across kill() + restart(), requirepass needs AUTH,
// a killed server gives a clear error to a client, and a missing binary a clear error at
// start(). Skipped (with the reason) where /usr/bin/redis-server is not installed.
#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ringfeed::io::RespType;
using ringfeed::io::RespValue;
using ringfeed::test::RedisClient;
using ringfeed::test::RedisServer;
using ringfeed::test::RedisServerOptions;

// The entry ids and `value` fields of an XRANGE reply, in order.
std::vector<std::pair<std::string, std::string>> entries(const RespValue& reply) {
  std::vector<std::pair<std::string, std::string>> out;
  auto list = ringfeed::io::as_array(reply, "XRANGE reply");
  EXPECT_TRUE(list) << list.error().message;
  if (!list) return out;
  for (const RespValue& e : *list) {
    auto entry = ringfeed::io::as_array(e, 2, "XRANGE entry");
    EXPECT_TRUE(entry) << entry.error().message;
    if (!entry) continue;
    auto id = ringfeed::io::as_string((*entry)[0], "entry id");
    auto fields = ringfeed::io::as_array((*entry)[1], 2, "fields");
    EXPECT_TRUE(id && fields);
    if (!id || !fields) continue;
    auto name = ringfeed::io::as_string((*fields)[0], "field name");
    auto value = ringfeed::io::as_string((*fields)[1], "field value");
    EXPECT_TRUE(name && value);
    if (!name || !value) continue;
    EXPECT_EQ(*name, "value");
    out.emplace_back(std::string(*id), std::string(*value));
  }
  return out;
}

std::int64_t integer_of(const ringfeed::Result<RespValue>& r) {
  EXPECT_TRUE(r) << r.error().message;
  if (!r) return -1;
  auto i = ringfeed::io::as_integer(r.value(), "reply");
  EXPECT_TRUE(i) << i.error().message;
  return i ? *i : -1;
}

TEST(RedisServer, StartsOnAFreePortAndAnswersAsItself) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  auto started = server.start();
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_TRUE(server.running());
  EXPECT_GT(server.port(), 0);
  EXPECT_GT(server.pid(), 0);
  EXPECT_TRUE(std::filesystem::is_directory(server.dir()));

  auto c = server.client();
  ASSERT_TRUE(c) << c.error().message;
  auto pong = c->command({"PING"});
  ASSERT_TRUE(pong) << pong.error().message;
  EXPECT_EQ(pong->type, RespType::simple_string);
  EXPECT_EQ(pong->str, "PONG");
  auto info = c->command({"INFO", "server"});
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_NE(info->str.find("process_id:" + std::to_string(server.pid()) + "\r\n"),
            std::string::npos);
  EXPECT_NE(info->str.find("tcp_port:" + std::to_string(server.port()) + "\r\n"),
            std::string::npos);
  // No persistence unless asked for.
  auto aof = c->command({"CONFIG", "GET", "appendonly"});
  ASSERT_TRUE(aof) << aof.error().message;
  ASSERT_EQ(aof->elements.size(), 2u);
  EXPECT_EQ(aof->elements[1].str, "no");
  auto save = c->command({"CONFIG", "GET", "save"});
  ASSERT_TRUE(save) << save.error().message;
  ASSERT_EQ(save->elements.size(), 2u);
  EXPECT_EQ(save->elements[1].str, "");

  // Two servers at once get different ports and directories.
  RedisServer other;
  ASSERT_TRUE(other.start());
  EXPECT_NE(other.port(), server.port());
  EXPECT_NE(other.dir(), server.dir());

  const std::string dir = server.dir();
  auto stopped = server.stop();
  EXPECT_TRUE(stopped) << stopped.error().message;
  EXPECT_FALSE(server.running());
  EXPECT_TRUE(std::filesystem::is_directory(dir));  // kept for restart() until destruction
}

TEST(RedisServer, DestructorStopsTheServerAndRemovesItsDirectory) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  pid_t pid = 0;
  std::string dir;
  {
    RedisServer server;
    ASSERT_TRUE(server.start());
    pid = server.pid();
    dir = server.dir();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  // Reaped by the destructor: the pid no longer names our child.
  EXPECT_NE(::kill(pid, 0), 0);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(RedisServer, XaddAndXrangeRoundTrip) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  auto c = RedisClient::connect(server.port());
  ASSERT_TRUE(c) << c.error().message;

  std::vector<std::string> ids;
  const std::vector<std::string> values = {"v0", std::string("with\r\nbinary\0bytes", 19),
                                           std::string(100'000, 'x'), ""};
  for (const std::string& v : values) {
    auto id = c->command({"XADD", "s", "*", "value", v});
    ASSERT_TRUE(id) << id.error().message;
    ASSERT_EQ(id->type, RespType::bulk_string);
    ids.push_back(id->str);
  }
  EXPECT_EQ(integer_of(c->command({"XLEN", "s"})), 4);

  auto range = c->command({"XRANGE", "s", "-", "+"});
  ASSERT_TRUE(range) << range.error().message;
  const auto got = entries(*range);
  ASSERT_EQ(got.size(), values.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, ids[i]);
    EXPECT_EQ(got[i].second, values[i]) << "entry " << i;
  }

  // A pipeline: replies in order, an error reply stays a value among them.
  std::vector<std::vector<std::string>> cmds;
  for (int i = 0; i < 1000; ++i) cmds.push_back({"XADD", "p", "*", "value", std::to_string(i)});
  cmds.push_back({"XADD", "p", "0-1", "value", "too small an id"});
  cmds.push_back({"XLEN", "p"});
  auto replies = c->pipeline(cmds);
  ASSERT_TRUE(replies) << replies.error().message;
  ASSERT_EQ(replies->size(), cmds.size());
  EXPECT_EQ((*replies)[0].type, RespType::bulk_string);
  EXPECT_EQ((*replies)[1000].type, RespType::error);
  EXPECT_NE((*replies)[1000].str.find("equal or smaller"), std::string::npos)
      << (*replies)[1000].str;
  EXPECT_EQ((*replies)[1001], RespValue::from_integer(1000));
}

TEST(RedisServer, ErrorRepliesAndBlockingReads) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  auto c = server.client();
  ASSERT_TRUE(c) << c.error().message;

  auto bad = c->command({"XREADGROUP", "GROUP", "nogroup", "w", "STREAMS", "missing", ">"});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EREMOTEIO);
  EXPECT_NE(bad.error().message.find("XREADGROUP GROUP"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("NOGROUP"), std::string::npos) << bad.error().message;
  // The connection goes on after an error reply.
  auto created = c->command({"XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"});
  ASSERT_TRUE(created) << created.error().message;
  EXPECT_EQ(created->str, "OK");
  auto again = c->command({"XGROUP", "CREATE", "s", "g", "$"});
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("BUSYGROUP"), std::string::npos) << again.error().message;

  // A blocking read that times out is a null array, a value.
  auto empty = c->command({"XREADGROUP", "GROUP", "g", "w", "BLOCK", "20", "STREAMS", "s", ">"});
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_EQ(empty->type, RespType::null_array);

  // A reply slower than the client's timeout: a clear error, and the connection is closed
  // (its next reply would belong to the timed-out command).
  c->set_timeout(std::chrono::milliseconds(50));
  auto late = c->command({"XREADGROUP", "GROUP", "g", "w", "BLOCK", "2000", "STREAMS", "s", ">"});
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ETIMEDOUT);
  EXPECT_NE(late.error().message.find("no reply to XREADGROUP GROUP"), std::string::npos)
      << late.error().message;
  EXPECT_FALSE(c->connected());
  auto after = c->command({"PING"});
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, ENOTCONN);
  EXPECT_NE(after.error().message.find("not connected"), std::string::npos);
}

TEST(RedisServer, PersistentRestartKeepsStreamsGroupsAndPendingEntries) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start({.persistent = true}));
  const std::uint16_t port = server.port();
  const pid_t first_pid = server.pid();
  {
    auto c = server.client();
    ASSERT_TRUE(c) << c.error().message;
    auto aof = c->command({"CONFIG", "GET", "appendfsync"});
    ASSERT_TRUE(aof) << aof.error().message;
    ASSERT_EQ(aof->elements.size(), 2u);
    EXPECT_EQ(aof->elements[1].str, "always");
    ASSERT_TRUE(c->command({"XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"}));
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(c->command({"XADD", "s", "*", "value", "m" + std::to_string(i)}));
    }
    // Three delivered to consumer w and not acked: pending.
    auto read = c->command({"XREADGROUP", "GROUP", "g", "w", "COUNT", "3", "STREAMS", "s", ">"});
    ASSERT_TRUE(read) << read.error().message;
  }

  auto restarted = server.restart();
  ASSERT_TRUE(restarted) << restarted.error().message;
  EXPECT_EQ(server.port(), port);
  EXPECT_NE(server.pid(), first_pid);
  {
    auto c = server.client();
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(integer_of(c->command({"XLEN", "s"})), 10);
    auto pending = c->command({"XPENDING", "s", "g"});
    ASSERT_TRUE(pending) << pending.error().message;
    ASSERT_EQ(pending->elements.size(), 4u);
    EXPECT_EQ(pending->elements[0], RespValue::from_integer(3));
    // Another write after the restart, then a crash: appendfsync always keeps it too.
    ASSERT_TRUE(c->command({"XADD", "s", "*", "value", "after restart"}));
  }

  server.kill();
  EXPECT_FALSE(server.running());
  auto recovered = server.restart();
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(server.port(), port);
  auto c = server.client();
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(integer_of(c->command({"XLEN", "s"})), 11);
  auto range = c->command({"XRANGE", "s", "-", "+"});
  ASSERT_TRUE(range) << range.error().message;
  const auto got = entries(*range);
  ASSERT_EQ(got.size(), 11u);
  EXPECT_EQ(got.front().second, "m0");
  EXPECT_EQ(got.back().second, "after restart");
  auto pending = c->command({"XPENDING", "s", "g"});
  ASSERT_TRUE(pending) << pending.error().message;
  ASSERT_EQ(pending->elements.size(), 4u);
  EXPECT_EQ(pending->elements[0], RespValue::from_integer(3));
}

TEST(RedisServer, WithoutPersistenceARestartStartsEmpty) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  {
    auto c = server.client();
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(c->command({"XADD", "s", "*", "value", "v"}));
  }
  ASSERT_TRUE(server.restart());
  auto c = server.client();
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(integer_of(c->command({"XLEN", "s"})), 0);
}

TEST(RedisServer, KilledServerGivesAClearError) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  auto c = server.client();
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->command({"XADD", "s", "*", "value", "v"}));
  const std::uint16_t port = server.port();

  server.kill();
  EXPECT_FALSE(server.running());
  auto r = c->command({"XADD", "s", "*", "value", "v"});
  ASSERT_FALSE(r);
  const std::string& m = r.error().message;
  EXPECT_NE(m.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << m;
  EXPECT_NE(m.find("XADD s"), std::string::npos) << m;
  EXPECT_TRUE(m.find("closed the connection") != std::string::npos ||
              m.find("Connection reset") != std::string::npos)
      << m;
  EXPECT_FALSE(c->connected());

  auto fresh = RedisClient::connect(port);
  ASSERT_FALSE(fresh);
  EXPECT_EQ(fresh.error().code, ECONNREFUSED);
  EXPECT_NE(
      fresh.error().message.find("cannot connect to Redis at 127.0.0.1:" + std::to_string(port)),
      std::string::npos)
      << fresh.error().message;
  // stop() after kill() has nothing left to do.
  EXPECT_TRUE(server.stop());
}

TEST(RedisServer, ServerThatDiedByItselfIsReportedByStop) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  ASSERT_EQ(::kill(server.pid(), SIGKILL), 0);  // not through kill(): an unexpected death
  ASSERT_TRUE(ringfeed::test::wait_until([&] { return !server.running(); }));
  auto stopped = server.stop();
  ASSERT_FALSE(stopped);
  EXPECT_NE(
      stopped.error().message.find("ended by itself before stop(): it was killed by signal 9"),
      std::string::npos)
      << stopped.error().message;
}

TEST(RedisServer, RequirepassNeedsAuth) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start({.requirepass = "s3cret"}));
  auto anonymous = RedisClient::connect(server.port());
  ASSERT_TRUE(anonymous) << anonymous.error().message;
  auto refused = anonymous->command({"XLEN", "s"});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("NOAUTH"), std::string::npos) << refused.error().message;

  auto wrong = RedisClient::connect(server.port(), {.password = "wrong"});
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("AUTH"), std::string::npos) << wrong.error().message;

  auto c = server.client();  // authenticates with the server's password
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(integer_of(c->command({"XLEN", "s"})), 0);
}

TEST(RedisServer, MissingBinaryGivesAClearError) {
  RedisServer server;
  RedisServerOptions o;
  o.binary = "/nonexistent/redis-server";
  auto started = server.start(o);
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, ENOENT);
  EXPECT_NE(started.error().message.find("cannot run /nonexistent/redis-server"), std::string::npos)
      << started.error().message;
  EXPECT_FALSE(server.running());
  EXPECT_EQ(server.pid(), -1);

  // A binary that exists but is not a redis-server: it exits at once, and start() says
  // so with its status instead of waiting for an answer.
  o.binary = "/bin/false";
  o.start_timeout = std::chrono::seconds(30);
  const auto t0 = std::chrono::steady_clock::now();
  auto exited = server.start(o);
  ASSERT_FALSE(exited);
  EXPECT_NE(exited.error().message.find("exited with status 1 while starting"), std::string::npos)
      << exited.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(RedisServer, BadConfigurationIsReportedWithTheServersLog) {
  RINGFEED_SKIP_WITHOUT_REDIS();
  RedisServer server;
  auto started = server.start({.extra_args = {"--no-such-directive", "1"}});
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message.find("while starting"), std::string::npos)
      << started.error().message;
  EXPECT_NE(started.error().message.find("no-such-directive"), std::string::npos)
      << started.error().message;
}

}  // namespace
