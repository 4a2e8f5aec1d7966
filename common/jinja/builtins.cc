#include "common/jinja/builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/jinja/template.h"
#include "common/status.h"
#include "common/unicode_text.h"

namespace moe::jinja {

absl::Status TemplateError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}
absl::Status Unsupported(absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat(what, " is not supported by this template renderer"));
}

namespace {

// The i-th positional argument, else the keyword `name`, else null.
const Value* Arg(const Args& args, size_t i, absl::string_view name) {
  if (i < args.positional.size()) return &args.positional[i];
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

absl::StatusOr<std::string> StringArg(const Args& args, size_t i, absl::string_view name,
                                      absl::string_view what) {
  const Value* v = Arg(args, i, name);
  if (v == nullptr || !v->is_string()) {
    return TemplateError(absl::StrCat(what, ": argument '", name, "' must be a string"));
  }
  return v->str();
}

bool IsSpaceAt(absl::string_view s, size_t pos, size_t* n) {
  *n = Utf8CharLength(s, pos);
  if (*n == 0) {
    *n = 1;
    return false;
  }
  return IsUnicodeWhitespace(DecodeUtf8Char(s, pos, *n));
}

std::string AsciiMap(absl::string_view s, int (*f)(int)) {
  std::string out(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  }
  return out;
}

// Python's str.title() for ASCII letters: a letter after a non-letter starts a word.
std::string Title(absl::string_view s) {
  std::string out(s);
  bool prev_letter = false;
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    const bool letter = std::isalpha(u) != 0;
    if (letter) c = static_cast<char>(prev_letter ? std::tolower(u) : std::toupper(u));
    prev_letter = letter || u >= 0x80;
  }
  return out;
}

std::string Capitalize(absl::string_view s) {
  std::string out = AsciiMap(s, ::tolower);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

// Python's str.split(sep, maxsplit).
Value Split(absl::string_view s, const Value* sep, int64_t maxsplit) {
  List parts;
  if (sep == nullptr || sep->is_none()) {
    size_t pos = 0, n;
    while (true) {
      while (pos < s.size() && IsSpaceAt(s, pos, &n)) pos += n;
      if (pos >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        size_t end = s.size();
        while (end > pos) {
          size_t start = end - 1;
          while (start > pos && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
          if (!IsSpaceAt(s, start, &n)) break;
          end = start;
        }
        parts.emplace_back(std::string(s.substr(pos, end - pos)));
        break;
      }
      size_t end = pos;
      while (end < s.size() && !IsSpaceAt(s, end, &n)) end += n;
      parts.emplace_back(std::string(s.substr(pos, end - pos)));
      pos = end;
    }
    return Value(std::move(parts));
  }
  const std::string& d = sep->str();
  size_t pos = 0;
  while (true) {
    const size_t at = s.find(d, pos);
    if (at == absl::string_view::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) {
      parts.emplace_back(std::string(s.substr(pos)));
      break;
    }
    parts.emplace_back(std::string(s.substr(pos, at - pos)));
    pos = at + d.size();
  }
  return Value(std::move(parts));
}


// Jinja's attribute lookup for filters (map, selectattr, join): "a.b" walks nested items.
Value Attribute(const Value& v, absl::string_view path) {
  Value cur = v;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    const Value* next = cur.Find(part);
    if (next == nullptr) return Value::Undefined(std::string(part));
    cur = *next;
  }
  return cur;
}

int Compare(const Value& a, const Value& b, bool case_sensitive) {
  if (a.is_number() && b.is_number()) return a.as_float() < b.as_float() ? -1 : a.as_float() > b.as_float();
  if (a.is_string() && b.is_string()) {
    if (case_sensitive) return a.str().compare(b.str());
    return AsciiMap(a.str(), ::tolower).compare(AsciiMap(b.str(), ::tolower));
  }
  return static_cast<int>(a.kind()) - static_cast<int>(b.kind());
}

int64_t Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kString: return static_cast<int64_t>(CodePointOffsets(v.str()).size()) - 1;
    case Value::Kind::kList: return static_cast<int64_t>(v.list().size());
    case Value::Kind::kDict:
    case Value::Kind::kNamespace: return static_cast<int64_t>(v.dict().size());
    default: return 0;
  }
}

