// The log appender: file mode, errors that name the path, offsets that equal positions,
// a refused batch writes nothing, a failing device reports errno, and several processes
// appending to one file at once: it then decodes into exactly the records written, each
// writer's in its own order, none torn or interleaved.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "io/framed_record.hpp"
#include "io/log_appender.hpp"
#include "record_support.hpp"
#include "test_support.hpp"

namespace io = ringfeed::io;
namespace fs = std::filesystem;
using io::DecodeStatus;
using io::LogAppender;
using io::RecordKind;
using io::RecordView;

using ringfeed::test::TempDir;

namespace {

// A fresh directory under the temp dir, removed with everything in it at scope end.
std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A writer's records are a function of (writer, seq), so the reader checks every byte
// without being told what was sent. Some values span many pages, so a torn or
// interleaved write would show.
std::string value_of(std::uint32_t writer, std::uint32_t seq) {
  const std::uint64_t h = mix((std::uint64_t{writer} << 32) | seq);
  const std::size_t len = h % 10 == 0 ? 10000 + (h >> 8) % 150000 : (h >> 8) % 2000;
  std::string v(len, '\0');
  for (std::size_t j = 0; j < len; ++j) v[j] = static_cast<char>(h + j * 31 + writer);
  return v;
}
std::string key_of(std::uint32_t writer, std::uint32_t seq) {
  return "w" + std::to_string(writer) + "/" + std::to_string(seq);
}

}  // namespace

TEST(LogAppender, CreatesTheFileWithMode0600) {
  TempDir dir{"ringfeed-appender"};
  const mode_t old = ::umask(0);  // so the mode seen is the one the appender asked for
  auto a = LogAppender::open(dir.file("0.log"));
  ::umask(old);
  ASSERT_TRUE(a.ok()) << a.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(dir.file("0.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_NE(::fcntl(a->fd(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_NE(::fcntl(a->fd(), F_GETFL) & O_APPEND, 0);
}

TEST(LogAppender, OpenErrorNamesThePath) {
  auto a = LogAppender::open("/nonexistent-ringfeed-dir/3.log");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code, ENOENT);
  EXPECT_NE(a.error().message.find("/nonexistent-ringfeed-dir/3.log"), std::string::npos)
      << a.error().message;
}

TEST(LogAppender, LogRecordsGetTheirPositionDeadLettersKeepTheirOffset) {
  TempDir dir{"ringfeed-appender"};
  auto a = LogAppender::open(dir.file("0.log"));
  ASSERT_TRUE(a.ok()) << a.error().message;
  const RecordView batch1[] = {{.upstream_offset = 777, .key = "a", .value = "first"},
                               {.value = "second"}};
  const RecordView batch2[] = {{.kind = RecordKind::dead_letter,
                                .upstream_offset = 99,
                                .value = "poison",
                                .delivery_count = 5,
                                .group = "billing",
                                .reason = "max deliveries"},
                               {.value = "third"}};
  auto r1 = a->append(batch1);
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  EXPECT_EQ(r1->offset, 0u);
  auto r2 = a->append(batch2);
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_EQ(r2->offset, r1->bytes);
  ASSERT_TRUE(a->sync().ok());

  const auto file = read_file(dir.file("0.log"));
  ASSERT_EQ(file.size(), r1->bytes + r2->bytes);
  std::vector<RecordView> got;
  std::vector<std::uint64_t> positions;
  for (std::size_t pos = 0; pos < file.size();) {
    const auto d = io::decode(std::span(file).subspan(pos), pos);
    ASSERT_EQ(d.status, DecodeStatus::ok) << d.error;
    got.push_back(d.record);
    positions.push_back(pos);
    pos += d.size;
  }
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].upstream_offset, 0u) << "the offset passed in is replaced by the position";
  EXPECT_EQ(got[0].value, "first");
  EXPECT_EQ(got[1].upstream_offset, positions[1]);
  EXPECT_EQ(got[2].kind, RecordKind::dead_letter);
  EXPECT_EQ(got[2].upstream_offset, 99u);
  EXPECT_EQ(got[2].group, "billing");
  EXPECT_EQ(got[2].reason, "max deliveries");
  EXPECT_EQ(got[2].delivery_count, 5u);
  EXPECT_EQ(got[3].upstream_offset, positions[3]);
  EXPECT_EQ(got[3].value, "third");
}

TEST(LogAppender, ARefusedRecordFailsTheBatchAndWritesNothing) {
  TempDir dir{"ringfeed-appender"};
  auto a = LogAppender::open(dir.file("1.log"));
  ASSERT_TRUE(a.ok()) << a.error().message;
  const std::string big_key(io::kMaxKeyLength + 1, 'k');
  const RecordView batch[] = {{.value = "fine"}, {.key = big_key, .value = "x"}};
  auto r = a->append(batch);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find(dir.file("1.log")), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("record 1 of the batch: key longer than 64 KiB"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(fs::file_size(dir.file("1.log")), 0u);
}

TEST(LogAppender, AFailingWriteReportsErrnoAndThePath) {
  if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no writable /dev/full here";
  auto a = LogAppender::open("/dev/full");
  ASSERT_TRUE(a.ok()) << a.error().message;
  const RecordView rec{.value = "x"};
  auto r = a->append({&rec, 1});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOSPC);
  EXPECT_NE(r.error().message.find("append to /dev/full failed after 0 of 41 bytes"),
            std::string::npos)
      << r.error().message;
}

