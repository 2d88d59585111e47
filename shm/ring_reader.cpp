#include "shm/ring_reader.hpp"

#include <cstring>

#include "shm/names.hpp"
#include "shm/process.hpp"

namespace ringfeed::shm {

Result<std::uint64_t> validate_ring_header(const std::string& name, const SegmentHeader& h,
                                           std::size_t actual_size, std::uint32_t partition) {
  auto cap =
      validate_header(name, h, actual_size, {SegmentKind::ring, sizeof(RingControl), partition});
  if (!cap) return cap;
  const std::uint64_t c = cap.value();
  if (c < kMinRingCapacity || c > kMaxRingCapacity || (c & (c - 1)) != 0) {
    return Error{"segment " + name + ": record area of " + std::to_string(c) +
                     " bytes is not a power of two in [4 KiB, 1 TiB]",
                 EPROTO};
  }
  if (ring_segment_size(c) != actual_size) {
    return Error{"segment " + name + ": record area of " + std::to_string(c) +
                     " bytes needs a segment of " + std::to_string(ring_segment_size(c)) +
                     ", it has " + std::to_string(actual_size),
                 EPROTO};
  }
  return c;
}

Result<RingReader> RingReader::open(const std::string& ns, std::uint32_t partition) {
  if (auto ok = check_name("namespace", ns); !ok) return ok.error();
  RingReader r;
  auto seg = Segment::open(ring_segment_name(ns, partition), Access::read_only);
  if (!seg) {
    if (seg.error().code == ENOENT) {
      return Error{"no ring for namespace '" + ns + "' partition " + std::to_string(partition) +
                       " (is the fetcher running?)",
                   ENOENT};
    }
    return seg.error();
  }
  r.segment_ = std::move(seg.value());
  const SegmentHeader header = *reinterpret_cast<const SegmentHeader*>(r.segment_.base());
  auto cap = validate_ring_header(r.segment_.name(), header, r.segment_.size(), partition);
  if (!cap) return cap.error();
  r.control_ = reinterpret_cast<const RingControl*>(r.segment_.base());
  r.data_ = r.segment_.base() + kRingDataOffset;
  r.capacity_ = cap.value();
  r.mask_ = r.capacity_ - 1;
  r.index_ = reinterpret_cast<const std::atomic<std::uint64_t>*>(r.data_ + r.capacity_);
  r.index_mask_ = ring_index_slots(r.capacity_) - 1;
  r.max_record_ = max_record_size(r.capacity_);
  r.creator_pid_ = header.creator_pid;
  r.creator_owner_ = pack_owner({header.creator_pid, header.creator_start_time});
  return r;
}

// Each length is checked before what it locates is read: the headers' length lies past
// the key and value, which must fit first.
ReadStatus RingReader::read_with_headers(std::uint64_t position, const RecordHeader* h,
                                         RecordView& out) const {
  const std::uint64_t idx = position & mask_;
  const std::uint32_t key_len = h->key_len;
  const std::uint32_t value_len = h->value_len;
  const std::uint64_t before_headers = sizeof(RecordHeader) + std::uint64_t{key_len} + value_len;
  if (before_headers + sizeof(std::uint32_t) > max_record_ ||
      idx + before_headers + sizeof(std::uint32_t) > capacity_) {
    return ReadStatus::corrupt;
  }
  std::uint32_t headers_len = 0;
  std::memcpy(&headers_len, data_ + idx + before_headers, sizeof headers_len);
  const std::uint64_t size = record_size(key_len, value_len, headers_len);
  if (headers_len == 0 || size > max_record_ || idx + size > capacity_) return ReadStatus::corrupt;
  fill(position, size, h, key_len, value_len, headers_len, out);
  return ReadStatus::record;
}

bool RingReader::writer_alive() const {
  if (control_->state.load(std::memory_order_acquire) == kRingClosed) return false;
  return owner_alive(creator_owner_);
}

}  // namespace ringfeed::shm
