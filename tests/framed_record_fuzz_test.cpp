// Fuzz test of the record decoders (invariant 6: bad input gets a clear error, never a
// crash, never a silent skip). Three kinds of input, each decoded the way a log reader
// walks a file (decode, advance by the size, repeat until need_more or corrupt):
//
//   - random bytes of random lengths;
//   - random bytes behind a valid-looking start (magic, version, a plausible total
//     length, sometimes consistent field lengths and a correct CRC), to reach the deep
//     checks rather than stop at the magic;
//   - streams of valid records damaged at random (bit flips, overwritten runs, bytes cut
//     out or inserted, truncation).
//
// Every input sits in an exact-size heap allocation, so under the ASan build a read one
// byte past the span fails the test. Properties checked on every call: the status is one
// of the three; ok consumes at most the bytes given, and its record re-encodes to exactly
// the bytes it was decoded from (so ok is only ever said of a valid record); need_more
// asks for more than it was given; corrupt has a message naming the byte offset.
//
// Knobs (environment): RINGFEED_FUZZ_ITERATIONS (inputs per kind, default 20000),
// RINGFEED_FUZZ_SEED (the seed, default fixed; a failure prints the seed and input index).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "io/crc32c.hpp"
#include "io/framed_record.hpp"
#include "record_support.hpp"

namespace io = ringfeed::io;
using io::DecodeStatus;
using ringfeed::test::encode_vec;
using ringfeed::test::ExactBytes;
using ringfeed::test::random_record;

namespace {

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

const std::uint64_t kIterations = env_or("RINGFEED_FUZZ_ITERATIONS", 20000);
const std::uint64_t kSeed = env_or("RINGFEED_FUZZ_SEED", 0x5eed);

struct Walk {
  std::size_t ok = 0, need_more = 0, corrupt = 0;
};

// Walks `input` as a reader would and checks the properties above. Returns false (after
// recording a gtest failure) on the first violation.
bool walk_framed(std::span<const std::byte> input, std::uint64_t base, Walk& w) {
  const ExactBytes copy(input);
  const auto all = copy.span();
  std::size_t pos = 0;
  for (;;) {
    const auto rest = all.subspan(pos);
    const auto d = io::decode(rest, base + pos);
    switch (d.status) {
      case DecodeStatus::ok: {
        ++w.ok;
        EXPECT_GE(d.size, io::kLogHeaderSize);
        EXPECT_LE(d.size, rest.size());
        if (d.size < io::kLogHeaderSize || d.size > rest.size()) return false;
        const auto again = encode_vec(d.record);
        const bool same =
            again.size() == d.size && std::equal(again.begin(), again.end(), rest.begin());
        EXPECT_TRUE(same) << "ok said of bytes that are not the encoding of what was decoded";
        if (!same) return false;
        pos += d.size;
        break;
      }
      case DecodeStatus::need_more:
        ++w.need_more;
        EXPECT_GT(d.size, rest.size());
        EXPECT_LE(d.size, io::kMaxRecordSize);
        return d.size > rest.size();
      case DecodeStatus::corrupt:
        ++w.corrupt;
        EXPECT_NE(d.error.find("byte offset " + std::to_string(base + pos)), std::string::npos)
            << d.error;
        return true;
      default:
        ADD_FAILURE() << "status out of range: " << static_cast<int>(d.status);
        return false;
    }
  }
}

bool walk_lines(std::span<const std::byte> input, Walk& w) {
  const ExactBytes copy(input);
  auto rest = copy.span();
  for (;;) {
    const auto d = io::decode_line(rest, 0);
    if (d.status == DecodeStatus::need_more) {
      ++w.need_more;
      return true;
    }
    if (d.status != DecodeStatus::ok) {
      ADD_FAILURE() << "a short input cannot be a corrupt line: " << d.error;
      return false;
    }
    ++w.ok;
    EXPECT_EQ(d.record.value.size() + 1, d.size);
    EXPECT_EQ(d.record.value.find('\n'), std::string_view::npos);
    if (d.size > rest.size()) return false;
    rest = rest.subspan(d.size);
  }
}

std::vector<std::byte> random_buffer(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::byte> b(n);
  for (auto& x : b) x = static_cast<std::byte>(rng());
  return b;
}

std::size_t small_length(std::mt19937_64& rng) {
  const auto pick = rng() % 10;
  return pick < 3 ? rng() % 16 : pick < 9 ? rng() % 512 : rng() % 8192;
}

void put_le(std::vector<std::byte>& b, std::size_t at, std::uint64_t v, int n) {
  ringfeed::test::put_le(b, at, v, n);
}

}  // namespace

TEST(FramedRecordFuzz, RandomBytes) {
  std::mt19937_64 rng(kSeed);
  Walk w, lines;
  for (std::uint64_t i = 0; i < kIterations; ++i) {
    const auto buf = random_buffer(rng, small_length(rng));
    ASSERT_TRUE(walk_framed(buf, rng() % 1000000, w)) << "seed " << kSeed << " input " << i;
    ASSERT_TRUE(walk_lines(buf, lines)) << "seed " << kSeed << " input " << i;
  }
  // Random bytes almost never start with "RFL": nearly all are refused at once.
  EXPECT_EQ(w.ok, 0u);
  EXPECT_GT(w.corrupt, kIterations * 9 / 10);
  std::printf("random bytes: %zu ok, %zu need_more, %zu corrupt; lines: %zu ok\n", w.ok,
              w.need_more, w.corrupt, lines.ok);
}

