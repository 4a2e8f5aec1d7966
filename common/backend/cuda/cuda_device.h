// CUDA device discovery and the CUDA Device (compiled only with MOE_CUDA).
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/backend.h"
#include "common/backend/device.h"

namespace moe::cuda {

// The visible devices; UNAVAILABLE when there is none or no driver.
absl::StatusOr<std::vector<backend::DeviceInfo>> ListDevices();

// The CUDA device `ordinal` as a backend::Device (device.h's OpenDevice calls this).
absl::StatusOr<std::unique_ptr<backend::Device>> OpenCudaDevice(int ordinal);

}  // namespace moe::cuda

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_
