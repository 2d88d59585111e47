// The consumer library: attach to a partition ring in a consumer group, pop messages
// (zero-copy views), ack them.
//
//   auto c = ringfeed::Consumer::attach({.ns = "orders", .partition = 0,
//                                        .group = "billing", .mode = ringfeed::Mode::exclusive});
//   if (!c) { std::cerr << c.error().message << "\n"; return 1; }
//   for (;;) {
//     const ringfeed::Batch& batch = (*c)->pop(64, std::chrono::milliseconds(10));
//     for (const ringfeed::Message& m : batch) { handle(m.value()); (*c)->ack(m); }
//   }
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringfeed/message.hpp"
#include "shm/group.hpp"
#include "shm/group_layout.hpp"
#include "shm/lease_table.hpp"
#include "shm/mode.hpp"
#include "shm/result.hpp"
#include "shm/ring_reader.hpp"

namespace ringfeed {

namespace key_shared {
struct Scan;
}

struct ConsumerOptions {
  std::string ns;
  std::uint32_t partition = 0;
  std::string group;
  Mode mode = Mode::exclusive;
  // Most messages popped and not yet acked (or nacked, released, rejected); pop hands out
  // no more at this limit.
  std::size_t max_unacked = 1000;
  // How long pop busy-polls before it sleeps in the kernel. Longer: lower latency,
  // more CPU. Zero: sleep at once.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  // Lease length for this consumer (shared mode); zero: the group's default.
  std::chrono::milliseconds lease{0};
  // Used only when this attach creates the group; 0 fields take the ring's defaults.
  shm::GroupSettings group_settings{};
  // CLOCK_MONOTONIC nanoseconds, the clock of lease deadlines; tests substitute theirs.
  std::function<std::int64_t()> clock{};
};

// "group 'G' of namespace 'NS' partition P", for messages that say where.
std::string describe_group(const ConsumerOptions& options);

enum class PopStatus {
  ok,              // at least one message
  timed_out,       // nothing arrived within the wait
  in_flight_full,  // max_unacked messages are unacked: ack some first
  closed,          // the writer shut down or died, and everything published was taken
  fenced,          // the writer found this group's shared state corrupt and stopped serving it
  corrupt,         // a record in the ring failed validation
};
const char* to_string(PopStatus status);

enum class AckStatus {
  ok,
  not_leased,     // not a message this consumer holds (already acked, or from elsewhere)
  lease_lost,     // the lease expired (or its holder was declared dead) and moved on
  not_supported,  // nack, release, reject and extend are for shared and failover groups
};
const char* to_string(AckStatus status);

// What a push-style handler says about a message (Consumer::run).
struct Verdict {
  enum class Kind { ack, nack, reject } kind = Kind::ack;
  std::chrono::milliseconds delay{0};  // nack: redeliver after this long

  static Verdict ack() { return {}; }
  static Verdict nack(std::chrono::milliseconds delay) { return {Kind::nack, delay}; }
  static Verdict reject() { return {Kind::reject, {}}; }
};

struct RunOptions {
  std::size_t batch = 64;                             // most messages per pop
  std::chrono::milliseconds poll{100};                // longest wait in one pop
  std::chrono::milliseconds nack_on_exception{1000};  // a throwing handler nacks
};

enum class RunStatus {
  stopped,      // stop() was called
  closed,       // the writer is gone and everything was taken
  fenced,       // the writer stopped serving the group
  corrupt,      // a record in the ring failed validation
  unsupported,  // a nack or reject verdict in a mode without leases (exclusive, broadcast)
};

class Batch {
 public:
  PopStatus status() const { return status_; }
  bool empty() const { return messages_.empty(); }
  std::size_t size() const { return messages_.size(); }
  const Message& operator[](std::size_t i) const { return messages_[i]; }
  auto begin() const { return messages_.begin(); }
  auto end() const { return messages_.end(); }
  std::span<const Message> messages() const { return messages_; }

 private:
  friend class Consumer;
  PopStatus status_ = PopStatus::timed_out;
  std::vector<Message> messages_;
};

class Consumer {
 public:
  // Attaches, creating the group if it does not exist. Errors say what and where:
  // no ring, a group in another mode, an exclusive holder that lives (named by pid), a
  // corrupt or mismatched segment.
  static Result<std::unique_ptr<Consumer>> attach(const ConsumerOptions& options);
  ~Consumer();  // detaches: an exclusive group is released, a slot freed, leases returned
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Takes up to `max` messages, waiting up to `wait` for the first one. The batch is
  // valid until the next pop; the messages in it until they are acked.
  const Batch& pop(std::size_t max, std::chrono::nanoseconds wait);
  const Batch& try_pop(std::size_t max) { return pop(max, std::chrono::nanoseconds(0)); }

