// A model directory opened and checked: config.json, the safetensors checkpoint (single
// or sharded), and its tokenizer (tokenizer.model or tokenizer.json) when present; or the offload layout `moe convert`
// writes (manifest.json, dense.bin, experts.bin), recognised by its manifest.
#ifndef MOE_COMMON_MODEL_DIR_H_
#define MOE_COMMON_MODEL_DIR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/model_tensors.h"
#include "common/quant/offload_model.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"

namespace moe {

struct ModelDir {
  std::string path;
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;  // Hugging Face layout; null for a converted one
  std::unique_ptr<quant::OffloadModel> offload;  // converted layout; null for Hugging Face
  std::string tokenizer_path;  // Tokenizer::FindTokenizerFile: empty when there is none

  // Opens `path`; every tensor the config implies must be present with its shape.
  static absl::StatusOr<ModelDir> Open(const std::string& path);
  // Loads the tokenizer with the model's chat template (Tokenizer::LoadFromDirectory);
  // FAILED_PRECONDITION when the directory has none.
  absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer() const;
};


}  // namespace moe

#endif  // MOE_COMMON_MODEL_DIR_H_
