// Element types of stored tensors and their conversion to the fp32 the engine computes in.
#ifndef MOE_COMMON_DTYPE_H_
#define MOE_COMMON_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moe {

enum class DType { kF32, kF16, kBF16 };

// Parses a safetensors dtype tag ("F32", "F16", "BF16").
absl::StatusOr<DType> ParseDType(absl::string_view name);
absl::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

inline float Bf16ToF32(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

// IEEE half to float, including subnormals, infinities and NaN.
float F16ToF32(uint16_t bits);

// Round-to-nearest-even conversions (NaN stays NaN).
uint16_t F32ToBf16(float value);
uint16_t F32ToF16(float value);

// Converts `count` elements at `src` (unaligned is fine) of type `dtype` to fp32.
void ConvertToF32(const void* src, DType dtype, size_t count, float* dst);

}  // namespace moe

#endif  // MOE_COMMON_DTYPE_H_
