// Keys and values of every layer for one sequence, in fp32 host memory.
#ifndef MOE_COORDINATOR_KV_CACHE_H_
#define MOE_COORDINATOR_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "common/model_config.h"

namespace moe::coordinator {

// One per sequence; not thread-safe (but for the process-wide gauges, which are).
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t capacity);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Caches alive in this process and the bytes they hold: gauges that return to 0 when
  // no generation runs (a finished, cancelled or failed request frees its cache).
  static int64_t LiveCaches();
  static int64_t LiveBytes();

  int64_t capacity() const { return capacity_; }
  // Positions already filled (the same for every layer between forward passes).
  int64_t length() const { return length_; }
  void set_length(int64_t length) { length_ = length; }
  void Clear() { length_ = 0; }

  // [capacity, kv_heads * head_dim]
  float* keys(int layer) { return keys_[layer].data(); }
  float* values(int layer) { return values_[layer].data(); }

 private:
  int64_t capacity_;
  int64_t bytes_;
  int64_t length_ = 0;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_KV_CACHE_H_
