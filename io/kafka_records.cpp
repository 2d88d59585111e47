#include "io/kafka_records.hpp"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <utility>

#include "io/crc32c.hpp"
#include "io/kafka_wire.hpp"

namespace ringfeed::io::kafka {

namespace {

// Each record takes at least 7 bytes: one per varint (length, timestamp delta, offset
// delta, key length, value length, header count) and the attributes byte.
constexpr std::size_t kMinRecordSize = 7;

// Timestamps are Java longs on the producer's side: their deltas wrap, never trap.
std::int64_t wrapping_add(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
}

std::int64_t wrapping_sub(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) - static_cast<std::uint64_t>(b));
}

std::uint32_t crc_of(std::string_view bytes) {
  return crc32c(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

BatchResult batch_error(std::string message) {
  BatchResult r;
  r.status = BatchStatus::error;
  r.error = std::move(message);
  return r;
}

std::string hex32(std::uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xf];
  return s;
}

// Reads a varint length of a key, value or header that must fit in what is left of the
// record ending at `record_end`; -1 (null) when `nullable`.
std::optional<std::string_view> read_field(Reader& r, std::size_t record_end, const char* field,
                                           bool nullable) {
  const std::size_t start = r.position();
  const std::int32_t n = r.varint(field);
  if (!r.ok()) return std::nullopt;
  if (n == -1 && nullable) return std::nullopt;
  if (n < 0) {
    r.fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(start));
    return std::nullopt;
  }
  const std::size_t left = record_end > r.position() ? record_end - r.position() : 0;
  if (static_cast<std::size_t>(n) > left) {
    r.fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(start) +
                      " runs past the end of its record at byte " + std::to_string(record_end));
    return std::nullopt;
  }
  return r.raw(static_cast<std::size_t>(n), field);
}

// Reads `count` headers of the record ending at `end` into `out`.
void read_headers(Reader& r, std::size_t end, std::size_t count,
                  std::vector<RecordHeaderView>& out) {
  for (std::size_t k = 0; k < count && r.ok(); ++k) {
    Reader::Element he(r, "headers", k);
    RecordHeaderView hv;
    hv.key = read_field(r, end, "key", false).value_or(std::string_view());
    const std::optional<std::string_view> hvalue = read_field(r, end, "value", true);
    hv.value = hvalue.value_or(std::string_view());
    hv.value_null = !hvalue;
    out.push_back(hv);
  }
}

// Reads a header count and checks that so many headers (2 bytes each at least) fit in
// the record ending at `end`. -1 after an error.
std::int32_t read_header_count(Reader& r, std::size_t end) {
  const std::size_t at = r.position();
  const std::int32_t count = r.varint("header_count");
  if (!r.ok()) return -1;
  const std::size_t left = end > r.position() ? end - r.position() : 0;
  if (count < 0 || static_cast<std::size_t>(count) > left / 2) {
    r.fail("header_count", "count " + std::to_string(count) + " at byte " + std::to_string(at) +
                               " does not fit in the " + std::to_string(left) +
                               " bytes left of the record");
    return -1;
  }
  return count;
}

// Writes a varint length and the bytes; null as length -1.
void write_field(Writer& b, std::optional<std::string_view> v) {
  if (!v) {
    b.varint(-1);
  } else {
    b.varint(static_cast<std::int32_t>(v->size()));
    b.raw(*v);
  }
}

void write_headers(Writer& b, std::span<const OutRecordHeader> headers) {
  b.varint(static_cast<std::int32_t>(headers.size()));
  for (const OutRecordHeader& hdr : headers) {
    write_field(b, hdr.key);
    write_field(b, hdr.value);
  }
}

