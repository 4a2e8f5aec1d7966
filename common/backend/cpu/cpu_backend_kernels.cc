#include "common/backend/cpu/cpu_backend_kernels.h"

#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <vector>

#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"

namespace moe::cpu {

using backend::Stream;

absl::Status CpuKernels::MatMul(const backend::WeightView& w, const float* x, float* y,
                                int64_t n, bool accumulate, Stream&) {
  if (w.format == backend::WeightFormat::kF32) {
    MatMulTransB(x, static_cast<const float*>(w.data), y, n, w.cols, w.rows, accumulate);
  } else {
    QuantMatMulTransB({w.layout, static_cast<const uint8_t*>(w.data)}, x, y, n, accumulate);
  }
  return absl::OkStatus();
}

absl::Status CpuKernels::RmsNorm(const float* x, const float* weight, float* y, int64_t n,
                                 int64_t d, float eps, Stream&) {
  cpu::RmsNorm(x, weight, y, n, d, eps);
  return absl::OkStatus();
}

absl::Status CpuKernels::Rope(float* x, int64_t start, int64_t n, int64_t heads,
                              const backend::RopeParams& rope, Stream&) {
  // The same table arithmetic as the engine's RopeTable, hence the same bits. The
  // table (a pow per frequency) is kept per thread between calls: a step ropes every
  // sequence's queries and keys in each layer, one or a few rows each.
  thread_local std::optional<RopeTable> table;
  if (!table || table->head_dim() != rope.head_dim || table->theta() != rope.theta) {
    table.emplace(rope.head_dim, rope.theta, std::numeric_limits<int64_t>::max());
  }
  thread_local std::vector<int64_t> positions;
  positions.resize(size_t(n));
  std::iota(positions.begin(), positions.end(), start);
  table->Apply(x, positions.data(), n, heads);
  return absl::OkStatus();
}

absl::Status CpuKernels::Attention(const float* q, const float* k_cache, const float* v_cache,
                                   float* out, int64_t start, int64_t n, int64_t heads,
                                   int64_t kv_heads, int64_t head_dim, int64_t window, Stream&) {
  cpu::Attention(q, k_cache, v_cache, out, start, n, heads, kv_heads, head_dim, window);
  return absl::OkStatus();
}

absl::Status CpuKernels::SiluMul(float* gate, const float* up, int64_t count, Stream&) {
  cpu::SiluMul(gate, up, count);
  return absl::OkStatus();
}

absl::Status CpuKernels::Add(float* y, const float* x, int64_t count, Stream&) {
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
  return absl::OkStatus();
}

absl::Status CpuKernels::TopKRouting(const float* logits, int64_t n, int64_t experts, int64_t k,
                                     bool renormalize, int32_t* ids, float* weights, Stream&) {
  for (int64_t t = 0; t < n; ++t) {
    cpu::TopKRouting(logits + t * experts, experts, k, ids + t * k, weights + t * k, renormalize);
  }
  return absl::OkStatus();
}

absl::Status CpuKernels::AddBias(float* x, const float* bias, int64_t n, int64_t d, Stream&) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) x[i * d + j] += bias[j];
  }
  return absl::OkStatus();
}

absl::Status CpuKernels::Clamp(float* x, int64_t count, float limit, Stream&) {
  for (int64_t i = 0; i < count; ++i) x[i] = std::min(std::max(x[i], -limit), limit);
  return absl::OkStatus();
}

absl::Status CpuKernels::SigmoidGatedAdd(float* y, const float* gate, const float* x, int64_t n,
                                         int64_t d, Stream&) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = 1.0f / (1.0f + std::exp(-gate[i]));
    for (int64_t j = 0; j < d; ++j) y[i * d + j] += g * x[i * d + j];
  }
  return absl::OkStatus();
}

absl::Status CpuKernels::GatherRows(const float* table, const int32_t* rows, int64_t n, int64_t d,
                                    float* out, Stream&) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * d, table + int64_t(rows[i]) * d, d * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuKernels::GatherWeightRows(const backend::WeightView& table, const int32_t* rows,
                                          int64_t n, float* out, Stream&) {
  const int64_t d = table.cols;
  if (table.format == backend::WeightFormat::kF32) {
    const auto* f32 = static_cast<const float*>(table.data);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(out + i * d, f32 + int64_t(rows[i]) * d, d * sizeof(float));
    }
    return absl::OkStatus();
  }
  const quant::MatrixView view{table.layout, static_cast<const uint8_t*>(table.data)};
  for (int64_t i = 0; i < n; ++i) DequantizeRows(view, rows[i], int64_t(rows[i]) + 1, out + i * d);
  return absl::OkStatus();
}

absl::Status CpuKernels::ScatterAddRows(const float* x, const int32_t* rows, const float* scale,
                                        int64_t n, int64_t d, float* out, Stream&) {
  for (int64_t i = 0; i < n; ++i) {
    float* dst = out + int64_t(rows[i]) * d;
    const float* src = x + i * d;
    const float g = scale[i];
    for (int64_t c = 0; c < d; ++c) dst[c] += g * src[c];
  }
  return absl::OkStatus();
}

}  // namespace moe::cpu
