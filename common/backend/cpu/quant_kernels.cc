#include "common/backend/cpu/quant_kernels.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/dense16_kernels.h"
#include "common/backend/cpu/kernel_pool.h"
#include "common/backend/cpu/quant_tile_kernels.h"

namespace moe::cpu {
namespace {

using quant::kBlock;
using quant::MatrixView;

// Below this many weight-times-token products a call runs on one thread: an OpenMP region
// costs more than it saves on small matrices, and far more when the cores are shared and
// threads spin.
constexpr int64_t kParallelMinValues = int64_t{1} << 20;

bool CpuSupports(QuantKernelPath path) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
  static const bool avxvnni = avx2 && __builtin_cpu_supports("avxvnni");
  static const bool avx512vnni =
      avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
  switch (path) {
    case QuantKernelPath::kScalar: return true;
    case QuantKernelPath::kAvx2: return avx2;
    case QuantKernelPath::kAvxVnni: return avxvnni;
    case QuantKernelPath::kAvx512Vnni: return avx512vnni;
  }
  return false;
}

QuantKernelPath Best() {
  for (QuantKernelPath p : {QuantKernelPath::kAvx512Vnni, QuantKernelPath::kAvxVnni,
                            QuantKernelPath::kAvx2}) {
    if (CpuSupports(p)) return p;
  }
  return QuantKernelPath::kScalar;
}

std::atomic<QuantKernelPath> g_path{Best()};

// Rounds to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves no fraction
// bits. Exact and vectorisable (no libm call), the same value as nearbyintf.
inline float RoundNearest(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

// 127 / amax, the factor a block of activations is multiplied by before rounding: 0 for an
// all-zero block, and at most FLT_MAX, so that a block whose maximum is below
// 127 / FLT_MAX (3.7e-37) does not multiply its zeros by infinity (a NaN, whose conversion
// to int8 is undefined).
inline float ActivationInverseScale(float amax) {
  return amax > 0 ? std::min(127.0f / amax, std::numeric_limits<float>::max()) : 0.0f;
}

// ---- scalar path ------------------------------------------------------------------

// The group counts of a packed matrix's rows, divided out once per call rather than once
// per row tile (a 64-bit division costs about as much as a 4-bit pair step).
struct RowGroups {
  int64_t per_row;    // groups per row
  int64_t per_group;  // blocks per group
  int64_t blocks;     // blocks per row

  explicit RowGroups(const quant::MatrixLayout& l)
      : per_row(l.cols / l.spec.group_size), per_group(l.spec.group_size / kBlock),
        blocks(l.cols / kBlock) {}
};

// s and s * z of each group of rows [r, r + count), and where a pair of blocks can
// straddle two groups (an odd number of blocks per group), s of each block (the block
// past an odd count: 0). The rows' groups are consecutive: one pass computes them all.
struct RowScaleBuffers {
  std::vector<float> group_s, group_sz;
  std::vector<float> block_scale[tile::kMaxTileRows];

  // Fills rs[0, count) (count <= kMaxTileRows). `simd`: tile::avx2::GroupScales() (the
  // same values, faster), or null.
  void Compute(const MatrixView& w, const RowGroups& rg, int64_t r, int count,
               tile::RowScales* rs, tile::GroupScalesFn simd = nullptr) {
    const int64_t per_row = rg.per_row, blocks = rg.blocks, per_group = rg.per_group;
    const int64_t groups = per_row * count, first = r * per_row;
    if (int64_t(group_s.size()) < groups) {  // grows to the largest tile, then stays
      group_s.resize(groups);
      group_sz.resize(groups);
    }
    float* __restrict gs = group_s.data();
    float* __restrict gsz = group_sz.data();
    if (simd != nullptr) simd(w, first, groups, gs, gsz);
    for (int64_t k = simd != nullptr ? groups : 0; k < groups;) {
      // Groups sharing one meta-quantization entry: a plain loop the compiler vectorises.
      const int64_t m = (first + k) / quant::kMetaGroup;
      const int64_t end = std::min(groups, (m + 1) * quant::kMetaGroup - first);
      const quant::MetaParams meta = w.meta()[m];
      const uint8_t* __restrict sc = w.scales() + first;
      const uint8_t* __restrict zc = w.zeros() + first;
      for (int64_t j = k; j < end; ++j) {
        const float s = meta.s_min + meta.s_step * float(sc[j]);
        gs[j] = s;
        gsz[j] = s * (meta.z_min + meta.z_step * float(zc[j]));
      }
      k = end;
    }
    for (int j = 0; j < count; ++j) {
      const float* bs = nullptr;
      if (per_group % 2 != 0) {
        std::vector<float>& b = block_scale[j];
        b.resize(blocks + 1);
        for (int64_t k = 0; k < per_row; ++k) {
          std::fill_n(b.data() + k * per_group, per_group, gs[j * per_row + k]);
        }
        b[blocks] = 0;
        bs = b.data();
      }
      rs[j] = {gs + j * per_row, gsz + j * per_row, per_group, bs};
    }
  }
};

// One token's activations for the scalar path: QuantizeActivationBlocks's values and, per
// group, xs = sum_b d_b * sum(q_b).
struct TokenActivations {
  std::vector<int8_t> q;
  std::vector<float> d, xs;

  void Quantize(const float* x, int64_t cols, int64_t group) {
    q.resize(cols);
    d.resize(cols / kBlock);
    xs.resize(cols / group);
    QuantizeActivationBlocks(x, cols, q.data(), d.data());
    const int64_t per_group = group / kBlock;
    for (int64_t k = 0; k < cols / group; ++k) {
      float s = 0;
      for (int64_t b = k * per_group; b < (k + 1) * per_group; ++b) {
        int32_t sum = 0;
        for (int64_t i = 0; i < kBlock; ++i) sum += q[b * kBlock + i];
        s += d[b] * float(sum);
      }
      xs[k] = s;
    }
  }
};

float PackedRowScalar(const MatrixView& w, int64_t r, const tile::RowScales& rs,
                      const TokenActivations& a) {
  const int bits = w.layout.spec.bits;
  const int64_t blocks = w.layout.cols / kBlock, block_bytes = bits * kBlock / 8;
  const uint8_t* codes = w.codes() + r * blocks * block_bytes;
  float acc = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t dot = 0;
    for (int64_t i = 0; i < kBlock; ++i) {
      dot += quant::UnpackCode(codes + b * block_bytes, bits, i) * a.q[b * kBlock + i];
    }
    acc += rs.group_s[b / rs.blocks_per_group] * a.d[b] * float(dot);
  }
  float zero_term = 0;
  for (size_t k = 0; k < a.xs.size(); ++k) zero_term += rs.group_sz[k] * a.xs[k];
  return acc - zero_term;
}

// ---- the SIMD paths' activations ----------------------------------------------------

struct PairActivationBuffers {
  std::vector<int8_t> q, block_q;
  std::vector<float> dvec, xs, block_d;

