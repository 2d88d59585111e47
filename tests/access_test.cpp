// Access (invariant 5): segments are 0600 unless the fetcher names a group
// (--access-group), which then owns them: rings and the fetcher's segment readable by it
// (0640), group segments writable by it (0660). Modes are set explicitly, whatever the
// umask; no segment or checkpoint is ever world-accessible. Names from the command line
// cannot leave /dev/shm or the log directory.
//
// The two-user test runs the real `ringfeed fetch` as root and attaches from processes
// of two users it creates (useradd; removed at the end): one in the access group, one
// not. It is skipped when the tests do not run as root.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/framed_record.hpp"
#include "io/log_appender.hpp"
#include "ringfeed/consumer.hpp"
#include "shm/names.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

namespace shm = ringfeed::shm;
namespace io = ringfeed::io;
using namespace std::chrono_literals;
using ringfeed::test::spawn_program;
using ringfeed::test::TempDir;
using ringfeed::test::unique_ns;
using ringfeed::test::wait_child;
using ringfeed::test::wait_until;

namespace {

struct stat stat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

std::string shm_path(const std::string& name) {
  return std::string(shm::kShmDir) + name;
}

// Every ringfeed.<ns>.* segment is removed at scope end.
struct NamespaceCleanup {
  std::string ns;
  ~NamespaceCleanup() {
    for (const auto& name : shm::Segment::list("ringfeed." + ns + ".")) shm::Segment::remove(name);
  }
};

// Sets the umask for a scope.
struct Umask {
  explicit Umask(mode_t m) : old(::umask(m)) {}
  ~Umask() { ::umask(old); }
  mode_t old;
};

shm::Segment create_segment(const std::string& name, const shm::SegmentAccess& access = {}) {
  auto seg = shm::Segment::create(
      name, 4096, [](std::byte*) {}, access);
  EXPECT_TRUE(seg.ok()) << seg.error().message;
  return seg.ok() ? std::move(seg.value()) : shm::Segment{};
}

// Runs `ringfeed` with `args`; returns its exit status and what it said on stderr.
std::pair<int, std::string> run_cli(const std::vector<std::string>& args) {
  TempDir out{"ringfeed-access-cli"};
  const pid_t pid = spawn_program(RINGFEED_BIN, args, "", "", out.file("err"));
  const int status = wait_child(pid, 30s);
  std::string err;
  if (FILE* f = std::fopen(out.file("err").c_str(), "r")) {
    char buf[4096];
    const std::size_t n = std::fread(buf, 1, sizeof buf, f);
    err.assign(buf, n);
    std::fclose(f);
  }
  return {status, err};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Names

TEST(Names, OnlyLettersDigitsDashAndUnderscoreOfOneTo48Characters) {
  const std::vector<std::string> good_names = {"a", "orders", "Orders_2-b", std::string(48, 'x')};
  for (const std::string& good : good_names) {
    EXPECT_TRUE(shm::check_name("namespace", good).ok()) << good;
  }
  const std::vector<std::string> bad = {"",
                                        ".",
                                        "..",
                                        "../etc",
                                        "a/b",
                                        "/abs",
                                        "a\\b",
                                        "a.b",
                                        "a b",
                                        "a\nb",
                                        "caf\xc3\xa9",
                                        "~root",
                                        "$(x)",
                                        "*",
                                        std::string(49, 'x'),
                                        std::string("nul\0x", 5)};
  for (const auto& name : bad) {
    const auto r = shm::check_name("group", name);
    ASSERT_FALSE(r.ok()) << "'" << name << "' was accepted";
    EXPECT_EQ(r.error().message.rfind("group name '", 0), 0u) << r.error().message;
  }
  EXPECT_NE(shm::check_name("group", std::string(49, 'x')).error().message.find("1 to 48"),
            std::string::npos);
  EXPECT_NE(shm::check_name("group", "../etc").error().message.find("letters, digits"),
            std::string::npos);
}

TEST(Names, SegmentNamesStayInOneDirectoryEntry) {
  // What a checked name can make: one file name under /dev/shm, no separator.
  const std::string longest(48, 'n');
  for (const std::string& name :
       {shm::ring_segment_name(longest, 4095), shm::fetcher_segment_name(longest),
        shm::group_segment_name(longest, 4095, longest)}) {
    EXPECT_EQ(name.find('/'), std::string::npos) << name;
    EXPECT_EQ(name.rfind("ringfeed.", 0), 0u) << name;
    EXPECT_LT(name.size(), 255u) << "NAME_MAX";
  }
}

TEST(CliNames, NamesThatCouldLeaveTheirDirectoryExitTwo) {
  TempDir dir{"ringfeed-access-names"};
  const std::string src = "file:" + dir.path();
  const std::vector<std::string> bad = {"", "..", "../x", "a/b", "/tmp", std::string(49, 'n')};
  for (const auto& name : bad) {
    SCOPED_TRACE("name '" + name + "'");
    for (const auto& args :
         std::vector<std::vector<std::string>>{{"fetch", "--namespace", name, "--source", src},
                                               {"stat", "--namespace", name},
                                               {"consume", "--namespace", name, "--partition", "0",
                                                "--group", "g", "--mode", "shared"},
                                               {"consume", "--namespace", "n", "--partition", "0",
                                                "--group", name, "--mode", "shared"}}) {
      const auto [status, err] = run_cli(args);
      EXPECT_EQ(status, 2) << args[0] << ": " << err;
      EXPECT_NE(err.find(" name '" + name + "'"), std::string::npos) << err;
      EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line: " << err;
    }
  }
  // Partitions are numbers: nothing else names a log file.
  const auto [status, err] = run_cli({"produce", "--source", src, "--partition", "../0"});
  EXPECT_EQ(status, 2) << err;
  EXPECT_NE(err.find("flag --partition: '../0' is not a number"), std::string::npos) << err;
}

// ---------------------------------------------------------------------------------------
// Modes

TEST(SegmentModes, OwnerOnlyByDefaultWhateverTheUmask) {
  const std::string ns = unique_ns("mode");
  NamespaceCleanup cleanup{ns};
  Umask zero(0);
  const std::string name = "ringfeed." + ns + ".plain";
  const shm::Segment seg = create_segment(name);
  const struct stat st = stat_of(shm_path(name));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST(SegmentModes, AnAccessGroupOwnsTheSegmentAndReadsOrWritesIt) {
  const std::string ns = unique_ns("group-mode");
  NamespaceCleanup cleanup{ns};
  Umask open_to_all(0);
  const gid_t gid = ::getegid();  // a group this process may give segments to
  const std::string ring = shm::ring_segment_name(ns, 0);
  const shm::Segment r = create_segment(ring, {.group = gid});
  EXPECT_EQ(stat_of(shm_path(ring)).st_mode & 07777, 0640u);
  EXPECT_EQ(stat_of(shm_path(ring)).st_gid, gid);
  const std::string group = shm::group_segment_name(ns, 0, "g");
  const shm::Segment g = create_segment(group, shm::group_access_of_ring(ring));
  EXPECT_EQ(stat_of(shm_path(group)).st_mode & 07777, 0660u);
  EXPECT_EQ(stat_of(shm_path(group)).st_gid, gid);

  // A ring of its user only makes group segments of their creator only.
  const std::string ring1 = shm::ring_segment_name(ns, 1);
  const shm::Segment r1 = create_segment(ring1);
  const shm::SegmentAccess of_private = shm::group_access_of_ring(ring1);
  EXPECT_FALSE(of_private.shared());
  EXPECT_EQ(of_private.mode(), 0600u);
  EXPECT_FALSE(shm::group_access_of_ring(shm::ring_segment_name(ns, 7)).shared()) << "no ring";
}

TEST(SegmentModes, GroupsAreFoundByNameOrNumber) {
  const auto root = shm::find_group("root");
  ASSERT_TRUE(root.ok()) << root.error().message;
  EXPECT_EQ(root.value(), 0u);
  const auto by_number = shm::find_group("4321");
  ASSERT_TRUE(by_number.ok());
  EXPECT_EQ(by_number.value(), 4321u);
  for (const std::string bad : {"no-such-group-here", "", "../root", "99999999999"}) {
    const auto r = shm::find_group(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("no group '" + bad + "'"), std::string::npos);
  }
  const auto [status, err] = run_cli(
      {"fetch", "--namespace", "n", "--source", "file:/tmp", "--access-group", "no-such-group"});
  EXPECT_EQ(status, 2) << err;
  EXPECT_NE(err.find("flag --access-group: no group 'no-such-group'"), std::string::npos) << err;
}

TEST(CheckpointModes, CheckpointIsOwnerOnlyEvenOverALeftoverOpenToAll) {
  TempDir dir{"ringfeed-access-checkpoint"};
  Umask open_to_all(0);
  // A leftover temporary file of an earlier crash, writable by everyone.
  const std::string tmp = io::checkpoint_path(dir.path(), 0) + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) std::fclose(f);
  ASSERT_EQ(::chmod(tmp.c_str(), 0666), 0);
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 0, 0).ok());
  EXPECT_EQ(stat_of(io::checkpoint_path(dir.path(), 0)).st_mode & 07777, 0600u);
  ASSERT_TRUE(io::write_checkpoint(dir.path(), 1, 0).ok());
  EXPECT_EQ(stat_of(io::checkpoint_path(dir.path(), 1)).st_mode & 07777, 0600u);
}

