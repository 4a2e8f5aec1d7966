// The CUDA module's entry point (cuda_module.h): backend::CudaModule over the CUDA
// device, kernels and IPC arena of this folder. Built into libmoe_cuda.so only.
#include "common/backend/cuda_module.h"

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_device.h"
#include "common/backend/cuda/cuda_ipc_arena.h"
#include "common/backend/cuda/cuda_kernels.h"
#include "common/logging.h"

namespace moe::cuda {
namespace {

class CudaModuleImpl final : public backend::CudaModule {
 public:
  absl::StatusOr<std::vector<backend::DeviceInfo>> ListDevices() const override {
    return cuda::ListDevices();
  }
  absl::StatusOr<std::unique_ptr<backend::Device>> OpenDevice(int ordinal) const override {
    return OpenCudaDevice(ordinal);
  }
  absl::StatusOr<std::unique_ptr<backend::Kernels>> CreateKernels(
      backend::Device& device) const override {
    return CreateCudaKernels(device);
  }
  absl::StatusOr<std::unique_ptr<backend::CudaIpcMemory>> ExportIpcMemory(
      int ordinal, size_t bytes) const override {
    absl::StatusOr<std::unique_ptr<CudaIpcArena>> arena = CudaIpcArena::Create(ordinal, bytes);
    if (!arena.ok()) return arena.status();
    return std::unique_ptr<backend::CudaIpcMemory>(*std::move(arena));
  }
  absl::StatusOr<std::unique_ptr<backend::CudaIpcMemory>> OpenIpcMemory(
      int ordinal, const std::string& handle, size_t bytes) const override {
    absl::StatusOr<std::unique_ptr<CudaIpcArena>> arena = CudaIpcArena::Open(ordinal, handle, bytes);
    if (!arena.ok()) return arena.status();
    return std::unique_ptr<backend::CudaIpcMemory>(*std::move(arena));
  }
  absl::StatusOr<std::string> PciBusId(int ordinal) const override {
    return CudaIpcArena::PciBusId(ordinal);
  }
};

}  // namespace
}  // namespace moe::cuda

extern "C" __attribute__((visibility("default"))) const moe::backend::CudaModule* MoeCudaModule(
    int host_abi, int log_min_severity, std::string* error) {
  if (host_abi != moe::backend::kCudaModuleAbi) {
    *error = absl::StrCat("the CUDA module has interface version ", moe::backend::kCudaModuleAbi,
                          ", the program ", host_abi, " (a module of another build?)");
    return nullptr;
  }
  moe::logging::SetMinSeverity(static_cast<moe::logging::Severity>(log_min_severity));
  static const moe::cuda::CudaModuleImpl* const module = new moe::cuda::CudaModuleImpl();
  return module;
}
