// ExpertRunner through backend::Kernels: on the CPU device it matches a plain reference
// FFN and, bit for bit, the engine's pre-port path (RunExpertFfn, then a weighted sum);
// every packed width runs; concurrent calls agree. The CUDA cases run where a GPU is.
#include "expert_worker/expert_runner.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <random>
#include <thread>
#include <vector>

#include "common/backend/cpu/cpu_device.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"
#include "common/model_dir.h"
#include "expert_worker/expert_ffn.h"
#include "expert_worker/expert_stack.h"
#include "expert_worker/modelled_link_device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tools/cli/convert.h"

namespace moe::expert_worker {
namespace {

namespace fs = std::filesystem;

// An 8-expert, 2-layer, hidden 64 random checkpoint made by the ctest fixture.
const fs::path kCheckpoint = fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "bf16_gqa4_e8_top2";

// A routed batch: x[n, H], ids/weights[n, k] with k distinct experts per token.
struct Batch {
  int64_t n = 0;
  std::vector<float> x;
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

Batch RandomBatch(int64_t n, int64_t h, int experts, int k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unit(0.05f, 1.f);
  Batch b;
  b.n = n;
  b.x.resize(n * h);
  for (float& v : b.x) v = normal(rng);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int32_t> all(experts);
    for (int e = 0; e < experts; ++e) all[e] = e;
    std::shuffle(all.begin(), all.end(), rng);
    for (int j = 0; j < k; ++j) {
      b.ids.push_back(all[j]);
      b.weights.push_back(unit(rng));
    }
  }
  return b;
}

std::vector<float> RunOrDie(const ExpertRunner& runner, int layer, const Batch& b, int64_t h,
                            MemoryPlace place = MemoryPlace::Host()) {
  std::vector<float> out(b.n * h, -1.f);
  const absl::Status s = runner.Run(layer, b.x, b.n, b.ids, b.weights, absl::MakeSpan(out),
                                    nullptr, place);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// The engine's path before the port: tokens grouped by expert in first-use order, the
// expert FFN of expert_ffn.h, then out[t] += gain * result in the same order.
std::vector<float> PrePortPath(const ExpertStore& store, int layer, const Batch& b) {
  const int64_t h = store.layout().hidden, k = int64_t(b.ids.size()) / b.n;
  std::vector<float> out(b.n * h, 0.f);
  std::vector<int32_t> order;
  for (int32_t id : b.ids) {
    if (std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
  }
  FfnScratch scratch;
  for (int32_t expert : order) {
    std::vector<int64_t> tokens;
    std::vector<float> gains, rows, result;
    for (int64_t t = 0; t < b.n; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        if (b.ids[t * k + j] == expert) {
          tokens.push_back(t);
          gains.push_back(b.weights[t * k + j]);
        }
      }
    }
    const int64_t m = int64_t(tokens.size());
    rows.resize(m * h);
    result.resize(m * h);
    for (int64_t r = 0; r < m; ++r) std::memcpy(&rows[r * h], &b.x[tokens[r] * h], h * sizeof(float));
    RunExpertFfn(store.Expert(layer, expert), store.layout(), rows.data(), m, scratch, result.data());
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t d = 0; d < h; ++d) out[tokens[r] * h + d] += gains[r] * result[r * h + d];
    }
  }
  return out;
}

// W[rows, cols] as fp32: the blob's matrix itself, or a packed one dequantised by
// multiplying the identity by it (I · W^T = W^T).
std::vector<float> DenseMatrix(const ExpertStore& store, int layer, int expert, int which) {
  const ExpertLayout& l = store.layout();
  const int64_t h = l.hidden, i = l.intermediate;
  const int64_t rows = which == 2 ? h : i, cols = which == 2 ? i : h;
  std::vector<float> w(rows * cols);
  if (!l.packed) {
    const float* blob = store.Expert(layer, expert);
    const int64_t offset = which == 0 ? l.w1_offset() : which == 1 ? l.w3_offset() : l.w2_offset();
    std::copy(blob + offset, blob + offset + rows * cols, w.begin());
    return w;
  }
  const quant::ExpertBlobLayout& p = *l.packed;
  const auto* bytes = reinterpret_cast<const uint8_t*>(store.Expert(layer, expert));
  const quant::MatrixLayout& m = which == 0 ? p.w1 : which == 1 ? p.w3 : p.w2;
  const int64_t offset = which == 0 ? p.w1_offset : which == 1 ? p.w3_offset : p.w2_offset;
  std::vector<float> eye(cols * cols, 0.f), wt(cols * rows);
  for (int64_t c = 0; c < cols; ++c) eye[c * cols + c] = 1.f;
  cpu::QuantMatMulTransB({m, bytes + offset}, eye.data(), wt.data(), cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = wt[c * rows + r];
  }
  return w;
}

// x[cols] as the CPU kernels multiply a quantized matrix by it: rounded to int8 per block
// (quant_kernels.h). Unchanged for fp32 and 16-bit stores.
std::vector<float> KernelActivations(const ExpertStore& store, const float* x, int64_t cols) {
  std::vector<float> out(x, x + cols);
  if (!store.layout().packed || !store.layout().packed->w1.spec.quantized()) return out;
  std::vector<int8_t> q(cols);
  std::vector<float> d(cols / quant::kBlock);
  cpu::QuantizeActivationBlocks(x, cols, q.data(), d.data());
  for (int64_t c = 0; c < cols; ++c) out[c] = d[c / quant::kBlock] * q[c];
  return out;
}

// out[t] = sum_j weights[t, j] * w2(silu(w1 x) * w3 x), one token at a time with the
// double-accumulating reference matmul on the activations the kernels use.
std::vector<float> ReferenceFfn(const ExpertStore& store, int layer, const Batch& b) {
  const int64_t h = store.layout().hidden, i = store.layout().intermediate;
  const int64_t k = int64_t(b.ids.size()) / b.n;
  std::vector<float> out(b.n * h, 0.f), gate(i), up(i), y(h);
  for (int64_t t = 0; t < b.n; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int e = b.ids[t * k + j];
      const auto w1 = DenseMatrix(store, layer, e, 0), w3 = DenseMatrix(store, layer, e, 1),
                 w2 = DenseMatrix(store, layer, e, 2);
      const std::vector<float> x = KernelActivations(store, &b.x[t * h], h);
      cpu::MatMulTransBReference(x.data(), w1.data(), gate.data(), 1, h, i);
      cpu::MatMulTransBReference(x.data(), w3.data(), up.data(), 1, h, i);
      for (int64_t c = 0; c < i; ++c) gate[c] = gate[c] / (1.f + std::exp(-gate[c])) * up[c];
      gate = KernelActivations(store, gate.data(), i);
      cpu::MatMulTransBReference(gate.data(), w2.data(), y.data(), 1, i, h);
      for (int64_t d = 0; d < h; ++d) out[t * h + d] += b.weights[t * k + j] * y[d];
    }
  }
  return out;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want[i])));
    max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
  }
  EXPECT_LE(max_err, rel * max_ref) << "max error " << max_err << " of max " << max_ref;
}

