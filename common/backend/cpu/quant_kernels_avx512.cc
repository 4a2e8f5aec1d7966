// The tile kernels (quant_tile_kernels.inc) for AVX-512 VNNI on 256-bit registers. Called
// only on CPUs that have these instructions (quant_kernels.cc checks at run time).
#include <immintrin.h>

#include <cstring>

#include "common/backend/cpu/quant_tile_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")

// GCC 12's AVX-512 intrinsics pass an uninitialised _mm512_undefined_*() as the unused
// merge source; inlined here it warns (a false positive: the mask keeps every lane).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe::cpu::tile::avx512 {
namespace {
#define MOE_TILE_DOT 2
#include "common/backend/cpu/quant_tile_kernels.inc"
#undef MOE_TILE_DOT
}  // namespace

PackedTileFn PackedTile(int bits) { return PackedTileFor(bits); }
ScaledDecodeTileFn ScaledDecodeTile(const quant::MatrixLayout& layout) {
  return ScaledDecodeFits(layout) ? &ScaledDecodeTileImpl : nullptr;
}
WideTileFn WideTile(const quant::MatrixLayout& layout) {
  return WideFits(layout) ? &WideTileImpl : nullptr;
}

}  // namespace moe::cpu::tile::avx512

#pragma GCC diagnostic pop
#pragma GCC pop_options
