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

// Reads /proc/PID/stat without allocation-heavy parsing. The command name (field 2) can
// contain spaces and parentheses, so fields are counted from the last ')'.
bool read_stat(pid_t pid, StatFields& out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;  // now at field 3 (state)
  out.state = *p;
  // Skip to field 22: fields 3..21 are 19 fields.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  out.start_time = std::strtoull(p, nullptr, 10);
  return true;
}

struct Cached {
  pid_t pid = 0;
  std::uint64_t start_time = 0;
};
thread_local Cached cached;

}  // namespace

std::uint64_t process_start_time(pid_t pid) {
  StatFields f;
  if (!read_stat(pid, f)) return 0;
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
  return static_cast<pid_t>(owner >> 32);
}

bool owner_alive(std::uint64_t owner) {
  const std::int64_t pid = static_cast<std::int64_t>(owner >> 32);
  if (pid <= 0 || pid >= kPidLimit) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  const std::uint64_t start = process_start_time(static_cast<pid_t>(pid));
  if (start == 0) return false;
  return (start & 0xffffffffu) == (owner & 0xffffffffu);
}

}  // namespace ringfeed::shm
