// The record format of the local log (`file:DIR`, one append-only file DIR/P.log per
// partition) and of the dead-letter log, plus the plain `lines` format.
//
// A framed record, all integers little-endian, no padding between or after records:
//
//   byte  size  field
//   0     3     magic "RFL" (0x52 0x46 0x4C)
//   3     1     version, 1
//   4     4     total_length: bytes of the whole record, this header included
//   8     4     crc: CRC32C of bytes [12, total_length), everything after this field
//   12    4     flags: bit 0 = dead-letter record; every other bit is 0
//   16    8     timestamp_ns (i64): when the record was produced, ns since the Unix epoch
//   24    8     upstream_offset (u64): see below
//   32    4     key_length (u32), at most kMaxKeyLength
//   36    4     value_length (u32), at most kMaxValueLength
//   -- dead-letter records only --
//   40    4     delivery_count (u32): how often the message had been handed out
//   44    2     group_length (u16), at most kMaxGroupLength
//   46    2     reason_length (u16), at most kMaxReasonLength
//   --
//   40|48       key bytes, then value bytes; a dead-letter record then has the consumer
//               group name and the reason (text)
//
// total_length is redundant with the header and the lengths: the decoder requires them
// to agree before it waits for the rest. So a damaged length is reported as corruption
// at once, rather than read as "the record is not all there yet", which would stall a
// reader at the end of the file forever.
//
// upstream_offset of a log record is the byte position of the record in its file. The
// appender learns it from the file size under its lock (no scan, no counter), a
// checkpoint is a position to seek to, and a reader checks that each record sits where
// it claims (OffsetCheck::equals_position), which catches spliced, copied or misframed
// data that each carry a valid CRC. A dead-letter record instead carries the offset of
// the original message in its source partition, so it can be found and replayed.
//
// The magic and version come first and are outside the CRC so that garbage is refused
// by its first bytes; the version sits in the marker so a future layout is refused by
// name ("version 2"), not as a CRC mismatch.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace ringfeed::io {

inline constexpr std::size_t kMaxKeyLength = std::size_t{64} * 1024;
inline constexpr std::size_t kMaxValueLength = std::size_t{16} * 1024 * 1024;
// Group names in shared memory are at most 48 characters; the log leaves room to grow.
inline constexpr std::size_t kMaxGroupLength = 255;
inline constexpr std::size_t kMaxReasonLength = 4096;

inline constexpr char kRecordMagic[3] = {'R', 'F', 'L'};
inline constexpr std::uint8_t kRecordVersion = 1;
inline constexpr std::uint32_t kFlagDeadLetter = 1u << 0;
inline constexpr std::uint32_t kKnownFlags = kFlagDeadLetter;

// The fixed part of every record. Documents and pins the layout; encode and decode read
// and write the fields at these offsets byte by byte (little-endian on any host), never
// by casting a file buffer to this struct, which may be unaligned.
struct RecordHeader {
  char magic[3];
  std::uint8_t version;
  std::uint32_t total_length;
  std::uint32_t crc;
  std::uint32_t flags;
  std::int64_t timestamp_ns;
  std::uint64_t upstream_offset;
  std::uint32_t key_length;
  std::uint32_t value_length;
};
static_assert(std::is_standard_layout_v<RecordHeader>, "offsetof must be meaningful");
static_assert(sizeof(RecordHeader) == 40, "the on-disk header is 40 bytes, no tail padding");
static_assert(alignof(RecordHeader) == 8, "i64/u64 fields at 8-aligned offsets");
static_assert(offsetof(RecordHeader, version) == 3);
static_assert(offsetof(RecordHeader, total_length) == 4);
static_assert(offsetof(RecordHeader, crc) == 8);
static_assert(offsetof(RecordHeader, flags) == 12, "the CRC covers from here on");
static_assert(offsetof(RecordHeader, timestamp_ns) == 16);
static_assert(offsetof(RecordHeader, upstream_offset) == 24);
static_assert(offsetof(RecordHeader, key_length) == 32);
static_assert(offsetof(RecordHeader, value_length) == 36);

