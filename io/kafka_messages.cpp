#include "io/kafka_messages.hpp"

#include <algorithm>
#include <cerrno>

namespace ringfeed::io::kafka {

namespace {

std::string context(ApiKey api, std::int16_t version) {
  return api_name(api) + " v" + std::to_string(version);
}

Status check_version(ApiKey api, std::int16_t version, const char* what) {
  const VersionRange r = supported_versions(api);
  if (version >= r.min && version <= r.max) return Ok{};
  return Error{"cannot " + std::string(what) + " " + context(api, version) + ": versions " +
                   std::to_string(r.min) + " to " + std::to_string(r.max) + " are supported",
               EPROTO};
}

std::optional<std::string> copy(std::optional<std::string_view> v) {
  if (!v) return std::nullopt;
  return std::string(*v);
}

std::optional<std::string_view> view(const std::optional<std::string>& v) {
  if (!v) return std::nullopt;
  return std::string_view(*v);
}

void read_int32_array(Reader& r, const char* field, std::vector<std::int32_t>& out) {
  const std::size_t n = r.array_count(field, 4);
  out.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    Reader::Element e(r, field, i);
    out[i] = r.int32("value");
  }
}

// Writes a request: header, then `body` with a Writer.
template <typename Body>
void write_request(std::string& out, ApiKey api, const RequestContext& ctx, Body&& body) {
  const std::size_t start =
      begin_request(out, RequestHeader{api, ctx.version, ctx.correlation_id, ctx.client_id});
  Writer w(out);
  body(w);
  finish_request(out, start);
}

}  // namespace

VersionRange supported_versions(ApiKey api) {
  switch (api) {
    case ApiKey::api_versions:
      return {0, 2};
    case ApiKey::metadata:
      return {1, 8};
    case ApiKey::list_offsets:
      // Not 4-5: librdkafka 2.0.2's mock cluster writes their leader_epoch as 8 bytes,
      // not 4, and a consumer that does not fence by leader epoch needs nothing of them.
      return {1, 3};
    case ApiKey::fetch:
      return {4, 11};
    case ApiKey::offset_commit:
      return {2, 7};
    case ApiKey::offset_fetch:
      return {1, 5};
    case ApiKey::find_coordinator:
      return {1, 2};
    case ApiKey::join_group:
      return {2, 5};
    case ApiKey::sync_group:
      return {1, 3};
    case ApiKey::heartbeat:
      return {1, 3};
    case ApiKey::leave_group:
      return {1, 2};
    case ApiKey::produce:
      break;
  }
  return {0, -1};
}

std::string error_name(std::int16_t code) {
  switch (static_cast<ErrorCode>(code)) {
    case ErrorCode::unknown_server_error:
      return "UNKNOWN_SERVER_ERROR";
    case ErrorCode::none:
      return "NONE";
    case ErrorCode::offset_out_of_range:
      return "OFFSET_OUT_OF_RANGE";
    case ErrorCode::corrupt_message:
      return "CORRUPT_MESSAGE";
    case ErrorCode::unknown_topic_or_partition:
      return "UNKNOWN_TOPIC_OR_PARTITION";
    case ErrorCode::leader_not_available:
      return "LEADER_NOT_AVAILABLE";
    case ErrorCode::not_leader_or_follower:
      return "NOT_LEADER_OR_FOLLOWER";
    case ErrorCode::request_timed_out:
      return "REQUEST_TIMED_OUT";
    case ErrorCode::replica_not_available:
      return "REPLICA_NOT_AVAILABLE";
    case ErrorCode::coordinator_load_in_progress:
      return "COORDINATOR_LOAD_IN_PROGRESS";
    case ErrorCode::coordinator_not_available:
      return "COORDINATOR_NOT_AVAILABLE";
    case ErrorCode::not_coordinator:
      return "NOT_COORDINATOR";
    case ErrorCode::illegal_generation:
      return "ILLEGAL_GENERATION";
    case ErrorCode::inconsistent_group_protocol:
      return "INCONSISTENT_GROUP_PROTOCOL";
    case ErrorCode::unknown_member_id:
      return "UNKNOWN_MEMBER_ID";
    case ErrorCode::rebalance_in_progress:
      return "REBALANCE_IN_PROGRESS";
    case ErrorCode::unsupported_version:
      return "UNSUPPORTED_VERSION";
    case ErrorCode::fenced_leader_epoch:
      return "FENCED_LEADER_EPOCH";
    case ErrorCode::unknown_leader_epoch:
      return "UNKNOWN_LEADER_EPOCH";
    case ErrorCode::member_id_required:
      return "MEMBER_ID_REQUIRED";
  }
  return "error code " + std::to_string(code);
}

