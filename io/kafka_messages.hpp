// Kafka API requests and responses as plain structs: append_request encodes a request
// (header and body) onto a send buffer, decode_response decodes the body of a response
// frame (io/kafka_wire.hpp: read_response_frame) for the version that was asked.
//
// Versions. Each API is spoken in a range of non-flexible versions (kafka_wire.hpp says
// why), supported_versions(); the client picks, per API, the highest version in both
// that range and the broker's ApiVersions answer (pick_version). librdkafka 2.0.2's mock
// cluster advertises ApiVersions 0-2, Metadata 0-2, ListOffsets 0-5 (1-3 spoken, see
// there), Fetch 0-11, OffsetCommit 0-7, OffsetFetch 0-5, FindCoordinator 0-2, JoinGroup
// 0-5, Heartbeat 0-3, LeaveGroup 0-1, SyncGroup 0-3; Kafka 4 brokers dropped Metadata
// below 4, hence ranges rather than one version each. Fields are listed below in wire
// order, with the version that added them ("v5+") where the range spans it; a field
// outside the version is neither written nor read (a decoded one keeps its default).
//
// Errors. A response that does not decode (truncated, a length past its end, bytes left
// over after the last field, a version outside the range) gets an error naming the API,
// the version and the field, with byte offsets into the body, code EPROTO:
//
//   Fetch v11: responses[0].partitions[0].records: length 5000 at byte 57 runs past
//   the end of the response (120 bytes)
//
// Error codes inside a decoded response (error_code fields) are Kafka's, not decode
// errors: the caller acts on them (error_name gives their names).
//
// Strings in decoded responses are copies, except FetchPartitionResponse::records, a view
// into the body given to decode_response (the record batches, decoded by
// io/kafka_records.hpp), so that fetched data is not copied before it is decoded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/kafka_wire.hpp"
#include "shm/result.hpp"

