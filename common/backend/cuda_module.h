// The CUDA backend's interface as the rest of the program sees it. The backend itself
// (common/backend/cuda/, with the CUDA runtime and cuBLAS) is built into a module,
// libmoe_cuda.so, which the registry (registry.cc) dlopens the first time a CUDA device is
// listed or opened. Why: linking libcudart and cuBLAS into every binary made about 160 MiB
// resident before any weight was read (their pages, relocations and zeroed data), on the
// CPU too and with no GPU present; a CPU run now never maps them.
//
// Everything crosses the boundary through virtual calls on the classes below (no symbol
// lookups besides the one entry point); the module is built from the same sources with
// the same compiler and Abseil as the program, and the entry point checks kCudaModuleAbi.
#ifndef MOE_COMMON_BACKEND_CUDA_MODULE_H_
#define MOE_COMMON_BACKEND_CUDA_MODULE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/backend.h"
#include "common/backend/device.h"
#include "common/backend/kernels.h"

namespace moe::backend {

// Raise whenever a class below (or a type it passes) changes shape.
inline constexpr int kCudaModuleAbi = 1;

// Device memory exported to another process by CUDA IPC (the exporter's allocation) or
// opened from another process's handle (an importer's mapping); freed or closed on
// destruction. DeviceIpcArena (device_ipc_arena.h) builds the activation arena on it.
class CudaIpcMemory {
 public:
  virtual ~CudaIpcMemory() = default;
  // The 64-byte cudaIpcMemHandle_t to send to an importer.
  virtual const std::string& handle() const = 0;
  virtual void* device_ptr() const = 0;
};

// What libmoe_cuda.so provides. One instance per process, never destroyed.
class CudaModule {
 public:
  virtual ~CudaModule() = default;
  // The visible devices; UNAVAILABLE when there is none or no driver.
  virtual absl::StatusOr<std::vector<DeviceInfo>> ListDevices() const = 0;
  // UNAVAILABLE when there is no driver or device, INVALID_ARGUMENT for an ordinal past
  // the last device.
  virtual absl::StatusOr<std::unique_ptr<Device>> OpenDevice(int ordinal) const = 0;
  // The kernels of a CUDA device (which must outlive them).
  virtual absl::StatusOr<std::unique_ptr<Kernels>> CreateKernels(Device& device) const = 0;
  // Allocates `bytes` of device memory on device `ordinal` and exports it.
  virtual absl::StatusOr<std::unique_ptr<CudaIpcMemory>> ExportIpcMemory(int ordinal,
                                                                          size_t bytes) const = 0;
  // Opens another process's export from its handle, on device `ordinal`.
  virtual absl::StatusOr<std::unique_ptr<CudaIpcMemory>> OpenIpcMemory(
      int ordinal, const std::string& handle, size_t bytes) const = 0;
  // cudaDeviceGetPCIBusId ("0000:65:00.0"): names one GPU the same way in every process,
  // whatever CUDA_VISIBLE_DEVICES numbers it.
  virtual absl::StatusOr<std::string> PciBusId(int ordinal) const = 0;
};

// The module, loaded on the first call (thread-safe; later calls return the same answer).
// UNIMPLEMENTED in a build without CUDA; FAILED_PRECONDITION naming each path tried and
// dlerror's text when the module cannot be loaded (missing, or the CUDA runtime it needs
// is not found). $MOE_CUDA_MODULE, when set, is the only path tried.
absl::StatusOr<const CudaModule*> LoadCudaModule();

}  // namespace moe::backend

// The module's one exported symbol. Returns null and sets *error when `host_abi` differs
// from the module's kCudaModuleAbi. `log_min_severity` is the program's
// logging::MinSeverity() (the module has its own copy of the logging code).
extern "C" const moe::backend::CudaModule* MoeCudaModule(int host_abi, int log_min_severity,
                                                         std::string* error);

#endif  // MOE_COMMON_BACKEND_CUDA_MODULE_H_