// Runs the test named args[first] with the rest of the arguments (select, selectattr).
absl::StatusOr<bool> RunTest(const Value& item, const Args& args, size_t first, absl::string_view what) {
  if (args.positional.size() <= first) return item.Truthy();
  if (!args.positional[first].is_string()) return TemplateError(absl::StrCat(what, ": the test name must be a string"));
  const Test* test = FindTest(args.positional[first].str());
  if (test == nullptr) return Unsupported(absl::StrCat("the test '", args.positional[first].str(), "'"));
  Args rest;
  rest.positional.assign(args.positional.begin() + first + 1, args.positional.end());
  return (*test)(item, rest);
}

absl::StatusOr<Value> SelectFilter(const Value& input, Args& args, bool by_attribute, bool keep) {
  MOE_ASSIGN_OR_RETURN(const List items, ToList(input, "select"));
  List out;
  for (const Value& item : items) {
    Value subject = item;
    if (by_attribute) {
      if (args.positional.empty() || !args.positional[0].is_string()) {
        return TemplateError("selectattr: the attribute name must be a string");
      }
      subject = Attribute(item, args.positional[0].str());
    }
    MOE_ASSIGN_OR_RETURN(const bool passed, RunTest(subject, args, by_attribute ? 1 : 0, "select"));
    if (passed == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

std::string HtmlEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

const absl::flat_hash_map<std::string, Filter>& Filters() {
  static const auto* filters = new absl::flat_hash_map<std::string, Filter>{
      {"trim", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         const Value* chars = Arg(a, 0, "chars");
         const std::string text = v.ToString();
         return Value(StripString(text, true, true, chars && chars->is_string() ? &chars->str() : nullptr));
       }},
      {"length", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(Length(v)); }},
      {"count", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(Length(v)); }},
      {"tojson", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         const Value* indent = Arg(a, 0, "indent");
         MOE_ASSIGN_OR_RETURN(std::string json,
                              v.ToJson(indent && indent->kind() == Value::Kind::kInt ? indent->as_int() : -1));
         return Value(std::move(json));
       }},
      {"join", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(const List items, ToList(v, "join"));
         const Value* sep = Arg(a, 0, "d");
         const Value* attribute = Arg(a, 1, "attribute");
         std::string out;
         for (size_t i = 0; i < items.size(); ++i) {
           if (i > 0 && sep != nullptr) out += sep->ToString();
           out += (attribute && attribute->is_string() ? Attribute(items[i], attribute->str()) : items[i]).ToString();
         }
         return Value(std::move(out));
       }},
      {"upper", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(AsciiMap(v.ToString(), ::toupper)); }},
      {"lower", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(AsciiMap(v.ToString(), ::tolower)); }},
      {"title", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(Title(v.ToString())); }},
      {"capitalize", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(Capitalize(v.ToString())); }},
      {"replace", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(const std::string from, StringArg(a, 0, "old", "replace"));
         MOE_ASSIGN_OR_RETURN(const std::string to, StringArg(a, 1, "new", "replace"));
         const Value* count = Arg(a, 2, "count");
         Args m;
         m.positional = {Value(from), Value(to)};
         if (count) m.positional.push_back(*count);
         return BindMethod(Value(v.ToString()), "replace")->func()(m);
       }},
      {"first", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(const List items, ToList(v, "first"));
         return items.empty() ? Value::Undefined("first") : items.front();
       }},
      {"last", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(const List items, ToList(v, "last"));
         return items.empty() ? Value::Undefined("last") : items.back();
       }},
      {"default", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         const Value* fallback = Arg(a, 0, "default_value");
         const Value* boolean = Arg(a, 1, "boolean");
         const bool use = v.is_undefined() || (boolean && boolean->Truthy() && !v.Truthy());
         return use ? (fallback ? *fallback : Value("")) : v;
       }},
      {"list", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(List items, ToList(v, "list"));
         return Value(std::move(items));
       }},
      {"string", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(v.ToString()); }},
      {"safe", [](const Value& v, Args&) -> absl::StatusOr<Value> { return v; }},
      {"escape", [](const Value& v, Args&) -> absl::StatusOr<Value> { return Value(HtmlEscape(v.ToString())); }},
      {"int", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         if (v.is_number()) return Value(v.as_int());
         const std::string s = StripString(v.ToString(), true, true, nullptr);
         char* end = nullptr;
         const long long i = std::strtoll(s.c_str(), &end, 10);
         if (!s.empty() && end == s.c_str() + s.size()) return Value(static_cast<int64_t>(i));
         const Value* fallback = Arg(a, 0, "default");
         return fallback ? *fallback : Value(0);
       }},
      {"float", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         if (v.is_number()) return Value(v.as_float());
         const std::string s = StripString(v.ToString(), true, true, nullptr);
         char* end = nullptr;
         const double d = std::strtod(s.c_str(), &end);
         if (!s.empty() && end == s.c_str() + s.size()) return Value(d);
         const Value* fallback = Arg(a, 0, "default");
         return fallback ? *fallback : Value(0.0);
       }},
      {"abs", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         if (v.kind() == Value::Kind::kFloat) return Value(std::fabs(v.as_float()));
         if (v.is_number()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
         return TemplateError(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
       }},
      {"reverse", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(List items, ToList(v, "reverse"));
         std::reverse(items.begin(), items.end());
         if (v.is_string()) {
           std::string s;
           for (const Value& c : items) s += c.str();
           return Value(std::move(s));
         }
         return Value(std::move(items));
       }},
      {"sort", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(List items, ToList(v, "sort"));
         const Value* reverse = Arg(a, 0, "reverse");
         const Value* case_sensitive = Arg(a, 1, "case_sensitive");
         const Value* attribute = Arg(a, 2, "attribute");
         const bool cs = case_sensitive && case_sensitive->Truthy();
         const auto key = [&](const Value& x) {
           return attribute && attribute->is_string() ? Attribute(x, attribute->str()) : x;
         };
         std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
           return Compare(key(x), key(y), cs) < 0;
         });
         if (reverse && reverse->Truthy()) std::reverse(items.begin(), items.end());
         return Value(std::move(items));
       }},
      {"unique", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(const List items, ToList(v, "unique"));
         List out;
         for (const Value& x : items) {
           if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return y.Equals(x); })) out.push_back(x);
         }
         return Value(std::move(out));
       }},
      {"items", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         if (v.is_undefined()) return Value(List());
         if (!v.is_mapping()) return TemplateError("items: the value must be a mapping");
         List out;
         for (const auto& [k, item] : v.dict()) out.push_back(Value::Tuple(List{Value(k), item}));
         return Value(std::move(out));
       }},
      {"dictsort", [](const Value& v, Args&) -> absl::StatusOr<Value> {
         if (!v.is_mapping()) return TemplateError("dictsort: the value must be a mapping");
         List out;
         for (const auto& [k, item] : v.dict()) out.push_back(Value::Tuple(List{Value(k), item}));
         std::stable_sort(out.begin(), out.end(), [](const Value& x, const Value& y) {
           return Compare(x.list()[0], y.list()[0], false) < 0;
         });
         return Value(std::move(out));
       }},
      {"map", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         MOE_ASSIGN_OR_RETURN(const List items, ToList(v, "map"));
         const Value* attribute = Arg(a, 99, "attribute");
         List out;
         if (attribute != nullptr) {
           if (!attribute->is_string()) return TemplateError("map: attribute must be a string");
           const Value* fallback = Arg(a, 99, "default");
           for (const Value& x : items) {
             Value got = Attribute(x, attribute->str());
             out.push_back(got.is_undefined() && fallback ? *fallback : got);
           }
           return Value(std::move(out));
         }
         if (a.positional.empty() || !a.positional[0].is_string()) return TemplateError("map: needs a filter name or attribute=");
         const Filter* f = FindFilter(a.positional[0].str());
         if (f == nullptr) return Unsupported(absl::StrCat("the filter '", a.positional[0].str(), "'"));
         Args rest;
         rest.positional.assign(a.positional.begin() + 1, a.positional.end());
         rest.keyword = a.keyword;
         for (const Value& x : items) {
           Args call = rest;
           MOE_ASSIGN_OR_RETURN(Value mapped, (*f)(x, call));
           out.push_back(std::move(mapped));
         }
         return Value(std::move(out));
       }},
      {"select", [](const Value& v, Args& a) { return SelectFilter(v, a, false, true); }},
      {"reject", [](const Value& v, Args& a) { return SelectFilter(v, a, false, false); }},
      {"selectattr", [](const Value& v, Args& a) { return SelectFilter(v, a, true, true); }},
      {"rejectattr", [](const Value& v, Args& a) { return SelectFilter(v, a, true, false); }},
      {"indent", [](const Value& v, Args& a) -> absl::StatusOr<Value> {
         const Value* width = Arg(a, 0, "width");
         const Value* first = Arg(a, 1, "first");
         const Value* blank = Arg(a, 2, "blank");
         const std::string pad = width && width->is_string() ? width->str()
                                 : std::string(width ? std::max<int64_t>(0, std::min<int64_t>(width->as_int(), 1000)) : 4, ' ');
         std::string out;
         const std::string text = v.ToString();
         size_t start = 0;
         bool first_line = true;
         while (start <= text.size()) {
           const size_t nl = text.find('\n', start);
           const std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
           const bool indent = (first_line ? (first && first->Truthy()) : true) &&
                               (!line.empty() || (blank && blank->Truthy()));
           if (indent) out += pad;
           out += line;
           if (nl == std::string::npos) break;
           out += '\n';
           start = nl + 1;
           first_line = false;
         }
         return Value(std::move(out));
       }},
  };
  return *filters;
}

