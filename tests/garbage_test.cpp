// Fuzz test of invariant 3: a consumer that writes garbage into its own group's shared
// segment can hurt its own group, never the writer or another group.
//
// Per seed, four processes: the parent (orchestrates, checks), a writer publishing N
// messages of mixed sizes through a small ring (it wraps hundreds of times, so every
// publish depends on space the groups give back), a good exclusive consumer in group A
// that must get every message exactly once and in order, and a misbehaving process in
// group B that maps B's segment read-write and scribbles std::mt19937_64 garbage over
// every field of it (header, name, mode, settings, holder, watermark, sleepers, fenced,
// dispatch, low_seq, redeliveries, every slot, the lease table) at random moments, while
// also popping, acking and re-attaching. B is an exclusive, broadcast or shared group,
// by seed; a shared B has a lease window of 1, 64, 4096 or 65536 entries, by seed.
//
// Pass: the writer publishes all N within a deadline and exits cleanly; A receives
// offsets 0..N-1 once each, in order, with the expected bytes, and is never fenced; the
// misbehaving process itself exits cleanly (its errors come back as values). Whether the
// writer fenced B, kept honouring it, or rejected its segment outright is reported, not
// judged: all three are correct, depending on what the garbage looked like when the
// writer read it.
//
// Knobs (environment): RINGFEED_FUZZ_SEEDS (how many seeds, default 20),
// RINGFEED_FUZZ_SEED (run that one seed only), RINGFEED_FUZZ_MESSAGES (N per seed).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
#include "shm/lease_table.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"
#include "shm/ring_reader.hpp"
#include "test_support.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RINGFEED_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RINGFEED_SANITIZED 1
#endif
#endif

// Under UndefinedBehaviorSanitizer, undefined behaviour fails the test (as
// -fno-sanitize-recover does in the debug preset) instead of printing a line and passing:
// garbage in a group segment must not lead any process into undefined behaviour. Children
// that halt exit by a signal, which the parent reports as a crash.
extern "C" const char* __ubsan_default_options();
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1";
}

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;
namespace shm = ringfeed::shm;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint64_t kDefaultMessages = 50'000;
#ifdef RINGFEED_SANITIZED
// Sanitizers slow every process down several times (about three here); the same N still
// fits the time budget, only the deadlines that catch a stall are stretched.
constexpr auto kPublishDeadline = 120s;
#else
constexpr auto kPublishDeadline = 30s;
#endif
constexpr std::uint64_t kRingCapacity = 64 * 1024;
constexpr auto kStartDeadline = 30s;
const Mode kModes[] = {Mode::exclusive, Mode::broadcast, Mode::shared};
// Lease windows a shared B is created with: from one message at a time to far more
// messages than the ring's index covers (2048 for this ring).
constexpr std::uint32_t kWindows[] = {1, 64, 4096, 65536};

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Message content is a function of (seed, offset), so a consumer checks every byte
// without being told what was sent: a record read from a reused lap shows at once.
struct Shape {
  std::uint32_t key_len;
  std::uint32_t value_len;
};
Shape shape_of(std::uint64_t seed, std::uint64_t offset) {
  const std::uint64_t h = mix(seed * 0x100000001b3ull ^ offset);
  const std::uint32_t key_len = static_cast<std::uint32_t>(h % 13);
  const std::uint64_t pick = (h >> 8) % 100;
  const std::uint64_t r = h >> 20;
  std::uint32_t value_len = 0;
  if (pick < 70) {
    value_len = static_cast<std::uint32_t>(r % 120);
  } else if (pick < 95) {
    value_len = static_cast<std::uint32_t>(120 + r % 900);
  } else {
    value_len = static_cast<std::uint32_t>(1000 + r % 7000);  // record < 16 KiB, a quarter ring
  }
  return {key_len, value_len};
}
char key_byte(std::uint64_t offset, std::size_t j) {
  return static_cast<char>('a' + (offset + j) % 26);
}
char value_byte(std::uint64_t offset, std::size_t j) {
  return static_cast<char>(offset * 131 + j * 7 + (offset >> 8));
}

// Lives in a MAP_SHARED anonymous mapping made before the forks: the processes'
// hand-shakes and their reports to the parent.
struct ConsumerReport {
  std::atomic<int> attached;  // 1 attached, 2 attach failed
  std::atomic<int> finished;  // 1 got everything, 2 failed
  std::atomic<std::uint64_t> received;
  char note[512];
};

enum class Outcome : int { unknown = 0, honoured, fenced, rejected, unseen };
const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::honoured:
      return "honoured";
    case Outcome::fenced:
      return "fenced";
    case Outcome::rejected:
      return "rejected";
    case Outcome::unseen:
      return "never seen";
    case Outcome::unknown:
      break;
  }
  return "unknown";
}

