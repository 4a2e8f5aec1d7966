#include "expert_worker/expert_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::expert_worker {

using backend::DeviceBuffer;
using backend::WeightView;

struct ExpertRunner::Workspace {
  std::unique_ptr<backend::Stream> stream;
  // Device scratch of one expert pass: rows [W, H], gate and up [W, I].
  std::unique_ptr<DeviceBuffer> rows, gate, up;
  // Each (token, expert) entry's expert output [E, H], in the grouped order.
  std::unique_ptr<DeviceBuffer> contrib;
  // The call's (token, gain) entries grouped by expert: device [E] each, and their
  // pinned host staging [E int32 | E float].
  std::unique_ptr<DeviceBuffer> index, gain, staging;
  // x and out [n, H] on the device, when the caller's are host memory of a GPU call.
  std::unique_ptr<DeviceBuffer> x, out;
};

namespace {

// Makes `buffer` hold at least `bytes` (device memory, or pinned host memory).
absl::Status Reserve(backend::Device& device, std::unique_ptr<DeviceBuffer>& buffer, size_t bytes,
                     bool pinned_host) {
  if (buffer != nullptr && buffer->size() >= bytes) return absl::OkStatus();
  buffer.reset();  // idle: the previous call synchronised its stream
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> fresh =
      pinned_host ? device.AllocatePinnedHost(bytes) : device.Allocate(bytes);
  if (!fresh.ok()) {
    return absl::Status(fresh.status().code(),
                        absl::StrCat("expert workspace of ", bytes, " bytes on ", device.name(),
                                     ": ", fresh.status().message()));
  }
  buffer = *std::move(fresh);
  return absl::OkStatus();
}

// The expert's three matrices as the kernels take them.
struct ExpertWeights {
  WeightView w1, w3, w2;
};

ExpertWeights WeightsOf(const float* blob, const ExpertLayout& layout) {
  const int64_t h = layout.hidden, i = layout.intermediate;
  if (layout.packed) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(blob);
    const quant::ExpertBlobLayout& p = *layout.packed;
    return {WeightView::FromLayout(p.w1, bytes + p.w1_offset),
            WeightView::FromLayout(p.w3, bytes + p.w3_offset),
            WeightView::FromLayout(p.w2, bytes + p.w2_offset)};
  }
  return {WeightView::F32(blob + layout.w1_offset(), i, h),
          WeightView::F32(blob + layout.w3_offset(), i, h),
          WeightView::F32(blob + layout.w2_offset(), h, i)};
}

}  // namespace

ExpertRunner::ExpertRunner(SlotCache* cache, bool load_whole_layer, int64_t workspace_tokens)
    : cache_(cache), load_whole_layer_(load_whole_layer), workspace_tokens_(workspace_tokens) {
  if (workspace_tokens_ <= 0) {
    workspace_tokens_ =
        cache->device().kind() == backend::DeviceKind::kCpu ? 0 : kDefaultWorkspaceTokens;
  }
  absl::StatusOr<std::unique_ptr<backend::Kernels>> kernels =
      backend::CreateKernels(cache->device());
  if (kernels.ok()) {
    kernels_ = *std::move(kernels);
  } else {
    kernels_status_ = absl::Status(kernels.status().code(),
                                   absl::StrCat("expert kernels on ", cache->device().name(), ": ",
                                                kernels.status().message()));
  }
}

ExpertRunner::~ExpertRunner() = default;

uint64_t ExpertRunner::WorkspaceBytes(const ExpertLayout& layout, int64_t tokens) {
  return uint64_t(tokens) * uint64_t(layout.hidden + 2 * layout.intermediate) * sizeof(float);
}

absl::StatusOr<std::unique_ptr<ExpertRunner::Workspace>> ExpertRunner::TakeWorkspace() const {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!pool_.empty()) {
      std::unique_ptr<Workspace> ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  auto ws = std::make_unique<Workspace>();
  MOE_ASSIGN_OR_RETURN(ws->stream, cache_->device().CreateStream());
  return ws;
}

void ExpertRunner::ReturnWorkspace(std::unique_ptr<Workspace> workspace) const {
  std::lock_guard<std::mutex> lock(pool_mu_);
  pool_.push_back(std::move(workspace));
}

