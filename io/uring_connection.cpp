#include "io/uring_connection.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

namespace ringfeed::io {

namespace {

constexpr std::size_t kInitialBuffer = 64 * 1024;
constexpr std::uint64_t kAttemptMask = (std::uint64_t{1} << 48) - 1;

std::int64_t to_ns(std::chrono::milliseconds ms) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(ms).count();
}

}  // namespace

UringConnection::UringConnection(io_uring* ring, std::uint8_t id, ConnectionOptions options)
    : ring_(ring),
      id_(id),
      options_(std::move(options)),
      jitter_(static_cast<std::uint32_t>(::getpid()) * 2654435761u + id) {}

UringConnection::~UringConnection() {
  // The owner drained every operation (in_flight() == 0) or the ring is gone with them.
  if (current_.fd >= 0) ::close(current_.fd);
  for (Attempt& a : retired_) {
    if (a.fd >= 0) ::close(a.fd);
  }
}

std::uint64_t UringConnection::tag(Op op) const {
  return (static_cast<std::uint64_t>(id_) << 56) | ((current_.number & kAttemptMask) << 8) | op;
}

io_uring_sqe* UringConnection::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(ring_);
  if (s == nullptr) {
    // The submission queue is full: submit what is there and take a slot again.
    io_uring_submit(ring_);
    s = io_uring_get_sqe(ring_);
  }
  return s;
}

std::int64_t UringConnection::next_attempt_ns() const {
  return state_ == State::down ? next_attempt_ns_ : INT64_MAX;
}

