// Safetensors parsing: a valid file, every crafted bad file kept in tests/data (made by
// tools/make_bad_inputs.py), and sharded checkpoints whose index is wrong.
#include "common/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const fs::path kDataDir = fs::path(MOE_SOURCE_DIR) / "tests" / "data";

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void WriteBytes(const fs::path& path, absl::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), bytes.size());
  ASSERT_TRUE(out.good()) << path;
}

absl::Span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

using testing_util::ScopedTempDir;

// One F32 tensor for the file writer below: `values` fill `shape`.
struct F32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// A well-formed safetensors file holding `tensors` back to back in the given order.
std::string SafetensorsBytes(const std::vector<F32Tensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const F32Tensor& t : tensors) {
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(t.values.data()), t.values.size() * 4);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
  return out + text + data;
}

// ---------------------------------------------------------------------------------------
// A valid file.

TEST(SafetensorsHeaderTest, ValidFileParsesDtypesShapesOffsetsAndMetadata) {
  const fs::path path = kDataDir / "safetensors_corpus" / "two_tensors_with_metadata.safetensors";
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status();

  ASSERT_EQ((*file)->tensors().size(), 2u);
  const TensorInfo* a = (*file)->Find("a");
  const TensorInfo* b = (*file)->Find("b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ((*file)->Find("c"), nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->ShapeString(), "[2, 3]");
  EXPECT_EQ(a->begin, 0u);
  EXPECT_EQ(a->end, 24u);
  EXPECT_EQ(a->NumElements(), 6);
  EXPECT_EQ(b->dtype, DType::kF16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(b->begin, 24u);
  EXPECT_EQ(b->end, 32u);
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));

  // Data() is the tensor's bytes: a = 0..5 as F32, b = [1, -2, 0.5, 4] as F16.
  std::vector<float> values(6);
  ASSERT_EQ((*file)->Data(*a).size(), 24u);
  ConvertToF32((*file)->Data(*a).data(), a->dtype, 6, values.data());
  EXPECT_EQ(values, (std::vector<float>{0, 1, 2, 3, 4, 5}));
  values.resize(4);
  ASSERT_EQ((*file)->Data(*b).size(), 8u);
  ConvertToF32((*file)->Data(*b).data(), b->dtype, 4, values.data());
  EXPECT_EQ(values, (std::vector<float>{1, -2, 0.5, 4}));

  // The header length field says where the data starts.
  const std::string bytes = ReadBytes(path);
  auto header = ParseSafetensorsHeader(AsBytes(bytes));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->data_offset, bytes.size() - 32);
}

TEST(SafetensorsHeaderTest, EverySeedCorpusFileIsValid) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(kDataDir / "safetensors_corpus")) {
    auto file = SafetensorsFile::Open(entry.path().string());
    EXPECT_TRUE(file.ok()) << file.status();
    ++count;
  }
  EXPECT_GE(count, 2);
}

TEST(SafetensorsHeaderTest, EmptyHeaderAndZeroSizedTensorsAreValid) {
  const std::string empty = ReadBytes(kDataDir / "safetensors_corpus" / "empty_header.safetensors");
  auto header = ParseSafetensorsHeader(AsBytes(empty));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_TRUE(header->tensors.empty());

  const std::string bytes = SafetensorsBytes({{"z", {0, 3}, {}}, {"w", {1}, {7}}});
  header = ParseSafetensorsHeader(AsBytes(bytes));
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[0].name, "z");  // sorted by byte range
  EXPECT_EQ(header->tensors[0].NumBytes(), 0u);
}

TEST(SafetensorsHeaderTest, HeaderPaddedWithSpacesParses) {
  // The reference writer pads the header with spaces to a multiple of 8 bytes.
  const std::string text = R"({"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  std::string padded = text + std::string(8 - text.size() % 8, ' ');
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(padded.size());
  bytes += padded + std::string("\x80\x3f\x00\x40", 4);
  const auto header = ParseSafetensorsHeader(AsBytes(bytes));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->data_offset, 8 + padded.size());
  ASSERT_EQ(header->tensors.size(), 1u);
  EXPECT_EQ(header->tensors[0].dtype, DType::kBF16);
}

TEST(SafetensorsHeaderTest, ZeroSizedTensorWithHugeOtherDimensionsHasNoElements) {
  // 2^32 * 2^31 * 0: the leading product passes 2^63 on the way to 0.
  const std::string bytes =
      ReadBytes(kDataDir / "safetensors_corpus" / "zero_size_huge_dims.safetensors");
  const auto header = ParseSafetensorsHeader(AsBytes(bytes));
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->tensors.size(), 1u);
  EXPECT_EQ(header->tensors[0].NumElements(), 0);
  EXPECT_EQ(header->tensors[0].NumBytes(), 0u);
}

