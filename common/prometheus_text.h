// Prometheus text exposition format (version 0.0.4): what an HTTP /metrics endpoint
// answers. Each metric family gets its HELP and TYPE lines once, then all its samples
// together (the format requires a family's lines to be contiguous), families in the
// order they were first written.
#ifndef MOE_COMMON_PROMETHEUS_TEXT_H_
#define MOE_COMMON_PROMETHEUS_TEXT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace moe {

// Not thread-safe; build one per scrape.
class PrometheusText {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  // Names must match [a-zA-Z_][a-zA-Z0-9_]* (colons are for recording rules); a bad
  // name or label is a programming error (CHECK).
  void Counter(absl::string_view name, absl::string_view help, double value,
               const Labels& labels = {});
  void Gauge(absl::string_view name, absl::string_view help, double value,
             const Labels& labels = {});

  std::string text() const;

 private:
  void Add(absl::string_view type, absl::string_view name, absl::string_view help, double value,
           const Labels& labels);
  struct Family {
    std::string name, header, samples;
  };
  std::vector<Family> families_;  // in first-written order
};

// Whether `name` is a valid metric or label name without colons.
bool IsValidMetricName(absl::string_view name);

}  // namespace moe

#endif  // MOE_COMMON_PROMETHEUS_TEXT_H_
