// Unit tests of segments as another process sees them: the bytes, size and mode of a
// ring segment (control, record area, message index) and of a group segment (control,
// settings, counters, slots, lease table) under /dev/shm; attach refusing every kind of
// corrupt or mismatched segment with an error that names the segment and what differs;
// bad names and bad group settings; and the writer ignoring a group segment it cannot
// use while it keeps serving the others.
//
// Corruption is done the way a stray process would do it: open("/dev/shm/<name>") and
// pwrite / ftruncate, never through the library's own types.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <climits>
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
#include "shm/process.hpp"
#include "shm/ring_layout.hpp"
#include "shm/ring_reader.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

// Under UndefinedBehaviorSanitizer, undefined behaviour fails the test (as
// -fno-sanitize-recover does in the debug preset) instead of printing a line and passing.
// Garbage in a segment must not lead to undefined behaviour in any process.
extern "C" const char* __ubsan_default_options();
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1";
}

using namespace std::chrono_literals;
using ringfeed::AckStatus;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
namespace shm = ringfeed::shm;

namespace {

// Byte offsets and sizes of the current layout version, spelled out as numbers: a reader in another
// build (or another language) finds the fields here, so these are the contract.
constexpr std::uint32_t kLayout = 8;
// Segment header (both kinds).
constexpr off_t kOffMagic = 0;
constexpr off_t kOffLayoutVersion = 8;
constexpr off_t kOffKind = 12;
constexpr off_t kOffSegmentSize = 16;
constexpr off_t kOffControlSize = 24;
constexpr off_t kOffDataCapacity = 32;
constexpr off_t kOffCreatorPid = 40;
constexpr off_t kOffPartition = 44;
// Ring: control block, then the record area, then the message index.
constexpr off_t kOffWritePos = 64;
constexpr off_t kOffPublished = 72;
constexpr off_t kOffTail = 128;
constexpr off_t kOffReusable = 136;
constexpr off_t kOffWakeWord = 192;
constexpr off_t kOffRingState = 196;
constexpr off_t kOffDefaultLeaseWindow = 256;
constexpr off_t kOffDefaultMaxDeliveries = 260;
constexpr off_t kOffDefaultLeaseMs = 264;
constexpr off_t kOffRecords = 320;  // the record area: data_capacity bytes
constexpr std::uint64_t kRingControlBytes = 320;
// One 8-byte index slot per 32 bytes of record area, right after the record area.
constexpr std::uint64_t ring_index_slots(std::uint64_t capacity) {
  return capacity / 32;
}
constexpr std::uint64_t ring_bytes(std::uint64_t capacity) {
  return kRingControlBytes + capacity + ring_index_slots(capacity) * 8;
}
// Where message `seq` finds its position (and `published` the next position).
constexpr off_t index_slot(std::uint64_t capacity, std::uint64_t seq) {
  return static_cast<off_t>(kRingControlBytes + capacity + (seq % ring_index_slots(capacity)) * 8);
}
// Group: control block (name, mode, settings, counters, slots), then the lease table.
constexpr off_t kOffGroupName = 64;
constexpr off_t kOffGroupMode = 120;
constexpr off_t kOffMaxDeliveries = 128;
constexpr off_t kOffLeaseMs = 132;
constexpr off_t kOffEpochNs = 136;
constexpr off_t kOffHolder = 192;
constexpr off_t kOffLowWatermark = 256;
constexpr off_t kOffSleepers = 320;
constexpr off_t kOffGroupWakeWord = 324;
constexpr off_t kOffFenced = 384;
constexpr off_t kOffDispatch = 448;
constexpr off_t kOffLowSeq = 512;
constexpr off_t kOffRedeliveries = 576;
constexpr off_t kOffSlots = 640;  // 64 slots of 64 bytes: owner at +0, cursor at +8
constexpr int kSlotCount = 64;
constexpr std::uint64_t kGroupControlBytes = 640 + 64 * 64;  // 4736
constexpr off_t kOffLeases = 4736;                           // `window` lease words of 8 bytes
constexpr std::uint64_t group_bytes(std::uint64_t window) {
  return kGroupControlBytes + 8 * window;
}
constexpr off_t slot_owner(int slot) {
  return kOffSlots + 64 * slot;
}
constexpr off_t slot_cursor(int slot) {
  return kOffSlots + 64 * slot + 8;
}
constexpr off_t lease_word(std::uint64_t window, std::uint64_t seq) {
  return static_cast<off_t>(kOffLeases + 8 * (seq % window));
}
// dispatch and low_seq of a group that has not started (never, unless shared).
constexpr std::uint64_t kNotStartedSeq = ~0ull;
constexpr std::uint64_t kExclusiveGroupBytes = group_bytes(1);  // 4744: window 1
constexpr std::uint32_t kDefaultLeaseWindow = 65536;

// A lease word: state (63..62: available 0, leased 1, acked 2, dead 3), lap parity (61),
// deliveries (60..55), owner slot (54..49), generation (48..32), deadline ms (31..0).
struct LeaseBits {
  std::uint64_t state, parity, deliveries, owner, generation, deadline_ms;
  explicit LeaseBits(std::uint64_t w)
      : state(w >> 62),
        parity((w >> 61) & 1),
        deliveries((w >> 55) & 63),
        owner((w >> 49) & 63),
        generation((w >> 32) & 0x1ffff),
        deadline_ms(w & 0xffffffff) {}
};
constexpr std::uint64_t kLeaseAvailable = 0;
constexpr std::uint64_t kLeaseLeased = 1;
constexpr std::uint64_t kLeaseAcked = 2;

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

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

// Attaches in `mode`. A shared group this creates gets lease window `window`; exclusive
// and broadcast groups always get window 1.
ringfeed::Result<std::unique_ptr<Consumer>> attach(const std::string& ns, const std::string& group,
                                                   Mode mode = Mode::exclusive,
                                                   std::uint32_t window = kDefaultLeaseWindow) {
  return Consumer::attach({.ns = ns,
                           .partition = 0,
                           .group = group,
                           .mode = mode,
                           .group_settings = {.lease_window = window}});
}

// What a group is created as, and so the size and window its segment must have.
struct GroupKind {
  Mode mode;
  std::uint32_t window;  // lease window it is created with (1 unless shared)
  std::uint64_t bytes() const { return group_bytes(window); }
  std::string describe() const {
    return std::string(to_string(mode)) + " group, lease window " + std::to_string(window);
  }
};
const std::vector<GroupKind> kGroupKinds = {
    {Mode::exclusive, 1}, {Mode::broadcast, 1}, {Mode::shared, 1024}};
const std::vector<Mode> kModes = {Mode::exclusive, Mode::broadcast, Mode::shared};

template <typename T>
::testing::AssertionResult refused_with(const ringfeed::Result<T>& r,
                                        const std::vector<std::string>& needles) {
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

TEST(SegmentLayout, RingFileHasControlRecordAreaAndIndexModeAndHeader) {
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
    // 320 control + 64 KiB of records + 2048 index slots of 8 bytes.
    EXPECT_EQ(ring_bytes(1 << 16), 82240u);
    EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), 82240u);
    EXPECT_EQ(shm::ring_segment_size(1 << 16), 82240u);

