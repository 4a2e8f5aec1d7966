// Shared by the backend tests: the compiled backends to run each case on, and opening
// one so that a machine without the device skips the case (with the reason) instead of
// passing it.
#ifndef MOE_TESTS_COMMON_BACKEND_BACKEND_TEST_UTIL_H_
#define MOE_TESTS_COMMON_BACKEND_BACKEND_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/backend/kernels.h"
#include "gtest/gtest.h"

namespace moe::backend::testing {

// Every backend a build may have; "cuda" cases skip where it cannot be opened.
inline std::vector<std::string> AllBackends() { return {"cpu", "cuda"}; }

inline std::string BackendName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

// Whether OpenDevice's failure means "this machine has no such device" (skip) rather than
// a bug (fail).
inline bool MeansNoDevice(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kUnimplemented;
}

// Base fixture: opens the parameter's device in SetUp, skipping when it is absent (the
// CPU must always open).
class BackendTest : public ::testing::TestWithParam<std::string> {
 public:  // for the tests' helper functions
  void SetUp() override {
    auto device = OpenDevice(GetParam());
    if (!device.ok()) {
      if (GetParam() != "cpu" && MeansNoDevice(device.status())) {
        GTEST_SKIP() << GetParam() << " is not available here: " << device.status();
      }
      FAIL() << device.status();
    }
    device_ = std::move(*device);
    auto stream = device_->CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_ = std::move(*stream);
  }

  // Device memory holding `values`.
  template <typename T>
  std::unique_ptr<DeviceBuffer> Up(const std::vector<T>& values) {
    auto buffer = Upload(*device_, values.data(), values.size() * sizeof(T));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    return buffer.ok() ? std::move(*buffer) : nullptr;
  }
  // `count` values copied back from device memory (after the stream's work).
  template <typename T>
  std::vector<T> Down(const DeviceBuffer& buffer, size_t count) {
    std::vector<T> values(count);
    EXPECT_TRUE(stream_->Synchronize().ok());
    const absl::Status status =
        CopyToHostSync(*device_, values.data(), buffer.data(), count * sizeof(T));
    EXPECT_TRUE(status.ok()) << status;
    return values;
  }

  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> stream_;
};

}  // namespace moe::backend::testing

#endif  // MOE_TESTS_COMMON_BACKEND_BACKEND_TEST_UTIL_H_
