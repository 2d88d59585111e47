// Kafka record batches (magic 2, Kafka 0.11 and later): what a Fetch response carries in
// each partition's `records`, one batch after another. decode_record_batch reads one
// batch (CRC32C checked, decompressed, its records into views), append_record_batch
// writes one (for tests and for fake brokers that serve them).
//
// A record batch, integers big-endian (io/kafka_wire.hpp):
//
//   byte  size  field
//   0     8     base_offset              offset of the first record
//   8     4     batch_length             bytes after this field (the batch is 12 + it)
//   12    4     partition_leader_epoch
//   16    1     magic                    2; 0 and 1 are the older message sets, refused
//   17    4     crc                      CRC32C (io/crc32c.hpp) of bytes [21, end)
//   21    2     attributes               bits 0-2 compression (Compression), bit 3
//                                        timestamp type (1: log append time), bit 4
//                                        transactional, bit 5 control batch
//   23    4     last_offset_delta
//   27    8     base_timestamp           ms since the Unix epoch
//   35    8     max_timestamp
//   43    8     producer_id
//   51    2     producer_epoch
//   53    4     base_sequence
//   57    4     record_count
//   61    ...   the records, compressed as a whole when bits 0-2 say so
//
// A record, every integer a zigzag varint or varlong:
//
//   length varint                bytes after this field
//   attributes int8              unused, 0
//   timestamp_delta varlong      from base_timestamp
//   offset_delta varint          from base_offset
//   key_length varint, key       -1: null key
//   value_length varint, value   -1: null value
//   header_count varint, then per header: key_length varint (not null), key,
//                                value_length varint (-1: null), value
//
// A control batch holds transaction markers (a record whose key is version int16 and
// type int16, 0 abort and 1 commit), not messages: it is decoded and reported as one
// (RecordBatchHeader::control), and consumers skip it.
//
// The records section is compressed by the codec of attribute bits 0-2
// (io/kafka_compression.hpp). Its decompressed size is limited (RecordLimits), so a
// small batch cannot make the fetcher allocate without bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/kafka_compression.hpp"
#include "shm/result.hpp"

namespace ringfeed::io::kafka {

inline constexpr std::size_t kBatchLengthOffset = 8;
inline constexpr std::size_t kBatchMagicOffset = 16;
inline constexpr std::size_t kBatchCrcOffset = 17;
inline constexpr std::size_t kBatchAttributesOffset = 21;  // the CRC covers from here
inline constexpr std::size_t kBatchHeaderSize = 61;
inline constexpr std::size_t kBatchLogOverhead = 12;  // base_offset and batch_length
inline constexpr std::int8_t kRecordBatchMagic = 2;

inline constexpr std::int16_t kAttributeCompressionMask = 0x07;
inline constexpr std::int16_t kAttributeLogAppendTime = 0x08;
inline constexpr std::int16_t kAttributeTransactional = 0x10;
inline constexpr std::int16_t kAttributeControl = 0x20;

// The fields of a batch header, as on the wire (table above).
struct RecordBatchHeader {
  std::int64_t base_offset = 0;
  std::int32_t batch_length = 0;
  std::int32_t partition_leader_epoch = -1;
  std::int8_t magic = kRecordBatchMagic;
  std::uint32_t crc = 0;
  std::int16_t attributes = 0;
  std::int32_t last_offset_delta = 0;
  std::int64_t base_timestamp = 0;
  std::int64_t max_timestamp = 0;
  std::int64_t producer_id = -1;
  std::int16_t producer_epoch = -1;
  std::int32_t base_sequence = -1;
  std::int32_t record_count = 0;

