// The Kafka wire protocol's primitive types and its request/response framing. No I/O
// here: a client appends requests to its send buffer and hands the bytes it received to
// read_response_frame, as the Redis source does with RESP (io/resp.hpp).
//
// Primitive types, all integers big-endian (network order):
//
//   int8 / int16 / int32 / int64   two's complement; BOOLEAN is an int8, 0 or 1
//   unsigned varint                7 bits per byte, least significant group first, the
//                                  high bit set on every byte but the last (at most 5
//                                  bytes for 32 bits, 10 for 64)
//   varint / varlong               zigzag-encoded signed 32/64-bit value ((n << 1) ^
//                                  (n >> 31)), then as an unsigned varint; the record
//                                  batch format uses these
//   STRING                         int16 length, then that many bytes of UTF-8
//   NULLABLE_STRING                the same; length -1 is null
//   BYTES / NULLABLE_BYTES         int32 length (-1: null), then the bytes
//   ARRAY                          int32 count (-1: null), then the elements
//
// Only non-flexible API versions are spoken (no compact strings, no tagged fields):
// librdkafka's mock cluster, the brokers the tests run against, advertises nothing
// newer, and every supported broker still accepts them.
//
// A request on the wire:
//
//   int32  size             bytes that follow (header and body)
//   int16  api_key          which API (ApiKey)
//   int16  api_version
//   int32  correlation_id   echoed by the response; matches it to its request
//   STRING client_id        nullable in principle; ringfeed always sends one
//   ...    body             the API's request fields
//
// (request header v1). A response of a non-flexible version:
//
//   int32  size
//   int32  correlation_id   (response header v0)
//   ...    body
//
// Responses come back in request order on a connection, so several requests can be in
// flight (pipelined) and the correlation id checks the pairing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "shm/result.hpp"

namespace ringfeed::io::kafka {

// --- writing -----------------------------------------------------------------------

// Appends primitive values to a byte string (a send buffer or a test's input). Never
// fails: lengths that do not fit the wire type are the caller's bug, checked by assert.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void int8(std::int8_t v) { out_.push_back(static_cast<char>(v)); }
  void boolean(bool v) { int8(v ? 1 : 0); }
  void int16(std::int16_t v);
  void int32(std::int32_t v);
  void uint32(std::uint32_t v);
  void int64(std::int64_t v);
  void uvarint(std::uint64_t v);
  void varint(std::int32_t v);   // zigzag
  void varlong(std::int64_t v);  // zigzag
  void string(std::string_view s);
  void nullable_string(std::optional<std::string_view> s);
  void bytes(std::string_view b);
  void nullable_bytes(std::optional<std::string_view> b);
  void array_count(std::size_t n);  // int32
  void null_array() { int32(-1); }
  void raw(std::string_view b) { out_.append(b); }

  // Bytes written to the underlying string so far (positions for patch_int32).
  std::size_t size() const { return out_.size(); }
  // Overwrites the int32 at `position` (a length written before its contents).
  void patch_int32(std::size_t position, std::int32_t v);
  std::string& out() { return out_; }

 private:
  std::string& out_;
};

// --- reading -----------------------------------------------------------------------

// Reads primitive values from a byte span (a response body, a record batch) and names
// the field of the first one that failed. Every read takes the field's name; a read
// past the end, a negative length where none may be, or an invalid varint puts the
// reader in error, and from then on every read returns 0 or empty and the first error
// stays. Decoders thus read a whole structure and check ok() once (and in loops, so that
// garbage never makes them spin), and the error names the first field that was wrong:
//
//   Fetch v11: responses[0].partitions[2].records: length 5000 at byte 96 runs past
//   the end of the response (120 bytes)
//
// The prefix ("Fetch v11") is the reader's context; the path comes from the arrays
// entered with element() and the field name. Byte offsets count from the start of the
// span. Never reads outside the span. Views returned point into it.
class Reader {
 public:
  // `context` names the structure in errors ("Fetch v11"); `what` names the span ("the
  // response", "the batch").
  Reader(std::string_view data, std::string context, std::string_view what = "the response");

  std::int8_t int8(const char* field);
  bool boolean(const char* field);
  std::int16_t int16(const char* field);
  std::int32_t int32(const char* field);
  std::uint32_t uint32(const char* field);
  std::int64_t int64(const char* field);
  std::uint64_t uvarint(const char* field);  // at most 10 bytes, within 64 bits
  std::int32_t varint(const char* field);    // zigzag, within 32 bits
  std::int64_t varlong(const char* field);   // zigzag
  std::string_view string(const char* field);
  std::optional<std::string_view> nullable_string(const char* field);
  std::string_view bytes(const char* field);
  std::optional<std::string_view> nullable_bytes(const char* field);
  // `n` raw bytes.
  std::string_view raw(std::size_t n, const char* field);