bool BitIdentical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class ExpertRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ModelDir::Open(kCheckpoint.string());
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *std::move(dir);
    auto store = ExpertStore::Load(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  // A cache of `slots` per layer (LRU), built the one way (ExpertStack::Over), over a
  // store the test made itself: on the device under test (a tracing one, CUDA) or the
  // fixture's, whose experts the references read too. Reads like the cache's pointer.
  struct Cache {
    std::unique_ptr<ExpertStack> stack;
    SlotCache* get() const { return stack != nullptr ? &stack->cache() : nullptr; }
    SlotCache* operator->() const { return get(); }
    bool operator!=(std::nullptr_t) const { return stack != nullptr; }
  };
  Cache MakeCache(const ExpertStore& store, int slots) {
    auto stack = ExpertStack::Over(&store, {.cache_per_layer = slots});
    EXPECT_TRUE(stack.ok()) << stack.status();
    return Cache{stack.ok() ? *std::move(stack) : nullptr};
  }
  int64_t hidden() const { return store_->layout().hidden; }
  ModelDir dir_;
  std::unique_ptr<ExpertStore> store_;
};

TEST_F(ExpertRunnerTest, CpuMatchesAPlainReferenceFfn) {
  auto cache = MakeCache(*store_, 2);
  ExpertRunner runner(cache.get());
  const Batch b = RandomBatch(6, hidden(), store_->num_experts(), 2, 1);
  ExpectClose(RunOrDie(runner, 1, b, hidden()), ReferenceFfn(*store_, 1, b), 1e-5);
}

