// The "VRAM" expert cache: a fixed number of expert-sized slots per layer in one slab,
// filled from the host store on demand, with a replaceable eviction policy. On the CPU
// backend the slab is ordinary memory and a load is a memcpy; the shape (one blob, one
// copy, fixed slots) is the one the CUDA backend uses.
#ifndef MOE_EXPERT_WORKER_SLOT_CACHE_H_
#define MOE_EXPERT_WORKER_SLOT_CACHE_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "expert_worker/cache_policy.h"
#include "expert_worker/expert_store.h"

namespace moe::expert_worker {

struct CacheCounters {
  uint64_t hits = 0;            // demand lookups that found the expert resident
  uint64_t misses = 0;          // demand lookups that loaded it
  uint64_t prefetch_loads = 0;  // experts loaded on a hint
  uint64_t prefetch_hits = 0;   // demand hits on an expert a hint loaded (and unused till then)
  uint64_t bytes_copied = 0;    // demand and prefetch copies together
};

// Makes host-to-"VRAM" copies on the CPU backend cost what they would over a link such as
// PCIe: each copy takes latency + bytes / bandwidth, and copies share one link (they run
// one at a time), so cache and prefetch effects are measurable without a GPU.
struct LinkModel {
  double gbps = 0;          // GB/s (1e9 bytes); 0: copies cost only the memcpy
  double latency_us = 0;    // per copy
  // Seconds one copy of `bytes` occupies the link.
  double Seconds(uint64_t bytes) const {
    return gbps > 0 ? latency_us * 1e-6 + double(bytes) / (gbps * 1e9) : 0;
  }
};

struct CacheStats {
  std::string policy;
  int slots_per_layer = 0;
  CacheCounters total;
  std::vector<CacheCounters> layers;
};

// Thread-safe. A slot is evicted only when no lease holds it; Acquire waits while every
// slot of the layer is leased, so each caller must hold at most one lease per layer at
// a time (RunExperts holds one at a time).
class SlotCache {
 public:
  // `store` must outlive the cache; slots_per_layer in [1, experts per layer].
  static absl::StatusOr<std::unique_ptr<SlotCache>> Create(const ExpertStore* store,
                                                           int slots_per_layer,
                                                           std::unique_ptr<CachePolicy> policy);
  // Slots per layer that fit in `bytes` (at least 1 is required).
  static absl::StatusOr<int> SlotsForBytes(const ExpertStore& store, uint64_t bytes);
  ~SlotCache();

  // Keeps one expert resident while alive. Move-only.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    const float* data() const { return data_; }
    bool hit() const { return hit_; }

   private:
    friend class SlotCache;
    Lease(SlotCache* cache, int layer, int slot, const float* data, bool hit)
        : cache_(cache), layer_(layer), slot_(slot), data_(data), hit_(hit) {}
    SlotCache* cache_;
    int layer_, slot_;
    const float* data_;
    bool hit_;
  };

  // The expert, resident in a slot: a hit, or loaded now (evicting per the policy).
  // Demand loads go on the link before any waiting prefetch.
  Lease Acquire(int layer, int expert);

  // Loads a hinted expert unless it is resident or loading, and protects it from
  // eviction until it is used or the layer's protection is cleared. Never evicts a leased
  // or protected expert: returns false (nothing loaded) when no slot can be freed.
  bool Prefetch(int layer, int expert);
  // Ends the protection of the layer's prefetched, unused experts, but for `keep` (a
  // newer guess supersedes the old one).
  void ClearProtection(int layer, absl::Span<const int> keep = {});

  // Sets the link model for later copies (thread-safe).
  void set_link(const LinkModel& link);

  // Replaces the policy, keeping what is resident (the new policy learns the residents
  // as if just inserted).
  void SetPolicy(std::unique_ptr<CachePolicy> policy);
  CacheStats Stats() const;
  int slots_per_layer() const { return slots_per_layer_; }
  const ExpertStore& store() const { return *store_; }

 private:
  struct Slot {
    int expert = -1;  // -1: empty
    int leases = 0;
    bool loading = false;
    bool is_protected = false;  // prefetched and not used yet
  };
  // Shared path of Acquire and Prefetch; a prefetch returns no lease (it releases at once).
  std::optional<Lease> Load(int layer, int expert, bool prefetch);
  static constexpr size_t kCopyChunkBytes = 256 << 10;
  SlotCache(const ExpertStore* store, int slots_per_layer, std::unique_ptr<CachePolicy> policy,
            void* slab);
  float* SlotData(int layer, int slot) const;
  void Release(int layer, int slot);

  const ExpertStore* store_;
  const int slots_per_layer_;
  void* slab_;  // [layers][slots_per_layer] blobs of store_->blob_stride() bytes

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::unique_ptr<CachePolicy> policy_;      // guarded by mu_
  std::vector<std::vector<Slot>> slots_;      // guarded by mu_
  CacheCounters total_;                       // guarded by mu_
  std::vector<CacheCounters> layer_counters_; // guarded by mu_
  LinkModel link_;                            // guarded by mu_
  bool link_busy_ = false;                    // a copy is on the link; guarded by mu_
  int demand_waiting_ = 0;                    // demand copies waiting for the link; mu_
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_SLOT_CACHE_H_
