// backend::Kernels on CUDA (compiled only with MOE_CUDA).
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_KERNELS_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_KERNELS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "common/backend/kernels.h"

namespace moe::cuda {

// The kernels of a CUDA device (which must outlive them).
absl::StatusOr<std::unique_ptr<backend::Kernels>> CreateCudaKernels(backend::Device& device);

}  // namespace moe::cuda

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_KERNELS_H_
