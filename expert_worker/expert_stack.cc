#include "expert_worker/expert_stack.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "expert_worker/cache_policy.h"
#include "expert_worker/expert_runner.h"

namespace moe::expert_worker {
namespace {

constexpr char kLinkFlags[] = "--link-gbps/--link-latency-us";

std::string PolicyName(const ExpertStackOptions& options) {
  return options.policy.empty() ? "lru" : options.policy;
}

}  // namespace

absl::Status CheckExpertStackOptions(const ExpertStackOptions& options) {
  if (options.cache_per_layer < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cache-per-layer ", options.cache_per_layer, ": must be >= 0 (0: every expert)"));
  }
  if (options.cache_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cache-bytes ", options.cache_bytes, ": must be >= 0"));
  }
  if (!(std::isfinite(options.vram_budget_gib) && options.vram_budget_gib >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vram-budget-gib ", options.vram_budget_gib, ": must be >= 0"));
  }
  std::vector<std::string> sizes;
  if (options.cache_per_layer != 0) {
    sizes.push_back(absl::StrCat("--cache-per-layer ", options.cache_per_layer));
  }
  if (options.cache_bytes != 0) sizes.push_back(absl::StrCat("--cache-bytes ", options.cache_bytes));
  if (options.vram_budget_gib != 0) {
    sizes.push_back(absl::StrCat("--vram-budget-gib ", options.vram_budget_gib));
  }
  if (sizes.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("give at most one of --cache-per-layer, --cache-bytes and "
                     "--vram-budget-gib (got ", absl::StrJoin(sizes, " and "), ")"));
  }
  if (options.vram_budget_gib > 0 && options.workspace_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--workspace-tokens must be >= 1 (got ", options.workspace_tokens, ")"));
  }
  MOE_RETURN_IF_ERROR(Annotate(MakeCachePolicy(PolicyName(options)).status(), "--policy"));
  MOE_RETURN_IF_ERROR(Annotate(CheckLinkModel(options.link), kLinkFlags));
  return absl::OkStatus();
}

absl::StatusOr<int> ResolveSlotsPerLayer(const ExpertStore& store,
                                         const ExpertStackOptions& options) {
  MOE_RETURN_IF_ERROR(CheckExpertStackOptions(options));
  const int experts = store.num_experts();
  if (options.cache_per_layer > 0) {
    if (options.cache_per_layer > experts) {
      return absl::InvalidArgumentError(absl::StrCat("--cache-per-layer ", options.cache_per_layer,
                                                     ": must be in [1, ", experts,
                                                     "] (the experts per layer)"));
    }
    return options.cache_per_layer;
  }
  if (options.cache_bytes > 0) {
    absl::StatusOr<int> slots = SlotCache::SlotsForBytes(store, uint64_t(options.cache_bytes));
    if (!slots.ok()) return Annotate(slots.status(), "--cache-bytes");
    return slots;
  }
  if (options.vram_budget_gib > 0) {
    const auto budget = static_cast<uint64_t>(options.vram_budget_gib * double(1ull << 30));
    const uint64_t workspace = ExpertRunner::WorkspaceBytes(store.layout(), options.workspace_tokens);
    const uint64_t one_slot_row = uint64_t(store.blob_stride()) * store.num_layers();
    if (budget < workspace + one_slot_row) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--vram-budget-gib ", options.vram_budget_gib, " (", budget,
          " bytes) cannot hold the workspace (", workspace, " bytes for ",
          options.workspace_tokens, " tokens) and one expert slot per layer (", one_slot_row,
          " bytes): needs at least ", workspace + one_slot_row, " bytes"));
    }
    return SlotCache::SlotsForBytes(store, budget - workspace);
  }
  return experts;
}

absl::Status ExpertStack::BuildCache(const ExpertStackOptions& options) {
  MOE_ASSIGN_OR_RETURN(const int slots, ResolveSlotsPerLayer(*store_, options));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<CachePolicy> policy, MakeCachePolicy(PolicyName(options)));
  if (options.link.modelled()) {
    absl::StatusOr<std::unique_ptr<ModelledLinkDevice>> link =
        ModelledLinkDevice::Create(&store_->device(), options.link);
    if (!link.ok()) return Annotate(link.status(), kLinkFlags);
    link_ = *std::move(link);
  }
  MOE_ASSIGN_OR_RETURN(cache_, SlotCache::Create(store_, slots, std::move(policy),
                                                 options.retention, link_.get()));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ExpertStack>> ExpertStack::Load(const ModelDir& dir,
                                                               backend::Device* device,
                                                               const ExpertStackOptions& options) {
  // Refuse bad settings before the experts load (minutes at Mixtral size).
  MOE_RETURN_IF_ERROR(CheckExpertStackOptions(options));
  std::unique_ptr<ExpertStack> stack(new ExpertStack());
  MOE_ASSIGN_OR_RETURN(stack->owned_store_, ExpertStore::Load(dir, device));
  stack->store_ = stack->owned_store_.get();
  MOE_RETURN_IF_ERROR(stack->BuildCache(options));
  return stack;
}

absl::StatusOr<std::unique_ptr<ExpertStack>> ExpertStack::Over(const ExpertStore* store,
                                                               const ExpertStackOptions& options) {
  std::unique_ptr<ExpertStack> stack(new ExpertStack());
  stack->store_ = store;
  MOE_RETURN_IF_ERROR(stack->BuildCache(options));
  return stack;
}

}  // namespace moe::expert_worker
