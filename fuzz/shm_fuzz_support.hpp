// What the fuzz targets on shared memory (lease_fuzz.cpp, segment_attach_fuzz.cpp) share:
// a namespace of the process's own for their segments, removed around every input; a
// failed check, which aborts (libFuzzer keeps the input); reading every byte of a message
// handed out, so that ASan checks the views; the options of their consumers; and the check
// that a well-behaved group was never fenced.
//
// A target that includes this defines kTargetName and kNamespaceStem.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ringfeed/consumer.hpp"
#include "ringfeed/headers.hpp"
#include "ringfeed/writer.hpp"
#include "shm/segment.hpp"

namespace ringfeed::fuzz {

// The target's name in messages ("lease_fuzz"), and the end of its namespace ("lease":
// segments ringfeed.fuzz-PID-lease.*, which scripts/fuzz.sh removes after a crash).
extern const char* const kTargetName;
extern const char* const kNamespaceStem;

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", kTargetName, what.c_str());
  std::abort();
}

inline const std::string& ns() {
  static const std::string name = "fuzz-" + std::to_string(::getpid()) + "-" + kNamespaceStem;
  return name;
}

// Removes every segment of ns(): before an input, whatever an earlier one left, and after.
inline void remove_all() {
  for (const auto& name : shm::Segment::list("ringfeed." + ns() + ".")) shm::Segment::remove(name);
}

// Every byte of every message handed out is read into this, so ASan checks the views;
// the headers are decoded too (what they hold is another process's to write).
inline volatile unsigned g_touched = 0;

inline void touch(const Message& m) {
  unsigned sum = 0;
  for (const char ch : m.key()) sum += static_cast<unsigned char>(ch);
  for (const char ch : m.value()) sum += static_cast<unsigned char>(ch);
  for (const char ch : m.headers()) sum += static_cast<unsigned char>(ch);
  if (auto headers = decode_headers(m.headers())) {
    for (const Header& h : *headers) sum += static_cast<unsigned>(h.key.size() + h.value.size());
  }
  g_touched = g_touched + sum;
}

// A consumer of partition 0 of ns() that never spins: a pop that finds nothing returns.
inline ConsumerOptions consumer_options(const std::string& group, Mode mode) {
  ConsumerOptions o;
  o.ns = ns();
  o.partition = 0;
  o.group = group;
  o.mode = mode;
  o.spin = std::chrono::nanoseconds(0);
  return o;
}

// Fails if the writer fenced `group`, which only ever behaved.
inline void check_not_fenced(const Writer& writer, const std::string& group) {
  for (const shm::GroupInfo& g : writer.groups()) {
    if (g.name == group && g.fenced) fail("the " + group + " group was fenced: " + g.fence_reason);
  }
}

}  // namespace ringfeed::fuzz