// Follows RecordHeader in a dead-letter record (flags & kFlagDeadLetter).
struct DeadLetterHeader {
  std::uint32_t delivery_count;
  std::uint16_t group_length;
  std::uint16_t reason_length;
};
static_assert(std::is_standard_layout_v<DeadLetterHeader>, "offsetof must be meaningful");
static_assert(sizeof(DeadLetterHeader) == 8, "no padding");
static_assert(offsetof(DeadLetterHeader, delivery_count) == 0);
static_assert(offsetof(DeadLetterHeader, group_length) == 4);
static_assert(offsetof(DeadLetterHeader, reason_length) == 6);
static_assert(kMaxGroupLength <= UINT16_MAX && kMaxReasonLength <= UINT16_MAX,
              "their lengths are stored in 16 bits");

inline constexpr std::size_t kLogHeaderSize = sizeof(RecordHeader);
inline constexpr std::size_t kDeadLetterHeaderSize =
    sizeof(RecordHeader) + sizeof(DeadLetterHeader);
inline constexpr std::size_t kCrcStart = offsetof(RecordHeader, flags);
inline constexpr std::size_t kMaxRecordSize =
    kDeadLetterHeaderSize + kMaxKeyLength + kMaxValueLength + kMaxGroupLength + kMaxReasonLength;
static_assert(kMaxRecordSize <= UINT32_MAX, "total_length is stored in 32 bits");

enum class RecordKind : std::uint8_t { log, dead_letter };

// The fields of one record. encode reads them; decode fills them with views into the
// bytes it was given (valid as long as those bytes are).
struct RecordView {
  RecordKind kind = RecordKind::log;
  std::int64_t timestamp_ns = 0;
  std::uint64_t upstream_offset = 0;
  std::string_view key;
  std::string_view value;
  // Dead-letter records only; a log record has 0 and empty here.
  std::uint32_t delivery_count = 0;
  std::string_view group;
  std::string_view reason;
};

enum class EncodeStatus : std::uint8_t {
  ok,
  buffer_too_small,  // nothing written; size says how many bytes the record needs
  key_too_long,
  value_too_long,
  group_too_long,
  reason_too_long,
  dead_letter_fields_on_log_record,  // group, reason or delivery_count set on a log record
};
const char* to_string(EncodeStatus s);

struct EncodeResult {
  EncodeStatus status = EncodeStatus::ok;
  std::size_t size = 0;  // ok: bytes written; buffer_too_small: bytes needed; else 0
};

// Bytes `r` encodes to; 0 if a field breaks its limit (encode says which).
std::size_t encoded_size(const RecordView& r);

// Encodes `r` at the start of `out`. Never writes past out.size(), writes nothing unless ok.
EncodeResult encode(const RecordView& r, std::span<std::byte> out);

enum class DecodeStatus : std::uint8_t {
  ok,         // a whole, valid record: `record` and `size` are set
  need_more,  // the bytes end inside a record that is valid so far: the tail of a file
              // being appended to; read more and decode again from the same position
  corrupt,    // the bytes are not a valid record: `error` says what and where
};
const char* to_string(DecodeStatus s);

struct DecodeResult {
  DecodeStatus status = DecodeStatus::need_more;
  RecordView record;
  // ok: bytes the record occupies (the next record starts there).
  // need_more: how many bytes the span must hold for decode to get further (the whole
  // record once its length has been read).
  std::size_t size = 0;
  // corrupt: one sentence naming the fault and its byte offset in the file.
  std::string error;
};

// Whether decode checks that a record's upstream_offset equals its position in the file
// (file_offset). On for the partition logs, off for the dead-letter log.
enum class OffsetCheck : std::uint8_t { none, equals_position };

// Decodes the record at the start of `bytes`, which begin at byte `file_offset` of their
// file (used in error messages and by OffsetCheck). Reads nothing outside `bytes`.
DecodeResult decode(std::span<const std::byte> bytes, std::uint64_t file_offset = 0,
                    OffsetCheck check = OffsetCheck::none);

// The `lines` format: each '\n'-terminated line is one record whose value is the line
// without its '\n' (an empty line is an empty value, not skipped); no key, no CRC,
// timestamp 0 (the reader stamps it), upstream_offset = file_offset. A last line without
// its '\n' is need_more: the writer may be in the middle of it. A line longer than
// kMaxValueLength is corrupt.
DecodeResult decode_line(std::span<const std::byte> bytes, std::uint64_t file_offset = 0);

}  // namespace ringfeed::io
