// The framed record format: a pinned binary layout, round trips of random records of both
// variants, limits on both sides, every truncation is need_more, every single-bit flip is
// corrupt, error messages name the fault and its file offset, the offset check, and the
// `lines` splitter. Decoded bytes live in exact-size heap buffers, so the ASan build
// catches any read past what decode was given.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "io/framed_record.hpp"
#include "record_support.hpp"

namespace io = ringfeed::io;
using io::DecodeStatus;
using io::EncodeStatus;
using io::RecordKind;
using io::RecordView;
using ringfeed::test::encode_vec;
using ringfeed::test::ExactBytes;
using ringfeed::test::OwnedRecord;
using ringfeed::test::random_record;
using ringfeed::test::raw_record;
using ringfeed::test::RawRecord;
using ringfeed::test::same_record;

namespace {

std::vector<std::byte> from_hex(std::string_view hex) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::byte>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

io::DecodeResult decode_exact(std::span<const std::byte> b, std::uint64_t at = 0,
                              io::OffsetCheck check = io::OffsetCheck::none) {
  const ExactBytes copy(b);
  auto r = io::decode(copy.span(), at, check);
  // The views die with the copy; callers of this helper look at status, size and error.
  r.record = {};
  return r;
}

std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s));
}

}  // namespace

// The layout is a decision: these bytes were worked out independently of the code (field
// by field from the table in framed_record.hpp, CRC32C by a bitwise reference), and a
// change to the format must change them on purpose.
TEST(FramedRecord, LogRecordLayoutIsPinned) {
  const OwnedRecord r{.timestamp_ns = 0x0102030405060708,
                      .upstream_offset = 0x1122334455667788,
                      .key = "k1",
                      .value = "hello"};
  const auto expected = from_hex(
      "52464c01"          // "RFL", version 1
      "2f000000"          // total length 47
      "74ce9f9a"          // CRC32C of bytes 12..46
      "00000000"          // flags: log record
      "0807060504030201"  // timestamp_ns
      "8877665544332211"  // upstream_offset
      "02000000"          // key length
      "05000000"          // value length
      "6b31"              // "k1"
      "68656c6c6f");      // "hello"
  EXPECT_EQ(encode_vec(r.view()), expected);
}

TEST(FramedRecord, DeadLetterLayoutIsPinned) {
  const OwnedRecord r{.kind = RecordKind::dead_letter,
                      .timestamp_ns = -5,
                      .upstream_offset = 42,
                      .key = "",
                      .value = "v",
                      .delivery_count = 5,
                      .group = "billing",
                      .reason = "nack"};
  const auto expected = from_hex(
      "52464c01"          // "RFL", version 1
      "3c000000"          // total length 60
      "3f9bbfa2"          // CRC32C of bytes 12..59
      "01000000"          // flags: dead-letter record
      "fbffffffffffffff"  // timestamp_ns -5
      "2a00000000000000"  // upstream_offset 42
      "00000000"          // key length
      "01000000"          // value length
      "05000000"          // delivery count
      "0700"              // group length
      "0400"              // reason length
      "76"                // "v"
      "62696c6c696e67"    // "billing"
      "6e61636b");        // "nack"
  EXPECT_EQ(encode_vec(r.view()), expected);
}

TEST(FramedRecord, RoundTripsRandomRecordsOfBothKinds) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const OwnedRecord r = random_record(rng, i % 2 == 1);
    const auto enc = encode_vec(r.view());
    const ExactBytes copy(enc);
    const auto d = io::decode(copy.span());
    ASSERT_EQ(d.status, DecodeStatus::ok) << d.error;
    ASSERT_EQ(d.size, enc.size());
    ASSERT_TRUE(same_record(d.record, r.view())) << "record " << i;
  }
}

