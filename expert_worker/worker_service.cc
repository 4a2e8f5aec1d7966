#include "expert_worker/worker_service.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/status.h"
#include "expert_worker/run_experts_request.h"

namespace moe::expert_worker {

WorkerService::WorkerService(SlotCache* cache, absl::Duration owner_check_interval)
    : cache_(cache), runner_(cache), prefetch_(cache), owner_check_interval_(owner_check_interval) {
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
  while (!stop_.wait_for(lock, absl::ToChronoMilliseconds(owner_check_interval_),
                         [this] { return stopping_; })) {
    if (arena_ != nullptr && !arena_->OwnerAlive()) {
      // The coordinator is gone; our mapping alone would keep its memory alive.
      MOE_LOG(WARNING) << "coordinator pid " << arena_->owner_pid() << " exited; released its arena "
                       << arena_->id() << " (" << arena_->size() << " bytes)";
      arena_.reset();  // calls in flight hold their own reference
      ++arenas_released_;
    }
  }
}

grpc::Status WorkerService::AttachArena(grpc::ServerContext*, const v1::AttachArenaRequest* request,
                                        v1::AttachArenaResponse* response) {
  if (request->handle_case() == v1::AttachArenaRequest::kCudaIpc) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "this worker runs the CPU backend and cannot map a CUDA IPC arena"));
  }
  if (request->handle_case() != v1::AttachArenaRequest::kSharedMemory) {
    return ToGrpcStatus(absl::InvalidArgumentError("AttachArena: no arena handle"));
  }
  const auto& shm = request->shared_memory();
  auto arena = SharedArena::Attach(shm.pid(), shm.fd(), request->size_bytes(), request->arena_id());
  if (!arena.ok()) return ToGrpcStatus(arena.status());
  {
    std::lock_guard<std::mutex> lock(mu_);
    arena_ = std::shared_ptr<SharedArena>(std::move(*arena));
  }
  MOE_LOG(INFO) << "attached arena " << request->arena_id() << " of pid " << shm.pid() << " ("
                << request->size_bytes() << " bytes)";
  const ExpertStore& store = cache_->store();
  response->set_num_layers(store.num_layers());
  response->set_num_experts(store.num_experts());
  response->set_hidden_size(store.layout().hidden);
  return grpc::Status::OK;
}

absl::Status WorkerService::DoRunExperts(const v1::RunExpertsRequest& request,
                                         v1::RunExpertsResponse* response) {
  const ExpertStore& store = cache_->store();
  std::shared_ptr<SharedArena> arena;
  {
    std::lock_guard<std::mutex> lock(mu_);
    arena = arena_;  // in-flight calls keep the mapping alive through a re-attach
  }
  RunExpertsLimits limits;
  limits.num_layers = store.num_layers();
  limits.num_experts = store.num_experts();
  limits.hidden = store.layout().hidden;
  if (arena != nullptr) {
    limits.arena_bytes = arena->size();
    limits.arena_id = arena->id();
  }
  MOE_ASSIGN_OR_RETURN(const RunExpertsShape shape, CheckRunExpertsRequest(request, limits));
  const int64_t n = shape.tokens;
  const uint64_t floats = shape.tensor_bytes / sizeof(float);
  absl::Span<const float> x;
  std::vector<float> inline_x;
  if (request.has_input_slice()) {
    MOE_ASSIGN_OR_RETURN(x, arena->Floats(request.input_slice().offset(), floats));
  } else {
    inline_x.resize(floats);
    std::memcpy(inline_x.data(), request.input_inline().data(), shape.tensor_bytes);
    x = inline_x;
  }
  absl::Span<float> out;
  std::vector<float> inline_out;
  if (request.has_output_slice()) {
    MOE_ASSIGN_OR_RETURN(out, arena->Floats(request.output_slice().offset(), floats));
  } else {
    inline_out.resize(floats);
    out = absl::MakeSpan(inline_out);
  }
  const std::vector<int32_t> ids(request.expert_ids().begin(), request.expert_ids().end());
  const std::vector<float> weights(request.weights().begin(), request.weights().end());
  RunCounters counters;
  MOE_RETURN_IF_ERROR(runner_.Run(static_cast<int>(request.layer()), x, n, ids, weights, out, &counters));
  if (!request.has_output_slice()) {
    response->set_output_inline(inline_out.data(), inline_out.size() * sizeof(float));
  }
  response->set_cache_hits(counters.hits);
  response->set_cache_misses(counters.misses);
  response->set_load_wait_s(counters.load_wait_s);
  response->set_compute_s(counters.compute_s);
  calls_.fetch_add(1, std::memory_order_relaxed);
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
  prefetch_.Enqueue(request->layer(),
                    std::vector<int>(request->expert_ids().begin(), request->expert_ids().end()));
  return grpc::Status::OK;
}

grpc::Status WorkerService::SetCachePolicy(grpc::ServerContext*,
                                           const v1::SetCachePolicyRequest* request,
                                           v1::SetCachePolicyResponse* response) {
  if (request->cache_per_layer() != 0 &&
      int(request->cache_per_layer()) != cache_->slots_per_layer()) {
    return ToGrpcStatus(absl::UnimplementedError(
        "SetCachePolicy: resizing the cache at run time is not built yet; restart the worker "
        "with --cache-per-layer"));
  }
  if (!request->policy().empty()) {
    auto policy = MakeCachePolicy(request->policy());
    if (!policy.ok()) return ToGrpcStatus(policy.status());
    cache_->SetPolicy(*std::move(policy));
    MOE_LOG(INFO) << "cache policy is now " << request->policy();
  }
  const CacheStats stats = cache_->Stats();
  response->set_policy(stats.policy);
  response->set_cache_per_layer(stats.slots_per_layer);
  return grpc::Status::OK;
}

grpc::Status WorkerService::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                     v1::WorkerStats* response) {
  const CacheStats stats = cache_->Stats();
  response->set_policy(stats.policy);
  response->set_cache_per_layer(stats.slots_per_layer);
  response->set_hits(stats.total.hits);
  response->set_misses(stats.total.misses);
  response->set_bytes_copied(stats.total.bytes_copied);
  response->set_run_experts_calls(calls_.load());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (arena_ != nullptr) {
      response->set_arena_owner_pid(arena_->owner_pid());
      response->set_arena_bytes(arena_->size());
    }
    response->set_arenas_released(arenas_released_);
  }
  for (size_t l = 0; l < stats.layers.size(); ++l) {
    auto* layer = response->add_layers();
    layer->set_layer(static_cast<uint32_t>(l));
    layer->set_hits(stats.layers[l].hits);
    layer->set_misses(stats.layers[l].misses);
    layer->set_bytes_copied(stats.layers[l].bytes_copied);
  }
  return grpc::Status::OK;
}

}  // namespace moe::expert_worker
