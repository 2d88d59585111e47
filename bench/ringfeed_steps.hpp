// The ringfeed halves that the latency and throughput tools share: the writer creates a
// ring and waits for the reader's group; one unmeasured lap over the whole ring faults
// its pages in on both sides (a fetcher's ring is warm); the reader pops and acks.
// Every failure goes to the Rendezvous with what and where, and returns false/nullptr.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "harness.hpp"
#include "ringfeed/consumer.hpp"
#include "ringfeed/fetcher.hpp"
#include "ringfeed/writer.hpp"

namespace ringfeed::bench {

inline constexpr std::size_t kValueBytes = 64;
inline constexpr const char* kGroup = "bench";

// A namespace no other run (or other user of the machine) has: "<stem><pid>r<run>".
std::string run_namespace(const char* stem, std::uint64_t run);

std::unique_ptr<Writer> create_ring(Rendezvous& rv, const std::string& ns, std::uint32_t partition,
                                    std::uint64_t capacity);
// After the reader said it attached: makes sure the writer tracks its group.
bool wait_for_group(Rendezvous& rv, Writer& w);
std::unique_ptr<Consumer> attach_reader(Rendezvous& rv, const std::string& ns,
                                        std::uint32_t partition, std::chrono::nanoseconds spin,
                                        Mode mode = Mode::exclusive);

// Runs a started fetcher until `stop`, then stores how many messages it published in
// `fetched` and reports a stopped partition or a failed run to the Rendezvous. Returns
// the child's exit status (0, or 1 after a failure).
int run_fetcher(Rendezvous& rv, Fetcher& f, const std::atomic<bool>& stop,
                std::atomic<std::uint64_t>& fetched);

// Messages of kValueBytes that cover the ring once.
std::uint64_t lap_messages(std::uint64_t capacity);
bool publish_lap(Rendezvous& rv, Writer& w);

// Pops (up to `max` at a time) and acks until `want` messages were taken; calls
// on_batch(batch, now_ns right after pop returned) before each ack.
template <typename OnBatch>
bool pop_messages(Rendezvous& rv, Consumer& c, std::size_t max, std::uint64_t want,
                  OnBatch&& on_batch) {
  std::uint64_t got = 0;
  int idle = 0;
  while (got < want) {
    const Batch& b = c.pop(max, std::chrono::seconds(1));
    const std::int64_t t = now_ns();
    if (b.status() != PopStatus::ok) {
      // A writer that stalls for 10 s, or a failure on its side, ends the run.
      if (b.status() == PopStatus::timed_out && ++idle < 10 &&
          rv.failed.load(std::memory_order_acquire) == 0) {
        continue;
      }
      rv.fail(std::string("pop on ring ") + c.options().ns + ": " + to_string(b.status()) +
              " after " + std::to_string(got) + " of " + std::to_string(want) + " messages");
      return false;
    }
    idle = 0;
    if (!on_batch(b, t)) return false;
    got += b.size();
    if (c.ack(b) != AckStatus::ok) {
      rv.fail("ack on ring " + c.options().ns + " refused a message just popped");
      return false;
    }
  }
  return true;
}

}  // namespace ringfeed::bench
