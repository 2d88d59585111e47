#include "children.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "ringfeed_steps.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"

namespace ringfeed::bench {

bool pin_to_cpu(pid_t pid, int cpu) {
  const unsigned n = std::thread::hardware_concurrency();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu == kAnyCpu) {
    for (unsigned i = 0; i < n && i < CPU_SETSIZE; ++i) CPU_SET(i, &set);
  } else if (cpu < 0 || static_cast<unsigned>(cpu) >= n) {
    return false;
  } else {
    CPU_SET(cpu, &set);
  }
  return ::sched_setaffinity(pid, sizeof set, &set) == 0;
}

pid_t spawn_child(Rendezvous& rv, int cpu, const std::function<int()>& fn) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    rv.fail(std::string("fork: ") + std::strerror(errno));
    return -1;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) std::_Exit(1);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGALRM, SIG_DFL);
    ::alarm(0);
    pin_to_cpu(0, cpu);
    int rc = 1;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      rv.fail(std::string("child process: ") + e.what());
    }
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(rc);  // nothing of the parent's state is torn down here
  }
  return pid;
}

pid_t Children::spawn(const std::string& name, int cpu, const std::function<int()>& fn) {
  const pid_t pid = spawn_child(rv_, cpu, fn);
  if (pid > 0) children_.push_back({name, pid});
  return pid;
}

bool Children::reap(Child& c, int options) {
  int status = 0;
  struct rusage usage {};
  pid_t r = 0;
  while ((r = ::wait4(c.pid, &status, options, &usage)) < 0 && errno == EINTR) {
  }
  if (r != c.pid) return false;
  reaped(c, status, usage);
  return true;
}

double Children::cpu_seconds(pid_t pid) const {
  for (const Child& c : children_) {
    if (c.pid == pid) return c.cpu_seconds;
  }
  return 0;
}

void Children::reaped(Child& c, int status, const struct rusage& usage) {
  c.reaped = true;
  c.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                  static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  if (c.killed || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) return;
  if (WIFEXITED(status)) {
    rv_.fail("the " + c.name + " (pid " + std::to_string(c.pid) + ") exited with status " +
             std::to_string(WEXITSTATUS(status)));
  } else {
    rv_.fail("the " + c.name + " (pid " + std::to_string(c.pid) + ") was killed by signal " +
             std::to_string(WTERMSIG(status)));
  }
}

bool Children::check() {
  for (Child& c : children_) {
    if (!c.reaped) reap(c, WNOHANG);
  }
  return rv_.failed.load(std::memory_order_acquire) == 0;
}

bool Children::wait_all(double seconds) {
  const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(seconds * 1e9);
  for (;;) {
    check();
    const bool all =
        std::all_of(children_.begin(), children_.end(), [](const Child& c) { return c.reaped; });
    if (all) break;
    if (now_ns() > deadline) {
      for (const Child& c : children_) {
        if (!c.reaped) {
          rv_.fail("the " + c.name + " (pid " + std::to_string(c.pid) + ") did not exit within " +
                   std::to_string(static_cast<int>(seconds)) + " s");
          break;
        }
      }
      kill_all();
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  return rv_.failed.load(std::memory_order_acquire) == 0;
}

bool Children::terminate(pid_t pid, double seconds) {
  for (Child& c : children_) {
    if (c.pid != pid || c.reaped) continue;
    ::kill(c.pid, SIGTERM);
    const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(seconds * 1e9);
    while (!reap(c, WNOHANG)) {
      if (now_ns() > deadline) {
        rv_.fail("the " + c.name + " (pid " + std::to_string(c.pid) + ") did not exit within " +
                 std::to_string(static_cast<int>(seconds)) + " s of SIGTERM");
        kill_one(c.pid);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }
  return rv_.failed.load(std::memory_order_acquire) == 0;
}

void Children::kill_one(pid_t pid) {
  for (Child& c : children_) {
    if (c.pid != pid || c.reaped) continue;
    c.killed = true;
    ::kill(c.pid, SIGKILL);
    reap(c, 0);
  }
}

void Children::kill_now(pid_t pid) {
  for (Child& c : children_) {
    if (c.pid != pid || c.reaped) continue;
    c.killed = true;
    ::kill(c.pid, SIGKILL);
  }
}

void Children::kill_all() {
  for (Child& c : children_) {
    if (!c.reaped) kill_one(c.pid);
  }
}

void remove_namespace(const std::string& ns) {
  const std::string prefix = "ringfeed." + ns + ".";
  const std::string status = shm::fetcher_segment_name(ns);
  for (const std::string& name : shm::Segment::list(prefix)) {
    if (name != status) shm::Segment::remove(name);
  }
  shm::Segment::remove(status);
}

void watch_fetcher_segments(const std::string& ns, std::uint32_t partitions) {
  watch_segment(shm::fetcher_segment_name(ns));
  for (std::uint32_t p = 0; p < partitions; ++p) {
    watch_segment(shm::ring_segment_name(ns, p));
    watch_segment(shm::group_segment_name(ns, p, kGroup));
  }
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace ringfeed::bench
