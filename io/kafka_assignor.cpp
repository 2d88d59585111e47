#include "io/kafka_assignor.hpp"

#include <algorithm>

namespace ringfeed::io::kafka {

std::map<std::string, ConsumerAssignment> range_assign(
    const std::vector<MemberSubscription>& members,
    const std::map<std::string, std::vector<std::int32_t>>& partitions_by_topic) {
  std::map<std::string, ConsumerAssignment> out;
  for (const MemberSubscription& m : members) out[m.member_id];
  for (const auto& [topic, listed] : partitions_by_topic) {
    std::vector<std::string> subscribed;
    for (const MemberSubscription& m : members) {
      const auto& topics = m.subscription.topics;
      if (std::find(topics.begin(), topics.end(), topic) != topics.end()) {
        subscribed.push_back(m.member_id);
      }
    }
    std::sort(subscribed.begin(), subscribed.end());
    subscribed.erase(std::unique(subscribed.begin(), subscribed.end()), subscribed.end());
    if (subscribed.empty()) continue;
    std::vector<std::int32_t> partitions = listed;
    std::sort(partitions.begin(), partitions.end());
    partitions.erase(std::unique(partitions.begin(), partitions.end()), partitions.end());
    const std::size_t each = partitions.size() / subscribed.size();
    const std::size_t extra = partitions.size() % subscribed.size();
    std::size_t next = 0;
    for (std::size_t i = 0; i < subscribed.size(); ++i) {
      const std::size_t n = each + (i < extra ? 1 : 0);
      if (n == 0) continue;
      AssignedPartitions a{.topic = topic, .partitions = {}};
      a.partitions.assign(partitions.begin() + static_cast<std::ptrdiff_t>(next),
                          partitions.begin() + static_cast<std::ptrdiff_t>(next + n));
      next += n;
      out[subscribed[i]].assigned.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace ringfeed::io::kafka
