#include "common/jinja/template.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/jinja/builtins.h"
#include "common/status.h"

namespace moe::jinja {
namespace {

// ---------------------------------------------------------------------------- lexing

struct Token {
  enum class Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt,
                    kFloat, kOp, kEnd };
  Type type;
  std::string text;  // text, name, string value or operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }
bool IsPySpace(char c) { return IsSpaceOrTab(c) || c == '\n'; }

class Lexer {
 public:
  explicit Lexer(absl::string_view src) : src_(src) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool strip_next = false;      // the previous tag ended with '-'
    bool trim_newline = false;    // trim_blocks after %} and #}
    bool line_starting = true;
    while (pos <= src_.size()) {
      size_t tag = FindTag(pos);
      std::string text(src_.substr(pos, (tag == std::string::npos ? src_.size() : tag) - pos));
      const int text_line = LineAt(pos);
      if (strip_next) {
        size_t i = 0;
        while (i < text.size() && IsPySpace(text[i])) ++i;
        if (i > 0 && text[i - 1] == '\n') line_starting = true;
        text.erase(0, i);
      } else if (trim_newline && !text.empty() && text[0] == '\n') {
        text.erase(0, 1);
        line_starting = true;
      }
      if (tag == std::string::npos) {
        Emit(Token::Type::kText, text, text_line);
        break;
      }
      const char kind = src_[tag + 1];
      const char control = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (control == '-') {
        while (!text.empty() && IsPySpace(text.back())) text.pop_back();
      } else if (control != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag alone on its line takes the line's indent.
        const size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if (l_pos > 0 || line_starting) {
          bool blank = true;
          for (size_t i = l_pos; i < text.size(); ++i) blank = blank && IsSpaceOrTab(text[i]);
          if (blank) text.resize(l_pos);
        }
      }
      Emit(Token::Type::kText, text, text_line);
      pos = tag + 2 + ((control == '-' || control == '+') ? 1 : 0);
      strip_next = trim_newline = line_starting = false;
      if (kind == '#') {
        const size_t end = src_.find("#}", pos);
        if (end == std::string::npos) return Error(tag, "unclosed comment");
        const char before = end > pos ? src_[end - 1] : '\0';
        strip_next = before == '-';
        trim_newline = before != '+';
        pos = end + 2;
        continue;
      }
      const bool block = kind == '%';
      Emit(block ? Token::Type::kBlockBegin : Token::Type::kVarBegin, "", LineAt(tag));
      MOE_ASSIGN_OR_RETURN(pos, LexInside(pos, block, &strip_next));
      trim_newline = block && src_[pos - 3] != '+';
      Emit(block ? Token::Type::kBlockEnd : Token::Type::kVarEnd, "", LineAt(pos));
    }
    tokens_.push_back({Token::Type::kEnd, "", 0, 0, LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }
  int LineAt(size_t pos) const {
    return 1 + static_cast<int>(std::count(src_.begin(), src_.begin() + std::min(pos, src_.size()), '\n'));
  }
  absl::Status Error(size_t pos, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("line ", LineAt(pos), ": ", what));
  }
  void Emit(Token::Type type, std::string text, int line) {
    if (type == Token::Type::kText && text.empty()) return;
    tokens_.push_back({type, std::move(text), 0, 0, line});
  }

  // Tokens up to the tag's end; returns the position after it.
  absl::StatusOr<size_t> LexInside(size_t pos, bool block, bool* strip_next) {
    const char close = block ? '%' : '}';
    while (true) {
      while (pos < src_.size() && IsPySpace(src_[pos])) ++pos;
      if (pos >= src_.size()) return Error(pos, block ? "unclosed {% tag" : "unclosed {{ tag");
      const absl::string_view rest = src_.substr(pos);
      for (const char* sign : {"-", "+", ""}) {
        const std::string end = absl::StrCat(sign, std::string(1, close), "}");
        if (absl::StartsWith(rest, end)) {
          if (sign[0] == '-') *strip_next = true;
          return pos + end.size();
        }
      }
      const int line = LineAt(pos);
      const char c = src_[pos];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        tokens_.push_back({Token::Type::kName, std::string(src_.substr(pos, e - pos)), 0, 0, line});
        pos = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = pos;
        bool is_float = false;
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
          is_float = true;
          ++e;
          while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        }
        if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
          size_t f = e + 1;
          if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
          if (f < src_.size() && std::isdigit(static_cast<unsigned char>(src_[f]))) {
            is_float = true;
            e = f;
            while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
          }
        }
        std::string digits(src_.substr(pos, e - pos));
        digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
        Token t{is_float ? Token::Type::kFloat : Token::Type::kInt, digits, 0, 0, line};
        if (is_float) {
          t.float_value = std::strtod(digits.c_str(), nullptr);
        } else {
          errno = 0;
          t.int_value = std::strtoll(digits.c_str(), nullptr, 10);
          if (errno == ERANGE) return Error(pos, "integer literal out of range");
        }
        tokens_.push_back(std::move(t));
        pos = e;
      } else if (c == '\'' || c == '"') {
        MOE_ASSIGN_OR_RETURN(pos, LexString(pos, line));
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                     "~", "<", ">", "(", ")", "[", "]", "{", "}", ".", ",", ":",
                                     "|", "="};
        bool found = false;
        for (const char* op : kOps) {
          if (absl::StartsWith(rest, op)) {
            tokens_.push_back({Token::Type::kOp, op, 0, 0, line});
            pos += std::string(op).size();
            found = true;
            break;
          }
        }
        if (!found) return Error(pos, absl::StrCat("unexpected character ", QuoteForMessage(rest.substr(0, 1))));
      }
    }
  }

  // A Python string literal with its escapes.
  absl::StatusOr<size_t> LexString(size_t pos, int line) {
    const char quote = src_[pos++];
    std::string value;
    while (true) {
      if (pos >= src_.size()) return Error(pos, "unterminated string");
      const char c = src_[pos++];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos >= src_.size()) return Error(pos, "unterminated string");
      const char e = src_[pos++];
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '0': value += '\0'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\n': break;
        default:
          value += '\\';
          value += e;
      }
    }
    tokens_.push_back({Token::Type::kString, std::move(value), 0, 0, line});
    return pos;
  }

  absl::string_view src_;
  std::vector<Token> tokens_;
};

