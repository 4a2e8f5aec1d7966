#include "expert_worker/slot_cache.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace moe::expert_worker {

absl::StatusOr<std::unique_ptr<SlotCache>> SlotCache::Create(const ExpertStore* store,
                                                             int slots_per_layer,
                                                             std::unique_ptr<CachePolicy> policy) {
  if (slots_per_layer < 1 || slots_per_layer > store->num_experts()) {
    return absl::InvalidArgumentError(absl::StrCat("cache of ", slots_per_layer,
                                                   " experts per layer: must be in [1, ",
                                                   store->num_experts(), "]"));
  }
  const size_t bytes = store->blob_stride() * store->num_layers() * slots_per_layer;
  void* slab = std::aligned_alloc(ExpertStore::kBlobAlignment, bytes);
  if (slab == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate a ", bytes, "-byte expert cache"));
  }
  return std::unique_ptr<SlotCache>(new SlotCache(store, slots_per_layer, std::move(policy), slab));
}

absl::StatusOr<int> SlotCache::SlotsForBytes(const ExpertStore& store, uint64_t bytes) {
  const uint64_t per_slot_row = store.blob_stride() * store.num_layers();
  const uint64_t slots = std::min<uint64_t>(bytes / per_slot_row, store.num_experts());
  if (slots < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a cache of ", bytes, " bytes cannot hold one expert per layer (needs ", per_slot_row, ")"));
  }
  return static_cast<int>(slots);
}

SlotCache::SlotCache(const ExpertStore* store, int slots_per_layer,
                     std::unique_ptr<CachePolicy> policy, void* slab)
    : store_(store),
      slots_per_layer_(slots_per_layer),
      slab_(slab),
      policy_(std::move(policy)),
      slots_(store->num_layers(), std::vector<Slot>(slots_per_layer)),
      layer_counters_(store->num_layers()) {}

SlotCache::~SlotCache() { std::free(slab_); }

float* SlotCache::SlotData(int layer, int slot) const {
  auto* base = static_cast<char*>(slab_);
  return reinterpret_cast<float*>(
      base + store_->blob_stride() * (size_t(layer) * slots_per_layer_ + slot));
}

SlotCache::Lease::Lease(Lease&& other) noexcept
    : cache_(other.cache_), layer_(other.layer_), slot_(other.slot_), data_(other.data_),
      hit_(other.hit_) {
  other.cache_ = nullptr;
}

SlotCache::Lease::~Lease() {
  if (cache_ != nullptr) cache_->Release(layer_, slot_);
}

void SlotCache::Release(int layer, int slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CHECK(slots_[layer][slot].leases > 0);
    --slots_[layer][slot].leases;
  }
  changed_.notify_all();
}

namespace {

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

// Sleeps most of the wait, then spins: link copies are tens of microseconds.
void WaitUntil(std::chrono::steady_clock::time_point deadline) {
  while (std::chrono::steady_clock::now() + std::chrono::microseconds(200) < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  while (std::chrono::steady_clock::now() < deadline) {
  }
}

}  // namespace

SlotCache::Lease SlotCache::Acquire(int layer, int expert) {
  std::optional<Lease> lease = Load(layer, expert, /*prefetch=*/false);
  MOE_CHECK(lease.has_value());
  return *std::move(lease);
}

bool SlotCache::Prefetch(int layer, int expert) {
  return Load(layer, expert, /*prefetch=*/true).has_value();
}

void SlotCache::ClearProtection(int layer, absl::Span<const int> keep) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Slot& s : slots_[layer]) {
    if (std::find(keep.begin(), keep.end(), s.expert) == keep.end()) s.is_protected = false;
  }
}

