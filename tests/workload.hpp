// A deterministic workload for the multi-process tests: message i has a size, key and
// content that follow from i alone, so a consumer in another process can check every
// byte it receives without being told what was sent.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ringfeed::test {

inline std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Sizes from 1 byte to 64 KiB: most are small (as in real traffic), one in a hundred
// is drawn from the whole range, one in ten thousand is exactly 64 KiB.
inline std::uint32_t value_size(std::uint64_t i) {
  const std::uint64_t r = mix(i);
  if (r % 10000 == 0) return 65536;
  if (r % 100 == 1) return 1 + static_cast<std::uint32_t>((r >> 20) % 65536);
  return 1 + static_cast<std::uint32_t>((r >> 20) % 200);
}
inline std::uint32_t key_size(std::uint64_t i) {
  return static_cast<std::uint32_t>(mix(i) >> 60);
}
inline char fill_byte(std::uint64_t i) {
  return static_cast<char>(i * 7 + 1);
}

// Writes message i's value: its index in the first 8 bytes (when it has room), then a
// byte that depends on i.
inline void fill_value(std::uint64_t i, char* out, std::uint32_t size) {
  std::memset(out, fill_byte(i), size);
  if (size >= 8) std::memcpy(out, &i, 8);
}
inline void fill_key(std::uint64_t i, char* out, std::uint32_t size) {
  for (std::uint32_t k = 0; k < size; ++k) out[k] = static_cast<char>('a' + (i + k) % 26);
}

// Checks message i's key and value; returns an empty string or what is wrong.
class Checker {
 public:
  Checker() {
    for (int b = 0; b < 256; ++b) std::memset(templates_[b], b, sizeof templates_[b]);
  }
  std::string check(std::uint64_t i, std::string_view key, std::string_view value) const {
    const std::uint32_t vs = value_size(i);
    if (value.size() != vs) {
      return "message " + std::to_string(i) + ": value of " + std::to_string(value.size()) +
             " bytes, expected " + std::to_string(vs);
    }
    if (key.size() != key_size(i)) return "message " + std::to_string(i) + ": key size";
    for (std::uint32_t k = 0; k < key.size(); ++k) {
      if (key[k] != static_cast<char>('a' + (i + k) % 26)) {
        return "message " + std::to_string(i) + ": key byte " + std::to_string(k);
      }
    }
    std::size_t from = 0;
    if (vs >= 8) {
      std::uint64_t stored = 0;
      std::memcpy(&stored, value.data(), 8);
      if (stored != i)
        return "message " + std::to_string(i) + ": carries index " + std::to_string(stored);
      from = 8;
    }
    const auto& t = templates_[static_cast<unsigned char>(fill_byte(i))];
    if (std::memcmp(value.data() + from, t, vs - from) != 0) {
      return "message " + std::to_string(i) + ": value bytes differ";
    }
    return {};
  }

 private:
  char templates_[256][65536];
};

}  // namespace ringfeed::test
