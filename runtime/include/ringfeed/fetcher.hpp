// The fetcher: the per-host daemon that pulls records from an upstream source
// (io/source.hpp) into one partition ring per partition, runs the lease reaper of every
// group, and commits upstream the minimum low watermark over all groups of a partition.
//
//   auto f = ringfeed::Fetcher::start({.ns = "orders", .source = "file:/var/log/orders"});
//   if (!f) { std::cerr << f.error().message << "\n"; return 1; }
//   (*f)->run(stop_flag);   // until stop_flag is set (a signal handler may set it)
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/source.hpp"
#include "shm/group.hpp"
#include "shm/result.hpp"

namespace ringfeed {

struct FetcherOptions {
  std::string ns;
  std::string source;                      // URI, see io/source.hpp
  std::uint32_t partitions = 0;            // 0: what the source finds
  std::uint64_t ring_bytes = 64ull << 20;  // record area of each ring, a power of two
  // Defaults for groups that consumers create on these rings.
  shm::GroupSettings group_defaults{};
  std::string dead_letter_dir;  // empty: <namespace>.dead-letters under the source's dir
                                // for file:, else the current directory
};

struct PartitionStats {
  std::uint32_t partition = 0;
  std::uint64_t fetched = 0;    // upstream position fetched up to
  std::uint64_t committed = 0;  // upstream position committed
  std::uint64_t ring_used = 0;  // bytes of the ring holding unacked data
  std::uint64_t ring_capacity = 0;
  std::uint64_t messages = 0;  // messages published into the ring by this fetcher
  std::string error;           // a stopped partition says why
};

class Fetcher {
 public:
  // Creates the namespace's rings. Refused if a live fetcher serves the namespace; the
  // segments of one that died are taken over.
  static Result<std::unique_ptr<Fetcher>> start(const FetcherOptions& options);
  virtual ~Fetcher() = default;

  // Fetches, publishes, reaps and commits until `stop` becomes true; then commits what
  // was acked, closes the rings (consumers see `closed`) and removes the segments.
  // Returns an error only for a failure of the whole source.
  virtual Status run(const std::atomic<bool>& stop) = 0;
  // Makes run() look at `stop` at once. Async-signal-safe (for SIGTERM/SIGINT handlers).
  virtual void wake() = 0;

  virtual std::vector<PartitionStats> stats() const = 0;
};

}  // namespace ringfeed
