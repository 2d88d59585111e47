// Read side of a partition ring: a read-only mapping, records read in place.
// Every length read from the segment is checked against the capacity this process
// validated at open time before it is used.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "shm/result.hpp"
#include "shm/ring_layout.hpp"
#include "shm/segment.hpp"

namespace ringfeed::shm {

struct RecordView {
  std::uint64_t position = 0;  // where the record starts
  std::uint64_t next = 0;      // where the following record starts
  const std::byte* key = nullptr;
  const std::byte* value = nullptr;
  std::uint32_t key_len = 0;
  std::uint32_t value_len = 0;
  const std::byte* headers = nullptr;  // encoded (headers.hpp); none: headers_len 0
  std::uint32_t headers_len = 0;
  std::uint64_t upstream_offset = 0;
  std::int64_t timestamp_ns = 0;
};

enum class ReadStatus {
  record,   // `out` holds the record at the position
  padding,  // the lap ends here: continue at out.next
  empty,    // nothing published at the position yet
  corrupt,  // the tag or lengths cannot be right (overrun or damaged segment)
};

class RingReader {
 public:
  static Result<RingReader> open(const std::string& ns, std::uint32_t partition);

  ReadStatus read(std::uint64_t position, RecordView& out) const {
    const auto idx = position & mask_;
    const auto* h = reinterpret_cast<const RecordHeader*>(data_ + idx);
    const std::uint64_t tag = h->tag.load(std::memory_order_acquire);
    if (tag == (position | kTagMessage)) {
      const std::uint32_t key_len = h->key_len;
      const std::uint32_t value_len = h->value_len;
      const std::uint64_t size = record_size(key_len, value_len);
      if (size > max_record_ || idx + size > capacity_) return ReadStatus::corrupt;
      fill(position, size, h, key_len, value_len, 0, out);
      return ReadStatus::record;
    }
    if (tag == 0) return ReadStatus::empty;
    if (tag == (position | kTagMessageWithHeaders)) return read_with_headers(position, h, out);
    if (tag == (position | kTagPadding)) {
      out.position = position;
      out.next = (position | mask_) + 1;
      return ReadStatus::padding;
    }
    return ReadStatus::corrupt;
  }

  // Cheap check, used before a consumer sleeps and after it wakes.
  bool is_empty_at(std::uint64_t position) const {
    const auto* h = reinterpret_cast<const RecordHeader*>(data_ + (position & mask_));
    return h->tag.load(std::memory_order_acquire) == 0;
  }

  // Messages published so far: the sequence the next message will get.
  std::uint64_t published() const { return control_->published.load(std::memory_order_acquire); }
  // Position of message `seq`, valid for the last index-size messages up to published()
  // (see ring_layout.hpp). Callers check the record they find there.
  std::uint64_t position_of(std::uint64_t seq) const {
    // acquire: a caller's later check of the group's state is ordered after this read.
    return index_[seq & index_mask_].load(std::memory_order_acquire);
  }
  std::uint64_t index_slots() const { return index_mask_ + 1; }

  const RingControl& control() const { return *control_; }
  std::uint64_t capacity() const { return capacity_; }
  const std::string& segment_name() const { return segment_.name(); }
  // False once the writer closed the ring or died.
  bool writer_alive() const;
  pid_t writer_pid() const { return creator_pid_; }

 private:
  ReadStatus read_with_headers(std::uint64_t position, const RecordHeader* h,
                               RecordView& out) const;
  // Fills `out` with the record of `size` bytes at `position`, its lengths checked.
  void fill(std::uint64_t position, std::uint64_t size, const RecordHeader* h,
            std::uint32_t key_len, std::uint32_t value_len, std::uint32_t headers_len,
            RecordView& out) const {
    out.position = position;
    out.next = position + size;
    out.key = data_ + (position & mask_) + sizeof(RecordHeader);
    out.value = out.key + key_len;
    out.key_len = key_len;
    out.value_len = value_len;
    out.headers = headers_len == 0 ? nullptr : out.value + value_len + sizeof(std::uint32_t);
    out.headers_len = headers_len;
    out.upstream_offset = h->upstream_offset;
    out.timestamp_ns = h->timestamp_ns;
  }

  Segment segment_;
  const RingControl* control_ = nullptr;
  const std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint64_t max_record_ = 0;
  const std::atomic<std::uint64_t>* index_ = nullptr;
  std::uint64_t index_mask_ = 0;
  pid_t creator_pid_ = 0;
  std::uint64_t creator_owner_ = 0;
};

// Validates a ring segment header copy; returns the capacity.
Result<std::uint64_t> validate_ring_header(const std::string& name, const SegmentHeader& h,
                                           std::size_t actual_size, std::uint32_t partition);

}  // namespace ringfeed::shm
