// The one place that switches on CUDA being compiled in.
#include <omp.h>

#include "absl/strings/str_cat.h"
#include "common/backend/backend.h"
#if MOE_HAVE_CUDA
#include "common/backend/cuda/cuda_device.h"
#endif

namespace moe::backend {

std::vector<BackendInfo> ListBackends() {
  std::vector<BackendInfo> out;
  out.push_back({"cpu", true,
                 std::vector<DeviceInfo>{{absl::StrCat("cpu (", omp_get_max_threads(), " threads)"), 0}}});
#if MOE_HAVE_CUDA
  out.push_back({"cuda", true, cuda::ListDevices()});
#else
  out.push_back({"cuda", false,
                 absl::UnimplementedError("not compiled with CUDA (configure with -DMOE_CUDA=ON)")});
#endif
  return out;
}

absl::StatusOr<BackendInfo> FindBackend(absl::string_view name) {
  for (BackendInfo& b : ListBackends()) {
    if (b.name == name) return std::move(b);
  }
  return absl::NotFoundError(absl::StrCat("unknown backend \"", name, "\" (cpu or cuda)"));
}

}  // namespace moe::backend
