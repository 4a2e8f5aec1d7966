// The tile kernels (quant_tile_kernels.inc) for AVX2 + FMA + F16C (maddubs). Called only on
// CPUs that have these instructions (quant_kernels.cc checks at run time).
#include <immintrin.h>

#include <cstring>

#include "common/backend/cpu/quant_tile_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace moe::cpu::tile::avx2 {
namespace {
#define MOE_TILE_DOT 0
#include "common/backend/cpu/quant_tile_kernels.inc"
#undef MOE_TILE_DOT
}  // namespace

PackedTileFn PackedTile(int bits) { return PackedTileFor(bits); }
GroupScalesFn GroupScales() { return &GroupScalesImpl; }

}  // namespace moe::cpu::tile::avx2

#pragma GCC pop_options
