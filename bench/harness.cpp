#include "harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace ringfeed::bench {

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void* map_shared_bytes(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    throw std::runtime_error("cannot map " + std::to_string(bytes) +
                             " bytes of shared memory: " + std::strerror(errno));
  }
  return p;
}

void unmap_shared_bytes(void* p, std::size_t bytes) {
  ::munmap(p, bytes);
}

namespace {

// The reader of the current pair; the writer's waits notice when it dies.
pid_t g_reader_pid = 0;
bool g_reader_reaped = false;
int g_reader_status = 0;

// Another child whose death fails the run, and which the signal handler kills.
volatile sig_atomic_t g_watched_child = 0;
std::string g_watched_child_name;

bool reader_gone() {
  if (g_reader_pid <= 0) return false;
  if (!g_reader_reaped && ::waitpid(g_reader_pid, &g_reader_status, WNOHANG) == g_reader_pid) {
    g_reader_reaped = true;
  }
  return g_reader_reaped;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

// Whether the watched child has exited, with how; WNOWAIT leaves it to its owner to reap.
bool watched_child_gone(std::string& how) {
  if (g_watched_child <= 0) return false;
  siginfo_t info{};
  const int options = WEXITED | WNOHANG | WNOWAIT;
  if (::waitid(P_PID, static_cast<id_t>(g_watched_child), &info, options) != 0) return false;
  if (info.si_pid == 0) return false;  // still running
  how = info.si_code == CLD_EXITED ? "exited with status " + std::to_string(info.si_status)
                                   : "was killed by signal " + std::to_string(info.si_status);
  return true;
}

// Names to unlink from a signal handler: fixed storage, no allocation there.
constexpr int kMaxWatched = 16;
char g_watched[kMaxWatched][160];
volatile sig_atomic_t g_watched_count = 0;
unsigned g_watchdog_seconds = 0;
char g_watched_dir[256];  // empty: none

// Removes the entry `name` of the directory `parent_fd`, and if it is a directory all
// that is in it first, with system calls only: it runs in a signal handler. Deep trees
// are left (a run's directory holds logs and the fetcher's files, two levels at most).
void remove_tree(int parent_fd, const char* name, int depth) {
  if (::unlinkat(parent_fd, name, 0) == 0 || errno != EISDIR || depth > 4) return;
  const int fd = ::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    alignas(dirent64) char buf[4096];
    for (;;) {
      const ssize_t n = ::getdents64(fd, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t at = 0; at < n;) {
        const auto* d = reinterpret_cast<const dirent64*>(buf + at);
        const char* entry = d->d_name;
        const bool dots = entry[0] == '.' && (entry[1] == 0 || (entry[1] == '.' && entry[2] == 0));
        if (!dots) remove_tree(fd, entry, depth + 1);
        at += d->d_reclen;
      }
    }
    ::close(fd);
  }
  ::unlinkat(parent_fd, name, AT_REMOVEDIR);
}

void write_err(const char* s) {
  const ssize_t rc = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)rc;
}

extern "C" void on_abort_signal(int sig) {
  if (sig == SIGALRM) {
    write_err("ringfeed-bench: a run exceeded its time limit; aborting\n");
  } else {
    write_err("ringfeed-bench: interrupted; removing this run's segments\n");
  }
  if (g_watched_child > 0) {
    ::kill(g_watched_child, SIGKILL);
    ::waitpid(g_watched_child, nullptr, 0);
  }
  for (int i = 0; i < g_watched_count; ++i) ::unlink(g_watched[i]);
  if (g_watched_dir[0] != 0) remove_tree(AT_FDCWD, g_watched_dir, 0);
  ::_exit(1);  // the reader dies with us (PR_SET_PDEATHSIG)
}

