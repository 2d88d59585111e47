// Process liveness as the reaper judges it (shm/process.hpp): the caller and its parent
// live; a reaped child, a zombie, a reused pid (another start time) and impossible words
// are dead; and a process that cannot read /proc (out of descriptors) does not take a
// live owner for dead.
#include "shm/process.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "test_support.hpp"

namespace shm = ringfeed::shm;

namespace {

TEST(Process, TheCallerAndItsParentLive) {
  EXPECT_TRUE(shm::owner_alive(shm::pack_owner(shm::self_identity())));
  const pid_t parent = ::getppid();
  EXPECT_TRUE(shm::owner_alive(shm::pack_owner({parent, shm::process_start_time(parent)})));
}

TEST(Process, AReapedChildAZombieAndAnotherStartTimeAreDead) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    const char one = 1;
    if (::write(ready[1], &one, 1) != 1) std::_Exit(2);
    ::pause();
    std::_Exit(0);
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  const auto owner = shm::pack_owner({child, shm::process_start_time(child)});
  EXPECT_TRUE(shm::owner_alive(owner));
  EXPECT_FALSE(shm::owner_alive(owner ^ 1)) << "the pid reused by another process";
  ::kill(child, SIGKILL);
  // Not reaped yet: a zombie, dead all the same.
  EXPECT_TRUE(ringfeed::test::wait_until([&] { return !shm::owner_alive(owner); }));
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_FALSE(shm::owner_alive(owner));
  EXPECT_FALSE(shm::owner_alive(0));
  EXPECT_FALSE(shm::owner_alive(shm::pack_owner({-5, 1})));
}

TEST(Process, AnOwnerIsNotTakenForDeadWhenProcCannotBeRead) {
  const auto parent = shm::pack_owner({::getpid(), shm::process_start_time(::getpid())});
  const pid_t child = ringfeed::test::fork_child([&] {
    const auto self = shm::pack_owner(shm::self_identity());
    const rlimit few{64, 64};  // so that using them all up is quick
    if (::setrlimit(RLIMIT_NOFILE, &few) != 0) return 4;
    std::vector<int> fds;
    for (;;) {  // use up every descriptor
      const int fd = ::dup(0);
      if (fd < 0) break;
      fds.push_back(fd);
    }
    if (errno != EMFILE) return 3;
    const bool ok = shm::owner_alive(parent) && shm::owner_alive(self);
    for (int fd : fds) ::close(fd);
    return ok ? 0 : 1;
  });
  EXPECT_EQ(ringfeed::test::wait_child(child), 0) << "1: a live owner was taken for dead";
}

}  // namespace
