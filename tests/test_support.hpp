// Helpers shared by the tests: unique namespaces, forking children, waiting on
// conditions with deadlines (never bare sleeps).
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>
#include <thread>

namespace ringfeed::test {

// A namespace no other test (or earlier run) uses.
inline std::string unique_ns(const std::string& stem) {
  static int counter = 0;
  return "t" + std::to_string(::getpid()) + "-" + stem + "-" + std::to_string(++counter);
}

// Polls `cond` until it holds or `timeout` passes. Returns whether it held.
inline bool wait_until(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// Runs `body` in a child process; the child exits with body's return value (0 = ok).
// Exceptions and gtest failures in a child are reported through its exit status.
inline pid_t fork_child(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 1;
    try {
      rc = body();
    } catch (...) {
      rc = 99;
    }
    std::_Exit(rc);
  }
  return pid;
}

// Waits for a child for at most `timeout`; kills it if it overstays. Returns its exit
// status, or -1 if it had to be killed or died by a signal.
inline int wait_child(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A fresh directory under the system's temporary directory, removed with everything in
// it when the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& stem = "ringfeed-test") {
    std::string templ = (std::filesystem::temp_directory_path() / (stem + "-XXXXXX")).string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // The local log of partition p (file:DIR), and the source URI of the directory.
  std::string log(std::uint32_t p) const { return file(std::to_string(p) + ".log"); }
  std::string uri() const { return "file:" + path_; }

 private:
  std::string path_;
};

}  // namespace ringfeed::test
