// The Kafka source (see kafka_source.hpp for what it does). Here: the URI, the broker
// connections on the source's io_uring, and the per-partition state machine: the start
// position (OffsetFetch, else ListOffsets by the reset policy), then Fetch, with commits
// going out beside it.
//
// Completions are tagged in user_data by their top byte: 1..kMaxConnections a connection
// (UringConnection routes the rest), then the eventfd read of wake(), a watched
// descriptor (index in the low bits), and the cancel of the destructor.
#include "io/kafka_source.hpp"

#include <liburing.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>

#include "io/kafka_group.hpp"
#include "io/kafka_messages.hpp"
#include "io/kafka_records.hpp"
#include "io/kafka_wire.hpp"
#include "io/uring.hpp"
#include "io/uring_connection.hpp"
#include "io/wakeups.hpp"

namespace ringfeed::io {

namespace {

namespace k = kafka;

constexpr std::size_t kMaxConnections = 0xef;
constexpr std::uint64_t kWakeTag = std::uint64_t{0xf0} << 56;
constexpr std::uint64_t kWatchTag = std::uint64_t{0xf1} << 56;
constexpr std::uint64_t kCancelTag = std::uint64_t{0xf2} << 56;
// A response that takes longer than this (beyond a Fetch's wait) ends the connection.
constexpr std::int64_t kReplyTimeoutNs = 30'000'000'000;
// Kafka's retry.backoff.ms: after a leader change or a retriable error.
constexpr std::int64_t kRetryBackoffNs = 200'000'000;
// After an error that retrying at once would repeat (a refused commit, an unknown topic).
constexpr std::int64_t kErrorBackoffNs = 1'000'000'000;

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Error bad_uri(std::string_view uri, const std::string& what) {
  return Error{"source URI '" + std::string(uri) + "': " + what, EINVAL};
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const std::size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s = s.substr(at + 1);
  }
}

// Errors after which a client refreshes its metadata: the leader moved or is not known.
bool leader_error(std::int16_t code) {
  switch (static_cast<k::ErrorCode>(code)) {
    case k::ErrorCode::not_leader_or_follower:
    case k::ErrorCode::unknown_topic_or_partition:
    case k::ErrorCode::leader_not_available:
    case k::ErrorCode::replica_not_available:
    case k::ErrorCode::fenced_leader_epoch:
    case k::ErrorCode::unknown_leader_epoch:
      return true;
    default:
      return false;
  }
}

// OffsetCommit errors that say the member's generation is over.
bool generation_error(std::int16_t code) {
  switch (static_cast<k::ErrorCode>(code)) {
    case k::ErrorCode::rebalance_in_progress:
    case k::ErrorCode::illegal_generation:
    case k::ErrorCode::unknown_member_id:
      return true;
    default:
      return false;
  }
}

// "partition 4" or "partitions 4, 5, 6", at most 16 named.
std::string partition_list(const std::vector<std::int32_t>& partitions) {
  std::string out = partitions.size() == 1 ? "partition " : "partitions ";
  for (std::size_t i = 0; i < partitions.size() && i < 16; ++i) {
    out += (i == 0 ? "" : ", ") + std::to_string(partitions[i]);
  }
  if (partitions.size() > 16) out += ", ... (" + std::to_string(partitions.size()) + " in all)";
  return out;
}

// Errors after which a client looks for the group's coordinator again.
bool coordinator_error(std::int16_t code) {
  switch (static_cast<k::ErrorCode>(code)) {
    case k::ErrorCode::coordinator_not_available:
    case k::ErrorCode::not_coordinator:
    case k::ErrorCode::coordinator_load_in_progress:
      return true;
    default:
      return false;
  }
}

// A record fetched, not yet handed out: copied out of the response, which goes with the
// receive buffer.
struct Entry {
  std::uint64_t offset = 0;
  std::int64_t timestamp_ns = 0;
  std::string key;
  std::string value;
  std::string headers;  // as in the record (SourceRecord::headers)

  std::size_t bytes() const { return key.size() + value.size() + headers.size(); }
};

enum class Phase : std::uint8_t {
  offset_fetch,  // asking the coordinator for the group's committed offset
  reset,         // asking the leader for the offset the reset policy names
  fetching,
};

struct Part {
  std::int32_t kafka = 0;    // the Kafka partition
  std::int32_t leader = -1;  // node id; -1: unknown, waiting for metadata
  Phase phase = Phase::offset_fetch;
  std::uint64_t position = 0;  // the next offset to fetch
  std::int32_t fetch_bytes = 0;
  bool in_request = false;  // an OffsetFetch, ListOffsets or Fetch for it is in flight
  std::int64_t retry_ns = 0;
  std::deque<Entry> ready;
  std::size_t ready_bytes = 0;
  // Commits, asynchronous: commit() raises commit_target; OffsetCommit sends it, and the
  // reply moves st.committed. A refused one is said by the next commit() and sent again
  // after kErrorBackoffNs.
  std::uint64_t commit_target = 0;
  bool commit_in_flight = false;
  std::int64_t next_commit_ns = 0;
  std::optional<Error> commit_error;
  PartitionStatus st;
  // Group membership: held by this host (pinned partitions always are), and being given
  // up in a rebalance (no fetching, commits still go out).
  bool owned = true;
  bool releasing = false;
  bool active() const { return owned && !releasing; }
};

// A request sent on a connection whose response has not been read yet. Kafka answers
// the requests of one connection in order.
struct Request {
  std::int32_t correlation_id = 0;
  k::ApiKey api = k::ApiKey::api_versions;
  std::int16_t version = 0;
  std::int64_t deadline_ns = 0;
  std::vector<std::uint32_t> parts;      // the source partitions it is about
  std::vector<std::uint64_t> positions;  // OffsetCommit: the offsets committed
};

struct Conn {
  Conn(io_uring* ring, std::uint8_t id, ConnectionOptions o, std::string conn_key)
      : conn(ring, id, std::move(o)), key(std::move(conn_key)) {}
  UringConnection conn;
  std::string key;      // "host:port", or "coordinator host:port"
  std::string where;    // "host:port", for messages
  bool group = false;   // the group membership's: JoinGroup may wait there for long
  bool ready = false;   // up and ApiVersions answered
  bool wanted = false;  // maintain() keeps it connected (a leader, the coordinator, ...)
  std::array<std::int16_t, 19> versions{};
  std::deque<Request> pending;
};

class KafkaSource final : public Source {
 public:
  KafkaSource(KafkaSourceOptions options, std::string uri)
      : options_(std::move(options)), uri_(std::move(uri)) {}
  ~KafkaSource() override;

  Status open();
  std::uint32_t partitions() const override { return static_cast<std::uint32_t>(parts_.size()); }
  std::uint64_t committed(std::uint32_t partition) const override {
    return partition < parts_.size() ? parts_[partition].st.committed : 0;
  }
  Result<std::size_t> poll(const RecordSink& sink, std::chrono::milliseconds timeout) override {
    OneAtATime one(sink);
    return poll_batches(one, timeout);
  }
  Result<std::size_t> poll_batches(BatchSink& sink, std::chrono::milliseconds timeout) override;
  void resume(std::uint32_t partition) override {
    if (partition < parts_.size()) parts_[partition].st.paused = false;
  }
  Status commit(std::uint32_t partition, std::uint64_t position) override;
  Status flush(std::chrono::milliseconds timeout) override;
  PartitionStatus status(std::uint32_t partition) const override;
  std::string warning() const override {
    return assignment_problem_.empty() ? unserved_problem_ : assignment_problem_;
  }
  void wake() override { wakeups_.wake(); }
  bool watch_readable(int fd) override { return ring_.ready() && wakeups_.watch(fd, 16); }
  const std::string& uri() const override { return uri_; }

