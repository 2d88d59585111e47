#include "io/uring.hpp"

#include <cerrno>
#include <cstring>

namespace ringfeed::io {

Uring::~Uring() {
  if (ready_) io_uring_queue_exit(&ring_);
}

int Uring::init(unsigned entries) {
  if (ready_) return -EALREADY;
  int rc = io_uring_queue_init(entries, &ring_, 0);
  if (rc < 0) return rc;
  ready_ = true;
  return 0;
}

int Uring::read_at(int fd, void* buf, std::size_t len, std::uint64_t offset) {
  if (!ready_) return -EBADFD;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return -EBUSY;
  io_uring_prep_read(sqe, fd, buf, static_cast<unsigned>(len), offset);
  int rc = io_uring_submit(&ring_);
  if (rc < 0) return rc;
  io_uring_cqe* cqe = nullptr;
  do {
    rc = io_uring_wait_cqe(&ring_, &cqe);
  } while (rc == -EINTR);
  if (rc < 0) return rc;
  const int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  return res;
}

std::string Uring::describe_init_error(int err) {
  std::string s = "io_uring setup failed: ";
  s += std::strerror(-err);
  if (err == -EPERM) s += " (is kernel.io_uring_disabled set?)";
  if (err == -ENOMEM) s += " (locked-memory limit too low? see ulimit -l)";
  return s;
}

}  // namespace ringfeed::io
