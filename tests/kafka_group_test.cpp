// The consumer group member (io/kafka_group.hpp) and the range assignor
// (io/kafka_assignor.hpp), without a network: the assignor's split; the member's requests
// and its moves on each answer (MEMBER_ID_REQUIRED, the leader's assignment, a heartbeat
// saying REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID, a lost
// connection, a session without answers), and a malformed assignment named by its field.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/kafka_assignor.hpp"
#include "io/kafka_group.hpp"
#include "io/kafka_messages.hpp"

namespace kafka = ringfeed::io::kafka;
using Phase = kafka::GroupMember::Phase;
using Due = kafka::GroupMember::Due;

namespace {

using namespace std::string_literals;
using Parts = std::vector<std::int32_t>;

kafka::MemberSubscription sub(const std::string& id, std::vector<std::string> topics) {
  return {.member_id = id, .subscription = {.topics = std::move(topics), .user_data = ""}};
}

Parts parts_of(const kafka::ConsumerAssignment& a, const std::string& topic) {
  for (const auto& t : a.assigned) {
    if (t.topic == topic) return t.partitions;
  }
  return {};
}

TEST(KafkaRangeAssignor, SplitsEachTopicInRangesByMemberId) {
  // Members sorted by id; the first P % M get one more.
  auto a = kafka::range_assign({sub("m-b", {"t"}), sub("m-a", {"t"}), sub("m-c", {"t"})},
                               {{"t", {3, 0, 1, 2}}});
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(parts_of(a["m-a"], "t"), (Parts{0, 1}));
  EXPECT_EQ(parts_of(a["m-b"], "t"), (Parts{2}));
  EXPECT_EQ(parts_of(a["m-c"], "t"), (Parts{3}));

  a = kafka::range_assign({sub("x", {"t"}), sub("y", {"t"})}, {{"t", {0, 1, 2, 3}}});
  EXPECT_EQ(parts_of(a["x"], "t"), (Parts{0, 1}));
  EXPECT_EQ(parts_of(a["y"], "t"), (Parts{2, 3}));
}

TEST(KafkaRangeAssignor, EveryMemberGetsAnAssignmentEvenAnEmptyOne) {
  // More members than partitions; one member not subscribed; a topic nobody has.
  auto a = kafka::range_assign({sub("1", {"t"}), sub("2", {"t"}), sub("3", {"t"}), sub("4", {"u"})},
                               {{"t", {0, 1}}, {"v", {0}}});
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(parts_of(a["1"], "t"), (Parts{0}));
  EXPECT_EQ(parts_of(a["2"], "t"), (Parts{1}));
  EXPECT_TRUE(a["3"].assigned.empty());
  EXPECT_TRUE(a["4"].assigned.empty());  // "u": no partition list, assigned to nobody
  // Nothing to assign at all.
  EXPECT_TRUE(kafka::range_assign({}, {{"t", {0}}}).empty());
  a = kafka::range_assign({sub("1", {"t"})}, {{"t", {}}});
  EXPECT_TRUE(a["1"].assigned.empty());
}

TEST(KafkaRangeAssignor, TheRangesCoverEveryPartitionOnceForAnyMemberCount) {
  for (int members = 1; members <= 7; ++members) {
    for (int partitions = 0; partitions <= 12; ++partitions) {
      std::vector<kafka::MemberSubscription> m;
      for (int i = 0; i < members; ++i) m.push_back(sub("m" + std::to_string(i), {"t"}));
      Parts all;
      for (int p = 0; p < partitions; ++p) all.push_back(p);
      auto a = kafka::range_assign(m, {{"t", all}});
      Parts seen;
      std::size_t most = 0;
      std::size_t least = SIZE_MAX;
      for (auto& [id, assignment] : a) {
        const Parts got = parts_of(assignment, "t");
        seen.insert(seen.end(), got.begin(), got.end());
        most = std::max(most, got.size());
        least = std::min(least, got.size());
      }
      EXPECT_EQ(seen, all) << members << " members, " << partitions << " partitions";
      EXPECT_LE(most - least, 1u);
    }
  }
}

kafka::GroupOptions options() {
  return {.group = "g",
          .topic = "t",
          .session_timeout_ms = 3000,
          .rebalance_timeout_ms = 5000,
          .heartbeat_interval_ms = 1000};
}

constexpr std::int64_t kMs = 1'000'000;

Due next(kafka::GroupMember& m, std::int64_t now) {
  std::int64_t wake = INT64_MAX;
  return m.next(now, wake);
}

// A member joined as the leader of `members` and given `mine`.
void join_and_sync(kafka::GroupMember& m, std::int64_t now, const std::vector<std::string>& members,
                   const Parts& all, Parts& mine) {
  ASSERT_EQ(next(m, now), Due::join);
  const kafka::JoinGroupRequest j = m.join_request();
  EXPECT_EQ(j.protocol_type, "consumer");
  ASSERT_EQ(j.protocols.size(), 1u);
  EXPECT_EQ(j.protocols[0].name, "range");
  kafka::JoinGroupResponse r{
      .generation_id = 7, .protocol_name = "range", .leader = members[0], .member_id = members[0]};
  for (const std::string& id : members) {
    r.members.push_back({id, std::nullopt, j.protocols[0].metadata});
  }
  EXPECT_EQ(next(m, now), Due::nothing);  // in flight
  m.on_join(r, now);
  ASSERT_EQ(m.phase(), Phase::syncing);
  EXPECT_TRUE(m.leader());
  if (members.size() > 1) {
    // The followers' SyncGroup first: a coordinator may complete the generation on the
    // leader's and refuse theirs after it.
    std::int64_t wake = INT64_MAX;
    EXPECT_EQ(m.next(now, wake), Due::nothing);
    EXPECT_EQ(wake, now + 50 * kMs);
    now += 50 * kMs;
  }
  ASSERT_EQ(next(m, now), Due::sync);
  const kafka::SyncGroupRequest s = m.sync_request(all);
  EXPECT_EQ(s.generation_id, 7);
  EXPECT_EQ(s.member_id, members[0]);
  ASSERT_EQ(s.assignments.size(), members.size());
  std::string my_bytes;
  for (const auto& a : s.assignments) {
    if (a.member_id == members[0]) my_bytes = a.assignment;
  }
  m.on_sync({.assignment = my_bytes}, now);
  ASSERT_EQ(m.phase(), Phase::stable);
  auto taken = m.take_assignment();
  ASSERT_TRUE(taken.has_value());
  EXPECT_FALSE(m.take_assignment().has_value());  // once per generation
  mine = *taken;
}

TEST(KafkaGroupMember, JoinsSyncsAsTheLeaderAndHeartbeatsAtTheInterval) {
  kafka::GroupMember m(options());
  EXPECT_EQ(m.phase(), Phase::joining);
  EXPECT_FALSE(m.member());
  // MEMBER_ID_REQUIRED: joined again at once with the id given.
  ASSERT_EQ(next(m, 0), Due::join);
  EXPECT_EQ(m.join_request().member_id, "");
  m.on_join({.error_code = 79, .member_id = "m-1"}, 0);
  EXPECT_EQ(m.phase(), Phase::joining);
  EXPECT_EQ(m.member_id(), "m-1");
  EXPECT_EQ(m.problem(), "JoinGroup of group 'g': MEMBER_ID_REQUIRED");

  Parts mine;
  // Joined at 0; as the leader of two it syncs at 50 ms; heartbeats an interval later.
  join_and_sync(m, 0, {"m-1", "m-2"}, {0, 1, 2, 3}, mine);
  EXPECT_EQ(mine, (Parts{0, 1}));
  EXPECT_EQ(m.generation(), 7);
  EXPECT_EQ(m.problem(), "");

  std::int64_t wake = INT64_MAX;
  EXPECT_EQ(m.next(500 * kMs, wake), Due::nothing);
  EXPECT_EQ(wake, 1050 * kMs);
  ASSERT_EQ(next(m, 1050 * kMs), Due::heartbeat);
  const kafka::HeartbeatRequest h = m.heartbeat_request();
  EXPECT_EQ(h.generation_id, 7);
  EXPECT_EQ(h.member_id, "m-1");
  m.on_heartbeat({}, 1050 * kMs);
  EXPECT_EQ(m.phase(), Phase::stable);
  EXPECT_EQ(m.leave_request().member_id, "m-1");
}

TEST(KafkaGroupMember, AFollowerTakesWhatTheLeaderAssigned) {
  kafka::GroupMember m(options());
  ASSERT_EQ(next(m, 0), Due::join);
  static_cast<void>(m.join_request());
  m.on_join({.generation_id = 3, .leader = "other", .member_id = "me"}, 0);
  ASSERT_EQ(next(m, 0), Due::sync);
  EXPECT_TRUE(m.sync_request({0, 1}).assignments.empty());  // only the leader assigns
  const kafka::ConsumerAssignment a{.assigned = {{"u", {9}}, {"t", {3, 1}}}, .user_data = ""};
  m.on_sync({.assignment = kafka::encode_consumer_assignment(a)}, 0);
  EXPECT_EQ(m.take_assignment(), (Parts{1, 3}));  // its topic only, ascending
}

TEST(KafkaGroupMember, EachHeartbeatErrorRevokesAndReleasingJoinsAgain) {
  for (const auto& [code, keeps_id] :
       std::vector<std::pair<std::int16_t, bool>>{{27, true},     // REBALANCE_IN_PROGRESS
                                                  {22, true},     // ILLEGAL_GENERATION
                                                  {25, false},    // UNKNOWN_MEMBER_ID
                                                  {16, true}}) {  // NOT_COORDINATOR
    kafka::GroupMember m(options());
    Parts mine;
    join_and_sync(m, 0, {"m-1"}, {0, 1}, mine);
    EXPECT_EQ(mine, (Parts{0, 1}));
    ASSERT_EQ(next(m, 1000 * kMs), Due::heartbeat);
    static_cast<void>(m.heartbeat_request());
    m.on_heartbeat({.error_code = code}, 1000 * kMs);
    EXPECT_EQ(m.phase(), Phase::revoking) << code;
    EXPECT_NE(m.problem().find("Heartbeat of group 'g': " + kafka::error_name(code)),
              std::string::npos)
        << m.problem();
    EXPECT_EQ(m.member_id() == "m-1", keeps_id) << code;
    // The partitions are the owner's until it released them: no join before.
    EXPECT_NE(next(m, 1001 * kMs), Due::join);
    EXPECT_EQ(m.assigned(), (Parts{0, 1}));
    m.released(1001 * kMs);
    EXPECT_EQ(m.phase(), Phase::joining);
    EXPECT_TRUE(m.assigned().empty());
    ASSERT_EQ(next(m, 1001 * kMs), Due::join);
    EXPECT_EQ(m.join_request().member_id, keeps_id ? "m-1" : "");
  }
}

TEST(KafkaGroupMember, ALeaderRebalancesWhenTheTopicGainsPartitionsAFollowerWaits) {
  kafka::GroupMember leader(options());
  Parts mine;
  join_and_sync(leader, 0, {"m-1"}, {0, 1}, mine);
  leader.partitions_changed("topic 't' has 3 partitions now, 2 at the last assignment");
  EXPECT_EQ(leader.phase(), Phase::revoking);
  EXPECT_EQ(leader.problem(), "topic 't' has 3 partitions now, 2 at the last assignment");
  leader.released(1 * kMs);
  join_and_sync(leader, 1 * kMs, {"m-1"}, {0, 1, 2}, mine);
  EXPECT_EQ(mine, (Parts{0, 1, 2}));

  kafka::GroupMember follower(options());
  ASSERT_EQ(next(follower, 0), Due::join);
  static_cast<void>(follower.join_request());
  follower.on_join({.generation_id = 3, .leader = "other", .member_id = "me"}, 0);
  ASSERT_EQ(next(follower, 0), Due::sync);
  static_cast<void>(follower.sync_request({0, 1}));
  const kafka::ConsumerAssignment a{.assigned = {{"t", {1}}}, .user_data = ""};
  follower.on_sync({.assignment = kafka::encode_consumer_assignment(a)}, 0);
  ASSERT_EQ(follower.phase(), Phase::stable);
  follower.partitions_changed("more partitions");
  EXPECT_EQ(follower.phase(), Phase::stable);  // the leader rebalances, not each member
}

TEST(KafkaGroupMember, ALostConnectionOrASilentSessionRevokes) {
  kafka::GroupMember m(options());
  Parts mine;
  join_and_sync(m, 0, {"m-1"}, {0}, mine);
  ASSERT_EQ(next(m, 1000 * kMs), Due::heartbeat);
  static_cast<void>(m.heartbeat_request());
  m.on_lost("Kafka broker at h:1: connection reset", 1000 * kMs);
  EXPECT_EQ(m.phase(), Phase::revoking);
  m.released(1000 * kMs);

  join_and_sync(m, 2000 * kMs, {"m-1"}, {0}, mine);
  // No heartbeat answered for longer than the session timeout: revoked.
  ASSERT_EQ(next(m, 3000 * kMs), Due::heartbeat);
  static_cast<void>(m.heartbeat_request());
  EXPECT_EQ(next(m, 5001 * kMs), Due::nothing);
  EXPECT_EQ(m.phase(), Phase::revoking);
  EXPECT_NE(m.problem().find("session timeout"), std::string::npos) << m.problem();

  // A connection lost during a join: joined again, after a short backoff, same id.
  kafka::GroupMember j(options());
  ASSERT_EQ(next(j, 0), Due::join);
  static_cast<void>(j.join_request());
  j.on_lost("gone", 0);
  EXPECT_EQ(j.phase(), Phase::joining);
  EXPECT_EQ(next(j, 0), Due::nothing);
  EXPECT_EQ(next(j, 1000 * kMs), Due::join);
}

TEST(KafkaGroupMember, SyncErrorsAndAMalformedAssignmentJoinAgain) {
  kafka::GroupMember m(options());
  ASSERT_EQ(next(m, 0), Due::join);
  static_cast<void>(m.join_request());
  m.on_join({.generation_id = 1, .leader = "x", .member_id = "me"}, 0);
  static_cast<void>(m.sync_request({}));
  m.on_sync({.error_code = 27}, 0);  // REBALANCE_IN_PROGRESS
  EXPECT_EQ(m.phase(), Phase::joining);
  EXPECT_EQ(next(m, 0), Due::join);

  static_cast<void>(m.join_request());
  m.on_join({.generation_id = 2, .leader = "x", .member_id = "me"}, 0);
  static_cast<void>(m.sync_request({}));
  m.on_sync({.assignment = "\x00\x00\x00\x00\x00\x09"s}, 0);
  EXPECT_EQ(m.phase(), Phase::joining);
  EXPECT_EQ(m.problem().rfind("SyncGroup of group 'g': ConsumerAssignment: assigned_partitions", 0),
            0u)
      << m.problem();
  EXPECT_FALSE(m.take_assignment().has_value());
  EXPECT_EQ(next(m, 0), Due::nothing);  // after a backoff
  EXPECT_EQ(next(m, 1000 * kMs), Due::join);
}

TEST(KafkaGroupMember, TheLeaderGivesAMemberWithAnUnreadableSubscriptionNothing) {
  kafka::GroupMember m(options());
  ASSERT_EQ(next(m, 0), Due::join);
  const kafka::JoinGroupRequest j = m.join_request();
  m.on_join({.generation_id = 1,
             .leader = "a",
             .member_id = "a",
             .members = {{"a", std::nullopt, j.protocols[0].metadata},
                         {"b", std::nullopt, "\x00\x00\x00\x00\x00\x05"s}}},
            0);
  const kafka::SyncGroupRequest s = m.sync_request({0, 1});
  ASSERT_EQ(s.assignments.size(), 2u);
  kafka::ConsumerAssignment b;
  ASSERT_TRUE(kafka::decode_consumer_assignment(s.assignments[1].assignment, b));
  EXPECT_EQ(s.assignments[1].member_id, "b");
  EXPECT_TRUE(b.assigned.empty());
  EXPECT_NE(m.problem().find("member 'b': ConsumerSubscription: topics"), std::string::npos)
      << m.problem();
  kafka::ConsumerAssignment a;
  ASSERT_TRUE(kafka::decode_consumer_assignment(s.assignments[0].assignment, a));
  EXPECT_EQ(parts_of(a, "t"), (Parts{0, 1}));
}

}  // namespace
