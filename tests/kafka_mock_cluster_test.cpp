// ringfeed's Kafka wire code against a real Kafka-protocol broker: librdkafka's mock
// cluster (tests/support/kafka_mock_cluster.cpp, 3 brokers on loopback). Records are
// produced with librdkafka, one partition per compression codec, with keys (some null),
// values (some null) and headers; then the test speaks to the cluster with its own
// encoder and decoders over a blocking socket (tests/support/kafka_mock.hpp): ApiVersions,
// Metadata, ListOffsets, and Fetch from each partition's leader until every record is
// back, equal to what was produced; then FindCoordinator, OffsetCommit and OffsetFetch of
// a group id. Also the fixture program's flags, and its stop on SIGINT.
//
// With RINGFEED_KAFKA_SEED_DIR set, the responses received are written there as seeds
// for fuzz/kafka_fuzz.cpp (its input layout: target byte, version byte, body).
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "io/kafka_messages.hpp"
#include "io/kafka_records.hpp"
#include "test_support.hpp"
#include "tests/support/kafka_mock.hpp"

namespace kafka = ringfeed::io::kafka;
namespace test = ringfeed::test;

namespace {

constexpr const char* kTopic = "t";

// One produced record, as the test expects to fetch it.
struct Produced {
  std::optional<std::string> key;
  std::optional<std::string> value;
  std::int64_t timestamp = 0;
  std::vector<std::pair<std::string, std::optional<std::string>>> headers;
};

// The codec of partition p is kCodecs[p].
const char* const kCodecNames[] = {"none", "gzip", "snappy", "lz4", "zstd"};
constexpr int kPartitions = 5;
constexpr int kRecordsPerPartition = 400;

std::vector<Produced> records_for(int partition) {
  std::vector<Produced> out;
  for (int i = 0; i < kRecordsPerPartition; ++i) {
    Produced p;
    if (i % 4 != 0) p.key = "key-" + std::to_string(partition) + "-" + std::to_string(i % 9);
    // Compressible values, so that librdkafka keeps them compressed.
    if (i % 17 != 5) {
      p.value = "value " + std::to_string(i) + " of partition " + std::to_string(partition) + " ";
      for (int r = 0; r < i % 10; ++r) p.value->append("repeated text, ");
    }
    p.timestamp = 1'700'000'000'000 + partition * 100'000 + i;
    if (i % 3 == 0) {
      p.headers.push_back({"trace-id", "t" + std::to_string(i)});
      p.headers.push_back({"nothing", std::nullopt});
    }
    out.push_back(std::move(p));
  }
  return out;
}

// Produces `records` into partition `partition` of kTopic with librdkafka, compressed by
// `codec`; returns an error message, or "" once every record was acknowledged.
std::string produce(const std::string& bootstrap, int partition, const char* codec,
                    const std::vector<Produced>& records) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  static std::atomic<int> failed{0};
  failed = 0;
  const std::pair<const char*, const char*> settings[] = {{"bootstrap.servers", bootstrap.c_str()},
                                                          {"compression.codec", codec},
                                                          {"linger.ms", "20"},
                                                          {"batch.num.messages", "150"},
                                                          {"log_level", "4"}};
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return std::string(name) + ": " + err;
    }
  }
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void*) {
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) ++failed;
  });
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) return std::string("rd_kafka_new: ") + err;
  const std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> guard(rk, rd_kafka_destroy);
  for (const Produced& p : records) {
    rd_kafka_headers_t* headers = nullptr;
    if (!p.headers.empty()) {
      headers = rd_kafka_headers_new(p.headers.size());
      for (const auto& [name, value] : p.headers) {
        rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()),
                            value ? value->data() : nullptr,
                            value ? static_cast<ssize_t>(value->size()) : 0);
      }
    }
    const char* key = p.key ? p.key->data() : nullptr;
    const std::size_t key_size = p.key ? p.key->size() : 0;
    char* value = p.value ? const_cast<char*>(p.value->data()) : nullptr;
    const std::size_t value_size = p.value ? p.value->size() : 0;
    const std::int64_t timestamp = p.timestamp;
    // librdkafka's argument macros cast the C way.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
    const rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(kTopic), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_size),
                          RD_KAFKA_V_VALUE(value, value_size), RD_KAFKA_V_TIMESTAMP(timestamp),
                          RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
