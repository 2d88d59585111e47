// Helpers shared by the framed-record tests: random records, exact-size heap copies (so
// AddressSanitizer flags any read past the end of what decode was given), and a builder
// of raw records that ignores the limits encode enforces, to test that decode enforces
// them too.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "io/crc32c.hpp"
#include "io/framed_record.hpp"

namespace ringfeed::test {

// Bytes on the heap in an allocation of exactly their size: one byte further is a
// redzone under ASan.
class ExactBytes {
 public:
  explicit ExactBytes(std::span<const std::byte> b)
      : size_(b.size()), p_(new std::byte[b.size() == 0 ? 1 : b.size()]) {
    if (!b.empty()) std::memcpy(p_.get(), b.data(), b.size());
  }
  std::span<const std::byte> span() const { return {p_.get(), size_}; }

 private:
  std::size_t size_;
  std::unique_ptr<std::byte[]> p_;
};

// A record that owns its strings; view() points into them.
struct OwnedRecord {
  io::RecordKind kind = io::RecordKind::log;
  std::int64_t timestamp_ns = 0;
  std::uint64_t upstream_offset = 0;
  std::string key, value;
  std::uint32_t delivery_count = 0;
  std::string group, reason;

  io::RecordView view() const {
    return {.kind = kind,
            .timestamp_ns = timestamp_ns,
            .upstream_offset = upstream_offset,
            .key = key,
            .value = value,
            .delivery_count = delivery_count,
            .group = group,
            .reason = reason};
  }
};

inline std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Mostly small fields, sometimes empty, now and then large.
inline std::size_t random_length(std::mt19937_64& rng, std::size_t max) {
  const auto pick = rng() % 100;
  std::size_t n = 0;
  if (pick < 15) {
    n = 0;
  } else if (pick < 85) {
    n = rng() % 64;
  } else if (pick < 98) {
    n = rng() % 4096;
  } else {
    n = rng() % 70000;
  }
  return n < max ? n : max;
}

inline OwnedRecord random_record(std::mt19937_64& rng, bool dead_letter) {
  OwnedRecord r;
  r.kind = dead_letter ? io::RecordKind::dead_letter : io::RecordKind::log;
  r.timestamp_ns = static_cast<std::int64_t>(rng());
  r.upstream_offset = rng();
  r.key = random_bytes(rng, random_length(rng, io::kMaxKeyLength));
  r.value = random_bytes(rng, random_length(rng, io::kMaxValueLength));
  if (dead_letter) {
    r.delivery_count = static_cast<std::uint32_t>(rng());
    r.group = random_bytes(rng, random_length(rng, io::kMaxGroupLength));
    r.reason = random_bytes(rng, random_length(rng, io::kMaxReasonLength));
  }
  return r;
}

inline std::vector<std::byte> encode_vec(const io::RecordView& v) {
  std::vector<std::byte> out(io::encoded_size(v));
  const auto e = io::encode(v, out);
  EXPECT_EQ(e.status, io::EncodeStatus::ok) << io::to_string(e.status);
  EXPECT_EQ(e.size, out.size());
  return out;
}

// Field values written as given, lengths not checked against any limit, a correct CRC.
struct RawRecord {
  std::uint8_t version = io::kRecordVersion;
  std::uint32_t flags = 0;
  std::uint32_t key_length = 0, value_length = 0;
  std::uint16_t group_length = 0, reason_length = 0;
  std::size_t body = 0;  // bytes after the header (zeros)
};

inline void put_le(std::vector<std::byte>& b, std::size_t at, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b[at + i] = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}

inline std::vector<std::byte> raw_record(const RawRecord& r) {
  const bool dl = (r.flags & io::kFlagDeadLetter) != 0;
  const std::size_t header = dl ? io::kDeadLetterHeaderSize : io::kLogHeaderSize;
  std::vector<std::byte> b(header + r.body);
  std::memcpy(b.data(), io::kRecordMagic, 3);
  b[3] = static_cast<std::byte>(r.version);
  put_le(b, 4, b.size(), 4);
  put_le(b, 12, r.flags, 4);
  put_le(b, 32, r.key_length, 4);
  put_le(b, 36, r.value_length, 4);
  if (dl) {
    put_le(b, 44, r.group_length, 2);
    put_le(b, 46, r.reason_length, 2);
  }
  put_le(b, 8, io::crc32c(std::span(b).subspan(io::kCrcStart)), 4);
  return b;
}

inline bool same_record(const io::RecordView& a, const io::RecordView& b) {
  return a.kind == b.kind && a.timestamp_ns == b.timestamp_ns &&
         a.upstream_offset == b.upstream_offset && a.key == b.key && a.value == b.value &&
         a.delivery_count == b.delivery_count && a.group == b.group && a.reason == b.reason;
}

}  // namespace ringfeed::test
