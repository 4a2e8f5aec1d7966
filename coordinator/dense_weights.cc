#include "coordinator/dense_weights.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"
#include "common/mapped_file.h"
#include "common/model_dir.h"
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

// A projection of a 16-bit checkpoint (BF16 or F16) kept as stored in `packed`, checked to
// be [rows, cols]; any other dtype is read into fp32 `dst`.
absl::Status ReadProjection(const Checkpoint& ckpt, const std::string& name, int64_t rows,
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

absl::StatusOr<DenseWeights> LoadConverted(const quant::OffloadModel& model, const ModelConfig& c) {
  namespace tn = tensor_names;
  DenseWeights w;
  MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Embedding(), &w.embedding, nullptr));
  MOE_RETURN_IF_ERROR(ReadConverted(model, tn::FinalNorm(), &w.final_norm, nullptr));
  if (!c.tie_word_embeddings) {
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::LmHead(), &w.lm_head, &w.lm_head_packed));
  }
  w.layers.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "input_layernorm.weight"), &lw.input_norm, nullptr));
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "self_attn.q_proj.weight"), &lw.q, &lw.q_packed));
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "self_attn.k_proj.weight"), &lw.k, &lw.k_packed));
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "self_attn.v_proj.weight"), &lw.v, &lw.v_packed));
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "self_attn.o_proj.weight"), &lw.o, &lw.o_packed));
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "post_attention_layernorm.weight"), &lw.post_norm, nullptr));
    MOE_RETURN_IF_ERROR(ReadConverted(model, tn::Layer(l, "block_sparse_moe.gate.weight"), &lw.gate, nullptr));
  }
  return w;
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
  namespace tn = tensor_names;
  const int64_t h = c.hidden_size;
  DenseWeights w;
  MOE_RETURN_IF_ERROR(Read(ckpt, tn::Embedding(), {c.vocab_size, h}, &w.embedding));
  MOE_RETURN_IF_ERROR(Read(ckpt, tn::FinalNorm(), {h}, &w.final_norm));
  if (!c.tie_word_embeddings) {
    MOE_RETURN_IF_ERROR(ReadProjection(ckpt, tn::LmHead(), c.vocab_size, h, &w.lm_head, &w.lm_head_packed));
  }
  w.layers.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "input_layernorm.weight"), {h}, &lw.input_norm));
    MOE_RETURN_IF_ERROR(ReadProjection(ckpt, tn::Layer(l, "self_attn.q_proj.weight"), c.q_dim(), h, &lw.q, &lw.q_packed));
    MOE_RETURN_IF_ERROR(ReadProjection(ckpt, tn::Layer(l, "self_attn.k_proj.weight"), c.kv_dim(), h, &lw.k, &lw.k_packed));
    MOE_RETURN_IF_ERROR(ReadProjection(ckpt, tn::Layer(l, "self_attn.v_proj.weight"), c.kv_dim(), h, &lw.v, &lw.v_packed));
    MOE_RETURN_IF_ERROR(ReadProjection(ckpt, tn::Layer(l, "self_attn.o_proj.weight"), h, c.q_dim(), &lw.o, &lw.o_packed));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "post_attention_layernorm.weight"), {h}, &lw.post_norm));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "block_sparse_moe.gate.weight"),
                             {c.num_local_experts, h}, &lw.gate));
  }
  return w;
}

}  // namespace moe::coordinator
