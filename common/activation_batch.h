// The activation batch of one expert call, as memory that knows where it lives. The
// expert backend lends it (ExpertBackend::Lend); the forward pass RMS-norms the hidden
// state straight into x, the backend computes from x into out, and the pass adds out to
// its residual stream. Where the bytes are is the backend's choice: a slot of the shared
// arena (the two-process CPU pair), of the CUDA IPC arena, or plain memory of the device
// the experts compute on (in-process). Nothing is staged when the memory is already
// where both sides compute.
#ifndef MOE_COMMON_ACTIVATION_BATCH_H_
#define MOE_COMMON_ACTIVATION_BATCH_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/backend/device.h"
#include "common/checked_math.h"

namespace moe {

// Where a buffer's bytes are. Host memory: any CPU code may read it (plain, pinned, or
// the pages of a shared arena). Device memory: memory of one CUDA device, which only its
// kernels and copies touch. Memory of a CPU device is host memory.
class MemoryPlace {
 public:
  static MemoryPlace Host() { return MemoryPlace(nullptr); }
  static MemoryPlace On(backend::Device& device) {
    return MemoryPlace(device.kind() == backend::DeviceKind::kCpu ? nullptr : &device);
  }
  bool is_host() const { return device_ == nullptr; }
  backend::Device* device() const { return device_; }  // null for host memory
  // Whether `device`'s kernels read and write these bytes in place.
  bool ComputableOn(const backend::Device& device) const {
    return device.kind() == backend::DeviceKind::kCpu ? is_host() : device_ == &device;
  }
  std::string name() const { return is_host() ? "host memory" : "memory of " + device_->name(); }
  bool operator==(const MemoryPlace& o) const { return device_ == o.device_; }

 private:
  explicit MemoryPlace(backend::Device* device) : device_(device) {}
  backend::Device* device_;
};

// The most rows one lent batch may have (a pass's rows: decode tokens plus prompt
// chunks); a request for more is refused before anything is allocated.
inline constexpr int64_t kMaxActivationRows = int64_t{1} << 20;

// Bytes of one of x or out: rows * hidden floats, or INVALID_ARGUMENT when rows is not
// in [1, kMaxActivationRows], hidden < 1, or the product does not fit.
inline absl::StatusOr<uint64_t> ActivationBytes(int64_t rows, int64_t hidden) {
  if (rows < 1 || rows > kMaxActivationRows || hidden < 1) {
    return absl::InvalidArgumentError(absl::StrCat("an activation batch of ", rows, " rows of ",
                                                   hidden, " is not in [1, ",
                                                   kMaxActivationRows, "] rows"));
  }
  const std::optional<uint64_t> floats = CheckedMul(uint64_t(rows), uint64_t(hidden));
  const std::optional<uint64_t> bytes =
      floats ? CheckedMul(*floats, sizeof(float)) : std::nullopt;
  if (!bytes) return absl::InvalidArgumentError("an activation batch's size overflows");
  return *bytes;
}

// x and out, [rows, hidden] fp32 each, row-major, both in place(). Owned by its lender:
// destroying the batch gives the memory back, so it must not outlive the backend that
// lent it, and work queued on a device stream that reads or writes it must be complete
// before it is destroyed. Not thread-safe: one pass uses it at a time.
class ActivationBatch {
 public:
  virtual ~ActivationBatch() = default;
  ActivationBatch(const ActivationBatch&) = delete;
  ActivationBatch& operator=(const ActivationBatch&) = delete;

  int64_t rows() const { return rows_; }
  absl::Span<float> x() const { return x_; }
  absl::Span<float> out() const { return out_; }
  MemoryPlace place() const { return place_; }
  // The backend that lent it: a backend refuses to run a batch it did not lend.
  const void* lender() const { return lender_; }

 protected:
  ActivationBatch(const void* lender, MemoryPlace place, float* x, float* out, int64_t rows,
                  int64_t hidden)
      : lender_(lender),
        place_(place),
        x_(x, size_t(rows * hidden)),
        out_(out, size_t(rows * hidden)),
        rows_(rows) {}

 private:
  const void* lender_;
  MemoryPlace place_;
  absl::Span<float> x_, out_;
  int64_t rows_;
};

}  // namespace moe

#endif  // MOE_COMMON_ACTIVATION_BATCH_H_
