// What ends a networked source's poll early when no records came: wake(), from any thread
// or a signal handler, writes an eventfd that the source reads on its io_uring; and each
// descriptor given to watch_readable() gets a one-shot POLLIN there, armed again by the
// next poll after it fired (so level-triggered). The Redis and Kafka sources own one each.
//
// The source chooses the user_data tags, so that they do not collide with its own: the
// eventfd read carries `wake_tag`; a watch carries the top byte of `watch_tag` and its
// index in the low 32 bits. The source routes its completions here (complete()) and
// submits what arm() queued.
//
// One thread (the source's) calls everything except wake().
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/unique_fd.hpp"
#include "shm/result.hpp"

namespace ringfeed::io {

class Wakeups {
 public:
  Wakeups(std::uint64_t wake_tag, std::uint64_t watch_tag)
      : wake_tag_(wake_tag), watch_tag_(watch_tag) {}
  // The eventfd read writes into wake_buf_: the object stays where it is.
  Wakeups(const Wakeups&) = delete;
  Wakeups& operator=(const Wakeups&) = delete;

  // Creates the eventfd; an error names `uri`, the source's.
  Status open(const std::string& uri);

  // Makes the source's poll that is waiting (or the next one) return. Async-signal-safe.
  void wake();

  // Watches `fd` from the next arm() on. False if `fd` < 0 or `max` are watched already.
  bool watch(int fd, std::size_t max);

  // Queues the eventfd read and a poll of every watched descriptor that has none in
  // flight; what finds no free slot in `ring` is queued at the next call. The source
  // submits.
  void arm(io_uring* ring);

  // A completion of the source's ring: true if it is the eventfd read (queued again at
  // once) or a watch (queued again by the next arm(); a descriptor that failed for good
  // is no longer watched), which both end the poll; false if it is not one of these.
  bool complete(io_uring* ring, const io_uring_cqe& c);

  // In the source's destructor, once it cancelled everything: counts a completion of the
  // eventfd read or a watch, and queues nothing again.
  void complete_at_close(const io_uring_cqe& c);

  // The eventfd read and the watches in flight: the source's destructor waits for them.
  std::size_t in_flight() const { return in_flight_; }

 private:
  struct Watched {
    int fd = -1;
    bool armed = false;
  };

  void arm_wake(io_uring* ring);
  bool is_watch(std::uint64_t user_data) const { return user_data >> 56 == watch_tag_ >> 56; }

  std::uint64_t wake_tag_;
  std::uint64_t watch_tag_;
  UniqueFd event_fd_;
  std::uint64_t wake_buf_ = 0;
  bool wake_armed_ = false;
  std::vector<Watched> watched_;
  std::size_t in_flight_ = 0;
};

}  // namespace ringfeed::io
