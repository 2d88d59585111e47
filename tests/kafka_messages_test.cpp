// Kafka API requests and responses (io/kafka_messages.hpp): request bytes read back field
// by field, responses built by hand decoded into their structs, and every response cut at
// every byte (and given a byte too many) refused with an error naming the API, the
// version and a field, never a crash or a read past the end (inputs are exact-size heap
// copies, so the ASan build catches one).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "io/kafka_messages.hpp"
#include "io/kafka_records.hpp"
#include "io/kafka_wire.hpp"
#include "tests/kafka_test_support.hpp"

namespace kafka = ringfeed::io::kafka;
using ringfeed::test::ExactString;

namespace {

using namespace std::string_literals;

std::string build(const std::function<void(kafka::Writer&)>& write) {
  std::string out;
  kafka::Writer w(out);
  write(w);
  return out;
}

// Decodes `body` as `version`, then every prefix of it and it with one byte more, which
// must all fail naming `context` ("Fetch v11"). Returns the decode of `body` itself.
template <typename Response>
Response decode_all_ways(const std::string& body, std::int16_t version,
                         const std::string& context) {
  Response out;
  {
    const ExactString input(body);
    const auto s = kafka::decode_response(input.view(), version, out);
    EXPECT_TRUE(s) << s.error().message;
  }
  for (std::size_t len = 0; len < body.size(); ++len) {
    const ExactString input(std::string_view(body).substr(0, len));
    Response cut;
    const auto s = kafka::decode_response(input.view(), version, cut);
    EXPECT_FALSE(s) << context << " cut to " << len << " bytes decoded";
    if (!s) {
      EXPECT_EQ(s.error().message.rfind(context + ": ", 0), 0u) << s.error().message;
      EXPECT_EQ(s.error().code, EPROTO);
    }
  }
  const ExactString longer(body + "\x01");
  Response extra;
  const auto s = kafka::decode_response(longer.view(), version, extra);
  EXPECT_FALSE(s);
  if (!s) {
    EXPECT_EQ(s.error().message, context + ": 1 bytes left over after the last field, at byte " +
                                     std::to_string(body.size()) + " of " +
                                     std::to_string(body.size() + 1));
  }
  // Views in the result (Fetch records) must point into bytes the caller keeps.
  EXPECT_TRUE(kafka::decode_response(body, version, out));
  return out;
}

// The request's header fields, and a Reader on its body.
struct ParsedRequest {
  std::int16_t api_key = 0;
  std::int16_t version = 0;
  std::int32_t correlation_id = 0;
  std::string client_id;
  std::string body;
};

ParsedRequest parse_request(const std::string& bytes) {
  kafka::Reader r(bytes, "request", "the request");
  ParsedRequest p;
  const std::int32_t size = r.int32("size");
  EXPECT_EQ(static_cast<std::size_t>(size), bytes.size() - 4);
  p.api_key = r.int16("api_key");
  p.version = r.int16("api_version");
  p.correlation_id = r.int32("correlation_id");
  p.client_id = r.string("client_id");
  p.body = r.raw(r.remaining(), "body");
  EXPECT_TRUE(r.ok()) << r.message();
  return p;
}

TEST(KafkaMessages, FetchRequestV11) {
  kafka::FetchRequest f;
  f.max_wait_ms = 100;
  f.min_bytes = 1;
  f.max_bytes = 1 << 20;
  f.topics = {{"orders", {{.partition = 3, .fetch_offset = 42, .partition_max_bytes = 4096}}}};
  std::string out;
  ASSERT_TRUE(kafka::append_request(out, {.correlation_id = 9, .version = 11}, f));
  const ParsedRequest p = parse_request(out);
  EXPECT_EQ(p.api_key, 1);
  EXPECT_EQ(p.version, 11);
  EXPECT_EQ(p.correlation_id, 9);
  EXPECT_EQ(p.client_id, "ringfeed");
  kafka::Reader r(p.body, "Fetch request");
  EXPECT_EQ(r.int32("replica_id"), -1);
  EXPECT_EQ(r.int32("max_wait_ms"), 100);
  EXPECT_EQ(r.int32("min_bytes"), 1);
  EXPECT_EQ(r.int32("max_bytes"), 1 << 20);
  EXPECT_EQ(r.int8("isolation_level"), 0);
  EXPECT_EQ(r.int32("session_id"), 0);
  EXPECT_EQ(r.int32("session_epoch"), -1);
  EXPECT_EQ(r.array_count("topics", 1), 1u);
  EXPECT_EQ(r.string("topic"), "orders");
  EXPECT_EQ(r.array_count("partitions", 1), 1u);
  EXPECT_EQ(r.int32("partition"), 3);
  EXPECT_EQ(r.int32("current_leader_epoch"), -1);
  EXPECT_EQ(r.int64("fetch_offset"), 42);
  EXPECT_EQ(r.int64("log_start_offset"), -1);
  EXPECT_EQ(r.int32("partition_max_bytes"), 4096);
  EXPECT_EQ(r.array_count("forgotten_topics_data", 1), 0u);
  EXPECT_EQ(r.string("rack_id"), "");
  EXPECT_TRUE(r.finish());

  // v4 has none of the later fields.
  out.clear();
  ASSERT_TRUE(kafka::append_request(out, {.correlation_id = 1, .version = 4}, f));
  EXPECT_EQ(parse_request(out).body.size(), 4u * 4 + 1 + 4 + 2 + 6 + 4 + 4 + 8 + 4);
}

TEST(KafkaMessages, VersionsOutsideTheRangeAreRefused) {
  std::string out;
  const auto s = kafka::append_request(out, {.version = 12}, kafka::FetchRequest{});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "cannot encode Fetch v12: versions 4 to 11 are supported");
  EXPECT_TRUE(out.empty());
  kafka::MetadataResponse m;
  const auto d = kafka::decode_response("", 0, m);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().message, "cannot decode Metadata v0: versions 1 to 8 are supported");
  const auto n = kafka::append_request(out, {.version = 1},
                                       kafka::OffsetFetchRequest{.group_id = "g", .topics = {}});
  EXPECT_FALSE(n);
}

