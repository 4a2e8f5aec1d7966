// Which compute backends this build has and what devices they see. The registry
// (registry.cc) is the only place that knows whether CUDA was compiled in; a build
// without it still lists "cuda", which answers "not compiled with CUDA".
#ifndef MOE_COMMON_BACKEND_BACKEND_H_
#define MOE_COMMON_BACKEND_BACKEND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::backend {

struct DeviceInfo {
  std::string name;          // "cpu (2 threads)", "NVIDIA H100 80GB HBM3"
  int64_t memory_bytes = 0;  // device memory (0 for the CPU: host RAM is not capped here)
};

struct BackendInfo {
  std::string name;    // "cpu" or "cuda"
  bool compiled = false;
  // The devices it can use, or why it cannot (not compiled, no device, driver error).
  absl::StatusOr<std::vector<DeviceInfo>> devices;
};

std::vector<BackendInfo> ListBackends();
// One backend by name; NOT_FOUND for names no build knows.
absl::StatusOr<BackendInfo> FindBackend(absl::string_view name);

}  // namespace moe::backend

#endif  // MOE_COMMON_BACKEND_BACKEND_H_
