// Write side of a partition ring: the single writer (the fetcher; the demo and tests
// also use it). Creates the ring segment, publishes records in batches, finds the
// groups that consumers create, and reuses space only below the lowest watermark.
//
// Reclaim protocol. A consumer that joins (a new group, a new broadcast consumer)
// publishes a watermark W and must not read data the writer is about to reuse. Both
// sides use one Dekker pair on (watermark, tail), all seq_cst:
//   joiner: store W; load tail; if tail > W, W = tail and repeat.
//   writer: M1 = min of known watermarks; store tail = M1; look for new groups;
//           M2 = min of watermarks again; reuse only below min(M1, M2).
// Either the joiner's load sees the writer's tail (and moves up to it), or the writer's
// second pass sees the joiner's W (and spares it). Until some group holds a position (a
// broadcast group holds one only through a consumer), nothing more is reused: records
// that no group took wait in the ring for the first group, which starts below them.
// New groups become visible to the writer through inotify on the shm directory, read
// between the two passes; a group segment is published by link() (segment.hpp), which
// queues that event before the joiner's load of tail.
//
// Trust: every watermark read from a group segment is checked against this writer's own
// positions. One that is past the published end or misaligned cannot come from a correct
// consumer: the group is fenced (no longer honoured, its consumers told so). One below
// space already reused is raised to it (nothing there to protect).
#pragma once

#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shm/group.hpp"
#include "shm/group_layout.hpp"
#include "shm/lease_table.hpp"
#include "shm/mode.hpp"
#include "shm/result.hpp"
#include "shm/ring_layout.hpp"
#include "shm/segment.hpp"

namespace ringfeed::shm {

struct RingWriterOptions {
  std::string ns;
  std::uint32_t partition = 0;
  std::uint64_t capacity = 64ull << 20;  // bytes of the record area, a power of two
  // Defaults for groups consumers create on this ring (0 fields: kDefaultGroupSettings).
  GroupSettings group_defaults{};
  // Who besides this user may attach: the ring is created readable by that group (and
  // group segments made on it writable by it), see SegmentAccess.
  SegmentAccess access{};
  // Groups to create on the new ring, started at its beginning: those of the dead
  // fetcher whose namespace is being taken over (see create_started_group). The groups
  // of a dead writer's ring that create() itself takes over are kept the same way.
  std::vector<KeptGroup> keep_groups{};
};

struct OutMessage {
  std::string_view key;
  std::string_view value;
  // Encoded headers (ringfeed/headers.hpp), copied as they are; empty: none.
  std::string_view headers;
  std::uint64_t upstream_offset = 0;
  std::int64_t timestamp_ns = 0;
};

enum class PublishStatus {
  ok,
  full,       // no space: some group has not acked enough yet
  too_large,  // the record can never fit: larger than a quarter of the ring
};

// Space handed out by try_reserve, to be filled in place before commit().
struct Reservation {
  std::byte* key = nullptr;
  std::byte* value = nullptr;
  std::byte* headers = nullptr;  // headers_len bytes, when asked for
  std::uint64_t position = 0;
};

// A message a shared group gave up on, handed to the dead-letter sink by service().
struct DeadLetter {
  std::string_view group;
  std::uint64_t sequence;
  std::string_view key;
  std::string_view value;
  std::uint64_t upstream_offset;
  std::int64_t timestamp_ns;
  std::uint32_t deliveries;
  DeadReason reason;
};
// Stores a dead letter durably; false if it could not (it is offered again later, and
// holds the group's low watermark meanwhile).
using DeadLetterSink = std::function<bool(const DeadLetter&)>;

struct GroupInfo {
  std::string name;
  Mode mode;
  bool fenced;
  std::string fence_reason;
};

class RingWriter {
 public:
  // Creates the ring, its pages allocated and mapped up front (no page faults in the
  // first lap; a 64 MiB ring costs some tens of milliseconds here instead). Refused if a
  // live writer serves the partition; a dead writer's ring and groups are removed and
  // replaced.
  static Result<std::unique_ptr<RingWriter>> create(const RingWriterOptions& options);
  ~RingWriter();
  RingWriter(const RingWriter&) = delete;
  RingWriter& operator=(const RingWriter&) = delete;

  // Reserves one record (with `headers_len` bytes of headers, if not 0); never blocks.
  // Visible to consumers after commit().
  PublishStatus try_reserve(std::uint32_t key_len, std::uint32_t value_len,
                            std::uint64_t upstream_offset, std::int64_t timestamp_ns,
                            Reservation& out, std::uint32_t headers_len = 0);
  // As try_reserve, waiting up to `wait` for space (committing pending records first).
  PublishStatus reserve(std::uint32_t key_len, std::uint32_t value_len,
                        std::uint64_t upstream_offset, std::int64_t timestamp_ns, Reservation& out,
                        std::chrono::nanoseconds wait, std::uint32_t headers_len = 0);
  // Publishes every reserved record, in order, and wakes sleeping consumers if any.
  void commit();

  // Copies a batch in and commits it once. Returns how many were published; `status`
  // says why it stopped early.
  std::size_t publish(std::span<const OutMessage> batch, std::chrono::nanoseconds wait,
                      PublishStatus* status = nullptr);