  // QuantizeActivationBlocks per token, rearranged into pairs for `bits`.
  tile::PairActivations Build(const float* x, int64_t n, int64_t cols, int bits, int64_t group) {
    const int64_t blocks = cols / kBlock, pairs = (blocks + 1) / 2, per_group = group / kBlock;
    tile::PairActivations a;
    a.n = n;
    a.pairs = pairs;
    a.groups_per_row = cols / group;
    q.assign(n * pairs * tile::kPair, 0);
    dvec.assign(n * pairs * 8, 0.0f);
    xs.resize(n * a.groups_per_row);
    block_q.resize(cols);
    block_d.resize(blocks);
    int pos[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      const int p = tile::PairPosition(bits, i);
      pos[i] = (p / 16) * 32 + p % 16;  // A bytes first, then B; + 16 for the high block
    }
    for (int64_t t = 0; t < n; ++t) {
      QuantizeActivationBlocks(x + t * cols, cols, block_q.data(), block_d.data());
      int8_t* qt = q.data() + t * pairs * tile::kPair;
      float* dt = dvec.data() + t * pairs * 8;
      for (int64_t b = 0; b < blocks; ++b) {
        int8_t* dst = qt + (b / 2) * tile::kPair + (b % 2) * 16;
        const int8_t* src = block_q.data() + b * kBlock;
        if (bits == 3) {
          for (int i = 0; i < kBlock; ++i) dst[pos[i]] = src[i];
        } else {  // values 0..15 to A, 16..31 to B, in order
          std::memcpy(dst, src, 16);
          std::memcpy(dst + 32, src + 16, 16);
        }
        std::fill_n(dt + (b / 2) * 8 + (b % 2) * 4, 4, block_d[b]);
      }
      for (int64_t k = 0; k < a.groups_per_row; ++k) {
        float s = 0;
        for (int64_t b = k * per_group; b < (k + 1) * per_group; ++b) {
          int32_t sum = 0;
          for (int64_t i = 0; i < kBlock; ++i) sum += block_q[b * kBlock + i];
          s += block_d[b] * float(sum);
        }
        xs[t * a.groups_per_row + k] = s;
      }
    }
    a.q = q.data();
    a.dvec = dvec.data();
    a.xs = xs.data();
    return a;
  }

