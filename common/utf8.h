// UTF-8 checks for text that crosses the wire: requests are validated before use, and
// text we send is only ever cut at character boundaries (protobuf refuses to serialise a
// string field that is not valid UTF-8, and clients fail the stream on it).
#ifndef MOE_COMMON_UTF8_H_
#define MOE_COMMON_UTF8_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moe {

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at
// most U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// INVALID_ARGUMENT "`field` is not valid UTF-8 (first bad byte at offset N)" unless valid.
absl::Status CheckUtf8(absl::string_view field, absl::string_view text);

// The largest position <= pos that does not fall inside a multi-byte character of
// `text` (pos itself when pos >= text.size() or it already is a boundary).
size_t Utf8BoundaryAtOrBefore(absl::string_view text, size_t pos);

}  // namespace moe

#endif  // MOE_COMMON_UTF8_H_