TEST(KafkaMessages, ApiVersionsAndPickVersion) {
  const std::string body = build([](kafka::Writer& w) {
    w.int16(0);
    w.array_count(3);
    for (auto [k, lo, hi] : {std::tuple{1, 0, 11}, {3, 0, 2}, {13, 0, 1}}) {
      w.int16(static_cast<std::int16_t>(k));
      w.int16(static_cast<std::int16_t>(lo));
      w.int16(static_cast<std::int16_t>(hi));
    }
    w.int32(0);
  });
  const auto r = decode_all_ways<kafka::ApiVersionsResponse>(body, 2, "ApiVersions v2");
  ASSERT_EQ(r.api_keys.size(), 3u);
  EXPECT_EQ(kafka::pick_version(r, kafka::ApiKey::fetch), 11);
  EXPECT_EQ(kafka::pick_version(r, kafka::ApiKey::metadata), 2);
  EXPECT_EQ(kafka::pick_version(r, kafka::ApiKey::leave_group), 1);
  EXPECT_EQ(kafka::pick_version(r, kafka::ApiKey::join_group), std::nullopt);  // not offered

  // UNSUPPORTED_VERSION comes in v0, whatever was asked.
  const std::string v0 = build([](kafka::Writer& w) {
    w.int16(35);
    w.array_count(1);
    w.int16(18);
    w.int16(0);
    w.int16(1);
  });
  kafka::ApiVersionsResponse u;
  ASSERT_TRUE(kafka::decode_response(v0, 2, u));
  EXPECT_EQ(u.error_code, 35);
  EXPECT_EQ(kafka::error_name(u.error_code), "UNSUPPORTED_VERSION");
}

std::string metadata_body(std::int16_t version) {
  return build([version](kafka::Writer& w) {
    if (version >= 3) w.int32(0);
    w.array_count(2);
    for (int b = 1; b <= 2; ++b) {
      w.int32(b);
      w.string("127.0.0.1");
      w.int32(9000 + b);
      w.nullable_string(std::nullopt);
    }
    if (version >= 2) w.nullable_string("cluster");
    w.int32(1);
    w.array_count(1);
    w.int16(0);
    w.string("t");
    w.boolean(false);
    w.array_count(2);
    for (int p = 0; p < 2; ++p) {
      w.int16(0);
      w.int32(p);
      w.int32(p + 1);
      if (version >= 7) w.int32(5);
      w.array_count(2);
      w.int32(1);
      w.int32(2);
      w.array_count(1);
      w.int32(p + 1);
      if (version >= 5) w.array_count(0);
    }
    if (version >= 8) w.int32(0);
    if (version >= 8) w.int32(0);
  });
}