const absl::flat_hash_map<std::string, Test>& Tests() {
  static const auto* tests = [] {
    const auto compare = [](auto pred) -> Test {
      return [pred](const Value& v, Args& a) -> absl::StatusOr<bool> {
        if (a.positional.empty()) return TemplateError("comparison test needs an argument");
        return pred(v, a.positional[0]);
      };
    };
    const auto order = [&](auto keep) {
      return compare([keep](const Value& x, const Value& y) -> absl::StatusOr<bool> {
        if (!((x.is_number() && y.is_number()) || (x.is_string() && y.is_string()))) {
          return TemplateError(absl::StrCat("cannot compare '", x.TypeName(), "' with '", y.TypeName(), "'"));
        }
        return keep(Compare(x, y, true));
      });
    };
    using R = absl::StatusOr<bool>;
    auto* t = new absl::flat_hash_map<std::string, Test>{
        {"defined", [](const Value& v, Args&) -> R { return !v.is_undefined(); }},
        {"undefined", [](const Value& v, Args&) -> R { return v.is_undefined(); }},
        {"none", [](const Value& v, Args&) -> R { return v.is_none(); }},
        {"string", [](const Value& v, Args&) -> R { return v.is_string(); }},
        {"number", [](const Value& v, Args&) -> R { return v.is_number(); }},
        {"integer", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kInt; }},
        {"float", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kFloat; }},
        {"boolean", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kBool; }},
        {"true", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kBool && v.as_bool(); }},
        {"false", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kBool && !v.as_bool(); }},
        {"mapping", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kDict; }},
        {"iterable", [](const Value& v, Args&) -> R {
           return v.is_list() || v.is_string() || v.kind() == Value::Kind::kDict;
         }},
        {"sequence", [](const Value& v, Args&) -> R {
           return v.is_list() || v.is_string() || v.kind() == Value::Kind::kDict;
         }},
        {"callable", [](const Value& v, Args&) -> R { return v.kind() == Value::Kind::kFunction; }},
        {"odd", [](const Value& v, Args&) -> R { return v.is_number() && v.as_int() % 2 != 0; }},
        {"even", [](const Value& v, Args&) -> R { return v.is_number() && v.as_int() % 2 == 0; }},
        {"divisibleby", [](const Value& v, Args& a) -> R {
           if (a.positional.empty() || a.positional[0].as_int() == 0) {
             return TemplateError("divisibleby needs a non-zero number");
           }
           return v.as_int() % a.positional[0].as_int() == 0;
         }},
        {"lower", [](const Value& v, Args&) -> R { return v.is_string() && v.str() == AsciiMap(v.str(), ::tolower); }},
        {"upper", [](const Value& v, Args&) -> R { return v.is_string() && v.str() == AsciiMap(v.str(), ::toupper); }},
        {"sameas", compare([](const Value& x, const Value& y) -> R {
           return x.kind() == y.kind() && (x.is_none() || x.is_undefined() || x.Equals(y));
         })},
        {"in", compare([](const Value& x, const Value& y) -> R {
           if (y.is_string()) return x.is_string() && y.str().find(x.str()) != std::string::npos;
           if (y.is_list()) {
             return std::any_of(y.list().begin(), y.list().end(), [&](const Value& i) { return i.Equals(x); });
           }
           if (y.is_mapping()) return x.is_string() && y.Find(x.str()) != nullptr;
           return TemplateError("'in' test needs a container");
         })},
    };
    for (const char* n : {"eq", "equalto", "=="}) {
      (*t)[n] = compare([](const Value& x, const Value& y) -> R { return x.Equals(y); });
    }
    for (const char* n : {"ne", "!="}) {
      (*t)[n] = compare([](const Value& x, const Value& y) -> R { return !x.Equals(y); });
    }
    for (const char* n : {"lt", "lessthan", "<"}) (*t)[n] = order([](int c) { return c < 0; });
    for (const char* n : {"le", "<="}) (*t)[n] = order([](int c) { return c <= 0; });
    for (const char* n : {"gt", "greaterthan", ">"}) (*t)[n] = order([](int c) { return c > 0; });
    for (const char* n : {"ge", ">="}) (*t)[n] = order([](int c) { return c >= 0; });
    return t;
  }();
  return *tests;
}

