// Runs only where a CUDA device is present; otherwise every case says SKIPPED.
//
// The importer must be a fresh process: CUDA does not support using the runtime in a
// child forked after the parent initialised it. So the test spawns this binary again
// (posix_spawn of /proc/self/exe) with --ipc-child=<hex handle>; main() below runs the
// importer's side in that case instead of the tests.
#include "common/backend/cuda/cuda_ipc_arena.h"

#include <cuda_runtime_api.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

extern char** environ;

namespace moe::cuda {
namespace {

constexpr size_t kFloats = 1024;
constexpr char kChildFlag[] = "--ipc-child=";

std::vector<float> Expected() {
  std::vector<float> host(kFloats);
  for (size_t i = 0; i < kFloats; ++i) host[i] = float(i) * 0.5f;
  return host;
}

// The importer: opens the handle and checks the exporter's bytes. Exit codes name the
// step that failed.
int RunChild(const std::string& hex_handle) {
  auto opened = CudaIpcArena::Open(0, absl::HexStringToBytes(hex_handle), kFloats * sizeof(float));
  if (!opened.ok()) return 2;
  std::vector<float> back(kFloats);
  if (cudaMemcpy(back.data(), (*opened)->device_ptr(), kFloats * sizeof(float),
                 cudaMemcpyDeviceToHost) != cudaSuccess) {
    return 3;
  }
  return back == Expected() ? 0 : 4;
}

// Asked of the runtime directly: this test links the module's code, not the registry.
bool HaveDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(CudaIpcArenaTest, ExportsAHandleAnotherProcessCanOpenAndRead) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  auto arena = CudaIpcArena::Create(0, kFloats * sizeof(float));
  ASSERT_TRUE(arena.ok()) << arena.status();
  const std::vector<float> host = Expected();
  ASSERT_EQ(cudaMemcpy((*arena)->device_ptr(), host.data(), kFloats * sizeof(float),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  // IPC handles cannot be opened by their exporter: a fresh process imports it.
  std::string flag = std::string(kChildFlag) + absl::BytesToHexString((*arena)->handle());
  std::string self = "/proc/self/exe";
  char* argv[] = {self.data(), flag.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, environ), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: Open failed, 3: copy failed, 4: wrong bytes";
}

TEST(CudaIpcArenaTest, RejectsAHandleOfTheWrongSize) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  auto opened = CudaIpcArena::Open(0, "short", 16);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find("64"), absl::string_view::npos);
}

}  // namespace
}  // namespace moe::cuda

int main(int argc, char** argv) {
  if (argc == 2 && absl::StartsWith(argv[1], moe::cuda::kChildFlag)) {
    return moe::cuda::RunChild(argv[1] + std::strlen(moe::cuda::kChildFlag));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
