// RESP2 commands and replies: pinned command bytes and round trips through the parser,
// every reply type (and its re-encoding to the same bytes), a nested XREADGROUP reply
// read with the checked accessors, every split point of every reply, pipelined replies,
// the scan resuming where it stopped, limits, and bad input: each malformed reply gets
// an error naming the fault and its byte offset, each truncated one need_more. Inputs
// sit in exact-size heap buffers, so the ASan build catches any read past the input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/resp.hpp"

namespace io = ringfeed::io;
using io::ParseStatus;
using io::RespLimits;
using io::RespParser;
using io::RespType;
using io::RespValue;

namespace {

using namespace std::string_literals;

// A copy of `s` in a heap block of exactly its size.
class ExactChars {
 public:
  explicit ExactChars(std::string_view s)
      : size_(s.size()), p_(new char[s.empty() ? 1 : s.size()]) {
    if (!s.empty()) std::memcpy(p_.get(), s.data(), s.size());
  }
  std::span<const char> span() const { return {p_.get(), size_}; }

 private:
  std::size_t size_;
  std::unique_ptr<char[]> p_;
};

struct Parsed {
  io::ParseResult result;
  std::size_t consumed = 0;
  RespValue value;
};

Parsed parse_with(RespParser& p, std::string_view bytes) {
  const ExactChars copy(bytes);
  Parsed r;
  r.consumed = 12345;  // parse must set it on every outcome
  r.result = p.parse(copy.span(), r.consumed, r.value);
  return r;
}

Parsed parse_one(std::string_view bytes, RespLimits limits = {}) {
  RespParser p(limits);
  return parse_with(p, bytes);
}

// What a reader gets from a stream of replies whose bytes arrive in pieces ending at
// `chunk_ends` (increasing, the last one bytes.size()): it parses while replies are
// complete, and on need_more waits for the next piece. Each call gets an exact-size copy
// of the unconsumed bytes received so far.
struct StreamOutcome {
  std::vector<RespValue> values;
  ParseStatus last = ParseStatus::need_more;
  std::string error;
  std::size_t consumed = 0;
};

StreamOutcome parse_stream(std::string_view bytes, const std::vector<std::size_t>& chunk_ends,
                           RespLimits limits = {}) {
  RespParser p(limits);
  StreamOutcome o;
  RespValue v;
  std::size_t received = 0;
  std::size_t chunk = 0;
  for (;;) {
    if (received == o.consumed || o.last == ParseStatus::need_more) {
      if (chunk == chunk_ends.size()) break;
      received = chunk_ends[chunk++];
    }
    const ExactChars copy(bytes.substr(o.consumed, received - o.consumed));
    std::size_t consumed = 0;
    const io::ParseResult r = p.parse(copy.span(), consumed, v);
    o.last = r.status;
    if (r.status == ParseStatus::error) {
      o.error = r.error;
      break;
    }
    if (r.status == ParseStatus::complete) {
      o.values.push_back(v);
      o.consumed += consumed;
    }
  }
  return o;
}

std::string encode(const RespValue& v) {
  std::string s;
  EXPECT_TRUE(io::append_value(s, v).ok());
  return s;
}

const std::string kXreadgroupReply =
    "*1\r\n*2\r\n$7\r\nstream0\r\n*1\r\n*2\r\n$15\r\n1700000000000-0\r\n"
    "*4\r\n$3\r\nkey\r\n$2\r\nk1\r\n$5\r\nvalue\r\n$2\r\nv1\r\n";

const RespValue kXreadgroupValue = RespValue::array({RespValue::array(
    {RespValue::bulk("stream0"),
     RespValue::array({RespValue::array(
         {RespValue::bulk("1700000000000-0"),
          RespValue::array({RespValue::bulk("key"), RespValue::bulk("k1"), RespValue::bulk("value"),
                            RespValue::bulk("v1")})})})})});

// An XREADGROUP reply for one stream with `entries` entries of two fields each.
RespValue xreadgroup_reply(std::size_t entries, std::size_t value_size) {
  std::vector<RespValue> list;
  for (std::size_t i = 0; i < entries; ++i) {
    list.push_back(RespValue::array(
        {RespValue::bulk("1700000000000-" + std::to_string(i)),
         RespValue::array(
             {RespValue::bulk("key"), RespValue::bulk("k" + std::to_string(i)),
              RespValue::bulk("value"),
              RespValue::bulk(std::string(value_size, static_cast<char>('a' + i % 26)))})}));
  }
  return RespValue::array(
      {RespValue::array({RespValue::bulk("stream0"), RespValue::array(std::move(list))})});
}

// A random reply tree (arrays at most `depth` deep), binary-safe strings included.
RespValue random_value(std::mt19937_64& rng, int depth) {
  std::uniform_int_distribution<int> pick(0, depth > 0 ? 6 : 5);
  std::uniform_int_distribution<int> len(0, 40);
  auto text = [&](bool binary) {
    std::string s(static_cast<std::size_t>(len(rng)), 'x');
    for (char& c : s) {
      c = binary ? static_cast<char>(rng() & 0xFF) : static_cast<char>('a' + rng() % 26);
    }
    return s;
  };
  switch (pick(rng)) {
    case 0:
      return RespValue::simple(text(false));
    case 1:
      return RespValue::error_reply(text(false));
    case 2:
      return RespValue::from_integer(static_cast<std::int64_t>(rng()) >> (rng() % 64));
    case 3:
      return RespValue::bulk(text(true));
    case 4:
      return RespValue::null_bulk();
    case 5:
      return RespValue::null_array();
    default: {
      std::vector<RespValue> e(static_cast<std::size_t>(rng() % 5));
      for (RespValue& x : e) x = random_value(rng, depth - 1);
      return RespValue::array(std::move(e));
    }
  }
}

// Every prefix of `bytes` (one whole reply) is need_more with nothing consumed, and the
// whole then completes to `expected`: through a fresh parser per split point, fed the
// prefix and then everything, and through one parser fed a byte more each call.
void expect_every_split(const std::string& bytes, const RespValue& expected) {
  for (std::size_t k = 0; k < bytes.size(); ++k) {
    RespParser p;
    const Parsed head = parse_with(p, std::string_view(bytes).substr(0, k));
    ASSERT_EQ(head.result.status, ParseStatus::need_more) << "prefix of " << k << " bytes";
    ASSERT_EQ(head.consumed, 0u);
    ASSERT_GT(head.result.need, k) << "need_more must ask for more than it was given";
    ASSERT_LE(head.result.need, bytes.size()) << "and never for more than the reply";
    const Parsed whole = parse_with(p, bytes);
    ASSERT_EQ(whole.result.status, ParseStatus::complete) << "after a prefix of " << k;
    ASSERT_EQ(whole.consumed, bytes.size());
    ASSERT_EQ(whole.value, expected) << "after a prefix of " << k;
  }
  RespParser p;
  for (std::size_t k = 1; k <= bytes.size(); ++k) {
    const Parsed r = parse_with(p, std::string_view(bytes).substr(0, k));
    if (k < bytes.size()) {
      ASSERT_EQ(r.result.status, ParseStatus::need_more) << "byte by byte, at " << k;
    } else {
      ASSERT_EQ(r.result.status, ParseStatus::complete);
      ASSERT_EQ(r.consumed, bytes.size());
      ASSERT_EQ(r.value, expected);
    }
  }
}

}  // namespace