  // a's tokens two by two, interleaved per pair (tile::TokenPairActivations).
  tile::TokenPairActivations Interleave(const tile::PairActivations& a) {
    const int64_t n2 = (a.n + 1) / 2;
    pair_q.assign(n2 * a.pairs * 2 * tile::kPair, 0);
    pair_dvec.assign(n2 * a.pairs * 16, 0.0f);
    for (int64_t t = 0; t < a.n; ++t) {
      for (int64_t p = 0; p < a.pairs; ++p) {
        const int8_t* src = a.q + (t * a.pairs + p) * tile::kPair;
        int8_t* dst = pair_q.data() + ((t / 2) * a.pairs + p) * 2 * tile::kPair + (t % 2) * 32;
        std::memcpy(dst, src, 32);                 // A
        std::memcpy(dst + tile::kPair, src + 32, 32);  // B
        std::memcpy(pair_dvec.data() + ((t / 2) * a.pairs + p) * 16 + (t % 2) * 8,
                    a.dvec + (t * a.pairs + p) * 8, 8 * sizeof(float));
      }
    }
    return {pair_q.data(), pair_dvec.data()};
  }

  std::vector<int8_t> pair_q;
  std::vector<float> pair_dvec;
};

tile::PackedTileFn SimdPackedTile(QuantKernelPath path, int bits) {
  switch (path) {
    case QuantKernelPath::kAvx512Vnni: return tile::avx512::PackedTile(bits);
    case QuantKernelPath::kAvxVnni: return tile::avxvnni::PackedTile(bits);
    default: return tile::avx2::PackedTile(bits);
  }
}

inline void Store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

// The scale, zero and meta bytes of a row tile this many tiles ahead are prefetched: they
// are three more streams beside the codes, one cache line or so per tile each, and perf
// put a decode's GroupScales time on waiting for them (the tile kernels prefetch the
// codes themselves).
constexpr int64_t kScalePrefetchTiles = 4;

// Prefetches the group scale and zero codes and the meta entries of rows [r, r + count)
// of w (rows past the end: nothing).
inline void PrefetchScales(const MatrixView& w, int64_t per_row, int64_t r, int64_t count) {
  const int64_t rows = w.layout.rows;
  if (r >= rows) return;
  const int64_t first = r * per_row, last = std::min(rows, r + count) * per_row - 1;
  for (int64_t g = first & ~int64_t{63}; g <= last; g += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w.scales() + g), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w.zeros() + g), _MM_HINT_T0);
  }
  _mm_prefetch(reinterpret_cast<const char*>(w.meta() + first / quant::kMetaGroup), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(w.meta() + last / quant::kMetaGroup), _MM_HINT_T0);
}

// Decode hands row tiles out in chunks of this many, first come first served
// (kernel_pool.h): about four chunks a thread, so that a thread that starts late takes
// fewer, and at least 8 tiles each, so that a thread streams a run of consecutive rows
// (the tile kernels prefetch along it). Prefill: one contiguous chunk a thread.
inline int64_t ChunkTiles(int64_t tiles, int threads, bool decode) {
  if (threads <= 1) return std::max<int64_t>(tiles, 1);
  if (!decode) return (tiles + threads - 1) / threads;
  return std::max<int64_t>(8, tiles / (4 * int64_t(threads)));
}

