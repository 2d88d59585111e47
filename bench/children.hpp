// Forked children for the tools that run more than two processes (ingest, failover,
// idle): each child dies with the parent, runs one function, and exits with its result;
// the parent watches them, reaps them, and removes a namespace's segments afterwards.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace ringfeed::bench {

// For pin_to_cpu and spawn_child: every online cpu (undoes an inherited pinning).
inline constexpr int kAnyCpu = -1;

// Pins `pid` (0: this process) to one cpu, or lets it run on any (kAnyCpu); false if the
// cpu does not exist or sched_setaffinity failed.
bool pin_to_cpu(pid_t pid, int cpu);

// Forks a child that runs fn and exits with its return value; an exception becomes
// rv.fail. The child gets SIGKILL when the parent dies. It runs on `cpu` (or kAnyCpu).
// Returns the pid, or -1 after rv.fail.
pid_t spawn_child(Rendezvous& rv, int cpu, const std::function<int()>& fn);

// The children of one measurement, by name, for messages.
class Children {
 public:
  explicit Children(Rendezvous& rv) : rv_(rv) {}
  ~Children() { kill_all(); }
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;

  pid_t spawn(const std::string& name, int cpu, const std::function<int()>& fn);
  // Reaps children that exited; a child that failed (status not 0, or a signal nobody
  // sent) fails rv with its name. True while nothing failed.
  bool check();
  // Waits up to `seconds` for every child to exit; after that kills what is left. True if
  // all exited with status 0 and nothing failed.
  bool wait_all(double seconds);
  // Stops one child as an operator would, with SIGTERM, and waits up to `seconds` for
  // it; it must exit with status 0 (else rv fails naming it). One that overstays is
  // SIGKILLed. True if it exited 0 and nothing failed.
  bool terminate(pid_t pid, double seconds);
  // SIGKILLs one child and reaps it (an expected death).
  void kill_one(pid_t pid);
  // SIGKILLs one child without waiting; check() and wait_all() reap it as expected.
  void kill_now(pid_t pid);
  void kill_all();
  // CPU time (user + system) of a reaped child, in seconds; 0 before it was reaped.
  double cpu_seconds(pid_t pid) const;

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    bool reaped = false;
    bool killed = false;
    double cpu_seconds = 0;
  };
  void reaped(Child& c, int status, const struct rusage& usage);
  bool reap(Child& c, int options);

  Rendezvous& rv_;
  std::vector<Child> children_;
};

// Removes every segment of the namespace (ringfeed.<ns>.*), whatever state it was left in.
void remove_namespace(const std::string& ns);
// The names the watchdog removes if a run hangs: a fetcher's status segment, its rings
// and their `kGroup` groups.
void watch_fetcher_segments(const std::string& ns, std::uint32_t partitions);

double median_of(std::vector<double> v);

// CLOCK_REALTIME in nanoseconds since the Unix epoch: the clock of record timestamps.
std::int64_t realtime_ns();

}  // namespace ringfeed::bench