void UringConnection::maybe_connect(std::int64_t now_ns) {
  if (state_ != State::down || now_ns < next_attempt_ns_) return;
  current_ = Attempt{};
  current_.number = ++attempts_;
  in_start_ = in_end_ = 0;
  sent_ = 0;
  send_in_flight_ = recv_in_flight_ = false;

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options_.port);
  const int gai = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &found);
  if (gai != 0 || found == nullptr) {
    fail("cannot resolve " + options_.host + ": " + ::gai_strerror(gai), now_ns);
    return;
  }
  std::memcpy(&addr_, found->ai_addr, found->ai_addrlen);
  addr_len_ = found->ai_addrlen;
  const int family = found->ai_family;
  ::freeaddrinfo(found);

  current_.fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (current_.fd < 0) {
    fail(std::string("socket: ") + std::strerror(errno), now_ns);
    return;
  }
  const int one = 1;
  ::setsockopt(current_.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  state_ = State::connecting;
  io_uring_sqe* c = sqe();
  io_uring_prep_connect(c, current_.fd, reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  io_uring_sqe_set_data64(c, tag(kConnect));
  c->flags |= IOSQE_IO_LINK;
  const std::int64_t t = to_ns(options_.connect_timeout);
  connect_timeout_ = {.tv_sec = t / 1'000'000'000, .tv_nsec = t % 1'000'000'000};
  io_uring_sqe* to = sqe();
  io_uring_prep_link_timeout(to, &connect_timeout_, 0);
  io_uring_sqe_set_data64(to, tag(kConnectTimeout));
  current_.ops += 2;
  // Submitted now: the timespec of the link timeout is read at submission.
  io_uring_submit(ring_);
}

void UringConnection::pump() {
  if (state_ != State::up) return;
  if (!recv_in_flight_) {
    std::vector<char>& in = current_.in;
    if (in_start_ == in_end_) in_start_ = in_end_ = 0;
    // Room for what the protocol waits for, and at least a quarter of the buffer.
    const std::size_t need = std::max<std::size_t>(want_, in_end_ - in_start_ + kInitialBuffer / 4);
    if (in_start_ > 0 && (in.size() - in_end_ < kInitialBuffer / 4 || in_start_ > in.size() / 2)) {
      std::memmove(in.data(), in.data() + in_start_, in_end_ - in_start_);
      in_end_ -= in_start_;
      in_start_ = 0;
    }
    if (in.size() < std::max(kInitialBuffer, need)) in.resize(std::max(kInitialBuffer, need));
    if (in.size() - in_end_ < kInitialBuffer / 4) in.resize(in.size() * 2);
    io_uring_sqe* r = sqe();
    io_uring_prep_recv(r, current_.fd, in.data() + in_end_, in.size() - in_end_, 0);
    io_uring_sqe_set_data64(r, tag(kRecv));
    ++current_.ops;
    recv_in_flight_ = true;
  }
  if (!send_in_flight_ && !out_.empty()) {
    current_.sending.assign(out_.begin(), out_.end());
    out_.clear();
    sent_ = 0;
    submit_send();
  }
}

void UringConnection::submit_send() {
  io_uring_sqe* s = sqe();
  io_uring_prep_send(s, current_.fd, current_.sending.data() + sent_,
                     current_.sending.size() - sent_, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, tag(kSend));
  ++current_.ops;
  send_in_flight_ = true;
}

UringConnection::Event UringConnection::handle(const io_uring_cqe& cqe, std::int64_t now_ns) {
  const auto op = static_cast<Op>(cqe.user_data & 0xff);
  const std::uint64_t number = (cqe.user_data >> 8) & kAttemptMask;
  if (number != (current_.number & kAttemptMask) || current_.fd < 0) {
    // An operation of an attempt given up: count it, close that socket after its last.
    for (Attempt& a : retired_) {
      if ((a.number & kAttemptMask) == number && a.ops > 0) {
        --a.ops;
        break;
      }
    }
    close_retired();
    return Event::none;
  }
  if (current_.ops > 0) --current_.ops;
  const int res = cqe.res;
  switch (op) {
    case kConnect:
      if (res < 0) {
        fail(res == -ECANCELED ? "connect timed out after " +
                                     std::to_string(options_.connect_timeout.count()) + " ms"
                               : std::string("connect: ") + std::strerror(-res),
             now_ns);
        return Event::failed;
      }
      state_ = State::up;
      failures_ = 0;
      last_error_.clear();
      return Event::connected;
    case kConnectTimeout:
      return Event::none;
    case kSend:
      send_in_flight_ = false;
      if (res < 0) {
        fail(std::string("send: ") + std::strerror(-res), now_ns);
        return Event::failed;
      }
      sent_ += static_cast<std::size_t>(res);
      if (sent_ < current_.sending.size()) {
        submit_send();  // a partial send: the rest
      } else {
        current_.sending.clear();
        sent_ = 0;
      }
      return Event::none;
    case kRecv:
      recv_in_flight_ = false;
      if (res == 0) {
        fail("the server closed the connection", now_ns);
        return Event::failed;
      }
      if (res < 0) {
        fail(std::string("receive: ") + std::strerror(-res), now_ns);
        return Event::failed;
      }
      in_end_ += static_cast<std::size_t>(res);
      return Event::received;
  }
  return Event::none;
}

void UringConnection::fail(std::string why, std::int64_t now_ns) {
  last_error_ = std::move(why);
  ++failures_;
  retire();
  state_ = State::down;
  out_.clear();
  in_start_ = in_end_ = 0;
  want_ = 0;
  sent_ = 0;
  send_in_flight_ = recv_in_flight_ = false;
  // Exponential backoff with jitter: half the delay fixed, half random, so that many
  // fetchers that lost the same server do not come back in step.
  const std::int64_t min_ns = to_ns(options_.backoff_min);
  const std::int64_t max_ns = std::max(min_ns, to_ns(options_.backoff_max));
  std::int64_t delay = min_ns;
  for (unsigned i = 1; i < failures_ && delay < max_ns; ++i) delay *= 2;
  delay = std::min(delay, max_ns);
  const std::int64_t half = delay / 2;
  next_attempt_ns_ =
      now_ns + half +
      (half > 0 ? static_cast<std::int64_t>(jitter_() % static_cast<std::uint64_t>(half)) : 0);
}

void UringConnection::retire() {
  if (current_.fd >= 0) {
    // Ends the operations in flight (a receive returns 0, a send fails) soon.
    ::shutdown(current_.fd, SHUT_RDWR);
    retired_.push_back(std::move(current_));
  }
  current_ = Attempt{.number = current_.number};
  close_retired();
}

void UringConnection::close_retired() {
  std::erase_if(retired_, [](Attempt& a) {
    if (a.ops > 0) return false;
    if (a.fd >= 0) ::close(a.fd);
    return true;
  });
}

std::size_t UringConnection::in_flight() const {
  std::size_t n = current_.ops;
  for (const Attempt& a : retired_) n += a.ops;
  return n;
}

void UringConnection::shutdown_all() {
  if (current_.fd >= 0) ::shutdown(current_.fd, SHUT_RDWR);
  for (const Attempt& a : retired_) {
    if (a.fd >= 0) ::shutdown(a.fd, SHUT_RDWR);
  }
}

}  // namespace ringfeed::io