bool pin(pid_t pid, int cpu, std::string& why) {
  const unsigned n = std::thread::hardware_concurrency();
  if (n < 2) {
    why = "only " + std::to_string(n) + " cpu online";
    return false;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(pid, sizeof set, &set) != 0) {
    why = "sched_setaffinity(cpu " + std::to_string(cpu) + "): " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

bool Rendezvous::sync(int side, std::uint32_t& my_step) {
  ++my_step;
  step[side].store(my_step, std::memory_order_release);
  for (unsigned i = 0;; ++i) {
    if (failed.load(std::memory_order_acquire) != 0) return false;
    if (step[1 - side].load(std::memory_order_acquire) >= my_step) return true;
    if (i < 4096) {
      cpu_relax();
      continue;
    }
    if (side == 0 && reader_gone()) {
      fail("the reader process " + describe_status(g_reader_status) + " before step " +
           std::to_string(my_step));
      return false;
    }
    std::string how;
    if (side == 0 && watched_child_gone(how)) {
      fail("the " + g_watched_child_name + " (pid " + std::to_string(g_watched_child) + ") " + how +
           " before step " + std::to_string(my_step));
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

void Rendezvous::fail(const std::string& message) {
  std::uint32_t expected = 0;
  // The first failure is the one worth reporting.
  if (!failed.compare_exchange_strong(expected, 2, std::memory_order_acq_rel)) return;
  std::snprintf(error, sizeof error, "%s", message.c_str());
  failed.store(1, std::memory_order_release);
}

int run_pair(Rendezvous& rv, bool pin_cpus, const std::function<int()>& writer,
             const std::function<int()>& reader, PinReport* pin_report) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    rv.fail(std::string("fork: ") + std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) std::_Exit(1);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    int rc = 1;
    try {
      rc = reader();
    } catch (const std::exception& e) {
      rv.fail(std::string("reader: ") + e.what());
    }
    std::_Exit(rc);  // nothing of the parent's (its writer, its buffers) is torn down here
  }
  g_reader_pid = pid;
  g_reader_reaped = false;
  PinReport report;
  if (pin_cpus) {
    std::string why;
    report.pinned = pin(0, 0, why) && pin(pid, 1, why);
    report.text =
        report.pinned ? "writer pinned to cpu 0, reader to cpu 1" : "not pinned (" + why + ")";
  } else {
    report.text = "not pinned (--no-pin)";
  }
  if (pin_report != nullptr) *pin_report = report;

  int rc = 1;
  try {
    rc = writer();
  } catch (const std::exception& e) {
    rv.fail(std::string("writer: ") + e.what());
  }
  if (rc != 0 || rv.failed.load() != 0) {
    if (rv.failed.load() == 0) rv.fail("the writer stopped early");
    // The reader may be blocked in a receive that nothing will satisfy.
    if (!g_reader_reaped) ::kill(pid, SIGKILL);
  }
  if (!g_reader_reaped) {
    while (::waitpid(pid, &g_reader_status, 0) < 0 && errno == EINTR) {
    }
    g_reader_reaped = true;
  }
  g_reader_pid = 0;
  if (rv.failed.load() != 0) return 1;
  if (!WIFEXITED(g_reader_status) || WEXITSTATUS(g_reader_status) != 0) {
    rv.fail("the reader process " + describe_status(g_reader_status));
    return 1;
  }
  return rc;
}

void watch_segment(const std::string& name) {
  if (g_watched_count >= kMaxWatched) return;
  char* slot = g_watched[g_watched_count];
  std::snprintf(slot, sizeof g_watched[0], "/dev/shm/%s", name.c_str());
  g_watched_count = g_watched_count + 1;
}

void unwatch_segments() {
  g_watched_count = 0;
}

void watch_child(pid_t pid, const std::string& name) {
  g_watched_child_name = name;
  g_watched_child = pid;
}

void watch_directory(const std::string& path) {
  g_watched_dir[0] = 0;
  if (path.size() >= sizeof g_watched_dir) return;  // too long to keep: not watched
  std::memcpy(g_watched_dir + 1, path.c_str() + 1, path.size());
  g_watched_dir[0] = path[0];  // last: the handler sees a whole name or none
}

void unwatch_child() {
  g_watched_child = 0;
}

void unwatch_directory() {
  g_watched_dir[0] = 0;
}

void arm_watchdog(unsigned seconds) {
  if (g_watchdog_seconds == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_abort_signal;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGALRM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
  }
  g_watchdog_seconds = seconds;
  ::alarm(seconds);
}

void disarm_watchdog() {
  ::alarm(0);
}

CpuSample sample_cpu() {
  CpuSample c;
  std::ifstream in("/proc/stat");
  std::string cpu;
  std::uint64_t v[8] = {};
  if (in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7]) {
    const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
    std::uint64_t total = 0;
    for (std::uint64_t x : v) total += x;
    const std::uint64_t idle = v[3] + v[4];  // idle + iowait
    c.total_seconds = static_cast<double>(total) / hz;
    c.busy_seconds = static_cast<double>(total - idle) / hz;
  }
  auto seconds = [](const rusage& u) {
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  rusage self{};
  rusage children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  c.own_seconds = seconds(self) + seconds(children);
  return c;
}

double others_share(const CpuSample& before, const CpuSample& after) {
  const double total = after.total_seconds - before.total_seconds;
  if (total <= 0) return 0;
  const double others =
      (after.busy_seconds - before.busy_seconds) - (after.own_seconds - before.own_seconds);
  return std::clamp(others / total, 0.0, 1.0);
}

std::string wait_for_idle(unsigned max_seconds) {
  const std::int64_t start = now_ns();
  const std::int64_t deadline = start + static_cast<std::int64_t>(max_seconds) * 1'000'000'000;
  for (;;) {
    const CpuSample a = sample_cpu();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const CpuSample b = sample_cpu();
    const double total = b.total_seconds - a.total_seconds;
    const double busy = total > 0 ? (b.busy_seconds - a.busy_seconds) / total : 0;
    const double waited = static_cast<double>(now_ns() - start) / 1e9;
    char buf[96];
    if (busy <= 0.10) {
      std::snprintf(buf, sizeof buf, "cpus idle after %.0f s", waited);
      return buf;
    }
    if (now_ns() >= deadline) {
      std::snprintf(buf, sizeof buf, "cpus still %.0f%% busy after %.0f s", 100 * busy, waited);
      return buf;
    }
  }
}

void Figures::add(const std::string& name, double value) {
  for (auto& row : rows_) {
    if (row.first == name) {
      row.second.push_back(value);
      return;
    }
  }
  rows_.push_back({name, {value}});
}

double Figures::median(const std::string& name) const {
  for (const auto& row : rows_) {
    if (row.first != name) continue;
    std::vector<double> v = row.second;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  return 0;
}

std::string format_ns(double ns) {
  char buf[32];
  if (ns < 10'000) {
    std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  } else if (ns < 10'000'000) {
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f ms", ns / 1e6);
  }
  return buf;
}

std::string format_rate(double per_second) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f M/s", per_second / 1e6);
  return buf;
}

std::string format_bytes_rate(double bytes_per_second) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MB/s", bytes_per_second / 1e6);
  return buf;
}

}  // namespace ringfeed::bench
