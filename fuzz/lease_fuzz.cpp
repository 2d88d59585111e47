// libFuzzer target for a hostile consumer (invariant 3): it writes arbitrary values into
// its shared group's segment (lease words, dispatch, low sequence, watermark, slots,
// settings, any 64-bit word of it) between the writer's reaper passes and the pops, acks,
// nacks, releases, rejects and extends of two good consumers of the same group. The
// writer, its reaper and the consumers must never crash, read out of bounds or loop
// forever (ASan, UBSan, libFuzzer's -timeout); the writer must never ask to be serviced
// in the past (a fetcher would spin); and a second group on the ring, exclusive and well
// behaved, must get every message published, once, in order, and never be fenced.
//
// Input: a header byte, then operations until the input ends.
//   header    bits 0-1 the group's mode (shared, key_shared, failover; 3: shared),
//             bits 2-4 its lease window (2^k entries), bits 5-6 max_deliveries - 1
//   op byte   low 4 bits the operation, high 4 bits its argument A:
//     0  publish A + 1 messages (as many as fit)
//     1  consumer A & 1 pops up to A / 2 + 1 messages, keeping them
//     2  ack       \
//     3  nack      |  message (next byte) of those consumer A & 1 holds; nack after
//     4  release   |  A * 10 ms, extend by A * 10 ms
//     5  reject    |
//     6  extend    /
//     7  hostile write: next byte T, then the value (see hostile_write)
//     8  the writer's service pass (reaper, dead letters, low watermarks)
//     9  the writer's reclaim (A & 1: also reaps dead broadcast consumers)
//     10 the clock moves (next byte + 1) * (A + 1) ms
//     11 consumer A & 1 detaches and attaches again (which may be refused)
//     12 the writer says when it next has work: never before now
//     13 the good group pops and acks what there is
// The clock is this process's own (consumers' clock option, service(now)).
#include <time.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringfeed/consumer.hpp"
#include "ringfeed/writer.hpp"
#include "shm/group_layout.hpp"
#include "shm/lease.hpp"
#include "shm/lease_table.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "shm_fuzz_support.hpp"

const char* const ringfeed::fuzz::kTargetName = "lease_fuzz";
const char* const ringfeed::fuzz::kNamespaceStem = "lease";

namespace {

namespace shm = ringfeed::shm;
using ringfeed::Consumer;
using ringfeed::Mode;
using ringfeed::fuzz::check_not_fenced;
using ringfeed::fuzz::consumer_options;
using ringfeed::fuzz::fail;
using ringfeed::fuzz::ns;
using ringfeed::fuzz::remove_all;
using ringfeed::fuzz::touch;

// CLOCK_MONOTONIC as the consumers and the writer see it here: starts at an arbitrary
// point, moved only by the input.
std::int64_t g_now_ns = 0;

// The input, read front to back; zeros once it is used up.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}
  bool done() const { return p_ == end_; }
  std::uint8_t byte() { return p_ == end_ ? 0 : *p_++; }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{byte()} << (8 * i);
    return v;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

struct Worker {
  std::unique_ptr<Consumer> consumer;
  std::vector<ringfeed::Message> held;
};

ringfeed::ConsumerOptions options(const std::string& group, Mode mode, std::uint32_t window,
                                  std::uint32_t max_deliveries) {
  ringfeed::ConsumerOptions o = consumer_options(group, mode);
  o.max_unacked = 64;
  o.clock = [] { return g_now_ns; };
  o.group_settings.lease_window = window;
  o.group_settings.max_deliveries = max_deliveries;
  o.group_settings.lease_ms = 100;
  return o;
}

class Run {
 public:
  Run(Mode mode, std::uint32_t window, std::uint32_t max_deliveries)
      : mode_(mode), window_(window), max_deliveries_(max_deliveries) {
    auto w = ringfeed::Writer::create({.ns = ns(), .partition = 0, .capacity = 4096});
    if (!w) fail("cannot create the ring: " + w.error().message);
    writer_ = std::move(w.value());
    auto good = Consumer::attach(options("good", Mode::exclusive, 0, 0));
    if (!good) fail("cannot attach the good group: " + good.error().message);
    good_ = std::move(good.value());
    for (Worker& worker : workers_) reattach(worker);
    if (!workers_[0].consumer) fail("cannot attach to the shared group");
    auto seg = shm::Segment::open(shm::group_segment_name(ns(), 0, "h"), shm::Access::read_write);
    if (!seg) fail("cannot map the group: " + seg.error().message);
    hostile_ = std::move(seg.value());
    writer_->service(g_now_ns);
  }

  void step(Input& in) {
    const std::uint8_t op = in.byte();
    const unsigned a = op >> 4;
    switch (op & 15u) {
      case 0:
        publish(a + 1);
        break;
      case 1: {
        Worker& w = workers_[a & 1];
        if (!w.consumer) break;
        const ringfeed::Batch& batch = w.consumer->try_pop(a / 2 + 1);
        for (const ringfeed::Message& m : batch) {
          touch(m);
          if (w.held.size() < 256) w.held.push_back(m);
        }
        break;
      }
      case 2:
      case 3:
      case 4:
      case 5:
      case 6:
        settle(op & 15u, workers_[a & 1], in.byte(), std::chrono::milliseconds(10 * a));
        break;
      case 7:
        hostile_write(in);
        break;
      case 8:
        writer_->service(g_now_ns);
        break;
      case 9:
        writer_->reclaim((a & 1) != 0);
        break;
      case 10:
        g_now_ns += std::int64_t{in.byte() + 1} * (a + 1) * 1'000'000;
        break;
      case 11:
        reattach(workers_[a & 1]);
        break;
      case 12: {
        const std::int64_t next = writer_->next_service_ns(g_now_ns);
        if (next < g_now_ns) {
          fail("the writer asks to be serviced " + std::to_string(g_now_ns - next) +
               " ns in the past");
        }
        break;
      }
      case 13:
        drain_good();
        break;
      default:
        break;
    }
  }

