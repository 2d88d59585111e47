#include "shm/segment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>

namespace ringfeed::shm {

namespace bip = boost::interprocess;

const char* to_string(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::ring:
      return "ring";
    case SegmentKind::group:
      return "group";
    case SegmentKind::fetcher:
      return "fetcher";
  }
  return "unknown";
}

namespace {

std::string describe(const std::string& name) {
  return "segment " + name;
}

int errno_of(const bip::interprocess_exception& e) {
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      return EEXIST;
    case bip::not_found_error:
      return ENOENT;
    case bip::security_error:
      return EACCES;
    default:
      return e.get_native_error() != 0 ? e.get_native_error() : EIO;
  }
}

std::atomic<unsigned> temp_counter{0};

}  // namespace

Result<std::uint64_t> validate_header(const std::string& segment_name, const SegmentHeader& h,
                                      std::size_t actual_size, const ExpectedHeader& expected) {
  auto fail = [&](const std::string& what) {
    return Error{describe(segment_name) + ": " + what, EPROTO};
  };
  if (h.magic != kMagic) {
    char buf[96];
    std::snprintf(
        buf, sizeof buf, "bad magic 0x%016llx, expected 0x%016llx (not a ringfeed segment)",
        static_cast<unsigned long long>(h.magic), static_cast<unsigned long long>(kMagic));
    return fail(buf);
  }
  if (h.layout_version != kLayoutVersion) {
    return fail("layout version " + std::to_string(h.layout_version) + ", this build speaks " +
                std::to_string(kLayoutVersion));
  }
  if (h.kind != static_cast<std::uint32_t>(expected.kind)) {
    return fail("kind " + std::to_string(h.kind) + ", expected " +
                std::to_string(static_cast<std::uint32_t>(expected.kind)) + " (" +
                to_string(expected.kind) + ")");
  }
  if (h.segment_size != actual_size) {
    return fail("header says " + std::to_string(h.segment_size) + " bytes but the segment has " +
                std::to_string(actual_size) + " (truncated or resized)");
  }
  if (h.control_size != expected.control_size) {
    return fail("control block of " + std::to_string(h.control_size) + " bytes, expected " +
                std::to_string(expected.control_size));
  }
  if (h.partition != expected.partition) {
    return fail("partition " + std::to_string(h.partition) + ", expected " +
                std::to_string(expected.partition));
  }
  if (h.control_size > actual_size) {
    return fail("control block of " + std::to_string(h.control_size) + " bytes does not fit in " +
                std::to_string(actual_size) + " bytes");
  }
  if (h.data_capacity > actual_size) {
    return fail("data capacity " + std::to_string(h.data_capacity) + " does not fit in " +
                std::to_string(actual_size) + " bytes");
  }
  return h.data_capacity;
}

Result<gid_t> find_group(std::string_view name) {
  const std::string n(name);
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  if (::getgrnam_r(n.c_str(), &g, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_gid;
  }
  // A number names a group id (which may have no name here).
  if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos && n.size() < 10) {
    return static_cast<gid_t>(std::stoul(n));
  }
  return Error{"no group '" + n + "' on this host", ENOENT};
}

SegmentAccess group_access_of_ring(const std::string& ring_name) {
  struct stat st {};
  const std::string path = std::string(kShmDir) + ring_name;
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & S_IRGRP) == 0) return {};
  return {.group = st.st_gid, .group_writes = true};
}

Result<Segment> Segment::create(const std::string& name, std::size_t size,
                                const std::function<void(std::byte*)>& init,
                                const SegmentAccess& access) {
  if (size < sizeof(SegmentHeader)) return Error{describe(name) + ": size too small", EINVAL};
  const std::string temp = name + ".tmp." + std::to_string(::getpid()) + "." +
                           std::to_string(temp_counter.fetch_add(1, std::memory_order_relaxed));
  Segment seg;
  try {
    bip::permissions perms(0600);
    bip::shared_memory_object shm(bip::create_only, temp.c_str(), bip::read_write, perms);
    // Group first (fchown may clear mode bits), then the mode, explicitly: the umask is
    // not trusted to keep a segment from being world-accessible.
    const int fd = shm.get_mapping_handle().handle;
    if (access.shared() && ::fchown(fd, static_cast<uid_t>(-1), access.group) != 0) {
      const int err = errno;
      bip::shared_memory_object::remove(temp.c_str());
      return Error{describe(name) + ": cannot give it to group " + std::to_string(access.group) +
                       ": " + std::strerror(err) +
                       (err == EPERM ? " (this user is not a member of that group)" : ""),
                   err};
    }
    if (::fchmod(fd, access.mode()) != 0) {
      const int err = errno;
      bip::shared_memory_object::remove(temp.c_str());
      return Error{describe(name) + ": cannot set its mode: " + std::strerror(err), err};
    }
    shm.truncate(static_cast<bip::offset_t>(size));
    // Every page now: tmpfs gives pages on first touch, and one it cannot give is a
    // SIGBUS in whichever process touches it, later. A full /dev/shm is an error here.
    if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
        err != 0 && err != EOPNOTSUPP) {
      bip::shared_memory_object::remove(temp.c_str());
      return Error{describe(name) + ": cannot create: no room for its " + std::to_string(size) +
                       " bytes in " + std::string(kShmDir) + ": " + std::strerror(err),
                   err};
    }
    seg.region_ = bip::mapped_region(shm, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    bip::shared_memory_object::remove(temp.c_str());
    return Error{describe(name) + ": cannot create: " + e.what(), errno_of(e)};
  }
  init(seg.base());
  // Publish: link() fails with EEXIST instead of replacing an existing segment.
  const std::string from = std::string(kShmDir) + temp;
  const std::string to = std::string(kShmDir) + name;
  int rc = ::link(from.c_str(), to.c_str());
  int err = errno;
  ::unlink(from.c_str());
  if (rc != 0) {
    return Error{describe(name) + ": cannot publish: " + std::strerror(err), err};
  }
  seg.name_ = name;
  return seg;
}

Result<Segment> Segment::open(const std::string& name, Access access) {
  Segment seg;
  try {
    const bip::mode_t mode = access == Access::read_only ? bip::read_only : bip::read_write;
    bip::shared_memory_object shm(bip::open_only, name.c_str(), mode);
    bip::offset_t size = 0;
    if (!shm.get_size(size)) return Error{describe(name) + ": cannot read its size", EIO};
    if (static_cast<std::size_t>(size) < sizeof(SegmentHeader)) {
      return Error{describe(name) + ": truncated: " + std::to_string(size) +
                       " bytes, a header alone needs " + std::to_string(sizeof(SegmentHeader)),
                   EPROTO};
    }
    seg.region_ = bip::mapped_region(shm, mode);
  } catch (const bip::interprocess_exception& e) {
    return Error{describe(name) + ": cannot open: " + e.what(), errno_of(e)};
  }
  seg.name_ = name;
  return seg;
}

bool Segment::remove(const std::string& name) {
  return bip::shared_memory_object::remove(name.c_str());
}

std::vector<std::string> Segment::list(std::string_view prefix) {
  std::vector<std::string> out;
  DIR* dir = ::opendir(std::string(kShmDir).c_str());
  if (dir == nullptr) return out;
  while (dirent* e = ::readdir(dir)) {
    std::string_view name(e->d_name);
    if (name.substr(0, prefix.size()) == prefix) out.emplace_back(name);
  }
  ::closedir(dir);
  return out;
}

}  // namespace ringfeed::shm
