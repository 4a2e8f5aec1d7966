// NumPy .npy files of float32 in C order (the reference logits' format).
#ifndef MOE_COMMON_NPY_H_
#define MOE_COMMON_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moe {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

absl::Status WriteNpyF32(const std::string& path, absl::Span<const int64_t> shape,
                         absl::Span<const float> data);
// Reads a little-endian float32 ('<f4'), C-order array (format versions 1-3).
absl::StatusOr<NpyArray> ReadNpyF32(const std::string& path);

}  // namespace moe

#endif  // MOE_COMMON_NPY_H_
