// The VRAM expert cache: a fixed number of expert-sized slots per layer in memory of the
// cache's device (the store's, or a wrapper of it such as a modelled link), filled from
// the host store on demand, with a replaceable eviction policy. A load is one
// CopyToDeviceForRead on one of the cache's two copy streams: demand loads on a
// high-priority stream, so that they overtake prefetches (device.h says how each device
// orders them), prefetches on a normal one. On the CPU device the slots are ordinary
// memory and a load is a memcpy, or nothing when the cache keeps every expert (it then
// reads the store in place). The cache knows nothing of links: a modelled one is a
// device (modelled_link_device.h) whose loads take the link's time.
//
// Stream ordering (what makes it correct on CUDA): each slot has a `ready` event,
// recorded on a copy stream behind the slot's copy, and the events its users record on
// their compute streams behind the kernels that read it (Lease::RecordUse). A refill
// first makes its copy stream wait on those (and on `ready`), so nothing is overwritten
// while a kernel still reads it; a user makes its compute stream wait on Lease::ready()
// before reading. A slot whose copy is still moving is not evicted.
#ifndef MOE_EXPERT_WORKER_SLOT_CACHE_H_
#define MOE_EXPERT_WORKER_SLOT_CACHE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/expert_stats.h"
#include "expert_worker/cache_policy.h"
#include "expert_worker/expert_store.h"

namespace moe::expert_worker {

struct CacheCounters {
  uint64_t hits = 0;            // demand lookups that found the expert resident
  uint64_t misses = 0;          // demand lookups that loaded it
  uint64_t prefetch_loads = 0;  // experts loaded on a hint
  uint64_t prefetch_hits = 0;   // demand hits on an expert a hint loaded (and unused till then)
  // Demand and prefetch copies together, counted also where none moves bytes (a
  // modelled link, or a CPU cache reading in place): what a device would copy.
  uint64_t bytes_copied = 0;
  double stall_s = 0;           // demand time spent waiting for copies (inside Acquire)

  uint64_t uses() const { return hits + misses; }
  double hit_ratio() const { return HitRatio(hits, misses); }
  // Of the experts used, the share a hint had loaded.
  double prefetch_recall() const { return PrefetchRecall(prefetch_hits, uses()); }
  // Of the experts hints loaded, the share then used.
  double prefetch_precision() const { return PrefetchPrecision(prefetch_hits, prefetch_loads); }
  CacheCounters& operator+=(const CacheCounters& o);
};

// What a slot keeps after its last lease ends.
enum class Retention {
  kKeep,  // the expert stays resident until the policy evicts it (a cache)
  kDrop,  // the slot empties: every use loads again (the "no cache" baseline)
};

struct CacheStats {
  std::string policy;
  int slots_per_layer = 0;
  uint64_t policy_changes = 0;  // SetPolicy calls since start
  uint64_t resizes = 0;         // Resize calls that changed the size
  CacheCounters total;
  std::vector<CacheCounters> layers;
};

// How Acquire treats a copy that is still moving the expert into its slot.
enum class CopyWait {
  kHost,    // block the caller until it is done (counted in stall_s)
  kStream,  // return at once: the caller makes its stream Wait(lease.ready())
};

// Thread-safe. A slot is evicted only when no lease holds it; Acquire waits while every
// slot of the layer is leased, so each caller must hold at most one lease per layer at
// a time (RunExperts holds one at a time). Each slot is its own device allocation, so
// the cache can grow or shrink while leases are held. Users must have synchronised the
// streams they recorded uses on before destroying the cache.
class SlotCache {
  struct Slot;  // one expert-sized block of "VRAM" and its state

 public:
  // `store` must outlive the cache; the slots live on `device` (null: store->device()),
  // which must outlive it too and read the store's memory (the store's device, or a
  // wrapper of it); slots_per_layer in [1, experts per layer].
  static absl::StatusOr<std::unique_ptr<SlotCache>> Create(
      const ExpertStore* store, int slots_per_layer, std::unique_ptr<CachePolicy> policy,
      Retention retention = Retention::kKeep, backend::Device* device = nullptr);
  // Slots per layer that fit in `bytes` (at least 1 is required).
  static absl::StatusOr<int> SlotsForBytes(const ExpertStore& store, uint64_t bytes);
  ~SlotCache();

