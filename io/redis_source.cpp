// The Redis Streams source (see redis_source.hpp for what it does). Here: the URI, the
// two RESP links on the source's io_uring, and the per-stream bookkeeping.
//
// Completions are tagged in user_data by their top byte: 1 and 2 the read and control
// connections (UringConnection routes the rest), 3 the eventfd read of wake(), 4 a
// watched descriptor (index in the low bits), 5 the cancel of the destructor.
#include "io/redis_source.hpp"

#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "io/resp.hpp"
#include "io/uring.hpp"
#include "io/uring_connection.hpp"
#include "io/wakeups.hpp"

namespace ringfeed::io {

namespace {

constexpr std::uint8_t kReadLink = 1;
constexpr std::uint8_t kControlLink = 2;
constexpr std::uint64_t kWakeTag = std::uint64_t{3} << 56;
constexpr std::uint64_t kWatchTag = std::uint64_t{4} << 56;
constexpr std::uint64_t kCancelTag = std::uint64_t{5} << 56;
// Reads in flight on the read connection while entries keep coming (none of them blocks).
constexpr std::size_t kReadsInFlight = 2;
// Ids per XACK command.
constexpr std::size_t kAckChunk = 1024;
// A reply that takes longer than this (beyond a read's BLOCK) ends the connection.
constexpr std::int64_t kReplyTimeoutNs = 10'000'000'000;
// After an XACK was refused, the ids are sent again no sooner than this.
constexpr std::int64_t kAckRetryNs = 1'000'000'000;
constexpr std::uint64_t kSeqBits = 20;
constexpr std::uint64_t kMsLimit = std::uint64_t{1} << (64 - kSeqBits);

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Error bad_uri(std::string_view uri, const std::string& what) {
  return Error{"source URI '" + std::string(uri) + "': " + what, EINVAL};
}

bool parse_u32(std::string_view s, std::uint32_t& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  for (;;) {
    const std::size_t at = s.find(sep);
    out.emplace_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s = s.substr(at + 1);
  }
}

// %XX escapes in the user and password of a URI.
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size()) return std::nullopt;
    const auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc{} || end != s.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  out += '"';
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// A record read from Redis, not yet handed out. Its id is its offset (redis_offset_to_id).
struct Entry {
  std::uint64_t offset = 0;
  std::int64_t timestamp_ns = 0;
  std::string key;
  std::string value;
};

// Handed out, not yet acknowledged upstream.
struct Held {
  std::uint64_t next_offset = 0;  // the position that covers it
  std::uint64_t offset = 0;       // its entry id
};

struct Stream {
  std::string name;
  std::deque<Entry> ready;
  std::deque<Held> held;
  // Acknowledgement, asynchronous: commit() raises commit_target; the held entries up to
  // it go out in XACK commands (the first acks_sent of them are in flight, in
  // acks_in_flight commands), and each reply drops its entries from held and moves
  // st.committed on. A refused XACK (ack_failed) has them all sent again after
  // kAckRetryNs, once the commands in flight have come back.
  std::uint64_t commit_target = 0;
  std::size_t acks_sent = 0;
  std::size_t acks_in_flight = 0;
  bool ack_failed = false;
  std::int64_t next_ack_ns = 0;
  std::optional<Error> ack_error;  // said by the next commit() of this stream
  // Offsets in ready or held, while a reply that may repeat some (own pending entries,
  // claims) is read: built for that reply only, as ordinary reads bring new ids only.
  std::unordered_set<std::uint64_t> known;
  bool known_built = false;
  std::uint64_t handed_out = 0;  // records handed out since open
  // Reading this consumer's own pending entries (after every connect), from this id on.
  bool pending_phase = true;
  std::string pending_from = "0";
  bool in_read = false;  // part of a read in flight
  bool group_ready = false;
  bool claiming = false;
  std::string claim_cursor = "0-0";
  std::int64_t next_claim_ns = 0;
  PartitionStatus st;
};

enum class Expect : std::uint8_t { auth, group_create, read, ack, claim, ignore };

struct Pending {
  Expect what = Expect::ignore;
  std::uint32_t stream = 0;            // group_create, ack, claim
  std::vector<std::uint32_t> streams;  // read
  bool blocking = false;               // read
  std::int64_t deadline_ns = 0;        // no reply by then: the connection is given up
  std::size_t acked = 0;               // ack: how many held entries it covers
  std::uint64_t position = 0;          // ack: the committed position once it is answered
};

// A connection with its RESP state: replies arrive in the order of the commands.
struct Link {
  Link(io_uring* ring, std::uint8_t id, ConnectionOptions o) : conn(ring, id, std::move(o)) {}
  UringConnection conn;
  RespParser parser;
  RespValue reply;
  std::deque<Pending> pending;
  bool ready = false;  // connected and set up (AUTH answered)
};

class RedisSource final : public Source {
 public:
  RedisSource(RedisSourceOptions options, std::string uri);
  ~RedisSource() override;

  Status open();
  std::uint32_t partitions() const override { return static_cast<std::uint32_t>(streams_.size()); }
  std::uint64_t committed(std::uint32_t partition) const override {
    return partition < streams_.size() ? streams_[partition].st.committed : 0;
  }
  Result<std::size_t> poll(const RecordSink& sink, std::chrono::milliseconds timeout) override {
    OneAtATime one(sink);
    return poll_batches(one, timeout);
  }
  Result<std::size_t> poll_batches(BatchSink& sink, std::chrono::milliseconds timeout) override;
  void resume(std::uint32_t partition) override {
    if (partition < streams_.size()) streams_[partition].st.paused = false;
  }
  Status commit(std::uint32_t partition, std::uint64_t position) override;
  Status flush(std::chrono::milliseconds timeout) override;
  PartitionStatus status(std::uint32_t partition) const override;
  void wake() override { wakeups_.wake(); }
  bool watch_readable(int fd) override {
    return ring_.ready() && wakeups_.watch(fd, streams_.size() + 4);
  }
  const std::string& uri() const override { return uri_; }