// count (1 or 2) matrices of one shape and format, ws[i] into ys[i], on the same x: one
// activation rounding and one parallel region for all (an expert's w1 and w3).
void PackedMatMul(const MatrixView* ws, float* const* ys, int count, const float* x, int64_t n,
                  bool accumulate, QuantKernelPath path) {
  const MatrixView& w0 = ws[0];
  const int64_t rows = w0.layout.rows, cols = w0.layout.cols, group = w0.layout.spec.group_size;
  const bool parallel = count * rows * cols * n >= kParallelMinValues;
  if (path == QuantKernelPath::kScalar) {
    std::vector<TokenActivations> acts(n);
    for (int64_t t = 0; t < n; ++t) acts[t].Quantize(x + t * cols, cols, group);
    for (int i = 0; i < count; ++i) {
      const MatrixView& w = ws[i];
      float* y = ys[i];
#pragma omp parallel if (parallel)
      {
        RowScaleBuffers scales;
        const RowGroups rg(w.layout);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          tile::RowScales rs;
          scales.Compute(w, rg, r, 1, &rs);
          for (int64_t t = 0; t < n; ++t) Store(&y[t * rows + r], PackedRowScalar(w, r, rs, acts[t]), accumulate);
        }
      }
    }
    return;
  }
  thread_local PairActivationBuffers buffers;
  const tile::PairActivations a = buffers.Build(x, n, cols, w0.layout.spec.bits, group);
  const tile::PackedTileFn fn = SimdPackedTile(path, w0.layout.spec.bits);
  const tile::GroupScalesFn group_scales = tile::avx2::GroupScales();
  const RowGroups rg(w0.layout);  // the same for every matrix of the call
  // Decode's whole tiles on AVX-512 4-bit group 64: the tile computes its own scales.
  const tile::ScaledDecodeTileFn scaled =
      n == 1 && path == QuantKernelPath::kAvx512Vnni &&
              tile::TileRows(1) == tile::kScaledDecodeRows
          ? tile::avx512::ScaledDecodeTile(w0.layout)
          : nullptr;
  // Prefill on AVX-512 4-bit: wider tiles, two tokens a register.
  const tile::WideTileFn wide = n > 1 && path == QuantKernelPath::kAvx512Vnni
                                    ? tile::avx512::WideTile(w0.layout)
                                    : nullptr;
  const tile::TokenPairActivations tp =
      wide != nullptr ? buffers.Interleave(a) : tile::TokenPairActivations{};
  // Row tiles of `tile_rows` (each matrix's last one shorter), the matrices one after the
  // other, handed out in chunks of consecutive tiles.
  const int tile_rows = wide != nullptr ? tile::kWideRows : tile::TileRows(n);
  const int64_t row_tiles = (rows + tile_rows - 1) / tile_rows, tiles = count * row_tiles;
  const int threads = parallel ? omp_get_max_threads() : 1;
  const int64_t chunk = ChunkTiles(tiles, threads, /*decode=*/n == 1);
  auto run_chunk = [&](int64_t c) {
    thread_local RowScaleBuffers scales;
    tile::RowScales rs[tile::kMaxTileRows];
    static_assert(tile::kWideRows <= tile::kMaxTileRows, "RowScales for a wide tile");
    float out[tile::kWideRows * tile::kWideTokens > tile::kMaxTileRows * tile::kMaxTileTokens
                  ? tile::kWideRows * tile::kWideTokens
                  : tile::kMaxTileRows * tile::kMaxTileTokens];
    const int64_t end = std::min(tiles, (c + 1) * chunk);
    // Tile it is rows [r, r + tile_rows) of matrix m: divided once, then stepped.
    int64_t m = (c * chunk) / row_tiles, r = ((c * chunk) % row_tiles) * tile_rows;
    for (int64_t it = c * chunk; it < end; ++it, r += tile_rows) {
      if (r >= rows) r = 0, ++m;
      const MatrixView& w = ws[m];
      float* y = ys[m];
      const int nr = int(std::min<int64_t>(tile_rows, rows - r));
      PrefetchScales(w, rg.per_row, r + kScalePrefetchTiles * tile_rows, tile_rows);
      if (scaled != nullptr && nr == tile_rows) {
        scaled(w, r, a, out);
        for (int j = 0; j < nr; ++j) Store(&y[r + j], out[j], accumulate);
        continue;
      }
      scales.Compute(w, rg, r, nr, rs, group_scales);
      const bool whole_wide = wide != nullptr && nr == tile::kWideRows;
      const int step = whole_wide ? tile::kWideTokens : tile::kMaxTileTokens;
      for (int64_t t0 = 0; t0 < n; t0 += step) {
        const int tokens = int(std::min<int64_t>(step, n - t0));
        if (whole_wide) {
          wide(w, r, rs, a, tp, t0, tokens, out);
        } else {
          fn(w, r, nr, rs, a, t0, tokens, out);
        }
        for (int j = 0; j < nr; ++j) {
          for (int t = 0; t < tokens; ++t) {
            Store(&y[(t0 + t) * rows + r + j], out[j * tokens + t], accumulate);
          }
        }
      }
    }
  };
  const int64_t chunks = (tiles + chunk - 1) / chunk;
  if (n == 1) {
    ParallelChunks(chunks, threads, run_chunk);
  } else {
    // Prefill: one chunk a thread, in an OpenMP region, as before the pool; the pool
    // measured slower here beside the attention's OpenMP threads on a busy machine
    // (docs/results.md), and a prefill call is long enough to pay for the region.
    ParallelFor(chunks, parallel, Deal::kShares, run_chunk);
  }
}