// ---------------------------------------------------------------------------------------
// The crafted bad files: tests/data/bad_safetensors/expected_errors.tsv lists each with a
// substring its error must contain.

using BadCase = testing_util::ExpectedError;

std::vector<BadCase> ReadExpectedErrors() {
  return testing_util::ReadExpectedErrorsTsv(kDataDir / "bad_safetensors" / "expected_errors.tsv");
}

TEST(BadSafetensorsTest, ExpectedErrorsListsEveryFileInTheDirectory) {
  std::set<std::string> listed;
  for (const BadCase& c : ReadExpectedErrors()) {
    EXPECT_TRUE(listed.insert(c.file).second) << c.file << " listed twice";
  }
  std::set<std::string> on_disk;
  for (const auto& entry : fs::directory_iterator(kDataDir / "bad_safetensors")) {
    const std::string name = entry.path().filename().string();
    if (name != "expected_errors.tsv") on_disk.insert(name);
  }
  EXPECT_EQ(listed, on_disk) << "rerun tools/make_bad_inputs.py";
  EXPECT_GE(on_disk.size(), 30u);
}

TEST(BadSafetensorsTest, EachFileFailsWithItsExpectedMessageNamingTheFile) {
  const std::vector<BadCase> cases = ReadExpectedErrors();
  ASSERT_FALSE(cases.empty());
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.file);
    const fs::path path = kDataDir / "bad_safetensors" / c.file;
    const std::string bytes = ReadBytes(path);

    const auto header = ParseSafetensorsHeader(AsBytes(bytes));
    ASSERT_FALSE(header.ok()) << "parsed a bad file";
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(header.status().message()), HasSubstr(c.expected));

    const auto file = SafetensorsFile::Open(path.string());
    ASSERT_FALSE(file.ok());
    const std::string message(file.status().message());
    EXPECT_THAT(message, StartsWith(path.string() + ": "));
    EXPECT_THAT(message, HasSubstr(c.expected));
    // One printable line, whatever bytes the file holds.
    for (char ch : message) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f) << message;
  }
}

TEST(BadSafetensorsTest, EveryTruncationOfAValidFileIsRejectedWithoutReadingPastIt) {
  const std::string valid = ReadBytes(kDataDir / "safetensors_corpus" /
                                      "two_tensors_with_metadata.safetensors");
  for (size_t n = 0; n < valid.size(); ++n) {
    // An exact-size heap copy, so a sanitizer build catches any read past the end.
    const std::vector<uint8_t> prefix(valid.begin(), valid.begin() + n);
    EXPECT_FALSE(ParseSafetensorsHeader(prefix).ok()) << n << " bytes";
  }
  EXPECT_TRUE(ParseSafetensorsHeader(AsBytes(valid)).ok());
}

TEST(BadSafetensorsTest, MissingFileAndDirectoryAreRefusedByPath) {
  ScopedTempDir tmp;
  const auto missing = SafetensorsFile::Open((tmp.path() / "nope.safetensors").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.safetensors"));

  const auto dir = SafetensorsFile::Open(tmp.path().string());
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(std::string(dir.status().message()), HasSubstr("not a regular file"));

  // A named pipe with no writer: opening it for reading must not wait for one.
  const fs::path fifo = tmp.path() / "model.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto pipe = SafetensorsFile::Open(fifo.string());
  ASSERT_FALSE(pipe.ok());
  EXPECT_THAT(std::string(pipe.status().message()),
              AllOf(StartsWith(fifo.string() + ": "), HasSubstr("not a regular file")));
}

// ---------------------------------------------------------------------------------------
// Checkpoint directories.

constexpr char kIndex[] = "model.safetensors.index.json";

TEST(CheckpointTest, SingleFileCheckpointReadsTensors) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / "model.safetensors",
             SafetensorsBytes({{"x", {2, 2}, {1, 2, 3, 4}}, {"y", {3}, {5, 6, 7}}}));
  auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->TensorNames(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*ckpt)->TotalBytes(), 28u);
  std::vector<float> x(4);
  ASSERT_TRUE((*ckpt)->ReadF32("x", {2, 2}, x.data()).ok());
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3, 4}));
}

TEST(CheckpointTest, ReadF32OfTheWrongShapeNamesFileTensorAndBothShapes) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / "model.safetensors", SafetensorsBytes({{"x", {2, 2}, {1, 2, 3, 4}}}));
  auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<float> x(4);
  const absl::Status status = (*ckpt)->ReadF32("x", {4, 1}, x.data());
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("\"x\""), HasSubstr("[2, 2]"),
                    HasSubstr("[4, 1]")));
  const absl::Status missing = (*ckpt)->ReadF32("nope", {1}, x.data());
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("\"nope\""));
}