TEST_F(ExpertRunnerTest, CpuIsBitIdenticalToThePrePortPath) {
  for (int slots : {1, 3, 8}) {
    auto cache = MakeCache(*store_, slots);
    ExpertRunner runner(cache.get());
    for (int64_t n : {1, 5, 40}) {
      const Batch b = RandomBatch(n, hidden(), store_->num_experts(), 2, uint32_t(n + slots));
      EXPECT_TRUE(BitIdentical(RunOrDie(runner, 0, b, hidden()), PrePortPath(*store_, 0, b)))
          << slots << " slots, " << n << " tokens";
    }
  }
}

TEST_F(ExpertRunnerTest, TheCpuDevicesMemoryIsHostMemory) {
  auto cache = MakeCache(*store_, 2);
  ExpertRunner runner(cache.get());
  const Batch b = RandomBatch(7, hidden(), store_->num_experts(), 2, 3);
  EXPECT_TRUE(MemoryPlace::On(cache->device()).is_host());
  EXPECT_TRUE(BitIdentical(RunOrDie(runner, 1, b, hidden(), MemoryPlace::On(cache->device())),
                           RunOrDie(runner, 1, b, hidden(), MemoryPlace::Host())));
}

TEST_F(ExpertRunnerTest, ChunkedWorkspaceMatchesOnePass) {
  auto cache = MakeCache(*store_, 2);
  ExpertRunner whole(cache.get()), chunked(cache.get(), false, /*workspace_tokens=*/3);
  EXPECT_EQ(chunked.workspace_tokens(), 3);
  const Batch b = RandomBatch(29, hidden(), store_->num_experts(), 2, 4);
  const auto a = RunOrDie(whole, 0, b, hidden());
  const auto c = RunOrDie(chunked, 0, b, hidden());
  ExpectClose(c, a, 1e-6);
  ExpectClose(c, ReferenceFfn(*store_, 0, b), 1e-5);
}

TEST_F(ExpertRunnerTest, CountsHitsAndMissesAsBefore) {
  auto cache = MakeCache(*store_, 8);
  ExpertRunner runner(cache.get());
  const Batch b = RandomBatch(4, hidden(), store_->num_experts(), 2, 5);
  std::vector<float> out(b.n * hidden());
  ExpertCallStats first, second;
  ASSERT_TRUE(runner.Run(0, b.x, b.n, b.ids, b.weights, absl::MakeSpan(out), &first).ok());
  ASSERT_TRUE(runner.Run(0, b.x, b.n, b.ids, b.weights, absl::MakeSpan(out), &second).ok());
  std::vector<int32_t> distinct(b.ids);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  EXPECT_EQ(first.misses, distinct.size());
  EXPECT_EQ(first.hits, 0u);
  EXPECT_EQ(second.hits, distinct.size());
  EXPECT_EQ(second.misses, 0u);
}

