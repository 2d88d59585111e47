// ringfeed-bench-micro: what publish and pop + ack cost per message, in one process
// (no cache-line transfers between cores; those are what ringfeed-bench measures).
// Each benchmark gets its own ring with an exclusive group attached before anything is
// published, and one lap published and acked first so its pages are faulted in. Two
// ring sizes: 64 MiB (the default; every record is a cache miss, so memory traffic is
// part of the figure) and 1 MiB (fits in cache: the software cost alone).
// A full ring is never overwritten: publish reports full, and the loop pops and acks
// (outside the timed part) to make room.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"

namespace {

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::OutMessage;
using ringfeed::PublishStatus;
using ringfeed::Writer;

constexpr std::size_t kValueBytes = 64;

std::string unique_ns() {
  static int counter = 0;
  return "micro" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

struct Ring {
  std::unique_ptr<Writer> writer;  // declared first: destroyed last, it removes the segments
  std::unique_ptr<Consumer> consumer;
  std::array<char, kValueBytes> value{};
  std::vector<OutMessage> batch;
  std::string error;

  Ring(std::size_t batch_size, std::uint64_t ring_bytes)
      : batch(batch_size, OutMessage{.value = {value.data(), value.size()}}) {
    const std::string ns = unique_ns();
    auto w = Writer::create({.ns = ns, .partition = 0, .capacity = ring_bytes});
    if (!w) {
      error = w.error().message;
      return;
    }
    writer = std::move(w.value());
    auto c = Consumer::attach(
        {.ns = ns, .partition = 0, .group = "micro", .mode = ringfeed::Mode::exclusive});
    if (!c) {
      error = c.error().message;
      return;
    }
    consumer = std::move(c.value());
    writer->poll_groups();  // the writer now honours the group's watermark
    fill();
    drain();
  }

  // Publishes until the writer reports the ring full.
  void fill() {
    while (writer->publish(batch, 0ns) == batch.size()) {
    }
  }
  // Pops and acks everything published.
  void drain() {
    for (;;) {
      const ringfeed::Batch& b = consumer->try_pop(4096);
      if (b.empty()) return;
      consumer->ack(b);
    }
  }
};

void BM_Publish(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  Ring ring(batch, static_cast<std::uint64_t>(state.range(1)) << 20);
  if (!ring.error.empty()) {
    state.SkipWithError(ring.error.c_str());
    return;
  }
  std::uint64_t published = 0;
  for (auto _ : state) {
    const std::size_t n = ring.writer->publish(ring.batch, 0ns);
    published += n;
    if (n < batch) {
      state.PauseTiming();
      ring.drain();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(published));
}

void BM_PopAck(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  Ring ring(64, static_cast<std::uint64_t>(state.range(1)) << 20);
  if (!ring.error.empty()) {
    state.SkipWithError(ring.error.c_str());
    return;
  }
  std::uint64_t popped = 0;
  for (auto _ : state) {
    const ringfeed::Batch* b = &ring.consumer->try_pop(batch);
    if (b->empty()) {
      state.PauseTiming();
      ring.fill();
      state.ResumeTiming();
      b = &ring.consumer->try_pop(batch);
    }
    benchmark::DoNotOptimize(b->messages().data());
    popped += b->size();
    ring.consumer->ack(*b);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(popped));
}

BENCHMARK(BM_Publish)->ArgNames({"batch", "ring_mb"})->ArgsProduct({{1, 64}, {64, 1}});
BENCHMARK(BM_PopAck)->ArgNames({"batch", "ring_mb"})->ArgsProduct({{1, 64}, {64, 1}});

}  // namespace

BENCHMARK_MAIN();