 private:
  enum class Role : std::uint8_t { broker, coordinator, group };
  Conn* connection(const std::string& host, std::uint16_t port, Role role);
  Conn* broker(std::int32_t node_id);
  Conn* control_connection();
  template <typename Req>
  bool send(Conn& c, const Req& r, Request meta);
  void reap();
  void on_event(Conn& c, UringConnection::Event e);
  void on_connected(Conn& c);
  void drop(Conn& c, const std::string& why);
  void on_failed(Conn& c);
  void on_response(Conn& c, Request& rq, std::string_view body);
  template <typename Resp>
  bool decode(Conn& c, const Request& rq, std::string_view body, Resp& out);
  void on_api_versions(Conn& c, const k::ApiVersionsResponse& r);
  void on_metadata(Conn& c, const k::MetadataResponse& r);
  void on_topic_partitions(std::vector<std::int32_t> all);
  void rebalance_if_partitions_changed();
  void on_find_coordinator(Conn& c, const k::FindCoordinatorResponse& r);
  void on_offset_fetch(Conn& c, const Request& rq, const k::OffsetFetchResponse& r);
  void on_list_offsets(Conn& c, const Request& rq, const k::ListOffsetsResponse& r);
  void on_fetch(Conn& c, const Request& rq, const k::FetchResponse& r);
  void on_offset_commit(Conn& c, const Request& rq, const k::OffsetCommitResponse& r);
  template <typename Resp>
  void on_group(Conn& c, const Request& rq, std::string_view body);
  bool grouped() const { return group_.has_value(); }
  void run_group(std::int64_t now);
  void begin_revoke(std::int64_t now);
  bool revoke_done(std::int64_t now) const;
  void end_revoke();
  void assign(const std::vector<std::int32_t>& kafka_partitions);
  void leave_group();
  Part* part_of(const Request& rq, std::int32_t kafka_partition);
  void lost_leader(Part& p, const std::string& why, std::int64_t now);
  void lost_coordinator(const std::string& why, std::int64_t now);
  void maintain();
  void send_commits(std::int64_t now);
  bool commits_outstanding() const;
  std::size_t deliver(std::uint32_t i, BatchSink& sink);
  void drive(std::int64_t until_ns);
  std::int64_t wake_at() const;
  void later(std::int64_t at) { timer_ns_ = std::min(timer_ns_, at); }

  KafkaSourceOptions options_;
  std::string uri_;
  std::vector<Part> parts_;
  std::map<std::int32_t, std::uint32_t> by_kafka_;  // Kafka partition -> source partition
  std::map<std::int32_t, std::pair<std::string, std::uint16_t>> brokers_;  // from Metadata
  bool have_metadata_ = false;
  bool metadata_wanted_ = true;
  bool metadata_in_flight_ = false;
  std::int64_t next_metadata_ns_ = 0;
  std::int64_t metadata_refresh_ns_ = INT64_MAX;  // read it again then, unasked
  std::vector<std::int32_t> topic_partitions_;    // the topic's, from the last Metadata
  std::vector<std::int32_t> synced_from_;         // those of the last SyncGroup sent
  std::string unserved_problem_;                  // partitions of the topic without a ring
  std::string topic_error_;                       // the topic is not there (Metadata said so)
  Conn* coordinator_ = nullptr;
  bool find_in_flight_ = false;
  std::int64_t next_find_ns_ = 0;
  std::string coordinator_error_;
  // Group membership (without pinned partitions): the member, its connection to the
  // coordinator, and the revocation under way.
  std::optional<k::GroupMember> group_;
  Conn* group_conn_ = nullptr;
  bool revoking_ = false;
  std::int64_t revoke_deadline_ns_ = 0;
  bool commits_refused_ = false;    // an OffsetCommit said the generation is over
  std::string assignment_problem_;  // partitions assigned here that have no ring here
  bool closing_ = false;
  bool left_ = false;
  std::int32_t next_correlation_id_ = 1;
  std::int64_t timer_ns_ = INT64_MAX;  // maintain() has something to do then
  Wakeups wakeups_{kWakeTag, kWatchTag};
  bool woken_ = false;
  std::optional<Error> fatal_;
  k::RecordBatch batch_;
  std::vector<SourceRecord> records_;
  // Last members: the connections are destroyed first (after the destructor drained the
  // ring), then the ring.
  Uring ring_;
  std::vector<std::unique_ptr<Conn>> conns_;  // conns_[i] has id i + 1
};

Status KafkaSource::open() {
  if (const int rc = ring_.init(256); rc < 0) {
    return Error{Uring::describe_init_error(rc) + " (" + uri_ + ")", -rc};
  }
  if (Status s = wakeups_.open(uri_); !s) return s;
  if (options_.partitions.empty()) {
    const auto ms = [](std::uint32_t v) { return static_cast<std::int32_t>(v); };
    group_.emplace(k::GroupOptions{.group = options_.group,
                                   .topic = options_.topic,
                                   .session_timeout_ms = ms(options_.session_timeout_ms),
                                   // How long the coordinator waits for the members to join again:
                                   // the grace of a revocation, and then some.
                                   .rebalance_timeout_ms = ms(std::max<std::uint32_t>(
                                       30'000, options_.revoke_grace_ms + 10'000)),
                                   .heartbeat_interval_ms = ms(options_.heartbeat_interval_ms)});
  }
  for (const KafkaBroker& b : options_.bootstrap) connection(b.host, b.port, Role::broker);
  for (const std::int32_t kp : options_.partitions) {
    by_kafka_.emplace(kp, static_cast<std::uint32_t>(parts_.size()));
    parts_.push_back({.kafka = kp});
  }
  wakeups_.arm(ring_.get());
  maintain();
  io_uring_submit(ring_.get());
  if (!options_.partitions.empty()) return Ok{};

  // Every partition of the topic: the fetcher needs their number now.
  const std::int64_t deadline =
      now_ns() + std::int64_t{10} * options_.connect_timeout_ms * 1'000'000;
  while (!have_metadata_ && topic_error_.empty() && !fatal_ && now_ns() < deadline) {
    drive(deadline);
  }
  if (fatal_) return *fatal_;
  if (!topic_error_.empty()) return Error{uri_ + ": " + topic_error_, ENOENT};
  if (!have_metadata_) {
    std::string why;
    for (const auto& c : conns_) {
      if (!c->conn.last_error().empty()) why += "; " + c->where + ": " + c->conn.last_error();
    }
    return Error{uri_ + ": no metadata of topic '" + options_.topic + "' from the cluster within " +
                     std::to_string(10 * options_.connect_timeout_ms) + " ms" + why,
                 ETIMEDOUT};
  }
  return Ok{};
}

KafkaSource::~KafkaSource() {
  if (!ring_.ready()) return;
  leave_group();
  // The eventfd read and the watches never finish on their own, and the connections'
  // receives only when the peer says something: cancel and shut down, then see every
  // completion, so the kernel writes into no buffer after this.
  io_uring* ring = ring_.get();
  if (io_uring_sqe* sqe = io_uring_get_sqe(ring); sqe != nullptr) {
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, kCancelTag);
  }
  for (auto& c : conns_) c->conn.shutdown_all();
  io_uring_submit(ring);
  const auto busy = [&] {
    return wakeups_.in_flight() > 0 || std::any_of(conns_.begin(), conns_.end(), [](const auto& c) {
             return c->conn.in_flight() > 0;
           });
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
    if (top >= 1 && top <= conns_.size()) {
      conns_[top - 1]->conn.handle(*cqe, now_ns());
    } else {
      wakeups_.complete_at_close(*cqe);
    }
    io_uring_cqe_seen(ring, cqe);
  }
}

// The connection to host:port (separate ones for the coordinator, so that commits do not
// wait behind a Fetch nor offsets behind a JoinGroup), made on first use.
Conn* KafkaSource::connection(const std::string& host, std::uint16_t port, Role role) {
  const std::string where = host + ":" + std::to_string(port);
  const std::string key = (role == Role::coordinator ? "coordinator "
                           : role == Role::group     ? "group "
                                                     : "") +
                          where;
  for (auto& c : conns_) {
    if (c->key == key) return c.get();
  }
  if (conns_.size() >= kMaxConnections) {
    fatal_ = Error{uri_ + ": more than " + std::to_string(kMaxConnections) + " broker addresses",
                   EMFILE};
    return nullptr;
  }
  conns_.push_back(std::make_unique<Conn>(
      ring_.get(), static_cast<std::uint8_t>(conns_.size() + 1),
      ConnectionOptions{.host = host,
                        .port = port,
                        .connect_timeout = std::chrono::milliseconds(options_.connect_timeout_ms)},
      key));
  conns_.back()->where = where;
  conns_.back()->group = role == Role::group;
  return conns_.back().get();
}

Conn* KafkaSource::broker(std::int32_t node_id) {
  const auto it = brokers_.find(node_id);
  if (it == brokers_.end()) return nullptr;
  return connection(it->second.first, it->second.second, Role::broker);
}

// Where Metadata and FindCoordinator go: a ready connection, one with nothing in flight
// (not behind a Fetch) first.
Conn* KafkaSource::control_connection() {
  Conn* any = nullptr;
  for (auto& c : conns_) {
    if (!c->ready || c->group) continue;
    if (c->pending.empty()) return c.get();
    if (any == nullptr) any = c.get();
  }
  return any;
}

