// libFuzzer target for attaching to segments of arbitrary bytes (invariants 3, 5 and 6:
// a corrupt segment gets a clear error, never a crash or a hang).
//
// Input: one options byte, then the bytes the segment starts with.
//   bit 0     0: the ring segment ringfeed.NS.p0.ring is the input; 1: a group segment
//             ringfeed.NS.p0.g.g on a good ring
//   bit 1     repair: write a valid segment header (magic, version, kind, sizes,
//             partition) over the input, and size the segment as the header says, so the
//             fuzzer gets past the header checks to the contents
//   bits 2-4  the mode of the consumer that attaches (exclusive, shared, broadcast,
//             failover, key_shared; the rest: exclusive)
//   bit 5     with repair, a group segment also gets that mode
//   bits 6-7  with repair, the ring's record area (4 KiB << k) or the group's lease
//             window (4^k entries)
//
// Ring: a reader opens it and walks its records; a consumer attaches, pops and acks what
// it is given; then a writer starts on the partition, which refuses (a live writer
// serves it) or replaces the segment. Group: a writer serves a ring with a good
// exclusive group and three messages; the hostile group segment appears (renamed into
// place, as a consumer publishes one); the writer registers or rejects it and runs its
// passes; a consumer attaches to it, pops and acks; two more messages. The good group
// must get the five messages in order and never be fenced.
//
// An attach that fails must say why, naming the segment or the group. Every input runs
// under ASan and UBSan; libFuzzer's -timeout catches a hang.
#include <fcntl.h>
#include <unistd.h>

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
#include "shm/names.hpp"
#include "shm/ring_layout.hpp"
#include "shm/ring_reader.hpp"
#include "shm/segment.hpp"
#include "shm_fuzz_support.hpp"

const char* const ringfeed::fuzz::kTargetName = "segment_attach_fuzz";
const char* const ringfeed::fuzz::kNamespaceStem = "attach";

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

// Puts `bytes` in /dev/shm under `name`, whole: written under a temporary name first and
// renamed into place, as a creator publishes a segment (a writer watching the directory
// sees it once, complete).
void place(const std::string& name, const std::vector<std::byte>& bytes) {
  const std::string path = std::string(shm::kShmDir) + name;
  const std::string temp = path + ".tmp.fuzz";
  const int fd = ::open(temp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot create " + temp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w <= 0) fail("cannot write " + temp);
    done += static_cast<std::size_t>(w);
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) fail("cannot rename " + temp);
}

Mode mode_of(unsigned bits) {
  static constexpr Mode kModes[] = {Mode::exclusive, Mode::shared, Mode::broadcast, Mode::failover,
                                    Mode::key_shared};
  return bits < 5 ? kModes[bits] : Mode::exclusive;
}

// Pops (never waiting) and acks whatever the consumer is given, touching every byte so
// that ASan checks the views. Returns the offsets it got.
std::vector<std::uint64_t> drain(Consumer& c) {
  std::vector<std::uint64_t> offsets;
  for (int round = 0; round < 8; ++round) {
    const ringfeed::Batch& batch = c.try_pop(16);
    if (batch.empty()) break;
    for (const ringfeed::Message& m : batch) {
      touch(m);
      offsets.push_back(m.offset());
      c.ack(m);
    }
  }
  return offsets;
}

void check_refusal(const ringfeed::Error& e, const std::string& what) {
  if (e.message.empty()) fail("an attach to " + what + " failed without a reason");
}

// The input as segment bytes: as given, or with a valid header for `kind` over it and
// as many bytes as that header says.
std::vector<std::byte> segment_bytes(const std::uint8_t* data, std::size_t size, bool repair,
                                     shm::SegmentKind kind, unsigned size_bits, Mode mode,
                                     bool set_mode) {
  std::vector<std::byte> b(reinterpret_cast<const std::byte*>(data),
                           reinterpret_cast<const std::byte*>(data) + size);
  if (!repair) return b;
  std::uint64_t total = 0;
  std::uint64_t control = 0;
  std::uint64_t capacity = 0;
  if (kind == shm::SegmentKind::ring) {
    capacity = shm::kMinRingCapacity << size_bits;
    total = shm::ring_segment_size(capacity);
    control = sizeof(shm::RingControl);
  } else {
    capacity = std::uint64_t{1} << (2 * size_bits);
    total = shm::group_segment_size(static_cast<std::uint32_t>(capacity));
    control = sizeof(shm::GroupControl);
  }
  b.resize(total);
  shm::SegmentHeader h{};
  std::memcpy(&h, b.data(), sizeof h);
  h.magic = shm::kMagic;
  h.layout_version = shm::kLayoutVersion;
  h.kind = static_cast<std::uint32_t>(kind);
  h.segment_size = total;
  h.control_size = control;
  h.data_capacity = capacity;
  h.partition = 0;
  std::memcpy(b.data(), &h, sizeof h);
  if (kind == shm::SegmentKind::group && set_mode) {
    const auto m = static_cast<std::uint32_t>(mode);
    std::memcpy(b.data() + offsetof(shm::GroupControl, mode), &m, sizeof m);
  }
  return b;
}

