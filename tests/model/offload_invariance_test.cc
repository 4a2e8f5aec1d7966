// Offloading changes when experts move, never what the model computes: the bundled
// model's tokens are identical whatever the cache policy, cache size, speculative
// prefetch setting, baseline variant, or a policy swap and resize in the middle of a
// generation.
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "coordinator/generator.h"
#include "expert_worker/cache_policy.h"
#include "gtest/gtest.h"
#include "tools/cli/local_engine.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using expert_worker::Retention;

const std::string& ModelPath() {
  static const std::string path = (fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe").string();
  return path;
}

// Greedy and seeded-sampled continuations of a fixed prompt.
struct Outputs {
  std::vector<int> greedy, sampled;
  bool operator==(const Outputs& o) const { return greedy == o.greedy && sampled == o.sampled; }
};

class OffloadInvarianceTest : public ::testing::Test {
 protected:
  static constexpr int kTokens = 40;

  static Outputs Run(const EngineOptions& options, coordinator::SpeculationOptions speculation = {},
                     const std::function<void(LocalEngine&, int)>& on_token = nullptr) {
    auto engine = LocalEngine::Open(ModelPath(), options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return {};
    (*engine)->model().set_speculation(speculation);
    auto tokenizer = (*engine)->dir().LoadTokenizer();
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
    if (!tokenizer.ok()) return {};
    auto prompt = (*tokenizer)->Encode("And God said, Let there be", true);
    EXPECT_TRUE(prompt.ok());
    Outputs out;
    for (bool sample : {false, true}) {
      coordinator::GenerateOptions g;
      g.max_new_tokens = kTokens;
      g.stop_at_eos = false;
      if (sample) {
        g.sampling.temperature = 0.9f;
        g.sampling.top_p = 0.95f;
        g.sampling.seed = 7;
      }
      int produced = 0;
      auto result = coordinator::Generate((*engine)->model(), *prompt, g, [&](int) {
        if (on_token) on_token(**engine, produced);
        ++produced;
        return true;
      });
      EXPECT_TRUE(result.ok()) << result.status();
      if (result.ok()) (sample ? out.sampled : out.greedy) = result->tokens;
    }
    return out;
  }
  static const Outputs& Baseline() {
    static const Outputs baseline = Run(EngineOptions{});  // every expert resident
    return baseline;
  }
};

TEST_F(OffloadInvarianceTest, EveryPolicyAndCacheSizeGivesTheSameTokens) {
  ASSERT_EQ(Baseline().greedy.size(), size_t(kTokens));
  for (absl::string_view policy : absl::StrSplit(expert_worker::kCachePolicyNames, ", ")) {
    for (int slots : {1, 2, 5}) {
      EngineOptions options;
      options.experts.policy = std::string(policy);
      options.experts.cache_per_layer = slots;
      EXPECT_TRUE(Run(options) == Baseline()) << policy << ", " << slots << " slots";
    }
  }
}

TEST_F(OffloadInvarianceTest, EveryPrefetchSettingGivesTheSameTokens) {
  for (int lookahead : {1, 2, 3}) {
    for (int experts : {1, 2, 3}) {
      EngineOptions options;
      options.experts.cache_per_layer = 2;
      EXPECT_TRUE(Run(options, {lookahead, experts}) == Baseline())
          << "lookahead " << lookahead << ", " << experts << " experts";
    }
  }
}

TEST_F(OffloadInvarianceTest, BaselineVariantsGiveTheSameTokens) {
  EngineOptions no_cache;
  no_cache.experts.cache_per_layer = 2;
  no_cache.experts.retention = Retention::kDrop;
  EXPECT_TRUE(Run(no_cache) == Baseline()) << "no-cache";
  EngineOptions naive = no_cache;
  naive.load_whole_layer = true;
  EXPECT_TRUE(Run(naive) == Baseline()) << "naive";
}

TEST_F(OffloadInvarianceTest, PolicySwapAndResizeMidStreamGiveTheSameTokens) {
  EngineOptions options;
  options.experts.cache_per_layer = 3;
  uint64_t changes = 0, resizes = 0;
  const Outputs out = Run(options, {1, 2}, [&](LocalEngine& engine, int produced) {
    expert_worker::SlotCache& cache = *engine.cache();
    switch (produced % kTokens) {
      case 10:
        cache.SetPolicy(*expert_worker::MakeCachePolicy("lfu"));
        break;
      case 20:
        ASSERT_TRUE(cache.Resize(1).ok());
        break;
      case 30:
        cache.SetPolicy(*expert_worker::MakeCachePolicy("random"));
        ASSERT_TRUE(cache.Resize(6).ok());
        break;
    }
    changes = cache.Stats().policy_changes;
    resizes = cache.Stats().resizes;
  });
  EXPECT_TRUE(out == Baseline());
  EXPECT_EQ(changes, 4u);  // two per generation, greedy and sampled
  EXPECT_EQ(resizes, 4u);
}

// The guesses one and two layers ahead are far better than chance (2 of 8 experts:
// 25%), nearer guesses are better, and every distance up to the lookahead is scored.
TEST_F(OffloadInvarianceTest, GuessesBeatChanceAtEveryLookahead) {
  auto engine = LocalEngine::Open(ModelPath(), EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  (*engine)->model().set_speculation({3, 2});
  auto tokenizer = (*engine)->dir().LoadTokenizer();
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto prompt = (*tokenizer)->Encode("In the beginning God created", true);
  ASSERT_TRUE(prompt.ok());
  coordinator::GenerateOptions g;
  g.max_new_tokens = 48;
  ASSERT_TRUE(coordinator::Generate((*engine)->model(), *prompt, g, nullptr).ok());
  const coordinator::SpeculationStats stats = (*engine)->model().speculation_stats();
  for (int d = 1; d <= 3; ++d) {
    const coordinator::GuessScore& s = stats.by_distance[d - 1];
    EXPECT_GT(s.needed, 0u) << "distance " << d;
    if (d <= 2) {
      EXPECT_GT(s.recall(), 0.45) << "distance " << d;
    }
    std::printf("distance %d: recall %.3f over %llu choices\n", d, s.recall(),
                static_cast<unsigned long long>(s.needed));
  }
  EXPECT_GT(stats.by_distance[0].recall(), stats.by_distance[2].recall());
  EXPECT_EQ(stats.by_distance[3].needed, 0u);
}

}  // namespace
}  // namespace moe
