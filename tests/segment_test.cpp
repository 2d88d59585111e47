// Unit tests of segments as another process sees them: the bytes, size and mode of a
// ring and a group segment under /dev/shm; attach refusing every kind of corrupt or
// mismatched segment with an error that names the segment and what differs; bad names;
// and the writer ignoring a group segment it cannot use while it keeps serving the others.
//
// Corruption is done the way a stray process would do it: open("/dev/shm/<name>") and
// pwrite / ftruncate, never through the library's own types.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
#include "shm/names.hpp"
#include "shm/ring_layout.hpp"
#include "shm/ring_reader.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
namespace shm = ringfeed::shm;

namespace {

// Byte offsets of the shared header, spelled out as numbers: a reader in another build
// (or another language) finds the fields here, so these are the contract.
constexpr off_t kOffMagic = 0;
constexpr off_t kOffLayoutVersion = 8;
constexpr off_t kOffKind = 12;
constexpr off_t kOffSegmentSize = 16;
constexpr off_t kOffControlSize = 24;
constexpr off_t kOffDataCapacity = 32;
constexpr off_t kOffCreatorPid = 40;
constexpr off_t kOffPartition = 44;
constexpr off_t kOffWritePos = 64;    // ring
constexpr off_t kOffPublished = 72;   // ring
constexpr off_t kOffRingState = 196;  // ring
constexpr off_t kOffRecords = 256;    // ring: the record area
constexpr off_t kOffGroupName = 64;
constexpr off_t kOffGroupMode = 120;
constexpr off_t kOffHolder = 128;
constexpr off_t kOffLowWatermark = 192;
constexpr off_t kOffFenced = 320;
constexpr off_t kOffSlots = 384;
constexpr std::size_t kGroupSegmentBytes = 1408;  // 384 + 16 slots of 64 bytes

std::string shm_path(const std::string& name) {
  return std::string(shm::kShmDir) + name;
}

template <typename T>
void poke(const std::string& name, off_t offset, T value) {
  const int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << name << ": " << std::strerror(errno);
  EXPECT_EQ(::pwrite(fd, &value, sizeof value, offset), static_cast<ssize_t>(sizeof value));
  ::close(fd);
}

template <typename T>
T peek(const std::string& name, off_t offset) {
  T value{};
  const int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << name << ": " << std::strerror(errno);
  if (fd < 0) return value;
  EXPECT_EQ(::pread(fd, &value, sizeof value, offset), static_cast<ssize_t>(sizeof value));
  ::close(fd);
  return value;
}

std::string peek_bytes(const std::string& name, off_t offset, std::size_t n) {
  std::string out(n, '\0');
  const int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << name << ": " << std::strerror(errno);
  if (fd < 0) return out;
  EXPECT_EQ(::pread(fd, out.data(), n, offset), static_cast<ssize_t>(n));
  ::close(fd);
  return out;
}

void resize(const std::string& name, off_t size) {
  ASSERT_EQ(::truncate(shm_path(name).c_str(), size), 0) << name << ": " << std::strerror(errno);
}

struct stat stat_of(const std::string& name) {
  struct stat st {};
  EXPECT_EQ(::stat(shm_path(name).c_str(), &st), 0) << name << ": " << std::strerror(errno);
  return st;
}

bool exists(const std::string& name) {
  return ::access(shm_path(name).c_str(), F_OK) == 0;
}

// Puts a file under /dev/shm the way a foreign process might: written in full under a
// temporary name, then linked, so that a watcher sees the final content and nothing else.
void publish_file(const std::string& name, const std::string& bytes) {
  const std::string temp = shm_path(name + ".tmp.handmade");
  const int fd = ::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << temp << ": " << std::strerror(errno);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  ASSERT_EQ(::link(temp.c_str(), shm_path(name).c_str()), 0) << std::strerror(errno);
  ::unlink(temp.c_str());
}

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Removes whatever a test left under its namespace, even after a failed assertion.
struct NamespaceCleanup {
  std::string ns;
  ~NamespaceCleanup() {
    for (const auto& name : shm::Segment::list("ringfeed." + ns + ".")) shm::Segment::remove(name);
  }
};

// Restores a ring segment's size and control block on scope exit, so that the live
// writer that owns it never touches a page the test cut off.
class RingRestorer {
 public:
  explicit RingRestorer(std::string name)
      : name_(std::move(name)),
        size_(stat_of(name_).st_size),
        control_(peek_bytes(name_, 0, shm::kRingDataOffset)) {}
  ~RingRestorer() {
    if (::truncate(shm_path(name_).c_str(), size_) != 0) return;
    const int fd = ::open(shm_path(name_).c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    (void)!::pwrite(fd, control_.data(), control_.size(), 0);
    ::close(fd);
  }
  RingRestorer(const RingRestorer&) = delete;
  RingRestorer& operator=(const RingRestorer&) = delete;

 private:
  std::string name_;
  off_t size_;
  std::string control_;
};

std::unique_ptr<Writer> make_writer(const std::string& ns, std::uint64_t capacity = 1 << 16,
                                    std::uint32_t partition = 0) {
  auto w = Writer::create({.ns = ns, .partition = partition, .capacity = capacity});
  EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message);
  return w.ok() ? std::move(w.value()) : nullptr;
}

ringfeed::Result<std::unique_ptr<Consumer>> attach(const std::string& ns, const std::string& group,
                                                   Mode mode = Mode::exclusive) {
  return Consumer::attach({.ns = ns, .partition = 0, .group = group, .mode = mode});
}

template <typename T>
::testing::AssertionResult refused_with(const ringfeed::Result<T>& r,
                                        std::initializer_list<std::string> needles) {
  if (r.ok()) return ::testing::AssertionFailure() << "succeeded, expected an error";
  const std::string& msg = r.error().message;
  for (const auto& needle : needles) {
    if (msg.find(needle) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "error \"" << msg << "\" does not mention \"" << needle << "\"";
    }
  }
  return ::testing::AssertionSuccess() << msg;
}

// Restores the process umask on scope exit.
struct UmaskScope {
  explicit UmaskScope(mode_t m) : old(::umask(m)) {}
  ~UmaskScope() { ::umask(old); }
  mode_t old;
};

// ---------------------------------------------------------------------------------------
// Layout as a reader sees it.

TEST(SegmentLayout, RingFileHasControlPlusCapacityBytesModeAndHeader) {
  for (mode_t mask : {mode_t{0}, mode_t{022}, mode_t{0277}}) {
    SCOPED_TRACE("umask 0" + std::to_string(mask >> 6) + std::to_string((mask >> 3) & 7) +
                 std::to_string(mask & 7));
    const auto ns = ringfeed::test::unique_ns("rlay");
    NamespaceCleanup cleanup{ns};
    std::unique_ptr<Writer> w;
    {
      UmaskScope um(mask);
      w = make_writer(ns, 1 << 16, 3);
    }
    ASSERT_TRUE(w);
    const std::string name = "ringfeed." + ns + ".p3.ring";
    EXPECT_EQ(w->segment_name(), name);
    const struct stat st = stat_of(name);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    // 0600 whatever the umask: readable and writable by the owner only.
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, ::getuid());
    EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), 256u + (1u << 16));

    EXPECT_EQ(peek_bytes(name, kOffMagic, 8), "RINGFEED");
    EXPECT_EQ(peek<std::uint32_t>(name, kOffLayoutVersion), 1u);
    EXPECT_EQ(peek<std::uint32_t>(name, kOffKind), 1u);  // ring
    EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), 256u + (1u << 16));
    EXPECT_EQ(peek<std::uint64_t>(name, kOffControlSize), 256u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), 1u << 16);
    EXPECT_EQ(peek<std::int32_t>(name, kOffCreatorPid), ::getpid());
    EXPECT_EQ(peek<std::uint32_t>(name, kOffPartition), 3u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffWritePos), 0u);
    EXPECT_EQ(peek<std::uint32_t>(name, kOffRingState), shm::kRingOpen);
  }
}

