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

// Every blob of `store` holds the checkpoint's w1, w3, w2 as fp32.
void ExpectHoldsTheCheckpoint(const ExpertStore& store, const ModelDir& dir) {
  const int64_t h = store.layout().hidden, i = store.layout().intermediate;
  std::vector<float> w(h * i);
  for (int l = 0; l < store.num_layers(); ++l) {
    for (int e = 0; e < store.num_experts(); ++e) {
      const float* blob = store.Expert(l, e);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(blob) % ExpertStore::kBlobAlignment, 0u);
      const std::pair<const char*, int64_t> parts[] = {
          {"w1", store.layout().w1_offset()}, {"w3", store.layout().w3_offset()},
          {"w2", store.layout().w2_offset()}};
      for (const auto& [name, offset] : parts) {
        const bool w2 = std::string(name) == "w2";
        ASSERT_TRUE(dir.checkpoint
                        ->ReadF32(tensor_names::Expert(l, e, name), {w2 ? h : i, w2 ? i : h}, w.data())
                        .ok());
        ASSERT_EQ(std::memcmp(blob + offset, w.data(), w.size() * sizeof(float)), 0)
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
  ExpectHoldsTheCheckpoint(**store, dir_);
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
