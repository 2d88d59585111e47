#include "ringfeed/fetcher.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <utility>

#include "group_list.hpp"
#include "ringfeed/dead_letter_log.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"
#include "shm/ring_writer.hpp"
#include "shm/segment.hpp"

namespace ringfeed {

namespace {

using namespace std::chrono_literals;

// The fetcher sleeps in the source's poll until records come, wake() is called, a ring
// sees a group appear (the source watches each ring's group_watch_fd), or the next thing
// that is due: a reaper pass (RingWriter::next_service_ns), a commit while something
// published is not committed yet, a look for space while a partition waits for it.
constexpr std::int64_t kNever = INT64_MAX;
// The longest it sleeps all the same: a pass over everything at least this often.
constexpr std::int64_t kMaxSleepNs = 1'000'000'000;
// While a partition waits for ring space that a group may release: how often to look.
// From kPausedRetryMinNs, doubling up to kPausedRetryMaxNs while no space comes back;
// shorter waits than a millisecond (the poll's unit) are slept outside the poll.
constexpr std::int64_t kPausedRetryMinNs = 50'000;
constexpr std::int64_t kPausedRetryMaxNs = 1'000'000;
// After records were published, a reaper pass this soon at the latest (consumers of a
// leased group take them without saying so; the pass starts checking their liveness).
// While records keep coming, the reaper runs this often.
constexpr std::int64_t kPublishedServiceNs = 2'000'000;
// At stop: how long the source may take to make the last commits durable.
constexpr std::chrono::milliseconds kFlushTimeout{5000};
// With a source that cannot watch the rings' descriptors: how often to look for groups.
constexpr std::int64_t kGroupLookNs = 100'000'000;
// Creating the status segment: how often to go round "exists -> its fetcher died ->
// removed -> create" before giving up (only concurrent starts make it go round).
constexpr int kCreateAttempts = 4;

std::int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// NUL-padded copy into a fixed array of shared memory; always leaves a final NUL.
void put_text(char* dst, std::size_t size, std::string_view text) {
  const std::size_t n = std::min(text.size(), size - 1);
  std::memcpy(dst, text.data(), n);
  std::memset(dst + n, 0, size - n);
}

// scheme://user:password@host... -> scheme://host...: the status segment is readable by
// whoever may run `ringfeed stat`, and credentials do not belong there.
std::string without_credentials(std::string_view uri) {
  const std::size_t scheme = uri.find("://");
  if (scheme == std::string_view::npos) return std::string(uri);
  const std::size_t host = scheme + 3;
  const std::size_t end = std::min(uri.find_first_of("/?", host), uri.size());
  const std::size_t at = uri.rfind('@', end == 0 ? 0 : end - 1);
  if (at == std::string_view::npos || at < host) return std::string(uri);
  return std::string(uri.substr(0, host)) + std::string(uri.substr(at + 1));
}

// file:DIR[?...] -> DIR/<ns>.dead-letters; any other source: ./<ns>.dead-letters.
std::string default_dead_letter_dir(const std::string& ns, std::string_view uri) {
  constexpr std::string_view kFile = "file:";
  if (uri.substr(0, kFile.size()) == kFile) {
    std::string_view dir = uri.substr(kFile.size());
    dir = dir.substr(0, dir.find('?'));
    if (!dir.empty()) return std::string(dir) + "/" + ns + ".dead-letters";
  }
  return ns + ".dead-letters";
}

// The fetcher's state directory (dead letters, the group list at a clean stop) is made
// when something is first stored there. A path where that cannot work (a missing parent,
// not a directory, not writable) is refused at start, not when the first dead letter or
// the stop needs it.
Status check_state_dir(const std::string& dir) {
  const auto refuse = [&](const std::string& why, int code) {
    return Error{"dead-letter directory " + dir + ": " + why, code};
  };
  struct stat st {};
  std::string writable = dir;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return refuse("not a directory", ENOTDIR);
  } else if (errno == ENOENT) {
    // Made later, in its parent ("a/b/" is b in a).
    std::string_view trimmed = dir;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.remove_suffix(1);
    const std::filesystem::path parent = std::filesystem::path(trimmed).parent_path();
    writable = parent.empty() ? "." : parent.string();
    if (::stat(writable.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return refuse("missing, and so is its parent directory " + writable, ENOENT);
    }
  } else {
    return refuse(std::strerror(errno), errno);
  }
  if (::access(writable.c_str(), W_OK | X_OK) != 0) {
    return refuse(writable + " is not writable: " + std::strerror(errno), errno);
  }
  return Ok{};
}

// The status segment `name` exists. Refuses if its fetcher lives; otherwise removes
// every segment of the namespace (rings and groups first, the fetcher segment last, so
// that the name keeps other starters out until the old state is gone). The groups of
// partitions below `partitions` go to `kept`, to be created again on the new rings.
//
// Two fetchers taking over at once must not remove each other's new segments: the
// takeover holds an flock on the old segment's file, and goes on only if the name still
// refers to that file once it has the lock. The lock goes away with the descriptor,
// also when this process dies.
Status take_over(const std::string& ns, const std::string& name, std::uint32_t partitions,
                 std::vector<std::vector<shm::KeptGroup>>& kept) {
  const std::string path = std::string(shm::kShmDir) + name;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Ok{};  // gone meanwhile: create again
    return Error{"cannot open " + path + ": " + std::strerror(errno), errno};
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::flock(fd, LOCK_EX) != 0) {
    return Error{"cannot lock " + path + ": " + std::strerror(errno), errno};
  }
  struct stat held {};
  struct stat named {};
  if (::fstat(fd, &held) != 0 || ::stat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
      held.st_dev != named.st_dev) {
    return Ok{};  // another starter replaced it while we waited: look again
  }
  shm::SegmentHeader h{};
  const ssize_t n = ::pread(fd, &h, sizeof h, 0);
  // A header that is not a fetcher's names nobody: such a segment is taken over like a
  // dead one (it cannot be served by anyone).
  const bool ours = n == static_cast<ssize_t>(sizeof h) && h.magic == shm::kMagic &&
                    h.kind == static_cast<std::uint32_t>(shm::SegmentKind::fetcher);
  if (ours && shm::owner_alive(shm::pack_owner({h.creator_pid, h.creator_start_time}))) {
    return Error{"namespace '" + ns + "' is served by fetcher pid " + std::to_string(h.creator_pid),
                 EBUSY};
  }
  kept.assign(partitions, {});
  for (std::uint32_t p = 0; p < partitions; ++p) kept[p] = shm::find_groups(ns, p);
  const std::string prefix = "ringfeed." + ns + ".";
  for (const std::string& other : shm::Segment::list(prefix)) {
    // Temporary names belong to creators mid-way; Segment::create removes its own.
    if (other != name && other.find(".tmp.") == std::string::npos) shm::Segment::remove(other);
  }
  shm::Segment::remove(name);
  return Ok{};
}

// Published records not yet known to be acked, in ring order: where each ends in the
// ring, and the upstream position to commit once every group is past that end. A queue
// in one vector: appended at the back, taken from the front.
class UnackedQueue {
 public:
  struct Entry {
    std::uint64_t ring_end;
    std::uint64_t next_offset;
  };
  bool empty() const { return head_ == entries_.size(); }
  const Entry& front() const { return entries_[head_]; }
  void push(std::uint64_t ring_end, std::uint64_t next_offset) {
    entries_.push_back({ring_end, next_offset});
  }
  void pop() {
    if (++head_ == entries_.size()) {
      entries_.clear();
      head_ = 0;
    } else if (head_ >= 4096 && head_ * 2 >= entries_.size()) {
      // Mostly taken: move the rest to the front, so the vector does not grow forever.
      entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

 private:
  std::vector<Entry> entries_;
  std::size_t head_ = 0;
};

class FetcherImpl final : public Fetcher, private io::BatchSink {
 public:
  FetcherImpl(const FetcherOptions& options, std::unique_ptr<io::Source> source)
      : options_(options), source_(std::move(source)) {}
  ~FetcherImpl() override {
    try {
      shutdown();
    } catch (...) {
      // Out of memory while removing names: the next fetcher takes the segments over.
    }
  }
  FetcherImpl(const FetcherImpl&) = delete;
  FetcherImpl& operator=(const FetcherImpl&) = delete;

  Status init();
  Status run(const std::atomic<bool>& stop) override;
  void wake() override { source_->wake(); }
  std::vector<PartitionStats> stats() const override;
  std::string source_warning() const override {
    std::lock_guard lock(warnings_mutex_);
    return source_warning_;
  }

 private:
  struct Partition {
    std::unique_ptr<shm::RingWriter> writer;
    shm::FetcherPartition* status = nullptr;
    UnackedQueue unacked;
    std::uint64_t reserved_end = 0;  // end of the last reservation (the writer's too)
    std::uint64_t fetched = 0;       // next_offset of the last record taken
    std::uint64_t messages = 0;
    std::uint64_t acked = 0;         // upstream position every group acked
    std::uint64_t committed = 0;     // upstream position committed
    std::uint64_t paused_limit = 0;  // reusable_below() when the ring refused a record
    std::size_t groups_seen = 0;
    std::optional<DeadLetterLog> dead_letters;
    bool dirty = false;  // reservations not yet committed to the ring
    bool paused = false;
    bool stopped = false;
    bool live_groups = false;  // some group is known and not fenced
    bool released = false;     // the upstream gives the partition to another host now
  };
  enum Warning { kSourceWarning, kCommitWarning, kDeadLetterWarning, kWarnings };

  std::size_t take(std::uint32_t index, std::span<const io::SourceRecord> records) override;
  void refuse_too_large(std::uint32_t index, const io::SourceRecord& r);
  bool fits_without_reuse(const Partition& p, std::uint64_t size) const;
  bool has_live_groups(Partition& p, bool recount);
  bool count_live_groups(Partition& p, bool recount);
  void pause(std::uint32_t index);
  void publish(std::uint32_t index);
  bool waiting_for_space() const;
  bool retry_paused();
  bool commit_pending() const;
  void commit_acked();
  void settle_acked(Partition& p, bool reap_dead);
  void check_stopped(std::uint32_t index);
  void note_source_warning();
  void stop_partition(std::uint32_t index, const std::string& why);
  bool store_dead_letter(std::uint32_t index, const shm::DeadLetter& letter);
  void set_warning(std::uint32_t index, Warning kind, std::string text);
  std::string joined_warning(std::uint32_t index, bool skip_source = false) const;
  void publish_warning(std::uint32_t index);
  void shutdown();

  FetcherOptions options_;
  std::unique_ptr<io::Source> source_;
  std::string dead_letter_dir_;
  // The fetcher's state beside the dead letters: the group list it leaves when it stops.
  std::string group_list_path() const { return dead_letter_dir_ + "/groups"; }
  shm::Segment status_segment_;
  shm::FetcherControl* control_ = nullptr;  // set once this process owns the namespace
  std::vector<Partition> parts_;
  std::size_t paused_count_ = 0;
  std::optional<Error> fatal_;
  bool ran_ = false;
  bool shut_down_ = false;

  mutable std::mutex warnings_mutex_;  // stats() may run on another thread
  std::vector<std::array<std::string, kWarnings>> warnings_;
  std::string source_warning_;
};

Status FetcherImpl::init() {
  const std::uint32_t n = source_->partitions();
  const std::string uri = without_credentials(source_->uri());
  dead_letter_dir_ = options_.dead_letter_dir.empty()
                         ? default_dead_letter_dir(options_.ns, source_->uri())
                         : options_.dead_letter_dir;
  if (Status ok = check_state_dir(dead_letter_dir_); !ok) return ok;

  // The status segment comes first: owning its name is owning the namespace.
  const std::string name = shm::fetcher_segment_name(options_.ns);
  const shm::ProcessIdentity self = shm::self_identity();
  auto fill = [&](std::byte* base) {
    auto* c = new (base) shm::FetcherControl{};
    c->header = shm::SegmentHeader{shm::kMagic,
                                   shm::kLayoutVersion,
                                   static_cast<std::uint32_t>(shm::SegmentKind::fetcher),
                                   shm::fetcher_segment_size(n),
                                   sizeof(shm::FetcherControl),
                                   n,
                                   self.pid,
                                   0,
                                   self.start_time,
                                   0};
    put_text(c->source, sizeof c->source, uri);
    // Consumers store dead letters there too: absolute, and whole or not at all.
    std::error_code ec;
    const std::string dir = std::filesystem::absolute(dead_letter_dir_, ec).string();
    if (!ec && dir.size() < sizeof c->dead_letter_dir) {
      put_text(c->dead_letter_dir, sizeof c->dead_letter_dir, dir);
    }
    shm::FetcherPartition* parts = shm::fetcher_partitions(c);
    for (std::uint32_t i = 0; i < n; ++i) {
      auto* p = new (&parts[i]) shm::FetcherPartition{};
      const std::uint64_t committed = source_->committed(i);
      p->fetched.store(committed, std::memory_order_relaxed);
      p->committed.store(committed, std::memory_order_relaxed);
      p->ring_capacity = options_.ring_bytes;
    }
  };
  // The groups to create again on the new rings: a dead fetcher's, from its segments;
  // else those of the last fetcher that stopped cleanly, from its group list.
  GroupList kept(n);
  bool took_over = false;
  for (int attempt = 0;; ++attempt) {
    auto seg = shm::Segment::create(name, shm::fetcher_segment_size(n), fill, options_.access);
    if (seg) {
      status_segment_ = std::move(seg.value());
      break;
    }
    if (seg.error().code != EEXIST || attempt + 1 >= kCreateAttempts) return seg.error();
    if (auto ok = take_over(options_.ns, name, n, kept); !ok) return ok.error();
    took_over = true;
  }
  if (!took_over) {
    auto listed = load_group_list(group_list_path(), n);
    if (!listed) {
      shm::Segment::remove(status_segment_.name());
      return listed.error();
    }
    kept = std::move(listed.value());
  }
  control_ = reinterpret_cast<shm::FetcherControl*>(status_segment_.base());

  parts_.resize(n);
  warnings_.resize(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    Partition& p = parts_[i];
    p.status = &shm::fetcher_partitions(control_)[i];
    auto w = shm::RingWriter::create({.ns = options_.ns,
                                      .partition = i,
                                      .capacity = options_.ring_bytes,
                                      .group_defaults = options_.group_defaults,
                                      .access = options_.access,
                                      .keep_groups = kept[i]});
    if (!w) return w.error();
    p.writer = std::move(w.value());
    p.writer->set_dead_letter_sink(
        [this, i](const shm::DeadLetter& letter) { return store_dead_letter(i, letter); });
    // Exclusive and broadcast consumers store their dead letters themselves: with an access
    // group, in logs the fetcher creates now and gives to the group (dead_letter_log.hpp).
    if (options_.access.shared()) {
      auto log = DeadLetterLog::open(dead_letter_dir_, i, options_.access.group);
      if (!log) return log.error();
      p.dead_letters.emplace(std::move(log.value()));
    }
    p.reserved_end = p.writer->write_pos();
    p.committed = p.status->committed.load(std::memory_order_relaxed);
    p.acked = p.committed;
    p.fetched = p.committed;
  }
  return Ok{};
}

// Where RingWriter::try_reserve would find room for a record of `size` bytes without
// reusing space (the same sum: padding to the lap's end, the record, the zeroed header
// after it).
bool FetcherImpl::fits_without_reuse(const Partition& p, std::uint64_t size) const {
  const std::uint64_t cap = p.writer->capacity();
  const std::uint64_t idx = p.reserved_end & (cap - 1);
  const std::uint64_t pad = idx + size > cap ? cap - idx : 0;
  return p.reserved_end + pad + size + sizeof(shm::RecordHeader) <=
         p.writer->reusable_below() + cap;
}

// Whether some group holds data on the ring. Without one the writer would reuse all the
// space, dropping records nobody took; the fetcher waits for a group instead.
bool FetcherImpl::has_live_groups(Partition& p, bool recount) {
  p.writer->poll_groups();
  return count_live_groups(p, recount);
}

// As has_live_groups, with the groups the writer knows already.
bool FetcherImpl::count_live_groups(Partition& p, bool recount) {
  const std::size_t n = p.writer->group_count();
  if (n == 0) {
    p.groups_seen = 0;
    p.live_groups = false;
  } else if (recount || n != p.groups_seen) {
    p.groups_seen = n;
    const auto groups = p.writer->groups();
    p.live_groups = std::any_of(groups.begin(), groups.end(),
                                [](const shm::GroupInfo& g) { return !g.fenced; });
  }
  return p.live_groups;
}

// The source's batch: each record is reserved in the ring and copied there once; the
// batch is published with one commit. (A source hands batches of its partitions in
// turns, so each ring is committed every few microseconds while records flow, and its
// spinning consumers find them before they go to sleep.)
std::size_t FetcherImpl::take(std::uint32_t index, std::span<const io::SourceRecord> records) {
  if (index >= parts_.size()) {
    if (!fatal_) {
      fatal_ = Error{"source " + source_->uri() + " handed out a record of partition " +
                         std::to_string(index) + " at offset " +
                         std::to_string(records.empty() ? 0 : records.front().upstream_offset) +
                         ", but serves " + std::to_string(parts_.size()) + " partitions",
                     EPROTO};
    }
    return 0;
  }
  Partition& p = parts_[index];
  if (p.stopped || records.empty()) return 0;
  p.dirty = true;  // a pause or a stop on the way publishes what came before it
  shm::RingWriter& w = *p.writer;
  const std::uint64_t max_size = shm::max_record_size(w.capacity());
  std::int64_t now_rt = 0;  // CLOCK_REALTIME for records without a time, read once a batch
  std::size_t n = 0;
  for (; n < records.size(); ++n) {
    const io::SourceRecord& r = records[n];
    if (r.key.size() > UINT32_MAX || r.value.size() > UINT32_MAX || r.headers.size() > UINT32_MAX)
        [[unlikely]] {
      refuse_too_large(index, r);
      break;
    }
    const auto key_len = static_cast<std::uint32_t>(r.key.size());
    const auto value_len = static_cast<std::uint32_t>(r.value.size());
    const auto headers_len = static_cast<std::uint32_t>(r.headers.size());
    const std::uint64_t size = shm::record_size(key_len, value_len, headers_len);
    if (size > max_size) [[unlikely]] {
      refuse_too_large(index, r);
      break;
    }
    if (!fits_without_reuse(p, size) && !has_live_groups(p, false)) {
      pause(index);
      break;
    }
    std::int64_t ts = r.timestamp_ns;
    if (ts == 0) [[unlikely]] {
      if (now_rt == 0) now_rt = clock_ns(CLOCK_REALTIME);
      ts = now_rt;
    }
    shm::Reservation res;
    const shm::PublishStatus st =
        w.try_reserve(key_len, value_len, r.upstream_offset, ts, res, headers_len);
    if (st != shm::PublishStatus::ok) [[unlikely]] {
      if (st == shm::PublishStatus::full) {
        pause(index);
      } else {
        refuse_too_large(index, r);
      }
      break;
    }
    if (key_len != 0) std::memcpy(res.key, r.key.data(), key_len);
    if (value_len != 0) std::memcpy(res.value, r.value.data(), value_len);
    if (headers_len != 0) std::memcpy(res.headers, r.headers.data(), headers_len);
    p.reserved_end = res.position + size;
    p.unacked.push(p.reserved_end, r.next_offset);
    p.fetched = r.next_offset;
    ++p.messages;
  }
  if (p.dirty) publish(index);
  return n;
}

// A record the ring can never take stops its partition.
void FetcherImpl::refuse_too_large(std::uint32_t index, const io::SourceRecord& r) {
  const std::uint64_t capacity = parts_[index].writer->capacity();
  if (r.key.size() > UINT32_MAX || r.value.size() > UINT32_MAX || r.headers.size() > UINT32_MAX) {
    stop_partition(
        index, "record at offset " + std::to_string(r.upstream_offset) + " is larger than 4 GiB");
    return;
  }
  stop_partition(
      index,
      "record at offset " + std::to_string(r.upstream_offset) + " (key " +
          std::to_string(r.key.size()) + " + value " + std::to_string(r.value.size()) + " bytes" +
          (r.headers.empty() ? std::string()
                             : " + headers " + std::to_string(r.headers.size()) + " bytes") +
          ") does not fit in a ring of " + std::to_string(capacity) +
          " bytes, which takes records up to " + std::to_string(shm::max_record_size(capacity)) +
          " bytes; give the rings more space");
}

// Publishes what was reserved (one commit per batch) and the counters that go with it.
void FetcherImpl::publish(std::uint32_t index) {
  Partition& p = parts_[index];
  p.dirty = false;
  p.writer->commit();
  p.status->fetched.store(p.fetched, std::memory_order_release);
  p.status->messages.store(p.messages, std::memory_order_release);
}

void FetcherImpl::pause(std::uint32_t index) {
  Partition& p = parts_[index];
  // Consumers can release space only for records they can see.
  if (p.dirty) publish(index);
  p.paused_limit = p.writer->reusable_below();
  p.status->ring_used.store(p.writer->write_pos() - p.paused_limit, std::memory_order_release);
  if (p.paused) return;
  p.paused = true;
  p.status->paused.store(1, std::memory_order_release);
  ++paused_count_;
}

// Whether a paused partition has a group that may release space (without one, it waits
// for a group to appear).
bool FetcherImpl::waiting_for_space() const {
  if (paused_count_ == 0) return false;
  return std::any_of(parts_.begin(), parts_.end(),
                     [](const Partition& p) { return p.paused && !p.stopped && p.live_groups; });
}

// Resumes a paused partition once its ring has released space since the refusal (the
// refused record itself is offered first; if it still does not fit, it pauses again).
// Whether some partition resumed.
bool FetcherImpl::retry_paused() {
  bool resumed = false;
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    Partition& p = parts_[i];
    if (!p.paused || p.stopped || !has_live_groups(p, false)) continue;
    p.writer->reclaim(true);
    if (p.writer->reusable_below() <= p.paused_limit) continue;
    p.paused = false;
    p.status->paused.store(0, std::memory_order_release);
    --paused_count_;
    source_->resume(i);
    resumed = true;
  }
  return resumed;
}

// Whether a commit pass has anything to do: records published that a group may ack, a
// commit that failed and is tried again, or one the source has not finished yet (whose
// position stat is to show once it has).
bool FetcherImpl::commit_pending() const {
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    const Partition& p = parts_[i];
    if ((p.live_groups && !p.unacked.empty()) || p.acked > p.committed ||
        source_->committed(i) < p.committed) {
      return true;
    }
  }
  return false;
}

// For each partition: what every group acked (the ring's reclaim limit passed the end of
// the record) is committed upstream. With no group on a ring nothing counts as acked.
void FetcherImpl::commit_acked() {
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    Partition& p = parts_[i];
    if (has_live_groups(p, true)) settle_acked(p, true);
    if (p.acked > p.committed) {
      if (auto ok = source_->commit(i, p.acked); ok) {
        p.committed = p.acked;
        set_warning(i, kCommitWarning, {});
      } else {
        set_warning(i, kCommitWarning, ok.error().message);  // tried again next time
      }
    }
    // What the source made durable (it may finish a commit in the background).
    p.status->committed.store(source_->committed(i), std::memory_order_release);
    p.status->ring_used.store(p.writer->write_pos() - p.writer->reusable_below(),
                              std::memory_order_release);
    check_stopped(i);
  }
  note_source_warning();
}

