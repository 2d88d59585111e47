// The Kafka wire primitives and framing (io/kafka_wire.hpp): pinned bytes of every
// primitive, varint and zigzag boundaries, round trips, errors that name the field and
// its path, reads past the end at every length, and the response frame reader: need
// more, complete, pipelined frames, and bad sizes.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "io/kafka_wire.hpp"
#include "tests/kafka_test_support.hpp"

namespace kafka = ringfeed::io::kafka;
using ringfeed::test::ExactString;

namespace {

using namespace std::string_literals;

std::string bytes_of(void (*write)(kafka::Writer&)) {
  std::string out;
  kafka::Writer w(out);
  write(w);
  return out;
}

TEST(KafkaWire, IntegersAreBigEndian) {
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.int8(-2); }), "\xfe"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.int16(0x0102); }), "\x01\x02"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.int32(-1); }), "\xff\xff\xff\xff"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.int32(0x01020304); }), "\x01\x02\x03\x04"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.int64(0x0102030405060708); }),
            "\x01\x02\x03\x04\x05\x06\x07\x08"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.boolean(true); }), "\x01"s);
}

TEST(KafkaWire, VarintsAreZigzagLeb128) {
  // Values from Kafka's ByteUtilsTest.
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(0); }), "\x00"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(-1); }), "\x01"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(1); }), "\x02"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(63); }), "\x7e"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(-64); }), "\x7f"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(64); }), "\x80\x01"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(std::numeric_limits<std::int32_t>::max()); }),
            "\xfe\xff\xff\xff\x0f"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varint(std::numeric_limits<std::int32_t>::min()); }),
            "\xff\xff\xff\xff\x0f"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.varlong(std::numeric_limits<std::int64_t>::min()); }),
            "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.uvarint(300); }), "\xac\x02"s);
}

TEST(KafkaWire, StringsBytesAndArrays) {
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.string("ab"); }),
            "\x00\x02"
            "ab"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.nullable_string(std::nullopt); }), "\xff\xff"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.bytes("xyz"); }), "\x00\x00\x00\x03xyz"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.nullable_bytes(std::nullopt); }),
            "\xff\xff\xff\xff"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.array_count(2); }), "\x00\x00\x00\x02"s);
  EXPECT_EQ(bytes_of([](kafka::Writer& w) { w.null_array(); }), "\xff\xff\xff\xff"s);
}

TEST(KafkaWire, EveryPrimitiveRoundTrips) {
  std::mt19937_64 rng(7);
  const std::int64_t edges64[] = {0,
                                  1,
                                  -1,
                                  63,
                                  64,
                                  -64,
                                  -65,
                                  std::numeric_limits<std::int32_t>::max(),
                                  std::numeric_limits<std::int32_t>::min(),
                                  std::numeric_limits<std::int64_t>::max(),
                                  std::numeric_limits<std::int64_t>::min()};
  std::vector<std::int64_t> longs(std::begin(edges64), std::end(edges64));
  for (int i = 0; i < 1000; ++i) longs.push_back(static_cast<std::int64_t>(rng()) >> (rng() % 64));
  std::string out;
  kafka::Writer w(out);
  for (std::int64_t v : longs) {
    w.int64(v);
    w.varlong(v);
    w.uvarint(static_cast<std::uint64_t>(v));
    w.int32(static_cast<std::int32_t>(v));
    w.varint(static_cast<std::int32_t>(v));
    w.int16(static_cast<std::int16_t>(v));
    w.int8(static_cast<std::int8_t>(v));
  }
  w.string("");
  w.string("hello");
  w.nullable_string(std::nullopt);
  w.nullable_string("x");
  w.bytes(std::string(70000, 'b'));
  w.nullable_bytes(std::nullopt);

  const ExactString input(out);
  kafka::Reader r(input.view(), "test");
  for (std::int64_t v : longs) {
    EXPECT_EQ(r.int64("i64"), v);
    EXPECT_EQ(r.varlong("varlong"), v);
    EXPECT_EQ(r.uvarint("uvarint"), static_cast<std::uint64_t>(v));
    EXPECT_EQ(r.int32("i32"), static_cast<std::int32_t>(v));
    EXPECT_EQ(r.varint("varint"), static_cast<std::int32_t>(v));
    EXPECT_EQ(r.int16("i16"), static_cast<std::int16_t>(v));
    EXPECT_EQ(r.int8("i8"), static_cast<std::int8_t>(v));
  }
  EXPECT_EQ(r.string("s"), "");
  EXPECT_EQ(r.string("s"), "hello");
  EXPECT_EQ(r.nullable_string("ns"), std::nullopt);
  EXPECT_EQ(r.nullable_string("ns"), "x");
  EXPECT_EQ(r.bytes("b"), std::string(70000, 'b'));
  EXPECT_EQ(r.nullable_bytes("nb"), std::nullopt);
  EXPECT_TRUE(r.ok()) << r.message();
  EXPECT_TRUE(r.finish());
}