    EXPECT_EQ(peek_bytes(name, kOffMagic, 8), "RINGFEED");
    EXPECT_EQ(peek<std::uint32_t>(name, kOffLayoutVersion), kLayout);
    EXPECT_EQ(peek<std::uint32_t>(name, kOffKind), 1u);  // ring
    EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), 82240u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffControlSize), kRingControlBytes);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), 1u << 16);  // the record area only
    EXPECT_EQ(peek<std::int32_t>(name, kOffCreatorPid), ::getpid());
    EXPECT_EQ(peek<std::uint32_t>(name, kOffPartition), 3u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffWritePos), 0u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffPublished), 0u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffTail), 0u);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffReusable), 0u);
    EXPECT_EQ(peek<std::uint32_t>(name, kOffWakeWord), 0u);
    EXPECT_EQ(peek<std::uint32_t>(name, kOffRingState), shm::kRingOpen);
    // Nothing published: the slot of `published` (0) holds the next position, 0.
    EXPECT_EQ(peek<std::uint64_t>(name, index_slot(1 << 16, 0)), 0u);
  }
  // The index grows with the record area, from the smallest ring to a large one.
  for (std::uint64_t cap : {std::uint64_t{4096}, std::uint64_t{1} << 20}) {
    SCOPED_TRACE("capacity " + std::to_string(cap));
    const auto ns = ringfeed::test::unique_ns("rsize");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns, cap);
    ASSERT_TRUE(w);
    const std::string name = w->segment_name();
    EXPECT_EQ(static_cast<std::uint64_t>(stat_of(name).st_size), ring_bytes(cap));
    EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), ring_bytes(cap));
    EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), cap);
  }
  EXPECT_EQ(ring_bytes(4096), 320u + 4096 + 1024);
}

TEST(SegmentLayout, PublishedRecordAsAReaderSeesIt) {
  const auto ns = ringfeed::test::unique_ns("rec");
  NamespaceCleanup cleanup{ns};
  constexpr std::uint64_t kCap = 1 << 16;
  auto w = make_writer(ns, kCap);
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
  // The index: message 0 is at position 0; the slot of `published` (1) holds the next
  // position, where message 1 will go.
  EXPECT_EQ(peek<std::uint64_t>(name, index_slot(kCap, 0)), 0u);
  EXPECT_EQ(peek<std::uint64_t>(name, index_slot(kCap, 1)), 64u);
  // The index is the last part of the segment: its last slot ends the file.
  EXPECT_EQ(index_slot(kCap, ring_index_slots(kCap) - 1) + 8,
            static_cast<off_t>(stat_of(name).st_size));

  w->close();
  EXPECT_EQ(peek<std::uint32_t>(name, kOffRingState), shm::kRingClosed);
  w.reset();
  EXPECT_FALSE(exists(name)) << "the writer removes its segments";
}

TEST(SegmentLayout, MessageIndexHoldsEveryPositionAndTheNext) {
  // A small ring (128 index slots) and messages of many sizes, so records pad at the end
  // of laps and the index wraps several times. One exclusive consumer acks each message
  // right away, so the writer reuses at will.
  constexpr std::uint64_t kCap = 4096;
  constexpr std::uint64_t kSlots = ring_index_slots(kCap);
  const auto ns = ringfeed::test::unique_ns("index");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns, kCap);
  ASSERT_TRUE(w);
  const std::string name = w->segment_name();
  auto reader = shm::RingReader::open(ns, 0);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  auto consumer = ringfeed::Consumer::attach({.ns = ns, .group = "g", .mode = Mode::exclusive});
  ASSERT_TRUE(consumer.ok()) << consumer.error().message;
  std::vector<std::uint64_t> positions;  // where message s starts, as the layout says
  std::uint64_t next = 0;                // where the next record starts
  int paddings = 0;
  for (std::uint64_t s = 0; s < 5 * kSlots; ++s) {
    const std::string value((s * 37) % 300, static_cast<char>('a' + s % 26));
    const std::uint64_t size = (32 + value.size() + 31) / 32 * 32;
    if ((next % kCap) + size > kCap) {  // would cross the end: a padding record first
      next += kCap - next % kCap;
      ++paddings;
    }
    positions.push_back(next);
    next += size;
    ringfeed::OutMessage m{.value = value, .upstream_offset = s};
    ASSERT_EQ(w->publish({&m, 1}, 1s), 1u) << "message " << s;
    ASSERT_EQ(peek<std::uint64_t>(name, kOffPublished), s + 1);
    ASSERT_EQ(peek<std::uint64_t>(name, kOffWritePos), next);
    ASSERT_EQ(peek<std::uint64_t>(name, index_slot(kCap, s)), positions[s]) << "message " << s;
    ASSERT_EQ(peek<std::uint64_t>(name, index_slot(kCap, s + 1)), next)
        << "the slot of published = " << s + 1 << " holds the next position";
    ASSERT_EQ(peek<std::uint64_t>(name, kOffRecords + static_cast<off_t>(positions[s] % kCap)),
              positions[s] | shm::kTagMessage);
    const auto& b = (*consumer)->pop(1, 0ns);
    ASSERT_EQ(b.size(), 1u) << "message " << s;
    ASSERT_EQ((*consumer)->ack(b), ringfeed::AckStatus::ok);
  }
  EXPECT_GT(paddings, 10);
  // After the index wrapped: every message of the last kSlots - 1 still has its slot.
  const std::uint64_t published = positions.size();
  for (std::uint64_t s = published - (kSlots - 1); s < published; ++s) {
    EXPECT_EQ(peek<std::uint64_t>(name, index_slot(kCap, s)), positions[s]) << "message " << s;
    EXPECT_EQ(reader->position_of(s), positions[s]) << "message " << s;
  }
  EXPECT_EQ(peek<std::uint64_t>(name, index_slot(kCap, published)), next);
  EXPECT_EQ(reader->published(), published);
  EXPECT_EQ(reader->index_slots(), kSlots);
}

