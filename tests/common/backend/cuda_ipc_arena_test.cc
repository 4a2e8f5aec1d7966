// Runs only where a CUDA device is present; otherwise every case says SKIPPED.
#include "common/backend/cuda/cuda_ipc_arena.h"

#include <cuda_runtime_api.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

#include "common/backend/backend.h"
#include "gtest/gtest.h"

namespace moe::cuda {
namespace {

bool HaveDevice() {
  auto cuda = backend::FindBackend("cuda");
  return cuda.ok() && cuda->devices.ok();
}

TEST(CudaIpcArenaTest, ExportsAHandleAnotherProcessCanOpenAndRead) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const size_t n = 1024;
  auto arena = CudaIpcArena::Create(0, n * sizeof(float));
  ASSERT_TRUE(arena.ok()) << arena.status();
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = float(i) * 0.5f;
  ASSERT_EQ(cudaMemcpy((*arena)->device_ptr(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  // A forked child opens the handle (IPC handles cannot be opened by their exporter).
  const pid_t pid = fork();
  if (pid == 0) {
    auto opened = CudaIpcArena::Open(0, (*arena)->handle(), n * sizeof(float));
    if (!opened.ok()) _exit(2);
    std::vector<float> back(n);
    if (cudaMemcpy(back.data(), (*opened)->device_ptr(), n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) _exit(3);
    _exit(back == host ? 0 : 4);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(CudaIpcArenaTest, RejectsAHandleOfTheWrongSize) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  auto opened = CudaIpcArena::Open(0, "short", 16);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find("64"), absl::string_view::npos);
}

}  // namespace
}  // namespace moe::cuda
