// The named differences between the model families' forward passes (model_config.h
// lists them), as hooks that the one forward pass (MixtralModel::Forward) calls at fixed
// points. A hook does nothing for a family without its difference, so a family is
// configuration plus these, not a copy of the pass.
#ifndef MOE_COORDINATOR_MODEL_FAMILY_H_
#define MOE_COORDINATOR_MODEL_FAMILY_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/backend/kernels.h"
#include "common/model_config.h"
#include "coordinator/dense_weights.h"
#include "coordinator/device_scratch.h"
#include "coordinator/device_weights.h"

namespace moe::coordinator {

// Scratch of the coordinator's own MLPs (a shared expert, a dense layer) for n rows.
struct MlpScratch {
  float* gate = nullptr;        // [n, W], W the widest such MLP
  float* up = nullptr;          // [n, W]
  float* out = nullptr;         // [n, H]: the shared expert's output
  float* gate_logit = nullptr;  // [n]: its gate, before the sigmoid
};

class ModelFamilyOps {
 public:
  ModelFamilyOps(const ModelConfig& config, backend::Kernels& kernels)
      : c_(config), kern_(kernels) {}

  // INVALID_ARGUMENT naming the layer and tensor when `weights` lack (or have the wrong
  // size of) a tensor the hooks read for `config`: biases, q/k norms, a shared expert
  // and its gate, a dense layer's MLP, a router. DenseWeights::Load gives them by
  // construction; this guards weights made otherwise (benchmarks, tests).
  static absl::Status CheckWeights(const ModelConfig& config, const DenseWeights& weights);

  // Lays out (or, over a null carver's base, sizes) the MLP scratch for n rows; nothing
  // when the config has no shared expert and no dense layer.
  static MlpScratch Carve(const ModelConfig& config, int64_t n, ScratchCarver& device);

  // After the q/k/v projections of n rows, before RoPE: q/k/v biases (qwen2_moe), the
  // RMSNorm of each query and key head (qwen3_moe) or of the whole q and k (olmoe), and
  // clip_qkv (olmoe). q[n, q_dim], k and v [n, kv_dim], in place.
  absl::Status PrepareQkv(const DeviceLayerWeights& lw, float* q, float* k, float* v, int64_t n,
                          backend::Stream& stream) const;

  // The router of a sparse layer: softmax over all experts, the top k, renormalised when
  // the family does (Mixtral; norm_topk_prob). logits [n, E], ids and weights [n, k].
  absl::Status Route(const DeviceLayerWeights& lw, const float* xn, int64_t n, float* logits,
                     int32_t* ids, float* weights, backend::Stream& stream) const;

  // A sparse layer's shared expert (qwen2_moe), queued beside the routed experts: its
  // output and gate into `scratch`. Nothing when the layer has none.
  absl::Status SharedExpert(const DeviceLayerWeights& lw, const float* xn, int64_t n,
                            const MlpScratch& scratch, backend::Stream& stream) const;
  // moe_out[n, H] += sigmoid(gate) * the shared expert's output, once the routed experts'
  // sum is in moe_out (HF's order: routed + shared, then the residual).
  absl::Status AddSharedExpert(const DeviceLayerWeights& lw, float* moe_out, int64_t n,
                               const MlpScratch& scratch, backend::Stream& stream) const;

  // A dense layer (decoder_sparse_step, mlp_only_layers): x[n, H] += MLP(xn).
  absl::Status DenseMlp(const DeviceLayerWeights& lw, const float* xn, float* x, int64_t n,
                        const MlpScratch& scratch, backend::Stream& stream) const;

 private:
  // scratch.gate = silu(gate(xn)) * up(xn): the first half of a SwiGLU MLP.
  absl::Status Activations(const DeviceMlp& mlp, const float* xn, int64_t n,
                           const MlpScratch& scratch, backend::Stream& stream) const;

  const ModelConfig& c_;
  backend::Kernels& kern_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_MODEL_FAMILY_H_
