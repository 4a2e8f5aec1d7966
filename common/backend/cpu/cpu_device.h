// The CPU as a Device: "device memory" is aligned host memory, a stream runs each
// operation on the calling thread before returning, and an event is complete as soon as
// it is recorded. Code that orders its work for CUDA (device.h) runs unchanged here.
#ifndef MOE_COMMON_BACKEND_CPU_CPU_DEVICE_H_
#define MOE_COMMON_BACKEND_CPU_CPU_DEVICE_H_

#include <memory>
#include <string>

#include "common/backend/device.h"

namespace moe::cpu {

class CpuDevice : public backend::Device {
 public:
  backend::DeviceKind kind() const override { return backend::DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }
  int ordinal() const override { return 0; }
  absl::Status BindThread() const override { return absl::OkStatus(); }

  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> Allocate(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> AllocatePinnedHost(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> RegisterHost(void* data, size_t bytes,
                                                                       bool read_only) override;
  absl::StatusOr<std::unique_ptr<backend::Stream>> CreateStream() override;
  absl::StatusOr<std::unique_ptr<backend::Event>> CreateEvent(bool interprocess) override;

  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes,
                          backend::Stream& stream) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override;
  absl::Status Memset(void* dst, int value, size_t bytes, backend::Stream& stream) override;
  absl::StatusOr<backend::MemoryInfo> Memory() const override;
};

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_CPU_DEVICE_H_
