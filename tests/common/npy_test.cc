#include "common/npy.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(NpyTest, WriteThenReadRoundTrips) {
  const std::string path = ::testing::TempDir() + "/roundtrip.npy";
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(WriteNpyF32(path, {2, 3}, data).ok());
  auto read = ReadNpyF32(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(read->data, data);
  // The header is padded so that the data starts 64-byte aligned.
  EXPECT_EQ((std::filesystem::file_size(path) - data.size() * 4) % 64, 0u);
}

TEST(NpyTest, OneDimensionalShapeUsesTupleSyntax) {
  const std::string path = ::testing::TempDir() + "/vector.npy";
  ASSERT_TRUE(WriteNpyF32(path, {3}, std::vector<float>{1, 2, 3}).ok());
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(bytes.find("'shape': (3,)"), std::string::npos);
}

TEST(NpyTest, RejectsShapeDataMismatchAndGarbage) {
  EXPECT_FALSE(WriteNpyF32(::testing::TempDir() + "/x.npy", {2, 2}, std::vector<float>{1}).ok());
  const std::string path = ::testing::TempDir() + "/garbage.npy";
  std::ofstream(path) << "not numpy";
  const auto read = ReadNpyF32(path);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find(path), absl::string_view::npos);
}

}  // namespace
}  // namespace moe
