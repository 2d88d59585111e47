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
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
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
class DeadLetterLog;

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
  // Lease length for this consumer; zero: the group's default. Exclusive and broadcast
  // consumers keep their leases themselves and time them with the coarse clock: a lease
  // may end one kernel tick (4 ms here) early or late.
  std::chrono::milliseconds lease{0};
  // Keep this consumer's leases from expiring while it lives and beats: a thread of its
  // own stores a heartbeat every 100 ms, and expired leases of a beating consumer are
  // extended instead of redelivered (by the fetcher's reaper and by other consumers'
  // pops alike). A process that hangs as a whole stops beating and loses its leases one
  // second later; one that dies loses them at once.
  bool auto_extend = false;
  // Used only when this attach creates the group; 0 fields take the ring's defaults.
  shm::GroupSettings group_settings{};
  // Exclusive and broadcast consumers store their own dead letters (shared-style groups
  // leave that to the fetcher): here, or, if empty, in the directory of the namespace's
  // fetcher. Without either they are counted (dead_letters_dropped) and dropped.
  std::string dead_letter_dir;
  // When the fetcher serving the ring died and a new one took the namespace over, move
  // to the new instance by itself (pop sees `closed` only until the successor runs).
  // Leases of the old instance are gone: their messages come again from the new one.
  bool follow_fetcher = true;
  // CLOCK_MONOTONIC nanoseconds, the clock of lease deadlines; tests substitute theirs
  // (called from the heartbeat thread too when auto_extend is on).
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
  // Nothing came within the wait, everything published was taken, and the upstream gives
  // the partition to another host now (a Kafka rebalance). Not an error: it may come
  // back, and pops go on as before once it does.
  end_of_partition,
};
const char* to_string(PopStatus status);

enum class AckStatus {
  ok,
  not_leased,     // not a message this consumer holds (already acked, or from elsewhere)
  lease_lost,     // the lease expired (or its holder was declared dead) and moved on
  not_supported,  // kept for compatibility: every mode supports every call now
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
  stopped,           // stop() was called
  closed,            // the writer is gone and everything was taken
  fenced,            // the writer stopped serving the group
  corrupt,           // a record in the ring failed validation
  end_of_partition,  // the partition went to another host (run again to wait for it)
  unsupported,       // kept for compatibility: every mode takes every verdict now
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
  // Give the message back to be delivered again after `delay` (counts as a delivery; at
  // max_deliveries it is dead-lettered instead). Shared-style groups redeliver to any
  // consumer entitled to it; exclusive and broadcast consumers to themselves.
  AckStatus nack(const Message& m, std::chrono::milliseconds delay);
  // Give it back at once without counting the delivery (shutting down).
  AckStatus release(const Message& m);
  // Dead-letter it now.
  AckStatus reject(const Message& m);
  // The lease now ends `by` from now; the same message handle stays valid.
  AckStatus extend(const Message& m, std::chrono::milliseconds by);

  // Push style: pops and hands every message to `handler`, whose verdict acks, nacks with a
  // delay or dead-letters it; a handler that throws nacks (options.nack_on_exception).
  // Runs until stop() (from the handler or another thread), or the group cannot go on.
  RunStatus run(const std::function<Verdict(const Message&)>& handler,
                const RunOptions& options = {});
  void stop() { stop_.store(true, std::memory_order_relaxed); }

  // Messages this consumer found at max_deliveries, or rejected, and marked dead.
  std::uint64_t dead_lettered() const { return dead_lettered_; }
  // Exclusive and broadcast: dead letters that had nowhere to go (no directory) or could
  // not be stored (the error is in last_dead_letter_error()).
  std::uint64_t dead_letters_dropped() const { return dead_letters_dropped_; }
  const std::string& last_dead_letter_error() const { return dead_letter_error_; }

  std::size_t in_flight() const {
    return uses_leases(options_.mode) ? unacked_ : static_cast<std::size_t>(next_seq_ - head_seq_);
  }
  const ConsumerOptions& options() const { return options_; }
  // How often this consumer moved to a new fetcher instance (follow_fetcher).
  std::uint64_t reattached() const { return reattached_; }
  // After a pop said `closed`: true if the writer shut the ring down (a fetcher stopped
  // cleanly), false if it died without (a fetcher killed: one that takes the namespace
  // over may come, and a pop then moves to it).
  bool writer_shut_down() const;
  // After a pop said `closed`: why this consumer could not attach to the fetcher that took
  // the namespace over (the exclusive group held by another consumer, no free slot);
  // empty if none runs yet, or it could.
  const std::string& reattach_error() const { return reattach_error_; }
  // The position this consumer reads next and the watermark it published.
  std::uint64_t read_position() const { return read_pos_; }
  std::uint64_t watermark() const { return published_watermark_; }

 private:
  friend class ConsumerSet;  // waits on many consumers' rings at once (consumer_set.hpp)
  // This consumer's batch, emptied, saying `status` (a ConsumerSet's verdict for it).
  const Batch& empty_batch(PopStatus status) {
    batch_.messages_.clear();
    batch_.status_ = status;
    return batch_;
  }
  // A message popped by an exclusive or broadcast consumer, until it is acked: the
  // consumer's own lease on it (no other process can take it; a crash ends them all).
  enum class Held : std::uint8_t { acked, leased, waiting };  // waiting: for redelivery
  struct InFlight {
    std::uint64_t position = 0;
    std::uint32_t generation = 0;  // bumped by each hand-over: stale handles are refused
    std::uint32_t deliveries = 0;
    std::uint32_t deadline_ms = 0;  // leased: when it expires; waiting: not before
    Held state = Held::acked;
  };

