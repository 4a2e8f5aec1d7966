// Log lines carry severity, UTC time and pid; --log-level's names and filtering.
#include "common/logging.h"

#include <unistd.h>

#include <regex>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moe::logging {
namespace {

TEST(LoggingTest, LineCarriesSeverityUtcTimeToTheMicrosecondPidAndPlace) {
  const Severity saved = MinSeverity();
  SetMinSeverity(Severity::kInfo);
  testing::internal::CaptureStderr();
  MOE_LOG(WARNING) << "disk is " << 93 << "% full";
  const std::string line = testing::internal::GetCapturedStderr();
  SetMinSeverity(saved);
  const std::regex format(absl::StrCat(
      R"(W 20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\.[0-9]{6}Z )",
      ::getpid(), R"( logging_test\.cc:[0-9]+\] disk is 93% full\n)"));
  EXPECT_TRUE(std::regex_match(line, format)) << line;
}

TEST(LoggingTest, MessagesBelowTheLevelAreDropped) {
  const Severity saved = MinSeverity();
  SetMinSeverity(Severity::kWarning);
  testing::internal::CaptureStderr();
  MOE_LOG(DEBUG) << "debug line";
  MOE_LOG(INFO) << "info line";
  MOE_LOG(WARNING) << "warning line";
  MOE_LOG(ERROR) << "error line";
  std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.find("debug line"), std::string::npos);
  EXPECT_EQ(out.find("info line"), std::string::npos);
  EXPECT_NE(out.find("warning line"), std::string::npos);
  EXPECT_NE(out.find("error line"), std::string::npos);

  SetMinSeverity(Severity::kDebug);
  testing::internal::CaptureStderr();
  MOE_LOG(DEBUG) << "debug line";
  out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.rfind("D ", 0), 0u) << out;
  EXPECT_NE(out.find("debug line"), std::string::npos);
  SetMinSeverity(saved);
}

TEST(LoggingTest, LevelNamesParseInAnyCaseAndABadOneNamesTheChoices) {
  EXPECT_EQ(*ParseSeverity("debug"), Severity::kDebug);
  EXPECT_EQ(*ParseSeverity("INFO"), Severity::kInfo);
  EXPECT_EQ(*ParseSeverity("Warning"), Severity::kWarning);
  EXPECT_EQ(*ParseSeverity("error"), Severity::kError);
  const absl::StatusOr<Severity> bad = ParseSeverity("verbose");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("debug, info, warning, error"), std::string::npos);
  EXPECT_FALSE(ParseSeverity("fatal").ok());  // fatal lines cannot be silenced
}

}  // namespace
}  // namespace moe::logging