absl::Status ExpertRunner::Run(int layer, absl::Span<const float> x, int64_t n,
                               absl::Span<const int32_t> ids, absl::Span<const float> weights,
                               absl::Span<float> out, ExpertCallStats* stats,
                               MemoryPlace place) const {
  using Clock = std::chrono::steady_clock;
  MOE_RETURN_IF_ERROR(kernels_status_);
  const ExpertStore& store = cache_->store();
  const int64_t h = store.layout().hidden, inter = store.layout().intermediate;
  if (layer < 0 || layer >= store.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunExperts: layer ", layer, " out of range [0, ", store.num_layers(), ")"));
  }
  if (n <= 0 || ids.empty() || ids.size() % n != 0 || ids.size() != weights.size() ||
      x.size() != size_t(n * h) || out.size() != size_t(n * h)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunExperts: inconsistent sizes (tokens=", n, ", x=", x.size(), ", ids=", ids.size(),
        ", weights=", weights.size(), ", out=", out.size(), ", hidden=", h, ")"));
  }
  const int64_t k = static_cast<int64_t>(ids.size()) / n;
  for (int32_t id : ids) {
    if (id < 0 || id >= store.num_experts()) {
      return absl::InvalidArgumentError(absl::StrCat("RunExperts: expert id ", id,
                                                     " out of range [0, ", store.num_experts(), ")"));
    }
  }
  backend::Device& device = cache_->device();
  MOE_RETURN_IF_ERROR(device.BindThread());

  // Group tokens by expert, experts by ascending id: each expert is leased once per
  // call, and prefill becomes one matrix product per expert. A token's weighted sum is
  // added up in the order of its expert ids whatever else is in the call (batch
  // invariance; first-needed order would let batch mates reorder it when k > 2).
  // Entries [begin[e], begin[e + 1]) of tokens/gains are order[e]'s, tokens ascending.
  std::vector<int32_t> order(ids.begin(), ids.end());
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  if (load_whole_layer_) {
    for (int32_t e = 0; e < store.num_experts(); ++e) {
      if (std::find(order.begin(), order.end(), e) == order.end()) order.push_back(e);
    }
  }
  const size_t entries = ids.size();
  std::vector<int32_t> tokens;
  std::vector<float> gains;
  std::vector<size_t> begin;
  tokens.reserve(entries);
  gains.reserve(entries);
  int64_t widest = 0;  // most tokens of one expert
  for (int32_t expert : order) {
    begin.push_back(tokens.size());
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        if (ids[t * k + j] == expert) {
          tokens.push_back(static_cast<int32_t>(t));
          gains.push_back(weights[t * k + j]);
        }
      }
    }
    widest = std::max<int64_t>(widest, int64_t(tokens.size() - begin.back()));
  }
  begin.push_back(tokens.size());
  // Experts are computed resident ones first: a missing expert's load then cannot evict
  // one this call still needs (in id order, with few slots, a batch needing most of the
  // layer would miss on every expert). Within each group, fewest tokens first: the
  // experts used last are the ones a recency policy keeps for the next call, and the
  // batch's most used are the likeliest to be needed again. Each entry's output goes to
  // its own row of contrib and the sums are added in id order at the end, so the order
  // of computation never changes a bit of the result.
  std::vector<size_t> visit(order.size());
  for (size_t e = 0; e < visit.size(); ++e) visit[e] = e;
  const std::vector<int> residents = cache_->Residents(layer);
  auto resident = [&](size_t e) {
    return std::binary_search(residents.begin(), residents.end(), order[e]);
  };
  std::stable_sort(visit.begin(), visit.end(), [&](size_t a, size_t b) {
    if (resident(a) != resident(b)) return resident(a);
    return begin[a + 1] - begin[a] < begin[b + 1] - begin[b];
  });
  const int64_t pass = workspace_tokens_ > 0 ? std::min(workspace_tokens_, widest) : widest;

  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Workspace> ws, TakeWorkspace());
  backend::Stream& stream = *ws->stream;
  // On every return: nothing of this call may still run when its workspace is reused.
  struct Finish {
    const ExpertRunner* runner;
    std::unique_ptr<Workspace>& ws;
    ~Finish() {
      const absl::Status synced = ws->stream->Synchronize();
      if (synced.ok()) {
        runner->ReturnWorkspace(std::move(ws));
      } else {
        MOE_LOG(ERROR) << "expert runner: dropping a workspace whose stream failed: " << synced;
      }
    }
  } finish{this, ws};

  if (!place.is_host() && !place.ComputableOn(device)) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: activations in ", place.name(),
                                                   ", but the experts compute on ", device.name()));
  }
  // Host memory of a GPU call (inline tensors, the shared arena) is staged through it.
  const bool in_place = place.ComputableOn(device);
  const size_t act_bytes = size_t(n * h) * sizeof(float);
  const size_t f = sizeof(float);
  MOE_RETURN_IF_ERROR(Reserve(device, ws->rows, size_t(pass * h) * f, false));
  MOE_RETURN_IF_ERROR(Reserve(device, ws->contrib, std::max<size_t>(entries, 1) * h * f, false));
  MOE_RETURN_IF_ERROR(Reserve(device, ws->gate, size_t(pass * inter) * f, false));
  MOE_RETURN_IF_ERROR(Reserve(device, ws->up, size_t(pass * inter) * f, false));
  MOE_RETURN_IF_ERROR(Reserve(device, ws->index, entries * sizeof(int32_t), false));
  MOE_RETURN_IF_ERROR(Reserve(device, ws->gain, entries * f, false));
  MOE_RETURN_IF_ERROR(Reserve(device, ws->staging, entries * (sizeof(int32_t) + f), true));
  if (!in_place) {
    MOE_RETURN_IF_ERROR(Reserve(device, ws->x, act_bytes, false));
    MOE_RETURN_IF_ERROR(Reserve(device, ws->out, act_bytes, false));
  }
  const float* x_dev = in_place ? x.data() : ws->x->as<const float>();
  float* out_dev = in_place ? out.data() : ws->out->as<float>();

  // Indices and gains reach the device through pinned staging, one copy each per call
  // (the staging is not rewritten before the call's end, so the copies may lag).
  auto* stage_index = ws->staging->as<int32_t>();
  auto* stage_gain = reinterpret_cast<float*>(stage_index + entries);
  std::copy(tokens.begin(), tokens.end(), stage_index);
  std::copy(gains.begin(), gains.end(), stage_gain);
  MOE_RETURN_IF_ERROR(device.CopyToDevice(ws->index->data(), stage_index,
                                          entries * sizeof(int32_t), stream));
  MOE_RETURN_IF_ERROR(device.CopyToDevice(ws->gain->data(), stage_gain, entries * f, stream));
  if (!in_place) MOE_RETURN_IF_ERROR(device.CopyToDevice(ws->x->data(), x.data(), act_bytes, stream));
  MOE_RETURN_IF_ERROR(device.Memset(out_dev, 0, act_bytes, stream));
  const auto* index = ws->index->as<const int32_t>();
  const auto* gain = ws->gain->as<const float>();

  ExpertCallStats local;
  local.calls = 1;
  for (const size_t e : visit) {
    const int64_t m = int64_t(begin[e + 1] - begin[e]);
    const auto t0 = Clock::now();
    MOE_ASSIGN_OR_RETURN(SlotCache::Lease lease, cache_->Acquire(layer, order[e]));
    const auto t1 = Clock::now();
    local.stall_s += std::chrono::duration<double>(t1 - t0).count();
    ++(lease.hit() ? local.hits : local.misses);
    if (m == 0) continue;  // loaded for the baseline's sake only
    local.prefetch_hits += lease.prefetched();

    // Queues the expert's kernels; on failure the caller synchronises before the lease
    // ends, since some of them may already read the slot.
    auto compute = [&]() -> absl::Status {
      MOE_RETURN_IF_ERROR(stream.Wait(lease.ready()));
      const ExpertWeights w = WeightsOf(lease.data(), store.layout());
      float* rows = ws->rows->as<float>();
      float* gate = ws->gate->as<float>();
      float* up = ws->up->as<float>();
      for (int64_t c0 = 0; c0 < m; c0 += pass) {
        const int64_t c = std::min(pass, m - c0);
        const int32_t* idx = index + begin[e] + c0;
        MOE_RETURN_IF_ERROR(kernels_->GatherRows(x_dev, idx, c, h, rows, stream));
        MOE_RETURN_IF_ERROR(kernels_->MatMul(w.w1, rows, gate, c, false, stream));
        MOE_RETURN_IF_ERROR(kernels_->MatMul(w.w3, rows, up, c, false, stream));
        MOE_RETURN_IF_ERROR(kernels_->SiluMul(gate, up, c * inter, stream));
        float* result = ws->contrib->as<float>() + (begin[e] + c0) * h;
        MOE_RETURN_IF_ERROR(kernels_->MatMul(w.w2, gate, result, c, false, stream));
      }
      return lease.RecordUse(stream);
    };
    const absl::Status computed = compute();
    if (!computed.ok()) {
      const absl::Status synced = stream.Synchronize();
      if (!synced.ok()) MOE_LOG(ERROR) << "expert runner: " << synced;
      return computed;
    }
    local.compute_s += std::chrono::duration<double>(Clock::now() - t1).count();
  }
  const auto t_sum = Clock::now();
  for (size_t e = 0; e < order.size(); ++e) {  // ascending ids: the batch-invariant order
    const int64_t m = int64_t(begin[e + 1] - begin[e]);
    if (m == 0) continue;
    MOE_RETURN_IF_ERROR(kernels_->ScatterAddRows(ws->contrib->as<float>() + begin[e] * h,
                                                 index + begin[e], gain + begin[e], m, h, out_dev,
                                                 stream));
  }
  local.compute_s += std::chrono::duration<double>(Clock::now() - t_sum).count();
  const auto t_sync = Clock::now();
  if (!in_place) MOE_RETURN_IF_ERROR(device.CopyToHost(out.data(), out_dev, act_bytes, stream));
  MOE_RETURN_IF_ERROR(stream.Synchronize());
  local.compute_s += std::chrono::duration<double>(Clock::now() - t_sync).count();
  if (stats != nullptr) *stats += local;
  return absl::OkStatus();
}

