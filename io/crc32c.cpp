#include "io/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define RINGFEED_CRC32C_X86 1
#endif

namespace ringfeed::io {

namespace {

constexpr std::uint32_t kPolyReflected = 0x82F63B78u;

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes, so
// eight input bytes fold into the CRC with eight independent lookups instead of a chain
// of eight dependent ones.
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1u) != 0 ? kPolyReflected : 0u);
    t[0][b] = c;
  }
  for (std::uint32_t b = 0; b < 256; ++b) {
    for (std::size_t k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = make_tables();

static_assert(kTables[0][0x80] == kPolyReflected,
              "byte 0x80 reaches the low bit on the last of its eight steps: the table of a "
              "single set bit is the polynomial itself");

std::uint64_t load_le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

#ifdef RINGFEED_CRC32C_X86
__attribute__((target("sse4.2"))) std::uint32_t extend_sse42(std::uint32_t crc,
                                                             const unsigned char* p,
                                                             std::size_t n) {
  std::uint64_t c = ~crc;
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);  // x86 is little-endian, which is the order crc32 expects
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return ~c32;
}
#endif

std::uint32_t extend_table(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  std::uint32_t c = ~crc;
  while (n >= 8) {
    const std::uint64_t w = load_le64(p) ^ c;
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
    --n;
  }
  return ~c;
}

bool detect_hardware() {
#ifdef RINGFEED_CRC32C_X86
  __builtin_cpu_init();  // needed if this runs before the compiler's own CPU probe
  return __builtin_cpu_supports("sse4.2") != 0;
#else
  return false;
#endif
}

using ExtendFn = std::uint32_t (*)(std::uint32_t, const unsigned char*, std::size_t);

ExtendFn select_extend() {
#ifdef RINGFEED_CRC32C_X86
  if (detect_hardware()) return &extend_sse42;
#endif
  return &extend_table;
}

const unsigned char* bytes_of(std::span<const std::byte> data) {
  return reinterpret_cast<const unsigned char*>(data.data());
}

}  // namespace

bool crc32c_hardware_available() {
  static const bool available = detect_hardware();
  return available;
}

std::uint32_t crc32c_extend(std::uint32_t crc, std::span<const std::byte> data) {
  // Chosen once; a function-local static is initialised thread-safely.
  static const ExtendFn extend = select_extend();
  return extend(crc, bytes_of(data), data.size());
}

std::uint32_t crc32c(std::span<const std::byte> data) {
  return crc32c_extend(0, data);
}

std::uint32_t crc32c_extend_software(std::uint32_t crc, std::span<const std::byte> data) {
  return extend_table(crc, bytes_of(data), data.size());
}

std::uint32_t crc32c_extend_hardware(std::uint32_t crc, std::span<const std::byte> data) {
#ifdef RINGFEED_CRC32C_X86
  return extend_sse42(crc, bytes_of(data), data.size());
#else
  return extend_table(crc, bytes_of(data), data.size());
#endif
}

}  // namespace ringfeed::io
