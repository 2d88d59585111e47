#include "io/wakeups.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringfeed::io {

Status Wakeups::open(const std::string& uri) {
  // Polled through the ring and read when ready (non-blocking): an IORING_OP_READ on it
  // would wait in an io-wq worker thread blocked in read(2).
  event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (event_fd_.get() < 0) {
    const int err = errno;
    return Error{"eventfd for " + uri + ": " + std::strerror(err), err};
  }
  return Ok{};
}

void Wakeups::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t w = ::write(event_fd_.get(), &one, sizeof one);
}

bool Wakeups::watch(int fd, std::size_t max) {
  if (fd < 0 || watched_.size() >= max) return false;
  watched_.push_back({fd, false});
  return true;
}

void Wakeups::arm(io_uring* ring) {
  arm_wake(ring);
  for (std::uint32_t i = 0; i < watched_.size(); ++i) {
    Watched& w = watched_[i];
    if (w.armed || w.fd < 0) continue;
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr) return;
    io_uring_prep_poll_add(sqe, w.fd, POLLIN);
    io_uring_sqe_set_data64(sqe, watch_tag_ | i);
    w.armed = true;
    ++in_flight_;
  }
}

void Wakeups::arm_wake(io_uring* ring) {
  if (wake_armed_) return;
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) return;  // armed at the next poll
  io_uring_prep_poll_add(sqe, event_fd_.get(), POLLIN);
  io_uring_sqe_set_data64(sqe, wake_tag_);
  wake_armed_ = true;
  ++in_flight_;
}

bool Wakeups::complete(io_uring* ring, const io_uring_cqe& c) {
  if (c.user_data == wake_tag_) {
    --in_flight_;
    wake_armed_ = false;
    // Drains the counter (non-blocking: nothing to read is no error).
    [[maybe_unused]] const ssize_t n = ::read(event_fd_.get(), &wake_buf_, sizeof wake_buf_);
    arm_wake(ring);
    return true;
  }
  if (is_watch(c.user_data)) {
    --in_flight_;
    const auto i = static_cast<std::uint32_t>(c.user_data & 0xffffffffu);
    if (i < watched_.size()) {
      watched_[i].armed = false;
      if (c.res < 0 && c.res != -EINTR && c.res != -ECANCELED) watched_[i].fd = -1;
    }
    return true;
  }
  return false;
}

void Wakeups::complete_at_close(const io_uring_cqe& c) {
  if ((c.user_data == wake_tag_ || is_watch(c.user_data)) && in_flight_ > 0) --in_flight_;
}

}  // namespace ringfeed::io