TEST(CheckpointTest, ShardedCheckpointFindsEachTensorInItsShard) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / "model-00001-of-00002.safetensors", SafetensorsBytes({{"x", {1}, {1}}}));
  WriteBytes(tmp.path() / "model-00002-of-00002.safetensors", SafetensorsBytes({{"y", {2}, {2, 3}}}));
  WriteBytes(tmp.path() / kIndex, R"({"metadata": {"total_size": 12}, "weight_map": {
      "x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}})");
  auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto y = (*ckpt)->Find("y");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->file->path(), HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_EQ((*ckpt)->TotalBytes(), 12u);
}

struct ShardName {
  const char* label;  // the test's name
  const char* shard;
};

class ShardNameEscapesTest : public ::testing::TestWithParam<ShardName> {};

TEST_P(ShardNameEscapesTest, IsRefusedNamingTheIndex) {
  ScopedTempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  fs::create_directories(dir / "sub");
  // Real, valid files where each escaping name points, so only the name check can refuse.
  const std::string valid = SafetensorsBytes({{"x", {1}, {1}}});
  WriteBytes(tmp.path() / "x.safetensors", valid);
  WriteBytes(dir / "sub" / "dir.safetensors", valid);
  nlohmann::json index = {{"weight_map", {{"x", GetParam().shard}}}};
  WriteBytes(dir / kIndex, index.dump());

  const auto ckpt = Checkpoint::Open(dir.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()),
              AllOf(StartsWith((dir / kIndex).string() + ": "),
                    HasSubstr("is not a file name inside the checkpoint directory")));
}

INSTANTIATE_TEST_SUITE_P(
    Names, ShardNameEscapesTest,
    ::testing::Values(ShardName{"ParentDirectory", "../x.safetensors"},
                      ShardName{"AbsolutePath", "/etc/passwd"},
                      ShardName{"Subdirectory", "sub/dir.safetensors"},
                      ShardName{"DotDot", ".."}, ShardName{"Dot", "."}, ShardName{"Empty", ""}),
    [](const ::testing::TestParamInfo<ShardName>& info) { return info.param.label; });

TEST(CheckpointTest, IndexMappingATensorToAShardWithoutItNamesTensorAndShard) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / "shard.safetensors", SafetensorsBytes({{"x", {1}, {1}}}));
  WriteBytes(tmp.path() / kIndex,
             R"({"weight_map": {"x": "shard.safetensors", "y": "shard.safetensors"}})");
  const auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ckpt.status().message()),
              AllOf(StartsWith((tmp.path() / kIndex).string() + ": "), HasSubstr("\"y\""),
                    HasSubstr("shard.safetensors"), HasSubstr("does not contain it")));
}

TEST(CheckpointTest, IndexThatIsNotJsonIsRefusedNamingTheIndex) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / kIndex, "{\"weight_map\": {");
  const auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()),
              AllOf(StartsWith((tmp.path() / kIndex).string() + ": "),
                    HasSubstr("index is not valid JSON")));
}

TEST(CheckpointTest, IndexWithoutWeightMapObjectIsRefused) {
  for (const char* text : {R"({"metadata": {}})", R"({"weight_map": ["x"]})"}) {
    ScopedTempDir tmp;
    WriteBytes(tmp.path() / kIndex, text);
    const auto ckpt = Checkpoint::Open(tmp.path().string());
    ASSERT_FALSE(ckpt.ok()) << text;
    EXPECT_THAT(std::string(ckpt.status().message()),
                AllOf(StartsWith((tmp.path() / kIndex).string() + ": "),
                      HasSubstr("missing \"weight_map\" object")));
  }
}

TEST(CheckpointTest, WeightMapEntryThatIsNotAStringIsRefused) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / kIndex, R"({"weight_map": {"x": 3}})");
  const auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()),
              AllOf(HasSubstr(kIndex), HasSubstr("\"x\" is not a string")));
}

TEST(CheckpointTest, MissingOrBadShardIsRefusedNamingTheShard) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / kIndex, R"({"weight_map": {"x": "gone.safetensors"}})");
  auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr((tmp.path() / "gone.safetensors").string()));

  WriteBytes(tmp.path() / "gone.safetensors", std::string("\x02\0\0\0\0\0\0\0[]", 10));
  ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()),
              StartsWith((tmp.path() / "gone.safetensors").string() + ": "));
}

TEST(CheckpointTest, DirectoryWithNeitherFileIsRefusedNamingTheDirectory) {
  ScopedTempDir tmp;
  WriteBytes(tmp.path() / "config.json", "{}");
  const auto ckpt = Checkpoint::Open(tmp.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ckpt.status().message()),
              AllOf(StartsWith(tmp.path().string() + ": "),
                    HasSubstr("no model.safetensors or model.safetensors.index.json")));
}

}  // namespace
}  // namespace moe
