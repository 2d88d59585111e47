// libFuzzer target for the RESP2 reply parser (io/resp.hpp). The first byte of an input
// picks a cut point; the rest is a stream of replies, read twice the way the Redis
// source reads a socket: all bytes at once, and in two pieces cut at that point. The two
// readings must agree on every reply, on the final status and on the error message;
// every reply that completes must encode back to exactly the bytes it consumed (the
// grammar is canonical), and the checked accessors must accept exactly the types they
// name. Done with the default limits and with tiny ones, so the limit checks are
// reached. A disagreement prints both readings and aborts.
//
// Reads past the input are caught by ASan: libFuzzer hands over a heap block of exactly
// the input's size, every call of the whole reading ends at its end, and the first
// piece of the cut reading is copied into a block of its own exact size.
//
// The seeds in fuzz/corpus/resp have the same layout: a cut byte, then replies.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/resp.hpp"

namespace {

namespace io = ringfeed::io;
using io::ParseStatus;
using io::RespType;
using io::RespValue;

struct Reading {
  std::vector<RespValue> values;
  ParseStatus last = ParseStatus::need_more;
  std::string error;
  std::size_t consumed = 0;
};

[[noreturn]] void fail(const char* what, const Reading& whole, const Reading& cut, std::size_t at) {
  std::fprintf(stderr, "resp_fuzz: %s (cut at %zu)\n", what, at);
  const Reading* readings[] = {&whole, &cut};
  const char* names[] = {"whole", "cut"};
  for (int i = 0; i < 2; ++i) {
    const Reading& r = *readings[i];
    std::fprintf(stderr, "  %s: %zu replies, %zu bytes consumed, last %s %s\n", names[i],
                 r.values.size(), r.consumed, io::to_string(r.last), r.error.c_str());
    for (const RespValue& v : r.values) std::fprintf(stderr, "    %s\n", io::describe(v).c_str());
  }
  std::abort();
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "resp_fuzz: %s\n", what.c_str());
  std::abort();
}

// The accessors say ok exactly for the types they name.
void check_accessors(const RespValue& v) {
  const bool is_string = v.type == RespType::bulk_string || v.type == RespType::simple_string;
  if (io::as_string(v, "v").ok() != is_string) fail("as_string disagrees with the type");
  if (io::as_integer(v, "v").ok() != (v.type == RespType::integer)) {
    fail("as_integer disagrees with the type");
  }
  const bool is_array = v.type == RespType::array;
  if (io::as_array(v, "v").ok() != is_array) fail("as_array disagrees with the type");
  if (io::as_array(v, v.elements.size(), "v").ok() != is_array) {
    fail("as_array with the size disagrees with the type");
  }
  if (io::describe(v).empty()) fail("describe gave nothing");
  for (const RespValue& e : v.elements) check_accessors(e);
}

// Reads the stream whose bytes arrive as `pieces`: piece i holds the stream's bytes
// [0, piece.size()), each piece longer than the one before.
Reading read(const std::vector<std::span<const char>>& pieces, const io::RespLimits& limits) {
  io::RespParser parser(limits);
  Reading r;
  RespValue value;  // reused, as a reader would
  std::size_t piece = 0;
  for (;;) {
    const std::span<const char> have = pieces[piece];
    std::size_t consumed = 0;
    const io::ParseResult result = parser.parse(have.subspan(r.consumed), consumed, value);
    r.last = result.status;
    if (result.status == ParseStatus::error) {
      if (consumed != 0) fail("error with bytes consumed");
      if (result.error.rfind("bad RESP reply at byte offset ", 0) != 0) {
        fail("error message without its offset: " + result.error);
      }
      r.error = result.error;
      return r;
    }
    if (result.status == ParseStatus::need_more) {
      if (consumed != 0) fail("need_more with bytes consumed");
      if (result.need <= have.size() - r.consumed) fail("need_more asks for no more bytes");
      if (++piece == pieces.size()) return r;
      continue;
    }
    if (consumed == 0 || consumed > have.size() - r.consumed) fail("complete with a bad size");
    std::string encoded;
    if (!io::append_value(encoded, value).ok() ||
        encoded != std::string_view(have.data() + r.consumed, consumed)) {
      fail("a complete reply does not encode back to its bytes");
    }
    check_accessors(value);
    r.values.push_back(value);
    r.consumed += consumed;
  }
}

void compare(std::span<const char> stream, std::size_t at, const io::RespLimits& limits) {
  const std::unique_ptr<char[]> head(new char[at == 0 ? 1 : at]);
  if (at != 0) std::memcpy(head.get(), stream.data(), at);
  const Reading whole = read({stream}, limits);
  const Reading cut = read({{head.get(), at}, stream}, limits);
  if (whole.values != cut.values) fail("the replies differ", whole, cut, at);
  if (whole.last != cut.last || whole.error != cut.error || whole.consumed != cut.consumed) {
    fail("the endings differ", whole, cut, at);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const char> stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Spread the first byte over the whole stream, ends included.
  const std::size_t at = static_cast<std::size_t>(data[0]) * (stream.size() + 1) / 256;
  compare(stream, at, io::RespLimits{});
  compare(
      stream, at,
      io::RespLimits{
          .max_bulk_length = 16, .max_array_elements = 4, .max_depth = 3, .max_line_length = 16});
  return 0;
}
