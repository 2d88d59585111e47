// The kernel baselines: a Unix domain stream socket pair and a pipe, carrying messages of
// a fixed size. Made by the parent before the fork; the writer (parent) keeps the write
// end, the reader (child) the read end, and each closes the other's, so a reader that
// dies makes the writer's write fail instead of blocking.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "harness.hpp"
#include "wait.hpp"

namespace ringfeed::bench {

class ByteStream {
 public:
  enum class Kind { unix_socket, pipe };
  // Throws std::runtime_error if the kernel refuses.
  explicit ByteStream(Kind kind);
  ~ByteStream();
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  Kind kind() const { return kind_; }
  int write_fd() const { return fds_[1]; }
  int read_fd() const { return fds_[0]; }
  // Each side calls its own once, at its start.
  void keep_write_end();
  void keep_read_end();

  // Writes every byte (one write(2) unless the kernel takes less); false after rv.fail.
  bool write_all(Rendezvous& rv, const std::byte* data, std::size_t bytes);

 private:
  Kind kind_;
  int fds_[2] = {-1, -1};  // read end, write end
};

const char* to_string(ByteStream::Kind kind);

// The reader's side: cuts the byte stream into messages of `size` bytes. next() waits
// (as `wait` says) until at least one whole message arrived, then hands every whole
// message of that read to on_message(message, now_ns right after the read returned).
class StreamReader {
 public:
  StreamReader(int fd, std::size_t size, Wait wait, std::chrono::nanoseconds spin);

  template <typename OnMessage>
  bool next(Rendezvous& rv, OnMessage&& on_message) {
    std::int64_t t = 0;
    do {
      if (!fill(rv, t)) return false;
    } while (have_ < size_);
    std::size_t off = 0;
    for (; have_ - off >= size_; off += size_) {
      if (!on_message(buffer_.data() + off, t)) return false;
    }
    keep_tail(off);
    return true;
  }

 private:
  // One read after waiting; t = its time. False (after rv.fail) at EOF or on an error.
  bool fill(Rendezvous& rv, std::int64_t& t);
  void keep_tail(std::size_t consumed);

  int fd_;
  std::size_t size_;
  Wait wait_;
  std::chrono::nanoseconds spin_;
  std::vector<std::byte> buffer_;
  std::size_t have_ = 0;
};

}  // namespace ringfeed::bench
