#include "common/backend/backend.h"

#include <fstream>
#include <sstream>
#include <string>

#include "common/backend/device.h"
#include "common/backend/kernels.h"
#include "gtest/gtest.h"

namespace moe::backend {
namespace {

std::string Maps() {
  std::ifstream in("/proc/self/maps");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The CUDA backend is a module loaded on first use (cuda_module.h): computing on the CPU
// maps neither it nor the CUDA runtime or cuBLAS. Declared first: gtest runs a binary's
// tests in order, and the others list the CUDA backend.
TEST(BackendRegistryTest, ACpuRunMapsNoCudaLibrary) {
  auto device = OpenDevice("cpu");
  ASSERT_TRUE(device.ok()) << device.status();
  auto kernels = CreateKernels(**device);
  ASSERT_TRUE(kernels.ok()) << kernels.status();
  const std::string maps = Maps();
  ASSERT_NE(maps.find("libc.so"), std::string::npos) << "not a maps listing:\n" << maps;
  for (const char* lib : {"libcublas", "libcudart", "libmoe_cuda"}) {
    EXPECT_EQ(maps.find(lib), std::string::npos) << lib << " is mapped:\n" << maps;
  }
}

// With CUDA compiled in, listing the CUDA backend loads the build's module (so the check
// above is not vacuous), whether or not a GPU is present.
TEST(BackendRegistryTest, ListingCudaLoadsTheModule) {
  auto cuda = FindBackend("cuda");
  ASSERT_TRUE(cuda.ok());
  if (!cuda->compiled) GTEST_SKIP() << "not compiled with CUDA";
  if (!cuda->devices.ok()) {
    EXPECT_EQ(cuda->devices.status().message().find("cannot load the CUDA module"),
              absl::string_view::npos)
        << cuda->devices.status();
  }
  EXPECT_NE(Maps().find("libmoe_cuda.so"), std::string::npos);
}

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