// --- commands ------------------------------------------------------------------------

TEST(RespCommand, EncodesAnArrayOfBulkStrings) {
  std::string out;
  io::append_command(out, {"SET", "k", "hello"});
  EXPECT_EQ(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n");
}

TEST(RespCommand, XreadgroupCommandIsPinned) {
  const std::vector<std::string_view> args = {"XREADGROUP", "GROUP", "ringfeed", "host-1",
                                              "COUNT",      "1000",  "BLOCK",    "100",
                                              "STREAMS",    "s0",    ">"};
  std::string out;
  io::append_command(out, args);
  EXPECT_EQ(out,
            "*11\r\n$10\r\nXREADGROUP\r\n$5\r\nGROUP\r\n$8\r\nringfeed\r\n$6\r\nhost-1\r\n"
            "$5\r\nCOUNT\r\n$4\r\n1000\r\n$5\r\nBLOCK\r\n$3\r\n100\r\n$7\r\nSTREAMS\r\n"
            "$2\r\ns0\r\n$1\r\n>\r\n");
  EXPECT_EQ(io::command_size(args), out.size());
}

TEST(RespCommand, EmptyAndBinaryArgumentsAreLengthPrefixed) {
  std::string out;
  const std::string binary = "a\r\nb\0c"s;
  io::append_command(out, {"", binary});
  EXPECT_EQ(out, "*2\r\n$0\r\n\r\n$6\r\na\r\nb\0c\r\n"s);

  std::string none;
  io::append_command(none, std::span<const std::string_view>());
  EXPECT_EQ(none, "*0\r\n");
}

TEST(RespCommand, AppendsSoCommandsPipelineInOneBuffer) {
  std::string out = "kept";
  io::append_command(out, {"PING"});
  io::append_command(out, {"XACK", "s0", "g", "1-0"});
  EXPECT_EQ(out,
            "kept*1\r\n$4\r\nPING\r\n*4\r\n$4\r\nXACK\r\n$2\r\ns0\r\n$1\r\ng\r\n$3\r\n1-0\r\n");
}

// Sizes around the digit boundaries of the length headers, and random binary arguments:
// command_size is exact, and the parser reads back an array of the same bulk strings.
TEST(RespCommand, RoundTripsThroughTheParser) {
  std::mt19937_64 rng(7);
  const std::size_t sizes[] = {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 10000};
  for (int round = 0; round < 200; ++round) {
    std::vector<std::string> owned(1 + rng() % 12);
    for (std::string& a : owned) {
      a.resize(round < 11 ? sizes[round] : rng() % 300);
      for (char& c : a) c = static_cast<char>(rng() & 0xFF);
    }
    const std::vector<std::string_view> args(owned.begin(), owned.end());
    std::string out;
    io::append_command(out, args);
    ASSERT_EQ(io::command_size(args), out.size());

    const Parsed r = parse_one(out);
    ASSERT_EQ(r.result.status, ParseStatus::complete) << r.result.error;
    ASSERT_EQ(r.consumed, out.size());
    auto elements = io::as_array(r.value, args.size(), "command");
    ASSERT_TRUE(elements.ok()) << elements.error().message;
    for (std::size_t i = 0; i < args.size(); ++i) {
      ASSERT_EQ((*elements)[i].type, RespType::bulk_string);
      ASSERT_EQ((*elements)[i].str, owned[i]) << "argument " << i;
    }
  }
}

// --- reply types ---------------------------------------------------------------------

struct ValidCase {
  std::string bytes;
  RespValue value;
};

std::vector<ValidCase> valid_cases() {
  return {
      {"+OK\r\n", RespValue::simple("OK")},
      {"+\r\n", RespValue::simple("")},
      {"-ERR unknown command 'FOO'\r\n", RespValue::error_reply("ERR unknown command 'FOO'")},
      {":0\r\n", RespValue::from_integer(0)},
      {":-1\r\n", RespValue::from_integer(-1)},
      {":1000\r\n", RespValue::from_integer(1000)},
      {":9223372036854775807\r\n", RespValue::from_integer(INT64_MAX)},
      {":-9223372036854775808\r\n", RespValue::from_integer(INT64_MIN)},
      {"$0\r\n\r\n", RespValue::bulk("")},
      {"$5\r\nhello\r\n", RespValue::bulk("hello")},
      {"$6\r\na\r\n\0\r\n\r\n"s, RespValue::bulk("a\r\n\0\r\n"s)},
      {"$-1\r\n", RespValue::null_bulk()},
      {"*0\r\n", RespValue::array({})},
      {"*-1\r\n", RespValue::null_array()},
      {"*3\r\n:1\r\n$-1\r\n+x\r\n",
       RespValue::array(
           {RespValue::from_integer(1), RespValue::null_bulk(), RespValue::simple("x")})},
      {"*2\r\n*0\r\n*-1\r\n", RespValue::array({RespValue::array({}), RespValue::null_array()})},
      {kXreadgroupReply, kXreadgroupValue},
  };
}

TEST(RespReply, EveryTypeParsesAndEncodesBackToItsBytes) {
  for (const ValidCase& c : valid_cases()) {
    const Parsed r = parse_one(c.bytes);
    ASSERT_EQ(r.result.status, ParseStatus::complete) << c.bytes << ": " << r.result.error;
    EXPECT_EQ(r.consumed, c.bytes.size()) << c.bytes;
    EXPECT_EQ(r.value, c.value) << c.bytes;
    EXPECT_EQ(encode(c.value), c.bytes);
  }
}

TEST(RespReply, NestedXreadgroupReplyReadsThroughTheCheckedAccessors) {
  const Parsed r = parse_one(kXreadgroupReply);
  ASSERT_EQ(r.result.status, ParseStatus::complete) << r.result.error;
  ASSERT_EQ(r.consumed, kXreadgroupReply.size());

  auto streams = io::as_array(r.value, "XREADGROUP reply");
  ASSERT_TRUE(streams.ok()) << streams.error().message;
  ASSERT_EQ(streams->size(), 1u);
  auto stream = io::as_array((*streams)[0], 2, "XREADGROUP reply: stream");
  ASSERT_TRUE(stream.ok()) << stream.error().message;
  auto name = io::as_string((*stream)[0], "stream name");
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(*name, "stream0");
  auto entries = io::as_array((*stream)[1], "entries");
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  auto entry = io::as_array((*entries)[0], 2, "entry");
  ASSERT_TRUE(entry.ok());
  auto id = io::as_string((*entry)[0], "entry id");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "1700000000000-0");
  auto fields = io::as_array((*entry)[1], 4, "entry fields");
  ASSERT_TRUE(fields.ok()) << fields.error().message;
  const char* want[] = {"key", "k1", "value", "v1"};
  for (std::size_t i = 0; i < 4; ++i) {
    auto f = io::as_string((*fields)[i], "field");
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(*f, want[i]);
  }
}