 private:
  Link& link(std::uint8_t id) { return id == kReadLink ? read_ : control_; }
  void send(Link& l, std::initializer_list<std::string_view> args, Pending p);
  void send(Link& l, std::span<const std::string_view> args, Pending p);
  void reap();
  void on_link_event(Link& l, UringConnection::Event e);
  void on_connected(Link& l);
  void on_link_failed(Link& l);
  void on_reply(Link& l, Pending& p, RespValue& v);
  void on_read_reply(const Pending& p, RespValue& v);
  void on_claim_reply(std::uint32_t s, RespValue& v);
  void accept(std::uint32_t s, std::string_view id, RespValue& fields, bool may_repeat);
  void build_known(Stream& st);
  void stop_stream(std::uint32_t s, std::string why);
  void maintain();
  void issue_reads();
  void issue_claims();
  void send_acks(std::uint32_t s, std::int64_t now);
  void on_ack_reply(std::uint32_t s, const Pending& p, const RespValue& v);
  bool acks_outstanding() const;
  void check_reply_timeouts(std::int64_t now);
  std::size_t deliver(std::uint32_t s, BatchSink& sink);
  void drive(std::int64_t until_ns);
  std::string where() const { return options_.host + ":" + std::to_string(options_.port); }

  RedisSourceOptions options_;
  std::string uri_;
  std::vector<Stream> streams_;
  std::unordered_map<std::string, std::uint32_t> by_name_;
  Wakeups wakeups_{kWakeTag, kWatchTag};
  bool woken_ = false;
  bool news_ = false;  // a partition stopped
  std::optional<Error> fatal_;
  std::vector<SourceRecord> records_;
  std::string ack_ids_;  // send_acks(): the ids of one XACK round
  // Last members: the links are destroyed first (after the destructor drained the ring),
  // then the ring.
  Uring ring_;
  Link read_;
  Link control_;
};

ConnectionOptions connection_options(const RedisSourceOptions& o) {
  return {.host = o.host,
          .port = o.port,
          .connect_timeout = std::chrono::milliseconds(o.connect_timeout_ms)};
}

RedisSource::RedisSource(RedisSourceOptions options, std::string uri)
    : options_(std::move(options)),
      uri_(std::move(uri)),
      read_(ring_.get(), kReadLink, connection_options(options_)),
      control_(ring_.get(), kControlLink, connection_options(options_)) {}

Status RedisSource::open() {
  if (const int rc = ring_.init(64); rc < 0) {
    return Error{Uring::describe_init_error(rc) + " (" + uri_ + ")", -rc};
  }
  if (Status s = wakeups_.open(uri_); !s) return s;
  streams_.resize(options_.streams.size());
  for (std::uint32_t i = 0; i < streams_.size(); ++i) {
    streams_[i].name = options_.streams[i];
    by_name_.emplace(streams_[i].name, i);
  }
  wakeups_.arm(ring_.get());
  const std::int64_t now = now_ns();
  read_.conn.maybe_connect(now);
  control_.conn.maybe_connect(now);
  io_uring_submit(ring_.get());
  return Ok{};
}

RedisSource::~RedisSource() {
  if (!ring_.ready()) return;
  // The eventfd read and the watches never finish on their own, and the connections'
  // receives only when the peer says something: cancel and shut down, then see every
  // completion, so the kernel writes into no buffer after this.
  io_uring* ring = ring_.get();
  if (io_uring_sqe* sqe = io_uring_get_sqe(ring); sqe != nullptr) {
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, kCancelTag);
  }
  read_.conn.shutdown_all();
  control_.conn.shutdown_all();
  io_uring_submit(ring);
  const auto busy = [&] {
    return wakeups_.in_flight() > 0 || read_.conn.in_flight() > 0 || control_.conn.in_flight() > 0;
  };
  int idle_waits = 0;
  while (busy() && idle_waits < 10) {
    __kernel_timespec ts{.tv_sec = 1, .tv_nsec = 0};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    if (rc == -EINTR) continue;
    if (rc < 0) {
      ++idle_waits;
      continue;
    }
    const std::uint64_t top = cqe->user_data >> 56;
    if (top == kReadLink || top == kControlLink) {
      link(static_cast<std::uint8_t>(top)).conn.handle(*cqe, now_ns());
    } else {
      wakeups_.complete_at_close(*cqe);
    }
    io_uring_cqe_seen(ring, cqe);
  }
}

void RedisSource::send(Link& l, std::span<const std::string_view> args, Pending p) {
  append_command(l.conn.out(), args);
  if (p.deadline_ns == 0) p.deadline_ns = now_ns() + kReplyTimeoutNs;
  l.pending.push_back(std::move(p));
}

void RedisSource::send(Link& l, std::initializer_list<std::string_view> args, Pending p) {
  send(l, std::span<const std::string_view>(args.begin(), args.size()), std::move(p));
}

