// Multi-process tests of the partition ring: one writer process, consumers forked into
// other processes, millions of messages of mixed sizes (1 byte to 64 KiB). Every
// consumer must see every message exactly once and in order.
#include <gtest/gtest.h>
#include <poll.h>

#include <memory>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "test_support.hpp"
#include "workload.hpp"

using namespace std::chrono_literals;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::PopStatus;
using ringfeed::Writer;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::uint64_t kMessages = 2'000'000;  // sanitizers make every byte slower
#else
constexpr std::uint64_t kMessages = 10'000'000;
#endif

// Consumer body, run in a child process: attach, tell the parent, take everything.
int consume_all(const std::string& ns, const std::string& group, Mode mode, int ready_fd,
                std::uint64_t count, std::size_t batch) {
  auto c = Consumer::attach({.ns = ns, .partition = 0, .group = group, .mode = mode});
  if (!c) {
    std::fprintf(stderr, "attach: %s\n", c.error().message.c_str());
    return 2;
  }
  const char one = 1;
  if (::write(ready_fd, &one, 1) != 1) return 3;
  auto checker = std::make_unique<ringfeed::test::Checker>();
  std::uint64_t next = 0;
  while (next < count) {
    const auto& b = (*c)->pop(batch, 5s);
    if (b.status() != PopStatus::ok) {
      std::fprintf(stderr, "%s: pop after %llu messages: %s\n", group.c_str(),
                   static_cast<unsigned long long>(next), ringfeed::to_string(b.status()));
      return 4;
    }
    for (const auto& m : b) {
      if (m.offset() != next) {
        std::fprintf(stderr, "%s: got offset %llu, expected %llu\n", group.c_str(),
                     static_cast<unsigned long long>(m.offset()),
                     static_cast<unsigned long long>(next));
        return 5;
      }
      if (auto err = checker->check(next, m.key(), m.value()); !err.empty()) {
        std::fprintf(stderr, "%s: %s\n", group.c_str(), err.c_str());
        return 6;
      }
      ++next;
    }
    if ((*c)->ack(b) != ringfeed::AckStatus::ok) return 7;
  }
  // Nothing more may arrive: exactly once.
  const auto& extra = (*c)->pop(16, 50ms);
  if (extra.status() == PopStatus::ok) {
    std::fprintf(stderr, "%s: %zu messages beyond the last\n", group.c_str(), extra.size());
    return 8;
  }
  return 0;
}

void publish_workload(Writer& w, std::uint64_t count) {
  std::vector<char> key(16);
  for (std::uint64_t i = 0; i < count;) {
    // Batches of up to 32 records, committed together.
    for (int k = 0; k < 32 && i < count; ++k, ++i) {
      const std::uint32_t ks = ringfeed::test::key_size(i);
      const std::uint32_t vs = ringfeed::test::value_size(i);
      ringfeed::Reservation r;
      const auto st = w.reserve(ks, vs, i, static_cast<std::int64_t>(i), r, 30s);
      ASSERT_EQ(st, ringfeed::PublishStatus::ok) << "at message " << i;
      ringfeed::test::fill_key(i, reinterpret_cast<char*>(r.key), ks);
      ringfeed::test::fill_value(i, reinterpret_cast<char*>(r.value), vs);
    }
    w.commit();
  }
}

// Waits until `n` children wrote their ready byte to the pipe.
bool wait_ready(int fd, int n) {
  for (int got = 0; got < n;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) return false;
    char buf[16];
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r <= 0) return false;
    got += static_cast<int>(r);
  }
  return true;
}

struct Fleet {
  std::string ns = ringfeed::test::unique_ns("mp");
  std::unique_ptr<Writer> writer;
  int pipe_fds[2] = {-1, -1};
  std::vector<pid_t> children;
  Fleet() {
    auto w = Writer::create({.ns = ns, .partition = 0, .capacity = 8u << 20});
    if (w) writer = std::move(w.value());
    if (::pipe(pipe_fds) != 0) pipe_fds[0] = pipe_fds[1] = -1;
  }
  ~Fleet() {
    for (pid_t p : children) ringfeed::test::wait_child(p, 1ms);  // kill stragglers
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
  }
};

TEST(MultiProcess, ExclusiveConsumerSeesEveryMessageOnceInOrder) {
  Fleet f;
  ASSERT_TRUE(f.writer);
  f.children.push_back(ringfeed::test::fork_child(
      [&] { return consume_all(f.ns, "excl", Mode::exclusive, f.pipe_fds[1], kMessages, 64); }));
  ASSERT_TRUE(wait_ready(f.pipe_fds[0], 1)) << "consumer did not attach";
  publish_workload(*f.writer, kMessages);
  EXPECT_EQ(f.writer->published(), kMessages);
  EXPECT_EQ(ringfeed::test::wait_child(f.children[0], 300s), 0);
  f.children.clear();
}

TEST(MultiProcess, ThreeBroadcastConsumersEachSeeEveryMessageOnceInOrder) {
  Fleet f;
  ASSERT_TRUE(f.writer);
  const std::size_t batches[] = {1, 16, 256};  // different paces, so cursors differ
  for (std::size_t batch : batches) {
    f.children.push_back(ringfeed::test::fork_child([&, batch] {
      return consume_all(f.ns, "bcast", Mode::broadcast, f.pipe_fds[1], kMessages, batch);
    }));
  }
  ASSERT_TRUE(wait_ready(f.pipe_fds[0], 3)) << "consumers did not attach";
  publish_workload(*f.writer, kMessages);
  for (pid_t p : f.children) EXPECT_EQ(ringfeed::test::wait_child(p, 300s), 0);
  f.children.clear();
}

TEST(MultiProcess, ExclusiveAndBroadcastGroupsSideBySide) {
  Fleet f;
  ASSERT_TRUE(f.writer);
  const std::uint64_t n = kMessages / 10;
  f.children.push_back(ringfeed::test::fork_child(
      [&] { return consume_all(f.ns, "excl", Mode::exclusive, f.pipe_fds[1], n, 64); }));
  for (int k = 0; k < 2; ++k) {
    f.children.push_back(ringfeed::test::fork_child(
        [&] { return consume_all(f.ns, "bcast", Mode::broadcast, f.pipe_fds[1], n, 32); }));
  }
  ASSERT_TRUE(wait_ready(f.pipe_fds[0], 3));
  publish_workload(*f.writer, n);
  for (pid_t p : f.children) EXPECT_EQ(ringfeed::test::wait_child(p, 300s), 0);
  f.children.clear();
}

}  // namespace