// --- split points, pipelining, resuming ------------------------------------------------

TEST(RespParser, EveryReplyCompletesFromEverySplitPoint) {
  for (const ValidCase& c : valid_cases()) {
    SCOPED_TRACE(c.bytes);
    const Parsed whole = parse_one(c.bytes);
    ASSERT_EQ(whole.result.status, ParseStatus::complete);
    expect_every_split(c.bytes, whole.value);
  }
}

TEST(RespParser, PipelinedRepliesComeOutInOrder) {
  const std::vector<RespValue> replies = {RespValue::simple("OK"),
                                          RespValue::from_integer(5),
                                          RespValue::bulk("abc"),
                                          RespValue::array({RespValue::simple("x")}),
                                          RespValue::null_array(),
                                          xreadgroup_reply(3, 10),
                                          RespValue::error_reply("NOGROUP No such key")};
  std::string bytes;
  for (const RespValue& v : replies) bytes += encode(v);

  const StreamOutcome all = parse_stream(bytes, {bytes.size()});
  EXPECT_EQ(all.values, replies);
  EXPECT_EQ(all.consumed, bytes.size());
  EXPECT_EQ(all.last, ParseStatus::complete);

  // The bytes arrive in two pieces, cut anywhere: the same replies.
  for (std::size_t k = 0; k <= bytes.size(); ++k) {
    const StreamOutcome split = parse_stream(bytes, {k, bytes.size()});
    ASSERT_EQ(split.values, replies) << "cut at " << k;
    ASSERT_EQ(split.consumed, bytes.size());
  }

  // A partial reply behind whole ones: those come out, then need_more.
  const std::string tail = bytes + "*2\r\n:1\r\n";
  RespParser p;
  RespValue v;
  std::size_t at = 0;
  for (const RespValue& want : replies) {
    std::size_t consumed = 0;
    const ExactChars copy(std::string_view(tail).substr(at));
    ASSERT_EQ(p.parse(copy.span(), consumed, v).status, ParseStatus::complete);
    EXPECT_EQ(v, want);
    at += consumed;
  }
  std::size_t consumed = 99;
  const ExactChars rest(std::string_view(tail).substr(at));
  EXPECT_EQ(p.parse(rest.span(), consumed, v).status, ParseStatus::need_more);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(v, replies.back()) << "need_more leaves the value as it was";
}

