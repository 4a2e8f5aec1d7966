// `moe convert`: a Hugging Face Mixtral directory to the offload layout
// (common/quant/offload_model.h), quantizing attention and experts as asked. Streams one
// tensor (one expert) at a time from the mapped safetensors, so memory stays at one
// expert's fp32 copy whatever the model's size.
#ifndef MOE_TOOLS_CLI_CONVERT_H_
#define MOE_TOOLS_CLI_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/quant/hqq.h"
#include "common/quant/offload_model.h"

namespace moe {

struct ConvertOptions {
  std::string in_dir;
  std::string out_dir;
  int attn_bits = 4;     // 4, 8 or 16
  int expert_bits = 3;   // 2, 3, 4 or 16
  int64_t group_size = quant::kDefaultGroupSize;
  quant::Method method = quant::Method::kHqq;
  bool progress = true;  // progress bar with ETA on stderr
};

// Converts and returns the manifest written. Errors name the file or option at fault.
absl::StatusOr<quant::OffloadManifest> Convert(const ConvertOptions& options);

// What the offload layout of `config` takes under a scheme, by the same formulas the
// writer uses (no weights needed): `moe sizes`.
struct SchemeSizes {
  int64_t dense_bytes = 0;        // dense.bin
  int64_t expert_blob_bytes = 0;  // one expert as copied
  int64_t experts_bytes = 0;      // experts.bin (blobs at their 4096-byte stride)
};
absl::StatusOr<SchemeSizes> ComputeSchemeSizes(const ModelConfig& config, int attn_bits,
                                               int expert_bits, int64_t group_size,
                                               DType dtype16 = DType::kBF16);

}  // namespace moe

#endif  // MOE_TOOLS_CLI_CONVERT_H_
