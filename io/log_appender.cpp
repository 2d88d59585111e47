#include "io/log_appender.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ringfeed::io {

namespace {

Error os_error(const std::string& what, const std::string& path, int err) {
  return Error{what + " " + path + ": " + std::strerror(err), err};
}

// Holds flock(LOCK_EX) for one batch.
class FileLock {
 public:
  explicit FileLock(int fd) : fd_(fd) {}
  int lock() {
    int rc;
    do {
      rc = ::flock(fd_, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return errno;
    held_ = true;
    return 0;
  }
  ~FileLock() {
    if (held_) ::flock(fd_, LOCK_UN);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
  bool held_ = false;
};

}  // namespace

Result<LogAppender> LogAppender::open(const std::string& path, gid_t group) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return os_error("cannot open log file", path, errno);
  LogAppender appender(path, fd);
  struct stat st {};
  if (group != kNoGroup && ::fstat(fd, &st) == 0 && st.st_uid == ::geteuid() &&
      (::fchown(fd, static_cast<uid_t>(-1), group) != 0 || ::fchmod(fd, 0660) != 0)) {
    return os_error("cannot share log file with its group", path, errno);
  }
  return appender;
}

LogAppender::LogAppender(LogAppender&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      buf_(std::move(other.buf_)) {}

LogAppender& LogAppender::operator=(LogAppender&& other) noexcept {
  if (this != &other) {
    close_fd();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    buf_ = std::move(other.buf_);
  }
  return *this;
}

LogAppender::~LogAppender() {
  close_fd();
}

void LogAppender::close_fd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

namespace {

// Writes all of [data, data+n) at the end of `fd`, which the caller holds locked and
// which was `start` bytes long. On failure, cuts the file back to `start`.
Result<Appended> write_locked(int fd, const std::string& path, std::uint64_t start,
                              const std::byte* data, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, n - done);
    if (w > 0) {
      done += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    const int err = w < 0 ? errno : EIO;  // 0 bytes for a non-empty write: no progress
    std::string msg = "append to " + path + " failed after " + std::to_string(done) + " of " +
                      std::to_string(n) + " bytes: " + std::strerror(err);
    if (done > 0) {
      if (::ftruncate(fd, static_cast<off_t>(start)) == 0) {
        msg += "; cut back to " + std::to_string(start) + " bytes";
      } else {
        msg += "; cutting it back to " + std::to_string(start) + " bytes failed too (" +
               std::strerror(errno) + "): the file ends in a partial record at byte offset " +
               std::to_string(start);
      }
    }
    return Error{std::move(msg), err};
  }
  return Appended{start, n};
}

}  // namespace

Result<Appended> LogAppender::append(std::span<const RecordView> records) {
  if (fd_ < 0) return Error{"append to " + path_ + ": appender is closed", EBADF};
  std::size_t total = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const std::size_t n = encoded_size(records[i]);
    if (n == 0) {
      const EncodeResult e = encode(records[i], {});
      return Error{"append to " + path_ + ": record " + std::to_string(i) +
                       " of the batch: " + to_string(e.status),
                   EINVAL};
    }
    total += n;
  }
  if (total == 0) return Appended{0, 0};
  if (buf_.size() < total) buf_.resize(total);

  FileLock lock(fd_);
  if (const int err = lock.lock(); err != 0) return os_error("cannot lock", path_, err);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return os_error("cannot stat", path_, errno);
  const auto start = static_cast<std::uint64_t>(st.st_size);

  std::size_t pos = 0;
  for (const RecordView& r : records) {
    RecordView placed = r;
    if (placed.kind == RecordKind::log) placed.upstream_offset = start + pos;
    const EncodeResult e = encode(placed, {buf_.data() + pos, total - pos});
    pos += e.size;  // sizes were checked above, so every encode succeeds
  }
  return write_locked(fd_, path_, start, buf_.data(), total);
}

Result<Appended> LogAppender::append_encoded(std::span<const std::byte> bytes) {
  if (fd_ < 0) return Error{"append to " + path_ + ": appender is closed", EBADF};
  if (bytes.empty()) return Appended{0, 0};
  FileLock lock(fd_);
  if (const int err = lock.lock(); err != 0) return os_error("cannot lock", path_, err);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return os_error("cannot stat", path_, errno);
  return write_locked(fd_, path_, static_cast<std::uint64_t>(st.st_size), bytes.data(),
                      bytes.size());
}

Status LogAppender::sync() {
  if (fd_ < 0) return Error{"fsync " + path_ + ": appender is closed", EBADF};
  int rc;
  do {
    rc = ::fsync(fd_);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return os_error("cannot fsync", path_, errno);
  return Ok{};
}

}  // namespace ringfeed::io
