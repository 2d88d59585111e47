// A small blocking Redis client: RESP2 (io/resp.hpp) over one TCP connection, one command
// at a time or a pipeline, every wait bounded by a timeout. For tools and tests that talk
// to Redis outside the fetcher (`ringfeed produce` to a redis:// source, the test
// fixtures, the bench); the fetcher itself speaks RESP on its io_uring (redis_source.hpp).
//
// An error reply, a broken connection, a timeout or a malformed reply comes back as an
// Error whose message names the server, the command and what happened. After a timeout
// or a broken reply the connection is closed (its replies would no longer match its
// commands); later commands say so.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/resp.hpp"
#include "shm/result.hpp"

namespace ringfeed::io {

struct RedisClientOptions {
  std::string host = "127.0.0.1";
  // AUTH after connecting: `AUTH password`, or `AUTH user password` with a user.
  std::string user;
  std::string password;
  // The longest wait for the connection, for sending a command and for each reply.
  std::chrono::milliseconds timeout{5000};
};

class RedisClient {
 public:
  // Connects (and authenticates if options.password is set).
  static Result<RedisClient> connect(std::uint16_t port, const RedisClientOptions& options = {});

  RedisClient() = default;
  RedisClient(RedisClient&& other) noexcept;
  RedisClient& operator=(RedisClient&& other) noexcept;
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;
  ~RedisClient();

  // Sends one command and waits for its reply. An error reply becomes an Error with code
  // EREMOTEIO and the server's text ("XADD: ERR ..."); a null reply (XREADGROUP ... BLOCK
  // that timed out) is a value.
  Result<RespValue> command(std::initializer_list<std::string_view> args);
  Result<RespValue> command(std::span<const std::string_view> args);
  Result<RespValue> command(const std::vector<std::string>& args);

  // Sends every command in one write, then reads one reply per command, in order. Error
  // replies stay values here (io::RespType::error), one per failed command; an Error is
  // returned only for a failure of the connection.
  Result<std::vector<RespValue>> pipeline(const std::vector<std::vector<std::string>>& commands);

  // The timeout of later commands (a blocking XREADGROUP needs more than its BLOCK).
  void set_timeout(std::chrono::milliseconds timeout) { options_.timeout = timeout; }
  bool connected() const { return fd_ >= 0; }
  void close();
  std::uint16_t port() const { return port_; }

 private:
  Status send_all(std::string_view bytes, std::string_view what);
  Result<RespValue> read_reply(std::string_view what);
  Error fail(std::string message, int code);
  std::string where() const;

  int fd_ = -1;
  std::uint16_t port_ = 0;
  RedisClientOptions options_;
  std::string in_;  // received, not parsed yet
  io::RespParser parser_;
  std::string why_closed_;  // set when a failure closed the connection
};

}  // namespace ringfeed::io
