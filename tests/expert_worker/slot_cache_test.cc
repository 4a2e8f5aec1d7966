#include "expert_worker/slot_cache.h"
#include "expert_worker/prefetch_queue.h"

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/model_dir.h"
#include "expert_worker/modelled_link_device.h"
#include "gtest/gtest.h"

namespace moe::expert_worker {
namespace {

// An 8-expert, 2-layer random checkpoint made by the ctest fixture. The cache is the
// part under test, so it is built by hand here (SlotCache::Create, with the sizes,
// retention and devices each test needs); everything else builds it through ExpertStack.
class SlotCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ModelDir::Open(std::string(MOE_BINARY_DIR) + "/random_checkpoints/bf16_gqa4_e8_top2");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *std::move(dir);
    auto store = ExpertStore::Load(*dir_.checkpoint, dir_.config);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  std::unique_ptr<SlotCache> MakeCache(int slots) {
    auto cache = SlotCache::Create(store_.get(), slots, std::make_unique<LruPolicy>());
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? *std::move(cache) : nullptr;
  }
  // A cache that copies through the store's device across a modelled `link`.
  std::unique_ptr<SlotCache> MakeLinkedCache(int slots, const LinkModel& link) {
    auto device = ModelledLinkDevice::Create(&store_->device(), link);
    EXPECT_TRUE(device.ok()) << device.status();
    if (!device.ok()) return nullptr;
    link_ = *std::move(device);
    auto cache = SlotCache::Create(store_.get(), slots, std::make_unique<LruPolicy>(),
                                   Retention::kKeep, link_.get());
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? *std::move(cache) : nullptr;
  }
  ModelDir dir_;
  std::unique_ptr<ExpertStore> store_;
  std::unique_ptr<ModelledLinkDevice> link_;  // MakeLinkedCache's; outlives the test's cache
};

TEST_F(SlotCacheTest, ExpertStoreBlobsArePageAlignedAndHoldTheWeights) {
  EXPECT_EQ(reinterpret_cast<uintptr_t>(store_->Expert(1, 3)) % ExpertStore::kBlobAlignment, 0u);
  std::vector<float> w2(store_->layout().hidden * store_->layout().intermediate);
  ASSERT_TRUE(dir_.checkpoint->ReadF32(tensor_names::Expert(ModelConfig(), 1, 3, "w2"),
                                       {store_->layout().hidden, store_->layout().intermediate},
                                       w2.data()).ok());
  // The BF16 checkpoint's experts are stored as BF16 (ExpertStore).
  ASSERT_TRUE(store_->layout().packed.has_value());
  const quant::ExpertBlobLayout& p = *store_->layout().packed;
  std::vector<float> blob(w2.size());
  ConvertToF32(reinterpret_cast<const uint8_t*>(store_->Expert(1, 3)) + p.w2_offset,
               p.w2.spec.dtype16, int64_t(blob.size()), blob.data());
  for (size_t i = 0; i < w2.size(); ++i) ASSERT_EQ(blob[i], w2[i]) << i;
}

TEST_F(SlotCacheTest, HitsAfterFirstLoadAndCopiesTheBlob) {
  auto cache = MakeCache(2);
  {
    auto lease = *cache->Acquire(0, 5);
    EXPECT_FALSE(lease.hit());
    EXPECT_EQ(0, std::memcmp(lease.data(), store_->Expert(0, 5), store_->blob_bytes()));
  }
  EXPECT_TRUE(cache->Acquire(0, 5)->hit());
  const CacheStats stats = cache->Stats();
  EXPECT_EQ(stats.total.hits, 1u);
  EXPECT_EQ(stats.total.misses, 1u);
  EXPECT_EQ(stats.total.bytes_copied, store_->blob_bytes());
  EXPECT_EQ(stats.layers[0].misses, 1u);
  EXPECT_EQ(stats.layers[1].misses, 0u);
  EXPECT_EQ(stats.policy, "lru");
}

// On the CPU a cache of every expert is the store itself: a second copy of every blob
// would double the resident memory (issue 14). A smaller cache still copies.
TEST_F(SlotCacheTest, FullCacheOnTheCpuReadsTheStoreInPlace) {
  auto full = MakeCache(store_->num_experts());
  {
    auto lease = *full->Acquire(1, 6);
    EXPECT_FALSE(lease.hit());
    EXPECT_EQ(lease.data(), store_->Expert(1, 6));
  }
  auto hit = *full->Acquire(1, 6);
  EXPECT_TRUE(hit.hit());
  EXPECT_EQ(hit.data(), store_->Expert(1, 6));
  EXPECT_EQ(full->Stats().total.misses, 1u);

  auto partial = MakeCache(store_->num_experts() - 1);
  auto copied = *partial->Acquire(1, 6);
  EXPECT_NE(copied.data(), store_->Expert(1, 6));
  EXPECT_EQ(0, std::memcmp(copied.data(), store_->Expert(1, 6), store_->blob_bytes()));

  auto dropping = SlotCache::Create(store_.get(), store_->num_experts(),
                                    std::make_unique<LruPolicy>(), Retention::kDrop);
  ASSERT_TRUE(dropping.ok()) << dropping.status();
  EXPECT_NE((*dropping)->Acquire(1, 6)->data(), store_->Expert(1, 6));  // the baseline copies
}

TEST_F(SlotCacheTest, LruEvictsTheLeastRecentlyUsed) {
  auto cache = MakeCache(2);
  ASSERT_TRUE(cache->Acquire(0, 1).ok());
  ASSERT_TRUE(cache->Acquire(0, 2).ok());
  ASSERT_TRUE(cache->Acquire(0, 1).ok());                   // 2 is now least recent
  ASSERT_TRUE(cache->Acquire(0, 3).ok());                   // evicts 2
  EXPECT_TRUE(cache->Acquire(0, 1)->hit());
  EXPECT_TRUE(cache->Acquire(0, 3)->hit());
  EXPECT_FALSE(cache->Acquire(0, 2)->hit());
}

TEST_F(SlotCacheTest, LayersHaveTheirOwnSlots) {
  auto cache = MakeCache(1);
  ASSERT_TRUE(cache->Acquire(0, 4).ok());
  ASSERT_TRUE(cache->Acquire(1, 6).ok());
  EXPECT_TRUE(cache->Acquire(0, 4)->hit());
  EXPECT_TRUE(cache->Acquire(1, 6)->hit());
}

TEST_F(SlotCacheTest, LeasedSlotIsNeverEvicted) {
  auto cache = MakeCache(1);
  std::atomic<bool> second_done{false};
  auto held = std::make_unique<SlotCache::Lease>(*cache->Acquire(0, 1));
  std::thread other([&] {
    auto lease = *cache->Acquire(0, 2);  // must wait: the only slot is leased
    second_done = true;
    EXPECT_EQ(0, std::memcmp(lease.data(), store_->Expert(0, 2), store_->blob_bytes()));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(second_done.load());
  EXPECT_EQ(0, std::memcmp(held->data(), store_->Expert(0, 1), store_->blob_bytes()));
  held.reset();
  other.join();
  EXPECT_TRUE(second_done.load());
}

TEST_F(SlotCacheTest, ConcurrentCallersAlwaysSeeTheExpertTheyAskedFor) {
  auto cache = MakeCache(2);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const int layer = i % 2, expert = (i * 7 + t * 3) % 8;
        auto lease = *cache->Acquire(layer, expert);
        if (std::memcmp(lease.data(), store_->Expert(layer, expert), store_->blob_bytes()) != 0) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  const CacheStats stats = cache->Stats();
  EXPECT_EQ(stats.total.hits + stats.total.misses, 800u);
}

TEST_F(SlotCacheTest, SetPolicyKeepsResidents) {
  auto cache = MakeCache(2);
  ASSERT_TRUE(cache->Acquire(0, 1).ok());
  ASSERT_TRUE(cache->Acquire(0, 2).ok());
  cache->SetPolicy(std::make_unique<LruPolicy>());
  EXPECT_TRUE(cache->Acquire(0, 1)->hit());
  EXPECT_TRUE(cache->Acquire(0, 2)->hit());
}

TEST_F(SlotCacheTest, RejectsSizesOutsideOneToAllExperts) {
  EXPECT_FALSE(SlotCache::Create(store_.get(), 0, std::make_unique<LruPolicy>()).ok());
  EXPECT_FALSE(SlotCache::Create(store_.get(), 9, std::make_unique<LruPolicy>()).ok());
  EXPECT_FALSE(SlotCache::SlotsForBytes(*store_, 100).ok());
  EXPECT_EQ(*SlotCache::SlotsForBytes(*store_, store_->blob_stride() * 2 * 3), 3);
  EXPECT_FALSE(MakeCachePolicy("belady").ok());
}

}  // namespace
}  // namespace moe::expert_worker

namespace moe::expert_worker {
namespace {

TEST_F(SlotCacheTest, PrefetchLoadsInTheBackgroundSoTheNextUseHits) {
  auto cache = MakeCache(2);
  PrefetchQueue prefetch(cache.get());
  prefetch.Enqueue(1, {6});
  prefetch.Drain();
  prefetch.Enqueue(1, {6});  // already resident: no second load
  prefetch.Drain();
  EXPECT_EQ(prefetch.loaded(), 1u);
  EXPECT_TRUE(cache->Acquire(1, 6)->hit());
  const CacheStats stats = cache->Stats();
  EXPECT_EQ(stats.total.prefetch_loads, 1u);
  EXPECT_EQ(stats.total.prefetch_hits, 1u);
  EXPECT_EQ(stats.total.misses, 0u);  // prefetch loads are not demand misses
}

TEST_F(SlotCacheTest, PrefetchedExpertsAreProtectedUntilUsed) {
  auto cache = MakeCache(2);
  ASSERT_TRUE(cache->Prefetch(0, 1));
  ASSERT_TRUE(cache->Prefetch(0, 2));
  EXPECT_FALSE(cache->Prefetch(0, 3));  // both slots protected: the hint is dropped
  ASSERT_TRUE(cache->Acquire(0, 1).ok());                 // uses 1: no longer protected
  EXPECT_TRUE(cache->Prefetch(0, 3));   // evicts 1, not the unused 2
  EXPECT_TRUE(cache->Acquire(0, 2)->hit());
  EXPECT_TRUE(cache->Acquire(0, 3)->hit());
}

TEST_F(SlotCacheTest, DemandLoadEvictsProtectedOnlyAsLastResort) {
  auto cache = MakeCache(1);
  ASSERT_TRUE(cache->Prefetch(0, 1));
  EXPECT_FALSE(cache->Acquire(0, 4)->hit());  // must make progress: evicts the guess
  cache->ClearProtection(0);
  EXPECT_TRUE(cache->Acquire(0, 4)->hit());
}

TEST_F(SlotCacheTest, NewerRoundEndsTheProtectionOfTheOlderOne) {
  auto cache = MakeLinkedCache(2, LinkModel{1000, 0});  // modelled: rounds are scheduled inline
  PrefetchQueue prefetch(cache.get());
  prefetch.Enqueue(1, {2});
  prefetch.Enqueue(1, {3});  // supersedes {2}: 2 may go now
  prefetch.Enqueue(1, {4});  // supersedes {3}; evicts the unprotected 2, not 3
  prefetch.Drain();
  EXPECT_EQ(prefetch.loaded(), 3u);
  EXPECT_TRUE(cache->Acquire(1, 3)->hit());
  EXPECT_TRUE(cache->Acquire(1, 4)->hit());
  EXPECT_FALSE(cache->Acquire(1, 2)->hit());
}

// A batch's hint can be wider than the slots: a round then keeps its residents and fills
// only the other slots, where evicting a guessed resident to load another guess would
// only load it again.
TEST_F(SlotCacheTest, ARoundNeverEvictsAnExpertOfItsOwnHint) {
  auto cache = MakeCache(2);
  ASSERT_TRUE(cache->Acquire(0, 3).ok());
  ASSERT_TRUE(cache->Acquire(0, 5).ok());  // residents {3, 5}; LRU's victim is 3
  PrefetchQueue prefetch(cache.get());
  prefetch.Enqueue(0, {1, 3, 6});
  prefetch.Drain();
  EXPECT_EQ(prefetch.loaded(), 1u);  // 1, into 5's slot; 6 finds no room
  EXPECT_EQ(cache->Residents(0), (std::vector<int>{1, 3}));
  EXPECT_EQ(cache->Stats().total.prefetch_loads, 1u);
}

TEST_F(SlotCacheTest, ResidentsListsTheLayersExpertsAscending) {
  auto cache = MakeCache(3);
  EXPECT_TRUE(cache->Residents(1).empty());
  ASSERT_TRUE(cache->Acquire(1, 6).ok());
  ASSERT_TRUE(cache->Prefetch(1, 2));
  EXPECT_EQ(cache->Residents(1), (std::vector<int>{2, 6}));
  EXPECT_TRUE(cache->Residents(0).empty());
}

// Timed with copies of 200 ms (latency only), so that a loaded machine's delays of tens
// of milliseconds change no outcome: every bound below is a lower one, or has a whole
// copy of margin before it would say the opposite.
TEST_F(SlotCacheTest, ModelledPrefetchIsScheduledAtOnceAndADemandCopyOvertakesIt) {
  constexpr double kOne = 0.2;  // seconds a copy takes
  auto cache = MakeLinkedCache(2, LinkModel{0, kOne * 1e6});
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const auto t0 = Clock::now();
  ASSERT_TRUE(cache->Prefetch(0, 1));  // moving from t0, done at one
  ASSERT_TRUE(cache->Prefetch(0, 2));  // queued behind it: done at two, if alone
  EXPECT_LT(since(t0), kOne / 2);      // both returned at once
  ASSERT_TRUE(cache->Acquire(1, 5).ok());  // a demand copy: after the moving one, before 2
  const double demand = since(t0);
  EXPECT_GE(demand, 2 * kOne);
  EXPECT_LT(demand, 3 * kOne);  // behind the queued prefetch it would end at three
  auto second = *cache->Acquire(0, 2);  // pushed back by the demand copy: done at three
  EXPECT_GE(since(t0), 3 * kOne);
  EXPECT_TRUE(second.hit());
  EXPECT_TRUE(second.prefetched());
  auto first = *cache->Acquire(0, 1);
  EXPECT_TRUE(first.prefetched());
  EXPECT_EQ(0, std::memcmp(second.data(), store_->Expert(0, 2), store_->blob_bytes()));
}

}  // namespace
}  // namespace moe::expert_worker

namespace moe::expert_worker {
namespace {

TEST_F(SlotCacheTest, LinkModelMakesACopyTakeBytesOverBandwidth) {
  // 0.1 GB/s: a blob of store_->blob_bytes() takes blob_bytes / 1e8 seconds plus 100 us.
  auto cache = MakeLinkedCache(1, LinkModel{0.1, 100});
  const double expected = store_->blob_bytes() / 1e8 + 100e-6;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(cache->Acquire(0, 1).ok());
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, expected);
  EXPECT_LT(took, expected + 0.05);
  // A hit costs no link time.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_TRUE(cache->Acquire(0, 1)->hit());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), expected);
}

TEST_F(SlotCacheTest, CopiesShareTheLinkOneAtATime) {
  auto cache = MakeLinkedCache(2, LinkModel{0.1, 0});
  const double one = store_->blob_bytes() / 1e8;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread a([&] { cache->Acquire(0, 1); });
  std::thread b([&] { cache->Acquire(1, 2); });
  a.join();
  b.join();
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2 * one);
}

}  // namespace
}  // namespace moe::expert_worker

