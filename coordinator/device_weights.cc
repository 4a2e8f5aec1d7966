#include "coordinator/device_weights.h"

#include <functional>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe::coordinator {
namespace {

constexpr int64_t kAlignment = 256;  // what Device::Allocate guarantees; kernels rely on it

int64_t AlignUp(int64_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Visits every tensor of `w` as (host bytes, size, where its device pointer goes), in one
// fixed order, so that sizing and uploading agree.
using TensorVisitor = std::function<void(const void* host, int64_t bytes, const void** where)>;

struct Slots {
  const void* embedding = nullptr;
  const void* final_norm = nullptr;
  const void* lm_head = nullptr;
  struct Layer {
    const void *input_norm = nullptr, *post_norm = nullptr, *gate = nullptr;
    const void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    const void *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr;
    const void *q_norm = nullptr, *k_norm = nullptr, *shared_expert_gate = nullptr;
    const void* shared[3] = {nullptr, nullptr, nullptr};  // gate, up, down
    const void* dense[3] = {nullptr, nullptr, nullptr};
  };
  std::vector<Layer> layers;
};

void VisitTensors(const DenseWeights& w, Slots& slots, const TensorVisitor& visit) {
  auto f32 = [&](const std::vector<float>& t, const void** where) {
    visit(t.data(), int64_t(t.size() * sizeof(float)), where);
  };
  auto matrix = [&](const std::vector<float>& t, const PackedMatrix& packed, const void** where) {
    if (packed.empty()) {
      f32(t, where);
    } else {
      visit(packed.bytes.data(), int64_t(packed.bytes.size()), where);
    }
  };
  matrix(w.embedding, w.embedding_packed, &slots.embedding);
  f32(w.final_norm, &slots.final_norm);
  if (!w.lm_head.empty() || !w.lm_head_packed.empty()) matrix(w.lm_head, w.lm_head_packed, &slots.lm_head);
  slots.layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    Slots::Layer& s = slots.layers[l];
    f32(lw.input_norm, &s.input_norm);
    f32(lw.post_norm, &s.post_norm);
    matrix(lw.gate, lw.gate_packed, &s.gate);
    matrix(lw.q, lw.q_packed, &s.q);
    matrix(lw.k, lw.k_packed, &s.k);
    matrix(lw.v, lw.v_packed, &s.v);
    matrix(lw.o, lw.o_packed, &s.o);
    f32(lw.q_bias, &s.q_bias);
    f32(lw.k_bias, &s.k_bias);
    f32(lw.v_bias, &s.v_bias);
    f32(lw.q_norm, &s.q_norm);
    f32(lw.k_norm, &s.k_norm);
    matrix(lw.shared_expert_gate, lw.shared_expert_gate_packed, &s.shared_expert_gate);
    for (const auto& [mlp, where] : {std::pair{&lw.shared_expert, s.shared},
                                     std::pair{&lw.dense_mlp, s.dense}}) {
      matrix(mlp->gate, mlp->gate_packed, &where[0]);
      matrix(mlp->up, mlp->up_packed, &where[1]);
      matrix(mlp->down, mlp->down_packed, &where[2]);
    }
  }
}

// The device pointer of host vector `t`: null when it is empty (the tensor is absent).
const float* Optional(const std::vector<float>& t, const void* where) {
  return t.empty() ? nullptr : static_cast<const float*>(where);
}

// The view of a matrix held in fp32 `f32` or as stored in `packed`, at `where`, with
// `cols` columns: [0, cols] with no data when neither holds it (a tensor the layer lacks).
backend::WeightView Matrix(const void* where, const std::vector<float>& f32,
                           const PackedMatrix& packed, int64_t cols) {
  if (!packed.empty()) return backend::WeightView::FromLayout(packed.layout, where);
  return backend::WeightView::F32(f32.empty() ? nullptr : static_cast<const float*>(where),
                                  int64_t(f32.size()) / cols, cols);
}

DeviceMlp Mlp(const MlpWeights& w, const void* const where[3], int64_t h) {
  DeviceMlp d;
  if (w.empty()) return d;
  d.present = true;
  d.gate = Matrix(where[0], w.gate, w.gate_packed, h);
  d.up = Matrix(where[1], w.up, w.up_packed, h);
  d.down = Matrix(where[2], w.down, w.down_packed, d.gate.rows);
  return d;
}

}  // namespace

int64_t DeviceWeights::Bytes(const DenseWeights& w) {
  int64_t bytes = 0;
  Slots slots;
  VisitTensors(w, slots, [&](const void*, int64_t n, const void**) { bytes += n; });
  return bytes;
}

