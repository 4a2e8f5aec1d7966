#include "expert_worker/expert_store.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/model_dir.h"
#include "common/status.h"

namespace moe::expert_worker {

void ExpertStore::FreeDeleter::operator()(void* p) const { std::free(p); }

ExpertStore::ExpertStore(ExpertLayout layout, int layers, int experts, size_t stride,
                         void* memory)
    : layout_(layout), num_layers_(layers), num_experts_(experts), stride_(stride),
      memory_(memory) {}

absl::StatusOr<std::unique_ptr<ExpertStore>> ExpertStore::Load(const Checkpoint& checkpoint,
                                                                const ModelConfig& config) {
  ExpertLayout layout{config.hidden_size, config.intermediate_size};
  const size_t bytes = static_cast<size_t>(layout.floats()) * sizeof(float);
  const size_t stride = (bytes + kBlobAlignment - 1) / kBlobAlignment * kBlobAlignment;
  const int layers = static_cast<int>(config.num_hidden_layers);
  const int experts = static_cast<int>(config.num_local_experts);
  const size_t total = stride * layers * experts;
  void* memory = std::aligned_alloc(kBlobAlignment, total);
  if (memory == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("expert store: cannot allocate ", total, " bytes of host memory"));
  }
  std::unique_ptr<ExpertStore> store(new ExpertStore(layout, layers, experts, stride, memory));
  const int64_t h = layout.hidden, i = layout.intermediate;
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      float* blob = const_cast<float*>(store->Expert(l, e));
      namespace tn = tensor_names;
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(tn::Expert(l, e, "w1"), {i, h}, blob + layout.w1_offset()));
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(tn::Expert(l, e, "w3"), {i, h}, blob + layout.w3_offset()));
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(tn::Expert(l, e, "w2"), {h, i}, blob + layout.w2_offset()));
    }
  }
  return store;
}

absl::StatusOr<std::unique_ptr<ExpertStore>> ExpertStore::Load(const ModelDir& dir) {
  if (dir.offload == nullptr) return Load(*dir.checkpoint, dir.config);
  const quant::OffloadManifest& m = dir.offload->manifest();
  ExpertLayout layout{m.config.hidden_size, m.config.intermediate_size};
  layout.packed = m.expert;
  const size_t stride = m.expert.blob_stride;
  const int layers = static_cast<int>(m.config.num_hidden_layers);
  const int experts = static_cast<int>(m.config.num_local_experts);
  const size_t total = stride * layers * experts;
  void* memory = std::aligned_alloc(kBlobAlignment, total);
  if (memory == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("expert store: cannot allocate ", total, " bytes of host memory"));
  }
  std::unique_ptr<ExpertStore> store(new ExpertStore(layout, layers, experts, stride, memory));
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      std::memcpy(const_cast<float*>(store->Expert(l, e)), dir.offload->ExpertBlob(l, e),
                  m.expert.blob_bytes);
    }
  }
  return store;
}

const float* ExpertStore::Expert(int layer, int expert) const {
  MOE_CHECK(layer >= 0 && layer < num_layers_ && expert >= 0 && expert < num_experts_)
      << "expert (" << layer << ", " << expert << ") out of range";
  const auto* base = static_cast<const char*>(memory_.get());
  return reinterpret_cast<const float*>(base + stride_ * (size_t(layer) * num_experts_ + expert));
}

}  // namespace moe::expert_worker
