// Parsing requests ourselves, so that bad bytes get a useful status. gRPC's own parse of a
// proto3 message fails on a string field that is not valid UTF-8, and the client sees
// INTERNAL with no details; ParseProtoChecked says INVALID_ARGUMENT and names the field
// ("messages[1].content is not valid UTF-8 ...").
#ifndef MOE_COMMON_PROTO_PARSE_H_
#define MOE_COMMON_PROTO_PARSE_H_

#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace moe {

// Parses `wire` into `message` (cleared first). INVALID_ARGUMENT when the bytes are not a
// message of that type, or when a string field, at any depth, is not valid UTF-8.
absl::Status ParseProtoChecked(absl::string_view wire, google::protobuf::Message* message);
// The same for a gRPC request buffer.
absl::Status ParseProtoChecked(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);

}  // namespace moe

#endif  // MOE_COMMON_PROTO_PARSE_H_
