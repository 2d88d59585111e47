#include "io/resp.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>

namespace ringfeed::io {

namespace {

constexpr std::uint64_t kMaxMagnitudePositive = std::numeric_limits<std::int64_t>::max();
constexpr std::uint64_t kMaxMagnitudeNegative = kMaxMagnitudePositive + 1;  // -2^63

std::size_t decimal_digits(std::size_t v) {
  std::size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

// Bytes of `<prefix><n>\r\n`.
std::size_t header_size(std::size_t n) {
  return 1 + decimal_digits(n) + 2;
}

void append_header(std::string& out, char prefix, std::int64_t n) {
  char buf[1 + 20 + 2];
  buf[0] = prefix;
  char* const end = std::to_chars(buf + 1, buf + sizeof buf - 2, n).ptr;
  end[0] = '\r';
  end[1] = '\n';
  out.append(buf, static_cast<std::size_t>(end + 2 - buf));
}

// Room for `extra` more bytes without a reallocation in the appends that follow,
// doubling so that a pipeline built one command at a time stays linear.
void reserve_more(std::string& out, std::size_t extra) {
  const std::size_t want = out.size() + extra;
  if (want > out.capacity()) out.reserve(std::max(want, 2 * out.capacity()));
}

// `'x' (0x78)` for a printable byte, `0x0d` otherwise.
std::string describe_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  char buf[16];
  if (u >= 0x20 && u < 0x7f) {
    std::snprintf(buf, sizeof buf, "'%c' (0x%02x)", c, u);
  } else {
    std::snprintf(buf, sizeof buf, "0x%02x", u);
  }
  return buf;
}

// `"text"`, cut to `max` bytes with "..." after.
std::string quoted(std::string_view s, std::size_t max) {
  std::string q = "\"";
  q.append(s.substr(0, max));
  q += '"';
  if (s.size() > max) q += "...";
  return q;
}

Error shape_error(std::string_view what, std::string_view expected, const RespValue& v) {
  std::string m(what);
  m += ": expected ";
  m += expected;
  m += ", got ";
  m += describe(v);
  return Error{std::move(m), EPROTO};
}

}  // namespace

// --- commands ------------------------------------------------------------------------

std::size_t command_size(std::span<const std::string_view> args) {
  std::size_t n = header_size(args.size());
  for (std::string_view a : args) n += header_size(a.size()) + a.size() + 2;
  return n;
}

void append_command(std::string& out, std::span<const std::string_view> args) {
  reserve_more(out, command_size(args));
  append_header(out, '*', static_cast<std::int64_t>(args.size()));
  for (std::string_view a : args) {
    append_header(out, '$', static_cast<std::int64_t>(a.size()));
    out.append(a);
    out.append("\r\n", 2);
  }
}

void append_command(std::string& out, std::initializer_list<std::string_view> args) {
  append_command(out, std::span<const std::string_view>(args.begin(), args.size()));
}

// --- reply values --------------------------------------------------------------------

const char* to_string(RespType t) {
  switch (t) {
    case RespType::simple_string:
      return "simple string";
    case RespType::error:
      return "error reply";
    case RespType::integer:
      return "integer";
    case RespType::bulk_string:
      return "bulk string";
    case RespType::null_bulk_string:
      return "null bulk string";
    case RespType::array:
      return "array";
    case RespType::null_array:
      return "null array";
  }
  return "unknown RESP type";
}

namespace {

Status append_value_unchecked(std::string& out, const RespValue& v) {
  switch (v.type) {
    case RespType::simple_string:
    case RespType::error:
      if (v.str.find_first_of("\r\n") != std::string::npos) {
        return Error{std::string("cannot encode a ") + to_string(v.type) + " holding \\r or \\n " +
                         quoted(v.str, 64) + ": RESP2 ends it at the first line break",
                     EINVAL};
      }
      out += v.type == RespType::simple_string ? '+' : '-';
      out += v.str;
      out.append("\r\n", 2);
      return Ok{};
    case RespType::integer:
      append_header(out, ':', v.integer);
      return Ok{};
    case RespType::bulk_string:
      append_header(out, '$', static_cast<std::int64_t>(v.str.size()));
      out += v.str;
      out.append("\r\n", 2);
      return Ok{};
    case RespType::null_bulk_string:
      out.append("$-1\r\n", 5);
      return Ok{};
    case RespType::array:
      append_header(out, '*', static_cast<std::int64_t>(v.elements.size()));
      for (const RespValue& e : v.elements) {
        Status s = append_value_unchecked(out, e);
        if (!s) return s;
      }
      return Ok{};
    case RespType::null_array:
      out.append("*-1\r\n", 5);
      return Ok{};
  }
  return Error{
      "cannot encode a RESP value of unknown type " + std::to_string(static_cast<unsigned>(v.type)),
      EINVAL};
}

}  // namespace

Status append_value(std::string& out, const RespValue& v) {
  const std::size_t before = out.size();
  Status s = append_value_unchecked(out, v);
  if (!s) out.resize(before);
  return s;
}

std::string describe(const RespValue& v) {
  switch (v.type) {
    case RespType::simple_string:
      return "simple string " + quoted(v.str, 64);
    case RespType::error:
      return "error reply " + quoted(v.str, 200);
    case RespType::integer:
      return "integer " + std::to_string(v.integer);
    case RespType::bulk_string:
      return "bulk string of " + std::to_string(v.str.size()) + " bytes";
    case RespType::array:
      return "array of " + std::to_string(v.elements.size()) + " elements";
    case RespType::null_bulk_string:
    case RespType::null_array:
      return to_string(v.type);
  }
  return "RESP value of unknown type " + std::to_string(static_cast<unsigned>(v.type));
}

Result<std::string_view> as_string(const RespValue& v, std::string_view what) {
  if (v.type != RespType::bulk_string && v.type != RespType::simple_string) {
    return shape_error(what, "a string", v);
  }
  return std::string_view(v.str);
}

Result<std::int64_t> as_integer(const RespValue& v, std::string_view what) {
  if (v.type != RespType::integer) return shape_error(what, "an integer", v);
  return v.integer;
}

Result<std::span<const RespValue>> as_array(const RespValue& v, std::string_view what) {
  if (v.type != RespType::array) return shape_error(what, "an array", v);
  return std::span<const RespValue>(v.elements);
}

Result<std::span<const RespValue>> as_array(const RespValue& v, std::size_t size,
                                            std::string_view what) {
  if (v.type != RespType::array || v.elements.size() != size) {
    return shape_error(what, "an array of " + std::to_string(size) + " elements", v);
  }
  return std::span<const RespValue>(v.elements);
}

// --- parsing replies -----------------------------------------------------------------

const char* to_string(ParseStatus s) {
  switch (s) {
    case ParseStatus::complete:
      return "complete";
    case ParseStatus::need_more:
      return "need more bytes";
    case ParseStatus::error:
      return "error";
  }
  return "unknown parse status";
}

namespace {

enum class Got : std::uint8_t { ok, need_more, error };

// The outcome of reading one piece of a reply: ok with `end` (first byte after it), or
// need_more with `need`, or error with `offset` and `what`.
struct Read {
  Got got = Got::ok;
  std::size_t end = 0;
  std::size_t need = 0;
  std::size_t offset = 0;
  std::string what;
};

Read read_need(std::size_t need) {
  Read r;
  r.got = Got::need_more;
  r.need = need;
  return r;
}

Read read_error(std::size_t offset, std::string what) {
  Read r;
  r.got = Got::error;
  r.offset = offset;
  r.what = std::move(what);
  return r;
}

std::size_t saturating_add(std::size_t a, std::size_t b) {
  return b > std::numeric_limits<std::size_t>::max() - a ? std::numeric_limits<std::size_t>::max()
                                                         : a + b;
}

// Reads the number of a `:`, `$` or `*` line, from its first character at `start` to
// its \r\n, deciding on each byte as it comes, so that a prefix of a reply never gets a
// verdict the whole reply would not. `kind` names the number in messages.
Read read_number(const char* b, std::size_t n, std::size_t start, const char* kind,
                 std::int64_t& value) {
  std::size_t i = start;
  const bool negative = i < n && b[i] == '-';
  if (negative) ++i;
  const std::uint64_t max = negative ? kMaxMagnitudeNegative : kMaxMagnitudePositive;
  std::uint64_t magnitude = 0;
  std::size_t digits = 0;
  for (;; ++i) {
    if (i >= n) return read_need(i + 1);
    const char c = b[i];
    if (c >= '0' && c <= '9') {
      if (digits == 1 && magnitude == 0) {
        return read_error(i - 1, std::string(kind) + " has a leading zero");
      }
      const auto d = static_cast<std::uint64_t>(c - '0');
      if (magnitude > (max - d) / 10) {
        return read_error(i, std::string(kind) + " does not fit in a signed 64-bit integer");
      }
      magnitude = magnitude * 10 + d;
      ++digits;
      continue;
    }
    if (c == '\r') {
      if (digits == 0) return read_error(i, std::string(kind) + " has no digits");
      if (i + 1 >= n) return read_need(i + 2);
      if (b[i + 1] != '\n') {
        return read_error(i + 1, "\\r not followed by \\n after the " + std::string(kind) +
                                     " (found " + describe_byte(b[i + 1]) + ")");
      }
      if (negative && magnitude == 0) return read_error(start, std::string(kind) + " is -0");
      value = negative
                  ? (magnitude == kMaxMagnitudeNegative ? std::numeric_limits<std::int64_t>::min()
                                                        : -static_cast<std::int64_t>(magnitude))
                  : static_cast<std::int64_t>(magnitude);
      Read r;
      r.end = i + 2;
      return r;
    }
    if (c == '\n') {
      return read_error(
          i, "bare \\n ending the " + std::string(kind) + " (RESP lines end with \\r\\n)");
    }
    return read_error(i, "non-digit byte " + describe_byte(c) + " in the " + kind);
  }
}

// Reads the text of a `+` or `-` line (from `text`) to its \r\n. The search resumes at
// `scanned_to` (bytes before it were searched by an earlier call and hold no line
// break) and records how far it got there. The \r must come within `max_length` bytes;
// the window searched never reaches past that, so the verdict on a prefix is the one
// the whole line gets.
Read read_line(const char* b, std::size_t n, std::size_t text, std::size_t max_length,
               std::size_t& scanned_to, const char* kind) {
  const std::size_t limit = saturating_add(text, saturating_add(max_length, 1));
  const std::size_t window = std::min(n, limit);
  std::size_t from = std::max(text, scanned_to);
  if (from < window) {
    const auto* cr = static_cast<const char*>(std::memchr(b + from, '\r', window - from));
    const std::size_t stop = cr != nullptr ? static_cast<std::size_t>(cr - b) : window;
    const auto* lf = static_cast<const char*>(std::memchr(b + from, '\n', stop - from));
    if (lf != nullptr) {
      return read_error(
          static_cast<std::size_t>(lf - b),
          "bare \\n inside the " + std::string(kind) + " (RESP lines end with \\r\\n)");
    }
    if (cr != nullptr) {
      scanned_to = stop;
      if (stop + 1 >= n) return read_need(stop + 2);
      if (b[stop + 1] != '\n') {
        return read_error(stop + 1, "\\r not followed by \\n in the " + std::string(kind) +
                                        " (found " + describe_byte(b[stop + 1]) + ")");
      }
      Read r;
      r.end = stop + 2;
      return r;
    }
    scanned_to = window;
  }
  if (window == limit) {
    return read_error(text - 1, std::string(kind) + " has no \\r\\n within " +
                                    std::to_string(max_length) + " bytes, the limit");
  }
  return read_need(n + 1);
}

// Builds the value that starts at `pos` into `v` and returns where it ends. Only called
// on bytes that scanning validated up to `end`, so it checks nothing; it still never
// looks at or past `end`.
std::size_t build(const char* b, std::size_t end, std::size_t pos, RespValue& v) {
  const char type = b[pos];
  const char* const first = b + pos + 1;
  if (type == '+' || type == '-') {
    const auto* cr = static_cast<const char*>(std::memchr(first, '\r', end - pos - 1));
    v.type = type == '+' ? RespType::simple_string : RespType::error;
    v.str.assign(first, static_cast<std::size_t>(cr - first));
    v.integer = 0;
    v.elements.clear();
    return static_cast<std::size_t>(cr - b) + 2;
  }
  std::int64_t number = 0;
  const char* const cr = std::from_chars(first, b + end, number).ptr;
  std::size_t next = static_cast<std::size_t>(cr - b) + 2;
  v.integer = 0;
  if (type == ':') {
    v.type = RespType::integer;
    v.integer = number;
    v.str.clear();
    v.elements.clear();
    return next;
  }
  if (type == '$') {
    v.elements.clear();
    if (number < 0) {
      v.type = RespType::null_bulk_string;
      v.str.clear();
      return next;
    }
    v.type = RespType::bulk_string;
    const auto len = static_cast<std::size_t>(number);
    v.str.assign(b + next, len);
    return next + len + 2;
  }
  v.str.clear();
  if (number < 0) {
    v.type = RespType::null_array;
    v.elements.clear();
    return next;
  }
  v.type = RespType::array;
  v.elements.resize(static_cast<std::size_t>(number));
  for (RespValue& e : v.elements) next = build(b, end, next, e);
  return next;
}

}  // namespace

RespParser::RespParser(RespLimits limits) : limits_(limits) {
  limits_.max_depth = std::min(limits_.max_depth, kMaxRespDepth);
  pending_.reserve(std::min<std::size_t>(limits_.max_depth, 32));
}

void RespParser::restart() {
  pending_.clear();
  scanned_ = 0;
  line_scanned_ = 0;
  need_ = 0;
  seen_ = 0;
}

void RespParser::reset() {
  restart();
  error_.clear();
}

ParseResult RespParser::fail(std::size_t offset, std::string what) {
  error_ = "bad RESP reply at byte offset " + std::to_string(offset) + ": " + what;
  ParseResult r;
  r.status = ParseStatus::error;
  r.error = error_;
  return r;
}

ParseResult RespParser::need_more(std::size_t need) {
  need_ = need;
  ParseResult r;
  r.status = ParseStatus::need_more;
  r.need = need;
  return r;
}

ParseResult RespParser::parse(std::span<const char> input, std::size_t& consumed, RespValue& out) {
  consumed = 0;
  if (!error_.empty()) {
    ParseResult r;
    r.status = ParseStatus::error;
    r.error = error_;
    return r;
  }
  const char* const b = input.data();
  const std::size_t n = input.size();
  if (n < seen_) restart();
  seen_ = n;
  if (n < need_) return need_more(need_);

  // Invariant at the top of the loop: bytes [0, scanned_) are valid, and pending_ says
  // how many elements each open array still expects. State changes only once an element
  // is whole (a leaf read to its end, or an array header), so a need_more leaves it at
  // the start of the element that is cut.
  for (;;) {
    const std::size_t pos = scanned_;
    if (pos >= n) return need_more(pos + 1);
    const char type = b[pos];
    std::size_t end = 0;
    bool opened_array = false;
    switch (type) {
      case '+':
      case '-': {
        Read r = read_line(b, n, pos + 1, limits_.max_line_length, line_scanned_,
                           type == '+' ? "simple string" : "error reply");
        if (r.got == Got::need_more) return need_more(r.need);
        if (r.got == Got::error) return fail(r.offset, std::move(r.what));
        end = r.end;
        break;
      }
      case ':': {
        std::int64_t value = 0;
        Read r = read_number(b, n, pos + 1, "integer", value);
        if (r.got == Got::need_more) return need_more(r.need);
        if (r.got == Got::error) return fail(r.offset, std::move(r.what));
        end = r.end;
        break;
      }
      case '$': {
        std::int64_t len = 0;
        Read r = read_number(b, n, pos + 1, "bulk string length", len);
        if (r.got == Got::need_more) return need_more(r.need);
        if (r.got == Got::error) return fail(r.offset, std::move(r.what));
        if (len < -1) {
          return fail(pos + 1, "negative bulk string length " + std::to_string(len) +
                                   " (only -1, the null bulk string, is allowed)");
        }
        if (len == -1) {
          end = r.end;
          break;
        }
        if (static_cast<std::uint64_t>(len) > limits_.max_bulk_length) {
          return fail(pos + 1, "bulk string length " + std::to_string(len) +
                                   " exceeds the limit of " +
                                   std::to_string(limits_.max_bulk_length) + " bytes");
        }
        // Both fit: len is at most 2^63 - 1 and r.end is within the input. The \r\n
        // after the payload is checked once both bytes are there, not byte by byte: the
        // verdict must depend only on whether `need` bytes arrived, since a call with
        // fewer returns need_more without looking.
        const std::size_t cr = r.end + static_cast<std::size_t>(len);
        if (cr + 2 > n) return need_more(cr + 2);
        if (b[cr] != '\r') {
          return fail(cr, "bulk string of " + std::to_string(len) + " bytes from byte offset " +
                              std::to_string(r.end) + " is not followed by \\r\\n (found " +
                              describe_byte(b[cr]) + ")");
        }
        if (b[cr + 1] != '\n') {
          return fail(cr + 1, "bulk string of " + std::to_string(len) + " bytes from byte offset " +
                                  std::to_string(r.end) +
                                  " is followed by \\r without \\n (found " +
                                  describe_byte(b[cr + 1]) + ")");
        }
        end = cr + 2;
        break;
      }
      case '*': {
        std::int64_t count = 0;
        Read r = read_number(b, n, pos + 1, "array length", count);
        if (r.got == Got::need_more) return need_more(r.need);
        if (r.got == Got::error) return fail(r.offset, std::move(r.what));
        if (count < -1) {
          return fail(pos + 1, "negative array length " + std::to_string(count) +
                                   " (only -1, the null array, is allowed)");
        }
        if (count > 0 && static_cast<std::uint64_t>(count) > limits_.max_array_elements) {
          return fail(pos + 1, "array length " + std::to_string(count) + " exceeds the limit of " +
                                   std::to_string(limits_.max_array_elements) + " elements");
        }
        if (count > 0) {
          if (pending_.size() >= limits_.max_depth) {
            return fail(pos, "arrays nested more than " + std::to_string(limits_.max_depth) +
                                 " deep, the limit");
          }
          pending_.push_back(static_cast<std::size_t>(count));
          opened_array = true;
        }
        end = r.end;
        break;
      }
      default:
        return fail(pos, "unknown type byte " + describe_byte(type) +
                             " (a reply starts with one of + - : $ *)");
    }

    scanned_ = end;
    line_scanned_ = 0;
    need_ = 0;
    if (opened_array) continue;
    // A whole element: it counts against its array, which may complete its own array.
    while (!pending_.empty() && --pending_.back() == 0) pending_.pop_back();
    if (!pending_.empty()) continue;

    build(b, end, 0, out);
    consumed = end;
    restart();
    ParseResult r;
    r.status = ParseStatus::complete;
    return r;
  }
}

}  // namespace ringfeed::io