template <typename Req>
bool KafkaSource::send(Conn& c, const Req& r, Request meta) {
  meta.api = Req::kApi;
  if constexpr (Req::kApi == k::ApiKey::api_versions) {
    meta.version = k::supported_versions(k::ApiKey::api_versions).max;
  } else {
    meta.version = c.versions[static_cast<std::size_t>(Req::kApi)];
  }
  meta.correlation_id = next_correlation_id_++;
  if (next_correlation_id_ == INT32_MAX) next_correlation_id_ = 1;
  if (meta.deadline_ns == 0) meta.deadline_ns = now_ns() + kReplyTimeoutNs;
  if (Status s = k::append_request(c.conn.out(),
                                   {.correlation_id = meta.correlation_id,
                                    .version = meta.version,
                                    .client_id = options_.client_id},
                                   r);
      !s) {
    drop(c, s.error().message);
    return false;
  }
  c.pending.push_back(std::move(meta));
  return true;
}

// Handles every completion there is, without waiting.
void KafkaSource::reap() {
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
  for (const io_uring_cqe& c : batch) {
    const std::uint64_t top = c.user_data >> 56;
    if (top >= 1 && top <= conns_.size()) {
      Conn& conn = *conns_[top - 1];
      on_event(conn, conn.conn.handle(c, now_ns()));
    } else if (wakeups_.complete(ring, c)) {
      woken_ = true;
    }
  }
}

void KafkaSource::on_event(Conn& c, UringConnection::Event e) {
  switch (e) {
    case UringConnection::Event::none:
      return;
    case UringConnection::Event::connected:
      on_connected(c);
      return;
    case UringConnection::Event::failed:
      on_failed(c);
      return;
    case UringConnection::Event::received:
      break;
  }
  for (;;) {
    const auto in = c.conn.received();
    const k::ResponseFrame f = k::read_response_frame(std::string_view(in.data(), in.size()));
    if (f.status == k::FrameStatus::need_more) {
      c.conn.expect(f.size);
      return;
    }
    if (f.status == k::FrameStatus::error) {
      drop(c, "response frame: " + f.error);
      return;
    }
    if (c.pending.empty() || c.pending.front().correlation_id != f.correlation_id) {
      drop(c, "a response with correlation id " + std::to_string(f.correlation_id) +
                  (c.pending.empty()
                       ? std::string(" that no request asked for")
                       : ", expected " + std::to_string(c.pending.front().correlation_id)));
      return;
    }
    Request rq = std::move(c.pending.front());
    c.pending.pop_front();
    on_response(c, rq, f.body);
    if (!c.conn.up()) return;  // the response ended the connection
    c.conn.consume(f.size);
  }
}

void KafkaSource::on_connected(Conn& c) {
  c.pending.clear();
  c.ready = false;
  send(c, k::ApiVersionsRequest{}, {});
}

// Gives the connection up (a bad response, an answer that cannot be acted on): it
// reconnects after its backoff.
void KafkaSource::drop(Conn& c, const std::string& why) {
  c.conn.fail(why, now_ns());
  on_failed(c);
}

// Whatever was in flight on a connection that failed is asked again.
void KafkaSource::on_failed(Conn& c) {
  const std::int64_t now = now_ns();
  const std::string why = "Kafka broker at " + c.where + ": " + c.conn.last_error();
  for (const Request& rq : c.pending) {
    switch (rq.api) {
      case k::ApiKey::metadata:
        metadata_in_flight_ = false;
        break;
      case k::ApiKey::find_coordinator:
        find_in_flight_ = false;
        break;
      case k::ApiKey::join_group:
      case k::ApiKey::sync_group:
      case k::ApiKey::heartbeat:
        if (group_ && &c == group_conn_) group_->on_lost(k::api_name(rq.api) + " to " + why, now);
        break;
      case k::ApiKey::leave_group:
        left_ = true;  // nobody to wait for
        break;
      case k::ApiKey::offset_commit:
        for (const std::uint32_t i : rq.parts) {
          Part& p = parts_[i];
          p.commit_in_flight = false;
          if (!p.commit_error) p.commit_error = Error{"OffsetCommit to " + why, EIO};
        }
        break;
      default:
        for (const std::uint32_t i : rq.parts) {
          Part& p = parts_[i];
          p.in_request = false;
          if (!p.st.stopped) p.st.error = why;
        }
        break;
    }
  }
  c.pending.clear();
  c.ready = false;
  // A leader that cannot be reached may have been replaced: ask the cluster.
  for (Part& p : parts_) {
    if (p.leader >= 0 && broker(p.leader) == &c) lost_leader(p, why, now);
  }
  if ((&c == coordinator_ || &c == group_conn_) && c.conn.failures() >= 3) {
    lost_coordinator(why, now);
  }
}

template <typename Resp>
bool KafkaSource::decode(Conn& c, const Request& rq, std::string_view body, Resp& out) {
  if (Status s = k::decode_response(body, rq.version, out); !s) {
    // The request's partitions learn why (on_failed does not see this request any more).
    const std::string why = "Kafka broker at " + c.where + ": " + s.error().message;
    for (const std::uint32_t i : rq.parts) {
      parts_[i].in_request = false;
      parts_[i].commit_in_flight = false;
      if (!parts_[i].st.stopped) parts_[i].st.error = why;
    }
    // Every partition that waits for its leader waits for the metadata.
    for (Part& p : parts_) {
      if (rq.api == k::ApiKey::metadata && p.leader < 0 && !p.st.stopped) p.st.error = why;
    }
    if (rq.api == k::ApiKey::metadata) metadata_in_flight_ = false;
    if (rq.api == k::ApiKey::find_coordinator) find_in_flight_ = false;
    if (group_ && &c == group_conn_ &&
        (rq.api == k::ApiKey::join_group || rq.api == k::ApiKey::sync_group ||
         rq.api == k::ApiKey::heartbeat)) {
      group_->on_lost(why, now_ns());
    }
    drop(c, s.error().message);
    return false;
  }
  return true;
}

void KafkaSource::on_response(Conn& c, Request& rq, std::string_view body) {
  switch (rq.api) {
    case k::ApiKey::api_versions: {
      k::ApiVersionsResponse r;
      if (decode(c, rq, body, r)) on_api_versions(c, r);
      return;
    }
    case k::ApiKey::metadata: {
      metadata_in_flight_ = false;
      k::MetadataResponse r;
      if (decode(c, rq, body, r)) on_metadata(c, r);
      return;
    }
    case k::ApiKey::find_coordinator: {
      find_in_flight_ = false;
      k::FindCoordinatorResponse r;
      if (decode(c, rq, body, r)) on_find_coordinator(c, r);
      return;
    }
    case k::ApiKey::offset_fetch: {
      k::OffsetFetchResponse r;
      if (decode(c, rq, body, r)) on_offset_fetch(c, rq, r);
      return;
    }
    case k::ApiKey::list_offsets: {
      k::ListOffsetsResponse r;
      if (decode(c, rq, body, r)) on_list_offsets(c, rq, r);
      return;
    }
    case k::ApiKey::fetch: {
      k::FetchResponse r;
      if (decode(c, rq, body, r)) on_fetch(c, rq, r);
      return;
    }
    case k::ApiKey::offset_commit: {
      k::OffsetCommitResponse r;
      if (decode(c, rq, body, r)) on_offset_commit(c, rq, r);
      return;
    }
    case k::ApiKey::join_group:
      on_group<k::JoinGroupResponse>(c, rq, body);
      return;
    case k::ApiKey::sync_group:
      on_group<k::SyncGroupResponse>(c, rq, body);
      return;
    case k::ApiKey::heartbeat:
      on_group<k::HeartbeatResponse>(c, rq, body);
      return;
    case k::ApiKey::leave_group: {
      left_ = true;  // whatever it says: the session ends anyway
      k::LeaveGroupResponse r;
      static_cast<void>(decode(c, rq, body, r));
      return;
    }
    default:
      drop(c, "a response to " + k::api_name(rq.api) + ", which was never sent");
      return;
  }
}

