// The Boost.Interprocess message_queue baseline: fixed-size messages copied into one
// shared segment under a process-shared mutex, with condition variables for a full or
// empty queue (a reader on an empty queue sleeps in the kernel).
#pragma once

#include <boost/interprocess/ipc/message_queue.hpp>

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "harness.hpp"

namespace ringfeed::bench {

// One 64-byte message, the same size as the ringfeed values it is compared with.
struct MqMessage {
  std::uint64_t seq;
  std::int64_t timestamp_ns;
  std::byte pad[48];
};
static_assert(sizeof(MqMessage) == 64);

// Made by the parent before the fork and handed to both sides.
inline std::string mq_name(const char* tag, std::uint64_t run) {
  return "ringfeed-bench." + std::to_string(::getpid()) + "." + tag + std::to_string(run) + ".mq";
}

// The writer's side: creates the queue (replacing a stale one of the same name) and
// removes its name when done; the reader opens it by name.
class OwnedQueue {
 public:
  OwnedQueue(const std::string& name, std::size_t depth,
             std::size_t message_size = sizeof(MqMessage))
      : name_(fresh(name)),
        queue_(boost::interprocess::create_only, name_.c_str(), depth, message_size) {
    watch_segment(name_);
  }
  ~OwnedQueue() { boost::interprocess::message_queue::remove(name_.c_str()); }
  OwnedQueue(const OwnedQueue&) = delete;
  OwnedQueue& operator=(const OwnedQueue&) = delete;
  boost::interprocess::message_queue& queue() { return queue_; }

 private:
  static std::string fresh(const std::string& name) {
    boost::interprocess::message_queue::remove(name.c_str());
    return name;
  }
  std::string name_;
  boost::interprocess::message_queue queue_;
};

// The reader's side: opens the queue by name; nullptr (after rv.fail) if it cannot.
inline std::unique_ptr<boost::interprocess::message_queue> open_queue(Rendezvous& rv,
                                                                      const std::string& name) {
  try {
    return std::make_unique<boost::interprocess::message_queue>(boost::interprocess::open_only,
                                                                name.c_str());
  } catch (const boost::interprocess::interprocess_exception& e) {
    rv.fail("opening message_queue " + name + ": " + e.what());
    return nullptr;
  }
}

// Receives one message; false if it was not a whole MqMessage.
inline bool mq_receive(boost::interprocess::message_queue& q, MqMessage& m) {
  std::size_t got = 0;
  unsigned int priority = 0;
  q.receive(&m, sizeof m, got, priority);
  return got == sizeof m;
}

// Receives one message of exactly `size` bytes, waiting as `spin` says: polls with
// try_receive for that long, then sleeps in receive. False if the message was shorter.
inline bool mq_receive_bytes(boost::interprocess::message_queue& q, std::byte* data,
                             std::size_t size, std::chrono::nanoseconds spin) {
  std::size_t got = 0;
  unsigned int priority = 0;
  if (spin.count() > 0) {
    const std::int64_t deadline = now_ns() + spin.count();
    do {
      if (q.try_receive(data, size, got, priority)) return got == size;
    } while (now_ns() < deadline);
  }
  q.receive(data, size, got, priority);
  return got == size;
}

}  // namespace ringfeed::bench
