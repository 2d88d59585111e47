// The local-log source. All of its I/O goes through one io_uring; what can be in flight
// there, tagged in user_data as (kind << 32) | partition:
//
//   kind 1, file read   at most one per partition: IORING_OP_READ_FIXED into the
//                       partition's registered buffer (buffer index = partition), or
//                       IORING_OP_READ into a heap buffer while the partition holds a
//                       record larger than its registered buffer. Submitted when the
//                       partition is neither paused nor stopped, its file exists, and the
//                       file may hold bytes not read yet: at open, after a read that
//                       returned data, after an inotify event for the file. A read that
//                       returns 0 (end of file) ends that until the next event.
//   kind 2, inotify     one IORING_OP_POLL_ADD (POLLIN, one shot) on the inotify
//                       descriptor, which watches DIR (files modified, created, removed,
//                       renamed); when it completes, the events are read with read(2)
//                       (non-blocking) until none is left, and the poll is armed again.
//                       No busy polling and no timer, and no io-wq thread: a read
//                       submitted on the descriptor would wait in a worker thread blocked
//                       in read(2), a thread switch per event.
//   kind 3, wake        the same on the eventfd that wake() writes (its counter drained).
//   kind 4, cancel      only in the destructor: cancels whatever is still in flight.
//   kind 5, watch       one IORING_OP_POLL_ADD (POLLIN, one shot) per descriptor given to
//                       watch_readable(), tagged with its index there; its completion
//                       ends the poll like a wake, and the next poll arms it again.
//
// No lost wake-up: every inotify event for a file bumps the partition's `changes`; a read
// remembers the value when it is submitted, and reaching the end of the file stops
// reading only if no event came since. So an event handled before the read's completion
// (both can sit in one batch of completions) still leads to another read.
//
// The window: buf[begin, end) holds the bytes [base + begin, base + end) of the file,
// read but not handed out yet; everything before base + begin was handed out, so
// fetched == base + begin. A buffer is moved or replaced only in prepare_window(), when
// no read into it is in flight and no sink holds a view into it.
//
// Records are decoded in place in the window, in batches of up to kBatchRecords, and
// handed to the sink with one call per batch. A framed log record is checked field by
// field here, as decode() does, and the CRCs of a batch are computed together
// (crc32c_each); whatever the batch does not take (the end of the bytes read, a damaged
// record, a dead-letter record) goes through decode() itself, so that what is handed out
// and every error message are decode()'s.
#include "io/local_log_source.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <poll.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/crc32c.hpp"
#include "io/framed_record.hpp"
#include "io/unique_fd.hpp"
#include "io/uring.hpp"

namespace ringfeed::io {

const char* to_string(LogFormat f) {
  switch (f) {
    case LogFormat::framed:
      return "framed";
    case LogFormat::lines:
      return "lines";
  }
  return "unknown";
}

namespace {

// As many partitions as the fetcher's status segment describes (shm/fetcher_layout.hpp);
// io knows nothing of shm, so the number is repeated here.
constexpr std::uint32_t kMaxPartitions = 4096;
constexpr std::size_t kMinReadBuffer = 64;
constexpr std::size_t kInotifyBufferBytes = 16 * 1024;
// Records handed to the sink in one call at most.
constexpr std::size_t kBatchRecords = 128;

enum class Kind : std::uint64_t { file_read = 1, inotify = 2, wake = 3, cancel = 4, watch = 5 };
std::uint64_t tag(Kind k, std::uint32_t partition = 0) {
  return (static_cast<std::uint64_t>(k) << 32) | partition;
}

std::string errno_text(int err) {
  return std::strerror(err);
}

// "12" of "12.log"; nothing for any other name. No sign, no leading zeros.
std::optional<std::uint32_t> partition_of(std::string_view name) {
  constexpr std::string_view kExt = ".log";
  if (name.size() <= kExt.size() || !name.ends_with(kExt)) return std::nullopt;
  const std::string_view digits = name.substr(0, name.size() - kExt.size());
  if (digits.size() > 1 && digits[0] == '0') return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
    if (v > UINT32_MAX) return std::nullopt;
  }
  return static_cast<std::uint32_t>(v);
}

// An unsigned little-endian integer at p (any alignment).
template <typename T>
T load_le(const std::byte* p) {
  T v = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, sizeof v);
  } else {
    for (std::size_t i = sizeof v; i > 0; --i)
      v = static_cast<T>((v << 8) | std::to_integer<T>(p[i - 1]));
  }
  return v;
}

// The first 4 bytes of a framed record of this version: magic and version.
constexpr std::uint32_t kRecordMarker = static_cast<std::uint32_t>(kRecordMagic[0]) |
                                        static_cast<std::uint32_t>(kRecordMagic[1]) << 8 |
                                        static_cast<std::uint32_t>(kRecordMagic[2]) << 16 |
                                        static_cast<std::uint32_t>(kRecordVersion) << 24;