// --------------------------------------------------------------------------- the tree

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
struct Expr {
  enum class Kind { kLiteral, kName, kAttr, kItem, kSlice, kCall, kFilter, kTest, kNot, kNeg,
                    kBinary, kAnd, kOr, kCond, kList, kDict };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;  // name, attribute, filter, test or operator
  std::vector<ExprPtr> args;  // operands; for kSlice: object, start, stop, step (null when absent)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // `is not`; for kList: a tuple
};

struct Stmt {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue };
  Stmt(Kind k, int l, std::string t = "") : kind(k), line(l), text(std::move(t)) {}
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;  // output, set value, for iterable
  std::vector<std::string> targets;  // set / for names; macro name
  std::string attribute;             // set ns.attribute
  std::vector<std::pair<ExprPtr, std::vector<Stmt>>> branches;  // if: (cond, body); else: (null, body)
  std::vector<Stmt> body, else_body;
  ExprPtr filter;                                   // for ... if filter
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro
};

}  // namespace

struct Program {
  std::vector<Stmt> body;
};

namespace {

// --------------------------------------------------------------------------- parsing

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<std::vector<Stmt>> ParseTemplate() {
    std::vector<Stmt> body;
    std::string stop;
    MOE_RETURN_IF_ERROR(ParseBody({}, &body, &stop));
    return body;
  }

