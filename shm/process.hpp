// Process identity that survives pid reuse: a pid plus the process start time
// (field 22 of /proc/PID/stat, clock ticks since boot). Used to name the owner of an
// exclusive group or a broadcast slot and to tell whether that owner still lives.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace ringfeed::shm {

struct ProcessIdentity {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks since boot; 0 when unknown
};

// The identity of the calling process (cached after the first call; refreshed after fork).
ProcessIdentity self_identity();

// Start time of `pid`, or 0 if there is no such process or it is a zombie.
std::uint64_t process_start_time(pid_t pid);

// Owner words pack an identity into one 64-bit value so that a claim is one CAS:
// pid in the high 32 bits, the low 32 bits of the start time below. 0 means "nobody".
std::uint64_t pack_owner(ProcessIdentity id);
pid_t owner_pid(std::uint64_t owner);

// Bit 63 of an owner word (pids stay below 2^22): a broadcast slot that a writer which
// took a ring over keeps for a consumer of the dead writer's ring until that consumer
// follows (group.hpp, create_started_group). owner_pid and owner_alive ignore it.
inline constexpr std::uint64_t kOwnerAwaited = 1ull << 63;

// True when the process named by the owner word is running (not dead, not a zombie,
// and not a newer process that reuses the pid). A word that cannot name a real process
// (pid <= 0 or out of range) is reported dead. Dead needs evidence: when /proc cannot be
// read for another reason (no descriptor left, say), the owner counts as alive.
bool owner_alive(std::uint64_t owner);

}  // namespace ringfeed::shm
