#include "ringfeed_steps.hpp"

#include <unistd.h>

#include <array>
#include <thread>
#include <vector>

#include "shm/names.hpp"

namespace ringfeed::bench {

std::string run_namespace(const char* stem, std::uint64_t run) {
  return std::string(stem) + std::to_string(::getpid()) + "r" + std::to_string(run);
}

std::unique_ptr<Writer> create_ring(Rendezvous& rv, const std::string& ns, std::uint32_t partition,
                                    std::uint64_t capacity) {
  auto w = Writer::create({.ns = ns, .partition = partition, .capacity = capacity});
  if (!w) {
    rv.fail("creating the ring: " + w.error().message);
    return nullptr;
  }
  watch_segment(w.value()->segment_name());
  watch_segment(shm::group_segment_name(ns, partition, kGroup));
  return std::move(w.value());
}

bool wait_for_group(Rendezvous& rv, Writer& w) {
  // The group segment exists (the reader attached), so its inotify event is queued.
  const std::int64_t deadline = now_ns() + 5'000'000'000;
  for (;;) {
    w.poll_groups();
    if (w.group_count() >= 1) return true;
    if (now_ns() > deadline) {
      rv.fail("the writer of " + w.segment_name() + " did not see the reader's group in 5 s");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

std::unique_ptr<Consumer> attach_reader(Rendezvous& rv, const std::string& ns,
                                        std::uint32_t partition, std::chrono::nanoseconds spin,
                                        Mode mode) {
  auto c = Consumer::attach(
      {.ns = ns, .partition = partition, .group = kGroup, .mode = mode, .spin = spin});
  if (!c) {
    rv.fail("attaching the reader: " + c.error().message);
    return nullptr;
  }
  return std::move(c.value());
}

std::uint64_t lap_messages(std::uint64_t capacity) {
  return capacity / shm::record_size(0, kValueBytes) + 1;
}

bool publish_lap(Rendezvous& rv, Writer& w) {
  std::array<char, kValueBytes> value{};
  std::vector<OutMessage> batch(64, OutMessage{.value = {value.data(), value.size()}});
  const std::uint64_t total = lap_messages(w.capacity());
  for (std::uint64_t sent = 0; sent < total;) {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(64, total - sent));
    PublishStatus st = PublishStatus::ok;
    const std::size_t n = w.publish({batch.data(), k}, std::chrono::seconds(10), &st);
    if (n == 0) {
      rv.fail("publishing the warm-up lap on " + w.segment_name() +
              (st == PublishStatus::full ? ": ring stayed full for 10 s" : ": record too large"));
      return false;
    }
    sent += n;
  }
  return true;
}

int run_fetcher(Rendezvous& rv, Fetcher& f, const std::atomic<bool>& stop,
                std::atomic<std::uint64_t>& fetched) {
  const Status done = f.run(stop);
  std::uint64_t messages = 0;
  for (const PartitionStats& s : f.stats()) {
    messages += s.messages;
    if (s.stopped) {
      rv.fail("the fetcher stopped partition " + std::to_string(s.partition) + ": " + s.error);
    }
  }
  fetched.store(messages, std::memory_order_release);
  if (!done) {
    rv.fail("Fetcher::run: " + done.error().message);
    return 1;
  }
  return 0;
}

}  // namespace ringfeed::bench
