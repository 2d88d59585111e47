// ringfeed consume: attaches to a consumer group, prints each message and acks it.
//
// At-least-once: a batch is written to standard output (and the write has returned)
// before any of its messages is acked, so a consume killed at any moment loses nothing;
// what it printed but had not acked yet is delivered again.
//
// --latency measures, for each message it acks, CLOCK_REALTIME when the pop returned
// minus the message's timestamp (the producer's clock for framed records of the local
// log), in the project's histogram, and prints the percentiles when consume exits.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli_args.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/consumer_set.hpp"
#include "ringfeed/headers.hpp"
#include "ringfeed/histogram.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/names.hpp"

namespace ringfeed::cli {

namespace {

// How often consume looks for a fetcher that took over a closed ring's namespace.
constexpr auto kClosedRetry = std::chrono::milliseconds(10);

constexpr std::string_view kCommand = "consume";

constexpr Flag kFlags[] = {
    {"namespace", "NS", true, "namespace of the fetcher that fills the rings"},
    {"partition", "P|all", true, "partition number, or all: every ring of the namespace"},
    {"group", "G", true, "consumer group (created on first attach)"},
    {"mode", "exclusive|failover|shared|key_shared|broadcast", true,
     "how the group hands out messages (fixed when the group is created)"},
    {"count", "N", false,
     "exit 0 after N messages printed and acked (default: no limit); 0: attach, which "
     "creates the group, and exit"},
    {"timeout-ms", "MS", false,
     "exit 0 after MS milliseconds with nothing to take (default: wait)"},
    {"output", "value|json|none", false,
     "print each value on its own line (default), one JSON object per message (with "
     "its headers, if any), or nothing (messages are still acked)"},
    {"nack-every", "K", false,
     "nack every K-th message taken (delay 0) instead of printing it (modes with leases)"},
    {"latency", "", false,
     "at exit, print the publish-to-consume latency percentiles on standard error"},
};

constexpr std::string_view kDescription =
    "Prints messages of a consumer group and acks each one after it was written to\n"
    "standard output (at-least-once). JSON objects carry partition, offset, key, value,\n"
    "deliveries and timestamp (ns since the Unix epoch); a key or value (or header) that\n"
    "is not valid UTF-8 comes as key_base64 or value_base64 instead. SIGINT or SIGTERM\n"
    "gives back the messages held and exits 0; so do --count and --timeout-ms. Exit 1 if\n"
    "the group cannot be attached or the fetcher stopped (SIGTERM, SIGINT). When it died\n"
    "(SIGKILL, a crash), consume waits for one that takes the namespace over and moves to\n"
    "it by itself; with --timeout-ms it waits at most that long, for either.\n"
    "A new group starts at the oldest message the ring holds for the groups there are;\n"
    "--count 0 creates the group without taking anything, so it holds every message from\n"
    "then on for the consumers that attach later.\n"
    "\n"
    "--latency: when consume exits it prints one line on standard error:\n"
    "  ringfeed consume: latency (publish to consume) of N messages: p50 .. p90 .. p99 ..\n"
    "  p99.9 .. max ..\n"
    "The latency of a message is CLOCK_REALTIME when the pop that took it returned minus\n"
    "its timestamp (for file:DIR, the time produce appended it), for every message acked.\n"
    "Messages published before consume attached (a backlog: their wait says nothing about\n"
    "the pipeline) and messages without a timestamp are counted in brackets, not measured;\n"
    "if none is left to measure, the line says so.";

constexpr std::string_view kOutputs[] = {"value", "json", "none"};

constexpr std::size_t kBatch = 64;
// A pop waits at most this long, so a signal is noticed quickly.
constexpr auto kWait = std::chrono::milliseconds(100);

static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
std::atomic<bool> g_stop{false};

void on_stop_signal(int /*signal*/) {
  g_stop.store(true, std::memory_order_relaxed);
}

struct Attached {
  std::uint32_t partition;
  std::unique_ptr<Consumer> consumer;
  bool said_released = false;  // said that the partition went to another host
};

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// "850 ns", "48.2 us", "1.93 ms", "2.41 s": three significant digits, or more in seconds.
std::string format_duration(std::uint64_t ns) {
  static constexpr const char* kUnits[] = {"ns", "us", "ms", "s"};
  double v = static_cast<double>(ns);
  int unit = 0;
  while (unit < 3 && v >= 999.5) {  // 999.7 us is "1.00 ms", not "1000 us"
    v /= 1000.0;
    ++unit;
  }
  const int decimals = unit == 0 || v >= 100.0 ? 0 : v >= 10.0 ? 1 : 2;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f %s", decimals, v, kUnits[unit]);
  return buf;
}

// Publish-to-consume latency of the messages one run of consume acks.
class LatencyMeter {
 public:
  // Messages stamped before `since_ns` (CLOCK_REALTIME) are a backlog, not measured.
  explicit LatencyMeter(std::int64_t since_ns) : since_ns_(since_ns) {}

