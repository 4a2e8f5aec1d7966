#include "expert_worker/worker_service.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/prometheus_text.h"
#include "common/status.h"
#include "expert_worker/attach_arena_request.h"
#include "expert_worker/run_experts_request.h"

namespace moe::expert_worker {

WorkerService::WorkerService(SlotCache* cache, const WorkerServiceOptions& options)
    : cache_(cache),
      options_(options),
      device_(options.device),
      runner_(cache, /*load_whole_layer=*/false, options.workspace_tokens),
      prefetch_(cache) {
  owner_watch_ = std::thread([this] { WatchArenaOwner(); });
}

WorkerService::~WorkerService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_.notify_all();
  owner_watch_.join();
}

void WorkerService::WatchArenaOwner() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_.wait_for(lock, absl::ToChronoMilliseconds(options_.owner_check_interval),
                         [this] { return stopping_; })) {
    if (arena_ != nullptr && !arena_->OwnerAlive()) {
      // The coordinator is gone; our mapping alone would keep its memory (host pages or
      // an IPC-exported device allocation) alive.
      MOE_LOG(WARNING) << "coordinator pid " << arena_->owner_pid() << " exited; released its "
                       << (arena_->on_device() ? "device arena " : "arena ") << arena_->id()
                       << " (" << arena_->size() << " bytes)";
      ring_.reset();   // joins its thread (which never takes mu_)
      arena_.reset();  // calls in flight hold their own reference
      ++arenas_released_;
    }
  }
}

absl::Status WorkerService::AttachDeviceArena(const v1::AttachArenaRequest& request,
                                             const AttachArenaShape& shape) {
  const int64_t call_tokens = shape.call_tokens;
  if (device_ == nullptr || device_->kind() != backend::DeviceKind::kCuda) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this worker computes on ", device_ == nullptr ? "cpu" : device_->name(),
        ", not on a GPU, and cannot map a CUDA IPC arena (use shared host memory)"));
  }
  const auto& cuda = request.cuda_ipc();
  MOE_RETURN_IF_ERROR(CheckProcessOwner(cuda.exporter_pid(), options_.arena_policy));
  backend::DeviceIpcHandle handle;
  handle.ipc_mem_handle = cuda.ipc_mem_handle();
  handle.device = cuda.device();
  handle.pci_bus_id = cuda.pci_bus_id();
  handle.exporter_pid = cuda.exporter_pid();
  handle.size_bytes = request.size_bytes();
  std::shared_ptr<ActivationArena> device_arena;
  std::unique_ptr<RingServer> previous_ring;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The ring of the previous attach stops first: its calls name the old epoch.
    previous_ring = std::move(ring_);
    if (arena_ != nullptr && arena_->on_device()) {
      // An id names one exported allocation for good (128 random bits, checked in its
      // header when it was opened): the same id and size is the arena we hold (a handle
      // opens once per process).
      if (arena_->id() == request.arena_id() && arena_->size() == handle.size_bytes) {
        device_arena = arena_;
      } else {
        // Close our previous mapping before opening another (in-flight calls keep theirs).
        arena_.reset();
      }
    }
  }
  previous_ring.reset();  // joins its thread outside the lock
  if (device_arena == nullptr) {
    MOE_ASSIGN_OR_RETURN(device_arena,
                         backend::DeviceIpcArena::Open(*device_, handle, request.arena_id()));
  }
  // The ring beside it: its words in the coordinator's shared-memory ring_arena.
  std::unique_ptr<RingServer> ring;
  if (shape.ring && options_.serve_ring) {
    const auto& host = request.ring_arena();
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<SharedArena> ring_arena,
                         SharedArena::Attach(host.shared_memory().pid(), host.shared_memory().fd(),
                                             host.size_bytes(), host.arena_id(),
                                             options_.arena_policy));
    MOE_ASSIGN_OR_RETURN(ring, StartRing(shape, std::move(ring_arena), device_arena));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    previous_ring = std::move(ring_);
    ring_ = std::move(ring);
    arena_ = std::move(device_arena);
    arena_call_tokens_ = call_tokens;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RingServer>> WorkerService::StartRing(
    const AttachArenaShape& shape, std::shared_ptr<ActivationArena> host,
    std::shared_ptr<ActivationArena> device) {
  if (!shape.ring || !options_.serve_ring) return std::unique_ptr<RingServer>();
  const ExpertStore& store = cache_->store();
  RingLimits limits;
  limits.epoch = shape.ring_epoch;
  limits.num_layers = store.num_layers();
  limits.num_experts = store.num_experts();
  limits.hidden = store.layout().hidden;
  limits.max_tokens = shape.call_tokens;
  limits.arena_bytes = host->size();
  limits.device_arena_bytes = device != nullptr ? device->size() : 0;
  limits.ring_offset = shape.ring_offset;
  limits.ring_bytes = ring::RingBytes(shape.ring_slots);
  // The server holds the host arena alive, the handler the device arena.
  const ActivationArena* raw = host.get();
  return RingServer::Start(std::move(host), shape.ring_offset, shape.ring_slots, shape.ring_epoch,
                           options_.ring_wait,
                           [this, raw, device, limits](const ring::RingRequest& request) {
                             return ServeRingCall(*raw, device.get(), limits, request);
                           });
}

