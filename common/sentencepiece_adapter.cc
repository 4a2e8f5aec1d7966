#include "common/sentencepiece_adapter.h"

#include <dlfcn.h>

#include <mutex>

#include "common/plugin_loader.h"

namespace moe::internal {
namespace {

using LoadFn = SentencePieceAdapter* (*)(const char*, std::string*);

LoadFn LoadPlugin(std::string* error) {
  static std::once_flag once;
  static LoadFn fn = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    // RTLD_DEEPBIND: the plugin's own protobuf copy stays private (the header says why).
    absl::StatusOr<void*> symbol = OpenPluginSymbol(
        PluginCandidates("libmoe_sentencepiece.so", MOE_SENTENCEPIECE_PLUGIN),
        "MoeSentencePieceLoad", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (symbol.ok()) {
      fn = reinterpret_cast<LoadFn>(*symbol);
    } else {
      load_error = std::string(symbol.status().message());
    }
  });
  if (fn == nullptr) *error = "cannot load the sentencepiece plugin: " + load_error;
  return fn;
}

}  // namespace

std::unique_ptr<SentencePieceAdapter> LoadSentencePiece(const std::string& path, std::string* error) {
  LoadFn load = LoadPlugin(error);
  if (load == nullptr) return nullptr;
  return std::unique_ptr<SentencePieceAdapter>(load(path.c_str(), error));
}

}  // namespace moe::internal
