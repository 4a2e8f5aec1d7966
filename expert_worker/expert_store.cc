#include "expert_worker/expert_store.h"


#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_device.h"
#include "common/logging.h"
#include "common/mapped_file.h"
#include "common/model_dir.h"
#include "common/status.h"

namespace moe::expert_worker {

backend::Device& DefaultCpuDevice() {
  static cpu::CpuDevice* device = new cpu::CpuDevice();  // never destroyed: outlives all users
  return *device;
}

ExpertStore::ExpertStore(ExpertLayout layout, int layers, int experts, size_t stride,
                         backend::Device* device, std::unique_ptr<backend::DeviceBuffer> memory,
                         bool registered)
    : layout_(layout), num_layers_(layers), num_experts_(experts), stride_(stride),
      device_(device), memory_(std::move(memory)), registered_(registered) {}

absl::StatusOr<std::unique_ptr<ExpertStore>> ExpertStore::Allocate(ExpertLayout layout,
                                                                    int layers, int experts,
                                                                    size_t stride,
                                                                    backend::Device* device) {
  const size_t total = stride * layers * experts;
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> memory = device->AllocatePinnedHost(total);
  if (!memory.ok()) {
    return absl::Status(memory.status().code(),
                        absl::StrCat("expert store: cannot allocate ", total,
                                     " bytes of pinned host memory on ", device->name(), ": ",
                                     memory.status().message()));
  }
  return std::unique_ptr<ExpertStore>(new ExpertStore(layout, layers, experts, stride, device,
                                                      *std::move(memory), /*registered=*/false));
}

absl::StatusOr<std::unique_ptr<ExpertStore>> ExpertStore::Generate(
    ExpertLayout layout, int layers, int experts, backend::Device* device,
    const std::function<void(int, int, uint8_t*)>& fill) {
  if (device == nullptr) device = &DefaultCpuDevice();
  if (layers < 1 || experts < 1 || layout.bytes() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("expert store: cannot generate ", layers,
                                                   " layers x ", experts, " experts of ",
                                                   layout.bytes(), " bytes"));
  }
  const size_t stride = BlobStride(layout);
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store,
                       Allocate(layout, layers, experts, stride, device));
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      fill(l, e, reinterpret_cast<uint8_t*>(const_cast<float*>(store->Expert(l, e))));
    }
  }
  return store;
}

namespace {

// The one 16-bit type every expert matrix of the checkpoint is stored in, if there is one:
// then the store keeps them as stored (a 16-bit ExpertBlobLayout), else in fp32.
std::optional<DType> Common16BitDType(const Checkpoint& checkpoint, const ModelConfig& config) {
  std::optional<DType> common;
  for (int l = 0; l < config.num_expert_layers(); ++l) {
    for (int e = 0; e < config.num_local_experts; ++e) {
      for (const char* w : {"w1", "w3", "w2"}) {
        absl::StatusOr<Checkpoint::TensorRef> ref =
            checkpoint.Find(tensor_names::Expert(config, config.DecoderLayer(l), e, w));
        if (!ref.ok()) return std::nullopt;  // ReadF32 below names what is missing
        const DType d = ref->info->dtype;
        if ((d != DType::kBF16 && d != DType::kF16) || (common && *common != d)) return std::nullopt;
        common = d;
      }
    }
  }
  return common;
}

// Copies a 16-bit checkpoint matrix, checked to be [rows, cols] of `dtype`, into `dst`.
absl::Status CopyStored16(const Checkpoint& checkpoint, const std::string& name, int64_t rows,
                          int64_t cols, DType dtype, uint8_t* dst) {
  MOE_ASSIGN_OR_RETURN(Checkpoint::TensorRef ref, checkpoint.Find(name));
  if (ref.info->dtype != dtype || ref.info->shape != std::vector<int64_t>{rows, cols}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\": ", DTypeName(ref.info->dtype), " ", ref.info->ShapeString(),
        ", expected ", DTypeName(dtype), " [", rows, ", ", cols, "]"));
  }
  const absl::Span<const uint8_t> bytes = ref.file->Data(*ref.info);
  std::memcpy(dst, bytes.data(), size_t(rows * cols) * 2);
  ReleaseMappedPages(bytes.data(), bytes.size());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertStore>> ExpertStore::Load(const Checkpoint& checkpoint,
                                                                const ModelConfig& config,
                                                                backend::Device* device) {
  if (device == nullptr) device = &DefaultCpuDevice();
  ExpertLayout layout{config.hidden_size, config.intermediate_size, std::nullopt};
  const std::optional<DType> dtype16 = Common16BitDType(checkpoint, config);
  if (dtype16) {  // 16-bit experts stay 16-bit: the kernels multiply them as stored
    quant::MatrixSpec spec;
    spec.bits = 16;
    spec.dtype16 = *dtype16;
    quant::ExpertBlobLayout packed;
    MOE_RETURN_IF_ERROR(quant::ExpertBlobLayout::Compute(config, spec, &packed));
    layout.packed = packed;
  }
  const size_t stride = BlobStride(layout);
  // The sparse layers only (ModelConfig::ExpertLayer): dense ones have no experts.
  const int layers = static_cast<int>(config.num_expert_layers());
  const int experts = static_cast<int>(config.num_local_experts);
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store,
                       Allocate(layout, layers, experts, stride, device));
  const int64_t h = layout.hidden, i = layout.intermediate;
  namespace tn = tensor_names;
  for (int l = 0; l < layers; ++l) {
    const int decoder_layer = config.DecoderLayer(l);
    auto name = [&](int e, const char* w) { return tn::Expert(config, decoder_layer, e, w); };
    for (int e = 0; e < experts; ++e) {
      float* blob = const_cast<float*>(store->Expert(l, e));
      if (layout.packed) {
        const quant::ExpertBlobLayout& p = *layout.packed;
        auto* bytes = reinterpret_cast<uint8_t*>(blob);
        MOE_RETURN_IF_ERROR(CopyStored16(checkpoint, name(e, "w1"), i, h, *dtype16, bytes + p.w1_offset));
        MOE_RETURN_IF_ERROR(CopyStored16(checkpoint, name(e, "w3"), i, h, *dtype16, bytes + p.w3_offset));
        MOE_RETURN_IF_ERROR(CopyStored16(checkpoint, name(e, "w2"), h, i, *dtype16, bytes + p.w2_offset));
        continue;
      }
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(name(e, "w1"), {i, h}, blob + layout.w1_offset()));
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(name(e, "w3"), {i, h}, blob + layout.w3_offset()));
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(name(e, "w2"), {h, i}, blob + layout.w2_offset()));
    }
  }
  return store;
}

