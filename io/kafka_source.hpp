// The Kafka source: `kafka://HOST:PORT[,HOST:PORT...]?topic=T&group=G` with optional
// `partitions=P0,P1,...` (pinned partitions; without it every partition of the topic, as
// Metadata lists them when the source opens), `reset=earliest|latest` (where a partition
// with no committed offset starts; default earliest), `max-bytes=N` (per partition and
// fetch, default 1 MiB), `client-id=ID` (default ringfeed) and `connect-timeout-ms=MS`.
// Partition i of the source (ring i) is Kafka partition partitions[i].
//
// The fetcher is a consumer of group G that assigns its partitions by hand: it does not
// join the group (no JoinGroup), it reads the group's committed offsets (OffsetFetch at
// the group's coordinator) to know where to start, and commits with OffsetCommit
// (generation -1, no member id). A partition with nothing committed starts by the reset
// policy (ListOffsets at its leader), as does one whose position fell out of the log
// (OFFSET_OUT_OF_RANGE).
//
// Records: the Kafka offset is the upstream offset and next_offset is offset + 1, so a
// committed position is the next offset to read, as Kafka's consumers commit it; the
// record's timestamp, key and value as produced (headers are not carried yet). Control
// batches (transaction markers) are skipped.
//
// I/O: one connection per broker on one io_uring (io/uring_connection.hpp: reconnects
// with backoff and jitter), plus one to the group's coordinator for offsets, so that a
// commit never waits behind a long-polling Fetch. Each connection starts with
// ApiVersions and then speaks, per API, the highest version both sides know. Metadata
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
  std::string client_id = "ringfeed";
  std::uint32_t connect_timeout_ms = 2000;
};

// Parses a kafka:// URI strictly: an unknown parameter or a bad value is an error that
// names it.
Result<KafkaSourceOptions> parse_kafka_uri(std::string_view uri);

// With pinned partitions the source connects lazily: opening succeeds while the cluster
// is down (status() says why it waits). Without them it waits (up to 10 connect
// timeouts) for the topic's metadata, and refuses a topic the cluster does not know.
Result<std::unique_ptr<Source>> open_kafka(const KafkaSourceOptions& options, std::string uri);

}  // namespace ringfeed::io
