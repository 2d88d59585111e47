#include "io/kafka_compression.hpp"

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <memory>

namespace ringfeed::io::kafka {

namespace {

Error codec_error(Compression c, const std::string& what) {
  return Error{std::string(to_string(c)) + ": " + what, EPROTO};
}

Error over_limit(Compression c, std::size_t max_size) {
  return codec_error(
      c, "decompressed data exceeds the limit of " + std::to_string(max_size) + " bytes");
}

// Makes room in `out` beyond `produced`, doubling, up to max_size + 1 bytes in all (one
// byte over the limit is how an overflow shows). False when out is that size already.
bool grow(std::vector<char>& out, std::size_t produced, std::size_t max_size) {
  const std::size_t cap = max_size == SIZE_MAX ? max_size : max_size + 1;
  if (produced < out.size()) return true;
  if (out.size() >= cap) return false;
  const std::size_t want = std::max<std::size_t>(64 * 1024, out.size() * 2);
  out.resize(std::min(want, cap));
  return true;
}

std::uint32_t read_be32(const char* p) {
  return static_cast<std::uint32_t>(static_cast<unsigned char>(p[0])) << 24 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(p[1])) << 16 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(p[2])) << 8 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(p[3]));
}

Status gunzip(std::string_view in, std::size_t max_size, std::vector<char>& out) {
  if (in.size() > UINT_MAX) return codec_error(Compression::gzip, "input over 4 GiB");
  z_stream zs{};
  // 15 + 32: a gzip or zlib header, detected.
  if (inflateInit2(&zs, 15 + 32) != Z_OK) {
    return codec_error(Compression::gzip, "inflateInit2 failed");
  }
  const std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::size_t produced = 0;
  for (;;) {
    if (!grow(out, produced, max_size)) return over_limit(Compression::gzip, max_size);
    const std::size_t room = std::min<std::size_t>(out.size() - produced, UINT_MAX);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = static_cast<uInt>(room);
    const int ret = inflate(&zs, Z_NO_FLUSH);
    produced += room - zs.avail_out;
    if (produced > max_size) return over_limit(Compression::gzip, max_size);
    if (ret == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      // Another gzip member follows (gzip files may be concatenated).
      if (inflateReset(&zs) != Z_OK) return codec_error(Compression::gzip, "inflateReset failed");
      continue;
    }
    if (ret == Z_BUF_ERROR && zs.avail_in == 0) {
      return codec_error(Compression::gzip, "the compressed data ends early");
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) {
      return codec_error(Compression::gzip, zs.msg != nullptr ? zs.msg : "inflate failed");
    }
  }
  out.resize(produced);
  return Ok{};
}

Status unsnappy_raw(std::string_view in, std::size_t max_size, std::vector<char>& out,
                    std::size_t& produced) {
  std::size_t n = 0;
  if (snappy_uncompressed_length(in.data(), in.size(), &n) != SNAPPY_OK) {
    return codec_error(Compression::snappy, "invalid compressed length header");
  }
  if (n > max_size - produced) return over_limit(Compression::snappy, max_size);
  out.resize(produced + n);
  std::size_t written = n;
  if (snappy_uncompress(in.data(), in.size(), out.data() + produced, &written) != SNAPPY_OK ||
      written != n) {
    return codec_error(Compression::snappy, "invalid compressed data");
  }
  produced += n;
  return Ok{};
}

Status unsnappy(std::string_view in, std::size_t max_size, std::vector<char>& out) {
  std::size_t produced = 0;
  out.clear();
  if (!in.starts_with(kXerialSnappyMagic)) {
    if (auto s = unsnappy_raw(in, max_size, out, produced); !s) return s;
    return Ok{};
  }
  // Xerial framing: magic, two int32 versions, then size-prefixed raw blocks.
  constexpr std::size_t kHeader = 16;
  if (in.size() < kHeader) {
    return codec_error(Compression::snappy,
                       "xerial header of " + std::to_string(in.size()) + " bytes (16 expected)");
  }
  std::size_t pos = kHeader;
  while (pos < in.size()) {
    if (in.size() - pos < 4) {
      return codec_error(Compression::snappy,
                         "xerial block size at byte " + std::to_string(pos) + " is cut short");
    }
    const std::uint32_t block = read_be32(in.data() + pos);
    pos += 4;
    if (block > in.size() - pos) {
      return codec_error(Compression::snappy, "xerial block of " + std::to_string(block) +
                                                  " bytes at byte " + std::to_string(pos - 4) +
                                                  " runs past the end (" +
                                                  std::to_string(in.size()) + " bytes)");
    }
    if (auto s = unsnappy_raw(in.substr(pos, block), max_size, out, produced); !s) return s;
    pos += block;
  }
  return Ok{};
}

Status unlz4(std::string_view in, std::size_t max_size, std::vector<char>& out) {
  LZ4F_dctx* raw = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&raw, LZ4F_VERSION))) {
    return codec_error(Compression::lz4, "cannot create a decompression context");
  }
  const std::unique_ptr<LZ4F_dctx, LZ4F_errorCode_t (*)(LZ4F_dctx*)> ctx(
      raw, LZ4F_freeDecompressionContext);
  std::size_t in_pos = 0;
  std::size_t produced = 0;
  if (in.empty()) return codec_error(Compression::lz4, "no data");
  for (;;) {
    if (!grow(out, produced, max_size)) return over_limit(Compression::lz4, max_size);
    std::size_t dst = out.size() - produced;
    std::size_t src = in.size() - in_pos;
    const std::size_t hint =
        LZ4F_decompress(ctx.get(), out.data() + produced, &dst, in.data() + in_pos, &src, nullptr);
    if (LZ4F_isError(hint)) return codec_error(Compression::lz4, LZ4F_getErrorName(hint));
    in_pos += src;
    produced += dst;
    if (produced > max_size) return over_limit(Compression::lz4, max_size);
    if (hint == 0 && in_pos == in.size()) break;  // the last frame ended with the input
    // With input left, a new frame follows; with none, the frame is cut short (the
    // output had room, so it was not that).
    if (in_pos == in.size() && produced < out.size()) {
      return codec_error(Compression::lz4, "the compressed data ends early");
    }
    if (src == 0 && dst == 0) {
      return codec_error(Compression::lz4, "no progress at byte " + std::to_string(in_pos));
    }
  }
  out.resize(produced);
  return Ok{};
}

