// Several consumers popped as one: a worker that serves many partition rings waits on
// all of them at once, instead of sleeping in one ring's pop while another fills.
//
//   ringfeed::ConsumerSet set;
//   for (auto& c : consumers) set.add(*c);  // one per partition, any modes and groups
//   for (;;) {
//     const auto popped = set.pop(64, std::chrono::milliseconds(100));
//     if (popped.consumer == nullptr) continue;  // nothing within the wait
//     for (const ringfeed::Message& m : *popped.batch) { handle(m); popped.consumer->ack(m); }
//   }
//
// pop looks at the consumers in turn (a pop without waiting of each), starting after the
// one it last returned, so that a busy ring does not starve the others; when none has
// anything it spins as long as the longest `spin` of their options, then sleeps in the
// kernel on every ring's wake word at once (shm::futex_wait_any): one writer's commit
// wakes it, an idle set costs no wake-ups but one per sleep slice (10 ms, as a single
// pop's). Each consumer keeps its own state, leases and acks: the set only chooses whom
// to pop. It owns none of them; they must outlive it.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "shm/result.hpp"

namespace ringfeed {

class ConsumerSet {
 public:
  // Rings one sleep waits on (what one futex_waitv takes). A set of more consumers sleeps
  // on the first ones and for at most a millisecond at a time, looking at the others
  // between sleeps.
  static constexpr std::size_t kMaxSleepWords = 128;

  // Adds a consumer; refuses the same one twice.
  Status add(Consumer& consumer);
  std::size_t size() const { return consumers_.size(); }
  Consumer& operator[](std::size_t i) const { return *consumers_[i]; }

  struct Popped {
    Consumer* consumer = nullptr;  // whose batch it is; nullptr: nothing within the wait
    std::size_t index = 0;         // its place in the set (size() when none)
    const Batch* batch = nullptr;  // that consumer's pop result, valid until its next pop
  };
  // Up to `max` messages of one consumer, waiting up to `wait` for any. Returns at once
  // with a consumer whose pop said something other than timed_out: messages (ok), or
  // closed, fenced, corrupt, in_flight_full, as its own pop would. end_of_partition (a
  // released ring, nothing left in it) only when the whole wait found nothing anywhere.
  // A ring whose writer died without closing is noticed at the end of a sleep slice:
  // its consumer moves to the new fetcher (follow_fetcher) or says closed.
  Popped pop(std::size_t max, std::chrono::nanoseconds wait);

 private:
  Popped look(std::size_t max, std::size_t& released);
  Popped returned(std::size_t i, const Batch& batch);
  Popped writer_gone();

  std::vector<Consumer*> consumers_;
  std::size_t next_ = 0;  // where the next look starts
  Batch idle_;            // the batch of a pop that found nothing: timed_out, empty
};

}  // namespace ringfeed