void hostile_ring(const std::vector<std::byte>& bytes, Mode mode) {
  const std::string name = shm::ring_segment_name(ns(), 0);
  place(name, bytes);
  if (auto reader = shm::RingReader::open(ns(), 0)) {
    // Walk what looks like records, as a consumer would.
    std::uint64_t pos =
        reader->control().tail.load(std::memory_order_relaxed) & ~(shm::kRecordAlign - 1);
    for (int i = 0; i < 64; ++i) {
      shm::RecordView r;
      const shm::ReadStatus st = reader->read(pos, r);
      if (st != shm::ReadStatus::record && st != shm::ReadStatus::padding) break;
      if (r.next <= pos) fail("a record that does not move the reader on");
      if (st == shm::ReadStatus::record && r.headers_len != 0 &&
          (r.headers < r.value + r.value_len || r.next - r.position < r.headers_len)) {
        fail("headers outside their record");
      }
      pos = r.next;
    }
  } else {
    check_refusal(reader.error(), name);
  }
  if (auto c = Consumer::attach(consumer_options("g", mode))) {
    drain(*c.value());
  } else {
    check_refusal(c.error(), name);
  }
  // A writer starting on the partition refuses a live writer's ring or replaces it.
  auto w = ringfeed::Writer::create({.ns = ns(), .partition = 0, .capacity = 4096});
  if (!w) check_refusal(w.error(), name);
}

void hostile_group(const std::vector<std::byte>& bytes, Mode mode) {
  auto w = ringfeed::Writer::create(
      {.ns = ns(), .partition = 0, .capacity = 4096, .group_defaults = {.lease_window = 16}});
  if (!w) fail("cannot create the ring: " + w.error().message);
  ringfeed::Writer& writer = *w.value();
  auto good = Consumer::attach(consumer_options("good", Mode::exclusive));
  if (!good) fail("cannot attach the good group: " + good.error().message);
  auto publish = [&](std::uint64_t first, std::uint64_t n) {
    for (std::uint64_t i = first; i < first + n; ++i) {
      const std::string value = "message " + std::to_string(i);
      const ringfeed::OutMessage m{.key = "k", .value = value, .upstream_offset = i};
      if (writer.publish({&m, 1}, std::chrono::nanoseconds(0)) != 1) {
        fail("the writer could not publish message " + std::to_string(i));
      }
    }
  };
  publish(0, 3);
  const std::string name = shm::group_segment_name(ns(), 0, "g");
  place(name, bytes);
  writer.service();
  writer.reclaim(true);
  if (auto c = Consumer::attach(consumer_options("g", mode))) {
    drain(*c.value());
    writer.service();
    writer.reclaim(true);
    drain(*c.value());
  } else {
    check_refusal(c.error(), name);
  }
  writer.service();
  writer.reclaim(true);
  publish(3, 2);
  writer.service();
  const std::vector<std::uint64_t> got = drain(*good.value());
  if (got != std::vector<std::uint64_t>{0, 1, 2, 3, 4}) {
    std::string list;
    for (const std::uint64_t o : got) list += " " + std::to_string(o);
    fail("the good group got offsets" + list + " instead of 0 to 4");
  }
  check_not_fenced(writer, "good");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t options = data[0];
  const bool group = (options & 1u) != 0;
  const bool repair = (options & 2u) != 0;
  const Mode mode = mode_of((options >> 2) & 7u);
  const bool set_mode = (options & 0x20u) != 0;
  const unsigned size_bits = options >> 6;
  const auto bytes = segment_bytes(data + 1, size - 1, repair,
                                   group ? shm::SegmentKind::group : shm::SegmentKind::ring,
                                   size_bits, mode, set_mode);
  remove_all();
  if (group) {
    hostile_group(bytes, mode);
  } else {
    hostile_ring(bytes, mode);
  }
  remove_all();
  return 0;
}