  // Looks for groups created since the last look (cheap: one non-blocking read).
  void poll_groups();
  // Reuses whatever space every group has released; reaps dead broadcast consumers.
  void reclaim(bool reap_dead);
  // The lease reaper of shared groups: expired leases and those of dead consumers
  // become available again, dead consumers' slots are freed, low watermarks move.
  // commit() runs it every few milliseconds; an idle writer should call it itself, by
  // next_service_ns(). `now_ns` is CLOCK_MONOTONIC (tests pass their own clock).
  void service(std::int64_t now_ns);
  void service();
  // When service() next has work, judged from the groups as they are at `now_ns`
  // (CLOCK_MONOTONIC): the next liveness check (every kLivenessIntervalNs) while a leased
  // group has consumers attached or abandoned entries, the earliest lease deadline, a
  // dead letter not stored yet, and every kAttachLookNs a look for consumers that attach
  // to a leased group unannounced (claiming a slot makes no event) while it has messages
  // they could take. kNoServiceDue when nothing is due until a group appears (see
  // group_watch_fd) or messages are published (the caller then runs a pass soon after).
  std::int64_t next_service_ns(std::int64_t now_ns);
  static constexpr std::int64_t kNoServiceDue = INT64_MAX;
  static constexpr std::int64_t kLivenessIntervalNs = 10'000'000;
  static constexpr std::int64_t kAttachLookNs = 20'000'000;
  // Readable when names appear in or leave the shm directory, which is how new groups
  // are found (inotify, non-blocking). poll_groups() and service() read it empty.
  int group_watch_fd() const { return inotify_fd_; }
  // Where service() puts dead letters. Without a sink they are counted and dropped.
  void set_dead_letter_sink(DeadLetterSink sink) { dead_letter_sink_ = std::move(sink); }
  // Dead letters stored by the sink, and dropped for want of one.
  std::uint64_t dead_lettered() const { return dead_lettered_; }
  std::uint64_t dead_letters_dropped() const { return dead_letters_dropped_; }
  // Marks the ring closed and wakes every sleeper. The destructor also removes names.
  void close();
  // Marks the ring released (the upstream gives its partition to another host: consumers
  // that took everything get PopStatus::end_of_partition) or open again, and wakes every
  // sleeper. No effect on a closed ring.
  void set_released(bool released);

  std::vector<GroupInfo> groups() const;
  std::size_t group_count() const { return groups_.size(); }
  std::uint64_t write_pos() const { return committed_; }
  std::uint64_t reusable_below() const { return limit_; }
  std::uint64_t capacity() const { return capacity_; }
  std::uint64_t published() const { return published_; }
  // FUTEX_WAKE calls made: one per group with a sleeping consumer at a commit.
  std::uint64_t wakes() const { return wakes_; }
  // Consumers those calls woke (what FUTEX_WAKE returned, summed).
  std::uint64_t woken() const { return woken_; }
  const std::string& segment_name() const { return segment_.name(); }
  // Groups whose segment could not be used, with the reason (for stat and logs).
  const std::vector<std::string>& rejected_groups() const { return rejected_; }

 private:
  struct TrackedGroup {
    std::string name;
    Segment segment;
    GroupControl* control = nullptr;
    Mode mode = Mode::exclusive;
    bool fenced = false;
    std::string fence_reason;
    // Shared mode: the lease table and the settings read (and clamped) at registration.
    LeaseTable leases;
    std::int64_t epoch_ns = 0;
    std::uint32_t max_deliveries = 1;
    // Entries a consumer took but had not written at the last liveness pass.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> abandoned;
  };

  RingWriter() = default;
  void prefault();
  RecordHeader* header_at(std::uint64_t position) {
    return reinterpret_cast<RecordHeader*>(data_ + (position & mask_));
  }
  std::uint64_t min_watermark(bool reap_dead);
  void consider(TrackedGroup& g, std::uint64_t value, std::uint64_t& min, const char* field);
  void fence(TrackedGroup& g, std::string reason);
  // Exclusive and broadcast groups: frees the slots of dead consumers.
  void free_dead_slots(TrackedGroup& g);
  void register_group(const std::string& segment_name);
  void forget_group(std::string_view segment_name);
  void scan_groups();
  // Wakes the sleepers of each group (in a shared group at most new_messages of them).
  void wake_sleepers(std::uint64_t new_messages);
  void wake_all_groups();
  void store_dead_letters(TrackedGroup& g);

  RingWriterOptions options_;
  Segment segment_;
  RingControl* control_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint64_t max_record_ = 0;
  std::atomic<std::uint64_t>* index_ = nullptr;  // message sequence -> position
  std::uint64_t index_mask_ = 0;

  std::uint64_t reserved_ = 0;   // end of reserved records
  std::uint64_t committed_ = 0;  // end of published records
  std::uint64_t limit_ = 0;      // space below this position may be reused
  std::uint64_t published_ = 0;  // messages published
  std::uint64_t wakes_ = 0;
  std::uint64_t woken_ = 0;
  // Reserved, not yet committed: the tag (position | kind) and the header fields.
  struct PendingRecord {
    std::uint64_t tag;
    std::uint32_t key_len;
    std::uint32_t value_len;
    std::uint64_t upstream_offset;
    std::int64_t timestamp_ns;
  };
  std::vector<PendingRecord> pending_;
  std::uint64_t commits_ = 0;

  std::string group_prefix_;
  std::vector<TrackedGroup> groups_;
  std::vector<std::string> rejected_;
  int inotify_fd_ = -1;
  std::chrono::steady_clock::time_point next_group_poll_{};
  std::int64_t next_liveness_check_ns_ = 0;
  std::uint64_t dead_lettered_ = 0;
  std::uint64_t dead_letters_dropped_ = 0;
  std::vector<std::uint64_t> dead_;
  std::vector<TakenLease> dead_found_;
  DeadLetterSink dead_letter_sink_;
  bool closed_ = false;
};

}  // namespace ringfeed::shm