namespace {

// Whether the mapped file's blobs sit where the store would put them: the first on a
// page boundary, every other `stride` bytes further, in (layer, expert) order.
bool EvenlyStrided(const quant::OffloadModel& offload, int layers, int experts, size_t stride) {
  const uint8_t* base = offload.ExpertBlob(0, 0);
  if (reinterpret_cast<uintptr_t>(base) % ExpertStore::kBlobAlignment != 0) return false;
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      if (offload.ExpertBlob(l, e) != base + stride * (size_t(l) * experts + e)) return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertStore>> ExpertStore::Load(const ModelDir& dir,
                                                                backend::Device* device,
                                                                MappedBlobs mapped) {
  if (dir.offload == nullptr) return Load(*dir.checkpoint, dir.config, device);
  if (device == nullptr) device = &DefaultCpuDevice();
  const quant::OffloadManifest& m = dir.offload->manifest();
  ExpertLayout layout{m.config.hidden_size, m.config.intermediate_size, std::nullopt};
  layout.packed = m.expert;
  const size_t stride = m.expert.blob_stride;
  const int layers = static_cast<int>(m.config.num_expert_layers());
  const int experts = static_cast<int>(m.config.num_local_experts);
  if (stride % kBlobAlignment != 0 || stride < size_t(m.expert.blob_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("expert store: blob stride ", stride,
                                                   " is not a multiple of ", kBlobAlignment,
                                                   " holding a ", m.expert.blob_bytes, "-byte blob"));
  }
  const bool want_register =
      mapped == MappedBlobs::kRegister ||
      (mapped == MappedBlobs::kAuto && device->kind() != backend::DeviceKind::kCpu);
  if (want_register && EvenlyStrided(*dir.offload, layers, experts, stride)) {
    // Up to the last blob's end, rounded to its page (still inside the file's mapping).
    const size_t span = stride * (size_t(layers) * experts - 1) + size_t(m.expert.blob_bytes);
    const size_t bytes = (span + kBlobAlignment - 1) / kBlobAlignment * kBlobAlignment;
    void* base = const_cast<uint8_t*>(dir.offload->ExpertBlob(0, 0));
    absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> registered =
        device->RegisterHost(base, bytes, /*read_only=*/true);
    if (registered.ok()) {
      return std::unique_ptr<ExpertStore>(new ExpertStore(layout, layers, experts, stride, device,
                                                          *std::move(registered),
                                                          /*registered=*/true));
    }
    MOE_LOG(WARNING) << "expert store: cannot register the mapped expert file in place ("
                     << registered.status() << "); copying it into pinned memory";
  }
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store,
                       Allocate(layout, layers, experts, stride, device));
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      std::memcpy(const_cast<float*>(store->Expert(l, e)), dir.offload->ExpertBlob(l, e),
                  m.expert.blob_bytes);
      ReleaseMappedPages(dir.offload->ExpertBlob(l, e), m.expert.blob_bytes);
    }
  }
  return store;
}

const float* ExpertStore::Expert(int layer, int expert) const {
  MOE_CHECK(layer >= 0 && layer < num_layers_ && expert >= 0 && expert < num_experts_)
      << "expert (" << layer << ", " << expert << ") out of range";
  const auto* base = static_cast<const char*>(memory_->data());
  return reinterpret_cast<const float*>(base + stride_ * (size_t(layer) * num_experts_ + expert));
}

}  // namespace moe::expert_worker
