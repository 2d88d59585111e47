// Kafka record batches (io/kafka_records.hpp) and their codecs (io/kafka_compression.hpp):
// round trips with every codec (each compressed by its own library, snappy also in the
// xerial framing Java clients write), keys, values and headers null and empty, control
// and transactional batches, log append time, CRC mismatches, old magic, the limit on the
// decompressed size, and every cut of a batch reported as incomplete (or, for a cut old
// message set, the magic error), never a crash or a read past the end: inputs are
// exact-size heap copies, so the ASan build catches one.
#include <gtest/gtest.h>
#include <snappy-c.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "io/crc32c.hpp"
#include "io/kafka_compression.hpp"
#include "io/kafka_records.hpp"
#include "io/kafka_wire.hpp"
#include "tests/kafka_test_support.hpp"

namespace kafka = ringfeed::io::kafka;
using ringfeed::test::ExactString;

namespace {

using namespace std::literals;

constexpr kafka::Compression kCodecs[] = {kafka::Compression::none, kafka::Compression::gzip,
                                          kafka::Compression::snappy, kafka::Compression::lz4,
                                          kafka::Compression::zstd};

// Records with every kind of key, value and header: null, empty, short, long, binary.
struct Owned {
  std::vector<std::string> strings;
  std::vector<kafka::OutRecord> records;
};

Owned sample_records(std::size_t n, std::uint32_t seed) {
  Owned o;
  o.strings.reserve(4 * n);
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < n; ++i) {
    kafka::OutRecord r;
    r.timestamp = 1'700'000'000'000 + static_cast<std::int64_t>(i * 3);
    if (i % 5 != 0) r.key = o.strings.emplace_back("key-" + std::to_string(i % 7));
    if (i % 11 == 3) {
      r.value = std::nullopt;
    } else if (i % 11 == 4) {
      r.value = ""sv;
    } else {
      std::string v(rng() % (i % 13 == 0 ? 5000 : 200), 'v');
      for (char& c : v) c = static_cast<char>(rng() % 4 == 0 ? rng() : 'a' + (rng() % 3));
      r.value = o.strings.emplace_back(std::move(v));
    }
    if (i % 3 == 0) {
      r.headers.push_back({"trace", o.strings.emplace_back("t-" + std::to_string(i))});
      r.headers.push_back({"empty", ""sv});
      r.headers.push_back({"null", std::nullopt});
    }
    o.records.push_back(std::move(r));
  }
  return o;
}

void expect_same(const kafka::RecordBatch& b, std::span<const kafka::OutRecord> want,
                 std::int64_t base_offset) {
  ASSERT_EQ(b.records.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const kafka::RecordView& r = b.records[i];
    const kafka::OutRecord& w = want[i];
    EXPECT_EQ(r.offset, base_offset + static_cast<std::int64_t>(i));
    EXPECT_EQ(r.timestamp, w.timestamp);
    EXPECT_EQ(r.key_null, !w.key) << i;
    EXPECT_EQ(r.key, w.key.value_or("")) << i;
    EXPECT_EQ(r.value_null, !w.value) << i;
    EXPECT_EQ(r.value, w.value.value_or("")) << i;
    const auto headers = b.headers_of(r);
    ASSERT_EQ(headers.size(), w.headers.size()) << i;
    for (std::size_t h = 0; h < headers.size(); ++h) {
      EXPECT_EQ(headers[h].key, w.headers[h].key);
      EXPECT_EQ(headers[h].value_null, !w.headers[h].value);
      EXPECT_EQ(headers[h].value, w.headers[h].value.value_or(""));
    }
    // What the fetcher passes on: the headers as on the wire, which decode the same.
    EXPECT_EQ(r.headers_encoded, kafka::encode_record_headers(w.headers)) << i;
    std::vector<kafka::RecordHeaderView> again;
    ASSERT_TRUE(kafka::decode_record_headers(r.headers_encoded, again).ok()) << i;
    ASSERT_EQ(again.size(), headers.size()) << i;
    for (std::size_t h = 0; h < headers.size(); ++h) {
      EXPECT_EQ(again[h].key, headers[h].key);
      EXPECT_EQ(again[h].value, headers[h].value);
      EXPECT_EQ(again[h].value_null, headers[h].value_null);
    }
  }
}

std::string batch_of(const Owned& o, const kafka::BatchOptions& options) {
  std::string out;
  const auto s = kafka::append_record_batch(out, options, o.records);
  EXPECT_TRUE(s) << s.error().message;
  return out;
}