Status unzstd(std::string_view in, std::size_t max_size, std::vector<char>& out) {
  const std::unique_ptr<ZSTD_DCtx, std::size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(),
                                                                    ZSTD_freeDCtx);
  if (!ctx) return codec_error(Compression::zstd, "cannot create a decompression context");
  if (in.empty()) return codec_error(Compression::zstd, "no data");
  ZSTD_inBuffer src{in.data(), in.size(), 0};
  std::size_t produced = 0;
  for (;;) {
    if (!grow(out, produced, max_size)) return over_limit(Compression::zstd, max_size);
    ZSTD_outBuffer dst{out.data() + produced, out.size() - produced, 0};
    const std::size_t in_before = src.pos;
    const std::size_t hint = ZSTD_decompressStream(ctx.get(), &dst, &src);
    if (ZSTD_isError(hint)) return codec_error(Compression::zstd, ZSTD_getErrorName(hint));
    produced += dst.pos;
    if (produced > max_size) return over_limit(Compression::zstd, max_size);
    if (hint == 0 && src.pos == src.size) break;  // a frame ended with the input
    if (src.pos == src.size && dst.pos < dst.size) {
      return codec_error(Compression::zstd, "the compressed data ends early");
    }
    if (dst.pos == 0 && src.pos == in_before && dst.size > 0) {
      return codec_error(Compression::zstd, "no progress at byte " + std::to_string(src.pos));
    }
  }
  out.resize(produced);
  return Ok{};
}

}  // namespace

const char* to_string(Compression c) {
  switch (c) {
    case Compression::none:
      return "none";
    case Compression::gzip:
      return "gzip";
    case Compression::snappy:
      return "snappy";
    case Compression::lz4:
      return "lz4";
    case Compression::zstd:
      return "zstd";
  }
  return "unknown";
}

Status compress(Compression c, std::string_view in, std::string& out) {
  const std::size_t start = out.size();
  switch (c) {
    case Compression::none:
      out.append(in);
      return Ok{};
    case Compression::gzip: {
      if (in.size() > UINT_MAX) return codec_error(c, "input over 4 GiB");
      z_stream zs{};
      // 15 + 16: a gzip header and trailer, as Kafka's clients write.
      if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
          Z_OK) {
        return codec_error(c, "deflateInit2 failed");
      }
      const std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, deflateEnd);
      const uLong bound = deflateBound(&zs, static_cast<uLong>(in.size()));
      out.resize(start + bound);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
      zs.avail_in = static_cast<uInt>(in.size());
      zs.next_out = reinterpret_cast<Bytef*>(out.data() + start);
      zs.avail_out = static_cast<uInt>(bound);
      if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
        out.resize(start);
        return codec_error(c, "deflate did not finish");
      }
      out.resize(start + zs.total_out);
      return Ok{};
    }
    case Compression::snappy: {
      std::size_t n = snappy_max_compressed_length(in.size());
      out.resize(start + n);
      if (snappy_compress(in.data(), in.size(), out.data() + start, &n) != SNAPPY_OK) {
        out.resize(start);
        return codec_error(c, "snappy_compress failed");
      }
      out.resize(start + n);
      return Ok{};
    }
    case Compression::lz4: {
      const std::size_t bound = LZ4F_compressFrameBound(in.size(), nullptr);
      out.resize(start + bound);
      const std::size_t n =
          LZ4F_compressFrame(out.data() + start, bound, in.data(), in.size(), nullptr);
      if (LZ4F_isError(n)) {
        out.resize(start);
        return codec_error(c, LZ4F_getErrorName(n));
      }
      out.resize(start + n);
      return Ok{};
    }
    case Compression::zstd: {
      const std::size_t bound = ZSTD_compressBound(in.size());
      out.resize(start + bound);
      const std::size_t n = ZSTD_compress(out.data() + start, bound, in.data(), in.size(), 3);
      if (ZSTD_isError(n)) {
        out.resize(start);
        return codec_error(c, ZSTD_getErrorName(n));
      }
      out.resize(start + n);
      return Ok{};
    }
  }
  return Error{"unknown compression codec " + std::to_string(static_cast<unsigned>(c)), ENOTSUP};
}

Status decompress(Compression c, std::string_view in, std::size_t max_size,
                  std::vector<char>& out) {
  out.clear();
  switch (c) {
    case Compression::none:
      if (in.size() > max_size) return over_limit(c, max_size);
      out.assign(in.begin(), in.end());
      return Ok{};
    case Compression::gzip:
      return gunzip(in, max_size, out);
    case Compression::snappy:
      return unsnappy(in, max_size, out);
    case Compression::lz4:
      return unlz4(in, max_size, out);
    case Compression::zstd:
      return unzstd(in, max_size, out);
  }
  return Error{"unknown compression codec " + std::to_string(static_cast<unsigned>(c)), ENOTSUP};
}

}  // namespace ringfeed::io::kafka
