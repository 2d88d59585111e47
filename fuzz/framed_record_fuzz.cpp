// libFuzzer target for the local log's record decoders (io/framed_record.hpp) and the
// batch decoding of the local-log source (io/local_log_source.cpp), which checks framed
// records field by field and leaves anything it does not take to decode().
//
// Input: one options byte, then the bytes of a log file.
//   bit 0     format: 0 framed, 1 lines
//   bit 1     repair: before anything else, give every record of the leading chain of
//             plausible framed records (magic, version, a total length that fits) its
//             own position as upstream offset and a correct CRC, so that the fuzzer
//             reaches the checks behind the CRC
//   bits 2-4  the source's read buffer: 64 << k bytes (records longer than it go
//             through the source's heap buffer)
//   bits 5-7  the sink takes at most that many records per call (0: all), so the source
//             pauses and resumes mid-batch
//
// Checked:
//   - decode() (both offset checks) and decode_line() walked over the bytes as a reader
//     does: ok re-encodes to exactly the bytes it consumed, need_more asks for more than
//     it has, corrupt names a byte offset;
//   - the same bytes as DIR/0.log, read by the file: source: it hands out exactly the
//     records that walk finds (offsets, timestamps, keys, values), then stops the
//     partition with decode()'s own error if the walk ended on a corrupt record, or
//     waits (not stopped) if it ended on an incomplete one; within 10 s.
//
// Reads past the input are caught by ASan: the walk gets libFuzzer's exact-size block.
// The seeds in fuzz/corpus/framed_record have this layout.
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "io/crc32c.hpp"
#include "io/framed_record.hpp"
#include "io/local_log_source.hpp"

namespace {

namespace io = ringfeed::io;
using io::DecodeStatus;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "framed_record_fuzz: %s\n", what.c_str());
  std::abort();
}

struct Expected {
  std::uint64_t offset;
  std::uint64_t next;
  std::int64_t timestamp_ns;
  std::string key;
  std::string value;
};

struct Walk {
  std::vector<Expected> records;
  DecodeStatus last = DecodeStatus::need_more;
  std::string error;
  std::uint64_t end = 0;  // where the walk stopped
};

std::uint32_t load32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<std::uint32_t>(p[i]);
  return v;
}

void store_le(std::byte* p, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i, v >>= 8) p[i] = static_cast<std::byte>(v & 0xFF);
}

// See "repair" above.
void repair(std::vector<std::byte>& b) {
  std::size_t pos = 0;
  while (b.size() - pos >= io::kLogHeaderSize &&
         std::memcmp(b.data() + pos, io::kRecordMagic, 3) == 0 &&
         static_cast<std::uint8_t>(b[pos + 3]) == io::kRecordVersion) {
    const std::uint32_t total = load32(b.data() + pos + offsetof(io::RecordHeader, total_length));
    if (total < io::kLogHeaderSize || total > b.size() - pos) return;
    std::byte* const r = b.data() + pos;
    store_le(r + offsetof(io::RecordHeader, upstream_offset), pos, 8);
    store_le(r + offsetof(io::RecordHeader, crc),
             io::crc32c({r + io::kCrcStart, total - io::kCrcStart}), 4);
    pos += total;
  }
}

// Decodes `bytes` from the start as a log reader does, checking each answer.
Walk walk(std::span<const std::byte> bytes, bool lines, io::OffsetCheck check) {
  Walk w;
  std::size_t pos = 0;
  for (;;) {
    const auto rest = bytes.subspan(pos);
    const io::DecodeResult d = lines ? io::decode_line(rest, pos) : io::decode(rest, pos, check);
    w.last = d.status;
    if (d.status == DecodeStatus::corrupt) {
      if (d.error.find("byte offset") == std::string::npos) {
        fail("a corrupt record's error names no byte offset: " + d.error);
      }
      w.error = d.error;
      break;
    }
    if (d.status == DecodeStatus::need_more) {
      if (d.size <= rest.size()) fail("need_more asks for no more than it has");
      break;
    }
    if (d.size == 0 || d.size > rest.size()) fail("ok with a size outside the bytes given");
    if (!lines) {
      std::vector<std::byte> again(d.size);
      const io::EncodeResult e = io::encode(d.record, again);
      if (e.status != io::EncodeStatus::ok || e.size != d.size ||
          std::memcmp(again.data(), rest.data(), d.size) != 0) {
        fail("ok said of bytes that are not the encoding of what was decoded");
      }
    } else if (d.record.value.size() + 1 != d.size) {
      fail("a line's value is not the line without its newline");
    }
    w.records.push_back({pos, pos + d.size, d.record.timestamp_ns, std::string(d.record.key),
                         std::string(d.record.value)});
    pos += d.size;
  }
  w.end = pos;
  return w;
}

