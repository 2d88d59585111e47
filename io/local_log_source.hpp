// The local-log source, `file:DIR`: partition P is the append-only file DIR/P.log,
// framed records (framed_record.hpp) or newline-delimited `lines`, tailed as producers
// append to it. The committed position of P is the checkpoint DIR/P.checkpoint
// (checkpoint.hpp).
//
// - Upstream offset of a record = its byte position in its file; next_offset = the
//   position after it (for `lines`, after its '\n'). A framed record must carry its own
//   position (OffsetCheck::equals_position). A `lines` record has an empty key and
//   timestamp 0 (unknown: a line carries no time of its own).
// - Partitions: LocalLogOptions::partitions, or 0 = as many as there are consecutive
//   files DIR/0.log, DIR/1.log, ... at open, and at least one. A partition whose file
//   does not exist yet is waited for; a producer may create it later.
// - A record cut short at the end of the file is waited for until it is whole; it is
//   never reported nor skipped. A corrupt record, a failed read, or a file truncated
//   below what was read stops that partition only (PartitionStatus::error names the
//   file and byte offset); the others go on.
// - At open, a checkpoint beyond the end of its log, or not at a record boundary, is
//   refused naming both files.
//
// Reads go through one io_uring with a registered read buffer per partition (the
// buffers count against the locked-memory limit, `ulimit -l`, unless the process is
// privileged); growth of the files is learnt from inotify, whose descriptor is read
// through the same ring. local_log_source.cpp describes what is in flight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "io/source.hpp"
#include "shm/result.hpp"

namespace ringfeed::io {

enum class LogFormat : std::uint8_t { framed, lines };
const char* to_string(LogFormat f);

// Per-partition read buffer registered with io_uring. A record larger than this is read
// into a heap buffer grown to fit it (up to the format's limits), then the partition
// goes back to its registered buffer. When RLIMIT_MEMLOCK does not allow buffers of the
// size asked for, smaller ones are used, down to 4 KiB.
inline constexpr std::size_t kDefaultReadBufferBytes = std::size_t{64} * 1024;

struct LocalLogOptions {
  LogFormat format = LogFormat::framed;
  std::uint32_t partitions = 0;  // 0: the DIR/P.log files present, at least one
  std::size_t read_buffer_bytes = kDefaultReadBufferBytes;  // at least 64 bytes
};

// Opens the local log in `dir`. `uri` is what uri() reports (the URI it was opened by).
// Refused, with a message naming what and where: a missing DIR, an unreadable or bad
// checkpoint, a checkpoint that does not fit its log, an io_uring or inotify set-up
// failure.
Result<std::unique_ptr<Source>> open_local_log(const std::string& dir,
                                               const LocalLogOptions& options, std::string uri);

}  // namespace ringfeed::io