absl::StatusOr<int64_t> WorkerService::DoAttachArena(const v1::AttachArenaRequest& request) {
  // Everything the request says is checked before the kernel is asked anything.
  MOE_ASSIGN_OR_RETURN(const AttachArenaShape shape,
                       CheckAttachArenaRequest(request, {options_.arena_policy.max_bytes,
                                                         options_.max_call_tokens}));
  if (shape.cuda_ipc) {
    MOE_RETURN_IF_ERROR(AttachDeviceArena(request, shape));
    MOE_LOG(INFO) << "attached device arena " << request.arena_id() << " of pid "
                  << request.cuda_ipc().exporter_pid() << " (" << request.size_bytes()
                  << " bytes on " << device_->name() << ", CUDA IPC"
                  << (shape.ring && options_.serve_ring
                          ? absl::StrCat("; calls through its ring of ", shape.ring_slots,
                                         " slots in host arena ", request.ring_arena().arena_id())
                          : std::string("; calls by RPC"))
                  << ")";
    return shape.call_tokens;
  }
  const auto& shm = request.shared_memory();
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<SharedArena> arena,
                       SharedArena::Attach(shm.pid(), shm.fd(), request.size_bytes(),
                                           request.arena_id(), options_.arena_policy));
  std::shared_ptr<ActivationArena> shared = std::move(arena);
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<RingServer> ring, StartRing(shape, shared, nullptr));
  std::unique_ptr<RingServer> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    previous = std::move(ring_);
    ring_ = std::move(ring);
    arena_ = std::move(shared);
    arena_call_tokens_ = shape.call_tokens;
  }
  previous.reset();  // joins the old ring's thread outside the lock
  MOE_LOG(INFO) << "attached arena " << request.arena_id() << " of pid " << shm.pid() << " ("
                << request.size_bytes() << " bytes"
                << (shape.ring && options_.serve_ring
                        ? absl::StrCat(", calls through its ring of ", shape.ring_slots, " slots")
                        : std::string(", calls by RPC"))
                << ")";
  return shape.call_tokens;
}