TEST(SegmentLayout, GroupFileSizeModeAndHeader) {
  for (Mode mode : {Mode::exclusive, Mode::broadcast}) {
    for (mode_t mask : {mode_t{0}, mode_t{0277}}) {
      SCOPED_TRACE(std::string(to_string(mode)) + ", umask " + std::to_string(mask));
      const auto ns = ringfeed::test::unique_ns("glay");
      NamespaceCleanup cleanup{ns};
      auto w = make_writer(ns);
      ASSERT_TRUE(w);
      const std::string name = "ringfeed." + ns + ".p0.g.billing";
      const std::int64_t before = monotonic_ns();
      {
        UmaskScope um(mask);
        // A lease window in the settings applies to shared groups only.
        auto c = attach(ns, "billing", mode, 1024);
        ASSERT_TRUE(c.ok()) << c.error().message;
        const std::uint64_t me = static_cast<std::uint64_t>(::getpid()) << 32;
        if (mode == Mode::exclusive) {
          EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder) >> 32, me >> 32) << "pid, high half";
          EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder), shm::pack_owner(shm::self_identity()));
          // The holder has a registry slot too (pid, heartbeat, unacked).
          EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(0)),
                    shm::pack_owner(shm::self_identity()));
        } else {
          EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder), 0u);
          EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(0)) >> 32, me >> 32);
          EXPECT_EQ(peek<std::uint64_t>(name, slot_cursor(0)), 0u);
          EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(1)), 0u);
        }
      }
      const std::int64_t after = monotonic_ns();
      const struct stat st = stat_of(name);
      EXPECT_EQ(st.st_mode & 07777, 0600u);
      EXPECT_EQ(kExclusiveGroupBytes, 4744u);  // control and a lease table of one word
      EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), kExclusiveGroupBytes);
      EXPECT_EQ(sizeof(shm::GroupControl), kGroupControlBytes);
      EXPECT_EQ(shm::kGroupSlots, static_cast<std::uint32_t>(kSlotCount));
      EXPECT_EQ(shm::group_segment_size(1), kExclusiveGroupBytes);
      EXPECT_EQ(peek_bytes(name, kOffMagic, 8), "RINGFEED");
      EXPECT_EQ(peek<std::uint32_t>(name, kOffLayoutVersion), kLayout);
      EXPECT_EQ(peek<std::uint32_t>(name, kOffKind), 2u);  // group
      EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), kExclusiveGroupBytes);
      EXPECT_EQ(peek<std::uint64_t>(name, kOffControlSize), kGroupControlBytes);
      EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), 1u);  // the lease window
      EXPECT_EQ(peek<std::int32_t>(name, kOffCreatorPid), ::getpid());
      EXPECT_EQ(peek<std::uint32_t>(name, kOffPartition), 0u);
      EXPECT_EQ(peek_bytes(name, kOffGroupName, 8), std::string("billing\0", 8));
      EXPECT_EQ(peek<std::uint32_t>(name, kOffGroupMode), static_cast<std::uint32_t>(mode));
      // Settings, as GroupSettings defaults them; the epoch is the creator's monotonic clock.
      EXPECT_EQ(peek<std::uint32_t>(name, kOffMaxDeliveries), 5u);
      EXPECT_EQ(peek<std::uint32_t>(name, kOffLeaseMs), 30'000u);
      const auto epoch = peek<std::int64_t>(name, kOffEpochNs);
      EXPECT_GE(epoch, before);
      EXPECT_LE(epoch, after);
      // Released on detach; nothing published, so the watermark is where it joined.
      EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder), 0u);
      EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(0)), 0u);
      EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark), 0u);
      EXPECT_EQ(peek<std::uint32_t>(name, kOffSleepers), 0u);
      EXPECT_EQ(peek<std::uint32_t>(name, kOffGroupWakeWord), 0u);  // nobody was woken
      EXPECT_EQ(peek<std::uint32_t>(name, kOffFenced), 0u);
      // Only shared groups ever start dispatching.
      EXPECT_EQ(peek<std::uint64_t>(name, kOffDispatch), kNotStartedSeq);
      EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), kNotStartedSeq);
      EXPECT_EQ(peek<std::uint32_t>(name, kOffRedeliveries), 0u);
      EXPECT_EQ(peek<std::uint64_t>(name, kOffLeases), 0u);
    }
  }
}

TEST(SegmentLayout, GroupHasSixtyFourConsumerSlotsBeforeItsLeaseTable) {
  for (Mode mode : {Mode::broadcast, Mode::shared}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    const auto ns = ringfeed::test::unique_ns("slots");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns);
    ASSERT_TRUE(w);
    const std::string name = shm::group_segment_name(ns, 0, "many");
    const std::uint64_t me = shm::pack_owner(shm::self_identity());
    std::vector<std::unique_ptr<Consumer>> consumers;
    for (int i = 0; i < kSlotCount; ++i) {
      auto c = attach(ns, "many", mode, 16);
      ASSERT_TRUE(c.ok()) << "consumer " << i << ": " << c.error().message;
      consumers.push_back(std::move(c.value()));
      ASSERT_EQ(peek<std::uint64_t>(name, slot_owner(i)), me) << "slot " << i;
    }
    EXPECT_TRUE(refused_with(attach(ns, "many", mode, 16), {"'many'", "64 live consumers"}));
    // The last slot ends where the lease table begins; claims leave the table alone: a
    // shared group's entries are as its start prepared them (settled in the lap before
    // message 0), the unused entry of the others is zero.
    EXPECT_EQ(slot_owner(kSlotCount - 1) + 64, kOffLeases);
    const std::uint64_t expected_entry =
        mode == Mode::shared ? shm::Lease{.state = shm::LeaseState::acked, .parity = 1}.pack() : 0u;
    EXPECT_EQ(peek<std::uint64_t>(name, kOffLeases), expected_entry);
    EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder), 0u);
    consumers.clear();
    for (int i = 0; i < kSlotCount; ++i) {
      EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(i)), 0u) << "slot " << i << " freed";
    }
  }
}

// The group's backoff list sits in its settings line; each slot is a registry entry:
// owner, cursor, heartbeat, unacked count, flags.
TEST(SegmentLayout, GroupBackoffListAndRegistrySlotFields) {
  const auto ns = ringfeed::test::unique_ns("sreg");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  for (std::uint64_t i = 0; i < 3; ++i) {
    ringfeed::OutMessage m{.value = "v", .upstream_offset = i};
    ASSERT_EQ(w->publish({&m, 1}, 0ns), 1u);
  }
  auto c = Consumer::attach({.ns = ns,
                             .group = "reg",
                             .mode = Mode::shared,
                             .max_unacked = 2,
                             .group_settings = {.backoff_ms = {7, 9}}});
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::string name = shm::group_segment_name(ns, 0, "reg");
  constexpr off_t kOffBackoff = 144;
  EXPECT_EQ(peek<std::uint32_t>(name, kOffBackoff), 7u);
  EXPECT_EQ(peek<std::uint32_t>(name, kOffBackoff + 4), 9u);
  EXPECT_EQ(peek<std::uint32_t>(name, kOffBackoff + 8), 0u);
  ASSERT_EQ((*c)->pop(10, 0ns).size(), 2u);
  EXPECT_EQ((*c)->pop(10, 0ns).status(), ringfeed::PopStatus::in_flight_full);
  const std::int64_t hb = peek<std::int64_t>(name, slot_owner(0) + 16);
  EXPECT_GT(hb, 0);
  EXPECT_LE(hb, monotonic_ns());
  EXPECT_EQ(peek<std::uint32_t>(name, slot_owner(0) + 24), 2u);  // unacked
  EXPECT_EQ(peek<std::uint32_t>(name, slot_owner(0) + 28), 1u);  // flags: at the limit
}

