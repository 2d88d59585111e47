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