TEST(FramedRecord, RoundTripsFieldsAtTheirLimits) {
  const OwnedRecord r{.kind = RecordKind::dead_letter,
                      .timestamp_ns = INT64_MIN,
                      .upstream_offset = UINT64_MAX,
                      .key = std::string(io::kMaxKeyLength, 'k'),
                      .value = std::string(io::kMaxValueLength, 'v'),
                      .delivery_count = UINT32_MAX,
                      .group = std::string(io::kMaxGroupLength, 'g'),
                      .reason = std::string(io::kMaxReasonLength, 'r')};
  const auto enc = encode_vec(r.view());
  ASSERT_EQ(enc.size(), io::kMaxRecordSize);
  const ExactBytes copy(enc);
  const auto d = io::decode(copy.span());
  ASSERT_EQ(d.status, DecodeStatus::ok) << d.error;
  EXPECT_TRUE(same_record(d.record, r.view()));
}

TEST(FramedRecord, EncodeRefusesFieldsBeyondTheirLimits) {
  std::vector<std::byte> buf(io::kMaxRecordSize + 8192);
  const std::string key(io::kMaxKeyLength + 1, 'k');
  const std::string value(io::kMaxValueLength + 1, 'v');
  const std::string group(io::kMaxGroupLength + 1, 'g');
  const std::string reason(io::kMaxReasonLength + 1, 'r');
  auto st = [&](RecordView v) { return io::encode(v, buf).status; };
  EXPECT_EQ(st({.key = key}), EncodeStatus::key_too_long);
  EXPECT_EQ(st({.value = value}), EncodeStatus::value_too_long);
  EXPECT_EQ(st({.kind = RecordKind::dead_letter, .group = group}), EncodeStatus::group_too_long);
  EXPECT_EQ(st({.kind = RecordKind::dead_letter, .reason = reason}), EncodeStatus::reason_too_long);
  EXPECT_EQ(st({.group = "g"}), EncodeStatus::dead_letter_fields_on_log_record);
  EXPECT_EQ(st({.delivery_count = 1}), EncodeStatus::dead_letter_fields_on_log_record);
  EXPECT_EQ(io::encoded_size({.key = key}), 0u);
  EXPECT_STRNE(io::to_string(EncodeStatus::key_too_long), "");
}

TEST(FramedRecord, EncodeIntoATooSmallBufferWritesNothingAndSaysHowMuchItNeeds) {
  const OwnedRecord r{.key = "key", .value = "value"};
  const std::size_t need = io::encoded_size(r.view());
  ASSERT_EQ(need, io::kLogHeaderSize + 8);
  for (std::size_t n = 0; n < need; ++n) {
    std::vector<std::byte> buf(n + 4, std::byte{0xAB});
    const auto e = io::encode(r.view(), std::span(buf).first(n));
    ASSERT_EQ(e.status, EncodeStatus::buffer_too_small);
    ASSERT_EQ(e.size, need);
    for (auto b : buf) ASSERT_EQ(b, std::byte{0xAB}) << "wrote into a buffer of " << n;
  }
}

TEST(FramedRecord, DecodeRefusesLengthsBeyondTheLimitsEvenWithAValidCrc) {
  // Each is a record a careless writer could produce, CRC and total length consistent.
  struct Case {
    const char* what = nullptr;
    RawRecord raw;
  };
  const Case cases[] = {
      {"key length 65537 at byte offset 32",
       {.key_length = io::kMaxKeyLength + 1, .body = io::kMaxKeyLength + 1}},
      {"value length 16777217 at byte offset 36",
       {.value_length = io::kMaxValueLength + 1, .body = io::kMaxValueLength + 1}},
      {"group name length 256 at byte offset 44",
       {.flags = io::kFlagDeadLetter, .group_length = 256, .body = 256}},
      {"reason length 4097 at byte offset 46",
       {.flags = io::kFlagDeadLetter, .reason_length = 4097, .body = 4097}},
      {"unknown flags 0x00000002 at byte offset 12", {.flags = 2}},
      {"unsupported format version 2", {.version = 2}},
      {"disagrees with the header and field lengths, which add up to 45",
       {.key_length = 5, .body = 4}},
  };
  for (const Case& c : cases) {
    const auto d = decode_exact(raw_record(c.raw));
    EXPECT_EQ(d.status, DecodeStatus::corrupt) << c.what;
    EXPECT_NE(d.error.find(c.what), std::string::npos)
        << "wanted \"" << c.what << "\" in: " << d.error;
    EXPECT_NE(d.error.find("corrupt framed record at byte offset 0"), std::string::npos) << d.error;
  }
}

