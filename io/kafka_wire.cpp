#include "io/kafka_wire.hpp"

#include <cassert>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

namespace ringfeed::io::kafka {

namespace {

template <typename U>
void put_big_endian(std::string& out, U v) {
  char buf[sizeof(U)];
  for (std::size_t i = 0; i < sizeof(U); ++i) {
    buf[sizeof(U) - 1 - i] = static_cast<char>(v & 0xff);
    v = static_cast<U>(v >> 8);
  }
  out.append(buf, sizeof(U));
}

template <typename U>
U get_big_endian(const char* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) {
    v = static_cast<U>((v << 8) | static_cast<unsigned char>(p[i]));
  }
  return v;
}

}  // namespace

// --- writing -----------------------------------------------------------------------

void Writer::int16(std::int16_t v) {
  put_big_endian(out_, static_cast<std::uint16_t>(v));
}
void Writer::int32(std::int32_t v) {
  put_big_endian(out_, static_cast<std::uint32_t>(v));
}
void Writer::uint32(std::uint32_t v) {
  put_big_endian(out_, v);
}
void Writer::int64(std::int64_t v) {
  put_big_endian(out_, static_cast<std::uint64_t>(v));
}

void Writer::uvarint(std::uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out_.push_back(static_cast<char>(v));
}

void Writer::varint(std::int32_t v) {
  const auto u = static_cast<std::uint32_t>(v);
  uvarint((u << 1) ^ static_cast<std::uint32_t>(v >> 31));
}

void Writer::varlong(std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  uvarint((u << 1) ^ static_cast<std::uint64_t>(v >> 63));
}

void Writer::string(std::string_view s) {
  assert(s.size() <= static_cast<std::size_t>(std::numeric_limits<std::int16_t>::max()));
  int16(static_cast<std::int16_t>(s.size()));
  out_.append(s);
}

void Writer::nullable_string(std::optional<std::string_view> s) {
  if (!s) {
    int16(-1);
  } else {
    string(*s);
  }
}

void Writer::bytes(std::string_view b) {
  assert(b.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()));
  int32(static_cast<std::int32_t>(b.size()));
  out_.append(b);
}

void Writer::nullable_bytes(std::optional<std::string_view> b) {
  if (!b) {
    int32(-1);
  } else {
    bytes(*b);
  }
}

void Writer::array_count(std::size_t n) {
  assert(n <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()));
  int32(static_cast<std::int32_t>(n));
}

void Writer::patch_int32(std::size_t position, std::int32_t v) {
  assert(position + 4 <= out_.size());
  auto u = static_cast<std::uint32_t>(v);
  for (int i = 3; i >= 0; --i) {
    out_[position + static_cast<std::size_t>(i)] = static_cast<char>(u & 0xff);
    u >>= 8;
  }
}

// --- reading -----------------------------------------------------------------------

Reader::Reader(std::string_view data, std::string context, std::string_view what)
    : data_(data), context_(std::move(context)), what_(what) {}

Reader::Element::Element(Reader& r, const char* array, std::size_t index) : r_(r) {
  if (r_.depth_ < kMaxDepth) r_.parts_[r_.depth_] = {array, index};
  ++r_.depth_;
}

Reader::Element::~Element() {
  --r_.depth_;
}

std::string Reader::path(const char* field) const {
  std::string p;
  for (std::size_t i = 0; i < depth_ && i < kMaxDepth; ++i) {
    p += parts_[i].array;
    p += '[';
    p += std::to_string(parts_[i].index);
    p += "].";
  }
  p += field;
  return p;
}

void Reader::fail(const char* field, const std::string& what) {
  if (!error_.empty()) return;
  error_ = context_ + ": " + path(field) + ": " + what;
}

Error Reader::error() const {
  return Error{error_, EPROTO};
}

Status Reader::finish() const {
  if (!ok()) return error();
  if (!at_end()) {
    return Error{context_ + ": " + std::to_string(remaining()) +
                     " bytes left over after the last field, at byte " + std::to_string(pos_) +
                     " of " + std::to_string(data_.size()),
                 EPROTO};
  }
  return Ok{};
}

bool Reader::need(std::size_t n, const char* field) {
  if (!error_.empty()) return false;
  if (n <= remaining()) return true;
  fail(field, std::to_string(n) + " bytes at byte " + std::to_string(pos_) +
                  " run past the end of " + std::string(what_) + " (" +
                  std::to_string(data_.size()) + " bytes)");
  return false;
}