TEST(KafkaMessages, MetadataAtTheOldestAndNewestVersions) {
  for (std::int16_t v : {1, 2, 5, 7, 8}) {
    const auto m = decode_all_ways<kafka::MetadataResponse>(metadata_body(v), v,
                                                            "Metadata v" + std::to_string(v));
    ASSERT_EQ(m.brokers.size(), 2u);
    EXPECT_EQ(m.brokers[1].node_id, 2);
    EXPECT_EQ(m.brokers[1].host, "127.0.0.1");
    EXPECT_EQ(m.brokers[1].port, 9002);
    EXPECT_EQ(m.cluster_id, v >= 2 ? std::optional<std::string>("cluster") : std::nullopt);
    EXPECT_EQ(m.controller_id, 1);
    ASSERT_EQ(m.topics.size(), 1u);
    ASSERT_EQ(m.topics[0].partitions.size(), 2u);
    EXPECT_EQ(m.topics[0].partitions[1].leader_id, 2);
    EXPECT_EQ(m.topics[0].partitions[1].leader_epoch, v >= 7 ? 5 : -1);
    EXPECT_EQ(m.topics[0].partitions[1].replica_nodes, (std::vector<std::int32_t>{1, 2}));
    EXPECT_EQ(m.topics[0].partitions[1].isr_nodes, (std::vector<std::int32_t>{2}));
  }
  std::string out;
  ASSERT_TRUE(kafka::append_request(out, {.version = 2}, kafka::MetadataRequest{}));
  EXPECT_EQ(parse_request(out).body, "\xff\xff\xff\xff"s);  // null: every topic
  out.clear();
  ASSERT_TRUE(kafka::append_request(
      out, {.version = 8}, kafka::MetadataRequest{.topics = std::vector<std::string>{"t"}}));
  EXPECT_EQ(parse_request(out).body, "\x00\x00\x00\x01\x00\x01t\x00\x00\x00"s);
}

TEST(KafkaMessages, ListOffsets) {
  const std::string body = build([](kafka::Writer& w) {
    w.int32(0);
    w.array_count(1);
    w.string("t");
    w.array_count(1);
    w.int32(3);
    w.int16(0);
    w.int64(-1);
    w.int64(1234);
  });
  const auto r = decode_all_ways<kafka::ListOffsetsResponse>(body, 3, "ListOffsets v3");
  ASSERT_EQ(r.topics.size(), 1u);
  EXPECT_EQ(r.topics[0].name, "t");
  EXPECT_EQ(r.topics[0].partitions[0].partition_index, 3);
  EXPECT_EQ(r.topics[0].partitions[0].offset, 1234);
}

