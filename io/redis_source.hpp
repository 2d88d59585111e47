// The Redis Streams source: `redis://[USER[:PASSWORD]@]HOST:PORT?streams=S0,S1,...&group=G`
// with optional `consumer=NAME`, `batch=N`, `block-ms=MS`, `claim-idle-ms=MS`,
// `connect-timeout-ms=MS`. Stream i of `streams` is partition (ring) i.
//
// The fetcher is the host's one consumer `NAME` (default `ringfeed-HOSTNAME`) of group G
// on every stream: it creates the group when missing (XGROUP CREATE G 0 MKSTREAM: a new
// group starts at the beginning of the stream, so nothing already there is skipped),
// reads its own pending entries first (XREADGROUP ... 0: what a crashed predecessor of
// the same name took and never acknowledged), then new ones (XREADGROUP ... >), and XACKs
// exactly the entries that every local group acked, in order. With `claim-idle-ms`, it
// also takes over entries that another consumer of G (a fetcher on another host that
// died) left pending longer than that (XAUTOCLAIM), so nothing is lost.
//
// Records: the entry id `MS-SEQ` is the upstream offset, packed as MS << 20 | SEQ (so
// offsets grow with ids; an id whose MS needs more than 44 bits or SEQ more than 20
// stops its partition with an error naming it), and MS is the record's timestamp. A field
// named `value` is the value and one named `key` the key when the entry has no other
// fields; any other shape is delivered as a JSON object of its fields, in order, as the
// value (field names and values as JSON strings: `"`, `\` and control characters
// escaped, other bytes as they are), with the `key` field, if there is one, as the key
// too. An entry deleted while pending (no fields) is acknowledged and not delivered.
//
// Positions (committed, fetched, next_offset): a count of the records this source handed
// out since it opened, the n-th record's next_offset being n. They only order the
// records for the fetcher's commits; a restart does not resume from them but from what
// Redis keeps pending for the consumer name.
//
// I/O: two connections on one io_uring, both reconnecting with backoff and jitter: one
// reads (blocking XREADGROUP, and several pipelined when entries keep coming), the other
// commits and claims, so acknowledgements never wait behind a blocking read. AUTH with
// the user and password of the URI, or the password in RINGFEED_REDIS_PASSWORD (and the
// user in RINGFEED_REDIS_USER).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/source.hpp"

namespace ringfeed::io {

struct RedisSourceOptions {
  std::string host;
  std::uint16_t port = 6379;
  std::string user;
  std::string password;
  std::vector<std::string> streams;
  std::string group;
  std::string consumer;             // empty: ringfeed-HOSTNAME
  std::uint32_t batch = 512;        // COUNT of each read, per stream
  std::uint32_t block_ms = 1000;    // BLOCK of a read that waits for new entries
  std::uint32_t claim_idle_ms = 0;  // 0: claim nothing from other consumers
  std::uint32_t connect_timeout_ms = 2000;
};

// Parses a redis:// URI (strictly: an unknown parameter or a bad number is an error that
// names it). The password, when the URI has none, comes from the environment. `group=`
// is required unless `for_source` is false (a producer writes to streams without one).
Result<RedisSourceOptions> parse_redis_uri(std::string_view uri, bool for_source = true);

// The entry id `MS-SEQ` as an upstream offset, or an error for one that does not fit.
Result<std::uint64_t> redis_id_to_offset(std::string_view id);
std::string redis_offset_to_id(std::uint64_t offset);

// Connects lazily: opening succeeds while the server is down (the source keeps trying,
// and status() says why it waits).
Result<std::unique_ptr<Source>> open_redis(const RedisSourceOptions& options, std::string uri);

}  // namespace ringfeed::io