// Handles every completion there is, without waiting.
void RedisSource::reap() {
  io_uring* ring = ring_.get();
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_cqe* cqe = nullptr;
  std::vector<io_uring_cqe> batch;
  io_uring_for_each_cqe(ring, head, cqe) {
    ++seen;
    batch.push_back(*cqe);
  }
  io_uring_cq_advance(ring, seen);
  const std::int64_t now = now_ns();
  for (const io_uring_cqe& c : batch) {
    const std::uint64_t top = c.user_data >> 56;
    if (top == kReadLink || top == kControlLink) {
      Link& l = link(static_cast<std::uint8_t>(top));
      on_link_event(l, l.conn.handle(c, now));
    } else if (wakeups_.complete(ring, c)) {
      woken_ = true;
    }
  }
}

void RedisSource::on_link_event(Link& l, UringConnection::Event e) {
  switch (e) {
    case UringConnection::Event::none:
      return;
    case UringConnection::Event::connected:
      on_connected(l);
      return;
    case UringConnection::Event::failed:
      on_link_failed(l);
      return;
    case UringConnection::Event::received:
      break;
  }
  for (;;) {
    const auto in = l.conn.received();
    if (in.empty()) break;
    std::size_t used = 0;
    const ParseResult r = l.parser.parse(in, used, l.reply);
    if (r.status == ParseStatus::need_more) {
      l.conn.expect(r.need);
      break;
    }
    if (r.status == ParseStatus::error) {
      l.conn.fail("from " + where() + ": " + r.error, now_ns());
      on_link_failed(l);
      return;
    }
    l.conn.consume(used);
    if (l.pending.empty()) {
      l.conn.fail("a reply from " + where() + " that no command asked for", now_ns());
      on_link_failed(l);
      return;
    }
    Pending p = std::move(l.pending.front());
    l.pending.pop_front();
    on_reply(l, p, l.reply);
    if (!l.conn.up()) return;  // the reply ended the connection
  }
}

void RedisSource::on_connected(Link& l) {
  l.parser.reset();
  l.pending.clear();
  l.ready = false;
  std::string user = options_.user;
  if (!options_.password.empty()) {
    if (user.empty()) {
      send(l, {"AUTH", options_.password}, {.what = Expect::auth});
    } else {
      send(l, {"AUTH", user, options_.password}, {.what = Expect::auth});
    }
  } else {
    l.ready = true;
  }
  if (&l == &read_) {
    // Entries Redis handed out in replies that were lost with the last connection are
    // pending for this consumer: read them back first. Creating a group that exists is
    // refused (BUSYGROUP), which is fine: a server that restarted empty has none.
    for (std::uint32_t i = 0; i < streams_.size(); ++i) {
      Stream& st = streams_[i];
      st.pending_phase = true;
      st.pending_from = "0";
      st.in_read = false;
      st.group_ready = false;
      if (st.st.stopped) continue;
      send(l, {"XGROUP", "CREATE", st.name, options_.group, "0", "MKSTREAM"},
           {.what = Expect::group_create, .stream = i});
    }
    for (Stream& st : streams_) {
      if (!st.st.stopped) st.st.error.clear();
    }
  }
}

void RedisSource::on_link_failed(Link& l) {
  l.pending.clear();
  l.parser.reset();
  l.ready = false;
  if (&l == &read_) {
    for (Stream& st : streams_) {
      st.in_read = false;
      if (!st.st.stopped)
        st.st.error = "waiting for Redis at " + where() + ": " + l.conn.last_error();
    }
  } else {
    // XACKs whose replies are lost are sent again once connected (XACK of an id acked
    // already does nothing).
    for (Stream& st : streams_) {
      st.claiming = false;
      if (st.acks_sent > 0 && !st.ack_error) {
        st.ack_error = Error{"XACK on Redis at " + where() + ": " + l.conn.last_error(), EIO};
      }
      st.acks_sent = 0;
      st.acks_in_flight = 0;
      st.ack_failed = false;
    }
  }
}

void RedisSource::stop_stream(std::uint32_t s, std::string why) {
  Stream& st = streams_[s];
  if (st.st.stopped) return;
  st.st.stopped = true;
  st.st.error = "stream '" + st.name + "': " + std::move(why);
  st.ready.clear();
  news_ = true;
}

