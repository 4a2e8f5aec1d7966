#include "common/metrics_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "common/prometheus_text.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// One raw HTTP exchange with the server on loopback.
std::string Exchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  ::send(fd, request.data(), request.size(), 0);
  std::string reply;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) reply.append(buffer, size_t(n));
  ::close(fd);
  return reply;
}

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

TEST(PrometheusTextTest, NamesMayNotHaveColonsOrStartWithDigits) {
  EXPECT_TRUE(IsValidMetricName("moe_worker_hit_ratio"));
  EXPECT_FALSE(IsValidMetricName("moe:hit_ratio"));
  EXPECT_FALSE(IsValidMetricName("0moe"));
  EXPECT_FALSE(IsValidMetricName(""));
}

TEST(MetricsHttpServerTest, ServesMetricsAndRefusesOtherPathsAndMethods) {
  int scrapes = 0;
  auto server = MetricsHttpServer::Start("127.0.0.1:0", [&] {
    ++scrapes;
    return std::string("moe_up 1\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  const std::string ok = Exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.0 200 OK", 0), 0u) << ok;
  EXPECT_NE(ok.find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(ok.find("\r\n\r\nmoe_up 1\n"), std::string::npos);
  EXPECT_EQ(Exchange(port, "GET /other HTTP/1.1\r\n\r\n").rfind("HTTP/1.0 404", 0), 0u);
  EXPECT_EQ(Exchange(port, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.0 405", 0), 0u);
  EXPECT_EQ(Exchange(port, "garbage\r\n\r\n").rfind("HTTP/1.0 400", 0), 0u);
  EXPECT_EQ(Exchange(port, std::string(20000, 'A')).rfind("HTTP/1.0 431", 0), 0u);
  EXPECT_EQ(scrapes, 1);
}

TEST(MetricsHttpServerTest, RejectsBadAddresses) {
  EXPECT_EQ(MetricsHttpServer::Start("nope", [] { return std::string(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsHttpServer::Start("example.com:80", [] { return std::string(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1:99999", [] { return std::string(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
