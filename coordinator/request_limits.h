// Bounds on what one client request may make the coordinator spend, checked before any
// work (tokenizing included): the bytes of its text, the number and length of its stop
// strings and messages, and whether that text is valid UTF-8. Shared by every front end
// (gRPC, HTTP), so a limit means the same everywhere.
#ifndef MOE_COORDINATOR_REQUEST_LIMITS_H_
#define MOE_COORDINATOR_REQUEST_LIMITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "moe/v1/generation.pb.h"

namespace moe::coordinator {

struct RequestLimits {
  // The prompt, or every message's role and content together, or a Tokenize text.
  int64_t max_request_bytes = 1 << 20;
  int max_messages = 1024;
  int max_stop_strings = 16;
  int64_t max_stop_bytes = 256;  // each
};

// INVALID_ARGUMENT naming the field, its size and the limit (or the first bad UTF-8
// byte); nothing of the request's text is echoed.
absl::Status CheckRequestSize(const v1::GenerateRequest& request, const RequestLimits& limits);
absl::Status CheckRequestSize(const v1::TokenizeRequest& request, const RequestLimits& limits);

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_REQUEST_LIMITS_H_