// Random reply trees, many per stream, arriving in random pieces: what comes out is what
// went in, and every reply re-encodes to its bytes.
TEST(RespParser, RandomRepliesInRandomPieces) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; ++round) {
    std::vector<RespValue> replies(1 + rng() % 8);
    std::string bytes;
    for (RespValue& v : replies) {
      v = random_value(rng, 4);
      bytes += encode(v);
    }
    std::vector<std::size_t> ends;
    for (std::size_t at = 0; at < bytes.size();) {
      at = std::min(bytes.size(), at + 1 + rng() % 40);
      ends.push_back(at);
    }
    const StreamOutcome o = parse_stream(bytes, ends);
    ASSERT_EQ(o.values, replies) << "round " << round;
    ASSERT_EQ(o.consumed, bytes.size());
  }
}

// Whatever the bytes, valid, malformed or cut short: read at once and read in two
// pieces cut anywhere, a stream gives the same replies, the same ending and the same
// error. The first two are what the fuzzer found while the \r\n after a payload was
// checked byte by byte (a whole input ending one byte short of it got an error, the same
// input after a piece that had set `need` got need_more).
TEST(RespParser, CutAnywhereAgreesWithAtOnce) {
  const std::string streams[] = {
      "$4\r\nabc\r\n",
      "$7\r\na\r\n\0\r\n\r\n"s,
      kXreadgroupReply + "+OK\r\n:1\r\n$3\r\nab",
      "+OK\r\n*2\r\n:1\r\n:x\r\n",
      "*3\r\n$-1\r\n*-1\r\n-ERR\r\n+O\nK\r\n",
      "$5\r\nhelloXY",
      "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n",
  };
  const RespLimits small{.max_depth = 4};
  for (const std::string& bytes : streams) {
    for (const RespLimits& limits : {RespLimits{}, small}) {
      const StreamOutcome whole = parse_stream(bytes, {bytes.size()}, limits);
      for (std::size_t k = 0; k <= bytes.size(); ++k) {
        const StreamOutcome cut = parse_stream(bytes, {k, bytes.size()}, limits);
        ASSERT_EQ(cut.values, whole.values) << bytes << " cut at " << k;
        ASSERT_EQ(cut.last, whole.last) << bytes << " cut at " << k;
        ASSERT_EQ(cut.error, whole.error) << bytes << " cut at " << k;
        ASSERT_EQ(cut.consumed, whole.consumed) << bytes << " cut at " << k;
      }
    }
  }
}