// Decodes `bytes` twice: from an exact-size copy (so that ASan sees any read past the
// end) and from `bytes` itself, whose views the caller may use; both must agree.
kafka::BatchResult decode(std::string_view bytes, kafka::RecordBatch& out,
                          const kafka::RecordLimits& limits = {}) {
  const ExactString input(bytes);
  kafka::RecordBatch scratch;
  const kafka::BatchResult exact = kafka::decode_record_batch(input.view(), scratch, limits);
  kafka::BatchResult r = kafka::decode_record_batch(bytes, out, limits);
  EXPECT_EQ(exact.status, r.status);
  EXPECT_EQ(exact.error, r.error);
  return r;
}

TEST(KafkaRecords, EveryCodecRoundTrips) {
  const Owned o = sample_records(200, 1);
  for (kafka::Compression c : kCodecs) {
    SCOPED_TRACE(kafka::to_string(c));
    const std::string bytes = batch_of(o, {.base_offset = 1000, .compression = c});
    if (c != kafka::Compression::none) {
      EXPECT_LT(bytes.size(), batch_of(o, {.base_offset = 1000}).size());
    }
    kafka::RecordBatch b;
    const kafka::BatchResult r = decode(bytes, b);
    ASSERT_EQ(r.status, kafka::BatchStatus::complete) << r.error;
    EXPECT_EQ(r.size, bytes.size());
    EXPECT_EQ(b.header.compression(), c);
    EXPECT_EQ(b.header.record_count, 200);
    EXPECT_EQ(b.header.next_offset(), 1200);
    EXPECT_FALSE(b.header.control());
    EXPECT_EQ(b.header.base_timestamp, o.records.front().timestamp);
    EXPECT_EQ(b.header.max_timestamp, o.records.back().timestamp);
    expect_same(b, o.records, 1000);
  }
}

TEST(KafkaRecords, TheCrcIsKafkasCrc32cOfAttributesToTheEnd) {
  const Owned o = sample_records(3, 2);
  const std::string bytes = batch_of(o, {});
  kafka::Reader r(bytes, "batch");
  r.raw(kafka::kBatchCrcOffset, "before");
  const std::uint32_t crc = r.uint32("crc");
  const std::string_view covered = std::string_view(bytes).substr(kafka::kBatchAttributesOffset);
  EXPECT_EQ(crc, ringfeed::io::crc32c(std::as_bytes(std::span(covered.data(), covered.size()))));
}

TEST(KafkaRecords, AFlippedBitIsACrcMismatch) {
  const Owned o = sample_records(20, 3);
  for (kafka::Compression c : kCodecs) {
    const std::string good = batch_of(o, {.base_offset = 5, .compression = c});
    for (std::size_t at : {kafka::kBatchAttributesOffset + 2, good.size() / 2, good.size() - 1}) {
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ 0x10);
      kafka::RecordBatch b;
      const auto r = decode(bad, b);
      ASSERT_EQ(r.status, kafka::BatchStatus::error) << kafka::to_string(c) << " at " << at;
      EXPECT_NE(r.error.find("record batch at offset 5: crc 0x"), std::string::npos) << r.error;
      EXPECT_NE(r.error.find("does not match"), std::string::npos) << r.error;
    }
  }
}

TEST(KafkaRecords, EveryCutIsIncompleteNeverAnError) {
  const Owned o = sample_records(30, 4);
  for (kafka::Compression c : kCodecs) {
    const std::string two = batch_of(o, {.base_offset = 0, .compression = c}) +
                            batch_of(o, {.base_offset = 30, .compression = c});
    kafka::RecordBatch first;
    const auto whole = decode(two, first);
    ASSERT_EQ(whole.status, kafka::BatchStatus::complete);
    for (std::size_t len = 0; len < whole.size; ++len) {
      kafka::RecordBatch b;
      const auto r = decode(std::string_view(two).substr(0, len), b);
      ASSERT_EQ(r.status, kafka::BatchStatus::incomplete)
          << kafka::to_string(c) << " cut to " << len << ": " << r.error;
      EXPECT_EQ(r.size, len < kafka::kBatchLogOverhead ? kafka::kBatchLogOverhead : whole.size);
    }
    // The second batch, cut at each byte, the way a Fetch response ends.
    const std::string_view rest = std::string_view(two).substr(whole.size);
    for (std::size_t len = 0; len < rest.size(); ++len) {
      kafka::RecordBatch b;
      EXPECT_EQ(decode(rest.substr(0, len), b).status, kafka::BatchStatus::incomplete);
    }
    kafka::RecordBatch second;
    ASSERT_EQ(decode(rest, second).status, kafka::BatchStatus::complete);
    EXPECT_EQ(second.records.front().offset, 30);
  }
}