void FetcherImpl::note_source_warning() {
  std::string w = source_->warning();
  std::lock_guard lock(warnings_mutex_);
  if (w == source_warning_) return;
  control_->source_warning.store(w);  // for ringfeed stat too
  source_warning_ = std::move(w);
}

// What every group acked (the ring's reclaim limit, after a reclaim, passed the end of
// the record) leaves the unacked queue; the last one's next_offset becomes `acked`. Only
// for a ring with live groups: without one nothing counts as acked. `reap_dead`: also
// reap dead broadcast consumers (a /proc read each), as the commit passes do.
void FetcherImpl::settle_acked(Partition& p, bool reap_dead) {
  p.writer->reclaim(reap_dead);
  const std::uint64_t limit = p.writer->reusable_below();
  while (!p.unacked.empty() && p.unacked.front().ring_end <= limit) {
    p.acked = std::max(p.acked, p.unacked.front().next_offset);
    p.unacked.pop();
  }
}

// A partition the source stopped stops here too, with the source's reason.
void FetcherImpl::check_stopped(std::uint32_t index) {
  if (parts_[index].stopped) return;
  io::PartitionStatus s = source_->status(index);
  if (s.stopped) {
    stop_partition(index, s.error.empty() ? "the source stopped it" : s.error);
    return;
  }
  // Consumers that took everything learn that the partition went to another host.
  parts_[index].writer->set_released(!s.assigned);
  // A source that waits without stopping (an upstream server down) says why; so does one
  // whose partition went to another host, which ringfeed stat shows as a released ring,
  // not as held back.
  const bool released = !s.assigned;
  if (released != parts_[index].released) {
    std::lock_guard lock(warnings_mutex_);
    parts_[index].released = released;
    publish_warning(index);
  }
  set_warning(index, kSourceWarning, std::move(s.error));
}