TEST(SegmentLayout, SharedGroupFileSettingsCountersAndLeaseTable) {
  constexpr std::uint64_t kCap = 1 << 16;
  const auto ns = ringfeed::test::unique_ns("slay");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns, kCap);
  ASSERT_TRUE(w);
  for (std::uint64_t i = 0; i < 5; ++i) {
    const std::string v(10 + 40 * i, 'v');  // 64, 96, 128, 160, 192 bytes: no two alike
    ringfeed::OutMessage m{.value = v, .upstream_offset = 100 + i};
    ASSERT_EQ(w->publish({&m, 1}, 0ns), 1u);
  }
  const std::string ring = w->segment_name();
  const std::string name = shm::group_segment_name(ns, 0, "work");
  const std::int64_t before = monotonic_ns();
  auto attached = Consumer::attach(
      {.ns = ns,
       .group = "work",
       .mode = Mode::shared,
       .lease = 2000ms,
       .group_settings = {.lease_window = 1024, .max_deliveries = 7, .lease_ms = 1234}});
  ASSERT_TRUE(attached.ok()) << attached.error().message;
  Consumer& c = *attached.value();
  const std::int64_t after = monotonic_ns();

  EXPECT_EQ(group_bytes(1024), 12928u);
  EXPECT_EQ(static_cast<std::uint64_t>(stat_of(name).st_size), group_bytes(1024));
  EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), group_bytes(1024));
  EXPECT_EQ(peek<std::uint64_t>(name, kOffControlSize), kGroupControlBytes);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), 1024u);
  EXPECT_EQ(peek<std::uint32_t>(name, kOffGroupMode), 2u);  // shared
  EXPECT_EQ(peek<std::uint32_t>(name, kOffMaxDeliveries), 7u);
  EXPECT_EQ(peek<std::uint32_t>(name, kOffLeaseMs), 1234u);
  const auto epoch = peek<std::int64_t>(name, kOffEpochNs);
  EXPECT_GE(epoch, before);
  EXPECT_LE(epoch, after);
  // Started at the oldest data: message 0, position 0. The first consumer has slot 0.
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDispatch), 0u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 0u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark), 0u);
  EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(0)), shm::pack_owner(shm::self_identity()));
  EXPECT_EQ(peek<std::uint64_t>(name, kOffHolder), 0u);
  // Prepared at the start: every entry settled in the lap before message 0 (parity 1),
  // so a new message's entry is told from one the reaper already took over.
  const std::uint64_t prepared = shm::Lease{.state = shm::LeaseState::acked, .parity = 1}.pack();
  for (std::uint64_t s = 0; s < 1024; ++s) {
    ASSERT_EQ(peek<std::uint64_t>(name, lease_word(1024, s)), prepared) << "lease " << s;
  }

  // Three messages handed out: three lease words, leased to slot 0, first delivery,
  // generation 1, due the consumer's lease (2 s) after now on the group's clock.
  const std::int64_t pop_before = monotonic_ns();
  const auto& b = c.pop(3, 0ns);
  const std::int64_t pop_after = monotonic_ns();
  ASSERT_EQ(b.size(), 3u);
  std::vector<ringfeed::Message> held(b.begin(), b.end());
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDispatch), 3u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 0u);
  for (std::uint64_t s = 0; s < 3; ++s) {
    SCOPED_TRACE("message " + std::to_string(s));
    EXPECT_EQ(held[s].offset(), 100 + s);
    EXPECT_EQ(held[s].position(), peek<std::uint64_t>(ring, index_slot(kCap, s)));
    const LeaseBits l(peek<std::uint64_t>(name, lease_word(1024, s)));
    EXPECT_EQ(l.state, kLeaseLeased);
    EXPECT_EQ(l.parity, 0u);
    EXPECT_EQ(l.deliveries, 1u);
    EXPECT_EQ(l.owner, 0u);
    EXPECT_EQ(l.generation, 1u);
    EXPECT_GE(l.deadline_ms, static_cast<std::uint64_t>((pop_before - epoch) / 1'000'000 + 2000));
    EXPECT_LE(l.deadline_ms, static_cast<std::uint64_t>((pop_after - epoch) / 1'000'000 + 2000));
  }
  EXPECT_EQ(peek<std::uint64_t>(name, lease_word(1024, 3)), prepared);

  // An ack out of order: acked, but low_seq waits for message 0.
  ASSERT_EQ(c.ack(held[1]), AckStatus::ok);
  EXPECT_EQ(LeaseBits(peek<std::uint64_t>(name, lease_word(1024, 1))).state, kLeaseAcked);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 0u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark), 0u);
  // Message 0 acked: low_seq moves over 0 and 1, the watermark to message 2's position.
  ASSERT_EQ(c.ack(held[0]), AckStatus::ok);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 2u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark), held[2].position());
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark),
            peek<std::uint64_t>(ring, index_slot(kCap, 2)));
  // A nack: available again, the generation moves on, and pop is told by redeliveries.
  ASSERT_EQ(c.nack(held[2], 0ms), AckStatus::ok);
  {
    const LeaseBits l(peek<std::uint64_t>(name, lease_word(1024, 2)));
    EXPECT_EQ(l.state, kLeaseAvailable);
    EXPECT_EQ(l.deliveries, 1u);
    EXPECT_EQ(l.generation, 2u);
  }
  EXPECT_EQ(peek<std::uint32_t>(name, kOffRedeliveries), 1u);
  const auto& again = c.pop(1, 0ns);
  ASSERT_EQ(again.size(), 1u);
  const ringfeed::Message redelivered = again[0];
  EXPECT_EQ(redelivered.offset(), 102u);
  EXPECT_EQ(redelivered.delivery_count(), 2u);
  {
    const LeaseBits l(peek<std::uint64_t>(name, lease_word(1024, 2)));
    EXPECT_EQ(l.state, kLeaseLeased);
    EXPECT_EQ(l.deliveries, 2u);
    EXPECT_EQ(l.generation, 3u);
  }
  EXPECT_EQ(peek<std::uint32_t>(name, kOffRedeliveries), 0u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDispatch), 3u);
  ASSERT_EQ(c.ack(redelivered), AckStatus::ok);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 3u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark),
            peek<std::uint64_t>(ring, index_slot(kCap, 3)));
  // The rest: low_seq reaches published, and the watermark the slot of `published`,
  // which holds the next position: the end of the ring's records.
  const auto& rest = c.pop(16, 0ns);
  ASSERT_EQ(rest.size(), 2u);
  ASSERT_EQ(c.ack(rest), AckStatus::ok);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDispatch), 5u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 5u);
  EXPECT_EQ(peek<std::uint64_t>(ring, kOffPublished), 5u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark), peek<std::uint64_t>(ring, kOffWritePos));
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowWatermark),
            peek<std::uint64_t>(ring, index_slot(kCap, 5)));

  // Detached: the slot is free again.
  attached.value().reset();
  EXPECT_EQ(peek<std::uint64_t>(name, slot_owner(0)), 0u);
}

TEST(SegmentLayout, SharedGroupLeaseWordsCarryTheLapParity) {
  // Window 4: sequence s uses lease word s % 4, and the parity bit says which lap.
  const auto ns = ringfeed::test::unique_ns("lap");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  auto c = attach(ns, "lap", Mode::shared, 4);
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::string name = shm::group_segment_name(ns, 0, "lap");
  EXPECT_EQ(static_cast<std::uint64_t>(stat_of(name).st_size), group_bytes(4));
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), 4u);
  for (std::uint64_t i = 0; i < 10; ++i) {
    ringfeed::OutMessage m{.value = "x", .upstream_offset = i};
    ASSERT_EQ(w->publish({&m, 1}, 0ns), 1u);
  }
  // At most a window of messages is out between low_seq and dispatch.
  const auto& first = c.value()->pop(64, 0ns);
  ASSERT_EQ(first.size(), 4u);
  std::vector<ringfeed::Message> held(first.begin(), first.end());
  EXPECT_TRUE(c.value()->pop(64, 0ns).empty()) << "a fifth message is past the window";
  std::uint64_t seq = 0;
  while (seq < 10) {
    if (held.empty()) {
      const auto& b = c.value()->pop(64, 0ns);
      ASSERT_FALSE(b.empty()) << "stuck at message " << seq;
      held.assign(b.begin(), b.end());
    }
    for (const auto& m : held) {
      EXPECT_EQ(m.offset(), seq);
      const LeaseBits l(peek<std::uint64_t>(name, lease_word(4, seq)));
      EXPECT_EQ(l.state, kLeaseLeased) << "message " << seq;
      EXPECT_EQ(l.parity, (seq / 4) & 1) << "message " << seq;
      ASSERT_EQ(c.value()->ack(m), AckStatus::ok);
      EXPECT_EQ(LeaseBits(peek<std::uint64_t>(name, lease_word(4, seq))).state, kLeaseAcked);
      ++seq;
    }
    held.clear();
  }
  EXPECT_EQ(seq, 10u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffLowSeq), 10u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDispatch), 10u);
}

