#include "common/prometheus_text.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"

namespace moe {

bool IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(letter || (digit && i > 0))) return false;
  }
  return true;
}

namespace {

// Label values escape backslash, double quote and newline; HELP escapes backslash and
// newline.
std::string Escape(absl::string_view s, bool quotes) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

}  // namespace

void PrometheusText::Counter(absl::string_view name, absl::string_view help, double value,
                             const Labels& labels) {
  Add("counter", name, help, value, labels);
}

void PrometheusText::Gauge(absl::string_view name, absl::string_view help, double value,
                           const Labels& labels) {
  Add("gauge", name, help, value, labels);
}

void PrometheusText::Add(absl::string_view type, absl::string_view name, absl::string_view help,
                         double value, const Labels& labels) {
  MOE_CHECK(IsValidMetricName(name)) << "bad metric name " << name;
  if (families_.find(name) == families_.end()) {
    families_.emplace(name);
    absl::StrAppend(&text_, "# HELP ", name, " ", Escape(help, false), "\n# TYPE ", name, " ",
                    type, "\n");
  }
  absl::StrAppend(&text_, name);
  if (!labels.empty()) {
    text_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      MOE_CHECK(IsValidMetricName(labels[i].first)) << "bad label name " << labels[i].first;
      absl::StrAppend(&text_, i ? "," : "", labels[i].first, "=\"", Escape(labels[i].second, true),
                      "\"");
    }
    text_ += '}';
  }
  absl::StrAppend(&text_, " ", FormatValue(value), "\n");
}

}  // namespace moe
