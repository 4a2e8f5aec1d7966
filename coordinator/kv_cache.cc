#include "coordinator/kv_cache.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_device.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::coordinator {
namespace {

std::atomic<int64_t> live_caches{0};
std::atomic<int64_t> live_bytes{0};

// The device of host-memory caches. Stateless, so one serves every thread.
backend::Device& HostDevice() {
  static cpu::CpuDevice* const device = new cpu::CpuDevice();
  return *device;
}

}  // namespace

int64_t KvCache::Bytes(const ModelConfig& config, int64_t capacity) {
  return 2 * int64_t(config.num_hidden_layers) * capacity * config.kv_dim() *
         int64_t(sizeof(float));
}

KvCache::KvCache(const ModelConfig& config, int64_t capacity, backend::Device* device,
                 std::unique_ptr<backend::DeviceBuffer> buffer)
    : capacity_(capacity),
      layer_floats_(capacity * config.kv_dim()),
      bytes_(Bytes(config, capacity)),
      device_(device),
      buffer_(std::move(buffer)) {
  live_caches.fetch_add(1);
  live_bytes.fetch_add(bytes_);
}

KvCache::KvCache(const ModelConfig& config, int64_t capacity)
    : KvCache(config, capacity, &HostDevice(), [&] {
        absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> buffer =
            HostDevice().Allocate(size_t(Bytes(config, std::max<int64_t>(capacity, 0))));
        MOE_CHECK(buffer.ok()) << buffer.status();
        return *std::move(buffer);
      }()) {}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const ModelConfig& config,
                                                         int64_t capacity,
                                                         backend::Device& device) {
  if (capacity < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache capacity ", capacity, " positions: must be >= 1"));
  }
  const int64_t bytes = Bytes(config, capacity);
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> buffer = device.Allocate(size_t(bytes));
  if (!buffer.ok()) {
    return absl::Status(buffer.status().code(),
                        absl::StrCat("KV cache of ", capacity, " positions (", bytes,
                                     " bytes) on ", device.name(), ": ",
                                     buffer.status().message()));
  }
  return std::unique_ptr<KvCache>(new KvCache(config, capacity, &device, *std::move(buffer)));
}

KvCache::~KvCache() {
  live_caches.fetch_sub(1);
  live_bytes.fetch_sub(bytes_);
}

int64_t KvCache::LiveCaches() { return live_caches.load(); }
int64_t KvCache::LiveBytes() { return live_bytes.load(); }

}  // namespace moe::coordinator