std::optional<SlotCache::Lease> SlotCache::Load(int layer, int expert, bool prefetch) {
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<Slot>& slots = slots_[layer];
  while (true) {
    int found = -1, free = -1;
    std::vector<int> candidates, protected_candidates;
    for (int s = 0; s < slots_per_layer_; ++s) {
      if (slots[s].expert == expert) found = s;
      if (slots[s].expert < 0 && free < 0) free = s;
      if (slots[s].expert >= 0 && slots[s].leases == 0 && !slots[s].loading) {
        (slots[s].is_protected ? protected_candidates : candidates).push_back(slots[s].expert);
      }
    }
    if (found >= 0) {
      if (prefetch) return std::nullopt;  // resident or on its way: nothing to do
      if (slots[found].loading) {  // another caller is loading it: wait, then use it
        changed_.wait(lock);
        continue;
      }
      ++slots[found].leases;
      if (slots[found].is_protected) {
        slots[found].is_protected = false;
        ++total_.prefetch_hits;
        ++layer_counters_[layer].prefetch_hits;
      }
      policy_->OnHit(layer, expert);
      ++total_.hits;
      ++layer_counters_[layer].hits;
      return Lease(this, layer, found, SlotData(layer, found), /*hit=*/true);
    }
    int target = free;
    if (target < 0) {
      // Prefetched, unused experts are kept while anything else can go; a demand load
      // takes one only as a last resort, a prefetch never.
      if (candidates.empty() && !prefetch) candidates = protected_candidates;
      if (candidates.empty()) {
        if (prefetch) return std::nullopt;  // no room without hurting: drop the hint
        changed_.wait(lock);                // every slot leased: wait for a release
        continue;
      }
      const int victim = policy_->ChooseVictim(layer, candidates);
      for (int s = 0; s < slots_per_layer_; ++s) {
        if (slots[s].expert == victim) target = s;
      }
      MOE_CHECK(target >= 0) << "policy chose expert " << victim << ", which is not a candidate";
      policy_->OnEvict(layer, victim);
    }
    Slot& slot = slots[target];
    slot.expert = expert;
    slot.leases = 1;
    slot.loading = true;
    slot.is_protected = prefetch;
    // The link: one copy at a time, and demand loads go before waiting prefetches.
    if (prefetch) {
      changed_.wait(lock, [&] { return !link_busy_ && demand_waiting_ == 0; });
    } else {
      ++demand_waiting_;
      changed_.wait(lock, [&] { return !link_busy_; });
      --demand_waiting_;
    }
    link_busy_ = true;
    const LinkModel link = link_;
    lock.unlock();
    // The copy goes in chunks; between chunks a prefetch yields the link to any waiting
    // demand load (copies cannot be preempted mid-chunk, as on a real copy engine).
    const size_t bytes = store_->blob_bytes();
    const auto* src = reinterpret_cast<const char*>(store_->Expert(layer, expert));
    auto* dst = reinterpret_cast<char*>(SlotData(layer, target));
    auto deadline = std::chrono::steady_clock::now() + Seconds(link.latency_us * 1e-6);
    for (size_t offset = 0; offset < bytes; offset += kCopyChunkBytes) {
      if (prefetch && offset > 0) {
        lock.lock();
        if (demand_waiting_ > 0) {
          link_busy_ = false;
          changed_.notify_all();
          changed_.wait(lock, [&] { return !link_busy_ && demand_waiting_ == 0; });
          link_busy_ = true;
          deadline = std::chrono::steady_clock::now();
        }
        lock.unlock();
      }
      const size_t n = std::min(kCopyChunkBytes, bytes - offset);
      std::memcpy(dst + offset, src + offset, n);
      deadline += Seconds(link.gbps > 0 ? double(n) / (link.gbps * 1e9) : 0);
      WaitUntil(deadline);
    }
    lock.lock();
    link_busy_ = false;
    slot.loading = false;
    policy_->OnInsert(layer, expert);
    CacheCounters& lc = layer_counters_[layer];
    ++(prefetch ? total_.prefetch_loads : total_.misses);
    ++(prefetch ? lc.prefetch_loads : lc.misses);
    total_.bytes_copied += store_->blob_bytes();
    lc.bytes_copied += store_->blob_bytes();
    lock.unlock();
    changed_.notify_all();
    Lease lease(this, layer, target, SlotData(layer, target), /*hit=*/false);
    return lease;
  }
}

void SlotCache::set_link(const LinkModel& link) {
  std::lock_guard<std::mutex> lock(mu_);
  link_ = link;
}

void SlotCache::SetPolicy(std::unique_ptr<CachePolicy> policy) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t l = 0; l < slots_.size(); ++l) {
    for (const Slot& s : slots_[l]) {
      if (s.expert >= 0) policy->OnInsert(static_cast<int>(l), s.expert);
    }
  }
  policy_ = std::move(policy);
}

CacheStats SlotCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return CacheStats{std::string(policy_->name()), slots_per_layer_, total_, layer_counters_};
}

}  // namespace moe::expert_worker
