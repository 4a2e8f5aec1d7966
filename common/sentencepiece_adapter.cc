#include "common/sentencepiece_adapter.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <mutex>

namespace moe::internal {
namespace {

using LoadFn = SentencePieceAdapter* (*)(const char*, std::string*);

// Where the plugin may be: beside the executable (bundles), in ../lib, and where the
// build put it.
std::vector<std::string> Candidates() {
  std::vector<std::string> out;
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, n);
    dir = dir.substr(0, dir.rfind('/'));
    out.push_back(dir + "/libmoe_sentencepiece.so");
    out.push_back(dir + "/../lib/libmoe_sentencepiece.so");
  }
  out.push_back(MOE_SENTENCEPIECE_PLUGIN);
  return out;
}

LoadFn LoadPlugin(std::string* error) {
  static std::once_flag once;
  static LoadFn fn = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    for (const std::string& path : Candidates()) {
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        load_error += std::string(load_error.empty() ? "" : "; ") + ::dlerror();
        continue;
      }
      fn = reinterpret_cast<LoadFn>(::dlsym(handle, "MoeSentencePieceLoad"));
      if (fn != nullptr) return;
      load_error += "; " + path + " lacks MoeSentencePieceLoad";
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
