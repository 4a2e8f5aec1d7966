#include "common/backend/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_status.h"
#include "common/status.h"
#include "common/logging.h"

namespace moe::cuda {
namespace {

using backend::DeviceBuffer;

// Logs (never throws, never aborts) an error met in a destructor.
void LogIfError(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    MOE_LOG(ERROR) << what << ": " << cudaGetErrorName(error) << " ("
                   << cudaGetErrorString(error) << ")";
  }
}

// The stream's cudaStream_t; INVALID_ARGUMENT for another backend's stream.
absl::StatusOr<cudaStream_t> NativeStream(const backend::Stream& stream, const char* what) {
  if (stream.native() == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the stream is not a CUDA stream (made by another device?)"));
  }
  return static_cast<cudaStream_t>(stream.native());
}

class CudaBuffer : public DeviceBuffer {
 public:
  enum class Kind { kDevice, kPinned, kRegistered };
  CudaBuffer(int ordinal, Kind kind, void* data, size_t size)
      : ordinal_(ordinal), kind_(kind), data_(data), size_(size) {}
  ~CudaBuffer() override {
    if (data_ == nullptr) return;
    LogIfError(cudaSetDevice(ordinal_), "freeing a CUDA buffer: cudaSetDevice");
    switch (kind_) {
      case Kind::kDevice: LogIfError(cudaFree(data_), "cudaFree"); break;
      case Kind::kPinned: LogIfError(cudaFreeHost(data_), "cudaFreeHost"); break;
      case Kind::kRegistered: LogIfError(cudaHostUnregister(data_), "cudaHostUnregister"); break;
    }
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  void* data() const override { return data_; }
  size_t size() const override { return size_; }

 private:
  int ordinal_;
  Kind kind_;
  void* data_;
  size_t size_;
};

class CudaStream : public backend::Stream {
 public:
  CudaStream(int ordinal, cudaStream_t stream) : ordinal_(ordinal), stream_(stream) {}
  ~CudaStream() override {
    LogIfError(cudaSetDevice(ordinal_), "destroying a CUDA stream: cudaSetDevice");
    LogIfError(cudaStreamDestroy(stream_), "cudaStreamDestroy");
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  absl::Status Synchronize() override {
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_), "stream synchronize");
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "stream synchronize");
    return absl::OkStatus();
  }
  absl::Status Wait(const backend::Event& event) override {
    if (event.native() == nullptr) {
      return absl::InvalidArgumentError("stream wait: the event is not a CUDA event");
    }
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_), "stream wait");
    MOE_CUDA_RETURN_IF_ERROR(
        cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(event.native()), 0),
        "stream wait");
    return absl::OkStatus();
  }
  void* native() const override { return stream_; }

 private:
  int ordinal_;
  cudaStream_t stream_;
};

class CudaEvent : public backend::Event {
 public:
  CudaEvent(int ordinal, cudaEvent_t event) : ordinal_(ordinal), event_(event) {}
  ~CudaEvent() override {
    LogIfError(cudaSetDevice(ordinal_), "destroying a CUDA event: cudaSetDevice");
    LogIfError(cudaEventDestroy(event_), "cudaEventDestroy");
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  absl::Status Record(backend::Stream& stream) override {
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "event record"));
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_), "event record");
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, s), "event record");
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Query() const override {
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_), "event query");
    const cudaError_t error = cudaEventQuery(event_);
    if (error == cudaErrorNotReady) {
      cudaGetLastError();  // not an error; keep it from being blamed on the next launch
      return false;
    }
    MOE_CUDA_RETURN_IF_ERROR(error, "event query");
    return true;
  }
  absl::Status Synchronize() const override {
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_), "event synchronize");
    MOE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event_), "event synchronize");
    return absl::OkStatus();
  }
  void* native() const override { return event_; }

 private:
  int ordinal_;
  cudaEvent_t event_;
};

}  // namespace

absl::StatusOr<std::vector<backend::DeviceInfo>> ListDevices() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    // No driver, or one too old: to a user, simply no GPU (`moe info` prints this).
    return absl::UnavailableError(absl::StrCat("no CUDA device (", cudaGetErrorString(error), ")"));
  }
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
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    // No driver, no device or a driver too old: the machine has no usable GPU.
    return absl::UnavailableError(absl::StrCat(
        "cuda:", ordinal, ": no usable CUDA device (cudaGetDeviceCount: ",
        cudaGetErrorName(error), ", ", cudaGetErrorString(error), ")"));
  }
  if (count == 0) {
    return absl::UnavailableError(absl::StrCat("cuda:", ordinal, ": no CUDA device is visible"));
  }
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(absl::StrCat("cuda:", ordinal, ": no such device (", count,
                                                   " visible: cuda:0..cuda:", count - 1, ")"));
  }
  cudaDeviceProp prop;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, ordinal), "opening a CUDA device");
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal), "opening a CUDA device");
  return std::make_unique<CudaDevice>(ordinal, absl::StrCat("cuda:", ordinal, " (", prop.name, ")"));
}