  // An array's count. Each element takes at least `min_element_size` bytes (at least 1),
  // so a count that the remaining bytes cannot hold is refused before the caller sizes
  // anything by it. A null array (-1) reads as 0 when `nullable`, else it is an error.
  std::size_t array_count(const char* field, std::size_t min_element_size, bool nullable = false);
  // Like array_count, and says whether the array was null.
  std::size_t nullable_array_count(const char* field, std::size_t min_element_size, bool& is_null);

  // Path elements for errors: while an Element of `array` and `index` lives, fields read
  // are named `array[index].field`. Nested elements stack (up to 8 levels).
  class Element {
   public:
    Element(Reader& r, const char* array, std::size_t index);
    ~Element();
    Element(const Element&) = delete;
    Element& operator=(const Element&) = delete;

   private:
    Reader& r_;
  };

  bool ok() const { return error_.empty(); }
  // The first error, with its context and path; code EPROTO.
  Error error() const;
  const std::string& message() const { return error_; }
  // Puts the reader in error naming `field` (a check of the caller's: a value out of
  // range, a count that disagrees). Keeps an earlier error.
  void fail(const char* field, const std::string& what);

  // The outcome of a whole decode: the first error, or one if bytes are left unread
  // ("Fetch v11: 3 bytes left over after the last field, at byte 117 of 120").
  Status finish() const;

  std::size_t position() const { return pos_; }
  std::size_t remaining() const { return data_.size() - pos_; }
  std::size_t size() const { return data_.size(); }
  bool at_end() const { return pos_ == data_.size(); }

 private:
  bool need(std::size_t n, const char* field);
  // `n` bytes whose length was read at `length_at` (named in the error).
  std::string_view take(std::size_t n, std::size_t length_at, const char* field);
  std::string path(const char* field) const;

  std::string_view data_;
  std::size_t pos_ = 0;
  std::string context_;
  std::string_view what_;
  std::string error_;
  struct PathPart {
    const char* array;
    std::size_t index;
  };
  static constexpr std::size_t kMaxDepth = 8;
  PathPart parts_[kMaxDepth]{};
  std::size_t depth_ = 0;
};

// --- framing -----------------------------------------------------------------------

// API keys of the requests ringfeed sends (Kafka's numbering).
enum class ApiKey : std::int16_t {
  produce = 0,
  fetch = 1,
  list_offsets = 2,
  metadata = 3,
  offset_commit = 8,
  offset_fetch = 9,
  find_coordinator = 10,
  join_group = 11,
  heartbeat = 12,
  leave_group = 13,
  sync_group = 14,
  api_versions = 18,
};
// "Fetch", "ListOffsets", ... as Kafka names them; "ApiKey 42" for others.
std::string api_name(std::int16_t api_key);
inline std::string api_name(ApiKey k) {
  return api_name(static_cast<std::int16_t>(k));
}

struct RequestHeader {
  ApiKey api_key = ApiKey::api_versions;
  std::int16_t api_version = 0;
  std::int32_t correlation_id = 0;
  std::string_view client_id = "ringfeed";
};

// Starts a request in `out` (appended, so requests can be pipelined in one buffer): a
// placeholder size, then the header. The caller appends the body with a Writer on `out`,
// then calls finish_request with the returned position, which writes the size.
std::size_t begin_request(std::string& out, const RequestHeader& header);
void finish_request(std::string& out, std::size_t start);

struct FrameLimits {
  // Largest response accepted, size prefix excluded. A Fetch response holds at most the
  // request's max_bytes (plus a little); 100 MiB is the broker's default
  // socket.request.max.bytes, so a larger size means the stream lost its framing.
  std::size_t max_frame_size = std::size_t{100} * 1024 * 1024;
};

enum class FrameStatus : std::uint8_t {
  complete,   // `body` holds the response body, `size` the bytes of the whole frame
  need_more,  // the input ends inside the frame; `size` says how many bytes it needs
  error,      // the size prefix is negative, below 4 or over the limit: `error` says so
};
const char* to_string(FrameStatus s);

struct ResponseFrame {
  FrameStatus status = FrameStatus::need_more;
  // complete: bytes of the frame (4 + its size); need_more: bytes the input must hold
  // for the frame to be complete (4 while the size prefix is not there yet).
  std::size_t size = 0;
  std::int32_t correlation_id = 0;
  std::string_view body;  // after the correlation id; points into the input
  std::string error;
};

// Reads the response frame at the start of `input` (a receive buffer: bytes received and
// not yet consumed). On complete the caller handles `body` and then drops `size` bytes;
// pipelined frames come out one call each. Nothing is kept between calls, so a frame cut
// anywhere gives the same result once its bytes are there. Never reads outside `input`.
// An error is final for the stream: its framing is lost, the connection must go.
ResponseFrame read_response_frame(std::string_view input, const FrameLimits& limits = {});

}  // namespace ringfeed::io::kafka