grpc::Status WorkerService::AttachArena(grpc::ServerContext*, const v1::AttachArenaRequest* request,
                                        v1::AttachArenaResponse* response) {
  const absl::StatusOr<int64_t> call_tokens = DoAttachArena(*request);
  if (!call_tokens.ok()) return ToGrpcStatus(call_tokens.status());
  const ExpertStore& store = cache_->store();
  response->set_num_layers(store.num_layers());
  response->set_num_experts(store.num_experts());
  response->set_hidden_size(store.layout().hidden);
  response->set_max_tokens_per_call(static_cast<uint32_t>(*call_tokens));
  {
    std::lock_guard<std::mutex> lock(mu_);
    response->set_ring_served(ring_ != nullptr);
  }
  response->set_worker_pid(static_cast<uint32_t>(::getpid()));
  return grpc::Status::OK;
}

absl::Status WorkerService::DoRunExperts(const v1::RunExpertsRequest& request,
                                         v1::RunExpertsResponse* response) {
  const ExpertStore& store = cache_->store();
  const bool slices = request.has_input_slice() || request.has_output_slice();
  RunExpertsLimits limits;
  limits.num_layers = store.num_layers();
  limits.num_experts = store.num_experts();
  limits.hidden = store.layout().hidden;
  std::shared_ptr<ActivationArena> arena;
  {
    std::lock_guard<std::mutex> lock(mu_);
    arena = arena_;  // in-flight calls keep the mapping alive through a re-attach
    // Inline tensors are bounded by the worker's own limit; slices by the attached slots.
    limits.max_tokens = slices && arena != nullptr ? arena_call_tokens_ : options_.max_call_tokens;
  }
  if (arena != nullptr) {
    limits.arena_bytes = arena->size();
    limits.arena_id = arena->id();
  }
  MOE_ASSIGN_OR_RETURN(const RunExpertsShape shape, CheckRunExpertsRequest(request, limits));
  const bool on_device = slices && arena->on_device();
  if (on_device && (!request.has_input_slice() || !request.has_output_slice())) {
    // Inline bytes are host memory; the device arena's kernels take device memory only.
    return absl::InvalidArgumentError(
        "RunExperts: on a device arena both input and output must be slices");
  }
  const uint64_t floats = shape.tensor_bytes / sizeof(float);
  const std::vector<int32_t> ids(request.expert_ids().begin(), request.expert_ids().end());
  const std::vector<float> weights(request.weights().begin(), request.weights().end());
  ExpertCallStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  absl::Span<const float> x;
  std::vector<float> inline_x;
  if (request.has_input_slice()) {
    MOE_ASSIGN_OR_RETURN(void* in, arena->At(request.input_slice().offset(), shape.tensor_bytes));
    x = absl::Span<const float>(static_cast<const float*>(in), floats);
  } else {
    inline_x.resize(floats);
    std::memcpy(inline_x.data(), request.input_inline().data(), shape.tensor_bytes);
    x = inline_x;
  }
  absl::Span<float> out;
  std::vector<float> inline_out;
  if (request.has_output_slice()) {
    MOE_ASSIGN_OR_RETURN(void* o, arena->At(request.output_slice().offset(), shape.tensor_bytes));
    out = absl::Span<float>(static_cast<float*>(o), floats);
  } else {
    inline_out.resize(floats);
    out = absl::MakeSpan(inline_out);
  }
  // On a device arena x and out stay in the coordinator's device memory. Run returns once
  // out is written (on the device too), so the reply orders the coordinator's read after
  // our writes.
  if (on_device) MOE_RETURN_IF_ERROR(device_->BindThread());
  MOE_RETURN_IF_ERROR(runner_.Run(shape.layer, x, shape.tokens, ids, weights, out, &stats,
                                  on_device ? MemoryPlace::On(*device_) : MemoryPlace::Host()));
  if (!request.has_output_slice()) {
    response->set_output_inline(inline_out.data(), inline_out.size() * sizeof(float));
  }
  return FinishRunExperts(t0, stats, response);
}

void WorkerService::CountCall(std::chrono::steady_clock::time_point start) {
  const auto elapsed = std::chrono::steady_clock::now() - start;
  run_experts_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(),
                            std::memory_order_relaxed);
  run_experts_latency_.Observe(std::chrono::duration<double>(elapsed).count());
  calls_.fetch_add(1, std::memory_order_relaxed);
}