  Consumer() = default;
  Status connect();
  void note_presence(PopStatus status);
  AckStatus ack_message(const Message& m);
  AckStatus ack_batch(const Batch& batch);
  AckStatus nack_message(const Message& m, std::chrono::milliseconds delay);
  AckStatus release_message(const Message& m);
  AckStatus reject_message(const Message& m);
  // The registry's unacked count, after acks and the like (stat shows it).
  void note_unacked() {
    if (owner_word_ == nullptr) return;
    const auto n = static_cast<std::uint32_t>(in_flight());
    auto& slot_unacked = group_->slots[slot_].unacked;
    if (slot_unacked.load(std::memory_order_relaxed) != n) {
      slot_unacked.store(n, std::memory_order_relaxed);
    }
  }
  void start_heartbeat();
  void stop_heartbeat();
  void detach();
  bool reattach_to_new_writer();
  const Batch& pop_attached(std::size_t max, std::chrono::nanoseconds wait);
  Status claim_slot();
  bool claim_awaited_slot();
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
  std::chrono::nanoseconds standby_nap() const;
  void after_settled();
  // A lease this consumer counted as unacked is gone (expired and moved): it no longer
  // counts against max_unacked. (A handle settled twice is refused the same way and
  // undercounts by one, bounded at zero: it can never leave pop stuck at the limit.)
  void lost_lease() {
    if (unacked_ > 0) --unacked_;
  }  // advance low_seq and the watermark after acks / dead letters
  std::int64_t now_ns() const;
  std::uint32_t now_lease_ms() const;
  // The clock of exclusive and broadcast leases (kept in this process only): coarse.
  std::uint32_t local_lease_ms() const;
  Status join(std::uint64_t start);
  Status resume(std::uint64_t position);
  std::size_t collect(std::size_t max, PopStatus& status);
  // Exclusive and broadcast leases (consumer_local_leases.cpp).
  std::size_t redeliver_local(std::size_t max, std::uint32_t now_ms, PopStatus& status);
  void expire_local(std::uint32_t now_ms);
  InFlight* held_local(const Message& m, AckStatus& why);
  void settle_local(std::uint64_t seq);
  void dead_letter_local(std::uint64_t seq, shm::DeadReason reason);
  AckStatus nack_local(const Message& m, std::chrono::milliseconds delay);
  AckStatus release_local(const Message& m);
  AckStatus reject_local(const Message& m);
  AckStatus extend_local(const Message& m, std::chrono::milliseconds by);
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
  std::uint64_t writer_ = 0;  // the ring's creator (pack_owner): which fetcher instance
  std::uint32_t attach_epoch_ = 0;
  std::uint64_t presence_pops_ = 0;
  std::atomic<std::uint64_t>* holder_word_ = nullptr;  // exclusive: the group's holder word
  // auto_extend: the heartbeat thread and how it is told to stop.
  std::thread heartbeat_;
  std::mutex heartbeat_mutex_;
  std::condition_variable heartbeat_stop_cv_;
  bool heartbeat_stop_ = false;
  std::uint64_t reattached_ = 0;
  std::string reattach_error_;
  std::uint32_t slot_ = 0;  // broadcast and shared: our slot, the owner number of our leases

  // Shared mode.
  shm::LeaseTable leases_;
  std::int64_t epoch_ns_ = 0;
  std::uint32_t lease_ms_ = 0;
  shm::Backoff backoff_;  // exclusive and broadcast (leased modes: leases_.backoff())
  std::uint32_t max_deliveries_ = 1;
  std::size_t unacked_ = 0;
  std::uint64_t dead_lettered_ = 0;
  std::uint64_t pops_ = 0;
  std::uint64_t ticket_ = 0;  // failover: attach time, orders the standbys
  // Failover: the last pop found a live consumer before this one. Pop then neither spins
  // nor counts itself among the sleepers the writer wakes: it sleeps until its next
  // liveness check (standby_nap).
  bool standby_ = false;
  // Failover: this consumer has been the active one since it attached (and took back
  // what an active consumer before it died before writing: LeaseTable::reclaim_unwritten).
  bool was_active_ = false;
  std::atomic<bool> stop_{false};
  std::int64_t next_liveness_check_ns_ = 0;
  std::vector<shm::TakenLease> taken_;
  std::vector<std::uint64_t> dead_;
  // Shared mode: the last look for redeliveries found only some whose delay runs.
  bool redeliveries_waiting_ = false;
  std::unique_ptr<key_shared::Scan> keyed_;  // key_shared mode

  std::uint64_t read_pos_ = 0;
  std::uint64_t published_watermark_ = 0;
  std::vector<InFlight> in_flight_;       // a circle indexed by sequence & mask
  std::vector<std::uint64_t> redeliver_;  // sequences waiting for redelivery
  bool leases_held_ = false;              // some lease may expire: next_expiry_ms_ is set
  std::uint32_t next_expiry_ms_ = 0;      // no held lease expires before this
  std::uint64_t dead_letters_dropped_ = 0;
  std::string dead_letter_error_;
  std::unique_ptr<DeadLetterLog> dead_letter_log_;
  std::uint64_t in_flight_mask_ = 0;
  std::uint64_t head_seq_ = 0;  // oldest sequence not yet acked
  std::uint64_t next_seq_ = 0;  // sequence of the next message popped
  Batch batch_;
};

}  // namespace ringfeed
