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

CacheCounters& CacheCounters::operator+=(const CacheCounters& o) {
  hits += o.hits;
  misses += o.misses;
  prefetch_loads += o.prefetch_loads;
  prefetch_hits += o.prefetch_hits;
  bytes_copied += o.bytes_copied;
  stall_s += o.stall_s;
  return *this;
}

absl::StatusOr<std::unique_ptr<SlotCache>> SlotCache::Create(const ExpertStore* store,
                                                             int slots_per_layer,
                                                             std::unique_ptr<CachePolicy> policy,
                                                             Retention retention) {
  if (slots_per_layer < 1 || slots_per_layer > store->num_experts()) {
    return absl::InvalidArgumentError(absl::StrCat("cache of ", slots_per_layer,
                                                   " experts per layer: must be in [1, ",
                                                   store->num_experts(), "]"));
  }
  auto cache = std::unique_ptr<SlotCache>(
      new SlotCache(store, slots_per_layer, std::move(policy), retention));
  for (auto& layer : cache->slots_) {
    for (int s = 0; s < slots_per_layer; ++s) {
      std::unique_ptr<Slot> slot = cache->NewSlot();
      if (slot == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "cannot allocate an expert cache of ", slots_per_layer, " x ", store->num_layers(),
            " slots of ", store->blob_stride(), " bytes"));
      }
      layer.push_back(std::move(slot));
    }
  }
  return cache;
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
                     std::unique_ptr<CachePolicy> policy, Retention retention)
    : store_(store),
      retention_(retention),
      policy_(std::move(policy)),
      slots_per_layer_(slots_per_layer),
      slots_(store->num_layers()),
      layer_counters_(store->num_layers()) {}

SlotCache::~SlotCache() = default;

void SlotCache::SlotBlock::operator()(void* p) const { std::free(p); }

std::unique_ptr<SlotCache::Slot> SlotCache::NewSlot() const {
  void* data = std::aligned_alloc(ExpertStore::kBlobAlignment, store_->blob_stride());
  if (data == nullptr) return nullptr;
  auto slot = std::make_unique<Slot>();
  slot->data.reset(data);
  return slot;
}

int SlotCache::slots_per_layer() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_per_layer_;
}

SlotCache::Lease::Lease(Lease&& other) noexcept
    : cache_(other.cache_), layer_(other.layer_), slot_(other.slot_), data_(other.data_),
      hit_(other.hit_), prefetched_(other.prefetched_) {
  other.cache_ = nullptr;
}

SlotCache::Lease::~Lease() {
  if (cache_ != nullptr) cache_->Release(layer_, slot_);
}

void SlotCache::EvictLocked(int layer, Slot& slot) {
  MOE_CHECK(slot.expert >= 0 && slot.leases == 0 && !slot.loading);
  policy_->OnEvict(layer, slot.expert);
  slot.expert = -1;
  slot.is_protected = false;
}

void SlotCache::Release(int layer, Slot* slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CHECK(slot->leases > 0);
    --slot->leases;
    if (retention_ == Retention::kDrop && slot->leases == 0 && !slot->loading) {
      EvictLocked(layer, *slot);
    }
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
  const auto t0 = std::chrono::steady_clock::now();
  std::optional<Lease> lease = Load(layer, expert, /*prefetch=*/false);
  MOE_CHECK(lease.has_value());
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(mu_);
  total_.stall_s += waited;
  layer_counters_[layer].stall_s += waited;
  return *std::move(lease);
}

bool SlotCache::Prefetch(int layer, int expert) {
  if (retention_ == Retention::kDrop) return false;  // nothing would stay to be used
  return Load(layer, expert, /*prefetch=*/true).has_value();
}

void SlotCache::ClearProtection(int layer, absl::Span<const int> keep) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& s : slots_[layer]) {
    if (std::find(keep.begin(), keep.end(), s->expert) == keep.end()) s->is_protected = false;
  }
}