namespace ringfeed::io::kafka {

// --- versions and errors -----------------------------------------------------------

struct VersionRange {
  std::int16_t min = 0;
  std::int16_t max = -1;
};
// The versions this file encodes and decodes, per API; {0, -1} (empty) for an API it
// does not speak.
VersionRange supported_versions(ApiKey api);

// Kafka's error codes that a fetcher acts on (the full list is Kafka's Errors.java).
enum class ErrorCode : std::int16_t {
  unknown_server_error = -1,
  none = 0,
  offset_out_of_range = 1,
  corrupt_message = 2,
  unknown_topic_or_partition = 3,
  leader_not_available = 5,
  not_leader_or_follower = 6,
  request_timed_out = 7,
  replica_not_available = 9,
  coordinator_load_in_progress = 14,
  coordinator_not_available = 15,
  not_coordinator = 16,
  illegal_generation = 22,
  inconsistent_group_protocol = 23,
  unknown_member_id = 25,
  rebalance_in_progress = 27,
  unsupported_version = 35,
  fenced_leader_epoch = 74,
  unknown_leader_epoch = 75,
  member_id_required = 79,
};
// "OFFSET_OUT_OF_RANGE", as Kafka names them; "error code 42" for codes not listed.
std::string error_name(std::int16_t code);

// Which version, and the client id, of one request. The correlation id comes back in
// the response frame and pairs it with this request.
struct RequestContext {
  std::int32_t correlation_id = 0;
  std::int16_t version = 0;
  std::string_view client_id = "ringfeed";
};

// --- ApiVersions (key 18), v0-2 ----------------------------------------------------
// Request: no fields. Response: error_code int16, api_keys [api_key int16, min_version
// int16, max_version int16], throttle_time_ms int32 (v1+).
//
// A broker that does not speak the requested version answers in v0 with
// UNSUPPORTED_VERSION and the versions it does speak; decode_response reads that answer
// whatever version was asked.

struct ApiVersionsRequest {
  static constexpr ApiKey kApi = ApiKey::api_versions;
};

struct ApiVersionRange {
  std::int16_t api_key = 0;
  std::int16_t min_version = 0;
  std::int16_t max_version = 0;
};

struct ApiVersionsResponse {
  std::int16_t error_code = 0;
  std::vector<ApiVersionRange> api_keys;
  std::int32_t throttle_time_ms = 0;
};

// The highest version of `api` that both this file and the broker speak, or nothing.
std::optional<std::int16_t> pick_version(const ApiVersionsResponse& broker, ApiKey api);

// --- Metadata (key 3), v1-8 --------------------------------------------------------
// Request: topics nullable [name STRING] (null: every topic), allow_auto_topic_creation
// bool (v4+), include_cluster_authorized_operations bool (v8+),
// include_topic_authorized_operations bool (v8+).
// Response: throttle_time_ms int32 (v3+), brokers [node_id int32, host STRING, port
// int32, rack NULLABLE_STRING], cluster_id NULLABLE_STRING (v2+), controller_id int32,
// topics [error_code int16, name STRING, is_internal bool, partitions [error_code int16,
// partition_index int32, leader_id int32, leader_epoch int32 (v7+), replica_nodes
// [int32], isr_nodes [int32], offline_replicas [int32] (v5+)],
// topic_authorized_operations int32 (v8+)], cluster_authorized_operations int32 (v8+).

struct MetadataRequest {
  static constexpr ApiKey kApi = ApiKey::metadata;
  std::optional<std::vector<std::string>> topics;  // nullopt: every topic
  bool allow_auto_topic_creation = false;
};

struct MetadataBroker {
  std::int32_t node_id = 0;
  std::string host;
  std::int32_t port = 0;
  std::optional<std::string> rack;
};

struct MetadataPartition {
  std::int16_t error_code = 0;
  std::int32_t partition_index = 0;
  std::int32_t leader_id = -1;  // -1: no leader now
  std::int32_t leader_epoch = -1;
  std::vector<std::int32_t> replica_nodes;
  std::vector<std::int32_t> isr_nodes;
  std::vector<std::int32_t> offline_replicas;
};

struct MetadataTopic {
  std::int16_t error_code = 0;
  std::string name;
  bool is_internal = false;
  std::vector<MetadataPartition> partitions;
  std::int32_t topic_authorized_operations = 0;
};

struct MetadataResponse {
  std::int32_t throttle_time_ms = 0;
  std::vector<MetadataBroker> brokers;
  std::optional<std::string> cluster_id;
  std::int32_t controller_id = -1;
  std::vector<MetadataTopic> topics;
  std::int32_t cluster_authorized_operations = 0;
};

// --- ListOffsets (key 2), v1-3 -----------------------------------------------------
// Request: replica_id int32 (-1: a consumer), isolation_level int8 (v2+), topics [name
// STRING, partitions [partition_index int32, timestamp int64]].
// Response: throttle_time_ms int32 (v2+), topics [name STRING, partitions
// [partition_index int32, error_code int16, timestamp int64, offset int64]].
//
// Versions 4-5 add leader epochs, for fencing by epoch, which ringfeed does not do; and
// librdkafka 2.0.2's mock cluster writes their response's leader_epoch as 8 bytes where
// Kafka has 4, so they are not spoken.

// ListOffsets timestamps that ask for the log's ends rather than a time.
inline constexpr std::int64_t kLatestTimestamp = -1;    // the offset the next record gets
inline constexpr std::int64_t kEarliestTimestamp = -2;  // the first offset still kept

// isolation_level of ListOffsets and Fetch.
inline constexpr std::int8_t kReadUncommitted = 0;
inline constexpr std::int8_t kReadCommitted = 1;

struct ListOffsetsPartitionRequest {
  std::int32_t partition_index = 0;
  std::int64_t timestamp = kLatestTimestamp;
};

struct ListOffsetsTopicRequest {
  std::string name;
  std::vector<ListOffsetsPartitionRequest> partitions;
};

struct ListOffsetsRequest {
  static constexpr ApiKey kApi = ApiKey::list_offsets;
  std::int32_t replica_id = -1;
  std::int8_t isolation_level = kReadUncommitted;
  std::vector<ListOffsetsTopicRequest> topics;
};

struct ListOffsetsPartitionResponse {
  std::int32_t partition_index = 0;
  std::int16_t error_code = 0;
  std::int64_t timestamp = -1;
  std::int64_t offset = -1;
};

struct ListOffsetsTopicResponse {
  std::string name;
  std::vector<ListOffsetsPartitionResponse> partitions;
};

struct ListOffsetsResponse {
  std::int32_t throttle_time_ms = 0;
  std::vector<ListOffsetsTopicResponse> topics;
};

// --- Fetch (key 1), v4-11 ----------------------------------------------------------
// Request: replica_id int32 (-1), max_wait_ms int32, min_bytes int32, max_bytes int32,
// isolation_level int8, session_id int32 (v7+), session_epoch int32 (v7+), topics [topic
// STRING, partitions [partition int32, current_leader_epoch int32 (v9+), fetch_offset
// int64, log_start_offset int64 (v5+), partition_max_bytes int32]],
// forgotten_topics_data [topic STRING, partitions [int32]] (v7+; always empty here),
// rack_id STRING (v11+).
// Response: throttle_time_ms int32, error_code int16 (v7+), session_id int32 (v7+),
// responses [topic STRING, partitions [partition_index int32, error_code int16,
// high_watermark int64, last_stable_offset int64, log_start_offset int64 (v5+),
// aborted_transactions NULLABLE [producer_id int64, first_offset int64],
// preferred_read_replica int32 (v11+), records NULLABLE_BYTES]].
//
// Without a fetch session (session_id 0, session_epoch -1, the defaults) every fetch is a
// full one: the broker answers for every partition asked.

struct FetchPartitionRequest {
  std::int32_t partition = 0;
  std::int32_t current_leader_epoch = -1;
  std::int64_t fetch_offset = 0;
  std::int64_t log_start_offset = -1;  // only followers send one
  std::int32_t partition_max_bytes = 1024 * 1024;
};

struct FetchTopicRequest {
  std::string topic;
  std::vector<FetchPartitionRequest> partitions;
};

struct FetchRequest {
  static constexpr ApiKey kApi = ApiKey::fetch;
  std::int32_t replica_id = -1;
  std::int32_t max_wait_ms = 500;
  std::int32_t min_bytes = 1;
  std::int32_t max_bytes = 50 * 1024 * 1024;
  std::int8_t isolation_level = kReadUncommitted;
  std::int32_t session_id = 0;
  std::int32_t session_epoch = -1;
  std::vector<FetchTopicRequest> topics;
  std::string rack_id;
};

struct AbortedTransaction {
  std::int64_t producer_id = 0;
  std::int64_t first_offset = 0;
};

struct FetchPartitionResponse {
  std::int32_t partition_index = 0;
  std::int16_t error_code = 0;
  std::int64_t high_watermark = -1;
  std::int64_t last_stable_offset = -1;
  std::int64_t log_start_offset = -1;
  std::vector<AbortedTransaction> aborted_transactions;  // null reads as empty
  std::int32_t preferred_read_replica = -1;
  // The record batches (null reads as empty): a view into the decoded body. The last
  // batch may be cut short by the fetch's byte limits (io/kafka_records.hpp reports it
  // as incomplete).
  std::string_view records;
};

struct FetchTopicResponse {
  std::string topic;
  std::vector<FetchPartitionResponse> partitions;
};

struct FetchResponse {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
  std::int32_t session_id = 0;
  std::vector<FetchTopicResponse> responses;
};

// --- OffsetCommit (key 8), v2-7 ----------------------------------------------------
// Request: group_id STRING, generation_id int32, member_id STRING, group_instance_id
// NULLABLE_STRING (v7+), retention_time_ms int64 (v2-4), topics [name STRING, partitions
// [partition_index int32, committed_offset int64, committed_leader_epoch int32 (v6+),
// committed_metadata NULLABLE_STRING]].
// Response: throttle_time_ms int32 (v3+), topics [name STRING, partitions
// [partition_index int32, error_code int16]].
//
// generation_id -1 and an empty member_id commit for a group without members (a
// consumer assigning partitions by hand); a group member sends its generation and id.

struct OffsetCommitPartitionRequest {
  std::int32_t partition_index = 0;
  std::int64_t committed_offset = 0;  // the next offset to consume
  std::int32_t committed_leader_epoch = -1;
  std::optional<std::string> committed_metadata;
};

struct OffsetCommitTopicRequest {
  std::string name;
  std::vector<OffsetCommitPartitionRequest> partitions;
};

struct OffsetCommitRequest {
  static constexpr ApiKey kApi = ApiKey::offset_commit;
  std::string group_id;
  std::int32_t generation_id = -1;
  std::string member_id;
  std::optional<std::string> group_instance_id;
  std::int64_t retention_time_ms = -1;  // -1: the broker's default
  std::vector<OffsetCommitTopicRequest> topics;
};

struct OffsetCommitPartitionResponse {
  std::int32_t partition_index = 0;
  std::int16_t error_code = 0;
};

struct OffsetCommitTopicResponse {
  std::string name;
  std::vector<OffsetCommitPartitionResponse> partitions;
};

struct OffsetCommitResponse {
  std::int32_t throttle_time_ms = 0;
  std::vector<OffsetCommitTopicResponse> topics;
};

// --- OffsetFetch (key 9), v1-5 -----------------------------------------------------
// Request: group_id STRING, topics NULLABLE (v2+; null: every committed partition) [name
// STRING, partition_indexes [int32]].
// Response: throttle_time_ms int32 (v3+), topics [name STRING, partitions
// [partition_index int32, committed_offset int64, committed_leader_epoch int32 (v5+),
// metadata NULLABLE_STRING, error_code int16]], error_code int16 (v2+).
//
// A partition with nothing committed has committed_offset -1.

struct OffsetFetchTopicRequest {
  std::string name;
  std::vector<std::int32_t> partition_indexes;
};

struct OffsetFetchRequest {
  static constexpr ApiKey kApi = ApiKey::offset_fetch;
  std::string group_id;
  std::optional<std::vector<OffsetFetchTopicRequest>> topics;  // nullopt: all (v2+)
};

struct OffsetFetchPartitionResponse {
  std::int32_t partition_index = 0;
  std::int64_t committed_offset = -1;
  std::int32_t committed_leader_epoch = -1;
  std::optional<std::string> metadata;
  std::int16_t error_code = 0;
};

struct OffsetFetchTopicResponse {
  std::string name;
  std::vector<OffsetFetchPartitionResponse> partitions;
};

struct OffsetFetchResponse {
  std::int32_t throttle_time_ms = 0;
  std::vector<OffsetFetchTopicResponse> topics;
  std::int16_t error_code = 0;
};

// --- FindCoordinator (key 10), v1-2 ------------------------------------------------
// Request: key STRING, key_type int8 (0: a group, 1: a transaction).
// Response: throttle_time_ms int32, error_code int16, error_message NULLABLE_STRING,
// node_id int32, host STRING, port int32.

struct FindCoordinatorRequest {
  static constexpr ApiKey kApi = ApiKey::find_coordinator;
  std::string key;  // the group id
  std::int8_t key_type = 0;
};

struct FindCoordinatorResponse {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
  std::optional<std::string> error_message;
  std::int32_t node_id = -1;
  std::string host;
  std::int32_t port = 0;
};

// --- JoinGroup (key 11), v2-5 ------------------------------------------------------
// Request: group_id STRING, session_timeout_ms int32, rebalance_timeout_ms int32,
// member_id STRING, group_instance_id NULLABLE_STRING (v5+), protocol_type STRING,
// protocols [name STRING, metadata BYTES].
// Response: throttle_time_ms int32, error_code int16, generation_id int32, protocol_name
// STRING, leader STRING, member_id STRING, members [member_id STRING, group_instance_id
// NULLABLE_STRING (v5+), metadata BYTES].
//
// From v4 a first join with an empty member_id is answered MEMBER_ID_REQUIRED with the
// member_id to join again with.

struct JoinGroupProtocol {
  std::string name;      // the assignor ("range")
  std::string metadata;  // for protocol_type "consumer": a ConsumerSubscription
};

struct JoinGroupRequest {
  static constexpr ApiKey kApi = ApiKey::join_group;
  std::string group_id;
  std::int32_t session_timeout_ms = 10'000;
  std::int32_t rebalance_timeout_ms = 30'000;
  std::string member_id;
  std::optional<std::string> group_instance_id;
  std::string protocol_type = "consumer";
  std::vector<JoinGroupProtocol> protocols;
};

struct JoinGroupMember {
  std::string member_id;
  std::optional<std::string> group_instance_id;
  std::string metadata;
};

struct JoinGroupResponse {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
  std::int32_t generation_id = -1;
  std::string protocol_name;
  std::string leader;
  std::string member_id;
  std::vector<JoinGroupMember> members;  // only the leader gets them
};

// --- SyncGroup (key 14), v1-3 ------------------------------------------------------
// Request: group_id STRING, generation_id int32, member_id STRING, group_instance_id
// NULLABLE_STRING (v3+), assignments [member_id STRING, assignment BYTES].
// Response: throttle_time_ms int32, error_code int16, assignment BYTES (null, as
// librdkafka's mock cluster sends with an error, reads as empty).

struct SyncGroupAssignment {
  std::string member_id;
  std::string assignment;  // a ConsumerAssignment
};

struct SyncGroupRequest {
  static constexpr ApiKey kApi = ApiKey::sync_group;
  std::string group_id;
  std::int32_t generation_id = -1;
  std::string member_id;
  std::optional<std::string> group_instance_id;
  std::vector<SyncGroupAssignment> assignments;  // only the leader sends them
};

struct SyncGroupResponse {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
  std::string assignment;
};

// --- Heartbeat (key 12), v1-3 ------------------------------------------------------
// Request: group_id STRING, generation_id int32, member_id STRING, group_instance_id
// NULLABLE_STRING (v3+). Response: throttle_time_ms int32, error_code int16.

struct HeartbeatRequest {
  static constexpr ApiKey kApi = ApiKey::heartbeat;
  std::string group_id;
  std::int32_t generation_id = -1;
  std::string member_id;
  std::optional<std::string> group_instance_id;
};

struct HeartbeatResponse {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
};

// --- LeaveGroup (key 13), v1-2 -----------------------------------------------------
// Request: group_id STRING, member_id STRING. Response: throttle_time_ms int32,
// error_code int16.

struct LeaveGroupRequest {
  static constexpr ApiKey kApi = ApiKey::leave_group;
  std::string group_id;
  std::string member_id;
};

struct LeaveGroupResponse {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
};

// --- the consumer group protocol (inside JoinGroup and SyncGroup) -------------------
// ConsumerSubscription, a JoinGroupProtocol's metadata: version int16, topics [STRING],
// user_data NULLABLE_BYTES, then fields of later versions (owned partitions, ...).
// ConsumerAssignment, a SyncGroup assignment: version int16, assigned_partitions [topic
// STRING, partitions [int32]], user_data NULLABLE_BYTES, then later fields.
// Version 0 is written; a later version is read by its version 0 fields, as Kafka's own
// clients do, and what follows them is ignored.

struct ConsumerSubscription {
  std::vector<std::string> topics;
  std::string user_data;
};

struct AssignedPartitions {
  std::string topic;
  std::vector<std::int32_t> partitions;
};

struct ConsumerAssignment {
  std::vector<AssignedPartitions> assigned;
  std::string user_data;
};

std::string encode_consumer_subscription(const ConsumerSubscription& s);
Status decode_consumer_subscription(std::string_view bytes, ConsumerSubscription& out);
std::string encode_consumer_assignment(const ConsumerAssignment& a);
Status decode_consumer_assignment(std::string_view bytes, ConsumerAssignment& out);

// --- encoding requests, decoding responses ------------------------------------------
// (Each request type names its API: FetchRequest::kApi.)

// Appends the whole request (size, header, body) to `out`. Refuses (appending nothing) a
// version outside supported_versions(), or a request the version cannot say (topics
// null before OffsetFetch v2).
Status append_request(std::string& out, const RequestContext& ctx, const ApiVersionsRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const MetadataRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const ListOffsetsRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const FetchRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const OffsetCommitRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const OffsetFetchRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const FindCoordinatorRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const JoinGroupRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const SyncGroupRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const HeartbeatRequest& r);
Status append_request(std::string& out, const RequestContext& ctx, const LeaveGroupRequest& r);

// Decodes the body of a response frame (after the correlation id) of `version` into
// `out`, which is overwritten. On an error `out` is left partly filled.
Status decode_response(std::string_view body, std::int16_t version, ApiVersionsResponse& out);
Status decode_response(std::string_view body, std::int16_t version, MetadataResponse& out);
Status decode_response(std::string_view body, std::int16_t version, ListOffsetsResponse& out);
Status decode_response(std::string_view body, std::int16_t version, FetchResponse& out);
Status decode_response(std::string_view body, std::int16_t version, OffsetCommitResponse& out);
Status decode_response(std::string_view body, std::int16_t version, OffsetFetchResponse& out);
Status decode_response(std::string_view body, std::int16_t version, FindCoordinatorResponse& out);
Status decode_response(std::string_view body, std::int16_t version, JoinGroupResponse& out);
Status decode_response(std::string_view body, std::int16_t version, SyncGroupResponse& out);
Status decode_response(std::string_view body, std::int16_t version, HeartbeatResponse& out);
Status decode_response(std::string_view body, std::int16_t version, LeaveGroupResponse& out);

}  // namespace ringfeed::io::kafka