// ---------------------------------------------------------------------------------------
// Another user

namespace {

// Runs a command and says whether it exited 0.
bool run(const std::vector<std::string>& argv) {
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  return wait_child(spawn_program(argv[0], args), 30s) == 0;
}

// A group and two users created for the test, removed at the end: `member` is in the
// group, `other` is not.
class TestUsers {
 public:
  TestUsers() : group("rfg" + std::to_string(::getpid())) {
    member.name = "rfm" + std::to_string(::getpid());
    other.name = "rfo" + std::to_string(::getpid());
    ok = run({"/usr/sbin/groupadd", group}) &&
         run({"/usr/sbin/useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", group,
              member.name}) &&
         run({"/usr/sbin/useradd", "-M", "-N", "-s", "/usr/sbin/nologin", other.name});
    if (!ok) return;
    for (User* u : {&member, &other}) {
      const passwd* pw = ::getpwnam(u->name.c_str());
      ok = ok && pw != nullptr;
      if (pw != nullptr) {
        u->uid = pw->pw_uid;
        u->gid = pw->pw_gid;
      }
    }
    const ::group* gr = ::getgrnam(group.c_str());
    ok = ok && gr != nullptr;
    if (gr != nullptr) gid = gr->gr_gid;
  }
  ~TestUsers() {
    run({"/usr/sbin/userdel", member.name});
    run({"/usr/sbin/userdel", other.name});
    run({"/usr/sbin/groupdel", group});
  }
  TestUsers(const TestUsers&) = delete;
  TestUsers& operator=(const TestUsers&) = delete;

