// ParseProtoChecked: bytes that gRPC's parse would refuse with INTERNAL (a proto3 string
// that is not UTF-8) are INVALID_ARGUMENT naming the field, at any depth (issue 18,
// item 10).
#include "common/proto_parse.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/generation.pb.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

// A request whose strings are replaced on the wire: protobuf will not serialise bad UTF-8,
// so the test writes a placeholder of the same length and patches the bytes.
std::string WithBytes(const v1::GenerateRequest& request, const std::string& placeholder,
                      const std::string& bad) {
  std::string wire = request.SerializeAsString();
  const size_t at = wire.find(placeholder);
  EXPECT_NE(at, std::string::npos);
  wire.replace(at, bad.size(), bad);
  return wire;
}

TEST(ProtoParseTest, AValidRequestParsesAsUsual) {
  v1::GenerateRequest request;
  request.set_prompt("In the beginning — é 中");
  request.add_stop("END");
  v1::GenerateRequest parsed;
  ASSERT_TRUE(ParseProtoChecked(request.SerializeAsString(), &parsed).ok());
  EXPECT_EQ(parsed.prompt(), request.prompt());
  EXPECT_EQ(parsed.stop(0), "END");
}

TEST(ProtoParseTest, BadUtf8IsInvalidArgumentNamingTheField) {
  v1::GenerateRequest prompt;
  prompt.set_prompt("abcXY");
  v1::GenerateRequest parsed;
  absl::Status status = ParseProtoChecked(WithBytes(prompt, "XY", "\xC3\x28"), &parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("prompt is not valid UTF-8 (first bad byte at offset 3)"));

  v1::GenerateRequest chat;
  chat.add_messages()->set_content("fine");
  chat.add_messages()->set_content("badXY");
  status = ParseProtoChecked(WithBytes(chat, "XY", "\xFF\xFE"), &parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("messages[1].content is not valid UTF-8"));

  v1::GenerateRequest stops;
  stops.add_stop("a");
  stops.add_stop("b");
  stops.add_stop("XY");
  status = ParseProtoChecked(WithBytes(stops, "XY", "\xED\xA0"), &parsed);
  EXPECT_THAT(status.message(), HasSubstr("stop[2] is not valid UTF-8"));
}

TEST(ProtoParseTest, BytesThatAreNotTheMessageAreInvalidArgument) {
  v1::GenerateRequest parsed;
  for (const std::string wire : {std::string("\xFF\xFF\xFF"), std::string("\x0A\x10short")}) {
    const absl::Status status = ParseProtoChecked(wire, &parsed);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("moe.v1.GenerateRequest"));
  }
}

}  // namespace
}  // namespace moe
