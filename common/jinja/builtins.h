// Jinja's filters, tests, globals and the Python methods of str and dict that chat
// templates call, for common/jinja/template.cc.
#ifndef MOE_COMMON_JINJA_BUILTINS_H_
#define MOE_COMMON_JINJA_BUILTINS_H_

#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/jinja/value.h"

namespace moe::jinja {

using Filter = std::function<absl::StatusOr<Value>(const Value& input, Args& args)>;
using Test = std::function<absl::StatusOr<bool>(const Value& input, Args& args)>;

// Null when there is no such filter or test.
const Filter* FindFilter(absl::string_view name);
const Test* FindTest(absl::string_view name);

// `self.name` when `name` is a method of self's type (s.startswith, d.items), as a
// function bound to self; nullopt otherwise (then it is an item lookup).
std::optional<Value> BindMethod(const Value& self, absl::string_view name);

// range, namespace, dict, raise_exception, strftime_now.
Dict Globals();

// Errors: a Python TypeError/ValueError or a template's raise_exception is
// INVALID_ARGUMENT; something this subset does not have is UNIMPLEMENTED.
absl::Status TemplateError(absl::string_view message);
absl::Status Unsupported(absl::string_view what);

// What iterating `v` yields, as a `for` loop and the list filters see it: a list's
// items, a dict's keys, a string's code points, nothing for undefined. Anything else is
// an error, prefixed with `what` (a filter's name) when it is not empty.
absl::StatusOr<List> ToList(const Value& v, absl::string_view what);

// Python's str.strip / lstrip / rstrip over whitespace (chars empty) or a set of chars.
std::string StripString(absl::string_view s, bool left, bool right, const std::string* chars);

}  // namespace moe::jinja

#endif  // MOE_COMMON_JINJA_BUILTINS_H_
