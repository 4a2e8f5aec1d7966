#include "common/model_dir.h"

#include <filesystem>
#include <functional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace moe {
namespace tensor_names {
std::string Embedding() { return "model.embed_tokens.weight"; }
std::string FinalNorm() { return "model.norm.weight"; }
std::string LmHead() { return "lm_head.weight"; }
std::string Layer(int layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}
std::string Expert(int layer, int expert, absl::string_view w) {
  return absl::StrCat("model.layers.", layer, ".block_sparse_moe.experts.", expert, ".", w,
                      ".weight");
}
}  // namespace tensor_names

namespace {

// Calls `check` on every tensor the config implies, with its shape; stops at the first
// error. A visitor rather than a list: a hostile config.json may imply billions of tensors,
// and the first one missing from the checkpoint ends the walk.
absl::Status ForEachExpectedTensor(
    const ModelConfig& c,
    const std::function<absl::Status(const std::string&, const std::vector<int64_t>&)>& check) {
  namespace tn = tensor_names;
  const int64_t h = c.hidden_size;
  MOE_RETURN_IF_ERROR(check(tn::Embedding(), {c.vocab_size, h}));
  MOE_RETURN_IF_ERROR(check(tn::FinalNorm(), {h}));
  if (!c.tie_word_embeddings) MOE_RETURN_IF_ERROR(check(tn::LmHead(), {c.vocab_size, h}));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    MOE_RETURN_IF_ERROR(check(tn::Layer(l, "input_layernorm.weight"), {h}));
    MOE_RETURN_IF_ERROR(check(tn::Layer(l, "post_attention_layernorm.weight"), {h}));
    MOE_RETURN_IF_ERROR(check(tn::Layer(l, "self_attn.q_proj.weight"), {c.q_dim(), h}));
    MOE_RETURN_IF_ERROR(check(tn::Layer(l, "self_attn.k_proj.weight"), {c.kv_dim(), h}));
    MOE_RETURN_IF_ERROR(check(tn::Layer(l, "self_attn.v_proj.weight"), {c.kv_dim(), h}));
    MOE_RETURN_IF_ERROR(check(tn::Layer(l, "self_attn.o_proj.weight"), {h, c.q_dim()}));
    MOE_RETURN_IF_ERROR(
        check(tn::Layer(l, "block_sparse_moe.gate.weight"), {c.num_local_experts, h}));
    for (int e = 0; e < c.num_local_experts; ++e) {
      MOE_RETURN_IF_ERROR(check(tn::Expert(l, e, "w1"), {c.intermediate_size, h}));
      MOE_RETURN_IF_ERROR(check(tn::Expert(l, e, "w3"), {c.intermediate_size, h}));
      MOE_RETURN_IF_ERROR(check(tn::Expert(l, e, "w2"), {h, c.intermediate_size}));
    }
  }
  return absl::OkStatus();
}

}  // namespace

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
  MOE_RETURN_IF_ERROR(ForEachExpectedTensor(
      dir.config,
      [&](const std::string& name, const std::vector<int64_t>& shape) -> absl::Status {
        MOE_ASSIGN_OR_RETURN(Checkpoint::TensorRef ref, dir.checkpoint->Find(name));
        if (ref.info->shape != shape) {
          return absl::InvalidArgumentError(absl::StrCat(
              ref.file->path(), ": tensor \"", name, "\" has shape ", ref.info->ShapeString(),
              " but config.json implies [", absl::StrJoin(shape, ", "), "]"));
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
