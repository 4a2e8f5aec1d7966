// Every non-expert weight of a Mixtral model in fp32: embeddings, attention, norms,
// routers, final norm and LM head. The coordinator owns these; experts live elsewhere.
#ifndef MOE_COORDINATOR_DENSE_WEIGHTS_H_
#define MOE_COORDINATOR_DENSE_WEIGHTS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/safetensors.h"

namespace moe::coordinator {

struct LayerWeights {
  std::vector<float> input_norm;  // [H]
  std::vector<float> q;           // [nH * hd, H]
  std::vector<float> k;           // [nKV * hd, H]
  std::vector<float> v;           // [nKV * hd, H]
  std::vector<float> o;           // [H, nH * hd]
  std::vector<float> post_norm;   // [H]
  std::vector<float> gate;        // [E, H], the router
};

struct DenseWeights {
  std::vector<float> embedding;   // [V, H]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [H]
  std::vector<float> lm_head;     // [V, H]; empty when tied to the embedding

  const float* LmHead() const { return lm_head.empty() ? embedding.data() : lm_head.data(); }

  // Reads and converts the dense tensors; shapes are checked against `config`.
  static absl::StatusOr<DenseWeights> Load(const Checkpoint& checkpoint,
                                           const ModelConfig& config);
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_DENSE_WEIGHTS_H_
