// Kafka's range assignor ("range"), which the elected leader of a consumer group runs to
// split the partitions among the members (the cluster only relays the result).
//
// Per topic: the members subscribed to it, sorted by member id, and its partitions,
// sorted by number; with P partitions and M members each member gets P / M consecutive
// partitions, and the first P % M members one more. Every member gets an assignment,
// empty when nothing falls to it, so that the coordinator hands each one an answer.
// A topic the leader has no partition list for is assigned to nobody: ringfeed knows
// the partitions of its own topic only, so a group whose members subscribe to other
// topics as well gets those unassigned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/kafka_messages.hpp"

namespace ringfeed::io::kafka {

struct MemberSubscription {
  std::string member_id;
  ConsumerSubscription subscription;
};

// member id -> its assignment (topics in name order, partitions ascending).
std::map<std::string, ConsumerAssignment> range_assign(
    const std::vector<MemberSubscription>& members,
    const std::map<std::string, std::vector<std::int32_t>>& partitions_by_topic);

}  // namespace ringfeed::io::kafka