absl::Status WorkerService::DoServeRingCall(const ActivationArena& host,
                                            const ActivationArena* device,
                                            const RingLimits& limits,
                                            const ring::RingRequest& request,
                                            ExpertCallStats* stats) {
  MOE_ASSIGN_OR_RETURN(const RingShape shape, CheckRingRequest(request, limits));
  // The routes are copied out of the shared pages before they are checked.
  std::vector<uint32_t> raw_ids(shape.routes);
  std::vector<float> weights(shape.routes);
  MOE_ASSIGN_OR_RETURN(const void* ids_at, host.At(request.ids_offset, shape.routes * 4));
  MOE_ASSIGN_OR_RETURN(const void* weights_at, host.At(request.weights_offset, shape.routes * 4));
  std::memcpy(raw_ids.data(), ids_at, shape.routes * 4);
  std::memcpy(weights.data(), weights_at, shape.routes * 4);
  MOE_RETURN_IF_ERROR(CheckRoutes(raw_ids, weights, limits.num_experts));
  const std::vector<int32_t> ids(raw_ids.begin(), raw_ids.end());
  const uint64_t floats = shape.tensor_bytes / sizeof(float);
  // CheckRingRequest bounded x and out by the arena they lie in (device_arena_bytes is 0,
  // and on_device refused, when no device arena is attached).
  const ActivationArena& tensors = shape.on_device ? *device : host;
  MOE_ASSIGN_OR_RETURN(void* x, tensors.At(request.x_offset, shape.tensor_bytes));
  MOE_ASSIGN_OR_RETURN(void* out, tensors.At(request.out_offset, shape.tensor_bytes));
  // On the device arena: the coordinator synchronised the stream that wrote x before it
  // rang the doorbell, and Run returns only once out is written on our device (its
  // stream synchronised), before Complete marks the entry kDone. This thread is the
  // ring's own, so it binds the device first.
  if (shape.on_device) MOE_RETURN_IF_ERROR(device_->BindThread());
  return runner_.Run(shape.layer, absl::Span<const float>(static_cast<const float*>(x), floats),
                     shape.tokens, ids, weights, absl::Span<float>(static_cast<float*>(out), floats),
                     stats, shape.on_device ? MemoryPlace::On(*device_) : MemoryPlace::Host());
}

ring::RingReply WorkerService::ServeRingCall(const ActivationArena& host,
                                             const ActivationArena* device,
                                             const RingLimits& limits,
                                             const ring::RingRequest& request) {
  const auto t0 = std::chrono::steady_clock::now();
  ExpertCallStats stats;
  const absl::Status status = DoServeRingCall(host, device, limits, request, &stats);
  ring::RingReply reply = ring::ReplyFor(status);
  if (!status.ok()) return reply;
  CountCall(t0);
  ring_calls_.fetch_add(1, std::memory_order_relaxed);
  reply.hits = static_cast<uint32_t>(stats.hits);
  reply.misses = static_cast<uint32_t>(stats.misses);
  reply.prefetch_hits = static_cast<uint32_t>(stats.prefetch_hits);
  reply.load_wait_s = stats.stall_s;
  reply.compute_s = stats.compute_s;
  return reply;
}

absl::Status WorkerService::FinishRunExperts(std::chrono::steady_clock::time_point start,
                                             const ExpertCallStats& stats,
                                             v1::RunExpertsResponse* response) {
  CountCall(start);
  response->set_cache_hits(static_cast<uint32_t>(stats.hits));
  response->set_cache_misses(static_cast<uint32_t>(stats.misses));
  response->set_load_wait_s(stats.stall_s);
  response->set_compute_s(stats.compute_s);
  response->set_prefetch_hits(static_cast<uint32_t>(stats.prefetch_hits));
  return absl::OkStatus();
}