TEST(SegmentLayout, PublishedRecordAsAReaderSeesIt) {
  const auto ns = ringfeed::test::unique_ns("rec");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  ringfeed::OutMessage m{.key = "k1", .value = "hello", .upstream_offset = 42, .timestamp_ns = 7};
  ASSERT_EQ(w->publish({&m, 1}, 0ns), 1u);
  const std::string name = w->segment_name();
  const off_t rec = kOffRecords;
  EXPECT_EQ(peek<std::uint64_t>(name, rec + 0), 0u | shm::kTagMessage);  // position 0 | message
  EXPECT_EQ(peek<std::uint32_t>(name, rec + 8), 2u);
  EXPECT_EQ(peek<std::uint32_t>(name, rec + 12), 5u);
  EXPECT_EQ(peek<std::uint64_t>(name, rec + 16), 42u);
  EXPECT_EQ(peek<std::int64_t>(name, rec + 24), 7);
  EXPECT_EQ(peek_bytes(name, rec + 32, 7), "k1hello");
  // 32 + 7 bytes rounded up to the 32-byte record alignment.
  EXPECT_EQ(peek<std::uint64_t>(name, kOffWritePos), 64u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffPublished), 1u);
  EXPECT_EQ(peek<std::uint64_t>(name, rec + 64), 0u);  // the next tag: not yet written

  w->close();
  EXPECT_EQ(peek<std::uint32_t>(name, kOffRingState), shm::kRingClosed);
  w.reset();
  EXPECT_FALSE(exists(name)) << "the writer removes its segments";
}