namespace moe::expert_worker {
namespace {

TEST_F(SlotCacheTest, GrowingKeepsResidentsAndAddsRoom) {
  auto cache = MakeCache(1);
  ASSERT_TRUE(cache->Acquire(0, 1).ok());
  ASSERT_TRUE(cache->Resize(3).ok());
  EXPECT_EQ(cache->slots_per_layer(), 3);
  EXPECT_TRUE(cache->Acquire(0, 1)->hit());
  ASSERT_TRUE(cache->Acquire(0, 2).ok());
  ASSERT_TRUE(cache->Acquire(0, 3).ok());
  EXPECT_TRUE(cache->Acquire(0, 1)->hit());  // three fit now
  EXPECT_TRUE(cache->Acquire(0, 2)->hit());
  EXPECT_EQ(cache->Stats().resizes, 1u);
}

TEST_F(SlotCacheTest, ShrinkingEvictsPerThePolicy) {
  auto cache = MakeCache(3);
  ASSERT_TRUE(cache->Acquire(0, 1).ok());
  ASSERT_TRUE(cache->Acquire(0, 2).ok());
  ASSERT_TRUE(cache->Acquire(0, 3).ok());
  ASSERT_TRUE(cache->Acquire(0, 1).ok());  // LRU order now 2, 3, 1
  ASSERT_TRUE(cache->Resize(1).ok());
  EXPECT_EQ(cache->Stats().slots_per_layer, 1);
  EXPECT_TRUE(cache->Acquire(0, 1)->hit());  // the most recent stayed
  EXPECT_FALSE(cache->Acquire(0, 2)->hit());
  EXPECT_FALSE(cache->Acquire(0, 1)->hit());  // one slot: 2 took it
}

TEST_F(SlotCacheTest, ShrinkingWaitsForLeasesAndNeverTakesALeasedSlot) {
  auto cache = MakeCache(2);
  auto held = std::make_unique<SlotCache::Lease>(*cache->Acquire(0, 4));
  ASSERT_TRUE(cache->Acquire(0, 5).ok());
  std::atomic<bool> done{false};
  std::thread shrink([&] {
    EXPECT_TRUE(cache->Resize(1).ok());
    done = true;
  });
  // 5 is idle and goes at once; the shrink finishes without touching the leased 4.
  shrink.join();
  EXPECT_TRUE(done.load());
  EXPECT_EQ(0, std::memcmp(held->data(), store_->Expert(0, 4), store_->blob_bytes()));
  held.reset();
  EXPECT_TRUE(cache->Acquire(0, 4)->hit());
}

TEST_F(SlotCacheTest, ShrinkBelowLeasedSlotsWaitsForTheirRelease) {
  auto cache = MakeCache(2);
  auto a = std::make_unique<SlotCache::Lease>(*cache->Acquire(0, 1));
  auto b = std::make_unique<SlotCache::Lease>(*cache->Acquire(1, 2));  // other layer
  auto c = std::make_unique<SlotCache::Lease>(*cache->Acquire(0, 3));
  std::atomic<bool> done{false};
  std::thread shrink([&] {
    EXPECT_TRUE(cache->Resize(1).ok());
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done.load());  // layer 0 has two leased slots
  a.reset();
  shrink.join();
  EXPECT_EQ(0, std::memcmp(c->data(), store_->Expert(0, 3), store_->blob_bytes()));
  EXPECT_EQ(0, std::memcmp(b->data(), store_->Expert(1, 2), store_->blob_bytes()));
}

TEST_F(SlotCacheTest, ResizeRejectsSizesOutsideOneToAllExperts) {
  auto cache = MakeCache(2);
  EXPECT_EQ(cache->Resize(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Resize(9).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->slots_per_layer(), 2);
}

TEST_F(SlotCacheTest, ResizeWhileCallersRunKeepsEveryLeaseCorrect) {
  auto cache = MakeCache(4);
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const int layer = i % 2, expert = (i * 5 + t) % 8;
        auto lease = *cache->Acquire(layer, expert);
        if (std::memcmp(lease.data(), store_->Expert(layer, expert), store_->blob_bytes()) != 0) ++wrong;
      }
    });
  }
  for (int size : {1, 8, 2, 5, 1, 3}) {
    ASSERT_TRUE(cache->Resize(size).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(cache->slots_per_layer(), 3);
}

TEST_F(SlotCacheTest, DropRetentionLoadsEveryUse) {
  auto cache = SlotCache::Create(store_.get(), 2, std::make_unique<LruPolicy>(), Retention::kDrop);
  ASSERT_TRUE(cache.ok());
  EXPECT_FALSE((*cache)->Acquire(0, 1)->hit());
  EXPECT_FALSE((*cache)->Acquire(0, 1)->hit());
  EXPECT_FALSE((*cache)->Prefetch(0, 2));  // nothing would stay: hints are ignored
  EXPECT_EQ((*cache)->Stats().total.misses, 2u);
  EXPECT_EQ((*cache)->Stats().total.hits, 0u);
}

TEST_F(SlotCacheTest, CountsStallTimeAndPrefetchFirstUses) {
  auto cache = MakeLinkedCache(2, LinkModel{0.5, 0});
  ASSERT_TRUE(cache->Prefetch(0, 3));
  auto first = *cache->Acquire(0, 3);
  EXPECT_TRUE(first.hit());
  EXPECT_TRUE(first.prefetched());
  EXPECT_FALSE(cache->Acquire(0, 3)->prefetched());  // only the first use counts
  ASSERT_TRUE(cache->Acquire(0, 6).ok());                              // a demand copy: stalls
  const CacheStats stats = cache->Stats();
  EXPECT_GE(stats.total.stall_s, store_->blob_bytes() / 0.5e9);
  EXPECT_EQ(stats.total.prefetch_hits, 1u);
  EXPECT_DOUBLE_EQ(stats.total.prefetch_precision(), 1.0);
  EXPECT_DOUBLE_EQ(stats.total.prefetch_recall(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(stats.layers[0].hit_ratio(), 2.0 / 3);
}

TEST_F(SlotCacheTest, SetPolicyIsCounted) {
  auto cache = MakeCache(2);
  cache->SetPolicy(std::make_unique<FifoPolicy>());
  EXPECT_EQ(cache->Stats().policy, "fifo");
  EXPECT_EQ(cache->Stats().policy_changes, 1u);
}

}  // namespace
}  // namespace moe::expert_worker