void KafkaSource::on_api_versions(Conn& c, const k::ApiVersionsResponse& r) {
  if (r.error_code != 0) {
    drop(c, "ApiVersions: " + k::error_name(r.error_code));
    return;
  }
  for (const k::ApiKey api :
       {k::ApiKey::metadata, k::ApiKey::list_offsets, k::ApiKey::fetch, k::ApiKey::offset_commit,
        k::ApiKey::offset_fetch, k::ApiKey::find_coordinator, k::ApiKey::join_group,
        k::ApiKey::sync_group, k::ApiKey::heartbeat, k::ApiKey::leave_group}) {
    const bool membership = api == k::ApiKey::join_group || api == k::ApiKey::sync_group ||
                            api == k::ApiKey::heartbeat || api == k::ApiKey::leave_group;
    if (membership && !grouped()) continue;
    const std::optional<std::int16_t> v = k::pick_version(r, api);
    if (!v) {
      const k::VersionRange ours = k::supported_versions(api);
      // Nothing to retry for: the cluster and ringfeed have no version in common.
      fatal_ = Error{"Kafka broker at " + c.where + " speaks no version of " + k::api_name(api) +
                         " that ringfeed speaks (" + std::to_string(ours.min) + " to " +
                         std::to_string(ours.max) + ")",
                     EPROTONOSUPPORT};
      return;
    }
    c.versions[static_cast<std::size_t>(api)] = *v;
  }
  c.ready = true;
}

void KafkaSource::on_metadata(Conn& c, const k::MetadataResponse& r) {
  const std::int64_t now = now_ns();
  next_metadata_ns_ = now + kRetryBackoffNs;
  for (const k::MetadataBroker& b : r.brokers) {
    if (b.port <= 0 || b.port > 65535) continue;
    brokers_[b.node_id] = {b.host, static_cast<std::uint16_t>(b.port)};
  }
  const k::MetadataTopic* topic = nullptr;
  for (const k::MetadataTopic& t : r.topics) {
    if (t.name == options_.topic) topic = &t;
  }
  if (topic == nullptr || topic->error_code != 0) {
    topic_error_ = "topic '" + options_.topic + "' " +
                   (topic == nullptr ? std::string("does not exist (not in the metadata")
                                     : "is not available (" + k::error_name(topic->error_code)) +
                   " from " + c.where + ")";
    for (Part& p : parts_) {
      if (!p.st.stopped) p.st.error = topic_error_;
    }
    next_metadata_ns_ = now + kErrorBackoffNs;
    metadata_wanted_ = true;
    return;
  }
  topic_error_.clear();
  // Every partition of the topic, in the order of their numbers.
  std::vector<std::int32_t> all;
  for (const k::MetadataPartition& mp : topic->partitions) all.push_back(mp.partition_index);
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  if (parts_.empty()) {
    for (const std::int32_t kp : all) {
      by_kafka_.emplace(kp, static_cast<std::uint32_t>(parts_.size()));
      parts_.push_back({.kafka = kp});
      parts_.back().owned = !grouped();  // a member waits for its assignment
    }
  }
  if (grouped()) on_topic_partitions(std::move(all));
  have_metadata_ = true;
  metadata_wanted_ = false;
  metadata_refresh_ns_ = now + std::int64_t{options_.metadata_max_age_ms} * 1'000'000;
  for (Part& p : parts_) {
    const k::MetadataPartition* mp = nullptr;
    for (const k::MetadataPartition& m : topic->partitions) {
      if (m.partition_index == p.kafka) mp = &m;
    }
    std::string why;
    if (mp == nullptr) {
      why = "partition " + std::to_string(p.kafka) + " of topic '" + options_.topic +
            "' does not exist (the topic has " + std::to_string(topic->partitions.size()) + ")";
    } else if (mp->error_code != 0 && mp->leader_id < 0) {
      why = "partition " + std::to_string(p.kafka) + ": " + k::error_name(mp->error_code);
    } else if (mp->leader_id < 0 || brokers_.count(mp->leader_id) == 0) {
      why = "partition " + std::to_string(p.kafka) + " has no leader now";
    }
    if (!why.empty()) {
      p.leader = -1;
      if (!p.st.stopped) p.st.error = why + " (Metadata from " + c.where + ")";
      metadata_wanted_ = true;
      continue;
    }
    if (p.leader != mp->leader_id) p.leader = mp->leader_id;
  }
  if (metadata_wanted_) next_metadata_ns_ = now + kErrorBackoffNs;
}

// A group member's view of the topic's partitions from a Metadata: those without a ring
// here are said, and a change (partitions added) makes a leader rebalance.
void KafkaSource::on_topic_partitions(std::vector<std::int32_t> all) {
  std::vector<std::int32_t> unserved;
  for (const std::int32_t kp : all) {
    if (by_kafka_.count(kp) == 0) unserved.push_back(kp);
  }
  unserved_problem_.clear();
  if (!unserved.empty()) {
    unserved_problem_ = "topic '" + options_.topic + "' has " + std::to_string(all.size()) +
                        " partitions now and this fetcher has rings for the " +
                        std::to_string(parts_.size()) +
                        " it had when it started: " + partition_list(unserved) +
                        " cannot be fetched on this host until its fetcher is restarted";
  }
  topic_partitions_ = std::move(all);
  rebalance_if_partitions_changed();
}

// A leader whose assignment was made from other partitions than the topic has now starts
// a rebalance (once stable: a Metadata that came while it synced is caught here later).
void KafkaSource::rebalance_if_partitions_changed() {
  if (!group_->leader() || group_->phase() != k::GroupMember::Phase::stable ||
      synced_from_.empty() || synced_from_ == topic_partitions_) {
    return;
  }
  group_->partitions_changed("topic '" + options_.topic + "' has " +
                             std::to_string(topic_partitions_.size()) + " partitions now, " +
                             std::to_string(synced_from_.size()) +
                             " at the last assignment: the leader assigns them again");
}

void KafkaSource::on_find_coordinator(Conn& c, const k::FindCoordinatorResponse& r) {
  const std::int64_t now = now_ns();
  if (r.error_code != 0 || r.port <= 0 || r.port > 65535) {
    coordinator_error_ =
        "FindCoordinator of group '" + options_.group + "' at " + c.where + ": " +
        (r.error_code != 0 ? k::error_name(r.error_code) : "port " + std::to_string(r.port));
    next_find_ns_ = now + (coordinator_error(r.error_code) ? kRetryBackoffNs : kErrorBackoffNs);
    return;
  }
  coordinator_error_.clear();
  coordinator_ = connection(r.host, static_cast<std::uint16_t>(r.port), Role::coordinator);
  if (grouped()) group_conn_ = connection(r.host, static_cast<std::uint16_t>(r.port), Role::group);
}

void KafkaSource::lost_leader(Part& p, const std::string& why, std::int64_t now) {
  p.leader = -1;
  p.retry_ns = now + kRetryBackoffNs;
  if (!p.st.stopped) p.st.error = why;
  metadata_wanted_ = true;
}

void KafkaSource::lost_coordinator(const std::string& why, std::int64_t now) {
  coordinator_ = nullptr;
  if (group_conn_ != nullptr) {
    // The member joins the new coordinator's group again; answers still to come on the
    // old connection are ignored.
    group_conn_ = nullptr;
    group_->on_lost("the coordinator of group '" + options_.group + "' moved: " + why, now);
  }
  coordinator_error_ = why;
  next_find_ns_ = std::max(next_find_ns_, now + kRetryBackoffNs);
}

Part* KafkaSource::part_of(const Request& rq, std::int32_t kafka_partition) {
  const auto it = by_kafka_.find(kafka_partition);
  if (it == by_kafka_.end()) return nullptr;
  if (std::find(rq.parts.begin(), rq.parts.end(), it->second) == rq.parts.end()) return nullptr;
  // An answer for a partition given up meanwhile: its state starts again when it comes back.
  if (!parts_[it->second].active()) return nullptr;
  return &parts_[it->second];
}

void KafkaSource::on_offset_fetch(Conn& c, const Request& rq, const k::OffsetFetchResponse& r) {
  const std::int64_t now = now_ns();
  for (const std::uint32_t i : rq.parts) {
    parts_[i].in_request = false;
    parts_[i].retry_ns = now + kRetryBackoffNs;  // unless answered below
  }
  if (r.error_code != 0) {
    const std::string why = "OffsetFetch of group '" + options_.group + "' at " + c.where + ": " +
                            k::error_name(r.error_code);
    if (coordinator_error(r.error_code)) lost_coordinator(why, now);
    for (const std::uint32_t i : rq.parts) {
      if (!parts_[i].st.stopped) parts_[i].st.error = why;
    }
    return;
  }
  for (const k::OffsetFetchTopicResponse& t : r.topics) {
    if (t.name != options_.topic) continue;
    for (const k::OffsetFetchPartitionResponse& op : t.partitions) {
      Part* p = part_of(rq, op.partition_index);
      if (p == nullptr || p->phase != Phase::offset_fetch) continue;
      if (op.error_code != 0) {
        const std::string why = "OffsetFetch of group '" + options_.group + "', partition " +
                                std::to_string(p->kafka) + " at " + c.where + ": " +
                                k::error_name(op.error_code);
        if (coordinator_error(op.error_code)) lost_coordinator(why, now);
        if (!p->st.stopped) p->st.error = why;
        continue;
      }
      if (op.committed_offset < 0) {
        p->phase = Phase::reset;  // nothing committed: the reset policy says where
      } else {
        const auto at = static_cast<std::uint64_t>(op.committed_offset);
        p->phase = Phase::fetching;
        p->st.committed = std::max(p->st.committed, at);
        // A partition given back to this host resumes after what its ring already holds
        // (kafka_source.hpp): offsets handed out only grow.
        p->st.fetched = std::max(p->st.fetched, at);
        p->position = p->st.fetched;
      }
      p->retry_ns = 0;
    }
  }
}