TEST(SegmentLayout, SharedGroupWithDefaultSettingsHasTheDefaultWindow) {
  const auto ns = ringfeed::test::unique_ns("sdef");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  ASSERT_TRUE(Consumer::attach({.ns = ns, .group = "d", .mode = Mode::shared}).ok());
  const std::string name = shm::group_segment_name(ns, 0, "d");
  EXPECT_EQ(group_bytes(kDefaultLeaseWindow), 529024u);
  EXPECT_EQ(static_cast<std::uint64_t>(stat_of(name).st_size), 529024u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffSegmentSize), 529024u);
  EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), kDefaultLeaseWindow);
  EXPECT_EQ(peek<std::uint32_t>(name, kOffMaxDeliveries), 5u);
  EXPECT_EQ(peek<std::uint32_t>(name, kOffLeaseMs), 30'000u);
}

// The writer's group defaults (the fetcher's --lease-ms, --max-deliveries) sit in the
// ring; a group created without settings of its own takes them, fields it sets win.
TEST(SegmentLayout, RingCarriesTheWritersGroupDefaults) {
  const auto ns = ringfeed::test::unique_ns("rdef");
  NamespaceCleanup cleanup{ns};
  auto w = Writer::create(
      {.ns = ns,
       .capacity = 1 << 16,
       .group_defaults = {.lease_window = 2048, .max_deliveries = 9, .lease_ms = 1500}});
  ASSERT_TRUE(w) << w.error().message;
  const std::string ring = shm::ring_segment_name(ns, 0);
  EXPECT_EQ(peek<std::uint32_t>(ring, kOffDefaultLeaseWindow), 2048u);
  EXPECT_EQ(peek<std::uint32_t>(ring, kOffDefaultMaxDeliveries), 9u);
  EXPECT_EQ(peek<std::uint32_t>(ring, kOffDefaultLeaseMs), 1500u);

  ASSERT_TRUE(Consumer::attach({.ns = ns, .group = "d", .mode = Mode::shared}).ok());
  const std::string d = shm::group_segment_name(ns, 0, "d");
  EXPECT_EQ(peek<std::uint64_t>(d, kOffDataCapacity), 2048u);
  EXPECT_EQ(peek<std::uint32_t>(d, kOffMaxDeliveries), 9u);
  EXPECT_EQ(peek<std::uint32_t>(d, kOffLeaseMs), 1500u);

  ASSERT_TRUE(
      Consumer::attach(
          {.ns = ns, .group = "own", .mode = Mode::shared, .group_settings = {.max_deliveries = 2}})
          .ok());
  const std::string own = shm::group_segment_name(ns, 0, "own");
  EXPECT_EQ(peek<std::uint64_t>(own, kOffDataCapacity), 2048u);
  EXPECT_EQ(peek<std::uint32_t>(own, kOffMaxDeliveries), 2u);
  EXPECT_EQ(peek<std::uint32_t>(own, kOffLeaseMs), 1500u);
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
  constexpr std::uint64_t kSize = ring_bytes(kCap);  // 82176
  const std::string size = std::to_string(kSize);
  // Resizes the segment and makes its header agree, so only the later checks can tell.
  auto resize_agreeing = [](const std::string& n, std::uint64_t bytes) {
    resize(n, static_cast<off_t>(bytes));
    poke<std::uint64_t>(n, kOffSegmentSize, bytes);
  };
  const std::vector<RingCorruption> cases = {
      {"bad magic",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffMagic, 0x1122334455667788); },
       {"magic", "0x1122334455667788"}},
      {"layout version 1 (a build without the message index)",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffLayoutVersion, 1); },
       {"layout version 1", "this build speaks " + std::to_string(kLayout)}},
      {"a newer layout version",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffLayoutVersion, kLayout + 1); },
       {"layout version " + std::to_string(kLayout + 1),
        "this build speaks " + std::to_string(kLayout)}},
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
       [](const std::string& n) { resize(n, 320 + 1000); },
       {"truncated", size, std::to_string(320 + 1000)}},
      {"message index cut short",
       [](const std::string& n) { resize(n, kSize - 8); },
       {"truncated", size, std::to_string(kSize - 8)}},
      {"larger than the header says",
       [](const std::string& n) { resize(n, 2 * kSize); },
       {size, std::to_string(2 * kSize)}},
      {"smaller than its control block, header agreeing",
       [&](const std::string& n) { resize_agreeing(n, 128); },
       {"128", "320"}},
      {"no message index (the size layout 1 had), header agreeing",
       [&](const std::string& n) { resize_agreeing(n, 320 + kCap); },
       {std::to_string(kCap), size, std::to_string(320 + kCap)}},
      {"message index one slot short, header agreeing",
       [&](const std::string& n) { resize_agreeing(n, kSize - 8); },
       {std::to_string(kCap), size, std::to_string(kSize - 8)}},
      {"message index one slot long, header agreeing",
       [&](const std::string& n) { resize_agreeing(n, kSize + 8); },
       {std::to_string(kCap), size, std::to_string(kSize + 8)}},
      {"capacity not a power of two",
       [&](const std::string& n) {
         resize_agreeing(n, 320 + 5000);
         poke<std::uint64_t>(n, kOffDataCapacity, 5000);
       },
       {"5000", "power of two"}},
      {"capacity below the minimum",
       [&](const std::string& n) {
         resize_agreeing(n, ring_bytes(1024));
         poke<std::uint64_t>(n, kOffDataCapacity, 1024);
       },
       {"1024", "power of two"}},
      {"capacity that disagrees with the size",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffDataCapacity, kCap / 2); },
       {std::to_string(kCap / 2), std::to_string(ring_bytes(kCap / 2)), size}},
      {"wrong control size",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffControlSize, 512); },
       {"control block", "512", "320"}},
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
      EXPECT_TRUE(refused_with(shm::RingReader::open(ns, 0), needles)) << "RingReader::open";
      for (Mode mode : kModes) {
        EXPECT_TRUE(refused_with(attach(ns, "g", mode, 1024), needles))
            << "Consumer::attach(" << to_string(mode) << ")";
      }
      EXPECT_FALSE(exists(shm::group_segment_name(ns, 0, "g")))
          << "attach must check the ring before it creates the group";
    }
    // Restored: the same ring is usable again, so the refusals above were about the damage.
    for (Mode mode : kModes) {
      const std::string group = "g" + std::to_string(static_cast<int>(mode));
      auto con = attach(ns, group, mode, 1024);
      EXPECT_TRUE(con.ok()) << to_string(mode) << ": " << con.error().message;
    }
  }
}

struct GroupCorruption {
  std::string what;
  std::function<void(const std::string& name)> apply;
  std::vector<std::string> needles;
};

