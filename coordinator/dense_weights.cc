#include "coordinator/dense_weights.h"

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"
#include "common/mapped_file.h"
#include "common/model_dir.h"
#include "common/model_tensors.h"
#include "common/status.h"

namespace moe::coordinator {
namespace {

// The weights are copied out of the mapped files; their file pages are then released
// (ReleaseMappedPages), so that they do not stay resident beside the copies.
absl::Status Read(const Checkpoint& ckpt, const std::string& name,
                  std::initializer_list<int64_t> shape, std::vector<float>* dst) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  dst->resize(count);
  MOE_RETURN_IF_ERROR(ckpt.ReadF32(name, shape, dst->data()));
  MOE_ASSIGN_OR_RETURN(Checkpoint::TensorRef ref, ckpt.Find(name));
  const absl::Span<const uint8_t> bytes = ref.file->Data(*ref.info);
  ReleaseMappedPages(bytes.data(), bytes.size());
  return absl::OkStatus();
}

// A matrix of a 16-bit checkpoint (BF16 or F16) kept as stored in `packed`, checked to be
// [rows, cols]; any other dtype is read into fp32 `dst`.
absl::Status ReadMatrix(const Checkpoint& ckpt, const std::string& name, int64_t rows,
                        int64_t cols, std::vector<float>* dst, PackedMatrix* packed) {
  MOE_ASSIGN_OR_RETURN(Checkpoint::TensorRef ref, ckpt.Find(name));
  const DType dtype = ref.info->dtype;
  if (dtype != DType::kBF16 && dtype != DType::kF16) return Read(ckpt, name, {rows, cols}, dst);
  if (ref.info->shape != std::vector<int64_t>{rows, cols}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": shape ",
                                                   ref.info->ShapeString(), ", expected [", rows,
                                                   ", ", cols, "]"));
  }
  quant::MatrixSpec spec;
  spec.bits = 16;
  spec.dtype16 = dtype;
  MOE_RETURN_IF_ERROR(quant::MatrixLayout::Compute(rows, cols, spec, name, &packed->layout));
  const absl::Span<const uint8_t> bytes = ref.file->Data(*ref.info);
  packed->bytes.assign(size_t(packed->layout.total_bytes), 0);
  std::memcpy(packed->bytes.data(), bytes.data(), size_t(rows * cols) * 2);
  ReleaseMappedPages(bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::Status ReadConverted(const quant::OffloadModel& model, const std::string& name,
                           std::vector<float>* dst, PackedMatrix* packed) {
  MOE_ASSIGN_OR_RETURN(quant::MatrixView view, model.Dense(name));
  if (packed != nullptr) {
    packed->layout = view.layout;
    packed->bytes.assign(view.data, view.data + view.layout.total_bytes);
  } else {
    dst->resize(view.layout.rows * view.layout.cols);
    MOE_RETURN_IF_ERROR(model.ReadDenseF32(name, dst->data()));
  }
  ReleaseMappedPages(view.data, size_t(view.layout.total_bytes));
  return absl::OkStatus();
}

// Where tensor `t` goes in `w`: fp32 `f32`, or, for a matrix (which stays as stored when
// 16-bit or quantized), `packed`.
struct Destination {
  std::vector<float>* f32 = nullptr;
  PackedMatrix* packed = nullptr;
};

absl::StatusOr<Destination> DestinationOf(DenseWeights& w, const ModelConfig& c,
                                          const ModelTensor& t) {
  namespace tn = tensor_names;
  if (t.layer < 0) {
    if (t.name == tn::Embedding()) return Destination{&w.embedding, &w.embedding_packed};
    if (t.name == tn::FinalNorm()) return Destination{&w.final_norm, nullptr};
    if (t.name == tn::LmHead()) return Destination{&w.lm_head, &w.lm_head_packed};
  } else {
    LayerWeights& lw = w.layers[size_t(t.layer)];
    const std::string prefix = tn::Layer(t.layer, "");
    const absl::string_view suffix = absl::string_view(t.name).substr(prefix.size());
    const std::pair<const char*, Destination> table[] = {
        {"input_layernorm.weight", {&lw.input_norm, nullptr}},
        {"post_attention_layernorm.weight", {&lw.post_norm, nullptr}},
        {"self_attn.q_proj.weight", {&lw.q, &lw.q_packed}},
        {"self_attn.k_proj.weight", {&lw.k, &lw.k_packed}},
        {"self_attn.v_proj.weight", {&lw.v, &lw.v_packed}},
        {"self_attn.o_proj.weight", {&lw.o, &lw.o_packed}},
        {"self_attn.q_proj.bias", {&lw.q_bias, nullptr}},
        {"self_attn.k_proj.bias", {&lw.k_bias, nullptr}},
        {"self_attn.v_proj.bias", {&lw.v_bias, nullptr}},
        {"self_attn.q_norm.weight", {&lw.q_norm, nullptr}},
        {"self_attn.k_norm.weight", {&lw.k_norm, nullptr}},
        {"mlp.shared_expert.gate_proj.weight",
         {&lw.shared_expert.gate, &lw.shared_expert.gate_packed}},
        {"mlp.shared_expert.up_proj.weight", {&lw.shared_expert.up, &lw.shared_expert.up_packed}},
        {"mlp.shared_expert.down_proj.weight",
         {&lw.shared_expert.down, &lw.shared_expert.down_packed}},
        {"mlp.shared_expert_gate.weight", {&lw.shared_expert_gate, &lw.shared_expert_gate_packed}},
        {"mlp.gate_proj.weight", {&lw.dense_mlp.gate, &lw.dense_mlp.gate_packed}},
        {"mlp.up_proj.weight", {&lw.dense_mlp.up, &lw.dense_mlp.up_packed}},
        {"mlp.down_proj.weight", {&lw.dense_mlp.down, &lw.dense_mlp.down_packed}},
    };
    if (t.name == tn::Router(c, t.layer)) return Destination{&lw.gate, &lw.gate_packed};
    for (const auto& [name, dest] : table) {
      if (suffix == name) return dest;
    }
  }
  return absl::InternalError(absl::StrCat("DenseWeights: no place for tensor \"", t.name, "\""));
}

// Reads every tensor but the routed experts through `read`.
absl::StatusOr<DenseWeights> LoadEach(
    const ModelConfig& c,
    const std::function<absl::Status(const ModelTensor&, const Destination&)>& read) {
  DenseWeights w;
  w.layers.resize(c.num_hidden_layers);
  MOE_RETURN_IF_ERROR(ForEachModelTensor(c, /*experts=*/false,
                                         [&](const ModelTensor& t) -> absl::Status {
                                           MOE_ASSIGN_OR_RETURN(Destination d,
                                                                DestinationOf(w, c, t));
                                           return read(t, d);
                                         }));
  return w;
}

absl::StatusOr<DenseWeights> LoadConverted(const quant::OffloadModel& model, const ModelConfig& c) {
  return LoadEach(c, [&](const ModelTensor& t, const Destination& d) {
    return ReadConverted(model, t.name, d.f32, d.packed);
  });
}

}  // namespace

void Project(const std::vector<float>& w, const PackedMatrix& packed, const float* x, float* y,
             int64_t n, int64_t k, int64_t m, bool accumulate) {
  if (!packed.empty()) {
    cpu::QuantMatMulTransB(packed.view(), x, y, n, accumulate);
  } else {
    cpu::MatMulTransB(x, w.data(), y, n, k, m, accumulate);
  }
}

absl::StatusOr<DenseWeights> DenseWeights::Load(const ModelDir& dir) {
  if (dir.offload != nullptr) return LoadConverted(*dir.offload, dir.config);
  return Load(*dir.checkpoint, dir.config);
}

absl::StatusOr<DenseWeights> DenseWeights::Load(const Checkpoint& ckpt,
                                                const ModelConfig& c) {
  return LoadEach(c, [&](const ModelTensor& t, const Destination& d) {
    if (d.packed != nullptr) {
      return ReadMatrix(ckpt, t.name, t.shape[0], t.shape[1], d.f32, d.packed);
    }
    int64_t count = 1;
    for (int64_t dim : t.shape) count *= dim;
    d.f32->resize(size_t(count));
    return ckpt.ReadF32(t.name, t.shape, d.f32->data());
  });
}

}  // namespace moe::coordinator
