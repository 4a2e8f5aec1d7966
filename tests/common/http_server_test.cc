#include "common/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(ParseHostPortTest, TakesNumericIpv4LocalhostAndBracketedIpv6) {
  auto v4 = ParseHostPort("0.0.0.0:8080");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->host, "0.0.0.0");
  EXPECT_EQ(v4->port, 8080);
  EXPECT_EQ(ParseHostPort("localhost:0")->host, "127.0.0.1");
  auto v6 = ParseHostPort("[::1]:9");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9);
  EXPECT_EQ(ParseHostPort("[::]:80")->host, "::");
}

TEST(ParseHostPortTest, RefusesNamesBadPortsAndUnbracketedIpv6) {
  for (const char* bad : {"nope", "example.com:80", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:",
                          "::1:80", "[::1]", "[nope]:80", ":80"}) {
    auto parsed = ParseHostPort(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseHostPort("example.com:80").status().message().find("example.com:80"),
            absl::string_view::npos);
}

TEST(HttpServerTest, ServesMetricsAndAnswers404Elsewhere) {
  int scrapes = 0;
  auto server = StartMetricsServer("127.0.0.1:0", [&] {
    ++scrapes;
    return std::string("moe_up 1\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  httplib::Client client("127.0.0.1", (*server)->port());
  auto ok = client.Get("/metrics");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(ok->body.rfind("moe_up 1\n", 0), 0u) << ok->body;
  for (const char* family : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                             "process_virtual_memory_bytes", "process_start_time_seconds",
                             "process_open_fds", "process_max_fds"}) {
    EXPECT_NE(ok->body.find(std::string("\n# TYPE ") + family + " "), std::string::npos) << family;
  }
  auto other = client.Get("/other");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  auto post = client.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 404);
  EXPECT_EQ(scrapes, 1);
}

TEST(HttpServerTest, ServesIpv6Loopback) {
  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool has_v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (probe >= 0) ::close(probe);
  if (!has_v6) GTEST_SKIP() << "this machine has no IPv6 loopback";
  auto server = StartMetricsServer("[::1]:0", [] { return std::string("moe_up 1\n"); });
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("::1", (*server)->port());
  auto reply = client.Get("/metrics");
  ASSERT_TRUE(reply) << httplib::to_string(reply.error());
  EXPECT_EQ(reply->body.rfind("moe_up 1\n", 0), 0u);
}

TEST(HttpServerTest, BindFailsAtOnceOnATakenPort) {
  auto first = HttpServer::Bind("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = HttpServer::Bind("127.0.0.1:" + std::to_string((*first)->port()));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot listen on"), absl::string_view::npos)
      << second.status();
  // A server bound but never served gives its port back.
  const int port = (*first)->port();
  first->reset();
  EXPECT_TRUE(HttpServer::Bind("127.0.0.1:" + std::to_string(port)).ok());
}

// A client that sends its request one byte a second holds one connection, not the
// server: a scrape beside it is answered while it is still sending.
TEST(HttpServerTest, SlowClientDoesNotBlockAConcurrentScrape) {
  auto server = StartMetricsServer("127.0.0.1:0", [] { return std::string("moe_up 1\n"); });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::atomic<bool> slow_connected{false}, slow_done{false};
  std::thread slow([&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      const std::string request = "GET /metrics HTTP/1.1\r\n";
      for (size_t i = 0; i < 4; ++i) {
        ::send(fd, &request[i], 1, MSG_NOSIGNAL);
        slow_connected = true;
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    }
    slow_done = true;
    ::close(fd);
  });
  while (!slow_connected && !slow_done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  httplib::Client client("127.0.0.1", port);
  auto reply = client.Get("/metrics");
  const bool answered_while_slow_client_sends = !slow_done.load();
  slow.join();
  ASSERT_TRUE(reply) << httplib::to_string(reply.error());
  EXPECT_EQ(reply->status, 200);
  EXPECT_TRUE(answered_while_slow_client_sends);
}

}  // namespace
}  // namespace moe
