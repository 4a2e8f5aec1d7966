// The whole model in one process: coordinator half plus the expert worker linked in
// through InProcessBackend. Used by `moe`, the benchmarks and the tests.
#ifndef MOE_TOOLS_CLI_LOCAL_ENGINE_H_
#define MOE_TOOLS_CLI_LOCAL_ENGINE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_dir.h"
#include "common/tokenizer.h"
#include "coordinator/mixtral_model.h"
#include "expert_worker/expert_store.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/slot_cache.h"

namespace moe {

class LocalEngine {
 public:
  // Opens and validates `model_dir`, loads the dense weights and the expert store, and
  // makes an LRU slot cache of `cache_per_layer` experts per layer (0: all experts).
  static absl::StatusOr<std::unique_ptr<LocalEngine>> Open(const std::string& model_dir,
                                                           int cache_per_layer = 0);

  const ModelDir& dir() const { return dir_; }
  const ModelConfig& config() const { return dir_.config; }
  coordinator::MixtralModel& model() { return *model_; }
  const expert_worker::ExpertStore& store() const { return *store_; }
  expert_worker::SlotCache& cache() { return *cache_; }

 private:
  LocalEngine() = default;

  ModelDir dir_;
  std::unique_ptr<expert_worker::ExpertStore> store_;
  std::unique_ptr<expert_worker::SlotCache> cache_;
  std::unique_ptr<expert_worker::InProcessBackend> backend_;
  std::unique_ptr<coordinator::MixtralModel> model_;
};

// Sets the thread count of every parallel kernel (OpenMP and OpenBLAS); 0 keeps the
// default (all cores).
void SetComputeThreads(int threads);
int ComputeThreads();

}  // namespace moe

#endif  // MOE_TOOLS_CLI_LOCAL_ENGINE_H_
