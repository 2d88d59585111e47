// ringfeed-bench kafka in a build without librdkafka (ThreadSanitizer builds leave out
// everything that links it): says so and fails.
#include <stdexcept>

#include "commands.hpp"

namespace ringfeed::bench {

int kafka_main(ArgReader&) {
  throw std::runtime_error("not in this build: ThreadSanitizer builds leave out librdkafka");
}

}  // namespace ringfeed::bench
