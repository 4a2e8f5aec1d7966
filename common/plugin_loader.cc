#include "common/plugin_loader.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moe {

std::vector<std::string> PluginCandidates(const std::string& file_name,
                                          const std::string& build_path) {
  std::vector<std::string> out;
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, n);
    dir = dir.substr(0, dir.rfind('/'));
    out.push_back(dir + "/" + file_name);
    out.push_back(dir + "/../lib/" + file_name);
  }
  out.push_back(build_path);
  return out;
}

absl::StatusOr<void*> OpenPluginSymbol(const std::vector<std::string>& candidates,
                                       const char* symbol, int dlopen_flags) {
  std::vector<std::string> errors;
  for (const std::string& path : candidates) {
    void* handle = ::dlopen(path.c_str(), dlopen_flags);
    if (handle == nullptr) {
      const char* why = ::dlerror();
      errors.push_back(why != nullptr ? why : path + ": dlopen failed");
      continue;
    }
    void* fn = ::dlsym(handle, symbol);
    if (fn != nullptr) return fn;
    errors.push_back(absl::StrCat(path, " lacks ", symbol));
  }
  return absl::FailedPreconditionError(absl::StrJoin(errors, "; "));
}

}  // namespace moe
