// Decoding one 32-value block of the offload format (quant_format.h) from 32-bit words,
// as the CUDA decode kernels do it: a block of `kBits * 4` bytes loaded into kBits
// little-endian words (plus a zero word, so a 3-bit field ending the block may read one
// word past it). Host and device code, so that packed_block_test checks it against
// quant::UnpackCode on any machine. Plain C++17 (cuda_kernels.cu includes it).
#ifndef MOE_COMMON_BACKEND_CUDA_PACKED_BLOCK_H_
#define MOE_COMMON_BACKEND_CUDA_PACKED_BLOCK_H_

#include <cstdint>

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MOE_HOST_DEVICE inline
#endif

namespace moe::cuda {

// The code of value i (in [0, 32)) of a block held in words. i is a constant after the
// kernels unroll their loops, so this is one shift and one mask (two shifts for a 3-bit
// field that straddles two words).
template <int kBits>
MOE_HOST_DEVICE int BlockCode(const uint32_t (&w)[kBits + 1], int i) {
  if constexpr (kBits == 8) {
    return (w[i / 4] >> (8 * (i % 4))) & 255;
  } else if constexpr (kBits == 4) {  // value i in byte i % 16, bits 4 * (i / 16)
    const int byte = i % 16;
    return (w[byte / 4] >> (8 * (byte % 4) + 4 * (i / 16))) & 15;
  } else if constexpr (kBits == 2) {  // value i in byte i % 8, bits 2 * (i / 8)
    const int byte = i % 8;
    return (w[byte / 4] >> (8 * (byte % 4) + 2 * (i / 8))) & 3;
  } else {  // 3 bits: value i at bit 12 * (i % 8) + 3 * (i / 8) of the 96-bit block
    static_assert(kBits == 3, "bits must be 2, 3, 4 or 8");
    const int bit = 12 * (i % 8) + 3 * (i / 8), word = bit / 32, shift = bit % 32;
    uint32_t v = w[word] >> shift;
    if (shift > 29) v |= w[word + 1] << (32 - shift);
    return static_cast<int>(v & 7);
  }
}

}  // namespace moe::cuda

#endif  // MOE_COMMON_BACKEND_CUDA_PACKED_BLOCK_H_