  // Everything published reaches the good group, in order, once; it is never fenced.
  void finish() {
    for (Worker& w : workers_) {
      w.held.clear();
      w.consumer.reset();
    }
    writer_->service(g_now_ns);
    drain_good();
    if (good_next_ != published_) {
      fail("the good group got " + std::to_string(good_next_) + " of " +
           std::to_string(published_) + " messages");
    }
    check_not_fenced(*writer_, "good");
  }

 private:
  void publish(unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
      const std::string key = "k" + std::to_string(published_ % 3);
      const std::string value = "message " + std::to_string(published_);
      const ringfeed::OutMessage m{.key = key, .value = value, .upstream_offset = published_};
      if (writer_->publish({&m, 1}, std::chrono::nanoseconds(0)) != 1) return;  // full
      ++published_;
    }
  }

  void reattach(Worker& w) {
    w.held.clear();
    w.consumer.reset();
    auto c = Consumer::attach(options("h", mode_, window_, max_deliveries_));
    if (c) {
      w.consumer = std::move(c.value());
    } else if (c.error().message.empty()) {
      fail("an attach was refused without a reason");
    }
  }

  void settle(unsigned op, Worker& w, std::uint8_t index, std::chrono::milliseconds ms) {
    if (!w.consumer || w.held.empty()) return;
    const std::size_t i = index % w.held.size();
    const ringfeed::Message m = w.held[i];
    Consumer& c = *w.consumer;
    ringfeed::AckStatus st = ringfeed::AckStatus::ok;
    switch (op) {
      case 2:
        st = c.ack(m);
        break;
      case 3:
        st = c.nack(m, ms);
        break;
      case 4:
        st = c.release(m);
        break;
      case 5:
        st = c.reject(m);
        break;
      default:
        st = c.extend(m, ms);
        return;  // the handle stays valid
    }
    static_cast<void>(st);  // any answer is fine: the group may have been damaged
    w.held.erase(w.held.begin() + static_cast<std::ptrdiff_t>(i));
  }

  // Byte T: odd, the lease word (T >> 1) modulo the window; even, a 64-bit word of the
  // rest of the segment, (T >> 1) * 256 + the next byte. Then a byte V picks the value:
  // V & 3 = 0 the next 8 bytes; 1 the word plus a signed byte; 2 a lease word of the
  // next bytes' fields with a deadline near now; 3 the next byte.
  void hostile_write(Input& in) {
    const std::uint8_t t = in.byte();
    auto* words = reinterpret_cast<std::atomic<std::uint64_t>*>(hostile_.base());
    const std::size_t table = sizeof(shm::GroupControl) / 8;
    std::size_t index = 0;
    if ((t & 1u) != 0) {
      index = table + (t >> 1) % window_;
    } else {
      index = ((std::size_t{t} >> 1) * 256 + in.byte()) % table;
    }
    std::atomic<std::uint64_t>& word = words[index];
    const std::uint8_t v = in.byte();
    std::uint64_t value = 0;
    switch (v & 3u) {
      case 0:
        value = in.u64();
        break;
      case 1:
        value = word.load() + static_cast<std::uint64_t>(static_cast<std::int8_t>(in.byte()));
        break;
      case 2: {
        const auto* g = reinterpret_cast<const shm::GroupControl*>(hostile_.base());
        shm::Lease l;
        const std::uint8_t f = in.byte();
        l.state = static_cast<shm::LeaseState>(f & 3u);
        l.parity = (f >> 2) & 1u;
        l.owner = f >> 3;
        l.deliveries = in.byte() & 63u;
        l.generation = in.byte();
        l.deadline_ms = shm::LeaseTable::to_lease_ms(g_now_ns, g->epoch_ns) +
                        static_cast<std::uint32_t>(static_cast<std::int8_t>(in.byte()));
        value = l.pack();
        break;
      }
      default:
        value = in.byte();
        break;
    }
    word.store(value);
  }

  void drain_good() {
    for (;;) {
      const ringfeed::Batch& batch = good_->try_pop(64);
      if (batch.status() == ringfeed::PopStatus::fenced) fail("the good group was fenced");
      if (batch.empty()) return;
      for (const ringfeed::Message& m : batch) {
        if (m.offset() != good_next_) {
          fail("the good group got offset " + std::to_string(m.offset()) + ", expected " +
               std::to_string(good_next_));
        }
        ++good_next_;
        if (good_->ack(m) != ringfeed::AckStatus::ok) fail("the good group's ack was refused");
      }
    }
  }

  Mode mode_;
  std::uint32_t window_;
  std::uint32_t max_deliveries_;
  std::unique_ptr<ringfeed::Writer> writer_;
  std::unique_ptr<Consumer> good_;
  Worker workers_[2];
  shm::Segment hostile_;
  std::uint64_t published_ = 0;
  std::uint64_t good_next_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 4096) return 0;
  Input in(data, size);
  const std::uint8_t header = in.byte();
  static constexpr Mode kModes[] = {Mode::shared, Mode::key_shared, Mode::failover, Mode::shared};
  const Mode mode = kModes[header & 3u];
  const std::uint32_t window = 1u << ((header >> 2) & 7u);
  const std::uint32_t max_deliveries = ((header >> 5) & 3u) + 1;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  g_now_ns = std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  remove_all();
  {
    Run run(mode, window, max_deliveries);
    for (int ops = 0; !in.done() && ops < 1000; ++ops) run.step(in);
    run.finish();
  }
  remove_all();
  return 0;
}
