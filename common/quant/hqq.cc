#include "common/quant/hqq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe::quant {

absl::StatusOr<Method> ParseMethod(absl::string_view name) {
  if (name == "hqq") return Method::kHqq;
  if (name == "rtn") return Method::kRtn;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quantization method \"", name, "\" (hqq or rtn)"));
}

absl::string_view MethodName(Method method) { return method == Method::kHqq ? "hqq" : "rtn"; }

namespace {

// Proximal operator of the lp "norm" (p < 1): shrinks small errors to zero, keeps
// outliers. HQQ's shrink_lp_op.
inline float ShrinkLp(float x, float beta, float p) {
  const float a = std::fabs(x);
  if (a == 0.0f) return 0.0f;
  const float shrunk = std::max(a - std::pow(a, p - 1.0f) / beta, 0.0f);
  return x < 0 ? -shrunk : shrunk;
}

inline float Code(float w, float inv_scale, float zero, float qmax) {
  return std::clamp(std::nearbyint(w * inv_scale + zero), 0.0f, qmax);
}

// HQQ's half-quadratic solver for one group with its scale fixed: alternate the error
// split W_e = shrink(W - dequant(W_q)) with the closed-form zero update
// z = mean(W_q - (W - W_e) / s). Returns the zero with the lowest l1 error seen.
float OptimizeZero(const float* w, int64_t g, float scale, float zero, float qmax,
                   const HqqParams& p) {
  const float inv = 1.0f / scale;
  float beta = p.beta;
  float best_zero = zero;
  double best_error = std::numeric_limits<double>::infinity();
  for (int it = 0; it < p.iterations; ++it) {
    double error = 0, acc = 0;
    for (int64_t j = 0; j < g; ++j) {
      const float q = Code(w[j], inv, zero, qmax);
      const float e = w[j] - scale * (q - zero);
      error += std::fabs(e);
      const float we = ShrinkLp(e, beta, p.lp_norm);
      acc += q - (w[j] - we) * inv;
    }
    if (error < best_error) {
      best_error = error;
      best_zero = zero;
    } else {
      break;  // as HQQ: stop once the error stops falling
    }
    zero = static_cast<float>(acc / g);
    beta *= p.kappa;
  }
  return best_zero;
}

// 8-bit min-max quantization of values[0..count) in meta groups; writes the codes and
// returns the params through `set` (which picks the scale or zero half of MetaParams).
template <typename Set>
void MetaQuantize(const std::vector<float>& values, std::vector<uint8_t>* codes,
                  std::vector<MetaParams>* meta, Set set) {
  const int64_t count = static_cast<int64_t>(values.size());
  codes->resize(count);
  for (int64_t m = 0; m * kMetaGroup < count; ++m) {
    const int64_t begin = m * kMetaGroup, end = std::min(count, begin + kMetaGroup);
    float lo = values[begin], hi = values[begin];
    for (int64_t i = begin; i < end; ++i) {
      lo = std::min(lo, values[i]);
      hi = std::max(hi, values[i]);
    }
    const float step = (hi - lo) / 255.0f;
    set((*meta)[m], lo, step);
    for (int64_t i = begin; i < end; ++i) {
      (*codes)[i] = step > 0 ? uint8_t(std::clamp(std::nearbyint((values[i] - lo) / step), 0.0f, 255.0f))
                             : uint8_t{0};
    }
  }
}

}  // namespace

absl::StatusOr<QuantizedMatrix> QuantizeMatrix(const float* w, int64_t rows, int64_t cols,
                                               const QuantizeOptions& options) {
  QuantizedMatrix out;
  MOE_RETURN_IF_ERROR(MatrixLayout::Compute(rows, cols, options.spec, "matrix", &out.layout));
  const MatrixLayout& l = out.layout;
  out.bytes.assign(l.total_bytes, 0);
  const int64_t values = rows * cols;
  for (int64_t i = 0; i < values; ++i) out.squared_norm += double(w[i]) * w[i];

  if (!l.spec.quantized()) {
    auto* dst = reinterpret_cast<uint16_t*>(out.bytes.data());
    for (int64_t i = 0; i < values; ++i) {
      dst[i] = l.spec.dtype16 == DType::kBF16 ? F32ToBf16(w[i]) : F32ToF16(w[i]);
      const float back = l.spec.dtype16 == DType::kBF16 ? Bf16ToF32(dst[i]) : F16ToF32(dst[i]);
      out.squared_error += double(w[i] - back) * (w[i] - back);
    }
    return out;
  }

  const int64_t g = l.spec.group_size, groups = l.groups;
  const float qmax = float((1 << l.spec.bits) - 1);
  // 1. Min-max scales, then their 8-bit meta-quantization: everything after uses the
  //    scale as stored.
  std::vector<float> scale(groups), lo(groups);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < groups; ++k) {
    const float* wg = w + k * g;
    float mn = wg[0], mx = wg[0];
    for (int64_t j = 1; j < g; ++j) {
      mn = std::min(mn, wg[j]);
      mx = std::max(mx, wg[j]);
    }
    // A constant group still needs a positive scale.
    scale[k] = std::max((mx - mn) / qmax, std::max(std::fabs(mx), 1e-12f) * 1e-4f);
    lo[k] = mn;
  }
  std::vector<MetaParams> meta(l.meta_count);
  std::vector<uint8_t> scale_codes, zero_codes;
  MetaQuantize(scale, &scale_codes, &meta, [](MetaParams& m, float min, float step) {
    m.s_min = min;
    m.s_step = step;
  });
  std::vector<float> zero(groups);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < groups; ++k) {
    const MetaParams& m = meta[k / kMetaGroup];
    const float s = m.s_min + m.s_step * scale_codes[k];  // as MatrixView::Scale reads it
    const float z0 = -lo[k] / s;
    zero[k] = options.method == Method::kHqq
                  ? OptimizeZero(w + k * g, g, s, z0, qmax, options.hqq)
                  : z0;
  }
  MetaQuantize(zero, &zero_codes, &meta, [](MetaParams& m, float min, float step) {
    m.z_min = min;
    m.z_step = step;
  });
  std::memcpy(out.bytes.data() + l.scales_offset, scale_codes.data(), groups);
  std::memcpy(out.bytes.data() + l.zeros_offset, zero_codes.data(), groups);
  std::memcpy(out.bytes.data() + l.meta_offset, meta.data(), meta.size() * sizeof(MetaParams));

  // 2. Codes against the stored scale and zero (the nearest level for each weight).
  const MatrixView view = out.view();
  const int64_t block_bytes = l.spec.bits * kBlock / 8;
  const int64_t blocks = values / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t codes[kBlock];
    const int64_t k = b * kBlock / g;
    const float s = view.Scale(k), z = view.Zero(k), inv = 1.0f / s;
    for (int64_t i = 0; i < kBlock; ++i) codes[i] = uint8_t(Code(w[b * kBlock + i], inv, z, qmax));
    PackBlock(codes, l.spec.bits, out.bytes.data() + b * block_bytes);
  }

  // 3. The error of what is stored, through the reference dequantizer.
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRowsReference(view, r, r + 1, row.data());
    for (int64_t c = 0; c < cols; ++c) {
      const double e = double(w[r * cols + c]) - row[c];
      out.squared_error += e * e;
    }
  }
  return out;
}

}  // namespace moe::quant