void KafkaSource::on_list_offsets(Conn& c, const Request& rq, const k::ListOffsetsResponse& r) {
  const std::int64_t now = now_ns();
  for (const std::uint32_t i : rq.parts) {
    parts_[i].in_request = false;
    parts_[i].retry_ns = now + kRetryBackoffNs;
  }
  for (const k::ListOffsetsTopicResponse& t : r.topics) {
    if (t.name != options_.topic) continue;
    for (const k::ListOffsetsPartitionResponse& lp : t.partitions) {
      Part* p = part_of(rq, lp.partition_index);
      if (p == nullptr || p->phase != Phase::reset) continue;
      const std::string where =
          "ListOffsets of partition " + std::to_string(p->kafka) + " at " + c.where + ": ";
      if (leader_error(lp.error_code)) {
        lost_leader(*p, where + k::error_name(lp.error_code), now);
        continue;
      }
      if (lp.error_code != 0 || lp.offset < 0) {
        if (!p->st.stopped)
          p->st.error = where + (lp.error_code != 0 ? k::error_name(lp.error_code)
                                                    : "offset " + std::to_string(lp.offset));
        p->retry_ns = now + kErrorBackoffNs;
        continue;
      }
      const auto at = static_cast<std::uint64_t>(lp.offset);
      // Records fetched from before the reset that it moved behind stay out: offsets
      // handed out only grow.
      while (!p->ready.empty() && p->ready.back().offset >= at) {
        p->ready_bytes -= p->ready.back().bytes();
        p->ready.pop_back();
      }
      p->position = at;
      if (p->ready.empty()) p->st.fetched = std::max(p->st.fetched, at);  // where it starts
      p->phase = Phase::fetching;
      p->retry_ns = 0;
    }
  }
}

void KafkaSource::on_fetch(Conn& c, const Request& rq, const k::FetchResponse& r) {
  const std::int64_t now = now_ns();
  for (const std::uint32_t i : rq.parts) parts_[i].in_request = false;
  if (leader_error(r.error_code)) {
    for (const std::uint32_t i : rq.parts) {
      lost_leader(parts_[i], "Fetch at " + c.where + ": " + k::error_name(r.error_code), now);
    }
    return;
  }
  if (r.error_code != 0) {
    for (const std::uint32_t i : rq.parts) {
      parts_[i].retry_ns = now + kErrorBackoffNs;
      if (!parts_[i].st.stopped)
        parts_[i].st.error = "Fetch at " + c.where + ": " + k::error_name(r.error_code);
    }
    return;
  }
  for (const k::FetchTopicResponse& t : r.responses) {
    if (t.topic != options_.topic) continue;
    for (const k::FetchPartitionResponse& fp : t.partitions) {
      Part* p = part_of(rq, fp.partition_index);
      if (p == nullptr || p->phase != Phase::fetching || p->st.stopped) continue;
      const std::string where =
          "Fetch of partition " + std::to_string(p->kafka) + " at " + c.where + ": ";
      if (leader_error(fp.error_code)) {
        lost_leader(*p, where + k::error_name(fp.error_code), now);
        continue;
      }
      if (fp.error_code == static_cast<std::int16_t>(k::ErrorCode::offset_out_of_range)) {
        p->st.error = where + "offset " + std::to_string(p->position) + " is out of range; " +
                      (options_.reset_latest ? "going to the latest" : "going to the earliest");
        p->phase = Phase::reset;
        continue;
      }
      if (fp.error_code != 0) {
        p->st.error = where + k::error_name(fp.error_code);
        p->retry_ns = now + kErrorBackoffNs;
        continue;
      }
      std::string_view rest = fp.records;
      bool cut = false;
      while (!rest.empty()) {
        const k::BatchResult b = k::decode_record_batch(rest, batch_);
        if (b.status == k::BatchStatus::incomplete) {
          // Cut by the byte limit: fetched again from its offset. A batch larger than
          // the limit gets a limit it fits in.
          cut = true;
          if (b.size > static_cast<std::size_t>(p->fetch_bytes) && b.size < (1u << 30) &&
              rest.size() == fp.records.size()) {
            p->fetch_bytes = static_cast<std::int32_t>(b.size);
          }
          break;
        }
        if (b.status == k::BatchStatus::error) {
          p->st.error = where + b.error;
          drop(c, where + b.error);
          return;
        }
        rest.remove_prefix(b.size);
        const k::RecordBatchHeader& h = batch_.header;
        if (h.next_offset() <= static_cast<std::int64_t>(p->position)) continue;  // before it
        if (!h.control()) {
          for (const k::RecordView& rv : batch_.records) {
            if (rv.offset < static_cast<std::int64_t>(p->position)) continue;
            p->ready.push_back({.offset = static_cast<std::uint64_t>(rv.offset),
                                .timestamp_ns = rv.timestamp * 1'000'000,
                                .key = std::string(rv.key),
                                .value = std::string(rv.value),
                                .headers = std::string(rv.headers_encoded)});
            p->ready_bytes += p->ready.back().bytes();
            p->position = static_cast<std::uint64_t>(rv.offset) + 1;
          }
        }
        p->position =
            std::max<std::uint64_t>(p->position, static_cast<std::uint64_t>(h.next_offset()));
      }
      if (!cut) p->fetch_bytes = static_cast<std::int32_t>(options_.max_bytes);
      p->st.error.clear();
      p->retry_ns = 0;
    }
  }
}

void KafkaSource::on_offset_commit(Conn& c, const Request& rq, const k::OffsetCommitResponse& r) {
  const std::int64_t now = now_ns();
  for (const std::uint32_t i : rq.parts) parts_[i].commit_in_flight = false;
  for (const k::OffsetCommitTopicResponse& t : r.topics) {
    if (t.name != options_.topic) continue;
    for (const k::OffsetCommitPartitionResponse& cp : t.partitions) {
      const auto it = by_kafka_.find(cp.partition_index);
      if (it == by_kafka_.end()) continue;
      const auto at = std::find(rq.parts.begin(), rq.parts.end(), it->second);
      if (at == rq.parts.end()) continue;
      Part& p = parts_[it->second];
      if (cp.error_code != 0) {
        const std::string why = "OffsetCommit of partition " + std::to_string(p.kafka) +
                                " for group '" + options_.group + "' at " + c.where + ": " +
                                k::error_name(cp.error_code);
        if (coordinator_error(cp.error_code)) lost_coordinator(why, now);
        if (group_ && generation_error(cp.error_code)) {
          // Not this generation's to commit any more; a revocation under way stops
          // waiting for it.
          commits_refused_ = true;
          group_->on_commit_refused(cp.error_code, now);
        }
        p.commit_error = Error{why, EIO};
        p.next_commit_ns = now + kErrorBackoffNs;
        continue;
      }
      p.st.committed = std::max(p.st.committed, rq.positions[at - rq.parts.begin()]);
    }
  }
}

template <typename Resp>
void KafkaSource::on_group(Conn& c, const Request& rq, std::string_view body) {
  Resp r;
  if (!decode(c, rq, body, r)) return;
  // An answer on the connection of a coordinator given up: the member moved on.
  if (!group_ || &c != group_conn_) return;
  const std::int64_t now = now_ns();
  if constexpr (std::is_same_v<Resp, k::JoinGroupResponse>) {
    group_->on_join(r, now);
  } else if constexpr (std::is_same_v<Resp, k::SyncGroupResponse>) {
    group_->on_sync(r, now);
  } else {
    group_->on_heartbeat(r, now);
  }
  if (coordinator_error(r.error_code)) {
    lost_coordinator(k::api_name(rq.api) + " of group '" + options_.group + "' at " + c.where +
                         ": " + k::error_name(r.error_code),
                     now);
  }
}

