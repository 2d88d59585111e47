#include "tests/support/redis_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <utility>

namespace ringfeed::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kLogName = "redis.log";     // the server's own log
constexpr std::string_view kOutputName = "redis.out";  // its stdout and stderr

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

std::string last_lines(const std::string& path, std::size_t lines) {
  std::ifstream in(path);
  if (!in) return {};
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  const std::size_t from = all.size() > lines ? all.size() - lines : 0;
  std::string out;
  for (std::size_t i = from; i < all.size(); ++i) out += all[i] + "\n";
  return out;
}

bool file_contains(const std::string& path, std::string_view text) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.find(text) != std::string::npos) return true;
  }
  return false;
}

// A port on 127.0.0.1 that is free now: bind to port 0 and read what the kernel chose.
Result<std::uint16_t> free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{std::string("socket: ") + std::strerror(errno), errno};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return Error{std::string("looking for a free port on 127.0.0.1: ") + std::strerror(err), err};
  }
  ::close(fd);
  return static_cast<std::uint16_t>(ntohs(addr.sin_port));
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

}  // namespace

bool redis_server_available(const std::string& binary) {
  return ::access(binary.c_str(), X_OK) == 0;
}

// --- RedisClient -----------------------------------------------------------------------

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
  return "redis-server at " + options_.host + ":" + std::to_string(port_);
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
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, options.host.c_str(), &addr.sin_addr) != 1) {
    return Error{"RedisClient: '" + options.host + "' is not an IPv4 address", EINVAL};
  }
  c.fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c.fd_ < 0) return Error{std::string("socket: ") + std::strerror(errno), errno};
  const int one = 1;
  ::setsockopt(c.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
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

Result<io::RespValue> RedisClient::read_reply(std::string_view what) {
  const auto deadline = Clock::now() + options_.timeout;
  io::RespValue value;
  for (;;) {
    std::size_t consumed = 0;
    const io::ParseResult r = parser_.parse({in_.data(), in_.size()}, consumed, value);
    if (r.status == io::ParseStatus::complete) {
      in_.erase(0, consumed);
      return value;
    }
    if (r.status == io::ParseStatus::error) {
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

Result<io::RespValue> RedisClient::command(std::initializer_list<std::string_view> args) {
  return command(std::span<const std::string_view>(args.begin(), args.size()));
}

Result<io::RespValue> RedisClient::command(const std::vector<std::string>& args) {
  const std::vector<std::string_view> views(args.begin(), args.end());
  return command(std::span<const std::string_view>(views));
}

Result<io::RespValue> RedisClient::command(std::span<const std::string_view> args) {
  const std::string what = describe_command(args);
  if (fd_ < 0) {
    return Error{"cannot send " + what + " to " + where() + ": not connected (" +
                     (why_closed_.empty() ? "never connected" : why_closed_) + ")",
                 ENOTCONN};
  }
  std::string out;
  io::append_command(out, args);
  if (auto sent = send_all(out, what); !sent) return sent.error();
  auto reply = read_reply(what);
  if (!reply) return reply;
  if (reply->type == io::RespType::error) {
    return Error{what + " on " + where() + ": " + reply->str, EREMOTEIO};
  }
  return reply;
}

Result<std::vector<io::RespValue>> RedisClient::pipeline(
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
    io::append_command(out, std::span<const std::string_view>(views));
  }
  if (auto sent = send_all(out, what); !sent) return sent.error();
  std::vector<io::RespValue> replies;
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

// --- RedisServer -----------------------------------------------------------------------

RedisServer::~RedisServer() {
  static_cast<void>(stop());
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool RedisServer::reap(int options, int& status) {
  if (pid_ <= 0) return false;
  pid_t r = 0;
  while ((r = ::waitpid(pid_, &status, options)) < 0 && errno == EINTR) {
  }
  return r == pid_;
}

bool RedisServer::running() {
  int status = 0;
  if (pid_ <= 0 || !reap(WNOHANG, status)) return pid_ > 0;
  // It exited by itself: keep the status for stop() to report.
  exited_status_ = status;
  exited_pid_ = std::exchange(pid_, -1);
  return false;
}

std::string RedisServer::log_tail(std::size_t lines) const {
  if (dir_.empty()) return {};
  std::string out = last_lines(dir_ + "/" + std::string(kOutputName), lines);
  out += last_lines(dir_ + "/" + std::string(kLogName), lines);
  return out;
}

Result<RedisClient> RedisServer::client(std::chrono::milliseconds timeout) const {
  return RedisClient::connect(port_, {.password = options_.requirepass, .timeout = timeout});
}

Status RedisServer::start(const RedisServerOptions& options) {
  if (pid_ > 0) {
    return Error{"redis-server already runs (pid " + std::to_string(pid_) + ", port " +
                     std::to_string(port_) + "): stop() it first",
                 EBUSY};
  }
  if (!redis_server_available(options.binary)) {
    const int err = errno;
    return Error{"cannot run " + options.binary + ": " + std::strerror(err) +
                     (options.binary == kRedisServerBinary
                          ? " (install the Debian package redis-server, or run "
                            "scripts/install-deps.sh as root)"
                          : ""),
                 err};
  }
  options_ = options;
  exited_pid_ = -1;
  if (dir_.empty()) {
    std::string templ = (std::filesystem::temp_directory_path() / "ringfeed-redis-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      return Error{"mkdtemp " + templ + ": " + std::strerror(errno), errno};
    }
    dir_ = templ;
  }
  Error last{"no attempt", 0};
  for (int attempt = 0; attempt < std::max(1, options_.bind_attempts); ++attempt) {
    auto port = free_port();
    if (!port) return port.error();
    bool port_taken = false;
    auto started = launch(*port, port_taken);
    if (started) return started;
    last = started.error();
    if (!port_taken) break;
  }
  port_ = 0;
  return last;
}

Status RedisServer::restart() {
  if (port_ == 0) return Error{"restart(): the server was never started", EINVAL};
  if (auto stopped = stop(); !stopped) return stopped;
  const auto deadline = Clock::now() + options_.start_timeout;
  // The same port: a client's connection from before may still hold it briefly in another
  // state, and another process may have taken it; retry until the start timeout.
  for (;;) {
    bool port_taken = false;
    auto started = launch(port_, port_taken);
    if (started || !port_taken || Clock::now() >= deadline) return started;
  }
}

Status RedisServer::launch(std::uint16_t port, bool& port_taken) {
  port_taken = false;
  const std::string port_text = std::to_string(port);
  std::vector<std::string> args = {options_.binary,
                                   "--port",
                                   port_text,
                                   "--bind",
                                   "127.0.0.1",
                                   "--dir",
                                   dir_,
                                   "--logfile",
                                   dir_ + "/" + std::string(kLogName),
                                   "--daemonize",
                                   "no",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   options_.persistent ? "yes" : "no"};
  if (options_.persistent) {
    args.insert(args.end(), {"--appendfsync", "always"});
  }
  if (!options_.requirepass.empty()) {
    args.insert(args.end(), {"--requirepass", options_.requirepass});
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string output = dir_ + "/" + std::string(kOutputName);

  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return Error{std::string("fork: ") + std::strerror(errno), errno};
  if (pid == 0) {
    // The child: nothing but async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
    }
    if (in >= 0) ::dup2(in, STDIN_FILENO);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    // A server started from a test must not inherit a blocked or ignored SIGTERM.
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::execv(argv[0], argv.data());
    const char* msg = "exec of redis-server failed\n";
    const ssize_t w = ::write(STDERR_FILENO, msg, std::strlen(msg));
    static_cast<void>(w);
    ::_exit(127);
  }
  pid_ = pid;
  port_ = port;
  return wait_ready(port_taken);
}

Error RedisServer::exited_early(int status, bool& port_taken) {
  const std::string log = dir_ + "/" + std::string(kLogName);
  port_taken = file_contains(log, "Address already in use");
  Error e{"redis-server (" + options_.binary + ", port " + std::to_string(port_) + ", dir " + dir_ +
              ") " + describe_status(status) + " while starting" +
              (port_taken ? " (its port was taken)" : "") + "; the end of its log:\n" + log_tail(),
          ECHILD};
  pid_ = -1;
  return e;
}

Status RedisServer::wait_ready(bool& port_taken) {
  const auto deadline = Clock::now() + options_.start_timeout;
  const std::string expect_pid = "process_id:" + std::to_string(pid_);
  std::string last = "no answer yet";
  for (;;) {
    int status = 0;
    if (reap(WNOHANG, status)) return exited_early(status, port_taken);
    auto client = this->client(std::chrono::milliseconds(500));
    if (client) {
      // PING answers -LOADING while an append-only file is read back: not ready yet.
      auto pong = client->command({"PING"});
      if (pong) {
        auto info = client->command({"INFO", "server"});
        if (info && info->str.find(expect_pid) != std::string::npos) return Ok{};
        // Someone else answers on this port; our server will fail to bind and exit.
        last = info ? "another process answers on the port" : info.error().message;
      } else {
        last = pong.error().message;
      }
    } else {
      last = client.error().message;
    }
    if (Clock::now() >= deadline) {
      const pid_t p = pid_;
      kill();
      return Error{"redis-server (pid " + std::to_string(p) + ", port " + std::to_string(port_) +
                       ") did not answer within " + std::to_string(options_.start_timeout.count()) +
                       " ms (last: " + last + "); killed it. The end of its log:\n" + log_tail(),
                   ETIMEDOUT};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Status RedisServer::stop() {
  if (pid_ <= 0 && exited_pid_ <= 0) return Ok{};
  const std::string name = "redis-server (port " + std::to_string(port_) + ")";
  int status = 0;
  if (running()) {
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + options_.stop_timeout;
    while (!reap(WNOHANG, status)) {
      if (Clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        reap(0, status);
        pid_ = -1;
        return Error{name + " did not exit within " +
                         std::to_string(options_.stop_timeout.count()) +
                         " ms of SIGTERM; killed it with SIGKILL",
                     ETIMEDOUT};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    pid_ = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Ok{};
    return Error{
        name + " " + describe_status(status) + " on SIGTERM; the end of its log:\n" + log_tail(),
        ECHILD};
  }
  exited_pid_ = -1;
  return Error{name + " ended by itself before stop(): it " + describe_status(exited_status_) +
                   "; the end of its log:\n" + log_tail(),
               ECHILD};
}

void RedisServer::kill() {
  exited_pid_ = -1;
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  reap(0, status);
  pid_ = -1;
}

}  // namespace ringfeed::test