// Decodes `count` records from `data` (the batch's records section, decompressed) into
// `out`.
Status decode_records(std::string_view data, std::size_t count, std::string context,
                      std::string_view what, RecordBatch& out) {
  Reader r(data, std::move(context), what);
  const RecordBatchHeader& h = out.header;
  if (count > data.size() / kMinRecordSize) {
    r.fail("record_count", std::to_string(count) + " records cannot fit in " +
                               std::to_string(data.size()) + " bytes (each takes at least " +
                               std::to_string(kMinRecordSize) + ")");
    return r.error();
  }
  out.records.resize(count);
  for (std::size_t i = 0; i < count && r.ok(); ++i) {
    Reader::Element e(r, "records", i);
    RecordView& rec = out.records[i];
    const std::size_t length_at = r.position();
    const std::int32_t length = r.varint("length");
    if (!r.ok()) break;
    if (length < 0 || static_cast<std::size_t>(length) > r.remaining()) {
      r.fail("length", "length " + std::to_string(length) + " at byte " +
                           std::to_string(length_at) + " runs past the end of " +
                           std::string(what) + " (" + std::to_string(data.size()) + " bytes)");
      break;
    }
    const std::size_t end = r.position() + static_cast<std::size_t>(length);
    r.int8("attributes");
    const std::int64_t timestamp_delta = r.varlong("timestamp_delta");
    const std::int32_t offset_delta = r.varint("offset_delta");
    if (r.ok() && offset_delta < 0) {
      r.fail("offset_delta", "negative offset delta " + std::to_string(offset_delta));
    }
    const std::optional<std::string_view> key = read_field(r, end, "key", true);
    const std::optional<std::string_view> value = read_field(r, end, "value", true);
    const std::size_t headers_at = r.position();
    const std::int32_t header_count = read_header_count(r, end);
    if (!r.ok()) break;
    rec.first_header = static_cast<std::uint32_t>(out.headers.size());
    rec.header_count = static_cast<std::uint32_t>(header_count);
    read_headers(r, end, rec.header_count, out.headers);
    if (!r.ok()) break;
    rec.headers_encoded =
        header_count == 0 ? std::string_view() : data.substr(headers_at, r.position() - headers_at);
    if (r.position() != end) {
      r.fail("length",
             "length " + std::to_string(length) + " at byte " + std::to_string(length_at) +
                 " disagrees with its fields, which end at byte " + std::to_string(r.position()));
      break;
    }
    rec.offset = h.base_offset + offset_delta;
    // Under log append time the broker's time, max_timestamp, holds for every record.
    rec.timestamp =
        h.log_append_time() ? h.max_timestamp : wrapping_add(h.base_timestamp, timestamp_delta);
    rec.key = key.value_or(std::string_view());
    rec.key_null = !key;
    rec.value = value.value_or(std::string_view());
    rec.value_null = !value;
  }
  return r.finish();
}

}  // namespace

const char* to_string(BatchStatus s) {
  switch (s) {
    case BatchStatus::complete:
      return "complete";
    case BatchStatus::incomplete:
      return "incomplete";
    case BatchStatus::error:
      return "error";
  }
  return "unknown batch status";
}

BatchResult decode_record_batch(std::string_view input, RecordBatch& out,
                                const RecordLimits& limits) {
  BatchResult result;
  if (input.size() < kBatchLogOverhead) {
    result.size = kBatchLogOverhead;
    return result;
  }
  Reader head(input, "record batch", "the batch");
  const std::int64_t base_offset = head.int64("base_offset");
  const std::int32_t batch_length = head.int32("batch_length");
  const std::string name = "record batch at offset " + std::to_string(base_offset);
  // The magic is where older message sets have theirs too (after offset, size, crc).
  if (input.size() > kBatchMagicOffset) {
    const auto magic = static_cast<std::int8_t>(input[kBatchMagicOffset]);
    if (magic != kRecordBatchMagic) {
      return batch_error(name + ": magic " + std::to_string(magic) +
                         (magic == 0 || magic == 1
                              ? " is an old message set (Kafka before 0.11): only record "
                                "batches of magic 2 are read"
                              : " is unknown: only record batches of magic 2 are read"));
    }
  }
  constexpr auto kMinLength = static_cast<std::int32_t>(kBatchHeaderSize - kBatchLogOverhead);
  if (batch_length < kMinLength) {
    return batch_error(name + ": batch_length " + std::to_string(batch_length) + " is below the " +
                       std::to_string(kMinLength) + " bytes of the header fields it covers");
  }
  const std::size_t size = kBatchLogOverhead + static_cast<std::size_t>(batch_length);
  if (size > limits.max_batch_size) {
    return batch_error(name + ": batch of " + std::to_string(size) +
                       " bytes is over the limit of " + std::to_string(limits.max_batch_size));
  }
  if (input.size() < size) {
    result.size = size;
    return result;
  }
  const std::string_view batch = input.substr(0, size);

  RecordBatchHeader& h = out.header;
  out.records.clear();
  out.headers.clear();
  Reader r(batch, name, "the batch");
  h.base_offset = r.int64("base_offset");
  h.batch_length = r.int32("batch_length");
  h.partition_leader_epoch = r.int32("partition_leader_epoch");
  h.magic = r.int8("magic");
  h.crc = r.uint32("crc");
  h.attributes = r.int16("attributes");
  h.last_offset_delta = r.int32("last_offset_delta");
  h.base_timestamp = r.int64("base_timestamp");
  h.max_timestamp = r.int64("max_timestamp");
  h.producer_id = r.int64("producer_id");
  h.producer_epoch = r.int16("producer_epoch");
  h.base_sequence = r.int32("base_sequence");
  h.record_count = r.int32("record_count");
  if (!r.ok()) return batch_error(r.message());

  const std::uint32_t crc = crc_of(batch.substr(kBatchAttributesOffset));
  if (crc != h.crc) {
    return batch_error(name + ": crc " + hex32(h.crc) + " does not match " + hex32(crc) +
                       ", the CRC32C of bytes " + std::to_string(kBatchAttributesOffset) + " to " +
                       std::to_string(size) + " (the batch is damaged)");
  }
  if (h.record_count < 0) {
    return batch_error(name + ": negative record_count " + std::to_string(h.record_count));
  }
  if (h.last_offset_delta < 0) {
    return batch_error(name + ": negative last_offset_delta " +
                       std::to_string(h.last_offset_delta));
  }
  if (h.base_offset < 0 || h.base_offset > std::numeric_limits<std::int64_t>::max() -
                                               h.last_offset_delta -
                                               std::numeric_limits<std::int32_t>::max()) {
    return batch_error(name + ": base_offset out of range");
  }

  const std::string_view section = batch.substr(kBatchHeaderSize);
  const auto count = static_cast<std::size_t>(h.record_count);
  Status decoded = Ok{};
  const Compression codec = h.compression();
  if (codec == Compression::none) {
    decoded = decode_records(section, count, name, "the batch's records", out);
  } else {
    if (static_cast<unsigned>(codec) > static_cast<unsigned>(Compression::zstd)) {
      return batch_error(name + ": unknown compression codec " +
                         std::to_string(static_cast<unsigned>(codec)) + " in attributes " +
                         std::to_string(h.attributes));
    }
    if (auto s = decompress(codec, section, limits.max_decompressed_size, out.decompressed); !s) {
      return batch_error(name + ": " + s.error().message);
    }
    decoded = decode_records(std::string_view(out.decompressed.data(), out.decompressed.size()),
                             count, name, "the decompressed records", out);
  }
  if (!decoded) return batch_error(decoded.error().message);
  result.status = BatchStatus::complete;
  result.size = size;
  return result;
}

