#include "common/prometheus_text.h"

#include <algorithm>
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
  auto family = std::find_if(families_.begin(), families_.end(),
                             [&](const Family& f) { return f.name == name; });
  if (family == families_.end()) {
    family = families_.insert(families_.end(), Family{std::string(name), "", ""});
    family->header = absl::StrCat("# HELP ", name, " ", Escape(help, false), "\n# TYPE ", name, " ",
                                  type, "\n");
  }
  std::string& out = family->samples;
  absl::StrAppend(&out, name);
  if (!labels.empty()) {
    out += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      MOE_CHECK(IsValidMetricName(labels[i].first)) << "bad label name " << labels[i].first;
      absl::StrAppend(&out, i ? "," : "", labels[i].first, "=\"", Escape(labels[i].second, true),
                      "\"");
    }
    out += '}';
  }
  absl::StrAppend(&out, " ", FormatValue(value), "\n");
}

std::vector<double> LatencyHistogram::DefaultBounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

LatencyHistogram::LatencyHistogram(std::vector<double> bounds) {
  MOE_CHECK(std::is_sorted(bounds.begin(), bounds.end())) << "histogram bounds must ascend";
  data_.buckets.assign(bounds.size() + 1, 0);
  data_.bounds = std::move(bounds);
}

void LatencyHistogram::Observe(double seconds) {
  const size_t bucket =
      std::lower_bound(data_.bounds.begin(), data_.bounds.end(), seconds) - data_.bounds.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.buckets[bucket];
  data_.sum += seconds;
  ++data_.count;
}

LatencyHistogram::Snapshot LatencyHistogram::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

void PrometheusText::Histogram(absl::string_view name, absl::string_view help,
                               const LatencyHistogram::Snapshot& histogram) {
  MOE_CHECK(IsValidMetricName(name)) << "bad metric name " << name;
  const std::string bucket = absl::StrCat(name, "_bucket");
  Family& family = families_.emplace_back(Family{std::string(name), "", ""});
  family.header = absl::StrCat("# HELP ", name, " ", Escape(help, false), "\n# TYPE ", name,
                               " histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < histogram.buckets.size(); ++i) {
    cumulative += histogram.buckets[i];
    const std::string le = i < histogram.bounds.size() ? absl::StrCat(histogram.bounds[i]) : "+Inf";
    absl::StrAppend(&family.samples, bucket, "{le=\"", le, "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&family.samples, name, "_sum ", FormatValue(histogram.sum), "\n", name, "_count ",
                  histogram.count, "\n");
}

std::string PrometheusText::text() const {
  std::string out;
  for (const Family& f : families_) absl::StrAppend(&out, f.header, f.samples);
  return out;
}

}  // namespace moe
