#include "coordinator/device_scratch.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::coordinator {

ScratchPool::Lease::~Lease() {
  if (set_ == nullptr) return;  // moved from
  const absl::Status drained = set_->stream->Synchronize();
  if (!drained.ok()) {
    // A stream in error cannot be trusted again: drop the set instead of pooling it.
    MOE_LOG(WARNING) << "forward pass scratch: " << drained;
    return;
  }
  pool_->Release(std::move(set_));
}

absl::StatusOr<ScratchPool::Lease> ScratchPool::Acquire(size_t device_bytes, size_t host_bytes) {
  std::unique_ptr<ScratchSet> set;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      set = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (set == nullptr) {
    set = std::make_unique<ScratchSet>();
    MOE_ASSIGN_OR_RETURN(set->stream, device_.CreateStream());
  }
  // The set is idle (its stream drained when it was released), so its buffers may be
  // replaced at once.
  if (device_bytes > 0 && (set->device == nullptr || set->device->size() < device_bytes)) {
    set->device.reset();
    absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> buffer = device_.Allocate(device_bytes);
    if (!buffer.ok()) {
      return absl::Status(buffer.status().code(),
                          absl::StrCat("forward pass scratch of ", device_bytes, " bytes on ",
                                       device_.name(), ": ", buffer.status().message()));
    }
    set->device = *std::move(buffer);
  }
  if (host_bytes > 0 && (set->host == nullptr || set->host->size() < host_bytes)) {
    set->host.reset();
    MOE_ASSIGN_OR_RETURN(set->host, device_.AllocatePinnedHost(host_bytes));
  }
  return Lease(this, std::move(set));
}

void ScratchPool::Release(std::unique_ptr<ScratchSet> set) {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() < max_idle_) idle_.push_back(std::move(set));
}

}  // namespace moe::coordinator
