#include "ringfeed/consumer_set.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shm/futex.hpp"
#include "shm/process.hpp"

namespace ringfeed {

namespace {

static_assert(ConsumerSet::kMaxSleepWords == shm::kMaxFutexWaiters);

// The longest one sleep lasts: then every consumer is looked at again (delayed
// redeliveries coming due, a failover standby's turn, a writer that died), as a single
// pop does after each of its sleep slices.
constexpr auto kSleepSlice = std::chrono::milliseconds(10);

}  // namespace

Status ConsumerSet::add(Consumer& consumer) {
  if (std::find(consumers_.begin(), consumers_.end(), &consumer) != consumers_.end()) {
    return Error{"ConsumerSet: " + describe_group(consumer.options()) + " was added already"};
  }
  consumers_.push_back(&consumer);
  return Ok{};
}

ConsumerSet::Popped ConsumerSet::returned(std::size_t i, const Batch& batch) {
  next_ = i + 1 == consumers_.size() ? 0 : i + 1;
  return {.consumer = consumers_[i], .index = i, .batch = &batch};
}

// One pop without waiting of each consumer, starting at next_. The first that says
// anything but timed_out or end_of_partition is returned; `released` is set to the first
// that said end_of_partition (or size() if none did).
ConsumerSet::Popped ConsumerSet::look(std::size_t max, std::size_t& released) {
  const std::size_t n = consumers_.size();
  released = n;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (next_ + k) % n;
    const Batch& b = consumers_[i]->pop(max, std::chrono::nanoseconds(0));
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() == PopStatus::end_of_partition) {
      if (released == n) released = i;
      continue;
    }
    return returned(i, b);
  }
  return {.consumer = nullptr, .index = n, .batch = &idle_};
}

// After a sleep slice that ran out: a consumer with nothing to take whose writer died
// without closing moves to the new fetcher, if one runs (its next look pops there), or
// is returned as closed. (A pop without waiting cannot tell: reading whether a process
// lives is too slow for every pop.)
ConsumerSet::Popped ConsumerSet::writer_gone() {
  const std::size_t n = consumers_.size();
  // The rings of a namespace share one writer (the fetcher): each is looked up once.
  std::vector<std::pair<std::uint64_t, bool>> alive;
  auto writer_lives = [&](const Consumer& c) {
    if (c.ring_.control().state.load(std::memory_order_acquire) == shm::kRingClosed) return false;
    for (const auto& [owner, lives] : alive) {
      if (owner == c.writer_) return lives;
    }
    const bool lives = shm::owner_alive(c.writer_);
    alive.emplace_back(c.writer_, lives);
    return lives;
  };
  for (std::size_t i = 0; i < n; ++i) {
    Consumer& c = *consumers_[i];
    if (c.group_ == nullptr || c.has_work() || writer_lives(c)) continue;
    if (c.options_.follow_fetcher && c.reattach_to_new_writer()) continue;
    return returned(i, c.empty_batch(PopStatus::closed));
  }
  return {.consumer = nullptr, .index = n, .batch = &idle_};
}

ConsumerSet::Popped ConsumerSet::pop(std::size_t max, std::chrono::nanoseconds wait) {
  const std::size_t n = consumers_.size();
  std::size_t released = n;
  if (n == 0 || max == 0) return {.consumer = nullptr, .index = n, .batch = &idle_};
  if (Popped p = look(max, released); p.consumer != nullptr) return p;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + wait;

  // Spin: the records each consumer wants next announce themselves in their tags.
  std::chrono::nanoseconds spin{0};
  for (const Consumer* c : consumers_) spin = std::max(spin, c->options_.spin);
  if (wait.count() > 0 && spin.count() > 0) {
    const auto spin_until = start + std::min(wait, spin);
    for (unsigned i = 1;; ++i) {
      bool work = false;
      for (const Consumer* c : consumers_) {
        if (c->group_ != nullptr && !c->standby_ && c->has_work()) work = true;
      }
      if (work) {
        if (Popped p = look(max, released); p.consumer != nullptr) return p;
      }
      if ((i & 63) == 0 && std::chrono::steady_clock::now() >= spin_until) break;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }

  // Sleep on every ring at once, counted among each group's sleepers so that the writers
  // wake it (the Dekker pair of a single pop, once per consumer: announce, then look).
  std::array<shm::FutexWaiter, kMaxSleepWords> waiters{};
  std::array<Consumer*, kMaxSleepWords> counted{};
  auto next_liveness_check = std::chrono::steady_clock::now() + kSleepSlice;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    std::chrono::nanoseconds slice =
        std::min<std::chrono::nanoseconds>(deadline - now, kSleepSlice);
    std::size_t w = 0;
    std::size_t c_count = 0;
    bool ready = false;
    for (Consumer* c : consumers_) {
      if (c->group_ == nullptr) continue;  // detached: looked at again after the slice
      if (w == kMaxSleepWords) {
        // More rings than one sleep takes: the rest are looked at every millisecond.
        slice = std::min<std::chrono::nanoseconds>(slice, std::chrono::milliseconds(1));
        break;
      }
      const auto& control = c->ring_.control();
      if (c->standby_) {
        // A failover standby naps on the ring's word until its next look at the
        // consumers before it (a single pop's standby sleep).
        waiters[w++] = {&control.wake_word, control.wake_word.load(std::memory_order_acquire)};
        slice = std::min(slice, c->standby_nap());
        continue;
      }
      waiters[w++] = {&c->group_->wake_word, c->group_->wake_word.load(std::memory_order_acquire)};
      c->group_->sleepers.fetch_add(1, std::memory_order_seq_cst);
      counted[c_count++] = c;
      if (!c->nothing_published_seq_cst() ||
          control.state.load(std::memory_order_acquire) == shm::kRingClosed) {
        ready = true;
      }
    }
    shm::WaitResult slept = shm::WaitResult::value_changed;
    if (!ready) {
      if (w > 0) {
        slept = shm::futex_wait_any({waiters.data(), w}, slice);
      } else {
        // Every consumer is detached: nothing to wait on but the slice.
        std::this_thread::sleep_for(slice);
        slept = shm::WaitResult::timed_out;
      }
    }
    for (std::size_t i = 0; i < c_count; ++i) {
      counted[i]->group_->sleepers.fetch_sub(1, std::memory_order_release);
    }
    if (Popped p = look(max, released); p.consumer != nullptr) return p;
    if (slept == shm::WaitResult::timed_out &&
        std::chrono::steady_clock::now() >= next_liveness_check) {
      next_liveness_check = std::chrono::steady_clock::now() + kSleepSlice;
      if (Popped p = writer_gone(); p.consumer != nullptr) return p;
    }
  }
  if (released != n) {
    // Nothing anywhere, and a ring is released: say so (the batch of its last pop).
    return returned(released, consumers_[released]->batch_);
  }
  return {.consumer = nullptr, .index = n, .batch = &idle_};
}

}  // namespace ringfeed
