// The group list a fetcher leaves when it stops cleanly (runtime/group_list.hpp): what is
// written is read back the same, and a damaged file is refused naming line and field.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "../runtime/group_list.hpp"
#include "shm/process.hpp"

namespace {

using ringfeed::GroupList;
using ringfeed::Mode;
using ringfeed::shm::KeptGroup;

GroupList sample() {
  GroupList groups(3);
  groups[0].push_back({.name = "orders", .mode = Mode::shared, .settings = {1024, 5, 30000, {}}});
  groups[0].push_back({.name = "audit_v2",
                       .mode = Mode::broadcast,
                       .settings = {1, 5, 30000, {}},
                       .awaited = {0x0000123400abcdefull, 0x0000000700000001ull}});
  groups[2].push_back({.name = "k-s_1",
                       .mode = Mode::key_shared,
                       .settings = {65536, 63, 86400000, {10, 100, 1000, 0, 0, 0, 0, 86400000}}});
  return groups;
}

void expect_same(const GroupList& a, const GroupList& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t p = 0; p < a.size(); ++p) {
    ASSERT_EQ(a[p].size(), b[p].size()) << "partition " << p;
    for (std::size_t i = 0; i < a[p].size(); ++i) {
      const KeptGroup& x = a[p][i];
      const KeptGroup& y = b[p][i];
      EXPECT_EQ(x.name, y.name);
      EXPECT_EQ(x.mode, y.mode);
      EXPECT_EQ(x.settings.lease_window, y.settings.lease_window);
      EXPECT_EQ(x.settings.max_deliveries, y.settings.max_deliveries);
      EXPECT_EQ(x.settings.lease_ms, y.settings.lease_ms);
      EXPECT_EQ(x.settings.backoff_ms, y.settings.backoff_ms);
      EXPECT_EQ(x.awaited, y.awaited);
    }
  }
}

TEST(GroupList, WhatIsWrittenIsReadBack) {
  const std::string text = ringfeed::encode_group_list(sample());
  auto back = ringfeed::decode_group_list(text, "groups", 3);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expect_same(*back, sample());
}

TEST(GroupList, PartitionsTheSourceNoLongerHasAreLeftOut) {
  auto back = ringfeed::decode_group_list(ringfeed::encode_group_list(sample()), "groups", 1);
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].size(), 2u);
}

TEST(GroupList, ADamagedFileIsRefusedNamingTheLine) {
  const std::string head = "ringfeed-groups 1\n";
  const std::string ok = "0 shared g 1024 5 30000 0,0,0,0,0,0,0,0\n";
  struct Case {
    std::string text;
    std::string says;
  };
  const Case cases[] = {
      {"", "empty"},
      {"ringfeed-groups 2\n" + ok, "line 1: not a ringfeed group list"},
      {head + ok + "0 shared g 1024 5\n", "line 3: too few fields"},
      {head + "x shared g 1024 5 30000 0\n", "line 2: partition 'x'"},
      {head + "0 sharded g 1024 5 30000 0\n", "line 2: mode 'sharded'"},
      {head + "0 shared ../g 1024 5 30000 0\n", "line 2: "},
      {head + "0 shared g 1000 5 30000 0\n", "line 2: settings out of range"},
      {head + "0 shared g 1024 64 30000 0\n", "line 2: settings out of range"},
      {head + "0 shared g 1024 5 30000 1,2,3,4,5,6,7,8,9\n", "line 2: backoff"},
      {head + "0 shared g 1024 5 30000 1,,3\n", "line 2: backoff"},
      {head + "0 shared g 1024 5 30000 0 abc\n", "line 2: awaited consumer 'abc'"},
      {head + "0 broadcast g 1 5 30000 0 zz\n", "line 2: awaited consumer 'zz'"},
  };
  for (const Case& c : cases) {
    auto r = ringfeed::decode_group_list(c.text, "/state/groups", 4);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message.find("group list /state/groups"), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find(c.says), std::string::npos) << r.error().message;
  }
}

TEST(GroupList, NoFileIsNoGroupsAndASavedFileLoadsBack) {
  char dir[] = "/tmp/ringfeed-groups-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/state/groups";
  auto none = ringfeed::load_group_list(path, 3);
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_EQ(none->size(), 3u);
  for (const auto& p : *none) EXPECT_TRUE(p.empty());
  ASSERT_TRUE(ringfeed::save_group_list(path, sample()).ok());
  auto back = ringfeed::load_group_list(path, 3);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expect_same(*back, sample());
  std::filesystem::remove_all(dir);
}

}  // namespace
