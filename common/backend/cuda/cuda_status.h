// Every CUDA runtime call goes through MOE_CUDA_RETURN_IF_ERROR, which turns an error
// into an absl::Status naming the call and what it was doing.
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_STATUS_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::cuda {

inline absl::Status CudaStatus(cudaError_t error, const char* call, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  // Clear the thread's last error (a no-op for sticky ones), or cudaGetLastError after
  // the next, successful launch would report this one again.
  (void)cudaGetLastError();
  const auto code = error == cudaErrorMemoryAllocation ? absl::StatusCode::kResourceExhausted
                    : error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver
                        ? absl::StatusCode::kUnavailable
                        : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat(what, ": ", call, " failed: ", cudaGetErrorName(error),
                                         " (", cudaGetErrorString(error), ")"));
}

}  // namespace moe::cuda

#define MOE_CUDA_RETURN_IF_ERROR(call, what)                                    \
  do {                                                                          \
    ::absl::Status moe_cuda_status_ = ::moe::cuda::CudaStatus((call), #call, what); \
    if (!moe_cuda_status_.ok()) return moe_cuda_status_;                        \
  } while (0)

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_STATUS_H_
