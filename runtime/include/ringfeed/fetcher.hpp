// The fetcher: the per-host daemon that pulls records from an upstream source
// (io/source.hpp) into one partition ring per partition, runs the lease reaper of every
// group, and commits upstream the minimum low watermark over all groups of a partition.
//
//   auto f = ringfeed::Fetcher::start({.ns = "orders", .source = "file:/var/log/orders"});
//   if (!f) { std::cerr << f.error().message << "\n"; return 1; }
//   (*f)->run(stop_flag);   // until stop_flag is set (a signal handler may set it)
//
// What it guarantees:
// - Namespace: the status segment ringfeed.<ns>.fetcher (shm/fetcher_layout.hpp) is
//   created first and removed last. A live fetcher there refuses a second one; a dead
//   one's segments (status, rings, groups) are removed and created anew. Its groups are
//   created again at the start of the new rings (which start at the committed position),
//   so that a group whose consumers come back late still gets everything it had not
//   acked, and nothing is committed before it acked it.
// - Commit: a record counts as acked once the ring's reclaim limit (the lowest watermark
//   over its groups) passed its end; a partition commits the next_offset of its last such
//   record, at most every commit_interval and once on stop. A ring without a group (or
//   with fenced groups only) acks nothing: nothing is committed, and once the ring is full
//   fetching waits for a group instead of reusing space that nobody read.
// - Backpressure: a full ring pauses its partition at the source; space is looked for
//   again after 50 us, then less often while none comes back (up to every millisecond),
//   and the refused record is the first one offered after. A ring without a group waits
//   for one to appear.
// - A record that can never fit its ring stops that partition, with the reason in the
//   status segment and stats(); the other partitions go on.
// - Records go into a ring in the source's batches, each published with one commit.
// - Idle, it sleeps in the source's poll: until records come, wake(), a group appears,
//   or the reaper has work (RingWriter::next_service_ns: the 10 ms liveness checks while
//   a leased group has consumers, lease deadlines, dead letters to store), a commit is
//   due for records published and not committed yet, or a paused partition may find
//   space; and at least once a second. With a source that cannot watch descriptors
//   (Source::watch_readable), it also looks for new groups every 100 ms.
#pragma once

#include <atomic>
#include <chrono>
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
  // How often acked positions are committed upstream (also once on shutdown).
  std::chrono::milliseconds commit_interval{50};
  // Who besides this user may attach (ringfeed fetch --access-group): the rings and the
  // fetcher's segment are created readable by that group, see shm::SegmentAccess.
  shm::SegmentAccess access{};
};

struct PartitionStats {
  std::uint32_t partition = 0;
  std::uint64_t fetched = 0;    // upstream position fetched up to
  std::uint64_t committed = 0;  // upstream position committed
  std::uint64_t ring_used = 0;  // bytes of the ring holding unacked data
  std::uint64_t ring_capacity = 0;
  std::uint64_t messages = 0;      // messages published into the ring by this fetcher
  std::uint64_t dead_letters = 0;  // dead letters stored in the dead-letter log
  bool paused = false;             // the ring is full: fetching waits for acks
  bool stopped = false;            // an error stopped the partition
  std::string error;               // a stopped partition says why
  // A problem that holds the partition back without stopping it (an upstream commit or
  // a dead-letter write that failed and is retried).
  std::string warning;
};

// Checks options without opening or creating anything (start() checks them too): the
// namespace name, the ring size, the group defaults. The error names the option.
Status check_fetcher_options(const FetcherOptions& options);

class Fetcher {
 public:
  // Creates the namespace's rings. Refused if a live fetcher serves the namespace; the
  // segments of one that died are taken over.
  static Result<std::unique_ptr<Fetcher>> start(const FetcherOptions& options);
  // As above, with a source already opened: options.source is not used, and
  // options.partitions, unless 0, must be the number of partitions the source serves.
  static Result<std::unique_ptr<Fetcher>> start(const FetcherOptions& options,
                                                std::unique_ptr<io::Source> source);
  virtual ~Fetcher() = default;

  // Fetches, publishes, reaps and commits until `stop` becomes true; then commits what
  // was acked, closes the rings (consumers see `closed`) and removes the segments.
  // Returns an error for a failure of the whole source, or when the commits at the stop
  // could not all be made durable (the segments are removed all the same).
  virtual Status run(const std::atomic<bool>& stop) = 0;
  // Makes run() look at `stop` at once. Async-signal-safe (for SIGTERM/SIGINT handlers).
  virtual void wake() = 0;

  virtual std::vector<PartitionStats> stats() const = 0;
  // A problem of the whole source that stops nothing (io::Source::warning): a Kafka topic
  // that gained partitions this fetcher has no ring for. Empty: none.
  virtual std::string source_warning() const = 0;
};

}  // namespace ringfeed
