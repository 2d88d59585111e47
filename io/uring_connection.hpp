// One TCP connection of a networked source, driven through the source's io_uring: a
// connect with a timeout, a send queue (one send in flight, partial sends resumed), one
// receive in flight into a buffer that grows, and reconnects with exponential backoff and
// jitter. The protocol on top (RESP for Redis, later Kafka's) reads received() and says
// how much it consumed; it never sees the socket.
//
// Every operation's user_data is tag(op): the connection's id (its owner routes the
// completion with id_of) and the attempt it belongs to. A failed attempt is shut down and
// retired: its descriptor is closed once the last of its operations completed, so the
// kernel never writes into a buffer after it was moved, and completions of an attempt
// that was given up are only counted.
//
// One thread (the source's) calls everything.
#pragma once

#include <liburing.h>
#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace ringfeed::io {

struct ConnectionOptions {
  std::string host;  // a name or a numeric address, resolved at every attempt
  std::uint16_t port = 0;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds backoff_min{100};  // the delay after the first failure
  std::chrono::milliseconds backoff_max{5000};
};

class UringConnection {
 public:
  enum class State { down, connecting, up };
  enum class Event { none, connected, received, failed };

  // `id` routes completions back to this connection (id_of); the owner chooses it.
  UringConnection(io_uring* ring, std::uint8_t id, ConnectionOptions options);
  ~UringConnection();
  UringConnection(const UringConnection&) = delete;
  UringConnection& operator=(const UringConnection&) = delete;

  static std::uint8_t id_of(std::uint64_t user_data) {
    return static_cast<std::uint8_t>(user_data >> 56);
  }

  State state() const { return state_; }
  bool up() const { return state_ == State::up; }
  // Why the last attempt failed (empty before any failure).
  const std::string& last_error() const { return last_error_; }
  // Failures since the connection was last up.
  unsigned failures() const { return failures_; }

  // Starts an attempt when down and the backoff has passed; the owner submits.
  void maybe_connect(std::int64_t now_ns);
  // When maybe_connect will next start one (INT64_MAX when not down).
  std::int64_t next_attempt_ns() const;

  // Bytes to send: append, then pump().
  std::string& out() { return out_; }
  // Received bytes not yet consumed, and how many the protocol consumed.
  std::span<const char> received() const {
    return {current_.in.data() + in_start_, in_end_ - in_start_};
  }
  void consume(std::size_t n) { in_start_ += n; }
  // Bytes the protocol needs before it can go on (a hint for the buffer's size).
  void expect(std::size_t bytes) { want_ = bytes; }

  // While up: a receive in flight (the buffer compacted or grown first), and a send of
  // what out() holds if none is in flight. The owner submits.
  void pump();

  // Handles a completion of this connection. `received`: new bytes are in received();
  // `connected`: up now; `failed`: the attempt ended (last_error says why), everything
  // queued or received is dropped, the next attempt waits for the backoff.
  Event handle(const io_uring_cqe& cqe, std::int64_t now_ns);

  // Gives the current attempt up (a protocol error, a reply that never came).
  void fail(std::string why, std::int64_t now_ns);

  // Operations submitted and not completed, of every attempt: the owner waits for these
  // before the ring goes away.
  std::size_t in_flight() const;
  // Shuts every attempt down so that their operations complete soon.
  void shutdown_all();

 private:
  enum Op : std::uint8_t { kConnect = 1, kConnectTimeout = 2, kSend = 3, kRecv = 4 };
  // One attempt's socket and the buffers its operations use: a retired attempt keeps
  // them until its last operation completed (vectors: moving one keeps its bytes where
  // they are).
  struct Attempt {
    int fd = -1;
    std::uint64_t number = 0;
    std::size_t ops = 0;  // submitted, not completed
    std::vector<char> in;
    std::vector<char> sending;  // the bytes of the send in flight
  };

  std::uint64_t tag(Op op) const;
  io_uring_sqe* sqe();
  void submit_send();
  void retire();
  void close_retired();

  io_uring* ring_;
  std::uint8_t id_;
  ConnectionOptions options_;
  State state_ = State::down;
  Attempt current_;
  std::vector<Attempt> retired_;
  std::uint64_t attempts_ = 0;
  std::int64_t next_attempt_ns_ = 0;
  unsigned failures_ = 0;
  std::string last_error_;
  std::minstd_rand jitter_;
  sockaddr_storage addr_{};  // the connect in flight reads these
  socklen_t addr_len_ = 0;
  __kernel_timespec connect_timeout_{};

  std::string out_;       // queued, not yet handed to a send
  std::size_t sent_ = 0;  // of current_.sending, confirmed sent
  bool send_in_flight_ = false;
  std::size_t in_start_ = 0;
  std::size_t in_end_ = 0;
  std::size_t want_ = 0;
  bool recv_in_flight_ = false;
};

}  // namespace ringfeed::io