  AckStatus ack(const Message& m);
  AckStatus ack(const Batch& batch);  // acks all; the first failure if any one was not held
  // Shared groups: give the message back to be delivered again after `delay` (counts as
  // a delivery; at max_deliveries it is dead-lettered instead).
  AckStatus nack(const Message& m, std::chrono::milliseconds delay);
  // Shared groups: give it back at once without counting the delivery (shutting down).
  AckStatus release(const Message& m);
  // Shared groups: dead-letter it now.
  AckStatus reject(const Message& m);
  // Shared groups: the lease now ends `by` from now; the same message handle stays valid.
  AckStatus extend(const Message& m, std::chrono::milliseconds by);

  // Push style: pops and hands every message to `handler`, whose verdict acks, nacks with a
  // delay or dead-letters it; a handler that throws nacks (options.nack_on_exception).
  // Runs until stop() (from the handler or another thread), or the group cannot go on.
  RunStatus run(const std::function<Verdict(const Message&)>& handler,
                const RunOptions& options = {});
  void stop() { stop_.store(true, std::memory_order_relaxed); }

  // Messages this consumer found at max_deliveries and marked dead.
  std::uint64_t dead_lettered() const { return dead_lettered_; }

  std::size_t in_flight() const {
    return uses_leases(options_.mode) ? unacked_ : static_cast<std::size_t>(next_seq_ - head_seq_);
  }
  const ConsumerOptions& options() const { return options_; }
  // The position this consumer reads next and the watermark it published.
  std::uint64_t read_position() const { return read_pos_; }
  std::uint64_t watermark() const { return published_watermark_; }

 private:
  struct InFlight {
    std::uint64_t position = 0;
    bool acked = true;
  };

  Consumer() = default;
  Status claim_slot();
  Status start_shared(bool created);
  std::uint64_t first_seq_at_or_after(std::uint64_t position) const;
  std::size_t collect_shared(std::size_t max, PopStatus& status);
  std::size_t collect_keyed(std::size_t max, PopStatus& status);
  void refresh_key_ranges();
  std::uint64_t reap_dead_slots(std::uint64_t candidates);
  // Turns the first `n` entries of taken_ into messages of the batch.
  std::size_t deliver_taken(std::uint32_t n, std::uint32_t now_ms, PopStatus& status);
  bool shared_has_work() const;
  bool failover_active();
  void after_settled();  // advance low_seq and the watermark after acks / dead letters
  std::int64_t now_ns() const;
  std::uint32_t now_lease_ms() const;
  Status join(std::uint64_t start);
  Status resume(std::uint64_t position);
  std::size_t collect(std::size_t max, PopStatus& status);
  Message& emit(const shm::RecordView& record);
  std::size_t take(std::size_t max, PopStatus& status) {
    if (options_.mode == Mode::key_shared) return collect_keyed(max, status);
    return uses_leases(options_.mode) ? collect_shared(max, status) : collect(max, status);
  }
  // Whether a pop could find something now (the next record's tag; in shared mode the
  // group's dispatch against published, and redeliveries).
  bool has_work() const;
  // The sleeper's half of the Dekker pair with the writer's commit (seq_cst loads).
  bool nothing_published_seq_cst() const;
  bool fenced() const;
  void publish_watermark();

  ConsumerOptions options_;
  shm::RingReader ring_;
  shm::Segment group_segment_;
  shm::GroupControl* group_ = nullptr;
  std::atomic<std::uint64_t>* watermark_ = nullptr;   // the group's or our slot's cursor
  std::atomic<std::uint64_t>* owner_word_ = nullptr;  // holder or slot owner we claimed
  std::uint64_t owner_ = 0;
  std::uint32_t slot_ = 0;  // broadcast and shared: our slot, the owner number of our leases

  // Shared mode.
  shm::LeaseTable leases_;
  std::int64_t epoch_ns_ = 0;
  std::uint32_t lease_ms_ = 0;
  std::uint32_t max_deliveries_ = 1;
  std::size_t unacked_ = 0;
  std::uint64_t dead_lettered_ = 0;
  std::uint64_t pops_ = 0;
  std::uint64_t ticket_ = 0;  // failover: attach time, orders the standbys
  std::atomic<bool> stop_{false};
  std::int64_t next_liveness_check_ns_ = 0;
  std::vector<shm::TakenLease> taken_;
  std::vector<std::uint64_t> dead_;
  // Shared mode: the last look for redeliveries found only some whose delay runs.
  bool redeliveries_waiting_ = false;
  std::unique_ptr<key_shared::Scan> keyed_;  // key_shared mode

  std::uint64_t read_pos_ = 0;
  std::uint64_t published_watermark_ = 0;
  std::vector<InFlight> in_flight_;  // a circle indexed by sequence & mask
  std::uint64_t in_flight_mask_ = 0;
  std::uint64_t head_seq_ = 0;  // oldest sequence not yet acked
  std::uint64_t next_seq_ = 0;  // sequence of the next message popped
  Batch batch_;
};

}  // namespace ringfeed
