#include "coordinator/kv_cache.h"

namespace moe::coordinator {

KvCache::KvCache(const ModelConfig& config, int64_t capacity)
    : capacity_(capacity),
      keys_(config.num_hidden_layers, std::vector<float>(capacity * config.kv_dim())),
      values_(config.num_hidden_layers, std::vector<float>(capacity * config.kv_dim())) {}

}  // namespace moe::coordinator
