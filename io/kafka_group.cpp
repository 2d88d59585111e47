#include "io/kafka_group.hpp"

#include <algorithm>

#include "io/kafka_assignor.hpp"

namespace ringfeed::io::kafka {

namespace {

// After an error that joining again at once would repeat.
constexpr std::int64_t kJoinBackoffNs = 1'000'000'000;
constexpr std::int64_t kNsPerMs = 1'000'000;
// The leader of a group with other members sends its SyncGroup this much after the
// JoinGroup answer: a coordinator that completes the generation on the leader's SyncGroup
// (librdkafka's mock cluster does) refuses a follower's SyncGroup that comes after it
// (INVALID_REQUEST) and drops the assignment, so the follower joins again, a new
// rebalance begins, and a follower that is always a little slower than the leader (a
// loaded host) never gets in. A real broker answers a late follower; there it costs
// this delay once per rebalance.
constexpr std::int64_t kLeaderSyncDelayNs = 50'000'000;

bool is(std::int16_t code, ErrorCode e) {
  return code == static_cast<std::int16_t>(e);
}

}  // namespace

const char* to_string(GroupMember::Phase p) {
  switch (p) {
    case GroupMember::Phase::joining:
      return "joining";
    case GroupMember::Phase::syncing:
      return "syncing";
    case GroupMember::Phase::stable:
      return "stable";
    case GroupMember::Phase::revoking:
      return "revoking";
  }
  return "?";
}

std::string GroupMember::where(const char* api, std::int16_t code) const {
  return std::string(api) + " of group '" + options_.group + "': " + error_name(code);
}

GroupMember::Due GroupMember::next(std::int64_t now_ns, std::int64_t& wake_ns) {
  if (phase_ == Phase::stable &&
      now_ns - last_heartbeat_ok_ns_ > std::int64_t{options_.session_timeout_ms} * kNsPerMs) {
    revoke("no heartbeat answered within the session timeout (" +
           std::to_string(options_.session_timeout_ms) + " ms)");
  }
  if (in_flight_) return Due::nothing;
  switch (phase_) {
    case Phase::joining:
      if (now_ns >= join_at_ns_) return Due::join;
      wake_ns = std::min(wake_ns, join_at_ns_);
      return Due::nothing;
    case Phase::syncing:
      if (now_ns >= sync_at_ns_) return Due::sync;
      wake_ns = std::min(wake_ns, sync_at_ns_);
      return Due::nothing;
    case Phase::stable:
    case Phase::revoking:
      // Heartbeats go on while the owner revokes: they keep the session alive.
      if (!member()) return Due::nothing;
      if (now_ns >= heartbeat_at_ns_) return Due::heartbeat;
      wake_ns = std::min(wake_ns, heartbeat_at_ns_);
      return Due::nothing;
  }
  return Due::nothing;
}

JoinGroupRequest GroupMember::join_request() {
  in_flight_ = true;
  const ConsumerSubscription subscription{.topics = {options_.topic}, .user_data = ""};
  return JoinGroupRequest{.group_id = options_.group,
                          .session_timeout_ms = options_.session_timeout_ms,
                          .rebalance_timeout_ms = options_.rebalance_timeout_ms,
                          .member_id = member_id_,
                          .group_instance_id = std::nullopt,
                          .protocol_type = "consumer",
                          .protocols = {{"range", encode_consumer_subscription(subscription)}}};
}

SyncGroupRequest GroupMember::sync_request(const std::vector<std::int32_t>& partitions) {
  in_flight_ = true;
  SyncGroupRequest r{.group_id = options_.group,
                     .generation_id = generation_,
                     .member_id = member_id_,
                     .group_instance_id = std::nullopt,
                     .assignments = {}};
  if (!leader_) return r;
  std::vector<MemberSubscription> subscriptions;
  for (const JoinGroupMember& m : members_) {
    MemberSubscription s{.member_id = m.member_id, .subscription = {}};
    // A member whose subscription does not decode gets nothing (and an empty assignment,
    // so that the coordinator still answers it).
    if (Status ok = decode_consumer_subscription(m.metadata, s.subscription); !ok) {
      problem_ = "JoinGroup of group '" + options_.group + "': member '" + m.member_id +
                 "': " + ok.error().message;
      s.subscription = {};
    }
    subscriptions.push_back(std::move(s));
  }
  for (const auto& [member_id, assignment] :
       range_assign(subscriptions, {{options_.topic, partitions}})) {
    r.assignments.push_back({member_id, encode_consumer_assignment(assignment)});
  }
  return r;
}

HeartbeatRequest GroupMember::heartbeat_request() {
  in_flight_ = true;
  return HeartbeatRequest{.group_id = options_.group,
                          .generation_id = generation_,
                          .member_id = member_id_,
                          .group_instance_id = std::nullopt};
}

LeaveGroupRequest GroupMember::leave_request() const {
  return LeaveGroupRequest{.group_id = options_.group, .member_id = member_id_};
}

void GroupMember::join_again(std::int64_t at_ns) {
  phase_ = Phase::joining;
  generation_ = -1;
  leader_ = false;
  members_.clear();
  join_at_ns_ = at_ns;
}

void GroupMember::partitions_changed(const std::string& why) {
  if (leader_ && phase_ == Phase::stable) revoke(why);
}

void GroupMember::revoke(const std::string& why) {
  problem_ = why;
  if (phase_ == Phase::stable) {
    phase_ = Phase::revoking;
  } else if (phase_ == Phase::syncing) {
    // Nothing was assigned yet: nothing to release.
    join_again(0);
  }
}

void GroupMember::on_join(const JoinGroupResponse& r, std::int64_t now_ns) {
  in_flight_ = false;
  if (phase_ != Phase::joining) return;
  if (r.error_code == 0) {
    if (r.member_id.empty()) {
      problem_ = "JoinGroup of group '" + options_.group + "': no member id in the answer";
      join_again(now_ns + kJoinBackoffNs);
      return;
    }
    generation_ = r.generation_id;
    member_id_ = r.member_id;
    leader_ = r.leader == r.member_id;
    members_ = r.members;
    phase_ = Phase::syncing;
    sync_at_ns_ = leader_ && members_.size() > 1 ? now_ns + kLeaderSyncDelayNs : now_ns;
    return;
  }
  problem_ = where("JoinGroup", r.error_code);
  if (is(r.error_code, ErrorCode::member_id_required)) {
    member_id_ = r.member_id;
    join_again(now_ns);
  } else if (is(r.error_code, ErrorCode::unknown_member_id)) {
    member_id_.clear();
    join_again(now_ns);
  } else if (is(r.error_code, ErrorCode::rebalance_in_progress)) {
    join_again(now_ns);
  } else {
    join_again(now_ns + kJoinBackoffNs);
  }
}

void GroupMember::on_sync(const SyncGroupResponse& r, std::int64_t now_ns) {
  in_flight_ = false;
  if (phase_ != Phase::syncing) return;
  if (r.error_code != 0) {
    problem_ = where("SyncGroup", r.error_code);
    if (is(r.error_code, ErrorCode::unknown_member_id)) member_id_.clear();
    const bool at_once = is(r.error_code, ErrorCode::rebalance_in_progress) ||
                         is(r.error_code, ErrorCode::illegal_generation) ||
                         is(r.error_code, ErrorCode::unknown_member_id);
    join_again(at_once ? now_ns : now_ns + kJoinBackoffNs);
    return;
  }
  ConsumerAssignment a;
  if (Status ok = decode_consumer_assignment(r.assignment, a); !ok) {
    problem_ = "SyncGroup of group '" + options_.group + "': " + ok.error().message;
    join_again(now_ns + kJoinBackoffNs);
    return;
  }
  assigned_.clear();
  for (const AssignedPartitions& t : a.assigned) {
    if (t.topic != options_.topic) continue;
    assigned_.insert(assigned_.end(), t.partitions.begin(), t.partitions.end());
  }
  std::sort(assigned_.begin(), assigned_.end());
  assigned_.erase(std::unique(assigned_.begin(), assigned_.end()), assigned_.end());
  fresh_assignment_ = true;
  phase_ = Phase::stable;
  problem_.clear();
  last_heartbeat_ok_ns_ = now_ns;
  heartbeat_at_ns_ = now_ns + std::int64_t{options_.heartbeat_interval_ms} * kNsPerMs;
}

void GroupMember::on_heartbeat(const HeartbeatResponse& r, std::int64_t now_ns) {
  in_flight_ = false;
  heartbeat_at_ns_ = now_ns + std::int64_t{options_.heartbeat_interval_ms} * kNsPerMs;
  if (phase_ != Phase::stable && phase_ != Phase::revoking) return;
  if (r.error_code == 0) {
    last_heartbeat_ok_ns_ = now_ns;
    return;
  }
  if (is(r.error_code, ErrorCode::unknown_member_id)) member_id_.clear();
  revoke(where("Heartbeat", r.error_code));
}

void GroupMember::on_lost(const std::string& why, std::int64_t now_ns) {
  in_flight_ = false;
  problem_ = why;
  switch (phase_) {
    case Phase::stable:
      phase_ = Phase::revoking;
      break;
    case Phase::revoking:
      break;
    case Phase::joining:
    case Phase::syncing:
      // The member id stays: a JoinGroup with it takes the member's place again.
      join_again(now_ns + kJoinBackoffNs / 5);
      break;
  }
}

void GroupMember::on_commit_refused(std::int16_t code, std::int64_t) {
  if (is(code, ErrorCode::unknown_member_id)) member_id_.clear();
  revoke(where("OffsetCommit", code));
}

void GroupMember::released(std::int64_t now_ns) {
  if (phase_ != Phase::revoking) return;
  assigned_.clear();
  fresh_assignment_ = false;
  join_again(now_ns);
}

std::optional<std::vector<std::int32_t>> GroupMember::take_assignment() {
  if (!fresh_assignment_) return std::nullopt;
  fresh_assignment_ = false;
  return assigned_;
}

}  // namespace ringfeed::io::kafka
