#include "bench/synthetic_weights.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/status.h"

namespace moe::bench {
namespace {

// splitmix64: one independent stream per (seed, chunk), so the fill is the same for any
// number of threads.
struct Rng {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Symmetric() { return float(int64_t(Next() >> 40) - (int64_t(1) << 23)) / float(1 << 23); }
};

constexpr int64_t kChunk = 1 << 16;  // values (or bytes) per independent stream

uint64_t ChunkSeed(uint64_t seed, int64_t chunk) {
  return seed * 0x2545f4914f6cdd1dULL + uint64_t(chunk) * 0x9e3779b97f4a7c15ULL + 1;
}

void FillRandomBytes(uint8_t* dst, int64_t bytes, uint64_t seed) {
  const int64_t chunks = (bytes + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    Rng rng{ChunkSeed(seed, c)};
    const int64_t begin = c * kChunk, end = std::min(bytes, begin + kChunk);
    for (int64_t i = begin; i < end; i += 8) {
      const uint64_t v = rng.Next();
      std::memcpy(dst + i, &v, std::min<int64_t>(8, end - i));
    }
  }
}

// Calls store(i, v) for i < count with v uniform of standard deviation `std`, one
// random stream per chunk of values.
template <typename Store>
void ForEachUniform(int64_t count, float std, uint64_t seed, Store store) {
  const float half_width = std * std::sqrt(3.0f);
  const int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    Rng rng{ChunkSeed(seed, c)};
    const int64_t begin = c * kChunk, end = std::min(count, begin + kChunk);
    for (int64_t i = begin; i < end; ++i) store(i, half_width * rng.Symmetric());
  }
}

// A 16-bit matrix: uniform values with standard deviation `std`.
void FillRandom16(uint8_t* dst, int64_t count, DType dtype, float std, uint64_t seed) {
  ForEachUniform(count, std, seed, [&](int64_t i, float v) {
    const uint16_t bits = dtype == DType::kF16 ? F32ToF16(v) : F32ToBf16(v);
    std::memcpy(dst + 2 * i, &bits, 2);
  });
}

}  // namespace

void FillRandomFloats(float* dst, int64_t count, float std, uint64_t seed) {
  ForEachUniform(count, std, seed, [&](int64_t i, float v) { dst[i] = v; });
}

void FillRandomMatrix(const quant::MatrixLayout& layout, uint64_t seed, uint8_t* dst) {
  const float std = 1.0f / std::sqrt(float(layout.cols));
  std::memset(dst, 0, size_t(layout.total_bytes));
  if (!layout.spec.quantized()) {
    FillRandom16(dst, layout.rows * layout.cols, layout.spec.dtype16, std, seed);
    return;
  }
  // Codes uniform in [0, 2^bits): any bit pattern is a valid packed block.
  FillRandomBytes(dst, layout.codes_bytes, seed);
  FillRandomBytes(dst + layout.scales_offset, layout.groups, seed + 1);
  FillRandomBytes(dst + layout.zeros_offset, layout.groups, seed + 2);
  // A uniform code has std levels / sqrt(12); the scale makes the value's std `std`, with
  // the per-group scale varying +-10% and the zero near the middle of the range.
  const float levels = float((1 << layout.spec.bits) - 1);
  const float scale = std * std::sqrt(12.0f) / (levels + 1);
  quant::MetaParams meta{0.9f * scale, 0.2f * scale / 255, levels / 2 - 0.5f, 1.0f / 255};
  auto* metas = reinterpret_cast<quant::MetaParams*>(dst + layout.meta_offset);
  for (int64_t i = 0; i < layout.meta_count; ++i) std::memcpy(&metas[i], &meta, sizeof(meta));
}

absl::StatusOr<coordinator::DenseWeights> RandomDenseWeights(const ModelConfig& c,
                                                             int attn_bits,
                                                             int64_t group_size,
                                                             uint64_t seed) {
  if (attn_bits != 32 && !quant::IsSupportedBits(attn_bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention bits ", attn_bits, " is not one of 32, 16, 8, 4, 3, 2"));
  }
  const int64_t h = c.hidden_size;
  uint64_t stream = seed * 1000003;
  auto floats = [&](int64_t count, float std) {
    std::vector<float> v(count);
    FillRandomFloats(v.data(), count, std, ++stream);
    return v;
  };
  auto norm = [&](int64_t count) {
    std::vector<float> v = floats(count, 0.05f);
    for (float& x : v) x += 1.0f;
    return v;
  };
  auto project = [&](int64_t rows, int64_t cols, std::vector<float>* f32,
                     coordinator::PackedMatrix* packed) -> absl::Status {
    if (attn_bits == 32) {
      *f32 = floats(rows * cols, 1.0f / std::sqrt(float(cols)));
      return absl::OkStatus();
    }
    quant::MatrixSpec spec;
    spec.bits = attn_bits;
    spec.group_size = group_size;
    spec.dtype16 = DType::kF16;
    MOE_RETURN_IF_ERROR(quant::MatrixLayout::Compute(rows, cols, spec, "attention", &packed->layout));
    packed->bytes.resize(size_t(packed->layout.total_bytes));
    FillRandomMatrix(packed->layout, ++stream, packed->bytes.data());
    return absl::OkStatus();
  };

  coordinator::DenseWeights w;
  w.embedding = floats(c.vocab_size * h, 1.0f);
  w.final_norm = norm(h);
  if (!c.tie_word_embeddings) w.lm_head = floats(c.vocab_size * h, 1.0f / std::sqrt(float(h)));
  w.layers.resize(c.num_hidden_layers);
  for (coordinator::LayerWeights& lw : w.layers) {
    lw.input_norm = norm(h);
    MOE_RETURN_IF_ERROR(project(c.q_dim(), h, &lw.q, &lw.q_packed));
    MOE_RETURN_IF_ERROR(project(c.kv_dim(), h, &lw.k, &lw.k_packed));
    MOE_RETURN_IF_ERROR(project(c.kv_dim(), h, &lw.v, &lw.v_packed));
    MOE_RETURN_IF_ERROR(project(h, c.q_dim(), &lw.o, &lw.o_packed));
    lw.post_norm = norm(h);
    lw.gate = floats(c.num_local_experts * h, 1.0f / std::sqrt(float(h)));
  }
  return w;
}

}  // namespace moe::bench