#pragma GCC diagnostic pop
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (headers != nullptr) rd_kafka_headers_destroy(headers);
      return std::string("rd_kafka_producev: ") + rd_kafka_err2str(e);
    }
    rd_kafka_poll(rk, 0);
  }
  if (rd_kafka_flush(rk, 30'000) != RD_KAFKA_RESP_ERR_NO_ERROR) return "rd_kafka_flush timed out";
  if (failed != 0) return std::to_string(failed.load()) + " records were not delivered";
  return "";
}

// Writes `body` as a fuzz seed when RINGFEED_KAFKA_SEED_DIR is set. `target` is the fuzz
// target's decoder number (fuzz/kafka_fuzz.cpp).
void save_seed(const std::string& name, std::uint8_t target, std::int16_t version,
               std::string_view body) {
  const char* dir = std::getenv("RINGFEED_KAFKA_SEED_DIR");
  if (dir == nullptr) return;
  std::ofstream out(std::string(dir) + "/" + name, std::ios::binary);
  out.put(static_cast<char>(target));
  out.put(static_cast<char>(version));
  out.write(body.data(), static_cast<std::streamsize>(body.size()));
}

class KafkaMockClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = cluster_.start({.brokers = 3, .topics = {kTopic}, .partitions = kPartitions});
    ASSERT_TRUE(started) << started.error().message;
  }
  void TearDown() override {
    auto stopped = cluster_.stop();
    EXPECT_TRUE(stopped) << stopped.error().message;
  }

  test::KafkaMockCluster cluster_;
};

