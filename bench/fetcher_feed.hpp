// The rings of a latency run fed through a real fetcher namespace rather than written
// by the bench itself: a new directory with one empty log per partition (DIR/P.log), and
// a fetcher child process serving them (Fetcher on file:DIR). The bench appends to the
// logs; consumers attach to the namespace as they would in production.
//
// stop() ends the fetcher as an operator does, with SIGTERM, and checks that it exited
// with status 0 and left no segment of the namespace behind. The destructor kills a
// fetcher that still runs and removes the namespace's segments and the directory,
// whatever happened before; so does the watchdog if a run hangs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "children.hpp"
#include "fetcher_child.hpp"
#include "harness.hpp"
#include "io/log_appender.hpp"

namespace ringfeed::bench {

class FetcherFeed {
 public:
  struct Options {
    std::string ns;
    std::uint32_t partitions = 1;
    std::uint64_t ring_bytes = 64ull << 20;
    int cpu = kAnyCpu;  // where the fetcher runs
  };

  FetcherFeed(Rendezvous& rv, Options options);
  ~FetcherFeed();
  FetcherFeed(const FetcherFeed&) = delete;
  FetcherFeed& operator=(const FetcherFeed&) = delete;

  // Creates the logs, starts the fetcher, and waits until its rings exist (up to 60 s:
  // Fetcher::start allocates every page of every ring). False after rv.fail.
  bool start();
  // False once the fetcher has exited or died, with the reason in rv.
  bool alive();
  // SIGTERM, then the exit status and the namespace's segments are checked. False after
  // rv.fail.
  bool stop();

  const std::string& dir() const { return dir_.path(); }
  // CPU time (user + system) the fetcher used, in seconds, once stop() reaped it.
  double cpu_seconds() const { return kids_.cpu_seconds(pid_); }

 private:
  Rendezvous& rv_;
  const Options o_;
  SharedObject<FetcherControl> ctl_;
  WorkDir dir_;  // declared before kids_: the fetcher is gone before its directory
  Children kids_;
  pid_t pid_ = -1;
};

// Appends one lap of a ring of `ring_bytes` (lap_messages records of kValueBytes) to
// `log`, so that the fetcher and the reader go once over every page of the ring before
// anything is measured, as publish_lap does for a bare ring.
bool append_lap(Rendezvous& rv, io::LogAppender& log, std::uint64_t ring_bytes);

}  // namespace ringfeed::bench
