// CRC32C: published test vectors (RFC 3720 B.4 and the usual check value) on the
// dispatched, software and hardware paths, the extend law, and agreement of the two
// implementations on random buffers of every length up to a few cache lines, at every
// alignment, and on a few large ones; crc32c_each against one buffer at a time.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

#include "io/crc32c.hpp"

using ringfeed::io::crc32c;
using ringfeed::io::crc32c_each;
using ringfeed::io::crc32c_extend;
using ringfeed::io::crc32c_extend_hardware;
using ringfeed::io::crc32c_extend_software;
using ringfeed::io::crc32c_hardware_available;

namespace {

std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s));
}
std::span<const std::byte> bytes(const std::vector<std::uint8_t>& v) {
  return std::as_bytes(std::span(v));
}

struct Vector {
  const char* name;
  std::vector<std::uint8_t> data;
  std::uint32_t crc;
};

std::vector<Vector> vectors() {
  std::vector<std::uint8_t> ascending(32), descending(32);
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<std::uint8_t>(i);
    descending[i] = static_cast<std::uint8_t>(31 - i);
  }
  const std::string_view check = "123456789";
  return {
      {"empty", {}, 0x00000000u},
      {"123456789", {check.begin(), check.end()}, 0xE3069283u},
      {"32 zero bytes", std::vector<std::uint8_t>(32, 0x00), 0x8A9136AAu},
      {"32 0xFF bytes", std::vector<std::uint8_t>(32, 0xFF), 0x62A8AB43u},
      {"32 ascending bytes", ascending, 0x46DD794Eu},
      {"32 descending bytes", descending, 0x113FDB5Cu},
  };
}

}  // namespace

TEST(Crc32c, KnownVectorsDispatched) {
  for (const Vector& v : vectors()) EXPECT_EQ(crc32c(bytes(v.data)), v.crc) << v.name;
}

TEST(Crc32c, KnownVectorsSoftware) {
  for (const Vector& v : vectors()) {
    EXPECT_EQ(crc32c_extend_software(0, bytes(v.data)), v.crc) << v.name;
  }
}

TEST(Crc32c, KnownVectorsHardware) {
  if (!crc32c_hardware_available()) GTEST_SKIP() << "this CPU has no SSE4.2 crc32 instruction";
  for (const Vector& v : vectors()) {
    EXPECT_EQ(crc32c_extend_hardware(0, bytes(v.data)), v.crc) << v.name;
  }
}

TEST(Crc32c, ExtendConcatenates) {
  const std::string_view s = "123456789";
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    const std::uint32_t head = crc32c(bytes(s.substr(0, cut)));
    EXPECT_EQ(crc32c_extend(head, bytes(s.substr(cut))), 0xE3069283u) << "cut at " << cut;
    EXPECT_EQ(crc32c_extend_software(head, bytes(s.substr(cut))), 0xE3069283u) << cut;
  }
}

TEST(Crc32c, HardwareAndSoftwareAgreeOnRandomBuffers) {
  if (!crc32c_hardware_available()) GTEST_SKIP() << "this CPU has no SSE4.2 crc32 instruction";
  std::mt19937_64 rng(20240601);
  std::vector<std::uint8_t> buf(1 << 20);
  for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
  const auto all = bytes(buf);
  // Every length up to 300 at every start alignment mod 8, so each tail and head path of
  // the 8-byte loops is taken, with random starting CRCs for extend.
  for (std::size_t len = 0; len <= 300; ++len) {
    for (std::size_t align = 0; align < 8; ++align) {
      const auto piece = all.subspan(align + len * 17 % 4096, len);
      const auto seed = static_cast<std::uint32_t>(rng());
      ASSERT_EQ(crc32c_extend_hardware(seed, piece), crc32c_extend_software(seed, piece))
          << "length " << len << ", alignment " << align;
    }
  }
  for (std::size_t len : {4095u, 4096u, 4097u, 65535u, 65536u, 1000003u, 1u << 20}) {
    const auto piece = all.subspan(0, len);
    ASSERT_EQ(crc32c_extend_hardware(0, piece), crc32c_extend_software(0, piece))
        << "length " << len;
  }
  for (int i = 0; i < 2000; ++i) {
    const std::size_t len = rng() % 20000;
    const std::size_t start = rng() % (buf.size() - len);
    const auto piece = all.subspan(start, len);
    ASSERT_EQ(crc32c_extend_hardware(0, piece), crc32c_extend_software(0, piece))
        << "length " << len << " at " << start;
  }
}

// crc32c_each gives crc32c of every buffer, whatever their number (the three-at-a-time
// groups and the rest) and lengths (equal, or each ending at its own point), and with the
// vectors above.
TEST(Crc32c, EachAgreesWithOneAtATime) {
  std::mt19937_64 rng(20261126);
  std::vector<std::uint8_t> buf(1 << 16);
  for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
  const auto all = bytes(buf);
  for (int round = 0; round < 3000; ++round) {
    const std::size_t count = round % 11;
    const bool same_length = round % 3 == 0;
    const std::size_t common = rng() % 300;
    std::vector<std::span<const std::byte>> pieces;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t len = same_length ? common : rng() % 300;
      pieces.push_back(all.subspan(rng() % (buf.size() - len), len));
    }
    std::vector<std::uint32_t> got(count + 1, 0xDEADBEEFu);
    crc32c_each(pieces, got.data());
    for (std::size_t i = 0; i < count; ++i) {
      ASSERT_EQ(got[i], crc32c(pieces[i])) << "round " << round << ", buffer " << i << " of "
                                           << count << ", length " << pieces[i].size();
    }
    EXPECT_EQ(got[count], 0xDEADBEEFu) << "wrote past the last buffer";
  }
  std::vector<std::span<const std::byte>> known;
  std::vector<std::uint32_t> expected;
  const auto vs = vectors();
  for (const auto& v : vs) {
    known.push_back(bytes(v.data));
    expected.push_back(v.crc);
  }
  std::vector<std::uint32_t> got(known.size());
  crc32c_each(known, got.data());
  EXPECT_EQ(got, expected);
}
