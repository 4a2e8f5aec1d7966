#include "common/backend/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_status.h"

namespace moe::cuda {

absl::StatusOr<std::vector<backend::DeviceInfo>> ListDevices() {
  int count = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count), "listing CUDA devices");
  if (count == 0) return absl::UnavailableError("no CUDA device is visible");
  std::vector<backend::DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    MOE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, i), "reading device properties");
    devices.push_back({absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ")"),
                       static_cast<int64_t>(prop.totalGlobalMem)});
  }
  return devices;
}

absl::StatusOr<std::unique_ptr<backend::Device>> OpenCudaDevice(int ordinal) {
  return absl::UnimplementedError("the CUDA Device is not written yet");
}

}  // namespace moe::cuda
