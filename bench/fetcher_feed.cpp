#include "fetcher_feed.hpp"

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "ringfeed_steps.hpp"
#include "shm/segment.hpp"

namespace ringfeed::bench {

FetcherFeed::FetcherFeed(Rendezvous& rv, Options options)
    : rv_(rv), o_(std::move(options)), dir_("", "ringfeed-bench-latency"), kids_(rv) {
  watch_directory(dir_.path());
}

FetcherFeed::~FetcherFeed() {
  unwatch_child();
  kids_.kill_all();
  remove_namespace(o_.ns);
  unwatch_directory();
}

bool FetcherFeed::start() {
  // The logs exist before the fetcher opens its source.
  for (std::uint32_t p = 0; p < o_.partitions; ++p) {
    auto log = io::LogAppender::open(log_path(dir(), p));
    if (!log) {
      rv_.fail(log.error().message);
      return false;
    }
  }
  watch_fetcher_segments(o_.ns, o_.partitions);
  const FetcherOptions options{.ns = o_.ns,
                               .source = "file:" + dir(),
                               .partitions = o_.partitions,
                               .ring_bytes = o_.ring_bytes};
  pid_ = kids_.spawn("fetcher", o_.cpu, [&] { return fetcher_process(rv_, *ctl_, options); });
  if (pid_ <= 0) return false;
  watch_child(pid_, "fetcher");
  return wait_until(rv_, kids_, 60, "the fetcher to create its rings",
                    [&] { return ctl_->started_ns.load(std::memory_order_acquire) != 0; });
}

bool FetcherFeed::alive() {
  if (kids_.check()) return true;
  unwatch_child();  // reaped
  return false;
}

bool FetcherFeed::stop() {
  unwatch_child();  // it is reaped below
  if (!kids_.terminate(pid_, 30)) return false;
  const std::vector<std::string> left = shm::Segment::list("ringfeed." + o_.ns + ".");
  if (!left.empty()) {
    rv_.fail("the fetcher exited but left " + std::to_string(left.size()) + " segment(s) of " +
             o_.ns + ", " + left.front() + " first");
    return false;
  }
  return true;
}

bool append_lap(Rendezvous& rv, io::LogAppender& log, std::uint64_t ring_bytes) {
  constexpr std::size_t kBatch = 1024;
  const std::array<char, kValueBytes> value{};
  const std::vector<io::RecordView> batch(
      kBatch, io::RecordView{.timestamp_ns = realtime_ns(), .value = {value.data(), value.size()}});
  const std::uint64_t total = lap_messages(ring_bytes);
  for (std::uint64_t sent = 0; sent < total;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, total - sent));
    auto done = log.append({batch.data(), k});
    if (!done) {
      rv.fail("appending the warm-up lap to " + log.path() + ": " + done.error().message);
      return false;
    }
    sent += k;
  }
  return true;
}

}  // namespace ringfeed::bench
