// The Kafka source: `kafka://HOST:PORT[,HOST:PORT...]?topic=T&group=G` with optional
// `partitions=P0,P1,...` (pinned partitions, no group membership), `reset=earliest|latest`
// (where a partition with no committed offset starts; default earliest), `max-bytes=N`
// (per partition and fetch, default 1 MiB), `fetch-max-wait-ms=MS` (how long the broker
// may hold a Fetch that finds no records, default 200: Kafka's fetch.max.wait.ms; a
// real broker answers as soon as records come, so it bounds the rate of empty Fetches,
// not the latency), `client-id=ID` (default ringfeed),
// `connect-timeout-ms=MS`, `metadata-max-age-ms=MS` (how often the topic's metadata is
// read again when nothing asked for it sooner, default 300000: Kafka's
// metadata.max.age.ms), and for group membership `session-timeout-ms=MS` (default
// 10000), `heartbeat-interval-ms=MS` (default 3000) and `revoke-grace-ms=MS` (default
// 2000; with the heartbeat interval below the session timeout, so that a member that
// learns of a rebalance from a heartbeat joins again before the coordinator drops it).
//
// Partitions. The source serves every partition of the topic, as Metadata lists them
// when it opens (partition i is ring i, so ring numbers stay the same whoever fetches),
// or the pinned ones (partition i is Kafka partition partitions[i]). Partitions added to
// the topic later have no ring here: a group member that learns of them from a Metadata
// says so in warning(), and so does one the group assigns them to (they are not fetched
// on this host until its fetcher is restarted). A group leader that learns of them
// starts a rebalance so that they are assigned; the range assignor does not know which
// members have rings for them, so every fetcher of the group needs a restart to be sure
// they are fetched.
//
// Group membership (no `partitions=`): the fetcher joins consumer group G (FindCoordinator,
// JoinGroup, SyncGroup, Heartbeat; io/kafka_group.hpp) on its own connection to the
// coordinator and fetches only the partitions the group assigns to it; the others say
// "not assigned to this host" in their status (assigned false). When a rebalance begins
// (the eager protocol: a heartbeat answered REBALANCE_IN_PROGRESS, ...), it stops
// fetching every partition it holds and drops what it fetched and did not hand out, then
// waits up to revoke-grace-ms for the fetcher to commit what the local groups acked (the
// commits go out as usual, with the member's generation); once everything handed out is
// committed, the coordinator refused the commit, or the grace is over, it lets the
// partitions go and joins again. Records handed out and not committed by then are
// fetched again by whoever gets the partition: at-least-once. A clean close sends
// LeaveGroup, so the others take over at once; a fetcher that dies is dropped by the
// coordinator after the session timeout.
//
// A partition given back to a host whose ring still holds records of it: the ring keeps
// them (its consumers finish them and the fetcher commits them as they are acked), and
// fetching resumes at the group's committed offset or after the last record this host
// handed out, whichever is further, so that offsets in a ring only grow. What lies
// between was handed out here before (it is in the ring or was acked), or was consumed
// on another host. Commits of a partition not held are kept back, and sent only if it
// comes back (never past what was handed out here).
//
// Pinned partitions: the fetcher does not join the group (no JoinGroup); it commits
// with OffsetCommit (generation -1, no member id), which a coordinator refuses while
// the group has members (UNKNOWN_MEMBER_ID): do not mix pinned and joined fetchers in
// one group.
//
// Either way it reads the group's committed offsets (OffsetFetch at the group's
// coordinator) to know where to start. A partition with nothing committed starts by the
// reset policy (ListOffsets at its leader), as does one whose position fell out of the
// log (OFFSET_OUT_OF_RANGE).
//
// Records: the Kafka offset is the upstream offset and next_offset is offset + 1, so a
// committed position is the next offset to read, as Kafka's consumers commit it; the
// record's timestamp, key, value and headers as produced. Control
// batches (transaction markers) are skipped.
//
// I/O: one connection per broker on one io_uring (io/uring_connection.hpp: reconnects
// with backoff and jitter), plus one to the group's coordinator for offsets, so that a
// commit never waits behind a long-polling Fetch, and one more there for the group
// membership, whose JoinGroup waits at the coordinator for the whole rebalance. Each connection
// starts with ApiVersions and then speaks, per API, the highest version both sides know. Metadata
// finds each partition's leader; every leader gets Fetch requests for its partitions
// (one in flight per partition, the partitions of one leader in one request). A leader
// change (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, a
// broker connection lost) refreshes the metadata and fetches again after a backoff. A
// response that does not decode ends its connection, and status().error says which API
// and field.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/source.hpp"

namespace ringfeed::io {

struct KafkaBroker {
  std::string host;
  std::uint16_t port = 0;
};

struct KafkaSourceOptions {
  std::vector<KafkaBroker> bootstrap;
  std::string topic;
  std::string group;
  std::vector<std::int32_t> partitions;  // empty: every partition of the topic
  bool reset_latest = false;
  std::uint32_t max_bytes = 1024 * 1024;  // per partition and fetch
  std::uint32_t fetch_max_wait_ms = 200;  // longest a broker holds an empty Fetch
  std::string client_id = "ringfeed";
  std::uint32_t connect_timeout_ms = 2000;
  std::uint32_t metadata_max_age_ms = 300'000;  // Metadata read again at least this often
  // Group membership (without `partitions`).
  std::uint32_t session_timeout_ms = 10'000;
  std::uint32_t heartbeat_interval_ms = 3'000;
  std::uint32_t revoke_grace_ms = 2'000;
};

// Parses a kafka:// URI strictly: an unknown parameter or a bad value is an error that
// names it.
Result<KafkaSourceOptions> parse_kafka_uri(std::string_view uri);

// With pinned partitions the source connects lazily: opening succeeds while the cluster
// is down (status() says why it waits). Without them it waits (up to 10 connect
// timeouts) for the topic's metadata, and refuses a topic the cluster does not know.
Result<std::unique_ptr<Source>> open_kafka(const KafkaSourceOptions& options, std::string uri);

}  // namespace ringfeed::io
