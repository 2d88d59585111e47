// A text in shared memory that one writer changes now and then and other processes read
// whole or not at all: a sequence lock over words.
//
//   offset 0   seq (u32): odd while the writer changes the words, even otherwise
//   offset 4   4 bytes of padding
//   offset 8   N bytes of text in N/8 64-bit words, NUL-padded (N itself: no NUL)
//
// Writer (one process): seq = s+1 (relaxed); words (release stores: each is ordered
// after the odd seq); seq = s+2 (release: after the words). Readers: s1 = seq (acquire);
// words (acquire loads); s2 = seq (relaxed, ordered after those loads); the copy is
// whole if s1 == s2 and s1 is even: a word of a later store carries that store's odd seq
// with it, so s2 differs. No standalone fences (ThreadSanitizer does not model them).
// Every access is atomic, so a reader racing the writer gets a torn copy it throws away,
// never undefined behaviour. The bytes come from another process: readers bound them by N and print
// them as untrusted text.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>

namespace ringfeed::shm {

template <std::size_t N>
struct SeqText {
  static_assert(N % 8 == 0 && N > 0);
  static constexpr std::size_t kWords = N / 8;

  std::atomic<std::uint32_t> seq;
  std::uint32_t pad;
  std::atomic<std::uint64_t> words[kWords];

  // The writer's: replaces the text (cut to N bytes).
  void store(std::string_view text) {
    const std::uint32_t s = seq.load(std::memory_order_relaxed);
    seq.store(s + 1, std::memory_order_relaxed);
    for (std::size_t w = 0; w < kWords; ++w) {
      char bytes[8] = {};
      if (w * 8 < text.size()) {
        std::memcpy(bytes, text.data() + w * 8, std::min<std::size_t>(8, text.size() - w * 8));
      }
      std::uint64_t v = 0;
      std::memcpy(&v, bytes, 8);
      words[w].store(v, std::memory_order_release);
    }
    seq.store(s + 2, std::memory_order_release);
  }

  // A whole copy, or nothing if the writer was changing it at each of `attempts` tries
  // (the later ones a scheduler yield apart, so that a writer preempted mid-store can go
  // on), or died mid-store.
  std::optional<std::string> load(int attempts = 64) const {
    for (int i = 0; i < attempts; ++i) {
      if (i >= 8) std::this_thread::yield();
      const std::uint32_t s1 = seq.load(std::memory_order_acquire);
      if ((s1 & 1u) != 0) continue;
      char bytes[N];
      for (std::size_t w = 0; w < kWords; ++w) {
        const std::uint64_t v = words[w].load(std::memory_order_acquire);
        std::memcpy(bytes + w * 8, &v, 8);
      }
      if (seq.load(std::memory_order_relaxed) != s1) continue;
      return std::string(bytes, ::strnlen(bytes, N));
    }
    return std::nullopt;
  }
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<SeqText<256>>);
static_assert(sizeof(SeqText<256>) == 8 + 256);
static_assert(alignof(SeqText<256>) == 8);
static_assert(offsetof(SeqText<256>, words) == 8);

}  // namespace ringfeed::shm