TEST_F(KafkaMockClusterTest, RecordsProducedWithLibrdkafkaFetchedWithOurOwnWireCode) {
  ASSERT_EQ(cluster_.brokers().size(), 3u);
  std::vector<std::vector<Produced>> produced(kPartitions);
  for (int p = 0; p < kPartitions; ++p) {
    produced[p] = records_for(p);
    const std::string err = produce(cluster_.bootstrap(), p, kCodecNames[p], produced[p]);
    ASSERT_EQ(err, "") << "producing " << kCodecNames[p] << " into partition " << p;
  }

  auto bootstrap = test::KafkaClient::connect(cluster_.brokers()[0]);
  ASSERT_TRUE(bootstrap) << bootstrap.error().message;

  // ApiVersions, and the versions both sides speak.
  kafka::ApiVersionsResponse versions;
  auto s = bootstrap->call(kafka::ApiVersionsRequest{}, 2, versions);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_api_versions_v2", 0, 2, bootstrap->last_body());
  ASSERT_EQ(versions.error_code, 0);
  std::map<kafka::ApiKey, std::int16_t> use;
  for (kafka::ApiKey api :
       {kafka::ApiKey::metadata, kafka::ApiKey::list_offsets, kafka::ApiKey::fetch,
        kafka::ApiKey::offset_commit, kafka::ApiKey::offset_fetch, kafka::ApiKey::find_coordinator,
        kafka::ApiKey::join_group, kafka::ApiKey::sync_group, kafka::ApiKey::heartbeat,
        kafka::ApiKey::leave_group}) {
    const auto v = kafka::pick_version(versions, api);
    ASSERT_TRUE(v) << "the mock cluster speaks no version of " << kafka::api_name(api)
                   << " that ringfeed speaks";
    use[api] = *v;
  }
  // What librdkafka 2.0.2's mock advertises (kafka_messages.hpp relies on it).
  EXPECT_EQ(use[kafka::ApiKey::metadata], 2);
  EXPECT_EQ(use[kafka::ApiKey::fetch], 11);
  EXPECT_EQ(use[kafka::ApiKey::list_offsets], 3);

  // Metadata: the brokers and each partition's leader.
  kafka::MetadataResponse metadata;
  s = bootstrap->call(kafka::MetadataRequest{.topics = std::vector<std::string>{kTopic}},
                      use[kafka::ApiKey::metadata], metadata);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_metadata_v2", 1, use[kafka::ApiKey::metadata], bootstrap->last_body());
  ASSERT_EQ(metadata.brokers.size(), 3u);
  ASSERT_EQ(metadata.topics.size(), 1u);
  ASSERT_EQ(metadata.topics[0].error_code, 0);
  ASSERT_EQ(metadata.topics[0].partitions.size(), static_cast<std::size_t>(kPartitions));
  std::map<std::int32_t, test::BrokerAddress> brokers;
  for (const auto& b : metadata.brokers) {
    brokers[b.node_id] = {b.host, static_cast<std::uint16_t>(b.port)};
  }
  std::map<std::int32_t, test::KafkaClient> connections;  // by node id
  auto leader_of = [&](std::int32_t partition) -> test::KafkaClient& {
    std::int32_t leader = -1;
    for (const auto& p : metadata.topics[0].partitions) {
      if (p.partition_index == partition) leader = p.leader_id;
    }
    auto it = connections.find(leader);
    if (it == connections.end()) {
      auto c = test::KafkaClient::connect(brokers.at(leader));
      EXPECT_TRUE(c) << c.error().message;
      it = connections.emplace(leader, std::move(*c)).first;
    }
    return it->second;
  };

  for (int p = 0; p < kPartitions; ++p) {
    SCOPED_TRACE(std::string("partition ") + std::to_string(p) + ", " + kCodecNames[p]);
    test::KafkaClient& leader = leader_of(p);

    // ListOffsets: earliest and latest.
    std::int64_t ends[2] = {-1, -1};
    const std::int64_t timestamps[2] = {kafka::kEarliestTimestamp, kafka::kLatestTimestamp};
    for (int e = 0; e < 2; ++e) {
      kafka::ListOffsetsResponse offsets;
      s = leader.call(
          kafka::ListOffsetsRequest{
              .topics = {{kTopic, {{.partition_index = p, .timestamp = timestamps[e]}}}}},
          use[kafka::ApiKey::list_offsets], offsets);
      ASSERT_TRUE(s) << s.error().message;
      ASSERT_EQ(offsets.topics.size(), 1u);
      ASSERT_EQ(offsets.topics[0].partitions.size(), 1u);
      ASSERT_EQ(offsets.topics[0].partitions[0].error_code, 0)
          << kafka::error_name(offsets.topics[0].partitions[0].error_code);
      ends[e] = offsets.topics[0].partitions[0].offset;
    }
    save_seed("mock_list_offsets_v3", 2, use[kafka::ApiKey::list_offsets], leader.last_body());
    EXPECT_EQ(ends[0], 0);
    ASSERT_EQ(ends[1], kRecordsPerPartition);

    // Fetch until every record is back; small byte limits make several fetches.
    std::vector<Produced> fetched;
    std::set<kafka::Compression> codecs_seen;
    std::int64_t offset = ends[0];
    kafka::RecordBatch batch;
    for (int round = 0; offset < ends[1]; ++round) {
      ASSERT_LT(round, 1000) << "no progress at offset " << offset;
      kafka::FetchRequest request{.max_wait_ms = 100, .max_bytes = 16 * 1024};
      request.topics = {
          {kTopic, {{.partition = p, .fetch_offset = offset, .partition_max_bytes = 16 * 1024}}}};
      kafka::FetchResponse response;
      s = leader.call(request, use[kafka::ApiKey::fetch], response);
      ASSERT_TRUE(s) << s.error().message;
      if (round == 0) {
        save_seed("mock_fetch_v11_" + std::string(kCodecNames[p]), 3, use[kafka::ApiKey::fetch],
                  leader.last_body());
      }
      const bool save_records = round == 0;
      ASSERT_EQ(response.error_code, 0);
      ASSERT_EQ(response.responses.size(), 1u);
      ASSERT_EQ(response.responses[0].partitions.size(), 1u);
      const kafka::FetchPartitionResponse& part = response.responses[0].partitions[0];
      ASSERT_EQ(part.error_code, 0) << kafka::error_name(part.error_code);
      EXPECT_EQ(part.high_watermark, ends[1]);
      std::string_view rest = part.records;
      if (save_records) save_seed("mock_records_" + std::string(kCodecNames[p]), 13, 0, rest);
      bool any = false;
      while (!rest.empty()) {
        const kafka::BatchResult r = kafka::decode_record_batch(rest, batch);
        ASSERT_NE(r.status, kafka::BatchStatus::error) << r.error;
        if (r.status == kafka::BatchStatus::incomplete) break;  // cut by max_bytes
        any = true;
        rest.remove_prefix(r.size);
        codecs_seen.insert(batch.header.compression());
        if (batch.header.control()) {
          offset = batch.header.next_offset();
          continue;
        }
        for (const kafka::RecordView& rec : batch.records) {
          if (rec.offset < offset) continue;  // a batch may begin before the fetch offset
          ASSERT_EQ(rec.offset, static_cast<std::int64_t>(fetched.size()));
          Produced got;
          if (!rec.key_null) got.key = std::string(rec.key);
          if (!rec.value_null) got.value = std::string(rec.value);
          got.timestamp = rec.timestamp;
          for (const kafka::RecordHeaderView& h : batch.headers_of(rec)) {
            got.headers.push_back(
                {std::string(h.key),
                 h.value_null ? std::nullopt : std::optional<std::string>(std::string(h.value))});
          }
          fetched.push_back(std::move(got));
        }
        offset = batch.header.next_offset();
      }
      ASSERT_TRUE(any) << "a fetch at offset " << offset << " returned no whole batch";
    }
    ASSERT_EQ(fetched.size(), produced[p].size());
    for (std::size_t i = 0; i < fetched.size(); ++i) {
      EXPECT_EQ(fetched[i].key, produced[p][i].key) << i;
      EXPECT_EQ(fetched[i].value, produced[p][i].value) << i;
      EXPECT_EQ(fetched[i].timestamp, produced[p][i].timestamp) << i;
      EXPECT_EQ(fetched[i].headers, produced[p][i].headers) << i;
    }
    // librdkafka compressed the batches with the partition's codec, except one that did
    // not get smaller (a batch of one short record), which it sends uncompressed.
    const auto codec = static_cast<kafka::Compression>(p);
    EXPECT_TRUE(codecs_seen.contains(codec)) << "no batch compressed by " << kCodecNames[p];
    codecs_seen.erase(kafka::Compression::none);
    codecs_seen.erase(codec);
    EXPECT_TRUE(codecs_seen.empty()) << "a batch compressed by another codec";
  }

  // The group's coordinator, then OffsetCommit and OffsetFetch there.
  kafka::FindCoordinatorResponse coordinator;
  s = bootstrap->call(kafka::FindCoordinatorRequest{.key = "ringfeed-test"},
                      use[kafka::ApiKey::find_coordinator], coordinator);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_find_coordinator_v2", 6, use[kafka::ApiKey::find_coordinator],
            bootstrap->last_body());
  ASSERT_EQ(coordinator.error_code, 0) << kafka::error_name(coordinator.error_code);
  auto group =
      test::KafkaClient::connect({coordinator.host, static_cast<std::uint16_t>(coordinator.port)});
  ASSERT_TRUE(group) << group.error().message;

  kafka::OffsetCommitRequest commit{.group_id = "ringfeed-test"};
  commit.topics.push_back({kTopic, {}});
  for (int p = 0; p < kPartitions; ++p) {
    commit.topics[0].partitions.push_back(
        {.partition_index = p, .committed_offset = 100 + p, .committed_metadata = "m"});
  }
  kafka::OffsetCommitResponse committed;
  s = group->call(commit, use[kafka::ApiKey::offset_commit], committed);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_offset_commit_v7", 4, use[kafka::ApiKey::offset_commit], group->last_body());
  ASSERT_EQ(committed.topics.size(), 1u);
  ASSERT_EQ(committed.topics[0].partitions.size(), static_cast<std::size_t>(kPartitions));
  for (const auto& p : committed.topics[0].partitions) {
    EXPECT_EQ(p.error_code, 0) << "partition " << p.partition_index << ": "
                               << kafka::error_name(p.error_code);
  }

  kafka::OffsetFetchRequest ask{
      .group_id = "ringfeed-test",
      .topics = std::vector<kafka::OffsetFetchTopicRequest>{{kTopic, {0, 1, 2, 3, 4}}}};
  kafka::OffsetFetchResponse back;
  s = group->call(ask, use[kafka::ApiKey::offset_fetch], back);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_offset_fetch_v5", 5, use[kafka::ApiKey::offset_fetch], group->last_body());
  EXPECT_EQ(back.error_code, 0);
  ASSERT_EQ(back.topics.size(), 1u);
  ASSERT_EQ(back.topics[0].partitions.size(), static_cast<std::size_t>(kPartitions));
  for (const auto& p : back.topics[0].partitions) {
    EXPECT_EQ(p.error_code, 0) << kafka::error_name(p.error_code);
    EXPECT_EQ(p.committed_offset, 100 + p.partition_index);
    EXPECT_EQ(p.metadata, "m");
  }
  // A group that never committed has -1.
  kafka::OffsetFetchResponse none;
  s = group->call(
      kafka::OffsetFetchRequest{
          .group_id = "ringfeed-test",
          .topics = std::vector<kafka::OffsetFetchTopicRequest>{{"other-topic", {0}}}},
      use[kafka::ApiKey::offset_fetch], none);
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(none.topics.size(), 1u);
  EXPECT_EQ(none.topics[0].partitions[0].committed_offset, -1);
}

