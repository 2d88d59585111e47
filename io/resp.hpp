// RESP2, the Redis serialization protocol, as the Redis Streams source speaks it: an
// encoder for commands (arrays of bulk strings), an incremental parser for replies, and
// checked accessors for the reply values. No I/O here: the source reads the socket into
// a buffer of its own and hands the bytes to the parser.
//
// The replies, every line ending with \r\n:
//
//   +<text>                   simple string (text holds no \r or \n)
//   -<text>                   error reply
//   :<integer>                signed 64-bit integer
//   $<length>\r\n<bytes>\r\n  bulk string of `length` arbitrary bytes; $-1 is the null bulk string
//   *<count>                  array: `count` values follow, of any type, arrays included;
//                             *-1 is the null array (XREADGROUP ... BLOCK that timed out)
//
// Numbers are read strictly, as hiredis reads them: an optional '-', then decimal digits
// without a leading zero ("0" alone is fine), within 64 bits; a length is -1 or 0 and up.
// Redis writes nothing else, and a stream that does has lost its framing. It also makes
// the form canonical: a reply that parses encodes back (append_value) to exactly its bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shm/result.hpp"

namespace ringfeed::io {

// --- commands ------------------------------------------------------------------------

// Bytes append_command adds for `args`.
std::size_t command_size(std::span<const std::string_view> args);

// Appends `args` as one command, `*N\r\n` then `$len\r\narg\r\n` per argument, to `out`.
// Appending lets several commands be pipelined in one buffer (one write for all). Grows
// `out` at most once per call (geometrically, so a pipeline built command by command
// costs amortised O(bytes)); arguments are binary-safe. An empty `args` appends `*0\r\n`,
// which Redis ignores.
void append_command(std::string& out, std::span<const std::string_view> args);
void append_command(std::string& out, std::initializer_list<std::string_view> args);

// --- reply values --------------------------------------------------------------------

enum class RespType : std::uint8_t {
  simple_string,
  error,
  integer,
  bulk_string,
  null_bulk_string,
  array,
  null_array,
};
const char* to_string(RespType t);

// One reply, as a tree. Only the fields of its type are set, the others are empty or 0
// (so two values compare equal exactly when they are the same reply).
struct RespValue {
  RespType type = RespType::null_bulk_string;
  std::string str;                  // simple_string, error, bulk_string
  std::int64_t integer = 0;         // integer
  std::vector<RespValue> elements;  // array

  bool is_null() const {
    return type == RespType::null_bulk_string || type == RespType::null_array;
  }
  friend bool operator==(const RespValue&, const RespValue&) = default;

