// ringfeed fetch: runs the fetcher of a namespace in the foreground until SIGINT or
// SIGTERM, then lets it commit what was acked and remove its segments.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli_args.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/lease.hpp"
#include "shm/names.hpp"
#include "shm/ring_layout.hpp"
#include "shm/segment.hpp"

#if RINGFEED_HAVE_FETCHER
#include "io/source.hpp"
#include "ringfeed/fetcher.hpp"
#endif

namespace ringfeed::cli {

namespace {

constexpr std::string_view kCommand = "fetch";

constexpr Flag kFlags[] = {
    {"namespace", "NS", true, "namespace to serve (segments ringfeed.NS.* in /dev/shm)"},
    {"source", "URI", true,
     "upstream: file:DIR[?format=lines], redis://HOST:PORT?streams=S0,S1&group=G, "
     "kafka://HOST:PORT?topic=T&group=G"},
    {"partitions", "N", false, "partitions to serve (default: what the source finds)"},
    {"ring-mb", "MB", false, "record area of each ring in MiB, a power of two (default 64)"},
    {"lease-ms", "MS", false, "default lease length of new groups (default 30000)"},
    {"max-deliveries", "K", false,
     "deliveries before a message is dead-lettered, in new groups (default 5)"},
    {"dead-letter", "DIR", false,
     "directory of the dead-letter logs and of the group list, made if missing (default: "
     "NS.dead-letters in the directory of a file: source, else in the current directory)"},
    {"access-group", "GROUP", false,
     "let the members of GROUP attach: rings readable by the group (0640) and group "
     "segments and dead-letter logs writable by it (0660), owned by GROUP (default: this "
     "user only, 0600)"},
};

constexpr std::string_view kDescription =
    "Runs the fetcher of namespace NS in the foreground: pulls records from the source\n"
    "into one shared-memory ring per partition, serves the consumer groups' leases, and\n"
    "commits upstream what every group acked. SIGINT or SIGTERM stops it cleanly: it\n"
    "commits, writes the list of its groups to the file groups of the dead-letter dir,\n"
    "removes its segments and exits 0; the next fetch creates those groups again, each\n"
    "at the start of its rings (remove the file to start without them; a group nobody\n"
    "consumes holds its ring). A second fetch on a live namespace is refused; one on a\n"
    "namespace whose fetcher died takes it over, groups included.";

#if RINGFEED_HAVE_FETCHER
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
static_assert(std::atomic<Fetcher*>::is_always_lock_free, "read from a signal handler");
std::atomic<bool> g_stop{false};
std::atomic<Fetcher*> g_fetcher{nullptr};

void on_stop_signal(int /*signal*/) {
  g_stop.store(true, std::memory_order_relaxed);
  // Fetcher::wake is async-signal-safe; before the fetcher exists there is nothing to wake.
  if (Fetcher* f = g_fetcher.load(std::memory_order_acquire)) f->wake();
}
#endif

}  // namespace

int fetch_main(std::span<char* const> argv) {
  auto args = Args::parse(argv, kFlags);
  if (!args) return usage_error(kCommand, args.error().message);
  if (args->help()) {
    std::fputs(usage("ringfeed fetch --namespace NS --source URI [--partitions N] [--ring-mb MB]\n"
                     "                      [--lease-ms MS] [--max-deliveries K] "
                     "[--dead-letter DIR]\n"
                     "                      [--access-group GROUP]",
                     kDescription, kFlags)
                   .c_str(),
               stdout);
    return kExitOk;
  }
  const std::string ns(args->get("namespace"));
  if (auto ok = shm::check_name("namespace", ns); !ok) {
    return usage_error(kCommand, "flag --namespace: " + ok.error().message);
  }
  const std::string source(args->get("source"));
  if (source.empty()) return usage_error(kCommand, "flag --source: empty URI");
  auto partitions = args->number("partitions", 0, 1, shm::kMaxPartitions);
  if (!partitions) return usage_error(kCommand, partitions.error().message);
  constexpr std::uint64_t kMaxRingMb = shm::kMaxRingCapacity >> 20;
  auto ring_mb = args->number("ring-mb", 64, 1, kMaxRingMb);
  if (!ring_mb) return usage_error(kCommand, ring_mb.error().message);
  if (!std::has_single_bit(ring_mb.value())) {
    return usage_error(
        kCommand, "flag --ring-mb: " + std::to_string(ring_mb.value()) + " is not a power of two");
  }
  auto lease_ms = args->number("lease-ms", 0, 1, 24ull * 3600 * 1000);
  if (!lease_ms) return usage_error(kCommand, lease_ms.error().message);
  auto max_deliveries = args->number("max-deliveries", 0, 1, shm::kMaxDeliveriesLimit);
  if (!max_deliveries) return usage_error(kCommand, max_deliveries.error().message);
  if (args->has("dead-letter") && args->get("dead-letter").empty()) {
    return usage_error(kCommand, "flag --dead-letter: empty directory");
  }
  shm::SegmentAccess access;
  if (args->has("access-group")) {
    auto gid = shm::find_group(args->get("access-group"));
    if (!gid) return usage_error(kCommand, "flag --access-group: " + gid.error().message);
    access.group = gid.value();
  }

#if RINGFEED_HAVE_FETCHER
  // A URI that cannot be right (scheme, parameters) is the command line's fault.
  if (Status ok = io::check_source_uri(
          source, {.partitions = static_cast<std::uint32_t>(partitions.value())});
      !ok) {
    return usage_error(kCommand, "flag --source: " + ok.error().message);
  }
  FetcherOptions options;
  options.ns = ns;
  options.source = source;
  options.partitions = static_cast<std::uint32_t>(partitions.value());
  options.ring_bytes = ring_mb.value() << 20;
  options.group_defaults.lease_ms = static_cast<std::uint32_t>(lease_ms.value());
  options.group_defaults.max_deliveries = static_cast<std::uint32_t>(max_deliveries.value());
  options.dead_letter_dir = std::string(args->get("dead-letter"));
  options.access = access;

  // Handlers first: a signal during start-up only sets the flag, and run() sees it at once.
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // Threads the fetcher starts inherit a mask that blocks the stop signals, so the handler
  // runs only on this thread, never while this thread is destroying the fetcher.
  sigset_t stop_signals;
  ::sigemptyset(&stop_signals);
  ::sigaddset(&stop_signals, SIGINT);
  ::sigaddset(&stop_signals, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  auto fetcher = Fetcher::start(options);
  if (fetcher) g_fetcher.store(fetcher->get(), std::memory_order_release);
  // Says on stderr when a partition is held back (an upstream that is down, a commit
  // that fails) and when it goes on again, and the source's own warnings; started here
  // so that it blocks the signals.
  std::jthread reporter;
  if (fetcher) {
    reporter = std::jthread([f = fetcher->get()](std::stop_token stop) {
      std::mutex m;
      std::condition_variable_any cv;
      std::vector<std::string> said;
      std::string said_of_source;
      for (;;) {
        if (std::string w = f->source_warning(); w != said_of_source) {
          if (w.empty()) {
            std::fprintf(stderr, "ringfeed fetch: the source's warning is over\n");
          } else {
            std::fprintf(stderr, "ringfeed fetch: warning: %s\n", w.c_str());
          }
          said_of_source = std::move(w);
        }
        const auto stats = f->stats();
        said.resize(stats.size());
        for (const auto& s : stats) {
          if (s.stopped || s.warning == said[s.partition]) continue;
          if (s.warning.empty()) {
            std::fprintf(stderr, "ringfeed fetch: partition %u goes on\n", s.partition);
          } else {
            std::fprintf(stderr, "ringfeed fetch: partition %u held back: %s\n", s.partition,
                         s.warning.c_str());
          }
          said[s.partition] = s.warning;
        }
        std::unique_lock lock(m);
        cv.wait_for(lock, stop, std::chrono::seconds(1), [&] { return stop.stop_requested(); });
        if (stop.stop_requested()) break;
      }
    });
  }
  ::pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  if (!fetcher) return runtime_error(kCommand, fetcher.error().message);
  const std::size_t served = (*fetcher)->stats().size();
  std::fprintf(stderr, "ringfeed fetch: namespace %s, source %s, %zu partition%s, pid %d\n",
               ns.c_str(), source.c_str(), served, served == 1 ? "" : "s",
               static_cast<int>(::getpid()));
  const Status st = (*fetcher)->run(g_stop);
  reporter.request_stop();
  reporter.join();
  // The handler must not see the fetcher once it is destroyed.
  g_fetcher.store(nullptr, std::memory_order_release);
  if (!st) return runtime_error(kCommand, st.error().message);
  std::fprintf(stderr,
               "ringfeed fetch: stopped: what the groups acked is committed, the segments of "
               "namespace %s are removed\n",
               ns.c_str());
  return kExitOk;
#else
  static_cast<void>(access);
  return runtime_error(kCommand, "this build of ringfeed has no fetcher (namespace '" + ns +
                                     "', source '" + source + "')");
#endif
}

}  // namespace ringfeed::cli
