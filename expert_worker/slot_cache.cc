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
                                                             Retention retention) {
  if (slots_per_layer < 1 || slots_per_layer > store->num_experts()) {
    return absl::InvalidArgumentError(absl::StrCat("cache of ", slots_per_layer,
                                                   " experts per layer: must be in [1, ",
                                                   store->num_experts(), "]"));
  }
  auto cache = std::unique_ptr<SlotCache>(
      new SlotCache(store, slots_per_layer, std::move(policy), retention));
  MOE_RETURN_IF_ERROR(cache->device_->BindThread());
  MOE_ASSIGN_OR_RETURN(cache->demand_stream_, cache->device_->CreateStream());
  MOE_ASSIGN_OR_RETURN(cache->prefetch_stream_, cache->device_->CreateStream());
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

SlotCache::SlotCache(const ExpertStore* store, int slots_per_layer,
                     std::unique_ptr<CachePolicy> policy, Retention retention)
    : store_(store),
      device_(&store->device()),
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
  return device_->kind() == backend::DeviceKind::kCpu && !link_.modelled() &&
         retention_ == Retention::kKeep && slots_per_layer_ == store_->num_experts();
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

bool SlotCache::Busy(const Slot& slot, std::chrono::steady_clock::time_point now) {
  return slot.loading || slot.copy.in_flight(now);
}

void SlotCache::EvictLocked(int layer, Slot& slot) {
  MOE_CHECK(slot.expert >= 0 && slot.leases == 0 && !Busy(slot, std::chrono::steady_clock::now()));
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
                                         std::chrono::steady_clock::time_point now,
                                         bool take_protected, absl::Span<const int> keep) {
  std::vector<int> candidates, protected_candidates;
  for (const auto& s : slots) {
    if (s->expert >= 0 && s->leases == 0 && !Busy(*s, now) &&
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
  using Clock = std::chrono::steady_clock;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    const Clock::time_point now = Clock::now();
    // Re-read every time round: Resize may have changed the layer's list while we waited.
    std::vector<std::unique_ptr<Slot>>& slots = slots_[layer];
    Slot *found = nullptr, *free = nullptr;
    Clock::time_point next_ready = Clock::time_point::max();  // of an in-flight modelled copy
    for (auto& s : slots) {
      if (s->expert == expert) found = s.get();
      if (s->expert < 0 && free == nullptr) free = s.get();
      if (s->copy.in_flight(now)) next_ready = std::min(next_ready, s->copy.ready);
    }
    if (found != nullptr) {
      if (prefetch) return std::nullopt;  // resident or on its way: nothing to do
      if (found->loading) {  // another caller is copying it: wait, then use it
        changed_.wait(lock);
        continue;
      }
      if (found->copy.in_flight(now)) {  // its modelled copy is still on the link
        const Clock::time_point ready = found->copy.ready;
        lock.unlock();
        LinkSchedule::WaitUntil(ready);
        lock.lock();
        continue;  // the copy may have been pushed back meanwhile
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
      return Lease(this, layer, found, found->view, /*hit=*/true, prefetched);
    }
    Slot* target = free;
    if (target == nullptr) {
      // Prefetched, unused experts are kept while anything else can go; a demand load
      // takes one only as a last resort, a prefetch never.
      target = VictimLocked(layer, slots, now, /*take_protected=*/!prefetch, keep);
      if (target == nullptr) {
        if (prefetch) return std::nullopt;  // no room without hurting: drop the hint
        // Every slot is leased or on the link: wait for a release or the next copy's end.
        if (next_ready != Clock::time_point::max()) {
          changed_.wait_until(lock, next_ready);
        } else {
          changed_.wait(lock);
        }
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
    const LinkModel link = link_;
    if (link.modelled()) {
      // No bytes move: the expert is read in place from the store once the link's
      // schedule says the copy is done. A prefetch returns at once (an async copy).
      slot.view = store_->Expert(layer, expert);
      schedule_.Schedule(prefetch, link, store_->blob_bytes(), &slot.copy);
      if (prefetch) return std::nullopt;
      slot.leases = 1;
      const Clock::time_point ready = slot.copy.ready;
      lock.unlock();
      LinkSchedule::WaitUntil(ready);  // a demand copy is never pushed back
      return Lease(this, layer, &slot, slot.view, /*hit=*/false);
    }
    if (ReadsInPlace()) {
      // Nothing to move: the slot is the store's blob. A prefetch's lease ends at once.
      slot.view = store_->Expert(layer, expert);
      slot.leases = 1;
      lock.unlock();
      changed_.notify_all();
      return Lease(this, layer, &slot, slot.view, /*hit=*/false);
    }
    slot.leases = 1;
    slot.loading = true;
    const absl::Status copied = RealCopy(lock, layer, expert, slot, prefetch);
    slot.loading = false;
    if (!copied.ok()) {  // the slot holds nothing usable: empty it, and let waiters retry
      slot.leases = 0;
      EvictLocked(layer, slot);
      lock.unlock();
      changed_.notify_all();
      return copied;
    }
    slot.view = slot.data->as<const float>();
    lock.unlock();
    changed_.notify_all();
    // A prefetch's lease ends here (Release keeps the expert: it is protected).
    return Lease(this, layer, &slot, slot.view, /*hit=*/false);
  }
}

// One copy at a time on a copy stream, in chunks on the CPU; demand loads go before
// waiting prefetches, and between chunks a prefetch yields to any waiting demand load.
// The copy first waits for every recorded read of the slot's previous expert, and ends by
// recording the slot's `ready` event. Called and returns with `lock` held (released while
// copying).
absl::Status SlotCache::RealCopy(std::unique_lock<std::mutex>& lock, int layer, int expert,
                                 Slot& slot, bool prefetch) {
  auto take_link = [&] {
    if (prefetch) {
      changed_.wait(lock, [&] { return !link_busy_ && demand_waiting_ == 0; });
    } else {
      ++demand_waiting_;
      changed_.wait(lock, [&] { return !link_busy_; });
      --demand_waiting_;
    }
    link_busy_ = true;
  };
  take_link();
  // Leased by this load and not yet usable, so no one else records uses meanwhile.
  std::vector<std::unique_ptr<backend::Event>> uses = std::move(slot.uses);
  slot.uses.clear();
  const size_t bytes = store_->blob_bytes();
  const size_t chunk =
      device_->kind() == backend::DeviceKind::kCpu ? kCopyChunkBytes : bytes;
  const auto* src = reinterpret_cast<const char*>(store_->Expert(layer, expert));
  auto* dst = slot.data->as<char>();
  backend::Stream& stream = prefetch ? *prefetch_stream_ : *demand_stream_;
  absl::Status status = device_->BindThread();
  // The slot's previous copy may still run on the other copy stream.
  if (status.ok()) status = stream.Wait(*slot.ready);
  for (const auto& use : uses) {
    if (status.ok()) status = stream.Wait(*use);
  }
  for (size_t offset = 0; offset < bytes && status.ok(); offset += chunk) {
    if (prefetch && offset > 0 && demand_waiting_ > 0) {
      link_busy_ = false;
      changed_.notify_all();
      take_link();
    }
    lock.unlock();
    status = device_->CopyToDevice(dst + offset, src + offset, std::min(chunk, bytes - offset),
                                   stream);
    lock.lock();
  }
  if (status.ok()) status = slot.ready->Record(stream);
  if (!status.ok()) {
    // Whatever was queued may still run: let it finish before the slot is reused. The
    // readers' events go back to the slot: a wait that failed did not cover them, so the
    // next refill (or a resize) must still wait for them.
    const absl::Status synced = stream.Synchronize();
    if (!synced.ok()) MOE_LOG(ERROR) << "expert copy stream: " << synced;
    for (auto& use : uses) slot.uses.push_back(std::move(use));
  }
  link_busy_ = false;
  return status;
}

LinkModel SlotCache::link() const {
  std::lock_guard<std::mutex> lock(mu_);
  return link_;
}

absl::Status SlotCache::set_link(const LinkModel& link) {
  MOE_RETURN_IF_ERROR(CheckLinkModel(link));
  if (link.modelled() && device_->kind() != backend::DeviceKind::kCpu) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a modelled link (", link.gbps, " GB/s, ", link.latency_us,
        " us) is for the CPU device only; ", device_->name(), " copies over its real link"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  link_ = link;
  return absl::OkStatus();
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
      const auto now = std::chrono::steady_clock::now();
      auto idle = [&](const std::unique_ptr<Slot>& s) { return s->leases == 0 && !Busy(*s, now); };
      auto empty = std::find_if(slots.begin(), slots.end(), [&](const std::unique_ptr<Slot>& s) {
        return idle(s) && s->expert < 0;
      });
      if (empty != slots.end()) {
        MOE_RETURN_IF_ERROR(Quiesce(**empty));
        schedule_.Forget(&(*empty)->copy);
        slots.erase(empty);
        continue;
      }
      Slot* victim = VictimLocked(layer, slots, now, /*take_protected=*/true);
      if (victim == nullptr) {  // every slot leased or on the link: wait for one
        changed_.wait_for(lock, std::chrono::milliseconds(1));
        continue;
      }
      auto it = std::find_if(slots.begin(), slots.end(),
                             [&](const std::unique_ptr<Slot>& s) { return s.get() == victim; });
      EvictLocked(layer, **it);
      MOE_RETURN_IF_ERROR(Quiesce(**it));
      schedule_.Forget(&(*it)->copy);
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