// A batch whose records section is `records` (uncompressed, with a correct CRC), for
// records no encoder writes.
std::string raw_batch(std::string_view records, std::int32_t count) {
  std::string out;
  kafka::Writer w(out);
  w.int64(0);
  w.int32(0);
  w.int32(-1);
  w.int8(2);
  w.uint32(0);
  w.int16(0);
  w.int32(count - 1);
  w.int64(0);
  w.int64(0);
  w.int64(-1);
  w.int16(-1);
  w.int32(-1);
  w.int32(count);
  w.raw(records);
  w.patch_int32(kafka::kBatchLengthOffset, static_cast<std::int32_t>(out.size() - 12));
  const std::string_view covered = std::string_view(out).substr(kafka::kBatchAttributesOffset);
  w.patch_int32(kafka::kBatchCrcOffset,
                static_cast<std::int32_t>(ringfeed::io::crc32c(
                    std::as_bytes(std::span(covered.data(), covered.size())))));
  return out;
}

std::string record(const std::function<void(kafka::Writer&)>& fields) {
  std::string body;
  kafka::Writer b(body);
  fields(b);
  std::string out;
  kafka::Writer w(out);
  w.varint(static_cast<std::int32_t>(body.size()));
  w.raw(body);
  return out;
}

TEST(KafkaRecords, MalformedRecordsNameTheRecordAndTheField) {
  struct Case {
    std::string records;
    std::int32_t count;
    std::string error;
  };
  const std::string good = record([](kafka::Writer& w) {
    w.int8(0);
    w.varlong(0);
    w.varint(0);
    w.varint(1);
    w.raw("k");
    w.varint(1);
    w.raw("v");
    w.varint(0);
  });
  const Case cases[] = {
      {good, 2, "record batch at offset 0: record_count: 2 records cannot fit in 9 bytes"},
      {good + good, 1, "record batch at offset 0: 9 bytes left over after the last field"},
      {record([](kafka::Writer& w) {
         w.int8(0);
         w.varlong(0);
         w.varint(0);
         w.varint(50);
         w.raw("k");
         w.varint(0);
         w.varint(0);
       }) + "padding",
       1,
       "record batch at offset 0: records[0].key: length 50 at byte 4 runs past the end of its "
       "record"},
      {record([](kafka::Writer& w) {
         w.int8(0);
         w.varlong(0);
         w.varint(0);
         w.varint(-2);
         w.varint(0);
         w.varint(0);
         w.raw("xxxx");
       }),
       1, "record batch at offset 0: records[0].key: length -2 at byte 4"},
      {record([](kafka::Writer& w) {
         w.int8(0);
         w.varlong(0);
         w.varint(0);
         w.varint(-1);
         w.varint(-1);
         w.varint(1);
         w.varint(-1);  // a header key cannot be null
         w.varint(0);
         w.raw("xx");
       }),
       1, "record batch at offset 0: records[0].headers[0].key: length -1"},
      {record([](kafka::Writer& w) {
         w.int8(0);
         w.varlong(0);
         w.varint(0);
         w.varint(-1);
         w.varint(-1);
         w.varint(0);
         w.raw("zz");  // bytes the record's length counts but no field uses
       }),
       1,
       "record batch at offset 0: records[0].length: length 8 at byte 0 disagrees with its fields"},
      {record([](kafka::Writer& w) {
         w.int8(0);
         w.varlong(0);
         w.varint(-3);
         w.varint(-1);
         w.varint(-1);
         w.varint(0);
         w.raw("12345");
       }),
       1, "record batch at offset 0: records[0].offset_delta: negative offset delta -3"},
  };
  for (const Case& c : cases) {
    kafka::RecordBatch b;
    const std::string bytes = raw_batch(c.records, c.count);
    const auto r = decode(bytes, b);
    ASSERT_EQ(r.status, kafka::BatchStatus::error) << c.error;
    EXPECT_EQ(r.error.rfind(c.error, 0), 0u) << "got:  " << r.error << "\nwant: " << c.error;
  }
  // Every cut of the records section inside a whole batch (the batch length agrees, the
  // records do not) is an error naming a record field, never a read past the end.
  const std::string full = good + good;
  for (std::size_t len = 0; len < full.size(); ++len) {
    kafka::RecordBatch b;
    const auto r = decode(raw_batch(std::string_view(full).substr(0, len), 2), b);
    EXPECT_EQ(r.status, kafka::BatchStatus::error) << len;
  }
}