void RedisSource::on_reply(Link& l, Pending& p, RespValue& v) {
  const bool error = v.type == RespType::error;
  switch (p.what) {
    case Expect::auth:
      if (error) {
        fatal_ = Error{"Redis at " + where() + " refused AUTH: " + v.str, EACCES};
        return;
      }
      l.ready = true;
      return;
    case Expect::group_create:
      if (error && v.str.rfind("BUSYGROUP", 0) != 0) {
        if (v.str.rfind("NOAUTH", 0) == 0 || v.str.rfind("WRONGPASS", 0) == 0) {
          fatal_ = Error{"Redis at " + where() + " wants a password (in the URI, or in " +
                             "RINGFEED_REDIS_PASSWORD): " + v.str,
                         EACCES};
          return;
        }
        // A key of another type, or a command the server refuses: this stream cannot be
        // read. Anything else (LOADING while a restarted server reads its data, BUSY,
        // READONLY of a replica that is being failed over) passes: try again.
        if (v.str.rfind("WRONGTYPE", 0) == 0 || v.str.rfind("ERR", 0) == 0) {
          stop_stream(p.stream, "XGROUP CREATE " + options_.group + ": " + v.str);
          return;
        }
        l.conn.fail("XGROUP CREATE: " + v.str, now_ns());
        on_link_failed(l);
        return;
      }
      streams_[p.stream].group_ready = true;
      return;
    case Expect::read:
      for (std::uint32_t s : p.streams) streams_[s].in_read = false;
      if (error) {
        if (v.str.rfind("NOGROUP", 0) == 0) {
          // The server lost the group (restarted without it): create it again.
          l.conn.fail("the group is gone (" + v.str + "); creating it again", now_ns());
          on_link_failed(l);
          return;
        }
        if (v.str.rfind("NOAUTH", 0) == 0) {
          fatal_ = Error{"Redis at " + where() + " wants a password (in the URI, or in " +
                             "RINGFEED_REDIS_PASSWORD): " + v.str,
                         EACCES};
          return;
        }
        l.conn.fail("XREADGROUP: " + v.str, now_ns());
        on_link_failed(l);
        return;
      }
      on_read_reply(p, v);
      return;
    case Expect::ack:
      on_ack_reply(p.stream, p, v);
      return;
    case Expect::claim:
      streams_[p.stream].claiming = false;
      if (error) {
        // An old server without XAUTOCLAIM, or a stream gone: said once, claims stop.
        if (!streams_[p.stream].st.stopped) {
          streams_[p.stream].st.error = "XAUTOCLAIM: " + v.str;
        }
        streams_[p.stream].next_claim_ns = INT64_MAX;
        return;
      }
      on_claim_reply(p.stream, v);
      return;
    case Expect::ignore:
      return;
  }
}

// [[stream, [[id, [field, value, ...]], ...]], ...] or a null array (nothing new).
void RedisSource::on_read_reply(const Pending& p, RespValue& v) {
  std::vector<bool> seen(streams_.size(), false);
  if (v.type == RespType::array) {
    for (RespValue& per_stream : v.elements) {
      auto pair = as_array(per_stream, 2, "XREADGROUP reply: stream");
      if (!pair) {
        read_.conn.fail(pair.error().message, now_ns());
        on_link_failed(read_);
        return;
      }
      auto name = as_string((*pair)[0], "XREADGROUP reply: stream name");
      auto list = as_array((*pair)[1], "XREADGROUP reply: entries");
      if (!name || !list) {
        read_.conn.fail(!name ? name.error().message : list.error().message, now_ns());
        on_link_failed(read_);
        return;
      }
      const auto it = by_name_.find(std::string(*name));
      if (it == by_name_.end()) continue;
      const std::uint32_t s = it->second;
      seen[s] = true;
      std::string last;
      Stream& st = streams_[s];
      // Own pending entries may be in the ring already (read before a reconnect).
      const bool may_repeat = st.pending_phase;
      for (RespValue& e : per_stream.elements[1].elements) {
        auto entry = as_array(e, 2, "XREADGROUP reply: entry");
        auto id = entry ? as_string((*entry)[0], "XREADGROUP reply: entry id")
                        : Result<std::string_view>(entry.error());
        if (!id) {
          read_.conn.fail(id.error().message, now_ns());
          on_link_failed(read_);
          return;
        }
        if (may_repeat) last = std::string(*id);
        accept(s, *id, e.elements[1], may_repeat);
      }
      st.known.clear();
      st.known_built = false;
      if (st.pending_phase && std::find(p.streams.begin(), p.streams.end(), s) != p.streams.end()) {
        if (list->empty()) {
          st.pending_phase = false;
        } else {
          st.pending_from = last;
        }
      }
    }
  }
  for (std::uint32_t s : p.streams) {
    // A stream the reply leaves out has nothing (more) pending.
    if (!seen[s] && streams_[s].pending_phase) streams_[s].pending_phase = false;
  }
}

// [next cursor, [[id, [field, value, ...]], ...], [deleted ids]]
void RedisSource::on_claim_reply(std::uint32_t s, RespValue& v) {
  Stream& st = streams_[s];
  auto parts = as_array(v, "XAUTOCLAIM reply");
  if (!parts || parts->size() < 2) {
    st.next_claim_ns = now_ns() + std::int64_t{options_.claim_idle_ms} * 1'000'000;
    return;
  }
  auto cursor = as_string((*parts)[0], "XAUTOCLAIM reply: cursor");
  auto list = as_array((*parts)[1], "XAUTOCLAIM reply: entries");
  if (!cursor || !list) return;
  for (RespValue& e : v.elements[1].elements) {
    auto entry = as_array(e, 2, "XAUTOCLAIM reply: entry");
    if (!entry) continue;
    auto id = as_string((*entry)[0], "XAUTOCLAIM reply: entry id");
    if (id) accept(s, *id, e.elements[1], true);  // may be ours, idle in the ring
  }
  st.known.clear();
  st.known_built = false;
  st.claim_cursor = std::string(*cursor);
  // A whole pass over the pending entries: the next one after the idle time.
  st.next_claim_ns = st.claim_cursor == "0-0"
                         ? now_ns() + std::int64_t{options_.claim_idle_ms} * 1'000'000
                         : now_ns();
}

void RedisSource::build_known(Stream& st) {
  st.known.clear();
  st.known.reserve(st.held.size() + st.ready.size());
  for (const Held& h : st.held) st.known.insert(h.offset);
  for (const Entry& e : st.ready) st.known.insert(e.offset);
  st.known_built = true;
}

