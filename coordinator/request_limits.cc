#include "coordinator/request_limits.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/unicode_text.h"

namespace moe::coordinator {
namespace {

absl::Status TooLarge(absl::string_view field, uint64_t bytes, int64_t limit) {
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", bytes,
                                                 " bytes, above the limit of ", limit,
                                                 " (--max-request-bytes)"));
}

}  // namespace

absl::Status CheckRequestSize(const v1::GenerateRequest& request, const RequestLimits& limits) {
  if (request.prompt().size() > uint64_t(limits.max_request_bytes)) {
    return TooLarge("prompt", request.prompt().size(), limits.max_request_bytes);
  }
  MOE_RETURN_IF_ERROR(CheckUtf8("prompt", request.prompt()));
  if (request.messages_size() > limits.max_messages) {
    return absl::InvalidArgumentError(absl::StrCat("messages has ", request.messages_size(),
                                                   " entries, above the limit of ",
                                                   limits.max_messages));
  }
  uint64_t message_bytes = 0;  // at most messages x 2 x 64 MiB (the gRPC cap): no overflow
  for (int i = 0; i < request.messages_size(); ++i) {
    const auto& m = request.messages(i);
    message_bytes += m.role().size() + m.content().size();
    if (message_bytes > uint64_t(limits.max_request_bytes)) {
      return TooLarge(absl::StrCat("messages[0..", i, "]"), message_bytes,
                      limits.max_request_bytes);
    }
    MOE_RETURN_IF_ERROR(CheckUtf8(absl::StrCat("messages[", i, "].role"), m.role()));
    MOE_RETURN_IF_ERROR(CheckUtf8(absl::StrCat("messages[", i, "].content"), m.content()));
  }
  if (request.stop_size() > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("stop has ", request.stop_size(),
                                                   " strings, above the limit of ",
                                                   limits.max_stop_strings));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    if (request.stop(i).size() > uint64_t(limits.max_stop_bytes)) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is ", request.stop(i).size(),
                                                     " bytes, above the limit of ",
                                                     limits.max_stop_bytes));
    }
    MOE_RETURN_IF_ERROR(CheckUtf8(absl::StrCat("stop[", i, "]"), request.stop(i)));
  }
  return absl::OkStatus();
}

absl::Status CheckRequestSize(const v1::TokenizeRequest& request, const RequestLimits& limits) {
  if (request.text().size() > uint64_t(limits.max_request_bytes)) {
    return TooLarge("text", request.text().size(), limits.max_request_bytes);
  }
  return CheckUtf8("text", request.text());
}

}  // namespace moe::coordinator
