// What the cross-process tools share: one clock, CPU pinning, a forked reader process
// that meets the writer (the parent) at numbered steps through an anonymous shared
// mapping, a watchdog that removes this run's segments if a run hangs, and medians.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace ringfeed::bench {

inline constexpr std::size_t kLine = 64;

// CLOCK_MONOTONIC in nanoseconds: every stamp of the bench, on both sides, uses it.
std::int64_t now_ns();

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Anonymous MAP_SHARED memory, zero-filled; made before fork, so both processes see it.
void* map_shared_bytes(std::size_t bytes);
void unmap_shared_bytes(void* p, std::size_t bytes);

template <typename T>
class SharedObject {
 public:
  SharedObject() : p_(new (map_shared_bytes(sizeof(T))) T{}) {}
  ~SharedObject() {
    p_->~T();
    unmap_shared_bytes(p_, sizeof(T));
  }
  SharedObject(const SharedObject&) = delete;
  SharedObject& operator=(const SharedObject&) = delete;
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }

 private:
  T* p_;
};

// The writer (side 0, the parent) and the reader (side 1, the child) call sync() the
// same number of times; each call returns once the other side has made as many.
// Either side can fail() with a message; the other sees it at its next sync.
struct Rendezvous {
  alignas(kLine) std::atomic<std::uint32_t> step[2];  // each written by its side only
  alignas(kLine) std::atomic<std::uint32_t> failed;
  char error[256];

  bool sync(int side, std::uint32_t& my_step);
  void fail(const std::string& message);
  std::string error_message() const { return error; }
};

struct PinReport {
  bool pinned = false;
  std::string text;  // "writer pinned to cpu 0, reader to cpu 1", or why not
};

// Forks the reader, which runs `reader` and exits with its return value (it dies with
// the parent). Unless `pin` is false, pins this process to cpu 0 and the reader to
// cpu 1. Runs `writer`, then waits for the reader. Returns 0 when both succeeded; after a
// failure the reader is killed and rv holds the first error.
int run_pair(Rendezvous& rv, bool pin, const std::function<int()>& writer,
             const std::function<int()>& reader, PinReport* pin_report);

// Segment names (under /dev/shm) removed if the watchdog fires or SIGINT/SIGTERM arrive.
void watch_segment(const std::string& name);
void unwatch_segments();
// A child process besides the reader (a fetcher): SIGKILLed and reaped first, before
// the segments and the directory are removed (it could otherwise write into them while
// they go), if the watchdog fires or SIGINT/SIGTERM arrive; and while it is watched, the
// writer's sync() fails the run once it has exited (it is left for its owner to reap:
// unwatch it before that, its pid may be reused then). One at a time.
void watch_child(pid_t pid, const std::string& name);
void unwatch_child();
// A directory removed with everything in it on those signals. One at a time.
void watch_directory(const std::string& path);
void unwatch_directory();
// Aborts the process (and so the reader) if the current run takes longer than this.
void arm_watchdog(unsigned seconds);
void disarm_watchdog();

// How busy the machine is, from /proc/stat and this process's (and its reaped
// children's) CPU time: both cores belong to the two processes during a run, so CPU
// time used by anything else is interference to report.
struct CpuSample {
  double busy_seconds = 0;   // all CPUs, non-idle
  double total_seconds = 0;  // all CPUs
  double own_seconds = 0;    // this process and its reaped children
};
CpuSample sample_cpu();
// Share of the CPUs' time between two samples used by processes other than ours.
double others_share(const CpuSample& before, const CpuSample& after);
// Waits (up to `max_seconds`) until the CPUs were at least 90 % idle for one second;
// returns a note for the report.
std::string wait_for_idle(unsigned max_seconds);

// Figures collected over runs, in the order first added.
class Figures {
 public:
  void add(const std::string& name, double value);
  double median(const std::string& name) const;

 private:
  std::vector<std::pair<std::string, std::vector<double>>> rows_;
};

std::string format_ns(double ns);                        // "68 ns", "11.4 us"
std::string format_rate(double per_second);              // "5.21 M/s"
std::string format_bytes_rate(double bytes_per_second);  // "333 MB/s"

}  // namespace ringfeed::bench
