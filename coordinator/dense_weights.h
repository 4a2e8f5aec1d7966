// Every non-expert weight of a Mixtral model: embeddings, attention, norms, routers, final
// norm and LM head. Every matrix a checkpoint or converted model stores in 16 bits (or
// quantized) stays as stored, in a PackedMatrix beside its fp32 vector (which then stays
// empty); only fp32 checkpoints' matrices, and norms and biases, are fp32. The coordinator
// owns these; experts live elsewhere.
#ifndef MOE_COORDINATOR_DENSE_WEIGHTS_H_
#define MOE_COORDINATOR_DENSE_WEIGHTS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/model_dir.h"
#include "common/quant/quant_format.h"
#include "common/safetensors.h"

namespace moe::coordinator {

// A projection a converted model stores quantized or in 16 bits: the stored bytes, owned,
// multiplied by the fused kernels (no fp32 copy). Empty when the projection is held in fp32.
struct PackedMatrix {
  quant::MatrixLayout layout;
  std::vector<uint8_t> bytes;
  bool empty() const { return bytes.empty(); }
  quant::MatrixView view() const { return {layout, bytes.data()}; }
};

// A SwiGLU MLP on the coordinator: down(silu(gate(x)) * up(x)).
struct MlpWeights {
  std::vector<float> gate, up;  // [I, H]
  std::vector<float> down;      // [H, I]
  PackedMatrix gate_packed, up_packed, down_packed;  // instead, as a 16-bit model stores them
  bool empty() const { return gate.empty() && gate_packed.empty(); }
};

// One decoder layer. The family-specific tensors (model_tensors.h) are empty where the
// config has none.
struct LayerWeights {
  std::vector<float> input_norm;  // [H]
  std::vector<float> q;           // [nH * hd, H]
  std::vector<float> k;           // [nKV * hd, H]
  std::vector<float> v;           // [nKV * hd, H]
  std::vector<float> o;           // [H, nH * hd]
  std::vector<float> post_norm;   // [H]
  std::vector<float> gate;        // [E, H], the router; empty in a dense layer
  // Set instead of q/k/v/o and the router when the model stores them in 16 bits (or
  // quantized, attention of a converted model): multiplied as stored.
  PackedMatrix q_packed, k_packed, v_packed, o_packed, gate_packed;
  std::vector<float> q_bias, k_bias, v_bias;  // qwen2_moe: [q_dim], [kv_dim], [kv_dim]
  std::vector<float> q_norm, k_norm;  // qwen3_moe: [head_dim]; olmoe: [q_dim], [kv_dim]
  MlpWeights shared_expert;               // qwen2_moe sparse layers
  std::vector<float> shared_expert_gate;  // [1, H]
  PackedMatrix shared_expert_gate_packed;
  MlpWeights dense_mlp;                   // a dense layer's MLP, instead of experts
};

// y[n, m] (=|+=) x[n, k] · W^T, W the fp32 `w` or, when set, the packed `packed`.
void Project(const std::vector<float>& w, const PackedMatrix& packed, const float* x, float* y,
             int64_t n, int64_t k, int64_t m, bool accumulate = false);

struct DenseWeights {
  std::vector<float> embedding;   // [V, H]; empty when embedding_packed holds it
  PackedMatrix embedding_packed;  // a 16-bit or converted model's table, as stored: the
                                  // lookup widens only the rows it reads
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [H]
  std::vector<float> lm_head;     // [V, H]; empty when tied to the embedding or packed
  PackedMatrix lm_head_packed;    // an untied LM head, as stored (16-bit or converted)

  // Reads the dense tensors, shapes checked against `config`: BF16/F16 matrices stay as
  // stored; other dtypes, and norms and biases, are converted to fp32.
  static absl::StatusOr<DenseWeights> Load(const Checkpoint& checkpoint,
                                           const ModelConfig& config);
  // Either layout: a Hugging Face checkpoint, or a converted directory (every matrix stays
  // as stored, quantized or 16-bit; norms and biases are converted to fp32).
  static absl::StatusOr<DenseWeights> Load(const ModelDir& dir);
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_DENSE_WEIGHTS_H_
