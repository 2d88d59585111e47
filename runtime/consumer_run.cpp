// Push style of ringfeed::Consumer: the client-side push of the consumption models, a
// loop over pop that hands each message to a handler and applies its verdict.
#include "ringfeed/consumer.hpp"

namespace ringfeed {

RunStatus Consumer::run(const std::function<Verdict(const Message&)>& handler,
                        const RunOptions& options) {
  stop_.store(false, std::memory_order_relaxed);
  while (!stop_.load(std::memory_order_relaxed)) {
    const Batch& batch = pop(options.batch, options.poll);
    switch (batch.status()) {
      case PopStatus::ok:
      case PopStatus::timed_out:
      case PopStatus::in_flight_full:  // the handler acks as it goes; cannot stay full
        break;
      case PopStatus::closed:
        return RunStatus::closed;
      case PopStatus::fenced:
        return RunStatus::fenced;
      case PopStatus::corrupt:
        return RunStatus::corrupt;
      case PopStatus::end_of_partition:
        return RunStatus::end_of_partition;
    }
    for (const Message& m : batch) {
      Verdict v;
      try {
        v = handler(m);
      } catch (...) {
        v = Verdict::nack(options.nack_on_exception);
      }
      switch (v.kind) {
        case Verdict::Kind::ack:
          ack(m);
          break;
        case Verdict::Kind::nack:
          nack(m, v.delay);
          break;
        case Verdict::Kind::reject:
          reject(m);
          break;
      }
    }
  }
  return RunStatus::stopped;
}

}  // namespace ringfeed
