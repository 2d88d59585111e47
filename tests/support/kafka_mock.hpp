// A Kafka-protocol cluster for the tests and the bench, and a blocking client to talk to
// it with ringfeed's own wire code.
//
//   ringfeed::test::KafkaMockCluster cluster;
//   if (auto ok = cluster.start({.topics = {"t"}, .partitions = 4}); !ok) FAIL() << ...;
//   auto client = ringfeed::test::KafkaClient::connect(cluster.brokers()[0]);
//   io::kafka::MetadataResponse m;
//   client->call(io::kafka::MetadataRequest{.topics = {{"t"}}}, 2, m);
//
// KafkaMockCluster runs the kafka_mock_cluster program (tests/support/kafka_mock_cluster.cpp,
// librdkafka's mock cluster) as a child that dies with the process that started it, reads
// the bootstrap address it prints, and stops it with SIGTERM. Nothing is waited for with
// a bare sleep: every wait polls its condition up to a deadline.
//
// KafkaClient is one blocking TCP connection to one broker: it sends a request, waits for
// the response frame and checks its correlation id. Test code only: the fetcher's client
// runs the same wire code on its io_uring.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/kafka_messages.hpp"
#include "io/kafka_wire.hpp"
#include "shm/result.hpp"

namespace ringfeed::test {

// host and port of one broker.
struct BrokerAddress {
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const { return host + ":" + std::to_string(port); }
};

// The kafka_mock_cluster program (built beside this library).
const char* kafka_mock_cluster_binary();

// "HOST:PORT,HOST:PORT,..." into its addresses; an error names the bad part.
Result<std::vector<BrokerAddress>> parse_bootstrap(std::string_view bootstrap);

// --- the cluster -------------------------------------------------------------------

struct KafkaMockOptions {
  int brokers = 3;
  std::vector<std::string> topics;  // created at start
  int partitions = 4;               // of each topic
  std::chrono::milliseconds start_timeout{15'000};
  std::chrono::milliseconds stop_timeout{10'000};
};

class KafkaMockCluster {
 public:
  KafkaMockCluster() = default;
  ~KafkaMockCluster();  // stops the cluster (SIGTERM, then SIGKILL)
  KafkaMockCluster(const KafkaMockCluster&) = delete;
  KafkaMockCluster& operator=(const KafkaMockCluster&) = delete;

  // Starts the program and returns once it printed the bootstrap address. The error says
  // what went wrong: the program exiting (with its status and stderr), or no address
  // within options.start_timeout. Refused while it runs.
  Status start(const KafkaMockOptions& options = {});
  // SIGTERM, and wait for exit status 0; SIGKILL after options.stop_timeout, reported as
  // an error. Nothing to do when not running.
  Status stop();

  bool running();
  pid_t pid() const { return pid_; }
  // "127.0.0.1:PORT,..." as printed, and parsed: one address per broker.
  const std::string& bootstrap() const { return bootstrap_; }
  const std::vector<BrokerAddress>& brokers() const { return brokers_; }
  // The last lines the program wrote on stderr (librdkafka's log).
  std::string log_tail(std::size_t lines = 20) const;

  // Faults, each returning once the cluster applied it. Moves the leader of every
  // partition to the next broker.
  Status move_leaders();
  // Makes the next three Fetch requests fail (NOT_LEADER_OR_FOLLOWER, a dropped
  // connection, NOT_LEADER_OR_FOLLOWER) and the next OffsetCommit (NOT_COORDINATOR).
  Status push_errors();

 private:
  KafkaMockOptions options_;
  std::string dir_;  // the program's stdout and stderr files
  pid_t pid_ = -1;
  std::string bootstrap_;
  std::vector<BrokerAddress> brokers_;
  std::size_t acknowledged_ = 0;  // fault lines read from its stdout

  Status signal_and_wait(int sig, std::string_view what);
};

// --- a blocking client -------------------------------------------------------------

class KafkaClient {
 public:
  static Result<KafkaClient> connect(const BrokerAddress& broker,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(10));

  KafkaClient() = default;
  KafkaClient(KafkaClient&& other) noexcept;
  KafkaClient& operator=(KafkaClient&& other) noexcept;
  KafkaClient(const KafkaClient&) = delete;
  KafkaClient& operator=(const KafkaClient&) = delete;
  ~KafkaClient();

  // Sends `request` in `version` and decodes its response into `response`. Views in the
  // response (FetchPartitionResponse::records) point into last_body(): valid until the
  // next call.
  template <typename Request, typename Response>
  Status call(const Request& request, std::int16_t version, Response& response) {
    std::string bytes;
    const std::int32_t id = next_correlation_id_++;
    if (auto s =
            io::kafka::append_request(bytes, {.correlation_id = id, .version = version}, request);
        !s) {
      return s;
    }
    auto body = exchange(bytes, id, io::kafka::api_name(Request::kApi));
    if (!body) return body.error();
    return io::kafka::decode_response(last_body_, version, response);
  }

  // Sends one encoded request and returns the body of its response frame (after the
  // correlation id, which must be `correlation_id`). `what` names the request in errors.
  Result<std::string> exchange(std::string_view request, std::int32_t correlation_id,
                               std::string_view what);

  // The body of the last response received (for saving real responses as fuzz seeds).
  const std::string& last_body() const { return last_body_; }
  const BrokerAddress& broker() const { return broker_; }

 private:
  Status send_all(std::string_view bytes, std::string_view what);
  Status read_more(std::string_view what);

  int fd_ = -1;
  BrokerAddress broker_;
  std::chrono::milliseconds timeout_{10'000};
  std::int32_t next_correlation_id_ = 1;
  std::string in_;  // received, not yet consumed
  std::string last_body_;
};

}  // namespace ringfeed::test
