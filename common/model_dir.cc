#include "common/model_dir.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace moe {

absl::StatusOr<ModelDir> ModelDir::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": not a directory"));
  }
  ModelDir dir;
  dir.path = path;
  const std::string tokenizer = Tokenizer::FindTokenizerFile(path);
  if (quant::OffloadModel::IsOffloadDir(path)) {
    MOE_ASSIGN_OR_RETURN(dir.offload, quant::OffloadModel::Open(path));
    dir.config = dir.offload->manifest().config;
    dir.tokenizer_path = tokenizer;
    return dir;
  }
  MOE_ASSIGN_OR_RETURN(dir.config, ModelConfig::FromFile((fs::path(path) / "config.json").string()));
  MOE_ASSIGN_OR_RETURN(dir.checkpoint, Checkpoint::Open(path));
  // Every tensor the config implies, with its shape; the first missing one ends the walk
  // (a hostile config.json may imply billions).
  MOE_RETURN_IF_ERROR(ForEachModelTensor(
      dir.config, /*experts=*/true, [&](const ModelTensor& t) -> absl::Status {
        MOE_ASSIGN_OR_RETURN(Checkpoint::TensorRef ref, dir.checkpoint->Find(t.name));
        if (ref.info->shape != t.shape) {
          return absl::InvalidArgumentError(absl::StrCat(
              ref.file->path(), ": tensor \"", t.name, "\" has shape ", ref.info->ShapeString(),
              " but config.json implies [", absl::StrJoin(t.shape, ", "), "]"));
        }
        return absl::OkStatus();
      }));
  dir.tokenizer_path = tokenizer;
  return dir;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> ModelDir::LoadTokenizer() const {
  if (tokenizer_path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": no tokenizer.model or tokenizer.json in the model directory"));
  }
  return Tokenizer::LoadFromDirectory(path, config);
}

}  // namespace moe