void FetcherImpl::stop_partition(std::uint32_t index, const std::string& why) {
  Partition& p = parts_[index];
  if (p.stopped) return;
  if (p.dirty) publish(index);
  p.stopped = true;
  if (p.paused) {
    p.paused = false;
    p.status->paused.store(0, std::memory_order_release);
    --paused_count_;
  }
  // The text first, then the flag (release): a reader that sees the flag sees the text.
  put_text(p.status->error, sizeof p.status->error,
           "partition " + std::to_string(index) + " of " + source_->uri() + ": " + why);
  p.status->stopped.store(1, std::memory_order_release);
}

bool FetcherImpl::store_dead_letter(std::uint32_t index, const shm::DeadLetter& letter) {
  Partition& p = parts_[index];
  if (!p.dead_letters) {
    auto log = DeadLetterLog::open(dead_letter_dir_, index);
    if (!log) {
      set_warning(index, kDeadLetterWarning,
                  "dead letters held in the ring, cannot open the log: " + log.error().message);
      return false;
    }
    p.dead_letters.emplace(std::move(log.value()));
  }
  if (!p.dead_letters->append(letter)) {
    set_warning(index, kDeadLetterWarning,
                "dead letters held in the ring, cannot write " + p.dead_letters->path() + ": " +
                    p.dead_letters->last_error());
    return false;
  }
  set_warning(index, kDeadLetterWarning, {});
  p.status->dead_letters.fetch_add(1, std::memory_order_release);
  return true;
}

