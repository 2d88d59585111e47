// ringfeed: the command line. One binary, one subcommand per job; the exit statuses
// (0 ok, 1 runtime error, 2 usage error) are part of the contract scripts rely on.
#include <cstdio>
#include <span>
#include <string_view>

#include "cli_args.hpp"

namespace {

constexpr const char* kUsage =
    "usage: ringfeed <command> [flags]\n"
    "\n"
    "A per-host shared-memory consumer runtime for message queues: one fetcher per host\n"
    "pulls records from the upstream into one shared-memory ring per partition; worker\n"
    "processes take messages from the rings in consumer groups, under leases.\n"
    "\n"
    "commands:\n"
    "  fetch    run the fetcher daemon of a namespace (until SIGINT/SIGTERM)\n"
    "  produce  append messages (stdin lines, or generated ones) to a partition of a source\n"
    "  consume  print messages of a consumer group and ack them\n"
    "  stat     show partitions, rings and groups of a namespace\n"
    "\n"
    "Run 'ringfeed <command> --help' for a command's flags.\n"
    "Exit status: 0 success, 1 runtime error, 2 usage error.\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace ringfeed::cli;
  const std::span<char* const> all(argv, static_cast<std::size_t>(argc));
  if (all.size() < 2) {
    std::fputs(
        "ringfeed: no command given (commands: fetch, produce, consume, stat; see ringfeed "
        "--help)\n",
        stderr);
    return kExitUsage;
  }
  const std::string_view command = all[1];
  const auto rest = all.subspan(2);
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (command == "produce") return produce_main(rest);
  if (command == "consume") return consume_main(rest);
  if (command == "stat") return stat_main(rest);
  if (command == "fetch") return fetch_main(rest);
  std::fprintf(stderr,
               "ringfeed: unknown command '%.*s' (commands: fetch, produce, consume, stat; see "
               "ringfeed --help)\n",
               static_cast<int>(command.size()), command.data());
  return kExitUsage;
}