TEST(SegmentLayout, GroupFileSizeModeAndHeader) {
  for (mode_t mask : {mode_t{0}, mode_t{0277}}) {
    SCOPED_TRACE("umask " + std::to_string(mask));
    const auto ns = ringfeed::test::unique_ns("glay");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns);
    ASSERT_TRUE(w);
    {
      UmaskScope um(mask);
      auto c = attach(ns, "billing");
      ASSERT_TRUE(c.ok()) << c.error().message;
    }
    const std::string name = "ringfeed." + ns + ".p0.g.billing";
    const struct stat st = stat_of(name);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), kGroupSegmentBytes);
    EXPECT_EQ(sizeof(shm::GroupControl), kGroupSegmentBytes);
    EXPECT_EQ(peek_bytes(name, kOffMagic, 8), "RINGFEED");
    EXPECT_EQ(peek<std::uint32_t>(name, kOffKind), 2u);  // group
    EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), kGroupSegmentBytes);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffControlSize), kGroupSegmentBytes);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), 16u);  // slots
    EXPECT_EQ(peek_bytes(name, kOffGroupName, 8), std::string("billing\0", 8));
    EXPECT_EQ(peek<std::uint32_t>(name, kOffGroupMode), 1u);  // exclusive
    EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder), 0u);     // released on detach
  }
}

// ---------------------------------------------------------------------------------------
// Attach refuses what it cannot use, with an error naming the segment and the difference.

TEST(SegmentAttach, MissingRingNamesNamespaceAndFetcher) {
  const auto ns = ringfeed::test::unique_ns("none");
  NamespaceCleanup cleanup{ns};
  auto reader = shm::RingReader::open(ns, 2);
  EXPECT_TRUE(refused_with(reader, {"'" + ns + "'", "partition 2", "fetcher"}));
  auto c = Consumer::attach({.ns = ns, .partition = 2, .group = "g"});
  EXPECT_TRUE(refused_with(c, {"'" + ns + "'", "partition 2", "fetcher"}));
  EXPECT_TRUE(shm::Segment::list("ringfeed." + ns + ".").empty())
      << "a failed attach must not leave a group segment behind";
}

struct RingCorruption {
  const char* what;
  std::function<void(const std::string& name)> apply;
  std::vector<std::string> needles;
};