// Collects what the source hands out, taking at most `limit` records per call.
class Collect final : public io::BatchSink {
 public:
  explicit Collect(std::size_t limit) : limit_(limit) {}
  std::size_t take(std::uint32_t partition, std::span<const io::SourceRecord> records) override {
    if (partition != 0) fail("a record of partition " + std::to_string(partition));
    const std::size_t n = limit_ == 0 ? records.size() : std::min(limit_, records.size());
    for (std::size_t i = 0; i < n; ++i) {
      const io::SourceRecord& r = records[i];
      got.push_back({r.upstream_offset, r.next_offset, r.timestamp_ns, std::string(r.key),
                     std::string(r.value)});
    }
    return n;
  }
  std::vector<Expected> got;

 private:
  std::size_t limit_;
};

// A directory of this process's own, removed at exit (the name is never destroyed: the
// exit handler runs after static destructors).
const std::string& log_dir() {
  static const std::string& dir = *[] {
    auto* templ = new std::string("/tmp/ringfeed-fuzz-log-XXXXXX");
    if (::mkdtemp(templ->data()) == nullptr) fail("cannot create a temporary directory");
    std::atexit([] {
      ::unlink((log_dir() + "/0.log").c_str());
      ::rmdir(log_dir().c_str());
    });
    return templ;
  }();
  return dir;
}

std::string describe(const Expected& e) {
  return "offset " + std::to_string(e.offset) + " next " + std::to_string(e.next) + " ts " +
         std::to_string(e.timestamp_ns) + " key " + std::to_string(e.key.size()) + " bytes value " +
         std::to_string(e.value.size()) + " bytes";
}

bool same(const Expected& a, const Expected& b) {
  return a.offset == b.offset && a.next == b.next && a.timestamp_ns == b.timestamp_ns &&
         a.key == b.key && a.value == b.value;
}

// Reads `bytes` through the file: source and compares with the walk.
void read_through_source(std::span<const std::byte> bytes, bool lines, std::size_t buffer,
                         std::size_t limit, const Walk& expected) {
  const std::string& dir = log_dir();
  const std::string path = dir + "/0.log";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) fail("cannot write " + path);
  }
  auto opened = io::open_local_log(dir,
                                   {.format = lines ? io::LogFormat::lines : io::LogFormat::framed,
                                    .partitions = 1,
                                    .read_buffer_bytes = buffer},
                                   "file:" + dir);
  if (!opened) fail("cannot open the local log: " + opened.error().message);
  io::Source& source = *opened.value();
  Collect sink(limit);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int quiet_polls = 0;  // polls after everything expected arrived
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) {
      fail("the source took more than 10 s over " + std::to_string(bytes.size()) + " bytes");
    }
    const auto polled = source.poll_batches(sink, std::chrono::milliseconds(1));
    if (!polled) fail("poll failed: " + polled.error().message);
    const io::PartitionStatus st = source.status(0);
    if (st.paused) source.resume(0);
    if (st.stopped) break;
    // A corrupt record must stop the partition: wait for that (the deadline catches a
    // source that never does). Otherwise a few more polls show nothing else comes.
    if (expected.last != DecodeStatus::corrupt && sink.got.size() >= expected.records.size() &&
        ++quiet_polls > 2) {
      break;
    }
  }
  const io::PartitionStatus st = source.status(0);
  for (std::size_t i = 0; i < std::max(sink.got.size(), expected.records.size()); ++i) {
    if (i >= sink.got.size()) fail("the source missed record " + describe(expected.records[i]));
    if (i >= expected.records.size()) fail("the source made up record " + describe(sink.got[i]));
    if (!same(sink.got[i], expected.records[i])) {
      fail("the source handed out " + describe(sink.got[i]) + " where decode found " +
           describe(expected.records[i]));
    }
  }
  if (expected.last == DecodeStatus::corrupt) {
    if (!st.stopped) fail("the source did not stop at a corrupt record: " + expected.error);
    if (st.error != path + ": " + expected.error) {
      fail("the source stopped with '" + st.error + "', decode said '" + expected.error + "'");
    }
  } else if (st.stopped) {
    fail("the source stopped on records decode takes or waits for: " + st.error);
  }
  if (st.fetched != expected.end) {
    fail("the source fetched up to " + std::to_string(st.fetched) + ", decode to " +
         std::to_string(expected.end));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t options = data[0];
  const bool lines = (options & 1u) != 0;
  const bool fix = (options & 2u) != 0;
  const std::size_t buffer = std::size_t{64} << ((options >> 2) & 7u);
  const std::size_t limit = options >> 5;

  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  std::vector<std::byte> repaired;
  if (fix) {
    repaired.assign(bytes.begin(), bytes.end());
    repair(repaired);
    bytes = repaired;
  }
  // The decoders on their own, with either offset check.
  walk(bytes, false, io::OffsetCheck::none);
  walk(bytes, true, io::OffsetCheck::none);
  const Walk expected = walk(bytes, lines, io::OffsetCheck::equals_position);
  read_through_source(bytes, lines, buffer, limit, expected);
  return 0;
}
