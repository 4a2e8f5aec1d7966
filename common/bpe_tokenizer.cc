#include "common/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <queue>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_util.h"
#include "common/status.h"

namespace moe {
namespace {

using json = nlohmann::json;

// Hugging Face's ByteLevel pre-tokenizer splits with GPT-2's pattern when use_regex is on.
constexpr absl::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the others move to
// U+0100 upwards in byte order, so every byte is one visible character of a token's text.
struct ByteMap {
  char32_t byte_to_char[256];
  absl::flat_hash_map<char32_t, uint8_t> char_to_byte;
  ByteMap() {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byte_to_char[b] = keep ? b : 256 + next++;
      char_to_byte[byte_to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& Bytes() {
  static const ByteMap* map = new ByteMap();
  return *map;
}

// Raw bytes as a token's text (each byte through the byte map).
std::string ToByteLevel(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8Char(Bytes().byte_to_char[b], &out);
  return out;
}

// A token's text back to bytes, as Hugging Face's ByteLevel decoder does: through the
// byte map when every character is in it, else the text's own UTF-8 (an added token such
// as "<|im_end|>" maps through; one holding a space does not).
void AppendTokenBytes(absl::string_view token, std::string* out) {
  std::string bytes;
  for (size_t pos = 0; pos < token.size();) {
    const size_t n = Utf8CharLength(token, pos);
    if (n == 0) {
      out->append(token.data(), token.size());
      return;
    }
    const auto it = Bytes().char_to_byte.find(DecodeUtf8Char(token, pos, n));
    if (it == Bytes().char_to_byte.end()) {
      out->append(token.data(), token.size());
      return;
    }
    bytes.push_back(static_cast<char>(it->second));
    pos += n;
  }
  out->append(bytes);
}

// Errors name the file and the JSON path of the bad field.
class Reader {
 public:
  explicit Reader(absl::string_view source) : source_(source) {}
  absl::Status Error(absl::string_view where, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", where, ": ", what));
  }
  absl::StatusOr<const json*> Object(const json& parent, absl::string_view key,
                                     absl::string_view where) const {
    const auto it = parent.find(std::string(key));
    if (it == parent.end()) return Error(where, absl::StrCat("missing \"", key, "\""));
    if (!it->is_object()) return Error(absl::StrCat(where, ".", key), "must be an object");
    return &*it;
  }
  absl::StatusOr<std::string> String(const json& parent, absl::string_view key,
                                     absl::string_view where) const {
    const auto it = parent.find(std::string(key));
    if (it == parent.end()) return Error(where, absl::StrCat("missing \"", key, "\""));
    if (!it->is_string()) return Error(absl::StrCat(where, ".", key), "must be a string");
    return it->get<std::string>();
  }
  // An optional boolean (absent or null: `fallback`).
  absl::StatusOr<bool> Bool(const json& parent, absl::string_view key, absl::string_view where,
                            bool fallback) const {
    const auto it = parent.find(std::string(key));
    if (it == parent.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Error(absl::StrCat(where, ".", key), "must be true or false");
    return it->get<bool>();
  }
  absl::StatusOr<int> Id(const json& value, absl::string_view where, int64_t vocab_size) const {
    if (!value.is_number_integer()) return Error(where, "token id must be an integer");
    const int64_t id = value.is_number_unsigned()
                           ? static_cast<int64_t>(std::min<uint64_t>(value.get<uint64_t>(), INT64_MAX))
                           : value.get<int64_t>();
    if (id < 0 || id >= vocab_size) {
      return Error(where, absl::StrCat("token id ", id, " is outside the model's vocabulary [0, ",
                                       vocab_size, ")"));
    }
    return static_cast<int>(id);
  }

 private:
  std::string source_;
};

absl::StatusOr<BpeTokenizer::SplitBehavior> ParseBehavior(const Reader& r, const std::string& name,
                                                          absl::string_view where) {
  using B = BpeTokenizer::SplitBehavior;
  if (name == "Removed") return B::kRemoved;
  if (name == "Isolated") return B::kIsolated;
  if (name == "MergedWithPrevious") return B::kMergedWithPrevious;
  if (name == "MergedWithNext") return B::kMergedWithNext;
  if (name == "Contiguous") return B::kContiguous;
  return r.Error(where, absl::StrCat("unknown split behavior ", QuoteForMessage(name),
                                     " (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                                     "Contiguous)"));
}

absl::Status ParseNormalizer(const Reader& r, const json& node, const std::string& where,
                             int depth, std::vector<NormalizationForm>* out) {
  if (node.is_null()) return absl::OkStatus();
  if (!node.is_object()) return r.Error(where, "must be an object or null");
  if (depth > 4) return r.Error(where, "normalizers nested too deeply");
  MOE_ASSIGN_OR_RETURN(const std::string type, r.String(node, "type", where));
  if (type == "NFC") {
    out->push_back(NormalizationForm::kNfc);
  } else if (type == "NFD") {
    out->push_back(NormalizationForm::kNfd);
  } else if (type == "NFKC") {
    out->push_back(NormalizationForm::kNfkc);
  } else if (type == "NFKD") {
    out->push_back(NormalizationForm::kNfkd);
  } else if (type == "Sequence") {
    const auto it = node.find("normalizers");
    if (it == node.end() || !it->is_array()) return r.Error(where, "Sequence needs a \"normalizers\" array");
    for (size_t i = 0; i < it->size(); ++i) {
      MOE_RETURN_IF_ERROR(ParseNormalizer(r, (*it)[i], absl::StrCat(where, ".normalizers[", i, "]"),
                                          depth + 1, out));
      if (out->size() > BpeTokenizer::kMaxPreTokenizerSteps) return r.Error(where, "too many normalizers");
    }
  } else {
    return r.Error(where, absl::StrCat("normalizer ", QuoteForMessage(type),
                                       " is not supported (NFC, NFD, NFKC, NFKD, Sequence)"));
  }
  return absl::OkStatus();
}

absl::Status ParsePreTokenizer(const Reader& r, const json& node, const std::string& where,
                               int depth, std::vector<BpeTokenizer::PreTokenizerStep>* out) {
  using Step = BpeTokenizer::PreTokenizerStep;
  if (!node.is_object()) return r.Error(where, "must be an object");
  if (depth > 4) return r.Error(where, "pre-tokenizers nested too deeply");
  if (out->size() >= BpeTokenizer::kMaxPreTokenizerSteps) return r.Error(where, "too many pre-tokenizers");
  MOE_ASSIGN_OR_RETURN(const std::string type, r.String(node, "type", where));
  Step step;
  if (type == "Sequence") {
    const auto it = node.find("pretokenizers");
    if (it == node.end() || !it->is_array()) return r.Error(where, "Sequence needs a \"pretokenizers\" array");
    for (size_t i = 0; i < it->size(); ++i) {
      MOE_RETURN_IF_ERROR(ParsePreTokenizer(
          r, (*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]"), depth + 1, out));
    }
    return absl::OkStatus();
  } else if (type == "ByteLevel") {
    step.kind = Step::Kind::kByteLevel;
    MOE_ASSIGN_OR_RETURN(step.add_prefix_space, r.Bool(node, "add_prefix_space", where, true));
    MOE_ASSIGN_OR_RETURN(const bool use_regex, r.Bool(node, "use_regex", where, true));
    if (use_regex) {
      MOE_ASSIGN_OR_RETURN(step.regex, UnicodeRegex::Create(kGpt2Pattern));
    }
  } else if (type == "Split") {
    MOE_ASSIGN_OR_RETURN(const json* pattern, r.Object(node, "pattern", where));
    const std::string pwhere = absl::StrCat(where, ".pattern");
    if (pattern->contains("Regex")) {
      MOE_ASSIGN_OR_RETURN(const std::string regex, r.String(*pattern, "Regex", pwhere));
      auto compiled = UnicodeRegex::Create(regex);
      if (!compiled.ok()) return r.Error(pwhere, compiled.status().message());
      step.regex = *std::move(compiled);
    } else if (pattern->contains("String")) {
      MOE_ASSIGN_OR_RETURN(step.literal, r.String(*pattern, "String", pwhere));
      if (step.literal.empty()) return r.Error(pwhere, "an empty String pattern splits nothing");
    } else {
      return r.Error(pwhere, "needs \"Regex\" or \"String\"");
    }
    MOE_ASSIGN_OR_RETURN(const std::string behavior, r.String(node, "behavior", where));
    MOE_ASSIGN_OR_RETURN(step.behavior, ParseBehavior(r, behavior, absl::StrCat(where, ".behavior")));
    MOE_ASSIGN_OR_RETURN(step.invert, r.Bool(node, "invert", where, false));
  } else if (type == "Digits") {
    MOE_ASSIGN_OR_RETURN(const bool individual, r.Bool(node, "individual_digits", where, false));
    // Hugging Face splits on char::is_numeric, which is \p{N}.
    MOE_ASSIGN_OR_RETURN(step.regex, UnicodeRegex::Create("\\p{N}"));
    step.behavior = individual ? BpeTokenizer::SplitBehavior::kIsolated
                               : BpeTokenizer::SplitBehavior::kContiguous;
  } else {
    return r.Error(where, absl::StrCat("pre-tokenizer ", QuoteForMessage(type),
                                       " is not supported (ByteLevel, Split, Digits, Sequence)"));
  }
  out->push_back(std::move(step));
  return absl::OkStatus();
}

// The special tokens a TemplateProcessing puts before $A (the rest of the template is
// not applied: a prompt for generation must not end in an EOS).
absl::Status ParsePostProcessor(const Reader& r, const json& node, const std::string& where,
                                int depth, const std::function<std::optional<int>(const std::string&)>& lookup,
                                std::vector<int>* leading) {
  if (node.is_null()) return absl::OkStatus();
  if (!node.is_object()) return r.Error(where, "must be an object or null");
  if (depth > 4) return r.Error(where, "post-processors nested too deeply");
  MOE_ASSIGN_OR_RETURN(const std::string type, r.String(node, "type", where));
  if (type == "ByteLevel") return absl::OkStatus();  // adjusts offsets only
  if (type == "Sequence") {
    const auto it = node.find("processors");
    if (it == node.end() || !it->is_array()) return r.Error(where, "Sequence needs a \"processors\" array");
    for (size_t i = 0; i < it->size(); ++i) {
      MOE_RETURN_IF_ERROR(ParsePostProcessor(r, (*it)[i], absl::StrCat(where, ".processors[", i, "]"),
                                             depth + 1, lookup, leading));
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return r.Error(where, absl::StrCat("post-processor ", QuoteForMessage(type),
                                       " is not supported (ByteLevel, TemplateProcessing, Sequence)"));
  }
  const auto single = node.find("single");
  if (single == node.end() || !single->is_array()) return r.Error(where, "needs a \"single\" array");
  for (size_t i = 0; i < single->size(); ++i) {
    const json& item = (*single)[i];
    const std::string iwhere = absl::StrCat(where, ".single[", i, "]");
    if (!item.is_object()) return r.Error(iwhere, "must be an object");
    if (item.contains("Sequence")) break;
    MOE_ASSIGN_OR_RETURN(const json* special, r.Object(item, "SpecialToken", iwhere));
    MOE_ASSIGN_OR_RETURN(const std::string name, r.String(*special, "id", iwhere + ".SpecialToken"));
    const std::optional<int> id = lookup(name);
    if (!id.has_value()) {
      return r.Error(iwhere, absl::StrCat("special token ", QuoteForMessage(name),
                                          " is not in the vocabulary"));
    }
    leading->push_back(*id);
  }
  return absl::OkStatus();
}

absl::Status ParseDecoder(const Reader& r, const json& node, const std::string& where) {
  if (!node.is_object()) return r.Error(where, "must be an object (a byte-level decoder)");
  MOE_ASSIGN_OR_RETURN(const std::string type, r.String(node, "type", where));
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    const auto it = node.find("decoders");
    if (it == node.end() || !it->is_array() || it->size() > 4) {
      return r.Error(where, "Sequence needs a \"decoders\" array of at most 4");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      MOE_RETURN_IF_ERROR(ParseDecoder(r, (*it)[i], absl::StrCat(where, ".decoders[", i, "]")));
    }
    return absl::OkStatus();
  }
  return r.Error(where, absl::StrCat("decoder ", QuoteForMessage(type),
                                     " is not supported (only byte-level BPE: ByteLevel)"));
}

bool IsWordChar(absl::string_view text, size_t pos, size_t n) {
  return IsUnicodeAlphanumeric(DecodeUtf8Char(text, pos, n)) || text[pos] == '_';
}

}  // namespace

BpeTokenizer::BpeTokenizer() = default;
BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Load(const std::string& path,
                                                                 int64_t vocab_size) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  if (bytes > static_cast<uintmax_t>(kMaxFileBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes, " bytes is larger than the limit of ",
                                                   kMaxFileBytes, " for a tokenizer.json"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  return FromJson(text.str(), path, vocab_size);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(absl::string_view text,
                                                                     absl::string_view source,
                                                                     int64_t vocab_size) {
  if (static_cast<int64_t>(text.size()) > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": larger than ", kMaxFileBytes, " bytes"));
  }
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size ", vocab_size, " is out of range"));
  }
  const Reader r(source);
  MOE_ASSIGN_OR_RETURN(const json root, ParseJsonObject(text, source));
  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());

  // The model: vocabulary and merges.
  MOE_ASSIGN_OR_RETURN(const json* model, r.Object(root, "model", "tokenizer"));
  if (model->contains("type")) {
    MOE_ASSIGN_OR_RETURN(const std::string type, r.String(*model, "type", "model"));
    if (type != "BPE") {
      return r.Error("model.type", absl::StrCat(QuoteForMessage(type),
                                                " is not supported (only byte-level BPE)"));
    }
  }
  if (const auto d = model->find("dropout"); d != model->end() && !d->is_null() &&
                                              !(d->is_number() && d->get<double>() == 0.0)) {
    return r.Error("model.dropout", "BPE dropout is for training; must be null");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model->find(key);
    if (it != model->end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
      return r.Error(absl::StrCat("model.", key), "is not supported by byte-level BPE; must be null");
    }
  }
  MOE_ASSIGN_OR_RETURN(const bool byte_fallback, r.Bool(*model, "byte_fallback", "model", false));
  if (byte_fallback) {
    return r.Error("model.byte_fallback",
                   "byte_fallback is SentencePiece-style BPE, not byte-level BPE (use tokenizer.model)");
  }
  MOE_ASSIGN_OR_RETURN(tok->ignore_merges_, r.Bool(*model, "ignore_merges", "model", false));
  MOE_ASSIGN_OR_RETURN(const json* vocab, r.Object(*model, "vocab", "model"));
  if (static_cast<int64_t>(vocab->size()) > vocab_size) {
    return r.Error("model.vocab", absl::StrCat("has ", vocab->size(), " entries but the model's vocab_size is ",
                                               vocab_size));
  }
  int max_id = -1;
  std::vector<std::pair<int, std::string>> entries;
  entries.reserve(vocab->size());
  for (const auto& [token, value] : vocab->items()) {
    const std::string where = absl::StrCat("model.vocab[", QuoteForMessage(token), "]");
    if (token.empty() || static_cast<int64_t>(token.size()) > kMaxTokenBytes) {
      return r.Error(where, absl::StrCat("token of ", token.size(), " bytes (must be 1 to ",
                                         kMaxTokenBytes, ")"));
    }
    MOE_ASSIGN_OR_RETURN(const int id, r.Id(value, where, vocab_size));
    entries.emplace_back(id, token);
    max_id = std::max(max_id, id);
  }

  // Added tokens (their ids may repeat vocabulary entries with the same text).
  const auto added = root.find("added_tokens");
  if (added != root.end() && !added->is_null()) {
    if (!added->is_array()) return r.Error("added_tokens", "must be an array");
    if (static_cast<int64_t>(added->size()) > kMaxAddedTokens) {
      return r.Error("added_tokens", absl::StrCat(added->size(), " entries is more than the limit of ",
                                                  kMaxAddedTokens));
    }
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string where = absl::StrCat("added_tokens[", i, "]");
      if (!a.is_object()) return r.Error(where, "must be an object");
      AddedToken t;
      MOE_ASSIGN_OR_RETURN(t.content, r.String(a, "content", where));
      if (t.content.empty() || static_cast<int64_t>(t.content.size()) > kMaxTokenBytes) {
        return r.Error(where, absl::StrCat("content of ", t.content.size(), " bytes (must be 1 to ",
                                           kMaxTokenBytes, ")"));
      }
      const auto id = a.find("id");
      if (id == a.end()) return r.Error(where, "missing \"id\"");
      MOE_ASSIGN_OR_RETURN(t.id, r.Id(*id, where + ".id", vocab_size));
      MOE_ASSIGN_OR_RETURN(t.special, r.Bool(a, "special", where, false));
      MOE_ASSIGN_OR_RETURN(t.single_word, r.Bool(a, "single_word", where, false));
      MOE_ASSIGN_OR_RETURN(t.lstrip, r.Bool(a, "lstrip", where, false));
      MOE_ASSIGN_OR_RETURN(t.rstrip, r.Bool(a, "rstrip", where, false));
      MOE_ASSIGN_OR_RETURN(t.normalized, r.Bool(a, "normalized", where, !t.special));
      max_id = std::max(max_id, t.id);
      tok->added_.push_back(std::move(t));
    }
  }
  if (max_id < 0) return r.Error("model.vocab", "is empty");
  tok->id_to_token_.assign(max_id + 1, std::string());
  tok->is_token_.assign(max_id + 1, false);
  tok->added_by_id_.assign(max_id + 1, -1);
  for (auto& [id, token] : entries) {
    if (tok->is_token_[id]) {
      return r.Error("model.vocab", absl::StrCat("id ", id, " is given to both ",
                                                 QuoteForMessage(tok->id_to_token_[id]), " and ",
                                                 QuoteForMessage(token)));
    }
    tok->is_token_[id] = true;
    tok->id_to_token_[id] = token;
    tok->vocab_.emplace(std::move(token), id);
  }
  for (size_t i = 0; i < tok->added_.size(); ++i) {
    const AddedToken& t = tok->added_[i];
    if (tok->added_by_id_[t.id] >= 0) {
      return r.Error(absl::StrCat("added_tokens[", i, "]"),
                     absl::StrCat("id ", t.id, " is given to two added tokens"));
    }
    if (tok->is_token_[t.id] && tok->id_to_token_[t.id] != t.content) {
      return r.Error(absl::StrCat("added_tokens[", i, "]"),
                     absl::StrCat("id ", t.id, " is ", QuoteForMessage(t.content),
                                  " here but ", QuoteForMessage(tok->id_to_token_[t.id]),
                                  " in the vocabulary"));
    }
    tok->added_by_id_[t.id] = static_cast<int>(i);
    tok->is_token_[t.id] = true;
  }
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    AppendUtf8Char(Bytes().byte_to_char[b], &symbol);
    const auto it = tok->vocab_.find(symbol);
    if (it == tok->vocab_.end()) {
      return r.Error("model.vocab", absl::StrCat("lacks the byte-level symbol ", QuoteForMessage(symbol),
                                                 " for byte ", b, " (not a byte-level BPE vocabulary)"));
    }
    tok->byte_to_id_[b] = it->second;
  }

  const auto merges = model->find("merges");
  if (merges == model->end() || !merges->is_array()) return r.Error("model", "needs a \"merges\" array");
  if (static_cast<int64_t>(merges->size()) > kMaxMerges) {
    return r.Error("model.merges", absl::StrCat(merges->size(), " merges is more than the limit of ", kMaxMerges));
  }
  tok->merges_.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& m = (*merges)[i];
    const std::string where = absl::StrCat("model.merges[", i, "]");
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return r.Error(where, absl::StrCat(QuoteForMessage(s), " is not two tokens separated by one space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return r.Error(where, "must be \"left right\" or [\"left\", \"right\"]");
    }
    const auto l = tok->vocab_.find(left), rr = tok->vocab_.find(right);
    const auto merged = tok->vocab_.find(left + right);
    if (l == tok->vocab_.end() || rr == tok->vocab_.end() || merged == tok->vocab_.end()) {
      const std::string& missing = l == tok->vocab_.end() ? left : rr == tok->vocab_.end() ? right : left + right;
      return r.Error(where, absl::StrCat(QuoteForMessage(missing), " is not in the vocabulary"));
    }
    // A repeated pair takes its later rank, as Hugging Face's map does.
    tok->merges_[(static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(rr->second)] =
        Merge{static_cast<int>(i), merged->second};
  }

  // The pipeline around the model.
  if (const auto n = root.find("normalizer"); n != root.end()) {
    MOE_RETURN_IF_ERROR(ParseNormalizer(r, *n, "normalizer", 0, &tok->normalizer_));
  }
  const auto pre = root.find("pre_tokenizer");
  if (pre == root.end() || pre->is_null()) {
    return r.Error("pre_tokenizer", "missing (a byte-level BPE needs a ByteLevel pre-tokenizer)");
  }
  MOE_RETURN_IF_ERROR(ParsePreTokenizer(r, *pre, "pre_tokenizer", 0, &tok->pre_tokenizer_));
  const auto is_byte_level = [](const PreTokenizerStep& s) { return s.kind == PreTokenizerStep::Kind::kByteLevel; };
  if (std::count_if(tok->pre_tokenizer_.begin(), tok->pre_tokenizer_.end(), is_byte_level) != 1 ||
      !is_byte_level(tok->pre_tokenizer_.back())) {
    return r.Error("pre_tokenizer", "must end with exactly one ByteLevel step (only byte-level BPE is supported)");
  }
  const auto decoder = root.find("decoder");
  if (decoder == root.end()) return r.Error("tokenizer", "missing \"decoder\"");
  MOE_RETURN_IF_ERROR(ParseDecoder(r, *decoder, "decoder"));
  if (const auto post = root.find("post_processor"); post != root.end()) {
    const BpeTokenizer* self = tok.get();
    MOE_RETURN_IF_ERROR(ParsePostProcessor(
        r, *post, "post_processor", 0, [self](const std::string& t) { return self->TokenId(t); },
        &tok->leading_special_ids_));
  }
  // Normalized added tokens are looked for in normalized text, so normalize their text too.
  for (AddedToken& t : tok->added_) {
    t.match = t.content;
    if (t.normalized) {
      auto normalized = tok->Normalize(t.content);
      if (!normalized.ok()) return r.Error("added_tokens", normalized.status().message());
      if (normalized->empty()) return r.Error("added_tokens", "a token normalizes to nothing");
      t.match = *std::move(normalized);
    }
    tok->added_first_byte_[t.normalized][static_cast<uint8_t>(t.match[0])] = true;
  }
  return tok;
}

std::optional<int> BpeTokenizer::TokenId(absl::string_view token) const {
  for (const AddedToken& t : added_) {
    if (t.content == token) return t.id;
  }
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

bool BpeTokenizer::IsSpecial(int id) const {
  return id >= 0 && id < size() && added_by_id_[id] >= 0 && added_[added_by_id_[id]].special;
}

absl::StatusOr<std::string> BpeTokenizer::Normalize(absl::string_view text) const {
  std::string out(text);
  for (NormalizationForm form : normalizer_) {
    MOE_ASSIGN_OR_RETURN(out, NormalizeUnicode(out, form));
  }
  return out;
}

void BpeTokenizer::SplitAddedTokens(const std::string& text, bool normalized_pass,
                                    bool parse_special,
                                    std::vector<std::pair<std::string, int>>* out) const {
  size_t piece_start = 0;  // start of the text not yet emitted
  size_t pos = 0;
  while (pos < text.size()) {
    // Leftmost-longest, as Hugging Face's Aho-Corasick automaton matches.
    if (!added_first_byte_[normalized_pass][static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    const AddedToken* best = nullptr;
    for (const AddedToken& t : added_) {
      if (t.normalized != normalized_pass || (t.special && !parse_special)) continue;
      if ((best == nullptr || t.match.size() > best->match.size()) &&
          text.compare(pos, t.match.size(), t.match) == 0) {
        best = &t;
      }
    }
    if (best == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + best->match.size();
    if (best->single_word) {
      size_t before = start;
      while (before > 0 && (static_cast<uint8_t>(text[before - 1]) & 0xC0) == 0x80) --before;
      if (before > 0) --before;
      const bool word_before = start > 0 && IsWordChar(text, before, Utf8CharLength(text, before));
      const bool word_after = stop < text.size() && IsWordChar(text, stop, Utf8CharLength(text, stop));
      if (word_before || word_after) {
        pos = stop;  // discarded; the search goes on after it
        continue;
      }
    }
    if (best->lstrip) {
      // Back over the whitespace before the token, but not into text already emitted.
      size_t s = start;
      while (s > piece_start) {
        size_t prev = s - 1;
        while (prev > piece_start && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
        const size_t n = Utf8CharLength(text, prev);
        if (n == 0 || !IsUnicodeWhitespace(DecodeUtf8Char(text, prev, n))) break;
        s = prev;
      }
      start = s;
    }
    if (best->rstrip) {
      while (stop < text.size()) {
        const size_t n = Utf8CharLength(text, stop);
        if (n == 0 || !IsUnicodeWhitespace(DecodeUtf8Char(text, stop, n))) break;
        stop += n;
      }
    }
    if (start > piece_start) out->emplace_back(text.substr(piece_start, start - piece_start), -1);
    out->emplace_back(std::string(), best->id);
    piece_start = pos = stop;
  }
  if (piece_start < text.size()) out->emplace_back(text.substr(piece_start), -1);
}

absl::Status BpeTokenizer::PreTokenize(const std::string& text,
                                       std::vector<std::string>* pieces) const {
  std::vector<std::string> current = {text};
  for (const PreTokenizerStep& step : pre_tokenizer_) {
    std::vector<std::string> next;
    for (std::string& piece : current) {
      SplitBehavior behavior = step.behavior;
      bool invert = step.invert;
      if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
        if (step.add_prefix_space && piece[0] != ' ') piece.insert(piece.begin(), ' ');
        if (step.regex == nullptr) {
          next.push_back(std::move(piece));
          continue;
        }
        behavior = SplitBehavior::kIsolated;
        invert = false;
      }
      // The piece as segments [begin, end) that cover it, each flagged as a match or not.
      std::vector<std::pair<size_t, size_t>> found;
      if (step.regex != nullptr) {
        MOE_ASSIGN_OR_RETURN(found, step.regex->FindAll(piece));
      } else {
        for (size_t at = piece.find(step.literal); at != std::string::npos;
             at = piece.find(step.literal, at + step.literal.size())) {
          found.emplace_back(at, at + step.literal.size());
        }
      }
      struct Segment {
        size_t begin, end;
        bool match;
      };
      std::vector<Segment> segments;
      size_t prev = 0;
      for (const auto& [b, e] : found) {
        if (b > prev) segments.push_back({prev, b, invert});
        segments.push_back({b, e, !invert});
        prev = e;
      }
      if (prev < piece.size()) segments.push_back({prev, piece.size(), invert});
      // Hugging Face's SplitDelimiterBehavior, segment by segment.
      std::vector<Segment> kept;
      bool previous_match = false;
      switch (behavior) {
        case SplitBehavior::kRemoved:
          for (const Segment& s : segments) if (!s.match) kept.push_back(s);
          break;
        case SplitBehavior::kIsolated:
          kept = segments;
          break;
        case SplitBehavior::kContiguous:
          for (const Segment& s : segments) {
            if (s.match == previous_match && !kept.empty()) {
              kept.back().end = s.end;
            } else {
              kept.push_back(s);
            }
            previous_match = s.match;
          }
          break;
        case SplitBehavior::kMergedWithPrevious:
          for (const Segment& s : segments) {
            if (s.match && !previous_match && !kept.empty()) {
              kept.back().end = s.end;
            } else {
              kept.push_back(s);
            }
            previous_match = s.match;
          }
          break;
        case SplitBehavior::kMergedWithNext:
          for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
            if (it->match && !previous_match && !kept.empty()) {
              kept.back().begin = it->begin;
            } else {
              kept.push_back(*it);
            }
            previous_match = it->match;
          }
          std::reverse(kept.begin(), kept.end());
          break;
      }
      for (const Segment& s : kept) {
        if (s.end > s.begin) next.push_back(piece.substr(s.begin, s.end - s.begin));
      }
    }
    current = std::move(next);
  }
  for (std::string& p : current) pieces->push_back(std::move(p));
  return absl::OkStatus();
}

void BpeTokenizer::EncodeWord(absl::string_view bytes, std::vector<int>* ids) const {
  if (ignore_merges_) {
    const auto it = vocab_.find(ToByteLevel(bytes));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols in a linked list; a min-heap of candidate merges by (rank, position), stale
  // entries skipped when popped: Hugging Face's Word::merge_all, so ties resolve alike.
  struct Symbol {
    int id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    symbols[i] = {byte_to_id_[static_cast<uint8_t>(bytes[i])], static_cast<int>(i) - 1,
                  i + 1 < bytes.size() ? static_cast<int>(i) + 1 : -1, true};
  }
  struct Candidate {
    int rank, pos, new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  const auto find = [&](int left, int right) -> const Merge* {
    const auto it = merges_.find((static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) {
    if (const Merge* m = find(symbols[i].id, symbols[i + 1].id)) queue.push({m->rank, i, m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* m = find(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* pm = find(symbols[left.prev].id, left.id)) queue.push({pm->rank, left.prev, pm->new_id});
    }
    if (left.next >= 0) {
      if (const Merge* nm = find(left.id, symbols[left.next].id)) queue.push({nm->rank, top.pos, nm->new_id});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.alive) ids->push_back(s.id);
  }
}

absl::StatusOr<std::vector<int>> BpeTokenizer::Encode(absl::string_view text, bool parse_special,
                                                      bool add_special) const {
  if (static_cast<int64_t>(text.size()) > kMaxTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat("text of ", text.size(),
                                                   " bytes is longer than the limit of ",
                                                   kMaxTextBytes));
  }
  MOE_RETURN_IF_ERROR(CheckUtf8("text", text));
  std::vector<int> ids;
  if (add_special) ids = leading_special_ids_;
  std::vector<std::pair<std::string, int>> raw, normalized;
  SplitAddedTokens(std::string(text), /*normalized_pass=*/false, parse_special, &raw);
  for (auto& [piece, id] : raw) {
    if (id >= 0) {
      ids.push_back(id);
      continue;
    }
    MOE_ASSIGN_OR_RETURN(const std::string norm, Normalize(piece));
    normalized.clear();
    SplitAddedTokens(norm, /*normalized_pass=*/true, parse_special, &normalized);
    for (auto& [npiece, nid] : normalized) {
      if (nid >= 0) {
        ids.push_back(nid);
        continue;
      }
      std::vector<std::string> words;
      MOE_RETURN_IF_ERROR(PreTokenize(npiece, &words));
      for (const std::string& w : words) EncodeWord(w, &ids);
    }
  }
  return ids;
}

absl::StatusOr<std::string> BpeTokenizer::Decode(absl::Span<const int> ids, bool skip_special) const {
  std::string bytes;
  for (int id : ids) {
    if (id < 0 || id >= size() || !is_token_[id]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is not a token of this tokenizer (ids [0, ", size(), "))"));
    }
    if (added_by_id_[id] >= 0) {
      const AddedToken& t = added_[added_by_id_[id]];
      if (t.special && skip_special) continue;
      AppendTokenBytes(t.content, &bytes);
    } else {
      AppendTokenBytes(id_to_token_[id], &bytes);
    }
  }
  return LossyUtf8(bytes);
}

}  // namespace moe
