#include "expert_worker/cache_policy.h"

#include <set>

#include "gtest/gtest.h"

namespace moe::expert_worker {
namespace {

// Feeds a policy the events of a 3-expert trace on layer 0 and asks for a victim among
// all three.
int VictimAfter(CachePolicy& p, const std::vector<std::pair<char, int>>& events) {
  for (const auto& [kind, expert] : events) {
    if (kind == 'i') p.OnInsert(0, expert);
    if (kind == 'h') p.OnHit(0, expert);
  }
  const int candidates[] = {0, 1, 2};
  return p.ChooseVictim(0, candidates);
}

// Trace: insert 0, 1, 2; hit 0 three times; hit 1.
const std::vector<std::pair<char, int>> kTrace = {{'i', 0}, {'i', 1}, {'i', 2},
                                                  {'h', 0}, {'h', 0}, {'h', 0}, {'h', 1}};

TEST(CachePolicyTest, LruEvictsTheLeastRecentlyUsed) {
  LruPolicy p;
  EXPECT_EQ(VictimAfter(p, kTrace), 2);
}

TEST(CachePolicyTest, LfuEvictsTheLeastUsedWithRecencyBreakingTies) {
  LfuPolicy p;
  EXPECT_EQ(VictimAfter(p, kTrace), 2);  // 0: 4 uses, 1: 2, 2: 1
  LfuPolicy q;
  EXPECT_EQ(VictimAfter(q, {{'i', 0}, {'i', 1}, {'i', 2}}), 0);  // all 1: oldest
}

TEST(CachePolicyTest, FifoIgnoresHits) {
  FifoPolicy p;
  EXPECT_EQ(VictimAfter(p, kTrace), 0);  // first in, despite its hits
}

TEST(CachePolicyTest, DecayingLfuForgetsOldPopularityWherePlainLfuDoesNot) {
  // 0 had 5 uses long ago; 1 and 2 have had 3 each since.
  std::vector<std::pair<char, int>> trace = {{'i', 0}, {'h', 0}, {'h', 0}, {'h', 0}, {'h', 0},
                                             {'i', 1}, {'i', 2}};
  for (int i = 0; i < 2; ++i) {
    trace.push_back({'h', 1});
    trace.push_back({'h', 2});
  }
  DecayingLfuPolicy decaying(/*half_life=*/2.0);
  EXPECT_EQ(VictimAfter(decaying, trace), 0);
  LfuPolicy plain;
  EXPECT_NE(VictimAfter(plain, trace), 0);
}

TEST(CachePolicyTest, RandomPicksOnlyCandidatesAndRepeatsWithTheSeed) {
  RandomPolicy a(5), b(5);
  const int candidates[] = {3, 5, 7};
  std::set<int> seen;
  for (int i = 0; i < 50; ++i) {
    const int v = a.ChooseVictim(0, candidates);
    EXPECT_EQ(v, b.ChooseVictim(0, candidates));
    seen.insert(v);
  }
  EXPECT_EQ(seen, (std::set<int>{3, 5, 7}));
}

TEST(CachePolicyTest, MakeCachePolicyKnowsEveryName) {
  for (const char* name : {"lru", "lfu", "fifo", "random", "lfu-decay"}) {
    auto p = MakeCachePolicy(name);
    ASSERT_TRUE(p.ok()) << name;
    EXPECT_EQ((*p)->name(), name);
  }
  const auto bad = MakeCachePolicy("belady");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("lfu-decay"), absl::string_view::npos);
}

}  // namespace
}  // namespace moe::expert_worker