  // Keeps one expert resident while alive. Move-only.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    // The expert in device memory (host memory on the CPU device).
    const float* data() const { return data_; }
    // Completes when the copy that filled the slot has (already the case on the CPU,
    // unless its link is modelled).
    const backend::Event& ready() const;
    // Marks the slot as read by the work queued on `stream` so far: a later refill waits
    // for it. Call after queuing the kernels that read data(), before the lease ends.
    [[nodiscard]] absl::Status RecordUse(backend::Stream& stream);
    bool hit() const { return hit_; }
    // A hit on an expert a prefetch loaded, used for the first time.
    bool prefetched() const { return prefetched_; }

   private:
    friend class SlotCache;
    Lease(SlotCache* cache, int layer, Slot* slot, const float* data, bool hit,
          bool prefetched = false)
        : cache_(cache), layer_(layer), slot_(slot), data_(data), hit_(hit),
          prefetched_(prefetched) {}
    SlotCache* cache_;
    int layer_;
    Slot* slot_;
    const float* data_;
    bool hit_;
    bool prefetched_;
  };

  // The expert, resident in a slot: a hit, or loaded now (evicting per the policy).
  // Demand loads go on the link before any waiting prefetch. Errors are the device's
  // (a failed copy); the slot is then left empty.
  absl::StatusOr<Lease> Acquire(int layer, int expert, CopyWait wait = CopyWait::kHost);

  // Loads a hinted expert unless it is resident or loading, and protects it from
  // eviction until it is used or the layer's protection is cleared. Never evicts a leased
  // or protected expert, nor one of `keep` (the rest of the same hint, which a later
  // prefetch of it would only load again): returns false (nothing loaded) when no slot can
  // be freed.
  bool Prefetch(int layer, int expert, absl::Span<const int> keep = {});
  // The experts of `layer` in a slot now (resident or on their way), ascending. A
  // snapshot: callers use it to order work, never for correctness.
  std::vector<int> Residents(int layer) const;
  // Ends the protection of the layer's prefetched, unused experts, but for `keep` (a
  // newer guess supersedes the old one).
  void ClearProtection(int layer, absl::Span<const int> keep = {});

  // Replaces the policy, keeping what is resident (the new policy learns the residents
  // as if just inserted).
  void SetPolicy(std::unique_ptr<CachePolicy> policy);
  // Changes the slots per layer while the cache serves: growing adds empty slots;
  // shrinking evicts per the policy (empty slots first, prefetched-unused next to last),
  // waiting for leases to end. INVALID_ARGUMENT outside [1, experts per layer].
  absl::Status Resize(int slots_per_layer);
  CacheStats Stats() const;
  int slots_per_layer() const;
  Retention retention() const { return retention_; }
  const ExpertStore& store() const { return *store_; }
  backend::Device& device() const { return *device_; }
  // Bytes of device memory one slot takes.
  size_t slot_bytes() const { return store_->blob_stride(); }

