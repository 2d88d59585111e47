// The subcommands of ringfeed-bench. Each parses its own flags (throwing UsageError),
// prints its report, and returns the exit status.
#pragma once

#include "cli.hpp"

namespace ringfeed::bench {

int latency_main(ArgReader& args);
int throughput_main(ArgReader& args);
int jitter_main(ArgReader& args);
int shared_main(ArgReader& args);
int ingest_main(ArgReader& args);
int failover_main(ArgReader& args);
int idle_main(ArgReader& args);
int redis_main(ArgReader& args);
int kafka_main(ArgReader& args);

// The takeover of `shared`, once, on a ring of namespace `ns`: nanoseconds from the
// SIGKILL of a consumer holding `leases` leases to the last of them popped again by a
// second consumer; negative after a failure (printed on stderr).
double shared_takeover_ns(std::uint64_t leases, bool pin, const std::string& ns);

// "AMD EPYC, 2 cpus online": printed with every report.
std::string machine_description();
// What a run says about itself besides its figures: pinning, how long it waited for
// idle cpus, and how much of the cpus' time other processes took meanwhile.
std::string run_note(const std::string& pin, const std::string& idle_wait, double others_share);

}  // namespace ringfeed::bench