// Takes an entry for delivery: its fields are moved out of the reply.
void RedisSource::accept(std::uint32_t s, std::string_view id, RespValue& fields, bool may_repeat) {
  Stream& st = streams_[s];
  if (st.st.stopped) return;
  auto offset = redis_id_to_offset(id);
  if (!offset) {
    stop_stream(s, offset.error().message);
    return;
  }
  if (may_repeat) {
    if (!st.known_built) build_known(st);
    if (!st.known.insert(*offset).second) return;  // read again: handed out or about to be
  }
  if (fields.type != RespType::array || fields.elements.empty()) {
    // Deleted while pending: nothing to deliver; acknowledged so it leaves the list.
    if (control_.conn.up()) {
      send(control_, {"XACK", st.name, options_.group, id}, {.what = Expect::ignore});
    }
    return;
  }
  auto& f = fields.elements;
  Entry e;
  e.offset = *offset;
  e.timestamp_ns = static_cast<std::int64_t>(*offset >> kSeqBits) * 1'000'000;
  const std::string_view* key = nullptr;
  const std::string_view* value = nullptr;
  std::string_view key_view;
  std::string_view value_view;
  bool plain = f.size() == 2 || f.size() == 4;
  for (std::size_t i = 0; plain && i + 1 < f.size(); i += 2) {
    if (f[i].type != RespType::bulk_string || f[i + 1].type != RespType::bulk_string) {
      plain = false;
    } else if (f[i].str == "key" && key == nullptr) {
      key_view = f[i + 1].str;
      key = &key_view;
    } else if (f[i].str == "value" && value == nullptr) {
      value_view = f[i + 1].str;
      value = &value_view;
    } else {
      plain = false;
    }
  }
  if (plain && value != nullptr) {
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
      (f[i].str == "key" ? e.key : e.value) = std::move(f[i + 1].str);
    }
  } else {
    e.value = "{";
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
      if (i > 0) e.value += ',';
      append_json_string(e.value, f[i].str);
      e.value += ':';
      append_json_string(e.value, f[i + 1].str);
      if (f[i].str == "key" && e.key.empty()) e.key = f[i + 1].str;
    }
    e.value += '}';
  }
  st.ready.push_back(std::move(e));
}

void RedisSource::issue_reads() {
  if (!read_.conn.up() || !read_.ready) return;
  if (read_.pending.size() >= kReadsInFlight) return;
  if (std::any_of(read_.pending.begin(), read_.pending.end(),
                  [](const Pending& p) { return p.what != Expect::read; })) {
    return;  // setting up
  }
  // Reads of new entries block in Redis until there is one; what goes behind them waits.
  const auto blocking_ahead = std::count_if(read_.pending.begin(), read_.pending.end(),
                                            [](const Pending& p) { return p.blocking; });
  const auto wants = [&](const Stream& st) {
    return !st.st.stopped && !st.st.paused && st.group_ready && !st.in_read &&
           st.ready.size() < options_.batch;
  };
  // Own pending entries first, one read at a time per stream (a second would read the
  // same ones again).
  std::vector<std::uint32_t> pending_streams;
  std::vector<std::uint32_t> new_streams;
  for (std::uint32_t i = 0; i < streams_.size(); ++i) {
    const Stream& st = streams_[i];
    if (!wants(st)) continue;
    (st.pending_phase ? pending_streams : new_streams).push_back(i);
  }
  const std::string count = std::to_string(options_.batch);
  const std::string block = std::to_string(options_.block_ms);
  const auto read = [&](const std::vector<std::uint32_t>& list, bool pending, bool blocking) {
    std::vector<std::string_view> args = {"XREADGROUP",      "GROUP", options_.group,
                                          options_.consumer, "COUNT", count};
    if (blocking) {
      args.emplace_back("BLOCK");
      args.emplace_back(block);
    }
    args.emplace_back("STREAMS");
    for (std::uint32_t s : list) args.emplace_back(streams_[s].name);
    for (std::uint32_t s : list) {
      args.push_back(pending ? std::string_view(streams_[s].pending_from) : std::string_view(">"));
    }
    Pending p{.what = Expect::read, .streams = list, .blocking = blocking};
    if (blocking) {
      // It may wait for those ahead of it to block their time first.
      p.deadline_ns = now_ns() +
                      (blocking_ahead + 1) * std::int64_t{options_.block_ms} * 1'000'000 +
                      kReplyTimeoutNs;
    }
    for (std::uint32_t s : list) {
      if (pending) streams_[s].in_read = true;
    }
    send(read_, args, std::move(p));
  };
  if (!pending_streams.empty()) {
    if (blocking_ahead == 0) read(pending_streams, true, false);
    return;
  }
  if (new_streams.empty()) return;
  // Every read of new entries blocks: Redis answers it at once with what there is, or as
  // soon as an entry comes. The next one is already in Redis when it returns, so that
  // entries that keep coming never wait for a round trip, and an entry that comes alone
  // takes one read (where a read without BLOCK would come back empty before a blocking
  // one was sent).
  read(new_streams, false, true);
}

void RedisSource::issue_claims() {
  if (options_.claim_idle_ms == 0 || !control_.conn.up() || !control_.ready) return;
  const std::int64_t now = now_ns();
  const std::string idle = std::to_string(options_.claim_idle_ms);
  const std::string count = std::to_string(options_.batch);
  for (std::uint32_t i = 0; i < streams_.size(); ++i) {
    Stream& st = streams_[i];
    if (st.st.stopped || st.st.paused || st.claiming || !st.group_ready || now < st.next_claim_ns ||
        st.ready.size() >= options_.batch) {
      continue;
    }
    st.claiming = true;
    send(control_,
         {"XAUTOCLAIM", st.name, options_.group, options_.consumer, idle, st.claim_cursor, "COUNT",
          count},
         {.what = Expect::claim, .stream = i});
  }
}

