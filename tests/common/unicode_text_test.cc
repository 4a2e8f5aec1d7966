#include "common/unicode_text.h"

#include <string>

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(UnicodeTextTest, AcceptsWellFormedTextAndRefusesTheRest) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("é ß € 中文 😀 \xF4\x8F\xBF\xBF"));
  for (const std::string bad : {std::string("\xC3"), std::string("\xC0\xAF"),  // truncated, overlong
                                std::string("\xE0\x80\xAF"), std::string("\xED\xA0\x80"),  // surrogate
                                std::string("\xF4\x90\x80\x80"), std::string("\xFF"),
                                std::string("ok\x80"), std::string("\xE4\xB8")}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad.size();
  }
  const absl::Status status = CheckUtf8("prompt", "abc\xFF");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "prompt is not valid UTF-8 (first bad byte at offset 3)");
}

TEST(UnicodeTextTest, BoundariesNeverFallInsideACharacter) {
  const std::string text = "a€😀b";  // 1 + 3 + 4 + 1 bytes
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 0), 0u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 1), 1u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 2), 1u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 3), 1u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 4), 4u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 7), 4u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 8), 8u);
  EXPECT_EQ(Utf8BoundaryAtOrBefore(text, 100), 100u);
}

}  // namespace
}  // namespace moe
