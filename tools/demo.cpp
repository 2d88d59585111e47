// ringfeed-demo: the main job in one command. A writer process publishes into a
// partition ring; worker processes attach in exclusive and broadcast mode, take every
// message, ack it, and report the one-way latency from publish to pop as percentiles.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/histogram.hpp"
#include "ringfeed/writer.hpp"

namespace {

using namespace std::chrono_literals;

struct Options {
  std::uint64_t messages = 200'000;
  std::uint64_t rate = 20'000;  // messages per second
  std::uint64_t spin_us = 20;   // how long a worker polls before it sleeps in the futex
  int broadcast_workers = 2;
  std::uint32_t value_size = 64;
  std::string ns = "demo";
};

constexpr const char* kUsage =
    "usage: ringfeed-demo [--messages N] [--rate MSGS_PER_S] [--broadcast-workers K]\n"
    "                     [--value-size BYTES] [--spin-us US] [--namespace NS]\n"
    "\n"
    "Publishes N messages into a shared-memory partition ring at the given rate. One\n"
    "worker process consumes them in exclusive mode (group 'billing'), K workers in\n"
    "broadcast mode (group 'audit'); each prints its publish-to-pop latency percentiles.\n"
    "Workers poll for --spin-us microseconds, then sleep in the kernel until woken.\n"
    "Defaults: --messages 200000 --rate 20000 --broadcast-workers 2 --value-size 64\n"
    "          --spin-us 20 --namespace demo\n";

std::atomic<bool> stop{false};

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "ringfeed-demo: %s\n(see ringfeed-demo --help)\n", why.c_str());
  return 2;
}

// A worker: attach, consume `expected` messages, print latency percentiles.
int worker(const Options& o, const char* group, ringfeed::Mode mode, int index, int ready_fd) {
  auto c = ringfeed::Consumer::attach({.ns = o.ns,
                                       .partition = 0,
                                       .group = group,
                                       .mode = mode,
                                       .spin = std::chrono::microseconds(o.spin_us)});
  if (!c) {
    std::fprintf(stderr, "worker %s#%d: %s\n", group, index, c.error().message.c_str());
    return 1;
  }
  const char one = 1;
  if (::write(ready_fd, &one, 1) != 1) return 1;
  ringfeed::Histogram h;
  std::uint64_t got = 0;
  while (got < o.messages) {
    const auto& batch = (*c)->pop(64, 2s);
    if (batch.status() != ringfeed::PopStatus::ok) {
      if (batch.status() == ringfeed::PopStatus::timed_out && !stop) continue;
      std::fprintf(stderr, "worker %s#%d: stopped after %llu messages: %s\n", group, index,
                   static_cast<unsigned long long>(got), ringfeed::to_string(batch.status()));
      break;
    }
    const std::int64_t now = now_ns();
    for (const auto& m : batch) h.record(static_cast<std::uint64_t>(now - m.timestamp_ns()));
    got += batch.size();
    (*c)->ack(batch);
  }
  char line[512];
  std::snprintf(line, sizeof line, "%-9s worker %-6s #%d pid %-7d %8llu msgs  %s\n",
                std::string(ringfeed::to_string(mode)).c_str(), group, index, ::getpid(),
                static_cast<unsigned long long>(got), h.summary().c_str());
  std::fputs(line, stdout);
  std::fflush(stdout);
  return got == o.messages ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return usage_error("option " + std::string(a) + " needs a value");
    std::string_view v = argv[++i];
    std::uint64_t n = 0;
    if (a == "--namespace") {
      o.ns = std::string(v);
    } else if (!parse_u64(v, n)) {
      return usage_error("option " + std::string(a) + " needs a number, got '" + std::string(v) +
                         "'");
    } else if (a == "--messages") {
      o.messages = n;
    } else if (a == "--rate") {
      if (n == 0) return usage_error("--rate must be at least 1");
      o.rate = n;
    } else if (a == "--broadcast-workers") {
      if (n > 15) return usage_error("--broadcast-workers must be at most 15");
      o.broadcast_workers = static_cast<int>(n);
    } else if (a == "--spin-us") {
      o.spin_us = n;
    } else if (a == "--value-size") {
      if (n < 1 || n > 65536) return usage_error("--value-size must be between 1 and 65536");
      o.value_size = static_cast<std::uint32_t>(n);
    } else {
      return usage_error("unknown option " + std::string(a));
    }
  }

  auto w = ringfeed::Writer::create({.ns = o.ns, .partition = 0, .capacity = 64u << 20});
  if (!w) {
    std::fprintf(stderr, "ringfeed-demo: %s\n", w.error().message.c_str());
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { stop = true; };
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  std::printf(
      "ringfeed-demo: %llu messages of %u bytes at %llu/s into ring %s;\n"
      "  1 exclusive worker (group billing), %d broadcast workers (group audit)\n",
      static_cast<unsigned long long>(o.messages), o.value_size,
      static_cast<unsigned long long>(o.rate), (*w)->segment_name().c_str(), o.broadcast_workers);
  std::fflush(stdout);

  int ready[2];
  if (::pipe(ready) != 0) return 1;
  std::vector<pid_t> workers;
  auto spawn = [&](const char* group, ringfeed::Mode mode, int index) {
    pid_t pid = ::fork();
    if (pid == 0) std::_Exit(worker(o, group, mode, index, ready[1]));
    workers.push_back(pid);
  };
  spawn("billing", ringfeed::Mode::exclusive, 0);
  for (int k = 0; k < o.broadcast_workers; ++k) spawn("audit", ringfeed::Mode::broadcast, k);
  // Publish only once every worker is attached, so every group holds every message.
  for (std::size_t n = 0; n < workers.size();) {
    char buf[16];
    const ssize_t r = ::read(ready[0], buf, sizeof buf);
    if (r <= 0) {
      std::fprintf(stderr, "ringfeed-demo: a worker failed to attach\n");
      return 1;
    }
    n += static_cast<std::size_t>(r);
  }

  std::string value(o.value_size, 'v');
  const std::int64_t interval = 1'000'000'000 / static_cast<std::int64_t>(o.rate);
  // Sleep between messages (absolute deadlines, tight timer slack) rather than spin: on
  // a small machine the writer must leave the cores to the workers.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  std::int64_t next = now_ns();
  std::uint64_t sent = 0;
  for (; sent < o.messages && !stop; ++sent) {
    next += interval;
    const timespec at{static_cast<time_t>(next / 1'000'000'000),
                      static_cast<long>(next % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) == EINTR && !stop) {
    }
    ringfeed::OutMessage m{
        .key = "k", .value = value, .upstream_offset = sent, .timestamp_ns = now_ns()};
    if ((*w)->publish({&m, 1}, 5s) != 1) {
      std::fprintf(stderr, "ringfeed-demo: ring full for 5 s at message %llu; workers stuck?\n",
                   static_cast<unsigned long long>(sent));
      break;
    }
  }
  if (sent < o.messages) {
    stop = true;
    (*w)->close();  // workers drain what was published, then stop
  }
  int failed = 0;
  for (pid_t p : workers) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  std::printf("published %llu messages; %d of %zu workers took all of them\n",
              static_cast<unsigned long long>(sent), static_cast<int>(workers.size()) - failed,
              workers.size());
  return failed == 0 && sent == o.messages ? 0 : 1;
}
