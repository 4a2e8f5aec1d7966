// The subset of Jinja that models' chat templates use, rendered the way Hugging Face's
// apply_chat_template renders them (jinja2 with trim_blocks, lstrip_blocks and loop
// controls; tojson without HTML escaping; raise_exception and strftime_now as globals).
//
// Supported: text with {{ }}, {% %} and {# #} and the -/+ whitespace controls; if / elif /
// else, for (with unpacking, an `if` filter, else, loop.index/index0/revindex/first/last/
// length/previtem/nextitem/cycle, break, continue), set (names, tuples, namespace
// attributes, {% set x %}...{% endset %}), macro with defaults, {% generation %};
// expressions with Python's operators (+ - * / // % **, ~, comparisons, in / not in, and
// / or / not, a if c else b), literals, attribute and item access, slices with steps;
// about forty filters, tests and str/dict methods (trim, length, tojson, join, map,
// selectattr, startswith, split, items, get, ...). Anything else is refused with
// UNIMPLEMENTED naming it, so the caller can fall back to a built-in format.
#ifndef MOE_COMMON_JINJA_TEMPLATE_H_
#define MOE_COMMON_JINJA_TEMPLATE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/jinja/value.h"

namespace moe::jinja {

struct Program;  // the parsed statements (template.cc)

// Immutable after Parse; Render is safe to call from several threads.
class Template {
 public:
  static constexpr size_t kMaxSourceBytes = 1 << 20;
  // Bounds on one Render: what it writes, how many loop iterations and how deep the calls
  // and expressions nest, so a hostile template or context cannot run away.
  static constexpr size_t kMaxOutputBytes = 16 << 20;
  static constexpr int64_t kMaxLoopIterations = 1000000;
  static constexpr int kMaxDepth = 100;

  // INVALID_ARGUMENT for a syntax error (with its line), UNIMPLEMENTED for a construct
  // outside the subset (a tag, filter or test this renderer does not have).
  static absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source);
  ~Template();

  // Renders with `context` (a dict of variables) over the globals range, namespace, dict,
  // raise_exception and strftime_now. raise_exception(msg) and Python type errors give
  // INVALID_ARGUMENT with the message; calling a function or method the subset lacks
  // gives UNIMPLEMENTED; running past the bounds gives RESOURCE_EXHAUSTED.
  absl::StatusOr<std::string> Render(const Value& context) const;

 private:
  explicit Template(std::unique_ptr<Program> program);
  std::unique_ptr<Program> program_;
};

}  // namespace moe::jinja

#endif  // MOE_COMMON_JINJA_TEMPLATE_H_