// A large reply arriving in small pieces: scanning resumes where it stopped (scanned()
// only grows, and stands at the start of the element that is cut), and a piece that
// does not reach `need` is answered without looking at the bytes.
TEST(RespParser, LargeReplyInSmallPiecesResumesWhereItStopped) {
  const RespValue reply = xreadgroup_reply(1000, 100);
  const std::string bytes = encode(reply);
  RespParser p;
  RespValue v;
  std::size_t last_scanned = 0;
  std::size_t calls = 0;
  for (std::size_t have = 0; have < bytes.size();) {
    have = std::min(bytes.size(), have + 257);
    const ExactChars copy(std::string_view(bytes).substr(0, have));
    std::size_t consumed = 0;
    const io::ParseResult r = p.parse(copy.span(), consumed, v);
    ++calls;
    if (have < bytes.size()) {
      ASSERT_EQ(r.status, ParseStatus::need_more) << "at " << have;
      ASSERT_GE(p.scanned(), last_scanned);
      ASSERT_LE(p.scanned(), have);
      last_scanned = p.scanned();
    } else {
      ASSERT_EQ(r.status, ParseStatus::complete) << r.error;
      ASSERT_EQ(consumed, bytes.size());
      EXPECT_EQ(p.scanned(), 0u) << "ready for the next reply";
    }
  }
  EXPECT_EQ(v, reply);
  EXPECT_GT(calls, 500u);
}

TEST(RespParser, ScannedStopsAtTheStartOfTheCutElement) {
  const std::size_t cut = kXreadgroupReply.find("$5\r\nvalue");
  ASSERT_NE(cut, std::string::npos);
  RespParser p;
  const Parsed r = parse_with(p, std::string_view(kXreadgroupReply).substr(0, cut + 6));
  ASSERT_EQ(r.result.status, ParseStatus::need_more);
  EXPECT_EQ(p.scanned(), cut) << "everything before the bulk string \"value\" was validated";
  EXPECT_EQ(r.result.need, cut + 4 + 5 + 2) << "the whole bulk string, once its length is read";
}

TEST(RespParser, NeedNamesTheWholeBulkStringAndShortInputReturnsAtOnce) {
  RespParser p;
  const Parsed head = parse_with(p, "$10\r\n0123");
  ASSERT_EQ(head.result.status, ParseStatus::need_more);
  EXPECT_EQ(head.result.need, 5u + 10u + 2u);
  const Parsed more = parse_with(p, "$10\r\n012345678");
  ASSERT_EQ(more.result.status, ParseStatus::need_more);
  EXPECT_EQ(more.result.need, 17u);
  const Parsed all = parse_with(p, "$10\r\n0123456789\r\n");
  ASSERT_EQ(all.result.status, ParseStatus::complete);
  EXPECT_EQ(all.value, RespValue::bulk("0123456789"));
}

TEST(RespParser, OutIsOverwrittenWholeWhenReused) {
  RespParser p;
  RespValue v;
  const std::pair<std::string, RespValue> seq[] = {
      {"*3\r\n$3\r\nabc\r\n:1\r\n*1\r\n+x\r\n",
       RespValue::array({RespValue::bulk("abc"), RespValue::from_integer(1),
                         RespValue::array({RespValue::simple("x")})})},
      {"*2\r\n:7\r\n$-1\r\n",
       RespValue::array({RespValue::from_integer(7), RespValue::null_bulk()})},
      {":7\r\n", RespValue::from_integer(7)},
      {"$2\r\nhi\r\n", RespValue::bulk("hi")},
      {"-ERR x\r\n", RespValue::error_reply("ERR x")},
      {"*-1\r\n", RespValue::null_array()},
      {"*1\r\n*1\r\n$1\r\nz\r\n", RespValue::array({RespValue::array({RespValue::bulk("z")})})},
  };
  for (const auto& [bytes, want] : seq) {
    const ExactChars copy(bytes);
    std::size_t consumed = 0;
    ASSERT_EQ(p.parse(copy.span(), consumed, v).status, ParseStatus::complete) << bytes;
    EXPECT_EQ(v, want) << "no field of the previous reply is left over: " << bytes;
  }
}

TEST(RespParser, ShorterInputStartsOver) {
  RespParser p;
  ASSERT_EQ(parse_with(p, "*2\r\n:1\r\n").result.status, ParseStatus::need_more);
  EXPECT_EQ(p.scanned(), 8u);
  const Parsed r = parse_with(p, "+OK\r\n");
  ASSERT_EQ(r.result.status, ParseStatus::complete) << r.result.error;
  EXPECT_EQ(r.value, RespValue::simple("OK"));
}

