// The host expert store on a device: pinned memory holding the checkpoint's weights, or a
// converted model's expert file registered in place; the same bytes either way.
#include "expert_worker/expert_store.h"

#include <cstring>
#include <filesystem>
#include <vector>

#include "common/model_dir.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tools/cli/convert.h"

namespace moe::expert_worker {
namespace {

namespace fs = std::filesystem;

const fs::path kCheckpoint = fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "bf16_gqa4_e8_top2";

// Every blob of `store` holds the checkpoint's w1, w3, w2: as stored (16-bit layout), or
// as fp32.
void ExpectHoldsTheCheckpoint(const ExpertStore& store, const ModelDir& dir) {
  const ExpertLayout& layout = store.layout();
  const int64_t h = layout.hidden, i = layout.intermediate;
  std::vector<float> w(h * i), got(h * i);
  for (int l = 0; l < store.num_layers(); ++l) {
    for (int e = 0; e < store.num_experts(); ++e) {
      const float* blob = store.Expert(l, e);
      const auto* bytes = reinterpret_cast<const uint8_t*>(blob);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(blob) % ExpertStore::kBlobAlignment, 0u);
      const std::pair<const char*, int64_t> parts[] = {
          {"w1", layout.packed ? layout.packed->w1_offset : layout.w1_offset() * 4},
          {"w3", layout.packed ? layout.packed->w3_offset : layout.w3_offset() * 4},
          {"w2", layout.packed ? layout.packed->w2_offset : layout.w2_offset() * 4}};
      for (const auto& [name, offset] : parts) {
        const bool w2 = std::string(name) == "w2";
        ASSERT_TRUE(dir.checkpoint
                        ->ReadF32(tensor_names::Expert(ModelConfig(), l, e, name), {w2 ? h : i, w2 ? i : h}, w.data())
                        .ok());
        if (layout.packed) {
          ConvertToF32(bytes + offset, layout.packed->w1.spec.dtype16, int64_t(w.size()), got.data());
        } else {
          std::memcpy(got.data(), bytes + offset, w.size() * sizeof(float));
        }
        ASSERT_EQ(std::memcmp(got.data(), w.data(), w.size() * sizeof(float)), 0)
            << "layer " << l << " expert " << e << " " << name;
      }
    }
  }
}

// Every blob of `store` is the converted file's blob, byte for byte.
void ExpectHoldsTheExpertFile(const ExpertStore& store, const ModelDir& dir) {
  for (int l = 0; l < store.num_layers(); ++l) {
    for (int e = 0; e < store.num_experts(); ++e) {
      ASSERT_EQ(std::memcmp(store.Expert(l, e), dir.offload->ExpertBlob(l, e), store.blob_bytes()),
                0)
          << "layer " << l << " expert " << e;
    }
  }
}

class ExpertStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ModelDir::Open(kCheckpoint.string());
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *std::move(dir);
  }
  // The checkpoint converted with 3-bit experts into a temporary directory.
  ModelDir Converted() {
    ConvertOptions o;
    o.in_dir = kCheckpoint.string();
    o.out_dir = (tmp_.path() / "converted").string();
    o.attn_bits = 16;
    o.expert_bits = 3;
    o.group_size = 32;
    o.progress = false;
    auto manifest = Convert(o);
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    auto dir = ModelDir::Open(o.out_dir);
    EXPECT_TRUE(dir.ok()) << dir.status();
    return dir.ok() ? *std::move(dir) : ModelDir{};
  }
  ModelDir dir_;
  testing_util::ScopedTempDir tmp_{"expert_store_test"};
};

TEST_F(ExpertStoreTest, CheckpointGoesIntoPinnedMemoryOfTheDefaultCpuDevice) {
  auto store = ExpertStore::Load(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(&(*store)->device(), &DefaultCpuDevice());
  EXPECT_FALSE((*store)->registered());
  // A BF16 checkpoint's experts stay BF16 (no fp32 copy): half the bytes.
  ASSERT_TRUE((*store)->layout().packed.has_value());
  EXPECT_EQ((*store)->layout().packed->w1.spec.bits, 16);
  EXPECT_EQ((*store)->layout().packed->w1.spec.dtype16, DType::kBF16);
  EXPECT_LE((*store)->blob_bytes(), size_t((*store)->layout().floats()) * 2 + 3 * 64);
  ExpectHoldsTheCheckpoint(**store, dir_);
}

TEST(ExpertStoreCheckpointTest, F32CheckpointStaysFp32) {
  auto dir = ModelDir::Open(
      (fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "f32_mha_e2_top1_tied").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto store = ExpertStore::Load(*dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE((*store)->layout().packed.has_value());
  ExpectHoldsTheCheckpoint(**store, *dir);
}

TEST_F(ExpertStoreTest, ConvertedFileIsCopiedOnTheCpuByDefault) {
  const ModelDir converted = Converted();
  ASSERT_NE(converted.offload, nullptr);
  auto store = ExpertStore::Load(converted);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE((*store)->registered());  // today's behaviour: its own copy
  ExpectHoldsTheExpertFile(**store, converted);
}

TEST_F(ExpertStoreTest, ConvertedFileCanBeRegisteredInPlace) {
  const ModelDir converted = Converted();
  ASSERT_NE(converted.offload, nullptr);
  auto store = ExpertStore::Load(converted, &DefaultCpuDevice(), MappedBlobs::kRegister);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->registered());  // `moe convert` writes page-aligned, evenly strided blobs
  EXPECT_EQ(reinterpret_cast<const uint8_t*>((*store)->Expert(1, 5)),
            converted.offload->ExpertBlob(1, 5));
  ExpectHoldsTheExpertFile(**store, converted);
  auto copied = ExpertStore::Load(converted, &DefaultCpuDevice(), MappedBlobs::kCopy);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_FALSE((*copied)->registered());
  ExpectHoldsTheExpertFile(**copied, converted);
}

TEST_F(ExpertStoreTest, CudaStoreIsPinnedOrRegisteredAndHoldsTheSameBytes) {
  auto device = backend::OpenDevice("cuda");
  if (!device.ok()) GTEST_SKIP() << "no CUDA device: " << device.status();
  auto store = ExpertStore::Load(dir_, device->get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(&(*store)->device(), device->get());
  ExpectHoldsTheCheckpoint(**store, dir_);
  const ModelDir converted = Converted();
  ASSERT_NE(converted.offload, nullptr);
  auto mapped = ExpertStore::Load(converted, device->get());  // kAuto: registered on CUDA
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_TRUE((*mapped)->registered());
  ExpectHoldsTheExpertFile(**mapped, converted);
}

}  // namespace
}  // namespace moe::expert_worker
