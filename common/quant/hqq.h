// Quantizing one fp32 matrix into the offload format (common/quant/quant_format.h):
// half-quadratic quantization (HQQ, Badri & Shaji 2023) or plain round-to-nearest, with
// scales and zeros meta-quantized to 8 bits. docs/quantization.md has the algorithm.
#ifndef MOE_COMMON_QUANT_HQQ_H_
#define MOE_COMMON_QUANT_HQQ_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/quant/quant_format.h"

namespace moe::quant {

enum class Method { kHqq, kRtn };
absl::StatusOr<Method> ParseMethod(absl::string_view name);
absl::string_view MethodName(Method method);

// HQQ's solver parameters; the defaults are the HQQ library's.
struct HqqParams {
  float lp_norm = 0.7f;  // p of the sparsity-promoting |e|^p error
  float beta = 10.0f;    // initial penalty; grows by kappa each iteration
  float kappa = 1.01f;
  int iterations = 20;
};

struct QuantizeOptions {
  MatrixSpec spec;
  Method method = Method::kHqq;
  HqqParams hqq;
};

// The packed bytes of one matrix and how far they are from the original.
struct QuantizedMatrix {
  MatrixLayout layout;
  std::vector<uint8_t> bytes;  // layout.total_bytes
  double squared_error = 0;    // ||W - dequant(bytes)||^2 over the matrix
  double squared_norm = 0;     // ||W||^2
  MatrixView view() const { return {layout, bytes.data()}; }
};

// Quantizes w[rows, cols] (row-major; cols is the input dimension). With spec.bits 16,
// stores w as spec.dtype16. Thread-safe; parallel over rows with OpenMP when built with it.
absl::StatusOr<QuantizedMatrix> QuantizeMatrix(const float* w, int64_t rows, int64_t cols,
                                               const QuantizeOptions& options);

}  // namespace moe::quant

#endif  // MOE_COMMON_QUANT_HQQ_H_
