#include "common/grpc_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/unicode_text.h"

namespace moe {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  absl::string_view message = status.message();
  std::string text;
  if (message.size() > kMaxStatusMessageBytes) {
    text = absl::StrCat(message.substr(0, Utf8BoundaryAtOrBefore(message, kMaxStatusMessageBytes)),
                        "...");
  } else {
    text = std::string(message);
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), text);
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace moe
