// The device interface both processes compute through: memory, streams, events and
// copies. Two implementations: the CPU (cpu/cpu_device.h: "device memory" is host memory,
// a stream runs each operation on the calling thread before returning, events are
// complete once recorded) and CUDA (cuda/cuda_device.h: cudaMalloc, cudaStream_t,
// cudaEvent_t). Code written against this interface is correct on both when it orders
// work the CUDA way: everything queued on one stream runs in order, and work on another
// stream sees it only after waiting on an event recorded behind it.
#ifndef MOE_COMMON_BACKEND_DEVICE_H_
#define MOE_COMMON_BACKEND_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::backend {

enum class DeviceKind { kCpu, kCuda };

// The order in which a device serves copies queued on different streams: a copy on a
// kHigh stream goes before copies of kNormal streams that wait, and one already moving
// gives way between chunks (on CUDA the stream's scheduling priority,
// cudaStreamCreateWithPriority; on the CPU, cpu_device.h). Within one stream, order is
// always the queue's.
enum class StreamPriority { kNormal, kHigh };

class Event;

// An in-order queue of device work. Not thread-safe: one thread enqueues at a time.
class Stream {
 public:
  virtual ~Stream() = default;
  // Blocks until everything queued so far has run; reports the first asynchronous error.
  [[nodiscard]] virtual absl::Status Synchronize() = 0;
  // Work queued on this stream after this call starts only once `event` has completed.
  [[nodiscard]] virtual absl::Status Wait(const Event& event) = 0;
  // The native handle (cudaStream_t) or nullptr on the CPU.
  virtual void* native() const = 0;
};

// A marker in a stream. Thread-safe for Query/Synchronize after Record.
class Event {
 public:
  virtual ~Event() = default;
  // Captures the work queued on `stream` so far; the event completes when it has run.
  [[nodiscard]] virtual absl::Status Record(Stream& stream) = 0;
  // True once the recorded work has run (and for an event never recorded).
  [[nodiscard]] virtual absl::StatusOr<bool> Query() const = 0;
  [[nodiscard]] virtual absl::Status Synchronize() const = 0;
  virtual void* native() const = 0;  // cudaEvent_t or nullptr
};

// Memory owned by a device: device memory (Allocate), pinned host memory
// (AllocatePinnedHost) or a registration of existing host memory (RegisterHost, which
// does not own the bytes and unregisters them on destruction).
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  virtual void* data() const = 0;
  virtual size_t size() const = 0;
  template <typename T>
  T* as() const {
    return static_cast<T*>(data());
  }
};

struct MemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

// Thread-safe.
class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
  virtual int ordinal() const = 0;        // the CUDA device number; 0 on the CPU

  // Makes this device current on the calling thread (cudaSetDevice); every thread that
  // enqueues work calls it once. A no-op on the CPU.
  [[nodiscard]] virtual absl::Status BindThread() const = 0;

  // Device memory, 256-byte aligned, uninitialised. RESOURCE_EXHAUSTED names the size.
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) = 0;
  // Page-locked host memory the device copies from at full link speed, page aligned.
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> AllocatePinnedHost(size_t bytes) = 0;
  // Page-locks existing host memory (e.g. a mapped file) for the buffer's life.
  // `read_only`: the device only reads it.
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> RegisterHost(void* data, size_t bytes,
                                                                      bool read_only) = 0;

  // A stream of kNormal priority; CreateStream(kHigh) for copies that must not wait
  // behind others (an expert a computation waits for, ahead of prefetches).
  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() {
    return CreateStream(StreamPriority::kNormal);
  }
  virtual absl::StatusOr<std::unique_ptr<Stream>> CreateStream(StreamPriority priority) = 0;
  // An event for ordering; with `interprocess` it can be shared with another process
  // (cudaEventInterprocess; UNIMPLEMENTED on the CPU).
  virtual absl::StatusOr<std::unique_ptr<Event>> CreateEvent(bool interprocess = false) = 0;

  // Copies queued on `stream`: host to device, device to host, device to device. Host
  // memory should be pinned for the copy to be asynchronous.
  [[nodiscard]] virtual absl::Status CopyToDevice(void* dst, const void* src, size_t bytes,
                                                  Stream& stream) = 0;
  [[nodiscard]] virtual absl::Status CopyToHost(void* dst, const void* src, size_t bytes,
                                                Stream& stream) = 0;
  [[nodiscard]] virtual absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes,
                                                  Stream& stream) = 0;
  [[nodiscard]] virtual absl::Status Memset(void* dst, int value, size_t bytes,
                                            Stream& stream) = 0;

  // Makes `bytes` of host memory at `src` readable by the device's kernels once `stream`
  // reaches this point, for data that stays unchanged while they may read it (an expert
  // blob of the store), and returns where they read it: `dst` (device memory of at least
  // `bytes`) after a copy queued on `stream`, or `src` where the device reads that host
  // memory in place. Devices copy (this default); a modelled link
  // (expert_worker/modelled_link_device.h) reads in place and only takes the link's time,
  // so that its copies cost no core, as a copy engine's take none from the kernels.
  [[nodiscard]] virtual absl::StatusOr<const void*> CopyToDeviceForRead(void* dst,
                                                                       const void* src,
                                                                       size_t bytes,
                                                                       Stream& stream) {
    if (absl::Status s = CopyToDevice(dst, src, bytes, stream); !s.ok()) return s;
    return dst;
  }

  // Whether CopyToDeviceForRead returns before the bytes have moved (a copy engine moves
  // them, or a modelled link times them), so that a thread with other work may queue
  // such copies itself (a prefetch). False on the CPU, which copies on the calling thread.
  virtual bool AsyncCopiesForRead() const = 0;

  // Whether host memory is this device's own memory, which its kernels read as fast as
  // anything (the CPU): data there needs no copy to be used. False on a GPU, and for a
  // modelled link, which stands for a device across one.
  virtual bool HostMemoryIsDeviceMemory() const = 0;

  // Device memory now free and in all; the CPU reports host RAM.
  virtual absl::StatusOr<MemoryInfo> Memory() const = 0;
};

// "cpu", "cuda" (device 0) or "cuda:N". INVALID_ARGUMENT for other names, UNIMPLEMENTED
// for "cuda" in a build without it, FAILED_PRECONDITION when the CUDA module cannot be
// loaded (cuda_module.h; the message names the paths and dlerror), UNAVAILABLE when the
// device is not there.
absl::StatusOr<std::unique_ptr<Device>> OpenDevice(absl::string_view spec);

// Synchronous conveniences: a copy on a temporary stream, waited for.
absl::Status CopyToDeviceSync(Device& device, void* dst, const void* src, size_t bytes);
absl::Status CopyToHostSync(Device& device, void* dst, const void* src, size_t bytes);

// Allocates device memory and fills it from host memory, synchronously.
absl::StatusOr<std::unique_ptr<DeviceBuffer>> Upload(Device& device, const void* src,
                                                     size_t bytes);

}  // namespace moe::backend

#endif  // MOE_COMMON_BACKEND_DEVICE_H_