std::optional<SlotCache::Lease> SlotCache::Load(int layer, int expert, bool prefetch) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // Re-read every time round: Resize may have changed the layer's list while we waited.
    std::vector<std::unique_ptr<Slot>>& slots = slots_[layer];
    Slot *found = nullptr, *free = nullptr;
    std::vector<int> candidates, protected_candidates;
    for (auto& s : slots) {
      if (s->expert == expert) found = s.get();
      if (s->expert < 0 && free == nullptr) free = s.get();
      if (s->expert >= 0 && s->leases == 0 && !s->loading) {
        (s->is_protected ? protected_candidates : candidates).push_back(s->expert);
      }
    }
    if (found != nullptr) {
      if (prefetch) return std::nullopt;  // resident or on its way: nothing to do
      if (found->loading) {  // another caller is loading it: wait, then use it
        changed_.wait(lock);
        continue;
      }
      ++found->leases;
      const bool prefetched = found->is_protected;
      if (prefetched) {
        found->is_protected = false;
        ++total_.prefetch_hits;
        ++layer_counters_[layer].prefetch_hits;
      }
      policy_->OnHit(layer, expert);
      ++total_.hits;
      ++layer_counters_[layer].hits;
      return Lease(this, layer, found, static_cast<const float*>(found->data.get()), /*hit=*/true,
                   prefetched);
    }
    Slot* target = free;
    if (target == nullptr) {
      // Prefetched, unused experts are kept while anything else can go; a demand load
      // takes one only as a last resort, a prefetch never.
      if (candidates.empty() && !prefetch) candidates = protected_candidates;
      if (candidates.empty()) {
        if (prefetch) return std::nullopt;  // no room without hurting: drop the hint
        changed_.wait(lock);                // every slot leased: wait for a release
        continue;
      }
      const int victim = policy_->ChooseVictim(layer, candidates);
      for (auto& s : slots) {
        if (s->expert == victim) target = s.get();
      }
      MOE_CHECK(target != nullptr) << "policy chose expert " << victim << ", which is not a candidate";
      EvictLocked(layer, *target);
    }
    Slot& slot = *target;
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
    auto* dst = static_cast<char*>(slot.data.get());
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
    // A prefetch's lease ends here (Release keeps the expert: it is protected).
    return Lease(this, layer, &slot, static_cast<const float*>(slot.data.get()), /*hit=*/false);
  }
}

void SlotCache::set_link(const LinkModel& link) {
  std::lock_guard<std::mutex> lock(mu_);
  link_ = link;
}

void SlotCache::SetPolicy(std::unique_ptr<CachePolicy> policy) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t l = 0; l < slots_.size(); ++l) {
    for (const auto& s : slots_[l]) {
      if (s->expert >= 0) policy->OnInsert(static_cast<int>(l), s->expert);
    }
  }
  policy_ = std::move(policy);
  ++policy_changes_;
}

absl::Status SlotCache::Resize(int slots_per_layer) {
  if (slots_per_layer < 1 || slots_per_layer > store_->num_experts()) {
    return absl::InvalidArgumentError(absl::StrCat("cache of ", slots_per_layer,
                                                   " experts per layer: must be in [1, ",
                                                   store_->num_experts(), "]"));
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (slots_per_layer == slots_per_layer_) return absl::OkStatus();
  // Allocate before touching anything, so a failed grow leaves the cache as it was.
  std::vector<std::unique_ptr<Slot>> fresh;
  for (size_t l = 0; l < slots_.size(); ++l) {
    for (int s = slots_per_layer_; s < slots_per_layer; ++s) {
      fresh.push_back(NewSlot());
      if (fresh.back() == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "cannot grow the expert cache to ", slots_per_layer, " slots per layer"));
      }
    }
  }
  for (auto& layer : slots_) {
    for (int s = slots_per_layer_; s < slots_per_layer; ++s) {
      layer.push_back(std::move(fresh.back()));
      fresh.pop_back();
    }
  }
  // Shrink: each layer gives up slots that no lease holds, in the order a demand load
  // would pick them (empty, then the policy's victim, then unused prefetches).
  for (size_t l = 0; l < slots_.size(); ++l) {
    const int layer = static_cast<int>(l);
    auto& slots = slots_[l];
    while (static_cast<int>(slots.size()) > slots_per_layer) {
      auto idle = [](const std::unique_ptr<Slot>& s) { return s->leases == 0 && !s->loading; };
      auto empty = std::find_if(slots.begin(), slots.end(), [&](const std::unique_ptr<Slot>& s) {
        return idle(s) && s->expert < 0;
      });
      if (empty != slots.end()) {
        slots.erase(empty);
        continue;
      }
      std::vector<int> candidates, protected_candidates;
      for (const auto& s : slots) {
        if (idle(s)) (s->is_protected ? protected_candidates : candidates).push_back(s->expert);
      }
      if (candidates.empty()) candidates = protected_candidates;
      if (candidates.empty()) {  // every slot leased or loading: wait for one
        changed_.wait(lock);
        continue;
      }
      const int victim = policy_->ChooseVictim(layer, candidates);
      auto it = std::find_if(slots.begin(), slots.end(),
                             [&](const std::unique_ptr<Slot>& s) { return s->expert == victim; });
      MOE_CHECK(it != slots.end()) << "policy chose expert " << victim << ", which is not resident";
      EvictLocked(layer, **it);
      slots.erase(it);
    }
  }
  slots_per_layer_ = slots_per_layer;
  ++resizes_;
  lock.unlock();
  changed_.notify_all();
  return absl::OkStatus();
}

CacheStats SlotCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return CacheStats{std::string(policy_->name()), slots_per_layer_, policy_changes_, resizes_,
                    total_, layer_counters_};
}

}  // namespace moe::expert_worker