TEST(KafkaRecords, OldMessageSetsAreRefusedByTheirMagic) {
  // A magic 1 message: offset, size, crc, magic 1, attributes, timestamp, key, value.
  std::string m;
  kafka::Writer w(m);
  w.int64(7);
  w.int32(26);
  w.uint32(0);
  w.int8(1);
  w.int8(0);
  w.int64(0);
  w.nullable_bytes(std::nullopt);
  w.bytes("hi");
  for (std::size_t len = kafka::kBatchMagicOffset + 1; len <= m.size(); ++len) {
    kafka::RecordBatch b;
    const auto r = decode(std::string_view(m).substr(0, len), b);
    ASSERT_EQ(r.status, kafka::BatchStatus::error) << len;
    EXPECT_EQ(r.error,
              "record batch at offset 7: magic 1 is an old message set (Kafka before 0.11): "
              "only record batches of magic 2 are read");
  }
  std::string bad = batch_of(sample_records(1, 5), {});
  bad[kafka::kBatchMagicOffset] = 3;
  kafka::RecordBatch b;
  EXPECT_NE(decode(bad, b).error.find("magic 3 is unknown"), std::string::npos);
}

TEST(KafkaRecords, BadBatchLengthsAndCodecs) {
  std::string short_length = batch_of(sample_records(1, 6), {});
  kafka::Writer(short_length).patch_int32(kafka::kBatchLengthOffset, 48);
  kafka::RecordBatch b;
  EXPECT_EQ(decode(short_length, b).error,
            "record batch at offset 0: batch_length 48 is below the 49 bytes of the header "
            "fields it covers");
  std::string huge = batch_of(sample_records(1, 6), {});
  kafka::Writer(huge).patch_int32(kafka::kBatchLengthOffset, 1 << 30);
  EXPECT_NE(decode(huge, b, {.max_batch_size = 1 << 20}).error.find("over the limit"),
            std::string::npos);

  // Codec 5 does not exist (attributes sit under the CRC: recompute it).
  std::string unknown = batch_of(sample_records(1, 6), {});
  unknown[kafka::kBatchAttributesOffset + 1] = 5;
  const std::string_view covered = std::string_view(unknown).substr(kafka::kBatchAttributesOffset);
  kafka::Writer(unknown).patch_int32(
      kafka::kBatchCrcOffset, static_cast<std::int32_t>(ringfeed::io::crc32c(
                                  std::as_bytes(std::span(covered.data(), covered.size())))));
  EXPECT_NE(decode(unknown, b).error.find("unknown compression codec 5"), std::string::npos);
}

TEST(KafkaRecords, TheDecompressedSizeIsLimited) {
  kafka::OutRecord big{.key = std::nullopt, .value = std::nullopt, .timestamp = 0, .headers = {}};
  const std::string value(1 << 20, 'z');
  big.value = value;
  for (kafka::Compression c : kCodecs) {
    if (c == kafka::Compression::none) continue;
    std::string bytes;
    ASSERT_TRUE(kafka::append_record_batch(bytes, {.compression = c}, {&big, 1}));
    EXPECT_LT(bytes.size(), 64u * 1024) << kafka::to_string(c);
    kafka::RecordBatch b;
    const auto r = decode(bytes, b, {.max_decompressed_size = 512 * 1024});
    ASSERT_EQ(r.status, kafka::BatchStatus::error) << kafka::to_string(c);
    EXPECT_EQ(r.error, "record batch at offset 0: " + std::string(kafka::to_string(c)) +
                           ": decompressed data exceeds the limit of 524288 bytes");
    EXPECT_EQ(decode(bytes, b, {.max_decompressed_size = 2 << 20}).status,
              kafka::BatchStatus::complete);
  }
}