TEST(KafkaMessages, FetchResponseRecordsPointIntoTheBody) {
  std::string records;
  const kafka::OutRecord rec{.key = "k", .value = "v", .timestamp = 1000, .headers = {}};
  ASSERT_TRUE(kafka::append_record_batch(records, {.base_offset = 10}, {&rec, 1}));
  const std::string body = build([&](kafka::Writer& w) {
    w.int32(0);
    w.int16(0);
    w.int32(0);
    w.array_count(1);
    w.string("t");
    w.array_count(2);
    // partition 0: one aborted transaction, the batch
    w.int32(0);
    w.int16(0);
    w.int64(11);
    w.int64(11);
    w.int64(0);
    w.array_count(1);
    w.int64(77);
    w.int64(5);
    w.int32(-1);
    w.bytes(records);
    // partition 1: OFFSET_OUT_OF_RANGE, null aborted transactions and null records
    w.int32(1);
    w.int16(1);
    w.int64(-1);
    w.int64(-1);
    w.int64(-1);
    w.null_array();
    w.int32(-1);
    w.nullable_bytes(std::nullopt);
  });
  const auto f = decode_all_ways<kafka::FetchResponse>(body, 11, "Fetch v11");
  ASSERT_EQ(f.responses.size(), 1u);
  ASSERT_EQ(f.responses[0].partitions.size(), 2u);
  const auto& p0 = f.responses[0].partitions[0];
  EXPECT_EQ(p0.high_watermark, 11);
  ASSERT_EQ(p0.aborted_transactions.size(), 1u);
  EXPECT_EQ(p0.aborted_transactions[0].producer_id, 77);
  EXPECT_EQ(p0.records, records);
  const auto& p1 = f.responses[0].partitions[1];
  EXPECT_EQ(kafka::error_name(p1.error_code), "OFFSET_OUT_OF_RANGE");
  EXPECT_TRUE(p1.aborted_transactions.empty());
  EXPECT_TRUE(p1.records.empty());

  // Views point into the body handed to decode_response.
  kafka::FetchResponse again;
  ASSERT_TRUE(kafka::decode_response(body, 11, again));
  const std::string_view all(body);
  EXPECT_GE(again.responses[0].partitions[0].records.data(), all.data());
  EXPECT_LE(again.responses[0].partitions[0].records.data() + records.size(),
            all.data() + all.size());

  // The message the brief of the decoder promises: API, version, path, field, where.
  std::string bad = body;
  const std::size_t records_length_at = body.find(records) - 4;
  kafka::Writer(bad).patch_int32(records_length_at, 5000);
  kafka::FetchResponse broken;
  const auto s = kafka::decode_response(bad, 11, broken);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message,
            "Fetch v11: responses[0].partitions[0].records: length 5000 at byte " +
                std::to_string(records_length_at) + " runs past the end of the response (" +
                std::to_string(body.size()) + " bytes)");
}

TEST(KafkaMessages, OffsetCommitAndOffsetFetch) {
  kafka::OffsetCommitRequest c{.group_id = "g",
                               .topics = {{"t", {{.partition_index = 2, .committed_offset = 99}}}}};
  std::string out;
  ASSERT_TRUE(kafka::append_request(out, {.version = 7}, c));
  {
    const ParsedRequest parsed = parse_request(out);
    kafka::Reader r(parsed.body, "OffsetCommit request");
    EXPECT_EQ(r.string("group_id"), "g");
    EXPECT_EQ(r.int32("generation_id"), -1);
    EXPECT_EQ(r.string("member_id"), "");
    EXPECT_EQ(r.nullable_string("group_instance_id"), std::nullopt);
    EXPECT_EQ(r.array_count("topics", 1), 1u);
    EXPECT_EQ(r.string("name"), "t");
    EXPECT_EQ(r.array_count("partitions", 1), 1u);
    EXPECT_EQ(r.int32("partition_index"), 2);
    EXPECT_EQ(r.int64("committed_offset"), 99);
    EXPECT_EQ(r.int32("committed_leader_epoch"), -1);
    EXPECT_EQ(r.nullable_string("committed_metadata"), std::nullopt);
    EXPECT_TRUE(r.finish());
  }
  const std::string commit = build([](kafka::Writer& w) {
    w.int32(0);
    w.array_count(1);
    w.string("t");
    w.array_count(1);
    w.int32(2);
    w.int16(16);
  });
  const auto cr = decode_all_ways<kafka::OffsetCommitResponse>(commit, 7, "OffsetCommit v7");
  EXPECT_EQ(kafka::error_name(cr.topics[0].partitions[0].error_code), "NOT_COORDINATOR");

  const std::string fetch = build([](kafka::Writer& w) {
    w.int32(0);
    w.array_count(1);
    w.string("t");
    w.array_count(1);
    w.int32(2);
    w.int64(99);
    w.int32(-1);
    w.nullable_string("");
    w.int16(0);
    w.int16(0);
  });
  const auto fr = decode_all_ways<kafka::OffsetFetchResponse>(fetch, 5, "OffsetFetch v5");
  EXPECT_EQ(fr.topics[0].partitions[0].committed_offset, 99);
  EXPECT_EQ(fr.topics[0].partitions[0].metadata, "");
}

