#include "io/framed_record.hpp"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "io/crc32c.hpp"

namespace ringfeed::io {

namespace {

constexpr std::size_t kOffTotal = offsetof(RecordHeader, total_length);
constexpr std::size_t kOffCrc = offsetof(RecordHeader, crc);
constexpr std::size_t kOffFlags = offsetof(RecordHeader, flags);
constexpr std::size_t kOffTimestamp = offsetof(RecordHeader, timestamp_ns);
constexpr std::size_t kOffUpstream = offsetof(RecordHeader, upstream_offset);
constexpr std::size_t kOffKeyLen = offsetof(RecordHeader, key_length);
constexpr std::size_t kOffValueLen = offsetof(RecordHeader, value_length);
constexpr std::size_t kOffDelivery =
    sizeof(RecordHeader) + offsetof(DeadLetterHeader, delivery_count);
constexpr std::size_t kOffGroupLen =
    sizeof(RecordHeader) + offsetof(DeadLetterHeader, group_length);
constexpr std::size_t kOffReasonLen =
    sizeof(RecordHeader) + offsetof(DeadLetterHeader, reason_length);
// Enough bytes to read magic, version and total_length.
constexpr std::size_t kLengthKnown = kOffTotal + 4;

template <typename T>
void store_le(std::byte* p, T v) {
  using U = std::make_unsigned_t<T>;
  auto u = static_cast<U>(v);
  for (std::size_t i = 0; i < sizeof(U); ++i) {
    p[i] = static_cast<std::byte>(u & 0xFFu);
    u = static_cast<U>(u >> 8);
  }
}

template <typename T>
T load_le(const std::byte* p) {
  using U = std::make_unsigned_t<T>;
  U u = 0;
  for (std::size_t i = sizeof(U); i > 0; --i)
    u = static_cast<U>((u << 8) | static_cast<U>(p[i - 1]));
  return static_cast<T>(u);
}

std::string_view view_of(const std::byte* p, std::size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}

// "corrupt framed record at byte offset R: <what>". Cold path: only garbage gets here.
DecodeResult corrupt(std::uint64_t record_offset, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

DecodeResult corrupt(std::uint64_t record_offset, const char* fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  DecodeResult r;
  r.status = DecodeStatus::corrupt;
  r.error = "corrupt framed record at byte offset " + std::to_string(record_offset) + ": " + what;
  return r;
}

DecodeResult need_more(std::size_t size) {
  DecodeResult r;
  r.status = DecodeStatus::need_more;
  r.size = size;
  return r;
}

}  // namespace

const char* to_string(EncodeStatus s) {
  switch (s) {
    case EncodeStatus::ok:
      return "ok";
    case EncodeStatus::buffer_too_small:
      return "buffer too small";
    case EncodeStatus::key_too_long:
      return "key longer than 64 KiB";
    case EncodeStatus::value_too_long:
      return "value longer than 16 MiB";
    case EncodeStatus::group_too_long:
      return "group name longer than 255 bytes";
    case EncodeStatus::reason_too_long:
      return "dead-letter reason longer than 4096 bytes";
    case EncodeStatus::dead_letter_fields_on_log_record:
      return "delivery count, group or reason set on a log record (only dead-letter records "
             "carry them)";
  }
  return "unknown encode status";
}

const char* to_string(DecodeStatus s) {
  switch (s) {
    case DecodeStatus::ok:
      return "ok";
    case DecodeStatus::need_more:
      return "need more bytes";
    case DecodeStatus::corrupt:
      return "corrupt";
  }
  return "unknown decode status";
}

namespace {

EncodeStatus check_limits(const RecordView& r) {
  if (r.key.size() > kMaxKeyLength) return EncodeStatus::key_too_long;
  if (r.value.size() > kMaxValueLength) return EncodeStatus::value_too_long;
  if (r.kind == RecordKind::log) {
    if (r.delivery_count != 0 || !r.group.empty() || !r.reason.empty()) {
      return EncodeStatus::dead_letter_fields_on_log_record;
    }
    return EncodeStatus::ok;
  }
  if (r.group.size() > kMaxGroupLength) return EncodeStatus::group_too_long;
  if (r.reason.size() > kMaxReasonLength) return EncodeStatus::reason_too_long;
  return EncodeStatus::ok;
}

std::size_t size_within_limits(const RecordView& r) {
  if (r.kind == RecordKind::log) return kLogHeaderSize + r.key.size() + r.value.size();
  return kDeadLetterHeaderSize + r.key.size() + r.value.size() + r.group.size() + r.reason.size();
}

std::byte* put(std::byte* p, std::string_view s) {
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

}  // namespace

std::size_t encoded_size(const RecordView& r) {
  return check_limits(r) == EncodeStatus::ok ? size_within_limits(r) : 0;
}

EncodeResult encode(const RecordView& r, std::span<std::byte> out) {
  const EncodeStatus limits = check_limits(r);
  if (limits != EncodeStatus::ok) return {limits, 0};
  const std::size_t size = size_within_limits(r);
  if (out.size() < size) return {EncodeStatus::buffer_too_small, size};

  std::byte* const b = out.data();
  std::memcpy(b, kRecordMagic, sizeof kRecordMagic);
  b[offsetof(RecordHeader, version)] = static_cast<std::byte>(kRecordVersion);
  store_le<std::uint32_t>(b + kOffTotal, static_cast<std::uint32_t>(size));
  const bool dead_letter = r.kind == RecordKind::dead_letter;
  store_le<std::uint32_t>(b + kOffFlags, dead_letter ? kFlagDeadLetter : 0u);
  store_le<std::int64_t>(b + kOffTimestamp, r.timestamp_ns);
  store_le<std::uint64_t>(b + kOffUpstream, r.upstream_offset);
  store_le<std::uint32_t>(b + kOffKeyLen, static_cast<std::uint32_t>(r.key.size()));
  store_le<std::uint32_t>(b + kOffValueLen, static_cast<std::uint32_t>(r.value.size()));
  std::byte* p = b + kLogHeaderSize;
  if (dead_letter) {
    store_le<std::uint32_t>(b + kOffDelivery, r.delivery_count);
    store_le<std::uint16_t>(b + kOffGroupLen, static_cast<std::uint16_t>(r.group.size()));
    store_le<std::uint16_t>(b + kOffReasonLen, static_cast<std::uint16_t>(r.reason.size()));
    p = b + kDeadLetterHeaderSize;
  }
  p = put(p, r.key);
  p = put(p, r.value);
  if (dead_letter) {
    p = put(p, r.group);
    p = put(p, r.reason);
  }
  store_le<std::uint32_t>(b + kOffCrc, crc32c({b + kCrcStart, size - kCrcStart}));
  return {EncodeStatus::ok, size};
}

DecodeResult decode(std::span<const std::byte> bytes, std::uint64_t file_offset,
                    OffsetCheck check) {
  const std::byte* const b = bytes.data();
  const std::size_t avail = bytes.size();
  const std::uint64_t at = file_offset;

  // Garbage is refused by its first bytes, even before a whole header has arrived.
  for (std::size_t i = 0; i < sizeof kRecordMagic && i < avail; ++i) {
    if (b[i] != static_cast<std::byte>(kRecordMagic[i])) {
      return corrupt(at, "bad magic byte 0x%02x at byte offset %" PRIu64 " (expected \"RFL\")",
                     static_cast<unsigned>(b[i]), at + i);
    }
  }
  if (avail <= offsetof(RecordHeader, version)) return need_more(kLogHeaderSize);
  const auto version = static_cast<unsigned>(b[offsetof(RecordHeader, version)]);
  if (version != kRecordVersion) {
    return corrupt(at, "unsupported format version %u (this build reads version %u)", version,
                   static_cast<unsigned>(kRecordVersion));
  }
  if (avail < kLengthKnown) return need_more(kLogHeaderSize);

  const auto total = load_le<std::uint32_t>(b + kOffTotal);
  if (total < kLogHeaderSize || total > kMaxRecordSize) {
    return corrupt(at,
                   "total length %" PRIu32 " at byte offset %" PRIu64
                   " is outside [%zu, %zu], the sizes a record can have",
                   total, at + kOffTotal, kLogHeaderSize, kMaxRecordSize);
  }
  // Every valid record holds a whole log header, so waiting for one is safe.
  if (avail < kLogHeaderSize) return need_more(total);

  const auto flags = load_le<std::uint32_t>(b + kOffFlags);
  if ((flags & ~kKnownFlags) != 0) {
    return corrupt(at, "unknown flags 0x%08" PRIx32 " at byte offset %" PRIu64, flags,
                   at + kOffFlags);
  }
  const bool dead_letter = (flags & kFlagDeadLetter) != 0;
  const std::size_t header = dead_letter ? kDeadLetterHeaderSize : kLogHeaderSize;
  if (total < header) {
    return corrupt(at,
                   "total length %" PRIu32 " at byte offset %" PRIu64
                   " is shorter than the %zu-byte dead-letter header",
                   total, at + kOffTotal, header);
  }
  if (avail < header) return need_more(total);

  const auto key_len = load_le<std::uint32_t>(b + kOffKeyLen);
  const auto value_len = load_le<std::uint32_t>(b + kOffValueLen);
  if (key_len > kMaxKeyLength) {
    return corrupt(at, "key length %" PRIu32 " at byte offset %" PRIu64 " exceeds %zu", key_len,
                   at + kOffKeyLen, kMaxKeyLength);
  }
  if (value_len > kMaxValueLength) {
    return corrupt(at, "value length %" PRIu32 " at byte offset %" PRIu64 " exceeds %zu", value_len,
                   at + kOffValueLen, kMaxValueLength);
  }
  std::uint32_t delivery_count = 0;
  std::uint16_t group_len = 0;
  std::uint16_t reason_len = 0;
  if (dead_letter) {
    delivery_count = load_le<std::uint32_t>(b + kOffDelivery);
    group_len = load_le<std::uint16_t>(b + kOffGroupLen);
    reason_len = load_le<std::uint16_t>(b + kOffReasonLen);
    if (group_len > kMaxGroupLength) {
      return corrupt(at, "group name length %u at byte offset %" PRIu64 " exceeds %zu",
                     static_cast<unsigned>(group_len), at + kOffGroupLen, kMaxGroupLength);
    }
    if (reason_len > kMaxReasonLength) {
      return corrupt(at, "reason length %u at byte offset %" PRIu64 " exceeds %zu",
                     static_cast<unsigned>(reason_len), at + kOffReasonLen, kMaxReasonLength);
    }
  }
  // All terms are bounded by the checks above, so the sum cannot overflow.
  const std::size_t expected = header + key_len + value_len + group_len + reason_len;
  if (expected != total) {
    return corrupt(at,
                   "total length %" PRIu32 " at byte offset %" PRIu64
                   " disagrees with the header and field lengths, which add up to %zu",
                   total, at + kOffTotal, expected);
  }
  if (avail < total) return need_more(total);

  const auto stored_crc = load_le<std::uint32_t>(b + kOffCrc);
  const std::uint32_t crc = crc32c({b + kCrcStart, total - kCrcStart});
  if (crc != stored_crc) {
    return corrupt(at,
                   "CRC32C mismatch: stored 0x%08" PRIx32 " at byte offset %" PRIu64
                   ", computed 0x%08" PRIx32 " over bytes %" PRIu64 "..%" PRIu64,
                   stored_crc, at + kOffCrc, crc, at + kCrcStart, at + total - 1);
  }
  const auto upstream = load_le<std::uint64_t>(b + kOffUpstream);
  if (check == OffsetCheck::equals_position && upstream != file_offset) {
    return corrupt(at,
                   "the record says it sits at byte offset %" PRIu64
                   ": data spliced or copied from elsewhere",
                   upstream);
  }

  DecodeResult r;
  r.status = DecodeStatus::ok;
  r.size = total;
  RecordView& v = r.record;
  v.kind = dead_letter ? RecordKind::dead_letter : RecordKind::log;
  v.timestamp_ns = load_le<std::int64_t>(b + kOffTimestamp);
  v.upstream_offset = upstream;
  const std::byte* p = b + header;
  v.key = view_of(p, key_len);
  p += key_len;
  v.value = view_of(p, value_len);
  p += value_len;
  if (dead_letter) {
    v.delivery_count = delivery_count;
    v.group = view_of(p, group_len);
    p += group_len;
    v.reason = view_of(p, reason_len);
  }
  return r;
}

DecodeResult decode_line(std::span<const std::byte> bytes, std::uint64_t file_offset) {
  // A line may be as long as a value, plus its '\n'; look no further than that.
  const std::size_t window =
      bytes.size() < kMaxValueLength + 1 ? bytes.size() : kMaxValueLength + 1;
  const void* nl = window == 0 ? nullptr : std::memchr(bytes.data(), '\n', window);
  if (nl == nullptr) {
    if (bytes.size() > kMaxValueLength) {
      DecodeResult r;
      r.status = DecodeStatus::corrupt;
      r.error = "line at byte offset " + std::to_string(file_offset) + " has no newline within " +
                std::to_string(kMaxValueLength) + " bytes, the longest value a record can have";
      return r;
    }
    return need_more(bytes.size() + 1);
  }
  const auto len = static_cast<std::size_t>(static_cast<const std::byte*>(nl) - bytes.data());
  DecodeResult r;
  r.status = DecodeStatus::ok;
  r.size = len + 1;
  r.record.upstream_offset = file_offset;
  r.record.value = view_of(bytes.data(), len);
  return r;
}

}  // namespace ringfeed::io