void FetcherImpl::set_warning(std::uint32_t index, Warning kind, std::string text) {
  std::lock_guard lock(warnings_mutex_);
  if (warnings_[index][kind] == text) return;
  warnings_[index][kind] = std::move(text);
  publish_warning(index);
}

// For ringfeed stat: what holds the partition back, in the fetcher's segment (the
// source's word on a partition this host does not hold is no such thing). Under
// warnings_mutex_.
void FetcherImpl::publish_warning(std::uint32_t index) {
  parts_[index].status->warning.store(joined_warning(index, parts_[index].released));
}

// The partition's warnings in one text, the source's left out if `skip_source`; under
// warnings_mutex_.
std::string FetcherImpl::joined_warning(std::uint32_t index, bool skip_source) const {
  std::string out;
  for (std::size_t k = 0; k < kWarnings; ++k) {
    const std::string& w = warnings_[index][k];
    if (w.empty() || (skip_source && k == kSourceWarning)) continue;
    if (!out.empty()) out += "; ";
    out += w;
  }
  return out;
}

Status FetcherImpl::run(const std::atomic<bool>& stop) {
  if (ran_) return Error{"Fetcher::run may be called only once", EINVAL};
  ran_ = true;
  // Groups are found through each ring's watch on the shm directory. A source that can
  // watch those descriptors ends its wait when one becomes readable; with any other,
  // the fetcher looks for groups every kGroupLookNs.
  bool watching = true;
  for (Partition& p : parts_) {
    watching = source_->watch_readable(p.writer->group_watch_fd()) && watching;
  }
  const std::int64_t commit_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.commit_interval).count();
  std::int64_t now = clock_ns(CLOCK_MONOTONIC);
  std::int64_t next_service = now;  // a pass at once: it says when the next one is due
  std::int64_t next_retry = now;
  std::int64_t retry_ns = kPausedRetryMinNs;
  std::int64_t next_commit = kNever;
  std::int64_t next_look = watching ? kNever : now + kGroupLookNs;
  Status result = Ok{};
  while (!stop.load(std::memory_order_acquire)) {
    std::int64_t wake_at = std::min({next_service, next_commit, next_look, now + kMaxSleepNs});
    const bool space = waiting_for_space() && next_retry < wake_at;
    if (space) wake_at = next_retry;
    const std::int64_t wait_ns = std::max<std::int64_t>(0, wake_at - now);
    // A look for space sooner than a millisecond: the source is asked without waiting and
    // the rest is slept here. Otherwise the poll waits, in whole milliseconds rounded up
    // (woken before a deadline, the loop would only sleep again).
    const bool short_wait = space && wait_ns < 1'000'000;
    const std::chrono::milliseconds timeout(short_wait ? 0 : (wait_ns + 999'999) / 1'000'000);
    auto polled = source_->poll_batches(*this, timeout);
    if (!polled) {
      result = polled.error();
      break;
    }
    if (fatal_) {
      result = *fatal_;
      break;
    }
    now = clock_ns(CLOCK_MONOTONIC);
    if (*polled > 0) {
      next_service = std::min(next_service, now + kPublishedServiceNs);
      if (next_commit == kNever) next_commit = now + commit_ns;
    } else if (short_wait) {
      if (now < wake_at && !stop.load(std::memory_order_relaxed)) {
        const std::int64_t left = wake_at - now;
        const timespec ts{0, static_cast<long>(left)};
        ::nanosleep(&ts, nullptr);
        now = clock_ns(CLOCK_MONOTONIC);
      }
    } else {
      // Woken early (wake(), a group's segment, a stopped partition, a signal) or at a
      // deadline: everything is looked at now.
      next_service = now;
      for (std::uint32_t i = 0; i < parts_.size(); ++i) check_stopped(i);
      note_source_warning();
    }
    if (now >= next_look) {
      next_service = now;
      next_look = now + kGroupLookNs;
    }
    const bool service = now >= next_service;
    if (service) {
      next_service = kNever;
      for (Partition& p : parts_) {
        p.writer->service(now);  // reads the group watch empty
        // The unacked queue is kept short between commits (while records flow, it would
        // grow by a few MB in a commit interval).
        if (count_live_groups(p, false) && !p.unacked.empty()) settle_acked(p, false);
        next_service = std::min(next_service, p.writer->next_service_ns(now));
      }
      if (next_commit == kNever && commit_pending()) next_commit = now + commit_ns;
    }
    if (paused_count_ > 0 && (service || now >= next_retry)) {
      retry_ns = retry_paused() ? kPausedRetryMinNs : std::min(2 * retry_ns, kPausedRetryMaxNs);
      next_retry = now + retry_ns;
    }
    if (now >= next_commit) {
      commit_acked();
      next_commit = commit_pending() ? now + commit_ns : kNever;
    }
  }
  commit_acked();
  // The groups outlive this fetcher: the next one creates them again (group_list.hpp).
  // Without groups there is nothing to keep (and no directory to make for it).
  GroupList groups(parts_.size());
  bool any_group = false;
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    groups[i] = shm::find_groups(options_.ns, i);
    any_group = any_group || !groups[i].empty();
  }
  Status saved = Ok{};
  if (any_group) {
    saved = save_group_list(group_list_path(), groups);
  } else if (::unlink(group_list_path().c_str()) != 0 && errno != ENOENT) {
    saved = Error{"cannot remove the group list " + group_list_path() + ": " + std::strerror(errno),
                  errno};
  }
  if (!saved && result.ok()) result = saved.error();
  // What every group acked is durable upstream before the rings go.
  if (auto flushed = source_->flush(kFlushTimeout); !flushed) {
    for (std::uint32_t i = 0; i < parts_.size(); ++i) {
      set_warning(i, kCommitWarning, flushed.error().message);
    }
    // Nothing is lost (what was not committed is fetched again after a restart), but the
    // stop did not do all it says.
    if (result.ok()) {
      result = Error{
          "not everything the groups acked could be committed at the stop (it "
          "comes again after a restart): " +
              flushed.error().message,
          flushed.error().code};
    }
  }
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    parts_[i].status->committed.store(source_->committed(i), std::memory_order_release);
  }
  shutdown();
  return result;
}

