// shm::SeqText, the warnings of the fetcher's segment: what is stored is read back whole,
// cut to its size; a reader racing the writer never sees a mix of two texts; bytes left
// there by anyone else are read as text, never past the field.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "shm/seq_text.hpp"

namespace {

using ringfeed::shm::SeqText;

TEST(SeqText, WhatIsStoredIsReadBackCutToItsSize) {
  SeqText<16> t{};
  EXPECT_EQ(t.load(), std::optional<std::string>(""));
  t.store("held back");
  EXPECT_EQ(t.load(), std::optional<std::string>("held back"));
  t.store("0123456789abcdefTAIL");
  EXPECT_EQ(t.load(), std::optional<std::string>("0123456789abcdef"));
  t.store("");
  EXPECT_EQ(t.load(), std::optional<std::string>(""));
  EXPECT_EQ(t.seq.load() % 2, 0u);
}

TEST(SeqText, AReaderRacingTheWriterGetsOneTextWholeNeverAMix) {
  SeqText<64> t{};
  const std::string a(64, 'a');
  const std::string b(40, 'b');
  t.store(a);
  std::atomic<bool> stop{false};
  std::atomic<int> stores{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      t.store(i % 2 == 0 ? b : a);
      stores.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();  // gaps between the stores, so that readers also get through
    }
  });
  while (stores.load(std::memory_order_relaxed) < 100) std::this_thread::yield();
  // One try per read, so that many reads meet the writer; at least 200 000 reads, 1000
  // whole copies (a sanitizer build gets few) and 10 000 stores meanwhile, or 10 s. The
  // reader yields now and then, in case both threads share a cpu.
  int whole = 0;
  int given_up = 0;
  const int stores_before = stores.load();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; (i < 200'000 || whole < 1000 || stores.load() - stores_before < 10'000) &&
                  std::chrono::steady_clock::now() < deadline;
       ++i) {
    if (i % 64 == 0) std::this_thread::yield();
    const std::optional<std::string> got = t.load(1);
    if (!got) {
      ++given_up;
      continue;
    }
    ++whole;
    ASSERT_TRUE(*got == a || *got == b) << "a mix of two texts: " << *got;
  }
  stop = true;
  writer.join();
  EXPECT_GE(whole, 1000);
  EXPECT_GE(stores.load() - stores_before, 10'000);
  std::printf("%d whole copies, %d reads that met the writer, %d stores\n", whole, given_up,
              stores.load());
}

TEST(SeqText, AWriterThatDiedMidStoreLeavesAnOddSequenceAndReadersGiveUp) {
  SeqText<16> t{};
  t.store("before");
  t.seq.store(t.seq.load() + 1);  // as left by a writer killed between its two stores
  EXPECT_EQ(t.load(8), std::nullopt);
}

TEST(SeqText, BytesWithoutANulAreReadOnlyUpToTheFieldsEnd) {
  SeqText<16> t{};
  for (auto& w : t.words) w.store(0x4141414141414141ull);  // "AAAAAAAA", no NUL anywhere
  EXPECT_EQ(t.load(), std::optional<std::string>(std::string(16, 'A')));
}

}  // namespace
