// Helpers shared by the tests: unique namespaces, forking children, waiting on
// conditions with deadlines (never bare sleeps).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace ringfeed::test {

// A namespace no other test (or earlier run) uses.
// With a tag of the process's start time besides its pid, so that a later run whose pid
// repeats does not meet what an earlier one left (a group list in a dead-letter directory).
inline std::string unique_ns(const std::string& stem) {
  static int counter = 0;
  static const std::string tag = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::string t;
    for (auto v = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
         t.size() < 4; v /= 36) {
      t += digits[v % 36];
    }
    return t;
  }();
  return "t" + std::to_string(::getpid()) + tag + "-" + stem + "-" + std::to_string(++counter);
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

// Starts `binary` with `args` in a child process (which dies with the test process);
// stdin, stdout and stderr from/to files (empty: /dev/null).
inline pid_t spawn_program(const std::string& binary, const std::vector<std::string>& args,
                           const std::string& in = "", const std::string& out = "",
                           const std::string& err = "") {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto redirect = [](const std::string& path, int fd, int flags) {
      const int f = ::open(path.empty() ? "/dev/null" : path.c_str(), flags, 0600);
      if (f < 0) std::_Exit(120);
      ::dup2(f, fd);
      ::close(f);
    };
    redirect(in, STDIN_FILENO, O_RDONLY);
    redirect(out, STDOUT_FILENO, O_WRONLY | O_CREAT | O_TRUNC);
    redirect(err, STDERR_FILENO, O_WRONLY | O_CREAT | O_TRUNC);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    std::_Exit(127);
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
