#include "io/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/crc32c.hpp"

namespace ringfeed::io {

namespace {

constexpr std::size_t kOffVersion = 4;
constexpr std::size_t kOffPosition = 8;
constexpr std::size_t kOffPartition = 16;
constexpr std::size_t kOffCrc = 20;
static_assert(kOffCrc + 4 == kCheckpointSize, "the CRC is the last field");

template <typename T>
void store_le(std::byte* p, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    p[i] = static_cast<std::byte>(v & 0xFFu);
    v = static_cast<T>(v >> 8);
  }
}

template <typename T>
T load_le(const std::byte* p) {
  T v = 0;
  for (std::size_t i = sizeof(T); i > 0; --i)
    v = static_cast<T>((v << 8) | static_cast<T>(p[i - 1]));
  return v;
}

Error os_error(const std::string& what, const std::string& path, int err) {
  return Error{what + " " + path + ": " + std::strerror(err), err};
}

// Writes all of `bytes` to `fd`.
int write_all(int fd, const std::byte* data, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, n - done);
    if (w > 0) {
      done += static_cast<std::size_t>(w);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else {
      return w < 0 ? errno : EIO;
    }
  }
  return 0;
}

int fsync_fd(int fd) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}

// Closes on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and says whether that worked (close can report a deferred write error).
  int close_now() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

}  // namespace

std::string checkpoint_path(const std::string& dir, std::uint32_t partition) {
  return dir + "/" + std::to_string(partition) + ".checkpoint";
}

std::array<std::byte, kCheckpointSize> encode_checkpoint(std::uint32_t partition,
                                                         std::uint64_t position) {
  std::array<std::byte, kCheckpointSize> b{};
  std::memcpy(b.data(), kCheckpointMagic, sizeof kCheckpointMagic);
  store_le<std::uint32_t>(b.data() + kOffVersion, kCheckpointVersion);
  store_le<std::uint64_t>(b.data() + kOffPosition, position);
  store_le<std::uint32_t>(b.data() + kOffPartition, partition);
  store_le<std::uint32_t>(b.data() + kOffCrc, crc32c({b.data(), kOffCrc}));
  return b;
}

Result<std::uint64_t> decode_checkpoint(std::span<const std::byte> bytes, const std::string& path,
                                        std::uint32_t partition) {
  const std::string what = "checkpoint " + path;
  if (bytes.size() != kCheckpointSize) {
    return Error{what + " is " + std::to_string(bytes.size()) + " bytes long, not " +
                     std::to_string(kCheckpointSize) +
                     ": torn or not a checkpoint (refusing to guess where to resume)",
                 EINVAL};
  }
  const std::byte* b = bytes.data();
  if (std::memcmp(b, kCheckpointMagic, sizeof kCheckpointMagic) != 0) {
    return Error{what + " does not start with the magic \"RFCK\": not a checkpoint", EINVAL};
  }
  const auto version = load_le<std::uint32_t>(b + kOffVersion);
  if (version != kCheckpointVersion) {
    return Error{what + " has version " + std::to_string(version) + "; this build reads version " +
                     std::to_string(kCheckpointVersion),
                 EINVAL};
  }
  const auto stored_crc = load_le<std::uint32_t>(b + kOffCrc);
  const std::uint32_t crc = crc32c({b, kOffCrc});
  if (stored_crc != crc) {
    return Error{what + " fails its CRC32C check (stored " + std::to_string(stored_crc) +
                     ", computed " + std::to_string(crc) + "): damaged",
                 EINVAL};
  }
  const auto owner = load_le<std::uint32_t>(b + kOffPartition);
  if (owner != partition) {
    return Error{what + " belongs to partition " + std::to_string(owner) + ", not " +
                     std::to_string(partition) + ": copied from another name?",
                 EINVAL};
  }
  return load_le<std::uint64_t>(b + kOffPosition);
}

Result<std::uint64_t> read_checkpoint(const std::string& dir, std::uint32_t partition) {
  const std::string path = checkpoint_path(dir, partition);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::uint64_t{0};
    return os_error("cannot open checkpoint", path, errno);
  }
  // One byte more than a checkpoint, so a longer file is seen as such.
  std::byte buf[kCheckpointSize + 1];
  std::size_t got = 0;
  while (got < sizeof buf) {
    const ssize_t r = ::read(fd.get(), buf + got, sizeof buf - got);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r == 0) {
      break;
    } else if (errno != EINTR) {
      return os_error("cannot read checkpoint", path, errno);
    }
  }
  return decode_checkpoint({buf, got}, path, partition);
}

Status write_checkpoint(const std::string& dir, std::uint32_t partition, std::uint64_t position) {
  const auto bytes = encode_checkpoint(partition, position);
  return replace_file(dir, checkpoint_path(dir, partition), bytes, "checkpoint");
}

Status replace_file(const std::string& dir, const std::string& path,
                    std::span<const std::byte> bytes, const std::string& what) {
  const std::string tmp = path + ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd.get() < 0) return os_error("cannot create " + what, tmp, errno);
    // A leftover temporary file keeps whatever mode it had: set it, never world-writable.
    if (::fchmod(fd.get(), 0600) != 0)
      return os_error("cannot set the mode of " + what, tmp, errno);
    if (const int err = write_all(fd.get(), bytes.data(), bytes.size()); err != 0) {
      return os_error("cannot write " + what, tmp, err);
    }
    if (const int err = fsync_fd(fd.get()); err != 0) {
      return os_error("cannot fsync " + what, tmp, err);
    }
    if (const int err = fd.close_now(); err != 0) {
      return os_error("cannot close " + what, tmp, err);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    return Error{"cannot rename " + what + " " + tmp + " to " + path + ": " + std::strerror(err),
                 err};
  }
  // The rename is only durable once the directory entry is.
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0) return os_error("cannot open directory", dir, errno);
  if (const int err = fsync_fd(dfd.get()); err != 0) {
    return os_error("cannot fsync directory", dir, err);
  }
  return Ok{};
}

}  // namespace ringfeed::io
