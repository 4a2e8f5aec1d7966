#include "tools/cli/local_engine.h"

#include <cblas.h>
#include <omp.h>

#include "common/status.h"
#include "absl/strings/str_cat.h"
#include "coordinator/dense_weights.h"
#include "coordinator/device_budget.h"
#include "coordinator/device_weights.h"

namespace moe {

absl::StatusOr<std::unique_ptr<LocalEngine>> LocalEngine::Open(const std::string& model_dir,
                                                               const EngineOptions& options) {
  // Bad cache settings fail before anything loads, with the worker binary's messages.
  if (options.worker_address.empty()) {
    MOE_RETURN_IF_ERROR(expert_worker::CheckExpertStackOptions(options.experts));
  } else {
    // A worker process keeps its own cache: settings for one here would be ignored.
    const expert_worker::ExpertStackOptions& e = options.experts;
    if (e.cache_per_layer != 0 || e.cache_bytes != 0 || !e.policy.empty() ||
        e.link.modelled() || e.link.gbps != 0 || e.link.latency_us != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cache-per-layer, --cache-bytes, --policy and the link flags set the in-process "
          "worker's cache; the worker at ", options.worker_address,
          " has its own (its flags, or `moe set-policy`)"));
    }
  }
  std::unique_ptr<LocalEngine> engine(new LocalEngine());
  MOE_ASSIGN_OR_RETURN(engine->device_, backend::OpenDevice(options.device));
  MOE_ASSIGN_OR_RETURN(engine->dir_, ModelDir::Open(model_dir));
  MOE_ASSIGN_OR_RETURN(auto dense, coordinator::DenseWeights::Load(engine->dir_));
  const ModelConfig& c = engine->config();
  const int64_t context =
      options.context_tokens > 0 ? options.context_tokens : c.max_position_embeddings;
  MOE_ASSIGN_OR_RETURN(const int64_t budget_bytes,
                       coordinator::ResolveBudgetBytes(*engine->device_, options.vram_budget_gib));
  absl::StatusOr<coordinator::DeviceBudget> budget = coordinator::CheckDeviceBudget(
      c, coordinator::DeviceWeights::Bytes(dense), /*streams=*/1, context,
      coordinator::kMaxLookahead, budget_bytes);
  if (!budget.ok()) {
    return absl::Status(budget.status().code(),
                        absl::StrCat(engine->device_->name(), ": ", budget.status().message(),
                                     " (raise --vram-budget-gib)"));
  }
  ExpertBackend* backend = nullptr;
  if (!options.worker_address.empty()) {
    coordinator::WorkerClientOptions client_options;
    client_options.address = options.worker_address;
    client_options.force_inline = options.force_inline;
    client_options.use_ring = options.use_ring;
    client_options.ring_wait = options.ring_wait;
    client_options.device = engine->device_.get();
    MOE_ASSIGN_OR_RETURN(engine->worker_,
                         coordinator::WorkerClient::Create(client_options, engine->config()));
    backend = engine->worker_.get();
  } else {
    // The worker linked in computes on the engine's device and lends the model x/out in
    // that device's memory.
    MOE_ASSIGN_OR_RETURN(engine->stack_, expert_worker::ExpertStack::Load(
                                             engine->dir_, engine->device_.get(), options.experts));
    engine->backend_ = std::make_unique<expert_worker::InProcessBackend>(
        &engine->stack_->cache(), options.load_whole_layer);
    backend = engine->backend_.get();
  }
  MOE_ASSIGN_OR_RETURN(engine->model_,
                       coordinator::MixtralModel::Create(c, std::move(dense), backend,
                                                         *engine->device_));
  return engine;
}

void SetComputeThreads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int ComputeThreads() { return omp_get_max_threads(); }

}  // namespace moe
