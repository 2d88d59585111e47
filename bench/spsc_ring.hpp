// The throughput ceiling: a bare single-producer single-consumer ring of 64-byte slots
// in a shared mapping, after Rigtorp's SPSCQueue. Each side keeps a private copy of the
// other's index and reloads it only when that copy says full (or empty); each publishes
// its own index once per batch, not once per slot. No validation, no groups, no wake-up:
// what moving 64-byte messages between two cores costs and nothing else.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "harness.hpp"

namespace ringfeed::bench {

struct SpscSlot {
  std::byte bytes[64];
};
static_assert(sizeof(SpscSlot) == kLine);

struct SpscControl {
  // Slots below this are filled. Producer: release store after a batch.
  // Consumer: acquire load when its copy says empty (pairs with that release).
  alignas(kLine) std::atomic<std::uint64_t> write_idx;
  // Slots below this are free again. Consumer: release store after a batch.
  // Producer: acquire load when its copy says full (pairs with that release).
  alignas(kLine) std::atomic<std::uint64_t> read_idx;
};
static_assert(std::is_standard_layout_v<SpscControl>);
static_assert(sizeof(SpscControl) == 2 * kLine);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Each process uses its own copy of this object (the indices it caches are private);
// only the control block and the slots are shared.
class SpscRing {
 public:
  static std::size_t bytes_for(std::uint64_t slots) {
    return sizeof(SpscControl) + slots * sizeof(SpscSlot);
  }
  // `memory` holds bytes_for(slots) zeroed bytes; `slots` is a power of two.
  SpscRing(void* memory, std::uint64_t slots)
      : control_(static_cast<SpscControl*>(memory)),
        slots_(reinterpret_cast<SpscSlot*>(static_cast<std::byte*>(memory) + sizeof(SpscControl))),
        capacity_(slots),
        mask_(slots - 1) {}

  std::uint64_t capacity() const { return capacity_; }

  // Producer: waits until n more slots are free.
  void wait_room(std::uint64_t n) {
    while (write_ + n - read_cache_ > capacity_) {
      read_cache_ = control_->read_idx.load(std::memory_order_acquire);
      if (write_ + n - read_cache_ > capacity_) cpu_relax();
    }
  }
  std::byte* producer_slot(std::uint64_t k) { return slots_[(write_ + k) & mask_].bytes; }
  void publish(std::uint64_t n) {
    write_ += n;
    control_->write_idx.store(write_, std::memory_order_release);
  }

  // Consumer: how many filled slots (at most max) can be read now; 0 if none.
  std::uint64_t available(std::uint64_t max) {
    if (read_ == write_cache_) write_cache_ = control_->write_idx.load(std::memory_order_acquire);
    const std::uint64_t n = write_cache_ - read_;
    return n < max ? n : max;
  }
  const std::byte* consumer_slot(std::uint64_t k) const {
    return slots_[(read_ + k) & mask_].bytes;
  }
  void release(std::uint64_t n) {
    read_ += n;
    control_->read_idx.store(read_, std::memory_order_release);
  }

 private:
  SpscControl* control_;
  SpscSlot* slots_;
  std::uint64_t capacity_;
  std::uint64_t mask_;
  std::uint64_t write_ = 0;        // producer's own index
  std::uint64_t read_cache_ = 0;   // producer's copy of read_idx
  std::uint64_t read_ = 0;         // consumer's own index
  std::uint64_t write_cache_ = 0;  // consumer's copy of write_idx
};

}  // namespace ringfeed::bench