grpc::Status WorkerService::RunExperts(grpc::ServerContext*, const v1::RunExpertsRequest* request,
                                       v1::RunExpertsResponse* response) {
  return ToGrpcStatus(DoRunExperts(*request, response));
}

grpc::Status WorkerService::Prefetch(grpc::ServerContext*, const v1::PrefetchRequest* request,
                                     v1::PrefetchResponse*) {
  const ExpertStore& store = cache_->store();
  if (request->layer() >= uint32_t(store.num_layers())) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("Prefetch: layer ", request->layer(), " out of range [0, ", store.num_layers(), ")")));
  }
  for (uint32_t id : request->expert_ids()) {
    if (id >= uint32_t(store.num_experts())) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("Prefetch: expert id ", id, " out of range [0, ", store.num_experts(), ")")));
    }
  }
  prefetch_requests_.fetch_add(1, std::memory_order_relaxed);
  prefetch_.Enqueue(request->layer(),
                    std::vector<int>(request->expert_ids().begin(), request->expert_ids().end()));
  return grpc::Status::OK;
}

grpc::Status WorkerService::SetCachePolicy(grpc::ServerContext*,
                                           const v1::SetCachePolicyRequest* request,
                                           v1::SetCachePolicyResponse* response) {
  // Check everything before changing anything: a bad request changes nothing.
  std::unique_ptr<CachePolicy> policy;
  if (!request->policy().empty()) {
    auto made = MakeCachePolicy(request->policy());
    if (!made.ok()) return ToGrpcStatus(made.status());
    policy = *std::move(made);
  }
  const int experts = cache_->store().num_experts();
  if (request->cache_per_layer() > uint32_t(experts)) {
    return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
        "SetCachePolicy: cache_per_layer ", request->cache_per_layer(), " is above the ", experts,
        " experts of a layer")));
  }
  if (policy != nullptr) {
    cache_->SetPolicy(std::move(policy));
    MOE_LOG(INFO) << "cache policy is now " << request->policy();
  }
  if (request->cache_per_layer() != 0) {
    const absl::Status resized = cache_->Resize(static_cast<int>(request->cache_per_layer()));
    if (!resized.ok()) return ToGrpcStatus(resized);
    MOE_LOG(INFO) << "cache is now " << request->cache_per_layer() << " experts per layer";
  }
  const CacheStats stats = cache_->Stats();
  response->set_policy(stats.policy);
  response->set_cache_per_layer(stats.slots_per_layer);
  return grpc::Status::OK;
}

namespace {

void FillCounters(const CacheCounters& c, v1::CacheCounters* out) {
  out->set_hits(c.hits);
  out->set_misses(c.misses);
  out->set_prefetch_loads(c.prefetch_loads);
  out->set_prefetch_hits(c.prefetch_hits);
  out->set_bytes_copied(c.bytes_copied);
  out->set_stall_s(c.stall_s);
  out->set_hit_ratio(c.hit_ratio());
  out->set_prefetch_recall(c.prefetch_recall());
  out->set_prefetch_precision(c.prefetch_precision());
}

}  // namespace

