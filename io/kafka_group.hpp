// A member of a Kafka consumer group, as a state machine without I/O: it says which
// request is due (JoinGroup, SyncGroup, Heartbeat), builds it, and moves on the
// responses. The Kafka source (kafka_source.cpp) sends the requests on its connection
// to the group's coordinator and releases its partitions when a rebalance begins.
//
// The eager protocol, as Kafka's classic consumers speak it:
//
//   joining --JoinGroup--> syncing --SyncGroup--> stable --Heartbeat every interval-->
//      ^                                            |
//      |                                            | REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
//      +---- released() <---- revoking <------------+ UNKNOWN_MEMBER_ID, a coordinator error or
//                                                     a lost connection, no heartbeat answered
//                                                     within the session timeout
//
// In revoking the owner stops fetching every partition of the old assignment, commits
// what it can, and then calls released(): only then does the member join again, so
// the partitions it gave up are never fetched by two members of one generation. The
// elected leader assigns the partitions with the range assignor (kafka_assignor.hpp).
//
// JoinGroup answers MEMBER_ID_REQUIRED (v4+) with the member id to join with: joined
// again at once. UNKNOWN_MEMBER_ID forgets the member id. Other errors are retried after
// a backoff, and problem() says what went wrong.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/kafka_messages.hpp"

namespace ringfeed::io::kafka {

struct GroupOptions {
  std::string group;
  std::string topic;
  std::int32_t session_timeout_ms = 10'000;
  std::int32_t rebalance_timeout_ms = 30'000;
  std::int32_t heartbeat_interval_ms = 3'000;
};

class GroupMember {
 public:
  enum class Phase : std::uint8_t { joining, syncing, stable, revoking };
  enum class Due : std::uint8_t { nothing, join, sync, heartbeat };

  explicit GroupMember(GroupOptions options) : options_(std::move(options)) {}

  // What to send now: nothing while a request is in flight or before its time (then
  // `wake_ns` is lowered to when it will be). Moves a stable member whose heartbeats went
  // unanswered for the session timeout to revoking.
  Due next(std::int64_t now_ns, std::int64_t& wake_ns);

  // Each marks its request in flight until its response (or on_lost).
  JoinGroupRequest join_request();
  // The leader's carries every member's assignment: `partitions` (the topic's) split by
  // the range assignor among the members subscribed to the topic.
  SyncGroupRequest sync_request(const std::vector<std::int32_t>& partitions);
  HeartbeatRequest heartbeat_request();
  LeaveGroupRequest leave_request() const;

  void on_join(const JoinGroupResponse& r, std::int64_t now_ns);
  void on_sync(const SyncGroupResponse& r, std::int64_t now_ns);
  void on_heartbeat(const HeartbeatResponse& r, std::int64_t now_ns);
  // The request in flight will get no answer (its connection failed), or the
  // coordinator moved: a stable member revokes, a joining one joins again.
  void on_lost(const std::string& why, std::int64_t now_ns);
  // An OffsetCommit was refused because the generation is over.
  void on_commit_refused(std::int16_t code, std::int64_t now_ns);
  // The owner released the partitions of the revoked assignment: join again.
  void released(std::int64_t now_ns);
  // The topic's partitions are no longer those the current assignment was made from
  // (partitions were added): a stable leader starts a rebalance, so that the new ones
  // are assigned, as Kafka's consumer leaders do. Followers wait for the leader.
  void partitions_changed(const std::string& why);

  // The assignment of a new generation, once (the partitions of the topic, ascending).
  std::optional<std::vector<std::int32_t>> take_assignment();

  Phase phase() const { return phase_; }
  bool in_flight() const { return in_flight_; }
  // A generation and member id that commits and LeaveGroup may name.
  bool member() const { return generation_ >= 0 && !member_id_.empty(); }
  std::int32_t generation() const { return generation_; }
  const std::string& member_id() const { return member_id_; }
  bool leader() const { return leader_; }
  const std::vector<std::int32_t>& assigned() const { return assigned_; }
  // Why the member is not stable, or the last error: "" when all is well.
  const std::string& problem() const { return problem_; }
  const GroupOptions& options() const { return options_; }

 private:
  void join_again(std::int64_t at_ns);
  void revoke(const std::string& why);
  std::string where(const char* api, std::int16_t code) const;

  GroupOptions options_;
  Phase phase_ = Phase::joining;
  bool in_flight_ = false;
  std::int64_t join_at_ns_ = 0;
  std::int64_t sync_at_ns_ = 0;  // a leader of others syncs a little after the followers
  std::int64_t heartbeat_at_ns_ = 0;
  std::int64_t last_heartbeat_ok_ns_ = 0;
  std::int32_t generation_ = -1;
  std::string member_id_;
  bool leader_ = false;
  std::vector<JoinGroupMember> members_;  // the leader's, for the assignment
  std::vector<std::int32_t> assigned_;
  bool fresh_assignment_ = false;
  std::string problem_;
};

const char* to_string(GroupMember::Phase p);

}  // namespace ringfeed::io::kafka