// Two slots, a call needing experts {0, 1, 6, 7} after one that left {6, 7} resident:
// computed in id order, loading 0 and 1 would evict 6 and 7 before their turn (4 loads);
// resident first, 6 and 7 hit and only 0 and 1 load. The output is the same bits, since
// the sums are added in id order whatever the order of computation.
TEST_F(ExpertRunnerTest, ResidentExpertsGoFirstWithFewerLoadsAndTheSameBits) {
  for (int k : {2, 4}) {  // k = 4: a token's sum of 4 terms, where order shows in the bits
    auto cache = MakeCache(*store_, 2);
    ExpertRunner runner(cache.get());
    Batch warm = RandomBatch(1, hidden(), store_->num_experts(), 2, 11);
    warm.ids = {6, 7};
    std::vector<float> out(hidden());
    ASSERT_TRUE(runner.Run(0, warm.x, 1, warm.ids, warm.weights, absl::MakeSpan(out)).ok());
    ASSERT_EQ(cache->Residents(0), (std::vector<int>{6, 7}));

    Batch b = RandomBatch(3, hidden(), store_->num_experts(), k, 12);
    b.ids = k == 2 ? std::vector<int32_t>{7, 0, 1, 6, 6, 0}
                   : std::vector<int32_t>{7, 0, 1, 6, 6, 0, 1, 7, 1, 6, 7, 0};
    ExpertCallStats counters;
    std::vector<float> got(b.n * hidden());
    ASSERT_TRUE(
        runner.Run(0, b.x, b.n, b.ids, b.weights, absl::MakeSpan(got), &counters).ok());
    EXPECT_EQ(counters.hits, 2u) << "k " << k;
    EXPECT_EQ(counters.misses, 2u) << "k " << k;
    EXPECT_EQ(cache->Stats().total.misses, 4u) << "k " << k;  // 6, 7 and then 0, 1 only

    // The same call on a cold cache (nothing resident: id order) gives the same bits.
    auto cold_cache = MakeCache(*store_, 2);
    ExpertRunner cold(cold_cache.get());
    EXPECT_TRUE(BitIdentical(got, RunOrDie(cold, 0, b, hidden()))) << "k " << k;
    // And each token alone (batch invariance) gives its row's bits.
    for (int64_t t = 0; t < b.n; ++t) {
      Batch one;
      one.n = 1;
      one.x.assign(b.x.begin() + t * hidden(), b.x.begin() + (t + 1) * hidden());
      one.ids.assign(b.ids.begin() + t * k, b.ids.begin() + (t + 1) * k);
      one.weights.assign(b.weights.begin() + t * k, b.weights.begin() + (t + 1) * k);
      const std::vector<float> alone = RunOrDie(cold, 0, one, hidden());
      EXPECT_EQ(0, std::memcmp(alone.data(), got.data() + t * hidden(), hidden() * sizeof(float)))
          << "k " << k << ", token " << t;
    }
  }
}

