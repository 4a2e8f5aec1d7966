// Issue 18, item 4: with a stop string of two or more bytes the hold-back cut text at
// byte offsets, and 166 of 6000 sampled responses split a multi-byte character (the
// coordinator failed to serialise them; clients saw INTERNAL).
#include "coordinator/stop_string_filter.h"

#include <random>
#include <string>
#include <vector>

#include "common/unicode_text.h"
#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

TEST(StopStringFilterTest, EveryPieceSentIsValidUtf8WhateverTheStopStrings) {
  const std::vector<std::string> chars = {"a", " ", "é", "ß", "€", "中", "文", "😀", "𝄞", "\n"};
  std::mt19937 rng(1);
  int stopped_count = 0;
  for (int trial = 0; trial < 6000; ++trial) {
    std::vector<std::string> pieces;
    std::string text;
    const int n = 1 + int(rng() % 30);
    for (int i = 0; i < n; ++i) {
      std::string piece;
      for (int c = 1 + int(rng() % 3); c > 0; --c) piece += chars[rng() % chars.size()];
      pieces.push_back(piece);
      text += piece;
    }
    // Stop strings of 2 to 12 bytes, some of them present in the text.
    std::vector<std::string> stops;
    for (int s = 1 + int(rng() % 2); s > 0; --s) {
      std::string stop;
      while (stop.size() < 2) stop += chars[rng() % chars.size()];
      stops.push_back(stop);
    }
    StopStringFilter filter(stops);
    std::string sent;
    bool stopped = false;
    for (const std::string& piece : pieces) {
      const std::string out = filter.Push(piece, &stopped);
      ASSERT_TRUE(IsValidUtf8(out)) << "trial " << trial;
      sent += out;
      if (stopped) break;
    }
    if (!stopped) {
      const std::string tail = filter.Flush();
      ASSERT_TRUE(IsValidUtf8(tail));
      sent += tail;
      EXPECT_EQ(sent, text);
    } else {
      ++stopped_count;
      size_t first = std::string::npos;
      for (const auto& s : stops) first = std::min(first, text.find(s));
      EXPECT_EQ(sent, text.substr(0, first)) << "trial " << trial;
    }
  }
  EXPECT_GT(stopped_count, 100);  // the stop path was exercised too
}

TEST(StopStringFilterTest, HoldsBackOnlyWhatCouldStillBecomeAStopString) {
  StopStringFilter filter({"END"});
  bool stopped = false;
  EXPECT_EQ(filter.Push("hello E", &stopped), "hello");  // " E" may start "END"
  EXPECT_EQ(filter.Push("N", &stopped), " ");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(filter.Push("D and more", &stopped), "");
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace moe::coordinator
