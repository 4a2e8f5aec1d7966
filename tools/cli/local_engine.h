// The whole model in one process: coordinator half plus the expert worker linked in
// through InProcessBackend. Used by `moe`, the benchmarks and the tests.
#ifndef MOE_TOOLS_CLI_LOCAL_ENGINE_H_
#define MOE_TOOLS_CLI_LOCAL_ENGINE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_dir.h"
#include "common/tokenizer.h"
#include "common/backend/device.h"
#include "coordinator/mixtral_model.h"
#include "coordinator/worker_client.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_stack.h"
#include "expert_worker/slot_cache.h"

namespace moe {

struct EngineOptions {
  std::string device = "cpu";  // where the coordinator half computes: cpu, cuda, cuda:N
  // Device memory the coordinator half may use (dense weights + one stream's KV cache of
  // context_tokens + scratch), checked at Open; 0: the free memory on a GPU, no limit on
  // the CPU.
  double vram_budget_gib = 0;
  int64_t context_tokens = 0;  // for that budget; 0: the model's max_position_embeddings
  std::string worker_address;  // set: experts run in that worker process instead
  bool force_inline = false;   // with a worker: tensors inside RPCs even on a unix socket
  bool use_ring = true;        // with a worker on a unix socket: calls through the arena's ring
  ring::WaitOptions ring_wait;  // how a ring call waits for its reply
  // In-process worker only: its cache's size, policy, retention and link model (the
  // same struct and checks as the worker binary's; ExpertStackFlags() fills it)...
  expert_worker::ExpertStackOptions experts;
  bool load_whole_layer = false;  // ...and the naive baseline: every expert loaded each call
};

class LocalEngine {
 public:
  // Opens and validates `model_dir` and loads the dense weights. The experts run in the
  // worker linked in (an expert_worker::ExpertStack: store, policy, slot cache, link),
  // or, with a worker address, in that process over gRPC.
  static absl::StatusOr<std::unique_ptr<LocalEngine>> Open(const std::string& model_dir,
                                                           const EngineOptions& options);
  static absl::StatusOr<std::unique_ptr<LocalEngine>> Open(const std::string& model_dir,
                                                           int cache_per_layer = 0) {
    EngineOptions options;
    options.experts.cache_per_layer = cache_per_layer;
    return Open(model_dir, options);
  }

  const ModelDir& dir() const { return dir_; }
  const ModelConfig& config() const { return dir_.config; }
  backend::Device& device() { return *device_; }
  coordinator::MixtralModel& model() { return *model_; }
  // In-process mode only (null with a remote worker).
  expert_worker::SlotCache* cache() { return stack_ ? &stack_->cache() : nullptr; }
  expert_worker::InProcessBackend* in_process() { return backend_.get(); }
  // Remote mode only (null in-process).
  coordinator::WorkerClient* worker() { return worker_.get(); }

 private:
  LocalEngine() = default;

  std::unique_ptr<backend::Device> device_;  // first: everything below computes on it
  ModelDir dir_;
  std::unique_ptr<expert_worker::ExpertStack> stack_;
  std::unique_ptr<expert_worker::InProcessBackend> backend_;
  std::unique_ptr<coordinator::WorkerClient> worker_;
  std::unique_ptr<coordinator::MixtralModel> model_;
};

// Sets the thread count of every parallel kernel (OpenMP and OpenBLAS); 0 keeps the
// default (all cores).
void SetComputeThreads(int threads);
int ComputeThreads();

}  // namespace moe

#endif  // MOE_TOOLS_CLI_LOCAL_ENGINE_H_