TEST(RespParser, DepthUpToTheLimitIsFine) {
  std::string bytes;
  for (int i = 0; i < 16; ++i) bytes += "*1\r\n";
  bytes += ":1\r\n";
  const Parsed r = parse_one(bytes);
  ASSERT_EQ(r.result.status, ParseStatus::complete) << r.result.error;
  const RespValue* v = &r.value;
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(v->type, RespType::array);
    v = &v->elements.at(0);
  }
  EXPECT_EQ(*v, RespValue::from_integer(1));
}

// --- bad input -----------------------------------------------------------------------

struct BadCase {
  std::string bytes;
  std::size_t offset;    // of the fault
  std::string contains;  // the words naming it
};

TEST(RespParser, MalformedRepliesNameTheFaultAndItsOffset) {
  const BadCase cases[] = {
      {"?OK\r\n", 0, "unknown type byte '?' (0x3f) (a reply starts with one of + - : $ *)"},
      {"\0\r\n"s, 0, "unknown type byte 0x00"},
      {"*2\r\n+a\r\n!\r\n", 8, "unknown type byte '!'"},
      {":12a\r\n", 3, "non-digit byte 'a' (0x61) in the integer"},
      {":+5\r\n", 1, "non-digit byte '+' (0x2b) in the integer"},
      {":--1\r\n", 2, "non-digit byte '-'"},
      {":\r\n", 1, "integer has no digits"},
      {":-\r\n", 2, "integer has no digits"},
      {":01\r\n", 1, "integer has a leading zero"},
      {":-0\r\n", 1, "integer is -0"},
      {":9223372036854775808\r\n", 19, "integer does not fit in a signed 64-bit integer"},
      {":-9223372036854775809\r\n", 20, "integer does not fit in a signed 64-bit integer"},
      {":5\n", 2, "bare \\n ending the integer (RESP lines end with \\r\\n)"},
      {":5\rx", 3, "\\r not followed by \\n after the integer (found 'x' (0x78))"},
      {"$x\r\n", 1, "non-digit byte 'x' (0x78) in the bulk string length"},
      {"$2\r\nabc\r\n", 6,
       "bulk string of 2 bytes from byte offset 4 is not followed by \\r\\n (found 'c' (0x63))"},
      {"$2\r\nab\n\r", 6, "is not followed by \\r\\n (found 0x0a)"},
      {"$2\r\nab\rx", 7, "is followed by \\r without \\n (found 'x' (0x78))"},
      {"$-2\r\n", 1, "negative bulk string length -2 (only -1, the null bulk string, is allowed)"},
      {"$-0\r\n", 1, "bulk string length is -0"},
      {"$007\r\n", 1, "bulk string length has a leading zero"},
      {"$99999999999999999999\r\n", 19, "bulk string length does not fit in a signed 64-bit"},
      {"$536870913\r\n", 1, "bulk string length 536870913 exceeds the limit of 536870912 bytes"},
      {"*x\r\n", 1, "non-digit byte 'x' (0x78) in the array length"},
      {"*-3\r\n", 1, "negative array length -3 (only -1, the null array, is allowed)"},
      {"*1048577\r\n", 1, "array length 1048577 exceeds the limit of 1048576 elements"},
      {"*1\r\n*1\r\n:1\n", 10, "bare \\n ending the integer"},
      {"+OK\nmore", 3, "bare \\n inside the simple string (RESP lines end with \\r\\n)"},
      {"+OK\rX", 4, "\\r not followed by \\n in the simple string (found 'X' (0x58))"},
      {"-ERR\r\r\n", 5, "\\r not followed by \\n in the error reply (found 0x0d)"},
      {std::string(17 * 4, '*'), 1, "non-digit byte '*'"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.bytes);
    const Parsed r = parse_one(c.bytes);
    ASSERT_EQ(r.result.status, ParseStatus::error);
    EXPECT_EQ(r.consumed, 0u);
    const std::string prefix = "bad RESP reply at byte offset " + std::to_string(c.offset) + ": ";
    EXPECT_EQ(r.result.error.rfind(prefix, 0), 0u) << r.result.error;
    EXPECT_NE(r.result.error.find(c.contains), std::string::npos) << r.result.error;

    // The verdict does not depend on how the bytes arrive: fed a byte at a time, the
    // reply is need_more until the faulty byte, then the same error.
    RespParser p;
    for (std::size_t k = 1; k <= c.bytes.size(); ++k) {
      const Parsed step = parse_with(p, std::string_view(c.bytes).substr(0, k));
      if (step.result.status == ParseStatus::error) {
        EXPECT_EQ(step.result.error, r.result.error);
        EXPECT_LE(c.offset, k - 1) << "an error is only said of bytes that arrived";
        break;
      }
      ASSERT_EQ(step.result.status, ParseStatus::need_more) << "at " << k;
      ASSERT_LT(k, c.bytes.size()) << "the whole input must end in the error";
    }
  }
}

