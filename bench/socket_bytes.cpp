#include "socket_bytes.hpp"

#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace ringfeed::bench {

SocketBytes tcp_bytes_received(pid_t pid, const std::vector<std::uint16_t>& ports) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    throw std::runtime_error("pidfd_open of " + std::to_string(pid) + ": " + std::strerror(errno));
  }
  SocketBytes sum;
  std::error_code ec;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    // Only sockets: their links read "socket:[inode]".
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (ec || target.rfind("socket:", 0) != 0) continue;
    const int theirs = std::stoi(e.path().filename().string());
    const int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, theirs, 0));
    if (fd < 0) continue;  // closed meanwhile
    sockaddr_in6 peer{};
    socklen_t len = sizeof peer;
    tcp_info info{};
    socklen_t info_len = sizeof info;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 &&
        (peer.sin6_family == AF_INET || peer.sin6_family == AF_INET6) &&
        ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &info_len) == 0) {
      // sin_port and sin6_port sit at the same offset.
      const std::uint16_t port = ntohs(peer.sin6_port);
      if (std::find(ports.begin(), ports.end(), port) != ports.end()) {
        sum.bytes += info.tcpi_bytes_received;
        ++sum.sockets;
      }
    }
    ::close(fd);
  }
  ::close(pidfd);
  if (ec) throw std::runtime_error("reading " + dir + ": " + ec.message());
  return sum;
}

}  // namespace ringfeed::bench