Value Bound(const Value& self, std::string name,
            std::function<absl::StatusOr<Value>(const Value&, Args&)> f) {
  return Value::Func(name, [self, f = std::move(f)](Args& a) { return f(self, a); });
}

absl::StatusOr<bool> AffixTest(const Value& self, const Args& a, bool prefix) {
  const Value* affix = Arg(a, 0, "prefix");
  if (affix == nullptr) return TemplateError("startswith/endswith needs an argument");
  List options;
  if (affix->is_list()) {
    options = affix->list();
  } else {
    options.push_back(*affix);
  }
  for (const Value& o : options) {
    if (!o.is_string()) return TemplateError("startswith/endswith takes strings");
    if (prefix ? absl::StartsWith(self.str(), o.str()) : absl::EndsWith(self.str(), o.str())) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<List> ToList(const Value& v, absl::string_view what) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return List();
    case Value::Kind::kList: return v.list();
    case Value::Kind::kDict: {
      List keys;
      for (const auto& [k, item] : v.dict()) keys.emplace_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      const auto offsets = CodePointOffsets(v.str());
      for (size_t i = 0; i + 1 < offsets.size(); ++i) {
        chars.emplace_back(v.str().substr(offsets[i], offsets[i + 1] - offsets[i]));
      }
      return chars;
    }
    default:
      return TemplateError(absl::StrCat(what, what.empty() ? "" : ": ", "'", v.TypeName(),
                                        "' object is not iterable"));
  }
}

