#include "common/backend/cuda/cuda_kernels.h"

namespace moe::cuda {

absl::StatusOr<std::unique_ptr<backend::Kernels>> CreateCudaKernels(backend::Device&) {
  return absl::UnimplementedError("the CUDA kernels are not written yet");
}

}  // namespace moe::cuda
