// Finding and opening the project's dlopen'ed modules (the sentencepiece plugin, the CUDA
// backend): one search order for all of them, so that a bundle and a build tree find
// their own copy the same way.
#ifndef MOE_COMMON_PLUGIN_LOADER_H_
#define MOE_COMMON_PLUGIN_LOADER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

// Where `file_name` may be: beside the executable (bundles), in <exe dir>/../lib (the
// bundle's lib/), then `build_path` (where the build put it, compiled in).
std::vector<std::string> PluginCandidates(const std::string& file_name,
                                          const std::string& build_path);

// dlopens the first of `candidates` that opens (with `dlopen_flags`) and returns its
// `symbol`. FAILED_PRECONDITION naming every path tried and dlerror's text for each when
// none opens or the one that opens lacks the symbol. Libraries stay loaded for the
// process's life (their code backs objects handed out).
absl::StatusOr<void*> OpenPluginSymbol(const std::vector<std::string>& candidates,
                                       const char* symbol, int dlopen_flags);

}  // namespace moe

#endif  // MOE_COMMON_PLUGIN_LOADER_H_