std::string StripString(absl::string_view s, bool left, bool right, const std::string* chars) {
  const auto strip_at = [&](size_t pos, size_t* n) {
    *n = Utf8CharLength(s, pos);
    if (*n == 0) {
      *n = 1;
      return false;
    }
    if (chars == nullptr) return IsUnicodeWhitespace(DecodeUtf8Char(s, pos, *n));
    return chars->find(std::string(s.substr(pos, *n))) != std::string::npos;
  };
  size_t begin = 0, end = s.size(), n;
  if (left) {
    while (begin < end && strip_at(begin, &n)) begin += n;
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
      if (!strip_at(start, &n)) break;
      end = start;
    }
  }
  return std::string(s.substr(begin, end - begin));
}

const Filter* FindFilter(absl::string_view name) {
  if (name == "d") name = "default";
  if (name == "e") name = "escape";
  const auto it = Filters().find(name);
  return it == Filters().end() ? nullptr : &it->second;
}

const Test* FindTest(absl::string_view name) {
  const auto it = Tests().find(name);
  return it == Tests().end() ? nullptr : &it->second;
}

std::optional<Value> BindMethod(const Value& self, absl::string_view name) {
  using R = absl::StatusOr<Value>;
  if (self.is_string()) {
    const std::string n(name);
    if (n == "startswith" || n == "endswith") {
      const bool prefix = n == "startswith";
      return Bound(self, n, [prefix](const Value& s, Args& a) -> R {
        MOE_ASSIGN_OR_RETURN(const bool r, AffixTest(s, a, prefix));
        return Value(r);
      });
    }
    if (n == "strip" || n == "lstrip" || n == "rstrip") {
      const bool left = n != "rstrip", right = n != "lstrip";
      return Bound(self, n, [left, right](const Value& s, Args& a) -> R {
        const Value* chars = Arg(a, 0, "chars");
        return Value(StripString(s.str(), left, right, chars && chars->is_string() ? &chars->str() : nullptr));
      });
    }
    if (n == "split") {
      return Bound(self, n, [](const Value& s, Args& a) -> R {
        const Value* sep = Arg(a, 0, "sep");
        if (sep != nullptr && !sep->is_none() && (!sep->is_string() || sep->str().empty())) {
          return TemplateError("split: the separator must be a non-empty string");
        }
        const Value* maxsplit = Arg(a, 1, "maxsplit");
        return Split(s.str(), sep, maxsplit ? maxsplit->as_int() : -1);
      });
    }
    if (n == "splitlines") {
      return Bound(self, n, [](const Value& s, Args&) -> R {
        List lines;
        size_t start = 0;
        const std::string& t = s.str();
        while (start < t.size()) {
          size_t nl = t.find_first_of("\r\n", start);
          if (nl == std::string::npos) {
            lines.emplace_back(t.substr(start));
            break;
          }
          lines.emplace_back(t.substr(start, nl - start));
          start = nl + ((t[nl] == '\r' && nl + 1 < t.size() && t[nl + 1] == '\n') ? 2 : 1);
        }
        return Value(std::move(lines));
      });
    }
    if (n == "upper" || n == "lower" || n == "title" || n == "capitalize") {
      return Bound(self, n, [n](const Value& s, Args&) -> R {
        if (n == "upper") return Value(AsciiMap(s.str(), ::toupper));
        if (n == "lower") return Value(AsciiMap(s.str(), ::tolower));
        if (n == "title") return Value(Title(s.str()));
        return Value(Capitalize(s.str()));
      });
    }
    if (n == "replace") {
      return Bound(self, n, [](const Value& s, Args& a) -> R {
        MOE_ASSIGN_OR_RETURN(const std::string from, StringArg(a, 0, "old", "replace"));
        MOE_ASSIGN_OR_RETURN(const std::string to, StringArg(a, 1, "new", "replace"));
        const Value* count = Arg(a, 2, "count");
        int64_t left = count ? count->as_int() : -1;
        std::string out;
        const std::string& t = s.str();
        if (from.empty()) {
          return Unsupported("replace with an empty pattern");
        }
        size_t pos = 0;
        while (left != 0) {
          const size_t at = t.find(from, pos);
          if (at == std::string::npos) break;
          out.append(t, pos, at - pos);
          out += to;
          pos = at + from.size();
          if (left > 0) --left;
          if (out.size() > Template::kMaxOutputBytes) return absl::ResourceExhaustedError("replace: result too large");
        }
        out.append(t, pos, std::string::npos);
        return Value(std::move(out));
      });
    }
    if (n == "find" || n == "count") {
      return Bound(self, n, [n](const Value& s, Args& a) -> R {
        MOE_ASSIGN_OR_RETURN(const std::string sub, StringArg(a, 0, "sub", n));
        if (n == "find") {
          const size_t at = s.str().find(sub);
          if (at == std::string::npos) return Value(-1);
          return Value(static_cast<int64_t>(CodePointOffsets(s.str().substr(0, at)).size()) - 1);
        }
        if (sub.empty()) return Value(static_cast<int64_t>(CodePointOffsets(s.str()).size()));
        int64_t c = 0;
        for (size_t at = s.str().find(sub); at != std::string::npos; at = s.str().find(sub, at + sub.size())) ++c;
        return Value(c);
      });
    }
    if (n == "join") {
      return Bound(self, n, [](const Value& s, Args& a) -> R {
        if (a.positional.empty()) return TemplateError("join needs an iterable");
        MOE_ASSIGN_OR_RETURN(const List items, ToList(a.positional[0], "join"));
        std::string out;
        for (size_t i = 0; i < items.size(); ++i) {
          if (!items[i].is_string()) return TemplateError("join: sequence item is not a string");
          if (i > 0) out += s.str();
          out += items[i].str();
        }
        return Value(std::move(out));
      });
    }
    if (n == "isdigit" || n == "isspace" || n == "isalpha") {
      return Bound(self, n, [n](const Value& s, Args&) -> R {
        const std::string& t = s.str();
        if (t.empty()) return Value(false);
        for (unsigned char c : t) {
          const bool ok = n == "isdigit" ? std::isdigit(c) : n == "isspace" ? std::isspace(c) : std::isalpha(c);
          if (!ok) return Value(false);
        }
        return Value(true);
      });
    }
    return std::nullopt;
  }
  if (self.kind() == Value::Kind::kDict) {
    if (name == "get") {
      return Bound(self, "get", [](const Value& d, Args& a) -> R {
        if (a.positional.empty()) return TemplateError("get needs a key");
        const Value* fallback = Arg(a, 1, "default");
        if (a.positional[0].is_string()) {
          if (const Value* found = d.Find(a.positional[0].str())) return *found;
        }
        return fallback ? *fallback : Value::None();
      });
    }
    if (name == "items" || name == "keys" || name == "values") {
      const std::string n(name);
      return Bound(self, n, [n](const Value& d, Args&) -> R {
        List out;
        for (const auto& [k, v] : d.dict()) {
          if (n == "items") {
            out.push_back(Value::Tuple(List{Value(k), v}));
          } else {
            out.push_back(n == "keys" ? Value(k) : v);
          }
        }
        return Value(std::move(out));
      });
    }
  }
  return std::nullopt;
}

