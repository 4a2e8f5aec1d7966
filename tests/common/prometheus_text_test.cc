#include "common/prometheus_text.h"

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(PrometheusTextTest, WritesHelpAndTypeOncePerFamilyAndEscapesLabels) {
  PrometheusText text;
  text.Counter("moe_test_total", "A test counter", 3, {{"layer", "0"}});
  text.Counter("moe_test_total", "A test counter", 4, {{"layer", "1"}});
  text.Gauge("moe_ratio", "Quote \" and\nnewline", 0.5, {{"policy", "a\"b\\c"}});
  EXPECT_EQ(text.text(),
            "# HELP moe_test_total A test counter\n# TYPE moe_test_total counter\n"
            "moe_test_total{layer=\"0\"} 3\nmoe_test_total{layer=\"1\"} 4\n"
            "# HELP moe_ratio Quote \" and\\nnewline\n# TYPE moe_ratio gauge\n"
            "moe_ratio{policy=\"a\\\"b\\\\c\"} 0.5\n");
}

TEST(PrometheusTextTest, InterleavedWritesComeOutAsContiguousFamilies) {
  PrometheusText text;
  for (const char* layer : {"0", "1"}) {
    text.Counter("moe_hits_total", "Hits", 1, {{"layer", layer}});
    text.Gauge("moe_ratio", "Ratio", 0.5, {{"layer", layer}});
  }
  EXPECT_EQ(text.text(),
            "# HELP moe_hits_total Hits\n# TYPE moe_hits_total counter\n"
            "moe_hits_total{layer=\"0\"} 1\nmoe_hits_total{layer=\"1\"} 1\n"
            "# HELP moe_ratio Ratio\n# TYPE moe_ratio gauge\n"
            "moe_ratio{layer=\"0\"} 0.5\nmoe_ratio{layer=\"1\"} 0.5\n");
}

TEST(PrometheusTextTest, HistogramsHaveCumulativeBucketsSumAndCount) {
  LatencyHistogram latency({0.1, 1});
  for (double s : {0.05, 0.1, 0.5, 2.0}) latency.Observe(s);
  PrometheusText text;
  text.Histogram("moe_latency_seconds", "Latency", latency.Get());
  EXPECT_EQ(text.text(),
            "# HELP moe_latency_seconds Latency\n# TYPE moe_latency_seconds histogram\n"
            "moe_latency_seconds_bucket{le=\"0.1\"} 2\nmoe_latency_seconds_bucket{le=\"1\"} 3\n"
            "moe_latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "moe_latency_seconds_sum 2.6499999999999999\nmoe_latency_seconds_count 4\n");
}

TEST(PrometheusTextTest, NamesMayNotHaveColonsOrStartWithDigits) {
  EXPECT_TRUE(IsValidMetricName("moe_worker_hit_ratio"));
  EXPECT_FALSE(IsValidMetricName("moe:hit_ratio"));
  EXPECT_FALSE(IsValidMetricName("0moe"));
  EXPECT_FALSE(IsValidMetricName(""));
}

}  // namespace
}  // namespace moe