TEST(SegmentAttach, CorruptRingSegmentIsRefusedByReaderAndConsumer) {
  constexpr std::uint64_t kCap = 1 << 16;
  const std::vector<RingCorruption> cases = {
      {"bad magic",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffMagic, 0x1122334455667788); },
       {"magic", "0x1122334455667788"}},
      {"wrong layout version",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffLayoutVersion, 2); },
       {"layout version 2"}},
      {"wrong kind",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffKind, 2); },
       {"kind 2", "ring"}},
      {"unknown kind",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffKind, 0xdead); },
       {"kind " + std::to_string(0xdead)}},
      {"smaller than a header",
       [](const std::string& n) { resize(n, 40); },
       {"truncated", "40 bytes"}},
      {"empty", [](const std::string& n) { resize(n, 0); }, {"truncated", "0 bytes"}},
      {"smaller than the header says",
       [](const std::string& n) { resize(n, 256 + 1000); },
       {"truncated", std::to_string(256 + kCap), std::to_string(256 + 1000)}},
      {"larger than the header says",
       [](const std::string& n) { resize(n, 256 + 2 * kCap); },
       {std::to_string(256 + kCap), std::to_string(256 + 2 * kCap)}},
      {"smaller than its control block, header agreeing",
       [](const std::string& n) {
         resize(n, 128);
         poke<std::uint64_t>(n, kOffSegmentSize, 128);
       },
       {"128"}},
      {"capacity not a power of two",
       [](const std::string& n) {
         resize(n, 256 + 5000);
         poke<std::uint64_t>(n, kOffSegmentSize, 256 + 5000);
         poke<std::uint64_t>(n, kOffDataCapacity, 5000);
       },
       {"5000", "power of two"}},
      {"capacity below the minimum",
       [](const std::string& n) {
         resize(n, 256 + 1024);
         poke<std::uint64_t>(n, kOffSegmentSize, 256 + 1024);
         poke<std::uint64_t>(n, kOffDataCapacity, 1024);
       },
       {"1024", "power of two"}},
      {"capacity that disagrees with the size",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffDataCapacity, kCap / 2); },
       {std::to_string(kCap / 2), std::to_string(256 + kCap)}},
      {"wrong control size",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffControlSize, 512); },
       {"control block", "512", "256"}},
      {"wrong partition",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffPartition, 7); },
       {"partition 7", "expected 0"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto ns = ringfeed::test::unique_ns("rbad");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns, kCap);
    ASSERT_TRUE(w);
    const std::string name = w->segment_name();
    {
      RingRestorer restore(name);
      c.apply(name);
      std::vector<std::string> needles = c.needles;
      needles.push_back(name);
      auto reader = shm::RingReader::open(ns, 0);
      EXPECT_FALSE(reader.ok());
      if (!reader.ok()) {
        for (const auto& n : needles) {
          EXPECT_NE(reader.error().message.find(n), std::string::npos)
              << "RingReader::open: \"" << reader.error().message << "\" lacks \"" << n << "\"";
        }
      }
      for (Mode mode : {Mode::exclusive, Mode::broadcast}) {
        auto con = attach(ns, "g", mode);
        EXPECT_FALSE(con.ok());
        if (con.ok()) continue;
        for (const auto& n : needles) {
          EXPECT_NE(con.error().message.find(n), std::string::npos)
              << "Consumer::attach: \"" << con.error().message << "\" lacks \"" << n << "\"";
        }
      }
      EXPECT_FALSE(exists(shm::group_segment_name(ns, 0, "g")))
          << "attach must check the ring before it creates the group";
    }
    // Restored: the same ring is usable again, so the refusals above were about the damage.
    auto con = attach(ns, "g");
    EXPECT_TRUE(con.ok()) << con.error().message;
  }
}

struct GroupCorruption {
  const char* what;
  std::function<void(const std::string& name)> apply;
  std::vector<std::string> needles;
};

TEST(SegmentAttach, CorruptGroupSegmentIsRefused) {
  const std::string size = std::to_string(kGroupSegmentBytes);
  const std::string twice = std::to_string(2 * kGroupSegmentBytes);
  const std::vector<GroupCorruption> cases = {
      {"bad magic", [](const std::string& n) { poke<std::uint64_t>(n, kOffMagic, 42); }, {"magic"}},
      {"wrong layout version",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffLayoutVersion, 9); },
       {"layout version 9"}},
      {"wrong kind",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffKind, 1); },
       {"kind 1", "group"}},
      {"smaller than a header",
       [](const std::string& n) { resize(n, 40); },
       {"truncated", "40 bytes"}},
      {"smaller than the header says",
       [](const std::string& n) { resize(n, 1000); },
       {"truncated", size, "1000"}},
      {"larger than the header says",
       [](const std::string& n) { resize(n, 2 * kGroupSegmentBytes); },
       {size, twice}},
      {"wrong slot count",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffDataCapacity, 8); },
       {"8 consumer slots", "16"}},
      {"unknown mode",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffGroupMode, 77); },
       {"unknown mode 77"}},
      {"mode zero",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffGroupMode, 0); },
       {"unknown mode 0"}},
      {"wrong partition",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffPartition, 5); },
       {"partition 5"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto ns = ringfeed::test::unique_ns("gbad");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns);
    ASSERT_TRUE(w);
    { ASSERT_TRUE(attach(ns, "g").ok()); }  // creates the group, then detaches
    const std::string name = shm::group_segment_name(ns, 0, "g");
    ASSERT_TRUE(exists(name));
    c.apply(name);
    for (Mode mode : {Mode::exclusive, Mode::broadcast}) {
      auto con = attach(ns, "g", mode);
      EXPECT_FALSE(con.ok());
      if (con.ok()) continue;
      std::vector<std::string> needles = c.needles;
      needles.push_back(name);
      for (const auto& n : needles) {
        EXPECT_NE(con.error().message.find(n), std::string::npos)
            << "Consumer::attach(" << to_string(mode) << "): \"" << con.error().message
            << "\" lacks \"" << n << "\"";
      }
    }
  }
}