std::int8_t Reader::int8(const char* field) {
  if (!need(1, field)) return 0;
  return static_cast<std::int8_t>(data_[pos_++]);
}

bool Reader::boolean(const char* field) {
  return int8(field) != 0;
}

std::int16_t Reader::int16(const char* field) {
  if (!need(2, field)) return 0;
  const auto v = get_big_endian<std::uint16_t>(data_.data() + pos_);
  pos_ += 2;
  return static_cast<std::int16_t>(v);
}

std::int32_t Reader::int32(const char* field) {
  return static_cast<std::int32_t>(uint32(field));
}

std::uint32_t Reader::uint32(const char* field) {
  if (!need(4, field)) return 0;
  const auto v = get_big_endian<std::uint32_t>(data_.data() + pos_);
  pos_ += 4;
  return v;
}

std::int64_t Reader::int64(const char* field) {
  if (!need(8, field)) return 0;
  const auto v = get_big_endian<std::uint64_t>(data_.data() + pos_);
  pos_ += 8;
  return static_cast<std::int64_t>(v);
}

std::uint64_t Reader::uvarint(const char* field) {
  if (!error_.empty()) return 0;
  const std::size_t start = pos_;
  std::uint64_t v = 0;
  for (unsigned shift = 0;; shift += 7) {
    if (pos_ >= data_.size()) {
      fail(field, "varint at byte " + std::to_string(start) + " runs past the end of " +
                      std::string(what_) + " (" + std::to_string(data_.size()) + " bytes)");
      return 0;
    }
    const auto b = static_cast<unsigned char>(data_[pos_++]);
    // The tenth byte may only carry the top bit of 64.
    if (shift == 63 && b > 1) {
      fail(field, "varint at byte " + std::to_string(start) + " does not fit in 64 bits");
      return 0;
    }
    v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return v;
  }
}

std::int32_t Reader::varint(const char* field) {
  const std::size_t start = pos_;
  const std::uint64_t u = uvarint(field);
  if (u > std::numeric_limits<std::uint32_t>::max()) {
    fail(field, "varint at byte " + std::to_string(start) + " does not fit in 32 bits");
    return 0;
  }
  const auto u32 = static_cast<std::uint32_t>(u);
  return static_cast<std::int32_t>((u32 >> 1) ^ (~(u32 & 1) + 1));
}

std::int64_t Reader::varlong(const char* field) {
  const std::uint64_t u = uvarint(field);
  return static_cast<std::int64_t>((u >> 1) ^ (~(u & 1) + 1));
}

std::string_view Reader::take(std::size_t n, std::size_t length_at, const char* field) {
  if (!error_.empty()) return {};
  if (n > remaining()) {
    fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(length_at) +
                    " runs past the end of " + std::string(what_) + " (" +
                    std::to_string(data_.size()) + " bytes)");
    return {};
  }
  const std::string_view v = data_.substr(pos_, n);
  pos_ += n;
  return v;
}

std::string_view Reader::raw(std::size_t n, const char* field) {
  return take(n, pos_, field);
}

std::string_view Reader::string(const char* field) {
  const std::size_t start = pos_;
  const std::int16_t n = int16(field);
  if (n < 0 && ok()) {
    fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(start) +
                    " (this string cannot be null)");
    return {};
  }
  return take(static_cast<std::size_t>(n < 0 ? 0 : n), start, field);
}

std::optional<std::string_view> Reader::nullable_string(const char* field) {
  const std::size_t start = pos_;
  const std::int16_t n = int16(field);
  if (!ok()) return std::nullopt;
  if (n == -1) return std::nullopt;
  if (n < 0) {
    fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(start));
    return std::nullopt;
  }
  return take(static_cast<std::size_t>(n), start, field);
}

std::string_view Reader::bytes(const char* field) {
  const std::size_t start = pos_;
  const std::int32_t n = int32(field);
  if (n < 0 && ok()) {
    fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(start) +
                    " (these bytes cannot be null)");
    return {};
  }
  return take(static_cast<std::size_t>(n < 0 ? 0 : n), start, field);
}

std::optional<std::string_view> Reader::nullable_bytes(const char* field) {
  const std::size_t start = pos_;
  const std::int32_t n = int32(field);
  if (!ok()) return std::nullopt;
  if (n == -1) return std::nullopt;
  if (n < 0) {
    fail(field, "length " + std::to_string(n) + " at byte " + std::to_string(start));
    return std::nullopt;
  }
  return take(static_cast<std::size_t>(n), start, field);
}