// The group membership's turn in maintain(): a revocation under way, a new assignment,
// the request that is due.
void KafkaSource::run_group(std::int64_t now) {
  std::int64_t wake = INT64_MAX;
  k::GroupMember::Due due = group_->next(now, wake);
  if (group_->phase() == k::GroupMember::Phase::revoking) {
    if (!revoking_) begin_revoke(now);
    if (revoke_done(now)) {
      end_revoke();
      group_->released(now);
      due = group_->next(now, wake);
    } else {
      later(revoke_deadline_ns_);
    }
  }
  if (std::optional<std::vector<std::int32_t>> a = group_->take_assignment()) {
    assign(*a);
    rebalance_if_partitions_changed();
  }
  later(wake);
  if (due == k::GroupMember::Due::nothing || group_conn_ == nullptr || !group_conn_->ready) return;
  const auto ms = [now](std::int64_t v) { return now + v * 1'000'000; };
  const std::int64_t session = options_.session_timeout_ms;
  bool sent = false;
  switch (due) {
    case k::GroupMember::Due::join:
      // The coordinator answers once every member joined, or the rebalance timed out.
      sent = send(*group_conn_, group_->join_request(),
                  {.deadline_ns = ms(group_->options().rebalance_timeout_ms + session)});
      break;
    case k::GroupMember::Due::sync: {
      // Every partition of the topic, also those this host has no ring for: other
      // members (started later) may have one.
      synced_from_ = topic_partitions_;
      sent = send(*group_conn_, group_->sync_request(topic_partitions_),
                  {.deadline_ns = ms(2 * session)});
      break;
    }
    case k::GroupMember::Due::heartbeat:
      sent = send(*group_conn_, group_->heartbeat_request(), {.deadline_ns = ms(session)});
      break;
    case k::GroupMember::Due::nothing:
      break;
  }
  if (!sent) group_->on_lost("the request could not be sent", now);
}

// A rebalance began: nothing more is fetched of the partitions held, and what was
// fetched and not handed out goes (whoever gets the partition fetches it again).
void KafkaSource::begin_revoke(std::int64_t now) {
  revoking_ = true;
  commits_refused_ = false;
  revoke_deadline_ns_ = now + std::int64_t{options_.revoke_grace_ms} * 1'000'000;
  for (Part& p : parts_) {
    if (!p.owned) continue;
    p.releasing = true;
    p.ready.clear();
    p.ready_bytes = 0;
  }
}

// Whether the partitions being given up may go: everything handed out is committed, the
// coordinator refused the generation's commits, or the grace is over.
bool KafkaSource::revoke_done(std::int64_t now) const {
  if (now >= revoke_deadline_ns_ || !group_->member()) return true;
  return std::all_of(parts_.begin(), parts_.end(), [this](const Part& p) {
    if (!p.releasing || p.st.stopped) return true;
    if (p.commit_in_flight) return false;
    return commits_refused_ || p.st.committed >= std::max(p.st.fetched, p.commit_target);
  });
}

void KafkaSource::end_revoke() {
  revoking_ = false;
  for (Part& p : parts_) {
    if (!p.releasing) continue;
    p.releasing = false;
    p.owned = false;
    p.phase = Phase::offset_fetch;
    p.retry_ns = 0;
    p.commit_error.reset();
    p.next_commit_ns = 0;
  }
}

// The partitions of a new generation: each starts again from the group's committed
// offset (OffsetFetch).
void KafkaSource::assign(const std::vector<std::int32_t>& kafka_partitions) {
  assignment_problem_.clear();
  std::vector<std::int32_t> unserved;
  for (Part& p : parts_) p.owned = false;
  for (const std::int32_t kp : kafka_partitions) {
    const auto it = by_kafka_.find(kp);
    if (it == by_kafka_.end()) {
      // A partition added to the topic after the source opened has no ring here.
      unserved.push_back(kp);
      continue;
    }
    Part& p = parts_[it->second];
    p.owned = true;
    p.releasing = false;
    p.phase = Phase::offset_fetch;
    p.retry_ns = 0;
    p.ready.clear();
    p.ready_bytes = 0;
  }
  if (!unserved.empty()) {
    assignment_problem_ =
        "group '" + options_.group + "' (generation " + std::to_string(group_->generation()) +
        ") assigned this host " + partition_list(unserved) + " of topic '" + options_.topic +
        "', which it has no ring for (it has rings for the " + std::to_string(parts_.size()) +
        " partitions the topic had when it started): not fetched until this "
        "fetcher is restarted";
  }
}

// LeaveGroup on a clean close, so that the others take the partitions over at once; the
// answer is waited for a short while (a dead coordinator drops the member anyway).
void KafkaSource::leave_group() {
  if (!group_ || group_->member_id().empty() || group_conn_ == nullptr || !group_conn_->ready) {
    return;
  }
  closing_ = true;
  if (!send(*group_conn_, group_->leave_request(), {})) return;
  group_conn_->conn.pump();
  io_uring_submit(ring_.get());
  const std::int64_t deadline = now_ns() + 1'000'000'000;
  while (!left_ && !fatal_ && now_ns() < deadline) drive(deadline);
}

PartitionStatus KafkaSource::status(std::uint32_t partition) const {
  if (partition >= parts_.size()) return PartitionStatus{};
  const Part& p = parts_[partition];
  PartitionStatus s = p.st;
  if (!group_ || p.active()) return s;
  s.assigned = false;
  const std::string group = "group '" + options_.group + "'";
  if (p.releasing) {
    s.error = "being given up: " + group + " rebalances (" + group_->problem() +
              "); the acks of the local groups are committed first";
  } else if (group_->phase() == k::GroupMember::Phase::stable) {
    s.error = "not assigned to this host: " + group + " (generation " +
              std::to_string(group_->generation()) + ") gives it to another member";
  } else {
    s.error = "not assigned to this host: " + group + " is " + k::to_string(group_->phase()) +
              (group_->problem().empty() ? std::string() : " (" + group_->problem() + ")");
  }
  return s;
}