// A group segment whose header agrees with its own (wrong) size passes the generic header
// check; the difference is from the size this build expects, so that is what the message
// must name (both sizes), as it does for every other mismatch.
TEST(SegmentAttach, GroupSegmentOfWrongSizeNamesBothSizes) {
  for (std::size_t size : {2 * kGroupSegmentBytes, std::size_t{1000}}) {
    SCOPED_TRACE("group segment of " + std::to_string(size) + " bytes, header agreeing");
    const auto ns = ringfeed::test::unique_ns("gsize");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns);
    ASSERT_TRUE(w);
    { ASSERT_TRUE(attach(ns, "g").ok()); }
    const std::string name = shm::group_segment_name(ns, 0, "g");
    resize(name, static_cast<off_t>(size));
    poke<std::uint64_t>(name, kOffSegmentSize, size);
    EXPECT_TRUE(refused_with(attach(ns, "g"),
                             {name, std::to_string(kGroupSegmentBytes), std::to_string(size)}));
    // The writer refuses it too, and says why the same way.
    ASSERT_TRUE(ringfeed::test::wait_until(
        [&] {
          w->poll_groups();
          return !w->rejected_groups().empty();
        },
        10s));
    EXPECT_EQ(w->group_count(), 0u);
    const std::string& why = w->rejected_groups()[0];
    EXPECT_NE(why.find(std::to_string(kGroupSegmentBytes)), std::string::npos) << why;
    EXPECT_NE(why.find(std::to_string(size)), std::string::npos) << why;
  }
}

TEST(SegmentAttach, LeftoverCorruptRingIsReplacedByANewWriter) {
  // A ring name holding garbage (say, a crashed writer's half-written file from an older
  // build) must not keep a new writer out.
  const auto ns = ringfeed::test::unique_ns("leftover");
  NamespaceCleanup cleanup{ns};
  publish_file(shm::ring_segment_name(ns, 0), random_bytes(4096, 3));
  EXPECT_TRUE(refused_with(shm::RingReader::open(ns, 0), {shm::ring_segment_name(ns, 0), "magic"}));
  auto w = make_writer(ns, 4096);
  ASSERT_TRUE(w);
  auto c = attach(ns, "g");
  ASSERT_TRUE(c.ok()) << c.error().message;
  ringfeed::OutMessage m{.value = "after"};
  ASSERT_EQ(w->publish({&m, 1}, 0ns), 1u);
  const auto& b = c.value()->pop(4, 0ns);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].value(), "after");
}

TEST(SegmentAttach, GroupInAnotherModeIsRefusedNamingBothModes) {
  const auto ns = ringfeed::test::unique_ns("mode");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  auto ex = attach(ns, "ex", Mode::exclusive);
  ASSERT_TRUE(ex.ok()) << ex.error().message;
  EXPECT_TRUE(refused_with(attach(ns, "ex", Mode::broadcast),
                           {"'ex'", "exists in exclusive mode", "broadcast"}));
  auto bc = attach(ns, "bc", Mode::broadcast);
  ASSERT_TRUE(bc.ok()) << bc.error().message;
  EXPECT_TRUE(refused_with(attach(ns, "bc", Mode::exclusive),
                           {"'bc'", "exists in broadcast mode", "exclusive"}));
  // The same refusal when nobody is attached: the mode belongs to the group, not to a consumer.
  ex.value().reset();
  EXPECT_TRUE(refused_with(attach(ns, "ex", Mode::broadcast), {"exists in exclusive mode"}));
}