void RedisSource::check_reply_timeouts(std::int64_t now) {
  for (Link* l : {&read_, &control_}) {
    if (!l->conn.up() || l->pending.empty()) continue;
    if (now > l->pending.front().deadline_ns) {
      l->conn.fail("no reply from " + where() + " in time", now);
      on_link_failed(*l);
    }
  }
}

// Connects what is down, sends what is due, and has the connections send and receive.
void RedisSource::maintain() {
  const std::int64_t now = now_ns();
  check_reply_timeouts(now);
  read_.conn.maybe_connect(now);
  control_.conn.maybe_connect(now);
  issue_reads();
  issue_claims();
  for (std::uint32_t s = 0; s < streams_.size(); ++s) send_acks(s, now);
  read_.conn.pump();
  control_.conn.pump();
  wakeups_.arm(ring_.get());
}

std::size_t RedisSource::deliver(std::uint32_t s, BatchSink& sink) {
  Stream& st = streams_[s];
  if (st.st.paused || st.st.stopped || st.ready.empty()) return 0;
  records_.clear();
  for (const Entry& e : st.ready) {
    records_.push_back({.partition = s,
                        .upstream_offset = e.offset,
                        .next_offset = st.handed_out + records_.size() + 1,
                        .timestamp_ns = e.timestamp_ns,
                        .key = e.key,
                        .value = e.value});
  }
  const std::size_t taken = std::min(sink.take(s, records_), records_.size());
  for (std::size_t i = 0; i < taken; ++i) {
    Entry& e = st.ready.front();
    st.held.push_back({st.handed_out + 1, e.offset});
    ++st.handed_out;
    st.ready.pop_front();
  }
  st.st.fetched = st.handed_out;
  if (taken < records_.size()) st.st.paused = true;
  return taken;
}

Result<std::size_t> RedisSource::poll_batches(BatchSink& sink, std::chrono::milliseconds timeout) {
  if (fatal_) return *fatal_;
  timeout = std::clamp(timeout, std::chrono::milliseconds(0),
                       std::chrono::milliseconds(std::chrono::hours(24 * 365)));
  const std::int64_t deadline = now_ns() + std::chrono::nanoseconds(timeout).count();
  std::size_t delivered = 0;
  woken_ = false;
  news_ = false;
  for (;;) {
    reap();
    if (fatal_) return *fatal_;
    for (std::uint32_t s = 0; s < streams_.size(); ++s) delivered += deliver(s, sink);
    maintain();
    io_uring_submit(ring_.get());
    if (delivered > 0 || woken_ || news_) break;
    const std::int64_t now = now_ns();
    if (now >= deadline) break;
    // Wake for the next reconnect or claim, or a reply that is late, too.
    std::int64_t until =
        std::min({deadline, read_.conn.next_attempt_ns(), control_.conn.next_attempt_ns()});
    for (const Link* l : {&read_, &control_}) {
      if (!l->pending.empty()) until = std::min(until, l->pending.front().deadline_ns + 1);
    }
    if (options_.claim_idle_ms > 0 && control_.conn.up()) {
      for (const Stream& st : streams_) {
        if (!st.claiming && !st.st.stopped && !st.st.paused)
          until = std::min(until, st.next_claim_ns);
      }
    }
    const std::int64_t left = std::max<std::int64_t>(until - now, 0);
    __kernel_timespec ts{.tv_sec = left / 1'000'000'000, .tv_nsec = left % 1'000'000'000};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_submit_and_wait_timeout(ring_.get(), &cqe, 1, &ts, nullptr);
    if (rc == -EINTR) break;
    if (rc < 0 && rc != -ETIME) {
      return Error{"waiting on io_uring for " + uri_ + ": " + std::strerror(-rc), -rc};
    }
  }
  io_uring_submit(ring_.get());
  return delivered;
}

// Runs the connections (completions, replies) until `until` or until commit has its answers.
void RedisSource::drive(std::int64_t until_ns) {
  const std::int64_t now = now_ns();
  if (now >= until_ns) return;
  const std::int64_t left = std::min<std::int64_t>(until_ns - now, 10'000'000);
  __kernel_timespec ts{.tv_sec = 0, .tv_nsec = left};
  io_uring_cqe* cqe = nullptr;
  io_uring_submit_and_wait_timeout(ring_.get(), &cqe, 1, &ts, nullptr);
  reap();
  maintain();
  io_uring_submit(ring_.get());
}

Status RedisSource::commit(std::uint32_t partition, std::uint64_t position) {
  if (partition >= streams_.size())
    return Error{"no partition " + std::to_string(partition), EINVAL};
  Stream& st = streams_[partition];
  if (position > st.handed_out) {
    return Error{"position " + std::to_string(position) + " of stream '" + st.name +
                     "' was never handed out (" + std::to_string(st.handed_out) + " were)",
                 EINVAL};
  }
  st.commit_target = std::max(st.commit_target, position);
  if (st.held.empty() || st.held.front().next_offset > st.commit_target) {
    st.st.committed = std::max(st.st.committed, st.commit_target);  // nothing to XACK
  }
  if (std::optional<Error> e = std::exchange(st.ack_error, std::nullopt)) return *e;
  if (!control_.conn.up() || !control_.ready) {
    return Error{"cannot acknowledge on Redis at " + where() + ": " +
                     (control_.conn.last_error().empty() ? std::string("not connected yet")
                                                         : control_.conn.last_error()),
                 ENOTCONN};
  }
  send_acks(partition, now_ns());
  control_.conn.pump();
  io_uring_submit(ring_.get());
  return Ok{};
}