  struct User {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
  };
  std::string group;
  gid_t gid = 0;
  User member, other;
  bool ok = false;
};

// In a child process that becomes `user` (with its groups): attaches to partition 0 of
// `ns` in a shared group and takes `expect` messages (0: expects the attach to be refused
// for want of permission). Exit status 0 when it went as expected.
int attach_as(const TestUsers::User& user, const std::string& ns, int expect) {
  const pid_t pid = ringfeed::test::fork_child([&]() -> int {
    if (::initgroups(user.name.c_str(), user.gid) != 0 || ::setgid(user.gid) != 0 ||
        ::setuid(user.uid) != 0) {
      return 10;
    }
    auto c = ringfeed::Consumer::attach(
        {.ns = ns, .partition = 0, .group = "g", .mode = ringfeed::Mode::shared});
    if (expect == 0) {
      if (c.ok()) return 11;
      std::fprintf(stderr, "refused as expected: %s\n", c.error().message.c_str());
      const bool says_where =
          c.error().message.find(shm::ring_segment_name(ns, 0)) != std::string::npos;
      return c.error().code == EACCES && says_where ? 0 : 12;
    }
    if (!c.ok()) {
      std::fprintf(stderr, "attach: %s\n", c.error().message.c_str());
      return 13;
    }
    int got = 0;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (got < expect && std::chrono::steady_clock::now() < deadline) {
      const ringfeed::Batch& b = (*c)->pop(16, 100ms);
      for (const ringfeed::Message& m : b) {
        if (m.value() != "m" + std::to_string(m.offset() / 1000)) return 14;
        ++got;
        if ((*c)->ack(m) != ringfeed::AckStatus::ok) return 15;
      }
    }
    return got == expect ? 0 : 16;
  });
  return wait_child(pid, 60s);
}

// In a child process that becomes `user`: attaches to partition 0 of `ns` in the exclusive
// group "x", takes the first message and rejects it, which the consumer stores in the
// fetcher's dead-letter log itself. Exit status 0 when it was stored.
int reject_as(const TestUsers::User& user, const std::string& ns) {
  const pid_t pid = ringfeed::test::fork_child([&]() -> int {
    if (::initgroups(user.name.c_str(), user.gid) != 0 || ::setgid(user.gid) != 0 ||
        ::setuid(user.uid) != 0) {
      return 10;
    }
    auto c = ringfeed::Consumer::attach(
        {.ns = ns, .partition = 0, .group = "x", .mode = ringfeed::Mode::exclusive});
    if (!c.ok()) {
      std::fprintf(stderr, "attach: %s\n", c.error().message.c_str());
      return 13;
    }
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      const ringfeed::Batch& b = (*c)->pop(1, 100ms);
      if (b.empty()) continue;
      if ((*c)->reject(b[0]) != ringfeed::AckStatus::ok) return 15;
      if ((*c)->dead_letters_dropped() != 0) {
        std::fprintf(stderr, "dead letter dropped: %s\n", (*c)->last_dead_letter_error().c_str());
        return 17;
      }
      return (*c)->dead_lettered() == 1 ? 0 : 18;
    }
    return 16;
  });
  return wait_child(pid, 60s);
}