TEST(FramedRecordFuzz, RandomBytesBehindAValidLookingStart) {
  std::mt19937_64 rng(kSeed + 1);
  Walk w;
  for (std::uint64_t i = 0; i < kIterations; ++i) {
    const bool dl = rng() % 2 == 0;
    const std::size_t header = dl ? io::kDeadLetterHeaderSize : io::kLogHeaderSize;
    auto buf = random_buffer(rng, header + small_length(rng));
    std::memcpy(buf.data(), io::kRecordMagic, 3);
    buf[3] = static_cast<std::byte>(io::kRecordVersion);
    const auto mode = rng() % 4;
    if (mode >= 1) {
      // Plausible flags and total length (sometimes past the buffer: need_more).
      put_le(buf, 12, dl ? io::kFlagDeadLetter : 0, 4);
      const std::size_t total = rng() % 4 == 0 ? buf.size() + rng() % 100 : buf.size() - rng() % 8;
      put_le(buf, 4, total < header ? header : total, 4);
    }
    if (mode >= 2) {
      // Field lengths that add up, at random splits, so the CRC is the last line of defence.
      std::size_t left = buf.size() - header;
      std::size_t parts[4] = {};
      for (int p = 0; p < (dl ? 3 : 1); ++p) {
        parts[p] = left == 0 ? 0 : rng() % (left + 1);
        if (p >= 1) parts[p] %= 256;
        left -= parts[p];
      }
      parts[dl ? 3 : 1] = left;
      if (dl) {  // key, group, reason chosen above; the value takes the rest
        put_le(buf, 32, parts[0], 4);
        put_le(buf, 36, parts[3], 4);
        put_le(buf, 44, parts[1], 2);
        put_le(buf, 46, parts[2], 2);
      } else {
        put_le(buf, 32, parts[0], 4);
        put_le(buf, 36, parts[1], 4);
      }
      put_le(buf, 4, buf.size(), 4);
    }
    if (mode == 3) {
      // ... and a correct CRC: then it is a valid record, and must decode as one (the
      // walk checks that ok re-encodes to the same bytes) unless a limit is broken.
      put_le(buf, 8, io::crc32c(std::span(buf).subspan(io::kCrcStart)), 4);
    }
    ASSERT_TRUE(walk_framed(buf, rng() % 1000000, w)) << "seed " << kSeed << " input " << i;
  }
  EXPECT_GT(w.ok, 0u) << "the valid-CRC inputs should decode";
  EXPECT_GT(w.need_more, 0u);
  EXPECT_GT(w.corrupt, 0u);
  std::printf("valid-looking starts: %zu ok, %zu need_more, %zu corrupt\n", w.ok, w.need_more,
              w.corrupt);
}

TEST(FramedRecordFuzz, DamagedStreamsOfValidRecords) {
  std::mt19937_64 rng(kSeed + 2);
  Walk w;
  const std::uint64_t streams = kIterations / 10 + 1;
  for (std::uint64_t i = 0; i < streams; ++i) {
    std::vector<std::byte> stream;
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < n; ++k) {
      auto r = random_record(rng, rng() % 3 == 0);
      if (r.value.size() > 2048) r.value.resize(2048);
      const auto enc = encode_vec(r.view());
      stream.insert(stream.end(), enc.begin(), enc.end());
    }
    const int damages = static_cast<int>(rng() % 4);
    for (int k = 0; k < damages && !stream.empty(); ++k) {
      const std::size_t at = rng() % stream.size();
      switch (rng() % 5) {
        case 0:
          stream[at] ^= static_cast<std::byte>(1u << (rng() % 8));
          break;
        case 1:
          for (std::size_t j = at; j < stream.size() && j < at + 1 + rng() % 16; ++j) {
            stream[j] = static_cast<std::byte>(rng());
          }
          break;
        case 2:
          stream.erase(stream.begin() + static_cast<std::ptrdiff_t>(at),
                       stream.begin() + static_cast<std::ptrdiff_t>(
                                            std::min(stream.size(), at + 1 + rng() % 64)));
          break;
        case 3: {
          const auto extra = random_buffer(rng, 1 + rng() % 64);
          stream.insert(stream.begin() + static_cast<std::ptrdiff_t>(at), extra.begin(),
                        extra.end());
          break;
        }
        default:
          stream.resize(at);
          break;
      }
    }
    ASSERT_TRUE(walk_framed(stream, rng() % 1000000, w)) << "seed " << kSeed << " stream " << i;
  }
  EXPECT_GT(w.ok, 0u);
  EXPECT_GT(w.corrupt, 0u);
  std::printf("damaged streams: %zu ok, %zu need_more, %zu corrupt\n", w.ok, w.need_more,
              w.corrupt);
}