void MatMulAll(const MatrixView* ws, float* const* ys, int count, const float* x, int64_t n,
               bool accumulate) {
  if (n <= 0 || ws[0].layout.rows <= 0) return;
  const QuantKernelPath path = GetQuantKernelPath();
  if (ws[0].layout.spec.quantized()) {
    PackedMatMul(ws, ys, count, x, n, accumulate, path);
  } else {
    Dense16MatMul(ws, ys, count, x, n, accumulate, path);
  }
}

// ---- dequantisation (DequantizeRows) -------------------------------------------------

// Eight consecutive codes of a block are one 8-byte load, a shift and a mask (see the
// layout in quant_format.h); chunk c covers values 8c..8c+7.

#define MOE_AVX2 __attribute__((target("avx2,fma,f16c")))

MOE_AVX2 __attribute__((always_inline)) inline __m256i load8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

template <int kBits>
MOE_AVX2 __attribute__((always_inline)) inline __m256 DecodeChunk(const uint8_t* block, int c) {
  __m256i q;
  if constexpr (kBits == 8) {
    q = load8(block + 8 * c);
  } else if constexpr (kBits == 4) {
    q = _mm256_and_si256(_mm256_srlv_epi32(load8(block + (8 * c) % 16), _mm256_set1_epi32(4 * (c / 2))),
                         _mm256_set1_epi32(15));
  } else if constexpr (kBits == 2) {
    q = _mm256_and_si256(_mm256_srlv_epi32(load8(block), _mm256_set1_epi32(2 * c)),
                         _mm256_set1_epi32(3));
  } else {  // 3 bits: lane j gets the block's 12-bit field j (values j, j+8, j+16, j+24)
    const __m256i bytes =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    const __m256i pick = _mm256_setr_epi8(0, 1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1, 4, 5, -1, -1,
                                          6, 7, -1, -1, 7, 8, -1, -1, 9, 10, -1, -1, 10, 11, -1, -1);
    const __m256i fields = _mm256_srlv_epi32(_mm256_shuffle_epi8(bytes, pick),
                                             _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
    q = _mm256_and_si256(_mm256_srlv_epi32(fields, _mm256_set1_epi32(3 * c)), _mm256_set1_epi32(7));
  }
  return _mm256_cvtepi32_ps(q);
}

template <int kBits>
MOE_AVX2 void DequantizeGroupAvx2(const uint8_t* codes, float scale, float zero, int64_t g,
                                  float* dst) {
  constexpr int64_t kBlockBytes = kBits * kBlock / 8;
  const __m256 s = _mm256_set1_ps(scale), sz = _mm256_set1_ps(scale * zero);
  for (int64_t b = 0; b < g / kBlock; ++b) {
    const uint8_t* block = codes + b * kBlockBytes;
    for (int c = 0; c < 4; ++c) {
      _mm256_storeu_ps(dst + b * kBlock + 8 * c, _mm256_fmsub_ps(DecodeChunk<kBits>(block, c), s, sz));
    }
  }
}

// QuantizeActivationBlocks on AVX2, the same values for finite x: the maximum of |x| is
// exact in any order (NaN lanes are skipped as std::max skips them), and each value takes
// the same multiply, the same magic-number rounding and clamp. Compiled for AVX2 without
// FMA, so that x * inv + magic cannot be contracted into one rounding.
__attribute__((target("avx2"))) void QuantizeBlocksAvx2(const float* x, int64_t cols, int8_t* q,
                                                        float* scale) {
  static_assert(kBlock == 32, "four 8-float vectors a block");
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 magic = _mm256_set1_ps(12582912.0f);  // RoundNearest's
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      m = _mm256_max_ps(_mm256_and_ps(v[i], abs_mask), m);  // a NaN lane keeps m's
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    const float amax = _mm_cvtss_f32(h);
    scale[b] = amax / 127.0f;
    const __m256 inv = _mm256_set1_ps(ActivationInverseScale(amax));
    __m256i r[4];
    for (int i = 0; i < 4; ++i) {
      const __m256 t = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v[i], inv), magic), magic);
      r[i] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
    }
    // packs interleave 128-bit lanes: [0-3 8-11 16-19 24-27 | 4-7 ...] in 32-bit groups.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kBlock),
                        _mm256_permutevar8x32_epi32(bytes, order));
  }
}

