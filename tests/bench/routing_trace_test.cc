#include "bench/routing_trace.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::bench {
namespace {

using ::testing::HasSubstr;

constexpr char kTrace[] =
    "# two tokens, two layers\n"
    "tokens 2 layers 2 experts 4 top_k 2\n"
    "0 1 2 3\n"
    "3 2 1 0\n";

TEST(RoutingTraceTest, ParsesAndSerializesBackToTheSameTrace) {
  auto trace = RoutingTrace::Parse(kTrace, "t");
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->tokens, 2);
  EXPECT_THAT(trace->At(1, 0), ::testing::ElementsAre(3, 2));
  auto again = RoutingTrace::Parse(trace->Serialize("again"), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ids, trace->ids);
}

TEST(RoutingTraceTest, ScaledLayersRepeatTheTraceLayersWithShiftedTokens) {
  auto trace = RoutingTrace::Parse(kTrace, "t");
  ASSERT_TRUE(trace.ok());
  // Layer 2 is trace layer 0 shifted by 97 tokens (odd: token 1).
  EXPECT_THAT(trace->Scaled(0, 2), ::testing::ElementsAre(3, 2));
  EXPECT_THAT(trace->Scaled(0, 1), ::testing::ElementsAre(2, 3));
}

TEST(RoutingTraceTest, BadTracesAreRejectedNamingTheLine) {
  const std::pair<std::string, std::string> cases[] = {
      {"tokens 1 layers 1 experts 4\n0 1\n", "expected \"tokens T"},
      {"tokens 1 layers 1 experts 4 top_k 2\n0 4\n", "t:2: expert id 4 out of range"},
      {"tokens 1 layers 1 experts 4 top_k 2\n1 1\n", "chosen twice"},
      {"tokens 1 layers 1 experts 4 top_k 2\n1\n", "expected 2 expert ids"},
      {"tokens 1 layers 1 experts 4 top_k 2\n0 1 2\n", "trailing fields"},
      {"tokens 2 layers 1 experts 4 top_k 2\n0 1\n", "1 token lines, header says 2"},
      {"tokens 1 layers 1 experts 4 top_k 5\n", "sizes out of range"},
      {"# nothing\n", "no header"},
  };
  for (const auto& [text, expected] : cases) {
    auto trace = RoutingTrace::Parse(text, "t");
    ASSERT_FALSE(trace.ok()) << text;
    EXPECT_THAT(std::string(trace.status().message()), HasSubstr(expected)) << text;
  }
}

TEST(RoutingTraceTest, TheBundledTraceLoads) {
  auto trace = RoutingTrace::Load(std::string(MOE_SOURCE_DIR) + "/bench/kjv_moe_routing.trace");
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->tokens, 1024);
  EXPECT_EQ(trace->layers, 4);
  EXPECT_EQ(trace->experts, 8);
}

}  // namespace
}  // namespace moe::bench
