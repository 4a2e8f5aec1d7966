// The CPU as a Device: "device memory" is aligned host memory, a stream runs each
// operation on the calling thread before returning, and an event is complete as soon as
// it is recorded. Code that orders its work for CUDA (device.h) runs unchanged here.
//
// Stream priority: host-to-device copies move in 256 KiB chunks, and a copy on a kNormal
// stream does not start, nor move its next chunk, while a copy on a kHigh stream moves
// (from another thread): an expert a computation waits for overtakes a prefetch at the
// prefetch's next chunk, as a GPU's copy engine would let it.
#ifndef MOE_COMMON_BACKEND_CPU_CPU_DEVICE_H_
#define MOE_COMMON_BACKEND_CPU_CPU_DEVICE_H_

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
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
  using backend::Device::CreateStream;
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
  bool AsyncCopiesForRead() const override { return false; }
  bool HostMemoryIsDeviceMemory() const override { return true; }

  static constexpr size_t kCopyChunkBytes = 256 << 10;

 private:
  std::mutex copy_mu_;
  std::condition_variable high_done_;
  int high_copies_ = 0;  // host-to-device copies of kHigh streams moving now; copy_mu_
};

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_CPU_DEVICE_H_
