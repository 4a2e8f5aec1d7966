#include "expert_worker/slot_cache.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

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
                                                             Retention retention,
                                                             backend::Device* device) {
  if (slots_per_layer < 1 || slots_per_layer > store->num_experts()) {
    return absl::InvalidArgumentError(absl::StrCat("cache of ", slots_per_layer,
                                                   " experts per layer: must be in [1, ",
                                                   store->num_experts(), "]"));
  }
  auto cache = std::unique_ptr<SlotCache>(
      new SlotCache(store, device != nullptr ? device : &store->device(), slots_per_layer,
                    std::move(policy), retention));
  MOE_RETURN_IF_ERROR(cache->device_->BindThread());
  MOE_ASSIGN_OR_RETURN(cache->demand_stream_,
                       cache->device_->CreateStream(backend::StreamPriority::kHigh));
  MOE_ASSIGN_OR_RETURN(cache->prefetch_stream_,
                       cache->device_->CreateStream(backend::StreamPriority::kNormal));
  for (auto& layer : cache->slots_) {
    for (int s = 0; s < slots_per_layer; ++s) {
      absl::StatusOr<std::unique_ptr<Slot>> slot = cache->NewSlot();
      if (!slot.ok()) {
        return absl::Status(slot.status().code(),
                            absl::StrCat("cannot allocate an expert cache of ", slots_per_layer,
                                         " x ", store->num_layers(), " slots of ",
                                         store->blob_stride(), " bytes on ",
                                         cache->device_->name(), ": ", slot.status().message()));
      }
      layer.push_back(*std::move(slot));
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

SlotCache::SlotCache(const ExpertStore* store, backend::Device* device, int slots_per_layer,
                     std::unique_ptr<CachePolicy> policy, Retention retention)
    : store_(store),
      device_(device),
      retention_(retention),
      policy_(std::move(policy)),
      slots_per_layer_(slots_per_layer),
      slots_(store->num_layers()),
      layer_counters_(store->num_layers()) {}

SlotCache::~SlotCache() {
  // No copy may still write into a slot that is about to be freed.
  for (auto& layer : slots_) {
    for (auto& slot : layer) {
      const absl::Status quiet = Quiesce(*slot);
      if (!quiet.ok()) MOE_LOG(ERROR) << "expert cache teardown: " << quiet;
    }
  }
}

bool SlotCache::ReadsInPlace() const {
  return device_->HostMemoryIsDeviceMemory() && retention_ == Retention::kKeep && slots_per_layer_ == store_->num_experts();
}

absl::StatusOr<std::unique_ptr<SlotCache::Slot>> SlotCache::NewSlot() const {
  auto slot = std::make_unique<Slot>();
  MOE_ASSIGN_OR_RETURN(slot->data, device_->Allocate(store_->blob_stride()));
  MOE_ASSIGN_OR_RETURN(slot->ready, device_->CreateEvent());
  return slot;
}

absl::Status SlotCache::Quiesce(Slot& slot) {
  MOE_RETURN_IF_ERROR(slot.ready->Synchronize());
  for (const auto& use : slot.uses) MOE_RETURN_IF_ERROR(use->Synchronize());
  slot.uses.clear();
  slot.copy = 0;
  return absl::OkStatus();
}

const backend::Event& SlotCache::Lease::ready() const { return *slot_->ready; }

absl::Status SlotCache::Lease::RecordUse(backend::Stream& stream) {
  MOE_CHECK(cache_ != nullptr) << "RecordUse on a moved-from lease";
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<backend::Event> use, cache_->device_->CreateEvent());
  MOE_RETURN_IF_ERROR(use->Record(stream));
  cache_->RecordUse(slot_, std::move(use));
  return absl::OkStatus();
}

void SlotCache::RecordUse(Slot* slot, std::unique_ptr<backend::Event> use) {
  std::lock_guard<std::mutex> lock(mu_);
  // Reads already done need no waiting (on the CPU: all of them), so the list stays short.
  std::erase_if(slot->uses, [](const std::unique_ptr<backend::Event>& e) {
    const absl::StatusOr<bool> done = e->Query();
    return done.ok() && *done;
  });
  const absl::StatusOr<bool> done = use->Query();
  if (!(done.ok() && *done)) slot->uses.push_back(std::move(use));
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

bool SlotCache::Busy(Slot& slot) const {
  if (slot.loading) return true;
  if (slot.copy == 0) return false;
  const absl::StatusOr<bool> done = slot.ready->Query();
  // A failed copy is not waited for here: whoever uses or refills the slot waits on its
  // event and gets the error.
  if (!done.ok() || *done) slot.copy = 0;
  return slot.copy != 0;
}

void SlotCache::EvictLocked(int layer, Slot& slot) {
  MOE_CHECK(slot.expert >= 0 && slot.leases == 0 && !Busy(slot));
  policy_->OnEvict(layer, slot.expert);
  slot.expert = -1;
  slot.is_protected = false;
}

void SlotCache::Release(int layer, Slot* slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CHECK(slot->leases > 0);
    --slot->leases;
    if (retention_ == Retention::kDrop && slot->leases == 0 && !Busy(*slot)) {
      EvictLocked(layer, *slot);
    }
  }
  changed_.notify_all();
}

absl::StatusOr<SlotCache::Lease> SlotCache::Acquire(int layer, int expert, CopyWait wait) {
  const auto t0 = std::chrono::steady_clock::now();
  MOE_ASSIGN_OR_RETURN(std::optional<Lease> lease,
                       Load(layer, expert, /*prefetch=*/false, nullptr));
  MOE_CHECK(lease.has_value());
  // Its own copy or a prefetch's may still be moving (never on the CPU device).
  if (wait == CopyWait::kHost) MOE_RETURN_IF_ERROR(lease->ready().Synchronize());
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(mu_);
  total_.stall_s += waited;
  layer_counters_[layer].stall_s += waited;
  return *std::move(lease);
}

bool SlotCache::Prefetch(int layer, int expert, absl::Span<const int> keep) {
  if (retention_ == Retention::kDrop) return false;  // nothing would stay to be used
  bool loaded = false;
  const absl::StatusOr<std::optional<Lease>> done =
      Load(layer, expert, /*prefetch=*/true, &loaded, keep);
  if (!done.ok()) {
    MOE_LOG(WARNING) << "prefetch of expert (" << layer << ", " << expert
                     << ") failed: " << done.status();
    return false;
  }
  return loaded;
}

std::vector<int> SlotCache::Residents(int layer) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int> experts;
  for (const auto& s : slots_[layer]) {
    if (s->expert >= 0) experts.push_back(s->expert);
  }
  std::sort(experts.begin(), experts.end());
  return experts;
}

void SlotCache::ClearProtection(int layer, absl::Span<const int> keep) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& s : slots_[layer]) {
    if (std::find(keep.begin(), keep.end(), s->expert) == keep.end()) s->is_protected = false;
  }
}

