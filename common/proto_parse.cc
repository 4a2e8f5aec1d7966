#include "common/proto_parse.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/unicode_text.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"

namespace moe {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

constexpr int kMaxDepth = 32;  // deeper nesting than any of our messages is refused

// Checks every string field of `fields` (read as a `type`) and recurses into messages.
absl::Status CheckStrings(const UnknownFieldSet& fields, const Descriptor& type,
                          const std::string& path, int depth) {
  if (depth > kMaxDepth) return absl::InvalidArgumentError(absl::StrCat(path, " nests too deep"));
  std::map<int, int> seen;  // field number -> occurrences so far (repeated fields' index)
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& field = fields.field(i);
    const FieldDescriptor* fd = type.FindFieldByNumber(field.number());
    const int index = seen[field.number()]++;
    if (fd == nullptr || field.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const std::string name = absl::StrCat(path.empty() ? "" : path + ".", fd->name(),
                                          fd->is_repeated() ? absl::StrCat("[", index, "]") : "");
    if (fd->type() == FieldDescriptor::TYPE_STRING) {
      MOE_RETURN_IF_ERROR(CheckUtf8(name, field.length_delimited()));
    } else if (fd->type() == FieldDescriptor::TYPE_MESSAGE) {
      UnknownFieldSet nested;
      if (!nested.ParseFromString(field.length_delimited())) {
        return absl::InvalidArgumentError(absl::StrCat(name, " is not a valid ",
                                                       fd->message_type()->full_name()));
      }
      MOE_RETURN_IF_ERROR(CheckStrings(nested, *fd->message_type(), name, depth + 1));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseProtoChecked(absl::string_view wire, google::protobuf::Message* message) {
  const Descriptor& type = *message->GetDescriptor();
  UnknownFieldSet fields;
  if (!fields.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", type.full_name()));
  }
  MOE_RETURN_IF_ERROR(CheckStrings(fields, type, "", 0));
  message->Clear();
  if (!message->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", type.full_name()));
  }
  return absl::OkStatus();
}

absl::Status ParseProtoChecked(const grpc::ByteBuffer& buffer, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable request bytes");
  std::string wire;
  wire.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return ParseProtoChecked(wire, message);
}

}  // namespace moe