TEST(KafkaWire, ErrorsNameTheContextThePathAndTheField) {
  std::string body;
  kafka::Writer w(body);
  w.array_count(1);
  w.string("topic");
  w.int32(5000);  // a length far past the end
  w.raw("abc");
  const ExactString input(body);
  kafka::Reader r(input.view(), "Fetch v11");
  const std::size_t n = r.array_count("responses", 6);
  ASSERT_EQ(n, 1u);
  {
    kafka::Reader::Element e(r, "responses", 0);
    EXPECT_EQ(r.string("topic"), "topic");
    EXPECT_EQ(r.bytes("records"), "");
  }
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.message(),
            "Fetch v11: responses[0].records: length 5000 at byte 11 runs past the end of the "
            "response (18 bytes)");
  // The first error stays; later reads return zero.
  EXPECT_EQ(r.int32("later"), 0);
  EXPECT_EQ(r.error().code, EPROTO);
  EXPECT_NE(r.error().message.find("records"), std::string::npos);
}

TEST(KafkaWire, LeftoverBytesAreAnError) {
  const ExactString input("\x00\x01\x02"s);
  kafka::Reader r(input.view(), "Heartbeat v3");
  r.int16("error_code");
  const auto s = r.finish();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message,
            "Heartbeat v3: 1 bytes left over after the last field, at byte 2 of 3");
}

TEST(KafkaWire, BadLengthsAndCounts) {
  {
    const ExactString input("\xff\xfe"s);  // -2
    kafka::Reader r(input.view(), "t");
    EXPECT_EQ(r.nullable_string("name"), std::nullopt);
    EXPECT_NE(r.message().find("name: length -2"), std::string::npos) << r.message();
  }
  {
    const ExactString input("\xff\xff"s);  // null where none may be
    kafka::Reader r(input.view(), "t");
    r.string("host");
    EXPECT_NE(r.message().find("host: length -1 at byte 0 (this string cannot be null)"),
              std::string::npos)
        << r.message();
  }
  {
    // A count the remaining bytes cannot hold is refused before anything is sized by it.
    const ExactString input("\x7f\xff\xff\xff\x00\x00"s);
    kafka::Reader r(input.view(), "t");
    EXPECT_EQ(r.array_count("brokers", 12), 0u);
    EXPECT_NE(r.message().find("brokers: array count 2147483647 at byte 0 needs at least"),
              std::string::npos)
        << r.message();
  }
  {
    const ExactString input("\xff\xff\xff\xff"s);
    kafka::Reader r(input.view(), "t");
    EXPECT_EQ(r.array_count("topics", 4), 0u);
    EXPECT_NE(r.message().find("null array"), std::string::npos) << r.message();
  }
  {
    const ExactString input("\xff\xff\xff\xff"s);
    kafka::Reader r(input.view(), "t");
    bool is_null = false;
    EXPECT_EQ(r.nullable_array_count("topics", 4, is_null), 0u);
    EXPECT_TRUE(is_null);
    EXPECT_TRUE(r.ok());
  }
  {
    // Eleven continuation bytes: too long for 64 bits.
    const ExactString input("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"s);
    kafka::Reader r(input.view(), "t");
    r.uvarint("length");
    EXPECT_NE(r.message().find("does not fit in 64 bits"), std::string::npos) << r.message();
  }
  {
    // Fits 64 bits, not the 32 of a varint.
    const ExactString input("\xff\xff\xff\xff\x1f"s);
    kafka::Reader r(input.view(), "t");
    r.varint("key_length");
    EXPECT_NE(r.message().find("key_length: varint at byte 0 does not fit in 32 bits"),
              std::string::npos)
        << r.message();
  }
}