class InProcessBackend::Batch : public ActivationBatch {
 public:
  Batch(InProcessBackend* lender, std::unique_ptr<backend::DeviceBuffer> buffer, int64_t rows,
        int64_t hidden)
      : ActivationBatch(lender, MemoryPlace::On(lender->device()), buffer->as<float>(),
                        buffer->as<float>() + rows * hidden, rows, hidden),
        lender_(lender),
        buffer_(std::move(buffer)) {}
  ~Batch() override { lender_->GiveBack(std::move(buffer_)); }

 private:
  InProcessBackend* lender_;
  std::unique_ptr<backend::DeviceBuffer> buffer_;
};

InProcessBackend::~InProcessBackend() = default;

absl::StatusOr<std::unique_ptr<ActivationBatch>> InProcessBackend::Lend(int64_t rows) {
  const int64_t h = runner_.cache().store().layout().hidden;
  MOE_ASSIGN_OR_RETURN(const uint64_t bytes, ActivationBytes(rows, h));
  std::unique_ptr<DeviceBuffer> buffer;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if ((*it)->size() >= 2 * bytes) {
        buffer = std::move(*it);
        idle_.erase(it);
        break;
      }
    }
  }
  if (buffer == nullptr) {
    absl::StatusOr<std::unique_ptr<DeviceBuffer>> fresh = device().Allocate(2 * bytes);
    if (!fresh.ok()) {
      return absl::Status(fresh.status().code(),
                          absl::StrCat("an activation batch of ", rows, " rows (", 2 * bytes,
                                       " bytes) on ", device().name(), ": ",
                                       fresh.status().message()));
    }
    buffer = *std::move(fresh);
  }
  return std::unique_ptr<ActivationBatch>(new Batch(this, std::move(buffer), rows, h));
}

void InProcessBackend::GiveBack(std::unique_ptr<DeviceBuffer> buffer) {
  std::lock_guard<std::mutex> lock(pool_mu_);
  if (idle_.size() < kIdleBuffers) idle_.push_back(std::move(buffer));
}

absl::Status InProcessBackend::RunExperts(int layer, ActivationBatch& batch,
                                          absl::Span<const int32_t> ids,
                                          absl::Span<const float> weights, ExpertCallStats* stats) {
  if (batch.lender() != this) {
    return absl::InvalidArgumentError("RunExperts: the activation batch was lent by another backend");
  }
  const absl::Span<float> x = batch.x();
  return runner_.Run(layer, x, batch.rows(), ids, weights, batch.out(), stats, batch.place());
}

}  // namespace moe::expert_worker
