#include "common/backend/backend.h"

#include "gtest/gtest.h"

namespace moe::backend {
namespace {

TEST(BackendRegistryTest, ListsCpuAndCudaByName) {
  const auto backends = ListBackends();
  ASSERT_EQ(backends.size(), 2u);
  EXPECT_EQ(backends[0].name, "cpu");
  EXPECT_TRUE(backends[0].compiled);
  ASSERT_TRUE(backends[0].devices.ok());
  EXPECT_EQ(backends[1].name, "cuda");
  EXPECT_FALSE(FindBackend("tpu").ok());
}

// Without CUDA compiled in, the backend still answers, with the reason.
TEST(BackendRegistryTest, CudaExplainsWhyItHasNoDevice) {
  auto cuda = FindBackend("cuda");
  ASSERT_TRUE(cuda.ok());
  if (!cuda->compiled) {
    ASSERT_FALSE(cuda->devices.ok());
    EXPECT_NE(cuda->devices.status().message().find("not compiled with CUDA"), absl::string_view::npos);
    return;
  }
  if (!cuda->devices.ok()) {
    GTEST_SKIP() << "no CUDA device: " << cuda->devices.status();
  }
  ASSERT_FALSE(cuda->devices->empty());
  EXPECT_GT((*cuda->devices)[0].memory_bytes, 0);
}

}  // namespace
}  // namespace moe::backend