// Anonymous memory for the registered buffers, unmapped with its owner.
class Mapping {
 public:
  Mapping() = default;
  ~Mapping() { unmap(); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  int map(std::size_t len) {
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno;
    p_ = static_cast<std::byte*>(p);
    len_ = len;
    return 0;
  }
  void unmap() {
    if (p_ != nullptr) ::munmap(p_, len_);
    p_ = nullptr;
    len_ = 0;
  }
  std::byte* data() const { return p_; }

 private:
  std::byte* p_ = nullptr;
  std::size_t len_ = 0;
};

struct Partition {
  std::string path;  // DIR/P.log
  UniqueFd fd;       // -1 while the file does not exist yet
  dev_t dev = 0;     // identity of the file opened, to tell a replaced file
  ino_t ino = 0;

  std::byte* buf = nullptr;  // the registered buffer, or heap.data()
  std::size_t cap = 0;
  bool fixed = true;  // buf is the registered buffer
  std::vector<std::byte> heap;
  std::uint64_t base = 0;  // file position of buf[0]
  std::size_t begin = 0;   // next byte to decode
  std::size_t end = 0;     // end of the bytes read
  std::size_t need = 0;    // bytes from begin the next record needs (0: unknown)

  bool reading = false;               // a file read is in flight
  bool may_have_data = false;         // the file may hold bytes past base + end
  std::uint64_t changes = 0;          // inotify events for the file so far
  std::uint64_t changes_at_read = 0;  // `changes` when the read in flight was submitted

  PartitionStatus st;
};

class LocalLogSource final : public Source {
 public:
  LocalLogSource(std::string dir, std::string uri, LogFormat format, std::size_t buffer_bytes)
      : dir_(std::move(dir)), uri_(std::move(uri)), format_(format), fixed_cap_(buffer_bytes) {}
  ~LocalLogSource() override;

  Status open(std::uint32_t partitions);

  std::uint32_t partitions() const override { return static_cast<std::uint32_t>(parts_.size()); }
  std::uint64_t committed(std::uint32_t partition) const override;
  Result<std::size_t> poll(const RecordSink& sink, std::chrono::milliseconds timeout) override;
  Result<std::size_t> poll_batches(BatchSink& sink, std::chrono::milliseconds timeout) override;
  void resume(std::uint32_t partition) override;
  Status commit(std::uint32_t partition, std::uint64_t position) override;
  PartitionStatus status(std::uint32_t partition) const override;
  void wake() override;
  bool watch_readable(int fd) override;
  const std::string& uri() const override { return uri_; }

 private:
  Status register_buffers(std::uint32_t partitions);
  Status check_checkpoint_fits(Partition& q);
  void open_file(std::uint32_t p);
  void stop(Partition& q, std::string error);
  std::size_t deliver(std::uint32_t p, BatchSink& sink);
  std::size_t decode_framed(std::uint32_t p);
  std::size_t decode_lines(std::uint32_t p);
  std::size_t decode_slowly(std::uint32_t p);
  void prepare_window(std::uint32_t p);
  void submit_reads();
  io_uring_sqe* next_sqe();
  void arm_inotify();
  void arm_wake();
  void arm_watches();
  Status reap();
  void on_file_read(std::uint32_t p, int res);
  Status on_inotify(int res);
  Status on_inotify_events(std::size_t len);
  void on_file_event(std::uint32_t p, std::uint32_t mask);
  std::byte* fixed_buffer(std::uint32_t p) const { return fixed_.data() + p * fixed_cap_; }

  const std::string dir_;
  const std::string uri_;
  const LogFormat format_;
  std::size_t fixed_cap_;  // set before open; register_buffers may lower it
  std::vector<Partition> parts_;
  Mapping fixed_;  // parts_.size() registered buffers of fixed_cap_ bytes
  UniqueFd inotify_fd_;
  int watch_ = -1;
  UniqueFd event_fd_;
  alignas(inotify_event) std::byte inotify_buf_[kInotifyBufferBytes];
  std::uint64_t wake_buf_ = 0;
  struct Watched {
    int fd;
    bool armed;
  };
  std::vector<Watched> watched_;  // watch_readable(); fd -1 once its poll failed
  // The batch being handed out, and the CRCs of its framed records.
  std::array<SourceRecord, kBatchRecords> batch_{};
  std::array<std::span<const std::byte>, kBatchRecords> crc_input_{};
  std::array<std::uint32_t, kBatchRecords> crc_stored_{};
  std::array<std::uint32_t, kBatchRecords> crc_computed_{};
  std::size_t in_flight_ = 0;  // submitted operations whose completion was not seen
  bool woken_ = false;
  bool newly_stopped_ = false;  // a partition stopped during this poll
  std::optional<Error> fatal_;  // a failure of the whole source, reported by every poll
  // Last member: destroyed first, so no operation outlives the buffers and descriptors.
  Uring ring_;
};

LocalLogSource::~LocalLogSource() {
  if (!ring_.ready() || in_flight_ == 0) return;
  // The inotify and eventfd reads never finish on their own; cancel them (and any file
  // read) and see every completion, so the kernel writes into no buffer after this.
  io_uring* ring = ring_.get();
  if (io_uring_sqe* sqe = io_uring_get_sqe(ring); sqe != nullptr) {
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, tag(Kind::cancel));
    io_uring_submit(ring);
  }
  int idle_waits = 0;
  while (in_flight_ > 0 && idle_waits < 10) {
    __kernel_timespec ts{.tv_sec = 1, .tv_nsec = 0};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    if (rc == -EINTR) continue;
    if (rc < 0) {
      ++idle_waits;
      continue;
    }
    if (cqe->user_data >> 32 != static_cast<std::uint64_t>(Kind::cancel)) --in_flight_;
    io_uring_cqe_seen(ring, cqe);
  }
}

