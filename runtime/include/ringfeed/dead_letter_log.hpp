// The dead-letter log: one file per partition, DIR/<partition>.log, in the framed
// format of the local log (io/framed_record.hpp) with the dead-letter fields: the group,
// the delivery count and the reason. The writer's reaper hands it what shared groups gave
// up on (RingWriter::set_dead_letter_sink).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "io/log_appender.hpp"
#include "shm/result.hpp"
#include "shm/ring_writer.hpp"

namespace ringfeed {

class DeadLetterLog {
 public:
  // Creates DIR if needed (mode 0700) and opens DIR/<partition>.log for appending. With a
  // `group` (the fetcher's --access-group), a DIR and log this user owns are given to
  // it: DIR 0750, the log 0660, so that exclusive and broadcast consumers of its members,
  // which store their dead letters themselves, can append to a log the fetcher created.
  static Result<DeadLetterLog> open(const std::string& dir, std::uint32_t partition,
                                    gid_t group = io::LogAppender::kNoGroup);

  // Appends one dead letter and fsyncs it (it is acked in its group once this returns
  // true, so it must be on disk). False, with last_error() set, if it could not.
  bool append(const shm::DeadLetter& letter);

  const std::string& path() const { return path_; }
  const std::string& last_error() const { return last_error_; }

 private:
  DeadLetterLog(std::string path, io::LogAppender appender)
      : path_(std::move(path)), appender_(std::move(appender)) {}

  std::string path_;
  io::LogAppender appender_;
  std::string last_error_;
};

}  // namespace ringfeed