// Groups of the dead-letter records in `path`.
std::vector<std::string> dead_letter_groups(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::string> groups;
  for (std::size_t at = 0; at < bytes.size();) {
    const auto r = io::decode(std::as_bytes(std::span(bytes)).subspan(at), at);
    if (r.status != io::DecodeStatus::ok) break;
    groups.emplace_back(r.record.group);
    at += r.size;
  }
  return groups;
}

// Modes of every segment of `ns`, checked against what each kind must have.
void expect_modes(const std::string& ns, gid_t gid, bool shared) {
  const auto names = shm::Segment::list("ringfeed." + ns + ".");
  EXPECT_FALSE(names.empty());
  for (const auto& name : names) {
    const struct stat st = stat_of(shm_path(name));
    EXPECT_EQ(st.st_mode & 07, 0u) << name << " is open to every user";
    const bool group_segment = name.find(".g.") != std::string::npos;
    const mode_t want = !shared ? 0600 : group_segment ? 0660 : 0640;
    EXPECT_EQ(st.st_mode & 07777, want) << name;
    if (shared) {
      EXPECT_EQ(st.st_gid, gid) << name;
    }
  }
}

}  // namespace

TEST(AccessGroup, AnotherUserAttachesOnlyThroughTheAccessGroup) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create users and switch to them";
  TestUsers users;
  ASSERT_TRUE(users.ok) << "useradd or groupadd failed";
  TempDir dir{"ringfeed-access"};
  {
    auto log = io::LogAppender::open(dir.log(0));
    ASSERT_TRUE(log.ok()) << log.error().message;
    // Values say their offset: m<offset / 1000>, offsets 0, 1000, 2000 (padding fills).
    for (int i = 0; i < 3; ++i) {
      const std::string value = "m" + std::to_string(i);
      const std::string pad(1000 - io::kLogHeaderSize - value.size(), 'p');
      const io::RecordView r{.key = pad, .value = value};
      ASSERT_TRUE(log->append({&r, 1}).ok());
    }
  }
  const std::string ns = unique_ns("access");
  NamespaceCleanup cleanup{ns};
  auto start_fetch = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"fetch",   "--namespace", ns, "--source",
                                     dir.uri(), "--ring-mb",   "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const pid_t pid = spawn_program(RINGFEED_BIN, args);
    // The ring under its own name (a listing by prefix also finds the temporary name it
    // is created under, before it is linked).
    const std::string ring = shm_path(shm::ring_segment_name(ns, 0));
    EXPECT_TRUE(wait_until(
        [&] {
          struct stat st {};
          return ::stat(ring.c_str(), &st) == 0;
        },
        10s));
    return pid;
  };
  auto stop_fetch = [&](pid_t pid) {
    ::kill(pid, SIGTERM);
    EXPECT_EQ(wait_child(pid, 30s), 0);
  };

  // Without --access-group: the fetcher's user only, even under umask 0.
  {
    Umask open_to_all(0);
    const pid_t fetch = start_fetch({});
    expect_modes(ns, 0, false);
    EXPECT_EQ(attach_as(users.member, ns, 0), 0) << "a member attached to a 0600 ring";
    EXPECT_EQ(attach_as(users.other, ns, 0), 0);
    stop_fetch(fetch);
  }
  // With it: members attach, create their group's segment, take and ack; the fetcher
  // serves that group (it commits what the member acked); others still cannot.
  {
    Umask open_to_all(0);
    const pid_t fetch = start_fetch({"--access-group", users.group});
    EXPECT_EQ(attach_as(users.other, ns, 0), 0) << "a user outside the group attached";
    EXPECT_EQ(attach_as(users.member, ns, 3), 0);
    const std::string group_segment = shm::group_segment_name(ns, 0, "g");
    EXPECT_EQ(stat_of(shm_path(group_segment)).st_uid, users.member.uid);
    expect_modes(ns, users.gid, true);
    EXPECT_TRUE(wait_until(
        [&] {
          const auto c = io::read_checkpoint(dir.path(), 0);
          return c.ok() && c.value() == 3000;
        },
        20s))
        << "the fetcher did not commit what the member acked";
    EXPECT_EQ(stat_of(io::checkpoint_path(dir.path(), 0)).st_mode & 07777, 0600u);
    // A member's exclusive consumer stores a dead letter in the fetcher's log, which the
    // group may append to and nobody else may touch. (A message for it: a new group starts
    // where the others are. The dead-letter directory is in the log directory, which the
    // members must be able to pass through.)
    ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
    {
      auto log = io::LogAppender::open(dir.log(0));
      ASSERT_TRUE(log.ok()) << log.error().message;
      const io::RecordView r{.value = "m3"};
      ASSERT_TRUE(log->append({&r, 1}).ok());
    }
    EXPECT_EQ(reject_as(users.member, ns), 0);
    const std::string dead_dir = dir.path() + "/" + ns + ".dead-letters";
    const std::string dead_log = dead_dir + "/0.log";
    EXPECT_EQ(dead_letter_groups(dead_log), std::vector<std::string>{"x"});
    EXPECT_EQ(stat_of(dead_log).st_mode & 07777, 0660u);
    EXPECT_EQ(stat_of(dead_log).st_gid, users.gid);
    EXPECT_EQ(stat_of(dead_dir).st_mode & 07777, 0750u);
    stop_fetch(fetch);
  }
  EXPECT_TRUE(shm::Segment::list("ringfeed." + ns + ".").empty());
}