TEST(RespParser, ArraysNestedPastTheLimitAreRefused) {
  std::string bytes;
  for (int i = 0; i < 17; ++i) bytes += "*1\r\n";
  bytes += ":1\r\n";
  const Parsed r = parse_one(bytes);
  ASSERT_EQ(r.result.status, ParseStatus::error);
  EXPECT_EQ(r.result.error,
            "bad RESP reply at byte offset 64: arrays nested more than 16 deep, "
            "the limit");
}

TEST(RespParser, ConfiguredLimitsApplyBeforeThePayloadArrives) {
  const RespLimits small{
      .max_bulk_length = 10, .max_array_elements = 3, .max_depth = 2, .max_line_length = 8};
  struct Case {
    std::string bytes;
    ParseStatus status;
    std::string error;
  };
  const Case cases[] = {
      {"$10\r\n0123456789\r\n", ParseStatus::complete, ""},
      {"$11\r\n", ParseStatus::error,
       "bad RESP reply at byte offset 1: bulk string length 11 exceeds the limit of 10 bytes"},
      {"*3\r\n:1\r\n:2\r\n:3\r\n", ParseStatus::complete, ""},
      {"*4\r\n", ParseStatus::error,
       "bad RESP reply at byte offset 1: array length 4 exceeds the limit of 3 elements"},
      {"*1\r\n*1\r\n+x\r\n", ParseStatus::complete, ""},
      {"*1\r\n*1\r\n*1\r\n", ParseStatus::error,
       "bad RESP reply at byte offset 8: arrays nested more than 2 deep, the limit"},
      {"+12345678\r\n", ParseStatus::complete, ""},
      {"-12345678\r", ParseStatus::need_more, ""},
      {"+123456789", ParseStatus::error,
       "bad RESP reply at byte offset 0: simple string has no \\r\\n within 8 bytes, the limit"},
      {"*1\r\n-123456789\r\n", ParseStatus::error,
       "bad RESP reply at byte offset 4: error reply has no \\r\\n within 8 bytes, the limit"},
  };
  for (const Case& c : cases) {
    const Parsed r = parse_one(c.bytes, small);
    EXPECT_EQ(r.result.status, c.status) << c.bytes << ": " << r.result.error;
    EXPECT_EQ(r.result.error, c.error) << c.bytes;
  }
}

TEST(RespParser, TruncatedRepliesNeedMore) {
  const std::vector<std::string> cases = {
      "", "+", "+OK", "+OK\r", "-ERR", ":", ":-", ":12", ":12\r", "$", "$5", "$5\r\n", "$5\r\nhel",
      "$5\r\nhello", "$5\r\nhello\r", "$-", "$-1\r", "*", "*2\r\n", "*2\r\n:1\r\n",
      "*2\r\n*1\r\n$1\r\n", "*-1",
      // The \r\n after a payload is checked once both bytes are there, so that a
      // prefix gets the verdict of the reply cut where its `need` said.
      "$2\r\nabX", "$2\r\nab\n"};
  for (const std::string& c : cases) {
    const Parsed r = parse_one(c);
    EXPECT_EQ(r.result.status, ParseStatus::need_more) << c << ": " << r.result.error;
    EXPECT_EQ(r.consumed, 0u) << c;
    EXPECT_GT(r.result.need, c.size()) << c;
  }
}

TEST(RespParser, ErrorsAreFinalUntilReset) {
  RespParser p;
  const Parsed bad = parse_with(p, "!\r\n");
  ASSERT_EQ(bad.result.status, ParseStatus::error);
  const Parsed again = parse_with(p, "+OK\r\n");
  EXPECT_EQ(again.result.status, ParseStatus::error) << "the stream lost its framing";
  EXPECT_EQ(again.result.error, bad.result.error);
  EXPECT_EQ(again.consumed, 0u);
  p.reset();
  const Parsed fresh = parse_with(p, "+OK\r\n");
  ASSERT_EQ(fresh.result.status, ParseStatus::complete) << fresh.result.error;
  EXPECT_EQ(fresh.value, RespValue::simple("OK"));
}

// Offsets count from the start of the input the failing call got: the broken reply.
TEST(RespParser, GarbageBehindAWholeReplyIsAnErrorOfTheNextReply) {
  const std::string bytes = "+OK\r\n:1x\r\n";
  const StreamOutcome o = parse_stream(bytes, {bytes.size()});
  ASSERT_EQ(o.values, std::vector<RespValue>{RespValue::simple("OK")});
  EXPECT_EQ(o.last, ParseStatus::error);
  EXPECT_EQ(o.error, "bad RESP reply at byte offset 2: non-digit byte 'x' (0x78) in the integer");
}

