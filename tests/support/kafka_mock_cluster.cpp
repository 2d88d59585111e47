// kafka_mock_cluster: a Kafka-protocol cluster on loopback for the tests and the bench.
//
//   kafka_mock_cluster [--brokers N] [--topic NAME]... [--partitions N] [--replication N]
//
// Starts librdkafka's in-process mock cluster (rdkafka_mock.h) with N brokers (default
// 3), each listening on its own 127.0.0.1 port, creates every --topic with --partitions
// partitions (default 4) and --replication replicas (default: the number of brokers, at
// most 3), prints the bootstrap address ("127.0.0.1:PORT,127.0.0.1:PORT,...") on stdout
// as one line, and runs until SIGTERM or SIGINT, then destroys the cluster and exits 0.
// Faults for the tests, each acknowledged by a line on stdout once done: SIGUSR1 moves
// the leader of every partition to the next broker ("leaders moved N"); SIGUSR2 makes
// the next Fetch requests fail (NOT_LEADER_OR_FOLLOWER, a dropped connection,
// NOT_LEADER_OR_FOLLOWER) and the next OffsetCommit (NOT_COORDINATOR) ("errors pushed").
// Exit status 2 on a bad flag (with a one-line reason on stderr), 1 when the cluster
// cannot be started.
//
// The mock speaks the wire protocol on real TCP ports: Produce, Fetch, ListOffsets,
// Metadata, the group and offset APIs; topics that are produced to but were not created
// here are created on first use with librdkafka's defaults.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: kafka_mock_cluster [--brokers N] [--topic NAME]... [--partitions N] "
    "[--replication N]\n"
    "Starts librdkafka's mock Kafka cluster on 127.0.0.1, creates the topics, prints the\n"
    "bootstrap address on one line and runs until SIGTERM or SIGINT.\n"
    "  --brokers N       brokers in the cluster (1-64, default 3)\n"
    "  --topic NAME      a topic to create (repeatable)\n"
    "  --partitions N    partitions of each topic (1-10000, default 4)\n"
    "  --replication N   replicas of each partition (1-brokers, default min(brokers, 3))\n";

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "kafka_mock_cluster: %s (--help for usage)\n", why.c_str());
  std::exit(2);
}

int parse_count(std::string_view flag, const char* value, int min, int max) {
  if (value == nullptr) usage_error(std::string(flag) + " needs a value");
  const std::string_view v(value);
  int n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < min || n > max) {
    usage_error(std::string(flag) + " '" + std::string(v) + "' is not a whole number from " +
                std::to_string(min) + " to " + std::to_string(max));
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int brokers = 3;
  int partitions = 4;
  int replication = 0;  // 0: min(brokers, 3)
  std::vector<std::string> topics;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--brokers") {
      brokers = parse_count(arg, value, 1, 64);
      ++i;
    } else if (arg == "--partitions") {
      partitions = parse_count(arg, value, 1, 10000);
      ++i;
    } else if (arg == "--replication") {
      replication = parse_count(arg, value, 1, 64);
      ++i;
    } else if (arg == "--topic") {
      if (value == nullptr || *value == '\0') usage_error("--topic needs a name");
      topics.emplace_back(value);
      ++i;
    } else {
      usage_error("unknown argument '" + std::string(arg) + "'");
    }
  }
  if (replication == 0) replication = brokers < 3 ? brokers : 3;
  if (replication > brokers) {
    usage_error("--replication " + std::to_string(replication) + " is more than the " +
                std::to_string(brokers) + " brokers");
  }

  // Block the stop signals before librdkafka starts its threads (they inherit the mask),
  // so that only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGUSR1);
  sigaddset(&stop_signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The mock cluster lives inside a client handle; this one is never used to produce.
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "kafka_mock_cluster: %s\n", errstr);
    return 1;
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    std::fprintf(stderr, "kafka_mock_cluster: rd_kafka_new: %s\n", errstr);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, brokers);
  if (cluster == nullptr) {
    std::fprintf(stderr, "kafka_mock_cluster: rd_kafka_mock_cluster_new failed\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  for (const std::string& topic : topics) {
    const rd_kafka_resp_err_t err =
        rd_kafka_mock_topic_create(cluster, topic.c_str(), partitions, replication);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "kafka_mock_cluster: creating topic '%s': %s\n", topic.c_str(),
                   rd_kafka_err2str(err));
      rd_kafka_mock_cluster_destroy(cluster);
      rd_kafka_destroy(rk);
      return 1;
    }
  }
  std::printf("%s\n", rd_kafka_mock_cluster_bootstraps(cluster));
  std::fflush(stdout);

  int sig = 0;
  for (int moves = 1; sigwait(&stop_signals, &sig) == 0 && (sig == SIGUSR1 || sig == SIGUSR2);) {
    if (sig == SIGUSR1) {
      for (const std::string& topic : topics) {
        for (int p = 0; p < partitions; ++p) {
          rd_kafka_mock_partition_set_leader(cluster, topic.c_str(), p, 1 + (p + moves) % brokers);
        }
      }
      std::printf("leaders moved %d\n", moves++);
    } else {
      const rd_kafka_resp_err_t fetch[] = {RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                           RD_KAFKA_RESP_ERR__TRANSPORT,
                                           RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION};
      rd_kafka_mock_push_request_errors_array(cluster, 1, std::size(fetch), fetch);
      const rd_kafka_resp_err_t commit[] = {RD_KAFKA_RESP_ERR_NOT_COORDINATOR};
      rd_kafka_mock_push_request_errors_array(cluster, 8, std::size(commit), commit);
      std::printf("errors pushed\n");
    }
    std::fflush(stdout);
  }

  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(rk);
  return 0;
}