// Sends whatever the state asks for: metadata, the coordinator, start positions,
// fetches, commits; and connects where needed.
void KafkaSource::maintain() {
  const std::int64_t now = now_ns();
  timer_ns_ = INT64_MAX;
  if (closing_) {
    for (auto& c : conns_) c->conn.pump();
    wakeups_.arm(ring_.get());
    return;
  }
  // A request whose answer is overdue gives its connection up.
  for (auto& c : conns_) {
    if (!c->pending.empty() && c->conn.up() && now > c->pending.front().deadline_ns) {
      drop(*c, "no answer to " + k::api_name(c->pending.front().api) + " in time");
    }
  }
  // Connections: to the leaders and the coordinator; to the bootstrap brokers while no
  // connection is ready.
  const auto want = [now](Conn* c) {
    if (c == nullptr) return;
    c->wanted = true;
    c->conn.maybe_connect(now);
  };
  for (auto& c : conns_) c->wanted = false;
  Conn* control = control_connection();
  if (control == nullptr) {
    std::string why;
    for (const KafkaBroker& b : options_.bootstrap) {
      Conn* c = connection(b.host, b.port, Role::broker);
      want(c);
      if (c != nullptr && !c->conn.last_error().empty())
        why += (why.empty() ? "" : "; ") + c->where + ": " + c->conn.last_error();
    }
    // Partitions that wait for the metadata say why they wait.
    for (Part& p : parts_) {
      if (p.leader < 0 && !p.st.stopped && !why.empty())
        p.st.error = "waiting for the Kafka cluster: " + why;
    }
  }
  want(coordinator_);
  want(group_conn_);
  for (const Part& p : parts_) {
    if (p.leader >= 0 && !p.st.stopped) want(broker(p.leader));
  }
  if (fatal_) return;

  // Now and then unasked, as Kafka's clients do: leaders that moved, partitions added.
  if (have_metadata_ && now >= metadata_refresh_ns_) {
    metadata_wanted_ = true;
    metadata_refresh_ns_ = INT64_MAX;  // set again by the answer
  }
  later(metadata_refresh_ns_);
  if (control != nullptr && (metadata_wanted_ || !have_metadata_) && !metadata_in_flight_) {
    if (now >= next_metadata_ns_) {
      metadata_in_flight_ = true;
      // A consumer does not create topics: before v4 (no allow_auto_topic_creation) a
      // broker may create a topic asked for by name, so it asks for every topic.
      k::MetadataRequest m;
      if (control->versions[static_cast<std::size_t>(k::ApiKey::metadata)] >= 4) {
        m.topics = std::vector<std::string>{options_.topic};
      }
      send(*control, m, {});
      control = control_connection();
    } else {
      later(next_metadata_ns_);
    }
  }
  if (control != nullptr && coordinator_ == nullptr && !find_in_flight_) {
    if (now >= next_find_ns_) {
      find_in_flight_ = true;
      send(*control, k::FindCoordinatorRequest{.key = options_.group}, {});
    } else {
      later(next_find_ns_);
    }
  }

  if (grouped() && have_metadata_) run_group(now);

  // Start positions: the group's committed offsets, at its coordinator.
  if (coordinator_ != nullptr && coordinator_->ready) {
    k::OffsetFetchTopicRequest topic{.name = options_.topic};
    Request rq;
    for (std::uint32_t i = 0; i < parts_.size(); ++i) {
      Part& p = parts_[i];
      // Only partitions the metadata knows (a leader found) are asked about.
      if (p.phase != Phase::offset_fetch || p.in_request || p.st.stopped || p.leader < 0 ||
          !p.active()) {
        continue;
      }
      if (now < p.retry_ns) {
        later(p.retry_ns);
        continue;
      }
      p.in_request = true;
      topic.partition_indexes.push_back(p.kafka);
      rq.parts.push_back(i);
    }
    if (!rq.parts.empty()) {
      send(*coordinator_,
           k::OffsetFetchRequest{.group_id = options_.group,
                                 .topics = std::vector<k::OffsetFetchTopicRequest>{topic}},
           std::move(rq));
    }
  } else {
    for (Part& p : parts_) {
      if (p.phase == Phase::offset_fetch && !p.st.stopped && !coordinator_error_.empty() &&
          topic_error_.empty()) {
        p.st.error = coordinator_error_;
      }
    }
  }

  // Per leader: ListOffsets for the partitions to reset, Fetch for the others.
  std::map<Conn*, std::pair<Request, Request>> per_leader;
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    Part& p = parts_[i];
    if (p.leader < 0 || p.in_request || p.st.stopped || p.phase == Phase::offset_fetch ||
        !p.active()) {
      continue;
    }
    if (p.phase == Phase::fetching &&
        (p.st.paused || p.ready_bytes >= options_.max_bytes || p.ready.size() >= 100'000)) {
      continue;
    }
    if (now < p.retry_ns) {
      later(p.retry_ns);
      continue;
    }
    Conn* c = broker(p.leader);
    if (c == nullptr || !c->ready) continue;
    auto& [reset, fetch] = per_leader[c];
    (p.phase == Phase::reset ? reset : fetch).parts.push_back(i);
  }
  for (auto& [c, requests] : per_leader) {
    auto& [reset, fetch] = requests;
    if (!reset.parts.empty()) {
      k::ListOffsetsTopicRequest topic{.name = options_.topic};
      for (const std::uint32_t i : reset.parts) {
        parts_[i].in_request = true;
        topic.partitions.push_back(
            {.partition_index = parts_[i].kafka,
             .timestamp = options_.reset_latest ? k::kLatestTimestamp : k::kEarliestTimestamp});
      }
      send(*c, k::ListOffsetsRequest{.topics = {std::move(topic)}}, std::move(reset));
    }
    if (!fetch.parts.empty()) {
      k::FetchTopicRequest topic{.topic = options_.topic};
      for (const std::uint32_t i : fetch.parts) {
        Part& p = parts_[i];
        p.in_request = true;
        if (p.fetch_bytes <= 0) p.fetch_bytes = static_cast<std::int32_t>(options_.max_bytes);
        topic.partitions.push_back({.partition = p.kafka,
                                    .fetch_offset = static_cast<std::int64_t>(p.position),
                                    .partition_max_bytes = p.fetch_bytes});
      }
      // The broker may hold a Fetch for its whole wait before it answers.
      fetch.deadline_ns =
          now + std::int64_t{options_.fetch_max_wait_ms} * 1'000'000 + kReplyTimeoutNs;
      send(*c,
           k::FetchRequest{.max_wait_ms = static_cast<std::int32_t>(options_.fetch_max_wait_ms),
                           .max_bytes = INT32_MAX,
                           .topics = {std::move(topic)}},
           std::move(fetch));
    }
  }
  send_commits(now);
  for (auto& c : conns_) c->conn.pump();
  wakeups_.arm(ring_.get());
}

// One OffsetCommit for every partition whose commit target is ahead of what the
// coordinator confirmed and that has no commit in flight.
void KafkaSource::send_commits(std::int64_t now) {
  if (coordinator_ == nullptr || !coordinator_->ready) return;
  // A member commits with its generation, while it has one.
  if (group_ && (!group_->member() || (group_->phase() != k::GroupMember::Phase::stable &&
                                       group_->phase() != k::GroupMember::Phase::revoking))) {
    return;
  }
  k::OffsetCommitTopicRequest topic{.name = options_.topic};
  Request rq;
  for (std::uint32_t i = 0; i < parts_.size(); ++i) {
    Part& p = parts_[i];
    if (p.commit_target <= p.st.committed || p.commit_in_flight || p.st.stopped || !p.owned) {
      continue;
    }
    if (now < p.next_commit_ns) {
      later(p.next_commit_ns);
      continue;
    }
    p.commit_in_flight = true;
    topic.partitions.push_back({.partition_index = p.kafka,
                                .committed_offset = static_cast<std::int64_t>(p.commit_target)});
    rq.parts.push_back(i);
    rq.positions.push_back(p.commit_target);
  }
  if (rq.parts.empty()) return;
  k::OffsetCommitRequest commit{.group_id = options_.group, .topics = {std::move(topic)}};
  if (group_) {
    commit.generation_id = group_->generation();
    commit.member_id = group_->member_id();
  }
  send(*coordinator_, commit, std::move(rq));
}

std::size_t KafkaSource::deliver(std::uint32_t i, BatchSink& sink) {
  Part& p = parts_[i];
  // Offsets handed out only grow (a reset to an earlier offset does not repeat them).
  while (!p.ready.empty() && p.ready.front().offset < p.st.fetched) {
    p.ready_bytes -= p.ready.front().bytes();
    p.ready.pop_front();
  }
  if (p.st.paused || p.st.stopped || p.ready.empty() || !p.active()) return 0;
  records_.clear();
  for (const Entry& e : p.ready) {
    records_.push_back({.partition = i,
                        .upstream_offset = e.offset,
                        .next_offset = e.offset + 1,
                        .timestamp_ns = e.timestamp_ns,
                        .key = e.key,
                        .value = e.value,
                        .headers = e.headers});
  }
  const std::size_t taken = std::min(sink.take(i, records_), records_.size());
  if (taken > 0) p.st.fetched = records_[taken - 1].next_offset;
  for (std::size_t n = 0; n < taken; ++n) {
    p.ready_bytes -= p.ready.front().bytes();
    p.ready.pop_front();
  }
  if (taken < records_.size()) p.st.paused = true;
  return taken;
}

std::int64_t KafkaSource::wake_at() const {
  std::int64_t until = timer_ns_;
  for (const auto& c : conns_) {
    if (c->wanted) until = std::min(until, c->conn.next_attempt_ns());
    if (!c->pending.empty()) until = std::min(until, c->pending.front().deadline_ns + 1);
  }
  return until;
}

