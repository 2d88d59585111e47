// The upstream source interface: what the fetcher pulls messages from. A source serves
// a fixed set of partitions, numbered 0..N-1, each an ordered sequence of records with
// upstream offsets that grow; it hands records over in order per partition, keeps a
// committed position per partition, and says per partition what went wrong.
//
// One thread (the fetcher's) calls every member except wake(), which any thread or a
// signal handler may call.
//
// Records are views into the source's own buffers, valid only during the sink call:
// the fetcher copies key and value into the partition ring once. It takes them in
// batches (poll_batches, BatchSink): one call per run of records of a partition.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "shm/result.hpp"

namespace ringfeed::io {

struct SourceRecord {
  std::uint32_t partition = 0;
  std::uint64_t upstream_offset = 0;  // where this record starts in its partition
  std::uint64_t next_offset = 0;      // where the next one starts: commit this once the
                                      // record (and all before it) was acked
  std::int64_t timestamp_ns = 0;      // producer time, ns since the Unix epoch (0: unknown)
  std::string_view key;
  std::string_view value;
  std::string_view headers;  // encoded as ringfeed/headers.hpp says; empty: none
};

// Takes one record. Returning false means "no room now" (the partition's ring is full):
// the source stops handing out that partition, keeps the refused record, and offers it
// again first after resume(partition).
using RecordSink = std::function<bool(const SourceRecord&)>;

// Takes records in batches: `records` are consecutive records of `partition`, in order.
// Returns how many it took, from the first. Fewer than all means "no room now" for
// records[taken], as a RecordSink returning false for it: the source stops handing out
// that partition, keeps that record, and offers it again first after resume(partition).
class BatchSink {
 public:
  virtual std::size_t take(std::uint32_t partition, std::span<const SourceRecord> records) = 0;

 protected:
  ~BatchSink() = default;
};

// Hands a batch to a RecordSink one record at a time: poll() of a source whose own
// interface is poll_batches().
class OneAtATime final : public BatchSink {
 public:
  explicit OneAtATime(const RecordSink& sink) : sink_(sink) {}
  std::size_t take(std::uint32_t, std::span<const SourceRecord> records) override {
    std::size_t n = 0;
    while (n < records.size() && sink_(records[n])) ++n;
    return n;
  }

 private:
  const RecordSink& sink_;
};

struct PartitionStatus {
  std::uint64_t committed = 0;  // the last committed position (where a restart resumes)
  std::uint64_t fetched = 0;    // next_offset of the last record handed out
  bool paused = false;          // a sink refused a record and resume() was not called yet
  bool stopped = false;         // an error stopped this partition (other partitions go on)
  bool assigned = true;         // false: the upstream gives it to another host now (a Kafka
                                // group's assignment); `error` says so, nothing is fetched
  std::string error;            // what and where: file and byte offset, for stat and logs
};

class Source {
 public:
  virtual ~Source() = default;

  virtual std::uint32_t partitions() const = 0;
  // Where fetching starts and a restart resumes: the committed position of `partition`.
  virtual std::uint64_t committed(std::uint32_t partition) const = 0;

  // Waits up to `timeout` for records of any partition that is neither paused nor
  // stopped, and hands every record available now to `sink`, in order per partition.
  // Returns how many records the sink took; it returns early, with 0 records, after
  // wake(), when a partition stops, or when a signal interrupts the wait. An error that
  // stops one partition is kept in its status, not returned; an error returned here
  // concerns the whole source.
  virtual Result<std::size_t> poll(const RecordSink& sink, std::chrono::milliseconds timeout) = 0;
  // As poll(), handing the records to `sink` in batches. The default hands them over one
  // at a time through poll().
  virtual Result<std::size_t> poll_batches(BatchSink& sink, std::chrono::milliseconds timeout);

  // After a sink refused a record of `partition`: offer it again from the next poll on.
  virtual void resume(std::uint32_t partition) = 0;

  // Makes `position` (a next_offset handed out earlier, or the committed position) the
  // committed position of `partition`, durably: after a crash the source resumes there.
  // A source may finish it in the background (status().committed and committed() say
  // how far it got); an error of such a commit is returned by a later commit() of that
  // partition or by flush(), and the source tries again by itself.
  virtual Status commit(std::uint32_t partition, std::uint64_t position) = 0;
  // Waits up to `timeout` until every commit() made so far is durable. Sources whose
  // commit() is done when it returns: nothing to wait for.
  virtual Status flush(std::chrono::milliseconds timeout) {
    static_cast<void>(timeout);
    return Ok{};
  }

  virtual PartitionStatus status(std::uint32_t partition) const = 0;
  // A problem of the whole source that stops nothing, for the fetcher's log and stats
  // (a Kafka topic that gained partitions this source has no ring for); empty: none.
  virtual std::string warning() const { return {}; }

  // Makes a poll that is waiting (or the next one) return at once. Async-signal-safe.
  virtual void wake() = 0;

  // Makes a poll return early, as wake() does, while `fd` (owned by the caller) is
  // readable: level-triggered, so the caller reads it until it would block before it
  // polls again, or that poll returns at once. False if the source cannot watch it (the
  // default): the caller has to look at `fd` itself now and then.
  virtual bool watch_readable(int fd) {
    static_cast<void>(fd);
    return false;
  }

  // The URI it was opened with, for messages.
  virtual const std::string& uri() const = 0;
};

struct SourceOptions {
  // Partitions to serve; 0: what the source finds (file: the DIR/P.log files present).
  std::uint32_t partitions = 0;
};

// Opens a source by URI: `file:DIR` (optionally `file:DIR?format=lines`),
// `redis://HOST:PORT?streams=...&group=...` (redis_source.hpp) or
// `kafka://HOST:PORT?topic=...&group=...` (kafka_source.hpp). A URI of an unknown scheme
// or with bad parameters is refused with a message naming what is wrong.
Result<std::unique_ptr<Source>> open_source(std::string_view uri, const SourceOptions& options);
// Checks a URI as open_source() would, without opening anything: the scheme, the
// parameters and their values, and that they agree with `options.partitions` where the
// URI says how many there are. An error here is the URI's, not the upstream's.
Status check_source_uri(std::string_view uri, const SourceOptions& options = {});

}  // namespace ringfeed::io