void DequantizeRowsImpl(const MatrixView& w, int64_t r0, int64_t r1, float* dst, bool avx2) {
  const quant::MatrixLayout& l = w.layout;
  if (!avx2) {
    quant::DequantizeRowsReference(w, r0, r1, dst);
    return;
  }
  const int64_t cols = l.cols;
  if (!l.spec.quantized()) {
    Convert16Avx2(w.codes() + r0 * cols * 2, l.spec.dtype16, (r1 - r0) * cols, dst);
    return;
  }
  const int64_t g = l.spec.group_size, group_bytes = g * l.spec.bits / 8;
  for (int64_t group = r0 * cols / g; group < r1 * cols / g; ++group) {
    const uint8_t* codes = w.codes() + group * group_bytes;
    float* out = dst + (group * g - r0 * cols);
    const float s = w.Scale(group), z = w.Zero(group);
    switch (l.spec.bits) {
      case 2: DequantizeGroupAvx2<2>(codes, s, z, g, out); break;
      case 3: DequantizeGroupAvx2<3>(codes, s, z, g, out); break;
      case 4: DequantizeGroupAvx2<4>(codes, s, z, g, out); break;
      default: DequantizeGroupAvx2<8>(codes, s, z, g, out); break;
    }
  }
}

}  // namespace

QuantKernelPath BestQuantKernelPath() { return Best(); }

bool QuantKernelPathSupported(QuantKernelPath path) { return CpuSupports(path); }

void SetQuantKernelPath(QuantKernelPath path) { g_path.store(CpuSupports(path) ? path : Best()); }

QuantKernelPath GetQuantKernelPath() { return g_path.load(std::memory_order_relaxed); }

const char* QuantKernelPathName(QuantKernelPath path) {
  switch (path) {
    case QuantKernelPath::kScalar: return "scalar";
    case QuantKernelPath::kAvx2: return "avx2";
    case QuantKernelPath::kAvxVnni: return "avxvnni";
    case QuantKernelPath::kAvx512Vnni: return "avx512vnni";
  }
  return "?";
}

void QuantizeActivationBlocks(const float* x, int64_t cols, int8_t* q, float* scale) {
  if (GetQuantKernelPath() != QuantKernelPath::kScalar) {
    QuantizeBlocksAvx2(x, cols, q, scale);
    return;
  }
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float amax = 0;
    for (int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(xb[i]));
    scale[b] = amax / 127.0f;
    const float inv = ActivationInverseScale(amax);
    for (int64_t i = 0; i < kBlock; ++i) {
      // |x * inv| <= 127 up to one rounding: the clamp only guards that rounding.
      const float v = std::clamp(RoundNearest(xb[i] * inv), -127.0f, 127.0f);
      q[b * kBlock + i] = static_cast<int8_t>(v);
    }
  }
}

void DequantizeRows(const MatrixView& w, int64_t r0, int64_t r1, float* dst) {
  DequantizeRowsImpl(w, r0, r1, dst, GetQuantKernelPath() != QuantKernelPath::kScalar);
}

void QuantMatMulTransB(const MatrixView& w, const float* x, float* y, int64_t n,
                       bool accumulate) {
  MatMulAll(&w, &y, 1, x, n, accumulate);
}

void QuantMatMulTransB2(const MatrixView& a, const MatrixView& b, const float* x, float* ya,
                        float* yb, int64_t n) {
  const quant::MatrixLayout &la = a.layout, &lb = b.layout;
  if (la.rows != lb.rows || la.cols != lb.cols || la.spec.bits != lb.spec.bits ||
      la.spec.group_size != lb.spec.group_size || la.spec.dtype16 != lb.spec.dtype16) {
    QuantMatMulTransB(a, x, ya, n);  // different formats: one call each
    QuantMatMulTransB(b, x, yb, n);
    return;
  }
  const MatrixView ws[2] = {a, b};
  float* const ys[2] = {ya, yb};
  MatMulAll(ws, ys, 2, x, n, /*accumulate=*/false);
}

}  // namespace moe::cpu
