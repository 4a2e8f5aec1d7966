// The offload layout's reader: every crafted bad manifest in tests/data/bad_offload fails
// with its expected message naming the file; a converted model (the `converted_models`
// ctest fixture) opens, and copies of it with truncated or padded data files, or a
// manifest that no longer matches them, are rejected naming the file.
#include "common/quant/offload_model.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/model_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe::quant {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const fs::path kBadDir = fs::path(MOE_SOURCE_DIR) / "tests" / "data" / "bad_offload";
const fs::path kConverted = fs::path(MOE_BINARY_DIR) / "converted" / "hqq_4_3";

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

using BadCase = testing_util::ExpectedError;

std::vector<BadCase> ReadExpectedErrors() {
  return testing_util::ReadExpectedErrorsTsv(kBadDir / "expected_errors.tsv");
}

TEST(BadManifestTest, ExpectedErrorsListsEveryFileInTheDirectory) {
  std::set<std::string> listed, on_disk;
  for (const BadCase& c : ReadExpectedErrors()) EXPECT_TRUE(listed.insert(c.file).second) << c.file;
  for (const auto& entry : fs::directory_iterator(kBadDir)) {
    if (entry.path().filename() != "expected_errors.tsv") on_disk.insert(entry.path().filename().string());
  }
  EXPECT_EQ(listed, on_disk) << "rerun tools/make_bad_manifests.py";
  EXPECT_GE(on_disk.size(), 40u);
}

TEST(BadManifestTest, EachFileFailsWithItsExpectedMessageNamingTheFile) {
  const std::vector<BadCase> cases = ReadExpectedErrors();
  ASSERT_FALSE(cases.empty());
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string path = (kBadDir / c.file).string();
    const auto m = ParseOffloadManifest(ReadText(kBadDir / c.file), path);
    ASSERT_FALSE(m.ok()) << "accepted a bad manifest";
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(m.status().message()), AllOf(StartsWith(path), HasSubstr(c.expected)));
  }
}

TEST(BadManifestTest, TheSeedManifestParses) {
  const auto m = ParseOffloadManifest(
      ReadText(fs::path(MOE_SOURCE_DIR) / "tests" / "data" / "offload_corpus" / "valid.json"), "valid.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->expert_spec.bits, 3);
  EXPECT_EQ(m->attn_spec.bits, 4);
  EXPECT_EQ(m->blob_offsets.size(), 32u);
}

TEST(ManifestRoundTripTest, SerializeThenParseGivesTheSameLayout) {
  const auto m = ParseOffloadManifest(ReadText(kConverted / kManifestFile), "manifest.json");
  ASSERT_TRUE(m.ok()) << m.status();
  const auto again = ParseOffloadManifest(SerializeOffloadManifest(*m), "again.json");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->blob_offsets, m->blob_offsets);
  EXPECT_EQ(again->dense_bytes, m->dense_bytes);
  EXPECT_EQ(again->expert.blob_bytes, m->expert.blob_bytes);
  ASSERT_EQ(again->dense.size(), m->dense.size());
  for (size_t i = 0; i < m->dense.size(); ++i) EXPECT_EQ(again->dense[i].offset, m->dense[i].offset);
}

// A copy of the converted model to break.
class ConvertedCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kConverted / kManifestFile)) << "run the converted_models fixture";
    fs::copy(kConverted, dir_.path() / "m", fs::copy_options::recursive);
    model_ = dir_.path() / "m";
  }
  testing_util::ScopedTempDir dir_{"offload_test"};
  fs::path model_;
};

TEST_F(ConvertedCopyTest, OpensAndReadsThroughModelDir) {
  auto dir = ModelDir::Open(model_.string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  ASSERT_NE(dir->offload, nullptr);
  EXPECT_EQ(dir->checkpoint, nullptr);
  EXPECT_EQ(dir->config.num_hidden_layers, 4);
  EXPECT_FALSE(dir->tokenizer_path.empty());
  const OffloadManifest& m = dir->offload->manifest();
  EXPECT_EQ(m.expert.blob_stride % kBlobAlignment, 0);
  EXPECT_EQ(m.experts_bytes, 32 * m.expert.blob_stride);
  std::vector<float> norm(256);
  EXPECT_TRUE(dir->offload->ReadDenseF32("model.norm.weight", norm.data()).ok());
}

TEST_F(ConvertedCopyTest, TruncatedExpertsFileIsRejectedNamingIt) {
  fs::resize_file(model_ / kExpertsFile, fs::file_size(model_ / kExpertsFile) - 4096);
  auto dir = ModelDir::Open(model_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(std::string(dir.status().message()),
              AllOf(HasSubstr((model_ / kExpertsFile).string()), HasSubstr("truncated")));
}

TEST_F(ConvertedCopyTest, PaddedDenseFileIsRejectedNamingIt) {
  std::ofstream(model_ / kDenseFile, std::ios::binary | std::ios::app) << "extra";
  auto dir = ModelDir::Open(model_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(std::string(dir.status().message()), HasSubstr((model_ / kDenseFile).string()));
}

TEST_F(ConvertedCopyTest, MissingExpertsFileIsRejected) {
  fs::remove(model_ / kExpertsFile);
  auto dir = ModelDir::Open(model_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(std::string(dir.status().message()), HasSubstr(kExpertsFile));
}

TEST_F(ConvertedCopyTest, BadManifestIsRejectedNamingIt) {
  std::ofstream(model_ / kManifestFile, std::ios::binary | std::ios::trunc) << "{\"format\": 1}";
  auto dir = ModelDir::Open(model_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(std::string(dir.status().message()),
              AllOf(StartsWith((model_ / kManifestFile).string()), HasSubstr("\"format\" is not a string")));
}

}  // namespace
}  // namespace moe::quant