absl::Status CudaDevice::BindThread() const {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_), "binding the thread to the device");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaDevice::Allocate(size_t bytes) {
  MOE_RETURN_IF_ERROR(BindThread());
  void* data = nullptr;
  const cudaError_t error = cudaMalloc(&data, bytes);
  if (error == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: keep it from being blamed on the next launch
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat(
        name_, ": cannot allocate ", bytes, " bytes of device memory (", free_bytes,
        " bytes free of ", total_bytes, ")"));
  }
  MOE_CUDA_RETURN_IF_ERROR(error, "device allocation");
  return std::make_unique<CudaBuffer>(ordinal_, CudaBuffer::Kind::kDevice, data, bytes);
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaDevice::AllocatePinnedHost(size_t bytes) {
  MOE_RETURN_IF_ERROR(BindThread());
  void* data = nullptr;
  const cudaError_t error = cudaHostAlloc(&data, bytes, cudaHostAllocPortable);
  if (error == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat(name_, ": cannot allocate ", bytes, " bytes of pinned host memory"));
  }
  MOE_CUDA_RETURN_IF_ERROR(error, "pinned host allocation");
  return std::make_unique<CudaBuffer>(ordinal_, CudaBuffer::Kind::kPinned, data, bytes);
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaDevice::RegisterHost(void* data, size_t bytes,
                                                                      bool read_only) {
  if (data == nullptr || bytes == 0) {
    return absl::InvalidArgumentError("registering host memory: null or empty range");
  }
  MOE_RETURN_IF_ERROR(BindThread());
  cudaError_t error = cudaErrorNotSupported;
  if (read_only) {
    error = cudaHostRegister(data, bytes, cudaHostRegisterPortable | cudaHostRegisterReadOnly);
    // Some drivers and platforms refuse the read-only flag: register read-write instead.
    if (error != cudaSuccess) cudaGetLastError();
  }
  if (error != cudaSuccess) error = cudaHostRegister(data, bytes, cudaHostRegisterPortable);
  if (error != cudaSuccess) cudaGetLastError();
  MOE_CUDA_RETURN_IF_ERROR(error, "registering host memory");
  return std::make_unique<CudaBuffer>(ordinal_, CudaBuffer::Kind::kRegistered, data, bytes);
}

absl::StatusOr<std::unique_ptr<backend::Stream>> CudaDevice::CreateStream(
    backend::StreamPriority priority) {
  MOE_RETURN_IF_ERROR(BindThread());
  // Lower numbers are higher priorities; the default (0) is the least.
  int least = 0, greatest = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest),
                           "reading the stream priority range");
  const int rank = priority == backend::StreamPriority::kHigh ? greatest : least;
  cudaStream_t stream = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, rank),
                           "creating a stream");
  return std::make_unique<CudaStream>(ordinal_, stream);
}

absl::StatusOr<std::unique_ptr<backend::Event>> CudaDevice::CreateEvent(bool interprocess) {
  MOE_RETURN_IF_ERROR(BindThread());
  cudaEvent_t event = nullptr;
  const unsigned flags = cudaEventDisableTiming | (interprocess ? cudaEventInterprocess : 0u);
  MOE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, flags), "creating an event");
  return std::make_unique<CudaEvent>(ordinal_, event);
}

absl::Status CudaDevice::CopyToDevice(void* dst, const void* src, size_t bytes,
                                      backend::Stream& stream) {
  MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "host-to-device copy"));
  MOE_RETURN_IF_ERROR(BindThread());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s),
                           "host-to-device copy");
  return absl::OkStatus();
}

absl::Status CudaDevice::CopyToHost(void* dst, const void* src, size_t bytes,
                                    backend::Stream& stream) {
  MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "device-to-host copy"));
  MOE_RETURN_IF_ERROR(BindThread());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s),
                           "device-to-host copy");
  return absl::OkStatus();
}

absl::Status CudaDevice::CopyOnDevice(void* dst, const void* src, size_t bytes,
                                      backend::Stream& stream) {
  MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "device-to-device copy"));
  MOE_RETURN_IF_ERROR(BindThread());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s),
                           "device-to-device copy");
  return absl::OkStatus();
}

absl::Status CudaDevice::Memset(void* dst, int value, size_t bytes, backend::Stream& stream) {
  MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "device memset"));
  MOE_RETURN_IF_ERROR(BindThread());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, value, bytes, s), "device memset");
  return absl::OkStatus();
}

absl::StatusOr<backend::MemoryInfo> CudaDevice::Memory() const {
  MOE_RETURN_IF_ERROR(BindThread());
  size_t free_bytes = 0, total_bytes = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes), "reading device memory");
  return backend::MemoryInfo{static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
}

}  // namespace moe::cuda
