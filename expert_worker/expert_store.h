// The host-RAM expert store: every expert of every layer as one contiguous, page-aligned
// blob [w1 | w3 | w2], so that moving an expert is one copy of one range. From a Hugging
// Face checkpoint the blob is fp32; from a converted model it is the converted blob as
// stored (quantized or 16-bit, quant::ExpertBlobLayout), so a copy moves only its bytes.
#ifndef MOE_EXPERT_WORKER_EXPERT_STORE_H_
#define MOE_EXPERT_WORKER_EXPERT_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/model_dir.h"
#include "common/quant/offload_model.h"
#include "common/safetensors.h"

namespace moe::expert_worker {

// Where each matrix sits inside a blob, in floats.
struct ExpertLayout {
  int64_t hidden = 0;        // H
  int64_t intermediate = 0;  // I
  int64_t w1_offset() const { return 0; }                        // w1: [I, H]
  int64_t w3_offset() const { return intermediate * hidden; }    // w3: [I, H]
  int64_t w2_offset() const { return 2 * intermediate * hidden; }  // w2: [H, I]
  int64_t floats() const { return 3 * intermediate * hidden; }
  // Set for a converted model: the blob is packed as this says (and the fp32 offsets
  // above do not apply).
  std::optional<quant::ExpertBlobLayout> packed;
  size_t bytes() const {
    return packed ? size_t(packed->blob_bytes) : size_t(floats()) * sizeof(float);
  }
};

// Immutable after Load; safe to read from any thread.
class ExpertStore {
 public:
  // Blob stride: a multiple of the page size, so each blob can be registered or copied
  // on its own.
  static constexpr size_t kBlobAlignment = 4096;

  static absl::StatusOr<std::unique_ptr<ExpertStore>> Load(const Checkpoint& checkpoint,
                                                           const ModelConfig& config);
  // Either layout; a converted model's blobs are copied as they are stored.
  static absl::StatusOr<std::unique_ptr<ExpertStore>> Load(const ModelDir& dir);

  const ExpertLayout& layout() const { return layout_; }
  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }
  size_t blob_bytes() const { return layout_.bytes(); }
  size_t blob_stride() const { return stride_; }
  size_t total_bytes() const { return stride_ * num_layers_ * num_experts_; }
  // The blob of (layer, expert); both must be in range.
  const float* Expert(int layer, int expert) const;

 private:
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  ExpertStore(ExpertLayout layout, int layers, int experts, size_t stride, void* memory);

  ExpertLayout layout_;
  int num_layers_;
  int num_experts_;
  size_t stride_;
  std::unique_ptr<void, FreeDeleter> memory_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_STORE_H_