// --- writing -----------------------------------------------------------------------

Status append_record_batch(std::string& out, const BatchOptions& options,
                           std::span<const OutRecord> records) {
  if (records.empty()) return Error{"a record batch needs at least one record", EINVAL};
  std::int64_t base_timestamp = records[0].timestamp;
  std::int64_t max_timestamp = records[0].timestamp;
  for (const OutRecord& rec : records) {
    base_timestamp = std::min(base_timestamp, rec.timestamp);
    max_timestamp = std::max(max_timestamp, rec.timestamp);
  }

  std::string plain;
  Writer w(plain);
  std::string body;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const OutRecord& rec = records[i];
    body.clear();
    Writer b(body);
    b.int8(0);  // attributes
    b.varlong(wrapping_sub(rec.timestamp, base_timestamp));
    b.varint(static_cast<std::int32_t>(i));
    write_field(b, rec.key);
    write_field(b, rec.value);
    write_headers(b, rec.headers);
    w.varint(static_cast<std::int32_t>(body.size()));
    w.raw(body);
  }

  const std::size_t start = out.size();
  Writer o(out);
  o.int64(options.base_offset);
  o.int32(0);  // batch_length, patched below
  o.int32(options.partition_leader_epoch);
  o.int8(kRecordBatchMagic);
  o.uint32(0);  // crc, patched below
  std::int16_t attributes = static_cast<std::int16_t>(options.compression);
  if (options.transactional) attributes |= kAttributeTransactional;
  if (options.control) attributes |= kAttributeControl;
  o.int16(attributes);
  o.int32(static_cast<std::int32_t>(records.size() - 1));
  o.int64(base_timestamp);
  o.int64(max_timestamp);
  o.int64(options.producer_id);
  o.int16(options.producer_epoch);
  o.int32(options.base_sequence);
  o.int32(static_cast<std::int32_t>(records.size()));
  if (auto s = compress(options.compression, plain, out); !s) {
    out.resize(start);
    return s;
  }
  o.patch_int32(start + kBatchLengthOffset,
                static_cast<std::int32_t>(out.size() - start - kBatchLogOverhead));
  const std::uint32_t crc = crc_of(std::string_view(out).substr(start + kBatchAttributesOffset));
  o.patch_int32(start + kBatchCrcOffset, static_cast<std::int32_t>(crc));
  return Ok{};
}

std::string encode_record_headers(std::span<const OutRecordHeader> headers) {
  std::string out;
  if (headers.empty()) return out;
  Writer w(out);
  write_headers(w, headers);
  return out;
}

Status decode_record_headers(std::string_view encoded, std::vector<RecordHeaderView>& out) {
  out.clear();
  if (encoded.empty()) return Ok{};
  Reader r(encoded, "record headers", "the headers");
  const std::int32_t count = read_header_count(r, encoded.size());
  if (r.ok()) read_headers(r, encoded.size(), static_cast<std::size_t>(count), out);
  if (r.ok() && r.remaining() != 0) {
    r.fail("headers", std::to_string(r.remaining()) + " bytes after the last header");
  }
  if (!r.ok()) return r.error();
  return Ok{};
}

}  // namespace ringfeed::io::kafka
