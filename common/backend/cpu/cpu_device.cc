#include "common/backend/cpu/cpu_device.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::cpu {
namespace {

class CpuBuffer : public backend::DeviceBuffer {
 public:
  CpuBuffer(void* data, size_t size, bool owned) : data_(data), size_(size), owned_(owned) {}
  ~CpuBuffer() override {
    if (owned_) std::free(data_);
  }
  void* data() const override { return data_; }
  size_t size() const override { return size_; }

 private:
  void* data_;
  size_t size_;
  bool owned_;
};

class CpuStream : public backend::Stream {
 public:
  explicit CpuStream(backend::StreamPriority priority) : priority_(priority) {}
  backend::StreamPriority priority() const { return priority_; }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::Status Wait(const backend::Event&) override { return absl::OkStatus(); }
  void* native() const override { return nullptr; }

 private:
  const backend::StreamPriority priority_;
};

class CpuEvent : public backend::Event {
 public:
  absl::Status Record(backend::Stream&) override { return absl::OkStatus(); }
  absl::StatusOr<bool> Query() const override { return true; }
  absl::Status Synchronize() const override { return absl::OkStatus(); }
  void* native() const override { return nullptr; }
};

// Buffers of at least this size (the expert store, cache slots) are 2 MiB aligned and
// asked to be backed by transparent huge pages: a decoded token streams ~100 MB of
// weights from them, and with 4 KiB pages every 4 KiB costs a TLB miss the hardware
// prefetcher does not cross. Where THP is off, madvise fails and nothing changes.
constexpr size_t kHugePage = size_t{2} << 20;

absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> AlignedBuffer(size_t bytes,
                                                                      size_t alignment) {
  const bool huge = bytes >= kHugePage;
  if (huge) alignment = std::max(alignment, kHugePage);
  const size_t rounded = (std::max<size_t>(bytes, 1) + alignment - 1) / alignment * alignment;
  void* p = std::aligned_alloc(alignment, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cpu: cannot allocate ", bytes, " bytes of host memory"));
  }
  if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // before the first touch; only a hint
  return std::make_unique<CpuBuffer>(p, bytes, /*owned=*/true);
}

}  // namespace

absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> CpuDevice::Allocate(size_t bytes) {
  return AlignedBuffer(bytes, 256);
}

absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> CpuDevice::AllocatePinnedHost(
    size_t bytes) {
  return AlignedBuffer(bytes, size_t(sysconf(_SC_PAGESIZE)));
}

absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> CpuDevice::RegisterHost(void* data,
                                                                                size_t bytes,
                                                                                bool) {
  return std::make_unique<CpuBuffer>(data, bytes, /*owned=*/false);
}

absl::StatusOr<std::unique_ptr<backend::Stream>> CpuDevice::CreateStream(
    backend::StreamPriority priority) {
  return std::make_unique<CpuStream>(priority);
}

absl::StatusOr<std::unique_ptr<backend::Event>> CpuDevice::CreateEvent(bool interprocess) {
  if (interprocess) {
    return absl::UnimplementedError("cpu: interprocess events exist only on CUDA");
  }
  return std::make_unique<CpuEvent>();
}

absl::Status CpuDevice::CopyToDevice(void* dst, const void* src, size_t bytes,
                                     backend::Stream& stream) {
  if (bytes == 0) return absl::OkStatus();
  // A stream of another device (never ours to order) copies at once, as before priorities.
  const auto* own = dynamic_cast<const CpuStream*>(&stream);
  const bool high = own != nullptr && own->priority() == backend::StreamPriority::kHigh;
  if (high) {
    std::lock_guard<std::mutex> lock(copy_mu_);
    ++high_copies_;
  }
  auto* to = static_cast<char*>(dst);
  const auto* from = static_cast<const char*>(src);
  for (size_t offset = 0; offset < bytes; offset += kCopyChunkBytes) {
    if (own != nullptr && !high) {
      std::unique_lock<std::mutex> lock(copy_mu_);
      high_done_.wait(lock, [&] { return high_copies_ == 0; });
    }
    std::memcpy(to + offset, from + offset, std::min(kCopyChunkBytes, bytes - offset));
  }
  if (high) {
    {
      std::lock_guard<std::mutex> lock(copy_mu_);
      --high_copies_;
    }
    high_done_.notify_all();
  }
  return absl::OkStatus();
}
absl::Status CpuDevice::CopyToHost(void* dst, const void* src, size_t bytes, backend::Stream&) {
  if (bytes) std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}
absl::Status CpuDevice::CopyOnDevice(void* dst, const void* src, size_t bytes, backend::Stream&) {
  if (bytes) std::memmove(dst, src, bytes);
  return absl::OkStatus();
}
absl::Status CpuDevice::Memset(void* dst, int value, size_t bytes, backend::Stream&) {
  if (bytes) std::memset(dst, value, bytes);
  return absl::OkStatus();
}

absl::StatusOr<backend::MemoryInfo> CpuDevice::Memory() const {
  const int64_t page = sysconf(_SC_PAGESIZE);
  return backend::MemoryInfo{int64_t(sysconf(_SC_AVPHYS_PAGES)) * page,
                             int64_t(sysconf(_SC_PHYS_PAGES)) * page};
}

}  // namespace moe::cpu
