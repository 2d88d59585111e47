// ringfeed-bench: cross-process latency and throughput of ringfeed against baselines
// measured in the same run. Exit status: 0 done, 1 a run failed (what and where on
// stderr), 2 a usage error (one line on stderr).
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "commands.hpp"

namespace {

constexpr const char* kUsage = R"(usage: ringfeed-bench <command> [flags]

commands:
  latency      one-way latency between two processes: ringfeed with a spinning and a
               sleeping reader, against a cache-line floor and Boost message_queue
  throughput   64-byte messages per second between two processes: ringfeed against
               Boost message_queue and a bare single-producer single-consumer ring
  jitter       how often the machine stops a spinning process, and for how long:
               the environment's own latency tail
  shared       consumer groups: pop + ack throughput of shared and key_shared groups of
               1, 2 and 4 consumer processes, of a failover group (active + standby) and
               of broadcast groups of 2 and 4, against an exclusive consumer, and lease
               takeover after SIGKILL
  ingest       local-log ingest: a fetcher on file:DIR feeding consumer processes
               against a plain sequential read of the same files, and produce-to-consume
               latency against a plain inotify tail
  failover     failover groups: time from the SIGKILL of the active consumer to the
               standby's first message, against the shared-group lease takeover
  idle         CPU used by a fetcher with nothing to fetch, against a process that
               wakes as often
  redis        consumers of a Redis stream: workers through ringfeed against workers
               reading it directly with hiredis (XREADGROUP COUNT c + XACK per batch):
               messages/s, XADD-to-worker latency, redis-server CPU per message
  kafka        consumers of a Kafka topic (a mock cluster): workers through ringfeed
               against librdkafka consumers reading it directly: messages/s, broadcast
               deliveries/s and bytes fetched per message, produce-to-worker latency

Every figure comes with same-run baselines, per run and as the median of --runs runs.
'ringfeed-bench <command> --help' lists a command's flags.
)";

}  // namespace

namespace ringfeed::bench {

std::string machine_description() {
  std::string model = "unknown cpu";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) model = line.substr(line.find_first_not_of(" \t", colon + 1));
      break;
    }
  }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " cpus online";
}

std::string run_note(const std::string& pin, const std::string& idle_wait, double others_share) {
  char share[64];
  std::snprintf(share, sizeof share, "other processes used %.1f%% of the cpus", 100 * others_share);
  return pin + "; " + (idle_wait.empty() ? "" : idle_wait + "; ") + share;
}

}  // namespace ringfeed::bench

int main(int argc, char** argv) {
  using namespace ringfeed::bench;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fprintf(
        stderr,
        "ringfeed-bench: missing command: latency, throughput, jitter, shared, ingest, failover, "
        "idle, redis or kafka (see --help)\n");
    return 2;
  }
  const std::string_view command = args.front();
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  ArgReader rest({args.begin() + 1, args.end()});
  try {
    if (command == "latency") return latency_main(rest);
    if (command == "throughput") return throughput_main(rest);
    if (command == "jitter") return jitter_main(rest);
    if (command == "shared") return shared_main(rest);
    if (command == "ingest") return ingest_main(rest);
    if (command == "failover") return failover_main(rest);
    if (command == "idle") return idle_main(rest);
    if (command == "redis") return redis_main(rest);
    if (command == "kafka") return kafka_main(rest);
    throw UsageError("unknown command '" + std::string(command) +
                     "': expected latency, throughput, jitter, shared, ingest, failover, idle or "
                     "redis (see --help)");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "ringfeed-bench: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringfeed-bench %s: %s\n", std::string(command).c_str(), e.what());
    return 1;
  }
}
