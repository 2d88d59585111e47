#include "fetcher_child.hpp"

#include <signal.h>
#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "ringfeed_steps.hpp"

namespace ringfeed::bench {

namespace {

static_assert(std::atomic<std::atomic<bool>*>::is_always_lock_free, "read from a signal handler");
static_assert(std::atomic<Fetcher*>::is_always_lock_free, "read from a signal handler");
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

// The fetcher child's stop flag and fetcher, for its SIGTERM handler.
std::atomic<std::atomic<bool>*> g_stop{nullptr};
std::atomic<Fetcher*> g_fetcher{nullptr};

extern "C" void on_stop_signal(int /*signal*/) {
  if (std::atomic<bool>* stop = g_stop.load(std::memory_order_acquire)) {
    stop->store(true, std::memory_order_release);
  }
  // Fetcher::wake is async-signal-safe; before the fetcher exists run() sees the flag.
  if (Fetcher* f = g_fetcher.load(std::memory_order_acquire)) f->wake();
}

}  // namespace

std::string log_path(const std::string& dir, std::uint32_t partition) {
  return dir + "/" + std::to_string(partition) + ".log";
}

int fetcher_process(Rendezvous& rv, FetcherControl& ctl, const FetcherOptions& options) {
  g_stop.store(&ctl.stop, std::memory_order_release);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);

  ctl.start_ns.store(now_ns(), std::memory_order_release);
  auto f = Fetcher::start(options);
  if (!f) {
    rv.fail("Fetcher::start: " + f.error().message);
    return 1;
  }
  g_fetcher.store(f->get(), std::memory_order_release);
  ctl.started_ns.store(now_ns(), std::memory_order_release);
  const int rc = run_fetcher(rv, **f, ctl.stop, ctl.fetched);
  // The handler must not wake a fetcher that is being destroyed.
  g_fetcher.store(nullptr, std::memory_order_release);
  return rc;
}

std::unique_ptr<Consumer> attach_when_ready(Rendezvous& rv, const ConsumerOptions& options) {
  const std::int64_t deadline = now_ns() + 10'000'000'000;
  for (;;) {
    auto c = Consumer::attach(options);
    if (c) return std::move(c.value());
    if (rv.failed.load(std::memory_order_acquire) != 0) return nullptr;
    if (now_ns() > deadline) {
      rv.fail("attaching to partition " + std::to_string(options.partition) +
              " for 10 s: " + c.error().message);
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

WorkDir::WorkDir(const std::string& given, const std::string& stem) {
  if (!given.empty()) {
    path_ = given;
    std::error_code ec;
    std::filesystem::create_directories(path_, ec);
    if (ec) throw std::runtime_error("cannot create " + path_ + ": " + ec.message());
    for (const auto& e : std::filesystem::directory_iterator(path_)) {
      const std::string name = e.path().filename().string();
      if (name.ends_with(".log") || name.ends_with(".checkpoint")) {
        throw std::runtime_error(path_ + " already holds " + name +
                                 ": give an empty or new directory");
      }
    }
    return;
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + stem + "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
  }
  path_ = templ;
  ours_ = true;
}

WorkDir::~WorkDir() {
  std::error_code ec;
  if (ours_) std::filesystem::remove_all(path_, ec);
}

}  // namespace ringfeed::bench
