#include "byte_stream.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ringfeed::bench {

const char* to_string(ByteStream::Kind kind) {
  return kind == ByteStream::Kind::unix_socket ? "unix socket" : "pipe";
}

ByteStream::ByteStream(Kind kind) : kind_(kind) {
  int fds[2];
  // socketpair gives two connected ends; the reader reads fds[0], the writer writes fds[1].
  const int rc = kind == Kind::unix_socket
                     ? ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)
                     : ::pipe2(fds, O_CLOEXEC);
  if (rc != 0) {
    throw std::runtime_error(std::string(to_string(kind)) + ": " + std::strerror(errno));
  }
  fds_[0] = fds[0];
  fds_[1] = fds[1];
}

ByteStream::~ByteStream() {
  for (int& fd : fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

void ByteStream::keep_write_end() {
  if (fds_[0] >= 0) ::close(fds_[0]);
  fds_[0] = -1;
}

void ByteStream::keep_read_end() {
  if (fds_[1] >= 0) ::close(fds_[1]);
  fds_[1] = -1;
}

bool ByteStream::write_all(Rendezvous& rv, const std::byte* data, std::size_t bytes) {
  while (bytes > 0) {
    // MSG_NOSIGNAL: a reader gone is an error to report, not a SIGPIPE (the pipe's
    // writer ignores SIGPIPE, see latency_main).
    const ssize_t n = kind_ == Kind::unix_socket ? ::send(fds_[1], data, bytes, MSG_NOSIGNAL)
                                                 : ::write(fds_[1], data, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rv.fail(std::string(to_string(kind_)) + ": write: " + std::strerror(errno));
      return false;
    }
    data += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

StreamReader::StreamReader(int fd, std::size_t size, Wait wait, std::chrono::nanoseconds spin)
    : fd_(fd),
      size_(size),
      wait_(wait),
      spin_(spin),
      buffer_(std::max<std::size_t>(65536, 4 * size)) {}

bool StreamReader::fill(Rendezvous& rv, std::int64_t& t) {
  // Spinning: ask the kernel how much is queued (FIONREAD, one syscall, as a non-blocking
  // read would be) until something is, or the spin time is over; then a read that does
  // not block, or sleeps in the kernel.
  if (wait_ != Wait::sleep) {
    const std::int64_t deadline = now_ns() + spin_.count();
    int queued = 0;
    while (::ioctl(fd_, FIONREAD, &queued) == 0 && queued == 0 && now_ns() < deadline) {
    }
  }
  ssize_t n;
  do {
    n = ::read(fd_, buffer_.data() + have_, buffer_.size() - have_);
  } while (n < 0 && errno == EINTR);
  t = now_ns();
  if (n <= 0) {
    rv.fail(std::string("read: ") +
            (n == 0 ? "the writer closed the stream" : std::strerror(errno)));
    return false;
  }
  have_ += static_cast<std::size_t>(n);
  return true;
}

void StreamReader::keep_tail(std::size_t consumed) {
  std::memmove(buffer_.data(), buffer_.data() + consumed, have_ - consumed);
  have_ -= consumed;
}

}  // namespace ringfeed::bench