struct Shared {
  std::atomic<int> ring_ready;  // 1 created, 2 failed
  std::atomic<int> go;
  std::atomic<int> writer_done;
  std::atomic<int> stop;  // the parent gave up or the writer exited
  std::atomic<std::uint64_t> published;
  std::atomic<std::uint64_t> writer_wakes;  // FUTEX_WAKE calls the writer made
  std::atomic<int> b_outcome;
  char writer_note[512];
  char b_outcome_note[512];
  ConsumerReport a;
  ConsumerReport b;
  // What the misbehaving process did.
  std::atomic<std::uint64_t> rounds, scribbles, pops, popped, reattach_ok, reattach_refused;
  std::atomic<std::uint64_t> fenced_pops, corrupt_pops;
};
static_assert(std::atomic<int>::is_always_lock_free &&
                  std::atomic<std::uint64_t>::is_always_lock_free,
              "the reports are shared between processes");

void note(char (&dst)[512], const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void note(char (&dst)[512], const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(dst, sizeof dst, fmt, ap);
  va_end(ap);
}

struct Params {
  std::uint64_t seed;
  std::string ns;
  std::uint64_t messages;
  Mode b_mode;
  std::uint32_t b_window;  // lease window B is created with (shared mode; else unused)
  bool b_scribbles_early;  // before the writer may have looked at B's segment
  // B writes only plausible values for this many rounds, then anything (0: from the start).
  std::uint64_t plausible_rounds;
};

bool wait_flag(const std::atomic<int>& flag, const Shared& sh, std::chrono::milliseconds timeout) {
  return ringfeed::test::wait_until([&] { return flag.load() != 0 || sh.stop.load() != 0; },
                                    timeout);
}

// ---------------------------------------------------------------------------------------
// The writer process.

int run_writer(Shared& sh, const Params& p) {
  auto created = Writer::create({.ns = p.ns, .partition = 0, .capacity = kRingCapacity});
  if (!created) {
    note(sh.writer_note, "create: %s", created.error().message.c_str());
    sh.ring_ready = 2;
    return 2;
  }
  Writer& w = *created.value();
  sh.ring_ready = 1;
  // Publishing starts once both groups exist, so A's first message is offset 0. Neither
  // is waited for by the writer itself: it finds groups through the join protocol.
  if (!ringfeed::test::wait_until(
          [&] { return (sh.a.attached != 0 && sh.b.attached != 0) || sh.stop != 0; },
          kStartDeadline) ||
      sh.a.attached != 1 || sh.b.attached != 1) {
    note(sh.writer_note, "consumers did not attach (A %d, B %d)", sh.a.attached.load(),
         sh.b.attached.load());
    return 3;
  }
  sh.go = 1;

  std::mt19937_64 rng(mix(p.seed) ^ 0x5752495445ull);
  std::vector<std::string> keys(32), values(32);
  std::vector<ringfeed::OutMessage> batch;
  const auto deadline = Clock::now() + kPublishDeadline;
  for (std::uint64_t next = 0; next < p.messages;) {
    const std::size_t n = std::min<std::uint64_t>(p.messages - next, 1 + rng() % 32);
    batch.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t off = next + i;
      const Shape s = shape_of(p.seed, off);
      keys[i].resize(s.key_len);
      for (std::size_t j = 0; j < s.key_len; ++j) keys[i][j] = key_byte(off, j);
      values[i].resize(s.value_len);
      for (std::size_t j = 0; j < s.value_len; ++j) values[i][j] = value_byte(off, j);
      batch.push_back({.key = keys[i],
                       .value = values[i],
                       .upstream_offset = off,
                       .timestamp_ns = static_cast<std::int64_t>(off)});
    }
    for (std::size_t done = 0; done < n;) {
      if (Clock::now() > deadline || sh.stop != 0) {
        std::string groups;
        for (const auto& g : w.groups()) {
          groups += " " + g.name + (g.fenced ? "(fenced: " + g.fence_reason + ")" : "(honoured)");
        }
        note(sh.writer_note,
             "publish stalled at offset %llu of %llu (write_pos %llu, reusable below %llu); "
             "groups:%s; A received %llu",
             static_cast<unsigned long long>(next + done),
             static_cast<unsigned long long>(p.messages),
             static_cast<unsigned long long>(w.write_pos()),
             static_cast<unsigned long long>(w.reusable_below()), groups.c_str(),
             static_cast<unsigned long long>(sh.a.received.load()));
        return 4;
      }
      ringfeed::PublishStatus st = ringfeed::PublishStatus::ok;
      done += w.publish(std::span(batch).subspan(done), 50ms, &st);
      if (st == ringfeed::PublishStatus::too_large) {
        note(sh.writer_note, "offset %llu refused as too large",
             static_cast<unsigned long long>(next + done));
        return 5;
      }
    }
    next += n;
    sh.published = next;
  }
  if (w.published() != p.messages) {
    note(sh.writer_note, "published() says %llu, expected %llu",
         static_cast<unsigned long long>(w.published()),
         static_cast<unsigned long long>(p.messages));
    return 6;
  }

  // What the writer made of each group.
  const std::string b_segment = shm::group_segment_name(p.ns, 0, "B");
  Outcome outcome = Outcome::unseen;
  for (const auto& g : w.groups()) {
    if (g.name == "A" && g.fenced) {
      note(sh.writer_note, "group A was fenced: %s", g.fence_reason.c_str());
      return 7;
    }
    if (g.name == "B") {
      outcome = g.fenced ? Outcome::fenced : Outcome::honoured;
      note(sh.b_outcome_note, "%s", g.fenced ? g.fence_reason.c_str() : "");
    }
  }
  for (const auto& why : w.rejected_groups()) {
    if (why.find(b_segment) == std::string::npos) {
      note(sh.writer_note, "rejected a group other than B: %s", why.c_str());
      return 8;
    }
    if (outcome == Outcome::unseen) {
      outcome = Outcome::rejected;
      note(sh.b_outcome_note, "%s", why.c_str());
    }
  }
  sh.b_outcome = static_cast<int>(outcome);
  sh.writer_wakes = w.wakes();
  sh.writer_done = 1;

  // Keep the ring until A has taken the last lap and B has let go (then the destructor
  // removes the segments, and nobody re-creates one behind it).
  if (!ringfeed::test::wait_until(
          [&] { return (sh.a.finished != 0 && sh.b.finished != 0) || sh.stop != 0; },
          kPublishDeadline)) {
    note(sh.writer_note, "after everything was published, A %s and B %s",
         sh.a.finished != 0 ? "finished" : "did not finish",
         sh.b.finished != 0 ? "finished" : "did not finish");
    return 9;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// A good consumer: every offset once, in order, bytes as sent.

bool check_message(const ringfeed::Message& m, std::uint64_t seed, std::uint64_t expected,
                   char (&why)[512]) {
  if (m.offset() != expected) {
    note(why, "got offset %llu, expected %llu", static_cast<unsigned long long>(m.offset()),
         static_cast<unsigned long long>(expected));
    return false;
  }
  const Shape s = shape_of(seed, expected);
  const auto key = m.key();
  const auto value = m.value();
  if (key.size() != s.key_len || value.size() != s.value_len ||
      m.timestamp_ns() != static_cast<std::int64_t>(expected)) {
    note(why, "offset %llu: key %zu bytes, value %zu bytes, time %lld; expected %u, %u, %llu",
         static_cast<unsigned long long>(expected), key.size(), value.size(),
         static_cast<long long>(m.timestamp_ns()), s.key_len, s.value_len,
         static_cast<unsigned long long>(expected));
    return false;
  }
  for (std::size_t j = 0; j < key.size(); ++j) {
    if (key[j] != key_byte(expected, j)) {
      note(why, "offset %llu: key byte %zu differs", static_cast<unsigned long long>(expected), j);
      return false;
    }
  }
  for (std::size_t j = 0; j < value.size(); ++j) {
    if (value[j] != value_byte(expected, j)) {
      note(why, "offset %llu: value byte %zu of %zu differs",
           static_cast<unsigned long long>(expected), j, value.size());
      return false;
    }
  }
  return true;
}

// `scribble_sleepers`: also write garbage into the group's sleepers count between pops
// (an otherwise honest consumer with one stray pointer).
int run_consumer(Shared& sh, ConsumerReport& me, const Params& p, const std::string& group,
                 Mode mode, bool scribble_sleepers) {
  if (!wait_flag(sh.ring_ready, sh, kStartDeadline) || sh.ring_ready != 1) {
    note(me.note, "no ring");
    me.attached = 2;
    return 2;
  }
  auto attached = Consumer::attach({.ns = p.ns,
                                    .partition = 0,
                                    .group = group,
                                    .mode = mode,
                                    .group_settings = {.lease_window = p.b_window}});
  if (!attached) {
    note(me.note, "attach: %s", attached.error().message.c_str());
    me.attached = 2;
    return 3;
  }
  Consumer& c = *attached.value();
  me.attached = 1;
  std::atomic<std::uint32_t>* sleepers = nullptr;
  if (scribble_sleepers) {
    const std::string path = std::string(shm::kShmDir) + shm::group_segment_name(p.ns, 0, group);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    void* map = fd < 0 ? MAP_FAILED
                       : ::mmap(nullptr, sizeof(shm::GroupControl), PROT_READ | PROT_WRITE,
                                MAP_SHARED, fd, 0);
    if (fd >= 0) ::close(fd);
    if (map == MAP_FAILED) {
      note(me.note, "cannot map %s", path.c_str());
      me.finished = 2;
      return 4;
    }
    sleepers = &static_cast<shm::GroupControl*>(map)->sleepers;
  }
  std::mt19937_64 rng(mix(p.seed) ^ 0x534c454550ull);
  std::uint64_t expected = 0;
  const auto deadline = Clock::now() + kStartDeadline + kPublishDeadline;
  auto fail = [&](int rc) {
    me.finished = 2;
    return rc;
  };
  while (expected < p.messages) {
    if (sleepers != nullptr && rng() % 4 == 0) {
      static constexpr std::uint32_t kHuge[] = {0xffffffffu, 0x80000000u, 0x7fffffffu, 0u};
      const std::uint32_t v = rng() % 2 == 0 ? kHuge[rng() % 4] : static_cast<std::uint32_t>(rng());
      sleepers->store(v, std::memory_order_relaxed);
    }
    if (Clock::now() > deadline || sh.stop != 0) {
      note(me.note, "stalled at offset %llu (writer published %llu)",
           static_cast<unsigned long long>(expected),
           static_cast<unsigned long long>(sh.published.load()));
      return fail(5);
    }
    const ringfeed::Batch& b = c.pop(64, 20ms);
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      note(me.note, "pop at offset %llu: %s", static_cast<unsigned long long>(expected),
           to_string(b.status()));
      return fail(6);
    }
    for (const ringfeed::Message& m : b) {
      if (!check_message(m, p.seed, expected, me.note)) return fail(7);
      ++expected;
    }
    if (c.ack(b) != ringfeed::AckStatus::ok) {
      note(me.note, "ack refused at offset %llu", static_cast<unsigned long long>(expected));
      return fail(8);
    }
    me.received = expected;
  }
  // Everything arrived; anything more would be a duplicate.
  const ringfeed::Batch& extra = c.pop(64, 0ns);
  if (extra.status() == PopStatus::ok) {
    note(me.note, "an extra message after all %llu: offset %llu",
         static_cast<unsigned long long>(p.messages),
         static_cast<unsigned long long>(extra[0].offset()));
    return fail(9);
  }
  me.finished = 1;
  return 0;
}

// ---------------------------------------------------------------------------------------
// The misbehaving process.

// Where the fields of a group segment are (layout 2; segment_test.cpp pins the numbers).
constexpr std::size_t kOffName = offsetof(shm::GroupControl, name);
constexpr std::size_t kOffMode = offsetof(shm::GroupControl, mode);
constexpr std::size_t kOffMaxDeliveries = offsetof(shm::GroupControl, max_deliveries);
constexpr std::size_t kOffLeaseMs = offsetof(shm::GroupControl, lease_ms);
constexpr std::size_t kOffEpochNs = offsetof(shm::GroupControl, epoch_ns);
constexpr std::size_t kOffHolder = offsetof(shm::GroupControl, holder);
constexpr std::size_t kOffLowWatermark = offsetof(shm::GroupControl, low_watermark);
constexpr std::size_t kOffSleepers = offsetof(shm::GroupControl, sleepers);
constexpr std::size_t kOffFenced = offsetof(shm::GroupControl, fenced);
constexpr std::size_t kOffDispatch = offsetof(shm::GroupControl, dispatch);
constexpr std::size_t kOffLowSeq = offsetof(shm::GroupControl, low_seq);
constexpr std::size_t kOffRedeliveries = offsetof(shm::GroupControl, redeliveries);
constexpr std::size_t kOffSlots = offsetof(shm::GroupControl, slots);
constexpr std::size_t kControlBytes = sizeof(shm::GroupControl);  // the lease table follows

class Scribbler {
 public:
  // `group` maps `bytes` of B's segment: the control block and `window` lease words.
  Scribbler(std::uint64_t seed, void* group, std::size_t bytes, std::uint32_t window,
            const shm::RingReader& ring, pid_t writer_pid)
      : rng_(seed),
        base_(static_cast<unsigned char*>(group)),
        leases_(std::min<std::uint64_t>(window, (bytes - kControlBytes) / 8)),
        window_(window),
        ring_(ring),
        writer_owner_(shm::pack_owner({writer_pid, shm::process_start_time(writer_pid)})),
        self_owner_(shm::pack_owner(shm::self_identity())) {
    std::memcpy(header_, base_, sizeof header_);
    std::memcpy(&epoch_ns_, base_ + kOffEpochNs, sizeof epoch_ns_);
  }

  // Wild: any bits at all. Otherwise plausible: every value is one a correct consumer
  // could have stored (aligned positions the writer has published, sequences near what
  // it published, valid header words, modes, settings and lease words), so the writer
  // keeps honouring the group while its state is nonsense.
  void set_wild(bool wild) { wild_ = wild; }

  // Every field of the segment, padding and the whole lease table included.
  void everything() {
    if (wild_) {
      for (std::size_t off = 0; off < kControlBytes; off += 8) store64(off, rng_());
      for (std::uint64_t i = 0; i < leases_; ++i) store64(kControlBytes + 8 * i, rng_());
      for (int i = 0, n = static_cast<int>(rng_() % 8); i < n; ++i) one_field();
      return;
    }
    for (std::size_t off = 0; off < 64; off += 8) store64(off, header_word(off));
    for (std::size_t off = kOffName; off < kOffMode; off += 8) store64(off, rng_());  // any bytes
    store32(kOffMode, mode());
    settings();
    store64(kOffHolder, owner());
    store64(kOffLowWatermark, position());
    store32(kOffSleepers, sleepers());
    store32(kOffFenced, static_cast<std::uint32_t>(rng_() % 2));
    store64(kOffDispatch, sequence());
    store64(kOffLowSeq, sequence());
    store32(kOffRedeliveries, redeliveries());
    for (std::size_t slot = kOffSlots; slot < kControlBytes; slot += 64) {
      store64(slot, owner());
      store64(slot + 8, position());
      for (std::size_t pad = 16; pad < 64; pad += 8) store64(slot + pad, rng_());
    }
    for (std::uint64_t i = 0; i < leases_; ++i) store64(kControlBytes + 8 * i, lease(i));
  }

  // One field (or one run of lease words), chosen at random.
  void one_field() {
    switch (rng_() % 16) {
      case 0: {
        const std::size_t off = 8 * (rng_() % 8);
        store64(off, wild_ && rng_() % 2 ? rng_() : header_word(off));
        break;
      }
      case 1:
        store64(kOffName + 8 * (rng_() % 7), rng_());
        break;
      case 2:
        store32(kOffMode, mode());
        break;
      case 3:
        settings();
        break;
      case 4:
        store64(kOffHolder, owner());
        break;
      case 5:
        store64(kOffLowWatermark, position());
        break;
      case 6:
        store32(kOffSleepers, sleepers());
        break;
      case 7:  // fenced: "I am fine", or anything
        store32(kOffFenced, static_cast<std::uint32_t>(rng_() % 2 ? 0 : wild_ ? rng_() : 1));
        break;
      case 8:
        store64(kOffDispatch, sequence());
        break;
      case 9:
        store64(kOffLowSeq, sequence());
        break;
      case 10:
        store32(kOffRedeliveries, redeliveries());
        break;
      case 11:
      case 12: {  // a run of lease words, where the group is working or anywhere
        const std::uint64_t from =
            rng_() % 2 ? load64(kOffLowSeq) + rng_() % 8 - 4 : static_cast<std::uint64_t>(rng_());
        for (std::uint64_t i = 0, n = 1 + rng_() % 16; i < n && leases_ != 0; ++i) {
          const std::uint64_t entry = (from + i) % leases_;
          store64(kControlBytes + 8 * entry, lease(from + i));
        }
        break;
      }
      default: {
        const std::size_t slot = kOffSlots + 64 * (rng_() % shm::kGroupSlots);
        if (rng_() % 2) store64(slot, owner());
        if (rng_() % 2) store64(slot + 8, position());
        if (rng_() % 4 == 0) store64(slot + 16 + 8 * (rng_() % 6), rng_());  // padding
      }
    }
  }

  void sleepers_only() { store32(kOffSleepers, sleepers()); }

 private:
  void store64(std::size_t off, std::uint64_t v) {
    __atomic_store_n(reinterpret_cast<std::uint64_t*>(base_ + off), v, __ATOMIC_RELAXED);
  }
  void store32(std::size_t off, std::uint32_t v) {
    __atomic_store_n(reinterpret_cast<std::uint32_t*>(base_ + off), v, __ATOMIC_RELAXED);
  }
  std::uint64_t load64(std::size_t off) const {
    return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(base_ + off), __ATOMIC_RELAXED);
  }
  // The word the segment's creator wrote at `off` of the header.
  std::uint64_t header_word(std::size_t off) const {
    std::uint64_t w = 0;
    std::memcpy(&w, header_ + off, sizeof w);
    return w;
  }
  std::uint32_t mode() {
    return static_cast<std::uint32_t>(wild_ && rng_() % 2 ? rng_() : 1 + rng_() % 5);
  }
  // max_deliveries, lease_ms, epoch_ns: written once by the creator, read by the writer
  // when it finds the group and by every consumer that attaches.
  void settings() {
    if (wild_) {
      store32(kOffMaxDeliveries, static_cast<std::uint32_t>(rng_()));
      store32(kOffLeaseMs, static_cast<std::uint32_t>(rng_()));
      static constexpr std::uint64_t kEdges[] = {1ull << 63, (1ull << 63) - 1, ~0ull, 0};
      store64(kOffEpochNs, rng_() % 2 ? kEdges[rng_() % 4] : rng_());
      return;
    }
    store32(kOffMaxDeliveries, static_cast<std::uint32_t>(1 + rng_() % shm::kMaxDeliveriesLimit));
    store32(kOffLeaseMs, static_cast<std::uint32_t>(1 + rng_() % 60'000));
    // Another creator's clock: a few seconds either way.
    store64(kOffEpochNs,
            static_cast<std::uint64_t>(epoch_ns_) + rng_() % 10'000'000'000 - 5'000'000'000);
  }
  std::uint64_t owner() {
    switch (rng_() % (wild_ ? 5 : 4)) {
      case 0:
        return 0;
      case 1:
        return writer_owner_;  // alive: the writer will not reap it
      case 2:
        return self_owner_;
      case 3:
        return static_cast<std::uint64_t>(rng_() % 4194304) << 32;  // some pid, wrong start
      default:
        return rng_();
    }
  }
  // Positions around the writer's. Plausible: at it, behind it (honoured: holds space
  // until moved), at the oldest data, at 0 (below what was reused). Wild adds just past
  // it, misaligned, and far away.
  std::uint64_t position() {
    const auto& control = ring_.control();
    const std::uint64_t end = control.write_pos.load(std::memory_order_acquire);
    const std::uint64_t back = 32 * (rng_() % (kRingCapacity / 32));
    switch (rng_() % (wild_ ? 9 : 6)) {
      case 0:
      case 1:
        return end;
      case 2:
        return end > back ? end - back : 0;
      case 3:
        return control.reusable.load(std::memory_order_acquire) & ~std::uint64_t{31};
      case 4:
        return control.tail.load(std::memory_order_acquire) & ~std::uint64_t{31};
      case 5:
        return 0;
      case 6:
        return end + 32;
      case 7:
        return end | 1;
      default:
        return rng_() % 2 ? UINT64_MAX : rng_();
    }
  }
  // Message sequences (dispatch, low_seq) around the writer's. Plausible: what it has
  // published, a little or up to a window behind, where the group is. Wild adds past it,
  // far away, and now and then "not started" (a consumer that attaches then waits a while
  // for a creator that will never start the group).
  std::uint64_t sequence() {
    const std::uint64_t published = ring_.published();
    const std::uint64_t back = rng_() % (std::uint64_t{window_} + 1);
    switch (rng_() % (wild_ ? 10 : 6)) {
      case 0:
      case 1:
        return published;
      case 2:
        return published > back ? published - back : 0;
      case 3:
        return load64(kOffLowSeq);
      case 4:
        return load64(kOffDispatch);
      case 5:
        return published > 8 ? published - rng_() % 8 : 0;
      case 6:
        return published + 1 + rng_() % 1000;
      case 7:
        return published + window_ + 1;
      case 8:
        return rng_() % 16 == 0 ? shm::kNotStarted : rng_();
      default:
        return rng_();
    }
  }
  std::uint32_t redeliveries() {
    static constexpr std::uint32_t kValues[] = {0u, 1u, 0xffffffffu, 0x80000000u};
    return rng_() % 2 ? kValues[rng_() % 4]
                      : static_cast<std::uint32_t>(rng_() % (wild_ ? ~0u : 64));
  }
  // A lease word for sequence `seq`. Plausible: any state with the right or the previous
  // lap's parity, a delivery count up to the limit, any owner slot, a deadline passed or
  // to come. Wild: any bits.
  std::uint64_t lease(std::uint64_t seq) {
    if (wild_) return rng_();
    shm::Lease l;
    l.state = static_cast<shm::LeaseState>(rng_() % 4);
    l.parity = static_cast<std::uint32_t>((seq / window_) & 1) ^ (rng_() % 4 == 0 ? 1u : 0u);
    l.deliveries = static_cast<std::uint32_t>(rng_() % (shm::kMaxDeliveriesLimit + 1));
    l.owner = static_cast<std::uint32_t>(rng_() % shm::kGroupSlots);
    l.generation = static_cast<std::uint32_t>(rng_());
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const std::int64_t now = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    const std::uint32_t now_ms = shm::LeaseTable::to_lease_ms(now, epoch_ns_);
    l.deadline_ms = now_ms - 10'000 + static_cast<std::uint32_t>(rng_() % 70'000);
    return l.pack();
  }
  std::uint32_t sleepers() {
    static constexpr std::uint32_t kValues[] = {0xffffffffu, 0x80000000u, 1u, 0u};
    return rng_() % 2 ? kValues[rng_() % 4] : static_cast<std::uint32_t>(rng_());
  }

  std::mt19937_64 rng_;
  bool wild_ = true;
  unsigned char* base_;
  std::uint64_t leases_;  // lease words mapped
  std::uint32_t window_;
  unsigned char header_[64];
  std::int64_t epoch_ns_ = 0;  // the creator's, read before any scribbling
  const shm::RingReader& ring_;
  std::uint64_t writer_owner_;
  std::uint64_t self_owner_;
};

// What B does with a message it popped from a shared group: mostly acks it, sometimes
// gives it back or holds on (shared groups only; other modes ack or hold).
void settle(Consumer& c, const ringfeed::Batch& b, std::mt19937_64& rng, Mode mode) {
  if (mode != Mode::shared) {
    if (rng() % 3 != 0) (void)c.ack(b);
    return;
  }
  for (const ringfeed::Message& m : b) {
    switch (rng() % 8) {
      case 0:
        (void)c.nack(m, std::chrono::milliseconds(rng() % 3));
        break;
      case 1:
        (void)c.release(m);
        break;
      case 2:
        (void)c.reject(m);
        break;
      case 3:
        (void)c.extend(m, std::chrono::milliseconds(rng() % 100));
        break;
      case 4:
        break;  // held until it expires or B leaves
      default:
        (void)c.ack(m);
    }
  }
}

int run_misbehaving(Shared& sh, const Params& p) {
  if (!wait_flag(sh.ring_ready, sh, kStartDeadline) || sh.ring_ready != 1) {
    note(sh.b.note, "no ring");
    sh.b.attached = 2;
    return 2;
  }
  auto attach_b = [&](Mode mode) {
    return Consumer::attach({.ns = p.ns,
                             .partition = 0,
                             .group = "B",
                             .mode = mode,
                             .group_settings = {.lease_window = p.b_window}});
  };
  auto first = attach_b(p.b_mode);
  if (!first) {
    note(sh.b.note, "first attach: %s", first.error().message.c_str());
    sh.b.attached = 2;
    return 3;
  }
  std::unique_ptr<Consumer> c = std::move(first.value());
  auto ring = shm::RingReader::open(p.ns, 0);
  const std::string path = std::string(shm::kShmDir) + shm::group_segment_name(p.ns, 0, "B");
  // The whole segment, lease table included, at the size it has now (B created it).
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  struct stat st {};
  const std::size_t bytes =
      fd >= 0 && ::fstat(fd, &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
  void* map = fd < 0 || bytes < kControlBytes
                  ? MAP_FAILED
                  : ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (fd >= 0) ::close(fd);
  if (!ring || map == MAP_FAILED) {
    note(sh.b.note, "cannot map the ring or %s (%zu bytes)", path.c_str(), bytes);
    sh.b.attached = 2;
    return 4;
  }
  const std::uint32_t window = p.b_mode == Mode::shared ? p.b_window : 1;
  if (bytes != shm::group_segment_size(window)) {
    note(sh.b.note, "%s has %zu bytes, expected %llu", path.c_str(), bytes,
         static_cast<unsigned long long>(shm::group_segment_size(window)));
    sh.b.attached = 2;
    return 4;
  }
  std::mt19937_64 rng(mix(p.seed) ^ 0x4241444241ull);
  Scribbler scribble(rng(), map, bytes, window, ring.value(), ring->writer_pid());
  scribble.set_wild(p.plausible_rounds == 0);
  if (p.b_scribbles_early) scribble.everything();
  sh.b.attached = 1;
  if (!wait_flag(sh.go, sh, kStartDeadline)) {
    note(sh.b.note, "the writer never started");
    return 5;
  }

  const auto deadline = Clock::now() + kPublishDeadline + 10s;
  for (std::uint64_t round = 0; sh.writer_done == 0 && sh.stop == 0 && Clock::now() < deadline;
       ++round) {
    ++sh.rounds;
    if (round == p.plausible_rounds) scribble.set_wild(true);
    switch (rng() % 10) {
      case 0:
        scribble.everything();
        ++sh.scribbles;
        break;
      case 1:
      case 2:
        scribble.one_field();
        ++sh.scribbles;
        break;
      case 3:
        scribble.sleepers_only();
        ++sh.scribbles;
        break;
      case 4:
      case 5:
      case 6:
        if (c) {
          ++sh.pops;
          const auto wait = std::chrono::microseconds(rng() % 2000);
          const ringfeed::Batch& b = c->pop(1 + rng() % 64, wait);
          sh.popped += b.size();
          if (b.status() == PopStatus::fenced) ++sh.fenced_pops;
          if (b.status() == PopStatus::corrupt) ++sh.corrupt_pops;
          settle(*c, b, rng, c->options().mode);
        }
        break;
      case 7: {
        // Leave and come back, sometimes in another mode: refusals must be values.
        c.reset();
        const Mode mode = rng() % 4 == 0 ? kModes[rng() % 3] : p.b_mode;
        auto again = attach_b(mode);
        if (again) {
          c = std::move(again.value());
          ++sh.reattach_ok;
        } else {
          ++sh.reattach_refused;
        }
        break;
      }
      default:
        // A random moment: a pause that ends early when the writer is done.
        ringfeed::test::wait_until([&] { return sh.writer_done != 0 || sh.stop != 0; },
                                   std::chrono::milliseconds(rng() % 4));
    }
  }
  c.reset();
  ::munmap(map, bytes);
  return 0;
}

// ---------------------------------------------------------------------------------------
// The parent.

struct SeedResult {
  Outcome b_outcome = Outcome::unknown;
};

Shared* map_shared() {
  void* m =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  return new (m) Shared{};
}

// Runs one seed: the writer, A, and B (misbehaving, or honest but scribbling sleepers).
SeedResult run_seed(const Params& p, bool sleepers_only) {
  SeedResult result;
  Shared* sh = map_shared();
  EXPECT_NE(sh, nullptr);
  if (sh == nullptr) return result;
  // A consumer process says it finished however it returns, so the writer never waits
  // for one that already left.
  auto reporting = [](ConsumerReport& me, int rc) {
    if (me.finished == 0) me.finished = rc == 0 ? 1 : 2;
    return rc;
  };
  const pid_t writer = ringfeed::test::fork_child([&] { return run_writer(*sh, p); });
  const pid_t a = ringfeed::test::fork_child(
      [&] { return reporting(sh->a, run_consumer(*sh, sh->a, p, "A", Mode::exclusive, false)); });
  const pid_t b = ringfeed::test::fork_child([&] {
    return reporting(sh->b, sleepers_only ? run_consumer(*sh, sh->b, p, "B", p.b_mode, true)
                                          : run_misbehaving(*sh, p));
  });
  const auto budget = std::chrono::duration_cast<std::chrono::milliseconds>(kStartDeadline +
                                                                            kPublishDeadline + 30s);
  const int rc_writer = ringfeed::test::wait_child(writer, budget);
  sh->stop = 1;  // whatever happened, nobody needs to wait for the writer any more
  const int rc_a = ringfeed::test::wait_child(a, 30s);
  const int rc_b = ringfeed::test::wait_child(b, 30s);

  EXPECT_EQ(rc_writer, 0) << "writer (exit " << rc_writer
                          << ", -1 = crashed or killed): " << sh->writer_note;
  EXPECT_EQ(rc_a, 0) << "consumer A (exit " << rc_a << "): " << sh->a.note;
  EXPECT_EQ(sh->a.received.load(), p.messages) << "consumer A: " << sh->a.note;
  if (sleepers_only) {
    EXPECT_EQ(rc_b, 0) << "consumer B (exit " << rc_b << "): " << sh->b.note;
    EXPECT_EQ(sh->b.received.load(), p.messages) << "consumer B: " << sh->b.note;
    EXPECT_EQ(static_cast<Outcome>(sh->b_outcome.load()), Outcome::honoured)
        << "sleepers garbage must not fence a group: " << sh->b_outcome_note;
    // What a huge sleepers count costs: wake calls nobody needed, nothing else.
    EXPECT_GT(sh->writer_wakes.load(), 0u);
  } else {
    EXPECT_EQ(rc_b, 0) << "misbehaving B (exit " << rc_b
                       << ", -1 = crashed or killed): " << sh->b.note;
  }
  result.b_outcome = static_cast<Outcome>(sh->b_outcome.load());
  if (!sleepers_only) {
    std::printf(
        "seed %llu: B %s%s, %s%s, %llu plausible rounds; %llu rounds, %llu scribbles, %llu pops "
        "(%llu messages, "
        "%llu fenced, %llu corrupt), re-attach %llu ok / %llu refused\n",
        static_cast<unsigned long long>(p.seed), std::string(to_string(p.b_mode)).c_str(),
        p.b_mode == Mode::shared ? (" (window " + std::to_string(p.b_window) + ")").c_str() : "",
        to_string(result.b_outcome), p.b_scribbles_early ? " (scribbled early)" : "",
        static_cast<unsigned long long>(p.plausible_rounds),
        static_cast<unsigned long long>(sh->rounds.load()),
        static_cast<unsigned long long>(sh->scribbles.load()),
        static_cast<unsigned long long>(sh->pops.load()),
        static_cast<unsigned long long>(sh->popped.load()),
        static_cast<unsigned long long>(sh->fenced_pops.load()),
        static_cast<unsigned long long>(sh->corrupt_pops.load()),
        static_cast<unsigned long long>(sh->reattach_ok.load()),
        static_cast<unsigned long long>(sh->reattach_refused.load()));
    if (sh->b_outcome_note[0] != '\0') std::printf("  writer on B: %s\n", sh->b_outcome_note);
  }
  // The writer removes its segments when it exits cleanly; after a crash, the test does.
  for (const auto& name : shm::Segment::list("ringfeed." + p.ns + ".")) {
    if (rc_writer == 0) ADD_FAILURE() << "left behind: " << name;
    shm::Segment::remove(name);
  }
  sh->~Shared();
  ::munmap(sh, sizeof(Shared));
  return result;
}

std::vector<std::uint64_t> seeds(std::uint64_t default_count) {
  if (const char* one = std::getenv("RINGFEED_FUZZ_SEED"); one != nullptr && *one != '\0') {
    return {std::strtoull(one, nullptr, 10)};
  }
  std::vector<std::uint64_t> out;
  for (std::uint64_t s = 1; s <= env_or("RINGFEED_FUZZ_SEEDS", default_count); ++s)
    out.push_back(s);
  return out;
}

Params params_for(std::uint64_t seed, std::uint64_t messages) {
  const std::uint64_t h = mix(seed);
  return {.seed = seed,
          .ns = ringfeed::test::unique_ns("fuzz" + std::to_string(seed)),
          .messages = messages,
          // Every three consecutive seeds cover the three modes.
          .b_mode = kModes[seed % 3],
          .b_window = kWindows[(seed / 3) % 4],  // the shared seeds take each in turn
          .b_scribbles_early = (h >> 1) % 4 == 0,
          // Half the seeds start plausible (the writer honours B while B's state is
          // nonsense and may hold space), for up to a few hundred rounds.
          .plausible_rounds = (h >> 3) % 2 == 0 ? 0 : 50 + (h >> 4) % 400};
}

TEST(Garbage, ScribblingConsumerNeverHurtsTheWriterOrAnotherGroup) {
  const std::uint64_t n = env_or("RINGFEED_FUZZ_MESSAGES", kDefaultMessages);
  int outcomes[3][5] = {};  // by B's mode (exclusive, broadcast, shared) and outcome
  for (std::uint64_t seed : seeds(20)) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (rerun with RINGFEED_FUZZ_SEED=" + std::to_string(seed) + ")");
    const Params p = params_for(seed, n);
    const SeedResult r = run_seed(p, false);
    ++outcomes[seed % 3][static_cast<int>(r.b_outcome)];
    if (HasFatalFailure()) return;
  }
  for (int m = 0; m < 3; ++m) {
    const int* o = outcomes[m];
    std::printf("group B %s: %d fenced, %d honoured, %d rejected, %d never seen\n",
                std::string(to_string(kModes[m])).c_str(), o[static_cast<int>(Outcome::fenced)],
                o[static_cast<int>(Outcome::honoured)], o[static_cast<int>(Outcome::rejected)],
                o[static_cast<int>(Outcome::unseen)]);
  }
}

TEST(Garbage, SleepersGarbageOnlyCausesExtraWakes) {
  // B consumes honestly but keeps writing huge (and zero) sleeper counts: the writer may
  // wake more often, must not fence B, and both groups get everything. B is exclusive,
  // broadcast or shared (a shared B alone gets every message once, in order, too).
  const std::uint64_t n = env_or("RINGFEED_FUZZ_MESSAGES", kDefaultMessages) / 2;
  for (std::uint64_t seed : seeds(4)) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (rerun with RINGFEED_FUZZ_SEED=" + std::to_string(seed) + ")");
    Params p = params_for(seed, n);
    p.b_scribbles_early = false;
    run_seed(p, true);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
