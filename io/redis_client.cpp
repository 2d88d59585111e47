#include "io/redis_client.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace ringfeed::io {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// The command name and its first argument, for messages ("XADD s", "PING").
std::string describe_command(std::span<const std::string_view> args) {
  std::string s;
  for (std::size_t i = 0; i < args.size() && i < 2; ++i) {
    if (i > 0) s += ' ';
    s += args[i].size() <= 40 ? std::string(args[i]) : std::string(args[i].substr(0, 40)) + "...";
  }
  return s.empty() ? "(empty command)" : s;
}

}  // namespace

RedisClient::RedisClient(RedisClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      port_(other.port_),
      options_(std::move(other.options_)),
      in_(std::move(other.in_)),
      parser_(std::move(other.parser_)),
      why_closed_(std::move(other.why_closed_)) {}

RedisClient& RedisClient::operator=(RedisClient&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    port_ = other.port_;
    options_ = std::move(other.options_);
    in_ = std::move(other.in_);
    parser_ = std::move(other.parser_);
    why_closed_ = std::move(other.why_closed_);
  }
  return *this;
}

RedisClient::~RedisClient() {
  close();
}

void RedisClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
  parser_.reset();
  if (why_closed_.empty()) why_closed_ = "closed by the client";
}

std::string RedisClient::where() const {
  return "Redis at " + options_.host + ":" + std::to_string(port_);
}

Error RedisClient::fail(std::string message, int code) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
  parser_.reset();
  why_closed_ = message;
  return Error{std::move(message), code};
}

Result<RedisClient> RedisClient::connect(std::uint16_t port, const RedisClientOptions& options) {
  RedisClient c;
  c.port_ = port;
  c.options_ = options;
  const auto deadline = Clock::now() + options.timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port_text = std::to_string(port);
  if (const int gai = ::getaddrinfo(options.host.c_str(), port_text.c_str(), &hints, &found);
      gai != 0 || found == nullptr) {
    return Error{"cannot resolve Redis host '" + options.host + "': " + ::gai_strerror(gai),
                 EHOSTUNREACH};
  }
  sockaddr_storage addr{};
  std::memcpy(&addr, found->ai_addr, found->ai_addrlen);
  const socklen_t addr_len = found->ai_addrlen;
  const int family = found->ai_family;
  ::freeaddrinfo(found);
  c.fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c.fd_ < 0) return Error{std::string("socket: ") + std::strerror(errno), errno};
  const int one = 1;
  ::setsockopt(c.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    if (errno != EINPROGRESS) {
      const int err = errno;
      return c.fail("cannot connect to " + c.where() + ": " + std::strerror(err), err);
    }
    pollfd pfd{c.fd_, POLLOUT, 0};
    int rc = 0;
    while ((rc = ::poll(&pfd, 1, remaining_ms(deadline))) < 0 && errno == EINTR) {
    }
    if (rc == 0) {
      return c.fail("cannot connect to " + c.where() + ": no answer within " +
                        std::to_string(options.timeout.count()) + " ms",
                    ETIMEDOUT);
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (rc < 0 || ::getsockopt(c.fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return c.fail("cannot connect to " + c.where() + ": " + std::strerror(err), err);
  }
  c.why_closed_.clear();
  if (!options.password.empty()) {
    auto auth = options.user.empty() ? c.command({"AUTH", options.password})
                                     : c.command({"AUTH", options.user, options.password});
    if (!auth) return auth.error();
  }
  return c;
}

Status RedisClient::send_all(std::string_view bytes, std::string_view what) {
  const auto deadline = Clock::now() + options_.timeout;
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd_, POLLOUT, 0};
      const int rc = ::poll(&pfd, 1, remaining_ms(deadline));
      if (rc == 0) {
        return fail("sending " + std::string(what) + " to " + where() + ": blocked for " +
                        std::to_string(options_.timeout.count()) + " ms (connection closed)",
                    ETIMEDOUT);
      }
      continue;
    }
    const int err = errno;
    return fail(
        "sending " + std::string(what) + " to " + where() + ": " + std::strerror(err) +
            (err == EPIPE || err == ECONNRESET ? " (the server closed the connection)" : ""),
        err);
  }
  return Ok{};
}

Result<RespValue> RedisClient::read_reply(std::string_view what) {
  const auto deadline = Clock::now() + options_.timeout;
  RespValue value;
  for (;;) {
    std::size_t consumed = 0;
    const ParseResult r = parser_.parse({in_.data(), in_.size()}, consumed, value);
    if (r.status == ParseStatus::complete) {
      in_.erase(0, consumed);
      return value;
    }
    if (r.status == ParseStatus::error) {
      return fail("reply to " + std::string(what) + " from " + where() +
                      " is not RESP2 (connection closed): " + r.error,
                  EPROTO);
    }
    pollfd pfd{fd_, POLLIN, 0};
    const int rc = ::poll(&pfd, 1, remaining_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      return fail("no reply to " + std::string(what) + " from " + where() + " within " +
                      std::to_string(options_.timeout.count()) + " ms (connection closed)",
                  ETIMEDOUT);
    }
    char buf[64 * 1024];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      in_.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n == 0) {
      return fail(where() + " closed the connection before replying to " + std::string(what) +
                      (in_.empty() ? "" : " (in the middle of a reply)"),
                  ECONNRESET);
    }
    const int err = errno;
    return fail("waiting for the reply to " + std::string(what) + " from " + where() + ": " +
                    std::strerror(err),
                err);
  }
}

Result<RespValue> RedisClient::command(std::initializer_list<std::string_view> args) {
  return command(std::span<const std::string_view>(args.begin(), args.size()));
}

Result<RespValue> RedisClient::command(const std::vector<std::string>& args) {
  const std::vector<std::string_view> views(args.begin(), args.end());
  return command(std::span<const std::string_view>(views));
}

Result<RespValue> RedisClient::command(std::span<const std::string_view> args) {
  const std::string what = describe_command(args);
  if (fd_ < 0) {
    return Error{"cannot send " + what + " to " + where() + ": not connected (" +
                     (why_closed_.empty() ? "never connected" : why_closed_) + ")",
                 ENOTCONN};
  }
  std::string out;
  append_command(out, args);
  if (auto sent = send_all(out, what); !sent) return sent.error();
  auto reply = read_reply(what);
  if (!reply) return reply;
  if (reply->type == RespType::error) {
    return Error{what + " on " + where() + ": " + reply->str, EREMOTEIO};
  }
  return reply;
}

Result<std::vector<RespValue>> RedisClient::pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  const std::string what = "a pipeline of " + std::to_string(commands.size()) + " commands";
  if (fd_ < 0) {
    return Error{"cannot send " + what + " to " + where() + ": not connected (" +
                     (why_closed_.empty() ? "never connected" : why_closed_) + ")",
                 ENOTCONN};
  }
  std::string out;
  std::vector<std::string_view> views;
  for (const auto& args : commands) {
    views.assign(args.begin(), args.end());
    append_command(out, std::span<const std::string_view>(views));
  }
  if (auto sent = send_all(out, what); !sent) return sent.error();
  std::vector<RespValue> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    views.assign(commands[i].begin(), commands[i].end());
    auto reply = read_reply(describe_command(views) + " (command " + std::to_string(i + 1) +
                            " of " + what + ")");
    if (!reply) return reply.error();
    replies.push_back(std::move(reply.value()));
  }
  return replies;
}

}  // namespace ringfeed::io
