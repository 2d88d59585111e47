// The compression codecs of Kafka record batches (io/kafka_records.hpp), through the
// Debian libraries: gzip (zlib), snappy, lz4 (liblz4's frame format) and zstd.
//
// Snappy comes in two forms: raw snappy, as librdkafka writes it, and the xerial framing
// that Java clients write:
//
//   8 bytes   magic "\x82SNAPPY\0"
//   int32     version (1), int32 oldest compatible version (1), big-endian
//   blocks    int32 compressed size (big-endian), then that many bytes of raw snappy
//
// decompress tells them apart by the magic. compress writes raw snappy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shm/result.hpp"

namespace ringfeed::io::kafka {

// Attribute bits 0-2 of a record batch.
enum class Compression : std::uint8_t { none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4 };
// "none", "gzip", "snappy", "lz4", "zstd"; "unknown" for other values.
const char* to_string(Compression c);

inline constexpr std::string_view kXerialSnappyMagic{"\x82SNAPPY\0", 8};

// Compresses `in` with `c` (snappy: raw) and appends it to `out`.
Status compress(Compression c, std::string_view in, std::string& out);

// Decompresses `in` into `out` (its contents replaced), refusing to produce more than
// `max_size` bytes: the error says so as soon as the output would pass it, before it
// is allocated. Errors (code EPROTO, or ENOTSUP for an unknown codec) name the codec
// and what the library said.
Status decompress(Compression c, std::string_view in, std::size_t max_size, std::vector<char>& out);

}  // namespace ringfeed::io::kafka
