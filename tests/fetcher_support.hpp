// A real fetcher in a child process, for the crash and soak tests: started, stopped by
// SIGTERM (cleanly) or killed with SIGKILL, and started again on the same namespace.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>

#include "ringfeed/fetcher.hpp"
#include "test_support.hpp"

namespace ringfeed::test {

namespace fetcher_child {
// Set by the child's SIGTERM handler; the fetcher's run() returns and cleans up.
inline std::atomic<bool> stop{false};
inline Fetcher* fetcher = nullptr;
}  // namespace fetcher_child

// Starts a fetcher with `options` in a child process (which dies with the test process)
// and returns its pid once Fetcher::start succeeded there, or -1 if it did not.
inline pid_t spawn_fetcher(const FetcherOptions& options) {
  int ready[2];
  if (::pipe(ready) != 0) return -1;
  const pid_t pid = fork_child([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(ready[0]);
    auto f = Fetcher::start(options);
    if (!f) {
      std::fprintf(stderr, "fetcher child: %s\n", f.error().message.c_str());
      return 2;
    }
    fetcher_child::fetcher = f->get();
    struct sigaction sa {};
    sa.sa_handler = [](int) {
      fetcher_child::stop.store(true);
      fetcher_child::fetcher->wake();
    };
    ::sigaction(SIGTERM, &sa, nullptr);
    const char one = 1;
    if (::write(ready[1], &one, 1) != 1) return 3;
    auto done = (*f)->run(fetcher_child::stop);
    if (!done) std::fprintf(stderr, "fetcher child: %s\n", done.error().message.c_str());
    return done.ok() ? 0 : 4;
  });
  ::close(ready[1]);
  char byte = 0;
  const bool started = ::read(ready[0], &byte, 1) == 1;
  ::close(ready[0]);
  if (!started) {
    wait_child(pid, std::chrono::seconds(10));
    return -1;
  }
  return pid;
}

}  // namespace ringfeed::test