// Any byte string at all: the parser answers, never reads outside the input (ASan), and
// whatever completes encodes back to exactly the bytes it consumed.
TEST(RespParser, RandomBytesNeverCrash) {
  std::mt19937_64 rng(99);
  const char alphabet[] = "+-:$*0123456789\r\n-1ab";
  std::size_t complete = 0, errors = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string s(rng() % 24, ' ');
    for (char& c : s) c = alphabet[rng() % (sizeof alphabet - 1)];
    const Parsed r = parse_one(s);
    if (r.result.status == ParseStatus::complete) {
      ++complete;
      ASSERT_LE(r.consumed, s.size());
      ASSERT_EQ(encode(r.value), s.substr(0, r.consumed)) << s;
    } else if (r.result.status == ParseStatus::error) {
      ++errors;
      ASSERT_EQ(r.result.error.rfind("bad RESP reply at byte offset ", 0), 0u);
    } else {
      ASSERT_GT(r.result.need, s.size());
    }
  }
  EXPECT_GT(complete, 0u);
  EXPECT_GT(errors, 0u);
}

// --- accessors and the value encoder ---------------------------------------------------

TEST(RespValueAccess, WrongShapesAreErrorsThatSayWhatCame) {
  const RespValue nogroup = RespValue::error_reply(
      "NOGROUP No such key 's0' or consumer group 'g' in XREADGROUP with GROUP option");
  auto s = io::as_string(nogroup, "XREADGROUP reply: entry id");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message,
            "XREADGROUP reply: entry id: expected a string, got error reply \"NOGROUP No such key "
            "'s0' or consumer group 'g' in XREADGROUP with GROUP option\"");
  EXPECT_EQ(s.error().code, EPROTO);

  auto i = io::as_integer(RespValue::bulk("12"), "XACK reply");
  ASSERT_FALSE(i.ok());
  EXPECT_EQ(i.error().message, "XACK reply: expected an integer, got bulk string of 2 bytes");

  const RespValue null_array = RespValue::null_array();
  auto a = io::as_array(null_array, "XREADGROUP reply");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().message, "XREADGROUP reply: expected an array, got null array");

  const RespValue three = RespValue::array(
      {RespValue::from_integer(1), RespValue::from_integer(2), RespValue::from_integer(3)});
  auto pair = io::as_array(three, 2, "entry");
  ASSERT_FALSE(pair.ok());
  EXPECT_EQ(pair.error().message,
            "entry: expected an array of 2 elements, got array of 3 elements");

  const RespValue null_bulk = RespValue::null_bulk();
  auto nil = io::as_string(null_bulk, "value");
  ASSERT_FALSE(nil.ok());
  EXPECT_EQ(nil.error().message, "value: expected a string, got null bulk string");
}

TEST(RespValueAccess, RightShapesGiveTheirContents) {
  const RespValue ok = RespValue::simple("OK");
  auto s = io::as_string(ok, "reply");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "OK");
  EXPECT_EQ(s->data(), ok.str.data()) << "a view into the value, not a copy";
  const RespValue binary = RespValue::bulk("a\0b"s);
  auto b = io::as_string(binary, "reply");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, "a\0b"s);
  auto i = io::as_integer(RespValue::from_integer(-3), "reply");
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(*i, -3);
  const RespValue empty = RespValue::array({});
  auto e = io::as_array(empty, 0, "reply");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->empty());
}

TEST(RespValueAccess, DescribeCutsLongTexts) {
  const std::string d = io::describe(RespValue::error_reply(std::string(300, 'E')));
  EXPECT_EQ(d, "error reply \"" + std::string(200, 'E') + "\"...");
  EXPECT_EQ(io::describe(RespValue::simple("OK")), "simple string \"OK\"");
  EXPECT_EQ(io::describe(RespValue::from_integer(-7)), "integer -7");
  EXPECT_EQ(io::describe(RespValue::array({RespValue::null_bulk()})), "array of 1 elements");
}

TEST(RespValueAccess, EncodingALineBreakInASimpleStringIsRefused) {
  std::string out = "kept";
  const RespValue v =
      RespValue::array({RespValue::bulk("fine"), RespValue::simple("two\r\nlines")});
  const ringfeed::Status s = io::append_value(out, v);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message,
            "cannot encode a simple string holding \\r or \\n \"two\r\nlines\": RESP2 ends it at "
            "the first line break");
  EXPECT_EQ(out, "kept") << "nothing appended";
}
