// The host-RAM expert store: every expert of every layer as one contiguous, page-aligned
// blob [w1 | w3 | w2], so that moving an expert is one copy of one range. From a Hugging
// Face checkpoint whose experts are all BF16 (or all F16) the blob keeps them as stored, a
// 16-bit quant::ExpertBlobLayout; from any other checkpoint it is fp32; from a converted
// model it is the converted blob as stored (quantized or 16-bit), so a copy moves only its
// bytes.
// The store is host memory the store's device copies from at full link speed: pinned
// (AllocatePinnedHost), or a converted model's mapped expert file registered in place.
#ifndef MOE_EXPERT_WORKER_EXPERT_STORE_H_
#define MOE_EXPERT_WORKER_EXPERT_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/backend/device.h"
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

// How a converted model's expert file becomes the store.
enum class MappedBlobs {
  kAuto,      // register in place on CUDA, copy on the CPU (today's memory use there)
  kRegister,  // register the mapping in place when its blobs are page-aligned and evenly
              // strided, else copy
  kCopy,      // always copy into pinned memory
};

// The process-wide CPU device: what the store, cache and runner use when given none.
backend::Device& DefaultCpuDevice();

// Immutable after Load; safe to read from any thread.
class ExpertStore {
 public:
  // Blob stride: a multiple of the page size, so each blob can be registered or copied
  // on its own.
  static constexpr size_t kBlobAlignment = 4096;
  // Bytes between consecutive blobs of `layout` (its bytes rounded up to kBlobAlignment):
  // also one slot of the cache.
  static size_t BlobStride(const ExpertLayout& layout) {
    return (layout.bytes() + kBlobAlignment - 1) / kBlobAlignment * kBlobAlignment;
  }

  // `device` (null: DefaultCpuDevice()) must outlive the store: its pinned memory holds
  // the blobs, and the cache built on the store copies them to that device.
  static absl::StatusOr<std::unique_ptr<ExpertStore>> Load(const Checkpoint& checkpoint,
                                                           const ModelConfig& config,
                                                           backend::Device* device = nullptr);
  // Either layout. A converted model's blobs are copied as they are stored, or (see
  // MappedBlobs) read in place from the mapped file, in which case `dir` must outlive the
  // store.
  static absl::StatusOr<std::unique_ptr<ExpertStore>> Load(const ModelDir& dir,
                                                           backend::Device* device = nullptr,
                                                           MappedBlobs mapped = MappedBlobs::kAuto);

  // `layers` x `experts` blobs of `layout` in pinned memory, each filled by
  // fill(layer, expert, blob) with layout.bytes() bytes: synthetic experts for benchmarks
  // at scales no checkpoint is downloaded for.
  static absl::StatusOr<std::unique_ptr<ExpertStore>> Generate(
      ExpertLayout layout, int layers, int experts, backend::Device* device,
      const std::function<void(int layer, int expert, uint8_t* blob)>& fill);

  const ExpertLayout& layout() const { return layout_; }
  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }
  size_t blob_bytes() const { return layout_.bytes(); }
  size_t blob_stride() const { return stride_; }
  size_t total_bytes() const { return stride_ * num_layers_ * num_experts_; }
  // The blob of (layer, expert), in host memory; both must be in range.
  const float* Expert(int layer, int expert) const;
  backend::Device& device() const { return *device_; }
  // True when the blobs are the mapped expert file, registered in place (no copy).
  bool registered() const { return registered_; }

 private:
  ExpertStore(ExpertLayout layout, int layers, int experts, size_t stride,
              backend::Device* device, std::unique_ptr<backend::DeviceBuffer> memory,
              bool registered);
  // Pinned memory for `layers` x `experts` blobs of `stride` bytes.
  static absl::StatusOr<std::unique_ptr<ExpertStore>> Allocate(ExpertLayout layout, int layers,
                                                               int experts, size_t stride,
                                                               backend::Device* device);

  ExpertLayout layout_;
  int num_layers_;
  int num_experts_;
  size_t stride_;
  backend::Device* device_;
  std::unique_ptr<backend::DeviceBuffer> memory_;  // pinned, or the registered mapping
  bool registered_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_STORE_H_