// Closes every ring (consumers see `closed` once they took what was published), then
// removes the rings with their groups, then the status segment. Its mapping stays, so
// stats() still answers.
void FetcherImpl::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  for (Partition& p : parts_) {
    if (p.writer) p.writer->close();
  }
  for (Partition& p : parts_) p.writer.reset();
  if (control_ != nullptr) shm::Segment::remove(status_segment_.name());
}

std::vector<PartitionStats> FetcherImpl::stats() const {
  std::vector<PartitionStats> out;
  if (control_ == nullptr) return out;
  const shm::FetcherPartition* parts = shm::fetcher_partitions(control_);
  out.reserve(parts_.size());
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    const shm::FetcherPartition& p = parts[i];
    PartitionStats s;
    s.partition = i;
    s.fetched = p.fetched.load(std::memory_order_acquire);
    s.committed = p.committed.load(std::memory_order_acquire);
    s.ring_used = p.ring_used.load(std::memory_order_acquire);
    s.ring_capacity = p.ring_capacity;
    s.messages = p.messages.load(std::memory_order_acquire);
    s.dead_letters = p.dead_letters.load(std::memory_order_acquire);
    s.paused = p.paused.load(std::memory_order_acquire) != 0;
    s.stopped = p.stopped.load(std::memory_order_acquire) != 0;
    if (s.stopped) s.error.assign(p.error, ::strnlen(p.error, sizeof p.error));
    {
      std::lock_guard lock(warnings_mutex_);
      s.warning = joined_warning(i);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

Status check_fetcher_options(const FetcherOptions& o) {
  if (auto ok = shm::check_name("namespace", o.ns); !ok) return ok.error();
  const std::uint64_t ring = o.ring_bytes;
  if (ring < shm::kMinRingCapacity || ring > shm::kMaxRingCapacity || (ring & (ring - 1)) != 0) {
    return Error{"ring size of " + std::to_string(ring) +
                     " bytes must be a power of two between 4 KiB and 1 TiB",
                 EINVAL};
  }
  if (o.partitions > shm::kMaxPartitions) {
    return Error{"partitions " + std::to_string(o.partitions) + " must be at most " +
                     std::to_string(shm::kMaxPartitions),
                 EINVAL};
  }
  const std::uint32_t window = o.group_defaults.lease_window;
  if (window != 0 && (window > shm::kMaxLeaseWindow || (window & (window - 1)) != 0)) {
    return Error{"lease window " + std::to_string(window) + " must be a power of two up to " +
                     std::to_string(shm::kMaxLeaseWindow),
                 EINVAL};
  }
  if (o.group_defaults.max_deliveries > shm::kMaxDeliveriesLimit) {
    return Error{"max deliveries " + std::to_string(o.group_defaults.max_deliveries) +
                     " must be between 1 and " + std::to_string(shm::kMaxDeliveriesLimit),
                 EINVAL};
  }
  constexpr std::uint32_t kDayMs = 24u * 3600 * 1000;
  if (o.group_defaults.lease_ms > kDayMs) {
    return Error{"lease of " + std::to_string(o.group_defaults.lease_ms) +
                     " ms must be at most one day (" + std::to_string(kDayMs) + " ms)",
                 EINVAL};
  }
  if (o.commit_interval.count() <= 0) {
    return Error{"commit interval must be at least 1 ms", EINVAL};
  }
  return Ok{};
}

Result<std::unique_ptr<Fetcher>> Fetcher::start(const FetcherOptions& options,
                                                std::unique_ptr<io::Source> source) {
  if (auto ok = check_fetcher_options(options); !ok) return ok.error();
  if (!source) return Error{"no source to fetch from", EINVAL};
  const std::uint32_t n = source->partitions();
  if (n == 0) {
    return Error{"source " + source->uri() + " has no partitions (file: no DIR/P.log files)",
                 ENOENT};
  }
  if (n > shm::kMaxPartitions) {
    return Error{"source " + source->uri() + " has " + std::to_string(n) +
                     " partitions, more than the " + std::to_string(shm::kMaxPartitions) +
                     " a namespace can serve",
                 EINVAL};
  }
  if (options.partitions != 0 && options.partitions != n) {
    return Error{"source " + source->uri() + " serves " + std::to_string(n) +
                     " partitions, not the " + std::to_string(options.partitions) + " asked for",
                 EINVAL};
  }
  auto f = std::make_unique<FetcherImpl>(options, std::move(source));
  if (auto ok = f->init(); !ok) return ok.error();
  return std::unique_ptr<Fetcher>(std::move(f));
}

}  // namespace ringfeed