// Every way a group segment can be wrong, for a group made as `kind`.
std::vector<GroupCorruption> group_corruptions(const GroupKind& kind) {
  const std::uint64_t s = kind.bytes();
  const std::uint32_t window = kind.window;
  const std::string size = std::to_string(s);
  auto resize_agreeing = [](const std::string& n, std::uint64_t bytes) {
    resize(n, static_cast<off_t>(bytes));
    poke<std::uint64_t>(n, kOffSegmentSize, bytes);
  };
  auto window_to = [](std::uint64_t w) {
    return [w](const std::string& n) { poke<std::uint64_t>(n, kOffDataCapacity, w); };
  };
  const std::uint64_t odd = window == 1 ? 3 : window + window / 2;  // not a power of two
  std::vector<GroupCorruption> cases = {
      {"bad magic", [](const std::string& n) { poke<std::uint64_t>(n, kOffMagic, 42); }, {"magic"}},
      {"layout version 1 (a build with 16 slots and no lease table)",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffLayoutVersion, 1); },
       {"layout version 1", "this build speaks " + std::to_string(kLayout)}},
      {"wrong kind",
       [](const std::string& n) { poke<std::uint32_t>(n, kOffKind, 1); },
       {"kind 1", "group"}},
      {"smaller than a header",
       [](const std::string& n) { resize(n, 40); },
       {"truncated", "40 bytes"}},
      {"smaller than the header says",
       [](const std::string& n) { resize(n, 1000); },
       {"truncated", size, "1000"}},
      {"lease table cut short",
       [s](const std::string& n) { resize(n, static_cast<off_t>(s - 8)); },
       {"truncated", size, std::to_string(s - 8)}},
      {"larger than the header says",
       [s](const std::string& n) { resize(n, static_cast<off_t>(2 * s)); },
       {size, std::to_string(2 * s)}},
      {"control block of layout 1",
       [](const std::string& n) { poke<std::uint64_t>(n, kOffControlSize, 1408); },
       {"control block of 1408 bytes", "expected 4736"}},
      {"the size layout 1 had, header agreeing",
       [=](const std::string& n) { resize_agreeing(n, 1408); },
       {"4736", "1408"}},
      {"lease window 0", window_to(0), {"lease window of 0 entries", "power of two"}},
      {"lease window not a power of two",
       window_to(odd),
       {"lease window of " + std::to_string(odd) + " entries", "power of two"}},
      {"lease window not a power of two, size agreeing",
       [=](const std::string& n) {
         resize_agreeing(n, group_bytes(1000));
         poke<std::uint64_t>(n, kOffDataCapacity, 1000);
       },
       {"lease window of 1000 entries", "power of two"}},
      {"lease window past the limit, size agreeing",
       [=](const std::string& n) {
         // Sparse: the 256 MiB are never touched.
         resize_agreeing(n, group_bytes(1u << 25));
         poke<std::uint64_t>(n, kOffDataCapacity, 1u << 25);
       },
       {"lease window of 33554432 entries", "16777216"}},
      {"lease window larger than the table",
       window_to(2ull * window),
       {"group segment is " + size + " bytes",
        "expected " + std::to_string(group_bytes(2 * window))}},
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
  if (window > 1) {
    cases.push_back({"lease window smaller than the table",
                     window_to(window / 2),
                     {"group segment is " + size + " bytes",
                      "expected " + std::to_string(group_bytes(window / 2))}});
  }
  return cases;
}

TEST(SegmentAttach, CorruptGroupSegmentIsRefused) {
  for (const GroupKind& kind : kGroupKinds) {
    for (const GroupCorruption& c : group_corruptions(kind)) {
      SCOPED_TRACE(kind.describe() + ": " + c.what);
      const auto ns = ringfeed::test::unique_ns("gbad");
      NamespaceCleanup cleanup{ns};
      auto w = make_writer(ns);
      ASSERT_TRUE(w);
      { ASSERT_TRUE(attach(ns, "g", kind.mode, kind.window).ok()); }  // creates, detaches
      const std::string name = shm::group_segment_name(ns, 0, "g");
      ASSERT_TRUE(exists(name));
      ASSERT_EQ(static_cast<std::uint64_t>(stat_of(name).st_size), kind.bytes());
      c.apply(name);
      std::vector<std::string> needles = c.needles;
      needles.push_back(name);
      // The segment is checked before its mode is compared, so every mode says the same.
      for (Mode mode : kModes) {
        EXPECT_TRUE(refused_with(attach(ns, "g", mode, kind.window), needles))
            << "Consumer::attach(" << to_string(mode) << ")";
      }
      // The writer refuses it too, for the same reason.
      ASSERT_TRUE(ringfeed::test::wait_until(
          [&] {
            w->poll_groups();
            return !w->rejected_groups().empty();
          },
          10s));
      EXPECT_EQ(w->group_count(), 0u);
      const std::string& why = w->rejected_groups()[0];
      for (const auto& n : needles) EXPECT_NE(why.find(n), std::string::npos) << why;
    }
  }
}

// A group segment whose header agrees with its own (wrong) size passes the generic header
// check; the difference is from the size its lease window needs, so that is what the
// message must name (both sizes), as it does for every other mismatch.
TEST(SegmentAttach, GroupSegmentOfWrongSizeNamesBothSizes) {
  for (const GroupKind& kind : {kGroupKinds[0], kGroupKinds[2]}) {
    const std::uint64_t s = kind.bytes();
    for (std::uint64_t size : {2 * s, s + 8, s - 8, s + 4096}) {
      SCOPED_TRACE(kind.describe() + ": segment of " + std::to_string(size) +
                   " bytes, header agreeing");
      const auto ns = ringfeed::test::unique_ns("gsize");
      NamespaceCleanup cleanup{ns};
      auto w = make_writer(ns);
      ASSERT_TRUE(w);
      { ASSERT_TRUE(attach(ns, "g", kind.mode, kind.window).ok()); }
      const std::string name = shm::group_segment_name(ns, 0, "g");
      resize(name, static_cast<off_t>(size));
      poke<std::uint64_t>(name, kOffSegmentSize, size);
      EXPECT_TRUE(refused_with(attach(ns, "g", kind.mode, kind.window),
                               {name, "group segment is " + std::to_string(size) + " bytes",
                                "expected " + std::to_string(s)}));
      // The writer refuses it too, and says why the same way.
      ASSERT_TRUE(ringfeed::test::wait_until(
          [&] {
            w->poll_groups();
            return !w->rejected_groups().empty();
          },
          10s));
      EXPECT_EQ(w->group_count(), 0u);
      const std::string& why = w->rejected_groups()[0];
      EXPECT_NE(why.find(std::to_string(s)), std::string::npos) << why;
      EXPECT_NE(why.find(std::to_string(size)), std::string::npos) << why;
    }
  }
}

