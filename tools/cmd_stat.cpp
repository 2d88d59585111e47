// ringfeed stat: what a namespace's fetcher, rings and groups are doing, read from their
// segments without touching them (every mapping is read-only, nothing is attached).
//
// Every value comes from memory other processes write and may be garbage: each is read
// once into a local, checked and clamped; loops are bounded by sizes this process
// validated (the lease window, the slot count), never by values read later.
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli_args.hpp"
#include "shm/fetcher_layout.hpp"
#include "shm/group.hpp"
#include "shm/group_layout.hpp"
#include "shm/lease.hpp"
#include "shm/lease_table.hpp"
#include "shm/mode.hpp"
#include "shm/names.hpp"
#include "shm/process.hpp"
#include "shm/ring_reader.hpp"
#include "shm/segment.hpp"

namespace ringfeed::cli {

namespace {

constexpr std::string_view kCommand = "stat";

constexpr Flag kFlags[] = {
    {"namespace", "NS", true, "namespace to show"},
    {"json", "", false, "one JSON object instead of tables"},
    {"prometheus", "", false, "the Prometheus text exposition format instead of tables"},
};

constexpr std::string_view kDescription =
    "Shows, per partition, the upstream positions fetched and committed (and why a\n"
    "stopped partition stopped, or what holds one back: an upstream server down, a commit\n"
    "that fails), how full its ring is and how many messages it published; the source's\n"
    "own warning, if any; per consumer group, its mode, consumers (pid, alive or dead,\n"
    "(active) for a failover group's, and pid:N for one holding N unacked messages, (full)\n"
    "once it reached its max_unacked limit), lag (messages in groups with leases, ring\n"
    "bytes in exclusive and broadcast groups), leases in flight, redeliveries waiting and\n"
    "dead letters waiting for the dead-letter log.\n"
    "Reads the segments read-only; exit 1 if the namespace has none.";

struct ConsumerInfo {
  pid_t pid = 0;
  bool alive = false;
  std::uint32_t unacked = 0;  // messages it holds (its registry slot)
  bool at_limit = false;      // its last pop found max_unacked reached
  bool active = false;        // failover: the live consumer that attached first takes all
};

struct GroupStat {
  std::string name;
  std::string error;  // the segment is unusable: why; nothing else is set
  Mode mode = Mode::exclusive;
  bool fenced = false;
  std::vector<ConsumerInfo> consumers;
  bool started = true;  // shared and failover: false until a consumer found its start
  bool lag_in_messages = false;
  std::uint64_t lag = 0;
  std::uint64_t leases_in_flight = 0;
  std::uint64_t redeliveries = 0;
  std::uint64_t dead_letters = 0;  // dead, waiting for the dead-letter log
};

struct PartitionStat {
  std::uint32_t partition = 0;

  bool in_fetcher = false;  // the fetcher segment has an entry for it
  std::uint64_t fetched = 0;
  std::uint64_t committed = 0;
  std::uint64_t dead_letters = 0;  // stored in the dead-letter log by the fetcher
  bool stopped = false;
  bool paused = false;
  std::string error;
  std::string warning;  // what holds it back without stopping it

  bool has_ring = false;
  std::string ring_error;      // a ring segment that cannot be read: why
  bool ring_open = false;      // not closed by its writer
  bool ring_released = false;  // open, but the partition went to another host
  pid_t writer_pid = 0;
  bool writer_alive = false;
  std::uint64_t write_pos = 0;
  std::uint64_t used = 0;
  std::uint64_t capacity = 0;
  std::uint64_t published = 0;