TEST(KafkaMessages, GroupMembership) {
  const std::string coordinator = build([](kafka::Writer& w) {
    w.int32(0);
    w.int16(0);
    w.nullable_string(std::nullopt);
    w.int32(2);
    w.string("127.0.0.1");
    w.int32(9092);
  });
  const auto fc =
      decode_all_ways<kafka::FindCoordinatorResponse>(coordinator, 2, "FindCoordinator v2");
  EXPECT_EQ(fc.node_id, 2);
  EXPECT_EQ(fc.port, 9092);

  const kafka::ConsumerSubscription sub{.topics = {"a", "b"}, .user_data = ""};
  const std::string join = build([&](kafka::Writer& w) {
    w.int32(0);
    w.int16(0);
    w.int32(3);
    w.string("range");
    w.string("m-1");
    w.string("m-1");
    w.array_count(1);
    w.string("m-1");
    w.nullable_string(std::nullopt);
    w.bytes(kafka::encode_consumer_subscription(sub));
  });
  const auto jg = decode_all_ways<kafka::JoinGroupResponse>(join, 5, "JoinGroup v5");
  EXPECT_EQ(jg.generation_id, 3);
  EXPECT_EQ(jg.leader, "m-1");
  ASSERT_EQ(jg.members.size(), 1u);
  kafka::ConsumerSubscription back;
  ASSERT_TRUE(kafka::decode_consumer_subscription(jg.members[0].metadata, back));
  EXPECT_EQ(back.topics, sub.topics);

  const kafka::ConsumerAssignment assignment{.assigned = {{"a", {0, 2}}, {"b", {1}}},
                                             .user_data = ""};
  const std::string sync = build([&](kafka::Writer& w) {
    w.int32(0);
    w.int16(0);
    w.bytes(kafka::encode_consumer_assignment(assignment));
  });
  const auto sg = decode_all_ways<kafka::SyncGroupResponse>(sync, 3, "SyncGroup v3");
  kafka::ConsumerAssignment got;
  ASSERT_TRUE(kafka::decode_consumer_assignment(sg.assignment, got));
  ASSERT_EQ(got.assigned.size(), 2u);
  EXPECT_EQ(got.assigned[0].partitions, (std::vector<std::int32_t>{0, 2}));
  EXPECT_EQ(got.assigned[1].topic, "b");

  const std::string short_answer = build([](kafka::Writer& w) {
    w.int32(0);
    w.int16(27);
  });
  const auto hb = decode_all_ways<kafka::HeartbeatResponse>(short_answer, 3, "Heartbeat v3");
  EXPECT_EQ(kafka::error_name(hb.error_code), "REBALANCE_IN_PROGRESS");
  decode_all_ways<kafka::LeaveGroupResponse>(short_answer, 1, "LeaveGroup v1");

  // Requests carry what the version has.
  std::string out;
  ASSERT_TRUE(kafka::append_request(
      out, {.version = 5},
      kafka::JoinGroupRequest{.group_id = "g",
                              .protocols = {{"range", kafka::encode_consumer_subscription(sub)}}}));
  const ParsedRequest parsed = parse_request(out);
  kafka::Reader r(parsed.body, "JoinGroup request");
  EXPECT_EQ(r.string("group_id"), "g");
  EXPECT_EQ(r.int32("session_timeout_ms"), 10000);
  EXPECT_EQ(r.int32("rebalance_timeout_ms"), 30000);
  EXPECT_EQ(r.string("member_id"), "");
  EXPECT_EQ(r.nullable_string("group_instance_id"), std::nullopt);
  EXPECT_EQ(r.string("protocol_type"), "consumer");
  EXPECT_EQ(r.array_count("protocols", 1), 1u);
  EXPECT_EQ(r.string("name"), "range");
  EXPECT_EQ(r.bytes("metadata"), kafka::encode_consumer_subscription(sub));
  EXPECT_TRUE(r.finish());
}

