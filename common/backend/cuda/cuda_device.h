// CUDA device discovery and the CUDA Device (compiled only with MOE_CUDA): cudaMalloc
// memory, pinned and registered host memory, non-blocking streams, timing-free events,
// asynchronous copies. Every method makes the device current on the calling thread first,
// so a Device may be used from any thread without a BindThread.
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/backend.h"
#include "common/backend/device.h"

namespace moe::cuda {

// The visible devices; UNAVAILABLE when there is none or no driver.
absl::StatusOr<std::vector<backend::DeviceInfo>> ListDevices();

// The CUDA device `ordinal` as a backend::Device (device.h's OpenDevice calls this).
// UNAVAILABLE when there is no driver or device, INVALID_ARGUMENT for an ordinal past the
// last device.
absl::StatusOr<std::unique_ptr<backend::Device>> OpenCudaDevice(int ordinal);

// Thread-safe (holds only the ordinal and name).
class CudaDevice : public backend::Device {
 public:
  CudaDevice(int ordinal, std::string name) : ordinal_(ordinal), name_(std::move(name)) {}

  backend::DeviceKind kind() const override { return backend::DeviceKind::kCuda; }
  std::string name() const override { return name_; }
  int ordinal() const override { return ordinal_; }
  absl::Status BindThread() const override;

  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> Allocate(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> AllocatePinnedHost(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> RegisterHost(void* data, size_t bytes,
                                                                       bool read_only) override;
  using backend::Device::CreateStream;
  // kHigh: the device's greatest stream priority (cudaDeviceGetStreamPriorityRange).
  absl::StatusOr<std::unique_ptr<backend::Stream>> CreateStream(
      backend::StreamPriority priority) override;
  absl::StatusOr<std::unique_ptr<backend::Event>> CreateEvent(bool interprocess) override;

  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes,
                          backend::Stream& stream) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override;
  absl::Status Memset(void* dst, int value, size_t bytes, backend::Stream& stream) override;
  absl::StatusOr<backend::MemoryInfo> Memory() const override;
  bool AsyncCopiesForRead() const override { return true; }
  bool HostMemoryIsDeviceMemory() const override { return false; }

 private:
  int ordinal_;
  std::string name_;
};

}  // namespace moe::cuda

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_DEVICE_H_