// --- ApiVersions -------------------------------------------------------------------

std::optional<std::int16_t> pick_version(const ApiVersionsResponse& broker, ApiKey api) {
  const VersionRange ours = supported_versions(api);
  for (const ApiVersionRange& k : broker.api_keys) {
    if (k.api_key != static_cast<std::int16_t>(api)) continue;
    const std::int16_t hi = std::min(ours.max, k.max_version);
    const std::int16_t lo = std::max(ours.min, k.min_version);
    if (hi >= lo) return hi;
    return std::nullopt;
  }
  return std::nullopt;
}

Status append_request(std::string& out, const RequestContext& ctx, const ApiVersionsRequest&) {
  if (auto s = check_version(ApiKey::api_versions, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::api_versions, ctx, [](Writer&) {});
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, ApiVersionsResponse& out) {
  if (auto s = check_version(ApiKey::api_versions, version, "decode"); !s) return s;
  out = {};
  // An UNSUPPORTED_VERSION answer is always in v0 (no throttle_time_ms).
  if (body.size() >= 2 && body[0] == 0 &&
      static_cast<unsigned char>(body[1]) ==
          static_cast<unsigned>(ErrorCode::unsupported_version)) {
    version = 0;
  }
  Reader r(body, context(ApiKey::api_versions, version));
  out.error_code = r.int16("error_code");
  const std::size_t n = r.array_count("api_keys", 6);
  out.api_keys.resize(n);
  for (std::size_t i = 0; i < n && r.ok(); ++i) {
    Reader::Element e(r, "api_keys", i);
    out.api_keys[i].api_key = r.int16("api_key");
    out.api_keys[i].min_version = r.int16("min_version");
    out.api_keys[i].max_version = r.int16("max_version");
  }
  if (version >= 1) out.throttle_time_ms = r.int32("throttle_time_ms");
  return r.finish();
}

// --- Metadata ----------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const MetadataRequest& m) {
  if (auto s = check_version(ApiKey::metadata, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::metadata, ctx, [&](Writer& w) {
    if (!m.topics) {
      w.null_array();
    } else {
      w.array_count(m.topics->size());
      for (const std::string& t : *m.topics) w.string(t);
    }
    if (ctx.version >= 4) w.boolean(m.allow_auto_topic_creation);
    if (ctx.version >= 8) {
      w.boolean(false);  // include_cluster_authorized_operations
      w.boolean(false);  // include_topic_authorized_operations
    }
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, MetadataResponse& out) {
  if (auto s = check_version(ApiKey::metadata, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::metadata, version));
  if (version >= 3) out.throttle_time_ms = r.int32("throttle_time_ms");
  const std::size_t brokers = r.array_count("brokers", 12);
  out.brokers.resize(brokers);
  for (std::size_t i = 0; i < brokers && r.ok(); ++i) {
    Reader::Element e(r, "brokers", i);
    MetadataBroker& b = out.brokers[i];
    b.node_id = r.int32("node_id");
    b.host = r.string("host");
    b.port = r.int32("port");
    b.rack = copy(r.nullable_string("rack"));
  }
  if (version >= 2) out.cluster_id = copy(r.nullable_string("cluster_id"));
  out.controller_id = r.int32("controller_id");
  const std::size_t topics = r.array_count("topics", 9);
  out.topics.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "topics", i);
    MetadataTopic& t = out.topics[i];
    t.error_code = r.int16("error_code");
    t.name = r.string("name");
    t.is_internal = r.boolean("is_internal");
    const std::size_t partitions = r.array_count("partitions", 18);
    t.partitions.resize(partitions);
    for (std::size_t j = 0; j < partitions && r.ok(); ++j) {
      Reader::Element pe(r, "partitions", j);
      MetadataPartition& p = t.partitions[j];
      p.error_code = r.int16("error_code");
      p.partition_index = r.int32("partition_index");
      p.leader_id = r.int32("leader_id");
      if (version >= 7) p.leader_epoch = r.int32("leader_epoch");
      read_int32_array(r, "replica_nodes", p.replica_nodes);
      read_int32_array(r, "isr_nodes", p.isr_nodes);
      if (version >= 5) read_int32_array(r, "offline_replicas", p.offline_replicas);
    }
    if (version >= 8) t.topic_authorized_operations = r.int32("topic_authorized_operations");
  }
  if (version >= 8) out.cluster_authorized_operations = r.int32("cluster_authorized_operations");
  return r.finish();
}

// --- ListOffsets -------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const ListOffsetsRequest& l) {
  if (auto s = check_version(ApiKey::list_offsets, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::list_offsets, ctx, [&](Writer& w) {
    w.int32(l.replica_id);
    if (ctx.version >= 2) w.int8(l.isolation_level);
    w.array_count(l.topics.size());
    for (const ListOffsetsTopicRequest& t : l.topics) {
      w.string(t.name);
      w.array_count(t.partitions.size());
      for (const ListOffsetsPartitionRequest& p : t.partitions) {
        w.int32(p.partition_index);
        w.int64(p.timestamp);
      }
    }
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, ListOffsetsResponse& out) {
  if (auto s = check_version(ApiKey::list_offsets, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::list_offsets, version));
  if (version >= 2) out.throttle_time_ms = r.int32("throttle_time_ms");
  const std::size_t topics = r.array_count("topics", 6);
  out.topics.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "topics", i);
    ListOffsetsTopicResponse& t = out.topics[i];
    t.name = r.string("name");
    const std::size_t partitions = r.array_count("partitions", 22);
    t.partitions.resize(partitions);
    for (std::size_t j = 0; j < partitions && r.ok(); ++j) {
      Reader::Element pe(r, "partitions", j);
      ListOffsetsPartitionResponse& p = t.partitions[j];
      p.partition_index = r.int32("partition_index");
      p.error_code = r.int16("error_code");
      p.timestamp = r.int64("timestamp");
      p.offset = r.int64("offset");
    }
  }
  return r.finish();
}

// --- Fetch -------------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const FetchRequest& f) {
  if (auto s = check_version(ApiKey::fetch, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::fetch, ctx, [&](Writer& w) {
    w.int32(f.replica_id);
    w.int32(f.max_wait_ms);
    w.int32(f.min_bytes);
    w.int32(f.max_bytes);
    w.int8(f.isolation_level);
    if (ctx.version >= 7) {
      w.int32(f.session_id);
      w.int32(f.session_epoch);
    }
    w.array_count(f.topics.size());
    for (const FetchTopicRequest& t : f.topics) {
      w.string(t.topic);
      w.array_count(t.partitions.size());
      for (const FetchPartitionRequest& p : t.partitions) {
        w.int32(p.partition);
        if (ctx.version >= 9) w.int32(p.current_leader_epoch);
        w.int64(p.fetch_offset);
        if (ctx.version >= 5) w.int64(p.log_start_offset);
        w.int32(p.partition_max_bytes);
      }
    }
    if (ctx.version >= 7) w.array_count(0);  // forgotten_topics_data: no fetch sessions
    if (ctx.version >= 11) w.string(f.rack_id);
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, FetchResponse& out) {
  if (auto s = check_version(ApiKey::fetch, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::fetch, version));
  out.throttle_time_ms = r.int32("throttle_time_ms");
  if (version >= 7) {
    out.error_code = r.int16("error_code");
    out.session_id = r.int32("session_id");
  }
  const std::size_t topics = r.array_count("responses", 6);
  out.responses.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "responses", i);
    FetchTopicResponse& t = out.responses[i];
    t.topic = r.string("topic");
    const std::size_t partitions = r.array_count("partitions", 30);
    t.partitions.resize(partitions);
    for (std::size_t j = 0; j < partitions && r.ok(); ++j) {
      Reader::Element pe(r, "partitions", j);
      FetchPartitionResponse& p = t.partitions[j];
      p.partition_index = r.int32("partition_index");
      p.error_code = r.int16("error_code");
      p.high_watermark = r.int64("high_watermark");
      p.last_stable_offset = r.int64("last_stable_offset");
      if (version >= 5) p.log_start_offset = r.int64("log_start_offset");
      bool null_aborted = false;
      const std::size_t aborted = r.nullable_array_count("aborted_transactions", 16, null_aborted);
      p.aborted_transactions.resize(aborted);
      for (std::size_t k = 0; k < aborted && r.ok(); ++k) {
        Reader::Element ae(r, "aborted_transactions", k);
        p.aborted_transactions[k].producer_id = r.int64("producer_id");
        p.aborted_transactions[k].first_offset = r.int64("first_offset");
      }
      if (version >= 11) p.preferred_read_replica = r.int32("preferred_read_replica");
      p.records = r.nullable_bytes("records").value_or(std::string_view());
    }
  }
  return r.finish();
}

// --- OffsetCommit ------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const OffsetCommitRequest& c) {
  if (auto s = check_version(ApiKey::offset_commit, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::offset_commit, ctx, [&](Writer& w) {
    w.string(c.group_id);
    w.int32(c.generation_id);
    w.string(c.member_id);
    if (ctx.version >= 7) w.nullable_string(view(c.group_instance_id));
    if (ctx.version <= 4) w.int64(c.retention_time_ms);
    w.array_count(c.topics.size());
    for (const OffsetCommitTopicRequest& t : c.topics) {
      w.string(t.name);
      w.array_count(t.partitions.size());
      for (const OffsetCommitPartitionRequest& p : t.partitions) {
        w.int32(p.partition_index);
        w.int64(p.committed_offset);
        if (ctx.version >= 6) w.int32(p.committed_leader_epoch);
        w.nullable_string(view(p.committed_metadata));
      }
    }
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, OffsetCommitResponse& out) {
  if (auto s = check_version(ApiKey::offset_commit, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::offset_commit, version));
  if (version >= 3) out.throttle_time_ms = r.int32("throttle_time_ms");
  const std::size_t topics = r.array_count("topics", 6);
  out.topics.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "topics", i);
    OffsetCommitTopicResponse& t = out.topics[i];
    t.name = r.string("name");
    const std::size_t partitions = r.array_count("partitions", 6);
    t.partitions.resize(partitions);
    for (std::size_t j = 0; j < partitions && r.ok(); ++j) {
      Reader::Element pe(r, "partitions", j);
      t.partitions[j].partition_index = r.int32("partition_index");
      t.partitions[j].error_code = r.int16("error_code");
    }
  }
  return r.finish();
}

// --- OffsetFetch -------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const OffsetFetchRequest& f) {
  if (auto s = check_version(ApiKey::offset_fetch, ctx.version, "encode"); !s) return s;
  if (!f.topics && ctx.version < 2) {
    return Error{context(ApiKey::offset_fetch, ctx.version) +
                     ": cannot ask for every partition (null topics) before version 2",
                 EINVAL};
  }
  write_request(out, ApiKey::offset_fetch, ctx, [&](Writer& w) {
    w.string(f.group_id);
    if (!f.topics) {
      w.null_array();
    } else {
      w.array_count(f.topics->size());
      for (const OffsetFetchTopicRequest& t : *f.topics) {
        w.string(t.name);
        w.array_count(t.partition_indexes.size());
        for (std::int32_t p : t.partition_indexes) w.int32(p);
      }
    }
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, OffsetFetchResponse& out) {
  if (auto s = check_version(ApiKey::offset_fetch, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::offset_fetch, version));
  if (version >= 3) out.throttle_time_ms = r.int32("throttle_time_ms");
  const std::size_t topics = r.array_count("topics", 6);
  out.topics.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "topics", i);
    OffsetFetchTopicResponse& t = out.topics[i];
    t.name = r.string("name");
    const std::size_t partitions = r.array_count("partitions", 16);
    t.partitions.resize(partitions);
    for (std::size_t j = 0; j < partitions && r.ok(); ++j) {
      Reader::Element pe(r, "partitions", j);
      OffsetFetchPartitionResponse& p = t.partitions[j];
      p.partition_index = r.int32("partition_index");
      p.committed_offset = r.int64("committed_offset");
      if (version >= 5) p.committed_leader_epoch = r.int32("committed_leader_epoch");
      p.metadata = copy(r.nullable_string("metadata"));
      p.error_code = r.int16("error_code");
    }
  }
  if (version >= 2) out.error_code = r.int16("error_code");
  return r.finish();
}

