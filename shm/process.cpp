#include "shm/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ringfeed::shm {
namespace {

// Linux pid_max is at most 2^22 (PID_MAX_LIMIT on 64-bit).
constexpr std::int64_t kPidLimit = 4194304;

struct StatFields {
  char state = '?';
  std::uint64_t start_time = 0;
};

enum class StatRead { ok, gone, unknown };

// Reads /proc/PID/stat without allocation-heavy parsing. The command name (field 2) can
// contain spaces and parentheses, so fields are counted from the last ')'. `gone` only
// when the file says there is no such process (ENOENT, ESRCH); any other failure (out
// of descriptors, an interrupted read, an odd line) is `unknown`: no evidence of death.
StatRead read_stat(pid_t pid, StatFields& out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = -1;
  do {
    fd = ::open(path, O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno == ENOENT || errno == ESRCH ? StatRead::gone : StatRead::unknown;
  char buf[1024];
  ssize_t n = -1;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return err == ESRCH ? StatRead::gone : StatRead::unknown;
  if (n == 0) return StatRead::gone;  // the process went away between open and read
  buf[n] = '\0';
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return StatRead::unknown;
  p += 2;  // now at field 3 (state)
  out.state = *p;
  // Skip to field 22: fields 3..21 are 19 fields.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return StatRead::unknown;
    ++p;
  }
  out.start_time = std::strtoull(p, nullptr, 10);
  return StatRead::ok;
}

struct Cached {
  pid_t pid = 0;
  std::uint64_t start_time = 0;
};
thread_local Cached cached;

}  // namespace

std::uint64_t process_start_time(pid_t pid) {
  StatFields f;
  if (read_stat(pid, f) != StatRead::ok) return 0;
  if (f.state == 'Z' || f.state == 'X' || f.state == 'x') return 0;
  return f.start_time;
}

ProcessIdentity self_identity() {
  pid_t now = ::getpid();
  if (cached.pid != now) {
    cached.pid = now;
    cached.start_time = process_start_time(now);
  }
  return {cached.pid, cached.start_time};
}

std::uint64_t pack_owner(ProcessIdentity id) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(id.pid)) << 32) |
         (id.start_time & 0xffffffffu);
}

pid_t owner_pid(std::uint64_t owner) {
  return static_cast<pid_t>((owner & ~kOwnerAwaited) >> 32);
}

bool owner_alive(std::uint64_t owner) {
  owner &= ~kOwnerAwaited;
  const std::int64_t pid = static_cast<std::int64_t>(owner >> 32);
  if (pid <= 0 || pid >= kPidLimit) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  // Dead only on evidence: a reaper that took a live consumer for dead would hand its
  // leases to others while it still works on them.
  StatFields f;
  const StatRead r = read_stat(static_cast<pid_t>(pid), f);
  if (r == StatRead::gone) return false;
  if (r == StatRead::unknown) return true;  // judged again at the next pass
  if (f.state == 'Z' || f.state == 'X' || f.state == 'x') return false;
  return (f.start_time & 0xffffffffu) == (owner & 0xffffffffu);
}

}  // namespace ringfeed::shm
