// Keys and values of every layer for one sequence, in fp32 memory of a device (host
// memory on the CPU device).
#ifndef MOE_COORDINATOR_KV_CACHE_H_
#define MOE_COORDINATOR_KV_CACHE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/model_config.h"

namespace moe::coordinator {

// One per sequence; not thread-safe (but for the process-wide gauges, which are).
class KvCache {
 public:
  // In host memory (the CPU device). Aborts only if host memory runs out.
  KvCache(const ModelConfig& config, int64_t capacity);
  // In memory of `device`, which must outlive the cache. RESOURCE_EXHAUSTED (naming the
  // bytes) when the device has no room; INVALID_ARGUMENT for a capacity < 1.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const ModelConfig& config,
                                                         int64_t capacity,
                                                         backend::Device& device);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Bytes a cache of `capacity` positions holds: 2 x layers x capacity x kv_dim x 4.
  static int64_t Bytes(const ModelConfig& config, int64_t capacity);

  // Caches alive in this process and the bytes they hold: gauges that return to 0 when
  // no generation runs (a finished, cancelled or failed request frees its cache).
  static int64_t LiveCaches();
  static int64_t LiveBytes();

  int64_t capacity() const { return capacity_; }
  // Positions already filled (the same for every layer between forward passes).
  int64_t length() const { return length_; }
  void set_length(int64_t length) { length_ = length; }
  void Clear() { length_ = 0; }

  // The device the keys and values live on (a process-wide CPU device for the host
  // constructor).
  backend::Device& device() const { return *device_; }

  // [capacity, kv_heads * head_dim], memory of device().
  float* keys(int layer) { return base() + (2 * int64_t(layer)) * layer_floats_; }
  float* values(int layer) { return base() + (2 * int64_t(layer) + 1) * layer_floats_; }

 private:
  KvCache(const ModelConfig& config, int64_t capacity, backend::Device* device,
          std::unique_ptr<backend::DeviceBuffer> buffer);
  float* base() const { return buffer_->as<float>(); }

  int64_t capacity_;
  int64_t layer_floats_;  // capacity x kv_dim
  int64_t bytes_;
  int64_t length_ = 0;
  backend::Device* device_;
  std::unique_ptr<backend::DeviceBuffer> buffer_;  // [layers][keys, values][capacity, kv_dim]
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_KV_CACHE_H_
