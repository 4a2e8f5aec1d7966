#include "bench/synthetic_weights.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

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

namespace {

// One dense tensor of the random model: its shape, its spread (norms: 1 + that spread), and
// where it goes: `packed` in `spec` (attention as asked; the embedding table, LM head and
// routers in 16 bits, as a 16-bit checkpoint keeps them) or fp32 `f32`.
struct PlannedTensor {
  int64_t rows = 0, cols = 0;
  float std = 0;
  bool norm = false;
  std::vector<float>* f32 = nullptr;
  coordinator::PackedMatrix* packed = nullptr;  // set: stored as `spec` says
  quant::MatrixSpec spec;
};

// The one plan of the random model that RandomDenseWeights fills and RandomDenseWeightsBytes
// sizes, tensor by tensor in a fixed order (each its own random stream): the fill and the
// count cannot disagree. `w` gets its layers; the tensors are left to `visit`.
absl::Status PlanDenseWeights(const ModelConfig& c, int attn_bits, int64_t group_size,
                              coordinator::DenseWeights& w,
                              const std::function<absl::Status(const PlannedTensor&)>& visit) {
  if (attn_bits != 32 && !quant::IsSupportedBits(attn_bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention bits ", attn_bits, " is not one of 32, 16, 8, 4, 3, 2"));
  }
  const int64_t h = c.hidden_size;
  auto f32 = [&](int64_t rows, int64_t cols, float std, std::vector<float>* dst, bool norm) {
    PlannedTensor t;
    t.rows = rows;
    t.cols = cols;
    t.std = std;
    t.norm = norm;
    t.f32 = dst;
    return visit(t);
  };
  auto norm = [&](std::vector<float>* dst) { return f32(1, h, 0.05f, dst, /*norm=*/true); };
  // fp32 when the model is (attention bits 32), else stored at `bits`.
  auto matrix = [&](int64_t rows, int64_t cols, float std, int bits, std::vector<float>* dst,
                    coordinator::PackedMatrix* packed) {
    if (attn_bits == 32) return f32(rows, cols, std, dst, /*norm=*/false);
    PlannedTensor t;
    t.rows = rows;
    t.cols = cols;
    t.std = std;
    t.packed = packed;
    t.spec.bits = bits;
    t.spec.group_size = group_size;
    t.spec.dtype16 = DType::kF16;
    return visit(t);
  };
  const float unit = 1.0f / std::sqrt(float(h));
  MOE_RETURN_IF_ERROR(matrix(c.vocab_size, h, 1.0f, 16, &w.embedding, &w.embedding_packed));
  MOE_RETURN_IF_ERROR(norm(&w.final_norm));
  if (!c.tie_word_embeddings) {
    MOE_RETURN_IF_ERROR(matrix(c.vocab_size, h, unit, 16, &w.lm_head, &w.lm_head_packed));
  }
  w.layers.resize(c.num_hidden_layers);
  for (coordinator::LayerWeights& lw : w.layers) {
    MOE_RETURN_IF_ERROR(norm(&lw.input_norm));
    const float q_unit = 1.0f / std::sqrt(float(c.q_dim()));
    MOE_RETURN_IF_ERROR(matrix(c.q_dim(), h, unit, attn_bits, &lw.q, &lw.q_packed));
    MOE_RETURN_IF_ERROR(matrix(c.kv_dim(), h, unit, attn_bits, &lw.k, &lw.k_packed));
    MOE_RETURN_IF_ERROR(matrix(c.kv_dim(), h, unit, attn_bits, &lw.v, &lw.v_packed));
    MOE_RETURN_IF_ERROR(matrix(h, c.q_dim(), q_unit, attn_bits, &lw.o, &lw.o_packed));
    MOE_RETURN_IF_ERROR(norm(&lw.post_norm));
    MOE_RETURN_IF_ERROR(matrix(c.num_local_experts, h, unit, 16, &lw.gate, &lw.gate_packed));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<coordinator::DenseWeights> RandomDenseWeights(const ModelConfig& c,
                                                             int attn_bits,
                                                             int64_t group_size,
                                                             uint64_t seed) {
  uint64_t stream = seed * 1000003;
  coordinator::DenseWeights w;
  MOE_RETURN_IF_ERROR(
      PlanDenseWeights(c, attn_bits, group_size, w, [&](const PlannedTensor& t) -> absl::Status {
        if (t.packed == nullptr) {
          t.f32->resize(size_t(t.rows * t.cols));
          FillRandomFloats(t.f32->data(), t.rows * t.cols, t.std, ++stream);
          if (t.norm) {
            for (float& x : *t.f32) x += 1.0f;
          }
          return absl::OkStatus();
        }
        MOE_RETURN_IF_ERROR(
            quant::MatrixLayout::Compute(t.rows, t.cols, t.spec, "random", &t.packed->layout));
        t.packed->bytes.assign(size_t(t.packed->layout.total_bytes), 0);
        if (t.spec.quantized()) {
          FillRandomMatrix(t.packed->layout, ++stream, t.packed->bytes.data());
        } else {  // the tensor's own spread (the embedding table's is 1)
          FillRandom16(t.packed->bytes.data(), t.rows * t.cols, t.spec.dtype16, t.std, ++stream);
        }
        return absl::OkStatus();
      }));
  return w;
}

absl::StatusOr<int64_t> RandomDenseWeightsBytes(const ModelConfig& c, int attn_bits,
                                                int64_t group_size) {
  int64_t bytes = 0;
  coordinator::DenseWeights shell;  // layers only: no tensor is allocated
  MOE_RETURN_IF_ERROR(
      PlanDenseWeights(c, attn_bits, group_size, shell, [&](const PlannedTensor& t) -> absl::Status {
        if (t.packed == nullptr) {
          bytes += t.rows * t.cols * int64_t(sizeof(float));
          return absl::OkStatus();
        }
        quant::MatrixLayout layout;
        MOE_RETURN_IF_ERROR(quant::MatrixLayout::Compute(t.rows, t.cols, t.spec, "random", &layout));
        bytes += layout.total_bytes;
        return absl::OkStatus();
      }));
  return bytes;
}

}  // namespace moe::bench
