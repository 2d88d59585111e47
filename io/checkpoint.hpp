// The committed position of one partition of the local log (`file:DIR`): the file
// DIR/P.checkpoint, where a restart resumes fetching DIR/P.log.
//
// A checkpoint is 24 bytes, all integers little-endian:
//
//   byte  size  field
//   0     4     magic "RFCK"
//   4     4     version, 1
//   8     8     position (u64): byte offset in DIR/P.log of the first record not committed
//   16    4     partition (u32): P, so a checkpoint copied to another name is refused
//   20    4     crc: CRC32C of bytes [0, 20)
//
// It is replaced, never edited: the new content goes to DIR/P.checkpoint.tmp, which is
// fsynced and renamed over DIR/P.checkpoint, and then the directory is fsynced so the
// rename itself survives a crash of the host. A reader therefore sees the old or the new
// checkpoint whole. Anything else (a torn file, garbage, another version, a CRC that
// does not match) is reported as an error naming the file: silently starting over at 0
// would deliver the whole partition again.
//
// Files are created with mode 0600. Errors are Results whose message names the path;
// Error::code is the errno when one applies.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "shm/result.hpp"

namespace ringfeed::io {

inline constexpr std::size_t kCheckpointSize = 24;
inline constexpr char kCheckpointMagic[4] = {'R', 'F', 'C', 'K'};
inline constexpr std::uint32_t kCheckpointVersion = 1;

// DIR/P.checkpoint.
std::string checkpoint_path(const std::string& dir, std::uint32_t partition);

// The 24 bytes that record `position` for `partition`.
std::array<std::byte, kCheckpointSize> encode_checkpoint(std::uint32_t partition,
                                                         std::uint64_t position);

// The position stored in `bytes`, the content of the file `path` that should belong to
// `partition`. The error names the file and what is wrong with it.
Result<std::uint64_t> decode_checkpoint(std::span<const std::byte> bytes, const std::string& path,
                                        std::uint32_t partition);

// The committed position of `partition` in `dir`: 0 when there is no checkpoint yet.
Result<std::uint64_t> read_checkpoint(const std::string& dir, std::uint32_t partition);

// Makes `position` the committed position of `partition` in `dir`, durably (see above).
Status write_checkpoint(const std::string& dir, std::uint32_t partition, std::uint64_t position);

// Replaces the file `path` in directory `dir` with `bytes` the same way: a temporary
// file (mode 0600) fsynced and renamed over it, then the directory fsynced. `what` names
// the file in errors ("checkpoint").
Status replace_file(const std::string& dir, const std::string& path,
                    std::span<const std::byte> bytes, const std::string& what);

}  // namespace ringfeed::io
