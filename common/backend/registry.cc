// The one place that switches on CUDA being compiled in: the backend list and the CUDA
// module's loading (cuda_module.h).
#include <dlfcn.h>
#include <omp.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/backend/backend.h"
#include "common/backend/cuda_module.h"
#include "common/logging.h"
#include "common/plugin_loader.h"

namespace moe::backend {
namespace {

#if MOE_HAVE_CUDA
absl::StatusOr<const CudaModule*> OpenCudaModule() {
  const char* forced = std::getenv("MOE_CUDA_MODULE");
  const std::vector<std::string> candidates =
      forced != nullptr && *forced != '\0'
          ? std::vector<std::string>{forced}
          : PluginCandidates("libmoe_cuda.so", MOE_CUDA_MODULE_BUILD_PATH);
  // RTLD_LOCAL: nothing of the module (or of cuBLAS) joins the program's symbol scope.
  absl::StatusOr<void*> entry = OpenPluginSymbol(candidates, "MoeCudaModule", RTLD_NOW | RTLD_LOCAL);
  if (!entry.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the CUDA module: ", entry.status().message()));
  }
  using EntryFn = const CudaModule* (*)(int, int, std::string*);
  std::string error;
  const CudaModule* module = reinterpret_cast<EntryFn>(*entry)(
      kCudaModuleAbi, static_cast<int>(logging::MinSeverity()), &error);
  if (module == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot use the CUDA module: ", error));
  }
  return module;
}
#endif

}  // namespace

absl::StatusOr<const CudaModule*> LoadCudaModule() {
#if MOE_HAVE_CUDA
  // Loaded once; a failure is remembered too (dlopen would fail the same way again).
  static const absl::StatusOr<const CudaModule*>* const loaded =
      new absl::StatusOr<const CudaModule*>(OpenCudaModule());
  return *loaded;
#else
  return absl::UnimplementedError("not compiled with CUDA (configure with -DMOE_CUDA=ON)");
#endif
}

std::vector<BackendInfo> ListBackends() {
  std::vector<BackendInfo> out;
  out.push_back({"cpu", true,
                 std::vector<DeviceInfo>{{absl::StrCat("cpu (", omp_get_max_threads(), " threads)"), 0}}});
  absl::StatusOr<const CudaModule*> cuda = LoadCudaModule();
  if (cuda.ok()) {
    out.push_back({"cuda", true, (*cuda)->ListDevices()});
  } else {
    out.push_back({"cuda", MOE_HAVE_CUDA != 0, cuda.status()});
  }
  return out;
}

absl::StatusOr<BackendInfo> FindBackend(absl::string_view name) {
  for (BackendInfo& b : ListBackends()) {
    if (b.name == name) return std::move(b);
  }
  return absl::NotFoundError(absl::StrCat("unknown backend \"", name, "\" (cpu or cuda)"));
}

}  // namespace moe::backend
