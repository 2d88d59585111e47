// Pieces of key_shared mode (consumer_key_shared.cpp): the key hash, who owns a hash,
// and the keys a scan found blocked.
//
// Ownership: the 32-bit hash space is cut into as many equal ranges as the group has
// live consumers, in slot order; a consumer owns the range of its rank. Ranges move as
// consumers come and go, and two consumers may briefly disagree about them. That never
// puts one key on two consumers: a scan takes a message only if every earlier unacked
// message of its key is held by the scanner itself (lease_table.hpp take_one is one
// CAS, so of two scanners racing for a key's first message one wins and the other
// finds the key blocked). So only keys in flight on a moving range wait.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

namespace ringfeed::key_shared {

// FNV-1a over the key, then a 64-bit finaliser (murmur3's) so that the high bits, which
// pick the range, depend on every byte. The same in every process and build.
inline std::uint64_t key_hash(std::string_view key) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : key) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

// Messages without a key have no order to keep: they are spread over the ranges by
// their sequence and never block each other.
inline std::uint64_t keyless_hash(std::uint64_t seq) {
  return key_hash(std::string_view(reinterpret_cast<const char*>(&seq), sizeof seq));
}

struct Ranges {
  std::uint32_t rank = 0;     // this consumer's place among the live ones
  std::uint32_t members = 1;  // live consumers, this one included

  bool owns(std::uint64_t hash) const {
    return static_cast<std::uint32_t>(((hash >> 32) * members) >> 32) == rank;
  }
};

// Keys a scan must pass over: an earlier message of theirs is held by another consumer,
// waits for its redelivery delay, or waits for the dead-letter log. Open addressing,
// cleared in O(1) per scan by a stamp.
class BlockedKeys {
 public:
  static constexpr std::uint32_t kCapacity = 4096;  // a scan stops at half of it

  BlockedKeys() : hashes_(kCapacity), stamps_(kCapacity, 0) {}
  void clear() {
    if (++stamp_ == 0) {  // wrapped: old stamps could pass for current ones
      std::fill(stamps_.begin(), stamps_.end(), 0);
      stamp_ = 1;
    }
    size_ = 0;
  }
  bool full() const { return size_ >= kCapacity / 2; }
  bool contains(std::uint64_t h) const {
    for (std::uint32_t i = static_cast<std::uint32_t>(h) & (kCapacity - 1);;
         i = (i + 1) & (kCapacity - 1)) {
      if (stamps_[i] != stamp_) return false;
      if (hashes_[i] == h) return true;
    }
  }
  void insert(std::uint64_t h) {
    for (std::uint32_t i = static_cast<std::uint32_t>(h) & (kCapacity - 1);;
         i = (i + 1) & (kCapacity - 1)) {
      if (stamps_[i] != stamp_) {
        stamps_[i] = stamp_;
        hashes_[i] = h;
        ++size_;
        return;
      }
      if (hashes_[i] == h) return;
    }
  }

 private:
  std::vector<std::uint64_t> hashes_;
  std::vector<std::uint32_t> stamps_;
  std::uint32_t stamp_ = 1;
  std::uint32_t size_ = 0;
};

// A key_shared consumer's private scan state.
struct Scan {
  Ranges ranges;
  std::int64_t next_refresh_ns = 0;   // ranges are recomputed every millisecond
  std::int64_t next_liveness_ns = 0;  // dead members are looked for every 10 ms
  BlockedKeys blocked;
  // Key hashes of recent sequences, so a scan reads a record from the ring only once.
  struct Memo {
    std::uint64_t seq = ~0ull;
    std::uint64_t hash = 0;
    bool keyed = false;
  };
  std::vector<Memo> memo = std::vector<Memo>(8192);
  // Where the next scan starts (never below the group's low sequence). Every sequence
  // between the low sequence and `from` was, when a scan passed it, acked or of a hash
  // outside this consumer's range: none of them can be taken by it or keep one of its
  // keys waiting. That stays so: an acked entry stays acked until the low sequence passes
  // it, and `from` goes back to the low sequence whenever the ranges change. A scan
  // stops moving `from` at the first message of its range not acked (its own leases
  // included: they may expire, be nacked, or keep their key open to it). Without it
  // every pop would walk, from the low sequence, over the messages that the group's
  // other consumers hold or have yet to take.
  std::uint64_t from = 0;
  // Whether the last scan saw everything up to `scanned` and found nothing it may take:
  // then only newer messages (or a change by another consumer, noticed within a sleep
  // slice) can give it work, and pop may sleep.
  std::uint64_t scanned = 0;
  bool idle = false;
  // The last scan ended at the lease window (low sequence + window) short of `scanned`:
  // nothing past it can be taken before the low sequence (`low`, as that scan saw it)
  // moves, so a move is work too.
  bool window_full = false;
  std::uint64_t low = 0;

  // Whether a pop could find something (has_work), given what was published and the
  // group's low sequence now.
  bool may_find(std::uint64_t published, std::uint64_t low_now) const {
    return !idle || published > scanned || (window_full && low_now != low);
  }
};

}  // namespace ringfeed::key_shared
