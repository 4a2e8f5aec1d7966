// The one place absl::Status and grpc::Status are converted (their codes match 1:1).
#ifndef MOE_COMMON_GRPC_STATUS_H_
#define MOE_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace moe {

// Messages longer than kMaxStatusMessageBytes are cut (at a character boundary, marked
// "..."): an error that echoes hostile input must still fit gRPC's metadata limit, or the
// client sees RESOURCE_EXHAUSTED instead of the error.
inline constexpr size_t kMaxStatusMessageBytes = 1024;
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace moe

#endif  // MOE_COMMON_GRPC_STATUS_H_
