#include "ringfeed/dead_letter_log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/framed_record.hpp"

namespace ringfeed {

Result<DeadLetterLog> DeadLetterLog::open(const std::string& dir, std::uint32_t partition,
                                          gid_t group) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error{"dead-letter directory " + dir + ": " + std::strerror(errno), errno};
  }
  struct stat st {};
  if (group != io::LogAppender::kNoGroup && ::stat(dir.c_str(), &st) == 0 &&
      st.st_uid == ::geteuid() &&
      (::chown(dir.c_str(), static_cast<uid_t>(-1), group) != 0 ||
       ::chmod(dir.c_str(), 0750) != 0)) {
    return Error{"dead-letter directory " + dir +
                     ": cannot share it with its group: " + std::strerror(errno),
                 errno};
  }
  std::string path = dir + "/" + std::to_string(partition) + ".log";
  auto appender = io::LogAppender::open(path, group);
  if (!appender) return appender.error();
  return DeadLetterLog(std::move(path), std::move(appender.value()));
}

bool DeadLetterLog::append(const shm::DeadLetter& letter) {
  io::RecordView r;
  r.kind = io::RecordKind::dead_letter;
  r.timestamp_ns = letter.timestamp_ns;
  r.upstream_offset = letter.upstream_offset;
  r.key = letter.key;
  r.value = letter.value;
  r.delivery_count = letter.deliveries;
  r.group = letter.group;
  r.reason = shm::to_string(letter.reason);
  auto appended = appender_.append({&r, 1});
  if (!appended) {
    last_error_ = appended.error().message;
    return false;
  }
  if (auto synced = appender_.sync(); !synced) {
    last_error_ = synced.error().message;
    return false;
  }
  return true;
}

}  // namespace ringfeed