TEST(SegmentAttach, BadNamesAreRefusedClearly) {
  const auto good = ringfeed::test::unique_ns("names");
  NamespaceCleanup cleanup{good};
  auto w = make_writer(good);
  ASSERT_TRUE(w);
  const std::vector<std::string> bad = {"",
                                        "a.b",
                                        "../etc",
                                        "a/b",
                                        "with space",
                                        "caf\xc3\xa9",
                                        std::string(49, 'x'),
                                        std::string("nul\0x", 5)};
  for (const auto& name : bad) {
    SCOPED_TRACE("name '" + name + "'");
    EXPECT_TRUE(refused_with(Consumer::attach({.ns = name, .group = "g"}), {"namespace name"}));
    EXPECT_TRUE(refused_with(shm::RingReader::open(name, 0), {"namespace name"}));
    EXPECT_TRUE(
        refused_with(Writer::create({.ns = name, .capacity = 1 << 16}), {"namespace name"}));
    EXPECT_TRUE(refused_with(Consumer::attach({.ns = good, .group = name}), {"group name"}));
  }
  // The longest allowed names work, so the limit is where the message says it is.
  EXPECT_TRUE(refused_with(attach(good, std::string(49, 'g')), {"1 to 48 characters"}));
  auto longest = attach(good, std::string(48, 'g'));
  EXPECT_TRUE(longest.ok()) << longest.error().message;
  EXPECT_EQ(shm::Segment::list("ringfeed." + good + ".").size(), 2u)
      << "only the ring and the one good group may exist";
}

// ---------------------------------------------------------------------------------------
// The writer and group segments it cannot use.

std::vector<ringfeed::OutMessage> numbered(std::uint64_t first, std::size_t n,
                                           const std::string& value) {
  std::vector<ringfeed::OutMessage> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back({.value = value, .upstream_offset = first + i});
  return out;
}

// Publishes `laps` rings' worth of messages through a small ring while `good` takes and
// acks them: the writer must keep going whatever the other groups do.
void pump_through(Writer& w, Consumer& good, int laps) {
  const std::string value(200, 'v');
  std::uint64_t next_pub = 0;
  std::uint64_t next_take = 0;
  const std::uint64_t target = w.capacity() * laps / 256;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (next_take < target) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "stalled at " << next_take << " of " << target;
    next_pub += w.publish(numbered(next_pub, 8, value), 0ns);
    const auto& b = good.pop(64, 0ns);
    ASSERT_TRUE(b.status() == PopStatus::ok || b.status() == PopStatus::timed_out)
        << to_string(b.status());
    for (const auto& m : b) {
      ASSERT_EQ(m.offset(), next_take);
      ++next_take;
    }
    good.ack(b);
  }
}

TEST(WriterGroups, GarbageGroupSegmentIsRejectedAndGoodGroupsAreServed) {
  // Both ways a writer learns of a group: by scanning at start, and by inotify later.
  for (bool before_writer : {true, false}) {
    SCOPED_TRACE(before_writer ? "garbage group present when the writer starts"
                               : "garbage group appears while the writer runs");
    const auto ns = ringfeed::test::unique_ns("wbad");
    NamespaceCleanup cleanup{ns};
    const std::string bad = shm::group_segment_name(ns, 0, "bad");
    if (before_writer) publish_file(bad, random_bytes(kGroupSegmentBytes, 1));
    auto w = make_writer(ns, 4096);
    ASSERT_TRUE(w);
    auto good = attach(ns, "good");
    ASSERT_TRUE(good.ok()) << good.error().message;
    if (!before_writer) publish_file(bad, random_bytes(kGroupSegmentBytes, 2));
    ASSERT_TRUE(ringfeed::test::wait_until(
        [&] {
          w->poll_groups();
          return w->group_count() == 1 && !w->rejected_groups().empty();
        },
        10s))
        << "groups " << w->group_count() << ", rejected " << w->rejected_groups().size();

    ASSERT_EQ(w->rejected_groups().size(), 1u);
    const std::string& why = w->rejected_groups()[0];
    EXPECT_NE(why.find(bad), std::string::npos) << why;
    EXPECT_NE(why.find("magic"), std::string::npos) << why;
    const auto groups = w->groups();
    ASSERT_EQ(groups.size(), 1u);
    EXPECT_EQ(groups[0].name, "good");
    EXPECT_FALSE(groups[0].fenced);

    // The rejected segment holds no space: the ring goes round many times.
    pump_through(*w, *good.value(), 40);
    EXPECT_GT(w->write_pos(), 4096u * 30);
    EXPECT_TRUE(refused_with(attach(ns, "bad"), {bad, "magic"}));
  }
}

