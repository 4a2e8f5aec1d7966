// Internal to the CPU quantized kernels (quant_kernels.cc): the tile kernels compiled once
// per instruction set (quant_tile_kernels.inc, included by quant_kernels_avx2.cc,
// quant_kernels_avxvnni.cc and quant_kernels_avx512.cc) and the data they share.
#ifndef MOE_COMMON_BACKEND_CPU_QUANT_TILE_KERNELS_H_
#define MOE_COMMON_BACKEND_CPU_QUANT_TILE_KERNELS_H_

#include <cstdint>

#include "common/quant/quant_format.h"

namespace moe::cpu::tile {

// Tokens per tile: a weight row is decoded once per tile.
inline constexpr int kMaxTileTokens = 4;
// Rows per tile: kMaxTileRows for one token (decode), else 2. A variant whose registers
// cannot hold rows x tokens accumulators (AVX2's 16 for 2 x 4) runs such a tile row by
// row, with the same results.
inline constexpr int kMaxTileRows = 4;
inline int TileRows(int64_t tokens) { return tokens == 1 ? kMaxTileRows : 2; }
// Values per pair of blocks: the SIMD kernels' unit (block 2p in the low 128-bit lane of
// a register, block 2p + 1 in the high one).
inline constexpr int64_t kPair = 2 * quant::kBlock;

// Activations of n tokens, quantized for one packed matrix (QuantizeActivationBlocks's
// values, rearranged). Per token, pair p's 64 bytes are [A of block 2p | A of block 2p+1 |
// B of 2p | B of 2p+1], where A and B are the 16 values each half of the decoded weight
// pair multiplies (their order is the format's; see quant_tile_kernels.inc). A missing
// last block (odd block count) is zero.
struct PairActivations {
  int64_t n = 0, pairs = 0, groups_per_row = 0;
  int8_t* q = nullptr;     // [n, pairs * kPair]
  float* dvec = nullptr;   // [n, pairs, 8]: block scales as [d_2p x4 | d_2p+1 x4]
  float* xs = nullptr;     // [n, groups_per_row]: sum over the group of d_b * sum(q_b)
};

// Per-row weight scales, computed once per row for all its token tiles.
struct RowScales {
  const float* group_s;      // [groups_per_row]: s of each group
  const float* group_sz;     // [groups_per_row]: s * z of each group
  int64_t blocks_per_group;
  // Only when blocks_per_group is odd (a pair can straddle two groups): [pairs * 2], s of
  // each block's group, 0 past the row. Else null.
  const float* block_scale;
};

// out[j * tokens + t] = row r + j of w · token t0 + t, for j < rows (1..kMaxTileRows,
// rs[j] that row's scales) and t < tokens (1..kMaxTileTokens). `bits` 2/3/4/8.
using PackedTileFn = void (*)(const quant::MatrixView& w, int64_t r, int rows,
                              const RowScales* rs, const PairActivations& a, int64_t t0,
                              int tokens, float* out);

// s and s * z (RowScales' group_s and group_sz) of `count` consecutive groups of w from
// group `first`: s = s_min + s_step * code, z = z_min + z_step * code, the same fp32
// steps as the scalar path's, eight groups at a time.
using GroupScalesFn = void (*)(const quant::MatrixView& w, int64_t first, int64_t count,
                               float* s, float* sz);

// out[0..3] = rows r..r+3 of w · token 0 of a: a decode tile that computes its rows' group
// scales itself (no RowScales, no GroupScales pass), with PackedTileFn's bits.
using ScaledDecodeTileFn = void (*)(const quant::MatrixView& w, int64_t r,
                                    const PairActivations& a, float* out);
inline constexpr int kScaledDecodeRows = 4;

// AVX-512 4-bit prefill carries two tokens in a 512-bit register: the activations of
// tokens 2u and 2u + 1 (PairActivations' values) interleaved per pair, 128 bytes [A of 2u |
// A of 2u + 1 | B of 2u | B of 2u + 1] and 16 floats [d of 2u x8 | d of 2u + 1 x8]. An odd
// last token's partner is zero.
struct TokenPairActivations {
  int8_t* q = nullptr;    // [ceil(n / 2), pairs, 2 * kPair]
  float* dvec = nullptr;  // [ceil(n / 2), pairs, 16]
};

// out[j * tokens + t] = row r + j of w · token t0 + t, for j < kWideRows and t < tokens
// (1..kWideTokens; t0 even): a's xs and groups, tp's values. PackedTileFn's bits.
using WideTileFn = void (*)(const quant::MatrixView& w, int64_t r, const RowScales* rs,
                            const PairActivations& a, const TokenPairActivations& tp,
                            int64_t t0, int tokens, float* out);
inline constexpr int kWideRows = 4;
inline constexpr int kWideTokens = 4;

namespace avx2 {
PackedTileFn PackedTile(int bits);
GroupScalesFn GroupScales();  // every SIMD path's (no integer dots in it)
}  // namespace avx2
namespace avxvnni {
PackedTileFn PackedTile(int bits);
}  // namespace avxvnni
namespace avx512 {
PackedTileFn PackedTile(int bits);
// For 4-bit, group 64, an even number of groups per row, up to 512: else null.
ScaledDecodeTileFn ScaledDecodeTile(const quant::MatrixLayout& layout);
// For 4-bit with an even number of blocks per row and per group: else null.
WideTileFn WideTile(const quant::MatrixLayout& layout);
}  // namespace avx512

// Where value i of a block sits in its pair's A (0..15) or B (16..31) bytes, per format:
// the inverse of the decode order in quant_tile_kernels.inc.
inline int PairPosition(int bits, int i) {
  if (bits != 3) return i;  // 2/4/8-bit halves hold values 0..15 and 16..31 in order
  // 3-bit: 16-bit lane j of A holds values j, j + 8; of B, values j + 16, j + 24.
  const int half = i / 16, j = i % 8, hi = (i / 8) % 2;
  return half * 16 + 2 * j + hi;
}

}  // namespace moe::cpu::tile

#endif  // MOE_COMMON_BACKEND_CPU_QUANT_TILE_KERNELS_H_
