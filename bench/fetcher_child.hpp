// A fetcher on a local log (file:DIR) in a child process, as ingest and latency run it,
// and what the processes around it need: the log file of a partition, a consumer that
// attaches once the fetcher has created its ring, a wait on a condition that watches
// the children meanwhile, and a scratch directory for the logs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "children.hpp"
#include "harness.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"

namespace ringfeed::bench {

// DIR/P.log: the log of partition P of a file:DIR source.
std::string log_path(const std::string& dir, std::uint32_t partition);

// What the fetcher child and its parent share (in a shared mapping).
struct FetcherControl {
  alignas(kLine) std::atomic<bool> stop;  // run()'s flag: set by the parent, or by SIGTERM
  alignas(kLine) std::atomic<std::int64_t> start_ns;  // just before Fetcher::start
  std::atomic<std::int64_t> started_ns;               // Fetcher::start returned: rings exist
  std::atomic<std::uint64_t> fetched;                 // messages it published, at its end
};

// The fetcher child's body: Fetcher::start with `options`, then run() until ctl.stop is
// set or SIGTERM arrives (the handler sets ctl.stop and wakes run(), as `ringfeed fetch`
// does); stores its message count in ctl.fetched. Returns the exit status: 0 after a
// clean stop, 1 after a failure (in rv).
int fetcher_process(Rendezvous& rv, FetcherControl& ctl, const FetcherOptions& options);

// Attaches to the ring of `options` once its fetcher created it (up to 10 s).
std::unique_ptr<Consumer> attach_when_ready(Rendezvous& rv, const ConsumerOptions& options);

// Waits until pred(), a failure (of rv, or of a child), or `seconds`; false unless
// pred() came true.
template <typename Pred>
bool wait_until(Rendezvous& rv, Children& kids, double seconds, const std::string& what,
                Pred&& pred) {
  const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(seconds * 1e9);
  while (!pred()) {
    if (!kids.check()) return false;
    if (now_ns() > deadline) {
      rv.fail("waited " + std::to_string(static_cast<int>(seconds)) + " s for " + what);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// A directory for logs: `given` (created if missing; it must hold no log or checkpoint
// yet), or, if `given` is empty, a new one under $TMPDIR (or /tmp) named
// <stem>-XXXXXX, removed with this object.
class WorkDir {
 public:
  WorkDir(const std::string& given, const std::string& stem);
  ~WorkDir();
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool ours_ = false;
};

}  // namespace ringfeed::bench