TEST(KafkaRecords, SnappyInTheXerialFramingOfJavaClients) {
  const std::string plain = [] {
    std::string s;
    for (int i = 0; i < 5000; ++i) s += "record " + std::to_string(i) + ";";
    return s;
  }();
  // Blocks of at most 8 KiB, each raw snappy with its big-endian size before it.
  std::string framed(kafka::kXerialSnappyMagic);
  kafka::Writer w(framed);
  w.int32(1);
  w.int32(1);
  for (std::size_t at = 0; at < plain.size(); at += 8192) {
    const std::string_view block = std::string_view(plain).substr(at, 8192);
    std::string compressed(snappy_max_compressed_length(block.size()), '\0');
    std::size_t n = compressed.size();
    ASSERT_EQ(snappy_compress(block.data(), block.size(), compressed.data(), &n), SNAPPY_OK);
    w.int32(static_cast<std::int32_t>(n));
    w.raw(std::string_view(compressed).substr(0, n));
  }
  std::vector<char> out;
  ASSERT_TRUE(kafka::decompress(kafka::Compression::snappy, framed, 1 << 20, out));
  EXPECT_EQ(std::string(out.begin(), out.end()), plain);
  const auto limited = kafka::decompress(kafka::Compression::snappy, framed, 10000, out);
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().message, "snappy: decompressed data exceeds the limit of 10000 bytes");
  // Cut anywhere: an error, never a read past the end.
  for (std::size_t len = 0; len < framed.size(); len += 97) {
    const ExactString cut(std::string_view(framed).substr(0, len));
    if (len > 16 && kafka::decompress(kafka::Compression::snappy, cut.view(), 1 << 20, out)) {
      // Only a cut between blocks decodes (to a prefix of the data).
      EXPECT_EQ(plain.rfind(std::string(out.begin(), out.end()), 0), 0u);
    }
  }
}

TEST(KafkaRecords, CutCompressedDataIsAnError) {
  std::string plain;
  for (int i = 0; i < 3000; ++i) plain += std::to_string(i * 7919);
  for (kafka::Compression c : kCodecs) {
    if (c == kafka::Compression::none) continue;
    std::string compressed;
    ASSERT_TRUE(kafka::compress(c, plain, compressed));
    std::vector<char> out;
    ASSERT_TRUE(kafka::decompress(c, compressed, 1 << 20, out));
    EXPECT_EQ(std::string(out.begin(), out.end()), plain);
    for (std::size_t len = 0; len < compressed.size(); ++len) {
      const ExactString cut(std::string_view(compressed).substr(0, len));
      const auto s = kafka::decompress(c, cut.view(), 1 << 20, out);
      EXPECT_FALSE(s) << kafka::to_string(c) << " cut to " << len;
      if (!s) {
        EXPECT_EQ(s.error().message.rfind(kafka::to_string(c), 0), 0u) << s.error().message;
      }
    }
  }
}

TEST(KafkaRecords, ControlAndTransactionalBatches) {
  // A commit marker: key = version 0, type 1; value = version, coordinator epoch.
  std::string key;
  kafka::Writer(key).int16(0);
  kafka::Writer(key).int16(1);
  std::string value;
  kafka::Writer(value).int16(0);
  kafka::Writer(value).int32(3);
  const kafka::OutRecord marker{.key = key, .value = value, .timestamp = 5, .headers = {}};
  std::string bytes;
  ASSERT_TRUE(kafka::append_record_batch(bytes,
                                         {.base_offset = 41,
                                          .producer_id = 9,
                                          .producer_epoch = 0,
                                          .transactional = true,
                                          .control = true},
                                         {&marker, 1}));
  kafka::RecordBatch b;
  ASSERT_EQ(decode(bytes, b).status, kafka::BatchStatus::complete);
  EXPECT_TRUE(b.header.control());
  EXPECT_TRUE(b.header.transactional());
  EXPECT_EQ(b.header.producer_id, 9);
  EXPECT_EQ(b.header.next_offset(), 42);
  ASSERT_EQ(b.records.size(), 1u);
  EXPECT_EQ(b.records[0].key, key);
}

TEST(KafkaRecords, LogAppendTimeGivesEveryRecordTheBrokersTime) {
  const Owned o = sample_records(4, 8);
  std::string bytes = batch_of(o, {});
  // Set the timestamp type bit and max_timestamp, as a broker with LogAppendTime does.
  bytes[kafka::kBatchAttributesOffset + 1] |= kafka::kAttributeLogAppendTime;
  std::string patched = bytes.substr(0, 35);
  kafka::Writer(patched).int64(1'800'000'000'000);
  patched += bytes.substr(43);
  const std::string_view covered = std::string_view(patched).substr(kafka::kBatchAttributesOffset);
  kafka::Writer(patched).patch_int32(
      kafka::kBatchCrcOffset, static_cast<std::int32_t>(ringfeed::io::crc32c(
                                  std::as_bytes(std::span(covered.data(), covered.size())))));
  kafka::RecordBatch b;
  ASSERT_EQ(decode(patched, b).status, kafka::BatchStatus::complete);
  for (const auto& r : b.records) EXPECT_EQ(r.timestamp, 1'800'000'000'000);
}

TEST(KafkaRecords, AnEmptyBatchIsRefused) {
  std::string out = "keep";
  const auto s = kafka::append_record_batch(out, {}, {});
  EXPECT_FALSE(s);
  EXPECT_EQ(out, "keep");
}

}  // namespace