TEST(SegmentAttach, GroupSettingsAreCheckedBeforeTheGroupIsCreated) {
  const auto ns = ringfeed::test::unique_ns("settings");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns);
  ASSERT_TRUE(w);
  auto with = [&](const shm::GroupSettings& settings) {
    return Consumer::attach(
        {.ns = ns, .group = "s", .mode = Mode::shared, .group_settings = settings});
  };
  for (std::uint32_t window : {3u, 1000u, 65535u, (1u << 24) + 1, 1u << 25}) {
    SCOPED_TRACE("lease window " + std::to_string(window));
    EXPECT_TRUE(refused_with(
        with({.lease_window = window}),
        {"lease window " + std::to_string(window), "power of two", std::to_string(1u << 24)}));
  }
  for (std::uint32_t max : {64u, 1000u}) {
    SCOPED_TRACE("max_deliveries " + std::to_string(max));
    EXPECT_TRUE(refused_with(with({.max_deliveries = max}),
                             {"max_deliveries " + std::to_string(max), "1 and 63"}));
  }
  EXPECT_FALSE(exists(shm::group_segment_name(ns, 0, "s")))
      << "a refused attach must not leave a group segment behind";
  // The limits themselves are accepted: window 1, and 2^24 (a sparse 128 MiB table).
  for (std::uint32_t window : {1u, 1u << 24}) {
    SCOPED_TRACE("lease window " + std::to_string(window));
    const std::string group = "w" + std::to_string(window);
    auto c = attach(ns, group, Mode::shared, window);
    ASSERT_TRUE(c.ok()) << c.error().message;
    const std::string name = shm::group_segment_name(ns, 0, group);
    EXPECT_EQ(static_cast<std::uint64_t>(stat_of(name).st_size), group_bytes(window));
    EXPECT_EQ(peek<std::uint64_t>(name, kOffDataCapacity), window);
  }
  // Exclusive and broadcast groups have no lease table: the window setting is not used.
  for (Mode mode : {Mode::exclusive, Mode::broadcast}) {
    const std::string group = std::string(to_string(mode));
    auto c = attach(ns, group, mode, 1000);
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(peek<std::uint64_t>(shm::group_segment_name(ns, 0, group), kOffDataCapacity), 1u);
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
  std::vector<std::unique_ptr<Consumer>> holders;
  for (Mode mode : kModes) {
    const std::string group(to_string(mode));
    auto c = attach(ns, group, mode, 1024);
    ASSERT_TRUE(c.ok()) << c.error().message;
    holders.push_back(std::move(c.value()));
    for (Mode other : kModes) {
      if (other == mode) continue;
      SCOPED_TRACE(group + " group, attach in " + std::string(to_string(other)) + " mode");
      EXPECT_TRUE(refused_with(attach(ns, group, other, 1024),
                               {"'" + group + "'", "exists in " + group + " mode",
                                "cannot attach in " + std::string(to_string(other)) + " mode"}));
    }
  }
  // The same refusal when nobody is attached: the mode belongs to the group, not to a consumer.
  holders.clear();
  EXPECT_TRUE(refused_with(attach(ns, "exclusive", Mode::broadcast), {"exists in exclusive mode"}));
  EXPECT_TRUE(refused_with(attach(ns, "shared", Mode::exclusive), {"exists in shared mode"}));
  EXPECT_TRUE(refused_with(attach(ns, "broadcast", Mode::shared), {"exists in broadcast mode"}));
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
  // Garbage the size of an exclusive group, and the size of a shared one.
  for (std::uint64_t size : {kExclusiveGroupBytes, group_bytes(1024)}) {
    for (bool before_writer : {true, false}) {
      SCOPED_TRACE(
          std::to_string(size) + " bytes of garbage, " +
          (before_writer ? "present when the writer starts" : "appearing while the writer runs"));
      const auto ns = ringfeed::test::unique_ns("wbad");
      NamespaceCleanup cleanup{ns};
      const std::string bad = shm::group_segment_name(ns, 0, "bad");
      if (before_writer) publish_file(bad, random_bytes(size, 1));
      auto w = make_writer(ns, 4096);
      ASSERT_TRUE(w);
      auto good = attach(ns, "good");
      ASSERT_TRUE(good.ok()) << good.error().message;
      if (!before_writer) publish_file(bad, random_bytes(size, 2));
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
      for (Mode mode : kModes) EXPECT_TRUE(refused_with(attach(ns, "bad", mode), {bad, "magic"}));
    }
  }
}

TEST(WriterGroups, EmptyAndTruncatedGroupFilesAreRejected) {
  const auto ns = ringfeed::test::unique_ns("wtrunc");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns, 4096);
  ASSERT_TRUE(w);
  auto good = attach(ns, "good");
  ASSERT_TRUE(good.ok()) << good.error().message;
  // Real group segments cut short: what a creator killed mid-copy would leave, if
  // segments were not published by link(). One cut in its control block, one in its
  // lease table.
  { ASSERT_TRUE(attach(ns, "model").ok()); }
  { ASSERT_TRUE(attach(ns, "shared_model", Mode::shared, 1024).ok()); }
  const std::string model = peek_bytes(shm::group_segment_name(ns, 0, "model"), 0, 1000);
  const std::uint64_t shared_size = group_bytes(1024);
  const std::string shared_model =
      peek_bytes(shm::group_segment_name(ns, 0, "shared_model"), 0, shared_size - 8);
  publish_file(shm::group_segment_name(ns, 0, "empty"), "");
  publish_file(shm::group_segment_name(ns, 0, "short"), model);
  publish_file(shm::group_segment_name(ns, 0, "short_table"), shared_model);
  ASSERT_TRUE(ringfeed::test::wait_until(
      [&] {
        w->poll_groups();
        return w->rejected_groups().size() >= 3;
      },
      10s));
  std::string all;
  for (const auto& r : w->rejected_groups()) all += r + "\n";
  EXPECT_NE(all.find(shm::group_segment_name(ns, 0, "empty") + ": truncated"), std::string::npos)
      << all;
  EXPECT_NE(
      all.find(shm::group_segment_name(ns, 0, "short") + ": header says " +
               std::to_string(kExclusiveGroupBytes) + " bytes but the segment has 1000 (truncated"),
      std::string::npos)
      << all;
  EXPECT_NE(all.find(shm::group_segment_name(ns, 0, "short_table") + ": header says " +
                     std::to_string(shared_size) + " bytes but the segment has " +
                     std::to_string(shared_size - 8) + " (truncated"),
            std::string::npos)
      << all;
  EXPECT_EQ(w->rejected_groups().size(), 3u) << all;
  EXPECT_EQ(w->group_count(), 3u);  // good, model and shared_model
}

TEST(WriterGroups, WatermarkPastTheEndFencesOnlyThatGroup) {
  for (Mode mode : kModes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    const auto ns = ringfeed::test::unique_ns("fence");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns, 4096);
    ASSERT_TRUE(w);
    auto good = attach(ns, "good");
    ASSERT_TRUE(good.ok()) << good.error().message;
    auto bad = attach(ns, "bad", mode, 1024);
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
    if (mode == Mode::broadcast) {
      for (int slot = 0; slot < kSlotCount; ++slot)
        poke<std::uint64_t>(name, slot_cursor(slot), garbage);
    } else {
      poke<std::uint64_t>(name, kOffLowWatermark, garbage);  // exclusive and shared groups
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
    EXPECT_EQ(peek<std::uint32_t>(name, kOffFenced), 1u);
    EXPECT_EQ(bad.value()->pop(16, 0ns).status(), PopStatus::fenced);
    EXPECT_TRUE(refused_with(attach(ns, "bad", mode, 1024), {"'bad'", "fenced"}));
    // Putting a sane value back does not win the group back: the writer decided.
    poke<std::uint64_t>(name, mode == Mode::broadcast ? slot_cursor(0) : kOffLowWatermark, 0);
    poke<std::uint32_t>(name, kOffFenced, 0);
    pump_through(*w, *good.value(), 40);
    for (const auto& g : w->groups()) EXPECT_EQ(g.fenced, g.name == "bad") << g.name;
  }
}