TEST(FramedRecord, EveryTruncationIsNeedMore) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 40; ++i) {
    const OwnedRecord r = random_record(rng, i % 2 == 1);
    const auto enc = encode_vec(r.view());
    for (std::size_t n = 0; n < enc.size(); ++n) {
      const auto d = decode_exact(std::span(enc).first(n), 1000);
      ASSERT_EQ(d.status, DecodeStatus::need_more)
          << "prefix of " << n << " of " << enc.size() << " bytes: " << d.error;
      ASSERT_GT(d.size, n) << "need_more must ask for more than it was given";
      ASSERT_LE(d.size, enc.size()) << "never asks past the record";
    }
  }
}

TEST(FramedRecord, EverySingleBitFlipIsCorrupt) {
  std::mt19937_64 rng(13);
  std::vector<OwnedRecord> records = {
      {},                                          // smallest log record
      {.kind = RecordKind::dead_letter},           // smallest dead-letter record
      {.key = "k", .value = std::string(9, 'v')},  // 50 bytes: a flip to dead-letter fits
      {.kind = RecordKind::dead_letter, .value = "x", .group = "g", .reason = "why"},
  };
  for (int i = 0; i < 16; ++i) {
    OwnedRecord r = random_record(rng, i % 2 == 1);
    if (r.key.size() + r.value.size() + r.group.size() + r.reason.size() > 600) continue;
    records.push_back(std::move(r));
  }
  for (const OwnedRecord& r : records) {
    const auto enc = encode_vec(r.view());
    for (std::size_t bit = 0; bit < enc.size() * 8; ++bit) {
      auto flipped = enc;
      flipped[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
      const auto d = decode_exact(flipped, 4096);
      ASSERT_EQ(d.status, DecodeStatus::corrupt)
          << "bit " << bit << " of a " << enc.size() << "-byte record decodes as "
          << io::to_string(d.status);
      ASSERT_NE(d.error.find("record at byte offset 4096: "), std::string::npos) << d.error;
    }
  }
}

TEST(FramedRecord, ErrorsNameTheFaultAndItsFileOffset) {
  const OwnedRecord r{.key = "k", .value = "value"};
  auto enc = encode_vec(r.view());
  auto bad_crc = enc;
  bad_crc.back() ^= std::byte{1};
  auto d = decode_exact(bad_crc, 123456);
  EXPECT_EQ(d.status, DecodeStatus::corrupt);
  EXPECT_NE(d.error.find("at byte offset 123456: CRC32C mismatch"), std::string::npos) << d.error;
  EXPECT_NE(d.error.find("over bytes 123468..123501"), std::string::npos) << d.error;

  auto bad_magic = enc;
  bad_magic[1] = std::byte{'X'};
  d = decode_exact(bad_magic, 77);
  EXPECT_NE(d.error.find("bad magic byte 0x58 at byte offset 78"), std::string::npos) << d.error;

  // Garbage is refused by its first byte, before a header's worth has arrived.
  d = decode_exact(bytes("{"), 9);
  EXPECT_EQ(d.status, DecodeStatus::corrupt);
  EXPECT_NE(d.error.find("byte offset 9"), std::string::npos) << d.error;
}

TEST(FramedRecord, OffsetCheckRefusesARecordOutOfPlace) {
  const OwnedRecord r{.upstream_offset = 4096, .value = "x"};
  const auto enc = encode_vec(r.view());
  EXPECT_EQ(decode_exact(enc, 4096, io::OffsetCheck::equals_position).status, DecodeStatus::ok);
  EXPECT_EQ(decode_exact(enc, 0, io::OffsetCheck::none).status, DecodeStatus::ok);
  const auto d = decode_exact(enc, 8192, io::OffsetCheck::equals_position);
  EXPECT_EQ(d.status, DecodeStatus::corrupt);
  EXPECT_NE(d.error.find("at byte offset 8192: the record says it sits at byte offset 4096"),
            std::string::npos)
      << d.error;
}

TEST(FramedRecord, AStreamDecodesRecordByRecordAndEndsInNeedMore) {
  std::mt19937_64 rng(17);
  std::vector<OwnedRecord> records;
  std::vector<std::byte> stream;
  for (int i = 0; i < 200; ++i) {
    OwnedRecord r = random_record(rng, false);
    r.upstream_offset = stream.size();
    const auto enc = encode_vec(r.view());
    stream.insert(stream.end(), enc.begin(), enc.end());
    records.push_back(std::move(r));
  }
  const std::size_t full = stream.size();
  const auto tail = encode_vec(random_record(rng, false).view());
  stream.insert(stream.end(), tail.begin(), tail.end() - 1);  // the writer is mid-record

  const ExactBytes copy(stream);
  const auto all = copy.span();
  std::size_t pos = 0;
  for (const OwnedRecord& want : records) {
    const auto d = io::decode(all.subspan(pos), pos, io::OffsetCheck::equals_position);
    ASSERT_EQ(d.status, DecodeStatus::ok) << d.error;
    ASSERT_TRUE(same_record(d.record, want.view()));
    pos += d.size;
  }
  EXPECT_EQ(pos, full);
  EXPECT_EQ(io::decode(all.subspan(pos), pos).status, DecodeStatus::need_more);
}

TEST(Lines, SplitsOnNewlinesAndWaitsForTheLastOne) {
  const std::string_view text = "alpha\n\nbeta gamma\r\nunfinished";
  const ExactBytes copy(bytes(text));
  auto rest = copy.span();
  std::uint64_t at = 500;
  std::vector<std::string> values;
  std::vector<std::uint64_t> offsets;
  for (;;) {
    const auto d = io::decode_line(rest, at);
    if (d.status != DecodeStatus::ok) {
      EXPECT_EQ(d.status, DecodeStatus::need_more);
      EXPECT_EQ(d.size, rest.size() + 1);
      break;
    }
    EXPECT_EQ(d.record.kind, RecordKind::log);
    EXPECT_TRUE(d.record.key.empty());
    values.emplace_back(d.record.value);
    offsets.push_back(d.record.upstream_offset);
    rest = rest.subspan(d.size);
    at += d.size;
  }
  EXPECT_EQ(values, (std::vector<std::string>{"alpha", "", "beta gamma\r"}));
  EXPECT_EQ(offsets, (std::vector<std::uint64_t>{500, 506, 507}));
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size()),
            "unfinished");
  EXPECT_EQ(io::decode_line({}, 0).status, DecodeStatus::need_more);
}

TEST(Lines, ALineMayBeAsLongAsAValueAndNoLonger) {
  std::string longest(io::kMaxValueLength, 'x');
  longest += '\n';
  auto d = io::decode_line(ExactBytes(bytes(longest)).span());
  EXPECT_EQ(d.status, DecodeStatus::ok);
  EXPECT_EQ(d.size, longest.size());

  std::string too_long(io::kMaxValueLength + 1, 'x');
  d = io::decode_line(ExactBytes(bytes(too_long)).span(), 42);
  EXPECT_EQ(d.status, DecodeStatus::corrupt);
  EXPECT_NE(d.error.find("line at byte offset 42 has no newline within 16777216 bytes"),
            std::string::npos)
      << d.error;
  // One byte short of the limit and no newline yet: the writer may still finish it.
  too_long.pop_back();
  EXPECT_EQ(io::decode_line(ExactBytes(bytes(too_long)).span()).status, DecodeStatus::need_more);
}