absl::StatusOr<std::unique_ptr<DeviceWeights>> DeviceWeights::Create(DenseWeights host,
                                                                     backend::Device& device) {
  const int64_t h = host.final_norm.size();
  const PackedMatrix& stored = host.embedding_packed;
  const int64_t vocab = !stored.empty() ? stored.layout.rows
                        : h > 0         ? int64_t(host.embedding.size()) / h
                                        : 0;
  auto is_table = [&](const std::vector<float>& f32, const PackedMatrix& packed) {
    return packed.empty() ? int64_t(f32.size()) == vocab * h
                          : f32.empty() && packed.layout.rows == vocab && packed.layout.cols == h;
  };
  if (h == 0 || vocab == 0 || !is_table(host.embedding, stored) ||
      (!(host.lm_head.empty() && host.lm_head_packed.empty()) &&
       !is_table(host.lm_head, host.lm_head_packed))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DeviceWeights: embedding of ", host.embedding.size(), " floats or [", stored.layout.rows,
        ", ", stored.layout.cols, "] stored, LM head of ", host.lm_head.size(), " floats or [",
        host.lm_head_packed.layout.rows, ", ", host.lm_head_packed.layout.cols,
        "] stored, final norm of ", h, " do not form [V, H] tables"));
  }
  std::unique_ptr<DeviceWeights> out(new DeviceWeights());
  out->host_ = std::move(host);
  const DenseWeights& w = out->host_;
  Slots slots;
  if (device.kind() == backend::DeviceKind::kCpu) {
    // The host vectors are the CPU's device memory: point at them.
    VisitTensors(w, slots, [](const void* src, int64_t, const void** where) { *where = src; });
  } else {
    int64_t total = 0;
    VisitTensors(w, slots, [&](const void*, int64_t n, const void**) { total += AlignUp(n); });
    absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> arena = device.Allocate(size_t(total));
    if (!arena.ok()) {
      return absl::Status(arena.status().code(),
                          absl::StrCat("dense weights (", total, " bytes) on ", device.name(),
                                       ": ", arena.status().message()));
    }
    out->arena_ = *std::move(arena);
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<backend::Stream> stream, device.CreateStream());
    char* base = out->arena_->as<char>();
    int64_t offset = 0;
    absl::Status copied;
    VisitTensors(w, slots, [&](const void* src, int64_t n, const void** where) {
      *where = base + offset;
      if (copied.ok() && n > 0) copied = device.CopyToDevice(base + offset, src, size_t(n), *stream);
      offset += AlignUp(n);
    });
    MOE_RETURN_IF_ERROR(copied);
    MOE_RETURN_IF_ERROR(stream->Synchronize());
  }

  out->embedding_ = Matrix(slots.embedding, w.embedding, w.embedding_packed, h);
  out->final_norm_ = static_cast<const float*>(slots.final_norm);
  // Tied: the embedding table is the LM head, multiplied in the format it is stored in.
  out->lm_head_ = slots.lm_head != nullptr ? Matrix(slots.lm_head, w.lm_head, w.lm_head_packed, h)
                                           : out->embedding_;
  out->layers_.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    const Slots::Layer& s = slots.layers[l];
    DeviceLayerWeights& d = out->layers_[l];
    d.input_norm = static_cast<const float*>(s.input_norm);
    d.post_norm = static_cast<const float*>(s.post_norm);
    d.gate = Matrix(s.gate, lw.gate, lw.gate_packed, h);
    d.q = Matrix(s.q, lw.q, lw.q_packed, h);
    d.k = Matrix(s.k, lw.k, lw.k_packed, h);
    d.v = Matrix(s.v, lw.v, lw.v_packed, h);
    d.o = Matrix(s.o, lw.o, lw.o_packed, d.q.rows);
    d.q_bias = Optional(lw.q_bias, s.q_bias);
    d.k_bias = Optional(lw.k_bias, s.k_bias);
    d.v_bias = Optional(lw.v_bias, s.v_bias);
    d.q_norm = Optional(lw.q_norm, s.q_norm);
    d.k_norm = Optional(lw.k_norm, s.k_norm);
    d.shared_expert = Mlp(lw.shared_expert, s.shared, h);
    d.shared_expert_gate =
        Matrix(s.shared_expert_gate, lw.shared_expert_gate, lw.shared_expert_gate_packed, h);
    d.dense_mlp = Mlp(lw.dense_mlp, s.dense, h);
  }
  // Uploaded: the host copy is no longer read.
  if (device.kind() != backend::DeviceKind::kCpu) out->host_ = DenseWeights();
  return out;
}

}  // namespace moe::coordinator