 private:
  // Shared path of Acquire and Prefetch; a prefetch returns no lease (it releases at once).
  // `loaded` (prefetch only): set when the expert was put on the link.
  // `keep` (prefetch only): experts not to evict.
  absl::StatusOr<std::optional<Lease>> Load(int layer, int expert, bool prefetch, bool* loaded,
                                            absl::Span<const int> keep = {});
  SlotCache(const ExpertStore* store, backend::Device* device, int slots_per_layer,
            std::unique_ptr<CachePolicy> policy, Retention retention);
  struct Slot {
    int expert = -1;  // -1: empty
    int leases = 0;
    bool loading = false;       // a caller is queuing its copy (mu_ released meanwhile)
    bool is_protected = false;  // prefetched and not used yet
    std::unique_ptr<backend::DeviceBuffer> data;  // store_->blob_stride() bytes
    // Behind the last copy into `data`. Shared: a load waiting for it to complete holds
    // it while a Resize may free the slot.
    std::shared_ptr<backend::Event> ready;
    // The number (copies_) of the copy `ready` is behind while it may still be moving;
    // 0 once it is known done. Moving: neither usable without waiting nor evictable.
    uint64_t copy = 0;
    // Recorded by users behind their reads of `data` and not yet waited on by a refill.
    std::vector<std::unique_ptr<backend::Event>> uses;
    // Where the resident expert is read: `data` after a copy, or the host store's blob
    // (a cache reading in place, or a device that reads it in place).
    const float* view = nullptr;
  };
  // On the CPU device a cache that keeps every expert of its layers reads each one in
  // place from the host store: its "VRAM" is the same RAM, so a copy would only double
  // the resident memory. The slots' own buffers are then never touched, so they take no
  // RAM (a smaller Resize later copies into them again). Called with mu_ held.
  bool ReadsInPlace() const;
  // Loading, or its copy still moving: neither usable nor evictable. mu_ held.
  bool Busy(Slot& slot) const;
  // The resident expert's slot a load or a shrink takes next: the policy's victim among
  // the idle (unleased, not Busy) residents that are not unused prefetches, or with
  // `take_protected` among those too when there is no other; nullptr when every resident
  // is leased or busy; never one of `keep`. The one victim search of Load and Resize.
  // mu_ held.
  Slot* VictimLocked(int layer, const std::vector<std::unique_ptr<Slot>>& slots,
                     bool take_protected, absl::Span<const int> keep = {});
  // A demand load found no victim: waits until the copy issued first among the layer's
  // unleased slots is done (prefetches land in the order they were issued), or, when
  // none is moving, until a lease ends. Called and returns with `lock` held.
  absl::Status WaitForRoom(std::unique_lock<std::mutex>& lock, int layer);
  absl::StatusOr<std::unique_ptr<Slot>> NewSlot() const;
  // Blocks until every copy into `slot` and every recorded read of it has run (before
  // its memory is freed).
  static absl::Status Quiesce(Slot& slot);
  void RecordUse(Slot* slot, std::unique_ptr<backend::Event> use);
  // Queues the copy of the expert into `slot` (leased and loading by the caller, mu_ not
  // held) on the demand or the prefetch stream, behind `uses` and the slot's last copy;
  // returns where the expert is read (CopyToDeviceForRead).
  absl::StatusOr<const void*> Fill(int layer, int expert, Slot& slot, bool prefetch,
                                   const std::vector<std::unique_ptr<backend::Event>>& uses);
  // Empties `slot` (resident, unleased, not busy) and tells the policy.
  void EvictLocked(int layer, Slot& slot);
  void Release(int layer, Slot* slot);

  const ExpertStore* store_;
  backend::Device* device_;  // the slots'
  const Retention retention_;
  // The copy streams: demand loads (high priority) do not queue behind prefetches. A
  // stream takes one thread at a time: each is queued on only under its mutex.
  std::mutex demand_queue_mu_, prefetch_queue_mu_;
  std::unique_ptr<backend::Stream> demand_stream_, prefetch_stream_;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::unique_ptr<CachePolicy> policy_;      // guarded by mu_
  int slots_per_layer_;                       // guarded by mu_
  // [layer][slot]; slots are heap nodes so leases keep pointing at theirs while the
  // layer's list grows or shrinks.
  std::vector<std::vector<std::unique_ptr<Slot>>> slots_;  // guarded by mu_
  uint64_t policy_changes_ = 0, resizes_ = 0;  // guarded by mu_
  uint64_t copies_ = 0;                        // copies queued so far; guarded by mu_
  CacheCounters total_;                       // guarded by mu_
  std::vector<CacheCounters> layer_counters_; // guarded by mu_
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_SLOT_CACHE_H_