TEST_F(KafkaMockClusterTest, JoinSyncHeartbeatAndLeaveAGroup) {
  const std::string group_id = "ringfeed-members";
  auto bootstrap = test::KafkaClient::connect(cluster_.brokers()[0]);
  ASSERT_TRUE(bootstrap) << bootstrap.error().message;
  kafka::FindCoordinatorResponse coordinator;
  auto s = bootstrap->call(kafka::FindCoordinatorRequest{.key = group_id}, 2, coordinator);
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(coordinator.error_code, 0) << kafka::error_name(coordinator.error_code);
  auto c = test::KafkaClient::connect(
      {coordinator.host, static_cast<std::uint16_t>(coordinator.port)}, std::chrono::seconds(30));
  ASSERT_TRUE(c) << c.error().message;

  const kafka::ConsumerSubscription subscription{.topics = {kTopic}, .user_data = ""};
  kafka::JoinGroupRequest join{
      .group_id = group_id,
      .session_timeout_ms = 10'000,
      .rebalance_timeout_ms = 1'000,
      .protocols = {{"range", kafka::encode_consumer_subscription(subscription)}}};
  kafka::JoinGroupResponse joined;
  s = c->call(join, 5, joined);
  ASSERT_TRUE(s) << s.error().message;
  // From JoinGroup v4 a broker may first hand out the member id to join with.
  if (joined.error_code == static_cast<std::int16_t>(kafka::ErrorCode::member_id_required)) {
    join.member_id = joined.member_id;
    s = c->call(join, 5, joined);
    ASSERT_TRUE(s) << s.error().message;
  }
  save_seed("mock_join_group_v5", 7, 5, c->last_body());
  ASSERT_EQ(joined.error_code, 0) << kafka::error_name(joined.error_code);
  EXPECT_EQ(joined.protocol_name, "range");
  EXPECT_EQ(joined.leader, joined.member_id);  // the only member leads
  ASSERT_EQ(joined.members.size(), 1u);
  kafka::ConsumerSubscription theirs;
  ASSERT_TRUE(kafka::decode_consumer_subscription(joined.members[0].metadata, theirs));
  EXPECT_EQ(theirs.topics, subscription.topics);

  const kafka::ConsumerAssignment all{.assigned = {{kTopic, {0, 1, 2, 3, 4}}}, .user_data = ""};
  kafka::SyncGroupResponse synced;
  s = c->call(kafka::SyncGroupRequest{.group_id = group_id,
                                      .generation_id = joined.generation_id,
                                      .member_id = joined.member_id,
                                      .assignments = {{joined.member_id,
                                                       kafka::encode_consumer_assignment(all)}}},
              3, synced);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_sync_group_v3", 8, 3, c->last_body());
  ASSERT_EQ(synced.error_code, 0) << kafka::error_name(synced.error_code);
  kafka::ConsumerAssignment mine;
  ASSERT_TRUE(kafka::decode_consumer_assignment(synced.assignment, mine));
  ASSERT_EQ(mine.assigned.size(), 1u);
  EXPECT_EQ(mine.assigned[0].partitions, (std::vector<std::int32_t>{0, 1, 2, 3, 4}));

  kafka::HeartbeatResponse beat;
  s = c->call(kafka::HeartbeatRequest{.group_id = group_id,
                                      .generation_id = joined.generation_id,
                                      .member_id = joined.member_id},
              3, beat);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_heartbeat_v3", 9, 3, c->last_body());
  EXPECT_EQ(beat.error_code, 0) << kafka::error_name(beat.error_code);
  // A stale generation is refused.
  s = c->call(kafka::HeartbeatRequest{.group_id = group_id,
                                      .generation_id = joined.generation_id + 7,
                                      .member_id = joined.member_id},
              3, beat);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(kafka::error_name(beat.error_code), "ILLEGAL_GENERATION");

  kafka::LeaveGroupResponse left;
  s = c->call(kafka::LeaveGroupRequest{.group_id = group_id, .member_id = joined.member_id}, 1,
              left);
  ASSERT_TRUE(s) << s.error().message;
  save_seed("mock_leave_group_v1", 10, 1, c->last_body());
  EXPECT_EQ(left.error_code, 0) << kafka::error_name(left.error_code);
}

