// The offload layout written by `moe convert` and read by both processes:
//   DIR/manifest.json    format version, the model config, the schemes, every dense
//                        tensor's place in dense.bin and every expert blob's in experts.bin
//   DIR/dense.bin        dense tensors: attention projections at --attn-bits, embeddings,
//                        norms, routers, LM head and a family's biases, q/k norms, shared
//                        experts and dense MLPs in 16 bits (64-byte aligned each)
//   DIR/experts.bin      one 4096-aligned blob per (expert layer, expert): w1 | w3 | w2, each a
//                        matrix in the layout of quant_format.h, so one copy moves one expert
//   DIR/tokenizer.model  copied from the source (or tokenizer.json, and
//                        tokenizer_config.json when the source has it)
// Every field is validated against the config and the files' sizes before any weight is
// read; errors name the file and what is wrong. docs/quantization.md documents it.
#ifndef MOE_COMMON_QUANT_OFFLOAD_MODEL_H_
#define MOE_COMMON_QUANT_OFFLOAD_MODEL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/mapped_file.h"
#include "common/model_config.h"
#include "common/quant/quant_format.h"
#include "nlohmann/json.hpp"

namespace moe::quant {

inline constexpr int kOffloadFormatVersion = 1;
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kDenseFile[] = "dense.bin";
inline constexpr char kExpertsFile[] = "experts.bin";
inline constexpr int64_t kBlobAlignment = 4096;
// Largest manifest read (Mixtral-8x7B's is about 60 KiB).
inline constexpr size_t kMaxManifestBytes = size_t{64} << 20;

// Where w1, w3 and w2 sit inside one expert blob, in bytes.
struct ExpertBlobLayout {
  MatrixLayout w1, w3, w2;  // w1, w3: [I, H]; w2: [H, I]
  int64_t w1_offset = 0, w3_offset = 0, w2_offset = 0;
  int64_t blob_bytes = 0;   // what one copy moves
  int64_t blob_stride = 0;  // blob_bytes rounded up to kBlobAlignment

  static absl::Status Compute(const ModelConfig& config, const MatrixSpec& spec,
                              ExpertBlobLayout* out);
};

struct DenseTensor {
  std::string name;
  std::vector<int64_t> shape;  // as in the Hugging Face checkpoint
  MatrixLayout layout;         // 1-D tensors are one row
  int64_t offset = 0;          // in dense.bin
};

struct OffloadManifest {
  int version = kOffloadFormatVersion;
  nlohmann::json config_json;  // the source config.json, verbatim
  ModelConfig config;
  std::string method;          // "hqq" or "rtn" (informational)
  MatrixSpec attn_spec;        // q/k/v/o projections
  MatrixSpec expert_spec;      // w1, w3, w2
  DType dtype16 = DType::kBF16;  // everything else (embeddings, norms, routers, LM head)
  int64_t dense_bytes = 0;     // size of dense.bin
  std::vector<DenseTensor> dense;
  int64_t experts_bytes = 0;   // size of experts.bin
  ExpertBlobLayout expert;
  // [layer * experts + expert] -> offset in experts.bin; layer counts the sparse layers
  // only (ModelConfig::ExpertLayer), like the expert worker.
  std::vector<int64_t> blob_offsets;
  // Relative weight error ||W - W^||/||W|| measured at conversion (-1: not recorded).
  double attn_rel_error = -1, expert_rel_error = -1;

  const DenseTensor* FindDense(absl::string_view name) const;
  int64_t blob_offset(int layer, int expert) const {
    return blob_offsets[size_t(layer) * config.num_local_experts + expert];
  }
  std::string Scheme() const;  // "attn 4-bit/g64, experts 3-bit/g64 (hqq)"
};

// The dense tensors a config implies, in file order, with the spec each is stored in.
void ForEachDenseTensor(
    const ModelConfig& config, const MatrixSpec& attn, DType dtype16,
    const std::function<void(const std::string& name, const std::vector<int64_t>& shape,
                             const MatrixSpec& spec)>& visit);

// Parses and validates manifest text (everything but the data files' existence and
// sizes). `source` names the file in errors.
absl::StatusOr<OffloadManifest> ParseOffloadManifest(absl::string_view text,
                                                     absl::string_view source);
std::string SerializeOffloadManifest(const OffloadManifest& manifest);

// An opened offload directory: the manifest and both data files mapped read-only.
// Immutable after Open; safe to share between threads.
class OffloadModel {
 public:
  // True when `dir` holds a manifest.json (the offload layout rather than Hugging Face).
  static bool IsOffloadDir(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<OffloadModel>> Open(const std::string& dir);

  const OffloadManifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // The tensor `name` as stored; NOT_FOUND naming the file when absent.
  absl::StatusOr<MatrixView> Dense(absl::string_view name) const;
  // Converts a dense tensor (any spec) to fp32 into dst[product of its shape].
  absl::Status ReadDenseF32(absl::string_view name, float* dst) const;
  // The bytes of expert (layer, expert)'s blob (manifest().expert.blob_bytes long).
  const uint8_t* ExpertBlob(int layer, int expert) const;

 private:
  OffloadModel() = default;
  std::string dir_;
  OffloadManifest manifest_;
  std::unique_ptr<MappedFile> dense_;
  std::unique_ptr<MappedFile> experts_;
};

}  // namespace moe::quant

#endif  // MOE_COMMON_QUANT_OFFLOAD_MODEL_H_
