// CUDA device discovery (compiled only with MOE_CUDA).
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/backend.h"

namespace moe::cuda {

// The visible devices; UNAVAILABLE when there is none or no driver.
absl::StatusOr<std::vector<backend::DeviceInfo>> ListDevices();

}  // namespace moe::cuda

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_