Status LocalLogSource::open(std::uint32_t partitions) {
  struct stat dst {};
  if (::stat(dir_.c_str(), &dst) != 0) {
    const int err = errno;
    return Error{"source directory " + dir_ + " (" + uri_ + "): " + errno_text(err), err};
  }
  if (!S_ISDIR(dst.st_mode)) {
    return Error{"source directory " + dir_ + " (" + uri_ + ") is not a directory", ENOTDIR};
  }
  if (fixed_cap_ < kMinReadBuffer || fixed_cap_ > (std::size_t{1} << 30)) {
    return Error{"read buffer of " + std::to_string(fixed_cap_) + " bytes for " + uri_ +
                     ": must be between 64 bytes and 1 GiB",
                 EINVAL};
  }
  if (partitions > kMaxPartitions) {
    return Error{std::to_string(partitions) + " partitions asked of " + uri_ + ": at most " +
                     std::to_string(kMaxPartitions),
                 EINVAL};
  }
  if (partitions == 0) {
    // The consecutive DIR/0.log, DIR/1.log, ... present now; at least one, which is
    // waited for if it does not exist yet.
    struct stat st {};
    while (partitions < kMaxPartitions &&
           ::stat((dir_ + "/" + std::to_string(partitions) + ".log").c_str(), &st) == 0) {
      ++partitions;
    }
    partitions = std::max<std::uint32_t>(partitions, 1);
  }

  if (const int rc = ring_.init(partitions + 8); rc < 0) {
    return Error{Uring::describe_init_error(rc) + " (opening " + uri_ + ")", -rc};
  }
  // The watch goes first: a file created after it is seen by an event, one created
  // before it by the open below.
  // Non-blocking, as the eventfd below: io_uring then reads it inline, or arms a poll on
  // it and reads it when it is ready; a blocking descriptor would send every read to an
  // io-wq worker thread blocked in read(2), a thread switch per event.
  inotify_fd_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (inotify_fd_.get() < 0) {
    const int err = errno;
    return Error{"inotify_init1 for " + uri_ + ": " + errno_text(err), err};
  }
  watch_ = ::inotify_add_watch(inotify_fd_.get(), dir_.c_str(),
                               IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM |
                                   IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
  if (watch_ < 0) {
    const int err = errno;
    return Error{"cannot watch " + dir_ + " with inotify: " + errno_text(err) +
                     (err == ENOSPC ? " (raise fs.inotify.max_user_watches)" : ""),
                 err};
  }
  event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (event_fd_.get() < 0) {
    const int err = errno;
    return Error{"eventfd for " + uri_ + ": " + errno_text(err), err};
  }

  parts_.resize(partitions);
  for (std::uint32_t p = 0; p < partitions; ++p) {
    Partition& q = parts_[p];
    q.path = dir_ + "/" + std::to_string(p) + ".log";
    auto c = read_checkpoint(dir_, p);
    if (!c) return c.error();
    q.st.committed = *c;
    q.st.fetched = *c;
    q.base = *c;
    open_file(p);
    if (q.st.stopped) return Error{q.st.error, EIO};
    if (Status s = check_checkpoint_fits(q); !s) return s;
  }

  if (Status st = register_buffers(partitions); !st) return st;

  arm_inotify();
  arm_wake();
  submit_reads();
  return Ok{};
}

// One read buffer per partition, registered with the ring. They are locked memory: for a
// process without CAP_IPC_LOCK they count against RLIMIT_MEMLOCK (8 MiB by default). If
// the asked size does not fit, smaller buffers (down to a page) are tried, sized to half
// the limit, the rest left to other users of locked memory; a record larger than a
// buffer is still read, through a heap buffer.
Status LocalLogSource::register_buffers(std::uint32_t partitions) {
  constexpr std::size_t kPage = 4096;
  const std::size_t asked = fixed_cap_;
  for (;;) {
    if (const int err = fixed_.map(std::size_t{partitions} * fixed_cap_); err != 0) {
      return Error{"cannot allocate " + std::to_string(partitions) + " read buffers of " +
                       std::to_string(fixed_cap_) + " bytes for " + uri_ + ": " + errno_text(err),
                   err};
    }
    std::vector<iovec> iov(partitions);
    for (std::uint32_t p = 0; p < partitions; ++p) iov[p] = {fixed_buffer(p), fixed_cap_};
    const int rc = io_uring_register_buffers(ring_.get(), iov.data(), partitions);
    if (rc == 0) break;
    fixed_.unmap();
    if (rc == -ENOMEM) {
      rlimit lim{};
      if (::getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
        const std::size_t fit = static_cast<std::size_t>(lim.rlim_cur) / 2 / partitions;
        const std::size_t smaller = fit / kPage * kPage;
        if (smaller >= kPage && smaller < fixed_cap_) {
          fixed_cap_ = smaller;
          continue;
        }
      }
    }
    std::string msg = "cannot register " + std::to_string(partitions) + " read buffers of " +
                      std::to_string(fixed_cap_) + " bytes with io_uring for " + uri_ + ": " +
                      errno_text(-rc);
    if (rc == -ENOMEM) {
      msg += " (they are locked memory: raise `ulimit -l` to at least " +
             std::to_string((std::size_t{partitions} * std::min(asked, kPage * 16) + 1023) / 1024) +
             " KiB)";
    }
    return Error{std::move(msg), -rc};
  }
  for (std::uint32_t p = 0; p < partitions; ++p) {
    parts_[p].buf = fixed_buffer(p);
    parts_[p].cap = fixed_cap_;
  }
  return Ok{};
}

// A restart must resume exactly at a record: a checkpoint past the end of its log, or
// in the middle of a record, means the two files do not belong together.
Status LocalLogSource::check_checkpoint_fits(Partition& q) {
  const std::uint64_t pos = q.st.committed;
  const std::string ck = checkpoint_path(dir_, static_cast<std::uint32_t>(&q - parts_.data()));
  if (q.fd.get() < 0) {
    if (pos == 0) return Ok{};
    return Error{"checkpoint " + ck + " says position " + std::to_string(pos) + ", but " + q.path +
                     " does not exist",
                 EINVAL};
  }
  struct stat st {};
  if (::fstat(q.fd.get(), &st) != 0) {
    const int err = errno;
    return Error{"cannot stat " + q.path + ": " + errno_text(err), err};
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (pos > size) {
    return Error{"checkpoint " + ck + " says position " + std::to_string(pos) +
                     ", beyond the end of " + q.path + " (" + std::to_string(size) + " bytes)",
                 EINVAL};
  }
  const std::string not_boundary = "checkpoint " + ck + " says position " + std::to_string(pos) +
                                   ", which is not a record boundary of " + q.path;
  if (format_ == LogFormat::lines) {
    if (pos == 0) return Ok{};
    std::byte prev{};
    const int rc = ring_.read_at(q.fd.get(), &prev, 1, pos - 1);
    if (rc != 1) {
      return Error{"cannot read " + q.path + " at byte offset " + std::to_string(pos - 1) + ": " +
                       (rc < 0 ? errno_text(-rc) : std::string("short read")),
                   rc < 0 ? -rc : EIO};
    }
    if (prev != std::byte{'\n'}) return Error{not_boundary + " (no newline before it)", EINVAL};
    return Ok{};
  }
  // Position 0 is a boundary whatever the file holds: a damaged first record is the
  // reading's to report, stopping its partition only, not a reason to refuse the source.
  if (pos == 0 || pos == size) return Ok{};
  // The record there must start with the magic and say that it sits at `pos`; its CRC
  // is checked when it is read.
  std::byte head[kLogHeaderSize];
  const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(size - pos, sizeof head));
  const int rc = ring_.read_at(q.fd.get(), head, want, pos);
  if (rc < 0 || static_cast<std::size_t>(rc) != want) {
    return Error{"cannot read " + q.path + " at byte offset " + std::to_string(pos) + ": " +
                     (rc < 0 ? errno_text(-rc) : std::string("short read")),
                 rc < 0 ? -rc : EIO};
  }
  const DecodeResult d = decode({head, want}, pos, OffsetCheck::equals_position);
  if (d.status == DecodeStatus::corrupt) return Error{not_boundary + ": " + d.error, EINVAL};
  constexpr std::size_t kOffUpstream = offsetof(RecordHeader, upstream_offset);
  if (want >= kOffUpstream + 8) {
    const auto claimed = load_le<std::uint64_t>(head + kOffUpstream);
    if (claimed != pos) {
      return Error{not_boundary + " (the record there says it sits at byte offset " +
                       std::to_string(claimed) + ")",
                   EINVAL};
    }
  }
  return Ok{};
}

// Opens DIR/P.log if it exists; a missing file is waited for.
void LocalLogSource::open_file(std::uint32_t p) {
  Partition& q = parts_[p];
  if (q.fd.get() >= 0 || q.st.stopped) return;
  UniqueFd fd(::open(q.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno != ENOENT) stop(q, "cannot open " + q.path + ": " + errno_text(errno));
    return;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    stop(q, "cannot stat " + q.path + ": " + errno_text(errno));
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    stop(q, q.path + " is not a regular file");
    return;
  }
  q.fd = std::move(fd);
  q.dev = st.st_dev;
  q.ino = st.st_ino;
  q.may_have_data = true;
}

void LocalLogSource::stop(Partition& q, std::string error) {
  if (q.st.stopped) return;
  q.st.stopped = true;
  q.st.error = std::move(error);
  newly_stopped_ = true;
}

std::uint64_t LocalLogSource::committed(std::uint32_t partition) const {
  return partition < parts_.size() ? parts_[partition].st.committed : 0;
}

PartitionStatus LocalLogSource::status(std::uint32_t partition) const {
  if (partition < parts_.size()) return parts_[partition].st;
  PartitionStatus s;
  s.stopped = true;
  s.error = uri_ + " has no partition " + std::to_string(partition) + " (it serves " +
            std::to_string(parts_.size()) + ")";
  return s;
}

void LocalLogSource::resume(std::uint32_t partition) {
  if (partition < parts_.size()) parts_[partition].st.paused = false;
}

void LocalLogSource::wake() {
  const std::uint64_t one = 1;
  // write(2) is async-signal-safe; an eventfd counter at its limit already wakes.
  [[maybe_unused]] const ssize_t w = ::write(event_fd_.get(), &one, sizeof one);
}

bool LocalLogSource::watch_readable(int fd) {
  // The ring is sized for the partitions' reads, the inotify and eventfd reads, and this
  // many watches (one per partition and a few more).
  if (fd < 0 || watched_.size() >= parts_.size() + 4 || !ring_.ready()) return false;
  watched_.push_back({fd, false});
  return true;
}

Status LocalLogSource::commit(std::uint32_t partition, std::uint64_t position) {
  if (partition >= parts_.size()) {
    return Error{"commit on " + uri_ + ": no partition " + std::to_string(partition) +
                     " (it serves " + std::to_string(parts_.size()) + ")",
                 EINVAL};
  }
  Partition& q = parts_[partition];
  if (position == q.st.committed) return Ok{};
  if (position > q.st.fetched) {
    return Error{"commit of position " + std::to_string(position) + " in " + q.path +
                     ": beyond what was handed out (" + std::to_string(q.st.fetched) + ")",
                 EINVAL};
  }
  if (position < q.st.committed) {
    return Error{"commit of position " + std::to_string(position) + " in " + q.path +
                     ": behind the committed position " + std::to_string(q.st.committed),
                 EINVAL};
  }
  if (Status s = write_checkpoint(dir_, partition, position); !s) return s;
  q.st.committed = position;
  return Ok{};
}

// Hands the next batch of the partition's window to the sink; returns how many records
// it took.
std::size_t LocalLogSource::deliver(std::uint32_t p, BatchSink& sink) {
  Partition& q = parts_[p];
  if (q.st.paused || q.st.stopped || q.begin == q.end) return 0;
  const std::size_t k = format_ == LogFormat::framed ? decode_framed(p) : decode_lines(p);
  if (k == 0) return 0;  // the next record is not all there yet, or the partition stopped
  const std::size_t taken = std::min(sink.take(p, {batch_.data(), k}), k);
  if (taken > 0) {
    const std::uint64_t next = batch_[taken - 1].next_offset;
    q.begin = static_cast<std::size_t>(next - q.base);
    q.need = 0;
    q.st.fetched = next;
  }
  // The refused record stays at begin and is offered first after resume.
  if (taken < k) q.st.paused = true;
  return taken;
}

// Fills batch_ with the framed log records at the start of the window (up to
// kBatchRecords), checked as decode() checks them: magic and version, no flags, lengths
// within their limits that add up to total_length, all of it read, the record's own
// offset equal to its position, and the CRC (computed for the whole batch at once). The
// first record that is not all of that ends the batch; if it is the first, decode_slowly()
// takes it. Returns how many records batch_ holds.
std::size_t LocalLogSource::decode_framed(std::uint32_t p) {
  Partition& q = parts_[p];
  std::size_t at = q.begin;
  std::size_t n = 0;
  while (n < kBatchRecords && q.end - at >= kLogHeaderSize) {
    const std::byte* const b = q.buf + at;
    const std::uint64_t pos = q.base + at;
    const auto total = load_le<std::uint32_t>(b + offsetof(RecordHeader, total_length));
    const auto key_len = load_le<std::uint32_t>(b + offsetof(RecordHeader, key_length));
    const auto value_len = load_le<std::uint32_t>(b + offsetof(RecordHeader, value_length));
    if (load_le<std::uint32_t>(b) != kRecordMarker ||
        load_le<std::uint32_t>(b + offsetof(RecordHeader, flags)) != 0 || key_len > kMaxKeyLength ||
        value_len > kMaxValueLength || kLogHeaderSize + key_len + value_len != total ||
        total > q.end - at ||
        load_le<std::uint64_t>(b + offsetof(RecordHeader, upstream_offset)) != pos) {
      break;
    }
    crc_input_[n] = {b + kCrcStart, total - kCrcStart};
    crc_stored_[n] = load_le<std::uint32_t>(b + offsetof(RecordHeader, crc));
    const char* const key = reinterpret_cast<const char*>(b + kLogHeaderSize);
    batch_[n] = SourceRecord{.partition = p,
                             .upstream_offset = pos,
                             .next_offset = pos + total,
                             .timestamp_ns = static_cast<std::int64_t>(
                                 load_le<std::uint64_t>(b + offsetof(RecordHeader, timestamp_ns))),
                             .key = {key, key_len},
                             .value = {key + key_len, value_len}};
    ++n;
    at += total;
  }
  if (n > 0) {
    crc32c_each({crc_input_.data(), n}, crc_computed_.data());
    std::size_t good = 0;
    while (good < n && crc_computed_[good] == crc_stored_[good]) ++good;
    if (good > 0) return good;  // a damaged one comes first in the next batch
  }
  return decode_slowly(p);
}

// Fills batch_ with the lines at the start of the window, as decode_line() finds them.
std::size_t LocalLogSource::decode_lines(std::uint32_t p) {
  Partition& q = parts_[p];
  std::size_t at = q.begin;
  std::size_t n = 0;
  while (n < kBatchRecords && at < q.end) {
    const std::byte* const b = q.buf + at;
    // As decode_line: a line is at most kMaxValueLength bytes and its '\n'.
    const std::size_t window = std::min(q.end - at, kMaxValueLength + 1);
    const void* const nl = std::memchr(b, '\n', window);
    if (nl == nullptr) break;
    const auto len = static_cast<std::size_t>(static_cast<const std::byte*>(nl) - b);
    const std::uint64_t pos = q.base + at;
    batch_[n] = SourceRecord{.partition = p,
                             .upstream_offset = pos,
                             .next_offset = pos + len + 1,
                             .timestamp_ns = 0,
                             .key = {},
                             .value = {reinterpret_cast<const char*>(b), len}};
    ++n;
    at += len + 1;
  }
  return n > 0 ? n : decode_slowly(p);
}

// The record at the start of the window, through decode() (decode_line()): a whole one
// goes into batch_ alone; one not all there yet sets `need`; a corrupt one stops the
// partition.
std::size_t LocalLogSource::decode_slowly(std::uint32_t p) {
  Partition& q = parts_[p];
  const std::span<const std::byte> bytes{q.buf + q.begin, q.end - q.begin};
  const std::uint64_t pos = q.base + q.begin;
  const DecodeResult d = format_ == LogFormat::framed
                             ? decode(bytes, pos, OffsetCheck::equals_position)
                             : decode_line(bytes, pos);
  switch (d.status) {
    case DecodeStatus::need_more:
      q.need = d.size;
      return 0;
    case DecodeStatus::corrupt:
      stop(q, q.path + ": " + d.error);
      return 0;
    case DecodeStatus::ok:
      break;
  }
  batch_[0] = SourceRecord{.partition = p,
                           .upstream_offset = pos,
                           .next_offset = pos + d.size,
                           .timestamp_ns = d.record.timestamp_ns,
                           .key = d.record.key,
                           .value = d.record.value};
  return 1;
}

// Before a read: drop what was handed out, and make room for the next record, moving to a
// heap buffer for a record larger than the registered one and back once it is through.
// Only the unfinished tail of the bytes read is ever moved: a partition is read only
// after all it holds was offered.
void LocalLogSource::prepare_window(std::uint32_t p) {
  Partition& q = parts_[p];
  const std::size_t pending = q.end - q.begin;
  // At least one byte more than what is there, so the read can make progress.
  const std::size_t need = std::max(q.need, pending + 1);
  if (need <= fixed_cap_) {
    std::byte* const target = q.fixed ? q.buf : fixed_buffer(p);
    if (pending > 0 && (q.begin > 0 || !q.fixed)) std::memmove(target, q.buf + q.begin, pending);
    if (!q.fixed) {
      q.heap = {};  // give the memory back
      q.buf = target;
      q.cap = fixed_cap_;
      q.fixed = true;
    }
  } else if (q.fixed || q.cap < need) {
    // The formats bound a record (framed: kMaxRecordSize; lines: a value and its '\n'),
    // and decode says corrupt before need could exceed that, so this stays bounded.
    std::vector<std::byte> bigger(std::max(need, 2 * q.cap));
    if (pending > 0) std::memcpy(bigger.data(), q.buf + q.begin, pending);
    q.heap = std::move(bigger);
    q.buf = q.heap.data();
    q.cap = q.heap.size();
    q.fixed = false;
  } else if (q.begin > 0 && pending > 0) {
    std::memmove(q.buf, q.buf + q.begin, pending);
  }
  q.base += q.begin;
  q.begin = 0;
  q.end = pending;
}

io_uring_sqe* LocalLogSource::next_sqe() {
  io_uring* ring = ring_.get();
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) {
    // The ring has room for every operation that can be in flight; a full submission
    // queue only means it was not submitted yet.
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

void LocalLogSource::submit_reads() {
  bool any = false;
  for (std::uint32_t p = 0; p < parts_.size(); ++p) {
    Partition& q = parts_[p];
    if (q.reading || !q.may_have_data || q.st.paused || q.st.stopped || q.fd.get() < 0) continue;
    prepare_window(p);
    io_uring_sqe* sqe = next_sqe();
    if (sqe == nullptr) break;  // cannot happen (see next_sqe); tried again next round
    const auto len = static_cast<unsigned>(std::min<std::size_t>(q.cap - q.end, UINT_MAX));
    if (q.fixed) {
      io_uring_prep_read_fixed(sqe, q.fd.get(), q.buf + q.end, len, q.base + q.end,
                               static_cast<int>(p));
    } else {
      io_uring_prep_read(sqe, q.fd.get(), q.buf + q.end, len, q.base + q.end);
    }
    io_uring_sqe_set_data64(sqe, tag(Kind::file_read, p));
    q.reading = true;
    q.changes_at_read = q.changes;
    ++in_flight_;
    any = true;
  }
  if (any) io_uring_submit(ring_.get());
}

// The inotify and eventfd descriptors are polled through the ring and read when ready
// (non-blocking): an IORING_OP_READ on them would wait in an io-wq worker thread blocked
// in read(2), a thread switch per event on the way of every appended record.
void LocalLogSource::arm_inotify() {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_poll_add(sqe, inotify_fd_.get(), POLLIN);
  io_uring_sqe_set_data64(sqe, tag(Kind::inotify));
  ++in_flight_;
}

void LocalLogSource::arm_wake() {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_poll_add(sqe, event_fd_.get(), POLLIN);
  io_uring_sqe_set_data64(sqe, tag(Kind::wake));
  ++in_flight_;
}

void LocalLogSource::arm_watches() {
  for (std::uint32_t i = 0; i < watched_.size(); ++i) {
    Watched& w = watched_[i];
    if (w.armed || w.fd < 0) continue;
    io_uring_sqe* sqe = next_sqe();
    if (sqe == nullptr) return;  // cannot happen (see next_sqe); armed at the next poll
    io_uring_prep_poll_add(sqe, w.fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag(Kind::watch, i));
    w.armed = true;
    ++in_flight_;
  }
}

// Handles every completion there is, without waiting.
Status LocalLogSource::reap() {
  io_uring* ring = ring_.get();
  std::optional<Error> failure;
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_cqe* cqe = nullptr;
  io_uring_for_each_cqe(ring, head, cqe) {
    ++seen;
    const auto kind = static_cast<Kind>(cqe->user_data >> 32);
    const auto p = static_cast<std::uint32_t>(cqe->user_data & 0xFFFFFFFFu);
    if (kind != Kind::cancel) --in_flight_;  // a cancel is not counted (destructor only)
    switch (kind) {
      case Kind::file_read:
        if (p < parts_.size()) on_file_read(p, cqe->res);
        break;
      case Kind::inotify:
        if (Status s = on_inotify(cqe->res); !s && !failure) failure = s.error();
        break;
      case Kind::wake: {
        // Drains the counter (non-blocking: nothing to read is no error).
        [[maybe_unused]] const ssize_t n = ::read(event_fd_.get(), &wake_buf_, sizeof wake_buf_);
        woken_ = true;
        arm_wake();
        break;
      }
      case Kind::watch:
        if (p < watched_.size()) {
          watched_[p].armed = false;
          // A descriptor that cannot be polled (closed under us) is given up, rather
          // than have every poll return at once.
          if (cqe->res < 0 && cqe->res != -EINTR && cqe->res != -ECANCELED) watched_[p].fd = -1;
        }
        woken_ = true;
        break;
      case Kind::cancel:
        break;
    }
  }
  io_uring_cq_advance(ring, seen);
  if (failure) return *failure;
  return Ok{};
}

void LocalLogSource::on_file_read(std::uint32_t p, int res) {
  Partition& q = parts_[p];
  q.reading = false;
  if (res == -EINTR || res == -EAGAIN) return;  // read again
  if (res < 0) {
    stop(q, "read of " + q.path + " at byte offset " + std::to_string(q.base + q.end) +
                " failed: " + errno_text(-res));
    return;
  }
  if (res > 0) {
    q.end += static_cast<std::size_t>(res);
    return;  // there may be more: read again after delivering
  }
  // End of the file, for now. Below what was read already, the file was cut.
  q.may_have_data = q.changes != q.changes_at_read;
  struct stat st {};
  if (::fstat(q.fd.get(), &st) != 0) {
    stop(q, "cannot stat " + q.path + ": " + errno_text(errno));
    return;
  }
  const std::uint64_t read_to = q.base + q.end;
  if (static_cast<std::uint64_t>(st.st_size) < read_to) {
    stop(q, q.path + " was truncated to " + std::to_string(st.st_size) +
                " bytes, below byte offset " + std::to_string(read_to) +
                " already read (fetched up to " + std::to_string(q.st.fetched) +
                "): an append-only log must not shrink; its records are not delivered again");
  }
}

Status LocalLogSource::on_inotify(int res) {
  // res: the poll's event mask, or an error of the poll.
  if (res == -EINTR) {
    arm_inotify();
    return Ok{};
  }
  if (res < 0) {
    fatal_ = Error{"polling inotify events for " + dir_ + " failed: " + errno_text(-res), -res};
    return *fatal_;
  }
  // A few buffers at a time: events still queued complete the next poll at once, so a
  // stream of them never keeps this call from returning.
  for (int reads = 0; reads < 8; ++reads) {
    const ssize_t n = ::read(inotify_fd_.get(), inotify_buf_, sizeof inotify_buf_);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      fatal_ = Error{"reading inotify events for " + dir_ +
                         " failed: " + (n < 0 ? errno_text(err) : std::string("end of file")),
                     err};
      return *fatal_;
    }
    if (Status s = on_inotify_events(static_cast<std::size_t>(n)); !s) return s;
  }
  arm_inotify();
  return Ok{};
}

// The `len` bytes of whole events read into inotify_buf_.
Status LocalLogSource::on_inotify_events(std::size_t len) {
  std::size_t at = 0;
  while (at + sizeof(inotify_event) <= len) {
    inotify_event ev{};
    std::memcpy(&ev, inotify_buf_ + at, sizeof ev);
    const char* name = reinterpret_cast<const char*>(inotify_buf_ + at + sizeof ev);
    if (ev.len > len - at - sizeof ev) break;  // the kernel returns whole events only
    at += sizeof ev + ev.len;
    if ((ev.mask & IN_Q_OVERFLOW) != 0) {
      // Events were dropped: look at every file again.
      for (std::uint32_t p = 0; p < parts_.size(); ++p) on_file_event(p, IN_MODIFY);
      continue;
    }
    if ((ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0) {
      fatal_ = Error{"source directory " + dir_ + " was removed or moved", ENOENT};
      return *fatal_;
    }
    if (ev.len == 0) continue;
    const auto p = partition_of({name, ::strnlen(name, ev.len)});
    if (p && *p < parts_.size()) on_file_event(*p, ev.mask);
  }
  return Ok{};
}

// Something happened to DIR/P.log: it grew (or shrank), appeared, or went away.
void LocalLogSource::on_file_event(std::uint32_t p, std::uint32_t mask) {
  Partition& q = parts_[p];
  ++q.changes;
  if (q.st.stopped) return;
  if (q.fd.get() < 0) {
    open_file(p);
    return;
  }
  q.may_have_data = true;
  if ((mask & (IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM)) == 0) return;
  // An event about the name may be older than the file opened (created between the
  // watch and the open): only a different file, or none, under the name is a problem.
  struct stat st {};
  const bool gone = ::stat(q.path.c_str(), &st) != 0;
  if (gone || st.st_dev != q.dev || st.st_ino != q.ino) {
    stop(q, q.path + " was removed, renamed or replaced while being read (fetched up to byte " +
                "offset " + std::to_string(q.st.fetched) +
                "): a partition log must stay in place and only grow");
  }
}

Result<std::size_t> LocalLogSource::poll(const RecordSink& sink,
                                         std::chrono::milliseconds timeout) {
  OneAtATime one(sink);
  return poll_batches(one, timeout);
}

Result<std::size_t> LocalLogSource::poll_batches(BatchSink& sink,
                                                 std::chrono::milliseconds timeout) {
  if (fatal_) return *fatal_;
  using Clock = std::chrono::steady_clock;
  // Clamped so that now + timeout cannot overflow.
  timeout = std::clamp(timeout, std::chrono::milliseconds(0),
                       std::chrono::milliseconds(std::chrono::hours(24 * 365)));
  const auto deadline = Clock::now() + timeout;
  std::size_t delivered = 0;
  woken_ = false;
  newly_stopped_ = false;
  arm_watches();  // submitted with the reads or the wait below
  for (;;) {
    if (Status s = reap(); !s) return s.error();
    // One batch per partition in turn, until none has a whole record left: each gets its
    // records to the sink (and on to its consumers) at the same pace.
    for (bool more = true; more;) {
      more = false;
      for (std::uint32_t p = 0; p < parts_.size(); ++p) {
        const std::size_t n = deliver(p, sink);
        delivered += n;
        more |= n > 0;
      }
    }
    submit_reads();
    // A partition that stopped is news too: the caller reports it.
    if (delivered > 0 || woken_ || newly_stopped_) break;
    const auto now = Clock::now();
    if (now >= deadline) break;
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    __kernel_timespec ts{.tv_sec = left.count() / 1'000'000'000,
                         .tv_nsec = left.count() % 1'000'000'000};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_submit_and_wait_timeout(ring_.get(), &cqe, 1, &ts, nullptr);
    if (rc == -EINTR) break;  // a signal: let the caller look at why
    if (rc < 0 && rc != -ETIME) {
      return Error{"waiting on io_uring for " + uri_ + ": " + errno_text(-rc), -rc};
    }
  }
  // Re-armed inotify/eventfd reads may still be unsubmitted.
  io_uring_submit(ring_.get());
  return delivered;
}

}  // namespace

Result<std::unique_ptr<Source>> open_local_log(const std::string& dir,
                                               const LocalLogOptions& options, std::string uri) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();  // DIR/ names files as DIR/0.log
  auto source = std::make_unique<LocalLogSource>(std::move(d), std::move(uri), options.format,
                                                 options.read_buffer_bytes);
  if (Status s = source->open(options.partitions); !s) return s.error();
  return std::unique_ptr<Source>(std::move(source));
}

}  // namespace ringfeed::io