std::size_t Reader::nullable_array_count(const char* field, std::size_t min_element_size,
                                         bool& is_null) {
  is_null = false;
  const std::size_t start = pos_;
  const std::int32_t n = int32(field);
  if (!ok()) return 0;
  if (n == -1) {
    is_null = true;
    return 0;
  }
  if (n < 0) {
    fail(field, "array count " + std::to_string(n) + " at byte " + std::to_string(start));
    return 0;
  }
  const std::size_t min = min_element_size == 0 ? 1 : min_element_size;
  const auto count = static_cast<std::size_t>(n);
  if (count > remaining() / min) {
    fail(field, "array count " + std::to_string(n) + " at byte " + std::to_string(start) +
                    " needs at least " + std::to_string(count * min) + " bytes, " +
                    std::to_string(remaining()) + " remain in " + std::string(what_));
    return 0;
  }
  return count;
}

std::size_t Reader::array_count(const char* field, std::size_t min_element_size, bool nullable) {
  bool is_null = false;
  const std::size_t start = pos_;
  const std::size_t n = nullable_array_count(field, min_element_size, is_null);
  if (is_null && !nullable) {
    fail(field, "null array at byte " + std::to_string(start) + " (this array cannot be null)");
  }
  return n;
}

// --- framing -----------------------------------------------------------------------

std::string api_name(std::int16_t api_key) {
  switch (static_cast<ApiKey>(api_key)) {
    case ApiKey::produce:
      return "Produce";
    case ApiKey::fetch:
      return "Fetch";
    case ApiKey::list_offsets:
      return "ListOffsets";
    case ApiKey::metadata:
      return "Metadata";
    case ApiKey::offset_commit:
      return "OffsetCommit";
    case ApiKey::offset_fetch:
      return "OffsetFetch";
    case ApiKey::find_coordinator:
      return "FindCoordinator";
    case ApiKey::join_group:
      return "JoinGroup";
    case ApiKey::heartbeat:
      return "Heartbeat";
    case ApiKey::leave_group:
      return "LeaveGroup";
    case ApiKey::sync_group:
      return "SyncGroup";
    case ApiKey::api_versions:
      return "ApiVersions";
  }
  return "ApiKey " + std::to_string(api_key);
}

std::size_t begin_request(std::string& out, const RequestHeader& header) {
  const std::size_t start = out.size();
  Writer w(out);
  w.int32(0);  // the size, written by finish_request
  w.int16(static_cast<std::int16_t>(header.api_key));
  w.int16(header.api_version);
  w.int32(header.correlation_id);
  w.string(header.client_id);
  return start;
}

void finish_request(std::string& out, std::size_t start) {
  const std::size_t size = out.size() - start - 4;
  assert(size <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()));
  Writer(out).patch_int32(start, static_cast<std::int32_t>(size));
}

const char* to_string(FrameStatus s) {
  switch (s) {
    case FrameStatus::complete:
      return "complete";
    case FrameStatus::need_more:
      return "need more bytes";
    case FrameStatus::error:
      return "error";
  }
  return "unknown frame status";
}

ResponseFrame read_response_frame(std::string_view input, const FrameLimits& limits) {
  ResponseFrame f;
  if (input.size() < 4) {
    f.size = 4;
    return f;
  }
  const auto size = static_cast<std::int32_t>(get_big_endian<std::uint32_t>(input.data()));
  if (size < 4) {
    f.status = FrameStatus::error;
    f.error = "response frame size " + std::to_string(size) +
              (size < 0 ? " is negative" : " is too small to hold a correlation id (4 bytes)");
    return f;
  }
  if (static_cast<std::size_t>(size) > limits.max_frame_size) {
    f.status = FrameStatus::error;
    f.error = "response frame size " + std::to_string(size) + " is over the limit of " +
              std::to_string(limits.max_frame_size) + " bytes";
    return f;
  }
  f.size = 4 + static_cast<std::size_t>(size);
  if (input.size() < f.size) return f;
  f.status = FrameStatus::complete;
  f.correlation_id = static_cast<std::int32_t>(get_big_endian<std::uint32_t>(input.data() + 4));
  f.body = input.substr(8, f.size - 8);
  return f;
}

}  // namespace ringfeed::io::kafka
