// Checkpoints of the local log: round trip, file mode, atomic replacement, and every kind
// of damage refused with the file named (a bad checkpoint must never read as 0).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/crc32c.hpp"
#include "test_support.hpp"

namespace io = ringfeed::io;
namespace fs = std::filesystem;

using ringfeed::test::TempDir;

namespace {

void write_bytes(const std::string& path, const void* data, std::size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, data, n), static_cast<ssize_t>(n));
  ::close(fd);
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST(Checkpoint, MissingMeansZero) {
  TempDir dir{"ringfeed-checkpoint"};
  auto c = io::read_checkpoint(dir.path(), 0);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, 0u);
}

TEST(Checkpoint, RoundTripReplacesAndLeavesNoTemporary) {
  TempDir dir{"ringfeed-checkpoint"};
  const mode_t old = ::umask(0);
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 3, 12345).ok());
  ::umask(old);
  auto c = io::read_checkpoint(dir.path(), 3);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, 12345u);

  const std::uint64_t big = (std::uint64_t{1} << 62) + 7;
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 3, big).ok());
  c = io::read_checkpoint(dir.path(), 3);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, big);

  const std::string path = io::checkpoint_path(dir.path(), 3);
  EXPECT_EQ(path, dir.path() + "/3.checkpoint");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), io::kCheckpointSize);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // Other partitions are unaffected.
  c = io::read_checkpoint(dir.path(), 0);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, 0u);
}

TEST(Checkpoint, LeftoverTemporaryFromACrashIsHarmless) {
  TempDir dir{"ringfeed-checkpoint"};
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, 40).ok());
  const std::string junk = "half-written";
  write_bytes(io::checkpoint_path(dir.path(), 0) + ".tmp", junk.data(), junk.size());
  auto c = io::read_checkpoint(dir.path(), 0);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, 40u);
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, 80).ok());
  c = io::read_checkpoint(dir.path(), 0);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, 80u);
}

TEST(Checkpoint, TornOrResizedFilesAreRefusedNamingTheFile) {
  TempDir dir{"ringfeed-checkpoint"};
  const auto good = io::encode_checkpoint(0, 4096);
  const std::string path = io::checkpoint_path(dir.path(), 0);
  for (const std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{12}, std::size_t{23}}) {
    write_bytes(path, good.data(), len);
    auto c = io::read_checkpoint(dir.path(), 0);
    ASSERT_FALSE(c.ok()) << "length " << len;
    EXPECT_TRUE(contains(c.error().message, path)) << c.error().message;
    EXPECT_TRUE(contains(c.error().message, "torn")) << c.error().message;
  }
  std::vector<std::byte> longer(good.begin(), good.end());
  longer.push_back(std::byte{0});
  write_bytes(path, longer.data(), longer.size());
  auto c = io::read_checkpoint(dir.path(), 0);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(contains(c.error().message, "25 bytes")) << c.error().message;
}

TEST(Checkpoint, EveryFlippedBitIsDetected) {
  const auto good = io::encode_checkpoint(7, 0x0102030405060708ull);
  auto ok = io::decode_checkpoint(good, "x", 7);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(*ok, 0x0102030405060708ull);
  for (std::size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = good;
      bad[byte] ^= static_cast<std::byte>(1u << bit);
      auto c = io::decode_checkpoint(bad, "/d/7.checkpoint", 7);
      EXPECT_FALSE(c.ok()) << "byte " << byte << " bit " << bit;
      if (!c.ok()) {
        EXPECT_TRUE(contains(c.error().message, "/d/7.checkpoint")) << c.error().message;
      }
    }
  }
}

TEST(Checkpoint, GarbageAnotherVersionAndAnotherPartitionAreRefused) {
  TempDir dir{"ringfeed-checkpoint"};
  const std::string path = io::checkpoint_path(dir.path(), 1);

  const std::string text = "position=100\n.........";  // 22 + 2 bytes of text
  write_bytes(path, (text + "!!").data(), io::kCheckpointSize);
  auto c = io::read_checkpoint(dir.path(), 1);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(contains(c.error().message, "magic")) << c.error().message;

  // Version 2 with a valid CRC: refused by its version, not as damage.
  auto v2 = io::encode_checkpoint(1, 100);
  v2[4] = std::byte{2};
  const std::uint32_t crc = io::crc32c({v2.data(), 20});
  for (int i = 0; i < 4; ++i) v2[20 + i] = static_cast<std::byte>((crc >> (8 * i)) & 0xFF);
  write_bytes(path, v2.data(), v2.size());
  c = io::read_checkpoint(dir.path(), 1);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(contains(c.error().message, "version 2")) << c.error().message;

  // Partition 0's checkpoint copied to partition 1's name.
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, 100).ok());
  fs::copy_file(io::checkpoint_path(dir.path(), 0), path, fs::copy_options::overwrite_existing);
  c = io::read_checkpoint(dir.path(), 1);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(contains(c.error().message, "belongs to partition 0")) << c.error().message;
  EXPECT_TRUE(contains(c.error().message, path)) << c.error().message;
}

TEST(Checkpoint, WriteErrorsNameThePath) {
  auto s = io::write_checkpoint("/nonexistent-ringfeed-dir", 2, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ENOENT);
  EXPECT_TRUE(contains(s.error().message, "/nonexistent-ringfeed-dir/2.checkpoint"))
      << s.error().message;
}

TEST(Checkpoint, UnreadableCheckpointIsAnErrorNotZero) {
  TempDir dir{"ringfeed-checkpoint"};
  // A directory where the checkpoint should be: open works, read fails with EISDIR.
  fs::create_directory(io::checkpoint_path(dir.path(), 0));
  auto c = io::read_checkpoint(dir.path(), 0);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(contains(c.error().message, io::checkpoint_path(dir.path(), 0))) << c.error().message;
}