TEST(LogAppender, AMovedFromAppenderRefusesPolitely) {
  TempDir dir{"ringfeed-appender"};
  auto a = LogAppender::open(dir.file("2.log"));
  ASSERT_TRUE(a.ok()) << a.error().message;
  LogAppender b = std::move(a.value());
  const RecordView rec{.value = "x"};
  auto r = a->append({&rec, 1});  // NOLINT(bugprone-use-after-move): that is the point
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EBADF);
  EXPECT_TRUE(b.append({&rec, 1}).ok());
}

// Four processes append 400 records each, in batches of 1..8: most through append()
// (log records, which learn their position under the lock), every fifth batch as
// pre-encoded dead-letter records through append_encoded(). They start together on a
// pipe closing. Then the file must decode from byte 0 to its end with no gap: every log
// record at the offset it claims, every writer's records in its own order, all 400 of
// each, every byte as written.
TEST(LogAppender, ConcurrentProcessesNeverInterleave) {
  constexpr std::uint32_t kWriters = 4;
  constexpr std::uint32_t kPerWriter = 400;
  TempDir dir{"ringfeed-appender"};
  const std::string path = dir.file("0.log");

  int start[2];
  ASSERT_EQ(::pipe(start), 0);
  std::vector<pid_t> children;
  for (std::uint32_t w = 0; w < kWriters; ++w) {
    children.push_back(ringfeed::test::fork_child([&, w]() -> int {
      ::close(start[1]);
      char c;
      while (::read(start[0], &c, 1) < 0 && errno == EINTR) {
      }
      auto a = LogAppender::open(path);
      if (!a.ok()) {
        std::fprintf(stderr, "writer %u: %s\n", w, a.error().message.c_str());
        return 10;
      }
      std::uint64_t rng = mix(w + 1);
      std::uint32_t seq = 0;
      for (std::uint32_t batch_no = 0; seq < kPerWriter; ++batch_no) {
        rng = mix(rng);
        const std::uint32_t n = std::min<std::uint32_t>(1 + rng % 8, kPerWriter - seq);
        std::vector<std::string> keys, values, reasons;
        const std::string group = "g" + std::to_string(w);
        for (std::uint32_t k = 0; k < n; ++k) {
          keys.push_back(key_of(w, seq + k));
          values.push_back(value_of(w, seq + k));
          reasons.push_back("r" + std::to_string(seq + k));
        }
        const bool dead_letters = batch_no % 5 == 4;
        std::vector<RecordView> views;
        for (std::uint32_t k = 0; k < n; ++k) {
          RecordView v{.timestamp_ns = static_cast<std::int64_t>(seq + k),
                       .key = keys[k],
                       .value = values[k]};
          if (dead_letters) {
            v.kind = RecordKind::dead_letter;
            v.upstream_offset = seq + k;
            v.delivery_count = w;
            v.group = group;
            v.reason = reasons[k];
          }
          views.push_back(v);
        }
        ringfeed::Result<io::Appended> r = io::Appended{};
        if (dead_letters) {
          std::vector<std::byte> buf;
          for (const RecordView& v : views) {
            const std::size_t at = buf.size();
            buf.resize(at + io::encoded_size(v));
            if (io::encode(v, std::span(buf).subspan(at)).status != io::EncodeStatus::ok) return 11;
          }
          r = a->append_encoded(buf);
        } else {
          r = a->append(views);
        }
        if (!r.ok()) {
          std::fprintf(stderr, "writer %u: %s\n", w, r.error().message.c_str());
          return 20;
        }
        seq += n;
      }
      return 0;
    }));
  }
  ::close(start[0]);
  ::close(start[1]);  // all writers go
  for (std::uint32_t w = 0; w < kWriters; ++w) {
    EXPECT_EQ(ringfeed::test::wait_child(children[w]), 0) << "writer " << w;
  }

  const auto file = read_file(path);
  std::vector<std::uint32_t> next(kWriters, 0);
  std::size_t records = 0, dead = 0;
  std::size_t pos = 0;
  while (pos < file.size()) {
    const auto d = io::decode(std::span(file).subspan(pos), pos);
    ASSERT_EQ(d.status, DecodeStatus::ok) << d.error;
    const RecordView& v = d.record;
    unsigned w = 0, seq = 0;
    ASSERT_EQ(std::sscanf(std::string(v.key).c_str(), "w%u/%u", &w, &seq), 2) << v.key;
    ASSERT_LT(w, kWriters);
    ASSERT_EQ(seq, next[w]) << "writer " << w << " out of order at byte " << pos;
    ++next[w];
    EXPECT_EQ(v.timestamp_ns, static_cast<std::int64_t>(seq));
    ASSERT_TRUE(v.value == value_of(w, seq)) << "value of " << v.key << " at byte " << pos;
    if (v.kind == RecordKind::log) {
      ASSERT_EQ(v.upstream_offset, pos) << v.key;
    } else {
      ++dead;
      EXPECT_EQ(v.upstream_offset, seq);
      EXPECT_EQ(v.delivery_count, w);
      EXPECT_EQ(v.group, "g" + std::to_string(w));
      EXPECT_EQ(v.reason, "r" + std::to_string(seq));
    }
    ++records;
    pos += d.size;
  }
  EXPECT_EQ(pos, file.size());
  EXPECT_EQ(records, std::size_t{kWriters} * kPerWriter);
  for (std::uint32_t w = 0; w < kWriters; ++w) EXPECT_EQ(next[w], kPerWriter) << "writer " << w;
  EXPECT_GT(dead, 0u);
  std::printf("%zu records (%zu dead-letter) in %zu bytes from %u writers\n", records, dead,
              file.size(), kWriters);
}