Dict Globals() {
  using R = absl::StatusOr<Value>;
  Dict globals;
  globals.emplace_back("raise_exception", Value::Func("raise_exception", [](Args& a) -> R {
    return TemplateError(a.positional.empty() ? "raise_exception() called" : a.positional[0].ToString());
  }));
  globals.emplace_back("range", Value::Func("range", [](Args& a) -> R {
    int64_t start = 0, stop = 0, step = 1;
    for (const Value& v : a.positional) {
      if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) return TemplateError("range() takes integers");
    }
    if (a.positional.size() == 1) {
      stop = a.positional[0].as_int();
    } else if (a.positional.size() == 2 || a.positional.size() == 3) {
      start = a.positional[0].as_int();
      stop = a.positional[1].as_int();
      if (a.positional.size() == 3) step = a.positional[2].as_int();
    } else {
      return TemplateError("range() takes 1 to 3 arguments");
    }
    if (step == 0) return TemplateError("range() arg 3 must not be zero");
    const double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step));
    if (count > static_cast<double>(Template::kMaxLoopIterations)) {
      return absl::ResourceExhaustedError(absl::StrCat("range() of ", count, " items is too long"));
    }
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
    return Value(std::move(out));
  }));
  const auto make_dict = [](Args& a) -> absl::StatusOr<Dict> {
    Dict d;
    if (!a.positional.empty()) {
      if (!a.positional[0].is_mapping()) return TemplateError("expected a mapping or keyword arguments");
      d = a.positional[0].dict();
    }
    for (auto& [k, v] : a.keyword) d.emplace_back(k, v);
    return d;
  };
  globals.emplace_back("namespace", Value::Func("namespace", [make_dict](Args& a) -> R {
    MOE_ASSIGN_OR_RETURN(Dict d, make_dict(a));
    return Value::Namespace(std::move(d));
  }));
  globals.emplace_back("dict", Value::Func("dict", [make_dict](Args& a) -> R {
    MOE_ASSIGN_OR_RETURN(Dict d, make_dict(a));
    return Value(std::move(d));
  }));
  globals.emplace_back("strftime_now", Value::Func("strftime_now", [](Args& a) -> R {
    if (a.positional.empty() || !a.positional[0].is_string() || a.positional[0].str().size() > 256) {
      return TemplateError("strftime_now needs a format string");
    }
    const std::time_t now = std::time(nullptr);
    std::tm local;
    localtime_r(&now, &local);
    char buf[1024];
    const size_t n = std::strftime(buf, sizeof(buf), a.positional[0].str().c_str(), &local);
    return Value(std::string(buf, n));
  }));
  return globals;
}

}  // namespace moe::jinja