// Sends XACKs for the held entries up to the commit target that are not in flight yet.
void RedisSource::send_acks(std::uint32_t s, std::int64_t now) {
  Stream& st = streams_[s];
  if (!control_.conn.up() || !control_.ready || st.ack_failed || now < st.next_ack_ns) return;
  std::size_t n = st.acks_sent;
  while (n < st.held.size() && st.held[n].next_offset <= st.commit_target) ++n;
  if (n == st.acks_sent) return;
  std::string& ids = ack_ids_;  // the ids one after another; the arguments view them
  ids.clear();
  std::vector<std::pair<std::size_t, std::size_t>> at;
  at.reserve(n - st.acks_sent);
  for (std::size_t i = st.acks_sent; i < n; ++i) {
    char buf[48];
    const std::uint64_t off = st.held[i].offset;
    char* end = std::to_chars(buf, buf + 24, off >> kSeqBits).ptr;
    *end++ = '-';
    end = std::to_chars(end, buf + sizeof buf, off & ((std::uint64_t{1} << kSeqBits) - 1)).ptr;
    at.emplace_back(ids.size(), static_cast<std::size_t>(end - buf));
    ids.append(buf, end);
  }
  std::vector<std::string_view> args;
  for (std::size_t from = st.acks_sent; from < n; from += kAckChunk) {
    const std::size_t to = std::min(n, from + kAckChunk);
    args = {"XACK", st.name, options_.group};
    for (std::size_t i = from; i < to; ++i) {
      const auto& [pos, len] = at[i - st.acks_sent];
      args.emplace_back(ids.data() + pos, len);
    }
    // Once the last command is answered, everything up to the target is acknowledged
    // (each record handed out is held until then).
    const std::uint64_t position = to == n ? st.commit_target : st.held[to - 1].next_offset;
    send(control_, args,
         {.what = Expect::ack, .stream = s, .acked = to - from, .position = position});
    ++st.acks_in_flight;
  }
  st.acks_sent = n;
}

void RedisSource::on_ack_reply(std::uint32_t s, const Pending& p, const RespValue& v) {
  Stream& st = streams_[s];
  if (st.acks_in_flight > 0) --st.acks_in_flight;
  if (v.type == RespType::error) {
    st.ack_failed = true;
    if (!st.ack_error) st.ack_error = Error{"XACK on Redis at " + where() + ": " + v.str, EIO};
  } else if (!st.ack_failed) {
    // Replies come in the order of the commands, and the commands in the order of held.
    const std::size_t n = std::min({p.acked, st.acks_sent, st.held.size()});
    st.held.erase(st.held.begin(), st.held.begin() + static_cast<std::ptrdiff_t>(n));
    st.acks_sent -= n;
    st.st.committed = std::max(st.st.committed, p.position);
  }
  if (st.ack_failed && st.acks_in_flight == 0) {
    // Everything not dropped goes again (acked ids again too: that does nothing).
    st.ack_failed = false;
    st.acks_sent = 0;
    st.next_ack_ns = now_ns() + kAckRetryNs;
  }
}

bool RedisSource::acks_outstanding() const {
  return std::any_of(streams_.begin(), streams_.end(), [](const Stream& st) {
    return !st.st.stopped && !st.held.empty() && st.held.front().next_offset <= st.commit_target;
  });
}

Status RedisSource::flush(std::chrono::milliseconds timeout) {
  const std::int64_t deadline = now_ns() + std::chrono::nanoseconds(timeout).count();
  while (acks_outstanding() && !fatal_ && now_ns() < deadline) drive(deadline);
  if (fatal_) return *fatal_;
  if (acks_outstanding()) {
    std::string why;
    for (Stream& st : streams_) {
      if (std::optional<Error> e = std::exchange(st.ack_error, std::nullopt)) why = e->message;
    }
    return Error{"XACK on Redis at " + where() + ": not acknowledged in time" +
                     (why.empty() ? std::string() : " (" + why + ")"),
                 ETIMEDOUT};
  }
  return Ok{};
}

PartitionStatus RedisSource::status(std::uint32_t partition) const {
  if (partition >= streams_.size()) return {};
  return streams_[partition].st;
}

}  // namespace

}  // namespace ringfeed::io

