// Prometheus text exposition format (version 0.0.4): what an HTTP /metrics endpoint
// answers. Each metric family gets its HELP and TYPE lines once, then all its samples
// together (the format requires a family's lines to be contiguous), families in the
// order they were first written.
#ifndef MOE_COMMON_PROMETHEUS_TEXT_H_
#define MOE_COMMON_PROMETHEUS_TEXT_H_

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace moe {

// Latencies in seconds counted into buckets of fixed upper bounds, for a Prometheus
// histogram. Thread-safe.
class LatencyHistogram {
 public:
  // 1 ms to 60 s, roughly x2.5 apart: RunExperts calls and decode steps at the low end,
  // time to first token of long prompts at the high end.
  static std::vector<double> DefaultBounds();
  explicit LatencyHistogram(std::vector<double> bounds = DefaultBounds());

  void Observe(double seconds);

  struct Snapshot {
    std::vector<double> bounds;     // ascending upper bounds; +Inf is implied
    std::vector<uint64_t> buckets;  // per bound (not cumulative), then one past the last
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Get() const;

 private:
  mutable std::mutex mu_;
  Snapshot data_;  // guarded by mu_
};

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

  // NAME_bucket{le=...} (cumulative, +Inf last), NAME_sum and NAME_count.
  void Histogram(absl::string_view name, absl::string_view help,
                 const LatencyHistogram::Snapshot& histogram);

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