TEST_F(ExpertRunnerTest, RejectsBadIdsAndSizesNamingThem) {
  auto cache = MakeCache(*store_, 2);
  ExpertRunner runner(cache.get());
  Batch b = RandomBatch(2, hidden(), store_->num_experts(), 2, 6);
  std::vector<float> out(b.n * hidden());
  b.ids[1] = 8;
  absl::Status s = runner.Run(0, b.x, b.n, b.ids, b.weights, absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expert id 8"), std::string::npos) << s;
  b.ids[1] = 0;
  s = runner.Run(0, b.x, b.n, b.ids, b.weights, absl::MakeSpan(out).subspan(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("out="), std::string::npos) << s;
}

TEST_F(ExpertRunnerTest, ConcurrentCallsGiveTheSameResultsAsOneAtATime) {
  auto cache = MakeCache(*store_, 1);  // one slot per layer: constant eviction
  ExpertRunner runner(cache.get());
  constexpr int kThreads = 4, kCalls = 12;
  std::vector<std::vector<Batch>> batches(kThreads);
  std::vector<std::vector<std::vector<float>>> want(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int c = 0; c < kCalls; ++c) {
      batches[t].push_back(RandomBatch(1 + (t + c) % 9, hidden(), store_->num_experts(), 2,
                                       uint32_t(100 * t + c)));
      want[t].push_back(RunOrDie(runner, c % 2, batches[t].back(), hidden()));
    }
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        if (!BitIdentical(RunOrDie(runner, c % 2, batches[t][c], hidden()), want[t][c])) {
          ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

// Every packed width of the offload format (and 16-bit), converted from the checkpoint.
class PackedExpertRunnerTest : public ::testing::TestWithParam<int> {};

TEST_P(PackedExpertRunnerTest, MatchesThePrePortPathAndTheDequantisedReference) {
  testing_util::ScopedTempDir tmp("expert_runner_packed");
  ConvertOptions o;
  o.in_dir = kCheckpoint.string();
  o.out_dir = (tmp.path() / "converted").string();
  o.attn_bits = 16;
  o.expert_bits = GetParam();
  o.group_size = 32;
  o.progress = false;
  auto manifest = Convert(o);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  auto dir = ModelDir::Open(o.out_dir);
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto stack = ExpertStack::Load(*dir, nullptr, {.cache_per_layer = 2});
  ASSERT_TRUE(stack.ok()) << stack.status();
  const ExpertStore& store = (*stack)->store();
  ASSERT_TRUE(store.layout().packed.has_value());
  ExpertRunner runner(&(*stack)->cache());
  const int64_t h = store.layout().hidden;
  const Batch b = RandomBatch(9, h, store.num_experts(), 2, 7);
  const auto got = RunOrDie(runner, 1, b, h);
  EXPECT_TRUE(BitIdentical(got, PrePortPath(store, 1, b)));
  ExpectClose(got, ReferenceFfn(store, 1, b), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Bits, PackedExpertRunnerTest, ::testing::Values(2, 3, 4, 16),
                         [](const auto& info) { return "bits" + std::to_string(info.param); });

// A CPU device that logs the stream-ordering operations (copies, event records and
// waits) in the order they are queued, so that the ordering a GPU relies on can be
// checked on any machine.
class TracingDevice : public backend::Device {
 public:
  struct Op {
    enum Kind { kCopy, kRecord, kWait } kind;
    int stream = -1;
    int event = -1;             // kRecord, kWait
    const void* dst = nullptr;  // kCopy
  };

  // `kind`: what it claims to be (kCuda to take the cache's GPU paths; it still computes
  // on the CPU).
  explicit TracingDevice(backend::DeviceKind kind = backend::DeviceKind::kCpu) : kind_(kind) {}
  backend::DeviceKind kind() const override { return kind_; }
  std::string name() const override { return "tracing device"; }
  int ordinal() const override { return 0; }
  absl::Status BindThread() const override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> Allocate(size_t bytes) override {
    return inner_.Allocate(bytes);
  }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> AllocatePinnedHost(size_t bytes) override {
    return inner_.AllocatePinnedHost(bytes);
  }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> RegisterHost(void* data, size_t bytes,
                                                                       bool read_only) override {
    return inner_.RegisterHost(data, bytes, read_only);
  }
  using backend::Device::CreateStream;
  absl::StatusOr<std::unique_ptr<backend::Stream>> CreateStream(backend::StreamPriority) override {
    std::lock_guard<std::mutex> lock(mu_);
    return std::make_unique<TracedStream>(this, next_stream_++);
  }
  absl::StatusOr<std::unique_ptr<backend::Event>> CreateEvent(bool interprocess) override {
    std::lock_guard<std::mutex> lock(mu_);
    return std::make_unique<TracedEvent>(this, next_event_++);
  }
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override {
    Log({Op::kCopy, Id(stream), -1, dst});
    return inner_.CopyToDevice(dst, src, bytes, stream);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes,
                          backend::Stream& stream) override {
    return inner_.CopyToHost(dst, src, bytes, stream);
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override {
    return inner_.CopyOnDevice(dst, src, bytes, stream);
  }
  absl::Status Memset(void* dst, int value, size_t bytes, backend::Stream& stream) override {
    return inner_.Memset(dst, value, bytes, stream);
  }
  absl::StatusOr<backend::MemoryInfo> Memory() const override { return inner_.Memory(); }
  bool AsyncCopiesForRead() const override { return kind_ == backend::DeviceKind::kCuda; }
  bool HostMemoryIsDeviceMemory() const override { return kind_ == backend::DeviceKind::kCpu; }

  std::vector<Op> ops() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ops_;
  }
  // The next stream Wait fails (once), as a lost context or a bad event would.
  void FailNextWait() {
    std::lock_guard<std::mutex> lock(mu_);
    fail_next_wait_ = true;
  }

 private:
  struct TracedStream : backend::Stream {
    TracedStream(TracingDevice* d, int id) : device(d), id(id) {}
    absl::Status Synchronize() override { return absl::OkStatus(); }
    absl::Status Wait(const backend::Event& event) override;
    void* native() const override { return nullptr; }
    TracingDevice* device;
    int id;
  };
  struct TracedEvent : backend::Event {
    TracedEvent(TracingDevice* d, int id) : device(d), id(id) {}
    absl::Status Record(backend::Stream& stream) override {
      device->Log({Op::kRecord, Id(stream), id, nullptr});
      return absl::OkStatus();
    }
    // Never complete while the test looks: every recorded use stays for a refill to wait on.
    absl::StatusOr<bool> Query() const override { return false; }
    absl::Status Synchronize() const override { return absl::OkStatus(); }
    void* native() const override { return nullptr; }
    TracingDevice* device;
    int id;
  };
  static int Id(const backend::Stream& s) { return static_cast<const TracedStream&>(s).id; }
  void Log(Op op) {
    std::lock_guard<std::mutex> lock(mu_);
    ops_.push_back(op);
  }

  const backend::DeviceKind kind_;
  cpu::CpuDevice inner_;
  mutable std::mutex mu_;
  int next_stream_ = 0, next_event_ = 0;
  bool fail_next_wait_ = false;
  std::vector<Op> ops_;
};

absl::Status TracingDevice::TracedStream::Wait(const backend::Event& event) {
  {
    std::lock_guard<std::mutex> lock(device->mu_);
    if (device->fail_next_wait_) {
      device->fail_next_wait_ = false;
      return absl::InternalError("injected stream wait failure");
    }
  }
  device->Log({Op::kWait, id, static_cast<const TracedEvent&>(event).id, nullptr});
  return absl::OkStatus();
}

// A refill whose stream waits fail must not forget the kernels still reading the slot:
// the next refill waits for them.
TEST_F(ExpertRunnerTest, AFailedRefillKeepsTheSlotsReadersForTheNextRefill) {
  TracingDevice device;
  auto store = ExpertStore::Load(dir_, &device);
  ASSERT_TRUE(store.ok()) << store.status();
  auto cache = MakeCache(**store, 1);
  ASSERT_TRUE(cache != nullptr);
  auto reader = device.CreateStream();
  ASSERT_TRUE(reader.ok());
  {
    auto lease = cache->Acquire(0, 0);
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_TRUE(lease->RecordUse(**reader).ok());
  }
  // RecordUse was the last operation: its event is the reader's use.
  const auto recorded = device.ops();
  ASSERT_FALSE(recorded.empty());
  ASSERT_EQ(recorded.back().kind, TracingDevice::Op::kRecord);
  const int use_event = recorded.back().event;
  device.FailNextWait();
  auto failed = cache->Acquire(0, 1);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), ::testing::HasSubstr("injected"));
  const size_t before = device.ops().size();
  auto refilled = cache->Acquire(0, 2);
  ASSERT_TRUE(refilled.ok()) << refilled.status();
  bool waited = false;
  const auto ops = device.ops();
  for (size_t i = before; i < ops.size(); ++i) {
    waited |= ops[i].kind == TracingDevice::Op::kWait && ops[i].event == use_event;
  }
  EXPECT_TRUE(waited) << "the refill after a failed one did not wait for the slot's reader";
}

// With one slot per layer every expert of a call refills the slot the previous one was
// read from. On a GPU that is safe only if (1) each refill's copy stream waits for an
// event the reading stream recorded after the previous fill, and (2) the reading stream
// waits for the event recorded behind the copy before it records its own use.
TEST_F(ExpertRunnerTest, RefillWaitsForTheKernelsReadingTheSlotAndReadsWaitForTheCopy) {
  TracingDevice device;
  auto store = ExpertStore::Load(dir_, &device);
  ASSERT_TRUE(store.ok()) << store.status();
  auto cache = MakeCache(**store, 1);
  ASSERT_TRUE(cache != nullptr);
  ExpertRunner runner(cache.get());
  const Batch b = RandomBatch(16, hidden(), store_->num_experts(), 2, 21);
  const auto got = RunOrDie(runner, 0, b, hidden());
  EXPECT_TRUE(BitIdentical(got, PrePortPath(*store_, 0, b)));

  std::map<int, int> event_stream;      // event -> stream it was last recorded on
  std::map<const void*, size_t> filled;  // slot -> index of its last copy
  std::map<int, std::vector<std::pair<size_t, int>>> waits;  // stream -> (index, event)
  std::map<int, size_t> recorded_at;     // event -> index of its last record
  const std::vector<TracingDevice::Op> ops = device.ops();
  int refills = 0, checked_reads = 0;
  const void* slot = nullptr;
  int copy_stream = -1, ready_event = -1;
  size_t ready_at = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& op = ops[i];
    if (op.kind == TracingDevice::Op::kWait) waits[op.stream].push_back({i, op.event});
    if (op.kind == TracingDevice::Op::kRecord) {
      event_stream[op.event] = op.stream;
      recorded_at[op.event] = i;
      if (op.stream == copy_stream) {  // behind a slot's copy: its ready event
        ready_event = op.event;
        ready_at = i;
      } else if (slot != nullptr && ready_event >= 0) {  // a use of the slot
        // (2) the reading stream waited for the ready event since it was recorded.
        bool waited = false;
        for (const auto& [at, e] : waits[op.stream]) waited |= (e == ready_event && at > ready_at);
        EXPECT_TRUE(waited) << "use recorded at op " << i << " without waiting for the copy";
        ++checked_reads;
      }
    }
    if (op.kind != TracingDevice::Op::kCopy) continue;
    // The slot's copies are the ones whose destination is not one of the runner's
    // buffers: the runner copies index and gain arrays, the cache whole blobs. The cache
    // is the only one that records an event on the copying stream right after.
    const bool slot_copy = i + 1 < ops.size() && ops[i + 1].kind == TracingDevice::Op::kRecord &&
                           ops[i + 1].stream == op.stream;
    if (!slot_copy) continue;
    copy_stream = op.stream;
    slot = op.dst;
    auto previous = filled.find(op.dst);
    if (previous != filled.end()) {
      // (1) since the previous fill, this copy stream waited for a use recorded on another
      // stream after that fill.
      bool waited = false;
      for (const auto& [at, e] : waits[op.stream]) {
        waited |= at > previous->second && event_stream[e] != op.stream &&
                  recorded_at[e] > previous->second;
      }
      EXPECT_TRUE(waited) << "refill at op " << i << " did not wait for the slot's readers";
      ++refills;
    }
    filled[op.dst] = i;
  }
  std::set<int32_t> experts(b.ids.begin(), b.ids.end());
  EXPECT_EQ(refills, int(experts.size()) - 1);  // one slot: every expert after the first
  EXPECT_EQ(checked_reads, int(experts.size()));
}

// Off the CPU the link is real: a modelled one is refused, naming the device; the cache
// itself (one copy per blob, events) works as on the CPU.
TEST_F(ExpertRunnerTest, ModelledLinkIsRefusedOffTheCpu) {
  TracingDevice gpu(backend::DeviceKind::kCuda);
  const absl::Status refused = ModelledLinkDevice::Create(&gpu, LinkModel{10, 5}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("tracing device"), std::string::npos) << refused;
  auto store = ExpertStore::Load(dir_, &gpu);
  ASSERT_TRUE(store.ok()) << store.status();
  auto cache = MakeCache(**store, 2);
  ASSERT_TRUE(cache != nullptr);
  auto lease = cache->Acquire(1, 4);
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(std::memcmp(lease->data(), (*store)->Expert(1, 4), (*store)->blob_bytes()), 0);
  int copies = 0;
  for (const auto& op : gpu.ops()) copies += op.kind == TracingDevice::Op::kCopy;
  EXPECT_EQ(copies, 1);  // the whole blob at once
}

// The CUDA device, when there is one: skipped (with the reason) otherwise.
class CudaExpertRunnerTest : public ExpertRunnerTest {
 protected:
  void SetUp() override {
    ExpertRunnerTest::SetUp();
    auto device = backend::OpenDevice("cuda");
    if (!device.ok()) GTEST_SKIP() << "no CUDA device: " << device.status();
    device_ = *std::move(device);
    auto store = ExpertStore::Load(dir_, device_.get());
    ASSERT_TRUE(store.ok()) << store.status();
    cuda_store_ = *std::move(store);
  }
  void TearDown() override {
    cuda_store_.reset();
    device_.reset();
  }
  std::unique_ptr<backend::Device> device_;
  std::unique_ptr<ExpertStore> cuda_store_;
};

TEST_F(CudaExpertRunnerTest, MatchesTheCpuWithinTolerance) {
  auto cpu_cache = MakeCache(*store_, 2);
  auto cuda_cache = MakeCache(*cuda_store_, 2);
  ASSERT_TRUE(cuda_cache != nullptr);
  ExpertRunner cpu(cpu_cache.get()), cuda(cuda_cache.get(), false, /*workspace_tokens=*/4);
  for (int64_t n : {1, 3, 17}) {
    const Batch b = RandomBatch(n, hidden(), store_->num_experts(), 2, uint32_t(n));
    ExpectClose(RunOrDie(cuda, 1, b, hidden()), RunOrDie(cpu, 1, b, hidden()), 1e-4);
  }
}

TEST_F(CudaExpertRunnerTest, DeviceActivationsAreUsedInPlace) {
  auto cpu_cache = MakeCache(*store_, 2);
  auto cuda_cache = MakeCache(*cuda_store_, 2);
  ASSERT_TRUE(cuda_cache != nullptr);
  ExpertRunner cpu(cpu_cache.get()), cuda(cuda_cache.get());
  const Batch b = RandomBatch(5, hidden(), store_->num_experts(), 2, 11);
  const size_t bytes = b.x.size() * sizeof(float);
  auto x = backend::Upload(*device_, b.x.data(), bytes);
  ASSERT_TRUE(x.ok()) << x.status();
  auto out = device_->Allocate(bytes);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(cuda.Run(1, absl::MakeConstSpan((*x)->as<const float>(), b.x.size()), b.n, b.ids,
                       b.weights, absl::MakeSpan((*out)->as<float>(), b.x.size()), nullptr,
                       MemoryPlace::On(*device_))
                  .ok());
  std::vector<float> got(b.x.size());
  ASSERT_TRUE(backend::CopyToHostSync(*device_, got.data(), (*out)->data(), bytes).ok());
  ExpectClose(got, RunOrDie(cpu, 1, b, hidden()), 1e-4);
}

// One slot per layer and every expert used: each expert's refill of the slot must wait
// for the kernels still reading the previous one, or results come out mixed.
TEST_F(CudaExpertRunnerTest, EvictionWaitsForInFlightKernels) {
  auto cpu_cache = MakeCache(*store_, 8);
  auto cuda_cache = MakeCache(*cuda_store_, 1);
  ASSERT_TRUE(cuda_cache != nullptr);
  ExpertRunner cpu(cpu_cache.get()), cuda(cuda_cache.get(), false, /*workspace_tokens=*/2);
  for (int call = 0; call < 20; ++call) {
    const Batch b = RandomBatch(64, hidden(), store_->num_experts(), 2, uint32_t(1000 + call));
    ExpectClose(RunOrDie(cuda, call % 2, b, hidden()), RunOrDie(cpu, call % 2, b, hidden()), 1e-4);
  }
}

}  // namespace
}  // namespace moe::expert_worker
