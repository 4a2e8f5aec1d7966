#include "coordinator/kv_cache.h"

#include <atomic>

namespace moe::coordinator {
namespace {

std::atomic<int64_t> live_caches{0};
std::atomic<int64_t> live_bytes{0};

}  // namespace

KvCache::KvCache(const ModelConfig& config, int64_t capacity)
    : capacity_(capacity),
      bytes_(2 * config.num_hidden_layers * capacity * config.kv_dim() * int64_t(sizeof(float))),
      keys_(config.num_hidden_layers, std::vector<float>(capacity * config.kv_dim())),
      values_(config.num_hidden_layers, std::vector<float>(capacity * config.kv_dim())) {
  live_caches.fetch_add(1);
  live_bytes.fetch_add(bytes_);
}

KvCache::~KvCache() {
  live_caches.fetch_sub(1);
  live_bytes.fetch_sub(bytes_);
}

int64_t KvCache::LiveCaches() { return live_caches.load(); }
int64_t KvCache::LiveBytes() { return live_bytes.load(); }

}  // namespace moe::coordinator