// A shared group's sequences, lease words and hints are not positions: the writer cannot
// check them against anything it owns, so garbage there must stay inside the group. Its
// consumers get values (an empty pop, a corrupt status, a lost lease), never a crash, a
// message that was not published, or a wait past what they asked for; the writer's reaper
// walks only the window it validated; another group is served throughout.
TEST(WriterGroups, SharedGroupSequenceGarbageStaysInThatGroup) {
  constexpr std::uint32_t kWindow = 64;
  const auto ns = ringfeed::test::unique_ns("sgarb");
  NamespaceCleanup cleanup{ns};
  auto w = make_writer(ns, 1 << 16);
  ASSERT_TRUE(w);
  auto good = attach(ns, "good");
  ASSERT_TRUE(good.ok()) << good.error().message;
  auto bad = attach(ns, "bad", Mode::shared, kWindow);
  ASSERT_TRUE(bad.ok()) << bad.error().message;
  const std::string name = shm::group_segment_name(ns, 0, "bad");
  std::uint64_t published = 0;
  std::uint64_t good_next = 0;
  auto publish_some = [&](std::size_t n) {
    published += w->publish(numbered(published, n, "payload"), 1s);
    w->service();
  };
  // The good group takes everything published so far, in order.
  auto drain_good = [&] {
    for (;;) {
      const auto& b = good.value()->pop(64, 0ns);
      if (b.empty()) break;
      for (const auto& m : b) ASSERT_EQ(m.offset(), good_next++);
      ASSERT_EQ(good.value()->ack(b), AckStatus::ok);
    }
    ASSERT_EQ(good_next, published);
  };
  publish_some(20);
  {
    const auto& b = bad.value()->pop(5, 0ns);
    ASSERT_EQ(b.size(), 5u);
  }
  std::mt19937_64 rng(7);
  const struct {
    const char* what;
    off_t offset;
    std::function<std::uint64_t()> value;
    int bytes;
  } cases[] = {
      {"dispatch past the window", kOffDispatch, [&] { return 5 + kWindow + 1; }, 8},
      {"dispatch below low_seq", kOffDispatch, [] { return 0; }, 8},
      {"dispatch past published", kOffDispatch, [&] { return published + 1000; }, 8},
      {"dispatch at the top", kOffDispatch, [] { return ~0ull - 1; }, 8},
      {"low_seq past published", kOffLowSeq, [&] { return published + 10; }, 8},
      {"low_seq at the top", kOffLowSeq, [] { return ~0ull - 5; }, 8},
      {"low_seq far behind", kOffLowSeq, [] { return 1; }, 8},
      {"redeliveries huge", kOffRedeliveries, [] { return 0xffffffffu; }, 4},
      {"lease words random", kOffLeases, [&] { return rng(); }, -1},
      {"lease words all leased by slot 0, long expired", kOffLeases,
       [] { return (1ull << 62) | (1ull << 55); }, -1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    if (c.bytes == 8) poke<std::uint64_t>(name, c.offset, c.value());
    if (c.bytes == 4) poke<std::uint32_t>(name, c.offset, static_cast<std::uint32_t>(c.value()));
    if (c.bytes < 0) {
      for (std::uint32_t i = 0; i < kWindow; ++i)
        poke<std::uint64_t>(name, lease_word(kWindow, i), c.value());
    }
    publish_some(10);
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      const auto& b = bad.value()->pop(64, 20ms);
      EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
      EXPECT_TRUE(b.status() == PopStatus::ok || b.status() == PopStatus::timed_out ||
                  b.status() == PopStatus::corrupt || b.status() == PopStatus::fenced)
          << to_string(b.status());
      for (const auto& m : b) EXPECT_LT(m.offset(), published) << "never published";
      (void)bad.value()->ack(b);
    }
    w->service();
    w->reclaim(true);
    drain_good();
  }
  // A consumer that joins the damaged group gets a value too.
  {
    auto again = attach(ns, "bad", Mode::shared, kWindow);
    if (again.ok()) {
      const auto& b = again.value()->pop(64, 0ns);
      for (const auto& m : b) EXPECT_LT(m.offset(), published) << "never published";
    }
  }
  for (const auto& g : w->groups()) {
    if (g.name == "good") {
      EXPECT_FALSE(g.fenced) << g.fence_reason;
    }
  }
}

// Settings are written once by the creator and read by the writer and every consumer
// that attaches; garbage there is clamped, never trusted.
TEST(WriterGroups, SharedGroupSettingsGarbageIsClamped) {
  struct Settings {
    std::uint32_t max_deliveries;
    std::uint32_t lease_ms;
    std::int64_t epoch_ns;
  };
  const std::vector<Settings> cases = {
      {0, 0, INT64_MIN},
      {0xffffffffu, 0xffffffffu, INT64_MAX},
      {64, 1, -1},
      {1, 0x80000000u, INT64_MIN + 1},
  };
  for (const Settings& s : cases) {
    SCOPED_TRACE("max_deliveries " + std::to_string(s.max_deliveries) + ", lease_ms " +
                 std::to_string(s.lease_ms) + ", epoch_ns " + std::to_string(s.epoch_ns));
    const auto ns = ringfeed::test::unique_ns("sset");
    NamespaceCleanup cleanup{ns};
    auto w = make_writer(ns, 4096);
    ASSERT_TRUE(w);
    { ASSERT_TRUE(attach(ns, "s", Mode::shared, 64).ok()); }
    const std::string name = shm::group_segment_name(ns, 0, "s");
    poke<std::uint32_t>(name, kOffMaxDeliveries, s.max_deliveries);
    poke<std::uint32_t>(name, kOffLeaseMs, s.lease_ms);
    poke<std::int64_t>(name, kOffEpochNs, s.epoch_ns);
    // A consumer reads them when it attaches, and uses them on every pop and ack.
    std::uint64_t published = w->publish(numbered(0, 4, "v"), 0ns);
    ASSERT_EQ(published, 4u);
    auto c = attach(ns, "s", Mode::shared, 64);
    ASSERT_TRUE(c.ok()) << c.error().message;
    std::uint64_t got = 0;
    {
      const auto& b = c.value()->pop(64, 1ms);
      got += b.size();
      for (const auto& m : b) EXPECT_LT(m.offset(), published);
      (void)c.value()->ack(b);
    }
    // The writer reads them when it first finds the group, and its reaper uses them.
    ASSERT_TRUE(ringfeed::test::wait_until(
        [&] {
          w->poll_groups();
          return w->group_count() == 1;
        },
        10s));
    w->service();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (published < 200 && std::chrono::steady_clock::now() < deadline) {
      published += w->publish(numbered(published, 4, "v"), 0ns);
      w->service();
      const auto& b = c.value()->pop(64, 1ms);
      got += b.size();
      for (const auto& m : b) EXPECT_LT(m.offset(), published);
      (void)c.value()->ack(b);
    }
    EXPECT_EQ(published, 200u) << "the group, clamped, keeps releasing space";
    EXPECT_GT(got, 0u);
    for (const auto& g : w->groups()) EXPECT_FALSE(g.fenced) << g.fence_reason;
  }
}

}  // namespace
