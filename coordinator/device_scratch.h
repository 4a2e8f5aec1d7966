// Streams and scratch memory for forward passes, reused from pass to pass: a CUDA
// allocation synchronises the whole device, so a pass must not allocate each time.
#ifndef MOE_COORDINATOR_DEVICE_SCRATCH_H_
#define MOE_COORDINATOR_DEVICE_SCRATCH_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/device.h"

namespace moe::coordinator {

// Carves one allocation into arrays aligned as Device::Allocate's (256 bytes); over a
// null base it only adds up the sizes, so one function both sizes and lays out the
// scratch of a pass.
class ScratchCarver {
 public:
  static constexpr int64_t kAlignment = 256;
  explicit ScratchCarver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* Take(int64_t count) {
    T* p = base_ != nullptr ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += (count * int64_t(sizeof(T)) + kAlignment - 1) / kAlignment * kAlignment;
    return p;
  }
  int64_t used() const { return used_; }

 private:
  char* base_;
  int64_t used_ = 0;
};

// What one forward pass computes with: its own stream (streams are not thread-safe, and
// passes on different caches may run concurrently), device scratch and pinned host
// staging for what the host must read (router choices).
struct ScratchSet {
  std::unique_ptr<backend::Stream> stream;
  std::unique_ptr<backend::DeviceBuffer> device;  // null until first needed
  std::unique_ptr<backend::DeviceBuffer> host;    // pinned; null until first needed
};

// Thread-safe. Keeps at most `max_idle` sets between passes (more concurrent passes get
// sets of their own, freed when they end).
class ScratchPool {
 public:
  // Returns its set to the pool on destruction, after waiting for the work queued on
  // its stream (a pass that failed half-way may have left work in flight that still
  // writes the scratch or a KV cache about to be freed).
  class Lease {
   public:
    Lease(ScratchPool* pool, std::unique_ptr<ScratchSet> set)
        : pool_(pool), set_(std::move(set)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    backend::Stream& stream() const { return *set_->stream; }
    void* device_memory() const { return set_->device ? set_->device->data() : nullptr; }
    void* host_memory() const { return set_->host ? set_->host->data() : nullptr; }

   private:
    ScratchPool* pool_;
    std::unique_ptr<ScratchSet> set_;
  };

  // `device` must outlive the pool.
  explicit ScratchPool(backend::Device& device, size_t max_idle = 2)
      : device_(device), max_idle_(max_idle) {}

  // A set with at least `device_bytes` of device scratch and `host_bytes` of pinned host
  // memory (both 256-byte aligned), growing a pooled one when it is too small.
  absl::StatusOr<Lease> Acquire(size_t device_bytes, size_t host_bytes);

 private:
  void Release(std::unique_ptr<ScratchSet> set);

  backend::Device& device_;
  const size_t max_idle_;
  std::mutex mu_;
  std::vector<std::unique_ptr<ScratchSet>> idle_;  // guarded by mu_
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_DEVICE_SCRATCH_H_
