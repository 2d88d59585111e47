// A real redis-server for the tests and the bench, and the blocking client that drives it.
//
//   ringfeed::test::RedisServer server;
//   if (auto ok = server.start(); !ok) FAIL() << ok.error().message;
//   auto client = ringfeed::test::RedisClient::connect(server.port());
//   auto id = client->command({"XADD", "s", "*", "value", "v"});   // Result<RespValue>
//
// RedisServer runs the Debian `redis-server` binary (fork + exec) on 127.0.0.1, on a port
// that was free when it looked (bind to port 0, read the port, close, start the server
// there; if another process took the port meanwhile, it tries again on another), with a
// directory of its own under the system's temporary directory. It is ready when it
// answers PING as itself: `INFO server` must report the pid it started, so a stranger that
// took the port is never mistaken for it. Nothing is waited for with a bare sleep: every
// wait polls its condition up to a deadline.
//
// The server dies with the process that started it (PR_SET_PDEATHSIG), so a crashed test
// or bench leaves no server behind; only its directory may remain.
//
// RedisClient is io::RedisClient (io/redis_client.hpp), which `ringfeed produce` uses too.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/redis_client.hpp"
#include "io/resp.hpp"
#include "shm/result.hpp"

namespace ringfeed::test {

inline constexpr const char* kRedisServerBinary = "/usr/bin/redis-server";

// Whether `binary` exists and is executable (tests that need a server skip without it).
bool redis_server_available(const std::string& binary = kRedisServerBinary);

// In a GoogleTest test: skip it, saying why, where redis-server is not installed.
#define RINGFEED_SKIP_WITHOUT_REDIS()                                                      \
  do {                                                                                     \
    if (!::ringfeed::test::redis_server_available()) {                                     \
      GTEST_SKIP() << ::ringfeed::test::kRedisServerBinary << " is not installed (Debian " \
                   << "package redis-server; scripts/install-deps.sh installs it)";        \
    }                                                                                      \
  } while (0)

// --- client: io::RedisClient, a blocking RESP2 client (io/redis_client.hpp) ------------

using RedisClient = io::RedisClient;
using RedisClientOptions = io::RedisClientOptions;

// --- server --------------------------------------------------------------------------

struct RedisServerOptions {
  std::string binary = kRedisServerBinary;
  // Off: no persistence at all (--save "" --appendonly no). On: an append-only file with
  // appendfsync always (and no RDB snapshots), so that restart() or a start after stop()
  // or kill() finds every stream, group and pending entry acknowledged by a write.
  bool persistent = false;
  // --requirepass: clients must AUTH (RedisClientOptions::password).
  std::string requirepass;
  // More configuration, as `--name value ...` arguments appended to the command line
  // (e.g. {"--maxmemory", "64mb"}).
  std::vector<std::string> extra_args;
  // How long start() waits for the server to answer (loading a large AOF takes time).
  std::chrono::milliseconds start_timeout{15'000};
  // How long stop() waits after SIGTERM before SIGKILL.
  std::chrono::milliseconds stop_timeout{10'000};
  // Ports tried when the one found free was taken before the server could bind it.
  int bind_attempts = 5;
};

class RedisServer {
 public:
  RedisServer() = default;
  ~RedisServer();  // stops the server (SIGTERM, then SIGKILL) and removes its directory
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Creates the directory (once: a later start() reuses it, with its data), finds a free
  // port and starts the server; returns once it answers. Refused while it runs. The
  // error says what went wrong: the binary missing or not executable (naming the Debian
  // package), the server exiting at start (with its status and the end of its log), or
  // no answer within options.start_timeout.
  Status start(const RedisServerOptions& options = {});
  // stop(), then start again on the same port with the same directory and options; also
  // after kill() (a crash and the server's recovery).
  Status restart();
  // SIGTERM and wait for the exit (an append-only server writes and syncs its file);
  // SIGKILL after options.stop_timeout, reported as an error. An error also if the
  // server had already exited by itself. Nothing to do when not running.
  Status stop();
  // SIGKILL and reap: the server dies at once, as in a crash.
  void kill();

  // True while the started server process has not exited.
  bool running();
  // The port and pid of the running server (the port stays valid after stop(), for
  // restart()); 0 before start().
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // The server's working directory (its append-only files, its log `redis.log`).
  const std::string& dir() const { return dir_; }
  const RedisServerOptions& options() const { return options_; }
  // The last `lines` lines of the server's log and of what it wrote to stdout/stderr.
  std::string log_tail(std::size_t lines = 20) const;

  // A client of this server, authenticated when requirepass is set.
  Result<RedisClient> client(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;

 private:
  Status launch(std::uint16_t port, bool& port_taken);
  Status wait_ready(bool& port_taken);
  Error exited_early(int status, bool& port_taken);
  // waitpid on the server; true once it was reaped (its status in `status`).
  bool reap(int options, int& status);

  RedisServerOptions options_;
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  // A server that running() found exited by itself, until stop() reports it.
  pid_t exited_pid_ = -1;
  int exited_status_ = 0;
};

}  // namespace ringfeed::test