  void record(std::int64_t popped_ns, const Message& m) {
    ++taken_;
    const std::int64_t ts = m.timestamp_ns();
    if (ts <= 0) {
      ++untimed_;
    } else if (ts < since_ns_) {
      ++backlog_;
    } else {
      // A timestamp a little ahead of this clock (another host's) counts as zero.
      histogram_.record(popped_ns > ts ? static_cast<std::uint64_t>(popped_ns - ts) : 0);
    }
  }

  // The one line consume prints at exit.
  std::string line() const {
    std::string out = "ringfeed consume: latency";
    std::string excluded;
    auto add = [&](std::uint64_t n, const char* what) {
      if (n == 0) return;
      excluded += (excluded.empty() ? "" : ", ") + std::to_string(n) + what;
    };
    add(backlog_, " published before consume attached");
    add(untimed_, " without a timestamp");
    if (histogram_.count() == 0) {
      out += ": no message to measure: " + std::to_string(taken_) + " taken";
      if (!excluded.empty()) out += " (" + excluded + ")";
      return out + "\n";
    }
    out += " (publish to consume) of " + std::to_string(histogram_.count()) + " messages:";
    const std::pair<const char*, double> quantiles[] = {
        {"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}};
    for (const auto& [name, q] : quantiles) {
      out += std::string(out.back() == ':' ? " " : "  ") + name + " " +
             format_duration(histogram_.percentile(q));
    }
    out += "  max " + format_duration(histogram_.max());
    if (!excluded.empty()) out += "  (also taken: " + excluded + ")";
    return out + "\n";
  }

 private:
  std::int64_t since_ns_;
  Histogram histogram_;
  std::uint64_t taken_ = 0;
  std::uint64_t backlog_ = 0;
  std::uint64_t untimed_ = 0;
};

// ,"headers":[{"key":"K","value":"V"|null},...], or ,"headers_error":"WHY" for headers
// that do not decode.
void append_headers(std::string& out, std::string_view encoded) {
  auto headers = decode_headers(encoded);
  if (!headers) {
    out += ",\"headers_error\":\"";
    append_json_string(out, headers.error().message);
    out += '"';
    return;
  }
  out += ",\"headers\":[";
  for (std::size_t i = 0; i < headers->size(); ++i) {
    const Header& h = (*headers)[i];
    out += i == 0 ? "{" : ",{";
    append_json_bytes(out, "key", h.key);
    if (h.value_null) {
      out += ",\"value\":null}";
    } else {
      out += ',';
      append_json_bytes(out, "value", h.value);
      out += '}';
    }
  }
  out += ']';
}

void append_message(std::string& out, bool json, std::uint32_t partition, const Message& m) {
  if (!json) {
    out.append(m.value());
    out += '\n';
    return;
  }
  out += "{\"partition\":" + std::to_string(partition) +
         ",\"offset\":" + std::to_string(m.offset()) + ',';
  append_json_bytes(out, "key", m.key());
  out += ',';
  append_json_bytes(out, "value", m.value());
  out += ",\"deliveries\":" + std::to_string(m.delivery_count()) +
         ",\"timestamp\":" + std::to_string(m.timestamp_ns());
  if (!m.headers().empty()) append_headers(out, m.headers());
  out += "}\n";
}

// Gives back what a stopping consume holds. Exclusive and broadcast groups have no
// leases: what was not acked stays below the watermark and comes again on the next attach.
void release_all(Consumer& c, const Batch& batch) {
  if (!uses_leases(c.options().mode)) return;
  for (const Message& m : batch) c.release(m);
}

}  // namespace

int consume_main(std::span<char* const> argv) {
  auto args = Args::parse(argv, kFlags);
  if (!args) return usage_error(kCommand, args.error().message);
  if (args->help()) {
    std::fputs(
        usage("ringfeed consume --namespace NS --partition P|all --group G\n"
              "                        --mode exclusive|failover|shared|key_shared|broadcast\n"
              "                        [--count N] [--timeout-ms MS] [--output value|json|none]\n"
              "                        [--nack-every K] [--latency]",
              kDescription, kFlags)
            .c_str(),
        stdout);
    return kExitOk;
  }
  const std::string ns(args->get("namespace"));
  const std::string group(args->get("group"));
  if (auto ok = shm::check_name("namespace", ns); !ok) {
    return usage_error(kCommand, "flag --namespace: " + ok.error().message);
  }
  if (auto ok = shm::check_name("group", group); !ok) {
    return usage_error(kCommand, "flag --group: " + ok.error().message);
  }
  const auto mode = parse_mode(args->get("mode"));
  if (!mode) {
    return usage_error(kCommand, "flag --mode: '" + std::string(args->get("mode")) +
                                     "' is not one of exclusive|failover|shared|key_shared|"
                                     "broadcast");
  }
  const bool all = args->get("partition") == "all";
  auto partition =
      all ? Result<std::uint64_t>(0) : args->number("partition", 0, 0, shm::kMaxPartitions - 1);
  if (!partition) {
    return usage_error(kCommand, partition.error().message + "; use a partition number or all");
  }
  auto count = args->number("count", 0);
  if (!count) return usage_error(kCommand, count.error().message);
  auto timeout_ms = args->number("timeout-ms", 0, 0, 24ull * 3600 * 1000 * 365);
  if (!timeout_ms) return usage_error(kCommand, timeout_ms.error().message);
  auto output = args->choice("output", "value", kOutputs);
  if (!output) return usage_error(kCommand, output.error().message);
  auto nack_every = args->number("nack-every", 0, 1);
  if (!nack_every) return usage_error(kCommand, nack_every.error().message);
  if (nack_every.value() != 0 && !uses_leases(*mode)) {
    return usage_error(kCommand, "flag --nack-every: mode " + std::string(to_string(*mode)) +
                                     " has no leases, so nothing to nack");
  }
  const bool json = output.value() == "json";
  const bool quiet = output.value() == "none";
  const bool latency = args->has("latency");
  const bool has_count = args->has("count");
  const bool has_timeout = args->has("timeout-ms");

  std::vector<std::uint32_t> partitions;
  if (all) {
    partitions = ring_partitions(ns);
    if (partitions.empty()) {
      return runtime_error(
          kCommand, "namespace '" + ns + "' has no partition rings (is the fetcher running?)");
    }
  } else {
    partitions.push_back(static_cast<std::uint32_t>(partition.value()));
  }

  // Handlers before attaching: a signal during attach must not kill the process with
  // a group half joined.
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // A closed standard output is reported as an error (EPIPE), not a silent death.
  ::signal(SIGPIPE, SIG_IGN);

  // Messages stamped from here on were published while this consume was attached.
  LatencyMeter meter(realtime_ns());
  std::vector<Attached> consumers;
  for (std::uint32_t p : partitions) {
    auto c = Consumer::attach({.ns = ns, .partition = p, .group = group, .mode = *mode});
    if (!c && c.error().code == ENOENT && !all) {
      // The fetcher may well run, with other partitions: say which. (One that is taking
      // the namespace over may just be making this ring again: then the error as it is.)
      if (const auto served = ring_partitions(ns);
          !served.empty() && std::find(served.begin(), served.end(), p) == served.end()) {
        std::string list;
        for (std::size_t i = 0; i < served.size() && i < 16; ++i) {
          list += (i == 0 ? "" : ", ") + std::to_string(served[i]);
        }
        if (served.size() > 16) list += ", ... (" + std::to_string(served.size()) + " in all)";
        return runtime_error(kCommand, "namespace '" + ns + "' has no partition " +
                                           std::to_string(p) + " (its rings are partition" +
                                           (served.size() == 1 ? " " : "s ") + list + ")");
      }
    }
    if (!c) return runtime_error(kCommand, c.error().message);
    consumers.push_back({p, std::move(c.value())});
  }
  // Every exit from here on reports the latency first (when asked), then why it stopped.
  auto report = [&] {
    if (latency) write_all(STDERR_FILENO, meter.line());
  };
  auto fail = [&](const std::string& message) {
    report();
    return runtime_error(kCommand, message);
  };

  const auto timeout = std::chrono::milliseconds(timeout_ms.value());
  const std::uint64_t limit = has_count ? count.value() : UINT64_MAX;
  std::uint64_t printed = 0;
  std::uint64_t taken = 0;
  auto idle_since = std::chrono::steady_clock::now();
  std::string out;
  std::vector<const Message*> to_ack;
  bool said_died = false;        // "waiting for one that takes it over", said once per death
  std::uint64_t moves_seen = 0;  // the consumers' moves to new fetchers, when last said
  // One set of every partition's consumer: a pop takes from whichever has messages, in
  // turn, and sleeps on all the rings at once when none has.
  ConsumerSet set;
  for (Attached& a : consumers) {
    if (Status added = set.add(*a.consumer); !added) return fail(added.error().message);
  }
  while (printed < limit && !g_stop.load(std::memory_order_relaxed)) {
    std::chrono::nanoseconds wait = kWait;
    if (has_timeout) {
      const auto left = timeout - (std::chrono::steady_clock::now() - idle_since);
      wait = std::clamp<std::chrono::nanoseconds>(left, std::chrono::nanoseconds(0), wait);
    }
    const auto max = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, limit - printed));
    const ConsumerSet::Popped popped = set.pop(max, wait);
    const bool found = popped.consumer != nullptr && popped.batch->status() == PopStatus::ok;
    if (popped.consumer != nullptr) {
      Attached& a = consumers[popped.index];
      const Batch& batch = *popped.batch;
      if (batch.status() != PopStatus::end_of_partition) a.said_released = false;
      switch (batch.status()) {
        case PopStatus::ok:
          said_died = false;
          break;
        case PopStatus::timed_out:
          break;
        case PopStatus::end_of_partition:
          // Not an error: the partition may come back to this host; the others go on.
          if (!a.said_released) {
            std::fprintf(stderr, "ringfeed consume: partition %u: %s; waiting for it\n",
                         a.partition, to_string(batch.status()));
            a.said_released = true;
          }
          break;
        case PopStatus::closed:
          // A fetcher that died (not one that stopped) may be replaced: the next pop moves
          // to the new one by itself; meanwhile this counts as nothing to take. With
          // --timeout-ms the same goes for one that stopped, in case it is started again.
          // A successor runs but cannot take this consumer: no use waiting for it.
          if (!has_timeout && !a.consumer->reattach_error().empty()) {
            return fail("cannot move to the fetcher that took namespace '" + ns +
                        "' over: " + a.consumer->reattach_error());
          }
          if (has_timeout || !a.consumer->writer_shut_down()) {
            // Said again after a move to a new fetcher, if that one dies too.
            std::uint64_t moves = 0;
            for (const Attached& c : consumers) moves += c.consumer->reattached();
            if (moves != moves_seen) said_died = false;
            moves_seen = moves;
            if (!has_timeout && !said_died) {
              std::fprintf(stderr,
                           "ringfeed consume: the fetcher of namespace '%s' died; waiting for "
                           "one that takes it over\n",
                           ns.c_str());
              said_died = true;
            }
            std::this_thread::sleep_for(kClosedRetry);
            break;
          }
          return fail("the fetcher of namespace '" + ns + "' stopped: the ring of partition " +
                      std::to_string(a.partition) + " is closed (after " + std::to_string(printed) +
                      " messages " + (quiet ? "taken" : "printed") + ")");
        case PopStatus::in_flight_full:
        case PopStatus::fenced:
        case PopStatus::corrupt:
          return fail(describe_group(a.consumer->options()) + ": " + to_string(batch.status()));
      }
    }
    if (!found) {
      if (has_timeout && std::chrono::steady_clock::now() - idle_since >= timeout) break;
      continue;
    }
    {
      Attached& a = consumers[popped.index];
      const Batch& batch = *popped.batch;
      const std::int64_t popped_ns = latency ? realtime_ns() : 0;
      if (g_stop.load(std::memory_order_relaxed)) {
        release_all(*a.consumer, batch);
        break;
      }
      out.clear();
      to_ack.clear();
      for (const Message& m : batch) {
        ++taken;
        if (nack_every.value() != 0 && taken % nack_every.value() == 0) {
          a.consumer->nack(m, std::chrono::milliseconds(0));
          continue;
        }
        if (!quiet) append_message(out, json, a.partition, m);
        to_ack.push_back(&m);
      }
      if (!write_all(STDOUT_FILENO, out)) {
        const int err = errno;
        release_all(*a.consumer, batch);
        return fail(std::string("cannot write to standard output: ") + std::strerror(err));
      }
      for (const Message* m : to_ack) {
        const AckStatus st = a.consumer->ack(*m);
        if (st == AckStatus::ok && latency) meter.record(popped_ns, *m);
        if (st != AckStatus::ok) {
          std::fprintf(stderr,
                       "ringfeed consume: ack of offset %llu of partition %u failed (%s); it "
                       "will be delivered again\n",
                       static_cast<unsigned long long>(m->offset()), a.partition, to_string(st));
        }
      }
      printed += to_ack.size();
    }
    idle_since = std::chrono::steady_clock::now();
  }
  report();
  return kExitOk;
}

}  // namespace ringfeed::cli