TEST(KafkaWire, EveryTruncationIsAnErrorNeverAReadPastTheEnd) {
  std::string full;
  kafka::Writer w(full);
  w.int64(-5);
  w.varlong(1234567890123);
  w.string("a string");
  w.nullable_bytes("some bytes");
  w.varint(-300);
  for (std::size_t len = 0; len < full.size(); ++len) {
    const ExactString input(std::string_view(full).substr(0, len));
    kafka::Reader r(input.view(), "t");
    r.int64("a");
    r.varlong("b");
    r.string("c");
    r.nullable_bytes("d");
    r.varint("e");
    EXPECT_FALSE(r.ok()) << "length " << len;
    EXPECT_NE(r.message().find("past the end"), std::string::npos) << r.message();
  }
}

TEST(KafkaWire, RequestHeaderAndSize) {
  std::string out = "xy";  // requests append
  const std::size_t start = kafka::begin_request(
      out,
      {.api_key = kafka::ApiKey::fetch, .api_version = 11, .correlation_id = 7, .client_id = "rf"});
  kafka::Writer(out).int32(42);
  kafka::finish_request(out, start);
  EXPECT_EQ(out,
            "xy"
            "\x00\x00\x00\x10"  // size: 16 bytes follow
            "\x00\x01"          // api_key Fetch
            "\x00\x0b"          // version 11
            "\x00\x00\x00\x07"  // correlation id
            "\x00\x02rf"        // client id
            "\x00\x00\x00\x2a"s);
}

std::string frame(std::int32_t correlation_id, std::string_view body) {
  std::string out;
  kafka::Writer w(out);
  w.int32(static_cast<std::int32_t>(4 + body.size()));
  w.int32(correlation_id);
  w.raw(body);
  return out;
}

TEST(KafkaWire, ResponseFramesComeOutWholeAndInOrder) {
  const std::string two = frame(1, "first") + frame(2, "");
  for (std::size_t len = 0; len < 13; ++len) {
    const ExactString input(std::string_view(two).substr(0, len));
    const kafka::ResponseFrame f = kafka::read_response_frame(input.view());
    EXPECT_EQ(f.status, kafka::FrameStatus::need_more) << len;
    EXPECT_EQ(f.size, len < 4 ? 4u : 13u) << len;
  }
  const ExactString input(two);
  const kafka::ResponseFrame f = kafka::read_response_frame(input.view());
  ASSERT_EQ(f.status, kafka::FrameStatus::complete);
  EXPECT_EQ(f.size, 13u);
  EXPECT_EQ(f.correlation_id, 1);
  EXPECT_EQ(f.body, "first");
  const kafka::ResponseFrame g = kafka::read_response_frame(input.view().substr(f.size));
  ASSERT_EQ(g.status, kafka::FrameStatus::complete);
  EXPECT_EQ(g.correlation_id, 2);
  EXPECT_EQ(g.body, "");
  EXPECT_EQ(g.size, 8u);
}

TEST(KafkaWire, BadFrameSizesAreErrors) {
  {
    const ExactString input("\xff\xff\xff\xfe"s);
    const auto f = kafka::read_response_frame(input.view());
    EXPECT_EQ(f.status, kafka::FrameStatus::error);
    EXPECT_EQ(f.error, "response frame size -2 is negative");
  }
  {
    const ExactString input("\x00\x00\x00\x03\x00\x00\x00"s);
    const auto f = kafka::read_response_frame(input.view());
    EXPECT_EQ(f.status, kafka::FrameStatus::error);
    EXPECT_EQ(f.error, "response frame size 3 is too small to hold a correlation id (4 bytes)");
  }
  {
    const ExactString input("\x00\x10\x00\x00"s);  // 1 MiB, over a 64 KiB limit
    const auto f = kafka::read_response_frame(input.view(), {.max_frame_size = 64 * 1024});
    EXPECT_EQ(f.status, kafka::FrameStatus::error);
    EXPECT_EQ(f.error, "response frame size 1048576 is over the limit of 65536 bytes");
  }
}

TEST(KafkaWire, ApiNames) {
  EXPECT_EQ(kafka::api_name(kafka::ApiKey::list_offsets), "ListOffsets");
  EXPECT_EQ(kafka::api_name(kafka::ApiKey::api_versions), "ApiVersions");
  EXPECT_EQ(kafka::api_name(std::int16_t{42}), "ApiKey 42");
}

}  // namespace
