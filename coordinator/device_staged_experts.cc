#include "coordinator/device_staged_experts.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe::coordinator {

absl::Status HostStagedExperts::RunExperts(int layer, absl::Span<const float> x, int64_t n,
                                           absl::Span<const int32_t> ids,
                                           absl::Span<const float> weights, absl::Span<float> out,
                                           ExpertCallStats* stats) {
  if (x.size() != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: x has ", x.size(),
                                                   " floats but out ", out.size()));
  }
  MOE_RETURN_IF_ERROR(device_.BindThread());
  std::vector<float> host_x(x.size()), host_out(out.size());
  MOE_RETURN_IF_ERROR(
      backend::CopyToHostSync(device_, host_x.data(), x.data(), x.size() * sizeof(float)));
  MOE_RETURN_IF_ERROR(host_backend_->RunExperts(layer, host_x, n, ids, weights,
                                                absl::MakeSpan(host_out), stats));
  return backend::CopyToDeviceSync(device_, out.data(), host_out.data(),
                                   out.size() * sizeof(float));
}

}  // namespace moe::coordinator
