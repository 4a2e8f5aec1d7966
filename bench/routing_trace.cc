#include "bench/routing_trace.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moe::bench {

absl::StatusOr<RoutingTrace> RoutingTrace::Parse(const std::string& text,
                                                 const std::string& source) {
  std::istringstream in(text);
  std::string line;
  RoutingTrace t;
  bool header = false;
  int line_no = 0;
  int row = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": ", what));
    };
    if (!header) {
      std::string k1, k2, k3, k4;
      if (!(fields >> k1 >> t.tokens >> k2 >> t.layers >> k3 >> t.experts >> k4 >> t.top_k) ||
          k1 != "tokens" || k2 != "layers" || k3 != "experts" || k4 != "top_k") {
        return bad("expected \"tokens T layers L experts E top_k K\"");
      }
      if (t.tokens < 1 || t.layers < 1 || t.experts < 1 || t.top_k < 1 || t.top_k > t.experts ||
          int64_t(t.tokens) * t.layers * t.top_k > (int64_t(1) << 28)) {
        return bad("sizes out of range");
      }
      t.ids.reserve(size_t(t.tokens) * t.layers * t.top_k);
      header = true;
      continue;
    }
    if (row >= t.tokens) return bad(absl::StrCat("more than ", t.tokens, " token lines"));
    for (int l = 0; l < t.layers; ++l) {
      std::set<int32_t> seen;
      for (int j = 0; j < t.top_k; ++j) {
        int32_t id;
        if (!(fields >> id)) {
          return bad(absl::StrCat("expected ", t.layers * t.top_k, " expert ids"));
        }
        if (id < 0 || id >= t.experts) {
          return bad(absl::StrCat("expert id ", id, " out of range [0, ", t.experts, ")"));
        }
        if (!seen.insert(id).second) {
          return bad(absl::StrCat("expert ", id, " chosen twice at layer ", l));
        }
        t.ids.push_back(id);
      }
    }
    std::string extra;
    if (fields >> extra) return bad("trailing fields");
    ++row;
  }
  if (!header) return absl::InvalidArgumentError(absl::StrCat(source, ": no header line"));
  if (row != t.tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", row, " token lines, header says ", t.tokens));
  }
  return t;
}

absl::StatusOr<RoutingTrace> RoutingTrace::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open routing trace"));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

std::string RoutingTrace::Serialize(const std::string& comment) const {
  std::string out = absl::StrCat("# ", comment, "\ntokens ", tokens, " layers ", layers,
                                 " experts ", experts, " top_k ", top_k, "\n");
  for (int t = 0; t < tokens; ++t) {
    const char* separator = "";
    for (int l = 0; l < layers; ++l) {
      for (int32_t id : At(t, l)) {
        absl::StrAppend(&out, separator, id);
        separator = " ";
      }
    }
    out += "\n";
  }
  return out;
}

}  // namespace moe::bench
