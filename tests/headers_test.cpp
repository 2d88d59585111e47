// Record headers (ringfeed/headers.hpp): their encoding, and messages that carry them
// through a ring (shm/ring_layout.hpp, kind kTagMessageWithHeaders) in every mode, mixed
// with messages without; a headers length past its record reads as corrupt.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/headers.hpp"
#include "ringfeed/writer.hpp"
#include "shm/names.hpp"
#include "shm/ring_layout.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Header;
using ringfeed::Mode;
using ringfeed::OutHeader;
using ringfeed::PopStatus;

namespace {

struct Expected {
  std::string name;
  std::optional<std::string> value;
};

void expect_headers(std::string_view encoded, const std::vector<Expected>& want) {
  auto got = ringfeed::decode_headers(encoded);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const Header& h = (*got)[i];
    EXPECT_EQ(h.key, want[i].name);
    EXPECT_EQ(h.value_null, !want[i].value.has_value());
    if (want[i].value) {
      EXPECT_EQ(h.value, *want[i].value);
    }
  }
}

std::string encode(const std::vector<Expected>& headers) {
  std::vector<OutHeader> out;
  for (const Expected& h : headers) {
    out.push_back({.key = h.name,
                   .value = h.value ? std::optional<std::string_view>(*h.value) : std::nullopt});
  }
  return ringfeed::encode_headers(out);
}

TEST(Headers, WhatIsEncodedIsDecoded) {
  const std::vector<Expected> headers = {{"trace-id", "abc123"},
                                         {"", "empty name"},
                                         {"null", std::nullopt},
                                         {"empty", ""},
                                         {"binary", std::string("\0\xff\x01", 3)}};
  const std::string encoded = encode(headers);
  expect_headers(encoded, headers);
  EXPECT_EQ(encode({}), "") << "no headers take no bytes";
  expect_headers("", {});
}

TEST(Headers, MalformedHeadersAreRefusedNamingTheField) {
  const std::string good = encode({{"a", "1"}, {"b", "22"}});
  struct Case {
    std::string bytes;
    std::string says;
  };
  const Case cases[] = {
      {good.substr(0, good.size() - 1), "headers[1].value"},  // cut short
      // Varints are zigzag: 1 is \x02, -1 is \x01.
      {"\x08", "header_count"},                            // 4 headers in no bytes
      {"\x01", "header_count"},                            // -1 headers
      {std::string("\x02\x01\x00", 3), "headers[0].key"},  // a name of length -1
      {"\x02\x02"
       "a",
       "headers[0].value"},  // no value after the name
      {"\x02\x06"
       "ab",
       "headers[0].key"},  // a name longer than what is left
      {good + "x", "after the last header"},
      {std::string("\xff\xff\xff\xff\xff\xff", 6), "header_count"},  // a varint too long
  };
  for (const Case& c : cases) {
    auto got = ringfeed::decode_headers(c.bytes);
    ASSERT_FALSE(got.ok()) << "accepted " << testing::PrintToString(c.bytes);
    EXPECT_NE(got.error().message.find("record headers"), std::string::npos) << got.error().message;
    EXPECT_NE(got.error().message.find(c.says), std::string::npos) << got.error().message;
  }
}

class HeadersInEveryMode : public testing::TestWithParam<Mode> {};

// Many laps of a small ring, every third message with headers of a size that varies, so
// that records with headers end at every alignment and some are followed by padding.
TEST_P(HeadersInEveryMode, MessagesKeepTheirHeadersAcrossLaps) {
  const Mode mode = GetParam();
  const auto ns = ringfeed::test::unique_ns("headers");
  auto w = ringfeed::Writer::create({.ns = ns, .partition = 0, .capacity = 4096});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto c = Consumer::attach({.ns = ns, .partition = 0, .group = "g", .mode = mode});
  ASSERT_TRUE(c.ok()) << c.error().message;

  constexpr std::uint64_t kMessages = 600;
  auto headers_of = [](std::uint64_t i) -> std::vector<Expected> {
    if (i % 3 != 0) return {};
    return {{"n", std::to_string(i)}, {"pad", std::string(i % 37, 'p')}, {"z", std::nullopt}};
  };
  std::uint64_t sent = 0;
  std::uint64_t got = 0;
  for (int rounds = 0; got < kMessages && rounds < 10'000; ++rounds) {
    // Publish what fits (the ring holds about a dozen of them), then take and ack.
    while (sent < kMessages) {
      const std::string value = "v" + std::to_string(sent) + std::string(sent % 29, '.');
      const std::string key = "k" + std::to_string(sent % 4);
      const std::string headers = encode(headers_of(sent));
      const ringfeed::OutMessage m{
          .key = key, .value = value, .headers = headers, .upstream_offset = sent};
      if ((*w)->publish({&m, 1}, 0ns) == 0) break;
      ++sent;
    }
    (*w)->service();
    const ringfeed::Batch& b = (*c)->pop(64, 100ms);
    if (b.status() == PopStatus::timed_out) continue;
    ASSERT_EQ(b.status(), PopStatus::ok);
    for (const ringfeed::Message& m : b) {
      ASSERT_EQ(m.offset(), got);
      EXPECT_EQ(m.value(), "v" + std::to_string(got) + std::string(got % 29, '.'));
      EXPECT_EQ(m.key(), "k" + std::to_string(got % 4));
      if (got % 3 == 0) {
        ASSERT_FALSE(m.headers().empty());
        expect_headers(m.headers(), headers_of(got));
      } else {
        EXPECT_TRUE(m.headers().empty());
      }
      ++got;
    }
    ASSERT_EQ((*c)->ack(b), ringfeed::AckStatus::ok);
  }
  EXPECT_EQ(got, kMessages);
  EXPECT_GT((*w)->write_pos(), 4096u * 10) << "the ring went round many times";
}

INSTANTIATE_TEST_SUITE_P(Modes, HeadersInEveryMode,
                         testing::Values(Mode::exclusive, Mode::shared, Mode::broadcast,
                                         Mode::key_shared, Mode::failover),
                         [](const auto& p) { return std::string(to_string(p.param)); });

// A consumer never trusts the headers length it reads: one that runs past the record (a
// damaged or hostile segment) is a corrupt record, not a read past the ring.
TEST(Headers, AHeadersLengthPastTheRingIsACorruptRecord) {
  const auto ns = ringfeed::test::unique_ns("badheaders");
  auto w = ringfeed::Writer::create({.ns = ns, .partition = 0, .capacity = 4096});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto c = Consumer::attach({.ns = ns, .partition = 0, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::string headers = encode({{"a", "b"}});
  const ringfeed::OutMessage m{.key = "k", .value = "value", .headers = headers};
  ASSERT_EQ((*w)->publish({&m, 1}, 0ns), 1u);

  // The headers length lies after the record header, key and value of the first record.
  const std::string path = "/dev/shm/" + ringfeed::shm::ring_segment_name(ns, 0);
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const off_t at = static_cast<off_t>(ringfeed::shm::kRingDataOffset +
                                      sizeof(ringfeed::shm::RecordHeader) + 1 + 5);
  std::uint32_t len = 0;
  ASSERT_EQ(::pread(fd, &len, sizeof len, at), static_cast<ssize_t>(sizeof len));
  EXPECT_EQ(len, headers.size()) << "the layout moved: this test pokes the wrong bytes";
  len = 1u << 30;
  ASSERT_EQ(::pwrite(fd, &len, sizeof len, at), static_cast<ssize_t>(sizeof len));
  ::close(fd);
  EXPECT_EQ((*c)->pop(64, 0ns).status(), PopStatus::corrupt);
}

}  // namespace