  static RespValue simple(std::string s) { return {RespType::simple_string, std::move(s), 0, {}}; }
  static RespValue error_reply(std::string s) { return {RespType::error, std::move(s), 0, {}}; }
  static RespValue from_integer(std::int64_t i) { return {RespType::integer, {}, i, {}}; }
  static RespValue bulk(std::string s) { return {RespType::bulk_string, std::move(s), 0, {}}; }
  static RespValue null_bulk() { return {RespType::null_bulk_string, {}, 0, {}}; }
  static RespValue array(std::vector<RespValue> e) {
    return {RespType::array, {}, 0, std::move(e)};
  }
  static RespValue null_array() { return {RespType::null_array, {}, 0, {}}; }
};

// Appends the wire form of `v` (what a server sends; for tests and fake servers). Refuses
// a simple string or error holding \r or \n, which RESP2 cannot carry: then nothing is
// appended.
Status append_value(std::string& out, const RespValue& v);

// A short description for messages: `integer 42`, `bulk string of 5 bytes`, `error reply
// "NOGROUP No such key ..."` (long texts cut), `array of 3 elements`, `null array`.
std::string describe(const RespValue& v);

// Checked access for reading replies of an expected shape. `what` names the value in the
// error ("XREADGROUP reply: entry id"); the error says what was expected and what came,
// with the text of an error reply, since that is usually why the shape is wrong. The
// code is EPROTO. Views and spans point into `v` and live as long as it does.
Result<std::string_view> as_string(const RespValue& v, std::string_view what);  // bulk or simple
Result<std::int64_t> as_integer(const RespValue& v, std::string_view what);
Result<std::span<const RespValue>> as_array(const RespValue& v, std::string_view what);
// The same, and the array must have exactly `size` elements.
Result<std::span<const RespValue>> as_array(const RespValue& v, std::size_t size,
                                            std::string_view what);
// A view into a temporary would dangle at the end of the statement.
Result<std::string_view> as_string(const RespValue&& v, std::string_view what) = delete;
Result<std::span<const RespValue>> as_array(const RespValue&& v, std::string_view what) = delete;
Result<std::span<const RespValue>> as_array(const RespValue&& v, std::size_t size,
                                            std::string_view what) = delete;

// --- parsing replies -----------------------------------------------------------------

struct RespLimits {
  // Longest bulk string; Redis's own proto-max-bulk-len. Checked when the length arrives,
  // before any of the payload.
  std::size_t max_bulk_length = std::size_t{512} * 1024 * 1024;
  // Most elements in one array. The source asks XREADGROUP for COUNT entries (about a
  // thousand); a million leaves room for any reply it reads.
  std::size_t max_array_elements = std::size_t{1} << 20;
  // Most arrays nested in one another. An XREADGROUP reply nests 5 (streams, stream,
  // entries, entry, fields). RespValue is built, copied and destroyed recursively, so
  // this is capped at kMaxRespDepth.
  std::size_t max_depth = 16;
  // Longest simple string or error text. Redis's are short; the limit stops a peer that
  // never ends its line from growing the buffer forever.
  std::size_t max_line_length = std::size_t{64} * 1024;
};
inline constexpr std::size_t kMaxRespDepth = 256;

enum class ParseStatus : std::uint8_t {
  complete,   // `out` holds the first reply of the input, `consumed` its size in bytes
  need_more,  // the input ends inside a reply that is valid so far; nothing consumed
  error,      // the input is not RESP2: `error` says what and where; nothing consumed
};
const char* to_string(ParseStatus s);

struct ParseResult {
  ParseStatus status = ParseStatus::need_more;
  // need_more: how many bytes the input must hold for parse to get further (the whole
  // bulk string once its length is known); a hint for sizing the next read.
  std::size_t need = 0;
  // error: one sentence naming the fault and its byte offset in the input.
  std::string error;
};

// Reads replies one at a time from the bytes received so far. parse() looks at the
// reply at the start of `input`; on complete the caller drops `consumed` bytes (or moves
// its start past them) and calls again for the next reply, so pipelined replies in one
// buffer come out in order. Never reads outside `input`.
//
// Partial input: on need_more nothing is consumed, and the parser remembers how far it
// has validated the reply (scanned()) and which arrays are open. The next call must
// pass the same bytes again plus what arrived since: the buffer may have moved
// (compacted, reallocated), but it must start at the same byte. Scanning goes on from
// where it stopped, so each byte is looked at once, except a length or integer line cut
// by the end of the input, which is read again (at most 23 bytes); a simple string's
// search for its \r\n resumes where it stopped. Bulk payloads are skipped by their
// length, not scanned, and nothing is allocated until the whole reply is there (so a
// declared length or count never allocates ahead of its bytes); then one more pass
// builds `out`, reading the headers again and copying the payloads. A reply arriving in
// N pieces thus costs O(bytes + N), not O(bytes * N); a call that brings fewer bytes
// than the last need_more asked for returns at once, without looking at them. Whether a
// reply completes or fails, and with which error, never depends on how its bytes were
// cut into pieces.
//
// An input shorter than the previous call's cannot be the same reply with more bytes:
// the parser then starts over at its first byte. Any other change to bytes already
// scanned goes unnoticed; call reset() before handing the parser a different stream.
//
// Errors are final: a stream that broke the protocol once has lost its framing, so
// every later call returns the same error until reset(), and the caller closes the
// connection. Byte offsets in the message count from the start of the input that the
// failing call was given, which is the start of the broken reply.
//
// `out` is overwritten on complete and reused: its strings and vectors keep their
// capacity for the next reply, so a loop that parses into the same value allocates
// little once warm. On need_more and error it is left as it was.
class RespParser {
 public:
  explicit RespParser(RespLimits limits = {});

  ParseResult parse(std::span<const char> input, std::size_t& consumed, RespValue& out);

  // Forgets the reply in progress and any error.
  void reset();

  // Bytes of the current reply validated so far (0 after complete, reset or a fresh
  // start): the next element header starts there.
  std::size_t scanned() const { return scanned_; }
  const RespLimits& limits() const { return limits_; }

 private:
  ParseResult fail(std::size_t offset, std::string what);
  ParseResult need_more(std::size_t need);
  void restart();

  RespLimits limits_;
  std::vector<std::size_t> pending_;  // per open array, outermost first: elements to come
  std::size_t scanned_ = 0;           // the element header to read next starts here
  std::size_t line_scanned_ = 0;      // the simple string at scanned_ has no line end before
  std::size_t need_ = 0;              // the last need_more's `need`
  std::size_t seen_ = 0;              // size of the last input
  std::string error_;                 // set once the stream broke the protocol
};

}  // namespace ringfeed::io
