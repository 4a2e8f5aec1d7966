// The dense weights where the model computes: on a CUDA device, one upload of every
// tensor into one device allocation (packed attention stays packed); on the CPU device,
// views of the host vectors themselves (no copy, no extra memory).
#ifndef MOE_COORDINATOR_DEVICE_WEIGHTS_H_
#define MOE_COORDINATOR_DEVICE_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/backend/kernels.h"
#include "coordinator/dense_weights.h"

namespace moe::coordinator {

// A SwiGLU MLP's matrices (MlpWeights) in device memory; `present` false when absent.
struct DeviceMlp {
  bool present = false;
  backend::WeightView gate, up, down;
};

// One layer's dense weights as device memory. Shapes as in LayerWeights; the family's
// optional tensors are null (or not present) where the layer has none.
struct DeviceLayerWeights {
  const float* input_norm = nullptr;  // [H]
  const float* post_norm = nullptr;   // [H]
  backend::WeightView q, k, v, o;     // fp32 or packed in the offload format
  backend::WeightView gate;           // [E, H] fp32, the router (rows 0 in a dense layer)
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;
  DeviceMlp shared_expert;
  backend::WeightView shared_expert_gate;  // [1, H]
  DeviceMlp dense_mlp;
};

// Immutable after Create; thread-safe to read.
class DeviceWeights {
 public:
  // Takes the host weights; `device` must outlive the result. On a device other than the
  // CPU the host copy is freed once uploaded.
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Create(DenseWeights host,
                                                               backend::Device& device);
  // Bytes `weights` occupy (what a device other than the CPU allocates for them, but for
  // alignment padding).
  static int64_t Bytes(const DenseWeights& weights);

  // [V, H], fp32 or as stored (16-bit, packed): read by Kernels::GatherWeightRows.
  const backend::WeightView& embedding() const { return embedding_; }
  const float* final_norm() const { return final_norm_; }  // [H]
  // [V, H]: the embedding itself when the model ties them.
  const backend::WeightView& lm_head() const { return lm_head_; }
  const DeviceLayerWeights& layer(int l) const { return layers_[size_t(l)]; }
  int num_layers() const { return int(layers_.size()); }
  // Device memory this object allocated (0 on the CPU, which aliases the host vectors).
  int64_t device_bytes() const { return arena_ ? int64_t(arena_->size()) : 0; }

 private:
  DeviceWeights() = default;

  DenseWeights host_;  // the CPU's storage; emptied on other devices after upload
  std::unique_ptr<backend::DeviceBuffer> arena_;  // every tensor; null on the CPU
  backend::WeightView embedding_;
  const float* final_norm_ = nullptr;
  backend::WeightView lm_head_;
  std::vector<DeviceLayerWeights> layers_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_DEVICE_WEIGHTS_H_