 private:
  const Token& Peek(size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& Next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool IsOp(absl::string_view op, size_t ahead = 0) const {
    return Peek(ahead).type == Token::Type::kOp && Peek(ahead).text == op;
  }
  bool IsName(absl::string_view name, size_t ahead = 0) const {
    return Peek(ahead).type == Token::Type::kName && Peek(ahead).text == name;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("line ", Peek().line, ": ", what));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Error(absl::StrCat("expected '", op, "'"));
    ++i_;
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != Token::Type::kBlockEnd) return Error("expected the end of the tag");
    ++i_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != Token::Type::kName) return Error("expected a name");
    return Next().text;
  }

  // Statements until one of `stops` opens a block tag; `*stop` gets which one (the tag's
  // name is consumed, the rest of the tag is not).
  absl::Status ParseBody(const std::vector<std::string>& stops, std::vector<Stmt>* body,
                         std::string* stop) {
    if (++depth_ > Template::kMaxDepth) return Error("blocks nested too deeply");
    while (true) {
      const Token& t = Peek();
      if (t.type == Token::Type::kEnd) {
        if (!stops.empty()) return Error(absl::StrCat("missing {% ", stops.back(), " %}"));
        break;
      }
      if (t.type == Token::Type::kText) {
        body->push_back(Stmt{Stmt::Kind::kText, t.line, t.text});
        ++i_;
      } else if (t.type == Token::Type::kVarBegin) {
        ++i_;
        Stmt s{Stmt::Kind::kOutput, t.line};
        MOE_ASSIGN_OR_RETURN(s.expr, ParseExpression());
        if (Peek().type != Token::Type::kVarEnd) return Error("expected '}}'");
        ++i_;
        body->push_back(std::move(s));
      } else if (t.type == Token::Type::kBlockBegin) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(const std::string tag, ExpectName());
        if (std::find(stops.begin(), stops.end(), tag) != stops.end()) {
          *stop = tag;
          --depth_;
          return absl::OkStatus();
        }
        MOE_RETURN_IF_ERROR(ParseStatement(tag, t.line, body));
      } else {
        return Error("unexpected token");
      }
    }
    --depth_;
    return absl::OkStatus();
  }

  absl::Status ParseStatement(const std::string& tag, int line, std::vector<Stmt>* body) {
    Stmt s{Stmt::Kind::kIf, line};
    std::string stop;
    if (tag == "if") {
      MOE_ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
      while (true) {
        MOE_RETURN_IF_ERROR(ExpectBlockEnd());
        std::vector<Stmt> branch;
        MOE_RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &branch, &stop));
        s.branches.emplace_back(std::move(cond), std::move(branch));
        if (stop == "endif") break;
        if (stop == "else") {
          MOE_RETURN_IF_ERROR(ExpectBlockEnd());
          std::vector<Stmt> else_branch;
          MOE_RETURN_IF_ERROR(ParseBody({"endif"}, &else_branch, &stop));
          s.branches.emplace_back(nullptr, std::move(else_branch));
          break;
        }
        MOE_ASSIGN_OR_RETURN(cond, ParseExpression());
      }
    } else if (tag == "for") {
      s.kind = Stmt::Kind::kFor;
      do {
        MOE_ASSIGN_OR_RETURN(std::string name, ExpectName());
        s.targets.push_back(std::move(name));
      } while (IsOp(",") && (++i_, true));
      if (!IsName("in")) return Error("expected 'in'");
      ++i_;
      MOE_ASSIGN_OR_RETURN(s.expr, ParseOr());  // `if` here starts the filter, not a ternary
      if (IsName("if")) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(s.filter, ParseExpression());
      }
      if (IsName("recursive")) return absl::UnimplementedError("recursive for loops are not supported");
      MOE_RETURN_IF_ERROR(ExpectBlockEnd());
      MOE_RETURN_IF_ERROR(ParseBody({"else", "endfor"}, &s.body, &stop));
      if (stop == "else") {
        MOE_RETURN_IF_ERROR(ExpectBlockEnd());
        MOE_RETURN_IF_ERROR(ParseBody({"endfor"}, &s.else_body, &stop));
      }
    } else if (tag == "set") {
      MOE_ASSIGN_OR_RETURN(std::string name, ExpectName());
      if (IsOp(".")) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(s.attribute, ExpectName());
      }
      s.targets.push_back(std::move(name));
      while (s.attribute.empty() && IsOp(",")) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(std::string more, ExpectName());
        s.targets.push_back(std::move(more));
      }
      if (IsOp("=")) {
        ++i_;
        s.kind = Stmt::Kind::kSet;
        MOE_ASSIGN_OR_RETURN(s.expr, ParseTuple());
      } else {
        if (s.targets.size() != 1 || !s.attribute.empty()) return Error("a block set takes one name");
        s.kind = Stmt::Kind::kSetBlock;
        MOE_RETURN_IF_ERROR(ExpectBlockEnd());
        MOE_RETURN_IF_ERROR(ParseBody({"endset"}, &s.body, &stop));
      }
    } else if (tag == "macro") {
      s.kind = Stmt::Kind::kMacro;
      MOE_ASSIGN_OR_RETURN(std::string name, ExpectName());
      s.targets.push_back(std::move(name));
      MOE_RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        MOE_ASSIGN_OR_RETURN(std::string param, ExpectName());
        ExprPtr fallback;
        if (IsOp("=")) {
          ++i_;
          MOE_ASSIGN_OR_RETURN(fallback, ParseExpression());
        }
        s.params.emplace_back(std::move(param), std::move(fallback));
        if (!IsOp(")")) MOE_RETURN_IF_ERROR(ExpectOp(","));
      }
      ++i_;
      MOE_RETURN_IF_ERROR(ExpectBlockEnd());
      MOE_RETURN_IF_ERROR(ParseBody({"endmacro"}, &s.body, &stop));
    } else if (tag == "break" || tag == "continue") {
      s.kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    } else if (tag == "generation") {
      // Hugging Face's marker of assistant text for training masks; it renders its body.
      MOE_RETURN_IF_ERROR(ExpectBlockEnd());
      std::vector<Stmt> inner;
      MOE_RETURN_IF_ERROR(ParseBody({"endgeneration"}, &inner, &stop));
      s.branches.emplace_back(nullptr, std::move(inner));
    } else {
      return absl::UnimplementedError(absl::StrCat("line ", line, ": the {% ", tag,
                                                   " %} tag is not supported"));
    }
    MOE_RETURN_IF_ERROR(ExpectBlockEnd());
    body->push_back(std::move(s));
    return absl::OkStatus();
  }

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // A tuple without parentheses (set a, b = 1, 2), else one expression.
  absl::StatusOr<ExprPtr> ParseTuple() {
    MOE_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    ExprPtr list = Make(Expr::Kind::kList, first->line);
    list->negated = true;  // a tuple
    list->args.push_back(std::move(first));
    while (IsOp(",")) {
      ++i_;
      MOE_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
      list->args.push_back(std::move(item));
    }
    return list;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    if (++depth_ > Template::kMaxDepth) return Error("expression nested too deeply");
    MOE_ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    while (IsName("if")) {
      ++i_;
      ExprPtr cond = Make(Expr::Kind::kCond, e->line);
      MOE_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      ExprPtr otherwise;
      if (IsName("else")) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(otherwise, ParseOr());
      }
      cond->args.push_back(std::move(test));
      cond->args.push_back(std::move(e));
      cond->args.push_back(std::move(otherwise));  // null: undefined
      e = std::move(cond);
    }
    --depth_;
    return e;
  }
  absl::StatusOr<ExprPtr> ParseOr() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      ++i_;
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      ExprPtr e = Make(Expr::Kind::kOr, left->line);
      e->args.push_back(std::move(left));
      e->args.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseAnd() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      ++i_;
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      ExprPtr e = Make(Expr::Kind::kAnd, left->line);
      e->args.push_back(std::move(left));
      e->args.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const int line = Next().line;
      if (++depth_ > Template::kMaxDepth) return Error("expression nested too deeply");
      MOE_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      --depth_;
      ExprPtr e = Make(Expr::Kind::kNot, line);
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }
  absl::StatusOr<ExprPtr> ParseCompare() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParseMath1());
    while (true) {
      std::string op;
      if (Peek().type == Token::Type::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        ++i_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        return left;
      }
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      ExprPtr e = Make(Expr::Kind::kBinary, left->line);
      e->name = op;
      e->args.push_back(std::move(left));
      e->args.push_back(std::move(right));
      left = std::move(e);
    }
  }
  absl::StatusOr<ExprPtr> Binary(ExprPtr left, const std::string& op, ExprPtr right) {
    ExprPtr e = Make(Expr::Kind::kBinary, left->line);
    e->name = op;
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const std::string op = Next().text;
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      MOE_ASSIGN_OR_RETURN(left, Binary(std::move(left), op, std::move(right)));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      ++i_;
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      MOE_ASSIGN_OR_RETURN(left, Binary(std::move(left), "~", std::move(right)));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const std::string op = Next().text;
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      MOE_ASSIGN_OR_RETURN(left, Binary(std::move(left), op, std::move(right)));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    MOE_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary());
    while (IsOp("**")) {
      ++i_;
      MOE_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary());
      MOE_ASSIGN_OR_RETURN(left, Binary(std::move(left), "**", std::move(right)));
    }
    return left;
  }
  // As jinja2's parse_unary: filters and tests bind tighter than any binary operator,
  // and apply to a negation as a whole (-3|abs is 3).
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter = true) {
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      if (++depth_ > Template::kMaxDepth) return Error("expression nested too deeply");
      MOE_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      --depth_;
      if (t.text == "+") {
        e = std::move(operand);
      } else {
        e = Make(Expr::Kind::kNeg, t.line);
        e->args.push_back(std::move(operand));
      }
    } else {
      MOE_ASSIGN_OR_RETURN(e, ParsePrimary());
      MOE_ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    }
    while (with_filter) {
      if (IsOp("|")) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(e, ParseFilter(std::move(e)));
      } else if (IsName("is")) {
        ++i_;
        MOE_ASSIGN_OR_RETURN(e, ParseTest(std::move(e)));
      } else {
        break;
      }
    }
    return e;
  }
  absl::Status ParseCallArgs(Expr* call) {
    MOE_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Peek().type == Token::Type::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        ++i_;
        MOE_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        call->kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        MOE_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        call->args.push_back(std::move(value));
      }
      if (!IsOp(")")) MOE_RETURN_IF_ERROR(ExpectOp(","));
    }
    ++i_;
    return absl::OkStatus();
  }
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr input) {
    const int line = Peek().line;
    MOE_ASSIGN_OR_RETURN(std::string name, ExpectName());
    if (FindFilter(name) == nullptr) {
      return absl::UnimplementedError(absl::StrCat("line ", line, ": the filter '", name, "' is not supported"));
    }
    ExprPtr e = Make(Expr::Kind::kFilter, line);
    e->name = std::move(name);
    e->args.push_back(std::move(input));
    if (IsOp("(")) MOE_RETURN_IF_ERROR(ParseCallArgs(e.get()));
    return e;
  }
  absl::StatusOr<ExprPtr> ParseTest(ExprPtr input) {
    const int line = Peek().line;
    ExprPtr e = Make(Expr::Kind::kTest, line);
    if (IsName("not")) {
      ++i_;
      e->negated = true;
    }
    std::string name;
    if (IsName("none") || IsName("true") || IsName("false") || Peek().type == Token::Type::kName) {
      name = Next().text;
    } else {
      return Error("expected a test name after 'is'");
    }
    if (FindTest(name) == nullptr) {
      return absl::UnimplementedError(absl::StrCat("line ", line, ": the test '", name, "' is not supported"));
    }
    e->name = std::move(name);
    e->args.push_back(std::move(input));
    if (IsOp("(")) {
      MOE_RETURN_IF_ERROR(ParseCallArgs(e.get()));
    } else if (Peek().type == Token::Type::kString || Peek().type == Token::Type::kInt ||
               Peek().type == Token::Type::kFloat ||
               (Peek().type == Token::Type::kName && !IsName("and") && !IsName("or") &&
                !IsName("if") && !IsName("else") && !IsName("in") && !IsName("is") && !IsName("not"))) {
      // One argument without parentheses: `x is divisibleby 3`, `x is sameas y`.
      MOE_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
      MOE_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
      e->args.push_back(std::move(arg));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        ++i_;
        ExprPtr a = Make(Expr::Kind::kAttr, e->line);
        if (Peek().type == Token::Type::kInt) {
          a->kind = Expr::Kind::kItem;  // x.0 is x[0]
          ExprPtr index = Make(Expr::Kind::kLiteral, e->line);
          index->literal = Value(Next().int_value);
          a->args.push_back(std::move(e));
          a->args.push_back(std::move(index));
        } else {
          MOE_ASSIGN_OR_RETURN(a->name, ExpectName());
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (IsOp("[")) {
        ++i_;
        ExprPtr parts[3];
        int n = 0;
        bool slice = false;
        while (true) {
          if (!IsOp(":") && !IsOp("]")) {
            MOE_ASSIGN_OR_RETURN(parts[n], ParseExpression());
          }
          if (IsOp(":") && n < 2) {
            ++i_;
            ++n;
            slice = true;
            continue;
          }
          break;
        }
        MOE_RETURN_IF_ERROR(ExpectOp("]"));
        ExprPtr a = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kItem, e->line);
        a->args.push_back(std::move(e));
        if (!slice && parts[0] == nullptr) return Error("empty subscript");
        for (int k = 0; k < (slice ? 3 : 1); ++k) a->args.push_back(std::move(parts[k]));
        e = std::move(a);
      } else if (IsOp("(")) {
        ExprPtr call = Make(Expr::Kind::kCall, e->line);
        call->args.push_back(std::move(e));
        MOE_RETURN_IF_ERROR(ParseCallArgs(call.get()));
        e = std::move(call);
      } else {
        return e;
      }
    }
  }
  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Peek();
    ExprPtr e = Make(Expr::Kind::kLiteral, t.line);
    switch (t.type) {
      case Token::Type::kString: {
        std::string s = Next().text;
        while (Peek().type == Token::Type::kString) s += Next().text;  // 'a' 'b' is 'ab'
        e->literal = Value(std::move(s));
        return e;
      }
      case Token::Type::kInt: e->literal = Value(Next().int_value); return e;
      case Token::Type::kFloat: e->literal = Value(Next().float_value); return e;
      case Token::Type::kName: {
        const std::string& name = Next().text;
        if (name == "true" || name == "True") {
          e->literal = Value(true);
        } else if (name == "false" || name == "False") {
          e->literal = Value(false);
        } else if (name == "none" || name == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = name;
        }
        return e;
      }
      case Token::Type::kOp:
        if (t.text == "(") {
          ++i_;
          if (IsOp(")")) {
            ++i_;
            e->kind = Expr::Kind::kList;  // () is an empty tuple
            e->negated = true;
            return e;
          }
          MOE_ASSIGN_OR_RETURN(ExprPtr inner, ParseTuple());
          MOE_RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (t.text == "[") {
          ++i_;
          e->kind = Expr::Kind::kList;
          while (!IsOp("]")) {
            MOE_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
            e->args.push_back(std::move(item));
            if (!IsOp("]")) MOE_RETURN_IF_ERROR(ExpectOp(","));
          }
          ++i_;
          return e;
        }
        if (t.text == "{") {
          ++i_;
          e->kind = Expr::Kind::kDict;
          while (!IsOp("}")) {
            MOE_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
            MOE_RETURN_IF_ERROR(ExpectOp(":"));
            MOE_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
            e->args.push_back(std::move(key));
            e->args.push_back(std::move(value));
            if (!IsOp("}")) MOE_RETURN_IF_ERROR(ExpectOp(","));
          }
          ++i_;
          return e;
        }
        break;
      default:
        break;
    }
    return Error(t.type == Token::Type::kBlockEnd || t.type == Token::Type::kVarEnd
                     ? "expected an expression before the end of the tag"
                     : absl::StrCat("unexpected '", t.text, "'"));
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
};

