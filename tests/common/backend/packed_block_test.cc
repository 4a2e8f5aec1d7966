// The CUDA decode kernels' block decoding (cuda/packed_block.h, host and device code)
// against quant::UnpackCode, the format's definition, for every bit width and value
// position: runs on any machine, GPU or not.
#include "common/backend/cuda/packed_block.h"

#include <cstring>
#include <random>

#include "common/quant/quant_format.h"
#include "gtest/gtest.h"

namespace moe::cuda {
namespace {

template <int kBits>
void CheckBits() {
  std::mt19937 rng(kBits);
  for (int trial = 0; trial < 200; ++trial) {
    uint8_t codes[quant::kBlock];
    for (int i = 0; i < quant::kBlock; ++i) codes[i] = rng() % (1 << kBits);
    if (trial == 0) std::memset(codes, (1 << kBits) - 1, sizeof(codes));  // every bit set
    uint8_t block[kBits * 4 + 4] = {};  // UnpackCode may read one byte past a 3-bit field
    quant::PackBlock(codes, kBits, block);
    uint32_t words[kBits + 1] = {};
    std::memcpy(words, block, kBits * 4);  // little-endian, as the GPU loads them
    for (int i = 0; i < quant::kBlock; ++i) {
      ASSERT_EQ(quant::UnpackCode(block, kBits, i), codes[i]) << kBits << "-bit value " << i;
      ASSERT_EQ(BlockCode<kBits>(words, i), codes[i]) << kBits << "-bit value " << i;
    }
  }
}

TEST(PackedBlockTest, DecodesEveryValueOf8BitBlocks) { CheckBits<8>(); }
TEST(PackedBlockTest, DecodesEveryValueOf4BitBlocks) { CheckBits<4>(); }
TEST(PackedBlockTest, DecodesEveryValueOf3BitBlocksIncludingFieldsAcrossWords) { CheckBits<3>(); }
TEST(PackedBlockTest, DecodesEveryValueOf2BitBlocks) { CheckBits<2>(); }

}  // namespace
}  // namespace moe::cuda
