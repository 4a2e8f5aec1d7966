#include "coordinator/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 0.5f, 2.9f};

TEST(SamplerTest, ZeroTemperatureIsArgmax) {
  Sampler sampler(SamplingParams{.temperature = 0.0f});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sampler.Sample(kLogits), 1);
}

// Issue 18, item 9: 1e-38..1e-45 overflowed logits / T to inf, inf - inf to NaN, and the
// least likely tokens came out ("QQQQ..."). The limit T -> 0 is greedy.
TEST(SamplerTest, TinyPositiveTemperaturesPickTheMostLikelyToken) {
  const std::vector<float> negative = {-3.0f, -1.0f, -2.0f};
  for (float t : {1e-38f, 1e-40f, 1e-45f, std::numeric_limits<float>::denorm_min()}) {
    SCOPED_TRACE(t);
    Sampler sampler(SamplingParams{.temperature = t, .seed = 7});
    for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(kLogits), 1);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(negative), 1);
    Sampler nucleus(SamplingParams{.temperature = t, .top_k = 3, .top_p = 0.5f, .seed = 7});
    for (int i = 0; i < 20; ++i) EXPECT_EQ(nucleus.Sample(kLogits), 1);
  }
}

TEST(SamplerTest, TopKOneIsArgmaxAtAnyTemperature) {
  Sampler sampler(SamplingParams{.temperature = 5.0f, .top_k = 1, .seed = 3});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sampler.Sample(kLogits), 1);
}

TEST(SamplerTest, SameSeedSameSequence) {
  SamplingParams params{.temperature = 1.0f, .seed = 42};
  Sampler a(params), b(params);
  std::vector<int> sa, sb;
  for (int i = 0; i < 100; ++i) {
    sa.push_back(a.Sample(kLogits));
    sb.push_back(b.Sample(kLogits));
  }
  EXPECT_EQ(sa, sb);
  Sampler c(SamplingParams{.temperature = 1.0f, .seed = 43});
  std::vector<int> sc;
  for (int i = 0; i < 100; ++i) sc.push_back(c.Sample(kLogits));
  EXPECT_NE(sa, sc);
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  Sampler sampler(SamplingParams{.temperature = 1.0f, .seed = 7});
  const int draws = 40000;
  std::map<int, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(kLogits)];
  double total = 0;
  for (float l : kLogits) total += std::exp(l);
  for (int id = 0; id < 5; ++id) {
    const double p = std::exp(kLogits[id]) / total;
    // Five standard deviations of a binomial count.
    EXPECT_NEAR(counts[id], p * draws, 5 * std::sqrt(draws * p * (1 - p)) + 1) << id;
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // Probabilities at T=1: ids 1 and 4 hold ~0.63 of the mass together; top_p=0.5 keeps
  // both (id 1 alone is ~0.33 < 0.5) and never draws the others.
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_p = 0.5f, .seed = 1});
  std::map<int, int> counts;
  for (int i = 0; i < 2000; ++i) ++counts[sampler.Sample(kLogits)];
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[4], 0);
  EXPECT_EQ(counts[1] + counts[4], 2000);
}

TEST(SamplerTest, ValidateRejectsOutOfRangeParams) {
  EXPECT_FALSE(SamplingParams{.temperature = -1.0f}.Validate().ok());
  EXPECT_FALSE(SamplingParams{.top_k = -2}.Validate().ok());
  EXPECT_FALSE(SamplingParams{.top_p = 0.0f}.Validate().ok());
  EXPECT_FALSE(SamplingParams{.top_p = 1.5f}.Validate().ok());
  EXPECT_TRUE((SamplingParams{.temperature = 0.8f, .top_k = 40, .top_p = 0.9f}.Validate().ok()));
}

}  // namespace
}  // namespace moe::coordinator