// ------------------------------------------------------------------------ rendering

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  explicit Renderer(const Value& context) {
    frames_.emplace_back();
    for (auto& [k, v] : Globals()) frames_[0][k] = v;
    if (context.is_mapping()) {
      for (const auto& [k, v] : context.dict()) frames_[0][k] = v;
    }
  }

  absl::StatusOr<Flow> Exec(const std::vector<Stmt>& body, std::string* out) {
    for (const Stmt& s : body) {
      auto flow = ExecOne(s, out);
      if (!flow.ok()) return Annotate(flow.status(), s.line);
      if (*flow != Flow::kNormal) return flow;
      if (out->size() > Template::kMaxOutputBytes) {
        return absl::ResourceExhaustedError(absl::StrCat("output is longer than ",
                                                         Template::kMaxOutputBytes, " bytes"));
      }
    }
    return Flow::kNormal;
  }

 private:
  using Frame = absl::flat_hash_map<std::string, Value>;

  static absl::Status Annotate(const absl::Status& s, int line) {
    if (absl::StartsWith(s.message(), "line ")) return s;
    return absl::Status(s.code(), absl::StrCat("line ", line, ": ", s.message()));
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      const auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value::Undefined(name);
  }

  absl::StatusOr<Flow> ExecOne(const Stmt& s, std::string* out) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        out->append(s.text);
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        MOE_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        out->append(v.ToString());
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, branch] : s.branches) {
          bool take = cond == nullptr;
          if (!take) {
            MOE_ASSIGN_OR_RETURN(Value c, Eval(*cond));
            take = c.Truthy();
          }
          if (take) return Exec(branch, out);
        }
        return Flow::kNormal;
      case Stmt::Kind::kFor: return ExecFor(s, out);
      case Stmt::Kind::kSet: {
        MOE_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        return Assign(s, std::move(v));
      }
      case Stmt::Kind::kSetBlock: {
        std::string captured;
        MOE_ASSIGN_OR_RETURN(const Flow flow, Exec(s.body, &captured));
        (void)flow;
        return Assign(s, Value(std::move(captured)));
      }
      case Stmt::Kind::kMacro: {
        frames_.back()[s.targets[0]] = MakeMacro(s);
        return Flow::kNormal;
      }
      case Stmt::Kind::kBreak: return Flow::kBreak;
      case Stmt::Kind::kContinue: return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> Assign(const Stmt& s, Value v) {
    if (!s.attribute.empty()) {
      const Value ns = Lookup(s.targets[0]);
      if (ns.kind() != Value::Kind::kNamespace) {
        return TemplateError(absl::StrCat("cannot assign attribute on non-namespace object '",
                                          s.targets[0], "'"));
      }
      Dict& attrs = ns.mutable_namespace();
      for (auto& [k, existing] : attrs) {
        if (k == s.attribute) {
          existing = std::move(v);
          return Flow::kNormal;
        }
      }
      attrs.emplace_back(s.attribute, std::move(v));
      return Flow::kNormal;
    }
    MOE_RETURN_IF_ERROR(Unpack(s.targets, std::move(v), &frames_.back()));
    return Flow::kNormal;
  }

  static absl::Status Unpack(const std::vector<std::string>& targets, Value v, Frame* frame) {
    if (targets.size() == 1) {
      (*frame)[targets[0]] = std::move(v);
      return absl::OkStatus();
    }
    if (!v.is_list() || v.list().size() != targets.size()) {
      return TemplateError(absl::StrCat("cannot unpack ", v.TypeName(), " into ", targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) (*frame)[targets[i]] = v.list()[i];
    return absl::OkStatus();
  }


  absl::StatusOr<Flow> ExecFor(const Stmt& s, std::string* out) {
    MOE_ASSIGN_OR_RETURN(const Value seq, Eval(*s.expr));
    MOE_ASSIGN_OR_RETURN(List items, ToList(seq, ""));
    frames_.emplace_back();
    if (s.filter != nullptr) {
      List kept;
      for (Value& item : items) {
        MOE_RETURN_IF_ERROR(Unpack(s.targets, item, &frames_.back()));
        MOE_ASSIGN_OR_RETURN(const Value keep, Eval(*s.filter));
        if (keep.Truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++iterations_ > Template::kMaxLoopIterations) {
        frames_.pop_back();
        return absl::ResourceExhaustedError(absl::StrCat("more than ", Template::kMaxLoopIterations,
                                                         " loop iterations"));
      }
      Dict loop = {{"index", Value(i + 1)},      {"index0", Value(i)},
                   {"revindex", Value(n - i)},   {"revindex0", Value(n - i - 1)},
                   {"first", Value(i == 0)},     {"last", Value(i == n - 1)},
                   {"length", Value(n)},
                   {"previtem", i > 0 ? items[i - 1] : Value::Undefined("previtem")},
                   {"nextitem", i + 1 < n ? items[i + 1] : Value::Undefined("nextitem")}};
      loop.emplace_back("cycle", Value::Func("loop.cycle", [i](Args& args) -> absl::StatusOr<Value> {
        if (args.positional.empty()) return TemplateError("loop.cycle needs at least one value");
        return args.positional[i % args.positional.size()];
      }));
      // Each iteration starts from the enclosing scope: what the body sets lives until the
      // iteration ends (jinja2 semantics; namespace() is how templates carry state).
      frames_.back().clear();
      Frame& frame = frames_.back();
      frame["loop"] = Value(std::move(loop));
      if (auto st = Unpack(s.targets, items[i], &frame); !st.ok()) {
        frames_.pop_back();
        return st;
      }
      auto flow = Exec(s.body, out);
      if (!flow.ok()) {
        frames_.pop_back();
        return flow.status();
      }
      if (*flow == Flow::kBreak) break;
    }
    frames_.pop_back();
    if (n == 0 && !s.else_body.empty()) return Exec(s.else_body, out);
    return Flow::kNormal;
  }

  Value MakeMacro(const Stmt& s) {
    const Stmt* macro = &s;
    return Value::Func(s.targets[0], [this, macro](Args& args) -> absl::StatusOr<Value> {
      if (++depth_ > Template::kMaxDepth) return absl::ResourceExhaustedError("macro calls nested too deeply");
      Frame frame;
      for (size_t p = 0; p < macro->params.size(); ++p) {
        const auto& [name, fallback] = macro->params[p];
        if (p < args.positional.size()) {
          frame[name] = args.positional[p];
          continue;
        }
        const auto kw = std::find_if(args.keyword.begin(), args.keyword.end(),
                                     [&](const auto& kv) { return kv.first == name; });
        if (kw != args.keyword.end()) {
          frame[name] = kw->second;
        } else if (fallback != nullptr) {
          MOE_ASSIGN_OR_RETURN(frame[name], Eval(*fallback));
        } else {
          frame[name] = Value::Undefined(name);
        }
      }
      // A macro sees the template's globals and its arguments, not the caller's locals.
      std::vector<Frame> saved;
      saved.swap(frames_);
      frames_.push_back(saved.front());
      frames_.push_back(std::move(frame));
      std::string out;
      auto flow = Exec(macro->body, &out);
      frames_.swap(saved);
      --depth_;
      if (!flow.ok()) return flow.status();
      return Value(std::move(out));
    });
  }

  absl::StatusOr<Args> EvalArgs(const Expr& e, size_t first) {
    Args args;
    for (size_t i = first; i < e.args.size(); ++i) {
      MOE_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, ex] : e.kwargs) {
      MOE_ASSIGN_OR_RETURN(Value v, Eval(*ex));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    if (++depth_ > Template::kMaxDepth) {
      --depth_;
      return absl::ResourceExhaustedError("expression evaluation nested too deeply");
    }
    auto v = EvalInner(e);
    --depth_;
    return v;
  }

  absl::StatusOr<Value> EvalInner(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.literal;
      case Expr::Kind::kName: return Lookup(e.name);
      case Expr::Kind::kList: {
        List list;
        for (const auto& item : e.args) {
          MOE_ASSIGN_OR_RETURN(Value v, Eval(*item));
          list.push_back(std::move(v));
        }
        return e.negated ? Value::Tuple(std::move(list)) : Value(std::move(list));
      }
      case Expr::Kind::kDict: {
        Dict dict;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          MOE_ASSIGN_OR_RETURN(const Value k, Eval(*e.args[i]));
          if (!k.is_string()) return Unsupported("dict keys other than strings");
          MOE_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1]));
          dict.emplace_back(k.str(), std::move(v));
        }
        return Value(std::move(dict));
      }
      case Expr::Kind::kAttr: {
        MOE_ASSIGN_OR_RETURN(const Value obj, Eval(*e.args[0]));
        return GetAttr(obj, e.name);
      }
      case Expr::Kind::kItem: {
        MOE_ASSIGN_OR_RETURN(const Value obj, Eval(*e.args[0]));
        MOE_ASSIGN_OR_RETURN(const Value key, Eval(*e.args[1]));
        return GetItem(obj, key);
      }
      case Expr::Kind::kSlice: return EvalSlice(e);
      case Expr::Kind::kCall: {
        MOE_ASSIGN_OR_RETURN(const Value callee, Eval(*e.args[0]));
        MOE_ASSIGN_OR_RETURN(Args args, EvalArgs(e, 1));
        if (callee.kind() != Value::Kind::kFunction) {
          if (callee.is_undefined()) {
            return Unsupported(absl::StrCat("the function '", callee.str(), "'"));
          }
          return TemplateError(absl::StrCat("'", callee.TypeName(), "' object is not callable"));
        }
        return callee.func()(args);
      }
      case Expr::Kind::kFilter: {
        MOE_ASSIGN_OR_RETURN(const Value input, Eval(*e.args[0]));
        MOE_ASSIGN_OR_RETURN(Args args, EvalArgs(e, 1));
        return (*FindFilter(e.name))(input, args);
      }
      case Expr::Kind::kTest: {
        MOE_ASSIGN_OR_RETURN(const Value input, Eval(*e.args[0]));
        MOE_ASSIGN_OR_RETURN(Args args, EvalArgs(e, 1));
        MOE_ASSIGN_OR_RETURN(const bool result, (*FindTest(e.name))(input, args));
        return Value(result != e.negated);
      }
      case Expr::Kind::kNot: {
        MOE_ASSIGN_OR_RETURN(const Value v, Eval(*e.args[0]));
        return Value(!v.Truthy());
      }
      case Expr::Kind::kNeg: {
        MOE_ASSIGN_OR_RETURN(const Value v, Eval(*e.args[0]));
        if (v.kind() == Value::Kind::kFloat) return Value(-v.as_float());
        if (v.is_number()) return Value(-v.as_int());
        return TemplateError(absl::StrCat("bad operand type for unary -: '", v.TypeName(), "'"));
      }
      case Expr::Kind::kAnd: {
        MOE_ASSIGN_OR_RETURN(Value left, Eval(*e.args[0]));
        if (!left.Truthy()) return left;
        return Eval(*e.args[1]);
      }
      case Expr::Kind::kOr: {
        MOE_ASSIGN_OR_RETURN(Value left, Eval(*e.args[0]));
        if (left.Truthy()) return left;
        return Eval(*e.args[1]);
      }
      case Expr::Kind::kCond: {
        MOE_ASSIGN_OR_RETURN(const Value c, Eval(*e.args[0]));
        if (c.Truthy()) return Eval(*e.args[1]);
        if (e.args[2] == nullptr) return Value::Undefined("");
        return Eval(*e.args[2]);
      }
      case Expr::Kind::kBinary: {
        MOE_ASSIGN_OR_RETURN(const Value left, Eval(*e.args[0]));
        MOE_ASSIGN_OR_RETURN(const Value right, Eval(*e.args[1]));
        return BinaryOp(e.name, left, right);
      }
    }
    return Value();
  }

  static absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
    if (obj.is_undefined()) {
      return TemplateError(absl::StrCat("'", obj.str(), "' is undefined (reading its attribute '", name, "')"));
    }
    if (std::optional<Value> method = BindMethod(obj, name)) return *std::move(method);
    if (const Value* found = obj.Find(name)) return *found;
    return Value::Undefined(name);
  }

  static absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
    if (obj.is_undefined()) {
      return TemplateError(absl::StrCat("'", obj.str(), "' is undefined (reading an item)"));
    }
    if (obj.is_mapping()) {
      if (!key.is_string()) return Value::Undefined(key.ToString());
      if (const Value* found = obj.Find(key.str())) return *found;
      return Value::Undefined(key.str());
    }
    if ((obj.is_list() || obj.is_string()) && key.kind() == Value::Kind::kInt) {
      const bool is_list = obj.is_list();
      std::vector<size_t> offsets;
      if (!is_list) offsets = CodePointOffsets(obj.str());
      const int64_t n = is_list ? static_cast<int64_t>(obj.list().size()) : static_cast<int64_t>(offsets.size()) - 1;
      int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::Undefined(absl::StrCat("[", key.as_int(), "]"));
      if (is_list) return obj.list()[i];
      return Value(obj.str().substr(offsets[i], offsets[i + 1] - offsets[i]));
    }
    if (key.is_string()) return GetAttr(obj, key.str());
    return Value::Undefined(key.ToString());
  }

  absl::StatusOr<Value> EvalSlice(const Expr& e) {
    MOE_ASSIGN_OR_RETURN(const Value obj, Eval(*e.args[0]));
    int64_t bounds[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (e.args[k + 1] == nullptr) continue;
      MOE_ASSIGN_OR_RETURN(const Value v, Eval(*e.args[k + 1]));
      if (v.is_none()) continue;
      if (v.kind() != Value::Kind::kInt) return TemplateError("slice indices must be integers or None");
      bounds[k] = v.as_int();
      given[k] = true;
    }
    const int64_t step = bounds[2];
    if (step == 0) return TemplateError("slice step cannot be zero");
    std::vector<size_t> offsets;
    int64_t n;
    if (obj.is_list()) {
      n = static_cast<int64_t>(obj.list().size());
    } else if (obj.is_string()) {
      offsets = CodePointOffsets(obj.str());
      n = static_cast<int64_t>(offsets.size()) - 1;
    } else {
      return TemplateError(absl::StrCat("'", obj.TypeName(), "' object is not subscriptable"));
    }
    // Python's slice.indices().
    const auto clamp = [&](int64_t v, bool is_given, int64_t fallback) {
      if (!is_given) return fallback;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
    List items;
    std::string text;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (obj.is_list()) {
        items.push_back(obj.list()[i]);
      } else {
        text.append(obj.str(), offsets[i], offsets[i + 1] - offsets[i]);
      }
    }
    if (obj.is_list()) return Value(std::move(items));
    return Value(std::move(text));
  }

  // Strings built in variables never reach the output check, so a template doubling one in
  // a loop is stopped here.
  static absl::Status CheckSize(size_t bytes) {
    if (bytes > Template::kMaxOutputBytes) {
      return absl::ResourceExhaustedError(absl::StrCat("a value of ", bytes, " bytes is longer than ",
                                                       Template::kMaxOutputBytes));
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return Value(a.Equals(b));
    if (op == "!=") return Value(!a.Equals(b));
    if (op == "~") {
      std::string joined = a.ToString() + b.ToString();
      MOE_RETURN_IF_ERROR(CheckSize(joined.size()));
      return Value(std::move(joined));
    }
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.is_string()) {
        if (!a.is_string()) return TemplateError("'in <string>' requires a string as left operand");
        found = b.str().find(a.str()) != std::string::npos;
      } else if (b.is_list()) {
        found = std::any_of(b.list().begin(), b.list().end(), [&](const Value& v) { return v.Equals(a); });
      } else if (b.is_mapping()) {
        found = a.is_string() && b.Find(a.str()) != nullptr;
      } else if (!b.is_undefined()) {
        return TemplateError(absl::StrCat("argument of type '", b.TypeName(), "' is not iterable"));
      }
      return Value(found == (op == "in"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (a.is_number() && b.is_number()) {
        cmp = a.as_float() < b.as_float() ? -1 : a.as_float() > b.as_float() ? 1 : 0;
      } else if (a.is_string() && b.is_string()) {
        cmp = a.str().compare(b.str());
      } else {
        return TemplateError(absl::StrCat("'", op, "' not supported between '", a.TypeName(),
                                          "' and '", b.TypeName(), "'"));
      }
      if (op == "<") return Value(cmp < 0);
      if (op == ">") return Value(cmp > 0);
      if (op == "<=") return Value(cmp <= 0);
      return Value(cmp >= 0);
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        MOE_RETURN_IF_ERROR(CheckSize(a.str().size() + b.str().size()));
        return Value(a.str() + b.str());
      }
      if (a.is_list() && b.is_list()) {
        MOE_RETURN_IF_ERROR(CheckSize(a.list().size() + b.list().size()));
        List joined = a.list();
        joined.insert(joined.end(), b.list().begin(), b.list().end());
        return Value(std::move(joined));
      }
    }
    if (op == "*" && (a.is_string() || a.is_list()) && b.kind() == Value::Kind::kInt) {
      const int64_t times = std::max<int64_t>(0, b.as_int());
      const size_t unit = a.is_string() ? a.str().size() : a.list().size();
      if (unit > 0 && static_cast<uint64_t>(times) > Template::kMaxOutputBytes / unit) {
        return absl::ResourceExhaustedError("repetition result too large");
      }
      if (a.is_string()) {
        std::string s;
        for (int64_t i = 0; i < times; ++i) s += a.str();
        return Value(std::move(s));
      }
      List l;
      for (int64_t i = 0; i < times; ++i) l.insert(l.end(), a.list().begin(), a.list().end());
      return Value(std::move(l));
    }
    if (a.is_number() && b.is_number()) {
      const bool floats = a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
      const double x = a.as_float(), y = b.as_float();
      const int64_t i = a.as_int(), j = b.as_int();
      if (op == "/") {
        if (y == 0) return TemplateError("division by zero");
        return Value(x / y);
      }
      if (op == "**") {
        if (!floats && j >= 0) {
          const double r = std::pow(x, y);
          if (std::fabs(r) < 9e18) return Value(static_cast<int64_t>(std::llround(r)));
        }
        return Value(std::pow(x, y));
      }
      if (floats) {
        if (op == "+") return Value(x + y);
        if (op == "-") return Value(x - y);
        if (op == "*") return Value(x * y);
        if (y == 0) return TemplateError("float division by zero");
        if (op == "//") return Value(std::floor(x / y));
        if (op == "%") return Value(x - std::floor(x / y) * y);
      } else {
        if (op == "+") return Value(i + j);
        if (op == "-") return Value(i - j);
        if (op == "*") return Value(i * j);
        if (j == 0) return TemplateError("integer division or modulo by zero");
        // Python floors toward negative infinity.
        int64_t q = i / j;
        if ((i % j != 0) && ((i < 0) != (j < 0))) --q;
        if (op == "//") return Value(q);
        if (op == "%") return Value(i - q * j);
      }
    }
    return TemplateError(absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(),
                                      "' and '", b.TypeName(), "'"));
  }

  std::vector<Frame> frames_;
  int64_t iterations_ = 0;
  int depth_ = 0;
};

}  // namespace

Template::Template(std::unique_ptr<Program> program) : program_(std::move(program)) {}
Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(absl::string_view source) {
  if (source.size() > kMaxSourceBytes) {
    return absl::InvalidArgumentError(absl::StrCat("template of ", source.size(),
                                                   " bytes is longer than the limit of ",
                                                   kMaxSourceBytes));
  }
  // jinja2 drops one newline at the very end of a template (keep_trailing_newline=False).
  if (absl::EndsWith(source, "\n")) source.remove_suffix(1);
  MOE_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lexer(source).Run());
  auto program = std::make_unique<Program>();
  MOE_ASSIGN_OR_RETURN(program->body, Parser(std::move(tokens)).ParseTemplate());
  return std::unique_ptr<Template>(new Template(std::move(program)));
}

absl::StatusOr<std::string> Template::Render(const Value& context) const {
  Renderer renderer(context);
  std::string out;
  MOE_ASSIGN_OR_RETURN(const Flow flow, renderer.Exec(program_->body, &out));
  (void)flow;
  return out;
}

}  // namespace moe::jinja