// --- FindCoordinator ---------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx,
                      const FindCoordinatorRequest& f) {
  if (auto s = check_version(ApiKey::find_coordinator, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::find_coordinator, ctx, [&](Writer& w) {
    w.string(f.key);
    w.int8(f.key_type);
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, FindCoordinatorResponse& out) {
  if (auto s = check_version(ApiKey::find_coordinator, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::find_coordinator, version));
  out.throttle_time_ms = r.int32("throttle_time_ms");
  out.error_code = r.int16("error_code");
  out.error_message = copy(r.nullable_string("error_message"));
  out.node_id = r.int32("node_id");
  out.host = r.string("host");
  out.port = r.int32("port");
  return r.finish();
}

// --- JoinGroup ---------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const JoinGroupRequest& j) {
  if (auto s = check_version(ApiKey::join_group, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::join_group, ctx, [&](Writer& w) {
    w.string(j.group_id);
    w.int32(j.session_timeout_ms);
    w.int32(j.rebalance_timeout_ms);
    w.string(j.member_id);
    if (ctx.version >= 5) w.nullable_string(view(j.group_instance_id));
    w.string(j.protocol_type);
    w.array_count(j.protocols.size());
    for (const JoinGroupProtocol& p : j.protocols) {
      w.string(p.name);
      w.bytes(p.metadata);
    }
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, JoinGroupResponse& out) {
  if (auto s = check_version(ApiKey::join_group, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::join_group, version));
  out.throttle_time_ms = r.int32("throttle_time_ms");
  out.error_code = r.int16("error_code");
  out.generation_id = r.int32("generation_id");
  out.protocol_name = r.string("protocol_name");
  out.leader = r.string("leader");
  out.member_id = r.string("member_id");
  const std::size_t members = r.array_count("members", version >= 5 ? 8 : 6);
  out.members.resize(members);
  for (std::size_t i = 0; i < members && r.ok(); ++i) {
    Reader::Element e(r, "members", i);
    JoinGroupMember& m = out.members[i];
    m.member_id = r.string("member_id");
    if (version >= 5) m.group_instance_id = copy(r.nullable_string("group_instance_id"));
    m.metadata = r.bytes("metadata");
  }
  return r.finish();
}

// --- SyncGroup ---------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const SyncGroupRequest& s) {
  if (auto st = check_version(ApiKey::sync_group, ctx.version, "encode"); !st) return st;
  write_request(out, ApiKey::sync_group, ctx, [&](Writer& w) {
    w.string(s.group_id);
    w.int32(s.generation_id);
    w.string(s.member_id);
    if (ctx.version >= 3) w.nullable_string(view(s.group_instance_id));
    w.array_count(s.assignments.size());
    for (const SyncGroupAssignment& a : s.assignments) {
      w.string(a.member_id);
      w.bytes(a.assignment);
    }
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, SyncGroupResponse& out) {
  if (auto s = check_version(ApiKey::sync_group, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::sync_group, version));
  out.throttle_time_ms = r.int32("throttle_time_ms");
  out.error_code = r.int16("error_code");
  // BYTES by the spec; librdkafka's mock cluster answers an error with null, read as empty.
  out.assignment = r.nullable_bytes("assignment").value_or(std::string_view());
  return r.finish();
}

// --- Heartbeat ---------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const HeartbeatRequest& h) {
  if (auto s = check_version(ApiKey::heartbeat, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::heartbeat, ctx, [&](Writer& w) {
    w.string(h.group_id);
    w.int32(h.generation_id);
    w.string(h.member_id);
    if (ctx.version >= 3) w.nullable_string(view(h.group_instance_id));
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, HeartbeatResponse& out) {
  if (auto s = check_version(ApiKey::heartbeat, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::heartbeat, version));
  out.throttle_time_ms = r.int32("throttle_time_ms");
  out.error_code = r.int16("error_code");
  return r.finish();
}

// --- LeaveGroup --------------------------------------------------------------------

Status append_request(std::string& out, const RequestContext& ctx, const LeaveGroupRequest& l) {
  if (auto s = check_version(ApiKey::leave_group, ctx.version, "encode"); !s) return s;
  write_request(out, ApiKey::leave_group, ctx, [&](Writer& w) {
    w.string(l.group_id);
    w.string(l.member_id);
  });
  return Ok{};
}

Status decode_response(std::string_view body, std::int16_t version, LeaveGroupResponse& out) {
  if (auto s = check_version(ApiKey::leave_group, version, "decode"); !s) return s;
  out = {};
  Reader r(body, context(ApiKey::leave_group, version));
  out.throttle_time_ms = r.int32("throttle_time_ms");
  out.error_code = r.int16("error_code");
  return r.finish();
}

// --- the consumer group protocol ---------------------------------------------------

std::string encode_consumer_subscription(const ConsumerSubscription& s) {
  std::string out;
  Writer w(out);
  w.int16(0);
  w.array_count(s.topics.size());
  for (const std::string& t : s.topics) w.string(t);
  w.bytes(s.user_data);
  return out;
}

Status decode_consumer_subscription(std::string_view bytes, ConsumerSubscription& out) {
  out = {};
  Reader r(bytes, "ConsumerSubscription", "the subscription");
  const std::int16_t version = r.int16("version");
  if (r.ok() && version < 0) r.fail("version", "negative version " + std::to_string(version));
  const std::size_t topics = r.array_count("topics", 2);
  out.topics.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "topics", i);
    out.topics[i] = r.string("name");
  }
  out.user_data = r.nullable_bytes("user_data").value_or(std::string_view());
  if (!r.ok()) return r.error();
  if (version == 0) return r.finish();
  return Ok{};  // later versions: their own fields follow
}

std::string encode_consumer_assignment(const ConsumerAssignment& a) {
  std::string out;
  Writer w(out);
  w.int16(0);
  w.array_count(a.assigned.size());
  for (const AssignedPartitions& t : a.assigned) {
    w.string(t.topic);
    w.array_count(t.partitions.size());
    for (std::int32_t p : t.partitions) w.int32(p);
  }
  w.bytes(a.user_data);
  return out;
}

Status decode_consumer_assignment(std::string_view bytes, ConsumerAssignment& out) {
  out = {};
  // An empty assignment (a member given nothing) may come as no bytes at all.
  if (bytes.empty()) return Ok{};
  Reader r(bytes, "ConsumerAssignment", "the assignment");
  const std::int16_t version = r.int16("version");
  if (r.ok() && version < 0) r.fail("version", "negative version " + std::to_string(version));
  const std::size_t topics = r.array_count("assigned_partitions", 6);
  out.assigned.resize(topics);
  for (std::size_t i = 0; i < topics && r.ok(); ++i) {
    Reader::Element e(r, "assigned_partitions", i);
    out.assigned[i].topic = r.string("topic");
    read_int32_array(r, "partitions", out.assigned[i].partitions);
  }
  out.user_data = r.nullable_bytes("user_data").value_or(std::string_view());
  if (!r.ok()) return r.error();
  if (version == 0) return r.finish();
  return Ok{};
}

}  // namespace ringfeed::io::kafka
