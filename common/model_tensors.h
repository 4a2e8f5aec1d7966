// The tensors a model's config implies, by their Hugging Face names: one enumeration that
// loading, `moe convert` and validation share, so that a family's extra tensors (biases,
// q/k norms, shared experts, dense MLP layers) are named in one place.
#ifndef MOE_COMMON_MODEL_TENSORS_H_
#define MOE_COMMON_MODEL_TENSORS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/model_config.h"

namespace moe {

namespace tensor_names {
std::string Embedding();
std::string FinalNorm();
std::string LmHead();
std::string Layer(int layer, absl::string_view suffix);  // model.layers.{i}.{suffix}
// Routed expert matrix `w` of decoder layer `layer`: w is the role, w1 (gate), w3 (up) or
// w2 (down), named w1/w3/w2 by Mixtral and gate_proj/up_proj/down_proj by the others.
std::string Expert(const ModelConfig& c, int layer, int expert, absl::string_view w);
std::string Router(const ModelConfig& c, int layer);
}  // namespace tensor_names

// What a tensor is to the coordinator and the converter.
enum class TensorKind {
  kVector,     // norms and biases: fp32 on the coordinator, 16-bit when converted
  kAttention,  // q/k/v/o projections: may be quantized or kept 16-bit
  kMatrix,     // embedding, LM head, router, shared expert, dense MLP: fp32 / 16-bit
  kExpert,     // a routed expert's matrix: the expert worker's
};

struct ModelTensor {
  std::string name;
  std::vector<int64_t> shape;
  TensorKind kind = TensorKind::kVector;
  int layer = -1;   // decoder layer; -1 for embedding, final norm, LM head
  int expert = -1;  // kExpert only
  absl::string_view role;  // kExpert only: w1, w3 or w2
};

// Calls `visit` on every tensor `c` implies, in one fixed order (embedding; per layer:
// attention, its biases and norms, then the router and experts or the dense MLP; final
// norm; LM head unless tied); stops at the first error. A visitor rather than a list: a
// hostile config may imply billions of tensors. `experts` false skips routed experts.
absl::Status ForEachModelTensor(const ModelConfig& c, bool experts,
                                const std::function<absl::Status(const ModelTensor&)>& visit);

}  // namespace moe

#endif  // MOE_COMMON_MODEL_TENSORS_H_
