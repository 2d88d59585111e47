#include "tests/support/kafka_mock.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/test_support.hpp"

#ifndef RINGFEED_KAFKA_MOCK_CLUSTER_BIN
#error "RINGFEED_KAFKA_MOCK_CLUSTER_BIN: the path of the kafka_mock_cluster program"
#endif

namespace ringfeed::test {

namespace {

using Clock = std::chrono::steady_clock;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

}  // namespace

const char* kafka_mock_cluster_binary() {
  return RINGFEED_KAFKA_MOCK_CLUSTER_BIN;
}

Result<std::vector<BrokerAddress>> parse_bootstrap(std::string_view bootstrap) {
  std::vector<BrokerAddress> out;
  while (!bootstrap.empty()) {
    const std::size_t comma = bootstrap.find(',');
    const std::string_view part = bootstrap.substr(0, comma);
    bootstrap = comma == std::string_view::npos ? std::string_view() : bootstrap.substr(comma + 1);
    const std::size_t colon = part.rfind(':');
    unsigned port = 0;
    const char* end = part.data() + part.size();
    if (colon == std::string_view::npos || colon == 0 ||
        std::from_chars(part.data() + colon + 1, end, port).ptr != end || port == 0 ||
        port > 65535) {
      return Error{"bad broker address '" + std::string(part) + "' (HOST:PORT expected)", EINVAL};
    }
    out.push_back({std::string(part.substr(0, colon)), static_cast<std::uint16_t>(port)});
  }
  if (out.empty()) return Error{"no broker address", EINVAL};
  return out;
}

// --- KafkaMockCluster --------------------------------------------------------------

KafkaMockCluster::~KafkaMockCluster() {
  static_cast<void>(stop());
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool KafkaMockCluster::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string KafkaMockCluster::log_tail(std::size_t lines) const {
  if (dir_.empty()) return {};
  std::istringstream in(read_file(dir_ + "/stderr"));
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += all[i] + "\n";
  }
  return out;
}

Status KafkaMockCluster::start(const KafkaMockOptions& options) {
  if (pid_ > 0) {
    return Error{"the mock cluster already runs (pid " + std::to_string(pid_) + ")", EBUSY};
  }
  options_ = options;
  acknowledged_ = 0;
  if (dir_.empty()) {
    std::string templ =
        (std::filesystem::temp_directory_path() / "ringfeed-kafka-mock-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      return Error{"mkdtemp " + templ + ": " + std::strerror(errno), errno};
    }
    dir_ = templ;
  }
  std::vector<std::string> args = {"--brokers", std::to_string(options.brokers), "--partitions",
                                   std::to_string(options.partitions)};
  for (const std::string& t : options.topics) args.insert(args.end(), {"--topic", t});
  const std::string out = dir_ + "/stdout";
  const std::string err = dir_ + "/stderr";
  pid_ = spawn_program(kafka_mock_cluster_binary(), args, "", out, err);
  if (pid_ < 0) return Error{std::string("fork: ") + std::strerror(errno), errno};

  const auto deadline = Clock::now() + options.start_timeout;
  for (;;) {
    const std::string printed = read_file(out);
    const std::size_t newline = printed.find('\n');
    if (newline != std::string::npos) {
      bootstrap_ = printed.substr(0, newline);
      auto parsed = parse_bootstrap(bootstrap_);
      if (!parsed) {
        static_cast<void>(stop());
        return Error{"kafka_mock_cluster printed '" + bootstrap_ + "': " + parsed.error().message,
                     EPROTO};
      }
      brokers_ = std::move(*parsed);
      return Ok{};
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Error{"kafka_mock_cluster " + describe_status(status) + " before printing its " +
                       "address; its stderr:\n" + log_tail(),
                   ECHILD};
    }
    if (Clock::now() >= deadline) {
      static_cast<void>(stop());
      return Error{"kafka_mock_cluster printed no address within " +
                       std::to_string(options.start_timeout.count()) + " ms",
                   ETIMEDOUT};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Status KafkaMockCluster::move_leaders() {
  return signal_and_wait(SIGUSR1, "leaders moved");
}

Status KafkaMockCluster::push_errors() {
  return signal_and_wait(SIGUSR2, "errors pushed");
}

// Signals the program and waits for its next acknowledgement line (the first line is the
// bootstrap address, then one line per fault).
Status KafkaMockCluster::signal_and_wait(int sig, std::string_view what) {
  if (pid_ <= 0) return Error{"the mock cluster does not run", ESRCH};
  ::kill(pid_, sig);
  const std::size_t want = ++acknowledged_ + 1;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    const std::string printed = read_file(dir_ + "/stdout");
    if (static_cast<std::size_t>(std::count(printed.begin(), printed.end(), '\n')) >= want) {
      return Ok{};
    }
    if (Clock::now() >= deadline) {
      return Error{"kafka_mock_cluster did not say '" + std::string(what) + "' within 10 s",
                   ETIMEDOUT};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Status KafkaMockCluster::stop() {
  if (pid_ <= 0) return Ok{};
  const pid_t pid = std::exchange(pid_, -1);
  ::kill(pid, SIGTERM);
  const auto deadline = Clock::now() + options_.stop_timeout;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR)
      return Error{"waitpid: " + std::string(std::strerror(errno)), errno};
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Error{"kafka_mock_cluster did not stop within " +
                       std::to_string(options_.stop_timeout.count()) + " ms of SIGTERM (killed)",
                   ETIMEDOUT};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error{
        "kafka_mock_cluster " + describe_status(status) + " at SIGTERM; its stderr:\n" + log_tail(),
        ECHILD};
  }
  return Ok{};
}

// --- KafkaClient -------------------------------------------------------------------

Result<KafkaClient> KafkaClient::connect(const BrokerAddress& broker,
                                         std::chrono::milliseconds timeout) {
  KafkaClient c;
  c.broker_ = broker;
  c.timeout_ = timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(broker.port);
  if (const int gai = ::getaddrinfo(broker.host.c_str(), port.c_str(), &hints, &found); gai != 0) {
    return Error{"cannot resolve " + broker.to_string() + ": " + ::gai_strerror(gai), EHOSTUNREACH};
  }
  int err = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      c.fd_ = fd;
      break;
    }
    err = errno;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (c.fd_ < 0) {
    return Error{"cannot connect to " + broker.to_string() + ": " + std::strerror(err), err};
  }
  const int one = 1;
  ::setsockopt(c.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return c;
}

KafkaClient::KafkaClient(KafkaClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      broker_(std::move(other.broker_)),
      timeout_(other.timeout_),
      next_correlation_id_(other.next_correlation_id_),
      in_(std::move(other.in_)),
      last_body_(std::move(other.last_body_)) {}

KafkaClient& KafkaClient::operator=(KafkaClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    broker_ = std::move(other.broker_);
    timeout_ = other.timeout_;
    next_correlation_id_ = other.next_correlation_id_;
    in_ = std::move(other.in_);
    last_body_ = std::move(other.last_body_);
  }
  return *this;
}

KafkaClient::~KafkaClient() {
  if (fd_ >= 0) ::close(fd_);
}

Status KafkaClient::send_all(std::string_view bytes, std::string_view what) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{"sending " + std::string(what) + " to " + broker_.to_string() + ": " +
                       std::strerror(errno),
                   errno};
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return Ok{};
}

Status KafkaClient::read_more(std::string_view what) {
  pollfd p{fd_, POLLIN, 0};
  const int ready = ::poll(&p, 1, static_cast<int>(timeout_.count()));
  if (ready == 0) {
    return Error{"no response to " + std::string(what) + " from " + broker_.to_string() +
                     " within " + std::to_string(timeout_.count()) + " ms",
                 ETIMEDOUT};
  }
  if (ready < 0) return Error{"poll: " + std::string(std::strerror(errno)), errno};
  char buf[64 * 1024];
  const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
  if (n == 0) {
    return Error{
        broker_.to_string() + " closed the connection before answering " + std::string(what),
        ECONNRESET};
  }
  if (n < 0) {
    if (errno == EINTR) return Ok{};
    return Error{"receiving " + std::string(what) + " from " + broker_.to_string() + ": " +
                     std::strerror(errno),
                 errno};
  }
  in_.append(buf, static_cast<std::size_t>(n));
  return Ok{};
}

Result<std::string> KafkaClient::exchange(std::string_view request, std::int32_t correlation_id,
                                          std::string_view what) {
  if (fd_ < 0) return Error{"not connected", ENOTCONN};
  if (auto s = send_all(request, what); !s) return s.error();
  for (;;) {
    const io::kafka::ResponseFrame f = io::kafka::read_response_frame(in_);
    if (f.status == io::kafka::FrameStatus::error) {
      return Error{std::string(what) + " from " + broker_.to_string() + ": " + f.error, EPROTO};
    }
    if (f.status == io::kafka::FrameStatus::complete) {
      if (f.correlation_id != correlation_id) {
        return Error{std::string(what) + " from " + broker_.to_string() + ": correlation id " +
                         std::to_string(f.correlation_id) + ", expected " +
                         std::to_string(correlation_id),
                     EPROTO};
      }
      last_body_.assign(f.body);
      in_.erase(0, f.size);
      return last_body_;
    }
    if (auto s = read_more(what); !s) return s.error();
  }
}

}  // namespace ringfeed::test
