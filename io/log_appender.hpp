// Appends framed records (or lines) to one log file: a partition log DIR/P.log or the
// dead-letter log. Several appenders, in any number of processes, may append to the
// same file at once; each batch lands whole and contiguous.
//
// How: the file is opened O_APPEND (created 0600), and every batch is written under an
// exclusive flock(2) on the file. The lock makes the batch contiguous even when one
// write() does not take it all (a signal, a batch over the kernel's 2 GiB per-call cap),
// and it makes the file size read under it the position the batch will land at, which
// is how a log record learns its upstream_offset (see framed_record.hpp). O_APPEND alone
// would keep single writes from interleaving, but not give the position.
//
// A failed write is undone under the same lock (the file is truncated back to where the
// batch started), so a live appender never leaves a partial record behind; the error
// says if even that failed. A process killed inside write() can leave a partial record
// at the end: readers then report it as corrupt at its offset (never skip it).
//
// Each process opens its own appender: a flock belongs to the open file description,
// which a forked child would share with its parent.
//
// Errors are Results whose message names the path; Error::code is the errno.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "io/framed_record.hpp"
#include "shm/result.hpp"

namespace ringfeed::io {

struct Appended {
  std::uint64_t offset = 0;  // file position of the first byte written
  std::uint64_t bytes = 0;   // bytes written (the batch, whole)
};

class LogAppender {
 public:
  // No group: the file is its creator's alone (LogAppender::open).
  static constexpr gid_t kNoGroup = static_cast<gid_t>(-1);

  // Opens `path` for appending, creating it with mode 0600 if missing. With a `group`, a
  // file this user owns is given to that group, mode 0660 (whatever the umask), so that
  // its members' processes append to it too; a file of another user is left as it is.
  static Result<LogAppender> open(const std::string& path, gid_t group = kNoGroup);

  LogAppender(LogAppender&& other) noexcept;
  LogAppender& operator=(LogAppender&& other) noexcept;
  LogAppender(const LogAppender&) = delete;
  LogAppender& operator=(const LogAppender&) = delete;
  ~LogAppender();

  // Encodes `records` and appends them with one write(). A log record's upstream_offset
  // is set to its byte position in the file (the value passed in is ignored); a
  // dead-letter record keeps the one it has. Nothing is written if any record is
  // refused by encode (the error names which).
  Result<Appended> append(std::span<const RecordView> records);

  // Appends bytes already in the file's format with one write(): encoded dead-letter
  // records, or '\n'-terminated lines for a `lines` file. The caller vouches for them.
  Result<Appended> append_encoded(std::span<const std::byte> bytes);

  // fsync(2): what was appended so far survives a crash of the host.
  Status sync();

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

 private:
  LogAppender(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  void close_fd();

  std::string path_;
  int fd_ = -1;
  std::vector<std::byte> buf_;  // reused between appends
};

}  // namespace ringfeed::io