  std::vector<GroupStat> groups;
};

struct NamespaceStat {
  std::string ns;
  bool has_fetcher = false;
  std::string fetcher_error;  // a fetcher segment that cannot be read: why
  pid_t fetcher_pid = 0;
  bool fetcher_alive = false;
  std::string source;
  std::string source_warning;  // a problem of the whole source that stops nothing
  std::vector<PartitionStat> partitions;
};

// A NUL-padded text field of shared memory, bounded by its array (the writer may not
// have terminated it).
std::string bounded_text(const char* field, std::size_t size) {
  return std::string(field, ::strnlen(field, size));
}

PartitionStat& partition_entry(NamespaceStat& st, std::uint32_t p) {
  auto it = std::find_if(st.partitions.begin(), st.partitions.end(),
                         [&](const PartitionStat& s) { return s.partition == p; });
  if (it != st.partitions.end()) return *it;
  PartitionStat& s = st.partitions.emplace_back();
  s.partition = p;
  return s;
}

void read_fetcher(NamespaceStat& st) {
  auto seg = shm::Segment::open(shm::fetcher_segment_name(st.ns), shm::Access::read_only);
  if (!seg) {
    if (seg.error().code != ENOENT) {
      st.has_fetcher = true;
      st.fetcher_error = seg.error().message;
    }
    return;
  }
  st.has_fetcher = true;
  const auto header = *reinterpret_cast<const shm::SegmentHeader*>(seg->base());
  auto n = shm::validate_header(
      seg->name(), header, seg->size(),
      {shm::SegmentKind::fetcher, sizeof(shm::FetcherControl), header.partition});
  if (!n) {
    st.fetcher_error = n.error().message;
    return;
  }
  if (n.value() > shm::kMaxPartitions ||
      seg->size() != shm::fetcher_segment_size(static_cast<std::uint32_t>(n.value()))) {
    st.fetcher_error = "segment " + seg->name() + ": " + std::to_string(n.value()) +
                       " partitions do not match its size of " + std::to_string(seg->size()) +
                       " bytes";
    return;
  }
  st.fetcher_pid = header.creator_pid;
  st.fetcher_alive =
      shm::owner_alive(shm::pack_owner({header.creator_pid, header.creator_start_time}));
  const auto* control = reinterpret_cast<const shm::FetcherControl*>(seg->base());
  st.source = bounded_text(control->source, sizeof control->source);
  // A dead fetcher's warnings are stale; one being rewritten (or left half rewritten by a
  // fetcher that died in it) is left out.
  if (st.fetcher_alive) st.source_warning = control->source_warning.load().value_or("");
  const auto* parts = reinterpret_cast<const shm::FetcherPartition*>(control + 1);
  for (std::uint32_t p = 0; p < static_cast<std::uint32_t>(n.value()); ++p) {
    const shm::FetcherPartition& fp = parts[p];
    PartitionStat& s = partition_entry(st, p);
    s.in_fetcher = true;
    s.fetched = fp.fetched.load(std::memory_order_acquire);
    s.committed = fp.committed.load(std::memory_order_acquire);
    s.dead_letters = fp.dead_letters.load(std::memory_order_acquire);
    s.paused = fp.paused.load(std::memory_order_acquire) != 0;
    // acquire: the error text was written before `stopped` was set.
    s.stopped = fp.stopped.load(std::memory_order_acquire) != 0;
    if (s.stopped) s.error = bounded_text(fp.error, sizeof fp.error);
    if (st.fetcher_alive) s.warning = fp.warning.load().value_or("");
  }
}

std::uint64_t clamp_sub(std::uint64_t a, std::uint64_t b, std::uint64_t max) {
  return a > b ? std::min(a - b, max) : 0;
}

GroupStat read_group(const std::string& segment_name, std::string name, std::uint32_t partition,
                     const PartitionStat& ring) {
  GroupStat g;
  g.name = std::move(name);
  auto seg = shm::Segment::open(segment_name, shm::Access::read_only);
  if (!seg) {
    g.error = seg.error().message;
    return g;
  }
  auto shape = shm::validate_group_segment(seg.value(), partition);
  if (!shape) {
    g.error = shape.error().message;
    return g;
  }
  g.mode = shape->mode;
  const std::uint32_t window = shape->window;
  const auto* control = reinterpret_cast<const shm::GroupControl*>(seg->base());
  g.fenced = control->fenced.load(std::memory_order_acquire) != 0;

  // Consumers hold slots; an exclusive group's holder may hold one as well.
  std::vector<std::uint64_t> owners;
  auto add_consumer = [&](std::uint64_t owner, const shm::GroupSlot* slot) {
    if (owner == 0) return;
    auto known = std::find(owners.begin(), owners.end(), owner);
    if (known == owners.end()) {
      owners.push_back(owner);
      g.consumers.push_back({shm::owner_pid(owner), shm::owner_alive(owner)});
      known = owners.end() - 1;
    }
    if (slot != nullptr) {
      ConsumerInfo& c = g.consumers[static_cast<std::size_t>(known - owners.begin())];
      // Written by the consumer: a report, clamped to what max_unacked allows.
      c.unacked = std::min<std::uint32_t>(slot->unacked.load(std::memory_order_relaxed), 1u << 24);
      c.at_limit = (slot->flags.load(std::memory_order_relaxed) & shm::kSlotAtUnackedLimit) != 0;
    }
  };
  if (g.mode == Mode::exclusive) {
    add_consumer(control->holder.load(std::memory_order_acquire), nullptr);
  }
  // Failover: the live consumer with the lowest attach ticket (its slot's cursor; then
  // the lower slot) is the active one, as the consumers themselves decide.
  std::size_t active = SIZE_MAX;
  std::pair<std::uint64_t, std::size_t> first{UINT64_MAX, SIZE_MAX};
  for (std::size_t i = 0; i < std::size(control->slots); ++i) {
    const shm::GroupSlot& slot = control->slots[i];
    const std::uint64_t owner = slot.owner.load(std::memory_order_acquire);
    add_consumer(owner, &slot);
    if (g.mode != Mode::failover || owner == 0) continue;
    const auto at =
        static_cast<std::size_t>(std::find(owners.begin(), owners.end(), owner) - owners.begin());
    const std::pair<std::uint64_t, std::size_t> ticket{slot.cursor.load(std::memory_order_acquire),
                                                       i};
    if (g.consumers[at].alive && ticket < first) {
      first = ticket;
      active = at;
    }
  }
  if (active < g.consumers.size()) g.consumers[active].active = true;

  const std::uint64_t capacity = ring.has_ring ? ring.capacity : 0;
  if (uses_leases(g.mode)) {
    g.lag_in_messages = true;
    const std::uint64_t low = control->low_seq.load(std::memory_order_acquire);
    const std::uint64_t dispatch = control->dispatch.load(std::memory_order_acquire);
    if (!shm::group_started(low) || !shm::group_started(dispatch)) {
      g.started = false;
      return g;
    }
    const std::uint64_t published = ring.has_ring ? ring.published : dispatch;
    // The leases live between low_seq and dispatch, which a correct group keeps within
    // one window; anything further is garbage and not looked at.
    g.lag = clamp_sub(published, low, UINT64_MAX);
    const std::uint64_t end = low + std::min<std::uint64_t>(clamp_sub(dispatch, low, window),
                                                            clamp_sub(published, low, window));
    const auto* leases = reinterpret_cast<const std::atomic<std::uint64_t>*>(
        seg->base() + sizeof(shm::GroupControl));
    const int shift = std::countr_zero(window);
    for (std::uint64_t seq = low; seq < end; ++seq) {
      const shm::Lease l =
          shm::Lease::unpack(leases[seq & (window - 1)].load(std::memory_order_acquire));
      // An entry of the previous lap is not this message's lease.
      if (l.parity != ((seq >> shift) & 1u)) continue;
      if (l.state == shm::LeaseState::leased) ++g.leases_in_flight;
      if (l.state == shm::LeaseState::dead) ++g.dead_letters;
    }
    g.redeliveries =
        std::min<std::uint64_t>(control->redeliveries.load(std::memory_order_acquire), window);
    return g;
  }
  if (!ring.has_ring) return g;
  std::uint64_t low = ring.write_pos;
  if (g.mode == Mode::broadcast) {
    // The slowest live consumer holds the group back.
    for (const shm::GroupSlot& slot : control->slots) {
      if (slot.owner.load(std::memory_order_acquire) == 0) continue;
      low = std::min(low, slot.cursor.load(std::memory_order_acquire));
    }
  } else {
    low = control->low_watermark.load(std::memory_order_acquire);
  }
  g.lag = clamp_sub(ring.write_pos, low, capacity);
  return g;
}

void read_ring(NamespaceStat& st, std::uint32_t p) {
  PartitionStat& s = partition_entry(st, p);
  auto reader = shm::RingReader::open(st.ns, p);
  if (!reader) {
    if (reader.error().code != ENOENT) {
      s.has_ring = true;
      s.ring_error = reader.error().message;
    }
    return;
  }
  s.has_ring = true;
  const shm::RingControl& c = reader->control();
  s.capacity = reader->capacity();
  const std::uint32_t state = c.state.load(std::memory_order_acquire);
  s.ring_open = state == shm::kRingOpen || state == shm::kRingReleased;
  s.ring_released = state == shm::kRingReleased;
  s.writer_pid = reader->writer_pid();
  s.writer_alive = reader->writer_alive();
  s.write_pos = c.write_pos.load(std::memory_order_acquire);
  const std::uint64_t tail = c.tail.load(std::memory_order_acquire);
  s.used = clamp_sub(s.write_pos, tail, s.capacity);
  s.published = reader->published();
}

void read_groups(NamespaceStat& st, PartitionStat& s) {
  const std::string prefix = shm::group_segment_prefix(st.ns, s.partition);
  std::vector<std::string> names = shm::Segment::list(prefix);
  std::sort(names.begin(), names.end());
  for (const std::string& segment_name : names) {
    const std::string group = segment_name.substr(prefix.size());
    // Temporary names of segments being created carry dots; group names never do.
    if (!shm::check_name("group", group)) continue;
    s.groups.push_back(read_group(segment_name, group, s.partition, s));
  }
}

NamespaceStat collect(const std::string& ns) {
  NamespaceStat st;
  st.ns = ns;
  read_fetcher(st);
  for (std::uint32_t p : ring_partitions(ns)) partition_entry(st, p);
  std::sort(
      st.partitions.begin(), st.partitions.end(),
      [](const PartitionStat& a, const PartitionStat& b) { return a.partition < b.partition; });
  for (PartitionStat& s : st.partitions) {
    read_ring(st, s.partition);
    read_groups(st, s);
  }
  return st;
}

std::string percent(std::uint64_t part, std::uint64_t whole) {
  if (whole == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%",
                100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  std::fputs(out.c_str(), stdout);
}

std::string consumers_text(const std::vector<ConsumerInfo>& consumers) {
  if (consumers.empty()) return "-";
  std::string out;
  for (const ConsumerInfo& c : consumers) {
    if (!out.empty()) out += ",";
    out += std::to_string(c.pid) + (c.alive ? "" : "(dead)") + (c.active ? "(active)" : "");
    if (c.unacked != 0) out += ":" + std::to_string(c.unacked) + (c.at_limit ? "(full)" : "");
  }
  return out;
}

void print_human(const NamespaceStat& st) {
  std::string head = "namespace " + st.ns + ": ";
  if (!st.has_fetcher) {
    head += "no fetcher segment (rings only)";
  } else if (!st.fetcher_error.empty()) {
    head += "fetcher segment unreadable: " + printable_text(st.fetcher_error);
  } else {
    head += "fetcher pid " + std::to_string(st.fetcher_pid) +
            (st.fetcher_alive ? " (alive)" : " (dead)") + ", source " + printable_text(st.source);
    if (!st.source_warning.empty()) head += "\nwarning: " + printable_text(st.source_warning);
  }
  std::fputs((head + "\n\n").c_str(), stdout);

  std::vector<std::vector<std::string>> rows{{"PARTITION", "RING", "FETCHED", "COMMITTED",
                                              "RING_USED", "CAPACITY", "FILL", "PUBLISHED",
                                              "DEAD_LETTERS", "ERROR"}};
  for (const PartitionStat& s : st.partitions) {
    std::string ring = !s.has_ring             ? "none"
                       : !s.ring_error.empty() ? "bad"
                       : !s.ring_open          ? "closed"
                       : !s.writer_alive       ? "orphaned"
                       : s.ring_released       ? "released"
                                               : "open";
    const bool r = s.has_ring && s.ring_error.empty();
    std::string error = s.stopped               ? "stopped: " + printable_text(s.error)
                        : !s.ring_error.empty() ? printable_text(s.ring_error)
                        : s.paused              ? "paused: ring full"
                        : !s.warning.empty()    ? "held back: " + printable_text(s.warning)
                                                : "-";
    rows.push_back({std::to_string(s.partition), ring,
                    s.in_fetcher ? std::to_string(s.fetched) : "-",
                    s.in_fetcher ? std::to_string(s.committed) : "-",
                    r ? std::to_string(s.used) : "-", r ? std::to_string(s.capacity) : "-",
                    r ? percent(s.used, s.capacity) : "-", r ? std::to_string(s.published) : "-",
                    s.in_fetcher ? std::to_string(s.dead_letters) : "-", error});
  }
  print_table(rows);

  std::vector<std::vector<std::string>> groups{{"PARTITION", "GROUP", "MODE", "CONSUMERS", "LAG",
                                                "LEASED", "REDELIVERIES", "DEAD_PENDING", "STATE"}};
  for (const PartitionStat& s : st.partitions) {
    for (const GroupStat& g : s.groups) {
      if (!g.error.empty()) {
        groups.push_back({std::to_string(s.partition), g.name, "-", "-", "-", "-", "-", "-",
                          "bad: " + printable_text(g.error)});
        continue;
      }
      const bool leased = uses_leases(g.mode);
      const bool known = g.started;
      groups.push_back(
          {std::to_string(s.partition), g.name, std::string(to_string(g.mode)),
           consumers_text(g.consumers),
           known ? std::to_string(g.lag) + (g.lag_in_messages ? " msgs" : " bytes") : "-",
           leased && known ? std::to_string(g.leases_in_flight) : "-",
           leased && known ? std::to_string(g.redeliveries) : "-",
           leased && known ? std::to_string(g.dead_letters) : "-",
           g.fenced ? "fenced"
           : known  ? "ok"
                    : "starting"});
    }
  }
  if (groups.size() > 1) {
    std::fputs("\n", stdout);
    print_table(groups);
  }
}

// "TEXT", or null for an empty text.
void json_text_or_null(std::string& out, std::string_view text) {
  if (text.empty()) {
    out += "null";
    return;
  }
  out += '"';
  append_json_string(out, text);
  out += '"';
}

void json_field(std::string& out, std::string_view name, std::string_view text) {
  out += "\"";
  out += name;
  out += "\":\"";
  append_json_string(out, text);
  out += "\"";
}

void print_json(const NamespaceStat& st) {
  std::string out = "{";
  json_field(out, "namespace", st.ns);
  out += ",\"fetcher\":";
  if (!st.has_fetcher) {
    out += "null";
  } else if (!st.fetcher_error.empty()) {
    out += "{";
    json_field(out, "error", st.fetcher_error);
    out += "}";
  } else {
    out += "{\"pid\":" + std::to_string(st.fetcher_pid) +
           ",\"alive\":" + (st.fetcher_alive ? "true" : "false") + ",";
    json_field(out, "source", st.source);
    out += ",\"warning\":";
    json_text_or_null(out, st.source_warning);
    out += "}";
  }
  out += ",\"partitions\":[";
  bool first_partition = true;
  for (const PartitionStat& s : st.partitions) {
    if (!first_partition) out += ",";
    first_partition = false;
    out += "{\"partition\":" + std::to_string(s.partition);
    if (s.in_fetcher) {
      out += ",\"fetched\":" + std::to_string(s.fetched) +
             ",\"committed\":" + std::to_string(s.committed) +
             ",\"dead_letters\":" + std::to_string(s.dead_letters) +
             ",\"stopped\":" + (s.stopped ? "true" : "false") +
             ",\"paused\":" + (s.paused ? "true" : "false") + ",\"error\":";
      if (s.stopped) {
        out += "\"";
        append_json_string(out, s.error);
        out += "\"";
      } else {
        out += "null";
      }
      out += ",\"warning\":";
      json_text_or_null(out, s.warning);
    }
    out += ",\"ring\":";
    if (!s.has_ring) {
      out += "null";
    } else if (!s.ring_error.empty()) {
      out += "{";
      json_field(out, "error", s.ring_error);
      out += "}";
    } else {
      out += "{\"open\":" + std::string(s.ring_open ? "true" : "false") +
             ",\"released\":" + (s.ring_released ? "true" : "false") +
             ",\"writer_pid\":" + std::to_string(s.writer_pid) +
             ",\"writer_alive\":" + (s.writer_alive ? "true" : "false") +
             ",\"used\":" + std::to_string(s.used) + ",\"capacity\":" + std::to_string(s.capacity) +
             ",\"write_pos\":" + std::to_string(s.write_pos) +
             ",\"published\":" + std::to_string(s.published) + "}";
    }
    out += ",\"groups\":[";
    bool first_group = true;
    for (const GroupStat& g : s.groups) {
      if (!first_group) out += ",";
      first_group = false;
      out += "{";
      json_field(out, "group", g.name);
      if (!g.error.empty()) {
        out += ",";
        json_field(out, "error", g.error);
        out += "}";
        continue;
      }
      out += ",";
      json_field(out, "mode", to_string(g.mode));
      out += ",\"fenced\":" + std::string(g.fenced ? "true" : "false") +
             ",\"started\":" + (g.started ? "true" : "false") + ",\"consumers\":[";
      for (std::size_t i = 0; i < g.consumers.size(); ++i) {
        out += (i == 0 ? "" : ",") + std::string("{\"pid\":") + std::to_string(g.consumers[i].pid) +
               ",\"alive\":" + (g.consumers[i].alive ? "true" : "false") +
               ",\"unacked\":" + std::to_string(g.consumers[i].unacked) +
               ",\"at_unacked_limit\":" + (g.consumers[i].at_limit ? "true" : "false") +
               (g.mode == Mode::failover
                    ? std::string(",\"active\":") + (g.consumers[i].active ? "true" : "false")
                    : std::string()) +
               "}";
      }
      out += "],\"lag\":" + std::to_string(g.lag) + ",\"lag_unit\":\"" +
             (g.lag_in_messages ? "messages" : "bytes") + "\"";
      if (uses_leases(g.mode)) {
        out += ",\"leases_in_flight\":" + std::to_string(g.leases_in_flight) +
               ",\"redeliveries\":" + std::to_string(g.redeliveries) +
               ",\"dead_letters_pending\":" + std::to_string(g.dead_letters);
      }
      out += "}";
    }
    out += "]}";
  }
  out += "]}\n";
  std::fputs(out.c_str(), stdout);
}

// Prometheus text exposition format: one # HELP and # TYPE per metric, then all of its
// samples together.
class Exposition {
 public:
  struct Label {
    std::string_view name;
    std::string value;
  };

  void add(std::string_view metric, std::string_view type, std::string_view help,
           const std::vector<Label>& labels, std::uint64_t value) {
    auto it = std::find_if(families_.begin(), families_.end(),
                           [&](const Family& f) { return f.name == metric; });
    if (it == families_.end()) {
      families_.push_back({std::string(metric), std::string(type), std::string(help), {}});
      it = families_.end() - 1;
    }
    std::string sample = std::string(metric) + "{";
    for (std::size_t i = 0; i < labels.size(); ++i) {
      sample += (i == 0 ? "" : ",") + std::string(labels[i].name) + "=\"" +
                escape(labels[i].value) + "\"";
    }
    sample += "} " + std::to_string(value) + "\n";
    it->samples += sample;
  }

  std::string text() const {
    std::string out;
    for (const Family& f : families_) {
      out += "# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n" +
             f.samples;
    }
    return out;
  }

 private:
  struct Family {
    std::string name, type, help, samples;
  };
  static std::string escape(std::string_view v) {
    std::string out;
    for (char c : v) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    }
    return out;
  }
  std::vector<Family> families_;
};

void print_prometheus(const NamespaceStat& st) {
  Exposition e;
  const std::vector<Exposition::Label> ns{{"namespace", st.ns}};
  e.add("ringfeed_fetcher_up", "gauge", "1 if the namespace's fetcher process is alive.", ns,
        st.has_fetcher && st.fetcher_error.empty() && st.fetcher_alive ? 1 : 0);
  for (const PartitionStat& s : st.partitions) {
    std::vector<Exposition::Label> p{{"namespace", st.ns},
                                     {"partition", std::to_string(s.partition)}};
    if (s.in_fetcher) {
      e.add("ringfeed_partition_fetched_position", "gauge",
            "Upstream position the partition was fetched up to.", p, s.fetched);
      e.add("ringfeed_partition_committed_position", "gauge",
            "Upstream position committed for the partition.", p, s.committed);
      e.add("ringfeed_partition_dead_letters_total", "counter",
            "Messages the fetcher stored in the partition's dead-letter log.", p, s.dead_letters);
      e.add("ringfeed_partition_stopped", "gauge", "1 if an error stopped the partition.", p,
            s.stopped ? 1 : 0);
      e.add("ringfeed_partition_paused", "gauge",
            "1 if fetching waits for ring space (the ring is full).", p, s.paused ? 1 : 0);
      e.add("ringfeed_partition_held_back", "gauge",
            "1 if something holds the partition back without stopping it (see stat).", p,
            s.warning.empty() ? 0 : 1);
    }
    if (!s.has_ring || !s.ring_error.empty()) continue;
    e.add("ringfeed_ring_open", "gauge", "1 if the ring's writer has not closed it.", p,
          s.ring_open ? 1 : 0);
    e.add("ringfeed_ring_released", "gauge",
          "1 if the upstream gives the partition to another host now (Kafka rebalance).", p,
          s.ring_released ? 1 : 0);
    e.add("ringfeed_ring_used_bytes", "gauge", "Bytes of the ring holding unreleased records.", p,
          s.used);
    e.add("ringfeed_ring_capacity_bytes", "gauge", "Bytes of the ring's record area.", p,
          s.capacity);
    e.add("ringfeed_ring_published_messages_total", "counter", "Messages published into the ring.",
          p, s.published);
  }
  for (const PartitionStat& s : st.partitions) {
    for (const GroupStat& g : s.groups) {
      std::vector<Exposition::Label> l{
          {"namespace", st.ns}, {"partition", std::to_string(s.partition)}, {"group", g.name}};
      if (!g.error.empty()) continue;
      auto info = l;
      info.push_back({"mode", std::string(to_string(g.mode))});
      e.add("ringfeed_group_info", "gauge", "The group's mode, as a label; always 1.", info, 1);
      const auto alive = static_cast<std::uint64_t>(std::count_if(
          g.consumers.begin(), g.consumers.end(), [](const ConsumerInfo& c) { return c.alive; }));
      e.add("ringfeed_group_consumers", "gauge", "Live consumers attached to the group.", l, alive);
      e.add("ringfeed_group_dead_consumers", "gauge",
            "Consumer slots still held by a dead process.", l, g.consumers.size() - alive);
      e.add("ringfeed_group_consumers_at_unacked_limit", "gauge",
            "Consumers whose last pop found their max_unacked limit reached.", l,
            static_cast<std::uint64_t>(
                std::count_if(g.consumers.begin(), g.consumers.end(),
                              [](const ConsumerInfo& c) { return c.at_limit; })));
      e.add("ringfeed_group_fenced", "gauge",
            "1 if the writer stopped serving the group (corrupt state).", l, g.fenced ? 1 : 0);
      if (!g.started) continue;
      if (g.lag_in_messages) {
        e.add("ringfeed_group_lag_messages", "gauge",
              "Messages published and not yet acked by the group (shared, failover).", l, g.lag);
        e.add("ringfeed_group_leases_in_flight", "gauge",
              "Messages handed out under a lease and not yet settled.", l, g.leases_in_flight);
        e.add("ringfeed_group_redeliveries", "gauge",
              "Messages given back (nack, expiry, release) and not yet taken again.", l,
              g.redeliveries);
        e.add("ringfeed_group_dead_letters_pending", "gauge",
              "Dead messages waiting to be written to the dead-letter log.", l, g.dead_letters);
      } else {
        e.add("ringfeed_group_lag_bytes", "gauge",
              "Ring bytes published and not yet acked by the group (exclusive, broadcast).", l,
              g.lag);
      }
    }
  }
  std::fputs(e.text().c_str(), stdout);
}

}  // namespace

int stat_main(std::span<char* const> argv) {
  auto args = Args::parse(argv, kFlags);
  if (!args) return usage_error(kCommand, args.error().message);
  if (args->help()) {
    std::fputs(
        usage("ringfeed stat --namespace NS [--json | --prometheus]", kDescription, kFlags).c_str(),
        stdout);
    return kExitOk;
  }
  if (args->has("json") && args->has("prometheus")) {
    return usage_error(kCommand, "flags --json and --prometheus exclude each other");
  }
  const std::string ns(args->get("namespace"));
  if (auto ok = shm::check_name("namespace", ns); !ok) {
    return usage_error(kCommand, "flag --namespace: " + ok.error().message);
  }
  const NamespaceStat st = collect(ns);
  const bool any_ring = std::any_of(st.partitions.begin(), st.partitions.end(),
                                    [](const PartitionStat& s) { return s.has_ring; });
  if (!st.has_fetcher && !any_ring) {
    return runtime_error(kCommand, "namespace '" + ns + "' has no fetcher and no rings");
  }
  if (args->has("json")) {
    print_json(st);
  } else if (args->has("prometheus")) {
    print_prometheus(st);
  } else {
    print_human(st);
  }
  return std::fflush(stdout) == 0
             ? kExitOk
             : runtime_error(kCommand, std::string("cannot write to standard output: ") +
                                           std::strerror(errno));
}

}  // namespace ringfeed::cli
