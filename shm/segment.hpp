// Named shared-memory segments (Boost.Interprocess shared_memory_object +
// mapped_region), and the header every ringfeed segment starts with.
//
// A segment is published atomically: it is created under a temporary name, filled in
// completely, then hard-linked to its final name. Nobody can open a half-initialised
// segment, and a creator that dies mid-way leaves only a temporary name behind.
#pragma once

#include <sys/types.h>

#include <boost/interprocess/mapped_region.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shm/result.hpp"

namespace ringfeed::shm {

// Shared layouts are padded to this constant, never to
// std::hardware_destructive_interference_size, which may differ between compilers.
inline constexpr std::size_t kCacheLine = 64;

inline constexpr std::uint64_t kMagic = 0x4445454647'4e4952ull;  // "RINGFEED", little-endian
inline constexpr std::uint32_t kLayoutVersion = 8;  // 8: fetcher warnings in its segment

// Where glibc's shm_open keeps its objects; used to link and list segments by path.
inline constexpr std::string_view kShmDir = "/dev/shm/";

enum class SegmentKind : std::uint32_t { ring = 1, group = 2, fetcher = 3 };
const char* to_string(SegmentKind kind);

// First 64 bytes of every segment. Written once by the creator before the segment is
// published (linked to its final name), never written again: plain fields, no atomics.
// Readers copy it into a local before checking it (another process can write any byte).
struct SegmentHeader {
  std::uint64_t magic;               // kMagic
  std::uint32_t layout_version;      // kLayoutVersion
  std::uint32_t kind;                // SegmentKind
  std::uint64_t segment_size;        // bytes of the whole segment
  std::uint64_t control_size;        // bytes of the kind's control block (before any data)
  std::uint64_t data_capacity;       // ring: bytes of the record area; group: consumer slots
  std::int32_t creator_pid;          // process that created the segment
  std::uint32_t partition;           // partition number the segment belongs to
  std::uint64_t creator_start_time;  // its start time (clock ticks since boot)
  std::uint64_t reserved;
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) == kCacheLine, "the header fills exactly one cache line");
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, kind) == 12);
static_assert(offsetof(SegmentHeader, segment_size) == 16);
static_assert(offsetof(SegmentHeader, control_size) == 24);
static_assert(offsetof(SegmentHeader, data_capacity) == 32);
static_assert(offsetof(SegmentHeader, creator_pid) == 40);
static_assert(offsetof(SegmentHeader, partition) == 44);
static_assert(offsetof(SegmentHeader, creator_start_time) == 48);

// What an opener expects a header to say; validate_header names the first difference.
struct ExpectedHeader {
  SegmentKind kind;
  std::uint64_t control_size;
  std::uint32_t partition;
};

// Checks a header copy against what this process expects and the segment's real size.
// On success returns the data capacity (checked for sanity against the real size).
Result<std::uint64_t> validate_header(const std::string& segment_name, const SegmentHeader& h,
                                      std::size_t actual_size, const ExpectedHeader& expected);

enum class Access { read_only, read_write };

// Who may open the segments a process creates (invariant 5). By default the creator's
// user only (0600). With a group (`ringfeed fetch --access-group`), its members too, and
// the group owns the segment: read-only (0640) for segments only their creator writes
// (rings, the fetcher's), read-write (0660) for group segments, which every consumer of
// the group writes. Never world-accessible: create() sets the mode with fchmod, whatever
// the umask, and the group with fchown, before the segment gets its name.
struct SegmentAccess {
  static constexpr gid_t kNoGroup = static_cast<gid_t>(-1);
  gid_t group = kNoGroup;
  bool group_writes = false;

  bool shared() const { return group != kNoGroup; }
  mode_t mode() const { return !shared() ? 0600 : group_writes ? 0660 : 0640; }
};

// The group named `name` (or a numeric group id), for SegmentAccess. The error says
// that there is no such group.
Result<gid_t> find_group(std::string_view name);

// The access a group segment of the ring `ring_name` gets: its members read and write it
// if the ring lets a group read, else only the creator. A missing ring: the default.
SegmentAccess group_access_of_ring(const std::string& ring_name);

class Segment {
 public:
  Segment() = default;

  // Creates `name` of `size` bytes (zero-filled, mode and group as `access` says), lets
  // `init` fill it, then publishes it. Error code EEXIST when the name is taken.
  static Result<Segment> create(const std::string& name, std::size_t size,
                                const std::function<void(std::byte*)>& init,
                                const SegmentAccess& access = {});
  // Opens and maps an existing segment. Error code ENOENT when there is none.
  static Result<Segment> open(const std::string& name, Access access);
  // Removes the name; mappings stay valid until unmapped. False if there was none.
  static bool remove(const std::string& name);
  // Names of existing segments that start with `prefix`.
  static std::vector<std::string> list(std::string_view prefix);

  std::byte* base() const { return static_cast<std::byte*>(region_.get_address()); }
  std::size_t size() const { return region_.get_size(); }
  const std::string& name() const { return name_; }
  bool mapped() const { return region_.get_address() != nullptr; }

 private:
  std::string name_;
  boost::interprocess::mapped_region region_;
};

}  // namespace ringfeed::shm