TEST(WriterGroups, EmptyAndTruncatedGroupFilesAreRejected) {
  const std::string size = std::to_string(kGroupSegmentBytes);
  const auto ns = ringfeed::test::unique_ns("wtrunc");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns, 4096);
  ASSERT_TRUE(w);
  auto good = attach(ns, "good");
  ASSERT_TRUE(good.ok()) << good.error().message;
  // A real group header cut short: what a creator killed mid-copy would leave, if
  // segments were not published by link().
  { ASSERT_TRUE(attach(ns, "model").ok()); }
  const std::string model = peek_bytes(shm::group_segment_name(ns, 0, "model"), 0, 1000);
  publish_file(shm::group_segment_name(ns, 0, "empty"), "");
  publish_file(shm::group_segment_name(ns, 0, "short"), model);
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        w->poll_groups();
        return w->rejected_groups().size() >= 2;
      },
      10s));
  std::string all;
  for (const auto& r : w->rejected_groups()) all += r + "\n";
  EXPECT_NE(all.find(shm::group_segment_name(ns, 0, "empty") + ": truncated"), std::string::npos)
      << all;
  EXPECT_NE(all.find(shm::group_segment_name(ns, 0, "short") + ": header says " + size +
                     " bytes but the segment has 1000 (truncated"),
            std::string::npos)
      << all;
  EXPECT_EQ(w->rejected_groups().size(), 2u) << all;
  EXPECT_EQ(w->group_count(), 2u);  // good and model
}

TEST(WriterGroups, WatermarkPastTheEndFencesOnlyThatGroup) {
  for (Mode mode : {Mode::exclusive, Mode::broadcast}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    const auto ns = ringfeed::test::unique_ns("fence");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns, 4096);
    ASSERT_TRUE(w);
    auto good = attach(ns, "good");
    ASSERT_TRUE(good.ok()) << good.error().message;
    auto bad = attach(ns, "bad", mode);
    ASSERT_TRUE(bad.ok()) << bad.error().message;
    ASSERT_TRUE(ringfeed::test::wait_until(
        [&] {
          w->poll_groups();
          return w->group_count() == 2;
        },
        10s));
    const std::string name = shm::group_segment_name(ns, 0, "bad");
    // Past anything published, and misaligned: no correct consumer could store this.
    const std::uint64_t garbage = 0x0123456789abcdefull;
    if (mode == Mode::exclusive) {
      poke<std::uint64_t>(name, kOffLowWatermark, garbage);
    } else {
      for (int slot = 0; slot < 16; ++slot)
        poke<std::uint64_t>(name, kOffSlots + 64 * slot + 8, garbage);
    }
    w->reclaim(false);
    bool fenced = false;
    for (const auto& g : w->groups()) {
      if (g.name != "bad") {
        EXPECT_FALSE(g.fenced) << g.name << ": " << g.fence_reason;
        continue;
      }
      fenced = g.fenced;
      EXPECT_NE(g.fence_reason.find(std::to_string(garbage)), std::string::npos) << g.fence_reason;
    }
    EXPECT_TRUE(fenced);
    EXPECT_EQ(bad.value()->pop(16, 0ns).status(), PopStatus::fenced);
    EXPECT_TRUE(refused_with(attach(ns, "bad", mode), {"'bad'", "fenced"}));
    // Putting a sane value back does not win the group back: the writer decided.
    poke<std::uint64_t>(name, mode == Mode::exclusive ? kOffLowWatermark : kOffSlots + 8, 0);
    poke<std::uint32_t>(name, kOffFenced, 0);
    pump_through(*w, *good.value(), 40);
    for (const auto& g : w->groups()) EXPECT_EQ(g.fenced, g.name == "bad") << g.name;
  }
}

}  // namespace