v1::WorkerStats WorkerService::Stats() const {
  const CacheStats stats = cache_->Stats();
  v1::WorkerStats response;
  response.set_policy(stats.policy);
  response.set_cache_per_layer(stats.slots_per_layer);
  response.set_hits(stats.total.hits);
  response.set_misses(stats.total.misses);
  response.set_bytes_copied(stats.total.bytes_copied);
  response.set_run_experts_calls(calls_.load());
  response.set_ring_calls(ring_calls_.load());
  FillCounters(stats.total, response.mutable_total());
  response.set_policy_changes(stats.policy_changes);
  response.set_resizes(stats.resizes);
  response.set_run_experts_s(run_experts_ns_.load() * 1e-9);
  response.set_prefetch_requests(prefetch_requests_.load());
  response.set_uptime_s(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (arena_ != nullptr) {
      response.set_arena_owner_pid(arena_->owner_pid());
      response.set_arena_bytes(arena_->size());
      response.set_arena_on_device(arena_->on_device());
    }
    response.set_arenas_released(arenas_released_);
    response.set_ring_served(ring_ != nullptr);
  }
  for (size_t l = 0; l < stats.layers.size(); ++l) {
    auto* layer = response.add_layers();
    layer->set_layer(static_cast<uint32_t>(l));
    layer->set_hits(stats.layers[l].hits);
    layer->set_misses(stats.layers[l].misses);
    layer->set_bytes_copied(stats.layers[l].bytes_copied);
    FillCounters(stats.layers[l], layer->mutable_counters());
  }
  return response;
}

grpc::Status WorkerService::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                     v1::WorkerStats* response) {
  *response = Stats();
  return grpc::Status::OK;
}

std::string WorkerService::RenderMetrics() const {
  const v1::WorkerStats stats = Stats();
  PrometheusText out;
  auto per_layer = [&](const v1::CacheCounters& c, const std::string& layer) {
    const PrometheusText::Labels l = {{"layer", layer}};
    out.Counter("moe_worker_expert_hits_total", "Expert uses that found the expert resident",
                c.hits(), l);
    out.Counter("moe_worker_expert_misses_total", "Expert uses that loaded the expert on demand",
                c.misses(), l);
    out.Counter("moe_worker_prefetch_loads_total", "Experts loaded on a prefetch hint",
                c.prefetch_loads(), l);
    out.Counter("moe_worker_prefetch_hits_total", "First uses of experts a prefetch loaded",
                c.prefetch_hits(), l);
    out.Counter("moe_worker_bytes_copied_total", "Host-to-cache bytes copied", c.bytes_copied(), l);
    out.Counter("moe_worker_copy_stall_seconds_total", "Seconds expert uses waited for copies",
                c.stall_s(), l);
    out.Gauge("moe_worker_hit_ratio", "hits / (hits + misses) since start", c.hit_ratio(), l);
    out.Gauge("moe_worker_prefetch_recall", "Used experts a prefetch had loaded / used experts",
              c.prefetch_recall(), l);
    out.Gauge("moe_worker_prefetch_precision", "Prefetched experts then used / prefetched experts",
              c.prefetch_precision(), l);
  };
  // Per layer only: a layer="all" series beside them would count twice under sum().
  for (const auto& layer : stats.layers()) per_layer(layer.counters(), std::to_string(layer.layer()));
  out.Gauge("moe_worker_cache_slots_per_layer", "Experts the cache holds per layer",
            stats.cache_per_layer());
  out.Gauge("moe_worker_cache_policy_info", "The cache policy in use (label)", 1,
            {{"policy", stats.policy()}});
  out.Counter("moe_worker_policy_changes_total", "SetCachePolicy policy swaps", stats.policy_changes());
  out.Counter("moe_worker_cache_resizes_total", "SetCachePolicy size changes", stats.resizes());
  out.Counter("moe_worker_run_experts_calls_total", "RunExperts calls served", stats.run_experts_calls());
  out.Counter("moe_worker_ring_calls_total", "Of those, calls taken from the activation ring",
              stats.ring_calls());
  out.Counter("moe_worker_run_experts_seconds_total", "Seconds inside RunExperts (copies and compute)",
              stats.run_experts_s());
  out.Histogram("moe_worker_run_experts_latency_seconds",
                "Seconds of each RunExperts call (copies and compute)", run_experts_latency_.Get());
  out.Counter("moe_worker_prefetch_requests_total", "Prefetch calls received", stats.prefetch_requests());
  out.Gauge("moe_worker_uptime_seconds", "Seconds since the worker started", stats.uptime_s());
  return out.text();
}

}  // namespace moe::expert_worker
