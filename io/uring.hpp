// One io_uring instance (liburing), owned. All upstream I/O of the fetcher goes through
// one of these. Functions return 0 or -errno, like liburing itself.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace ringfeed::io {

class Uring {
 public:
  Uring() = default;
  ~Uring();
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;

  // Sets up a ring with `entries` submission slots. -errno on failure (for example
  // -EPERM when io_uring is disabled by kernel.io_uring_disabled).
  int init(unsigned entries);
  bool ready() const { return ready_; }
  io_uring* get() { return &ring_; }

  // Reads up to `len` bytes at `offset` of `fd` and waits for the result: bytes read or
  // -errno. The building block of the local-log source's tail reads.
  int read_at(int fd, void* buf, std::size_t len, std::uint64_t offset);

  // Human-readable reason for an init failure.
  static std::string describe_init_error(int err);

 private:
  io_uring ring_{};
  bool ready_ = false;
};

}  // namespace ringfeed::io