SlotCache::Slot* SlotCache::VictimLocked(int layer, const std::vector<std::unique_ptr<Slot>>& slots,
                                         bool take_protected, absl::Span<const int> keep) {
  std::vector<int> candidates, protected_candidates;
  for (const auto& s : slots) {
    if (s->expert >= 0 && s->leases == 0 && !Busy(*s) &&
        std::find(keep.begin(), keep.end(), s->expert) == keep.end()) {
      (s->is_protected ? protected_candidates : candidates).push_back(s->expert);
    }
  }
  if (candidates.empty() && take_protected) candidates.swap(protected_candidates);
  if (candidates.empty()) return nullptr;
  const int victim = policy_->ChooseVictim(layer, candidates);
  for (const auto& s : slots) {
    if (s->expert == victim) return s.get();
  }
  MOE_CHECK(false) << "policy chose expert " << victim << ", which is not a candidate";
  return nullptr;
}

absl::StatusOr<std::optional<SlotCache::Lease>> SlotCache::Load(int layer, int expert,
                                                                bool prefetch, bool* loaded,
                                                                absl::Span<const int> keep) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // Re-read every time round: Resize may have changed the layer's list while we waited.
    std::vector<std::unique_ptr<Slot>>& slots = slots_[layer];
    Slot *found = nullptr, *free = nullptr;
    for (auto& s : slots) {
      if (s->expert == expert) found = s.get();
      if (s->expert < 0 && free == nullptr) free = s.get();
    }
    if (found != nullptr) {
      if (prefetch) return std::nullopt;  // resident or on its way: nothing to do
      if (found->loading) {  // another caller is queuing its copy: wait, then use it
        changed_.wait(lock);
        continue;
      }
      // Its copy may still be moving: Acquire waits for lease.ready().
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
      return Lease(this, layer, found, found->view, /*hit=*/true, prefetched);
    }
    Slot* target = free;
    if (target == nullptr) {
      // Prefetched, unused experts are kept while anything else can go; a demand load
      // takes one only as a last resort, a prefetch never.
      target = VictimLocked(layer, slots, /*take_protected=*/!prefetch, keep);
      if (target == nullptr) {
        if (prefetch) return std::nullopt;  // no room without hurting: drop the hint
        MOE_RETURN_IF_ERROR(WaitForRoom(lock, layer));
        continue;
      }
      EvictLocked(layer, *target);
    }
    Slot& slot = *target;
    slot.expert = expert;
    slot.is_protected = prefetch;
    if (loaded != nullptr) *loaded = true;
    CacheCounters& lc = layer_counters_[layer];
    ++(prefetch ? total_.prefetch_loads : total_.misses);
    ++(prefetch ? lc.prefetch_loads : lc.misses);
    total_.bytes_copied += store_->blob_bytes();
    lc.bytes_copied += store_->blob_bytes();
    policy_->OnInsert(layer, expert);
    slot.leases = 1;
    if (ReadsInPlace()) {
      // Nothing to move: the slot is the store's blob. A prefetch's lease ends at once.
      slot.view = store_->Expert(layer, expert);
      lock.unlock();
      changed_.notify_all();
      return Lease(this, layer, &slot, slot.view, /*hit=*/false);
    }
    slot.loading = true;
    // Leased by this load and not yet usable, so no one else records uses meanwhile.
    std::vector<std::unique_ptr<backend::Event>> uses = std::move(slot.uses);
    slot.uses.clear();
    const uint64_t copy = ++copies_;
    lock.unlock();
    const absl::StatusOr<const void*> view = Fill(layer, expert, slot, prefetch, uses);
    lock.lock();
    slot.loading = false;
    if (!view.ok()) {  // the slot holds nothing usable: empty it, and let waiters retry
      // A wait that failed did not cover the readers: the next refill (or a resize)
      // must still wait for them.
      for (auto& use : uses) slot.uses.push_back(std::move(use));
      slot.leases = 0;
      EvictLocked(layer, slot);
      lock.unlock();
      changed_.notify_all();
      return view.status();
    }
    slot.view = static_cast<const float*>(*view);
    slot.copy = copy;
    lock.unlock();
    changed_.notify_all();
    // A prefetch's lease ends here (Release keeps the expert: it is protected).
    return Lease(this, layer, &slot, slot.view, /*hit=*/false);
  }
}

