// Bytes a process received over TCP from a set of ports, read from its sockets' tcp_info
// (tcpi_bytes_received): the cluster's view of what a consumer fetched, measured the same
// way for any client, whether or not it counts its own traffic.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace ringfeed::bench {

struct SocketBytes {
  std::uint64_t bytes = 0;  // received on the sockets below
  int sockets = 0;          // open TCP sockets of the process connected to one of the ports
};

// Sums tcpi_bytes_received over the open TCP sockets of `pid` whose peer port is one of
// `ports` (a child of this process: its descriptors are copied with pidfd_getfd).
// Sockets already closed are not counted. Throws std::runtime_error if the process cannot
// be inspected.
SocketBytes tcp_bytes_received(pid_t pid, const std::vector<std::uint16_t>& ports);

}  // namespace ringfeed::bench
