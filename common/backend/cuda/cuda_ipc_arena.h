// The activation arena in device memory, shared between the coordinator and a worker on
// the same GPU: the coordinator allocates it once and exports a cudaIpcMemHandle_t; the
// worker opens it once; calls then name offsets into it. Part of the CUDA module
// (cuda_module.h): the rest of the program reaches it as a backend::CudaIpcMemory.
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_IPC_ARENA_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_IPC_ARENA_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/backend/cuda_module.h"

namespace moe::cuda {

// Owns the allocation (exporter) or the opened mapping (importer). Memory exported by
// IPC must be freed only after every importer has closed it: the coordinator keeps its
// arena for its whole life, and importers close theirs before a re-attach.
class CudaIpcArena final : public backend::CudaIpcMemory {
 public:
  // Allocates `bytes` of device memory on `device` and exports it.
  static absl::StatusOr<std::unique_ptr<CudaIpcArena>> Create(int device, size_t bytes);
  // Opens an exported arena from its 64-byte handle (another process's).
  static absl::StatusOr<std::unique_ptr<CudaIpcArena>> Open(int device, const std::string& handle,
                                                            size_t bytes);
  // cudaDeviceGetPCIBusId of `device` ("0000:65:00.0"): names one GPU the same way in
  // every process, whatever CUDA_VISIBLE_DEVICES numbers it.
  static absl::StatusOr<std::string> PciBusId(int device);
  ~CudaIpcArena() override;
  CudaIpcArena(const CudaIpcArena&) = delete;
  CudaIpcArena& operator=(const CudaIpcArena&) = delete;

  // The cudaIpcMemHandle_t bytes to send to the importer.
  const std::string& handle() const override { return handle_; }
  void* device_ptr() const override { return ptr_; }
  size_t size() const { return size_; }
  int device() const { return device_; }

 private:
  CudaIpcArena(int device, void* ptr, size_t size, std::string handle, bool owner)
      : device_(device), ptr_(ptr), size_(size), handle_(std::move(handle)), owner_(owner) {}
  int device_;
  void* ptr_;
  size_t size_;
  std::string handle_;
  bool owner_;
};

}  // namespace moe::cuda

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_IPC_ARENA_H_
