#include "common/backend/cuda/cuda_ipc_arena.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_status.h"
#include "common/logging.h"

namespace moe::cuda {

absl::StatusOr<std::unique_ptr<CudaIpcArena>> CudaIpcArena::Create(int device, size_t bytes) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), "selecting the arena's device");
  void* ptr = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr, bytes), "allocating the activation arena");
  cudaIpcMemHandle_t handle;
  const absl::Status exported =
      CudaStatus(cudaIpcGetMemHandle(&handle, ptr), "cudaIpcGetMemHandle", "exporting the arena");
  if (!exported.ok()) {
    cudaFree(ptr);
    return exported;
  }
  return std::unique_ptr<CudaIpcArena>(new CudaIpcArena(
      device, ptr, bytes, std::string(reinterpret_cast<const char*>(&handle), sizeof(handle)),
      /*owner=*/true));
}

namespace {

// The size of the allocation `ptr` starts, from the driver's cuMemGetAddressRange, found
// through the runtime so that nothing links libcuda (absent on machines without a GPU).
absl::StatusOr<size_t> AllocationBytes(void* ptr) {
  using GetAddressRange = int (*)(unsigned long long* base, size_t* size, unsigned long long ptr);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000,
                                                            cudaEnableDefault, &found),
                           "finding cuMemGetAddressRange");
  if (fn == nullptr || found != cudaDriverEntryPointSuccess) {
    return absl::InternalError("the CUDA driver has no cuMemGetAddressRange");
  }
  unsigned long long base = 0;
  size_t size = 0;
  const int rc = reinterpret_cast<GetAddressRange>(fn)(&base, &size,
                                                       reinterpret_cast<unsigned long long>(ptr));
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cuMemGetAddressRange on the CUDA IPC arena: error ", rc));
  }
  // The arena is used from ptr on: what lies before it in the allocation does not count.
  return size - size_t(reinterpret_cast<unsigned long long>(ptr) - base);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaIpcArena>> CudaIpcArena::Open(int device,
                                                                 const std::string& handle,
                                                                 size_t bytes) {
  cudaIpcMemHandle_t h;
  if (handle.size() != sizeof(h)) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA IPC handle is ", handle.size(),
                                                   " bytes, expected ", sizeof(h)));
  }
  std::memcpy(&h, handle.data(), sizeof(h));
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), "selecting the arena's device");
  void* ptr = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(cudaIpcOpenMemHandle(&ptr, h, cudaIpcMemLazyEnablePeerAccess),
                           "opening the coordinator's arena");
  // The announced size comes off the wire: check it against the allocation the handle
  // really names, or a hostile caller could make us read and write past it.
  absl::StatusOr<size_t> real = AllocationBytes(ptr);
  if (!real.ok() || *real < bytes) {
    cudaIpcCloseMemHandle(ptr);
    if (!real.ok()) return real.status();
    return absl::FailedPreconditionError(absl::StrCat(
        "the CUDA IPC arena is a ", *real, "-byte allocation, smaller than the ", bytes,
        " bytes announced"));
  }
  return std::unique_ptr<CudaIpcArena>(new CudaIpcArena(device, ptr, bytes, handle, /*owner=*/false));
}

absl::StatusOr<std::string> CudaIpcArena::PciBusId(int device) {
  char id[64] = {};  // "dddd:bb:dd.f" needs 13; the API's limit is the buffer's size
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceGetPCIBusId(id, sizeof(id) - 1, device),
                           "naming the device's PCI bus");
  return std::string(id);
}

CudaIpcArena::~CudaIpcArena() {
  // The last owner may be any thread (a worker's owner watch): select the arena's device,
  // whose context the mapping or allocation belongs to.
  cudaError_t error = cudaSetDevice(device_);
  if (error == cudaSuccess) error = owner_ ? cudaFree(ptr_) : cudaIpcCloseMemHandle(ptr_);
  if (error != cudaSuccess) {
    MOE_LOG(ERROR) << "releasing the CUDA arena: " << cudaGetErrorString(error);
  }
}

}  // namespace moe::cuda
