// The values a chat template computes with, following Python's semantics where Jinja
// inherits them (truthiness, equality, str(), repr(), slicing by code point).
#ifndef MOE_COMMON_JINJA_VALUE_H_
#define MOE_COMMON_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moe::jinja {

class Value;
using List = std::vector<Value>;
// Insertion-ordered, as Python's dict (tojson and items() keep the order).
using Dict = std::vector<std::pair<std::string, Value>>;
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<absl::StatusOr<Value>(Args&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace,
                    kFunction };

  Value() = default;  // undefined
  static Value Undefined(std::string name) {
    Value v;
    v.str_ = std::move(name);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  // A list that prints as a Python tuple: ('a', 1).
  static Value Tuple(List items) {
    Value v(std::move(items));
    v.tuple_ = true;
    return v;
  }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}
  Value(int64_t i) : kind_(Kind::kInt), int_(i) {}
  Value(int i) : kind_(Kind::kInt), int_(i) {}
  Value(double d) : kind_(Kind::kFloat), float_(d) {}
  Value(std::string s) : kind_(Kind::kString), str_(std::move(s)) {}
  Value(const char* s) : kind_(Kind::kString), str_(s) {}
  Value(List list) : kind_(Kind::kList), list_(std::make_shared<List>(std::move(list))) {}
  Value(Dict dict) : kind_(Kind::kDict), dict_(std::make_shared<Dict>(std::move(dict))) {}
  static Value Namespace(Dict attributes) {
    Value v(std::move(attributes));
    v.kind_ = Kind::kNamespace;  // shared and mutable: `set ns.x = ...` is seen by all
    return v;
  }
  static Value Func(std::string name, Function f) {
    Value v(Kind::kFunction);
    v.str_ = std::move(name);
    v.func_ = std::make_shared<Function>(std::move(f));
    return v;
  }
  // JSON keeps its key order (as Python's json.loads does), so parse with ordered_json.
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_mapping() const { return kind_ == Kind::kDict || kind_ == Kind::kNamespace; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(float_) : int_; }
  double as_float() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& str() const { return str_; }  // a string's text; an undefined's name
  const List& list() const { return *list_; }
  const Dict& dict() const { return *dict_; }
  Dict& mutable_namespace() const { return *dict_; }
  const Function& func() const { return *func_; }
  const std::string& func_name() const { return str_; }

  // Python's bool().
  bool Truthy() const;
  // The item named `key` of a dict or namespace, or null.
  const Value* Find(absl::string_view key) const;
  // Python's == (1 == 1.0, deep for lists and dicts; undefined equals only undefined).
  bool Equals(const Value& other) const;
  // What {{ v }} prints: Python's str() (None, True, 1.5, ['a', 1]); undefined prints "".
  std::string ToString() const;
  // Python's repr(): strings quoted.
  std::string Repr() const;
  // Python's json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: one line with
  // ", " and ": "), which is Hugging Face's tojson filter.
  absl::StatusOr<std::string> ToJson(int indent) const;
  // The type's name in error messages ("str", "list", "undefined").
  const char* TypeName() const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  Kind kind_ = Kind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> func_;
  bool tuple_ = false;
};

// Python's repr() of a float (shortest round-trip digits, "1.0", "1e-05").
std::string FloatRepr(double d);

// UTF-8 text as code points' byte offsets: Python indexes and slices strings by code
// point. offsets[i] is where code point i starts; offsets.back() is text.size().
std::vector<size_t> CodePointOffsets(absl::string_view text);

}  // namespace moe::jinja

#endif  // MOE_COMMON_JINJA_VALUE_H_