TEST_F(KafkaMockClusterTest, AnUnknownTopicIsAnErrorCodeNotADecodeError) {
  auto c = test::KafkaClient::connect(cluster_.brokers()[1]);
  ASSERT_TRUE(c) << c.error().message;
  kafka::ListOffsetsResponse offsets;
  auto s =
      c->call(kafka::ListOffsetsRequest{.topics = {{"no-such-topic", {{.partition_index = 0}}}}}, 3,
              offsets);
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(offsets.topics.size(), 1u);
  EXPECT_EQ(kafka::error_name(offsets.topics[0].partitions[0].error_code),
            "UNKNOWN_TOPIC_OR_PARTITION");
}

TEST(KafkaMockClusterProgram, FlagsHelpAndSigint) {
  const std::string bin = test::kafka_mock_cluster_binary();
  test::TempDir dir("ringfeed-kafka-mock-flags");
  EXPECT_EQ(test::wait_child(test::spawn_program(bin, {"--help"}, "", dir.file("help"))), 0);
  std::ifstream help(dir.file("help"));
  std::string first;
  std::getline(help, first);
  EXPECT_EQ(first.rfind("usage: kafka_mock_cluster", 0), 0u) << first;
  for (const std::vector<std::string>& bad :
       std::vector<std::vector<std::string>>{{"--brokers", "0"},
                                             {"--partitions", "x"},
                                             {"--brokers"},
                                             {"--topic", ""},
                                             {"--brokers", "2", "--replication", "3"},
                                             {"--what"}}) {
    const pid_t pid = test::spawn_program(bin, bad, "", "", dir.file("err"));
    EXPECT_EQ(test::wait_child(pid), 2) << bad[0];
    std::ifstream err(dir.file("err"));
    std::string line;
    std::getline(err, line);
    EXPECT_EQ(line.rfind("kafka_mock_cluster: ", 0), 0u) << line;
  }
  // Started by hand and stopped by SIGINT: exit 0.
  const pid_t pid =
      test::spawn_program(bin, {"--brokers", "1", "--topic", "x"}, "", dir.file("out"));
  ASSERT_TRUE(test::wait_until(
      [&] {
        std::ifstream out(dir.file("out"));
        std::string line;
        return static_cast<bool>(std::getline(out, line)) && !out.eof();
      },
      std::chrono::seconds(15)));
  ::kill(pid, SIGINT);
  EXPECT_EQ(test::wait_child(pid, std::chrono::seconds(15)), 0);
}

}  // namespace