absl::Status SlotCache::WaitForRoom(std::unique_lock<std::mutex>& lock, int layer) {
  Slot* first = nullptr;
  for (const auto& s : slots_[layer]) {
    if (s->leases == 0 && !s->loading && s->copy != 0 &&
        (first == nullptr || s->copy < first->copy)) {
      first = s.get();
    }
  }
  if (first == nullptr) {  // every slot leased: wait for a release
    changed_.wait(lock);
    return absl::OkStatus();
  }
  const std::shared_ptr<backend::Event> ready = first->ready;
  const uint64_t copy = first->copy;
  lock.unlock();
  const absl::Status done = ready->Synchronize();
  lock.lock();
  if (!done.ok()) return done;
  // Done, even where the device's Query cannot tell yet; the slot may have gone (Resize).
  for (const auto& s : slots_[layer]) {
    if (s->copy == copy) s->copy = 0;
  }
  return absl::OkStatus();
}

// The copy first waits for every recorded read of the slot's previous expert and for
// its previous copy, and ends by recording the slot's `ready` event.
absl::StatusOr<const void*> SlotCache::Fill(
    int layer, int expert, Slot& slot, bool prefetch,
    const std::vector<std::unique_ptr<backend::Event>>& uses) {
  std::lock_guard<std::mutex> queue(prefetch ? prefetch_queue_mu_ : demand_queue_mu_);
  backend::Stream& stream = prefetch ? *prefetch_stream_ : *demand_stream_;
  absl::Status status = device_->BindThread();
  if (status.ok()) status = stream.Wait(*slot.ready);
  for (const auto& use : uses) {
    if (status.ok()) status = stream.Wait(*use);
  }
  const void* view = nullptr;
  if (status.ok()) {
    absl::StatusOr<const void*> copied = device_->CopyToDeviceForRead(
        slot.data->data(), store_->Expert(layer, expert), store_->blob_bytes(), stream);
    status = copied.status();
    if (copied.ok()) view = *copied;
  }
  if (status.ok()) status = slot.ready->Record(stream);
  if (status.ok()) return view;
  // Whatever was queued may still run: let it finish before the slot is reused.
  const absl::Status synced = stream.Synchronize();
  if (!synced.ok()) MOE_LOG(ERROR) << "expert copy stream: " << synced;
  return status;
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
      absl::StatusOr<std::unique_ptr<Slot>> slot = NewSlot();
      if (!slot.ok()) {
        return absl::Status(slot.status().code(),
                            absl::StrCat("cannot grow the expert cache to ", slots_per_layer,
                                         " slots per layer: ", slot.status().message()));
      }
      fresh.push_back(*std::move(slot));
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
      auto idle = [&](const std::unique_ptr<Slot>& s) { return s->leases == 0 && !Busy(*s); };
      auto empty = std::find_if(slots.begin(), slots.end(), [&](const std::unique_ptr<Slot>& s) {
        return idle(s) && s->expert < 0;
      });
      if (empty != slots.end()) {
        MOE_RETURN_IF_ERROR(Quiesce(**empty));
        slots.erase(empty);
        continue;
      }
      Slot* victim = VictimLocked(layer, slots, /*take_protected=*/true);
      if (victim == nullptr) {  // every slot leased or busy: wait for one
        changed_.wait_for(lock, std::chrono::milliseconds(1));
        continue;
      }
      auto it = std::find_if(slots.begin(), slots.end(),
                             [&](const std::unique_ptr<Slot>& s) { return s.get() == victim; });
      EvictLocked(layer, **it);
      MOE_RETURN_IF_ERROR(Quiesce(**it));
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