TEST(KafkaMessages, GroupMembershipAtTheOldestVersions) {
  // JoinGroup before v5 has no group_instance_id per member.
  const std::string join = build([](kafka::Writer& w) {
    w.int32(0);
    w.int16(0);
    w.int32(1);
    w.string("range");
    w.string("m-2");
    w.string("m-1");
    w.array_count(2);
    w.string("m-1");
    w.bytes("s1");
    w.string("m-2");
    w.bytes("s2");
  });
  for (const std::int16_t v : {2, 3, 4}) {
    const auto jg =
        decode_all_ways<kafka::JoinGroupResponse>(join, v, "JoinGroup v" + std::to_string(v));
    EXPECT_EQ(jg.leader, "m-2");
    EXPECT_EQ(jg.member_id, "m-1");
    ASSERT_EQ(jg.members.size(), 2u);
    EXPECT_EQ(jg.members[1].metadata, "s2");
  }
  // A follower's SyncGroup answer with an empty assignment.
  const std::string sync = build([](kafka::Writer& w) {
    w.int32(0);
    w.int16(0);
    w.bytes("");
  });
  const auto sg = decode_all_ways<kafka::SyncGroupResponse>(sync, 1, "SyncGroup v1");
  kafka::ConsumerAssignment none;
  EXPECT_TRUE(kafka::decode_consumer_assignment(sg.assignment, none));
  EXPECT_TRUE(none.assigned.empty());
  // An error answer with a null assignment (as librdkafka's mock cluster sends it).
  const std::string refused = build([](kafka::Writer& w) {
    w.int32(0);
    w.int16(27);
    w.nullable_bytes(std::nullopt);
  });
  const auto sr = decode_all_ways<kafka::SyncGroupResponse>(refused, 3, "SyncGroup v3");
  EXPECT_EQ(sr.error_code, 27);
  EXPECT_EQ(sr.assignment, "");
  const std::string short_answer = build([](kafka::Writer& w) {
    w.int32(0);
    w.int16(25);
  });
  EXPECT_EQ(decode_all_ways<kafka::HeartbeatResponse>(short_answer, 1, "Heartbeat v1").error_code,
            25);
  decode_all_ways<kafka::LeaveGroupResponse>(short_answer, 2, "LeaveGroup v2");

  // The requests of the versions below the ones that added group_instance_id.
  std::string out;
  ASSERT_TRUE(kafka::append_request(
      out, {.version = 1},
      kafka::SyncGroupRequest{
          .group_id = "g", .generation_id = 4, .member_id = "m", .assignments = {{"m", "a"}}}));
  const ParsedRequest parsed = parse_request(out);
  EXPECT_EQ(parsed.api_key, 14);
  kafka::Reader r(parsed.body, "SyncGroup request");
  EXPECT_EQ(r.string("group_id"), "g");
  EXPECT_EQ(r.int32("generation_id"), 4);
  EXPECT_EQ(r.string("member_id"), "m");
  EXPECT_EQ(r.array_count("assignments", 1), 1u);
  EXPECT_EQ(r.string("member_id"), "m");
  EXPECT_EQ(r.bytes("assignment"), "a");
  EXPECT_TRUE(r.finish());
  out.clear();
  ASSERT_TRUE(kafka::append_request(
      out, {.version = 1},
      kafka::HeartbeatRequest{.group_id = "g", .generation_id = 4, .member_id = "m"}));
  const ParsedRequest beat = parse_request(out);
  kafka::Reader h(beat.body, "Heartbeat request");
  EXPECT_EQ(h.string("group_id"), "g");
  EXPECT_EQ(h.int32("generation_id"), 4);
  EXPECT_EQ(h.string("member_id"), "m");
  EXPECT_TRUE(h.finish());
}

TEST(KafkaMessages, ConsumerProtocolLaterVersionsAreReadByTheirFirstFields) {
  // A version 1 subscription (Kafka 2.4+) has owned partitions after the user data.
  const std::string v1 = build([](kafka::Writer& w) {
    w.int16(1);
    w.array_count(1);
    w.string("t");
    w.nullable_bytes(std::nullopt);
    w.array_count(0);
  });
  kafka::ConsumerSubscription s;
  ASSERT_TRUE(kafka::decode_consumer_subscription(v1, s));
  EXPECT_EQ(s.topics, std::vector<std::string>{"t"});
  kafka::ConsumerAssignment a;
  EXPECT_TRUE(kafka::decode_consumer_assignment("", a));  // nothing assigned
  EXPECT_TRUE(a.assigned.empty());
  const auto bad = kafka::decode_consumer_assignment("\x00\x00\x00\x00\x00\x09"s, a);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("ConsumerAssignment: assigned_partitions"), std::string::npos)
      << bad.error().message;
}

}  // namespace