namespace ringfeed::io {

Result<std::uint64_t> redis_id_to_offset(std::string_view id) {
  const std::size_t dash = id.find('-');
  std::uint64_t ms = 0;
  std::uint64_t seq = 0;
  const auto bad = [&](const char* why) {
    return Error{"entry id '" + std::string(id) + "' " + why, ERANGE};
  };
  if (dash == std::string_view::npos) return bad("is not MS-SEQ");
  const auto [e1, c1] = std::from_chars(id.data(), id.data() + dash, ms);
  const auto [e2, c2] = std::from_chars(id.data() + dash + 1, id.data() + id.size(), seq);
  if (c1 != std::errc{} || e1 != id.data() + dash || c2 != std::errc{} ||
      e2 != id.data() + id.size() || dash == 0 || dash + 1 == id.size()) {
    return bad("is not MS-SEQ");
  }
  if (ms >= kMsLimit || seq >= (std::uint64_t{1} << kSeqBits)) {
    return bad("does not fit an offset (MS below 2^44 and SEQ below 2^20)");
  }
  return (ms << kSeqBits) | seq;
}

std::string redis_offset_to_id(std::uint64_t offset) {
  return std::to_string(offset >> kSeqBits) + "-" +
         std::to_string(offset & ((std::uint64_t{1} << kSeqBits) - 1));
}

Result<RedisSourceOptions> parse_redis_uri(std::string_view uri, bool for_source) {
  constexpr std::string_view kScheme = "redis://";
  if (uri.substr(0, kScheme.size()) != kScheme) return bad_uri(uri, "does not start with redis://");
  std::string_view rest = uri.substr(kScheme.size());
  const std::size_t q = rest.find('?');
  std::string_view authority = rest.substr(0, q);
  const std::string_view query =
      q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);
  RedisSourceOptions o;
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const std::size_t colon = userinfo.find(':');
    auto user = percent_decode(userinfo.substr(0, colon));
    auto pass = colon == std::string_view::npos ? std::optional<std::string>(std::string())
                                                : percent_decode(userinfo.substr(colon + 1));
    if (!user || !pass) return bad_uri(uri, "bad %-escape in the user or password");
    if (colon == std::string_view::npos) {
      o.password = *user;  // redis://PASSWORD@host, as redis-cli -u reads it
    } else {
      o.user = *user;
      o.password = *pass;
    }
  }
  if (authority.empty())
    return bad_uri(uri, "no host (expected redis://HOST:PORT?streams=...&group=...)");
  std::string_view host = authority;
  if (authority.front() == '[') {  // [IPv6]:port
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad_uri(uri, "unclosed '[' in the host");
    host = authority.substr(1, close - 1);
    authority = authority.substr(close + 1);
    if (!authority.empty() && authority.front() != ':') return bad_uri(uri, "junk after ']'");
    if (!authority.empty())
      authority = authority.substr(1);
    else
      authority = {};
    if (!authority.empty()) {
      std::uint32_t port = 0;
      if (!parse_u32(authority, port) || port == 0 || port > 65535) {
        return bad_uri(uri, "port '" + std::string(authority) + "' is not 1..65535");
      }
      o.port = static_cast<std::uint16_t>(port);
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    const std::string_view port_text = authority.substr(colon + 1);
    std::uint32_t port = 0;
    if (!parse_u32(port_text, port) || port == 0 || port > 65535) {
      return bad_uri(uri, "port '" + std::string(port_text) + "' is not 1..65535");
    }
    o.port = static_cast<std::uint16_t>(port);
  }
  if (host.empty()) return bad_uri(uri, "no host");
  o.host = std::string(host);

  std::unordered_set<std::string> seen;
  for (const std::string& param : query.empty() ? std::vector<std::string>{} : split(query, '&')) {
    const std::size_t eq = param.find('=');
    const std::string name = param.substr(0, eq);
    const std::string value = eq == std::string::npos ? std::string() : param.substr(eq + 1);
    if (param.empty()) return bad_uri(uri, "empty parameter");
    if (!seen.insert(name).second) return bad_uri(uri, "parameter '" + name + "' given twice");
    const auto number = [&](std::uint32_t& out, std::uint32_t min, std::uint32_t max) -> Status {
      if (!parse_u32(value, out) || out < min || out > max) {
        return bad_uri(uri, name + " '" + value + "' is not a number in " + std::to_string(min) +
                                ".." + std::to_string(max));
      }
      return Ok{};
    };
    Status ok = Ok{};
    if (name == "streams") {
      o.streams = split(value, ',');
      std::unordered_set<std::string> names;
      for (const std::string& s : o.streams) {
        if (s.empty()) return bad_uri(uri, "an empty stream name in streams=");
        if (!names.insert(s).second) return bad_uri(uri, "stream '" + s + "' listed twice");
      }
    } else if (name == "group") {
      o.group = value;
    } else if (name == "consumer") {
      o.consumer = value;
      if (value.empty()) return bad_uri(uri, "empty consumer name");
    } else if (name == "batch") {
      ok = number(o.batch, 1, 1'000'000);
    } else if (name == "block-ms") {
      ok = number(o.block_ms, 1, 3'600'000);
    } else if (name == "claim-idle-ms") {
      ok = number(o.claim_idle_ms, 0, 86'400'000);
    } else if (name == "connect-timeout-ms") {
      ok = number(o.connect_timeout_ms, 1, 600'000);
    } else {
      return bad_uri(uri, "unknown parameter '" + name +
                              "' (redis:// takes streams, group, consumer, batch, block-ms, "
                              "claim-idle-ms, connect-timeout-ms)");
    }
    if (!ok) return ok.error();
  }
  if (o.streams.empty()) return bad_uri(uri, "no streams (add ?streams=S0,S1,...)");
  if (o.group.empty() && for_source) return bad_uri(uri, "no group (add &group=G)");
  if (o.consumer.empty()) o.consumer = "ringfeed-" + hostname();
  if (o.password.empty()) {
    if (const char* p = std::getenv("RINGFEED_REDIS_PASSWORD"); p != nullptr) o.password = p;
    if (const char* u = std::getenv("RINGFEED_REDIS_USER"); u != nullptr && o.user.empty())
      o.user = u;
  }
  return o;
}

Result<std::unique_ptr<Source>> open_redis(const RedisSourceOptions& options, std::string uri) {
  auto source = std::make_unique<RedisSource>(options, std::move(uri));
  if (Status s = source->open(); !s) return s.error();
  return std::unique_ptr<Source>(std::move(source));
}

}  // namespace ringfeed::io