Result<std::size_t> KafkaSource::poll_batches(BatchSink& sink, std::chrono::milliseconds timeout) {
  if (fatal_) return *fatal_;
  timeout = std::clamp(timeout, std::chrono::milliseconds(0),
                       std::chrono::milliseconds(std::chrono::hours(24 * 365)));
  const std::int64_t deadline = now_ns() + std::chrono::nanoseconds(timeout).count();
  std::size_t delivered = 0;
  woken_ = false;
  for (;;) {
    reap();
    if (fatal_) return *fatal_;
    for (std::uint32_t i = 0; i < parts_.size(); ++i) delivered += deliver(i, sink);
    maintain();
    io_uring_submit(ring_.get());
    if (delivered > 0 || woken_) break;
    const std::int64_t now = now_ns();
    if (now >= deadline) break;
    const std::int64_t left = std::max<std::int64_t>(std::min(deadline, wake_at()) - now, 0);
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

// Runs the connections (completions, responses) for a while, up to `until_ns`.
void KafkaSource::drive(std::int64_t until_ns) {
  const std::int64_t now = now_ns();
  if (now >= until_ns) return;
  const std::int64_t left = std::min<std::int64_t>({until_ns - now, wake_at() - now, 10'000'000});
  __kernel_timespec ts{.tv_sec = 0, .tv_nsec = std::max<std::int64_t>(left, 0)};
  io_uring_cqe* cqe = nullptr;
  io_uring_submit_and_wait_timeout(ring_.get(), &cqe, 1, &ts, nullptr);
  reap();
  maintain();
  io_uring_submit(ring_.get());
}

Status KafkaSource::commit(std::uint32_t partition, std::uint64_t position) {
  if (partition >= parts_.size()) return Error{"no partition " + std::to_string(partition), EINVAL};
  Part& p = parts_[partition];
  if (position > p.st.fetched && position > p.st.committed) {
    return Error{"position " + std::to_string(position) + " of partition " +
                     std::to_string(p.kafka) + " of topic '" + options_.topic +
                     "' was never handed out (up to " + std::to_string(p.st.fetched) + " were)",
                 EINVAL};
  }
  p.commit_target = std::max(p.commit_target, position);
  // Not held now: kept back, and committed only if the partition comes back here.
  if (!p.owned) return Ok{};
  if (std::optional<Error> e = std::exchange(p.commit_error, std::nullopt)) return *e;
  if (coordinator_ == nullptr || !coordinator_->ready) {
    std::string why = coordinator_error_;
    if (coordinator_ != nullptr && !coordinator_->conn.last_error().empty())
      why = coordinator_->where + ": " + coordinator_->conn.last_error();
    if (p.commit_target <= p.st.committed) return Ok{};
    return Error{"cannot commit for group '" + options_.group +
                     "' yet: " + (why.empty() ? std::string("no coordinator connected yet") : why),
                 ENOTCONN};
  }
  send_commits(now_ns());
  coordinator_->conn.pump();
  io_uring_submit(ring_.get());
  return Ok{};
}

bool KafkaSource::commits_outstanding() const {
  return std::any_of(parts_.begin(), parts_.end(), [](const Part& p) {
    return !p.st.stopped && p.owned && p.commit_target > p.st.committed;
  });
}

Status KafkaSource::flush(std::chrono::milliseconds timeout) {
  const std::int64_t deadline = now_ns() + std::chrono::nanoseconds(timeout).count();
  while (commits_outstanding() && !fatal_ && now_ns() < deadline) drive(deadline);
  if (fatal_) return *fatal_;
  if (commits_outstanding()) {
    std::string why;
    for (Part& p : parts_) {
      if (std::optional<Error> e = std::exchange(p.commit_error, std::nullopt)) why = e->message;
    }
    return Error{"OffsetCommit for group '" + options_.group + "': not confirmed in time" +
                     (why.empty() ? std::string() : " (" + why + ")"),
                 ETIMEDOUT};
  }
  return Ok{};
}

}  // namespace

Result<KafkaSourceOptions> parse_kafka_uri(std::string_view uri) {
  constexpr std::string_view kScheme = "kafka://";
  if (uri.substr(0, kScheme.size()) != kScheme) return bad_uri(uri, "does not start with kafka://");
  const std::string_view rest = uri.substr(kScheme.size());
  const std::size_t q = rest.find('?');
  const std::string_view hosts = rest.substr(0, q);
  const std::string_view query =
      q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);
  KafkaSourceOptions o;
  if (hosts.empty()) {
    return bad_uri(uri, "no broker (expected kafka://HOST:PORT[,HOST:PORT...]?topic=T&group=G)");
  }
  for (const std::string_view h : split(hosts, ',')) {
    std::string_view host = h;
    std::string_view port_text;
    if (!h.empty() && h.front() == '[') {  // [IPv6]:port
      const std::size_t close = h.find(']');
      if (close == std::string_view::npos || close + 1 >= h.size() || h[close + 1] != ':') {
        return bad_uri(uri, "broker '" + std::string(h) + "' is not [ADDRESS]:PORT");
      }
      host = h.substr(1, close - 1);
      port_text = h.substr(close + 2);
    } else {
      const std::size_t colon = h.rfind(':');
      if (colon == std::string_view::npos) {
        return bad_uri(uri, "broker '" + std::string(h) + "' has no port (HOST:PORT)");
      }
      host = h.substr(0, colon);
      port_text = h.substr(colon + 1);
    }
    std::uint32_t port = 0;
    if (host.empty()) return bad_uri(uri, "broker '" + std::string(h) + "' has no host");
    if (!parse_number(port_text, port) || port == 0 || port > 65535) {
      return bad_uri(uri, "port '" + std::string(port_text) + "' is not 1..65535");
    }
    o.bootstrap.push_back({std::string(host), static_cast<std::uint16_t>(port)});
  }

  std::set<std::string_view> seen;
  for (const std::string_view param :
       query.empty() ? std::vector<std::string_view>{} : split(query, '&')) {
    if (param.empty()) return bad_uri(uri, "empty parameter");
    const std::size_t eq = param.find('=');
    const std::string_view name = param.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
    if (!seen.insert(name).second)
      return bad_uri(uri, "parameter '" + std::string(name) + "' given twice");
    const auto number = [&](std::uint32_t& out, std::uint32_t min, std::uint32_t max) -> Status {
      if (!parse_number(value, out) || out < min || out > max) {
        return bad_uri(uri, std::string(name) + " '" + std::string(value) +
                                "' is not a number in " + std::to_string(min) + ".." +
                                std::to_string(max));
      }
      return Ok{};
    };
    Status ok = Ok{};
    if (name == "topic") {
      if (value.empty()) return bad_uri(uri, "empty topic");
      o.topic = std::string(value);
    } else if (name == "group") {
      if (value.empty()) return bad_uri(uri, "empty group");
      o.group = std::string(value);
    } else if (name == "partitions") {
      std::set<std::int32_t> listed;
      for (const std::string_view s : split(value, ',')) {
        std::int32_t p = -1;
        if (!parse_number(s, p) || p < 0) {
          return bad_uri(uri, "partition '" + std::string(s) + "' is not a number 0 or more");
        }
        if (!listed.insert(p).second) {
          return bad_uri(uri, "partition " + std::string(s) + " listed twice");
        }
        o.partitions.push_back(p);
      }
    } else if (name == "reset") {
      if (value == "latest") {
        o.reset_latest = true;
      } else if (value != "earliest") {
        return bad_uri(uri, "reset '" + std::string(value) + "' is not earliest or latest");
      }
    } else if (name == "max-bytes") {
      ok = number(o.max_bytes, 1024, 256u * 1024 * 1024);
    } else if (name == "fetch-max-wait-ms") {
      ok = number(o.fetch_max_wait_ms, 1, 60'000);
    } else if (name == "client-id") {
      if (value.empty()) return bad_uri(uri, "empty client-id");
      o.client_id = std::string(value);
    } else if (name == "connect-timeout-ms") {
      ok = number(o.connect_timeout_ms, 1, 600'000);
    } else if (name == "metadata-max-age-ms") {
      ok = number(o.metadata_max_age_ms, 100, 86'400'000);
    } else if (name == "session-timeout-ms") {
      ok = number(o.session_timeout_ms, 100, 3'600'000);
    } else if (name == "heartbeat-interval-ms") {
      ok = number(o.heartbeat_interval_ms, 10, 3'600'000);
    } else if (name == "revoke-grace-ms") {
      ok = number(o.revoke_grace_ms, 0, 3'600'000);
    } else {
      return bad_uri(uri,
                     "unknown parameter '" + std::string(name) +
                         "' (kafka:// takes topic, group, partitions, reset, max-bytes, "
                         "fetch-max-wait-ms, client-id, connect-timeout-ms, metadata-max-age-ms, "
                         "session-timeout-ms, heartbeat-interval-ms, revoke-grace-ms)");
    }
    if (!ok) return ok.error();
  }
  // A member learns of a rebalance from a heartbeat, up to an interval late, and must
  // join again, after the grace, before the coordinator gives up on it.
  if (std::uint64_t{o.heartbeat_interval_ms} + o.revoke_grace_ms >= o.session_timeout_ms) {
    return bad_uri(uri, "heartbeat-interval-ms " + std::to_string(o.heartbeat_interval_ms) +
                            " + revoke-grace-ms " + std::to_string(o.revoke_grace_ms) +
                            " must be below session-timeout-ms " +
                            std::to_string(o.session_timeout_ms));
  }
  if (o.topic.empty()) return bad_uri(uri, "no topic (add ?topic=T)");
  if (o.group.empty()) return bad_uri(uri, "no group (add &group=G)");
  return o;
}

Result<std::unique_ptr<Source>> open_kafka(const KafkaSourceOptions& options, std::string uri) {
  auto source = std::make_unique<KafkaSource>(options, std::move(uri));
  if (Status s = source->open(); !s) return s.error();
  return std::unique_ptr<Source>(std::move(source));
}

}  // namespace ringfeed::io