  Compression compression() const {
    return static_cast<Compression>(attributes & kAttributeCompressionMask);
  }
  bool log_append_time() const { return (attributes & kAttributeLogAppendTime) != 0; }
  bool transactional() const { return (attributes & kAttributeTransactional) != 0; }
  bool control() const { return (attributes & kAttributeControl) != 0; }
  // The offset after the batch: where the next fetch starts (past compacted-away
  // records too, which last_offset_delta still counts).
  std::int64_t next_offset() const { return base_offset + last_offset_delta + 1; }
};

struct RecordHeaderView {
  std::string_view key;
  std::string_view value;
  bool value_null = false;
};

// One record of a decoded batch. Views point into the input given to decode_record_batch
// or, for a compressed batch, into RecordBatch::decompressed.
struct RecordView {
  std::int64_t offset = 0;
  std::int64_t timestamp = 0;  // ms; the batch's max_timestamp under log append time
  std::string_view key;
  bool key_null = false;
  std::string_view value;
  bool value_null = false;
  std::uint32_t first_header = 0;  // in RecordBatch::headers
  std::uint32_t header_count = 0;
  // The headers as on the wire (count, then each header), for passing on as they are;
  // empty when the record has none.
  std::string_view headers_encoded;
};

// A decoded batch. Reused across decodes: its vectors keep their capacity. Views stay
// valid until the next decode into it or its destruction (moving it keeps them valid).
struct RecordBatch {
  RecordBatchHeader header;
  std::vector<RecordView> records;
  std::vector<RecordHeaderView> headers;  // of every record, in order
  std::vector<char> decompressed;

  std::span<const RecordHeaderView> headers_of(const RecordView& r) const {
    return std::span<const RecordHeaderView>(headers).subspan(r.first_header, r.header_count);
  }
};

struct RecordLimits {
  // Largest batch accepted (12 + batch_length); larger means the data lost its framing.
  std::size_t max_batch_size = std::size_t{100} * 1024 * 1024;
  // Largest decompressed records section of one batch. Producers send batches of at
  // most their batch.size (1 MiB by default), so 64 MiB is far beyond a real one; it
  // also bounds the views a batch decodes to (a record takes at least 7 bytes).
  std::size_t max_decompressed_size = std::size_t{64} * 1024 * 1024;
};

enum class BatchStatus : std::uint8_t {
  complete,    // `out` holds the batch; `size` is its bytes in the input
  incomplete,  // the input ends inside the batch (Fetch cuts the last one at its byte
               // limit): not an error; `size` is the bytes the whole batch needs
  error,       // `error` says what and where
};
const char* to_string(BatchStatus s);

struct BatchResult {
  BatchStatus status = BatchStatus::incomplete;
  std::size_t size = 0;
  std::string error;
};

// Decodes the batch at the start of `input`. The caller steps past `size` bytes for the
// next one and stops at the first incomplete batch. A magic other than 2 is an error as
// soon as its byte is there, even in a cut batch; every other check waits for the
// whole batch. Errors name the batch by its base offset and say what is wrong where:
//
//   record batch at offset 120: records[3].value: length 900 at byte 54 runs past the
//   end of the decompressed records (310 bytes)
//
// Never reads outside `input`.
BatchResult decode_record_batch(std::string_view input, RecordBatch& out,
                                const RecordLimits& limits = {});

// --- writing -----------------------------------------------------------------------

struct OutRecordHeader {
  std::string_view key;
  std::optional<std::string_view> value;
};

struct OutRecord {
  std::optional<std::string_view> key;
  std::optional<std::string_view> value;
  std::int64_t timestamp = 0;  // ms
  std::vector<OutRecordHeader> headers;
};

// Record headers alone, in the record's encoding: a varint count, then per header a
// varint key length, the key, a varint value length (-1: null) and the value. No headers
// encode to nothing.
std::string encode_record_headers(std::span<const OutRecordHeader> headers);
// Decodes what encode_record_headers (or RecordView::headers_encoded) holds into `out`.
// An error names the header and field ("record headers: headers[1].value: ..."). Never
// reads outside `encoded`; views point into it.
Status decode_record_headers(std::string_view encoded, std::vector<RecordHeaderView>& out);

struct BatchOptions {
  std::int64_t base_offset = 0;
  Compression compression = Compression::none;
  std::int32_t partition_leader_epoch = -1;
  std::int64_t producer_id = -1;
  std::int16_t producer_epoch = -1;
  std::int32_t base_sequence = -1;
  bool transactional = false;
  bool control = false;
};

// Appends one batch of `records` (offsets base_offset, base_offset + 1, ...) to `out`.
// Refuses an empty batch and reports a compression library's failure; then nothing is
// appended.
Status append_record_batch(std::string& out, const BatchOptions& options,
                           std::span<const OutRecord> records);

}  // namespace ringfeed::io::kafka
